//! `--input exec:CMD`: v4l2rtmp runs an encoder process, streams its stdout, restarts it when it
//! exits, and stops it on SIGTERM. `ffmpeg -re` stands in for `rpicam-vid`: it writes a clip's
//! Annex-B to stdout at the clip's frame rate, as a camera encoder does.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn encoder(clip: &std::path::Path) -> String {
    format!(
        "exec:ffmpeg -hide_banner -loglevel error -nostdin -re -i '{}' -c copy -f h264 -",
        clip.display()
    )
}

/// The pid in a log line naming the child as `program[pid]`.
fn child_pid(line: &str) -> u32 {
    let start = line.find("ffmpeg[").expect("the child's name") + "ffmpeg[".len();
    let end = start + line[start..].find(']').unwrap();
    line[start..end].parse().unwrap()
}

#[test]
fn a_child_that_exits_is_restarted_and_the_stream_goes_on() {
    let nginx = Nginx::start();
    let clip = clip_small();
    let keyframes = source_keyframes(&clip);
    let mut child = Command::new(BIN)
        .args(["--input", &encoder(&clip), &nginx.url("live", "exec")])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = log_lines(child.stderr.take().unwrap());
    let first = child_pid(&wait_for_line(
        &lines,
        "reading H.264 from",
        Duration::from_secs(20),
    ));
    let ended = wait_for_line(&lines, "ended (exited with code 0", Duration::from_secs(20));
    assert!(ended.contains("starting it again in"), "{ended}");
    let second = child_pid(&wait_for_line(
        &lines,
        "started ffmpeg[",
        Duration::from_secs(5),
    ));
    assert_ne!(first, second);
    // Stop in the middle of the second run: the child goes with us.
    std::thread::sleep(Duration::from_millis(1500));
    let stopped = Instant::now();
    let status = stop(&mut child, "TERM");
    assert!(status.success(), "{status}");
    assert!(
        stopped.elapsed() < Duration::from_secs(1),
        "stopping took {:?}",
        stopped.elapsed()
    );
    assert!(
        !std::path::Path::new(&format!("/proc/{second}")).exists(),
        "the child {second} outlived v4l2rtmp"
    );

    let recording = nginx.recording("exec");
    let _dir = nginx.stop();
    let probe = ffprobe(&recording, &[]);
    // The first run whole, then the second run from its first keyframe.
    assert!(
        probe.packets.len() > keyframes.len() + 20,
        "{} frames",
        probe.packets.len()
    );
    let first_run: Vec<bool> = probe.packets[..keyframes.len()]
        .iter()
        .map(|p| p.keyframe)
        .collect();
    assert_eq!(first_run, keyframes);
    assert!(probe.packets[keyframes.len()].keyframe);
    let mut previous = f64::NEG_INFINITY;
    for packet in &probe.packets {
        assert!(
            packet.dts_ms > previous,
            "timestamps increase across the restart"
        );
        previous = packet.dts_ms;
    }
    assert_eq!(decode_errors(&recording), "");
}

#[test]
fn a_child_that_goes_silent_is_restarted_by_the_source_watchdog() {
    let nginx = Nginx::start();
    let clip = clip_small();
    // Two seconds of video, then silence while the process lives on.
    let command = format!(
        "exec:sh -c 'ffmpeg -hide_banner -loglevel error -nostdin -re -t 2 -i \"{}\" -c copy -f h264 -; exec sleep 600'",
        clip.display()
    );
    let mut child = Command::new(BIN)
        .args([
            "--input",
            &command,
            "--source-timeout",
            "2",
            &nginx.url("live", "silent"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = log_lines(child.stderr.take().unwrap());
    wait_for_line(&lines, "publishing to", Duration::from_secs(20));
    let line = wait_for_line(&lines, "for 2 s: restarting it", Duration::from_secs(15));
    assert!(line.contains("no frame from sh["), "{line}");
    wait_for_line(&lines, "stopped: ", Duration::from_secs(5));
    assert!(stop(&mut child, "TERM").success());
    let recording = nginx.recording("silent");
    let _dir = nginx.stop();
    assert_eq!(decode_errors(&recording), "");
}

#[test]
fn a_missing_program_is_an_input_error() {
    let output = run_v4l2rtmp(
        &[
            "--input",
            "exec:/nonexistent/encoder --flag",
            "rtmp://127.0.0.1:1/live/k",
        ],
        None,
        Duration::from_secs(10),
    );
    assert_eq!(exit_code(output.status), 65, "{}", stderr_of(&output));
    assert!(
        stderr_of(&output).contains("/nonexistent/encoder"),
        "{}",
        stderr_of(&output)
    );
}
