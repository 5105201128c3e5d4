//! The chunk reader: [`ChunkReader`] reassembles the peer's chunks into [`Message`]s, one
//! complete chunk at a time (check, then parse: an incomplete chunk consumes nothing and changes
//! nothing), and applies Set Chunk Size and Abort itself.
//!
//! # Invariants
//!
//! - Never panics, whatever the input; all arithmetic on values from the peer is checked,
//!   saturating or wrapping (timestamps).
//! - Memory is bounded: a payload grows only as its chunks arrive, a declared length above the
//!   limit is refused before any byte is buffered, at most [`MAX_CHUNK_STREAMS`] chunk streams are
//!   tracked and the bytes of unfinished messages across all chunk streams are capped at twice
//!   the message limit.
//! - After an error the reader must not be used again (its state may be half updated).
//!
//! # Beyond the specification
//!
//! Servers bend the rules in ways FFmpeg (`libavformat/rtmppkt.c`) and librtmp accept; the
//! reader accepts them too where that costs none of the invariants above:
//!
//! - A chunk stream may start with a header of type 1, 2 or 3, not only 0. What no header has
//!   given reads as zero, as in FFmpeg's and librtmp's zeroed channel tables: the timestamp
//!   delta counts from 0 and the message stream id is 0; after a type 2 or 3 header the length
//!   and the type are 0 too, an empty message of type 0 that the session ignores.
//! - A header of type 0, 1 or 2 in the middle of a message, with the message's length (a type 2
//!   header implies it), continues the message, as in FFmpeg: its timestamp, type and stream id
//!   are not the message's (the first chunk's header gave those), and whether type 3 chunks carry
//!   an extended timestamp stays as the first header said. A different length is still an error
//!   (FFmpeg: "RTMP packet size mismatch"), and so the length of a message never changes.
//! - An Abort message shorter than the 4 bytes that name a chunk stream aborts nothing (FFmpeg
//!   ignores Abort altogether). A short Set Chunk Size is still an error, as in FFmpeg.

use super::{
    to_usize, ChunkError, Message, MessageHeader, DEFAULT_CHUNK_SIZE, EXTENDED_TIMESTAMP,
    MAX_CHUNK_SIZE,
};

/// How many chunk streams a [`ChunkReader`] tracks at most; a server that opens more is refused,
/// so that it cannot make us grow memory without bound.
pub const MAX_CHUNK_STREAMS: usize = 64;

/// Message type of Set Chunk Size (5.4.1).
const TYPE_SET_CHUNK_SIZE: u8 = 1;

/// Message type of Abort Message (5.4.2).
const TYPE_ABORT: u8 = 2;

/// What the reader knows about one chunk stream of the peer.
#[derive(Debug)]
struct RecvStream {
    /// The chunk stream this entry is for.
    csid: u32,
    /// Absolute timestamp of the current (or last) message: the base of the next delta.
    timestamp: u32,
    /// The delta a fmt 3 new message adds: the last explicit delta, or after a fmt 0 header its
    /// absolute timestamp (5.3.1.2.4).
    delta: u32,
    /// Length of the current (or last) message, for fmt 2 and 3.
    length: u32,
    /// Type of the current (or last) message, for fmt 2 and 3.
    type_id: u8,
    /// Message stream id of the current (or last) message, for fmt 1, 2 and 3.
    stream_id: u32,
    /// Whether the last fmt 0, 1 or 2 header had an extended timestamp, so fmt 3 chunks carry
    /// one too (5.3.1.3).
    extended: bool,
    /// Whether a message has started and is not complete: a fmt 3 chunk then continues it.
    in_progress: bool,
    /// The bytes of the current message received so far; grows as chunks arrive.
    payload: Vec<u8>,
}

impl RecvStream {
    /// A chunk stream no header has described yet: every field zero, as FFmpeg's and librtmp's
    /// zeroed channel tables read it.
    fn fresh(csid: u32) -> Self {
        RecvStream {
            csid,
            timestamp: 0,
            delta: 0,
            length: 0,
            type_id: 0,
            stream_id: 0,
            extended: false,
            in_progress: false,
            payload: Vec::new(),
        }
    }
}

/// The header fields a chunk that starts a new message establishes.
#[derive(Clone, Copy)]
struct NewMessage {
    timestamp: u32,
    delta: u32,
    length: u32,
    type_id: u8,
    stream_id: u32,
    extended: bool,
}

fn be24(bytes: &[u8]) -> u32 {
    match *bytes {
        [a, b, c, ..] => u32::from_be_bytes([0, a, b, c]),
        _ => 0,
    }
}

fn be32(bytes: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?))
}

/// Parses a basic header: `(fmt, csid, length)`, or `None` if incomplete.
fn parse_basic_header(input: &[u8]) -> Option<(u8, u32, usize)> {
    let first = *input.first()?;
    let fmt = first >> 6;
    match first & 0x3F {
        0 => Some((fmt, 64 + u32::from(*input.get(1)?), 2)),
        1 => {
            let id = u16::from_le_bytes([*input.get(1)?, *input.get(2)?]);
            Some((fmt, 64 + u32::from(id), 3))
        }
        csid => Some((fmt, u32::from(csid), 1)),
    }
}

/// Reassembles the peer's chunks into messages, one complete chunk at a time.
#[derive(Debug)]
pub struct ChunkReader {
    /// The peer's chunk size, changed by its Set Chunk Size messages.
    chunk_size: u32,
    /// The longest message accepted (a memory bound chosen by the caller).
    max_message_size: u32,
    /// The chunk streams seen, at most [`MAX_CHUNK_STREAMS`] (linear search).
    streams: Vec<RecvStream>,
    /// Bytes held by unfinished messages across all chunk streams.
    buffered: usize,
    /// A finished message's payload buffer, given back by [`ChunkReader::recycle`], so the next
    /// message needs no allocation (servers send acknowledgements and pings all stream long).
    spare: Vec<u8>,
}

impl ChunkReader {
    /// Gives a message's payload buffer back for reuse (kept only if small: memory stays bounded).
    pub fn recycle(&mut self, mut payload: Vec<u8>) {
        if payload.capacity() <= 64 * 1024 && payload.capacity() > self.spare.capacity() {
            payload.clear();
            self.spare = payload;
        }
    }

    /// A reader for a new connection (chunk size 128). Messages longer than `max_message_size`
    /// are an error, and unfinished messages may hold at most twice that many bytes in total.
    pub fn new(max_message_size: u32) -> Self {
        ChunkReader {
            chunk_size: DEFAULT_CHUNK_SIZE,
            max_message_size,
            streams: Vec::new(),
            buffered: 0,
            spare: Vec::new(),
        }
    }

    /// The peer's current chunk size.
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// The longest message accepted.
    pub fn max_message_size(&self) -> u32 {
        self.max_message_size
    }

    /// Bytes held by unfinished messages.
    pub fn buffered(&self) -> usize {
        self.buffered
    }

    fn buffer_limit(&self) -> usize {
        to_usize(self.max_message_size).saturating_mul(2)
    }

    /// Check-then-parse: if `input` starts with one complete chunk, consume it and return (bytes
    /// consumed, the message if this chunk completed one). If the chunk is not complete yet,
    /// return (0, None) and change no state.
    ///
    /// Set Chunk Size and Abort are applied here (when their message completes) and still
    /// returned. After an error the connection is unusable and so is the reader.
    pub fn decode(&mut self, input: &[u8]) -> Result<(usize, Option<Message>), ChunkError> {
        const INCOMPLETE: Result<(usize, Option<Message>), ChunkError> = Ok((0, None));

        let Some((fmt, csid, mut pos)) = parse_basic_header(input) else {
            return INCOMPLETE;
        };
        let header_len = match fmt {
            0 => 11,
            1 => 7,
            2 => 3,
            _ => 0,
        };
        let Some(header) = input.get(pos..pos + header_len) else {
            return INCOMPLETE;
        };
        pos += header_len;

        let slot = self.streams.iter().position(|s| s.csid == csid);
        // A chunk stream seen for the first time may start with any header: what no header has
        // said yet reads as zeros (timestamp base, length, type, message stream id), as FFmpeg
        // and librtmp read it.
        let fresh = RecvStream::fresh(csid);
        let prev = slot.and_then(|i| self.streams.get(i)).unwrap_or(&fresh);

        let field = be24(header);
        // The length this header gives or implies.
        let length = match fmt {
            0 | 1 => be24(&header[3..]),
            _ => prev.length,
        };
        // A header of type 0, 1 or 2 in the middle of a message continues it when it gives the
        // message's length again (FFmpeg reads it so); another length would be a new message,
        // which may not start before the last one on its chunk stream ends.
        if prev.in_progress && length != prev.length {
            return Err(ChunkError::InterruptedMessage {
                csid,
                fmt,
                received: prev.payload.len(),
                length: prev.length,
            });
        }

        let has_extended = if fmt < 3 {
            field == EXTENDED_TIMESTAMP
        } else {
            prev.extended
        };
        let extended = if has_extended {
            let Some(value) = input.get(pos..).and_then(be32) else {
                return INCOMPLETE;
            };
            pos += 4;
            Some(value)
        } else {
            None
        };

        // `None`: this chunk continues the message in progress, whose header stays as it was.
        let new_message = match fmt {
            _ if prev.in_progress => None,
            0 => {
                let timestamp = extended.unwrap_or(field);
                Some(NewMessage {
                    timestamp,
                    delta: timestamp,
                    length,
                    type_id: header[6],
                    stream_id: u32::from_le_bytes([header[7], header[8], header[9], header[10]]),
                    extended: has_extended,
                })
            }
            1 | 2 => {
                let delta = extended.unwrap_or(field);
                Some(NewMessage {
                    timestamp: prev.timestamp.wrapping_add(delta),
                    delta,
                    length,
                    type_id: if fmt == 1 { header[6] } else { prev.type_id },
                    stream_id: prev.stream_id,
                    extended: has_extended,
                })
            }
            _ => {
                let delta = extended.unwrap_or(prev.delta);
                Some(NewMessage {
                    timestamp: prev.timestamp.wrapping_add(delta),
                    delta,
                    length,
                    type_id: prev.type_id,
                    stream_id: prev.stream_id,
                    extended: prev.extended,
                })
            }
        };

        let received = match new_message {
            Some(_) => {
                if length > self.max_message_size {
                    return Err(ChunkError::MessageTooLarge {
                        csid,
                        size: length,
                        limit: self.max_message_size,
                    });
                }
                if slot.is_none() && self.streams.len() >= MAX_CHUNK_STREAMS {
                    return Err(ChunkError::TooManyChunkStreams {
                        csid,
                        limit: MAX_CHUNK_STREAMS,
                    });
                }
                0
            }
            None => prev.payload.len(),
        };
        let need = to_usize(self.chunk_size).min(to_usize(length).saturating_sub(received));
        let Some(end) = pos.checked_add(need) else {
            return INCOMPLETE;
        };
        let Some(data) = input.get(pos..end) else {
            return INCOMPLETE;
        };
        let complete = received.saturating_add(need) >= to_usize(length);
        if !complete {
            let buffered = self.buffered.saturating_add(need);
            if buffered > self.buffer_limit() {
                return Err(ChunkError::BufferLimit {
                    csid,
                    buffered,
                    limit: self.buffer_limit(),
                });
            }
        }

        // The chunk is complete and valid: commit.
        let index = match slot {
            Some(index) => index,
            None => {
                self.streams.push(fresh);
                self.streams.len() - 1
            }
        };
        let Some(stream) = self.streams.get_mut(index) else {
            return INCOMPLETE;
        };
        if let Some(m) = new_message {
            stream.timestamp = m.timestamp;
            stream.delta = m.delta;
            stream.length = m.length;
            stream.type_id = m.type_id;
            stream.stream_id = m.stream_id;
            stream.extended = m.extended;
            stream.in_progress = true;
            stream.payload.clear();
        }
        stream.payload.extend_from_slice(data);
        if !complete {
            self.buffered = self.buffered.saturating_add(need);
            return Ok((end, None));
        }
        stream.in_progress = false;
        self.buffered = self.buffered.saturating_sub(received);
        let message = Message {
            header: MessageHeader {
                chunk_stream_id: csid,
                timestamp: stream.timestamp,
                type_id: stream.type_id,
                stream_id: stream.stream_id,
            },
            payload: std::mem::replace(&mut stream.payload, std::mem::take(&mut self.spare)),
        };
        self.apply_control(&message)?;
        Ok((end, Some(message)))
    }

    /// Applies Set Chunk Size and Abort, whatever chunk stream they arrived on (as FFmpeg does).
    fn apply_control(&mut self, message: &Message) -> Result<(), ChunkError> {
        let type_id = message.header.type_id;
        if type_id != TYPE_SET_CHUNK_SIZE && type_id != TYPE_ABORT {
            return Ok(());
        }
        let Some(value) = be32(&message.payload) else {
            if type_id == TYPE_ABORT {
                // Too short to name a chunk stream: it aborts nothing (FFmpeg ignores Abort
                // messages altogether).
                return Ok(());
            }
            return Err(ChunkError::TruncatedControl {
                csid: message.header.chunk_stream_id,
                type_id,
                len: message.payload.len(),
            });
        };
        if type_id == TYPE_SET_CHUNK_SIZE {
            if value == 0 || value > MAX_CHUNK_SIZE {
                return Err(ChunkError::InvalidChunkSize(value));
            }
            self.chunk_size = value;
        } else if let Some(stream) = self
            .streams
            .iter_mut()
            .find(|s| s.csid == value && s.in_progress)
        {
            self.buffered = self.buffered.saturating_sub(stream.payload.len());
            stream.in_progress = false;
            // Release the memory: an aborted message may have been large.
            stream.payload = Vec::new();
        }
        Ok(())
    }
}

#[cfg(test)]
impl ChunkReader {
    /// A reader that takes `chunk_size` as the peer's, as if its Set Chunk Size had arrived (for
    /// the writer's tests at small chunk sizes).
    pub(super) fn with_chunk_size(max_message_size: u32, chunk_size: u32) -> Self {
        ChunkReader {
            chunk_size,
            ..ChunkReader::new(max_message_size)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtmp::chunk::testing::{body, bytes_of, cat, decode_all, header};
    use crate::rtmp::chunk::{ChunkWriter, Gather, MAX_CHUNK_SIZE};

    fn message(csid: u32, timestamp: u32, type_id: u8, stream_id: u32, payload: &[u8]) -> Message {
        Message {
            header: header(csid, timestamp, type_id, stream_id),
            payload: payload.to_vec(),
        }
    }

    /// Decodes `bytes` arriving one byte at a time.
    fn decode_bytewise(reader: &mut ChunkReader, bytes: &[u8]) -> Result<Vec<Message>, ChunkError> {
        let mut messages = Vec::new();
        let (mut pos, mut avail) = (0, 0);
        while pos < bytes.len() {
            let (used, message) = reader.decode(&bytes[pos..avail])?;
            if used == 0 {
                assert!(avail < bytes.len(), "incomplete data at the end");
                avail += 1;
            }
            pos += used;
            messages.extend(message);
        }
        Ok(messages)
    }

    /// A server-like sequence of messages covering every header type, and its bytes.
    fn reference_stream() -> (Vec<Message>, Vec<u8>) {
        let mut w = ChunkWriter::new();
        let mut g = Gather::with_capacity(1024, 64);
        let mut sent = Vec::new();
        let mut send = |w: &mut ChunkWriter, g: &mut Gather, h: MessageHeader, body: Vec<u8>| {
            w.write_message_bytes(&h, &body, g);
            sent.push(Message {
                header: h,
                payload: body,
            });
        };
        send(
            &mut w,
            &mut g,
            header(2, 0, 5, 0),
            vec![0, 0x26, 0x25, 0xA0],
        );
        send(&mut w, &mut g, header(3, 0, 20, 0), body(307));
        send(&mut w, &mut g, header(3, 5, 20, 0), body(10));
        send(&mut w, &mut g, header(3, 10, 20, 0), body(10));
        send(&mut w, &mut g, header(3, 15, 20, 0), body(10));
        send(&mut w, &mut g, header(3, 15, 20, 0), Vec::new());
        send(&mut w, &mut g, header(320, 0x0100_0000, 9, 1), body(300));
        send(&mut w, &mut g, header(320, 0x0300_0000, 9, 1), body(300));
        send(&mut w, &mut g, header(320, 0x0500_0000, 9, 1), body(300));
        send(&mut w, &mut g, header(320, 7, 9, 1), body(128));
        send(&mut w, &mut g, header(100, 0xFFFF_FFF0, 8, 1), body(129));
        send(&mut w, &mut g, header(100, 0x10, 8, 1), body(129));
        let mut bytes = Vec::new();
        g.write_to_vec(&[], &mut bytes);
        (sent, bytes)
    }

    #[test]
    fn reader_decodes_writer_vectors() {
        let (sent, bytes) = reference_stream();
        let mut r = ChunkReader::new(1 << 16);
        assert_eq!(decode_all(&mut r, &bytes).unwrap(), sent);
        assert_eq!(r.buffered(), 0);
        let mut r = ChunkReader::new(1 << 16);
        assert_eq!(decode_bytewise(&mut r, &bytes).unwrap(), sent);
    }

    #[test]
    fn reader_split_at_every_byte_boundary() {
        let (sent, bytes) = reference_stream();
        for split in 0..=bytes.len() {
            let mut r = ChunkReader::new(1 << 16);
            let mut messages = Vec::new();
            let mut buffer = bytes[..split].to_vec();
            let mut rest = &bytes[split..];
            loop {
                let (used, message) = r.decode(&buffer).unwrap();
                messages.extend(message);
                if used > 0 {
                    buffer.drain(..used);
                } else if !rest.is_empty() {
                    buffer.extend_from_slice(rest);
                    rest = &[];
                } else {
                    break;
                }
            }
            assert!(buffer.is_empty(), "split {split}");
            assert_eq!(messages, sent, "split {split}");
        }
    }

    #[test]
    fn incomplete_chunk_changes_nothing() {
        let mut w = ChunkWriter::new();
        let bytes = bytes_of(&mut w, header(3, 0x0100_0000, 9, 1), &body(100));
        let mut r = ChunkReader::new(1000);
        for end in 0..bytes.len() {
            assert_eq!(r.decode(&bytes[..end]), Ok((0, None)));
            assert!(r.streams.is_empty());
        }
        let (used, message) = r.decode(&bytes).unwrap();
        assert_eq!(used, bytes.len());
        assert_eq!(message.unwrap().payload, body(100));
    }

    #[test]
    fn reader_interleaved_chunk_streams() {
        let a1: &[u8] = &[
            0x04, 0, 0, 1, 0, 0, 10, 9, 1, 0, 0, 0, b'a', b'b', b'c', b'd',
        ];
        let b1: &[u8] = &[
            0x06, 0, 0, 2, 0, 0, 10, 8, 1, 0, 0, 0, b'A', b'B', b'C', b'D',
        ];
        let a2: &[u8] = &[0xC4, b'e', b'f', b'g', b'h'];
        let b2: &[u8] = &[0xC6, b'E', b'F', b'G', b'H'];
        let b3: &[u8] = &[0xC6, b'I', b'J'];
        let a3: &[u8] = &[0xC4, b'i', b'j'];
        let bytes = cat(&[a1, b1, a2, b2, b3, a3]);
        let mut r = ChunkReader::new(100);
        r.chunk_size = 4;
        let messages = decode_bytewise(&mut r, &bytes).unwrap();
        assert_eq!(
            messages,
            vec![
                Message {
                    header: header(6, 2, 8, 1),
                    payload: b"ABCDEFGHIJ".to_vec()
                },
                Message {
                    header: header(4, 1, 9, 1),
                    payload: b"abcdefghij".to_vec()
                },
            ]
        );
    }

    #[test]
    fn reader_fmt3_after_fmt0_uses_the_fmt0_timestamp_as_delta() {
        // 5.3.1.2.4: a type 3 chunk after a type 0 chunk has the type 0 timestamp as its delta.
        let bytes = [0x03, 0, 0, 100, 0, 0, 1, 8, 1, 0, 0, 0, b'a', 0xC3, b'b'];
        let mut r = ChunkReader::new(1000);
        let messages = decode_all(&mut r, &bytes).unwrap();
        assert_eq!(messages[1].header, header(3, 200, 8, 1));
        assert_eq!(messages[1].payload, b"b");
    }

    #[test]
    fn zero_length_messages_complete_immediately() {
        let bytes = [0x03, 0, 0, 1, 0, 0, 0, 20, 0, 0, 0, 0, 0xC3, 0x83, 0, 0, 5];
        let mut r = ChunkReader::new(1000);
        let messages = decode_all(&mut r, &bytes).unwrap();
        let stamps: Vec<u32> = messages.iter().map(|m| m.header.timestamp).collect();
        assert_eq!(stamps, [1, 2, 7]);
        assert!(messages.iter().all(|m| m.payload.is_empty()));
    }

    #[test]
    fn set_chunk_size_applies_to_following_chunks() {
        let mut w = ChunkWriter::new();
        let mut bytes = bytes_of(&mut w, header(2, 0, 1, 0), &4096u32.to_be_bytes());
        w.set_chunk_size(4096);
        let data = body(3000);
        let big = bytes_of(&mut w, header(3, 0, 20, 0), &data);
        assert_eq!(big.len(), 12 + 3000);
        bytes.extend_from_slice(&big);
        let mut r = ChunkReader::new(1 << 16);
        let messages = decode_bytewise(&mut r, &bytes).unwrap();
        assert_eq!(r.chunk_size(), 4096);
        assert_eq!(messages[0].header.type_id, 1);
        assert_eq!(messages[1].payload, data);
        // The largest chunk size is accepted too.
        let mut r = ChunkReader::new(16);
        let max = [
            0x02, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0, 0, 0x7F, 0xFF, 0xFF, 0xFF,
        ];
        decode_all(&mut r, &max).unwrap();
        assert_eq!(r.chunk_size(), MAX_CHUNK_SIZE);
    }

    #[test]
    fn abort_drops_the_partial_message() {
        let mut bytes = vec![0x05, 0, 0, 0, 0, 1, 0x2C, 9, 1, 0, 0, 0];
        bytes.extend_from_slice(&body(128)); // first chunk of 300 bytes
        bytes.extend_from_slice(&[0x02, 0, 0, 0, 0, 0, 4, 2, 0, 0, 0, 0, 0, 0, 0, 5]); // Abort csid 5
        bytes.extend_from_slice(&[0x45, 0, 0, 1, 0, 0, 2, 9, b'o', b'k']); // new message on csid 5
        let mut r = ChunkReader::new(1000);
        let (used, none) = r.decode(&bytes).unwrap();
        assert_eq!((used, none), (140, None));
        assert_eq!(r.buffered(), 128);
        let messages = decode_all(&mut r, &bytes[140..]).unwrap();
        assert_eq!(r.buffered(), 0);
        assert_eq!(messages.len(), 2);
        assert_eq!(messages[0].header.type_id, 2);
        assert_eq!(
            messages[1],
            Message {
                header: header(5, 1, 9, 1),
                payload: b"ok".to_vec()
            }
        );
        // Aborting an idle or unknown chunk stream is harmless.
        let idle = [0x02, 0, 0, 0, 0, 0, 4, 2, 0, 0, 0, 0, 0, 0, 0, 9];
        assert_eq!(decode_all(&mut r, &idle).unwrap().len(), 1);
    }

    #[test]
    fn an_abort_too_short_to_name_a_chunk_stream_aborts_nothing() {
        // FFmpeg ignores Abort messages; one of 0 to 3 bytes names no chunk stream, so it is
        // returned and changes nothing (the message in progress on chunk stream 5 goes on).
        for len in 0..4u8 {
            let mut bytes = vec![0x05, 0, 0, 0, 0, 0, 130, 9, 1, 0, 0, 0];
            bytes.extend_from_slice(&body(128));
            bytes.extend_from_slice(&[0x02, 0, 0, 0, 0, 0, len, 2, 0, 0, 0, 0]);
            bytes.extend_from_slice(&[0, 0, 5][..usize::from(len)]);
            bytes.extend_from_slice(&[0xC5, 0xAA, 0xBB]);
            let mut r = ChunkReader::new(1000);
            let messages = decode_all(&mut r, &bytes).unwrap();
            assert_eq!(messages.len(), 2, "{len} bytes");
            assert_eq!(
                messages[0],
                message(2, 0, 2, 0, &[0, 0, 5][..usize::from(len)])
            );
            assert_eq!(messages[1].payload.len(), 130);
            assert_eq!(r.buffered(), 0);
        }
    }

    #[test]
    fn reader_errors() {
        let err = |bytes: &[u8], limit: u32| {
            let mut r = ChunkReader::new(limit);
            decode_all(&mut r, bytes).unwrap_err()
        };
        assert_eq!(
            err(&[0x03, 0, 0, 0, 0, 0, 101, 9, 0, 0, 0, 0], 100),
            ChunkError::MessageTooLarge {
                csid: 3,
                size: 101,
                limit: 100
            }
        );
        // A fmt 1 that grows the length beyond the limit.
        assert_eq!(
            err(
                &[0x03, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 0, 0x43, 0, 0, 0, 0xFF, 0xFF, 0xFF, 9],
                100
            ),
            ChunkError::MessageTooLarge {
                csid: 3,
                size: 0xFF_FFFF,
                limit: 100
            }
        );
        for size in [0u32, 0x8000_0000, u32::MAX] {
            let mut bytes = vec![0x02, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0, 0];
            bytes.extend_from_slice(&size.to_be_bytes());
            assert_eq!(err(&bytes, 100), ChunkError::InvalidChunkSize(size));
        }
        assert_eq!(
            err(&[0x02, 0, 0, 0, 0, 0, 3, 1, 0, 0, 0, 0, 0, 16, 0], 100),
            ChunkError::TruncatedControl {
                csid: 2,
                type_id: 1,
                len: 3
            }
        );
        // A type 1 header that changes the length of a message in progress.
        let mut interrupted = vec![0x03, 0, 0, 0, 0, 1, 0, 9, 0, 0, 0, 0];
        interrupted.extend_from_slice(&body(128));
        interrupted.extend_from_slice(&[0x43, 0, 0, 0, 0, 1, 1, 9]);
        assert_eq!(
            err(&interrupted, 1000),
            ChunkError::InterruptedMessage {
                csid: 3,
                fmt: 1,
                received: 128,
                length: 256
            }
        );
        // Empty messages on chunk streams 64, 65, ...: the 65th chunk stream is refused.
        let mut many = Vec::new();
        for i in 0..=MAX_CHUNK_STREAMS as u8 {
            many.extend_from_slice(&[0x00, i, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 0]);
        }
        assert_eq!(
            err(&many, 100),
            ChunkError::TooManyChunkStreams {
                csid: 64 + MAX_CHUNK_STREAMS as u32,
                limit: MAX_CHUNK_STREAMS
            }
        );
        // Three unfinished 100-byte messages (90 bytes each so far) with a limit of 100: each is
        // allowed, their total above 2 * 100 is not.
        let mut partial = vec![0x02, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0, 0, 0, 0, 0, 90];
        for csid in 3..6u8 {
            partial.extend_from_slice(&[csid, 0, 0, 0, 0, 0, 100, 9, 0, 0, 0, 0]);
            partial.extend_from_slice(&body(90));
        }
        let mut r = ChunkReader::new(100);
        let e = decode_all(&mut r, &partial).unwrap_err();
        assert_eq!(
            e,
            ChunkError::BufferLimit {
                csid: 5,
                buffered: 270,
                limit: 200
            }
        );
    }

    #[test]
    fn a_type_1_header_may_open_a_chunk_stream() {
        // As FFmpeg and librtmp read it: no earlier header, so the timestamp delta counts from 0
        // and the message stream id is 0. Then type 3 and type 2 headers build on it.
        let bytes = [
            0x43, 0, 0, 100, 0, 0, 3, 20, b'a', b'b',
            b'c', // type 1: delta 100, 3 bytes, type 20
            0xC3, b'd', b'e', b'f', // type 3: a new message, delta 100 again
            0x83, 0, 0, 5, b'g', b'h', b'i', // type 2: delta 5
        ];
        let mut r = ChunkReader::new(1000);
        assert_eq!(
            r.decode(&bytes).unwrap(),
            (11, Some(message(3, 100, 20, 0, b"abc")))
        );
        let messages = decode_all(&mut r, &bytes[11..]).unwrap();
        assert_eq!(
            messages,
            [
                message(3, 200, 20, 0, b"def"),
                message(3, 205, 20, 0, b"ghi")
            ]
        );
        // A two-byte basic header (chunk stream 64 + 6), an extended delta, and a message longer
        // than the chunk size whose type 3 chunks repeat the extended field.
        let mut bytes = vec![0x40, 6, 0xFF, 0xFF, 0xFF, 0, 0, 130, 9, 0x01, 0, 0, 0];
        bytes.extend_from_slice(&body(128));
        bytes.extend_from_slice(&[0xC0, 6, 0x01, 0, 0, 0, 0xAA, 0xBB]);
        let mut r = ChunkReader::new(1000);
        let mut payload = body(128);
        payload.extend_from_slice(&[0xAA, 0xBB]);
        assert_eq!(
            decode_all(&mut r, &bytes).unwrap(),
            [message(70, 0x0100_0000, 9, 0, &payload)]
        );
        assert_eq!(r.buffered(), 0);
    }

    #[test]
    fn a_type_2_or_3_header_may_open_a_chunk_stream() {
        // No header has given a length or a type: both are 0, so the chunk is an empty message of
        // type 0 (FFmpeg returns it too and ignores its type), one per chunk header. Nothing is
        // buffered and every such chunk consumes its header.
        let mut r = ChunkReader::new(1000);
        assert_eq!(
            r.decode(&[0x83, 0, 0, 7]),
            Ok((4, Some(message(3, 7, 0, 0, b""))))
        );
        assert_eq!(r.decode(&[0xC5]), Ok((1, Some(message(5, 0, 0, 0, b"")))));
        assert_eq!(r.decode(&[0xC5]), Ok((1, Some(message(5, 0, 0, 0, b"")))));
        // The type 2 delta is the base of the next: a type 3 header repeats it.
        assert_eq!(r.decode(&[0xC3]), Ok((1, Some(message(3, 14, 0, 0, b"")))));
        // Such a chunk stream goes on normally: a type 1 header gives length and type.
        assert_eq!(
            r.decode(&[0x45, 0, 0, 1, 0, 0, 2, 20, b'o', b'k']),
            Ok((10, Some(message(5, 1, 20, 0, b"ok"))))
        );
        assert_eq!(r.buffered(), 0);
        // An extended delta on a type 2 header opening a chunk stream: its type 3 chunks carry
        // the field too.
        let mut r = ChunkReader::new(1000);
        let bytes = [0x84, 0xFF, 0xFF, 0xFF, 0, 0, 0, 9, 0xC4, 0, 0, 0, 1];
        assert_eq!(
            decode_all(&mut r, &bytes).unwrap(),
            [message(4, 9, 0, 0, b""), message(4, 10, 0, 0, b"")]
        );
    }

    #[test]
    fn headers_opening_chunk_streams_keep_the_limits() {
        let err = |bytes: &[u8]| decode_all(&mut ChunkReader::new(100), bytes).unwrap_err();
        // A type 1 header opening a chunk stream with a message over the limit.
        assert_eq!(
            err(&[0x43, 0, 0, 0, 0, 0, 101, 9]),
            ChunkError::MessageTooLarge {
                csid: 3,
                size: 101,
                limit: 100
            }
        );
        // Empty messages with type 3 headers on chunk streams 64, 65, ...: the 65th is refused.
        let mut many = Vec::new();
        for i in 0..=MAX_CHUNK_STREAMS as u8 {
            many.extend_from_slice(&[0xC0, i]);
        }
        assert_eq!(
            err(&many),
            ChunkError::TooManyChunkStreams {
                csid: 64 + MAX_CHUNK_STREAMS as u32,
                limit: MAX_CHUNK_STREAMS
            }
        );
        // Type 2 and type 1 alike.
        let mut many = Vec::new();
        for i in 0..=MAX_CHUNK_STREAMS as u8 {
            many.extend_from_slice(&[0x80, i, 0, 0, 0]);
            many.extend_from_slice(&[0x40, i, 0, 0, 0, 0, 0, 0, 9]);
        }
        assert!(matches!(err(&many), ChunkError::TooManyChunkStreams { .. }));
    }

    #[test]
    fn a_header_repeated_mid_message_continues_it() {
        // A 300-byte message in chunks of 128: its second chunk has a type 0 header, its third a
        // type 1 header (both with the same length, other timestamps and types), then a type 2
        // header ends a 20-byte message whose second chunk repeats it. FFmpeg continues the
        // message each time; the first header's fields stand.
        let data = body(300);
        let mut bytes = vec![0x04, 0, 0, 10, 0, 1, 0x2C, 9, 1, 0, 0, 0];
        bytes.extend_from_slice(&data[..128]);
        bytes.extend_from_slice(&[0x04, 0, 0, 99, 0, 1, 0x2C, 8, 7, 0, 0, 0]);
        bytes.extend_from_slice(&data[128..256]);
        bytes.extend_from_slice(&[0x44, 0, 0, 5, 0, 1, 0x2C, 18]);
        bytes.extend_from_slice(&data[256..]);
        let mut r = ChunkReader::new(1000);
        let messages = decode_bytewise(&mut r, &bytes).unwrap();
        assert_eq!(messages, [message(4, 10, 9, 1, &data)]);
        assert_eq!(r.buffered(), 0);
        // The stream's state is the first header's: a type 3 header next adds its delta (10).
        let mut r = ChunkReader::with_chunk_size(1000, 16);
        let mut bytes = vec![0x04, 0, 0, 10, 0, 0, 20, 9, 1, 0, 0, 0];
        bytes.extend_from_slice(&data[..16]);
        bytes.extend_from_slice(&[0x84, 0, 0, 50]);
        bytes.extend_from_slice(&data[16..20]);
        bytes.extend_from_slice(&[0xC4]);
        bytes.extend_from_slice(&data[..16]);
        bytes.extend_from_slice(&[0xC4]);
        bytes.extend_from_slice(&data[16..20]);
        assert_eq!(
            decode_all(&mut r, &bytes).unwrap(),
            [
                message(4, 10, 9, 1, &data[..20]),
                message(4, 20, 9, 1, &data[..20])
            ]
        );
        // A repeated header with an extended timestamp carries the 4-byte field; the type 3
        // chunks after it still follow the first header (none).
        let mut r = ChunkReader::with_chunk_size(1000, 4);
        let bytes = [
            0x04, 0, 0, 1, 0, 0, 12, 9, 1, 0, 0, 0, b'a', b'b', b'c', b'd', // first chunk
            0x84, 0xFF, 0xFF, 0xFF, 0, 0, 0, 9, b'e', b'f', b'g', b'h', // type 2, extended
            0xC4, b'i', b'j', b'k', b'l', // type 3: no extended field
        ];
        assert_eq!(
            decode_all(&mut r, &bytes).unwrap(),
            [message(4, 1, 9, 1, b"abcdefghijkl")]
        );
    }

    #[test]
    fn reader_survives_garbage() {
        // A cheap deterministic stand-in for the fuzzer, so `cargo test` covers it too.
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        for _ in 0..2000 {
            let mut data = Vec::new();
            for _ in 0..(seed % 300) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                data.push(seed as u8);
            }
            let mut r = ChunkReader::new(1 << 12);
            let mut pos = 0;
            while let Ok((used, _)) = r.decode(&data[pos..]) {
                if used == 0 {
                    break;
                }
                pos += used;
            }
        }
    }
}
