//! Servers that bend the chunk stream rules in ways FFmpeg and librtmp accept: v4l2rtmp must
//! publish to them too.
//!
//! The server is the scripted peer of `tests/common/scripted.rs`, since no packaged server sends
//! these chunks.

mod common;

use std::net::TcpListener;
use std::time::Duration;

use common::scripted::ScriptedPeer;
use common::*;

/// A server that opens every chunk stream (control, and one per command) with a type 1 header:
/// no type 0 header ever gives the message stream id, and timestamps are deltas from nothing.
/// FFmpeg reads the missing fields as zeros and publishes; so must we.
#[test]
fn publishes_to_a_server_that_opens_chunk_streams_with_type_1_headers() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let mut peer = ScriptedPeer::accept(&listener);
        peer.open_chunk_streams_with_type_1();
        let mut keyframes = Vec::new();
        peer.accept_publish(|_, message| {
            // Video frames (not the sequence header): keyframe or not.
            if message.header.type_id == 9 && message.payload.get(1) == Some(&1) {
                keyframes.push(message.payload[0] >> 4 == 1);
            }
            false
        });
        keyframes
    });
    let clip = clip_small();
    let (output, stderr) = publish_once(&clip, port);
    assert!(!stderr.contains("without an earlier type 0"), "{stderr}");
    assert_success(&output);
    let received = server.join().unwrap();
    assert_eq!(received, source_keyframes(&clip), "every frame, in order");
}

/// A server that sends a short Abort (2 bytes) and an empty Acknowledgement while we publish.
/// FFmpeg ignores both whatever their size; v4l2rtmp used to drop the connection as a protocol
/// error ("malformed control message").
#[test]
fn publishes_through_short_abort_and_acknowledgement_messages() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let mut peer = ScriptedPeer::accept(&listener);
        let mut keyframes = Vec::new();
        peer.accept_publish(|peer, message| {
            if message.header.type_id == 9 && message.payload.get(1) == Some(&1) {
                keyframes.push(message.payload[0] >> 4 == 1);
                if keyframes.len() == 10 {
                    peer.send_type_1(2, 2, &[0, 3]);
                    peer.send_type_1(2, 3, &[]);
                }
            }
            false
        });
        keyframes
    });
    let clip = clip_small();
    let (output, stderr) = publish_once(&clip, port);
    assert!(!stderr.contains("malformed"), "{stderr}");
    assert_success(&output);
    assert!(stderr.contains("1 connection,"), "{stderr}");
    let received = server.join().unwrap();
    assert_eq!(received, source_keyframes(&clip), "every frame, in order");
}

/// Publishes `clip` once to the scripted server on `port` (no retry): its output and stderr.
fn publish_once(clip: &std::path::Path, port: u16) -> (std::process::Output, String) {
    let output = run_v4l2rtmp(
        &[
            "--input",
            clip.to_str().unwrap(),
            "--max-retries",
            "0",
            &format!("rtmp://127.0.0.1:{port}/live/quirks"),
        ],
        None,
        Duration::from_secs(60),
    );
    let stderr = stderr_of(&output);
    (output, stderr)
}
