//! Enhanced RTMP ReconnectRequest: the server asks the client to move to another server; the client
//! keeps streaming to the old one up to the next keyframe, then publishes to the new tcUrl,
//! starting with that keyframe, and loses no frame.
//!
//! No server packaged here sends ReconnectRequest, so the first server is a small scripted RTMP
//! peer built from the library's chunk and AMF0 code; the second is a real nginx-rtmp.

mod common;

use std::net::TcpListener;
use std::time::Duration;

use common::scripted::{info, status, ScriptedPeer};
use common::*;
use v4l2rtmp::rtmp::amf0::Value;

/// Accepts one publisher, asks it to reconnect to `tc_url` after `after_frames` video frames,
/// and returns the keyframe flags of every video frame it received.
fn scripted_server(listener: TcpListener, tc_url: String, after_frames: usize) -> Vec<bool> {
    let mut peer = ScriptedPeer::accept(&listener);
    let mut frames = Vec::new();
    let connect = peer.accept_publish(|peer, message| {
        if message.header.type_id == 9 && message.payload.get(1) == Some(&1) {
            frames.push(message.payload[0] >> 4 == 1);
            if frames.len() == after_frames {
                let mut request =
                    info("status", "NetConnection.Connect.ReconnectRequest", "moving");
                if let Value::Object(props) = &mut request {
                    props.push(("tcUrl".to_string(), Value::String(tc_url.clone())));
                }
                peer.send_command(0, &status(request));
            }
        }
        false
    });
    assert_eq!(
        connect[2].get("capsEx").and_then(Value::as_f64),
        Some(1.0),
        "E-RTMP reconnect support"
    );
    frames
}

#[test]
fn reconnect_request_moves_the_stream_at_a_keyframe_without_losing_frames() {
    let nginx = Nginx::start();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let tc_url = format!("rtmp://127.0.0.1:{}/live", nginx.port);
    // The clip has a keyframe every 30 frames; the request comes after frame 45.
    let server = std::thread::spawn(move || scripted_server(listener, tc_url, 45));
    let clip = clip_small();
    let keyframes = source_keyframes(&clip);
    let started = std::time::Instant::now();
    let output = run_v4l2rtmp(
        &[
            "--input",
            clip.to_str().unwrap(),
            "--realtime",
            &format!("rtmp://127.0.0.1:{port}/old/moved"),
        ],
        None,
        Duration::from_secs(60),
    );
    assert_success(&output);
    let stderr = stderr_of(&output);
    assert!(
        stderr.contains("switching at the next keyframe"),
        "{stderr}"
    );
    assert!(stderr.contains("as the server asked"), "{stderr}");
    // Paced at the clip's rate across the switch: no stall after it (the 4 s clip once took 12 s,
    // its frames held until the server happened to send something), and no frame counted as
    // dropped when none was.
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(6500),
        "took {took:?}: {stderr}"
    );
    assert!(stderr.contains(", 0 frames dropped"), "{stderr}");
    let old = server.join().unwrap();
    let recording = nginx.recording("moved");
    let _dir = nginx.stop();
    let new = ffprobe(&recording, &[]);
    // The old server got frames up to the keyframe after the request; the new one from it on.
    assert_eq!(old.len(), 60, "frames to the old server");
    assert_eq!(old, keyframes[..60]);
    assert!(new.packets[0].keyframe);
    assert_eq!(
        old.len() + new.packets.len(),
        keyframes.len(),
        "no frame lost"
    );
    assert_eq!(decode_errors(&recording), "");
}
