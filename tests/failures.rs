//! Bad input and refusing servers: each ends with a clear message, the documented exit code, and
//! no panic.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const LIMIT: Duration = Duration::from_secs(60);

fn assert_clean_failure(output: &std::process::Output, code: i32, needle: &str) {
    let stderr = stderr_of(output);
    assert_eq!(
        exit_code(output.status),
        code,
        "exit code; stderr:\n{stderr}"
    );
    assert!(
        stderr.contains(needle),
        "stderr should mention {needle:?}:\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// A deterministic pseudo-random byte stream.
fn garbage(len: usize) -> Vec<u8> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

#[test]
fn garbage_on_stdin() {
    let nginx = Nginx::start();
    let output = run_v4l2rtmp(
        &["--input", "-", &nginx.url("live", "k")],
        Some(&garbage(3 << 20)),
        LIMIT,
    );
    assert_clean_failure(&output, 65, "input error");
}

#[test]
fn endless_garbage_is_given_up_on() {
    // More garbage than any frame could be: v4l2rtmp stops reading rather than waiting forever.
    let nginx = Nginx::start();
    let output = run_v4l2rtmp(
        &["--input", "-", &nginx.url("live", "k")],
        Some(&garbage(40 << 20)),
        LIMIT,
    );
    assert_clean_failure(&output, 65, "is the input an Annex-B H.264 stream?");
}

#[test]
fn truncated_stdin() {
    let clip = std::fs::read(clip_small()).unwrap();
    let nginx = Nginx::start();
    for cut in [0, 3, 10, 30] {
        let output = run_v4l2rtmp(
            &["--input", "-", &nginx.url("live", "k")],
            Some(&clip[..cut]),
            LIMIT,
        );
        assert_clean_failure(&output, 65, "held no H.264");
    }
}

#[test]
fn no_sps_in_the_input() {
    // The clip with its SPS NAL units removed (start code + type 7).
    let clip = std::fs::read(clip_small()).unwrap();
    let mut stripped = Vec::new();
    let mut i = 0;
    let starts: Vec<usize> = (0..clip.len().saturating_sub(3))
        .filter(|&p| clip[p] == 0 && clip[p + 1] == 0 && clip[p + 2] == 1)
        .collect();
    for (n, &start) in starts.iter().enumerate() {
        let end = starts.get(n + 1).copied().unwrap_or(clip.len());
        if clip[start + 3] & 0x1f != 7 {
            stripped.extend_from_slice(&clip[i.max(start)..end]);
        }
        i = end;
    }
    let nginx = Nginx::start();
    let output = run_v4l2rtmp(
        &["--input", "-", &nginx.url("live", "k")],
        Some(&stripped),
        LIMIT,
    );
    assert_clean_failure(&output, 65, "no SPS");
}

#[test]
fn missing_input_file() {
    let output = run_v4l2rtmp(
        &[
            "--input",
            "/nonexistent/clip.h264",
            "rtmp://127.0.0.1:1/live/k",
        ],
        None,
        LIMIT,
    );
    assert_clean_failure(&output, 65, "cannot open /nonexistent/clip.h264");
}

#[test]
fn bad_command_lines() {
    let output = run_v4l2rtmp(
        &["--input", "-", "--chunk-size", "100", "rtmp://h/live/k"],
        None,
        LIMIT,
    );
    assert_clean_failure(&output, 64, "--chunk-size");
    let output = run_v4l2rtmp(&["--input", "-", "http://h/live/k"], None, LIMIT);
    assert_clean_failure(&output, 64, "rtmp://");
    let output = run_v4l2rtmp(&["--help"], None, LIMIT);
    assert_success(&output);
    assert!(String::from_utf8_lossy(&output.stdout).contains("EXIT CODES"));
}

#[test]
fn on_publish_callback_refuses_the_key() {
    let nginx = Nginx::start();
    let clip = clip_small();
    let url = nginx.url("auth", "secretkey42");
    let output = run_v4l2rtmp(
        &[
            "--max-retries",
            "0",
            "--input",
            clip.to_str().unwrap(),
            &url,
        ],
        None,
        LIMIT,
    );
    assert_clean_failure(&output, 69, "refused the stream name or key");
    assert!(
        !stderr_of(&output).contains("secretkey42"),
        "the key leaked:\n{}",
        stderr_of(&output)
    );
}

#[test]
fn access_rule_that_denies_publishing() {
    let nginx = Nginx::start();
    let clip = clip_small();
    let url = nginx.url("closed", "secretkey42");
    let output = run_v4l2rtmp(
        &[
            "--max-retries",
            "0",
            "--input",
            clip.to_str().unwrap(),
            &url,
        ],
        None,
        LIMIT,
    );
    assert_clean_failure(&output, 69, "probably refuses this stream");
    assert!(
        !stderr_of(&output).contains("secretkey42"),
        "the key leaked:\n{}",
        stderr_of(&output)
    );
}

#[test]
fn stream_name_already_in_use_is_refused_with_the_servers_reason() {
    let nginx = Nginx::start();
    let clip = clip_small();
    let url = nginx.url("live", "busykey");
    // The first publisher holds the name, paced in real time.
    let mut first = Command::new(BIN)
        .args(["--input", clip.to_str().unwrap(), "--realtime", &url])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    let output = run_v4l2rtmp(
        &[
            "--max-retries",
            "0",
            "--input",
            clip.to_str().unwrap(),
            &url,
        ],
        None,
        LIMIT,
    );
    let _ = first.kill();
    let _ = first.wait();
    assert_clean_failure(&output, 69, "NetStream.Publish.BadName");
    assert!(
        !stderr_of(&output).contains("busykey"),
        "{}",
        stderr_of(&output)
    );
}

#[test]
fn server_that_closes_mid_handshake() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut socket, _) = listener.accept().unwrap();
        let mut c0c1 = [0u8; 1537];
        socket.read_exact(&mut c0c1).unwrap();
        // S0 and half of S1, then hang up.
        let mut reply = vec![3u8];
        reply.extend_from_slice(&[0u8; 700]);
        socket.write_all(&reply).unwrap();
        c0c1[0]
    });
    let clip = clip_small();
    let output = run_v4l2rtmp(
        &[
            "--max-retries",
            "0",
            "--input",
            clip.to_str().unwrap(),
            &format!("rtmp://127.0.0.1:{port}/live/k"),
        ],
        None,
        LIMIT,
    );
    assert_eq!(server.join().unwrap(), 3, "C0 asks for RTMP version 3");
    assert_clean_failure(&output, 76, "during the handshake");
}

#[test]
fn server_that_never_answers_the_handshake_times_out() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let clip = clip_small();
    let started = Instant::now();
    let output = run_v4l2rtmp(
        &[
            "--max-retries",
            "0",
            "--input",
            clip.to_str().unwrap(),
            "--timeout",
            "1",
            &format!("rtmp://127.0.0.1:{port}/live/k"),
        ],
        None,
        LIMIT,
    );
    drop(listener);
    assert_clean_failure(&output, 76, "did not send the handshake");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn nothing_listening() {
    let port = free_port();
    let clip = clip_small();
    let output = run_v4l2rtmp(
        &[
            "--max-retries",
            "0",
            "--input",
            clip.to_str().unwrap(),
            &format!("rtmp://127.0.0.1:{port}/live/k"),
        ],
        None,
        LIMIT,
    );
    assert_clean_failure(&output, 75, "cannot connect");
}

#[test]
fn sigint_and_sigterm_mid_stream_unpublish_and_exit_cleanly() {
    for signal in ["INT", "TERM"] {
        let nginx = Nginx::start();
        let clip = clip_small();
        let mut child = Command::new(BIN)
            .args([
                "--input",
                clip.to_str().unwrap(),
                "--realtime",
                &nginx.url("live", "sig"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(1500));
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
        let stopped = Instant::now();
        let status = child.wait().unwrap();
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        assert!(status.success(), "SIG{signal}: {status}: {stderr}");
        assert!(
            stopped.elapsed() < Duration::from_secs(1),
            "SIG{signal}: took {:?} to stop",
            stopped.elapsed()
        );
        assert!(stderr.contains(&format!("SIG{signal}")), "{stderr}");
        let recording = nginx.recording("sig");
        let log = nginx.error_log();
        let _dir = nginx.stop();
        assert!(
            log.contains("deleteStream"),
            "SIG{signal}: nginx saw no deleteStream:\n{log}"
        );
        let probe = ffprobe(&recording, &[]);
        assert!(
            (20..110).contains(&probe.packets.len()),
            "{} frames before the signal",
            probe.packets.len()
        );
        assert_eq!(decode_errors(&recording), "", "SIG{signal}");
    }
}

/// v4l2rtmp with `args` as systemd starts it (JOURNAL_STREAM set, so lines carry `<N>`
/// priorities); its exit code and stderr.
fn run_under_journald(args: &[&str]) -> (i32, String) {
    let output = Command::new(BIN)
        .args(args)
        .env("JOURNAL_STREAM", "8:12345")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (exit_code(output.status), stderr_of(&output))
}

#[test]
fn every_error_reaches_journald_at_error_priority() {
    let dir = TempDir::new("journal-errors");
    let no_url = dir.path().join("cam.toml");
    std::fs::write(&no_url, "input = \"-\"\n").unwrap();
    let no_url = no_url.to_str().unwrap().to_string();
    let port = free_port();
    let unreachable = format!("rtmp://127.0.0.1:{port}/live/k");
    let clip = clip_small();
    for (args, code) in [
        // Before logging starts: the command line and the configuration file.
        (vec!["--bogus"], 64),
        (
            vec!["--input", "-", "--chunk-size", "1", "rtmp://h/live/k"],
            64,
        ),
        (vec!["--config", "/nonexistent.toml"], 64),
        (vec!["--config", &no_url], 64),
        // After it: the same line through the logger.
        (
            vec![
                "--max-retries",
                "0",
                "--input",
                clip.to_str().unwrap(),
                &unreachable,
            ],
            75,
        ),
    ] {
        let (exit, stderr) = run_under_journald(&args);
        assert_eq!(exit, code, "{args:?}: {stderr}");
        let last = stderr.lines().last().unwrap_or_default();
        assert!(
            last.starts_with("<3>") && last.contains("error"),
            "{args:?}: the error is not at error priority (<3>):\n{stderr}"
        );
        for line in stderr.lines() {
            assert!(
                line.starts_with('<') && line[1..].starts_with(|c: char| c.is_ascii_digit()),
                "{args:?}: a line without a priority: {line:?}"
            );
        }
    }
}

#[test]
fn subcommands_do_not_ask_for_a_url() {
    let output = run_v4l2rtmp(&["devices", "--help"], None, LIMIT);
    assert_success(&output);
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(help.contains("v4l2rtmp devices [DEVICE]..."), "{help}");
    assert!(
        !help.contains("EXIT CODES"),
        "the devices usage, not the whole help:\n{help}"
    );

    for version in [&["version"][..], &["--version"], &["-V"]] {
        let output = run_v4l2rtmp(version, None, LIMIT);
        assert_success(&output);
        assert_eq!(
            String::from_utf8_lossy(&output.stdout),
            format!(
                "v4l2rtmp {}\n{}\n",
                env!("CARGO_PKG_VERSION"),
                v4l2rtmp::media::aac_encoder::ENCODER_DESCRIPTION
            ),
            "{version:?}"
        );
    }

    // One device: only it, or why it is not one.
    let output = run_v4l2rtmp(&["devices", "/dev/null"], None, LIMIT);
    assert_clean_failure(&output, 64, "/dev/null is not a V4L2 device");
    let output = run_v4l2rtmp(&["devices", "/dev/video-v4l2rtmp-absent"], None, LIMIT);
    assert_clean_failure(&output, 64, "/dev/video-v4l2rtmp-absent does not exist");
    let output = run_v4l2rtmp(&["devices", "--size", "1280x720"], None, LIMIT);
    assert_clean_failure(&output, 64, "devices: unknown option --size");
    for output in [
        run_v4l2rtmp(&["devices", "/dev/null"], None, LIMIT),
        run_v4l2rtmp(&["version"], None, LIMIT),
    ] {
        assert!(
            !stderr_of(&output).contains("URL"),
            "{}",
            stderr_of(&output)
        );
    }
}

#[test]
fn random_bytes_with_start_codes_are_refused_before_connecting() {
    // 5 MB of seeded random bytes with a 4-byte start code every 900..1100 bytes: about 5000
    // "NAL units" of random types, ~160 of them "SPS" and "PPS". Decoders reject every such
    // parameter set, so nothing is a frame: the input is refused (exit 65) without a connection
    // to the URL ever being attempted (nothing listens on port 1 anyway).
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut data = Vec::with_capacity(5 << 20);
    while data.len() < 5 << 20 {
        data.extend_from_slice(&[0, 0, 0, 1]);
        let len = 900 + (next() % 201) as usize;
        data.extend((0..len).map(|_| (next() >> 24) as u8));
    }
    let dir = TempDir::new("random-start-codes");
    let path = dir.path().join("random.h264");
    std::fs::write(&path, &data).unwrap();
    let output = run_v4l2rtmp(
        &[
            "--input",
            path.to_str().unwrap(),
            "rtmp://127.0.0.1:1/live/k",
        ],
        None,
        LIMIT,
    );
    assert_clean_failure(&output, 65, "held no H.264 that can be streamed");
    let stderr = stderr_of(&output).to_lowercase();
    assert!(
        !stderr.contains("connecting") && !stderr.contains("publishing"),
        "nothing may be attempted:\n{stderr}"
    );
}
