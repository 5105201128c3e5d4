//! Tests of the frame store: scanning against `AnnexBReader`, wrap-around, memory, the drop
//! policy per cursor, backpressure, lateness, retention, and a model of uplinks checked at the
//! receiving end.

use super::*;
use crate::media::annexb::AnnexBReader;
use proptest::prelude::*;

/// (nal_type, bytes) of every NAL unit of one access unit.
type OwnedAu = Vec<(u8, Vec<u8>)>;

fn config(queue_bytes: usize, max_frame_bytes: usize, max_frames: usize) -> StoreConfig {
    StoreConfig {
        queue_bytes,
        max_frame_bytes,
        max_frames,
        max_nals_per_frame: 64,
        audio_bytes: 0,
    }
}

fn unbounded() -> Bounds {
    Bounds::default()
}

fn nal_bytes(nal: &Nal<'_>) -> Vec<u8> {
    let (a, b) = nal.bytes();
    [a, b].concat()
}

fn owned(frame: &FrameRef<'_>) -> OwnedAu {
    frame
        .nals()
        .map(|nal| (nal.nal_type, nal_bytes(&nal)))
        .collect()
}

/// `AnnexBReader` on the same stream, in one piece.
fn reader_aus(stream: &[u8]) -> (Vec<OwnedAu>, u64) {
    let mut reader = AnnexBReader::new(1 << 24);
    let mut out = Vec::new();
    let mut offset = 0;
    while offset < stream.len() {
        let spare = reader.read_buf().unwrap();
        let n = spare.len().min(stream.len() - offset);
        spare[..n].copy_from_slice(&stream[offset..offset + n]);
        reader.commit(n);
        offset += n;
        while let Some(au) = reader.next_access_unit() {
            out.push(
                au.nal_bytes()
                    .map(|(nal, bytes)| (nal.nal_type, bytes.to_vec()))
                    .collect(),
            );
        }
    }
    reader.finish();
    while let Some(au) = reader.next_access_unit() {
        out.push(
            au.nal_bytes()
                .map(|(nal, bytes)| (nal.nal_type, bytes.to_vec()))
                .collect(),
        );
    }
    (out, reader.skipped_bytes())
}

/// Admits every complete access unit and sends everything to `cursor` at once.
fn drain(store: &mut FrameStore, cursor: CursorId, now: u64, out: &mut Vec<OwnedAu>) {
    while let Some(frame) = store.next_unadmitted() {
        let key = frame.is_idr();
        store.admit(now, key);
    }
    while let Some(token) = store.take(cursor, now) {
        out.push(owned(&store.frame(&token)));
        store.advance(token);
    }
}

/// Feeds `stream` through the store in reads whose sizes cycle through `sizes`.
fn store_aus(store: &mut FrameStore, stream: &[u8], sizes: &[usize]) -> Vec<OwnedAu> {
    let cursor = store.add_cursor(unbounded(), 0).unwrap();
    // The cursor must take the first frame whatever it is, as the reader hands it out.
    store.cursors[cursor.index()].waiting = false;
    let mut out = Vec::new();
    let mut offset = 0;
    let mut i = 0;
    while offset < stream.len() {
        let want = sizes[i % sizes.len()].max(1);
        i += 1;
        let buf = store.write_buf(0);
        assert!(!buf.is_empty(), "room: {:?}", store.room());
        let n = want.min(buf.len()).min(stream.len() - offset);
        buf[..n].copy_from_slice(&stream[offset..offset + n]);
        store.commit(n, 0);
        offset += n;
        drain(store, cursor, 0, &mut out);
    }
    store.finish(0);
    drain(store, cursor, 0, &mut out);
    out
}

/// Turns off the wait for a first keyframe so byte-identical output can be compared even for
/// streams that do not start with one.
fn biased_byte() -> impl Strategy<Value = u8> {
    prop_oneof![3 => Just(0u8), 1 => Just(1u8), 1 => Just(0x65u8), 1 => Just(0x41u8),
                1 => Just(0x09u8), 1 => Just(0x67u8), 1 => Just(0x80u8), 2 => any::<u8>()]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(256),
        ..ProptestConfig::default()
    })]

    /// Any bytes, any read sizes, any position of the ring's end: the same access units and
    /// skipped bytes as `AnnexBReader`.
    #[test]
    fn scanning_matches_the_annexb_reader(
        data in proptest::collection::vec(biased_byte(), 0..800),
        sizes in proptest::collection::vec(1usize..64, 1..8),
        prefix in 0usize..5000,
    ) {
        // Bytes without start codes first, so the stream crosses the ring's end somewhere.
        let mut stream = vec![0x55u8; prefix];
        stream.extend_from_slice(&data);
        let (expected, skipped) = reader_aus(&stream);
        let mut store = FrameStore::new(config(64, 1024, 64));
        let got = store_aus(&mut store, &stream, &sizes);
        prop_assert_eq!(&got, &expected);
        prop_assert_eq!(store.stats().skipped_bytes, skipped);
        prop_assert_eq!(store.stats().input_frames_dropped, 0);
    }
}

const AUD: &[u8] = &[0x09, 0xf0];
const SPS: &[u8] = &[0x67, 0x42, 0xc0, 0x1e, 0xda, 0x02];
const PPS: &[u8] = &[0x68, 0xce, 0x3c, 0x80];
const SEI: &[u8] = &[0x06, 0x05, 0x01, 0xaa, 0x80];
const IDR: &[u8] = &[0x65, 0x88, 0x84, 0x21, 0x00, 0x07];
const P: &[u8] = &[0x41, 0x9a, 0x22, 0x00, 0x00, 0x03, 0x01];

/// NAL units with start codes: 4-byte ones when `long`, else 3-byte.
fn annexb(nals: &[&[u8]], long: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for nal in nals {
        if long {
            out.push(0);
        }
        out.extend_from_slice(&[0, 0, 1]);
        out.extend_from_slice(nal);
    }
    out
}

#[test]
fn start_codes_split_at_every_position_and_across_the_ring_end() {
    let mut stream = annexb(&[AUD, SPS, PPS, SEI, IDR], true);
    stream.extend(annexb(&[AUD, P], false));
    stream.extend(annexb(&[P, SPS, PPS, IDR, P], true));
    let (expected, _) = reader_aus(&stream);
    let types: Vec<Vec<u8>> = expected
        .iter()
        .map(|au| au.iter().map(|(t, _)| *t).collect())
        .collect();
    assert_eq!(
        types,
        vec![
            vec![9, 7, 8, 6, 5],
            vec![9, 1],
            vec![1],
            vec![7, 8, 5],
            vec![1]
        ]
    );
    let capacity = config(0, 64, 16).ring_bytes();
    for end_at in 0..stream.len() {
        for split in 0..=stream.len() {
            // Garbage puts the ring's end `end_at` bytes into the stream.
            let mut input = vec![0x55u8; capacity - end_at];
            input.extend_from_slice(&stream);
            let mut store = FrameStore::new(config(0, 64, 16));
            let garbage = capacity - end_at;
            let got = store_aus(&mut store, &input, &[garbage, split.max(1), 3]);
            assert_eq!(got, expected, "end at {end_at}, split {split}");
        }
    }
}

#[test]
fn a_frame_across_the_ring_end_is_two_ranges_that_concatenate_to_its_bytes() {
    let big: Vec<u8> = std::iter::once(0x65u8)
        .chain((0..300u32).map(|i| (i % 250 + 2) as u8))
        .collect();
    let stream = annexb(&[SPS, PPS, &big, P], true);
    let mut store = FrameStore::new(config(0, 512, 16)).without_early_wrap();
    let capacity = store.ring().len();
    let cursor = store.add_cursor(unbounded(), 0).unwrap();
    // Move the head 100 bytes before the ring's end.
    let mut skipped = 0;
    while skipped < capacity - 100 {
        let buf = store.write_buf(0);
        let n = buf.len().min(capacity - 100 - skipped);
        buf[..n].fill(0x55);
        store.commit(n, 0);
        skipped += n;
    }
    let mut offset = 0;
    while offset < stream.len() {
        let buf = store.write_buf(0);
        let n = buf.len().min(stream.len() - offset);
        buf[..n].copy_from_slice(&stream[offset..offset + n]);
        store.commit(n, 0);
        offset += n;
    }
    store.finish(0);
    let frame = store.next_unadmitted().unwrap();
    assert!(frame.is_idr());
    let nals: Vec<Nal<'_>> = frame.nals().collect();
    assert_eq!(nals.len(), 3);
    assert_eq!(nals[2].ranges().count(), 2, "the IDR slice wraps");
    assert_eq!(nal_bytes(&nals[2]), big);
    assert_eq!(nal_bytes(&nals[0]), SPS);
    let mut parts = Vec::new();
    frame.push_avc_parts(&mut parts);
    // SPS, PPS: prefix and one range each; the IDR: prefix and two ranges.
    assert_eq!(parts.len(), 7);
    let mut body = Vec::new();
    for part in &parts {
        match *part {
            Part::Inline { bytes, len } => body.extend_from_slice(&bytes[..len as usize]),
            Part::External { start, len } => {
                body.extend_from_slice(&store.ring()[start..start + len])
            }
        }
    }
    let mut expected = Vec::new();
    for nal in [SPS, PPS, &big[..]] {
        expected.extend_from_slice(&(nal.len() as u32).to_be_bytes());
        expected.extend_from_slice(nal);
    }
    assert_eq!(body, expected);
    store.admit(0, true);
    store.admit(33, false);
    let token = store.take(cursor, 0).unwrap();
    assert!(store.frame(&token).keyframe());
    store.advance(token);
}

#[test]
fn an_oversized_access_unit_is_dropped_and_the_next_frames_wait_for_a_keyframe() {
    let big: Vec<u8> = std::iter::once(0x41u8)
        .chain(std::iter::once(0x80))
        .chain((0..3000u32).map(|i| (i % 250 + 2) as u8))
        .collect();
    let mut stream = annexb(&[SPS, PPS, IDR, P], true);
    stream.extend(annexb(&[&big, P, P, SPS, PPS, IDR, P], true));
    let mut store = FrameStore::new(config(4096, 1000, 64));
    let cursor = store.add_cursor(unbounded(), 0).unwrap();
    let mut out = Vec::new();
    for chunk in stream.chunks(100) {
        let buf = store.write_buf(0);
        buf[..chunk.len()].copy_from_slice(chunk);
        store.commit(chunk.len(), 0);
        drain(&mut store, cursor, 0, &mut out);
    }
    store.finish(0);
    drain(&mut store, cursor, 0, &mut out);
    let types: Vec<Vec<u8>> = out
        .iter()
        .map(|au| au.iter().map(|(t, _)| *t).collect())
        .collect();
    // IDR, P, then the big P is lost: the two P after it are dropped, the next IDR goes.
    assert_eq!(types, vec![vec![7, 8, 5], vec![1], vec![7, 8, 5], vec![1]]);
    assert_eq!(store.stats().input_frames_dropped, 1);
    assert_eq!(store.cursor_stats(cursor).frames_dropped, 2);
}

// ---- Copy-in frames that name themselves ----

/// A frame body: NAL header, then its sequence number, then bytes derived from it.
fn body(seq: u64, keyframe: bool, len: usize) -> Vec<u8> {
    let mut out = vec![if keyframe { 0x65 } else { 0x41 }];
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend(
        (0..len.saturating_sub(9)).map(|i| (seq as u8).wrapping_mul(31).wrapping_add(i as u8) | 1),
    );
    out
}

/// The sequence number a stored frame names, if its bytes are intact.
fn seq_of(frame: &FrameRef<'_>) -> Result<u64, String> {
    let nal = frame.nals().next().ok_or("no NAL unit")?;
    let bytes = nal_bytes(&nal);
    let seq = u64::from_le_bytes(bytes[1..9].try_into().unwrap());
    if bytes != body(seq, frame.keyframe(), bytes.len()) {
        return Err(format!("the body of frame {seq} was overwritten"));
    }
    Ok(seq)
}

fn push(
    store: &mut FrameStore,
    seq: u64,
    gop: u64,
    len: usize,
    now: u64,
) -> Result<u64, NotStored> {
    let key = seq % gop == 0;
    let bytes = body(seq, key, len);
    store.push_copy(
        Track::Video,
        seq * 33,
        key,
        &[&bytes],
        now,
        CursorSet::EMPTY,
    )
}

/// Takes and writes everything the cursor has now; returns the sequence numbers.
fn send_all(store: &mut FrameStore, cursor: CursorId, now: u64) -> Vec<u64> {
    let mut out = Vec::new();
    while let Some(token) = store.take(cursor, now) {
        out.push(seq_of(&store.frame(&token)).unwrap());
        store.advance(token);
    }
    out
}

#[test]
fn a_full_ring_drops_whole_gops_of_the_laggard_only() {
    // Room for about 10 frames of 100 bytes beyond one maximal frame and the slack.
    let mut store = FrameStore::new(config(1000, 100, 64));
    let fast = store.add_cursor(unbounded(), 0).unwrap();
    let slow = store.add_cursor(unbounded(), 0).unwrap();
    let mut fast_got = Vec::new();
    for seq in 0..200 {
        push(&mut store, seq, 5, 100, seq).unwrap();
        fast_got.extend(send_all(&mut store, fast, seq));
    }
    assert_eq!(
        fast_got,
        (0..200).collect::<Vec<_>>(),
        "the fast cursor lost nothing"
    );
    let slow_got = send_all(&mut store, slow, 200);
    assert_eq!(slow_got[0] % 5, 0, "starts at a keyframe: {slow_got:?}");
    assert!(slow_got
        .windows(2)
        .all(|w| w[1] == w[0] + 1 || w[1] % 5 == 0));
    assert_eq!(*slow_got.last().unwrap(), 199);
    let stats = store.cursor_stats(slow);
    assert!(
        stats.frames_dropped > 100 && stats.frames_dropped % 5 == 0,
        "{stats:?}"
    );
    assert_eq!(store.cursor_stats(fast).frames_dropped, 0);
}

#[test]
fn a_frame_in_flight_is_never_dropped_or_overwritten() {
    let mut store = FrameStore::new(config(1000, 100, 64));
    let cursor = store.add_cursor(unbounded(), 0).unwrap();
    push(&mut store, 0, 5, 100, 0).unwrap();
    let token = store.take(cursor, 0).unwrap();
    for seq in 1..100 {
        let _ = push(&mut store, seq, 5, 100, seq);
        assert_eq!(seq_of(&store.frame(&token)), Ok(0), "{seq} {store:?}");
    }
    // The ring held by the frame in flight, later frames were lost at the input.
    assert_eq!(store.room(), Room::Stalled);
    assert!(store.stats().input_frames_dropped > 0);
    store.advance(token);
    let mut got = vec![0];
    got.extend(send_all(&mut store, cursor, 100));
    assert!(got.len() > 5);
    assert!(
        got.windows(2).all(|w| w[1] == w[0] + 1 || w[1] % 5 == 0),
        "{got:?}"
    );
}

#[test]
fn backpressure_refuses_input_and_drops_nothing() {
    let mut store = FrameStore::new(config(1000, 100, 64));
    store.set_backpressure(true);
    let cursor = store
        .add_cursor(
            Bounds {
                max_wait_ms: Some(10),
                max_bytes: Some(10),
            },
            0,
        )
        .unwrap();
    let mut next = 0;
    let mut got = Vec::new();
    for round in 0..50 {
        // Fill until refused.
        while push(&mut store, next, 7, 100, round * 1000).is_ok() {
            next += 1;
        }
        assert_eq!(store.room(), Room::Backpressure);
        assert!(store.write_buf(round * 1000).len() < 100);
        // The file input retries the refused frame after the cursor advanced.
        got.extend(send_all(&mut store, cursor, round * 1000 + 999));
    }
    assert_eq!(got, (0..got.len() as u64).collect::<Vec<_>>());
    assert!(got.len() > 200);
    assert_eq!(store.cursor_stats(cursor).frames_dropped, 0);
}

#[test]
fn lateness_by_the_wall_clock_drops_to_the_newest_keyframe_then_waits() {
    let mut store = FrameStore::new(config(1 << 16, 1000, 256));
    let cursor = store
        .add_cursor(
            Bounds {
                max_wait_ms: Some(100),
                max_bytes: None,
            },
            0,
        )
        .unwrap();
    // Frames 0..10 arrive at 0..90 ms (GOP of 4); nothing is sent until 150 ms.
    for seq in 0..10 {
        push(&mut store, seq, 4, 100, seq * 10).unwrap();
    }
    assert!(!store.is_late(cursor, 100));
    assert!(store.is_late(cursor, 150));
    // At 150 ms frames up to 40 ms are late: keyframe 8 (80 ms) is not, so it goes.
    assert_eq!(send_all(&mut store, cursor, 150), vec![8, 9]);
    assert_eq!(store.cursor_stats(cursor).frames_dropped, 8);
    assert_eq!(store.cursor_stats(cursor).drop_events, 1);
    // Frames 10 and 11 wait too long: the newest keyframe is late too, so all go and the
    // cursor waits for the next keyframe.
    for seq in 10..12 {
        push(&mut store, seq, 4, 100, 100 + seq).unwrap();
    }
    assert_eq!(send_all(&mut store, cursor, 1000), Vec::<u64>::new());
    push(&mut store, 12, 4, 100, 1000).unwrap();
    push(&mut store, 13, 4, 100, 1000).unwrap();
    assert_eq!(send_all(&mut store, cursor, 1000), vec![12, 13]);
}

#[test]
fn a_full_ring_holds_the_input_while_nothing_is_late() {
    let mut store = FrameStore::new(config(1000, 100, 64));
    let cursor = store
        .add_cursor(
            Bounds {
                max_wait_ms: Some(500),
                max_bytes: None,
            },
            0,
        )
        .unwrap();
    let mut seq = 0;
    while push(&mut store, seq, 5, 100, 10).is_ok() {
        seq += 1;
    }
    let Room::Hold { until_ms } = store.room() else {
        panic!("{:?}", store.room());
    };
    assert_eq!(until_ms, 511);
    assert!(store.write_buf(100).len() < 100);
    assert_eq!(store.cursor_stats(cursor).frames_dropped, 0);
    // Once the oldest frame is late, the cursor drops a GOP and input goes on.
    assert_eq!(push(&mut store, seq, 5, 100, until_ms), Ok(seq));
    assert!(store.cursor_stats(cursor).frames_dropped > 0);
}

#[test]
fn a_new_cursor_starts_at_the_retained_keyframe() {
    let mut store = FrameStore::new(config(1 << 16, 1000, 256));
    store.set_retention(true);
    let first = store.add_cursor(unbounded(), 0).unwrap();
    for seq in 0..11 {
        push(&mut store, seq, 4, 100, seq).unwrap();
        send_all(&mut store, first, seq);
    }
    // Frames before keyframe 8 are gone; 8, 9 and 10 stay for a new connection.
    assert_eq!(store.depth().frames, 3);
    let second = store.add_cursor(unbounded(), 20).unwrap();
    assert_eq!(send_all(&mut store, second, 20), vec![8, 9, 10]);
    store.cursor_restart(first, 20);
    assert_eq!(send_all(&mut store, first, 20), vec![8, 9, 10]);
    // Without retention, a restart waits for the next keyframe.
    store.set_retention(false);
    store.cursor_restart(first, 21);
    push(&mut store, 11, 4, 100, 21).unwrap();
    assert_eq!(send_all(&mut store, first, 21), Vec::<u64>::new());
    push(&mut store, 12, 4, 100, 22).unwrap();
    assert_eq!(send_all(&mut store, first, 22), vec![12]);
}

#[test]
fn camera_frames_are_copied_only_when_someone_needs_them() {
    let mut store = FrameStore::new(config(1 << 16, 1000, 256));
    let cursor = store.add_cursor(unbounded(), 0).unwrap();
    // The connection takes each frame straight from the driver's buffer.
    for seq in 0..5 {
        let key = seq == 0;
        assert!(store.may_send_directly(cursor, key));
        let mut sent = CursorSet::EMPTY;
        sent.insert(cursor);
        let bytes = body(seq, key, 50);
        assert_eq!(
            store.push_copy(Track::Video, seq * 33, key, &[&bytes], seq, sent),
            Err(NotStored::NotNeeded)
        );
    }
    assert_eq!(store.stats().frames_stored, 0);
    // A second destination lags: frames are copied for it once, and the first one passes them.
    let other = store.add_cursor(unbounded(), 5).unwrap();
    for seq in 5..10 {
        let key = seq == 5;
        let mut sent = CursorSet::EMPTY;
        if store.may_send_directly(cursor, key) {
            sent.insert(cursor);
        }
        let bytes = body(seq, key, 50);
        store
            .push_copy(Track::Video, seq * 33, key, &[&bytes], seq, sent)
            .unwrap();
    }
    assert_eq!(store.stats().frames_stored, 5);
    assert_eq!(send_all(&mut store, cursor, 10), Vec::<u64>::new());
    assert_eq!(send_all(&mut store, other, 10), vec![5, 6, 7, 8, 9]);
}

// ---- Memory: tests/store_memory.rs (under the tests' one counting allocator) ----

// ---- A model of the uplinks, checked at the receiving end ----

use super::receiver::Receiver;

/// One destination: its cursor, its connection and its receiver.
#[derive(Debug)]
struct Uplink {
    cursor: CursorId,
    connected: bool,
    /// The socket holds a frame it has not written.
    busy: bool,
    /// Frames the socket takes before it blocks.
    room: u32,
    /// The store's frame being written (none for a frame sent from the camera's buffer), and
    /// the frame it named when taken.
    token: Option<InFlight>,
    taken: u64,
    receiver: Receiver,
}

#[derive(Clone, Debug)]
enum Op {
    Frame { len: usize },
    Pump { uplink: usize },
    Writable { uplink: usize, frames: u32 },
    Reset { uplink: usize },
    Connected { uplink: usize, room: u32 },
    Tick { ms: u64 },
    InputGap,
}

struct Model {
    store: FrameStore,
    uplinks: Vec<Uplink>,
    gop: u64,
    next_seq: u64,
    now: u64,
    /// Frames go straight from the "camera" to idle caught-up uplinks.
    direct: bool,
    capacities: (usize, usize, usize),
}

impl Model {
    fn new(
        uplinks: usize,
        gop: u64,
        queue: usize,
        max_wait: Option<u64>,
        retention: bool,
        direct: bool,
    ) -> Model {
        let mut store = FrameStore::new(config(queue, 400, 24));
        store.set_retention(retention);
        let uplinks = (0..uplinks)
            .map(|i| Uplink {
                cursor: store
                    .add_cursor(
                        Bounds {
                            max_wait_ms: max_wait.map(|m| m * (i as u64 + 1)),
                            max_bytes: None,
                        },
                        0,
                    )
                    .unwrap(),
                connected: false,
                busy: false,
                room: 0,
                token: None,
                taken: 0,
                receiver: Receiver::default(),
            })
            .collect();
        let capacities = store.capacities();
        Model {
            store,
            uplinks,
            gop: gop.max(1),
            next_seq: 0,
            now: 0,
            direct,
            capacities,
        }
    }

    fn apply(&mut self, op: &Op) -> Result<(), String> {
        match *op {
            Op::Frame { len } => self.frame(len)?,
            Op::Pump { uplink } => self.pump(uplink % self.uplinks.len())?,
            Op::Writable { uplink, frames } => {
                let u = uplink % self.uplinks.len();
                self.uplinks[u].room += frames;
                self.pump(u)?;
            }
            Op::Reset { uplink } => {
                let count = self.uplinks.len();
                let u = &mut self.uplinks[uplink % count];
                if u.connected {
                    u.connected = false;
                    u.busy = false;
                    u.receiver.disconnect();
                    if let Some(token) = u.token.take() {
                        self.store.abandon(token);
                    }
                }
            }
            Op::Connected { uplink, room } => {
                let count = self.uplinks.len();
                let u = &mut self.uplinks[uplink % count];
                if !u.connected {
                    u.connected = true;
                    u.room = room;
                    u.receiver.connect();
                    self.store.cursor_restart(u.cursor, self.now);
                }
            }
            Op::Tick { ms } => self.now += ms,
            Op::InputGap => {
                // The camera's sequence jumps: a frame is lost.
                self.next_seq += 1;
                self.store.input_gap();
            }
        }
        self.check()
    }

    fn frame(&mut self, len: usize) -> Result<(), String> {
        let seq = self.next_seq;
        self.next_seq += 1;
        let key = seq % self.gop == 0;
        let bytes = body(seq, key, len);
        let mut sent = CursorSet::EMPTY;
        if self.direct {
            for u in &mut self.uplinks {
                if u.connected && !u.busy && self.store.may_send_directly(u.cursor, key) {
                    u.receiver.receive(seq, key)?;
                    u.busy = true;
                    sent.insert(u.cursor);
                    if u.room > 0 {
                        u.room -= 1;
                        u.busy = false;
                    }
                }
            }
        }
        let pushed = self
            .store
            .push_copy(Track::Video, seq * 33, key, &[&bytes], self.now, sent);
        if pushed == Err(NotStored::NoRoom) && self.store.room() != Room::Stalled {
            // A camera cannot hold its buffer for long: the frame is given up.
            self.store.frame_lost(sent);
        }
        Ok(())
    }

    fn pump(&mut self, index: usize) -> Result<(), String> {
        let u = &mut self.uplinks[index];
        if !u.connected {
            return Ok(());
        }
        loop {
            if u.busy {
                if u.room == 0 {
                    return Ok(());
                }
                u.room -= 1;
                u.busy = false;
                if let Some(token) = u.token.take() {
                    self.store.advance(token);
                }
            }
            let Some(token) = self.store.take(u.cursor, self.now) else {
                return Ok(());
            };
            let frame = self.store.frame(&token);
            let seq = seq_of(&frame)?;
            u.receiver.receive(seq, frame.keyframe())?;
            u.busy = true;
            u.token = Some(token);
            u.taken = seq;
        }
    }

    fn check(&self) -> Result<(), String> {
        if self.store.capacities() != self.capacities {
            return Err("the store's memory grew".into());
        }
        for u in &self.uplinks {
            if let Some(token) = &u.token {
                let frame = self.store.frame(token);
                if seq_of(&frame)? != u.taken {
                    return Err(format!("frame in flight {} was replaced", u.taken));
                }
            }
        }
        Ok(())
    }
}

fn op(uplinks: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (9usize..300).prop_map(|len| Op::Frame { len }),
        3 => (0..uplinks).prop_map(|uplink| Op::Pump { uplink }),
        3 => (0..uplinks, 0u32..4).prop_map(|(uplink, frames)| Op::Writable { uplink, frames }),
        1 => (0..uplinks).prop_map(|uplink| Op::Reset { uplink }),
        2 => (0..uplinks, 0u32..3).prop_map(|(uplink, room)| Op::Connected { uplink, room }),
        2 => (0u64..80).prop_map(|ms| Op::Tick { ms }),
        1 => Just(Op::InputGap),
    ]
}

fn run(model: &mut Model, ops: &[Op]) -> Result<(), TestCaseError> {
    for (i, op) in ops.iter().enumerate() {
        model
            .apply(op)
            .map_err(|e| TestCaseError::fail(format!("step {i} ({op:?}): {e}")))?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(500),
        ..ProptestConfig::default()
    })]

    #[test]
    fn one_cursor_gets_a_decodable_stream(
        gop in 1u64..8,
        queue in 0usize..2000,
        max_wait in prop::option::of(0u64..300),
        retention in any::<bool>(),
        direct in any::<bool>(),
        ops in prop::collection::vec(op(1), 1..200),
    ) {
        let mut model = Model::new(1, gop, queue, max_wait, retention, direct);
        run(&mut model, &ops)?;
    }

    #[test]
    fn three_cursors_at_different_speeds_get_decodable_streams(
        gop in 1u64..8,
        queue in 0usize..2000,
        max_wait in prop::option::of(0u64..300),
        retention in any::<bool>(),
        direct in any::<bool>(),
        ops in prop::collection::vec(op(3), 1..300),
    ) {
        let mut model = Model::new(3, gop, queue, max_wait, retention, direct);
        run(&mut model, &ops)?;
    }
}

#[test]
fn a_slow_cursor_does_not_slow_a_fast_one() {
    let mut model = Model::new(3, 10, 1000, Some(100), true, true);
    for u in 0..3 {
        model.apply(&Op::Connected { uplink: u, room: 0 }).unwrap();
    }
    for _ in 0..300 {
        model.apply(&Op::Frame { len: 200 }).unwrap();
        model
            .apply(&Op::Writable {
                uplink: 0,
                frames: 10,
            })
            .unwrap();
        model.apply(&Op::Tick { ms: 33 }).unwrap();
    }
    // Uplink 0 got every frame; the others, never writable, got their first frame only.
    assert_eq!(model.uplinks[0].receiver.frames, 300);
    assert_eq!(
        model
            .store
            .cursor_stats(model.uplinks[0].cursor)
            .frames_dropped,
        0
    );
    assert!(model.uplinks[1].receiver.frames <= 1);
    // Uplink 1 becomes writable: it catches up with whole GOPs.
    model
        .apply(&Op::Writable {
            uplink: 1,
            frames: 1000,
        })
        .unwrap();
    for _ in 0..30 {
        model.apply(&Op::Frame { len: 200 }).unwrap();
        model.apply(&Op::Pump { uplink: 0 }).unwrap();
        model.apply(&Op::Pump { uplink: 1 }).unwrap();
    }
    assert!(model.uplinks[1].receiver.frames > 20);
    assert!(
        model
            .store
            .cursor_stats(model.uplinks[1].cursor)
            .frames_dropped
            > 0
    );
    assert_eq!(model.uplinks[0].receiver.frames, 330);
}

/// Reads `stream` into the store in reads of `chunk` bytes; returns where each byte of the stream
/// was read to in the ring.
fn read_in(store: &mut FrameStore, stream: &[u8], chunk: usize, now: u64) -> Vec<usize> {
    let mut placed = Vec::with_capacity(stream.len());
    let mut offset = 0;
    while offset < stream.len() {
        let base = store.ring().as_ptr() as usize;
        let buf = store.write_buf(now);
        assert!(!buf.is_empty(), "room to read");
        let at = buf.as_ptr() as usize - base;
        let n = buf.len().min(chunk).min(stream.len() - offset);
        buf[..n].copy_from_slice(&stream[offset..offset + n]);
        placed.extend(at..at + n);
        store.commit(n, now);
        offset += n;
    }
    placed
}

#[test]
fn a_pipe_frame_is_sent_from_where_it_was_read_retained_gop_included() {
    // Ten GOPs of a keyframe and three inter frames, read in odd-sized pieces into a ring that
    // they go round, so that frames wrap around its end.
    const GOPS: u64 = 10;
    let slice = |first: u8, seq: u8| -> Vec<u8> {
        // first_mb_in_slice 0 (a leading 1 bit): each slice starts an access unit.
        [first, 0x88]
            .into_iter()
            .chain((0..150u32).map(|i| (i as u8).wrapping_add(seq) | 1))
            .collect()
    };
    let mut stream = Vec::new();
    for seq in 0..(4 * GOPS) as u8 {
        let nal = slice(if seq % 4 == 0 { 0x65 } else { 0x41 }, seq);
        if seq % 4 == 0 {
            stream.extend(annexb(&[SPS, PPS, &nal], true));
        } else {
            stream.extend(annexb(&[&nal], false));
        }
    }
    let mut store = FrameStore::new(config(1200, 400, 64));
    store.set_retention(true);
    let cursor = store.add_cursor(unbounded(), 0).unwrap();
    // Where each NAL unit of each frame is in the stream, and so where it was read to.
    let mut nal_starts = Vec::new();
    for i in 0..stream.len().saturating_sub(3) {
        if stream[i..i + 3] == [0, 0, 1] {
            nal_starts.push(i + 3);
        }
    }
    let mut sent: Vec<Vec<(usize, usize)>> = Vec::new();
    let mut placed = Vec::new();
    let mut next_nal = 0;
    // The ring ranges a frame is sent from, checked to be where its NAL units were read to.
    let check = |store: &FrameStore, token: &InFlight, placed: &[usize], next_nal: &mut usize| {
        let frame = store.frame(token);
        let mut parts = Vec::new();
        frame.push_avc_parts(&mut parts);
        let mut ranges = Vec::new();
        for part in &parts {
            match *part {
                // Only the 4-byte length prefixes are made here; every payload byte is external.
                Part::Inline { len, .. } => assert_eq!(len, 4),
                Part::External { start, len } => ranges.push((start, len)),
            }
        }
        let sent_from: Vec<usize> = ranges.iter().flat_map(|&(s, l)| s..s + l).collect();
        let mut read_to = Vec::new();
        for nal in frame.nals() {
            let start = nal_starts[*next_nal];
            read_to.extend_from_slice(&placed[start..start + nal.len()]);
            *next_nal += 1;
        }
        assert_eq!(sent_from, read_to, "sent from where it was read to");
        ranges
    };
    for gop in 0..GOPS {
        let from = placed.len();
        let to = if gop == GOPS - 1 {
            stream.len()
        } else {
            // Up to the next keyframe's SPS start code (4 bytes).
            *nal_starts
                .iter()
                .find(|&&s| s > from + 4 && stream[s] == SPS[0])
                .unwrap()
                - 4
        };
        let more = read_in(&mut store, &stream[from..to], 37, gop);
        placed.extend(more);
        if gop == GOPS - 1 {
            store.finish(gop);
        }
        while let Some(frame) = store.next_unadmitted() {
            let key = frame.is_idr();
            store.admit(gop, key);
        }
        while let Some(token) = store.take(cursor, gop) {
            sent.push(check(&store, &token, &placed, &mut next_nal));
            store.advance(token);
        }
    }
    assert_eq!(sent.len(), 4 * GOPS as usize);
    // Some NAL units went round: across an early wrap (the head jumped to the ring's start once
    // past twice what the ring held) or across the ring's end; both are two ranges.
    assert!(
        sent.iter().any(|ranges| ranges
            .windows(2)
            .any(|w| w[1].0 == 0 && w[0].0 + w[0].1 != 0)),
        "some NAL unit wraps: {sent:?}"
    );
    // A reconnect replays the retained GOP from the very same ring bytes: no copy was made.
    store.cursor_restart(cursor, 100);
    let mut replayed = Vec::new();
    let mut replay_nal = nal_starts.len() - 6;
    while let Some(token) = store.take(cursor, 100) {
        replayed.push(check(&store, &token, &placed, &mut replay_nal));
        store.advance(token);
    }
    assert_eq!(replayed, sent[sent.len() - 4..].to_vec());
}

#[test]
fn a_new_stream_drops_only_an_unfinished_access_unit() {
    let mut store = FrameStore::new(config(1 << 12, 1 << 10, 64));
    let cursor = store.add_cursor(unbounded(), 0).unwrap();
    // Two whole frames and half of a third.
    let mut stream = annexb(&[SPS, PPS, IDR], true);
    stream.extend(annexb(&[P], true));
    stream.extend(annexb(&[P], true));
    let cut = stream.len() - 1;
    read_in(&mut store, &stream[..cut], 1 << 10, 0);
    let mut got = Vec::new();
    drain(&mut store, cursor, 0, &mut got);
    assert_eq!(got.len(), 2, "the second frame ended where the third began");
    store.new_stream();
    // The third is lost, and counted.
    drain(&mut store, cursor, 0, &mut got);
    assert_eq!(got.len(), 2);
    assert_eq!(store.stats().input_frames_dropped, 1);
    // The new stream starts with a keyframe; the cursor takes it.
    read_in(&mut store, &annexb(&[SPS, PPS, IDR, P], true), 1 << 10, 1);
    store.finish(1);
    drain(&mut store, cursor, 1, &mut got);
    let types: Vec<Vec<u8>> = got
        .iter()
        .map(|au| au.iter().map(|(t, _)| *t).collect())
        .collect();
    assert_eq!(types, vec![vec![7, 8, 5], vec![1], vec![7, 8, 5], vec![1]]);
}

#[test]
fn a_restarted_cursor_starts_at_the_oldest_keyframe_that_is_not_late() {
    let bounds = Bounds {
        max_wait_ms: Some(2_000),
        max_bytes: None,
    };
    let mut store = FrameStore::new(config(1 << 16, 1000, 256));
    let cursor = store.add_cursor(bounds, 0).unwrap();
    // Frames 0..12 arrive 250 ms apart (keyframes 0, 4, 8) while the link is down.
    for seq in 0..12 {
        push(&mut store, seq, 4, 100, seq * 250).unwrap();
    }
    // At 2.5 s, keyframe 0 waited 2.5 s (late) and keyframe 4 waited 1.5 s (not late).
    store.cursor_restart(cursor, 2_500);
    assert_eq!(
        send_all(&mut store, cursor, 2_500),
        (4..12).collect::<Vec<_>>()
    );
    // When every keyframe is late, the newest one is the start.
    for seq in 12..20 {
        push(&mut store, seq, 4, 100, 3_000 + seq).unwrap();
    }
    store.cursor_restart(cursor, 10_000);
    assert_eq!(
        send_all(&mut store, cursor, 10_000),
        (16..20).collect::<Vec<_>>()
    );
}

#[test]
fn a_read_larger_than_the_free_slots_waits_in_the_ring_and_loses_nothing() {
    // Room for 4 records: one read brings 30 small frames, and the end of input.
    let mut store = FrameStore::new(config(1 << 12, 1 << 10, 4));
    let cursor = store.add_cursor(unbounded(), 0).unwrap();
    let mut stream = annexb(&[SPS, PPS, IDR], true);
    for _ in 0..29 {
        stream.extend(annexb(&[P], true));
    }
    let buf = store.write_buf(0);
    assert!(buf.len() >= stream.len(), "one read takes it all");
    buf[..stream.len()].copy_from_slice(&stream);
    store.commit(stream.len(), 0);
    store.finish(0);
    assert!(!store.scanned_all(), "scanning waits for free slots");
    assert!(
        store.write_buf(0).is_empty(),
        "no new stream before the end of this one is scanned"
    );
    let mut got = Vec::new();
    for now in 1..100 {
        store.scan(now);
        drain(&mut store, cursor, now, &mut got);
        if store.scanned_all() && store.next_unadmitted().is_none() {
            break;
        }
    }
    assert_eq!(got.len(), 30);
    assert_eq!(store.stats().input_frames_dropped, 0);
    assert!(store.scanned_all());
    assert!(!store.write_buf(100).is_empty(), "the next stream may come");
}

#[test]
fn a_retained_gop_longer_than_the_slots_gives_way_to_scanning() {
    // Room for 4 records, retention on (a new connection would start at the keyframe): a GOP of
    // 30 frames read in one piece, then the end of input, with no further read to make room.
    let mut store = FrameStore::new(config(1 << 12, 1 << 10, 4));
    store.set_retention(true);
    let cursor = store.add_cursor(unbounded(), 0).unwrap();
    let mut stream = annexb(&[SPS, PPS, IDR], true);
    for _ in 0..29 {
        stream.extend(annexb(&[P], true));
    }
    let buf = store.write_buf(0);
    buf[..stream.len()].copy_from_slice(&stream);
    store.commit(stream.len(), 0);
    store.finish(0);
    let mut got = Vec::new();
    for now in 1..100 {
        store.scan(now);
        drain(&mut store, cursor, now, &mut got);
        if store.scanned_all() && store.next_unadmitted().is_none() {
            break;
        }
    }
    assert_eq!(got.len(), 30, "every frame reached the connection");
    assert_eq!(store.stats().input_frames_dropped, 0);
    assert!(store.stats().retention_drops > 0, "the GOP gave way");
    assert!(store.scanned_all());
}

#[test]
fn an_early_wrap_right_after_a_start_code_reports_no_empty_nal_unit() {
    // Each read ends right after a start code that an empty NAL unit follows (`00 00 01` then
    // `00 00 00 01`): an early wrap there must not leave the NAL unit's start behind the jump.
    let slice: Vec<u8> = [0x41, 0x9a].into_iter().chain([0x55; 200]).collect();
    let mut unit = annexb(&[&slice], true);
    unit.extend([0, 0, 1]);
    let mut stream = annexb(&[SPS, PPS, IDR], true);
    let mut sizes = vec![stream.len()];
    for _ in 0..200 {
        let mut piece = vec![0, 0, 0, 1, 0x09, 0xf0];
        piece.extend(&unit);
        sizes.push(piece.len());
        stream.extend(piece);
    }
    let (expected, _) = reader_aus(&stream);
    let mut store = FrameStore::new(config(64, 1024, 64));
    let got = store_aus(&mut store, &stream, &sizes);
    assert!(store.jump.is_some(), "the ring wrapped early");
    assert_eq!(got, expected);
}

#[test]
fn camera_frames_copied_in_keep_to_the_first_pages_too() {
    // An H.264 camera with its GOP retained (every frame copied in): 2000 frames of 10 KB in a
    // GOP of 30, into an 8 MiB ring, sent as they come. The copies wrap early as a byte stream
    // does, so the ring's later pages are never written (they would all become resident).
    let mut store = FrameStore::new(config(8 << 20, 1 << 20, 256));
    store.set_retention(true);
    store.set_input_can_wait(false);
    let cursor = store.add_cursor(unbounded(), 0).unwrap();
    let mut furthest = 0;
    for seq in 0..2_000u64 {
        push(&mut store, seq, 30, 10_000, seq * 33).unwrap();
        while let Some(token) = store.take(cursor, seq * 33) {
            let frame = store.frame(&token);
            assert_eq!(seq_of(&frame), Ok(seq));
            for nal in frame.nals() {
                for range in nal.ranges() {
                    furthest = furthest.max(range.start + range.len);
                }
            }
            store.advance(token);
        }
    }
    assert!(store.jump.is_some(), "the copies wrapped early");
    assert!(
        furthest <= (1 << 20) + 64 * 1024,
        "copies reached {furthest} bytes into the ring"
    );
    assert_eq!(store.stats().input_frames_dropped, 0);
}

#[test]
fn a_lightly_used_ring_keeps_to_its_first_pages() {
    // An 8 MiB ring, a stream of 10 KB frames sent as they come: the ring holds a frame or two,
    // so writes wrap early and never reach far into it (its later pages never become resident).
    let mut store = FrameStore::new(config(8 << 20, 1 << 20, 64));
    let cursor = store.add_cursor(unbounded(), 0).unwrap();
    let frame = |seq: u32| -> Vec<u8> {
        let slice: Vec<u8> = [0x41, 0x88]
            .into_iter()
            .chain((0..10_000u32).map(|i| (i.wrapping_mul(7).wrapping_add(seq) as u8) | 1))
            .collect();
        annexb(&[&slice], true)
    };
    let mut stream = annexb(&[SPS, PPS, IDR], true);
    for seq in 0..2_000 {
        stream.extend(frame(seq));
    }
    let base = store.ring().as_ptr() as usize;
    let mut furthest = 0;
    let mut offset = 0;
    let mut in_flight: Option<InFlight> = None;
    while offset < stream.len() {
        let buf = store.write_buf(0);
        if buf.is_empty() {
            // The socket finishes the frame it was writing.
            let token = in_flight
                .take()
                .expect("the ring is full only while a frame is pinned");
            store.advance(token);
            continue;
        }
        let at = buf.as_ptr() as usize - base;
        let n = buf.len().min(stream.len() - offset).min(64 * 1024);
        buf[..n].copy_from_slice(&stream[offset..offset + n]);
        furthest = furthest.max(at + n);
        store.commit(n, 0);
        offset += n;
        while let Some(frame) = store.next_unadmitted() {
            let key = frame.is_idr();
            store.admit(0, key);
        }
        // Everything is sent but the last frame, which the socket still writes (pinned) while
        // the next read comes, as on a real link.
        if let Some(token) = in_flight.take() {
            store.advance(token);
        }
        while let Some(token) = store.take(cursor, 0) {
            if store.has_backlog(cursor) {
                store.advance(token);
            } else {
                in_flight = Some(token);
                break;
            }
        }
    }
    if let Some(token) = in_flight.take() {
        store.advance(token);
    }
    assert!(
        stream.len() > 16 << 20,
        "the stream goes round the ring twice"
    );
    assert!(
        furthest <= (1 << 20) + 256 * 1024,
        "writes reached {furthest} bytes into the ring"
    );
    // What a jump leaves unused is not held: the high-water mark, and so the next jump, stay low.
    assert!(store.jump.is_some());
    assert!(
        store.high_water < 1 << 20,
        "high-water mark {}",
        store.high_water
    );
    assert!(store.depth().bytes < 1 << 20, "{:?}", store.depth());
    assert_eq!(store.stats().input_frames_dropped, 0);
}
