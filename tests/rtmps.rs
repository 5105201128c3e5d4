//! RTMPS against nginx-rtmp behind a real TLS terminator (nginx's stream module), with a CA and
//! certificates made at test time: the stream arrives whole; a wrong CA or host name fails with a
//! clear error before any RTMP byte reaches the server; `--insecure` works and says it is unsafe;
//! a self-signed certificate (`openssl req -x509`, CA:TRUE) is trusted when pinned by `--ca-file`
//! or `--tls-fingerprint`, and refused otherwise with the words and the fingerprint to fix it.

mod common;

use std::time::{Duration, Instant};

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

#[test]
fn a_self_signed_certificate_is_trusted_when_pinned_and_explained_when_not() {
    let dir = TempDir::new("self-signed");
    let cert = SelfSigned::new(dir.path(), "localhost");
    let other_dir = TempDir::new("self-signed-other");
    let other = SelfSigned::new(other_dir.path(), "localhost");
    let nginx = Nginx::start_with_tls(&cert.certificate, &cert.key);
    let clip = clip_small();
    let url = |key: &str| rtmps_url(&nginx, "localhost", key);
    let publish = |trust: &[&str], key: &str| {
        let mut args = vec!["--input", clip.to_str().unwrap(), "--max-retries", "0"];
        args.extend(trust);
        let url = url(key);
        args.push(&url);
        let start = Instant::now();
        let output = run_v4l2rtmp(&args, None, LIMIT);
        (output, start.elapsed())
    };

    // Refused: nothing trusts it, another pinned fingerprint, another certificate in --ca-file.
    let other_file = other.certificate.to_str().unwrap();
    let refusals: [(&[&str], &[&str]); 3] = [
        (
            &[],
            &[
                "self-signed",
                "--ca-file",
                "--tls-fingerprint",
                &cert.fingerprint,
            ],
        ),
        (
            &["--tls-fingerprint", &other.fingerprint],
            &["--tls-fingerprint", &cert.fingerprint, &other.fingerprint],
        ),
        (
            &["--ca-file", other_file],
            &[
                "self-signed",
                other_file,
                "--tls-fingerprint",
                &cert.fingerprint,
            ],
        ),
    ];
    for (trust, expected) in refusals {
        let (output, took) = publish(trust, "secretkey");
        let stderr = stderr_of(&output);
        assert_eq!(exit_code(output.status), 76, "{trust:?}: {stderr}");
        assert!(took < Duration::from_secs(10), "{trust:?} took {took:?}");
        for words in expected {
            assert!(
                stderr.contains(words),
                "{trust:?}: no {words:?} in {stderr}"
            );
        }
        assert!(!stderr.contains("CaUsedAsEndEntity"), "{stderr}");
        assert!(!stderr.contains("secretkey"), "{stderr}");
    }
    let log = nginx.error_log();
    assert!(
        !log.contains("connect: app="),
        "an RTMP connect reached the server:\n{log}"
    );

    // Pinned: the certificate itself in --ca-file; its fingerprint as openssl prints it, and in
    // lower case without colons.
    let plain = cert.fingerprint.replace(':', "").to_lowercase();
    let pins: [(&[&str], &str); 3] = [
        (&["--ca-file", cert.certificate.to_str().unwrap()], "byfile"),
        (&["--tls-fingerprint", &cert.fingerprint], "bycolons"),
        (&["--tls-fingerprint", &plain], "byplain"),
    ];
    for (trust, key) in pins {
        let (output, _) = publish(trust, key);
        assert_success(&output);
    }
    let recordings: Vec<_> = pins.iter().map(|(_, key)| nginx.recording(key)).collect();
    let _dir = nginx.stop();
    let keyframes = source_keyframes(&clip);
    for recording in recordings {
        assert_matches_source(&ffprobe(&recording, &[]), &keyframes, 640, 360, 30.0);
    }
}
