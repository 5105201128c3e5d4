//! The chunk writer: [`ChunkWriter`] turns messages into chunks appended to a [`Gather`],
//! choosing for each message the most compact header its chunk stream allows.
//!
//! # Invariants
//!
//! - Steady state: once the Gather's storage and the per chunk stream table have reached their
//!   working sizes, writing a message allocates nothing.
//! - Header choice (as FFmpeg does): fmt 0 for the first message of a chunk stream, on a
//!   change of message stream id and when the timestamp goes backwards in serial-number arithmetic
//!   (`ts.wrapping_sub(prev) >= 2^31`); fmt 1 when length or type change; fmt 2 when only the delta
//!   changes; fmt 3 for a new message only when everything, delta included, repeats AND the
//!   previous header of that chunk stream carried an explicit delta (fmt 1, 2 or 3): the writer
//!   never relies on the delta implied by a fmt 0 header, which servers disagree about.
//!   Continuation chunks are fmt 3 and repeat the extended timestamp field when the first chunk
//!   had one.
//! - All or nothing: a message that cannot be represented (chunk stream id outside
//!   2..=65599, body longer than the 24-bit length field, external range beyond 32-bit offsets,
//!   scratch storage beyond 4 GiB) appends nothing and leaves the writer's state unchanged.

use super::{
    to_usize, ChunkError, Gather, MessageHeader, Part, DEFAULT_CHUNK_SIZE, EXTENDED_TIMESTAMP,
    MAX_CHUNK_HEADER_LEN, MAX_CHUNK_SIZE, MAX_CHUNK_STREAM_ID, MAX_MESSAGE_LEN,
    MIN_CHUNK_STREAM_ID,
};

/// The longest fmt 3 (continuation) header: 3-byte basic header and the extended timestamp.
const MAX_CONTINUATION_HEADER_LEN: usize = 3 + 4;

/// What the writer last sent on one chunk stream: what the next header can leave out.
#[derive(Clone, Copy, Debug)]
struct SendState {
    /// The chunk stream this entry is for.
    csid: u32,
    /// Absolute timestamp of the last message, the base of the next delta.
    timestamp: u32,
    /// The delta the last header carried explicitly (meaningless after fmt 0, see `fmt`).
    delta: u32,
    /// Length of the last message (fmt 2 and 3 leave it out).
    length: u32,
    /// Type of the last message (fmt 2 and 3 leave it out).
    type_id: u8,
    /// Message stream id of the last message (fmt 1, 2 and 3 leave it out).
    stream_id: u32,
    /// The fmt of the last message's first chunk: a fmt 3 new message needs an explicit delta
    /// before it, so it never follows fmt 0.
    fmt: u8,
}

/// A message body: parts (zero copy) or one slice (copied).
#[derive(Clone, Copy)]
enum Body<'a> {
    Parts(&'a [Part]),
    Bytes(&'a [u8]),
}

/// Appends chunk data to a Gather, inserting a continuation header at each chunk boundary.
struct Chunker<'g> {
    out: &'g mut Gather,
    /// The fmt 3 basic header, followed by the extended timestamp when the message has one.
    continuation: [u8; MAX_CONTINUATION_HEADER_LEN],
    /// Bytes of `continuation` in use.
    continuation_len: usize,
    /// The chunk size, as usize.
    chunk_size: usize,
    /// Room left in the current chunk.
    left: usize,
}

impl Chunker<'_> {
    /// Starts a new chunk when the current one is full (called only when more data follows, so
    /// a message never ends with an empty continuation chunk).
    fn boundary(&mut self) {
        if self.left == 0 {
            self.out
                .push_scratch(&self.continuation[..self.continuation_len]);
            self.left = self.chunk_size;
        }
    }

    fn scratch(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            self.boundary();
            let (now, rest) = bytes.split_at(self.left.min(bytes.len()));
            self.out.push_scratch(now);
            self.left -= now.len();
            bytes = rest;
        }
    }

    fn external(&mut self, mut start: usize, mut len: usize) {
        while len > 0 {
            self.boundary();
            let take = self.left.min(len);
            self.out.push_external(start, take);
            self.left -= take;
            // Cannot overflow: start + len was checked to fit in u32.
            start += take;
            len -= take;
        }
    }
}

/// Writes a basic header (5.3.1.1) into `out`, returns its length. `csid` must be 2..=65599.
fn basic_header(fmt: u8, csid: u32, out: &mut [u8]) -> usize {
    let fmt = fmt << 6;
    match csid {
        0..=63 => {
            out[0] = fmt | csid as u8;
            1
        }
        64..=319 => {
            out[0] = fmt;
            out[1] = (csid - 64) as u8;
            2
        }
        _ => {
            let id = (csid.saturating_sub(64).min(0xFFFF) as u16).to_le_bytes();
            out[0] = fmt | 1;
            out[1] = id[0];
            out[2] = id[1];
            3
        }
    }
}

/// The most bytes [`ChunkWriter::write_message`] appends to a [`Gather`] for a body of `body_len`
/// bytes at chunk size `chunk_size`: the body, the longest first header, and the longest
/// continuation header (extended timestamp, 3-byte basic header) at each chunk boundary. The
/// bound on scratch storage that [`Gather::detach_external`] needs for that message.
pub fn max_wire_len(body_len: usize, chunk_size: u32) -> usize {
    let chunk_size = to_usize(chunk_size.clamp(1, MAX_CHUNK_SIZE));
    let continuations = body_len.div_ceil(chunk_size).saturating_sub(1);
    body_len
        .saturating_add(MAX_CHUNK_HEADER_LEN)
        .saturating_add(continuations.saturating_mul(MAX_CONTINUATION_HEADER_LEN))
}

/// Turns messages into chunks, choosing the most compact header each chunk stream allows.
#[derive(Clone, Debug)]
pub struct ChunkWriter {
    /// The size of the chunks we send (what we announced with Set Chunk Size).
    chunk_size: u32,
    /// The last header sent on each chunk stream used so far (a handful: linear search; the
    /// Vec grows only when a chunk stream is used for the first time).
    streams: Vec<SendState>,
}

impl Default for ChunkWriter {
    fn default() -> Self {
        ChunkWriter::new()
    }
}

impl ChunkWriter {
    /// A writer for a new connection: chunk size 128, no chunk stream used.
    pub fn new() -> Self {
        ChunkWriter {
            chunk_size: DEFAULT_CHUNK_SIZE,
            streams: Vec::with_capacity(8),
        }
    }

    /// The size of the chunks written now.
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// Changes the size used for following messages. The caller sends the Set Chunk Size message
    /// itself (with the old size) before calling this. 0 is taken as 1 and values above
    /// [`MAX_CHUNK_SIZE`] as `MAX_CHUNK_SIZE` (the peer could not parse them); announce
    /// [`chunk_size`](Self::chunk_size) if you pass something out of range.
    pub fn set_chunk_size(&mut self, size: u32) {
        self.chunk_size = size.clamp(1, MAX_CHUNK_SIZE);
    }

    /// Appends one message, chunked, to `out`. `parts` make up the body in order; external
    /// parts refer to the buffer later passed to [`Gather::io_slices`].
    ///
    /// A message that cannot be written (see [`try_write_message`](Self::try_write_message):
    /// chunk stream id outside 2..=65599, body above 16 MiB - 1, external range beyond 4 GiB)
    /// is dropped whole: nothing is appended and the writer's state does not change. Use
    /// `try_write_message` where the body size depends on input.
    pub fn write_message(&mut self, header: &MessageHeader, parts: &[Part], out: &mut Gather) {
        let _ = self.try_write_message(header, parts, out);
    }

    /// Same, for a body held in a slice (commands, control messages): copied into scratch.
    /// Dropped whole when it cannot be written, like [`write_message`](Self::write_message).
    pub fn write_message_bytes(&mut self, header: &MessageHeader, body: &[u8], out: &mut Gather) {
        let _ = self.try_write_message_bytes(header, body, out);
    }

    /// [`write_message`](Self::write_message) that says why a message cannot be written. On
    /// error nothing was appended and the writer's state is unchanged.
    pub fn try_write_message(
        &mut self,
        header: &MessageHeader,
        parts: &[Part],
        out: &mut Gather,
    ) -> Result<(), ChunkError> {
        self.write(header, Body::Parts(parts), out)
    }

    /// [`write_message_bytes`](Self::write_message_bytes) that says why a message cannot be
    /// written. On error nothing was appended and the writer's state is unchanged.
    pub fn try_write_message_bytes(
        &mut self,
        header: &MessageHeader,
        body: &[u8],
        out: &mut Gather,
    ) -> Result<(), ChunkError> {
        self.write(header, Body::Bytes(body), out)
    }

    /// Forgets per-stream state and returns to chunk size 128 (a new connection).
    pub fn reset(&mut self) {
        self.streams.clear();
        self.chunk_size = DEFAULT_CHUNK_SIZE;
    }

    fn write(
        &mut self,
        header: &MessageHeader,
        body: Body<'_>,
        out: &mut Gather,
    ) -> Result<(), ChunkError> {
        let csid = header.chunk_stream_id;
        if !(MIN_CHUNK_STREAM_ID..=MAX_CHUNK_STREAM_ID).contains(&csid) {
            return Err(ChunkError::InvalidChunkStreamId { csid });
        }

        // Check everything before appending anything.
        let too_large = |size: usize| ChunkError::MessageTooLarge {
            csid,
            size: u32::try_from(size).unwrap_or(u32::MAX),
            limit: MAX_MESSAGE_LEN,
        };
        let (body_len, copied_len) = match body {
            Body::Bytes(bytes) => (bytes.len(), bytes.len()),
            Body::Parts(parts) => {
                let mut body_len = 0usize;
                let mut inline_len = 0usize;
                for part in parts {
                    if let Part::External { start, len } = *part {
                        let fits = start
                            .checked_add(len)
                            .is_some_and(|end| u32::try_from(end).is_ok());
                        if !fits {
                            return Err(ChunkError::ExternalOutOfRange { csid, start, len });
                        }
                    } else {
                        inline_len = inline_len.saturating_add(part.len());
                    }
                    body_len = body_len
                        .checked_add(part.len())
                        .ok_or_else(|| too_large(usize::MAX))?;
                }
                (body_len, inline_len)
            }
        };
        let length = match u32::try_from(body_len) {
            Ok(length) if length <= MAX_MESSAGE_LEN => length,
            _ => return Err(too_large(body_len)),
        };
        let chunk_size = to_usize(self.chunk_size).max(1);
        // body_len <= 2^24 and a continuation header is at most 7 bytes: no overflow below.
        let continuations = body_len.div_ceil(chunk_size).saturating_sub(1);
        let scratch_needed =
            MAX_CHUNK_HEADER_LEN + continuations * MAX_CONTINUATION_HEADER_LEN + copied_len;
        let scratch_fits = out
            .scratch_len()
            .checked_add(scratch_needed)
            .is_some_and(|end| u32::try_from(end).is_ok());
        if !scratch_fits {
            return Err(ChunkError::GatherFull { csid });
        }

        // Choose the header.
        let slot = self.streams.iter().position(|s| s.csid == csid);
        let (fmt, field) = match slot.and_then(|i| self.streams.get(i)) {
            None => (0, header.timestamp),
            Some(prev) => {
                let delta = header.timestamp.wrapping_sub(prev.timestamp);
                if prev.stream_id != header.stream_id || delta >= 1 << 31 {
                    (0, header.timestamp)
                } else if prev.length != length || prev.type_id != header.type_id {
                    (1, delta)
                } else if prev.delta != delta || prev.fmt == 0 {
                    (2, delta)
                } else {
                    (3, delta)
                }
            }
        };
        let extended = field >= EXTENDED_TIMESTAMP;

        let mut first = [0u8; MAX_CHUNK_HEADER_LEN];
        let mut n = basic_header(fmt, csid, &mut first);
        if fmt <= 2 {
            first[n..n + 3].copy_from_slice(&field.min(EXTENDED_TIMESTAMP).to_be_bytes()[1..]);
            n += 3;
        }
        if fmt <= 1 {
            first[n..n + 3].copy_from_slice(&length.to_be_bytes()[1..]);
            first[n + 3] = header.type_id;
            n += 4;
        }
        if fmt == 0 {
            first[n..n + 4].copy_from_slice(&header.stream_id.to_le_bytes());
            n += 4;
        }
        if extended {
            first[n..n + 4].copy_from_slice(&field.to_be_bytes());
            n += 4;
        }
        out.push_scratch(&first[..n]);

        let mut continuation = [0u8; MAX_CONTINUATION_HEADER_LEN];
        let mut continuation_len = basic_header(3, csid, &mut continuation);
        if extended {
            continuation[continuation_len..continuation_len + 4]
                .copy_from_slice(&field.to_be_bytes());
            continuation_len += 4;
        }
        let mut chunker = Chunker {
            out,
            continuation,
            continuation_len,
            chunk_size,
            left: chunk_size,
        };
        match body {
            Body::Bytes(bytes) => chunker.scratch(bytes),
            Body::Parts(parts) => {
                for part in parts {
                    match *part {
                        Part::Inline { ref bytes, .. } => chunker.scratch(&bytes[..part.len()]),
                        Part::External { start, len } => chunker.external(start, len),
                    }
                }
            }
        }

        let state = SendState {
            csid,
            timestamp: header.timestamp,
            delta: if fmt == 0 { 0 } else { field },
            length,
            type_id: header.type_id,
            stream_id: header.stream_id,
            fmt,
        };
        match slot.and_then(|i| self.streams.get_mut(i)) {
            Some(entry) => *entry = state,
            None => self.streams.push(state),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtmp::chunk::testing::{body, bytes_of, cat, decode_all, header};
    use crate::rtmp::chunk::{ChunkReader, Message, Piece};

    #[test]
    fn fmt0_1_2_3_new_message() {
        let mut w = ChunkWriter::new();
        let first = bytes_of(&mut w, header(3, 1000, 20, 0), b"hello");
        assert_eq!(
            first,
            cat(&[
                &[0x03, 0x00, 0x03, 0xE8, 0x00, 0x00, 0x05, 20, 0, 0, 0, 0],
                b"hello"
            ])
        );
        // Same stream id, other length: fmt 1 with delta 10.
        let second = bytes_of(&mut w, header(3, 1010, 20, 0), b"abc");
        assert_eq!(
            second,
            cat(&[&[0x43, 0x00, 0x00, 10, 0x00, 0x00, 0x03, 20], b"abc"])
        );
        // Only the delta differs: fmt 2.
        let third = bytes_of(&mut w, header(3, 1030, 20, 0), b"def");
        assert_eq!(third, cat(&[&[0x83, 0x00, 0x00, 20], b"def"]));
        // Everything repeats, previous header fmt 2: fmt 3.
        let fourth = bytes_of(&mut w, header(3, 1050, 20, 0), b"ghi");
        assert_eq!(fourth, cat(&[&[0xC3], b"ghi"]));
        let fifth = bytes_of(&mut w, header(3, 1070, 20, 0), b"jkl");
        assert_eq!(fifth, cat(&[&[0xC3], b"jkl"]));
        // Type differs: fmt 1.
        let sixth = bytes_of(&mut w, header(3, 1090, 18, 0), b"jkl");
        assert_eq!(
            sixth,
            cat(&[&[0x43, 0x00, 0x00, 20, 0x00, 0x00, 0x03, 18], b"jkl"])
        );
        // Stream id differs: fmt 0.
        let seventh = bytes_of(&mut w, header(3, 1090, 18, 1), b"jkl");
        assert_eq!(
            seventh,
            cat(&[
                &[0x03, 0x00, 0x04, 0x42, 0x00, 0x00, 0x03, 18, 1, 0, 0, 0],
                b"jkl"
            ])
        );
    }

    #[test]
    fn never_fmt3_right_after_fmt0() {
        let mut w = ChunkWriter::new();
        let a = bytes_of(&mut w, header(4, 0, 8, 1), b"aa");
        assert_eq!(a[0], 0x04);
        // Identical message, delta 0: the implied delta after fmt 0 is ambiguous, so fmt 2.
        let b = bytes_of(&mut w, header(4, 0, 8, 1), b"bb");
        assert_eq!(b, cat(&[&[0x84, 0, 0, 0], b"bb"]));
        let c = bytes_of(&mut w, header(4, 0, 8, 1), b"cc");
        assert_eq!(c, cat(&[&[0xC4], b"cc"]));
    }

    #[test]
    fn spec_example_2_continuation_chunks() {
        let mut w = ChunkWriter::new();
        let data = body(307);
        let out = bytes_of(&mut w, header(4, 1000, 9, 12346), &data);
        let expected = cat(&[
            &[
                0x04, 0x00, 0x03, 0xE8, 0x00, 0x01, 0x33, 9, 0x3A, 0x30, 0, 0,
            ],
            &data[..128],
            &[0xC4],
            &data[128..256],
            &[0xC4],
            &data[256..],
        ]);
        assert_eq!(out, expected);
    }

    #[test]
    fn spec_example_1_audio() {
        let mut w = ChunkWriter::new();
        let data = body(32);
        let chunks: Vec<Vec<u8>> = [1000, 1020, 1040, 1060]
            .iter()
            .map(|&ts| bytes_of(&mut w, header(3, ts, 8, 12345), &data))
            .collect();
        assert_eq!(chunks[0].len(), 44);
        assert_eq!(chunks[1][..4], [0x83, 0, 0, 20]);
        assert_eq!(chunks[1].len(), 36);
        // The spec's table uses fmt 3 for #3 after fmt 2 for #2.
        assert_eq!(chunks[2][0], 0xC3);
        assert_eq!(chunks[2].len(), 33);
        assert_eq!(chunks[3].len(), 33);
    }

    #[test]
    fn basic_header_sizes() {
        let cases: [(u32, &[u8], &[u8]); 7] = [
            (2, &[0x02], &[0xC2]),
            (63, &[0x3F], &[0xFF]),
            (64, &[0x00, 0x00], &[0xC0, 0x00]),
            (319, &[0x00, 0xFF], &[0xC0, 0xFF]),
            (320, &[0x01, 0x00, 0x01], &[0xC1, 0x00, 0x01]),
            (365, &[0x01, 0x2D, 0x01], &[0xC1, 0x2D, 0x01]),
            (65599, &[0x01, 0xFF, 0xFF], &[0xC1, 0xFF, 0xFF]),
        ];
        for (csid, first, continuation) in cases {
            let mut w = ChunkWriter::new();
            w.set_chunk_size(2);
            let out = bytes_of(&mut w, header(csid, 5, 9, 1), b"xyz");
            let expected = cat(&[
                first,
                &[0, 0, 5, 0, 0, 3, 9, 1, 0, 0, 0],
                b"xy",
                continuation,
                b"z",
            ]);
            assert_eq!(out, expected, "csid {csid}");
            let mut r = ChunkReader::with_chunk_size(1000, 2);
            let messages = decode_all(&mut r, &out).unwrap();
            assert_eq!(
                messages,
                vec![Message {
                    header: header(csid, 5, 9, 1),
                    payload: b"xyz".to_vec()
                }]
            );
        }
    }

    #[test]
    fn extended_timestamp_fmt0_repeated_on_continuations() {
        let mut w = ChunkWriter::new();
        let data = body(300);
        let out = bytes_of(&mut w, header(3, 0x0100_0000, 9, 1), &data);
        let ext = [0x01, 0x00, 0x00, 0x00];
        let expected = cat(&[
            &[0x03, 0xFF, 0xFF, 0xFF, 0x00, 0x01, 0x2C, 9, 1, 0, 0, 0],
            &ext,
            &data[..128],
            &[0xC3],
            &ext,
            &data[128..256],
            &[0xC3],
            &ext,
            &data[256..],
        ]);
        assert_eq!(out, expected);
        let mut r = ChunkReader::new(1000);
        let messages = decode_all(&mut r, &out).unwrap();
        assert_eq!(messages[0].header.timestamp, 0x0100_0000);
        assert_eq!(messages[0].payload, data);
    }

    #[test]
    fn extended_timestamp_threshold() {
        let mut w = ChunkWriter::new();
        let at = bytes_of(&mut w, header(3, 0xFF_FFFF, 9, 1), b"a");
        assert_eq!(
            at,
            cat(&[
                &[0x03, 0xFF, 0xFF, 0xFF, 0, 0, 1, 9, 1, 0, 0, 0, 0x00, 0xFF, 0xFF, 0xFF],
                b"a"
            ])
        );
        let mut w = ChunkWriter::new();
        let below = bytes_of(&mut w, header(3, 0xFF_FFFE, 9, 1), b"a");
        assert_eq!(
            below,
            cat(&[&[0x03, 0xFF, 0xFF, 0xFE, 0, 0, 1, 9, 1, 0, 0, 0], b"a"])
        );
    }

    #[test]
    fn extended_delta_fmt2_and_fmt3_new_message() {
        let mut w = ChunkWriter::new();
        let ext = [0x01, 0x00, 0x00, 0x00];
        let mut all = bytes_of(&mut w, header(6, 0, 9, 1), b"ab");
        // First a fmt 2 with the explicit (extended) delta...
        let b = bytes_of(&mut w, header(6, 0x0100_0000, 9, 1), b"cd");
        assert_eq!(b, cat(&[&[0x86, 0xFF, 0xFF, 0xFF], &ext, b"cd"]));
        // ...then a fmt 3 new message that repeats the extended delta.
        let mut w2 = w.clone();
        let c = bytes_of(&mut w, header(6, 0x0200_0000, 9, 1), b"ef");
        assert_eq!(c, cat(&[&[0xC6], &ext, b"ef"]));
        // With a small chunk size the continuation chunks of that fmt 3 message repeat it too.
        w2.set_chunk_size(1);
        let c2 = bytes_of(&mut w2, header(6, 0x0200_0000, 9, 1), b"ef");
        assert_eq!(c2, cat(&[&[0xC6], &ext, b"e", &[0xC6], &ext, b"f"]));
        all.extend_from_slice(&b);
        all.extend_from_slice(&c);
        let mut r = ChunkReader::new(1000);
        let messages = decode_all(&mut r, &all).unwrap();
        let stamps: Vec<u32> = messages.iter().map(|m| m.header.timestamp).collect();
        assert_eq!(stamps, [0, 0x0100_0000, 0x0200_0000]);
    }

    #[test]
    fn backwards_time_is_fmt0_and_wrap_is_forward() {
        let mut w = ChunkWriter::new();
        bytes_of(&mut w, header(3, 1000, 9, 1), b"a");
        let back = bytes_of(&mut w, header(3, 500, 9, 1), b"a");
        assert_eq!(back[0] >> 6, 0);
        // 2^31 ahead counts as backwards.
        bytes_of(&mut w, header(3, 0, 9, 1), b"a");
        let half = bytes_of(&mut w, header(3, 0x8000_0000, 9, 1), b"a");
        assert_eq!(half[0] >> 6, 0);
        // Just under 2^31 ahead is forward (with an extended delta).
        let fwd = bytes_of(&mut w, header(3, 0xFFFF_FFFF, 9, 1), b"a");
        assert_eq!(
            fwd,
            cat(&[&[0x83, 0xFF, 0xFF, 0xFF, 0x7F, 0xFF, 0xFF, 0xFF], b"a"])
        );
        // Wrapping past 2^32 is forward: fmt 2 with delta 0x11.
        let wrapped = bytes_of(&mut w, header(3, 0x10, 9, 1), b"a");
        assert_eq!(wrapped, cat(&[&[0x83, 0, 0, 0x11], b"a"]));
    }

    #[test]
    fn exactly_chunk_size_and_one_more() {
        let mut w = ChunkWriter::new();
        let data = body(129);
        let exact = bytes_of(&mut w, header(5, 0, 9, 1), &data[..128]);
        assert_eq!(exact.len(), 12 + 128);
        assert_eq!(&exact[12..], &data[..128]);
        let mut w = ChunkWriter::new();
        let more = bytes_of(&mut w, header(5, 0, 9, 1), &data);
        assert_eq!(more.len(), 12 + 128 + 1 + 1);
        assert_eq!(&more[12 + 128..], &[0xC5, data[128]]);
    }

    #[test]
    fn empty_body() {
        let mut w = ChunkWriter::new();
        let out = bytes_of(&mut w, header(3, 7, 20, 0), b"");
        assert_eq!(out, [0x03, 0, 0, 7, 0, 0, 0, 20, 0, 0, 0, 0]);
        let out = bytes_of(&mut w, header(3, 8, 20, 0), b"");
        assert_eq!(out, [0x83, 0, 0, 1]);
        let out = bytes_of(&mut w, header(3, 9, 20, 0), b"");
        assert_eq!(out, [0xC3]);
    }

    fn mixed_parts() -> (Vec<Part>, Vec<u8>) {
        let parts = vec![
            Part::inline(b"ABCDE"),
            Part::External { start: 2, len: 6 },
            Part::inline(b""),
            Part::External { start: 10, len: 0 },
            Part::inline(b"wxyz"),
            Part::External { start: 8, len: 3 },
        ];
        (parts, b"..012345678..".to_vec())
    }

    #[test]
    fn inline_and_external_parts_across_chunks() {
        let (parts, external) = mixed_parts();
        let mut w = ChunkWriter::new();
        w.set_chunk_size(4);
        let mut g = Gather::with_capacity(128, 32);
        w.write_message(&header(3, 1, 9, 1), &parts, &mut g);
        // Body: "ABCDE" "012345" "wxyz" "678" = 18 bytes in chunks of 4.
        let mut out = Vec::new();
        g.write_to_vec(&external, &mut out);
        let expected = cat(&[
            &[0x03, 0, 0, 1, 0, 0, 18, 9, 1, 0, 0, 0],
            b"ABCD",
            &[0xC3],
            b"E012",
            &[0xC3],
            b"345w",
            &[0xC3],
            b"xyz6",
            &[0xC3],
            b"78",
        ]);
        assert_eq!(out, expected);
        // Headers and inline bytes merge into scratch pieces; external ranges split at chunk edges.
        assert_eq!(
            g.pieces(),
            &[
                Piece::Scratch {
                    start: 0,
                    len: 12 + 4 + 1 + 1
                },
                Piece::External { start: 2, len: 3 },
                Piece::Scratch { start: 18, len: 1 },
                Piece::External { start: 5, len: 3 },
                Piece::Scratch {
                    start: 19,
                    len: 1 + 1 + 3
                },
                Piece::External { start: 8, len: 1 },
                Piece::Scratch { start: 24, len: 1 },
                Piece::External { start: 9, len: 2 },
            ]
        );
        assert_eq!(g.remaining(), expected.len());
        assert_eq!(g.external_end(), 11);
        assert!(g.has_external());
        let mut r = ChunkReader::with_chunk_size(100, 4);
        let messages = decode_all(&mut r, &out).unwrap();
        assert_eq!(messages[0].payload, b"ABCDE012345wxyz678");
    }

    // ----- writer errors and settings -----

    #[test]
    fn unsendable_messages_append_nothing() {
        let mut w = ChunkWriter::new();
        let mut g = Gather::with_capacity(64, 8);
        for csid in [0, 1, 65600, u32::MAX] {
            assert_eq!(
                w.try_write_message_bytes(&header(csid, 0, 9, 1), b"x", &mut g),
                Err(ChunkError::InvalidChunkStreamId { csid })
            );
        }
        let huge = [Part::External {
            start: 0,
            len: 0x100_0000,
        }];
        assert_eq!(
            w.try_write_message(&header(6, 0, 9, 1), &huge, &mut g),
            Err(ChunkError::MessageTooLarge {
                csid: 6,
                size: 0x100_0000,
                limit: MAX_MESSAGE_LEN
            })
        );
        let overflow = [Part::External {
            start: usize::MAX,
            len: 2,
        }];
        assert!(matches!(
            w.try_write_message(&header(6, 0, 9, 1), &overflow, &mut g),
            Err(ChunkError::ExternalOutOfRange { csid: 6, .. })
        ));
        let sum_overflow = [
            Part::External {
                start: 0,
                len: 0x8000_0000,
            },
            Part::External {
                start: 0,
                len: 0x8000_0000,
            },
        ];
        assert!(w
            .try_write_message(&header(6, 0, 9, 1), &sum_overflow, &mut g)
            .is_err());
        w.write_message(&header(6, 0, 9, 1), &huge, &mut g);
        assert!(g.is_empty() && g.pieces().is_empty());
        // The state did not change: the next message on chunk stream 6 is still fmt 0.
        w.write_message_bytes(&header(6, 0, 9, 1), b"x", &mut g);
        let mut v = Vec::new();
        g.write_to_vec(&[], &mut v);
        assert_eq!(v[0], 0x06);
        assert!(ChunkError::InvalidChunkStreamId { csid: 1 }
            .to_string()
            .contains("chunk stream 1"));
    }

    #[test]
    fn chunk_size_is_clamped_and_reset() {
        let mut w = ChunkWriter::new();
        assert_eq!(w.chunk_size(), DEFAULT_CHUNK_SIZE);
        w.set_chunk_size(0);
        assert_eq!(w.chunk_size(), 1);
        w.set_chunk_size(u32::MAX);
        assert_eq!(w.chunk_size(), MAX_CHUNK_SIZE);
        w.set_chunk_size(4096);
        bytes_of(&mut w, header(3, 0, 9, 1), b"a");
        w.reset();
        assert_eq!(w.chunk_size(), DEFAULT_CHUNK_SIZE);
        assert_eq!(bytes_of(&mut w, header(3, 0, 9, 1), b"a")[0], 0x03);
    }

    /// A Gather reserved with `max_wire_len` detaches its message, however much of it the socket
    /// took, without growing: chunk sizes, tiny and large parts, extended timestamps.
    #[test]
    fn scratch_reserved_with_max_wire_len_holds_a_detached_message() {
        let external: Vec<u8> = (0..=255u8).cycle().take(200_000).collect();
        // Many 1-byte NAL units (the most inline bytes per payload byte), and one large one.
        let mut tiny = vec![Part::inline(&[0x17, 1, 0, 0, 0])];
        for i in 0..2000 {
            tiny.push(Part::inline(&1u32.to_be_bytes()));
            tiny.push(Part::external(4 * i, 1));
        }
        let large = [
            Part::inline(&[0x17, 1, 0, 0, 0]),
            Part::inline(&190_000u32.to_be_bytes()),
            Part::external(7, 190_000),
        ];
        for parts in [&tiny[..], &large[..]] {
            let body_len: usize = parts.iter().map(Part::len).sum();
            for chunk_size in [128, 1000, 4096, 65_536] {
                for timestamp in [40, 0xFF_FFFF, 0x7FFF_FFFF] {
                    for written in [0, 1, 13, body_len / 2, body_len] {
                        let mut writer = ChunkWriter::new();
                        writer.set_chunk_size(chunk_size);
                        let mut gather = Gather::with_capacity(0, 8192);
                        gather.reserve_scratch(max_wire_len(body_len, chunk_size));
                        let reserved = gather.capacity().0;
                        let header = header(6, timestamp, 9, 1);
                        writer.write_message(&header, parts, &mut gather);
                        assert!(gather.remaining() <= max_wire_len(body_len, chunk_size));
                        gather.advance(written);
                        gather.detach_external(&external);
                        assert_eq!(
                            gather.capacity().0,
                            reserved,
                            "{body_len}-byte body at chunk size {chunk_size}, timestamp \
                             {timestamp}, {written} bytes written: scratch grew"
                        );
                    }
                }
            }
        }
    }
}
