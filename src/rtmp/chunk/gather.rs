//! The outgoing side's description of bytes: [`Part`], one piece of a message body as the caller
//! hands it to the writer (a few inline bytes, or a range of the caller's payload buffer), and
//! [`Gather`], the chunked bytes waiting for the socket: chunk headers and inline parts copied into
//! its scratch storage, interleaved with [`Piece::External`] ranges of the payload buffer that
//! are never copied. The driver loops [`Gather::io_slices`] -> `writev` -> [`Gather::advance`].
//!
//! # Invariants
//!
//! - Gather: `written <= total`; the piece under the write cursor always has unwritten bytes; no
//!   piece is empty; scratch pieces lie inside `scratch`; all offsets fit in `u32`.
//! - Steady state: once `scratch` and `pieces` have reached their working sizes, pushing,
//!   `io_slices`, `advance` and the automatic reset allocate nothing. No temporary `Vec` is ever
//!   built. Only [`Gather::detach_external`] (under backpressure) grows scratch, up to the
//!   largest frame detached.
//! - A caller's mistake (a short external buffer, an out-of-range push, an inline part over 8
//!   bytes) panics nothing in release builds: the bytes stop early, or the push is ignored or
//!   truncated; debug builds assert against it.

use std::io::IoSlice;

use super::to_usize;

/// The most bytes a [`Part::Inline`] holds.
pub const MAX_INLINE_LEN: usize = 8;

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
    /// asserted against in debug builds); [`ChunkWriter`](super::ChunkWriter) checks this before
    /// writing anything.
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
    /// against in debug builds); [`ChunkWriter`](super::ChunkWriter) checks this before writing
    /// anything.
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
    /// most the sum of their [`max_wire_len`](super::max_wire_len)s. Scratch grows (allocates)
    /// when that is more than its capacity: [`reserve_scratch`](Self::reserve_scratch) it for the
    /// largest message the caller may detach. How much is left to copy depends on how much the
    /// socket took, so without the reservation the first large remainder may come at any time,
    /// after any warm-up.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtmp::chunk::testing::{body, header};
    use crate::rtmp::chunk::{ChunkWriter, MessageHeader};

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
}
