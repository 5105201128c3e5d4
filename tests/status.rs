//! What systemd's STATUS= says (`systemctl status`), read from a notify socket of our own: during
//! an outage, the destination, how long, how many attempts failed, when the next one is due and
//! why; while streaming, the current bitrate and what was sent.

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Reads notify datagrams until a STATUS= line contains `needle`; returns it.
fn wait_for_status(socket: &UnixDatagram, needle: &str, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        let Ok(n) = socket.recv(&mut buf) else {
            continue;
        };
        let text = String::from_utf8_lossy(&buf[..n]).to_string();
        for line in text.lines() {
            if let Some(status) = line.strip_prefix("STATUS=") {
                if status.contains(needle) {
                    return status.to_string();
                }
                seen.push(status.to_string());
            }
        }
    }
    panic!("no STATUS= with {needle:?} within {limit:?}; seen: {seen:?}");
}

#[test]
fn status_tells_an_outage_and_then_the_stream() {
    let dir = TempDir::new("status");
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    // A live input that goes on for as long as the test needs.
    let input = format!(
        "exec:ffmpeg -hide_banner -loglevel error -nostdin -re -stream_loop -1 -i '{}' -c copy -f h264 -",
        clip_small().display()
    );
    // Nothing listens there yet: an outage from the start.
    let port = free_port();
    let mut child = Command::new(BIN)
        .args([
            "--input",
            &input,
            &format!("rtmp://127.0.0.1:{port}/live/secretkey"),
        ])
        .env("NOTIFY_SOCKET", &path)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let outage = wait_for_status(&socket, "reconnecting to", Duration::from_secs(20));
    assert!(outage.contains("failed"), "{outage}");
    assert!(outage.contains("cannot connect"), "the reason: {outage}");
    assert!(
        outage.contains("next in") || outage.contains("attempt"),
        "{outage}"
    );
    assert!(!outage.contains("secretkey"), "{outage}");
    // The server comes: STATUS says streaming, with the current bitrate.
    let nginx = Nginx::start_on(port);
    let streaming = wait_for_status(&socket, "streaming", Duration::from_secs(30));
    assert!(streaming.contains("kbit/s"), "{streaming}");
    assert!(streaming.contains("frames sent"), "{streaming}");
    assert!(stop(&mut child, "TERM").success());
    let _ = nginx.stop();
}
