//! RTMPS against nginx-rtmp behind a real TLS terminator (nginx's stream module), with a CA and
//! certificates made at test time: the stream arrives whole; a wrong CA or host name fails with a
//! clear error before any RTMP byte reaches the server; `--insecure` works and says it is unsafe.

mod common;

use std::time::Duration;

use common::*;

const LIMIT: Duration = Duration::from_secs(60);

fn rtmps_url(nginx: &Nginx, host: &str, key: &str) -> String {
    format!("rtmps://{host}:{}/live/{key}", nginx.tls_port.unwrap())
}

#[test]
fn a_stream_over_rtmps_arrives_whole() {
    let dir = TempDir::new("pki");
    let pki = TestPki::new(dir.path(), &["localhost", "127.0.0.1"]);
    let nginx = Nginx::start_with_tls(&pki.server_certificate, &pki.server_key);
    let clip = clip_small();
    let keyframes = source_keyframes(&clip);
    for (host, key) in [("localhost", "byname"), ("127.0.0.1", "byaddress")] {
        let output = run_v4l2rtmp(
            &[
                "--input",
                clip.to_str().unwrap(),
                "--ca-file",
                pki.ca_certificate.to_str().unwrap(),
                "--max-retries",
                "0",
                &rtmps_url(&nginx, host, key),
            ],
            None,
            LIMIT,
        );
        assert_success(&output);
    }
    let by_name = nginx.recording("byname");
    let by_address = nginx.recording("byaddress");
    let _dir = nginx.stop();
    assert_matches_source(&ffprobe(&by_name, &[]), &keyframes, 640, 360, 30.0);
    assert_matches_source(&ffprobe(&by_address, &[]), &keyframes, 640, 360, 30.0);
    assert_eq!(decode_errors(&by_name), "");
}

#[test]
fn an_unknown_ca_fails_clearly_and_sends_nothing() {
    let dir = TempDir::new("pki-server");
    let pki = TestPki::new(dir.path(), &["localhost"]);
    let other_dir = TempDir::new("pki-other");
    let other = TestPki::new(other_dir.path(), &["localhost"]);
    let nginx = Nginx::start_with_tls(&pki.server_certificate, &pki.server_key);
    let clip = clip_small();
    // Neither the system's roots nor another CA trust this server.
    for ca in [None, Some(other.ca_certificate.to_str().unwrap())] {
        let mut args = vec!["--input", clip.to_str().unwrap(), "--max-retries", "0"];
        if let Some(ca) = ca {
            args.extend(["--ca-file", ca]);
        }
        let url = rtmps_url(&nginx, "localhost", "secretkey");
        args.push(&url);
        let output = run_v4l2rtmp(&args, None, LIMIT);
        let stderr = stderr_of(&output);
        assert_eq!(exit_code(output.status), 76, "{stderr}");
        assert!(stderr.contains("certificate"), "{stderr}");
        assert!(stderr.to_lowercase().contains("issuer"), "{stderr}");
        assert!(!stderr.contains("secretkey"), "{stderr}");
    }
    let log = nginx.error_log();
    let _dir = nginx.stop();
    assert!(
        !log.contains("connect: app="),
        "an RTMP connect reached the server:\n{log}"
    );
}

#[test]
fn a_certificate_for_another_name_fails_clearly() {
    let dir = TempDir::new("pki-name");
    let pki = TestPki::new(dir.path(), &["camera-ingest.example"]);
    let nginx = Nginx::start_with_tls(&pki.server_certificate, &pki.server_key);
    let clip = clip_small();
    let output = run_v4l2rtmp(
        &[
            "--input",
            clip.to_str().unwrap(),
            "--ca-file",
            pki.ca_certificate.to_str().unwrap(),
            "--max-retries",
            "0",
            &rtmps_url(&nginx, "localhost", "k"),
        ],
        None,
        LIMIT,
    );
    let stderr = stderr_of(&output);
    assert_eq!(exit_code(output.status), 76, "{stderr}");
    assert!(
        stderr.contains("localhost"),
        "the error names the host: {stderr}"
    );
    let log = nginx.error_log();
    let _dir = nginx.stop();
    assert!(
        !log.contains("connect: app="),
        "an RTMP connect reached the server:\n{log}"
    );
}

#[test]
fn insecure_skips_verification_and_says_so() {
    let dir = TempDir::new("pki-insecure");
    let pki = TestPki::new(dir.path(), &["camera-ingest.example"]);
    let nginx = Nginx::start_with_tls(&pki.server_certificate, &pki.server_key);
    let clip = clip_small();
    let output = run_v4l2rtmp(
        &[
            "--input",
            clip.to_str().unwrap(),
            "--insecure",
            "--max-retries",
            "0",
            &rtmps_url(&nginx, "localhost", "k"),
        ],
        None,
        LIMIT,
    );
    assert_success(&output);
    let stderr = stderr_of(&output);
    assert!(
        stderr.contains("WARN") && stderr.contains("--insecure"),
        "{stderr}"
    );
    let recording = nginx.recording("k");
    let _dir = nginx.stop();
    assert_eq!(ffprobe(&recording, &[]).packets.len(), 120);
}
