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
//! boundaries. The driver fills a stack array of [`IoSlice`]s with [`Gather::io_slices`], hands
//! them to one vectored write, and reports progress with [`Gather::advance`]; when everything is
//! written the Gather clears itself and keeps its capacity. This is the h2 model (a header buffer
//! chained with an uncopied payload) combined with smoltcp's (headers emitted into preallocated
//! storage).
//!
//! # Reading: check, then parse
//!
//! [`ChunkReader::decode`] consumes exactly one chunk when the input starts with a complete one,
//! and otherwise consumes nothing and changes nothing, so the caller can keep unparsed bytes in
//! its own buffer and call again when more arrive. It applies Set Chunk Size and Abort itself.
//! It follows the specification where servers differ: a fmt 3 chunk that starts a new message
//! after a fmt 0 header adds the fmt 0 timestamp as its delta (5.3.1.2.4), and after a header
//! with an extended timestamp every fmt 3 chunk of that chunk stream carries the 4-byte field
//! (5.3.1.3; FFmpeg and this writer do so). A new header (fmt 0, 1 or 2) in the middle of a
//! message is an error rather than an implicit abort.
//!
//! # Invariants
//!
//! - Writer, steady state: once the Gather's `scratch` and `pieces` and the writer's per chunk
//!   stream table have reached their working sizes, `write_message`, `io_slices`, `advance` and
//!   the automatic reset allocate nothing. No temporary `Vec` is ever built.
//! - Writer, header choice (as FFmpeg does): fmt 0 for the first message of a chunk stream, on a
//!   change of message stream id and when the timestamp goes backwards in serial-number arithmetic
//!   (`ts.wrapping_sub(prev) >= 2^31`); fmt 1 when length or type change; fmt 2 when only the delta
//!   changes; fmt 3 for a new message only when everything, delta included, repeats AND the
//!   previous header of that chunk stream carried an explicit delta (fmt 1, 2 or 3): the writer
//!   never relies on the delta implied by a fmt 0 header, which servers disagree about.
//!   Continuation chunks are fmt 3 and repeat the extended timestamp field when the first chunk
//!   had one.
//! - Writer, all or nothing: a message that cannot be represented (chunk stream id outside
//!   2..=65599, body longer than the 24-bit length field, external range beyond 32-bit offsets)
//!   appends nothing and leaves the writer's state unchanged.
//! - Gather: `written <= total`; the piece under the write cursor always has unwritten bytes; no
//!   piece is empty; scratch pieces lie inside `scratch`; all offsets fit in `u32`.
//! - Reader: never panics, whatever the input; all arithmetic on values from the peer is checked,
//!   saturating or wrapping (timestamps). Memory is bounded: a payload grows only as its chunks
//!   arrive, a declared length above the limit is refused before any byte is buffered, at most
//!   [`MAX_CHUNK_STREAMS`] chunk streams are tracked and the bytes of unfinished messages across
//!   all chunk streams are capped at twice the message limit.
//! - Nothing here reads a clock or touches a socket: timestamps are values the caller passes in.

use std::fmt;
use std::io::IoSlice;

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

/// How many chunk streams a [`ChunkReader`] tracks at most; a server that opens more is refused,
/// so that it cannot make us grow memory without bound.
pub const MAX_CHUNK_STREAMS: usize = 64;

/// The longest chunk header: 3-byte basic header, 11-byte type 0 message header and the 4-byte
/// extended timestamp.
pub const MAX_CHUNK_HEADER_LEN: usize = 3 + 11 + 4;

/// The most bytes a [`Part::Inline`] holds.
pub const MAX_INLINE_LEN: usize = 8;

/// The 24-bit timestamp value that announces an extended timestamp field.
const EXTENDED_TIMESTAMP: u32 = 0xFF_FFFF;

/// The longest fmt 3 (continuation) header: 3-byte basic header and the extended timestamp.
const MAX_CONTINUATION_HEADER_LEN: usize = 3 + 4;

/// Message type of Set Chunk Size (5.4.1).
const TYPE_SET_CHUNK_SIZE: u8 = 1;

/// Message type of Abort Message (5.4.2).
const TYPE_ABORT: u8 = 2;

/// `u32` to `usize`, lossless (see the assertion above).
#[inline]
fn to_usize(value: u32) -> usize {
    value as usize
}

// ---------------------------------------------------------------------------------------------
// Gather
// ---------------------------------------------------------------------------------------------

/// Where one gathered piece of outgoing bytes lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Piece {
    /// `scratch[start..start + len]` of the [`Gather`]'s own storage.
    Scratch {
        /// Offset in the Gather's scratch storage.
        start: u32,
        /// Number of bytes; never 0 inside a Gather.
        len: u32,
    },
    /// `external[start..start + len]` of the payload buffer the caller passes to [`Gather::io_slices`].
    External {
        /// Offset in the caller's payload buffer.
        start: u32,
        /// Number of bytes; never 0 inside a Gather.
        len: u32,
    },
}

impl Piece {
    /// Number of bytes the piece stands for.
    pub fn len(&self) -> usize {
        match *self {
            Piece::Scratch { len, .. } | Piece::External { len, .. } => to_usize(len),
        }
    }

    /// Whether the piece stands for no bytes (never true for a piece inside a [`Gather`]).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Outgoing bytes ready for a vectored write: owned scratch bytes (chunk headers, small bodies)
/// interleaved with ranges of an external payload buffer that is never copied.
///
/// Usage: the writer appends messages; the driver loops `io_slices` → `writev` → `advance(n)`
/// until [`is_empty`](Self::is_empty). External pieces all refer to ONE buffer, the one passed to
/// `io_slices`: do not append a message that refers to another buffer while
/// [`has_external`](Self::has_external) is true. Storage is released only when everything has been
/// written (the Gather then resets itself, keeping its capacity), so a Gather that is never fully
/// drained keeps growing.
#[derive(Clone, Debug, Default)]
pub struct Gather {
    /// Owned bytes: chunk headers, inline parts and copied bodies; allocated once, reused.
    scratch: Vec<u8>,
    /// The bytes to write, in order; allocated once, reused.
    pieces: Vec<Piece>,
    /// Index of the first piece that still has unwritten bytes (the write cursor).
    cursor: usize,
    /// Bytes of `pieces[cursor]` already written; always less than that piece's length.
    offset: usize,
    /// Bytes of all pieces pushed since the last reset, so `remaining` is O(1).
    total: usize,
    /// Bytes written (advanced) since the last reset.
    written: usize,
    /// One past the index of the last external piece (0: none), so `has_external` is O(1).
    external_until: usize,
    /// The largest `start + len` of the external pieces, so the driver can check its buffer.
    external_end: usize,
}

impl Gather {
    /// An empty Gather whose storage holds `scratch_bytes` bytes and `pieces` pieces before it
    /// has to grow. Size it for the largest frame: a frame of `L` bytes in `N` external parts at
    /// chunk size `C` needs about `2 * (L / C + N) + 2` pieces and `L / C * 7 + 18` plus its
    /// inline bytes of scratch (7 bytes per continuation header at most).
    pub fn with_capacity(scratch_bytes: usize, pieces: usize) -> Self {
        Gather {
            scratch: Vec::with_capacity(scratch_bytes),
            pieces: Vec::with_capacity(pieces),
            ..Gather::default()
        }
    }

    /// Whether nothing is left to write.
    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// Bytes left to write.
    pub fn remaining(&self) -> usize {
        self.total.saturating_sub(self.written)
    }

    /// Whether some unwritten piece refers to the external buffer (which must then stay alive and
    /// unchanged until this becomes false).
    pub fn has_external(&self) -> bool {
        self.external_until > self.cursor
    }

    /// The smallest external buffer length that covers every external piece pushed since the
    /// last reset: `io_slices` needs `external.len() >= external_end()`.
    pub fn external_end(&self) -> usize {
        self.external_end
    }

    /// The unwritten pieces, in order (the first may be partly written). Its length is the
    /// number of `IoSlice`s needed to write everything in one call.
    pub fn pieces(&self) -> &[Piece] {
        self.pieces.get(self.cursor..).unwrap_or(&[])
    }

    /// Bytes of scratch storage in use (headers and copied bodies since the last reset).
    pub fn scratch_len(&self) -> usize {
        self.scratch.len()
    }

    /// Current capacities of the scratch storage and the piece list, to size
    /// [`with_capacity`](Self::with_capacity) and to check that steady state does not grow them.
    pub fn capacity(&self) -> (usize, usize) {
        (self.scratch.capacity(), self.pieces.capacity())
    }

    /// Makes sure the scratch storage holds `bytes` bytes in all before it has to grow (it never
    /// shrinks). Reserve up front what [`detach_external`](Self::detach_external) may need: when
    /// the socket is first slow is up to the network, and a Vec that grows then allocates in a
    /// steady state that was supposed to be warm.
    pub fn reserve_scratch(&mut self, bytes: usize) {
        self.scratch
            .reserve_exact(bytes.saturating_sub(self.scratch.len()));
    }

    /// Drops everything, written or not, keeping the capacity (a new connection).
    pub fn clear(&mut self) {
        self.scratch.clear();
        self.pieces.clear();
        self.cursor = 0;
        self.offset = 0;
        self.total = 0;
        self.written = 0;
        self.external_until = 0;
        self.external_end = 0;
    }

    /// Appends bytes copied into scratch storage. Merges with the previous piece when it is a
    /// scratch piece that ends where these bytes start. Empty input is ignored.
    ///
    /// Scratch offsets are 32-bit: a push that would take scratch past 4 GiB is ignored (and
    /// asserted against in debug builds); [`ChunkWriter`] checks this before writing anything.
    pub fn push_scratch(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let start = self.scratch.len();
        let (Ok(start32), Ok(len32)) = (u32::try_from(start), u32::try_from(bytes.len())) else {
            debug_assert!(false, "Gather scratch beyond 4 GiB");
            return;
        };
        if start32.checked_add(len32).is_none() {
            debug_assert!(false, "Gather scratch beyond 4 GiB");
            return;
        }
        self.scratch.extend_from_slice(bytes);
        self.total = self.total.saturating_add(bytes.len());
        if let Some(Piece::Scratch { start: s, len: l }) = self.pieces.last_mut() {
            if s.checked_add(*l) == Some(start32) {
                // Cannot overflow: start32 + len32 was checked above.
                *l += len32;
                return;
            }
        }
        self.pieces.push(Piece::Scratch {
            start: start32,
            len: len32,
        });
    }

    /// Appends a reference to `external[start..start + len]` of the buffer later passed to
    /// [`io_slices`](Self::io_slices). Merges with the previous piece when it is an external piece
    /// that ends at `start`. `len` 0 is ignored.
    ///
    /// External offsets are 32-bit: a range that ends beyond `u32::MAX` is ignored (and asserted
    /// against in debug builds); [`ChunkWriter`] checks this before writing anything.
    pub fn push_external(&mut self, start: usize, len: usize) {
        if len == 0 {
            return;
        }
        let end = start.checked_add(len);
        let (Ok(start32), Ok(len32), Some(end)) = (u32::try_from(start), u32::try_from(len), end)
        else {
            debug_assert!(false, "external range beyond 32-bit offsets");
            return;
        };
        if u32::try_from(end).is_err() {
            debug_assert!(false, "external range beyond 32-bit offsets");
            return;
        }
        self.total = self.total.saturating_add(len);
        self.external_end = self.external_end.max(end);
        if let Some(Piece::External { start: s, len: l }) = self.pieces.last_mut() {
            if s.checked_add(*l) == Some(start32) {
                // Cannot overflow: start32 + len32 = end fits in u32 (checked above).
                *l += len32;
                self.external_until = self.pieces.len();
                return;
            }
        }
        self.pieces.push(Piece::External {
            start: start32,
            len: len32,
        });
        self.external_until = self.pieces.len();
    }

    /// The bytes of one piece, or `None` when an external range lies outside `external`.
    fn piece_bytes<'a>(&'a self, piece: &Piece, external: &'a [u8]) -> Option<&'a [u8]> {
        let (buffer, start, len) = match *piece {
            Piece::Scratch { start, len } => (self.scratch.as_slice(), start, len),
            Piece::External { start, len } => (external, start, len),
        };
        let start = to_usize(start);
        buffer.get(start..start.checked_add(to_usize(len))?)
    }

    /// Fills `out` with the unwritten bytes in order, from the write cursor; returns how many
    /// slices it filled (fewer than `out.len()` only when everything is included). Never
    /// allocates.
    ///
    /// `external` must be the buffer the external pieces refer to, at least
    /// [`external_end`](Self::external_end) bytes long. If it is shorter (a bug in the caller),
    /// the slices stop before the first piece that does not fit, so a short count then does not
    /// mean everything is included; nothing panics.
    pub fn io_slices<'a>(&'a self, external: &'a [u8], out: &mut [IoSlice<'a>]) -> usize {
        let mut filled = 0;
        let mut skip = self.offset;
        for piece in self.pieces() {
            let Some(slot) = out.get_mut(filled) else {
                break;
            };
            let Some(bytes) = self.piece_bytes(piece, external) else {
                break;
            };
            let bytes = bytes.get(skip..).unwrap_or(&[]);
            skip = 0;
            if !bytes.is_empty() {
                *slot = IoSlice::new(bytes);
                filled += 1;
            }
        }
        filled
    }

    /// Marks `n` bytes as written (`n` above [`remaining`](Self::remaining) counts as
    /// `remaining()`). When everything is written, clears the pieces and the scratch storage,
    /// keeping their capacity. Never allocates.
    pub fn advance(&mut self, n: usize) {
        let mut n = n.min(self.remaining());
        self.written += n;
        while n > 0 {
            let Some(piece) = self.pieces.get(self.cursor) else {
                break;
            };
            let left = piece.len().saturating_sub(self.offset);
            if n < left {
                self.offset += n;
                n = 0;
            } else {
                n -= left;
                self.cursor += 1;
                self.offset = 0;
            }
        }
        if self.written >= self.total {
            self.clear();
        }
    }

    /// Copies every unwritten external piece into scratch storage, so the external buffer may be
    /// released or reused while the rest is written. The driver calls this when a frame sent
    /// zero-copy could not be written at once and the source must move on: the copy is paid only
    /// under backpressure. Returns the bytes copied.
    ///
    /// Afterwards scratch holds every byte of the messages queued since the last reset (headers,
    /// inline parts, and each unwritten external piece whole, a written head included), so at
    /// most the sum of their [`max_wire_len`]s. Scratch grows (allocates) when that is more than
    /// its capacity: [`reserve_scratch`](Self::reserve_scratch) it for the largest message the
    /// caller may detach. How much is left to copy depends on how much the socket took, so
    /// without the reservation the first large remainder may come at any time, after any
    /// warm-up.
    pub fn detach_external(&mut self, external: &[u8]) -> usize {
        let mut copied = 0;
        let until = self.external_until.min(self.pieces.len());
        for index in self.cursor..until {
            let Piece::External { start, len } = self.pieces[index] else {
                continue;
            };
            let (from, count) = (to_usize(start), to_usize(len));
            let Some(bytes) = external.get(from..from.saturating_add(count)) else {
                debug_assert!(false, "detach_external with a short external buffer");
                continue;
            };
            let new_start = self.scratch.len();
            let Ok(new_start32) = u32::try_from(new_start) else {
                debug_assert!(false, "Gather scratch beyond 4 GiB");
                return copied;
            };
            // The whole piece is copied, even a written head of the cursor's piece, so the
            // offset into it stays valid.
            self.scratch.extend_from_slice(bytes);
            self.pieces[index] = Piece::Scratch {
                start: new_start32,
                len,
            };
            copied += count;
        }
        self.external_until = 0;
        self.external_end = 0;
        copied
    }

    /// Appends all unwritten bytes to `out` (tests and the TLS path). Stops, like
    /// [`io_slices`](Self::io_slices), before an external range that lies outside `external`.
    pub fn write_to_vec(&self, external: &[u8], out: &mut Vec<u8>) {
        out.reserve(self.remaining());
        let mut skip = self.offset;
        for piece in self.pieces() {
            let Some(bytes) = self.piece_bytes(piece, external) else {
                break;
            };
            out.extend_from_slice(bytes.get(skip..).unwrap_or(&[]));
            skip = 0;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Messages and parts
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

/// One part of a message body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// A few bytes held here (FLV tag header, NAL length prefix); copied into scratch storage.
    /// Only `bytes[..len]` counts; a `len` above 8 counts as 8.
    Inline {
        /// The bytes; only the first `len` are part of the body.
        bytes: [u8; MAX_INLINE_LEN],
        /// How many of `bytes` are used.
        len: u8,
    },
    /// `external[start..start + len]` of the caller's payload buffer; never copied.
    External {
        /// Offset in the payload buffer.
        start: usize,
        /// Number of bytes.
        len: usize,
    },
}

impl Part {
    /// An inline part holding `bytes`, which must be at most 8 bytes long. Longer input is a
    /// programming error (the callers pass fixed-size headers): it asserts in debug builds and
    /// keeps the first 8 bytes in release builds. [`Part::try_inline`] is the fallible form.
    pub fn inline(bytes: &[u8]) -> Part {
        debug_assert!(
            bytes.len() <= MAX_INLINE_LEN,
            "Part::inline takes at most {MAX_INLINE_LEN} bytes, got {}",
            bytes.len()
        );
        let len = bytes.len().min(MAX_INLINE_LEN);
        let mut out = [0u8; MAX_INLINE_LEN];
        out[..len].copy_from_slice(&bytes[..len]);
        Part::Inline {
            bytes: out,
            len: len as u8,
        }
    }

    /// An inline part holding `bytes`, or `None` when they are more than 8.
    pub fn try_inline(bytes: &[u8]) -> Option<Part> {
        (bytes.len() <= MAX_INLINE_LEN).then(|| Part::inline(bytes))
    }

    /// An external part: `len` bytes at `start` of the caller's payload buffer.
    pub const fn external(start: usize, len: usize) -> Part {
        Part::External { start, len }
    }

    /// Number of body bytes the part contributes.
    pub fn len(&self) -> usize {
        match *self {
            Part::Inline { len, .. } => usize::from(len).min(MAX_INLINE_LEN),
            Part::External { len, .. } => len,
        }
    }

    /// Whether the part contributes no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
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
    /// A chunk of type 1, 2 or 3 arrived on a chunk stream that never had a type 0 header, so
    /// the fields it leaves out are unknown.
    UnknownChunkStream {
        /// The chunk stream.
        csid: u32,
        /// The chunk type received.
        fmt: u8,
    },
    /// A chunk of type 0, 1 or 2 (a new message) arrived while a message on the same chunk
    /// stream was still incomplete.
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
    /// A protocol control message (Set Chunk Size or Abort) is shorter than its 4-byte body.
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
            ChunkError::UnknownChunkStream { csid, fmt } => write!(
                f,
                "chunk stream {csid}: chunk of type {fmt} without an earlier type 0 header"
            ),
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

// ---------------------------------------------------------------------------------------------
// Writer
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// Reader
// ---------------------------------------------------------------------------------------------

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
        let prev = slot.and_then(|i| self.streams.get(i));
        let prev = match prev {
            Some(prev) => Some(prev),
            None if fmt == 0 => None,
            None => return Err(ChunkError::UnknownChunkStream { csid, fmt }),
        };
        if let Some(p) = prev.filter(|p| p.in_progress && fmt < 3) {
            return Err(ChunkError::InterruptedMessage {
                csid,
                fmt,
                received: p.payload.len(),
                length: p.length,
            });
        }

        let field = be24(header);
        let has_extended = match prev {
            _ if fmt < 3 => field == EXTENDED_TIMESTAMP,
            Some(p) => p.extended,
            None => false,
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

        let continuing = prev.filter(|p| fmt == 3 && p.in_progress);
        let new_message = match (fmt, prev) {
            _ if continuing.is_some() => None,
            (0, _) => {
                let timestamp = extended.unwrap_or(field);
                Some(NewMessage {
                    timestamp,
                    delta: timestamp,
                    length: be24(&header[3..]),
                    type_id: header[6],
                    stream_id: u32::from_le_bytes([header[7], header[8], header[9], header[10]]),
                    extended: has_extended,
                })
            }
            (1 | 2, Some(p)) => {
                let delta = extended.unwrap_or(field);
                let (length, type_id) = if fmt == 1 {
                    (be24(&header[3..]), header[6])
                } else {
                    (p.length, p.type_id)
                };
                Some(NewMessage {
                    timestamp: p.timestamp.wrapping_add(delta),
                    delta,
                    length,
                    type_id,
                    stream_id: p.stream_id,
                    extended: has_extended,
                })
            }
            (_, Some(p)) => {
                let delta = extended.unwrap_or(p.delta);
                Some(NewMessage {
                    timestamp: p.timestamp.wrapping_add(delta),
                    delta,
                    length: p.length,
                    type_id: p.type_id,
                    stream_id: p.stream_id,
                    extended: p.extended,
                })
            }
            (_, None) => return Err(ChunkError::UnknownChunkStream { csid, fmt }),
        };

        let (length, received) = match (new_message, continuing) {
            (Some(m), _) => {
                if m.length > self.max_message_size {
                    return Err(ChunkError::MessageTooLarge {
                        csid,
                        size: m.length,
                        limit: self.max_message_size,
                    });
                }
                if slot.is_none() && self.streams.len() >= MAX_CHUNK_STREAMS {
                    return Err(ChunkError::TooManyChunkStreams {
                        csid,
                        limit: MAX_CHUNK_STREAMS,
                    });
                }
                (m.length, 0)
            }
            (None, Some(p)) => (p.length, p.payload.len()),
            (None, None) => return Err(ChunkError::UnknownChunkStream { csid, fmt }),
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
                self.streams.push(RecvStream {
                    csid,
                    timestamp: 0,
                    delta: 0,
                    length: 0,
                    type_id: 0,
                    stream_id: 0,
                    extended: false,
                    in_progress: false,
                    payload: Vec::new(),
                });
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
mod tests {
    use super::*;

    fn header(csid: u32, timestamp: u32, type_id: u8, stream_id: u32) -> MessageHeader {
        MessageHeader {
            chunk_stream_id: csid,
            timestamp,
            type_id,
            stream_id,
        }
    }

    /// Writes one message with a fresh Gather and returns its bytes.
    fn bytes_of(writer: &mut ChunkWriter, h: MessageHeader, body: &[u8]) -> Vec<u8> {
        let mut gather = Gather::with_capacity(64, 8);
        writer.write_message_bytes(&h, body, &mut gather);
        let mut out = Vec::new();
        gather.write_to_vec(&[], &mut out);
        out
    }

    fn cat(slices: &[&[u8]]) -> Vec<u8> {
        slices.concat()
    }

    /// Decodes everything, feeding the reader all of `bytes` at once.
    fn decode_all(reader: &mut ChunkReader, bytes: &[u8]) -> Result<Vec<Message>, ChunkError> {
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

    fn body(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + 3) as u8).collect()
    }

    // ----- writer vectors -----

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
            let mut r = ChunkReader::new(1000);
            r.chunk_size = 2;
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
        let mut r = ChunkReader::new(100);
        r.chunk_size = 4;
        let messages = decode_all(&mut r, &out).unwrap();
        assert_eq!(messages[0].payload, b"ABCDE012345wxyz678");
    }

    // ----- Gather -----

    /// A Gather with several messages of many pieces, and its bytes.
    fn many_pieces() -> (Gather, Vec<u8>, Vec<u8>) {
        let external = body(1000);
        let mut parts = Vec::new();
        for i in 0..20 {
            parts.push(Part::inline(&[i as u8; 4]));
            parts.push(Part::External {
                start: i * 40,
                len: 37,
            });
        }
        let mut w = ChunkWriter::new();
        w.set_chunk_size(50);
        let mut g = Gather::with_capacity(1024, 256);
        w.write_message(&header(6, 40, 9, 1), &parts, &mut g);
        w.write_message_bytes(&header(2, 0, 5, 0), &[0, 0, 0x10, 0], &mut g);
        w.write_message(&header(6, 80, 9, 1), &parts[3..9], &mut g);
        let mut flat = Vec::new();
        g.write_to_vec(&external, &mut flat);
        (g, external, flat)
    }

    #[test]
    fn advance_one_byte_at_a_time() {
        let (mut g, external, flat) = many_pieces();
        let mut out = Vec::new();
        while !g.is_empty() {
            let mut slots = [IoSlice::new(&[]); 4];
            let n = g.io_slices(&external, &mut slots);
            assert!(n > 0);
            out.push(slots[0][0]);
            g.advance(1);
            assert_eq!(g.remaining(), flat.len() - out.len());
        }
        assert_eq!(out, flat);
        assert!(!g.has_external());
        assert!(g.pieces().is_empty());
        assert_eq!(g.scratch_len(), 0);
    }

    #[test]
    fn io_slices_with_three_slots() {
        let (mut g, external, flat) = many_pieces();
        assert!(g.pieces().len() > 40);
        let (scratch_cap, pieces_cap) = g.capacity();
        let mut out = Vec::new();
        let mut step = 0;
        while !g.is_empty() {
            let mut slots = [IoSlice::new(&[]); 3];
            let n = g.io_slices(&external, &mut slots);
            let total: usize = slots[..n].iter().map(|s| s.len()).sum();
            if n < 3 {
                assert_eq!(
                    total,
                    g.remaining(),
                    "a short count means everything is included"
                );
            }
            // A partial write: all but a few bytes, at least one.
            let take = (total - (step % 5).min(total - 1)).max(1);
            let mut left = take;
            for s in &slots[..n] {
                let k = left.min(s.len());
                out.extend_from_slice(&s[..k]);
                left -= k;
            }
            g.advance(take);
            step += 1;
        }
        assert_eq!(out, flat);
        assert_eq!(
            g.capacity(),
            (scratch_cap, pieces_cap),
            "reset keeps the capacity"
        );
    }

    #[test]
    fn gather_state_transitions() {
        let mut g = Gather::with_capacity(16, 4);
        assert!(g.is_empty() && !g.has_external());
        g.push_scratch(b"ab");
        g.push_scratch(b"cd");
        assert_eq!(g.pieces(), &[Piece::Scratch { start: 0, len: 4 }]);
        g.push_external(10, 0);
        assert_eq!(g.pieces().len(), 1);
        g.push_external(10, 3);
        g.push_external(13, 2);
        assert_eq!(g.pieces()[1], Piece::External { start: 10, len: 5 });
        g.push_scratch(b"e");
        assert_eq!(g.remaining(), 10);
        assert!(g.has_external());
        let external = body(20);
        g.advance(4);
        assert!(g.has_external());
        g.advance(5);
        assert!(!g.has_external());
        let mut slots = [IoSlice::new(&[]); 2];
        assert_eq!(g.io_slices(&external, &mut slots), 1);
        assert_eq!(&*slots[0], b"e");
        // Advancing past the end is clamped and resets.
        g.advance(100);
        assert!(g.is_empty());
        assert_eq!(g.scratch_len(), 0);
        let mut slots = [IoSlice::new(&[]); 2];
        assert_eq!(g.io_slices(&external, &mut slots), 0);
    }

    #[test]
    fn short_external_buffer_does_not_panic() {
        let mut g = Gather::with_capacity(16, 4);
        g.push_scratch(b"hd");
        g.push_external(5, 10);
        g.push_scratch(b"tl");
        let mut slots = [IoSlice::new(&[]); 4];
        assert_eq!(g.io_slices(&[0; 8], &mut slots), 1);
        let mut v = Vec::new();
        g.write_to_vec(&[0; 8], &mut v);
        assert_eq!(v, b"hd");
    }

    #[test]
    fn steady_state_keeps_capacity() {
        let external = body(200_000);
        let mut parts = vec![Part::inline(&[0x17, 1, 0, 0, 0])];
        for i in 0..40 {
            parts.push(Part::inline(&[0, 0, 0x13, 0x88]));
            parts.push(Part::External {
                start: i * 5000,
                len: 5000,
            });
        }
        let mut w = ChunkWriter::new();
        w.set_chunk_size(4096);
        let mut g = Gather::with_capacity(0, 0);
        let mut caps = None;
        for frame in 0..5u32 {
            w.write_message(&header(6, frame * 40, 9, 1), &parts, &mut g);
            if frame == 1 {
                caps = Some(g.capacity());
            } else if frame > 1 {
                assert_eq!(Some(g.capacity()), caps);
            }
            while !g.is_empty() {
                let mut slots = [IoSlice::new(&[]); 64];
                let n = g.io_slices(&external, &mut slots);
                let total: usize = slots[..n].iter().map(|s| s.len()).sum();
                g.advance(total.min(65536));
            }
        }
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

    #[test]
    fn part_constructors() {
        assert_eq!(
            Part::inline(b"abc"),
            Part::Inline {
                bytes: [b'a', b'b', b'c', 0, 0, 0, 0, 0],
                len: 3
            }
        );
        assert_eq!(Part::try_inline(&[0; 9]), None);
        assert_eq!(Part::external(3, 4).len(), 4);
        assert_eq!(
            Part::Inline {
                bytes: [0; 8],
                len: 200
            }
            .len(),
            8
        );
        assert!(Part::inline(b"").is_empty());
    }

    // ----- reader -----

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
    fn reader_errors() {
        let err = |bytes: &[u8], limit: u32| {
            let mut r = ChunkReader::new(limit);
            decode_all(&mut r, bytes).unwrap_err()
        };
        for first in [0x43, 0x83, 0xC3] {
            let e = err(&[first, 0, 0, 0, 0, 0, 1, 9, b'x'], 100);
            assert_eq!(
                e,
                ChunkError::UnknownChunkStream {
                    csid: 3,
                    fmt: first >> 6
                }
            );
            assert!(e.to_string().contains("chunk stream 3"));
        }
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
        assert_eq!(
            err(&[0x02, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0], 100),
            ChunkError::TruncatedControl {
                csid: 2,
                type_id: 2,
                len: 0
            }
        );
        let mut interrupted = vec![0x03, 0, 0, 0, 0, 1, 0, 9, 0, 0, 0, 0];
        interrupted.extend_from_slice(&body(128));
        interrupted.extend_from_slice(&[0x83, 0, 0, 0]);
        assert_eq!(
            err(&interrupted, 1000),
            ChunkError::InterruptedMessage {
                csid: 3,
                fmt: 2,
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
    fn reader_error_messages_name_the_chunk_stream() {
        let errors = [
            ChunkError::UnknownChunkStream { csid: 9, fmt: 1 },
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

    #[test]
    fn detach_external_copies_the_unwritten_payload_and_keeps_the_bytes() {
        let external: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
        let mut writer = ChunkWriter::new();
        writer.set_chunk_size(4096);
        let header = MessageHeader {
            chunk_stream_id: 6,
            timestamp: 40,
            type_id: 9,
            stream_id: 1,
        };
        let parts = [
            Part::inline(&[0x17, 1, 0, 0, 0]),
            Part::External {
                start: 100,
                len: 9000,
            },
        ];
        for written in [0, 1, 17, 4100, 9000] {
            let mut gather = Gather::with_capacity(64, 16);
            writer.reset();
            writer.set_chunk_size(4096);
            writer.write_message(&header, &parts, &mut gather);
            let mut expected = Vec::new();
            gather.write_to_vec(&external, &mut expected);
            gather.advance(written);
            let copied = gather.detach_external(&external);
            assert!(!gather.has_external());
            assert!(copied <= 9000 && copied + written >= 9000 - 4096);
            // The rest now comes from scratch alone: any buffer (even empty) will do.
            let mut rest = Vec::new();
            gather.write_to_vec(&[], &mut rest);
            assert_eq!(rest, expected[written..], "after writing {written} bytes");
            gather.advance(rest.len());
            assert!(gather.is_empty());
        }
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
