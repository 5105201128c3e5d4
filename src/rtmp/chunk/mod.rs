//! The RTMP chunk stream (RTMP 1.0 section 5.3, with the two protocol control messages of 5.4 that
//! change how chunks are framed: Set Chunk Size and Abort), sans-IO.
//!
//! # Writing: zero copy, no allocation in steady state
//!
//! A message body is described as a list of [`Part`]s: small inline byte strings (the FLV tag
//! header, NAL length prefixes) and external ranges of a payload buffer the caller owns (the NAL
//! units, where the camera or the file reader put them). [`ChunkWriter::write_message`] turns one
//! message into chunks inside a [`Gather`]: chunk headers and inline parts are appended to the
//! Gather's scratch storage, external parts become [`Piece::External`] ranges split at chunk
//! boundaries. The driver fills a stack array of [`IoSlice`](std::io::IoSlice)s with
//! [`Gather::io_slices`], hands them to one vectored write, and reports progress with
//! [`Gather::advance`]; when everything is written the Gather clears itself and keeps its
//! capacity. This is the h2 model (a header buffer chained with an uncopied payload) combined with
//! smoltcp's (headers emitted into preallocated storage).
//!
//! # Reading: check, then parse
//!
//! [`ChunkReader::decode`] consumes exactly one chunk when the input starts with a complete one,
//! and otherwise consumes nothing and changes nothing, so the caller can keep unparsed bytes in
//! its own buffer and call again when more arrive. It applies Set Chunk Size and Abort itself.
//! It follows the specification where servers differ: a fmt 3 chunk that starts a new message
//! after a fmt 0 header adds the fmt 0 timestamp as its delta (5.3.1.2.4), and after a header
//! with an extended timestamp every fmt 3 chunk of that chunk stream carries the 4-byte field
//! (5.3.1.3; FFmpeg and this writer do so). A header of type 0, 1 or 2 in the middle of a
//! message continues it if it repeats the message's length (as in FFmpeg) and is otherwise an
//! error rather than an implicit abort. Where FFmpeg and librtmp accept more than
//! the specification and it harms nothing, so does the reader (`reader.rs` lists what): a chunk
//! stream may start with a header of any type, the fields no header has given reading as zero.
//!
//! # Files
//!
//! - this one: what both directions share: the protocol's limits, [`MessageHeader`],
//!   [`Message`] and [`ChunkError`];
//! - `gather.rs`: [`Part`] (a message body as the caller describes it) and [`Gather`] (the
//!   outgoing bytes, owned and referenced, and the `IoSlice`s for one vectored write);
//! - `writer.rs`: [`ChunkWriter`], messages into chunks, choosing each header;
//! - `reader.rs`: [`ChunkReader`], the peer's chunks into messages, check then parse.
//!
//! Each file states the invariants of its part.
//!
//! # Invariants
//!
//! - Offsets inside a [`Gather`] are `u32`; every `u32` to `usize` conversion is lossless (asserted
//!   at compile time below).
//! - Nothing here reads a clock or touches a socket: timestamps are values the caller passes in.

use std::fmt;

mod gather;
mod reader;
mod writer;

pub use gather::{Gather, Part, Piece, MAX_INLINE_LEN};
pub use reader::{ChunkReader, MAX_CHUNK_STREAMS};
pub use writer::{max_wire_len, ChunkWriter};

// Offsets are `u32` in `Piece` and `usize` in the API: conversions from `u32` to `usize` below are
// lossless on every target this crate supports.
const _: () = assert!(usize::BITS >= 32);

/// The chunk size both sides assume until a Set Chunk Size message says otherwise.
pub const DEFAULT_CHUNK_SIZE: u32 = 128;

/// The largest chunk size RTMP allows (31 bits; the top bit of Set Chunk Size must be 0).
pub const MAX_CHUNK_SIZE: u32 = 0x7FFF_FFFF;

/// The longest message body a chunk header can describe (the length field has 24 bits).
pub const MAX_MESSAGE_LEN: u32 = 0xFF_FFFF;

/// The smallest chunk stream id that can be sent (0 and 1 select the longer basic headers).
pub const MIN_CHUNK_STREAM_ID: u32 = 2;

/// The largest chunk stream id the 3-byte basic header can carry (65535 + 64).
pub const MAX_CHUNK_STREAM_ID: u32 = 65_599;

/// The longest chunk header: 3-byte basic header, 11-byte type 0 message header and the 4-byte
/// extended timestamp.
pub const MAX_CHUNK_HEADER_LEN: usize = 3 + 11 + 4;

/// The 24-bit timestamp value that announces an extended timestamp field.
const EXTENDED_TIMESTAMP: u32 = 0xFF_FFFF;

/// `u32` to `usize`, lossless (see the assertion above).
#[inline]
fn to_usize(value: u32) -> usize {
    value as usize
}

// ---------------------------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------------------------

/// The header fields of one RTMP message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MessageHeader {
    /// The chunk stream the message travels on (2..=65599 to send; 2 is for control messages).
    pub chunk_stream_id: u32,
    /// Absolute timestamp in milliseconds; wraps after 2^32 (49.7 days), compared as a serial
    /// number.
    pub timestamp: u32,
    /// Message type (1-6 protocol control, 8 audio, 9 video, 18 data, 20 command, ...).
    pub type_id: u8,
    /// Message stream id (0 for control and connection-level commands).
    pub stream_id: u32,
}

/// A complete message received from the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Its header; `timestamp` is absolute (deltas applied with wrapping arithmetic).
    pub header: MessageHeader,
    /// Its body.
    pub payload: Vec<u8>,
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// Why a chunk stream could not be read, or a message could not be written.
///
/// Reader errors are fatal for the connection: after one, the [`ChunkReader`] must not be used
/// again (its state may be half updated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkError {
    /// A chunk of type 1 or 0 with another length (a new message) arrived while a message on the
    /// same chunk stream was still incomplete.
    InterruptedMessage {
        /// The chunk stream.
        csid: u32,
        /// The chunk type received.
        fmt: u8,
        /// Bytes of the unfinished message received so far.
        received: usize,
        /// Its declared length.
        length: u32,
    },
    /// A message is longer than allowed: above the reader's limit, or (writing) above the 24
    /// bits of the length field.
    MessageTooLarge {
        /// The chunk stream.
        csid: u32,
        /// The message length (saturated to `u32::MAX`).
        size: u32,
        /// The limit it exceeds.
        limit: u32,
    },
    /// A Set Chunk Size message asked for 0 or set the reserved top bit.
    InvalidChunkSize(u32),
    /// A Set Chunk Size message is shorter than its 4-byte body (a short Abort aborts nothing).
    TruncatedControl {
        /// The chunk stream it arrived on.
        csid: u32,
        /// Its message type.
        type_id: u8,
        /// Its length.
        len: usize,
    },
    /// The peer opened more chunk streams than the reader tracks.
    TooManyChunkStreams {
        /// The chunk stream that would have been one too many.
        csid: u32,
        /// How many are tracked at most.
        limit: usize,
    },
    /// Unfinished messages across all chunk streams would hold more bytes than allowed.
    BufferLimit {
        /// The chunk stream whose chunk went over.
        csid: u32,
        /// Bytes that would be held.
        buffered: usize,
        /// The most allowed.
        limit: usize,
    },
    /// (Writing) the chunk stream id is outside 2..=65599.
    InvalidChunkStreamId {
        /// The chunk stream id asked for.
        csid: u32,
    },
    /// (Writing) an external part ends beyond the 32-bit offsets a [`Gather`] records.
    ExternalOutOfRange {
        /// The chunk stream.
        csid: u32,
        /// The part's start.
        start: usize,
        /// The part's length.
        len: usize,
    },
    /// (Writing) the Gather's scratch storage would pass 4 GiB: drain it first.
    GatherFull {
        /// The chunk stream.
        csid: u32,
    },
}

impl fmt::Display for ChunkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ChunkError::InterruptedMessage { csid, fmt, received, length } => write!(
                f,
                "chunk stream {csid}: chunk of type {fmt} starts a new message while {received} of \
                 {length} bytes of the previous one have arrived"
            ),
            ChunkError::MessageTooLarge { csid, size, limit } => write!(
                f,
                "chunk stream {csid}: message of {size} bytes exceeds the limit of {limit} bytes"
            ),
            ChunkError::InvalidChunkSize(size) => write!(
                f,
                "Set Chunk Size to {size} (0x{size:08x}): must be 1 to 2147483647 with the top bit clear"
            ),
            ChunkError::TruncatedControl { csid, type_id, len } => write!(
                f,
                "chunk stream {csid}: protocol control message of type {type_id} has {len} bytes, needs 4"
            ),
            ChunkError::TooManyChunkStreams { csid, limit } => write!(
                f,
                "chunk stream {csid}: the peer uses more than {limit} chunk streams"
            ),
            ChunkError::BufferLimit { csid, buffered, limit } => write!(
                f,
                "chunk stream {csid}: unfinished messages would hold {buffered} bytes, more than \
                 the limit of {limit}"
            ),
            ChunkError::InvalidChunkStreamId { csid } => write!(
                f,
                "chunk stream {csid}: not sendable, chunk stream ids are 2 to 65599"
            ),
            ChunkError::ExternalOutOfRange { csid, start, len } => write!(
                f,
                "chunk stream {csid}: external part of {len} bytes at {start} ends beyond 4 GiB"
            ),
            ChunkError::GatherFull { csid } => write!(
                f,
                "chunk stream {csid}: the output queue would pass 4 GiB of headers"
            ),
        }
    }
}

impl std::error::Error for ChunkError {}

/// Helpers the tests of every part share.
#[cfg(test)]
mod testing {
    use super::*;

    pub(super) fn header(csid: u32, timestamp: u32, type_id: u8, stream_id: u32) -> MessageHeader {
        MessageHeader {
            chunk_stream_id: csid,
            timestamp,
            type_id,
            stream_id,
        }
    }

    /// Writes one message with a fresh Gather and returns its bytes.
    pub(super) fn bytes_of(writer: &mut ChunkWriter, h: MessageHeader, body: &[u8]) -> Vec<u8> {
        let mut gather = Gather::with_capacity(64, 8);
        writer.write_message_bytes(&h, body, &mut gather);
        let mut out = Vec::new();
        gather.write_to_vec(&[], &mut out);
        out
    }

    pub(super) fn cat(slices: &[&[u8]]) -> Vec<u8> {
        slices.concat()
    }

    /// Decodes everything, feeding the reader all of `bytes` at once.
    pub(super) fn decode_all(
        reader: &mut ChunkReader,
        bytes: &[u8],
    ) -> Result<Vec<Message>, ChunkError> {
        let mut messages = Vec::new();
        let mut pos = 0;
        while pos < bytes.len() {
            let (used, message) = reader.decode(&bytes[pos..])?;
            assert!(used > 0, "stuck at {pos} of {}", bytes.len());
            pos += used;
            messages.extend(message);
        }
        Ok(messages)
    }

    pub(super) fn body(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + 3) as u8).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_error_messages_name_the_chunk_stream() {
        let errors = [
            ChunkError::InterruptedMessage {
                csid: 9,
                fmt: 0,
                received: 1,
                length: 2,
            },
            ChunkError::MessageTooLarge {
                csid: 9,
                size: 2,
                limit: 1,
            },
            ChunkError::TruncatedControl {
                csid: 9,
                type_id: 1,
                len: 0,
            },
            ChunkError::TooManyChunkStreams { csid: 9, limit: 64 },
            ChunkError::BufferLimit {
                csid: 9,
                buffered: 3,
                limit: 2,
            },
            ChunkError::InvalidChunkStreamId { csid: 9 },
            ChunkError::ExternalOutOfRange {
                csid: 9,
                start: 0,
                len: 1,
            },
            ChunkError::GatherFull { csid: 9 },
        ];
        for e in errors {
            assert!(e.to_string().starts_with("chunk stream 9:"), "{e}");
        }
        assert!(ChunkError::InvalidChunkSize(0)
            .to_string()
            .contains("Set Chunk Size"));
    }
}
