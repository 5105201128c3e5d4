//! A streaming Annex-B scanner over logical byte positions: the access-unit splitting of
//! [`AnnexBReader`](crate::media::annexb::AnnexBReader), without a buffer of its own.
//!
//! The frame store reads a byte stream straight into its ring and feeds each committed piece to
//! [`Scanner::scan`] with the piece's logical position (a `u64` that only grows; the ring maps it
//! modulo its capacity). The scanner never looks back at bytes it has seen: it keeps the zero-run
//! length, the open NAL unit's start and, for a slice, its header byte, so a start code or a
//! slice header split across pieces (or across the ring's end) is found all the same.
//!
//! Invariants:
//! - Each byte is examined once, whatever the piece sizes; pieces must be fed in order and
//!   without gaps (`base` of one piece is the end of the previous one).
//! - The NAL units and access-unit boundaries it reports are exactly those of `AnnexBReader` on
//!   the same bytes, whatever the piece sizes (tested against it), and `skipped` counts the same
//!   bytes, as long as no access unit is dropped for size ([`Scanner::drop_pending`]).
//! - NAL boundaries follow the same rules: a NAL unit ends before the next start code's zeros
//!   (trailing zero bytes excluded) and empty NAL units are not reported.

use crate::media::annexb::{is_vcl, skip_to_start_code_candidate, starts_access_unit};

/// What the scanner found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Event {
    /// A NAL unit of the pending access unit is complete: bytes `start..end` (never empty).
    Nal { start: u64, end: u64, nal_type: u8 },
    /// The pending access unit (the NAL units reported since the last boundary) is complete.
    AccessUnitEnd,
}

/// What the bytes at the scan position belong to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Open {
    /// No NAL unit (before the first start code, or one dropped while resynchronising).
    Outside,
    /// A start code ended just before `start`; `header` is the NAL header byte once seen (kept
    /// only for a slice, whose access unit also depends on the next byte).
    Unclassified { start: u64, header: Option<u8> },
    /// A NAL unit of the pending access unit.
    Kept { start: u64, nal_type: u8 },
}

/// The scanner's state between pieces.
#[derive(Clone, Debug)]
pub(crate) struct Scanner {
    zero_run: u64,
    open: Open,
    /// After a dropped access unit, NAL units are dropped until one that starts an access unit.
    resyncing: bool,
    /// NAL units reported since the last boundary.
    pending: u64,
    pending_has_vcl: bool,
    /// Bytes outside every kept NAL unit and start code, as `AnnexBReader::skipped_bytes`.
    pub skipped: u64,
}

impl Scanner {
    pub fn new() -> Scanner {
        Scanner {
            zero_run: 0,
            open: Open::Outside,
            resyncing: false,
            pending: 0,
            pending_has_vcl: false,
            skipped: 0,
        }
    }

    /// A scanner for a new stream, keeping the count of skipped bytes.
    pub fn new_after(previous: &Scanner) -> Scanner {
        Scanner {
            skipped: previous.skipped,
            ..Scanner::new()
        }
    }

    /// Where the bytes still needed by the scan begin: the open NAL unit's start, if any.
    pub fn open_start(&self) -> Option<u64> {
        match self.open {
            Open::Outside => None,
            Open::Unclassified { start, .. } | Open::Kept { start, .. } => Some(start),
        }
    }

    /// How many zero bytes the last bytes scanned ended with (a start code may be under way).
    pub fn zero_run(&self) -> u64 {
        self.zero_run
    }

    /// Whether NAL units have been reported since the last access-unit boundary.
    pub fn has_pending(&self) -> bool {
        self.pending > 0
    }

    /// Scans `data`, which begins at logical position `base`, until the first event. Returns how
    /// many bytes were consumed and the event; call again with the rest.
    pub fn scan(&mut self, data: &[u8], base: u64) -> (usize, Option<Event>) {
        let mut i = 0;
        while i < data.len() {
            if let Open::Unclassified { start, header } = self.open {
                let byte = data[i];
                let (nal_type, second) = match header {
                    None => {
                        let nal_type = byte & 0x1f;
                        if is_vcl(nal_type) {
                            // A slice: its access unit depends on the next byte too. The header
                            // byte is not zero, so scanning it only clears the zero run (0 here).
                            self.open = Open::Unclassified {
                                start,
                                header: Some(byte),
                            };
                            i += 1;
                            continue;
                        }
                        (nal_type, None)
                    }
                    Some(header) => (header & 0x1f, Some(byte)),
                };
                if let Some(event) = self.classify(start, nal_type, second) {
                    return (i, Some(event));
                }
            }
            // Inside a NAL unit, after a non-zero byte, most bytes cannot end a start code.
            if matches!(self.open, Open::Kept { .. }) && self.zero_run == 0 {
                i = skip_to_start_code_candidate(data, i);
                if i >= data.len() {
                    break;
                }
            }
            let byte = data[i];
            i += 1;
            if byte == 0 {
                self.zero_run = self.zero_run.saturating_add(1);
                continue;
            }
            if byte == 1 && self.zero_run >= 2 {
                let one_at = base + i as u64 - 1;
                let event = match self.open {
                    Open::Kept { start, nal_type } => {
                        let end = one_at.saturating_sub(self.zero_run).max(start);
                        self.complete(start, end, nal_type)
                    }
                    _ => None,
                };
                self.zero_run = 0;
                self.open = Open::Unclassified {
                    start: base + i as u64,
                    header: None,
                };
                if event.is_some() {
                    return (i, event);
                }
                continue;
            }
            if self.open == Open::Outside {
                self.skipped = self.skipped.saturating_add(self.zero_run).saturating_add(1);
            }
            self.zero_run = 0;
        }
        (i, None)
    }

    /// End of input at logical position `end`: returns the events left, at most a NAL unit and
    /// then a boundary; call until `None`.
    pub fn finish(&mut self, end: u64) -> Option<Event> {
        if let Open::Unclassified { start, header } = self.open {
            match header {
                // The data ended right after the start code: there is no NAL unit.
                None => self.open = Open::Outside,
                Some(header) => {
                    // A slice of one byte: too short to start a picture.
                    if let Some(event) = self.classify(start, header & 0x1f, None) {
                        return Some(event);
                    }
                    // Its header byte, scanned now.
                    if self.open == Open::Outside {
                        self.skipped = self.skipped.saturating_add(1);
                    }
                }
            }
        }
        match self.open {
            Open::Kept { start, nal_type } => {
                let nal_end = end.saturating_sub(self.zero_run).max(start);
                self.open = Open::Outside;
                self.zero_run = 0;
                if let Some(event) = self.complete(start, nal_end, nal_type) {
                    return Some(event);
                }
            }
            Open::Outside => {
                self.skipped = self.skipped.saturating_add(self.zero_run);
                self.zero_run = 0;
            }
            Open::Unclassified { .. } => {}
        }
        self.boundary()
    }

    /// Forgets the pending access unit and the open NAL unit (dropped for size, or for want of
    /// room): NAL units are dropped until one that starts an access unit. The zero run is kept,
    /// as trailing zeros may begin the next start code. Returns nothing; the caller frees the
    /// bytes and counts them.
    pub fn drop_pending(&mut self) {
        self.open = Open::Outside;
        self.pending = 0;
        self.pending_has_vcl = false;
        self.resyncing = true;
    }

    /// Places the NAL unit starting at `start` (its type and, for a slice, the byte after the
    /// header known); returns the boundary event if it begins a new access unit.
    fn classify(&mut self, start: u64, nal_type: u8, second: Option<u8>) -> Option<Event> {
        let first_mb_is_zero = second.is_some_and(|byte| byte & 0x80 != 0);
        let current_has_vcl = self.resyncing || self.pending_has_vcl;
        let starts = starts_access_unit(nal_type, first_mb_is_zero, current_has_vcl);
        if self.resyncing {
            if !starts {
                self.open = Open::Outside;
                if second.is_some() {
                    // The slice's header byte, passed over while it waited for the next byte.
                    self.skipped = self.skipped.saturating_add(1);
                }
                return None;
            }
            self.resyncing = false;
            self.open = Open::Kept { start, nal_type };
            return None;
        }
        self.open = Open::Kept { start, nal_type };
        if starts {
            self.boundary()
        } else {
            None
        }
    }

    fn complete(&mut self, start: u64, end: u64, nal_type: u8) -> Option<Event> {
        if end <= start {
            return None;
        }
        self.pending += 1;
        self.pending_has_vcl |= is_vcl(nal_type);
        Some(Event::Nal {
            start,
            end,
            nal_type,
        })
    }

    fn boundary(&mut self) -> Option<Event> {
        if self.pending == 0 {
            return None;
        }
        self.pending = 0;
        self.pending_has_vcl = false;
        Some(Event::AccessUnitEnd)
    }
}
