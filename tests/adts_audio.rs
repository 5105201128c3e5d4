//! `--audio FIFO` end to end: ADTS AAC from a FIFO (an encoder running elsewhere) beside live
//! H.264 on stdin, both written in real time by the test, published to nginx-rtmp and to
//! `ffmpeg -listen 1` on 127.0.0.1 and read back. Checked: an AAC track at the stream's rate and
//! channels, the tone in it, audio as long as the video (within 50 ms), every tag of the
//! recording in timestamp order (the video waited for the audio of its time), and
//! `ffmpeg -v error` decoding both tracks with no error.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_v4l2rtmp");

/// 4 s of a 1 kHz tone, AAC-LC in ADTS from FFmpeg's encoder (generated once).
fn tone_adts(rate: u32, channels: u32) -> PathBuf {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    require_tool("ffmpeg");
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("clips");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("tone-{rate}-{channels}.aac"));
    if !path.exists() {
        let partial = dir.join(format!(
            "tone-{rate}-{channels}.{}.partial",
            std::process::id()
        ));
        let status = Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y"])
            .args(["-f", "lavfi", "-i"])
            .arg(format!("sine=frequency=1000:sample_rate={rate}:duration=4"))
            .args(["-ac", &channels.to_string(), "-c:a", "aac", "-b:a", "96k"])
            .args(["-f", "adts"])
            .arg(&partial)
            .status()
            .expect("run ffmpeg");
        assert!(status.success());
        std::fs::rename(&partial, &path).unwrap();
    }
    path
}

/// The ADTS frames of `data` (13-bit frame_length at bits 30..43).
fn adts_frames(data: &[u8]) -> Vec<&[u8]> {
    let mut frames = Vec::new();
    let mut at = 0;
    while at + 7 <= data.len() {
        assert_eq!(data[at], 0xff, "ADTS sync at {at}");
        let len = ((usize::from(data[at + 3]) & 3) << 11)
            | (usize::from(data[at + 4]) << 3)
            | (usize::from(data[at + 5]) >> 5);
        frames.push(&data[at..at + len]);
        at += len;
    }
    frames
}

/// The access units of an Annex-B stream: a new one at an SPS, or at a slice that follows a
/// slice.
fn access_units(data: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 < data.len() {
        if data[i..i + 3] == [0, 0, 1] {
            starts.push((
                if i > 0 && data[i - 1] == 0 { i - 1 } else { i },
                data[i + 3] & 0x1f,
            ));
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut units = Vec::new();
    let mut unit_start = 0;
    let mut previous_was_slice = false;
    for &(start, nal_type) in &starts {
        let slice = nal_type == 1 || nal_type == 5;
        if start > 0 && (nal_type == 7 || (slice && previous_was_slice)) {
            units.push(&data[unit_start..start]);
            unit_start = start;
        }
        previous_was_slice = slice;
    }
    units.push(&data[unit_start..]);
    units
}

/// Runs v4l2rtmp with the clip on stdin and the tone through a FIFO, each written at its own
/// pace in real time; returns its stderr.
fn publish(url: &str, adts: &Path) -> String {
    let dir = TempDir::new("adts-audio");
    let fifo = dir.path().join("audio.aac");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success(), "mkfifo {}", fifo.display());
    let clip = std::fs::read(clip_small()).unwrap();
    let audio = std::fs::read(adts).unwrap();
    let mut child = Command::new(BIN)
        .args(["--input", "-", "--audio", fifo.to_str().unwrap(), url])
        .env("RUST_LOG", "info")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start v4l2rtmp");
    let stderr = log_lines(child.stderr.take().unwrap());
    let mut video = child.stdin.take().unwrap();
    // Opening for writing waits for v4l2rtmp to open the FIFO for reading.
    let mut sound = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    let units = access_units(&clip);
    let frames = adts_frames(&audio);
    let rate = f64::from(48_000);
    // Both from the same instant, each item when it is due, in time order.
    let mut items: Vec<(f64, bool, &[u8])> = units
        .iter()
        .enumerate()
        .map(|(i, unit)| (i as f64 / 30.0, true, *unit))
        .chain(
            frames
                .iter()
                .enumerate()
                .map(|(i, frame)| (i as f64 * 1024.0 / rate, false, *frame)),
        )
        .collect();
    items.sort_by(|a, b| a.0.total_cmp(&b.0));
    let start = Instant::now();
    for (due, is_video, bytes) in items {
        let due = Duration::from_secs_f64(due);
        if let Some(wait) = due.checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
        if is_video {
            video.write_all(bytes).unwrap();
        } else {
            sound.write_all(bytes).unwrap();
        }
    }
    drop(video);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "v4l2rtmp did not end");
        std::thread::sleep(Duration::from_millis(20));
    };
    drop(sound);
    let log: Vec<String> = stderr.try_iter().collect();
    let log = log.join("\n");
    assert!(status.success(), "v4l2rtmp failed: {status}\n{log}");
    log
}

/// (codec, rate, channels) of a recording's audio, its packets' times (pts, duration), and the
/// video's.
fn probe(path: &Path, kind: &str) -> (String, Vec<(f64, f64)>) {
    let output = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", kind])
        .args([
            "-show_entries",
            "stream=codec_name,sample_rate,channels:packet=pts_time,duration_time",
        ])
        .args(["-of", "csv=p=0"])
        .arg(path)
        .output()
        .unwrap();
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let mut stream = String::new();
    let mut packets = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split(',').collect();
        match fields[..] {
            [pts, duration] => {
                if let (Ok(pts), Ok(duration)) = (pts.parse(), duration.parse()) {
                    packets.push((pts, duration));
                }
            }
            _ => stream = line.to_string(),
        }
    }
    (stream, packets)
}

/// The tone's frequency in the recording's decoded audio (zero crossings of the first channel),
/// and its RMS level relative to full scale.
fn tone(path: &Path) -> (f64, f64) {
    let output = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args([
            "-map", "0:a", "-ac", "1", "-f", "s16le", "-ar", "48000", "-",
        ])
        .output()
        .unwrap();
    assert!(output.status.success());
    let samples: Vec<f64> = output
        .stdout
        .chunks_exact(2)
        .map(|b| f64::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0)
        .collect();
    // The middle second, away from the edges.
    let middle = &samples[samples.len() / 2 - 24_000..samples.len() / 2 + 24_000];
    let crossings = middle
        .windows(2)
        .filter(|w| w[0] < 0.0 && w[1] >= 0.0)
        .count();
    let rms = (middle.iter().map(|s| s * s).sum::<f64>() / middle.len() as f64).sqrt();
    (crossings as f64, rms)
}

/// FLV tags of a recording: (is audio, timestamp ms), after the header.
fn flv_tags(path: &Path) -> Vec<(bool, u32)> {
    let data = std::fs::read(path).unwrap();
    assert_eq!(&data[..3], b"FLV");
    let mut at = u32::from_be_bytes([data[5], data[6], data[7], data[8]]) as usize + 4;
    let mut tags = Vec::new();
    while at + 11 <= data.len() {
        let kind = data[at];
        let size = usize::from(data[at + 1]) << 16
            | usize::from(data[at + 2]) << 8
            | usize::from(data[at + 3]);
        let timestamp = u32::from(data[at + 4]) << 16
            | u32::from(data[at + 5]) << 8
            | u32::from(data[at + 6])
            | u32::from(data[at + 7]) << 24;
        if kind == 8 || kind == 9 {
            tags.push((kind == 8, timestamp));
        }
        at += 11 + size + 4;
    }
    tags
}

fn check(recording: &Path) {
    let (video_stream, video) = probe(recording, "v");
    let (audio_stream, audio) = probe(recording, "a");
    assert!(video_stream.starts_with("h264"), "{video_stream}");
    assert_eq!(audio_stream, "aac,48000,1");
    assert!(video.len() >= 100, "{} video packets", video.len());
    let end = |packets: &[(f64, f64)]| packets.last().map(|(p, d)| p + d).unwrap();
    let (video_end, audio_end) = (end(&video), end(&audio));
    assert!(
        (video_end - audio_end).abs() <= 0.050,
        "video ends at {video_end} s, audio at {audio_end} s"
    );
    assert!(
        (audio[0].0 - video[0].0).abs() <= 0.050,
        "audio starts at {} s, video at {} s",
        audio[0].0,
        video[0].0
    );
    let (crossings, rms) = tone(recording);
    assert!((crossings - 1000.0).abs() <= 2.0, "{crossings} Hz");
    // FFmpeg's sine source is at 1/8 of full scale: an RMS of 0.088.
    assert!((rms - 0.088).abs() < 0.02, "RMS {rms}");
    // Every frame decoded, each kept at its own time: video stamped by arrival is not evenly
    // spaced, and FFmpeg's null muxer would otherwise count two frames in one tick of its
    // 1/30 s time base as an error of the file.
    let output = Command::new("ffmpeg")
        .args(["-hide_banner", "-v", "error", "-nostdin", "-i"])
        .arg(recording)
        .args([
            "-map",
            "0",
            "-fps_mode",
            "passthrough",
            "-enc_time_base:v",
            "1/1000",
        ])
        .args(["-f", "null", "-"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let errors = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        errors.is_empty(),
        "{errors}\nfirst video packets {:?}\nfirst audio packets {:?}",
        &video[..10],
        &audio[..10]
    );
}

#[test]
fn adts_from_a_fifo_beside_live_video_to_nginx_in_timestamp_order() {
    let adts = tone_adts(48_000, 1);
    let nginx = Nginx::start();
    let url = nginx.url("live", "adts");
    let log = publish(&url, &adts);
    assert!(log.contains("reading ADTS AAC from"), "{log}");
    let recording = nginx.recording("adts");
    let _dir = nginx.stop();
    check(&recording);
    // nginx-rtmp writes the tags as they came: each at or after the one before.
    let tags = flv_tags(&recording);
    let first_video = tags.iter().position(|(audio, _)| !audio).unwrap();
    let media = &tags[first_video..];
    assert!(media.iter().filter(|(audio, _)| *audio).count() > 150);
    for pair in media.windows(2) {
        assert!(
            pair[1].1 >= pair[0].1,
            "out of order: {:?} then {:?}",
            pair[0],
            pair[1]
        );
    }
}

#[test]
fn adts_from_a_fifo_to_ffmpeg() {
    let adts = tone_adts(48_000, 1);
    let listener = FfmpegListener::start("adts");
    let url = listener.url("adts");
    publish(&url, &adts);
    let (_dir, out) = listener.finish();
    check(&out);
}
