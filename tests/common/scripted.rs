//! A scripted RTMP server for the behaviours no packaged server has (Enhanced RTMP
//! ReconnectRequest, Adobe and Limelight authentication), built from the library's own chunk and
//! AMF0 code. Tests drive it message by message; real servers cover everything else.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use v4l2rtmp::rtmp::amf0::{self, Value};
use v4l2rtmp::rtmp::chunk::{ChunkReader, ChunkWriter, Gather, Message, MessageHeader};

/// One accepted publisher, after the handshake.
pub struct ScriptedPeer {
    socket: TcpStream,
    reader: ChunkReader,
    writer: ChunkWriter,
    received: Vec<u8>,
    /// Every byte the client sent, handshake included.
    transcript: Vec<u8>,
    /// The stream name of the client's `publish`, once [`ScriptedPeer::accept_publish`] saw it.
    published: Option<String>,
    /// Set by [`ScriptedPeer::open_chunk_streams_with_type_1`]: the next chunk stream a command
    /// opens, and the chunk size of those hand-made chunks.
    type_1_quirk: Option<(u32, u32)>,
}

impl ScriptedPeer {
    /// Accepts a connection and answers the handshake (S1 zeros, S2 echoing C1).
    pub fn accept(listener: &TcpListener) -> ScriptedPeer {
        let (socket, _) = listener.accept().unwrap();
        Self::handshake(socket)
    }

    /// Like [`ScriptedPeer::accept`], but gives up (None) when no client connects within `limit`.
    pub fn accept_within(listener: &TcpListener, limit: Duration) -> Option<ScriptedPeer> {
        let deadline = Instant::now() + limit;
        listener.set_nonblocking(true).unwrap();
        let accepted = loop {
            match listener.accept() {
                Ok((socket, _)) => break Some(socket),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() >= deadline {
                        break None;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => panic!("accept: {e}"),
            }
        };
        listener.set_nonblocking(false).unwrap();
        let socket = accepted?;
        socket.set_nonblocking(false).unwrap();
        Some(Self::handshake(socket))
    }

    fn handshake(mut socket: TcpStream) -> ScriptedPeer {
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
        let mut transcript = c0c1.to_vec();
        transcript.extend_from_slice(&c2);
        ScriptedPeer {
            socket,
            reader: ChunkReader::new(16 << 20),
            writer: ChunkWriter::new(),
            received: Vec::new(),
            transcript,
            published: None,
            type_1_quirk: None,
        }
    }

    /// Every byte the client sent on this connection so far, handshake included.
    pub fn transcript(&self) -> &[u8] {
        &self.transcript
    }

    /// The stream name the client published, once [`ScriptedPeer::accept_publish`] saw it.
    pub fn published(&self) -> Option<&str> {
        self.published.as_deref()
    }

    /// The next complete message from the client; None when it closed the connection.
    pub fn next_message(&mut self) -> Option<Message> {
        loop {
            let (used, message) = self
                .reader
                .decode(&self.received)
                .expect("a valid chunk stream");
            if used > 0 {
                self.received.drain(..used);
                match message {
                    Some(message) => return Some(message),
                    None => continue,
                }
            }
            let mut buf = [0u8; 65536];
            match self.socket.read(&mut buf) {
                Ok(0) | Err(_) => return None,
                Ok(n) => {
                    self.received.extend_from_slice(&buf[..n]);
                    self.transcript.extend_from_slice(&buf[..n]);
                }
            }
        }
    }

    /// Sends an AMF0 command on chunk stream 3 (after
    /// [`ScriptedPeer::open_chunk_streams_with_type_1`]: on a new chunk stream, as its first
    /// chunk a type 1 header, and `stream_id` is left unsaid).
    pub fn send_command(&mut self, stream_id: u32, values: &[Value]) {
        let mut body = Vec::new();
        values.iter().for_each(|v| v.encode(&mut body));
        if let Some((csid, chunk_size)) = self.type_1_quirk {
            self.type_1_quirk = Some((csid + 1, chunk_size));
            self.send_type_1(csid, 20, &body);
            return;
        }
        let mut gather = Gather::with_capacity(1024, 16);
        let header = MessageHeader {
            chunk_stream_id: 3,
            timestamp: 0,
            type_id: 20,
            stream_id,
        };
        self.writer.write_message_bytes(&header, &body, &mut gather);
        let mut bytes = Vec::new();
        gather.write_to_vec(&[], &mut bytes);
        let _ = self.socket.write_all(&bytes);
    }

    /// From now on, opens chunk streams as some servers do: without a type 0 header. Each command
    /// goes on a chunk stream this peer has not used before (3, then 4, 5, ...) and its first
    /// chunk has a type 1 header (timestamp delta, length and type; no message stream id), so the
    /// client has to take the fields no header gave as zeros. Sends Set Chunk Size (4096), Window
    /// Acknowledgement Size and Set Peer Bandwidth the same way on chunk stream 2 first, each with
    /// a type 1 header.
    pub fn open_chunk_streams_with_type_1(&mut self) {
        self.send_type_1(2, 1, &4096u32.to_be_bytes());
        self.type_1_quirk = Some((3, 4096));
        self.writer.set_chunk_size(4096);
        self.send_type_1(2, 5, &2_500_000u32.to_be_bytes());
        let mut bandwidth = 2_500_000u32.to_be_bytes().to_vec();
        bandwidth.push(2);
        self.send_type_1(2, 6, &bandwidth);
    }

    /// Sends one message as hand-made chunks: a type 1 header (timestamp delta 0) on `csid`, then
    /// type 3 continuation headers at the chunk size in force (128 until Set Chunk Size).
    pub fn send_type_1(&mut self, csid: u32, type_id: u8, body: &[u8]) {
        assert!((2..64).contains(&csid), "one-byte basic headers only");
        let chunk_size = self.type_1_quirk.map_or(128, |(_, size)| size as usize);
        let length = (body.len() as u32).to_be_bytes();
        let mut bytes = vec![
            0x40 | csid as u8,
            0,
            0,
            0,
            length[1],
            length[2],
            length[3],
            type_id,
        ];
        for (i, piece) in body.chunks(chunk_size).enumerate() {
            if i > 0 {
                bytes.push(0xC0 | csid as u8);
            }
            bytes.extend_from_slice(piece);
        }
        let _ = self.socket.write_all(&bytes);
    }

    /// Answers connect, createStream and publish as a server that accepts them; returns the
    /// connect command's values, and every video message until `until` says stop or the client
    /// goes away.
    pub fn accept_publish(
        &mut self,
        mut until: impl FnMut(&mut ScriptedPeer, &Message) -> bool,
    ) -> Vec<Value> {
        let mut connect = Vec::new();
        while let Some(message) = self.next_message() {
            if message.header.type_id == 20 {
                let values = amf0::decode_all(&message.payload).unwrap();
                let tid = values[1].as_f64().unwrap();
                match values[0].as_str().unwrap() {
                    "connect" => {
                        // After a type 1 Set Chunk Size, a reply longer than 128 bytes: one chunk
                        // only if the client applied it.
                        let description = match self.type_1_quirk {
                            Some(_) => "Connection succeeded. ".repeat(10),
                            None => String::new(),
                        };
                        self.send_command(
                            0,
                            &result(
                                tid,
                                info("status", "NetConnection.Connect.Success", &description),
                            ),
                        );
                        connect = values;
                    }
                    "createStream" => self.send_command(0, &result(tid, Value::Number(1.0))),
                    "publish" => {
                        self.published = values.get(3).and_then(Value::as_str).map(str::to_string);
                        self.send_command(1, &status(info("status", "NetStream.Publish.Start", "")))
                    }
                    _ => {}
                }
            } else if until(self, &message) {
                break;
            }
        }
        connect
    }
}

/// An information object.
pub fn info(level: &str, code: &str, description: &str) -> Value {
    Value::Object(vec![
        ("level".to_string(), Value::String(level.into())),
        ("code".to_string(), Value::String(code.into())),
        ("description".to_string(), Value::String(description.into())),
    ])
}

/// `_result(tid, null, value)`.
pub fn result(tid: f64, value: Value) -> Vec<Value> {
    vec![
        Value::String("_result".into()),
        Value::Number(tid),
        Value::Null,
        value,
    ]
}

/// `_error(tid, null, info)`.
pub fn error(tid: f64, info: Value) -> Vec<Value> {
    vec![
        Value::String("_error".into()),
        Value::Number(tid),
        Value::Null,
        info,
    ]
}

/// `onStatus(0, null, info)`.
pub fn status(info: Value) -> Vec<Value> {
    vec![
        Value::String("onStatus".into()),
        Value::Number(0.0),
        Value::Null,
        info,
    ]
}
