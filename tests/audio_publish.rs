//! `--audio silence` end to end: a silent AAC-LC track beside the video, published to nginx-rtmp
//! and to `ffmpeg -listen 1` on 127.0.0.1 and read back with ffprobe. Checked: an AAC track with
//! the rate and channels asked for, audio and video of the same length (within 50 ms), audio
//! timestamps rising one AAC frame at a time from the first keyframe, and `ffmpeg -v error`
//! decoding both tracks with no error. (onMetaData's audio fields are pinned byte for byte in
//! `media::flv`'s tests: neither server records the publisher's onMetaData as it came.)

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

const LIMIT: Duration = Duration::from_secs(120);

/// One stream of a recording, as ffprobe reports it.
#[derive(Debug, Default)]
struct Track {
    codec: String,
    sample_rate: u32,
    channels: u32,
    /// Packet presentation times, seconds.
    pts: Vec<f64>,
    /// Packet durations, seconds.
    durations: Vec<f64>,
}

fn probe_track(path: &Path, kind: &str) -> Track {
    let run = |args: &[&str]| -> String {
        let output = Command::new("ffprobe")
            .args(["-v", "error", "-select_streams", kind])
            .args(args)
            .args(["-of", "csv=p=0"])
            .arg(path)
            .output()
            .expect("run ffprobe");
        assert!(
            output.status.success(),
            "ffprobe failed on {}",
            path.display()
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let mut track = Track::default();
    let streams = run(&["-show_entries", "stream=codec_name,sample_rate,channels"]);
    if let Some(line) = streams.lines().next() {
        let fields: Vec<&str> = line.split(',').collect();
        track.codec = fields[0].to_string();
        track.sample_rate = fields.get(1).and_then(|f| f.parse().ok()).unwrap_or(0);
        track.channels = fields.get(2).and_then(|f| f.parse().ok()).unwrap_or(0);
    }
    for line in run(&["-show_entries", "packet=pts_time,duration_time"]).lines() {
        let mut fields = line.split(',');
        let pts = fields.next().and_then(|f| f.parse().ok());
        let duration = fields.next().and_then(|f| f.parse().ok());
        if let (Some(pts), Some(duration)) = (pts, duration) {
            track.pts.push(pts);
            track.durations.push(duration);
        }
    }
    track
}

/// Checks the recording: both tracks, the audio as asked, of the video's length, and decodable.
fn check(recording: &Path, rate: u32, channels: u32) {
    let video = probe_track(recording, "v");
    let audio = probe_track(recording, "a");
    assert_eq!(video.codec, "h264");
    assert_eq!(audio.codec, "aac", "{audio:?}");
    assert_eq!((audio.sample_rate, audio.channels), (rate, channels));
    assert!(video.pts.len() >= 20, "{} video packets", video.pts.len());
    // Audio starts with the first keyframe and rises one AAC frame (1024 samples) at a time,
    // to the millisecond FLV keeps.
    let frame = 1024.0 / f64::from(rate);
    let first_video = video.pts[0];
    assert!(
        (audio.pts[0] - first_video).abs() <= frame,
        "audio starts at {} s, video at {first_video} s",
        audio.pts[0]
    );
    for pair in audio.pts.windows(2) {
        let step = pair[1] - pair[0];
        assert!(
            (step - frame).abs() <= 0.0011,
            "audio step {step} s, not {frame} s"
        );
    }
    // The same length, within 50 ms.
    let end = |t: &Track| t.pts.last().unwrap() + t.durations.last().unwrap();
    let (video_end, audio_end) = (end(&video), end(&audio));
    assert!(
        (video_end - audio_end).abs() <= 0.050,
        "video ends at {video_end} s, audio at {audio_end} s"
    );
    assert_eq!(decode_errors(recording), "");
}

#[test]
fn a_silent_track_to_nginx_is_as_long_as_the_video_and_decodes() {
    let clip = clip_small();
    let nginx = Nginx::start();
    let url = nginx.url("live", "silence");
    let output = run_v4l2rtmp(
        &[
            "--input",
            clip.to_str().unwrap(),
            "--audio",
            "silence",
            &url,
        ],
        None,
        LIMIT,
    );
    assert_success(&output);
    let recording = nginx.recording("silence");
    let _dir = nginx.stop();
    check(&recording, 48_000, 1);
}

#[test]
fn a_stereo_silent_track_at_44100_to_ffmpeg() {
    let clip = clip_small();
    let listener = FfmpegListener::start("silence");
    let url = listener.url("silence");
    let output = run_v4l2rtmp(
        &[
            "--input",
            clip.to_str().unwrap(),
            "--audio",
            "silence",
            "--audio-rate",
            "44100",
            "--audio-channels",
            "2",
            &url,
        ],
        None,
        LIMIT,
    );
    assert_success(&output);
    let (_dir, out) = listener.finish();
    check(&out, 44_100, 2);
}

#[test]
fn a_silent_track_beside_a_live_pipe() {
    // The clip through stdin: a live input, stamped by arrival; the silent track follows the
    // video's timeline all the same.
    let clip = clip_small();
    let bytes = std::fs::read(&clip).unwrap();
    let nginx = Nginx::start();
    let url = nginx.url("live", "pipe");
    let output = run_v4l2rtmp(
        &["--input", "-", "--audio", "silence", "--fps", "25", &url],
        Some(&bytes),
        LIMIT,
    );
    assert_success(&output);
    let recording = nginx.recording("pipe");
    let _dir = nginx.stop();
    check(&recording, 48_000, 1);
}
