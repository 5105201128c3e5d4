//! Enhanced RTMP ReconnectRequest: the server asks the client to move to another server; the client
//! keeps streaming to the old one up to the next keyframe, then publishes to the new tcUrl,
//! starting with that keyframe, and loses no frame.
//!
//! No server packaged here sends ReconnectRequest, so the first server is a small scripted RTMP
//! peer built from the library's chunk and AMF0 code; the second is a real nginx-rtmp.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use common::*;
use v4l2rtmp::rtmp::amf0::{self, Value};
use v4l2rtmp::rtmp::chunk::{ChunkReader, ChunkWriter, Gather, MessageHeader};

/// Accepts one publisher, asks it to reconnect to `tc_url` after `after_frames` video frames,
/// and returns the keyframe flags of every video message it received.
fn scripted_server(listener: TcpListener, tc_url: String, after_frames: usize) -> Vec<bool> {
    let (mut socket, _) = listener.accept().unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut c0c1 = [0u8; 1537];
    socket.read_exact(&mut c0c1).unwrap();
    let mut s0s1s2 = vec![3u8];
    s0s1s2.extend_from_slice(&[0u8; 1536]);
    s0s1s2.extend_from_slice(&c0c1[1..]);
    socket.write_all(&s0s1s2).unwrap();
    let mut c2 = [0u8; 1536];
    socket.read_exact(&mut c2).unwrap();

    let mut reader = ChunkReader::new(16 << 20);
    let mut writer = ChunkWriter::new();
    let mut received = Vec::new();
    let mut frames = Vec::new();
    let mut asked = false;
    let mut send = |socket: &mut std::net::TcpStream, stream_id: u32, values: &[Value]| {
        let mut body = Vec::new();
        values.iter().for_each(|v| v.encode(&mut body));
        let mut gather = Gather::with_capacity(1024, 16);
        let header = MessageHeader {
            chunk_stream_id: 3,
            timestamp: 0,
            type_id: 20,
            stream_id,
        };
        writer.write_message_bytes(&header, &body, &mut gather);
        let mut bytes = Vec::new();
        gather.write_to_vec(&[], &mut bytes);
        socket.write_all(&bytes).unwrap();
    };
    let status = |code: &str, extra: Option<(&str, &str)>| {
        let mut info = vec![
            ("level".to_string(), Value::String("status".into())),
            ("code".to_string(), Value::String(code.into())),
            ("description".to_string(), Value::String(code.into())),
        ];
        if let Some((k, v)) = extra {
            info.push((k.to_string(), Value::String(v.into())));
        }
        vec![
            Value::String("onStatus".into()),
            Value::Number(0.0),
            Value::Null,
            Value::Object(info),
        ]
    };
    let mut buf = [0u8; 65536];
    loop {
        let n = match socket.read(&mut buf) {
            Ok(0) | Err(_) => return frames,
            Ok(n) => n,
        };
        received.extend_from_slice(&buf[..n]);
        let mut offset = 0;
        loop {
            let (used, message) = reader
                .decode(&received[offset..])
                .expect("a valid chunk stream");
            if used == 0 {
                break;
            }
            offset += used;
            let Some(message) = message else { continue };
            match message.header.type_id {
                9 if message.payload.get(1) == Some(&1) => {
                    frames.push(message.payload[0] >> 4 == 1);
                    if frames.len() == after_frames && !asked {
                        asked = true;
                        send(
                            &mut socket,
                            0,
                            &status(
                                "NetConnection.Connect.ReconnectRequest",
                                Some(("tcUrl", &tc_url)),
                            ),
                        );
                    }
                }
                20 => {
                    let values = amf0::decode_all(&message.payload).unwrap();
                    let tid = values[1].as_f64().unwrap();
                    match values[0].as_str().unwrap() {
                        "connect" => {
                            assert_eq!(values[2].get("capsEx").and_then(Value::as_f64), Some(1.0));
                            let info = status("NetConnection.Connect.Success", None).pop().unwrap();
                            send(
                                &mut socket,
                                0,
                                &[
                                    Value::String("_result".into()),
                                    Value::Number(tid),
                                    Value::Null,
                                    info,
                                ],
                            );
                        }
                        "createStream" => send(
                            &mut socket,
                            0,
                            &[
                                Value::String("_result".into()),
                                Value::Number(tid),
                                Value::Null,
                                Value::Number(1.0),
                            ],
                        ),
                        "publish" => send(&mut socket, 1, &status("NetStream.Publish.Start", None)),
                        _ => {}
                    }
                }
                _ => {}
            }
        }
        received.drain(..offset);
    }
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
