//! The client side of an RTMP publish session, sans-IO (in the manner of quinn-proto).
//!
//! The driver feeds the session what the server sent ([`PublishSession::handle_input`]), tells it
//! the time ([`PublishSession::handle_timeout`]), and writes out what the session queued in its
//! [`Gather`] ([`PublishSession::transmit`]). The session never reads a clock or touches a socket:
//! `now_ms` is any monotonic millisecond count the caller chooses.
//!
//! The publish sequence is the one FFmpeg and OBS send, which every server accepts:
//! handshake; Set Chunk Size; `connect(app, type, flashVer, tcUrl)`; on success `releaseStream`,
//! `FCPublish`, `createStream`; on its result `publish(name, "live")`; then wait for
//! `NetStream.Publish.Start`. Meanwhile the session answers pings, acknowledges received bytes when
//! the server's window asks for it, and honours the server's chunk size. Rejections become errors
//! that quote the server's code and description.
//!
//! Invariants: nothing but the handshake is queued before S2 has arrived; media is accepted only
//! while publishing; each reply has a deadline, reported by [`PublishSession::poll_timeout`];
//! external payload ranges in the transmit queue refer to the buffer of the last
//! [`PublishSession::send_video`] call and the driver writes them out before passing another.

use std::collections::VecDeque;
use std::fmt::Write as _;

use crate::error::{Error, Result};
use crate::rtmp::amf0::{self, Value};
use crate::rtmp::chunk::{ChunkReader, ChunkWriter, Gather, Message, MessageHeader, Part};
use crate::rtmp::handshake::{Handshake, RANDOM_SIZE};
use crate::rtmp::message::{
    chunk_stream, type_id, u32_body, user_control, user_control_body, Control,
};

/// Enhanced RTMP v2 CapsExMask.Reconnect: the client reconnects when the server asks.
pub const CAPS_EX_RECONNECT: u8 = 0x01;

/// What a publish session needs to know about its destination.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// The application (`live`, or `app/instance`).
    pub app: String,
    /// `rtmp://host[:port]/app`, sent in connect.
    pub tc_url: String,
    /// The stream key with its query string, given to publish. Never logged.
    pub stream_name: String,
    /// Our outgoing chunk size, announced with Set Chunk Size before anything else.
    pub chunk_size: u32,
    /// The connect command's flashVer.
    pub flash_ver: String,
    /// How long to wait for the handshake and for each command's reply.
    pub reply_timeout_ms: u64,
    /// The largest message the server may send us (memory bound).
    pub max_message_size: u32,
}

impl SessionConfig {
    pub const DEFAULT_FLASH_VER: &'static str = "FMLE/3.0 (compatible; v4l2rtmp)";
}

/// Something the driver may want to know or log.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// The handshake completed.
    HandshakeDone,
    /// connect succeeded; the server's description, if any.
    Connected { description: String },
    /// The server accepted the publish: media may flow.
    Publishing,
    /// An onStatus that is neither success nor failure of our publish (for the log).
    Status {
        level: String,
        code: String,
        description: String,
    },
    /// The server asks us to reconnect (Enhanced RTMP), optionally to another tcUrl.
    ReconnectRequest {
        tc_url: Option<String>,
        description: String,
    },
}

/// Phases in the order a session goes through them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Handshaking,
    /// connect sent, waiting for its _result.
    Connecting,
    /// createStream sent, waiting for its _result.
    CreatingStream,
    /// publish sent, waiting for NetStream.Publish.Start.
    StartingPublish,
    Publishing,
    /// FCUnpublish and deleteStream queued; nothing more is sent.
    Closed,
}

impl Phase {
    fn waiting_for(self) -> &'static str {
        match self {
            Phase::Handshaking => "the handshake",
            Phase::Connecting => "the answer to connect",
            Phase::CreatingStream => "the answer to createStream",
            Phase::StartingPublish => "the answer to publish",
            Phase::Publishing | Phase::Closed => "nothing",
        }
    }
}

/// Client state of one RTMP publish connection.
pub struct PublishSession {
    config: SessionConfig,
    phase: Phase,
    handshake: Handshake,
    writer: ChunkWriter,
    reader: ChunkReader,
    /// What to send next: chunk headers and commands in scratch, media payload by reference.
    out: Gather,
    /// Handshake bytes and command bodies are built here before being chunked.
    scratch: Vec<u8>,
    /// Bytes received but not yet parsed (a chunk may arrive in pieces).
    input: Vec<u8>,
    /// Total bytes received, for Acknowledgement (the spec counts them modulo 2^32).
    bytes_received: u64,
    /// `bytes_received` when we last acknowledged.
    bytes_acknowledged: u64,
    /// The server's Window Acknowledgement Size; 0 until it sends one.
    ack_window: u32,
    /// The window size we last announced, so Set Peer Bandwidth is answered only on change.
    announced_window: u32,
    next_transaction_id: f64,
    connect_transaction: f64,
    create_stream_transaction: f64,
    /// The message stream id the server gave us in createStream's result.
    stream_id: u32,
    /// When the pending handshake or command reply is due.
    deadline_ms: Option<u64>,
    events: VecDeque<Event>,
}

impl PublishSession {
    /// Starts a session: queues C0 and C1. `random` fills C1 (any unpredictable bytes).
    pub fn new(config: SessionConfig, now_ms: u64, random: &[u8; RANDOM_SIZE]) -> PublishSession {
        let mut scratch = Vec::with_capacity(4096);
        let handshake = Handshake::start(now_ms as u32, random, &mut scratch);
        let mut out = Gather::with_capacity(16 * 1024, 1024);
        out.push_scratch(&scratch);
        scratch.clear();
        let deadline_ms = Some(now_ms.saturating_add(config.reply_timeout_ms));
        PublishSession {
            reader: ChunkReader::new(config.max_message_size),
            config,
            phase: Phase::Handshaking,
            handshake,
            writer: ChunkWriter::new(),
            out,
            scratch,
            input: Vec::with_capacity(8192),
            bytes_received: 0,
            bytes_acknowledged: 0,
            ack_window: 0,
            announced_window: 0,
            next_transaction_id: 1.0,
            connect_transaction: 0.0,
            create_stream_transaction: 0.0,
            stream_id: 0,
            deadline_ms,
            events: VecDeque::with_capacity(8),
        }
    }

    /// The queued outgoing bytes. Write them with [`Gather::io_slices`] (passing the buffer of the
    /// last [`send_video`](Self::send_video)) and report progress with [`Gather::advance`].
    pub fn transmit(&mut self) -> &mut Gather {
        &mut self.out
    }

    /// The transmit queue, read-only.
    pub fn transmit_ref(&self) -> &Gather {
        &self.out
    }

    pub fn is_publishing(&self) -> bool {
        self.phase == Phase::Publishing
    }

    /// The message stream id of the published stream (0 before createStream's result).
    pub fn stream_id(&self) -> u32 {
        self.stream_id
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must next be called, if ever.
    pub fn poll_timeout(&self) -> Option<u64> {
        self.deadline_ms
    }

    /// Fails the session if the awaited reply is overdue.
    pub fn handle_timeout(&mut self, now_ms: u64) -> Result<()> {
        match self.deadline_ms {
            Some(deadline) if now_ms >= deadline => {
                self.deadline_ms = None;
                Err(Error::peer(format!(
                    "the server did not send {} within {} ms",
                    self.phase.waiting_for(),
                    self.config.reply_timeout_ms
                )))
            }
            _ => Ok(()),
        }
    }

    /// The server closed the connection: the error says what that means at this point.
    pub fn handle_eof(&self) -> Error {
        match self.phase {
            Phase::Handshaking => Error::peer("the server closed the connection during the handshake"),
            Phase::Connecting => Error::rejected(
                "the server closed the connection in answer to connect (does the application exist? \
                 nginx-rtmp closes without a reason for an unknown app)",
            ),
            Phase::CreatingStream => Error::peer("the server closed the connection in answer to createStream"),
            Phase::StartingPublish => Error::rejected(
                "the server closed the connection in answer to publish: it refused the stream name or key \
                 (nginx-rtmp does this when on_publish or an access rule denies it)",
            ),
            Phase::Publishing => Error::network("the server closed the connection"),
            Phase::Closed => Error::network("the connection closed after unpublishing"),
        }
    }

    /// Takes bytes received from the server.
    pub fn handle_input(&mut self, data: &[u8], now_ms: u64) -> Result<()> {
        self.bytes_received += data.len() as u64;
        let mut data = data;
        if self.phase == Phase::Handshaking {
            self.scratch.clear();
            let used = self
                .handshake
                .receive(data, now_ms as u32, &mut self.scratch)
                .map_err(|e| Error::peer(format!("handshake failed: {e}")))?;
            if !self.scratch.is_empty() {
                self.out.push_scratch(&self.scratch);
            }
            data = data.get(used..).unwrap_or(&[]);
            if !self.handshake.is_done() {
                return Ok(());
            }
            self.events.push_back(Event::HandshakeDone);
            self.send_connect(now_ms);
        }
        self.input.extend_from_slice(data);
        let mut offset = 0;
        let result = loop {
            let pending = self.input.get(offset..).unwrap_or(&[]);
            if pending.is_empty() {
                break Ok(());
            }
            match self.reader.decode(pending) {
                Ok((0, _)) => break Ok(()),
                Ok((used, message)) => {
                    offset += used;
                    if let Some(message) = message {
                        let handled = self.handle_message(&message, now_ms);
                        self.reader.recycle(message.payload);
                        if let Err(e) = handled {
                            break Err(e);
                        }
                    }
                }
                Err(e) => break Err(Error::peer(format!("malformed chunk stream: {e}"))),
            }
        };
        self.input.drain(..offset.min(self.input.len()));
        self.acknowledge_if_due();
        result
    }

    /// Queues an `@setDataFrame` data message (onMetaData) with `body` as its AMF0 body.
    pub fn send_data(&mut self, timestamp: u32, body: &[u8]) -> Result<()> {
        self.require_publishing()?;
        let header = self.media_header(chunk_stream::STREAM_COMMAND, type_id::DATA_AMF0, timestamp);
        self.writer
            .try_write_message_bytes(&header, body, &mut self.out)
            .map_err(|e| Error::input(format!("metadata cannot be sent over RTMP: {e}")))
    }

    /// Queues a video message whose body is held in `body` (the AVC sequence header): copied.
    pub fn send_video_bytes(&mut self, timestamp: u32, body: &[u8]) -> Result<()> {
        self.require_publishing()?;
        let header = self.media_header(chunk_stream::VIDEO, type_id::VIDEO, timestamp);
        self.writer
            .try_write_message_bytes(&header, body, &mut self.out)
            .map_err(|e| Error::input(format!("a sequence header cannot be sent over RTMP: {e}")))
    }

    /// Queues a video message made of `parts`; external parts refer to the caller's frame buffer,
    /// which the driver passes to [`Gather::io_slices`] until the transmit queue is empty.
    pub fn send_video(&mut self, timestamp: u32, parts: &[Part]) -> Result<()> {
        self.require_publishing()?;
        let header = self.media_header(chunk_stream::VIDEO, type_id::VIDEO, timestamp);
        self.writer
            .try_write_message(&header, parts, &mut self.out)
            .map_err(|e| Error::input(format!("a frame cannot be sent over RTMP: {e}")))
    }

    /// Queues an audio message whose body is held in `body` (the AAC sequence header): copied.
    pub fn send_audio_bytes(&mut self, timestamp: u32, body: &[u8]) -> Result<()> {
        self.require_publishing()?;
        let header = self.media_header(chunk_stream::AUDIO, type_id::AUDIO, timestamp);
        self.writer
            .try_write_message_bytes(&header, body, &mut self.out)
            .map_err(|e| Error::input(format!("an audio header cannot be sent over RTMP: {e}")))
    }

    /// Queues an audio message made of `parts` (external parts refer to the caller's buffer, as
    /// for [`send_video`](Self::send_video)).
    pub fn send_audio(&mut self, timestamp: u32, parts: &[Part]) -> Result<()> {
        self.require_publishing()?;
        let header = self.media_header(chunk_stream::AUDIO, type_id::AUDIO, timestamp);
        self.writer
            .try_write_message(&header, parts, &mut self.out)
            .map_err(|e| Error::input(format!("an audio frame cannot be sent over RTMP: {e}")))
    }

    /// Ends the publish politely: FCUnpublish and deleteStream, as FFmpeg does on close.
    /// Nothing can be sent afterwards; the driver flushes the queue and closes the socket.
    pub fn unpublish(&mut self) {
        if matches!(self.phase, Phase::Handshaking | Phase::Closed) {
            self.phase = Phase::Closed;
            return;
        }
        let name = self.config.stream_name.clone();
        if self.phase >= Phase::CreatingStream {
            self.command(chunk_stream::COMMAND, 0, |out, tid| {
                amf0::encode_string(out, "FCUnpublish");
                amf0::encode_number(out, tid);
                amf0::encode_null(out);
                amf0::encode_string(out, &name);
            });
        }
        if self.stream_id != 0 {
            let stream_id = self.stream_id;
            self.command(chunk_stream::COMMAND, 0, |out, tid| {
                amf0::encode_string(out, "deleteStream");
                amf0::encode_number(out, tid);
                amf0::encode_null(out);
                amf0::encode_number(out, f64::from(stream_id));
            });
        }
        self.phase = Phase::Closed;
        self.deadline_ms = None;
    }

    fn require_publishing(&self) -> Result<()> {
        if self.phase == Phase::Publishing {
            Ok(())
        } else {
            Err(Error::ours(
                "media sent before the server accepted the publish",
            ))
        }
    }

    fn media_header(&self, chunk_stream_id: u32, type_id: u8, timestamp: u32) -> MessageHeader {
        MessageHeader {
            chunk_stream_id,
            timestamp,
            type_id,
            stream_id: self.stream_id,
        }
    }

    fn control(&mut self, type_id: u8, body: &[u8]) {
        let header = MessageHeader {
            chunk_stream_id: chunk_stream::CONTROL,
            timestamp: 0,
            type_id,
            stream_id: 0,
        };
        self.writer
            .write_message_bytes(&header, body, &mut self.out);
    }

    /// Builds a command body with `build(out, transaction_id)` and queues it; returns the id.
    fn command(
        &mut self,
        chunk_stream_id: u32,
        stream_id: u32,
        build: impl FnOnce(&mut Vec<u8>, f64),
    ) -> f64 {
        let transaction_id = self.next_transaction_id;
        self.next_transaction_id += 1.0;
        self.scratch.clear();
        build(&mut self.scratch, transaction_id);
        let header = MessageHeader {
            chunk_stream_id,
            timestamp: 0,
            type_id: type_id::COMMAND_AMF0,
            stream_id,
        };
        self.writer
            .write_message_bytes(&header, &self.scratch, &mut self.out);
        transaction_id
    }

    fn send_connect(&mut self, now_ms: u64) {
        // Our chunk size first, so that connect and everything after it use it.
        let chunk_size = self.config.chunk_size;
        self.control(type_id::SET_CHUNK_SIZE, &u32_body(chunk_size));
        self.writer.set_chunk_size(chunk_size);
        let (app, flash_ver, tc_url) = (
            self.config.app.clone(),
            self.config.flash_ver.clone(),
            self.config.tc_url.clone(),
        );
        self.connect_transaction = self.command(chunk_stream::COMMAND, 0, |out, tid| {
            amf0::encode_string(out, "connect");
            amf0::encode_number(out, tid);
            amf0::encode_object_start(out);
            amf0::encode_property_name(out, "app");
            amf0::encode_string(out, &app);
            amf0::encode_property_name(out, "type");
            amf0::encode_string(out, "nonprivate");
            amf0::encode_property_name(out, "flashVer");
            amf0::encode_string(out, &flash_ver);
            amf0::encode_property_name(out, "tcUrl");
            amf0::encode_string(out, &tc_url);
            // Enhanced RTMP: we honour NetConnection.Connect.ReconnectRequest (CapsExMask.Reconnect).
            amf0::encode_property_name(out, "capsEx");
            amf0::encode_number(out, f64::from(CAPS_EX_RECONNECT));
            amf0::encode_object_end(out);
        });
        self.phase = Phase::Connecting;
        self.deadline_ms = Some(now_ms.saturating_add(self.config.reply_timeout_ms));
    }

    fn send_publish_preamble(&mut self, now_ms: u64) {
        let name = self.config.stream_name.clone();
        for command in ["releaseStream", "FCPublish"] {
            self.command(chunk_stream::COMMAND, 0, |out, tid| {
                amf0::encode_string(out, command);
                amf0::encode_number(out, tid);
                amf0::encode_null(out);
                amf0::encode_string(out, &name);
            });
        }
        self.create_stream_transaction = self.command(chunk_stream::COMMAND, 0, |out, tid| {
            amf0::encode_string(out, "createStream");
            amf0::encode_number(out, tid);
            amf0::encode_null(out);
        });
        self.phase = Phase::CreatingStream;
        self.deadline_ms = Some(now_ms.saturating_add(self.config.reply_timeout_ms));
    }

    fn send_publish(&mut self, now_ms: u64) {
        let name = self.config.stream_name.clone();
        let stream_id = self.stream_id;
        self.command(chunk_stream::STREAM_COMMAND, stream_id, |out, tid| {
            amf0::encode_string(out, "publish");
            amf0::encode_number(out, tid);
            amf0::encode_null(out);
            amf0::encode_string(out, &name);
            amf0::encode_string(out, "live");
        });
        self.phase = Phase::StartingPublish;
        self.deadline_ms = Some(now_ms.saturating_add(self.config.reply_timeout_ms));
    }

    fn acknowledge_if_due(&mut self) {
        if self.ack_window == 0 || self.phase == Phase::Handshaking {
            return;
        }
        if self.bytes_received - self.bytes_acknowledged >= u64::from(self.ack_window) {
            self.bytes_acknowledged = self.bytes_received;
            // The sequence number is the byte count so far, modulo 2^32 (RTMP 1.0 §5.4.3).
            self.control(
                type_id::ACKNOWLEDGEMENT,
                &u32_body(self.bytes_received as u32),
            );
        }
    }

    fn handle_message(&mut self, message: &Message, now_ms: u64) -> Result<()> {
        let payload = message.payload.as_slice();
        let type_id = message.header.type_id;
        let control = Control::decode(type_id, payload).map_err(|e| Error::peer(e.to_string()))?;
        if let Some(control) = control {
            self.handle_control(control);
            return Ok(());
        }
        match type_id {
            type_id::COMMAND_AMF0 => self.handle_command(payload, now_ms),
            // An AMF3 command is AMF0 behind a format byte (0).
            type_id::COMMAND_AMF3 => self.handle_command(payload.get(1..).unwrap_or(&[]), now_ms),
            // Data, audio, video or aggregate messages are not for a publisher: ignore them.
            _ => Ok(()),
        }
    }

    fn handle_control(&mut self, control: Control) {
        match control {
            // The chunk reader applies Set Chunk Size and Abort itself.
            Control::SetChunkSize(_) | Control::Abort { .. } | Control::Acknowledgement { .. } => {}
            Control::WindowAckSize(size) => self.ack_window = size,
            Control::SetPeerBandwidth { size, .. } => {
                if size != self.announced_window && self.phase != Phase::Closed {
                    self.announced_window = size;
                    self.control(type_id::WINDOW_ACK_SIZE, &u32_body(size));
                }
            }
            Control::UserControl { event, value } => {
                if event == user_control::PING_REQUEST && self.phase != Phase::Closed {
                    self.control(
                        type_id::USER_CONTROL,
                        &user_control_body(user_control::PING_RESPONSE, value),
                    );
                }
            }
        }
    }

    fn describe(&self, info: Option<&Value>) -> String {
        describe(info, &self.config.stream_name)
    }

    /// Server text fit for the log (see [`redact_key`]).
    fn server_text(&self, text: &str) -> String {
        redact_key(text, &self.config.stream_name)
    }

    fn handle_command(&mut self, payload: &[u8], now_ms: u64) -> Result<()> {
        let values = amf0::decode_all(payload)
            .map_err(|e| Error::peer(format!("malformed command: {e}")))?;
        let name = values.first().and_then(Value::as_str).unwrap_or("");
        let transaction = values.get(1).and_then(Value::as_f64).unwrap_or(0.0);
        // The information object: the 4th value for _result/_error/onStatus, sometimes the 3rd.
        let info = values
            .get(3)
            .or_else(|| values.get(2))
            .filter(|v| v.get("code").is_some());
        match name {
            "_result"
                if transaction == self.connect_transaction && self.phase == Phase::Connecting =>
            {
                self.events.push_back(Event::Connected {
                    description: self.server_text(&field(info, "description")),
                });
                self.send_publish_preamble(now_ms);
            }
            "_result"
                if transaction == self.create_stream_transaction
                    && self.phase == Phase::CreatingStream =>
            {
                let stream_id = values.get(3).and_then(Value::as_f64).unwrap_or(-1.0);
                if !(1.0..=f64::from(u32::MAX)).contains(&stream_id) || stream_id.fract() != 0.0 {
                    return Err(Error::peer(format!(
                        "createStream returned an invalid stream id {stream_id}"
                    )));
                }
                self.stream_id = stream_id as u32;
                self.send_publish(now_ms);
            }
            "_error"
                if transaction == self.connect_transaction && self.phase == Phase::Connecting =>
            {
                return Err(Error::rejected(format!(
                    "connect was refused: {}",
                    self.describe(info)
                ))
                .with_server_description(field(info, "description")));
            }
            "_error" if transaction == self.create_stream_transaction => {
                return Err(Error::rejected(format!(
                    "createStream was refused: {}",
                    self.describe(info)
                )));
            }
            // releaseStream and FCPublish answers do not matter: many servers reject them harmlessly.
            "_result" | "_error" => {}
            "onStatus" => return self.handle_status(info),
            "close" => {
                return Err(Error::peer(format!(
                    "the server closed the session: {}",
                    self.describe(info)
                )))
            }
            // onBWDone, onFCPublish, |RtmpSampleAccess and the like need no answer.
            _ => {}
        }
        Ok(())
    }

    fn handle_status(&mut self, info: Option<&Value>) -> Result<()> {
        let code = field(info, "code");
        let level = field(info, "level");
        match code.as_str() {
            "NetStream.Publish.Start" if self.phase == Phase::StartingPublish => {
                self.phase = Phase::Publishing;
                self.deadline_ms = None;
                self.events.push_back(Event::Publishing);
                return Ok(());
            }
            "NetConnection.Connect.ReconnectRequest" => {
                let tc_url = info
                    .and_then(|i| i.get("tcUrl"))
                    .and_then(Value::as_str)
                    .map(str::to_string);
                self.events.push_back(Event::ReconnectRequest {
                    tc_url,
                    description: self.server_text(&field(info, "description")),
                });
                return Ok(());
            }
            _ => {}
        }
        let refused = level == "error"
            || code.ends_with(".BadName")
            || code.ends_with(".Rejected")
            || code.ends_with(".Failed")
            || code.ends_with(".Forbidden");
        if refused && self.phase != Phase::Closed {
            let what = if self.phase == Phase::Publishing {
                "the server stopped the stream"
            } else {
                "publish was refused"
            };
            return Err(Error::rejected(format!("{what}: {}", self.describe(info))));
        }
        let description = redact_key(&field(info, "description"), &self.config.stream_name);
        self.events.push_back(Event::Status {
            level,
            code,
            description,
        });
        Ok(())
    }
}

/// Hides the stream key wherever a server quotes it back.
/// Text from the server with the stream key, the whole stream name and every query value of
/// three characters or more hidden: a server may quote what we sent (`Already publishing
/// live?token=...`). Shorter values (`cam=1`) carry no secret, and hiding them would garble the
/// text.
fn redact_key(text: &str, stream_name: &str) -> String {
    let (key, query) = stream_name.split_once('?').unwrap_or((stream_name, ""));
    let mut text = if key.is_empty() {
        text.to_string()
    } else {
        text.replace(stream_name, "<key redacted>")
            .replace(key, "<key redacted>")
    };
    for value in query
        .split('&')
        .filter_map(|pair| pair.split_once('=').map(|(_, v)| v))
    {
        if value.len() >= 3 && text.contains(value) {
            text = text.replace(value, "<redacted>");
        }
    }
    text
}

fn field(info: Option<&Value>, name: &str) -> String {
    info.and_then(|i| i.get(name))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

/// `code (description)` from an information object, for error messages, with the key hidden.
fn describe(info: Option<&Value>, stream_name: &str) -> String {
    let code = field(info, "code");
    let description = field(info, "description");
    let mut text = String::new();
    match (code.is_empty(), description.is_empty()) {
        (true, true) => text.push_str("no reason given"),
        (false, true) => text.push_str(&code),
        (true, false) => text.push_str(&description),
        (false, false) => {
            let _ = write!(text, "{code} ({description})");
        }
    }
    redact_key(&text, stream_name)
}

#[cfg(test)]
mod tests;
