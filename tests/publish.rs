//! End-to-end publishing against real servers on 127.0.0.1 (nginx-rtmp and `ffmpeg -listen 1`),
//! verified by reading the stream back with ffprobe and decoding it with ffmpeg.

mod common;

use std::time::Duration;

use common::*;

const LIMIT: Duration = Duration::from_secs(120);

fn push_file(clip: &std::path::Path, url: &str, extra: &[&str]) {
    let clip = clip.to_str().unwrap();
    let mut args = vec!["--input", clip];
    args.extend_from_slice(extra);
    args.push(url);
    let output = run_v4l2rtmp(&args, None, LIMIT);
    assert_success(&output);
}

#[test]
fn pi_clip_to_nginx_arrives_whole() {
    let Some(clip) = pi_clip() else { return };
    let keyframes = source_keyframes(&clip);
    assert_eq!(keyframes.len(), 20);
    let nginx = Nginx::start();
    push_file(
        &clip,
        &format!("{}?token=abc&cam=1", nginx.url("live", "pi")),
        &["--fps", "30"],
    );
    let recording = nginx.recording("pi");
    let log = nginx.error_log();
    let dir = nginx.stop();
    // The query travels with the stream name, where nginx-rtmp's on_publish reads it.
    assert!(
        log.contains("publish: name='pi' args='token=abc&cam=1'"),
        "{log}"
    );
    let probe = ffprobe(&recording, &[]);
    assert_matches_source(&probe, &keyframes, 1920, 1080, 30.0);
    assert_eq!(decode_errors(&recording), "");
    drop(dir);
}

#[test]
fn pi_clip_to_ffmpeg_listener_arrives_whole() {
    let Some(clip) = pi_clip() else { return };
    let keyframes = source_keyframes(&clip);
    let listener = FfmpegListener::start("pi");
    push_file(&clip, &listener.url("pi"), &["--fps", "30"]);
    let (_dir, out) = listener.finish();
    let probe = ffprobe(&out, &[]);
    assert_matches_source(&probe, &keyframes, 1920, 1080, 30.0);
    assert_eq!(decode_errors(&out), "");
}

#[test]
fn sixty_seconds_of_1080p30_to_nginx() {
    let clip = clip_1080p30_60s();
    let keyframes = source_keyframes(&clip);
    assert_eq!(keyframes.len(), 1800);
    let nginx = Nginx::start();
    // No --fps: the rate comes from the SPS timing that x264 writes.
    push_file(&clip, &nginx.url("live", "long"), &[]);
    let recording = nginx.recording("long");
    let _dir = nginx.stop();
    assert_matches_source(&ffprobe(&recording, &[]), &keyframes, 1920, 1080, 30.0);
}

#[test]
fn sixty_seconds_of_1080p30_to_ffmpeg_listener() {
    let clip = clip_1080p30_60s();
    let keyframes = source_keyframes(&clip);
    let listener = FfmpegListener::start("long");
    push_file(&clip, &listener.url("long"), &[]);
    let (_dir, out) = listener.finish();
    assert_matches_source(&ffprobe(&out, &[]), &keyframes, 1920, 1080, 30.0);
}

#[test]
fn timestamps_cross_the_extended_timestamp_boundary() {
    let clip = clip_small();
    let keyframes = source_keyframes(&clip);
    // 0xFFFFFF ms is 16777215; the clip's 120 frames span 4 s across it.
    for server in ["nginx", "ffmpeg"] {
        let start = "16775215";
        let (probe, _dir) = match server {
            "nginx" => {
                let nginx = Nginx::start();
                push_file(
                    &clip,
                    &nginx.url("live", "ext"),
                    &["--start-timestamp", start],
                );
                let recording = nginx.recording("ext");
                let dir = nginx.stop();
                (ffprobe(&recording, &[]), dir)
            }
            _ => {
                let listener = FfmpegListener::start_with("ext", &["-copyts"]);
                push_file(&clip, &listener.url("ext"), &["--start-timestamp", start]);
                let (dir, out) = listener.finish();
                let probe = ffprobe(&out, &[]);
                // With -copyts FFmpeg keeps the publisher's timestamps: the boundary really was crossed.
                assert!(
                    (probe.packets[0].dts_ms - 16_775_215.0).abs() <= 1.0,
                    "{:?}",
                    probe.packets[0]
                );
                assert!(probe.packets.last().unwrap().dts_ms > 16_777_215.0);
                (probe, dir)
            }
        };
        assert_matches_source(&probe, &keyframes, 640, 360, 30.0);
    }
}

#[test]
fn keyframes_over_a_megabyte_at_chunk_sizes_128_and_65536() {
    let clip = clip_huge_keyframes();
    let keyframes = source_keyframes(&clip);
    let biggest = ffprobe(&clip, &[])
        .packets
        .iter()
        .map(|p| p.size)
        .max()
        .unwrap();
    assert!(
        biggest > 1_000_000,
        "the clip's largest frame is {biggest} bytes"
    );
    for chunk_size in ["128", "65536"] {
        let nginx = Nginx::start();
        let key = format!("big{chunk_size}");
        push_file(
            &clip,
            &nginx.url("live", &key),
            &["--chunk-size", chunk_size, "--fps", "30"],
        );
        let recording = nginx.recording(&key);
        let _dir = nginx.stop();
        let probe = ffprobe(&recording, &[]);
        assert_matches_source(&probe, &keyframes, 1920, 1080, 30.0);
        let sizes: Vec<usize> = probe.packets.iter().map(|p| p.size).collect();
        let source_sizes: Vec<usize> = ffprobe(&clip, &[]).packets.iter().map(|p| p.size).collect();
        // FLV packets carry 4-byte length prefixes where the source had start codes: the same size
        // for 4-byte start codes, one more per NAL for 3-byte ones; never less.
        for (got, want) in sizes.iter().zip(&source_sizes) {
            assert!(
                got >= want && *got <= want + 64,
                "packet of {got} bytes for a source frame of {want}"
            );
        }
        assert_eq!(decode_errors(&recording), "", "chunk size {chunk_size}");
    }
}

#[test]
fn stdin_and_fifo_inputs() {
    let clip = clip_small();
    let bytes = std::fs::read(&clip).unwrap();
    let keyframes = source_keyframes(&clip);
    let nginx = Nginx::start();
    // Pipes are live input: frames that come faster than the network takes them wait in a queue
    // bounded by --queue-time. These tests write 4 s of video at once, faster than real time,
    // before v4l2rtmp connects (it connects once the input gave a keyframe), so they give the
    // queue room for the whole clip.
    let mut child = std::process::Command::new(BIN)
        .args([
            "--input",
            "-",
            "--fps",
            "30",
            "--queue-time",
            "10000",
            &nginx.url("live", "stdin"),
        ])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lines = log_lines(child.stderr.take().unwrap());
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(&bytes).unwrap();
    }
    wait_for_line(&lines, "publishing to", Duration::from_secs(30));
    assert!(
        child.wait().unwrap().success(),
        "v4l2rtmp exits at the end of stdin"
    );

    // A FIFO outlives its writer: v4l2rtmp sends everything the writer wrote, then waits for the
    // next writer until it is stopped.
    let fifo = nginx.dir.path().join("input.fifo");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(status.success());
    let mut child = std::process::Command::new(BIN)
        .args([
            "--input",
            fifo.to_str().unwrap(),
            "--fps",
            "30",
            "--queue-time",
            "10000",
            &nginx.url("live", "fifo"),
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lines = log_lines(child.stderr.take().unwrap());
    wait_for_line(&lines, "reading H.264 from", Duration::from_secs(30));
    // Nothing is published before the input gives a keyframe: no empty stream on the server.
    std::thread::sleep(Duration::from_millis(500));
    let early: Vec<String> = lines.try_iter().collect();
    assert!(
        !early.iter().any(|line| line.contains("connected to")),
        "connected before any input: {early:?}"
    );
    std::fs::write(&fifo, &bytes).unwrap();
    // The writer may leave before or after the publish starts.
    wait_for_line(
        &lines,
        "waiting for the next writer",
        Duration::from_secs(30),
    );
    // The second writer stops after two GOPs, just before the third keyframe's start code.
    let idr_starts: Vec<usize> = (0..bytes.len() - 4)
        .filter(|&i| bytes[i..i + 3] == [0, 0, 1] && bytes[i + 3] & 0x1f == 5)
        .map(|i| if i > 0 && bytes[i - 1] == 0 { i - 1 } else { i })
        .collect();
    assert_eq!(idr_starts.len(), 4, "a keyframe every second");
    std::fs::write(&fifo, &bytes[..idr_starts[2]]).unwrap();
    let again = wait_for_line(
        &lines,
        "waiting for the next writer",
        Duration::from_secs(30),
    );
    assert!(again.contains("closed it"), "{again}");
    // Frames the socket has not taken yet wait in the queue, and a stop drops them: let them go.
    std::thread::sleep(Duration::from_millis(1500));
    stop(&mut child, "TERM");
    let stdin_recording = nginx.recording("stdin");
    let fifo_recording = nginx.recording("fifo");
    let _dir = nginx.stop();
    assert_matches_source(&ffprobe(&stdin_recording, &[]), &keyframes, 640, 360, 30.0);
    // The second writer's frames follow the first's.
    let fifo_probe = ffprobe(&fifo_recording, &[]);
    assert_eq!(
        fifo_probe.packets.len(),
        keyframes.len() + 60,
        "both writers' frames arrived"
    );
    let first_writer = Probe {
        packets: fifo_probe.packets[..keyframes.len()].to_vec(),
        ..fifo_probe.clone()
    };
    assert_matches_source(&first_writer, &keyframes, 640, 360, 30.0);
    assert!(
        fifo_probe.packets[keyframes.len()].keyframe,
        "the second writer starts at its keyframe"
    );
    assert_eq!(decode_errors(&fifo_recording), "");
}

/// The progress line, as FFmpeg's: with `--stats-interval 1`, a paced 4 s clip at 30 fps gives
/// lines whose frame rate and bitrate are the current ones.
#[test]
fn progress_lines_show_the_current_frame_rate_and_bitrate() {
    let clip = clip_small();
    let nginx = Nginx::start();
    let output = run_v4l2rtmp(
        &[
            "--input",
            clip.to_str().unwrap(),
            "--realtime",
            "--stats-interval",
            "1",
            &nginx.url("live", "stats"),
        ],
        None,
        LIMIT,
    );
    assert_success(&output);
    let stderr = stderr_of(&output);
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains("frame=")).collect();
    assert!(lines.len() >= 2, "{stderr}");
    let field = |line: &str, name: &str| -> f64 {
        let rest = &line[line.find(name).unwrap() + name.len()..];
        rest.trim_start_matches('=')
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect::<String>()
            .parse()
            .unwrap()
    };
    // The lines after the first cover a whole second of pacing.
    for line in &lines[1..] {
        let fps = field(line, "fps");
        assert!((20.0..=40.0).contains(&fps), "{line}");
        assert!(field(line, "bitrate") > 100.0, "{line}");
    }
    let _ = nginx.stop();
}

#[test]
fn realtime_paces_a_file_at_its_frame_rate() {
    let clip = clip_small();
    let nginx = Nginx::start();
    let started = std::time::Instant::now();
    push_file(&clip, &nginx.url("live", "paced"), &["--realtime"]);
    let elapsed = started.elapsed();
    // 120 frames at 30 fps: the last one is due 3.967 s after the first.
    assert!(
        elapsed >= Duration::from_millis(3900),
        "finished after {elapsed:?}"
    );
    let _ = nginx.stop();
}

/// A pipe that gives the whole clip at once, far faster than real time (a transcoder that outruns
/// it, or `cat clip.h264 |`), with the default --queue-time: the input is held back while the
/// store is full and nothing in it is late, so every frame is sent and none dropped. The store is
/// made smaller than the clip (1 MB) so that it fills up: the old queue dropped most of the clip.
#[test]
fn a_pipe_faster_than_real_time_loses_nothing() {
    let clip = clip_small();
    let bytes = std::fs::read(&clip).unwrap();
    let keyframes = source_keyframes(&clip);
    let nginx = Nginx::start();
    let output = run_v4l2rtmp(
        &[
            "--input",
            "-",
            "--fps",
            "30",
            "--queue-size",
            "300000",
            "--max-frame-size",
            "200000",
            &nginx.url("live", "burst"),
        ],
        Some(&bytes),
        LIMIT,
    );
    assert_success(&output);
    let stderr = stderr_of(&output);
    assert!(
        stderr.contains(&format!("sent {} frames", keyframes.len()))
            && stderr.contains(" 0 frames dropped"),
        "{stderr}"
    );
    let recording = nginx.recording("burst");
    let _dir = nginx.stop();
    assert_matches_source(&ffprobe(&recording, &[]), &keyframes, 640, 360, 30.0);
}
