//! The frame store, sans-IO: one bounded byte ring that byte-stream sources read into directly,
//! the frames found in it, and the cursors that uplinks send them through. It is meant to replace
//! both the frame queue (`crate::queue`) and the `AnnexBReader`'s own buffer.
//!
//! # How bytes get in
//!
//! - A byte stream (pipe, FIFO, `exec:` child, file) is read straight into the ring:
//!   [`FrameStore::write_buf`] gives free space at the head, [`FrameStore::commit`] takes what was
//!   read, and a streaming Annex-B scanner ([`scan`]) finds NAL units and access units in it by
//!   logical position, exactly as `AnnexBReader` does. Each complete access unit becomes a record
//!   that the caller admits (with its timestamp) or discards: [`FrameStore::next_unadmitted`],
//!   [`FrameStore::admit`], [`FrameStore::discard`]. The frame is never copied, retained or not.
//! - A camera frame lives in the driver's buffer; it is sent from there to every uplink that can
//!   take it at once, and [`FrameStore::push_copy`] copies it into the ring once, only if some
//!   cursor or the retained GOP still needs it.
//!
//! # How frames get out
//!
//! Each destination has a cursor ([`CursorId`], at most [`MAX_CURSORS`], added and removed without
//! allocating). [`FrameStore::take`] applies the cursor's drop policy and hands out the next frame
//! as an [`InFlight`] token, which pins the frame: its bytes cannot be reclaimed or overwritten
//! until [`FrameStore::advance`] (written) or [`FrameStore::abandon`] (connection lost) consumes
//! the token. [`FrameStore::frame`] views the pinned frame as a [`FrameRef`], which borrows the
//! store, and whose NAL units are ranges of [`FrameStore::ring`], the only buffer there is: a NAL
//! that wraps around the ring's end is two ranges, never copied to unwrap it.
//!
//! # Invariants
//!
//! - Memory never grows after [`FrameStore::new`]: the ring, the record ring and the NAL ring are
//!   allocated once at their full size; nothing allocates per frame.
//! - Bytes live at logical positions `tail..head` (`u64`, mapped modulo the capacity); a record's
//!   bytes are reclaimed only when no cursor needs it (its position has passed it and it is not in
//!   flight) and it is not retained (the GOP from the newest keyframe, when retention is on).
//! - A cursor never receives a non-keyframe whose reference it did not receive: it starts at a
//!   keyframe, drops whole GOPs (to the newest keyframe, else everything until the next one), and
//!   a frame lost at the input (too large, no room) makes every cursor that lacked it wait for a
//!   keyframe.
//! - One lagging cursor never makes the store refuse input while another cursor is fine: when the
//!   ring is full the cursors holding its oldest frame drop. Input is refused only in backpressure
//!   mode (nothing is ever dropped), or in live mode while nothing is late by the wall clock and
//!   every cursor holds the oldest frame ([`Room::Hold`]: the shell stops reading for a while).
//! - No clock is read: `now_ms` is given. No input bytes can make this code panic.

mod scan;

use std::collections::VecDeque;

use crate::media::annexb::{NAL_AUD, NAL_IDR};
use crate::rtmp::chunk::Part;
use scan::{Event, Scanner};

/// How many cursors a store can have at once.
pub const MAX_CURSORS: usize = 8;

/// Room above one maximal frame for the read in progress and the start code after a frame.
pub const READ_SLACK: usize = crate::media::annexb::READ_SLACK;

/// The most bytes one read takes: a file is then read a little ahead of what is sent, not a
/// ring ahead, and a pipe gives less than this anyway.
const READ_CHUNK: u64 = 256 * 1024;

/// Byte streams wrap early (to the ring's start) once past twice the high-water mark of what the
/// ring held, and never before this (or a quarter of the ring, if that is less).
const MIN_EARLY_WRAP: u64 = 1024 * 1024;

/// The elementary stream a frame belongs to. Records of all tracks are in one sequence, in the
/// order they were stored (the caller stores them interleaved by time).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Track {
    Video,
    /// Audio frames decode alone; they follow the video's GOP drops (a drop skips them too).
    Audio,
}

/// The sizes of a store, fixed at construction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreConfig {
    /// Bytes of queued frames (`--queue-size`).
    pub queue_bytes: usize,
    /// The largest access unit (`--max-frame-size`); a larger one is dropped at the input.
    pub max_frame_bytes: usize,
    /// Records (frames of all tracks) held at most.
    pub max_frames: usize,
    /// NAL units per frame at most; a frame with more is dropped at the input.
    pub max_nals_per_frame: usize,
    /// Bytes of the audio arena (0: no audio track). Audio frames are small and copied in, into
    /// an arena of their own after the video ring, so that copying one never splits a byte
    /// stream's access unit being read; their records are interleaved with the video's.
    pub audio_bytes: usize,
}

impl StoreConfig {
    /// The ring's size: the queue, which holds the frame being read too, and at least one
    /// maximal frame and a read's slack. A ring's pages all become resident as writes go round
    /// it, so it is no larger than the queue bound asks: a maximal frame read while the queue is
    /// full makes room by the drop policy (or waits, for a file).
    pub fn ring_bytes(&self) -> usize {
        self.queue_bytes
            .max(self.max_frame_bytes.saturating_add(READ_SLACK))
            .max(1)
    }

    /// The NAL ring's size: four per frame on average, and two maximal frames.
    pub fn nal_slots(&self) -> usize {
        self.max_frames
            .saturating_mul(4)
            .saturating_add(self.max_nals_per_frame.saturating_mul(2))
            .max(2)
    }
}

/// A cursor's handle. Cursor handles and [`InFlight`] tokens belong to the store that made them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CursorId(u8);

impl CursorId {
    /// The cursor's slot, `0..MAX_CURSORS`.
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

/// A set of cursors (the ones that sent a camera frame straight from the driver's buffer).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CursorSet(u16);

impl CursorSet {
    pub const EMPTY: CursorSet = CursorSet(0);

    pub fn insert(&mut self, cursor: CursorId) {
        self.0 |= 1 << cursor.0;
    }

    pub fn contains(self, cursor: CursorId) -> bool {
        self.0 & (1 << cursor.0) != 0
    }

    fn intersect(self, other: CursorSet) -> CursorSet {
        CursorSet(self.0 & other.0)
    }
}

/// How far a cursor may lag before it drops GOPs. `None` is unbounded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bounds {
    /// A frame is late once it waited longer than this since it arrived (or since the cursor
    /// started, for frames older than that: a replayed GOP is not late at once): `--queue-time`.
    pub max_wait_ms: Option<u64>,
    /// Bytes from the cursor's next frame to the newest frame.
    pub max_bytes: Option<u64>,
}

/// One cursor's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CursorStats {
    pub frames_sent: u64,
    pub frames_dropped: u64,
    pub bytes_dropped: u64,
    /// Each time frames were dropped (not each frame).
    pub drop_events: u64,
}

/// The store's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Frames that became records (read, or copied in).
    pub frames_stored: u64,
    /// Frames lost at the input: too large, or no room.
    pub input_frames_dropped: u64,
    pub input_bytes_dropped: u64,
    /// Bytes outside every NAL unit, as `AnnexBReader::skipped_bytes`, plus dropped access units.
    pub skipped_bytes: u64,
    /// Bytes committed.
    pub bytes_read: u64,
    /// Times the retained GOP gave way for room.
    pub retention_drops: u64,
    /// Audio frames stored, and lost at the input (no room in the arena or no record slot).
    pub audio_frames_stored: u64,
    pub audio_frames_dropped: u64,
}

/// What the store holds now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Depth {
    /// Ring bytes in use (records, the gaps between them, and the access unit being read).
    pub bytes: u64,
    pub frames: usize,
    /// Stream time from the oldest to the newest admitted frame.
    pub ms: u64,
}

/// Whether the writer has room, and if not why: what the last [`FrameStore::write_buf`] or
/// [`FrameStore::push_copy`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Room {
    Free,
    /// Live mode: the ring is full, every cursor holds its oldest frame and none of them is late.
    /// Stop reading the input until a cursor advances or `until_ms` (when the oldest frame
    /// becomes late), then ask again.
    Hold {
        until_ms: u64,
    },
    /// Backpressure mode: the ring is full until the slowest cursor advances.
    Backpressure,
    /// The oldest frame is in flight (or not yet admitted): room comes when it is written, or
    /// when its connection is given up. For a live input that cannot wait, the access unit
    /// being read was dropped to make some room.
    Stalled,
}

/// Why [`FrameStore::push_copy`] did not store a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotStored {
    /// No cursor and no retention needed it (every cursor took it from the driver's buffer).
    NotNeeded,
    /// Larger than `max_frame_bytes` or `max_nals_per_frame`: lost.
    TooLarge,
    /// No room ([`FrameStore::room`] says why). With [`Room::Stalled`] the frame is lost; with
    /// [`Room::Hold`] or [`Room::Backpressure`] it may be offered again later, or given up with
    /// [`FrameStore::frame_lost`].
    NoRoom,
    /// A byte stream's access unit is being read into the ring: copy-in would split it.
    StreamOpen,
}

/// A frame handed to a cursor and not yet written: its bytes stay put until the token is given
/// back to [`FrameStore::advance`] or [`FrameStore::abandon`]. Not `Clone`: one per cursor.
#[must_use = "give the token back with advance or abandon, or the frame stays pinned"]
#[derive(Debug, PartialEq, Eq)]
pub struct InFlight {
    cursor: CursorId,
    seq: u64,
}

impl InFlight {
    pub fn cursor(&self) -> CursorId {
        self.cursor
    }

    pub fn seq(&self) -> u64 {
        self.seq
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Read from a byte stream; the caller has not yet admitted or discarded it.
    Unadmitted,
    Admitted,
    /// Not a frame to send (no picture, say): cursors pass over it.
    Discarded,
}

/// One frame: its bytes and NAL units in the rings.
#[derive(Clone, Copy, Debug)]
struct Record {
    seq: u64,
    track: Track,
    timestamp_ms: u64,
    /// Presentation time minus decode time (B-frames), for the FLV tag header.
    composition_ms: i32,
    arrival_ms: u64,
    keyframe: bool,
    /// Logical byte range: first NAL header byte to last NAL byte.
    start: u64,
    end: u64,
    /// Logical index of the first NAL unit in the NAL ring.
    nal_first: u64,
    nal_count: u32,
    state: State,
    /// Frames were lost just before this one; the cursors in the set sent them anyway (straight
    /// from a camera buffer). Any other cursor must not take this frame unless it is a keyframe.
    gap: Option<CursorSet>,
}

impl Record {
    fn is_video_keyframe(&self) -> bool {
        self.track == Track::Video && self.keyframe
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct NalSpan {
    start: u64,
    len: u32,
    nal_type: u8,
}

#[derive(Clone, Copy, Debug, Default)]
struct Cursor {
    active: bool,
    /// The next record to take.
    pos: u64,
    in_flight: Option<u64>,
    /// Frames are dropped until a video keyframe.
    waiting: bool,
    /// When the cursor (re)started: frames are not late for it before `since + max_wait`.
    since_ms: u64,
    bounds: Bounds,
    stats: CursorStats,
}

/// The bounded frame store. See the module documentation.
pub struct FrameStore {
    /// The video ring (`..capacity`), then the audio arena (`capacity..`): one buffer, so that
    /// every external part of every frame names it.
    ring: Vec<u8>,
    /// The video ring's size.
    capacity: usize,
    audio_capacity: usize,
    /// Next audio byte to write (logical, in the arena).
    audio_head: u64,
    /// Next byte to write (logical).
    head: u64,
    /// Bytes before this have been scanned; scanning pauses while no record or NAL slot is free
    /// (frames are then held, not lost) and goes on when one is.
    scanned: u64,
    /// The end of input was reached: once everything is scanned, the last access unit ends.
    finishing: bool,
    /// The last early wrap: the head jumped from the first position to the second, the start of
    /// the next lap, leaving the end of the ring unused. A NAL unit that spans it is two ranges,
    /// as one that spans the ring's end.
    jump: Option<(u64, u64)>,
    /// The most ring bytes ever held (records, the access unit being read, and what a jump left
    /// unused): byte streams wrap early past twice this, so a lightly used ring keeps to its
    /// first pages (a ring's pages all become resident as writes go round it).
    high_water: u64,
    /// Off only in tests that need the ring's own end.
    early_wrap: bool,
    /// How many bytes the last `write_buf` offered.
    writable: usize,
    records: VecDeque<Record>,
    max_frames: usize,
    /// Sequence number of the next record.
    next_seq: u64,
    /// Records before this are admitted or discarded.
    admitted: u64,
    nals: Vec<NalSpan>,
    nal_head: u64,
    /// The access unit being read: its first NAL unit's position and NAL index.
    pending: Option<(u64, u64)>,
    scanner: Scanner,
    max_frame_bytes: usize,
    max_nals_per_frame: usize,
    cursors: [Cursor; MAX_CURSORS],
    retention: bool,
    /// The newest video keyframe, kept with what follows it for new cursors (retention on,
    /// nothing lost since).
    retain_from: Option<u64>,
    /// Frames were lost; the next stored video frame gets this gap.
    pending_gap: Option<CursorSet>,
    backpressure: bool,
    /// The input can wait (a pipe's writer blocks): a full ring holds it rather than dropping
    /// frames that are not late. A camera cannot wait: its frames would be lost instead.
    input_can_wait: bool,
    room: Room,
    stats: StoreStats,
}

impl std::fmt::Debug for FrameStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameStore")
            .field("capacity", &self.capacity)
            .field("head", &self.head)
            .field("tail", &self.tail())
            .field("records", &self.records.len())
            .field("next_seq", &self.next_seq)
            .field("admitted", &self.admitted)
            .field("room", &self.room)
            .finish()
    }
}

/// A frame, borrowed from the store: no mutation of the store can happen while it lives.
#[derive(Clone, Copy, Debug)]
pub struct FrameRef<'a> {
    store: &'a FrameStore,
    record: &'a Record,
}

/// A contiguous range of [`FrameStore::ring`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingRange {
    pub start: usize,
    pub len: usize,
}

impl RingRange {
    /// The chunk writer's external part for this range; the external buffer is
    /// [`FrameStore::ring`].
    pub fn part(self) -> Part {
        Part::external(self.start, self.len)
    }
}

/// One NAL unit of a frame: one range of the ring, or two when it wraps around the ring's end.
#[derive(Clone, Copy, Debug)]
pub struct Nal<'a> {
    pub nal_type: u8,
    ring: &'a [u8],
    first: RingRange,
    second: RingRange,
}

impl<'a> Nal<'a> {
    /// Length in bytes, header included.
    pub fn len(&self) -> usize {
        self.first.len + self.second.len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The ranges of [`FrameStore::ring`] holding it, in order (the second one only if it wraps).
    pub fn ranges(&self) -> impl Iterator<Item = RingRange> {
        [self.first, self.second].into_iter().filter(|r| r.len > 0)
    }

    /// The muxer's view of it: its bytes with their offsets in the ring.
    pub fn pieces(&self) -> crate::media::flv::NalPieces<'a> {
        let (first, second) = self.bytes();
        crate::media::flv::NalPieces {
            nal_type: self.nal_type,
            first,
            first_at: self.first.start,
            second,
            second_at: self.second.start,
        }
    }

    /// Its bytes: the part before the ring's end, and the part after (empty unless it wraps).
    pub fn bytes(&self) -> (&'a [u8], &'a [u8]) {
        let get = |r: RingRange| self.ring.get(r.start..r.start + r.len).unwrap_or(&[]);
        (get(self.first), get(self.second))
    }
}

impl<'a> FrameRef<'a> {
    pub fn seq(&self) -> u64 {
        self.record.seq
    }

    pub fn track(&self) -> Track {
        self.record.track
    }

    pub fn timestamp_ms(&self) -> u64 {
        self.record.timestamp_ms
    }

    /// Presentation time minus decode time, in ms (non-zero only with B-frames).
    pub fn composition_ms(&self) -> i32 {
        self.record.composition_ms
    }

    /// When it was stored (the `now_ms` of the commit that completed it, or of `push_copy`).
    pub fn arrival_ms(&self) -> u64 {
        self.record.arrival_ms
    }

    pub fn keyframe(&self) -> bool {
        self.record.keyframe
    }

    /// Whether it contains an IDR slice (what a byte-stream frame's keyframe flag should be).
    pub fn is_idr(&self) -> bool {
        self.nals().any(|nal| nal.nal_type == NAL_IDR)
    }

    /// The bytes of all its NAL units (video), or of the audio frame.
    pub fn payload_len(&self) -> usize {
        match self.record.track {
            Track::Video => self.nals().map(|nal| nal.len()).sum(),
            Track::Audio => (self.record.end - self.record.start) as usize,
        }
    }

    /// An audio frame's bytes, one range of [`FrameStore::ring`] (an audio frame never wraps);
    /// `None` for a video frame.
    pub fn audio_range(&self) -> Option<RingRange> {
        if self.record.track != Track::Audio {
            return None;
        }
        let arena = self.store.audio_capacity as u64;
        Some(RingRange {
            start: self.store.capacity + (self.record.start % arena.max(1)) as usize,
            len: (self.record.end - self.record.start) as usize,
        })
    }

    /// An audio frame's bytes.
    pub fn audio_bytes(&self) -> &'a [u8] {
        self.audio_range()
            .and_then(|r| self.store.ring.get(r.start..r.start + r.len))
            .unwrap_or(&[])
    }

    pub fn nal_count(&self) -> usize {
        self.record.nal_count as usize
    }

    /// Its NAL units in stream order.
    pub fn nals(&self) -> impl Iterator<Item = Nal<'a>> + Clone + 'a {
        let store = self.store;
        let first = self.record.nal_first;
        (0..u64::from(self.record.nal_count)).map(move |i| store.nal(first + i))
    }

    /// The parts of an FLV AVC video tag body after its 5-byte header, as `AvcMuxer` makes them:
    /// for each NAL unit but AUDs, its 4-byte length inline and its bytes as one or two external
    /// ranges of [`FrameStore::ring`]. Appends to `out`, which the caller reuses.
    pub fn push_avc_parts(&self, out: &mut Vec<Part>) {
        for nal in self.nals() {
            if nal.nal_type == NAL_AUD || nal.is_empty() {
                continue;
            }
            // A NAL unit is shorter than the ring, whose size fits the limits checked at
            // construction; a u32 length cannot be exceeded.
            let len = u32::try_from(nal.len()).unwrap_or(u32::MAX);
            out.push(Part::inline(&len.to_be_bytes()));
            out.extend(nal.ranges().map(RingRange::part));
        }
    }
}

impl FrameStore {
    /// A store of the given sizes, all allocated now.
    pub fn new(config: StoreConfig) -> FrameStore {
        let max_frames = config.max_frames.max(2);
        FrameStore {
            ring: vec![0; config.ring_bytes() + config.audio_bytes],
            capacity: config.ring_bytes(),
            audio_capacity: config.audio_bytes,
            audio_head: 0,
            head: 0,
            scanned: 0,
            finishing: false,
            jump: None,
            high_water: 0,
            early_wrap: true,
            writable: 0,
            records: VecDeque::with_capacity(max_frames),
            max_frames,
            next_seq: 0,
            admitted: 0,
            nals: vec![NalSpan::default(); config.nal_slots()],
            nal_head: 0,
            pending: None,
            scanner: Scanner::new(),
            max_frame_bytes: config.max_frame_bytes.max(1),
            max_nals_per_frame: config.max_nals_per_frame.max(1),
            cursors: [Cursor::default(); MAX_CURSORS],
            retention: false,
            retain_from: None,
            pending_gap: None,
            backpressure: false,
            input_can_wait: true,
            room: Room::Free,
            stats: StoreStats::default(),
        }
    }

    /// The ring: every [`RingRange`] and every external part made from a frame indexes it.
    pub fn ring(&self) -> &[u8] {
        &self.ring
    }

    /// The sizes allocated at construction (ring bytes, record slots, NAL slots), which never
    /// change.
    pub fn capacities(&self) -> (usize, usize, usize) {
        (self.ring.len(), self.records.capacity(), self.nals.len())
    }

    /// Keep the GOP from the newest keyframe for new cursors (sources that cannot make a
    /// keyframe on demand).
    pub fn set_retention(&mut self, retention: bool) {
        self.retention = retention;
        if !retention {
            self.retain_from = None;
        }
    }

    /// A file input: a full ring refuses input until the slowest cursor advances, and no cursor
    /// ever drops a frame (neither for room nor for its bounds).
    pub fn set_backpressure(&mut self, backpressure: bool) {
        self.backpressure = backpressure;
    }

    /// Whether the input can be held back ([`Room::Hold`]); if not (a camera, whose buffers go
    /// back to the driver), a full ring drops whole GOPs of the cursors that hold it instead.
    pub fn set_input_can_wait(&mut self, can_wait: bool) {
        self.input_can_wait = can_wait;
    }

    /// No early wrap: byte streams go round the whole ring (tests of its end).
    #[cfg(test)]
    pub(crate) fn without_early_wrap(mut self) -> FrameStore {
        self.early_wrap = false;
        self
    }

    /// Whether frames are kept for new cursors ([`set_retention`](Self::set_retention)).
    pub fn retention(&self) -> bool {
        self.retention
    }

    /// The sequence number the next stored frame will have.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    pub fn stats(&self) -> StoreStats {
        let mut stats = self.stats;
        stats.skipped_bytes = stats.skipped_bytes.saturating_add(self.scanner.skipped);
        stats
    }

    pub fn depth(&self) -> Depth {
        let admitted = || self.records.iter().filter(|r| r.state == State::Admitted);
        let ms = match (admitted().next(), admitted().next_back()) {
            (Some(first), Some(last)) => last.timestamp_ms.saturating_sub(first.timestamp_ms),
            _ => 0,
        };
        Depth {
            bytes: self.span_len(self.tail(), self.head) + (self.audio_head - self.audio_tail()),
            frames: self.records.len(),
            ms,
        }
    }

    /// What the writer found last.
    pub fn room(&self) -> Room {
        self.room
    }

    // ---- The byte-stream writer ----

    /// Free space at the head to read into (contiguous: up to the ring's end or the oldest byte
    /// still held). Makes room first if needed, by the drop policy. Empty when there is no room:
    /// [`room`](Self::room) says why and what to wait for.
    pub fn write_buf(&mut self, now_ms: u64) -> &mut [u8] {
        self.writable = 0;
        self.scan(now_ms);
        if self.finishing {
            // The last stream's end is not scanned yet: a new stream waits for it.
            self.room = Room::Stalled;
            return &mut [];
        }
        let capacity = self.capacity as u64;
        let want = (READ_SLACK as u64).min(capacity);
        self.make_room(want, 2, now_ms);
        let mut free = capacity - (self.head - self.tail());
        if free == 0
            && self.room == Room::Stalled
            && !self.backpressure
            && !self.input_can_wait
            && self.pending_region().is_some()
        {
            // Live input that cannot wait, with the ring held by frames in flight: the access
            // unit being read is lost rather than the input stalled. (An input that can wait,
            // a pipe, waits: its writer blocks.)
            self.lose_pending();
            free = capacity - (self.head - self.tail());
        }
        // Without what a jump left unused: that is not held.
        self.high_water = self.high_water.max(self.span_len(self.tail(), self.head));
        if self.wrap_early(0) {
            free = capacity - (self.head - self.tail());
        }
        // Reads are not bounded by the free record and NAL slots: scanning pauses when they run
        // out, and what was read waits in the ring. They are bounded by READ_CHUNK, so that a
        // file is not read far ahead of what is sent.
        let at = (self.head % capacity) as usize;
        let len = free.min(capacity - at as u64).min(READ_CHUNK) as usize;
        self.writable = len;
        &mut self.ring[at..at + len]
    }

    /// `n` bytes were read into the slice [`write_buf`](Self::write_buf) returned (clamped to
    /// its length). Finds the access units they complete; each becomes an unadmitted record.
    pub fn commit(&mut self, n: usize, now_ms: u64) {
        let n = n.min(self.writable);
        self.writable = 0;
        if n == 0 {
            return;
        }
        self.head += n as u64;
        self.stats.bytes_read = self.stats.bytes_read.saturating_add(n as u64);
        self.scan(now_ms);
    }

    /// End of input: the last access unit is complete once everything read is scanned. (A new
    /// stream may follow: the scanner starts afresh.)
    pub fn finish(&mut self, now_ms: u64) {
        self.finishing = true;
        self.scan(now_ms);
    }

    /// Scans what was read and not yet scanned, as far as free record and NAL slots allow (each
    /// event takes at most one): the caller calls it after frames were sent, before looking for
    /// new ones. [`write_buf`](Self::write_buf) and [`commit`](Self::commit) call it too.
    pub fn scan(&mut self, now_ms: u64) {
        if self.scanned_all() {
            return;
        }
        self.reclaim();
        self.release_retention_for_slots();
        let capacity = self.capacity as u64;
        while self.free_slots() >= 2 {
            if self.scanned < self.head {
                let at = (self.scanned % capacity) as usize;
                let len = (self.head - self.scanned).min(capacity - at as u64) as usize;
                let (used, event) = self.scanner.scan(&self.ring[at..at + len], self.scanned);
                self.scanned += used as u64;
                if let Some(event) = event {
                    self.on_event(event, now_ms);
                }
                if let Some(start) = self.pending_region() {
                    if self.span_len(start, self.scanned) > self.max_frame_bytes as u64 {
                        self.lose_pending();
                    }
                }
                continue;
            }
            if !self.finishing {
                return;
            }
            match self.scanner.finish(self.head) {
                Some(event) => self.on_event(event, now_ms),
                None => {
                    self.finishing = false;
                    self.scanner = Scanner::new_after(&self.scanner);
                    self.pending = None;
                    return;
                }
            }
        }
    }

    /// Moves the head to the start of the next lap when the ring is lightly used: the head is
    /// past twice the high-water mark, everything held lies in this lap, far enough from its
    /// start to leave room, and no start code is half read or just ended (its zeros, or the NAL
    /// unit it opens, would straddle the jump).
    /// Returns whether it jumped.
    /// `need`: bytes that must fit at the ring's start (a frame about to be copied in whole).
    fn wrap_early(&mut self, need: u64) -> bool {
        let capacity = self.capacity as u64;
        let at = self.head % capacity;
        let lap_start = self.head - at;
        let tail = self.tail();
        let soft = self
            .high_water
            .saturating_mul(2)
            .max(MIN_EARLY_WRAP.min(capacity / 4))
            .min(capacity);
        let room = tail.saturating_sub(lap_start);
        let min_room = (4 * READ_SLACK as u64).min(capacity / 8).max(need).max(1);
        // Not right after a start code either: the NAL unit it opens would begin at the jump's
        // start and, if empty, span only the unused part (reported as an empty NAL unit).
        let quiet = self.scanned == self.head
            && !self.finishing
            && self.scanner.zero_run() == 0
            && self.scanner.open_start() != Some(self.head);
        if !self.early_wrap || at < soft || tail < lap_start || room < min_room || !quiet {
            return false;
        }
        let next = lap_start + capacity;
        self.jump = Some((self.head, next));
        self.head = next;
        self.scanned = next;
        true
    }

    /// The bytes from logical `start` to `end`, without the part of the ring a jump left unused.
    fn span_len(&self, start: u64, end: u64) -> u64 {
        let len = end.saturating_sub(start);
        match self.jump {
            Some((from, to)) if start <= from && end >= to => len - (to - from),
            _ => len,
        }
    }

    /// Whether everything read has been scanned (and the end of input, if it came, taken).
    pub fn scanned_all(&self) -> bool {
        self.scanned == self.head && !self.finishing
    }

    /// The input restarted (or lost frames, say a camera's sequence jumped): what was being read
    /// is dropped, and the next frame follows lost input.
    pub fn input_gap(&mut self) {
        self.skip_unscanned();
        if self.pending_region().is_some() {
            self.lose_pending();
        }
        self.scanner = Scanner::new_after(&self.scanner);
        self.pending = None;
        self.note_loss(CursorSet::EMPTY);
    }

    /// The byte stream is replaced by a new one (the input was opened again). An access unit the
    /// old stream left unfinished is dropped, as lost input; its complete frames stay and are
    /// sent (the new stream's first frame must be a keyframe anyway: the pipeline sees to it),
    /// also those not scanned yet when it ended ([`finish`](Self::finish)).
    pub fn new_stream(&mut self) {
        if self.finishing {
            // The old stream ended cleanly and its end is still being scanned (no free slot):
            // its frames are kept, and the new stream waits for them (`write_buf`).
            return;
        }
        self.skip_unscanned();
        if self.pending_region().is_some() {
            self.lose_pending();
        }
        self.scanner = Scanner::new_after(&self.scanner);
        self.pending = None;
    }

    /// What the old stream left unscanned (no slot was free) is skipped: counted as lost input.
    fn skip_unscanned(&mut self) {
        if self.scanned < self.head || self.finishing {
            if self.pending_region().is_some() {
                self.lose_pending();
            } else {
                self.note_loss(CursorSet::EMPTY);
            }
            let bytes = self.head - self.scanned;
            self.stats.skipped_bytes = self.stats.skipped_bytes.saturating_add(bytes);
            self.scanned = self.head;
            self.finishing = false;
        }
    }

    /// A frame refused by [`push_copy`](Self::push_copy) (held back) is given up; the cursors in
    /// `had_it` sent it from the driver's buffer. The others wait for a keyframe.
    pub fn frame_lost(&mut self, had_it: CursorSet) {
        self.lose_input(0, had_it);
    }

    /// The oldest frame read from the byte stream and not yet admitted or discarded.
    pub fn next_unadmitted(&self) -> Option<FrameRef<'_>> {
        self.record(self.admitted)
            .filter(|r| r.state == State::Unadmitted)
            .map(|record| FrameRef {
                store: self,
                record,
            })
    }

    /// Admits [`next_unadmitted`](Self::next_unadmitted) with its timestamp and keyframe flag
    /// (the pipeline's): cursors see it from now on.
    pub fn admit(&mut self, timestamp_ms: u64, keyframe: bool) {
        self.admit_composed(timestamp_ms, 0, keyframe);
    }

    /// [`admit`](Self::admit), for a frame whose presentation time is `composition_ms` after its
    /// decode time (B-frames).
    /// Returns the admitted frame's sequence number (audio stored before it renumbered it).
    pub fn admit_composed(
        &mut self,
        timestamp_ms: u64,
        composition_ms: i32,
        keyframe: bool,
    ) -> Option<u64> {
        let record = self.record_mut(self.admitted)?;
        if record.state != State::Unadmitted {
            return None;
        }
        record.state = State::Admitted;
        record.timestamp_ms = timestamp_ms;
        record.composition_ms = composition_ms;
        record.keyframe = keyframe;
        let seq = record.seq;
        if record.is_video_keyframe() && self.retention {
            self.retain_from = Some(seq);
        }
        self.admitted += 1;
        Some(seq)
    }

    /// Discards [`next_unadmitted`](Self::next_unadmitted): not a frame to send. Its bytes go
    /// with the records around it.
    pub fn discard(&mut self) {
        let seq = self.admitted;
        let Some(record) = self.record_mut(seq) else {
            return;
        };
        if record.state != State::Unadmitted {
            return;
        }
        record.state = State::Discarded;
        let gap = record.gap.take();
        self.admitted += 1;
        if let Some(gap) = gap {
            // The loss before it applies to the next frame.
            match self.record_mut(seq + 1) {
                Some(next) => next.gap = Some(merge_gap(next.gap, gap)),
                None => self.pending_gap = Some(merge_gap(self.pending_gap, gap)),
            }
        }
    }

    // ---- Copy-in ----

    /// A camera frame (NAL units without start codes, in a driver buffer): `sent` are the
    /// cursors that sent it straight from that buffer (each had
    /// [`may_send_directly`](Self::may_send_directly)). Copies it into the ring once, if any
    /// other cursor or the retained GOP needs it; returns its sequence number.
    pub fn push_copy(
        &mut self,
        track: Track,
        timestamp_ms: u64,
        keyframe: bool,
        nals: &[&[u8]],
        now_ms: u64,
        sent: CursorSet,
    ) -> Result<u64, NotStored> {
        self.push_copy_nals(
            track,
            timestamp_ms,
            keyframe,
            nals.iter().copied(),
            now_ms,
            sent,
        )
    }

    /// [`push_copy`](Self::push_copy), with the NAL units given by an iterator (a camera frame's,
    /// found in its buffer), so that nothing is collected.
    pub fn push_copy_nals<'n, I>(
        &mut self,
        track: Track,
        timestamp_ms: u64,
        keyframe: bool,
        nals: I,
        now_ms: u64,
        sent: CursorSet,
    ) -> Result<u64, NotStored>
    where
        I: Iterator<Item = &'n [u8]> + Clone,
    {
        self.copy_in(track, timestamp_ms, keyframe, nals, now_ms, sent, true)
    }

    /// A camera video frame copied in like [`push_copy_nals`](Self::push_copy_nals) but not
    /// admitted: it waits, as an access unit read from a byte stream does, until
    /// [`admit_composed`](Self::admit_composed) (with the stamps given there) or
    /// [`discard`](Self::discard), and audio pushed meanwhile goes before it. For a live audio
    /// track that lags the camera: the video waits for the audio of its time. Frames held so
    /// are admitted in order, and none is pushed admitted while one is held.
    pub fn hold_copy_nals<'n, I>(
        &mut self,
        timestamp_ms: u64,
        keyframe: bool,
        nals: I,
        now_ms: u64,
    ) -> Result<u64, NotStored>
    where
        I: Iterator<Item = &'n [u8]> + Clone,
    {
        self.copy_in(
            Track::Video,
            timestamp_ms,
            keyframe,
            nals,
            now_ms,
            CursorSet::EMPTY,
            false,
        )
    }

    /// Whether a frame is held, unadmitted (read from a byte stream, or a held camera copy).
    pub fn holds_unadmitted(&self) -> bool {
        self.admitted < self.next_seq
    }

    #[allow(clippy::too_many_arguments)]
    fn copy_in<'n, I>(
        &mut self,
        track: Track,
        timestamp_ms: u64,
        keyframe: bool,
        nals: I,
        now_ms: u64,
        sent: CursorSet,
        admit: bool,
    ) -> Result<u64, NotStored>
    where
        I: Iterator<Item = &'n [u8]> + Clone,
    {
        debug_assert!(
            !admit || !self.holds_unadmitted(),
            "an admitted copy would overtake a held frame"
        );
        let video_key = track == Track::Video && keyframe;
        // A cursor with frames to send first waits for nothing once it reaches them.
        for index in 0..MAX_CURSORS {
            self.settle(CursorId(index as u8));
        }
        for index in 0..MAX_CURSORS {
            if sent.contains(CursorId(index as u8)) && video_key {
                self.cursors[index].waiting = false;
            }
        }
        let retain = self.retention && (video_key || self.retain_from.is_some());
        let wanted = (0..MAX_CURSORS).any(|index| {
            let id = CursorId(index as u8);
            let cursor = &self.cursors[index];
            cursor.active
                && !sent.contains(id)
                && (video_key || track == Track::Audio || !self.blocked(id))
        });
        if !retain && !wanted {
            if track == Track::Video {
                // Not stored: the retained chain (if any) is broken.
                self.retain_from = None;
            }
            return Err(NotStored::NotNeeded);
        }
        if self.pending_region().is_some() || self.scanner.has_pending() || !self.scanned_all() {
            self.room = Room::Stalled;
            return Err(NotStored::StreamOpen);
        }
        let total: usize = nals.clone().map(|nal| nal.len()).sum();
        let count = nals.clone().filter(|nal| !nal.is_empty()).count();
        if total > self.max_frame_bytes || count > self.max_nals_per_frame {
            self.lose_input(total, sent);
            return Err(NotStored::TooLarge);
        }
        if !self.make_room(total as u64, count + 1, now_ms) {
            // Held back (backpressure, or nothing late yet): the caller may offer it again, or
            // give it up with `input_gap`. Stalled: it is lost.
            if self.room == Room::Stalled {
                self.lose_input(total, sent);
            }
            return Err(NotStored::NoRoom);
        }
        let capacity = self.capacity as u64;
        // As a byte stream does: a lightly used ring keeps to its first pages.
        self.high_water = self
            .high_water
            .max(self.span_len(self.tail(), self.head) + total as u64);
        self.wrap_early(total as u64);
        let start = self.head;
        let nal_first = self.nal_head;
        for nal in nals.filter(|nal| !nal.is_empty()) {
            let at = (self.head % capacity) as usize;
            let first = nal.len().min(self.capacity - at);
            self.ring[at..at + first].copy_from_slice(&nal[..first]);
            self.ring[..nal.len() - first].copy_from_slice(&nal[first..]);
            let slot = (self.nal_head % self.nals.len() as u64) as usize;
            self.nals[slot] = NalSpan {
                start: self.head,
                len: nal.len() as u32,
                nal_type: nal[0] & 0x1f,
            };
            self.nal_head += 1;
            self.head += nal.len() as u64;
        }
        // Copied in whole: nothing to scan.
        self.scanned = self.head;
        let seq = self.next_seq;
        let gap = if track == Track::Video {
            self.pending_gap.take()
        } else {
            None
        };
        self.records.push_back(Record {
            seq,
            track,
            timestamp_ms,
            composition_ms: 0,
            arrival_ms: now_ms,
            keyframe,
            start,
            end: self.head,
            nal_first,
            nal_count: (self.nal_head - nal_first) as u32,
            state: if admit {
                State::Admitted
            } else {
                State::Unadmitted
            },
            gap,
        });
        self.next_seq += 1;
        self.stats.frames_stored += 1;
        if !admit {
            return Ok(seq);
        }
        self.admitted = self.next_seq;
        if video_key && self.retention {
            self.retain_from = Some(seq);
        }
        for index in 0..MAX_CURSORS {
            let cursor = &mut self.cursors[index];
            if sent.contains(CursorId(index as u8)) && cursor.active && cursor.pos == seq {
                cursor.pos = seq + 1;
            }
        }
        Ok(seq)
    }

    /// An audio frame (a raw AAC frame, say), copied into the audio arena. Its record goes after
    /// every admitted record and before the access units read but not yet admitted (they are
    /// renumbered), so that the caller, which admits video and pushes audio in timestamp order,
    /// gets one sequence in that order. Stored only if some cursor or the retained GOP may need
    /// it; a frame that does not fit (the arena or the record ring is full of frames a cursor
    /// still holds) is lost, and counted: audio decodes frame by frame, so nothing else is lost
    /// with it. Returns its sequence number.
    pub fn push_audio(
        &mut self,
        timestamp_ms: u64,
        payload: &[u8],
        now_ms: u64,
    ) -> Result<u64, NotStored> {
        let len = payload.len() as u64;
        let arena = self.audio_capacity as u64;
        if payload.is_empty() || len > arena / 4 {
            self.stats.audio_frames_dropped += 1;
            return Err(NotStored::TooLarge);
        }
        self.reclaim();
        let retain = self.retention && self.retain_from.is_some();
        let wanted = self.cursors.iter().any(|c| c.active && !c.waiting);
        if !retain && !wanted {
            return Err(NotStored::NotNeeded);
        }
        let start = loop {
            // A frame never wraps around the arena's end: it starts the next lap instead.
            let mut start = self.audio_head;
            let at = start % arena;
            if at + len > arena {
                start += arena - at;
            }
            let fits = start + len - self.audio_tail() <= arena;
            if fits && self.records.len() < self.max_frames {
                break start;
            }
            // What holds the room (the oldest audio frame for bytes, the oldest record for a
            // slot) may be held by the retained GOP alone: it gives way, as it does for video.
            let holder = if fits {
                self.records.front()
            } else {
                self.records.iter().find(|r| r.track == Track::Audio)
            };
            if !self.give_way_if_only_retained(holder.map(|r| r.seq)) {
                self.stats.audio_frames_dropped += 1;
                return Err(NotStored::NoRoom);
            }
        };
        let at = (start % arena) as usize + self.capacity;
        self.ring[at..at + payload.len()].copy_from_slice(payload);
        self.audio_head = start + len;
        let seq = self.admitted;
        let index = (seq - self.front_seq()) as usize;
        for record in self.records.iter_mut().skip(index) {
            record.seq += 1;
        }
        self.records.insert(
            index,
            Record {
                seq,
                track: Track::Audio,
                timestamp_ms,
                composition_ms: 0,
                arrival_ms: now_ms,
                keyframe: false,
                start,
                end: start + len,
                nal_first: 0,
                nal_count: 0,
                state: State::Admitted,
                gap: None,
            },
        );
        self.next_seq += 1;
        self.admitted += 1;
        self.stats.audio_frames_stored += 1;
        Ok(seq)
    }

    // ---- Cursors ----

    /// A new cursor (a new destination), started as by [`cursor_restart`](Self::cursor_restart);
    /// `None` when [`MAX_CURSORS`] are in use.
    pub fn add_cursor(&mut self, bounds: Bounds, now_ms: u64) -> Option<CursorId> {
        let index = self.cursors.iter().position(|c| !c.active)?;
        self.cursors[index] = Cursor {
            active: true,
            pos: self.admitted,
            in_flight: None,
            waiting: true,
            since_ms: now_ms,
            bounds,
            stats: CursorStats::default(),
        };
        let id = CursorId(index as u8);
        self.cursor_restart(id, now_ms);
        Some(id)
    }

    /// The destination is gone: its frames are no longer held for it.
    pub fn remove_cursor(&mut self, cursor: CursorId) {
        if let Some(c) = self.cursors.get_mut(cursor.index()) {
            c.active = false;
            c.in_flight = None;
        }
    }

    pub fn set_bounds(&mut self, cursor: CursorId, bounds: Bounds) {
        if let Some(c) = self.cursors.get_mut(cursor.index()) {
            c.bounds = bounds;
        }
    }

    pub fn cursor_stats(&self, cursor: CursorId) -> CursorStats {
        self.cursors
            .get(cursor.index())
            .map(|c| c.stats)
            .unwrap_or_default()
    }

    /// A new connection for this cursor: it starts at the oldest keyframe it can decode from (in
    /// the retained GOP, or among the frames it still had) that is not late by its time bound
    /// (else the newest), so no frame worth sending is skipped; with none, it waits for the next
    /// keyframe. Whatever was in flight is forgotten (call
    /// [`abandon`](Self::abandon) first).
    pub fn cursor_restart(&mut self, cursor: CursorId, now_ms: u64) {
        let Some(c) = self.cursors.get(cursor.index()).copied() else {
            return;
        };
        let front = self.front_seq();
        let floor = match self.retain_from {
            Some(from) if self.retention => from.min(c.pos),
            _ => c.pos,
        }
        .max(front);
        // Frames after a loss are no use to a new connection, even to one that had them.
        let after_gap = self
            .records
            .iter()
            .rev()
            .take_while(|r| r.seq >= floor)
            .find(|r| r.gap.is_some() && r.seq < self.admitted)
            .map(|r| r.seq);
        let floor = floor.max(after_gap.unwrap_or(0));
        let usable = |r: &&Record| {
            r.seq >= floor
                && r.seq < self.admitted
                && r.state == State::Admitted
                && r.is_video_keyframe()
        };
        // The oldest keyframe that has not waited longer than the cursor's time bound, so that
        // nothing still worth sending is skipped; else the newest.
        let fresh = |r: &&Record| {
            c.bounds
                .max_wait_ms
                .is_none_or(|max| now_ms.saturating_sub(r.arrival_ms) <= max)
        };
        let oldest_fresh = self.records.iter().filter(usable).find(fresh);
        let newest = self.records.iter().rev().find(usable);
        let start = oldest_fresh
            .or(newest)
            .map(|r| r.seq)
            .filter(|_| self.pending_gap.is_none());
        let c = &mut self.cursors[cursor.index()];
        c.in_flight = None;
        c.since_ms = now_ms;
        match start {
            Some(k) => {
                c.pos = k;
                c.waiting = false;
            }
            None => {
                c.pos = self.admitted.max(c.pos);
                c.waiting = true;
            }
        }
    }

    /// Whether a frame may go to this cursor's idle connection straight from its source (a
    /// camera buffer): nothing waits for it in the store, and the frame is a keyframe or the
    /// cursor lost nothing since the last one.
    pub fn may_send_directly(&self, cursor: CursorId, keyframe: bool) -> bool {
        let Some(c) = self.cursors.get(cursor.index()) else {
            return false;
        };
        c.active
            && c.in_flight.is_none()
            && c.pos >= self.next_seq
            && (keyframe || !self.blocked(cursor))
    }

    /// Whether the cursor's next frame waited longer than its time bound.
    pub fn is_late(&self, cursor: CursorId, now_ms: u64) -> bool {
        let Some(c) = self.cursors.get(cursor.index()) else {
            return false;
        };
        let Some(record) = self.record(c.pos).filter(|r| r.seq < self.admitted) else {
            return false;
        };
        c.bounds
            .max_wait_ms
            .is_some_and(|max| now_ms.saturating_sub(record.arrival_ms.max(c.since_ms)) > max)
    }

    /// The next frame to send on this cursor's connection, after its drop policy ran; `None` if
    /// nothing is to be sent now, or a frame is already in flight.
    pub fn take(&mut self, cursor: CursorId, now_ms: u64) -> Option<InFlight> {
        let c = self.cursors.get(cursor.index())?;
        if !c.active || c.in_flight.is_some() {
            return None;
        }
        self.enforce(cursor, now_ms);
        let c = &self.cursors[cursor.index()];
        let seq = c.pos;
        self.record(seq)
            .filter(|r| seq < self.admitted && r.state == State::Admitted)?;
        let c = &mut self.cursors[cursor.index()];
        c.in_flight = Some(seq);
        c.pos = seq + 1;
        Some(InFlight { cursor, seq })
    }

    /// The frame in flight. Its record exists: the token pins it.
    pub fn frame(&self, token: &InFlight) -> FrameRef<'_> {
        let index = (token.seq - self.front_seq()) as usize;
        FrameRef {
            store: self,
            record: &self.records[index],
        }
    }

    /// Runs the cursor's drop policy now, as [`take`](Self::take) would, so that
    /// [`peek`](Self::peek) shows what `take` would hand out.
    pub fn apply_policy(&mut self, cursor: CursorId, now_ms: u64) {
        if self.cursors.get(cursor.index()).is_some_and(|c| c.active) {
            self.enforce(cursor, now_ms);
        }
    }

    /// The frames before `seq` are no use to this cursor any more (they belong to parameter
    /// sets that changed): they are dropped, and if frame `seq` is not a keyframe the cursor
    /// waits for one.
    pub fn skip_to(&mut self, cursor: CursorId, seq: u64) {
        let Some(c) = self.cursors.get(cursor.index()).copied() else {
            return;
        };
        if !c.active || c.pos >= seq {
            return;
        }
        self.drop_to(cursor, seq);
        if !self.record(seq).is_some_and(|r| r.is_video_keyframe()) {
            self.cursors[cursor.index()].waiting = true;
        }
    }

    /// What waits for this cursor: admitted frames from its position on (the one in flight
    /// excluded), their ring bytes, and the stream time they span.
    pub fn backlog(&self, cursor: CursorId) -> Depth {
        let Some(c) = self.cursors.get(cursor.index()).filter(|c| c.active) else {
            return Depth::default();
        };
        let skip = c.pos.saturating_sub(self.front_seq()) as usize;
        let mut depth = Depth::default();
        let mut first = None;
        let mut last = 0;
        for record in self
            .records
            .iter()
            .skip(skip)
            .take_while(|r| r.seq < self.admitted)
            .filter(|r| r.state == State::Admitted)
        {
            depth.frames += 1;
            depth.bytes += self.record_bytes(record);
            first.get_or_insert(record.timestamp_ms);
            last = record.timestamp_ms;
        }
        depth.ms = first.map_or(0, |first| last.saturating_sub(first));
        depth
    }

    /// Whether an admitted frame waits for this cursor (the one in flight excluded).
    pub fn has_backlog(&self, cursor: CursorId) -> bool {
        let Some(c) = self.cursors.get(cursor.index()).filter(|c| c.active) else {
            return false;
        };
        let skip = c.pos.saturating_sub(self.front_seq()) as usize;
        self.records
            .iter()
            .skip(skip)
            .take_while(|r| r.seq < self.admitted)
            .any(|r| r.state == State::Admitted)
    }

    /// A frame not taken: what [`take`](Self::take) would hand out next, without the policy.
    pub fn peek(&self, cursor: CursorId) -> Option<FrameRef<'_>> {
        let c = self.cursors.get(cursor.index())?;
        let record = self
            .record(c.pos)
            .filter(|r| r.seq < self.admitted && r.state == State::Admitted)?;
        Some(FrameRef {
            store: self,
            record,
        })
    }

    /// The frame in flight was written entirely.
    pub fn advance(&mut self, token: InFlight) {
        let c = &mut self.cursors[token.cursor.index()];
        if c.in_flight == Some(token.seq) {
            c.in_flight = None;
            c.stats.frames_sent += 1;
        }
    }

    /// The frame in flight will not be written (its connection failed): it is released, and the
    /// cursor waits for a keyframe until [`cursor_restart`](Self::cursor_restart).
    pub fn abandon(&mut self, token: InFlight) {
        let c = &mut self.cursors[token.cursor.index()];
        if c.in_flight == Some(token.seq) {
            c.in_flight = None;
            c.waiting = true;
        }
    }

    // ---- Internals ----

    fn front_seq(&self) -> u64 {
        self.records
            .front()
            .map_or(self.next_seq, |record| record.seq)
    }

    fn record(&self, seq: u64) -> Option<&Record> {
        let index = seq.checked_sub(self.front_seq())?;
        self.records.get(usize::try_from(index).ok()?)
    }

    fn record_mut(&mut self, seq: u64) -> Option<&mut Record> {
        let index = seq.checked_sub(self.front_seq())?;
        self.records.get_mut(usize::try_from(index).ok()?)
    }

    fn nal(&self, index: u64) -> Nal<'_> {
        let span = self.nals[(index % self.nals.len() as u64) as usize];
        let capacity = self.capacity;
        let at = (span.start % capacity as u64) as usize;
        let len = span.len as usize;
        let end = span.start + u64::from(span.len);
        let (first, second) = match self.jump {
            // Across an early wrap: up to where the lap's data ended, then from the ring's start.
            Some((from, to)) if span.start <= from && end >= to => {
                ((from - span.start) as usize, (end - to) as usize)
            }
            _ => {
                let first = len.min(capacity - at);
                (first, len - first)
            }
        };
        Nal {
            nal_type: span.nal_type,
            ring: &self.ring,
            first: RingRange {
                start: at,
                len: first,
            },
            second: RingRange {
                start: 0,
                len: second,
            },
        }
    }

    /// Where the bytes of the access unit being read (or the NAL unit being read) begin.
    fn pending_region(&self) -> Option<u64> {
        match (self.pending, self.scanner.open_start()) {
            (Some((start, _)), _) => Some(start),
            (None, open) => open,
        }
    }

    /// The oldest video byte still held.
    fn tail(&self) -> u64 {
        self.records
            .iter()
            .find(|r| r.track == Track::Video)
            .map(|r| r.start)
            .or(self.pending_region())
            .unwrap_or(self.scanned)
            .min(self.head)
    }

    fn nal_tail(&self) -> u64 {
        self.records
            .iter()
            .find(|r| r.track == Track::Video)
            .map(|r| r.nal_first)
            .or(self.pending.map(|(_, first)| first))
            .unwrap_or(self.nal_head)
    }

    /// The oldest audio byte still held.
    fn audio_tail(&self) -> u64 {
        self.records
            .iter()
            .find(|r| r.track == Track::Audio)
            .map_or(self.audio_head, |r| r.start)
    }

    /// A record's bytes: in the video ring (without what an early wrap left unused), or in the
    /// audio arena.
    fn record_bytes(&self, record: &Record) -> u64 {
        match record.track {
            Track::Video => self.span_len(record.start, record.end),
            Track::Audio => record.end - record.start,
        }
    }

    fn free_slots(&self) -> usize {
        let records = self.max_frames - self.records.len();
        let nals = self.nals.len() - (self.nal_head - self.nal_tail()) as usize;
        records.min(nals)
    }

    fn on_event(&mut self, event: Event, now_ms: u64) {
        match event {
            Event::Nal {
                start,
                end,
                nal_type,
            } => {
                let count = self.pending.map_or(0, |(_, first)| self.nal_head - first);
                let full = self.nal_head - self.nal_tail() >= self.nals.len() as u64;
                if full || count >= self.max_nals_per_frame as u64 {
                    self.lose_pending();
                    return;
                }
                let slot = (self.nal_head % self.nals.len() as u64) as usize;
                self.nals[slot] = NalSpan {
                    start,
                    len: u32::try_from(end - start).unwrap_or(u32::MAX),
                    nal_type,
                };
                if self.pending.is_none() {
                    self.pending = Some((start, self.nal_head));
                }
                self.nal_head += 1;
            }
            Event::AccessUnitEnd => {
                let Some((start, nal_first)) = self.pending.take() else {
                    return;
                };
                let last = self.nals[((self.nal_head - 1) % self.nals.len() as u64) as usize];
                let end = last.start + u64::from(last.len);
                if self.records.len() >= self.max_frames {
                    // Cannot happen: reads are bounded by the free slots. Lost, not grown.
                    self.nal_head = nal_first;
                    let bytes = self.span_len(start, end);
                    self.lose_input(bytes as usize, CursorSet::EMPTY);
                    return;
                }
                let nal_count = (self.nal_head - nal_first) as u32;
                let seq = self.next_seq;
                let keyframe = (0..u64::from(nal_count)).any(|i| {
                    self.nals[((nal_first + i) % self.nals.len() as u64) as usize].nal_type
                        == NAL_IDR
                });
                self.records.push_back(Record {
                    seq,
                    track: Track::Video,
                    timestamp_ms: now_ms,
                    composition_ms: 0,
                    arrival_ms: now_ms,
                    keyframe,
                    start,
                    end,
                    nal_first,
                    nal_count,
                    state: State::Unadmitted,
                    gap: self.pending_gap.take(),
                });
                self.next_seq += 1;
                self.stats.frames_stored += 1;
            }
        }
    }

    /// Drops the access unit being read (too large, or no room): the scanner resynchronises.
    fn lose_pending(&mut self) {
        let Some(start) = self.pending_region() else {
            return;
        };
        if let Some((_, nal_first)) = self.pending.take() {
            self.nal_head = nal_first;
        }
        self.scanner.drop_pending();
        let bytes = self.span_len(start, self.scanned.max(start));
        self.stats.skipped_bytes = self.stats.skipped_bytes.saturating_add(bytes);
        self.lose_input(bytes as usize, CursorSet::EMPTY);
    }

    /// A frame was lost at the input; `had_it` sent it anyway.
    fn lose_input(&mut self, bytes: usize, had_it: CursorSet) {
        self.stats.input_frames_dropped += 1;
        self.stats.input_bytes_dropped =
            self.stats.input_bytes_dropped.saturating_add(bytes as u64);
        self.note_loss(had_it);
    }

    fn note_loss(&mut self, had_it: CursorSet) {
        self.pending_gap = Some(merge_gap(self.pending_gap, had_it));
        self.retain_from = None;
    }

    /// Whether the cursor would drop a non-keyframe now: it waits for a keyframe, or input was
    /// lost that it did not get.
    fn blocked(&self, cursor: CursorId) -> bool {
        let c = &self.cursors[cursor.index()];
        c.waiting || self.pending_gap.is_some_and(|had| !had.contains(cursor))
    }

    /// Whether some cursor still needs record `seq`.
    fn needed(&self, seq: u64) -> bool {
        self.cursors
            .iter()
            .any(|c| c.active && (c.pos <= seq || c.in_flight == Some(seq)))
    }

    fn retained(&self, seq: u64) -> bool {
        self.retention && self.retain_from.is_some_and(|from| seq >= from)
    }

    /// Moves the cursor past what it would drop anyway: discarded records, and (while it waits
    /// for a keyframe, or after a loss it did not get) non-keyframes.
    fn settle(&mut self, cursor: CursorId) {
        let index = cursor.index();
        loop {
            let c = self.cursors[index];
            if !c.active {
                return;
            }
            let Some(record) = self
                .record(c.pos)
                .filter(|r| r.seq < self.admitted)
                .copied()
            else {
                return;
            };
            if record.state == State::Discarded {
                self.cursors[index].pos += 1;
                continue;
            }
            let lost = record.gap.is_some_and(|had| !had.contains(cursor));
            if record.is_video_keyframe() {
                self.cursors[index].waiting = false;
                return;
            }
            if !(c.waiting || lost && record.track == Track::Video) {
                return;
            }
            let bytes = self.record_bytes(&record);
            let c = &mut self.cursors[index];
            if !c.waiting {
                c.stats.drop_events += 1;
            }
            c.waiting = true;
            c.pos += 1;
            c.stats.frames_dropped += 1;
            c.stats.bytes_dropped += bytes;
        }
    }

    /// Drops the cursor's frames up to `to` (one drop event).
    fn drop_to(&mut self, cursor: CursorId, to: u64) {
        let from = self.cursors[cursor.index()].pos;
        let (mut frames, mut bytes) = (0, 0);
        for seq in from..to {
            if let Some(record) = self.record(seq).filter(|r| r.state == State::Admitted) {
                frames += 1;
                bytes += self.record_bytes(record);
            }
        }
        let c = &mut self.cursors[cursor.index()];
        c.pos = to.max(c.pos);
        if frames > 0 {
            c.stats.frames_dropped += frames;
            c.stats.bytes_dropped += bytes;
            c.stats.drop_events += 1;
        }
    }

    /// The newest admitted video keyframe after `after`.
    fn newest_keyframe_after(&self, after: u64) -> Option<u64> {
        self.records
            .iter()
            .rev()
            .take_while(|r| r.seq > after)
            .find(|r| r.seq < self.admitted && r.state == State::Admitted && r.is_video_keyframe())
            .map(|r| r.seq)
    }

    /// The first admitted video keyframe after `after`.
    fn next_keyframe_after(&self, after: u64) -> Option<u64> {
        let front = self.front_seq();
        let skip = (after + 1).saturating_sub(front) as usize;
        self.records
            .iter()
            .skip(skip)
            .take_while(|r| r.seq < self.admitted)
            .find(|r| r.state == State::Admitted && r.is_video_keyframe())
            .map(|r| r.seq)
    }

    /// Whether the cursor's backlog (from its next frame to the newest, both tracks) holds more
    /// bytes than its bound.
    fn over_bytes(&self, cursor: CursorId) -> bool {
        let c = &self.cursors[cursor.index()];
        let Some(max) = c.bounds.max_bytes else {
            return false;
        };
        let skip = c.pos.saturating_sub(self.front_seq()) as usize;
        let admitted = || {
            self.records
                .iter()
                .skip(skip)
                .take_while(|r| r.seq < self.admitted)
        };
        // The video ring's span is a difference of positions; audio is counted frame by frame,
        // and is a small share.
        let first_video = admitted().find(|r| r.track == Track::Video);
        let newest_video = self.records.iter().rev().find(|r| {
            r.seq < self.admitted && r.track == Track::Video && r.state != State::Unadmitted
        });
        let audio: u64 = if self.audio_capacity == 0 {
            0
        } else {
            admitted()
                .filter(|r| r.track == Track::Audio)
                .map(|r| r.end - r.start)
                .sum()
        };
        let video = match (first_video, newest_video) {
            // Without what an early wrap left unused.
            (Some(first), Some(newest)) => self.span_len(first.start, newest.end),
            _ => 0,
        };
        video + audio > max
    }

    /// The cursor's drop policy: past what it must drop anyway, then, when its next frame is
    /// late or its backlog too large, to the newest keyframe, else everything until the next.
    fn enforce(&mut self, cursor: CursorId, now_ms: u64) {
        self.settle(cursor);
        if self.backpressure {
            return;
        }
        if !self.is_late(cursor, now_ms) && !self.over_bytes(cursor) {
            return;
        }
        let pos = self.cursors[cursor.index()].pos;
        if let Some(key) = self.newest_keyframe_after(pos) {
            let saved = self.cursors[cursor.index()];
            self.cursors[cursor.index()].pos = key;
            let enough = !self.is_late(cursor, now_ms) && !self.over_bytes(cursor);
            self.cursors[cursor.index()] = saved;
            if enough {
                self.drop_to(cursor, key);
                self.cursors[cursor.index()].waiting = false;
                return;
            }
        }
        self.drop_to(cursor, self.admitted);
        self.cursors[cursor.index()].waiting = true;
    }

    /// Frees records nobody needs, oldest first.
    fn reclaim(&mut self) {
        for index in 0..MAX_CURSORS {
            self.settle(CursorId(index as u8));
        }
        while let Some(front) = self.records.front() {
            if front.state == State::Unadmitted
                || self.needed(front.seq)
                || self.retained(front.seq)
            {
                break;
            }
            self.records.pop_front();
        }
        if self.retain_from.is_some_and(|from| from < self.front_seq()) {
            self.retain_from = None;
        }
    }

    /// Scanning is short of record or NAL slots and the oldest record is held only by the
    /// retained GOP: the GOP gives way (as it does for bytes in [`make_room`](Self::make_room)),
    /// so that a long GOP cannot stop the scanner, say at the end of a file with no more reads
    /// to make room.
    fn release_retention_for_slots(&mut self) {
        if self.free_slots() >= 2 || self.retain_from.is_none() {
            return;
        }
        self.give_way_if_only_retained(self.records.front().map(|r| r.seq));
    }

    /// The record `holder` holds room that is wanted: if the retained GOP alone keeps it (no
    /// cursor needs it, it is admitted), the GOP gives way and what nobody needs is reclaimed.
    /// Returns whether it did.
    fn give_way_if_only_retained(&mut self, holder: Option<u64>) -> bool {
        let only_retained = holder.and_then(|seq| self.record(seq)).is_some_and(|r| {
            r.state != State::Unadmitted && !self.needed(r.seq) && self.retained(r.seq)
        });
        if only_retained {
            self.drop_retention();
            self.reclaim();
        }
        only_retained
    }

    /// The retained GOP is given up (for room): new cursors wait for the next keyframe.
    fn drop_retention(&mut self) {
        self.retain_from = None;
        self.stats.retention_drops += 1;
    }

    /// Makes `bytes` free bytes and `slots` free record and NAL slots, by the drop policy.
    /// Returns whether there is room; if not, [`room`](Self::room) says why.
    fn make_room(&mut self, bytes: u64, slots: usize, now_ms: u64) -> bool {
        let capacity = self.capacity as u64;
        // Every pass frees a record, moves a cursor or returns.
        for _ in 0..self.records.len() + MAX_CURSORS + 2 {
            self.reclaim();
            let free = capacity - (self.head - self.tail());
            if free >= bytes.min(capacity) && self.free_slots() >= slots {
                self.room = Room::Free;
                return true;
            }
            let Some(front) = self.records.front().copied() else {
                self.room = Room::Stalled;
                return false;
            };
            if front.state == State::Unadmitted {
                self.room = Room::Stalled;
                return false;
            }
            let mut holders = CursorSet::EMPTY;
            let mut pinned = false;
            let mut late = false;
            let mut all_hold = true;
            let mut until: Option<u64> = None;
            let mut unbounded = false;
            for index in 0..MAX_CURSORS {
                let id = CursorId(index as u8);
                let c = self.cursors[index];
                if !c.active {
                    continue;
                }
                if c.in_flight == Some(front.seq) {
                    pinned = true;
                }
                if c.pos <= front.seq {
                    holders.insert(id);
                    late |= self.is_late(id, now_ms);
                    match c.bounds.max_wait_ms {
                        Some(max) => {
                            let record = self.record(c.pos).copied().unwrap_or(front);
                            let at = record
                                .arrival_ms
                                .max(c.since_ms)
                                .saturating_add(max)
                                .saturating_add(1);
                            until = Some(until.map_or(at, |u| u.min(at)));
                        }
                        None => unbounded = true,
                    }
                } else if c.in_flight != Some(front.seq) {
                    all_hold = false;
                }
            }
            if pinned {
                self.room = Room::Stalled;
                return false;
            }
            if holders == CursorSet::EMPTY {
                // Only the retained GOP holds it: it gives way.
                self.drop_retention();
                continue;
            }
            if self.backpressure {
                self.room = Room::Backpressure;
                return false;
            }
            if !late && all_hold && !unbounded && self.input_can_wait {
                self.room = Room::Hold {
                    until_ms: until.unwrap_or(now_ms),
                };
                return false;
            }
            for index in 0..MAX_CURSORS {
                let id = CursorId(index as u8);
                if !holders.contains(id) {
                    continue;
                }
                let pos = self.cursors[index].pos;
                match self.next_keyframe_after(pos) {
                    Some(key) => {
                        self.drop_to(id, key);
                        self.cursors[index].waiting = false;
                    }
                    None => {
                        self.drop_to(id, self.admitted);
                        self.cursors[index].waiting = true;
                    }
                }
            }
        }
        self.room = Room::Stalled;
        false
    }
}

fn merge_gap(gap: Option<CursorSet>, had_it: CursorSet) -> CursorSet {
    match gap {
        Some(previous) => previous.intersect(had_it),
        None => had_it,
    }
}

#[cfg(test)]
mod audio_tests;
#[cfg(test)]
pub(crate) mod receiver;
#[cfg(test)]
mod tests;
