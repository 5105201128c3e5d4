//! Annex-B access-unit splitter: finds NAL units in an H.264 byte stream (ITU-T H.264 Annex B) and
//! groups them into access units (one coded picture each), by reference, without copying payloads.
//!
//! Two entry points:
//! - [`split_nals`] splits one complete buffer (for example one V4L2 buffer) into NAL units.
//! - [`AnnexBReader`] reads an unbounded stream (file, FIFO, stdin, a child's stdout) in pieces of
//!   any size and hands out complete [`AccessUnit`]s.
//!
//! Invariants:
//! - A NAL unit is the bytes between the end of its start code (`00 00 01`, or `00 00 00 01`) and the
//!   beginning of the next start code, with trailing zero bytes removed; it never contains a start code
//!   and never ends in `0x00`. Empty NAL units are dropped; nothing else is.
//! - Each input byte is examined once by the start-code scanner, whatever the read sizes: the scan
//!   position and the length of the current run of zero bytes survive between calls, so start codes
//!   split across reads are found and feeding a stream one byte at a time stays linear.
//! - Access-unit boundaries follow H.264 7.4.1.2.3, using `first_mb_in_slice == 0` (the first bit after
//!   the slice NAL header) to detect the first slice of a new primary picture. An access unit is
//!   handed out as soon as the first NAL unit of the next one is recognised, or at end of input.
//! - Memory is bounded by `max_access_unit` plus [`READ_SLACK`]; the buffer grows by doubling and is
//!   never shrunk, and the NAL lists are reused, so steady-state reading allocates nothing.
//! - No input can make this code panic: malformed streams produce odd access units, an oversized
//!   access unit produces [`AnnexBError::AccessUnitTooLarge`].

use std::fmt;

/// NAL unit type of a coded slice of a non-IDR picture.
pub const NAL_SLICE: u8 = 1;
/// NAL unit type of a coded slice of an IDR picture (a keyframe).
pub const NAL_IDR: u8 = 5;
/// NAL unit type of supplemental enhancement information.
pub const NAL_SEI: u8 = 6;
/// NAL unit type of a sequence parameter set.
pub const NAL_SPS: u8 = 7;
/// NAL unit type of a picture parameter set.
pub const NAL_PPS: u8 = 8;
/// NAL unit type of an access unit delimiter.
pub const NAL_AUD: u8 = 9;
/// NAL unit type of end of sequence.
pub const NAL_END_OF_SEQUENCE: u8 = 10;
/// NAL unit type of end of stream.
pub const NAL_END_OF_STREAM: u8 = 11;
/// NAL unit type of filler data.
pub const NAL_FILLER: u8 = 12;

/// Extra room above `max_access_unit` that the reader's buffer may use: besides the access unit it
/// holds the next start code, trailing zero bytes and the first bytes of the next NAL unit, which
/// are needed before the access unit can be declared complete.
pub const READ_SLACK: usize = 4096;

/// The buffer starts this large (or at the limit, if that is smaller).
const INITIAL_CAPACITY: usize = 64 * 1024;

/// `read_buf` grows the buffer (while it may) rather than offer less spare room than this.
const MIN_READ: usize = 4096;

/// Whether a NAL unit type is a coded slice (VCL NAL unit) of a primary or redundant picture.
pub fn is_vcl(nal_type: u8) -> bool {
    (NAL_SLICE..=NAL_IDR).contains(&nal_type)
}

/// One NAL unit inside an access unit: `data[start..start + len]`, without its start code, NAL header byte first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NalRef {
    /// Offset of the NAL header byte, relative to the buffer the unit was found in
    /// ([`AccessUnit::data`]).
    pub start: usize,
    /// Length in bytes, header included, trailing zero bytes excluded; never 0.
    pub len: usize,
    /// `nal_unit_type`, the low five bits of the header byte, kept so callers can filter without
    /// touching the payload.
    pub nal_type: u8,
}

/// A complete access unit (one picture) borrowed from the buffer it was found in.
///
/// From [`AnnexBReader`], `data` is the access unit's own byte range: it starts at the first NAL
/// unit's header byte and ends at the last NAL unit's last byte (start codes between NAL units are
/// included). When built over [`split_nals`] output, `data` is the whole buffer that was split.
/// Either way [`NalRef::start`] is relative to `data`.
#[derive(Clone, Copy, Debug)]
pub struct AccessUnit<'a> {
    /// The bytes the NAL references point into.
    pub data: &'a [u8],
    /// The NAL units in stream order.
    pub nals: &'a [NalRef],
}

impl<'a> AccessUnit<'a> {
    /// Bytes of `nals[index]`, header included; empty if `index` (or the reference) is out of range.
    pub fn nal(&self, index: usize) -> &'a [u8] {
        match self.nals.get(index) {
            Some(nal) => nal_slice(self.data, nal),
            None => &[],
        }
    }

    /// Every NAL unit with its bytes, in stream order.
    pub fn nal_bytes(&self) -> impl Iterator<Item = (NalRef, &'a [u8])> + Clone + 'a {
        let data = self.data;
        self.nals
            .iter()
            .map(move |nal| (*nal, nal_slice(data, nal)))
    }

    /// Bytes of the first NAL unit of type `nal_type`, if any (for example the SPS of a keyframe).
    pub fn first_of_type(&self, nal_type: u8) -> Option<&'a [u8]> {
        self.nal_bytes()
            .find(|(nal, _)| nal.nal_type == nal_type)
            .map(|(_, bytes)| bytes)
    }

    /// Whether the access unit contains a NAL unit of type 5 (a slice of an IDR picture).
    pub fn is_idr(&self) -> bool {
        self.nals.iter().any(|nal| nal.nal_type == NAL_IDR)
    }

    /// Whether the access unit contains a slice NAL unit (types 1..=5), i.e. carries a picture.
    pub fn has_vcl(&self) -> bool {
        self.nals.iter().any(|nal| is_vcl(nal.nal_type))
    }
}

/// `data[nal.start..nal.start + nal.len]`, or empty if that range is not inside `data`.
fn nal_slice<'a>(data: &'a [u8], nal: &NalRef) -> &'a [u8] {
    nal.start
        .checked_add(nal.len)
        .and_then(|end| data.get(nal.start..end))
        .unwrap_or(&[])
}

/// Appends a reference to `data[start..end]` to `out` unless it is empty.
fn push_nal(data: &[u8], start: usize, end: usize, out: &mut Vec<NalRef>) {
    if let Some(&header) = data.get(start..end).and_then(|nal| nal.first()) {
        out.push(NalRef {
            start,
            len: end - start,
            nal_type: header & 0x1f,
        });
    }
}

/// Splits a complete buffer (e.g. one V4L2 buffer holding one access unit) into NAL units, appending to `out`
/// (the caller clears and reuses it). Bytes before the first start code are ignored.
///
/// The references are relative to `data`; the last NAL unit ends at the end of `data` (minus trailing
/// zero bytes). No access-unit grouping is done: the caller knows what the buffer holds.
pub fn split_nals(data: &[u8], out: &mut Vec<NalRef>) {
    let mut zero_run = 0usize;
    let mut open_start: Option<usize> = None;
    let mut next = 0;
    while next < data.len() {
        if zero_run == 0 {
            next = skip_to_candidate(data, next);
            if next >= data.len() {
                break;
            }
        }
        let (index, byte) = (next, data[next]);
        next += 1;
        if byte == 0 {
            zero_run += 1;
            continue;
        }
        if byte == 1 && zero_run >= 2 {
            if let Some(start) = open_start {
                push_nal(data, start, index.saturating_sub(zero_run).max(start), out);
            }
            open_start = Some(index + 1);
        }
        zero_run = 0;
    }
    if let Some(start) = open_start {
        push_nal(
            data,
            start,
            data.len().saturating_sub(zero_run).max(start),
            out,
        );
    }
}

/// From `index`, where the byte before is not zero (or `index` is 0 and no zeros are carried in),
/// skips the bytes that cannot be part of a start code's end, three at a time as x264 and FFmpeg
/// do: if `data[i + 2]` is above 1, no start code (`00 00 01`) can end at `i`, `i + 1` or `i + 2`
/// (the first two would need a zero before `i`, the last a 1 at `i + 2`), and the last byte
/// skipped is non-zero again. Returns the first index that must be looked at byte by byte.
fn skip_to_candidate(data: &[u8], mut index: usize) -> usize {
    while let Some(&third) = data.get(index + 2) {
        if third <= 1 {
            return index;
        }
        index += 3;
    }
    index
}

/// From `index`, the first index of `data` at which a start code (`00 00 01`) may end, given that
/// the byte before `index` is not zero (or no zeros are carried in): the skipping scan
/// [`AnnexBReader`] uses, for scanners that keep their own state (the frame store's ring scanner).
pub fn skip_to_start_code_candidate(data: &[u8], index: usize) -> usize {
    skip_to_candidate(data, index)
}

/// Whether a NAL unit of type `nal_type` begins a new access unit (H.264 7.4.1.2.3), as
/// [`AnnexBReader`] decides it: an AUD always; SEI, SPS, PPS and types 14..=18 when the current
/// access unit already has a slice; a slice when the current one has a slice and its
/// `first_mb_in_slice` is 0 (`first_mb_is_zero`: the high bit of the byte after the header).
pub fn starts_access_unit(nal_type: u8, first_mb_is_zero: bool, current_has_vcl: bool) -> bool {
    match nal_type {
        NAL_AUD => true,
        NAL_SEI | NAL_SPS | NAL_PPS | 14..=18 => current_has_vcl,
        NAL_SLICE..=NAL_IDR => current_has_vcl && first_mb_is_zero,
        _ => false,
    }
}

/// Errors of [`AnnexBReader`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnnexBError {
    /// One access unit did not fit in the buffer; `limit` is the configured `max_access_unit`.
    /// The reader has dropped it and resynchronises at the next NAL unit that starts an access unit.
    AccessUnitTooLarge {
        /// The configured maximum access-unit size in bytes.
        limit: usize,
    },
}

impl fmt::Display for AnnexBError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AnnexBError::AccessUnitTooLarge { limit } => write!(
                f,
                "H.264 access unit larger than the limit of {limit} bytes (is the input an Annex-B H.264 stream?)"
            ),
        }
    }
}

impl std::error::Error for AnnexBError {}

/// What the bytes at the scan position belong to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OpenNal {
    /// No NAL unit: before the first start code, or inside a NAL unit dropped while
    /// resynchronising. Bytes scanned here are counted as skipped.
    Outside,
    /// A start code ended just before `start`; the NAL unit's header (and, for a slice, the next
    /// byte) has not been examined yet, so its access unit is not known. The scanner does not move
    /// past `start` until it is.
    Unclassified { start: usize },
    /// A NAL unit starting at `start` that belongs to the pending access unit.
    Kept { start: usize },
}

/// Where to put a NAL unit once its first bytes are known.
enum Placement {
    /// The data ended right after the start code: there is no NAL unit.
    Nothing,
    /// Dropped while resynchronising after an oversized access unit.
    Drop,
    /// Part of the pending access unit; `starts_access_unit` says whether it begins a new one.
    Keep { starts_access_unit: bool },
}

/// Incremental Annex-B reader over a byte stream (file, FIFO, stdin, child stdout).
///
/// Usage: loop { `read_buf`, read into it, `commit(n)`; then call `next_access_unit` until it
/// returns `None` }; at end of input call `finish` and drain `next_access_unit` once more.
/// Draining before the next `read_buf` matters: the buffer limit applies to everything not yet
/// handed out, so undrained complete access units count against it.
pub struct AnnexBReader {
    /// Storage; its length is the current capacity and `buf[filled..]` is spare room.
    buf: Vec<u8>,
    /// End of the committed bytes.
    filled: usize,
    /// The configured maximum access-unit size, reported in the error.
    max_access_unit: usize,
    /// Largest capacity the buffer may grow to: `max_access_unit + READ_SLACK`.
    capacity_limit: usize,
    /// Next byte the start-code scanner examines; bytes before it have been scanned once.
    scan_pos: usize,
    /// Number of consecutive `0x00` bytes just before `scan_pos` (since the last non-zero byte or
    /// start code): a `0x01` after two or more of them completes a start code, and the zeros are
    /// the start code's leading zeros and the previous NAL unit's trailing zero bytes.
    zero_run: usize,
    /// The NAL unit (or non-unit) the scan position is in.
    open: OpenNal,
    /// Set after an oversized access unit was dropped: NAL units are discarded until one that
    /// starts an access unit, so a partial picture is never handed out.
    resyncing: bool,
    /// Buffer offset of the pending access unit's first byte; meaningful while `pending` is not
    /// empty. Pending [`NalRef`]s are relative to it, so compaction only moves this one offset.
    au_start: usize,
    /// Completed NAL units of the access unit being gathered.
    pending: Vec<NalRef>,
    /// Whether `pending` holds a slice NAL unit: decides whether SPS, PPS, SEI or a slice with
    /// `first_mb_in_slice == 0` begins a new access unit.
    pending_has_vcl: bool,
    /// NAL units of the access unit last handed out (swapped with `pending` to avoid allocation).
    ready: Vec<NalRef>,
    /// Byte range of the access unit last handed out.
    ready_range: (usize, usize),
    /// `finish` was called: the end of the data ends the last NAL unit.
    finished: bool,
    /// Bytes not inside any kept NAL unit or start code (see [`AnnexBReader::skipped_bytes`]).
    skipped: u64,
    /// Total bytes committed.
    bytes_read: u64,
}

impl fmt::Debug for AnnexBReader {
    /// The counters and positions, not the buffered bytes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AnnexBReader")
            .field("capacity", &self.buf.len())
            .field("filled", &self.filled)
            .field("scan_pos", &self.scan_pos)
            .field("open", &self.open)
            .field("pending_nals", &self.pending.len())
            .field("resyncing", &self.resyncing)
            .field("finished", &self.finished)
            .field("skipped", &self.skipped)
            .field("bytes_read", &self.bytes_read)
            .finish()
    }
}

impl AnnexBReader {
    /// `max_access_unit` bounds memory: an access unit larger than this is an error.
    pub fn new(max_access_unit: usize) -> Self {
        let capacity_limit = max_access_unit.saturating_add(READ_SLACK);
        AnnexBReader {
            buf: vec![0; INITIAL_CAPACITY.min(capacity_limit)],
            filled: 0,
            max_access_unit,
            capacity_limit,
            scan_pos: 0,
            zero_run: 0,
            open: OpenNal::Outside,
            resyncing: false,
            au_start: 0,
            pending: Vec::new(),
            pending_has_vcl: false,
            ready: Vec::new(),
            ready_range: (0, 0),
            finished: false,
            skipped: 0,
            bytes_read: 0,
        }
    }

    /// Spare space to read into. First moves undelivered bytes to the front of the buffer (discarding the
    /// access unit last returned), grows the buffer (doubling, up to max_access_unit plus some slack) when it
    /// is full; Err(AnnexBError::AccessUnitTooLarge{..}) when a single access unit does not fit.
    ///
    /// The returned slice is never empty. After the error the oversized access unit has been
    /// dropped (counted in [`skipped_bytes`](Self::skipped_bytes)) and the next call succeeds.
    pub fn read_buf(&mut self) -> Result<&mut [u8], AnnexBError> {
        self.ready.clear();
        self.compact();
        let capacity = self.buf.len();
        if capacity - self.filled < MIN_READ && capacity < self.capacity_limit {
            let grown = capacity
                .saturating_mul(2)
                .max(INITIAL_CAPACITY)
                .min(self.capacity_limit);
            self.buf.resize(grown, 0);
        }
        if self.filled >= self.buf.len() {
            self.drop_oversized();
            return Err(AnnexBError::AccessUnitTooLarge {
                limit: self.max_access_unit,
            });
        }
        let filled = self.filled;
        Ok(&mut self.buf[filled..])
    }

    /// `n` bytes were written into the slice read_buf returned.
    ///
    /// `n` is clamped to the spare room, so a wrong count cannot corrupt the reader.
    pub fn commit(&mut self, n: usize) {
        let n = n.min(self.buf.len() - self.filled);
        self.filled += n;
        self.bytes_read = self.bytes_read.saturating_add(n as u64);
    }

    /// End of input: the last NAL ends at the end of the data, so the final access unit becomes available.
    pub fn finish(&mut self) {
        self.finished = true;
    }

    /// The next complete access unit, or None if more input is needed (or, after finish, none is left).
    /// Its bytes stay valid until the next call of read_buf or next_access_unit.
    ///
    /// [`AccessUnit::data`] is the access unit's own byte range (first NAL header byte to last NAL
    /// byte). Without access unit delimiters an access unit is complete only once the next one's
    /// first slice header arrives, so it is handed out one picture late; that is inherent in Annex B.
    pub fn next_access_unit(&mut self) -> Option<AccessUnit<'_>> {
        self.ready.clear();
        if !self.advance() {
            return None;
        }
        let (start, end) = self.ready_range;
        let data = self.buf.get(start..end)?;
        Some(AccessUnit {
            data,
            nals: &self.ready,
        })
    }

    /// Bytes skipped because they were not inside any NAL unit (garbage before the first start code).
    ///
    /// Also counts the bytes of an access unit dropped for being too large and of NAL units dropped
    /// while resynchronising after it. Start codes and zero bytes between NAL units are not counted.
    pub fn skipped_bytes(&self) -> u64 {
        self.skipped
    }

    /// Total bytes committed so far.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    /// Moves the bytes still needed to the front of the buffer. Needed are the pending access
    /// unit and the open NAL unit; bytes before the scan position outside any NAL unit are not.
    fn compact(&mut self) {
        let mut keep_from = self.scan_pos;
        match self.open {
            OpenNal::Outside => {}
            OpenNal::Unclassified { start } | OpenNal::Kept { start } => {
                keep_from = keep_from.min(start);
            }
        }
        if !self.pending.is_empty() {
            keep_from = keep_from.min(self.au_start);
        }
        let keep_from = keep_from.min(self.filled);
        if keep_from == 0 {
            return;
        }
        self.buf.copy_within(keep_from..self.filled, 0);
        self.filled -= keep_from;
        self.scan_pos = self.scan_pos.saturating_sub(keep_from);
        self.au_start = self.au_start.saturating_sub(keep_from);
        self.open = match self.open {
            OpenNal::Outside => OpenNal::Outside,
            OpenNal::Unclassified { start } => OpenNal::Unclassified {
                start: start.saturating_sub(keep_from),
            },
            OpenNal::Kept { start } => OpenNal::Kept {
                start: start.saturating_sub(keep_from),
            },
        };
        self.ready_range = (0, 0);
    }

    /// Drops everything buffered after an access unit outgrew the buffer, and starts
    /// resynchronising: NAL units are discarded until one that begins an access unit.
    fn drop_oversized(&mut self) {
        let unscanned = self.filled.saturating_sub(self.scan_pos);
        let dropped = if unscanned == 0 {
            // The trailing zeros may still be the start of the next start code: keep counting
            // them as a zero run and let the scanner decide.
            self.filled.saturating_sub(self.zero_run)
        } else {
            self.zero_run = 0;
            self.filled
        };
        self.skipped = self.skipped.saturating_add(dropped as u64);
        self.filled = 0;
        self.scan_pos = 0;
        self.au_start = 0;
        self.open = OpenNal::Outside;
        self.pending.clear();
        self.pending_has_vcl = false;
        self.ready.clear();
        self.ready_range = (0, 0);
        self.resyncing = true;
    }

    /// Scans forward until an access unit is complete (moved to `ready`, returns true) or the data
    /// runs out (returns false).
    fn advance(&mut self) -> bool {
        loop {
            if let OpenNal::Unclassified { start } = self.open {
                match self.classify(start) {
                    None => return false,
                    Some(Placement::Nothing) | Some(Placement::Drop) => {
                        self.open = OpenNal::Outside;
                    }
                    Some(Placement::Keep { starts_access_unit }) => {
                        self.open = OpenNal::Kept { start };
                        if starts_access_unit && !self.pending.is_empty() {
                            self.deliver_pending();
                            return true;
                        }
                    }
                }
            }
            if self.scan_pos >= self.filled {
                return self.finished && self.flush_at_end();
            }
            self.scan();
        }
    }

    /// Decides where the NAL unit starting at `start` goes, or None if more bytes are needed.
    fn classify(&mut self, start: usize) -> Option<Placement> {
        let available = self.buf.get(start..self.filled).unwrap_or(&[]);
        let Some(&header) = available.first() else {
            return if self.finished {
                Some(Placement::Nothing)
            } else {
                None
            };
        };
        let nal_type = header & 0x1f;
        // After a dropped access unit, behave as if the current access unit had a picture, so
        // that only a NAL unit that can begin an access unit ends the resynchronisation.
        let current_has_vcl = self.resyncing || self.pending_has_vcl;
        let starts_access_unit = match nal_type {
            NAL_AUD => true,
            NAL_SEI | NAL_SPS | NAL_PPS | 14..=18 => current_has_vcl,
            NAL_SLICE..=NAL_IDR => {
                // first_mb_in_slice is ue(v) and its first bit is 1 exactly when it is 0. A slice
                // too short to have that bit is treated as a continuation.
                let first_mb_is_zero = match available.get(1) {
                    Some(&byte) => byte & 0x80 != 0,
                    None if self.finished => false,
                    None => return None,
                };
                current_has_vcl && first_mb_is_zero
            }
            _ => false,
        };
        if self.resyncing {
            if !starts_access_unit {
                return Some(Placement::Drop);
            }
            self.resyncing = false;
            return Some(Placement::Keep {
                starts_access_unit: false,
            });
        }
        Some(Placement::Keep { starts_access_unit })
    }

    /// Scans from `scan_pos` up to and including the next start code (completing the open NAL
    /// unit there and opening an unclassified one after it) or to the end of the data.
    fn scan(&mut self) {
        let counting_skipped = self.open == OpenNal::Outside;
        let mut zero_run = self.zero_run;
        let mut skipped = 0usize;
        let mut pos = self.scan_pos;
        let mut start_code_at = None;
        let data = self.buf.get(pos..self.filled).unwrap_or(&[]);
        let mut index = 0;
        while index < data.len() {
            // Inside a NAL unit, after a non-zero byte, most bytes cannot end a start code.
            if !counting_skipped && zero_run == 0 {
                index = skip_to_candidate(data, index);
                pos = self.scan_pos + index;
                if index >= data.len() {
                    break;
                }
            }
            let byte = data[index];
            index += 1;
            pos += 1;
            if byte == 0 {
                zero_run = zero_run.saturating_add(1);
                continue;
            }
            if byte == 1 && zero_run >= 2 {
                start_code_at = Some(pos - 1);
                break;
            }
            if counting_skipped {
                skipped = skipped.saturating_add(zero_run).saturating_add(1);
            }
            zero_run = 0;
        }
        self.scan_pos = pos;
        self.skipped = self.skipped.saturating_add(skipped as u64);
        match start_code_at {
            None => self.zero_run = zero_run,
            Some(one_at) => {
                if let OpenNal::Kept { start } = self.open {
                    let end = one_at.saturating_sub(zero_run).max(start);
                    self.complete_nal(start, end);
                }
                self.zero_run = 0;
                self.open = OpenNal::Unclassified { start: pos };
            }
        }
    }

    /// At end of input with everything scanned: ends the open NAL unit at the end of the data
    /// and hands out the pending access unit, if any.
    fn flush_at_end(&mut self) -> bool {
        match self.open {
            OpenNal::Kept { start } => {
                let end = self.filled.saturating_sub(self.zero_run).max(start);
                self.complete_nal(start, end);
            }
            OpenNal::Outside => {
                self.skipped = self.skipped.saturating_add(self.zero_run as u64);
            }
            // Cannot happen: classification always succeeds once finished.
            OpenNal::Unclassified { .. } => {}
        }
        self.zero_run = 0;
        self.open = OpenNal::Outside;
        if self.pending.is_empty() {
            return false;
        }
        self.deliver_pending();
        true
    }

    /// Adds the NAL unit `buf[start..end]` to the pending access unit unless it is empty.
    fn complete_nal(&mut self, start: usize, end: usize) {
        let Some(&header) = self.buf.get(start..end).and_then(|nal| nal.first()) else {
            return;
        };
        if self.pending.is_empty() {
            self.au_start = start;
        }
        let nal_type = header & 0x1f;
        self.pending.push(NalRef {
            start: start - self.au_start,
            len: end - start,
            nal_type,
        });
        self.pending_has_vcl |= is_vcl(nal_type);
    }

    /// Moves the pending access unit to `ready`.
    fn deliver_pending(&mut self) {
        let end = self
            .pending
            .last()
            .map_or(self.au_start, |last| self.au_start + last.start + last.len);
        self.ready_range = (self.au_start, end);
        std::mem::swap(&mut self.ready, &mut self.pending);
        self.pending.clear();
        self.pending_has_vcl = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (nal_type, bytes) of every NAL unit of one access unit.
    type OwnedAu = Vec<(u8, Vec<u8>)>;

    fn owned(au: &AccessUnit<'_>) -> OwnedAu {
        au.nal_bytes()
            .map(|(nal, bytes)| (nal.nal_type, bytes.to_vec()))
            .collect()
    }

    /// Feeds `stream` in pieces whose sizes cycle through `chunk_sizes`, draining after each.
    fn read_chunked(stream: &[u8], chunk_sizes: &[usize], max_au: usize) -> Vec<OwnedAu> {
        let mut reader = AnnexBReader::new(max_au);
        let mut out = Vec::new();
        let mut offset = 0;
        let mut size_index = 0;
        while offset < stream.len() {
            let want = chunk_sizes[size_index % chunk_sizes.len()].max(1);
            size_index += 1;
            let spare = reader.read_buf().expect("access unit fits");
            let n = want.min(spare.len()).min(stream.len() - offset);
            spare[..n].copy_from_slice(&stream[offset..offset + n]);
            reader.commit(n);
            offset += n;
            while let Some(au) = reader.next_access_unit() {
                check_au_consistency(&au);
                out.push(owned(&au));
            }
        }
        reader.finish();
        while let Some(au) = reader.next_access_unit() {
            check_au_consistency(&au);
            out.push(owned(&au));
        }
        assert_eq!(reader.bytes_read(), stream.len() as u64);
        out
    }

    fn read_all(stream: &[u8]) -> Vec<OwnedAu> {
        read_chunked(stream, &[stream.len().max(1)], 1 << 24)
    }

    /// The reader's AccessUnit::data is the AU's own range: first NAL at 0, last NAL at the end.
    fn check_au_consistency(au: &AccessUnit<'_>) {
        assert!(!au.nals.is_empty());
        assert_eq!(au.nals[0].start, 0);
        let last = au.nals.last().unwrap();
        assert_eq!(last.start + last.len, au.data.len());
        for (nal, bytes) in au.nal_bytes() {
            assert_eq!(bytes.len(), nal.len);
            assert!(nal.len > 0);
            assert_eq!(bytes[0] & 0x1f, nal.nal_type);
            assert_ne!(*bytes.last().unwrap(), 0);
        }
    }

    fn types(aus: &[OwnedAu]) -> Vec<Vec<u8>> {
        aus.iter()
            .map(|au| au.iter().map(|(t, _)| *t).collect())
            .collect()
    }

    fn split(data: &[u8]) -> Vec<(NalRef, Vec<u8>)> {
        let mut nals = Vec::new();
        split_nals(data, &mut nals);
        let au = AccessUnit { data, nals: &nals };
        au.nal_bytes().map(|(n, b)| (n, b.to_vec())).collect()
    }

    #[test]
    fn split_nals_handles_three_and_four_byte_start_codes_and_trailing_zeros() {
        let data = [
            0xAA, 0xBB, // garbage before the first start code
            0, 0, 0, 1, 0x67, 0x42, 0x00, 0x1e, // SPS, 4-byte start code
            0, 0, 1, 0x68, 0xce, // PPS, 3-byte start code
            0, 0, 0, 0, 0, 1, 0x65, 0x88, 0x84, // IDR after trailing_zero_8bits
            0, 0, // trailing zeros at the end of the buffer
        ];
        let nals = split(&data);
        assert_eq!(
            nals,
            vec![
                (
                    NalRef {
                        start: 6,
                        len: 4,
                        nal_type: 7
                    },
                    vec![0x67, 0x42, 0x00, 0x1e]
                ),
                (
                    NalRef {
                        start: 13,
                        len: 2,
                        nal_type: 8
                    },
                    vec![0x68, 0xce]
                ),
                (
                    NalRef {
                        start: 21,
                        len: 3,
                        nal_type: 5
                    },
                    vec![0x65, 0x88, 0x84]
                ),
            ]
        );
    }

    #[test]
    fn split_nals_drops_empty_nals_and_ignores_data_without_start_code() {
        assert!(split(&[]).is_empty());
        assert!(split(&[0, 0, 0, 0]).is_empty());
        assert!(split(&[0x65, 0x88, 0, 1]).is_empty());
        assert!(split(&[0, 0, 1]).is_empty());
        let nals = split(&[0, 0, 1, 0, 0, 1, 0, 0, 0, 1, 0x09, 0xf0, 0, 0, 1]);
        assert_eq!(nals.len(), 1);
        assert_eq!(nals[0].1, vec![0x09, 0xf0]);
    }

    #[test]
    fn nal_out_of_range_is_empty_not_a_panic() {
        let data = [0u8, 0, 1, 0x65];
        let bogus = [NalRef {
            start: usize::MAX,
            len: 2,
            nal_type: 5,
        }];
        let au = AccessUnit {
            data: &data,
            nals: &bogus,
        };
        assert!(au.nal(0).is_empty());
        assert!(au.nal(7).is_empty());
        assert!(au.is_idr());
    }

    // Slice NAL units: the byte after the header starts with first_mb_in_slice; 0x80 set means 0.
    const AUD: &[u8] = &[0x09, 0xf0];
    const SPS: &[u8] = &[0x67, 0x42, 0xc0, 0x1e, 0xd9];
    const PPS: &[u8] = &[0x68, 0xcb, 0x83, 0xcb, 0x20];
    const SEI: &[u8] = &[0x06, 0x05, 0x01, 0xaa, 0x80];
    const IDR_FIRST: &[u8] = &[0x65, 0x88, 0x84, 0x21];
    const IDR_SECOND: &[u8] = &[0x65, 0x42, 0x13, 0x37]; // first_mb_in_slice = 1
    const P_FIRST: &[u8] = &[0x41, 0x9a, 0x12, 0x34];
    const P_SECOND: &[u8] = &[0x41, 0x2f, 0x55]; // first_mb_in_slice = 2 (010)
    const END_OF_SEQUENCE: &[u8] = &[0x0a];
    const FILLER: &[u8] = &[0x0c, 0xff, 0xff, 0x80];

    fn annexb(nals: &[&[u8]], long_start_codes: bool) -> Vec<u8> {
        let mut out = Vec::new();
        for (index, nal) in nals.iter().enumerate() {
            if long_start_codes || index % 2 == 0 {
                out.extend_from_slice(&[0, 0, 0, 1]);
            } else {
                out.extend_from_slice(&[0, 0, 1]);
            }
            out.extend_from_slice(nal);
        }
        out
    }

    fn expect_aus(aus: &[OwnedAu], expected: &[&[&[u8]]]) {
        assert_eq!(aus.len(), expected.len(), "{:?}", types(aus));
        for (au, want) in aus.iter().zip(expected) {
            let got: Vec<&[u8]> = au.iter().map(|(_, b)| b.as_slice()).collect();
            assert_eq!(&got, want);
        }
    }

    #[test]
    fn aud_delimited_stream() {
        let stream = annexb(
            &[AUD, SPS, PPS, IDR_FIRST, AUD, P_FIRST, AUD, P_FIRST, AUD],
            false,
        );
        let aus = read_all(&stream);
        expect_aus(
            &aus,
            &[
                &[AUD, SPS, PPS, IDR_FIRST],
                &[AUD, P_FIRST],
                &[AUD, P_FIRST],
                &[AUD],
            ],
        );
    }

    #[test]
    fn multiple_slices_per_picture_without_aud() {
        let stream = annexb(
            &[
                SPS, PPS, SEI, IDR_FIRST, IDR_SECOND, P_FIRST, P_SECOND, P_SECOND, P_FIRST,
            ],
            true,
        );
        let aus = read_all(&stream);
        expect_aus(
            &aus,
            &[
                &[SPS, PPS, SEI, IDR_FIRST, IDR_SECOND],
                &[P_FIRST, P_SECOND, P_SECOND],
                &[P_FIRST],
            ],
        );
        let stream = annexb(&[P_FIRST, SEI, P_FIRST, SPS, PPS, IDR_FIRST], false);
        expect_aus(
            &read_all(&stream),
            &[&[P_FIRST], &[SEI, P_FIRST], &[SPS, PPS, IDR_FIRST]],
        );
    }

    #[test]
    fn end_of_sequence_and_filler_stay_with_their_access_unit() {
        let stream = annexb(
            &[IDR_FIRST, FILLER, END_OF_SEQUENCE, IDR_FIRST, FILLER],
            false,
        );
        expect_aus(
            &read_all(&stream),
            &[&[IDR_FIRST, FILLER, END_OF_SEQUENCE], &[IDR_FIRST, FILLER]],
        );
    }

    #[test]
    fn trailing_zero_bytes_are_not_part_of_a_nal() {
        let mut stream = vec![0, 0, 0, 0, 1];
        stream.extend_from_slice(IDR_FIRST);
        stream.extend_from_slice(&[0; 7]);
        stream.extend_from_slice(&[0, 0, 1]);
        stream.extend_from_slice(P_FIRST);
        stream.extend_from_slice(&[0, 0, 0]);
        expect_aus(&read_all(&stream), &[&[IDR_FIRST], &[P_FIRST]]);
    }

    #[test]
    fn only_non_vcl_nals_are_returned_at_finish() {
        let stream = annexb(&[SPS, PPS], true);
        let aus = read_all(&stream);
        expect_aus(&aus, &[&[SPS, PPS]]);
    }

    #[test]
    fn access_unit_is_released_as_soon_as_the_next_one_is_recognised() {
        fn feed(reader: &mut AnnexBReader, bytes: &[u8]) {
            let spare = reader.read_buf().unwrap();
            spare[..bytes.len()].copy_from_slice(bytes);
            reader.commit(bytes.len());
        }
        let mut reader = AnnexBReader::new(1 << 20);
        feed(&mut reader, &annexb(&[SPS, PPS, IDR_FIRST], true));
        assert!(reader.next_access_unit().is_none());
        feed(&mut reader, &[0, 0, 0, 1, 0x41]);
        // A slice header byte alone does not say whether it starts a picture.
        assert!(reader.next_access_unit().is_none());
        feed(&mut reader, &[0x9a]);
        let au = reader.next_access_unit().expect("IDR access unit complete");
        assert!(au.is_idr());
        assert!(au.has_vcl());
        assert_eq!(au.nals.len(), 3);
        assert_eq!(au.nal(0), SPS);
        assert_eq!(au.first_of_type(NAL_PPS), Some(PPS));
        assert!(reader.next_access_unit().is_none());
        reader.finish();
        let au = reader.next_access_unit().unwrap();
        assert_eq!(au.nal(0), &[0x41, 0x9a]);
        assert!(!au.is_idr());
        assert!(reader.next_access_unit().is_none());
        assert!(reader.next_access_unit().is_none());
        assert_eq!(reader.skipped_bytes(), 0);
    }

    #[test]
    fn garbage_before_first_start_code_is_counted() {
        let mut stream = vec![0x12, 0x00, 0x34, 0x00, 0x00, 0x02, 0x00];
        stream.extend_from_slice(&annexb(&[IDR_FIRST], true));
        let mut reader = AnnexBReader::new(1 << 20);
        let spare = reader.read_buf().unwrap();
        spare[..stream.len()].copy_from_slice(&stream);
        reader.commit(stream.len());
        reader.finish();
        let au = reader.next_access_unit().unwrap();
        assert_eq!(au.nal(0), IDR_FIRST);
        assert_eq!(reader.skipped_bytes(), 6);
        assert_eq!(reader.bytes_read(), stream.len() as u64);
    }

    fn sample_stream() -> Vec<u8> {
        let mut stream = vec![0xde, 0xad, 0x00];
        stream.extend_from_slice(&annexb(
            &[
                AUD,
                SPS,
                PPS,
                SEI,
                IDR_FIRST,
                IDR_SECOND,
                AUD,
                P_FIRST,
                P_SECOND,
                SEI,
                P_FIRST,
                FILLER,
                P_FIRST,
                END_OF_SEQUENCE,
                SPS,
                PPS,
                IDR_FIRST,
            ],
            false,
        ));
        stream.extend_from_slice(&[0, 0]);
        stream
    }

    #[test]
    fn every_split_position_gives_identical_access_units() {
        let stream = sample_stream();
        let whole = read_all(&stream);
        assert_eq!(
            types(&whole),
            vec![
                vec![9, 7, 8, 6, 5, 5],
                vec![9, 1, 1],
                vec![6, 1, 12],
                vec![1, 10],
                vec![7, 8, 5]
            ]
        );
        for split_at in 0..=stream.len() {
            let mut reader = AnnexBReader::new(1 << 20);
            let mut aus = Vec::new();
            for part in [&stream[..split_at], &stream[split_at..]] {
                let spare = reader.read_buf().unwrap();
                spare[..part.len()].copy_from_slice(part);
                reader.commit(part.len());
                while let Some(au) = reader.next_access_unit() {
                    aus.push(owned(&au));
                }
            }
            reader.finish();
            while let Some(au) = reader.next_access_unit() {
                aus.push(owned(&au));
            }
            assert_eq!(aus, whole, "split at {split_at}");
        }
        for chunk in 1..8 {
            assert_eq!(
                read_chunked(&stream, &[chunk], 1 << 20),
                whole,
                "chunk {chunk}"
            );
        }
        assert_eq!(read_chunked(&stream, &[1, 2, 5, 3], 1 << 20), whole);
    }

    #[test]
    fn reader_agrees_with_split_nals() {
        let stream = sample_stream();
        let from_reader: Vec<Vec<u8>> = read_all(&stream)
            .into_iter()
            .flatten()
            .map(|(_, bytes)| bytes)
            .collect();
        let from_split: Vec<Vec<u8>> = split(&stream).into_iter().map(|(_, b)| b).collect();
        assert_eq!(from_reader, from_split);
    }

    #[test]
    fn access_unit_too_large_is_an_error_and_the_reader_resynchronises() {
        let max = 1000;
        let big_slice: Vec<u8> = std::iter::once(0x65u8)
            .chain(std::iter::once(0x88))
            .chain((0..3 * (max + READ_SLACK)).map(|i| (i % 200 + 2) as u8))
            .collect();
        let mut stream = annexb(&[SPS, PPS, IDR_FIRST, P_FIRST], true);
        stream.extend_from_slice(&annexb(&[&big_slice, P_SECOND, P_FIRST, P_FIRST], true));
        let mut reader = AnnexBReader::new(max);
        let mut offset = 0;
        let mut aus = Vec::new();
        let mut errors = 0;
        while offset < stream.len() {
            match reader.read_buf() {
                Ok(spare) => {
                    assert!(!spare.is_empty());
                    let n = spare.len().min(100).min(stream.len() - offset);
                    spare[..n].copy_from_slice(&stream[offset..offset + n]);
                    reader.commit(n);
                    offset += n;
                }
                Err(error) => {
                    assert_eq!(error, AnnexBError::AccessUnitTooLarge { limit: max });
                    assert!(error.to_string().contains("1000"));
                    errors += 1;
                }
            }
            while let Some(au) = reader.next_access_unit() {
                aus.push(owned(&au));
            }
            assert!(reader.buf.len() <= max + READ_SLACK);
        }
        reader.finish();
        while let Some(au) = reader.next_access_unit() {
            aus.push(owned(&au));
        }
        assert_eq!(errors, 1);
        // The oversized picture and its continuation slice are dropped; reading resumes at the
        // next picture.
        expect_aus(
            &aus,
            &[&[SPS, PPS, IDR_FIRST], &[P_FIRST], &[P_FIRST], &[P_FIRST]],
        );
        assert!(reader.skipped_bytes() >= big_slice.len() as u64);
    }

    #[test]
    fn garbage_without_start_codes_needs_no_memory() {
        let mut reader = AnnexBReader::new(100);
        for _ in 0..1000 {
            let spare = reader.read_buf().unwrap();
            spare.fill(0x55);
            let n = spare.len();
            reader.commit(n);
            assert!(reader.next_access_unit().is_none());
        }
        reader.finish();
        assert!(reader.next_access_unit().is_none());
        assert_eq!(reader.skipped_bytes(), reader.bytes_read());
    }

    #[test]
    fn large_keyframe_one_byte_at_a_time_is_linear() {
        let mut keyframe = vec![0x65u8, 0x88];
        keyframe.extend((0..2_000_000u32).map(|i| (i % 251 + 1) as u8));
        let stream = annexb(&[SPS, PPS, &keyframe, P_FIRST], true);
        let mut reader = AnnexBReader::new(4 << 20);
        let mut count = 0;
        for &byte in &stream {
            let spare = reader.read_buf().unwrap();
            spare[0] = byte;
            reader.commit(1);
            while let Some(au) = reader.next_access_unit() {
                if count == 0 {
                    assert_eq!(au.nal(2).len(), keyframe.len());
                }
                count += 1;
            }
        }
        assert_eq!(reader.scan_pos, reader.filled);
        reader.finish();
        while reader.next_access_unit().is_some() {
            count += 1;
        }
        assert_eq!(count, 2);
    }

    #[test]
    fn commit_larger_than_spare_is_clamped() {
        let mut reader = AnnexBReader::new(10);
        let spare = reader.read_buf().unwrap().len();
        reader.commit(usize::MAX);
        assert_eq!(reader.bytes_read(), spare as u64);
        reader.finish();
        assert!(reader.next_access_unit().is_none());
    }

    /// Tiny deterministic generator so the garbage test needs no dependency.
    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    #[test]
    fn random_input_never_panics_and_chunking_does_not_matter() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        for round in 0..300 {
            let len = (rng.next() % 2000) as usize;
            // Bias towards zeros and ones so start codes are frequent.
            let data: Vec<u8> = (0..len)
                .map(|_| match rng.next() % 8 {
                    0..=2 => 0,
                    3 => 1,
                    _ => rng.next() as u8,
                })
                .collect();
            let whole = read_chunked(&data, &[data.len().max(1)], 1 << 20);
            let sizes = [(round % 7) + 1, (round % 13) + 1, 1];
            assert_eq!(read_chunked(&data, &sizes, 1 << 20), whole);
            let flat: Vec<Vec<u8>> = whole.into_iter().flatten().map(|(_, b)| b).collect();
            let from_split: Vec<Vec<u8>> = split(&data).into_iter().map(|(_, b)| b).collect();
            assert_eq!(flat, from_split);
            // A small limit exercises the error path on random data.
            let mut reader = AnnexBReader::new(64);
            for chunk in data.chunks(97) {
                if let Ok(spare) = reader.read_buf() {
                    let n = chunk.len().min(spare.len());
                    spare[..n].copy_from_slice(&chunk[..n]);
                    reader.commit(n);
                }
                while reader.next_access_unit().is_some() {}
            }
            reader.finish();
            while reader.next_access_unit().is_some() {}
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn chunked_reading_matches_whole_reading(
                data in proptest::collection::vec(
                    prop_oneof![3 => Just(0u8), 1 => Just(1u8), 1 => Just(0x65u8), 1 => Just(0x41u8),
                                1 => Just(0x09u8), 1 => Just(0x67u8), 2 => any::<u8>()],
                    0..600),
                sizes in proptest::collection::vec(1usize..40, 1..8),
            ) {
                let whole = read_chunked(&data, &[data.len().max(1)], 1 << 20);
                prop_assert_eq!(read_chunked(&data, &sizes, 1 << 20), whole.clone());
                let flat: Vec<Vec<u8>> = whole.into_iter().flatten().map(|(_, b)| b).collect();
                let from_split: Vec<Vec<u8>> = split(&data).into_iter().map(|(_, b)| b).collect();
                prop_assert_eq!(flat, from_split);
            }
        }
    }

    const PI_CLIP: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/clips/pi-hw-1080p-20frames.h264"
    );

    #[test]
    fn raspberry_pi_recording_has_twenty_access_units() {
        let Ok(stream) = std::fs::read(PI_CLIP) else {
            eprintln!("skipping: {PI_CLIP} not found");
            return;
        };
        // The clip (Raspberry Pi hardware encoder, 1080p30 High 4.1): 4-byte start codes, no AUDs,
        // no SEI, one slice per picture: [SPS, PPS, IDR] then 19 x [P].
        let aus = read_chunked(&stream, &[4096], 4 << 20);
        assert_eq!(aus.len(), 20);
        assert_eq!(types(&aus[..1]), vec![vec![7, 8, 5]]);
        assert!(types(&aus[1..]).iter().all(|t| t == &vec![1]));
        assert_eq!(aus[0][0].1.len(), 37);
        assert_eq!(aus[0][1].1, vec![0x28, 0xee, 0x02, 0x5c, 0xb0]);
        assert_eq!(aus[0][2].1.len(), 13796);
        assert_eq!(aus[19][0].1.len(), 71551);
        let nal_bytes: usize = aus.iter().flatten().map(|(_, b)| b.len()).sum();
        // Every NAL unit has a 4-byte start code and nothing else sits between them.
        assert_eq!(nal_bytes + 4 * 22, stream.len());
        assert_eq!(read_chunked(&stream, &[1, 1000, 7, 65536], 4 << 20), aus);

        let mut nals = Vec::new();
        split_nals(&stream, &mut nals);
        assert_eq!(nals.len(), 22);
        let whole = AccessUnit {
            data: &stream,
            nals: &nals,
        };
        assert!(whole.is_idr());
        assert_eq!(whole.nal(0).len(), 37);
        assert_eq!(whole.nal(0)[..4], [0x27, 0x64, 0x00, 0x29]);
    }

    /// The obvious byte-at-a-time splitter, to check the skipping one against.
    fn naive_split(data: &[u8]) -> Vec<(usize, usize)> {
        let mut starts = Vec::new();
        for i in 2..data.len() {
            if data[i] == 1 && data[i - 1] == 0 && data[i - 2] == 0 {
                starts.push(i + 1);
            }
        }
        let mut nals = Vec::new();
        for (n, &start) in starts.iter().enumerate() {
            let mut end = match starts.get(n + 1) {
                Some(&next) => next - 3,
                None => data.len(),
            };
            while end > start && data[end - 1] == 0 {
                end -= 1;
            }
            if end > start {
                nals.push((start, end - start));
            }
        }
        nals
    }

    #[test]
    fn skipping_scan_matches_the_naive_scan_and_the_reader() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..3000 {
            let len = (next() % 400) as usize;
            // Mostly 0x00 and 0x01 so that start codes, near misses and zero runs abound.
            let data: Vec<u8> = (0..len)
                .map(|_| match next() % 8 {
                    0..=3 => 0,
                    4 | 5 => 1,
                    6 => 2,
                    _ => (next() % 256) as u8,
                })
                .collect();
            let mut nals = Vec::new();
            split_nals(&data, &mut nals);
            let got: Vec<(usize, usize)> = nals.iter().map(|n| (n.start, n.len)).collect();
            assert_eq!(got, naive_split(&data), "round {round}: {data:?}");
            // The streaming reader, fed in uneven pieces, finds the same NAL bytes.
            let mut reader = AnnexBReader::new(1 << 16);
            let mut from_reader: Vec<Vec<u8>> = Vec::new();
            let mut fed = 0;
            while fed < data.len() {
                let piece = ((next() % 7) as usize + 1).min(data.len() - fed);
                let buf = reader.read_buf().unwrap();
                let piece = piece.min(buf.len());
                buf[..piece].copy_from_slice(&data[fed..fed + piece]);
                reader.commit(piece);
                fed += piece;
                while let Some(au) = reader.next_access_unit() {
                    from_reader.extend(au.nal_bytes().map(|(_, bytes)| bytes.to_vec()));
                }
            }
            reader.finish();
            while let Some(au) = reader.next_access_unit() {
                from_reader.extend(au.nal_bytes().map(|(_, bytes)| bytes.to_vec()));
            }
            let expected: Vec<Vec<u8>> = naive_split(&data)
                .iter()
                .map(|&(s, l)| data[s..s + l].to_vec())
                .collect();
            assert_eq!(from_reader, expected, "round {round}: {data:?}");
        }
    }
}
