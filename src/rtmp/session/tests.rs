//! The publish session against a scripted server, in memory, on a virtual clock.

use super::*;
use crate::error::Fault;
use crate::rtmp::handshake::HANDSHAKE_SIZE;

const KEY: &str = "s3cretkey";

fn config() -> SessionConfig {
    SessionConfig {
        app: "live".into(),
        tc_url: "rtmp://127.0.0.1:1935/live".into(),
        stream_name: format!("{KEY}?token=abc"),
        chunk_size: 4096,
        flash_ver: SessionConfig::DEFAULT_FLASH_VER.into(),
        reply_timeout_ms: 10_000,
        max_message_size: 1 << 20,
    }
}

/// The server side: a chunk writer for what it sends and a reader for what the client sent.
struct Server {
    writer: ChunkWriter,
    reader: ChunkReader,
    gather: Gather,
    /// Client bytes not yet decoded.
    received: Vec<u8>,
}

impl Server {
    fn new() -> Server {
        Server {
            writer: ChunkWriter::new(),
            reader: ChunkReader::new(1 << 24),
            gather: Gather::with_capacity(1024, 64),
            received: Vec::new(),
        }
    }

    fn bytes(&mut self, csid: u32, type_id: u8, stream_id: u32, body: &[u8]) -> Vec<u8> {
        let header = MessageHeader {
            chunk_stream_id: csid,
            timestamp: 0,
            type_id,
            stream_id,
        };
        self.writer
            .write_message_bytes(&header, body, &mut self.gather);
        let mut out = Vec::new();
        self.gather.write_to_vec(&[], &mut out);
        let n = self.gather.remaining();
        self.gather.advance(n);
        out
    }

    fn command(&mut self, values: &[Value]) -> Vec<u8> {
        let mut body = Vec::new();
        for value in values {
            value.encode(&mut body);
        }
        self.bytes(3, type_id::COMMAND_AMF0, 0, &body)
    }

    /// Takes everything the client queued (with `external` as its frame buffer), returns the messages.
    fn receive(&mut self, session: &mut PublishSession, external: &[u8]) -> Vec<Message> {
        let out = session.transmit();
        out.write_to_vec(external, &mut self.received);
        let n = out.remaining();
        out.advance(n);
        let mut messages = Vec::new();
        let mut offset = 0;
        loop {
            let (used, message) = self
                .reader
                .decode(&self.received[offset..])
                .expect("client sent a valid chunk stream");
            if used == 0 {
                break;
            }
            offset += used;
            messages.extend(message);
        }
        self.received.drain(..offset);
        messages
    }
}

fn info(level: &str, code: &str, description: &str) -> Value {
    Value::Object(vec![
        ("level".into(), Value::String(level.into())),
        ("code".into(), Value::String(code.into())),
        ("description".into(), Value::String(description.into())),
    ])
}

fn s0s1s2() -> Vec<u8> {
    let mut bytes = vec![3u8];
    bytes.extend((0..HANDSHAKE_SIZE).map(|i| (i * 7) as u8));
    bytes.extend((0..HANDSHAKE_SIZE).map(|i| (i * 13) as u8));
    bytes
}

fn command_values(message: &Message) -> Vec<Value> {
    assert_eq!(message.header.type_id, type_id::COMMAND_AMF0, "{message:?}");
    amf0::decode_all(&message.payload).unwrap()
}

fn name(message: &Message) -> String {
    command_values(message)[0].as_str().unwrap().to_string()
}

/// Drains C0/C1, answers with S0/S1/S2, checks C2 and passes everything after it to the server.
fn handshake(session: &mut PublishSession, server: &mut Server) {
    let mut bytes = Vec::new();
    session.transmit().write_to_vec(&[], &mut bytes);
    let n = session.transmit().remaining();
    session.transmit().advance(n);
    assert_eq!(bytes.len(), 1 + HANDSHAKE_SIZE, "C0 and C1 only");
    session.handle_input(&s0s1s2(), 5).unwrap();
    bytes.clear();
    session.transmit().write_to_vec(&[], &mut bytes);
    let n = session.transmit().remaining();
    session.transmit().advance(n);
    assert!(
        bytes.len() > HANDSHAKE_SIZE,
        "C2, then Set Chunk Size and connect"
    );
    server.received.extend_from_slice(&bytes[HANDSHAKE_SIZE..]);
}

/// Runs a session up to NetStream.Publish.Start.
fn publishing() -> (PublishSession, Server) {
    let mut session = PublishSession::new(config(), 0, &[0x5a; RANDOM_SIZE]);
    let mut server = Server::new();
    handshake(&mut session, &mut server);
    let messages = server.receive(&mut session, &[]);
    assert_eq!(messages.len(), 2);
    let reply = server.command(&[
        Value::String("_result".into()),
        Value::Number(1.0),
        Value::Null,
        info(
            "status",
            "NetConnection.Connect.Success",
            "Connection succeeded.",
        ),
    ]);
    session.handle_input(&reply, 10).unwrap();
    let messages = server.receive(&mut session, &[]);
    let names: Vec<String> = messages.iter().map(name).collect();
    assert_eq!(names, ["releaseStream", "FCPublish", "createStream"]);
    let create_tid = command_values(&messages[2])[1].as_f64().unwrap();
    let reply = server.command(&[
        Value::String("_result".into()),
        Value::Number(create_tid),
        Value::Null,
        Value::Number(1.0),
    ]);
    session.handle_input(&reply, 20).unwrap();
    let messages = server.receive(&mut session, &[]);
    assert_eq!(messages.len(), 1);
    let status = server.command(&[
        Value::String("onStatus".into()),
        Value::Number(0.0),
        Value::Null,
        info("status", "NetStream.Publish.Start", "Start publishing"),
    ]);
    session.handle_input(&status, 30).unwrap();
    assert!(session.is_publishing());
    while session.poll_event().is_some() {}
    (session, server)
}

#[test]
fn handshake_waits_for_s1_before_c2_and_for_s2_before_anything_else() {
    let mut session = PublishSession::new(config(), 1000, &[0x5a; RANDOM_SIZE]);
    let mut sent = Vec::new();
    session.transmit().write_to_vec(&[], &mut sent);
    assert_eq!(sent[0], 3, "C0 is version 3");
    assert_eq!(&sent[1..5], &1000u32.to_be_bytes(), "C1 time");
    assert_eq!(&sent[5..9], &[0, 0, 0, 0], "C1 zero");
    assert!(sent[9..].iter().all(|&b| b == 0x5a), "C1 random");
    let n = session.transmit().remaining();
    session.transmit().advance(n);

    let server = s0s1s2();
    // S0 and most of S1: nothing to send yet.
    session
        .handle_input(&server[..HANDSHAKE_SIZE], 1001)
        .unwrap();
    assert!(session.transmit().is_empty());
    // The rest of S1: C2 (the echo of S1), and nothing else until S2.
    session
        .handle_input(&server[HANDSHAKE_SIZE..=HANDSHAKE_SIZE], 1002)
        .unwrap();
    let mut c2 = Vec::new();
    session.transmit().write_to_vec(&[], &mut c2);
    assert_eq!(c2.len(), HANDSHAKE_SIZE);
    assert_eq!(
        &c2[8..],
        &server[9..=HANDSHAKE_SIZE],
        "C2 echoes S1's random bytes"
    );
    let n = session.transmit().remaining();
    session.transmit().advance(n);
    // S2, one byte at a time: connect goes out only with its last byte.
    let s2 = &server[HANDSHAKE_SIZE + 1..];
    for (i, byte) in s2.iter().enumerate() {
        session
            .handle_input(std::slice::from_ref(byte), 1003)
            .unwrap();
        assert_eq!(session.transmit().is_empty(), i + 1 < s2.len());
    }
    assert_eq!(session.poll_event(), Some(Event::HandshakeDone));
}

#[test]
fn connect_carries_app_type_flashver_and_tcurl_after_set_chunk_size() {
    let mut session = PublishSession::new(config(), 0, &[1; RANDOM_SIZE]);
    let mut server = Server::new();
    handshake(&mut session, &mut server);
    let messages = server.receive(&mut session, &[]);
    assert_eq!(messages[0].header.type_id, type_id::SET_CHUNK_SIZE);
    assert_eq!(messages[0].payload, 4096u32.to_be_bytes());
    let connect = command_values(&messages[1]);
    assert_eq!(connect[0].as_str(), Some("connect"));
    assert_eq!(connect[1].as_f64(), Some(1.0));
    let object = &connect[2];
    assert_eq!(object.get("app").and_then(Value::as_str), Some("live"));
    assert_eq!(
        object.get("type").and_then(Value::as_str),
        Some("nonprivate")
    );
    assert_eq!(
        object.get("flashVer").and_then(Value::as_str),
        Some("FMLE/3.0 (compatible; v4l2rtmp)")
    );
    assert_eq!(
        object.get("tcUrl").and_then(Value::as_str),
        Some("rtmp://127.0.0.1:1935/live")
    );
    assert_eq!(
        object.get("capsEx").and_then(Value::as_f64),
        Some(1.0),
        "E-RTMP reconnect support"
    );
    assert_eq!(messages[1].header.chunk_stream_id, chunk_stream::COMMAND);
}

#[test]
fn full_publish_sequence_then_media_then_unpublish() {
    let (mut session, mut server) = publishing();
    assert_eq!(session.stream_id(), 1);

    let frame = b"....NALPAYLOAD....";
    let parts = [
        Part::inline(&[0x17, 1, 0, 0, 0]),
        Part::inline(&10u32.to_be_bytes()),
        Part::External { start: 4, len: 10 },
    ];
    session.send_video(40, &parts).unwrap();
    let messages = server.receive(&mut session, frame);
    assert_eq!(messages.len(), 1);
    let video = &messages[0];
    assert_eq!(video.header.type_id, type_id::VIDEO);
    assert_eq!(video.header.stream_id, 1);
    assert_eq!(video.header.timestamp, 40);
    assert_eq!(
        video.payload,
        [&[0x17, 1, 0, 0, 0, 0, 0, 0, 10][..], b"NALPAYLOAD"].concat()
    );

    session.unpublish();
    let messages = server.receive(&mut session, &[]);
    let names: Vec<String> = messages.iter().map(name).collect();
    assert_eq!(names, ["FCUnpublish", "deleteStream"]);
    assert_eq!(
        command_values(&messages[0])[3].as_str(),
        Some("s3cretkey?token=abc")
    );
    assert_eq!(command_values(&messages[1])[3].as_f64(), Some(1.0));
    assert!(
        session.send_video(80, &parts).is_err(),
        "nothing is sent after unpublish"
    );
}

#[test]
fn publish_names_the_key_with_its_query_on_the_stream() {
    let mut session = PublishSession::new(config(), 0, &[1; RANDOM_SIZE]);
    let mut server = Server::new();
    handshake(&mut session, &mut server);
    server.receive(&mut session, &[]);
    session
        .handle_input(
            &server.command(&[
                Value::String("_result".into()),
                Value::Number(1.0),
                Value::Null,
                info("status", "NetConnection.Connect.Success", ""),
            ]),
            2,
        )
        .unwrap();
    let messages = server.receive(&mut session, &[]);
    assert_eq!(
        command_values(&messages[0])[3].as_str(),
        Some("s3cretkey?token=abc"),
        "releaseStream"
    );
    session
        .handle_input(
            &server.command(&[
                Value::String("_result".into()),
                Value::Number(4.0),
                Value::Null,
                Value::Number(7.0),
            ]),
            3,
        )
        .unwrap();
    let messages = server.receive(&mut session, &[]);
    let publish = command_values(&messages[0]);
    assert_eq!(publish[0].as_str(), Some("publish"));
    assert_eq!(publish[3].as_str(), Some("s3cretkey?token=abc"));
    assert_eq!(publish[4].as_str(), Some("live"));
    assert_eq!(messages[0].header.stream_id, 7);
    assert_eq!(
        messages[0].header.chunk_stream_id,
        chunk_stream::STREAM_COMMAND
    );
}

#[test]
fn answers_pings_and_acknowledges_the_window() {
    let (mut session, mut server) = publishing();
    let ping = server.bytes(
        2,
        type_id::USER_CONTROL,
        0,
        &user_control_body(user_control::PING_REQUEST, 0xabcd),
    );
    session.handle_input(&ping, 100).unwrap();
    let messages = server.receive(&mut session, &[]);
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].header.type_id, type_id::USER_CONTROL);
    assert_eq!(
        messages[0].payload,
        user_control_body(user_control::PING_RESPONSE, 0xabcd)
    );

    let window = server.bytes(2, type_id::WINDOW_ACK_SIZE, 0, &u32_body(64));
    session.handle_input(&window, 101).unwrap();
    // The window counts every byte received, the handshake included: an ack is due at once.
    let messages = server.receive(&mut session, &[]);
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].header.type_id, type_id::ACKNOWLEDGEMENT);
    let acked = u32::from_be_bytes(messages[0].payload[..4].try_into().unwrap());
    assert_eq!(u64::from(acked), session.bytes_received);
    // Fewer than 64 more bytes: no ack. Then past the window: an ack with the new total.
    let ping = server.bytes(
        2,
        type_id::USER_CONTROL,
        0,
        &user_control_body(user_control::PING_REQUEST, 1),
    );
    session.handle_input(&ping, 102).unwrap();
    let messages = server.receive(&mut session, &[]);
    assert_eq!(messages.len(), 1, "just the pong");
    for _ in 0..5 {
        session.handle_input(&ping, 103).unwrap();
    }
    let messages = server.receive(&mut session, &[]);
    assert!(messages
        .iter()
        .any(|m| m.header.type_id == type_id::ACKNOWLEDGEMENT));
}

#[test]
fn set_peer_bandwidth_is_answered_with_our_window_once() {
    let (mut session, mut server) = publishing();
    let bw = server.bytes(2, type_id::SET_PEER_BANDWIDTH, 0, &[0, 0x4c, 0x4b, 0x40, 2]);
    session.handle_input(&bw, 100).unwrap();
    session.handle_input(&bw, 101).unwrap();
    let messages = server.receive(&mut session, &[]);
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].header.type_id, type_id::WINDOW_ACK_SIZE);
    assert_eq!(messages[0].payload, 5_000_000u32.to_be_bytes());
}

#[test]
fn honours_the_servers_chunk_size() {
    let (mut session, mut server) = publishing();
    let set = server.bytes(2, type_id::SET_CHUNK_SIZE, 0, &u32_body(60000));
    server.writer.set_chunk_size(60000);
    session.handle_input(&set, 100).unwrap();
    // A 70 kB command in 60000-byte chunks is read back whole.
    let long = "x".repeat(70_000);
    let status = server.command(&[
        Value::String("onStatus".into()),
        Value::Number(0.0),
        Value::Null,
        info("status", "NetStream.Info", &long),
    ]);
    session.handle_input(&status, 101).unwrap();
    match session.poll_event() {
        Some(Event::Status { description, .. }) => assert_eq!(description.len(), 70_000),
        other => panic!("{other:?}"),
    }
}

#[test]
fn connect_error_is_a_rejection_with_the_servers_reason() {
    let mut session = PublishSession::new(config(), 0, &[1; RANDOM_SIZE]);
    let mut server = Server::new();
    session.handle_input(&s0s1s2(), 1).unwrap();
    let reply = server.command(&[
        Value::String("_error".into()),
        Value::Number(1.0),
        Value::Null,
        info(
            "error",
            "NetConnection.Connect.Rejected",
            "[ AccessManager.Reject ] : [ code=403 need auth; authmod=adobe ] :",
        ),
    ]);
    let err = session.handle_input(&reply, 2).unwrap_err();
    assert_eq!(err.fault(), Fault::Rejected);
    let text = err.to_string();
    assert!(text.contains("NetConnection.Connect.Rejected"), "{text}");
    assert!(text.contains("need auth"), "{text}");
}

#[test]
fn bad_name_is_a_rejection_and_never_shows_the_key() {
    let mut session = PublishSession::new(config(), 0, &[1; RANDOM_SIZE]);
    let mut server = Server::new();
    handshake(&mut session, &mut server);
    server.receive(&mut session, &[]);
    session
        .handle_input(
            &server.command(&[
                Value::String("_result".into()),
                Value::Number(1.0),
                Value::Null,
                info("status", "NetConnection.Connect.Success", ""),
            ]),
            2,
        )
        .unwrap();
    session
        .handle_input(
            &server.command(&[
                Value::String("_result".into()),
                Value::Number(4.0),
                Value::Null,
                Value::Number(1.0),
            ]),
            3,
        )
        .unwrap();
    let status = server.command(&[
        Value::String("onStatus".into()),
        Value::Number(0.0),
        Value::Null,
        info(
            "error",
            "NetStream.Publish.BadName",
            // The query as a server may quote it, split from the key.
            &format!("Stream {KEY} is already publishing (args token=abc)"),
        ),
    ]);
    let err = session.handle_input(&status, 4).unwrap_err();
    assert_eq!(err.fault(), Fault::Rejected);
    let text = err.to_string();
    assert!(text.contains("NetStream.Publish.BadName"), "{text}");
    assert!(!text.contains(KEY), "{text}");
    assert!(!text.contains("abc"), "the query's token leaked: {text}");
    assert!(text.contains("token=<redacted>"), "{text}");
}

#[test]
fn replies_have_deadlines() {
    let mut session = PublishSession::new(config(), 0, &[1; RANDOM_SIZE]);
    assert_eq!(session.poll_timeout(), Some(10_000));
    session.handle_timeout(9_999).unwrap();
    let err = session.handle_timeout(10_000).unwrap_err();
    assert!(err.to_string().contains("handshake"), "{err}");

    let mut session = PublishSession::new(config(), 0, &[1; RANDOM_SIZE]);
    session.handle_input(&s0s1s2(), 500).unwrap();
    assert_eq!(session.poll_timeout(), Some(10_500));
    let err = session.handle_timeout(10_500).unwrap_err();
    assert!(err.to_string().contains("connect"), "{err}");

    let (session, _) = publishing();
    assert_eq!(session.poll_timeout(), None, "no deadline while publishing");
}

#[test]
fn eof_is_explained_by_the_phase() {
    let session = PublishSession::new(config(), 0, &[1; RANDOM_SIZE]);
    assert_eq!(session.handle_eof().fault(), Fault::Peer);
    let (session, _) = publishing();
    assert_eq!(session.handle_eof().fault(), Fault::Network);
}

#[test]
fn media_before_publish_start_is_refused() {
    let mut session = PublishSession::new(config(), 0, &[1; RANDOM_SIZE]);
    assert_eq!(session.send_video(0, &[]).unwrap_err().fault(), Fault::Ours);
}

#[test]
fn garbage_from_the_server_is_an_error_not_a_panic() {
    let (mut session, _) = publishing();
    // A message longer than the limit (a chunk stream may start with any header type now, as
    // in FFmpeg, so that is no longer garbage).
    assert_eq!(
        session
            .handle_input(&[0x09, 0, 0, 0, 0xff, 0xff, 0xff, 20, 0, 0, 0, 0], 100)
            .unwrap_err()
            .fault(),
        Fault::Peer
    );
    // A command whose body is not AMF0.
    let (mut session, mut server) = publishing();
    let bytes = server.bytes(3, type_id::COMMAND_AMF0, 0, &[0x42, 0x42]);
    assert_eq!(
        session.handle_input(&bytes, 100).unwrap_err().fault(),
        Fault::Peer
    );
}

#[test]
fn reconnect_request_is_reported() {
    let (mut session, mut server) = publishing();
    let mut request = info(
        "status",
        "NetConnection.Connect.ReconnectRequest",
        "maintenance",
    );
    if let Value::Object(props) = &mut request {
        props.push(("tcUrl".into(), Value::String("rtmp://other/live".into())));
    }
    let status = server.command(&[
        Value::String("onStatus".into()),
        Value::Number(0.0),
        Value::Null,
        request,
    ]);
    session.handle_input(&status, 100).unwrap();
    assert_eq!(
        session.poll_event(),
        Some(Event::ReconnectRequest {
            tc_url: Some("rtmp://other/live".into()),
            description: "maintenance".into()
        })
    );
    assert!(session.is_publishing());
}
