//! B-frames end to end: libx264 clips with B-frames (2 without pyramid, 3 with a normal and a
//! strict pyramid, an open GOP whose recovery points have B-frames shown before them, 29.97 fps)
//! are published to real servers on 127.0.0.1 (nginx-rtmp recording them, `ffmpeg -listen 1`
//! remuxing them) from a file and from an `exec:` encoder, and read back with ffprobe.
//!
//! What is checked: every frame arrives and decodes without an error; decoding timestamps are
//! the constant-rate ones, as before; every composition time is non-negative; and in the order
//! the decoder shows the frames (picture order count), presentation timestamps rise one frame
//! at a time from `delay` frames after the first decoding timestamp, within FLV's 1 ms, with the
//! picture types in the same order as the source's. With composition time 0 (as before) the
//! frames a B-frame pyramid shows first would carry later timestamps than the P-frame after
//! them. Nothing here depends on timing: the clips are sent as fast as the server takes them.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::alloc::{count_this_thread, CountingAllocator};
use common::*;
use v4l2rtmp::media::annexb::{AccessUnit, AnnexBReader, NalRef};
use v4l2rtmp::media::flv::{AvcMuxer, FrameDuration, Muxed};

// Counts per thread (`count_this_thread`), so tests running in parallel do not disturb it.
#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

const LIMIT: Duration = Duration::from_secs(120);

/// A 4 s 320x180 testsrc2 clip made by libx264 with these options (`-preset veryfast`, whose
/// defaults include 3 B-frames with a normal pyramid; `ultrafast` would disable them).
fn x264_clip(name: &str, rate: &str, x264: &[&str]) -> PathBuf {
    let source = format!("testsrc2=size=320x180:rate={rate}");
    let mut args = vec![
        "-f", "lavfi", "-i", &source, "-t", "4", "-c:v", "libx264", "-preset", "veryfast",
        "-pix_fmt", "yuv420p",
    ];
    args.extend_from_slice(x264);
    generated_clip(name, &args)
}

/// `-bf 2` without a pyramid: max_num_reorder_frames 1.
fn clip_bf2() -> PathBuf {
    x264_clip(
        "bframes-bf2-nopyramid-320x180-30",
        "30",
        &["-bf", "2", "-x264-params", "b-pyramid=none"],
    )
}

/// `-bf 3` with the normal pyramid (a B-frame used as a reference): max_num_reorder_frames 2.
fn clip_bf3_pyramid() -> PathBuf {
    x264_clip(
        "bframes-bf3-pyramid-320x180-30",
        "30",
        &["-bf", "3", "-x264-params", "b-pyramid=normal"],
    )
}

/// `-bf 3` with the strict (Blu-ray) pyramid.
fn clip_bf3_strict() -> PathBuf {
    x264_clip(
        "bframes-bf3-strict-320x180-30",
        "30",
        &["-bf", "3", "-x264-params", "b-pyramid=strict"],
    )
}

/// An open GOP: a recovery-point I-frame (not an IDR) every 26 frames, with a B-frame decoded
/// after it and shown before it (a fixed B-frame pattern puts the I-frame after a run of them).
fn clip_open_gop() -> PathBuf {
    x264_clip(
        "bframes-open-gop-320x180-30",
        "30",
        &[
            "-bf",
            "3",
            "-x264-params",
            "open-gop=1:keyint=26:min-keyint=26:scenecut=0:b-adapt=0",
        ],
    )
}

/// 29.97 fps: a frame is 33.367 ms, so composition times are rounded.
fn clip_ntsc() -> PathBuf {
    x264_clip("bframes-bf3-320x180-2997", "30000/1001", &["-bf", "3"])
}

/// One decoded frame as ffprobe reports it, in the decoder's output (display) order.
#[derive(Debug)]
struct Shown {
    pts_ms: f64,
    pict_type: String,
}

fn shown_frames(path: &Path) -> Vec<Shown> {
    let output = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-show_frames"])
        .args([
            "-show_entries",
            "frame=pts_time,pict_type",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .output()
        .expect("run ffprobe");
    assert!(output.status.success(), "ffprobe -show_frames {path:?}");
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        // The first frame of an x264 clip also lists its SEI: keep the first two fields.
        .filter(|line| !line.is_empty())
        .map(|line| {
            let fields: Vec<&str> = line.split(',').collect();
            Shown {
                pts_ms: fields[0].parse::<f64>().map_or(f64::NAN, |t| t * 1000.0),
                pict_type: fields[1].to_string(),
            }
        })
        .collect()
}

/// Checks a read-back stream against its source clip: `fps` frames per second, shown `delay`
/// frames after they are decoded (the clip's max_num_reorder_frames).
fn assert_b_frames_arrive_in_display_order(recording: &Path, source: &Path, fps: f64, delay: u32) {
    let frame_ms = 1000.0 / fps;
    let source_frames = shown_frames(source);
    let probe = ffprobe(recording, &[]);
    assert_eq!(probe.codec, "h264");
    assert_eq!((probe.width, probe.height), (320, 180));
    assert_eq!(
        probe.packets.len(),
        source_frames.len(),
        "every frame arrived"
    );
    let first_dts = probe.packets[0].dts_ms;
    for (i, packet) in probe.packets.iter().enumerate() {
        let expected = first_dts + i as f64 * frame_ms;
        assert!(
            (packet.dts_ms - expected).abs() <= 1.0,
            "packet {i}: DTS {} ms, expected {expected:.3}",
            packet.dts_ms
        );
        assert!(
            packet.pts_ms >= packet.dts_ms,
            "packet {i}: negative composition time ({packet:?})"
        );
    }
    let reordered = probe
        .packets
        .iter()
        .filter(|p| p.pts_ms != p.dts_ms)
        .count();
    assert!(
        reordered > probe.packets.len() / 4,
        "{reordered} packets with a composition time"
    );

    let shown = shown_frames(recording);
    assert_eq!(shown.len(), source_frames.len(), "every frame decoded");
    let types: Vec<&str> = shown.iter().map(|f| f.pict_type.as_str()).collect();
    let source_types: Vec<&str> = source_frames.iter().map(|f| f.pict_type.as_str()).collect();
    assert_eq!(
        types, source_types,
        "the frames are shown in the source's order"
    );
    assert!(types.contains(&"B"), "the clip has B-frames");
    let first_pts = first_dts + f64::from(delay) * frame_ms;
    for (j, frame) in shown.iter().enumerate() {
        let expected = first_pts + j as f64 * frame_ms;
        assert!(
            (frame.pts_ms - expected).abs() <= 1.0,
            "frame {j} in display order ({}): PTS {} ms, expected {expected:.3}",
            frame.pict_type,
            frame.pts_ms
        );
    }
    assert_eq!(decode_errors(recording), "");
}

fn push_file(clip: &Path, url: &str) {
    let output = run_v4l2rtmp(&["--input", clip.to_str().unwrap(), url], None, LIMIT);
    assert_success(&output);
}

fn publish_to_nginx(clip: &Path, key: &str) -> (PathBuf, TempDir) {
    let nginx = Nginx::start();
    push_file(clip, &nginx.url("live", key));
    let recording = nginx.recording(key);
    let dir = nginx.stop();
    (recording, dir)
}

#[test]
fn two_b_frames_without_a_pyramid() {
    let clip = clip_bf2();
    let (recording, _dir) = publish_to_nginx(&clip, "bf2");
    assert_b_frames_arrive_in_display_order(&recording, &clip, 30.0, 1);
}

#[test]
fn three_b_frames_with_a_normal_pyramid() {
    let clip = clip_bf3_pyramid();
    let (recording, _dir) = publish_to_nginx(&clip, "pyramid");
    assert_b_frames_arrive_in_display_order(&recording, &clip, 30.0, 2);
    // With composition time 0 (as the issue read it back) the P-frame decoded second came out
    // before the B-frames decoded after it and shown before it; now it is shown after them, and
    // the IDR two frames (67 ms) after its decoding time.
    let packets = ffprobe(&recording, &[]).packets;
    assert_eq!(packets[0].pts_ms - packets[0].dts_ms, 67.0);
    assert!(packets[1].pts_ms > packets[2].pts_ms, "{:?}", &packets[..3]);
}

#[test]
fn three_b_frames_with_a_strict_pyramid_to_an_ffmpeg_listener() {
    let clip = clip_bf3_strict();
    let listener = FfmpegListener::start("strict");
    push_file(&clip, &listener.url("strict"));
    let (_dir, out) = listener.finish();
    assert_b_frames_arrive_in_display_order(&out, &clip, 30.0, 2);
}

#[test]
fn open_gop_b_frames_shown_before_their_recovery_point() {
    let clip = clip_open_gop();
    // The source has what makes it an open GOP: a keyframe after the first (not an IDR: the
    // recording has only one keyframe) shown after a frame decoded after it.
    let output = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-show_frames"])
        .args([
            "-show_entries",
            "frame=key_frame,coded_picture_number",
            "-of",
            "csv=p=0",
        ])
        .arg(&clip)
        .output()
        .unwrap();
    // (The first frame's SEI comes as a line of its own.)
    let shown: Vec<(bool, u32)> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(',');
            let key = fields.next()? == "1";
            Some((key, fields.next()?.parse().ok()?))
        })
        .collect();
    let leading = shown
        .windows(2)
        .skip(1)
        .filter(|pair| pair[1].0 && pair[0].1 > pair[1].1)
        .count();
    assert!(
        leading >= 3,
        "{leading} recovery points with a leading B-frame"
    );
    let (recording, _dir) = publish_to_nginx(&clip, "opengop");
    assert_b_frames_arrive_in_display_order(&recording, &clip, 30.0, 2);
}

#[test]
fn composition_times_at_29_97_fps_are_rounded_to_the_millisecond() {
    let clip = clip_ntsc();
    let (recording, _dir) = publish_to_nginx(&clip, "ntsc");
    assert_b_frames_arrive_in_display_order(&recording, &clip, 30000.0 / 1001.0, 2);
}

#[test]
fn an_exec_libx264_encoder_as_the_readme_suggests_for_a_pi_5() {
    let nginx = Nginx::start();
    let frames = 60;
    // The encoder stays alive after its frames (as a camera encoder would), so nothing restarts;
    // an access unit delimiter after them completes the last access unit, as the next frame
    // would.
    let command = format!(
        "exec:sh -c 'ffmpeg -hide_banner -loglevel error -nostdin -f lavfi \
         -i testsrc2=size=320x180:rate=30 -frames:v {frames} -c:v libx264 -preset veryfast \
         -bf 3 -pix_fmt yuv420p -f h264 -; printf \"\\000\\000\\000\\001\\011\\360\"; \
         exec sleep 600'"
    );
    // A pipe is live input: the encoder outruns real time here, so the queue holds it all.
    let mut child = Command::new(BIN)
        .args(["--input", &command, "--queue-time", "10000"])
        .args(["--source-timeout", "0"])
        .arg(nginx.url("live", "exec"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = log_lines(child.stderr.take().unwrap());
    wait_for_line(&lines, "publishing to", Duration::from_secs(30));
    // Wait until nginx has recorded every frame.
    let recording = nginx.recording("exec");
    let start = Instant::now();
    while ffprobe_packet_count(&recording) < frames {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "nginx recorded {} of {frames} frames",
            ffprobe_packet_count(&recording)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(stop(&mut child, "TERM").success());
    let _dir = nginx.stop();
    // The same frames, encoded the same way, as a file to compare with.
    let reference = x264_clip_frames(frames);
    assert_b_frames_arrive_in_display_order(&recording, &reference, 30.0, 2);
}

/// The exec test's encoder output, as a file.
fn x264_clip_frames(frames: usize) -> PathBuf {
    let frames = frames.to_string();
    generated_clip(
        "bframes-exec-reference-320x180-30",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x180:rate=30",
            "-frames:v",
            &frames,
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-bf",
            "3",
            "-pix_fmt",
            "yuv420p",
        ],
    )
}

fn ffprobe_packet_count(path: &Path) -> usize {
    if !path.exists() {
        return 0;
    }
    Command::new("ffprobe")
        .args([
            "-v",
            "quiet",
            "-select_streams",
            "v:0",
            "-show_entries",
            "packet=flags",
        ])
        .args(["-of", "csv=p=0"])
        .arg(path)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().count())
        .unwrap_or(0)
}

#[test]
fn muxing_b_frames_allocates_nothing_per_frame() {
    // The access units, split up front (the reader is not what is counted here).
    let clip = std::fs::read(clip_bf3_pyramid()).unwrap();
    let mut reader = AnnexBReader::new(8 << 20);
    let mut units: Vec<(Vec<u8>, Vec<NalRef>)> = Vec::new();
    let mut fed = 0;
    loop {
        while let Some(au) = reader.next_access_unit() {
            units.push((au.data.to_vec(), au.nals.to_vec()));
        }
        if fed == clip.len() {
            break;
        }
        let buffer = reader.read_buf().unwrap();
        let n = buffer.len().min(clip.len() - fed);
        buffer[..n].copy_from_slice(&clip[fed..fed + n]);
        reader.commit(n);
        fed += n;
        if fed == clip.len() {
            reader.finish();
        }
    }
    assert_eq!(units.len(), 120);
    let mut muxer = AvcMuxer::new();
    let duration = FrameDuration::from_rate(30, 1).unwrap();
    let mut mux = |units: &[(Vec<u8>, Vec<NalRef>)]| {
        let mut composition_ms = 0;
        for (data, nals) in units {
            let au = AccessUnit { data, nals };
            assert!(matches!(muxer.push(&au), Ok(Muxed::Frame { .. })));
            muxer.set_frame_duration(duration);
            composition_ms += u64::from(muxer.composition_time_ms());
        }
        composition_ms
    };
    // The first GOP's frames warm the muxer up (parameter sets, header storage).
    mux(&units[..10]);
    let (composition_ms, counts) = count_this_thread(|| mux(&units[10..]));
    assert!(composition_ms > 0, "the frames carry composition times");
    assert_eq!(counts.allocations, 0, "{counts:?} over 110 frames");
}
