//! Tests of the audio track in the frame store: interleaving with video read from a byte stream
//! and copied from a camera, GOP drops and restarts that take the audio of their span with them,
//! and the bounded audio arena.

use super::*;

fn config(audio_bytes: usize) -> StoreConfig {
    StoreConfig {
        queue_bytes: 1 << 16,
        max_frame_bytes: 1000,
        max_frames: 256,
        max_nals_per_frame: 16,
        audio_bytes,
    }
}

/// A video frame (a slice with first_mb_in_slice 0) whose last byte names it; not stored when
/// no cursor needs it.
fn video(store: &mut FrameStore, n: u8, key: bool, at: u64) {
    let nal = [if key { 0x65 } else { 0x41 }, 0x80, n];
    let _ = store.push_copy(Track::Video, at, key, &[&nal], at, CursorSet::EMPTY);
}

/// An audio frame of `len` bytes, all `n`.
fn audio(store: &mut FrameStore, n: u8, at: u64, len: usize) -> Result<u64, NotStored> {
    store.push_audio(at, &vec![n; len], at)
}

/// What the cursor gets now, as `V<n>` and `A<n>`, each checked whole.
fn send_all(store: &mut FrameStore, cursor: CursorId, now: u64) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(token) = store.take(cursor, now) {
        let frame = store.frame(&token);
        out.push(match frame.track() {
            Track::Video => {
                let nal = frame.nals().next().unwrap();
                let (a, b) = nal.bytes();
                format!("V{}", [a, b].concat()[2])
            }
            Track::Audio => {
                let bytes = frame.audio_bytes();
                assert!(!bytes.is_empty() && bytes.iter().all(|&b| b == bytes[0]));
                assert_eq!(bytes.len(), frame.payload_len());
                format!("A{}", bytes[0])
            }
        });
        store.advance(token);
    }
    out
}

#[test]
fn audio_goes_before_the_access_units_read_but_not_admitted() {
    let mut store = FrameStore::new(config(4096));
    let cursor = store.add_cursor(Bounds::default(), 0).unwrap();
    // Two access units of a byte stream are read (the second one ends at the third start
    // code); only the first is admitted when two audio frames come.
    let stream = [
        &[0, 0, 0, 1, 0x65, 0x80, 7][..],
        &[0, 0, 0, 1, 0x41, 0x80, 8],
        &[0, 0, 0, 1, 0x41, 0x80, 9],
    ]
    .concat();
    let buf = store.write_buf(0);
    buf[..stream.len()].copy_from_slice(&stream);
    store.commit(stream.len(), 0);
    let first = store.next_unadmitted().unwrap().seq();
    store.admit(0, true);
    audio(&mut store, 1, 10, 50).unwrap();
    audio(&mut store, 2, 31, 50).unwrap();
    // The unadmitted access unit was renumbered after them, and is admitted next.
    let next = store.next_unadmitted().unwrap();
    assert_eq!(next.seq(), first + 3);
    store.admit(40, false);
    assert_eq!(send_all(&mut store, cursor, 40), ["V7", "A1", "A2", "V8"]);
    store.finish(50);
    store.admit(80, false);
    audio(&mut store, 3, 52, 50).unwrap();
    assert_eq!(send_all(&mut store, cursor, 80), ["V9", "A3"]);
    assert_eq!(store.stats().audio_frames_stored, 3);
}

#[test]
fn a_restart_and_a_gop_drop_take_the_audio_of_their_span() {
    let mut store = FrameStore::new(config(4096));
    store.set_retention(true);
    let cursor = store
        .add_cursor(
            Bounds {
                max_wait_ms: Some(100),
                max_bytes: None,
            },
            0,
        )
        .unwrap();
    // GOP of 3 at 33 ms, audio every 21 ms, in timestamp order.
    let mut events: Vec<(u64, bool, u8)> = (0..9u8)
        .map(|n| (u64::from(n) * 33, true, n))
        .chain((0..14u8).map(|n| (u64::from(n) * 21 + 1, false, n)))
        .collect();
    events.sort();
    for &(at, is_video, n) in &events {
        if is_video {
            video(&mut store, n, n % 3 == 0, at);
        } else {
            audio(&mut store, n, at, 40).unwrap();
        }
    }
    // At 290 ms everything before 190 ms is late: the newest keyframe (video 6, 198 ms) and
    // what follows it go, audio from 198 ms on included; nothing older.
    let sent = send_all(&mut store, cursor, 290);
    assert_eq!(sent, ["V6", "A10", "V7", "A11", "A12", "V8", "A13"]);
    // A new connection starts at the retained keyframe, with the audio after it.
    store.cursor_restart(cursor, 290);
    assert_eq!(send_all(&mut store, cursor, 290), sent);
}

#[test]
fn a_cursor_waiting_for_a_keyframe_gets_no_audio_before_it() {
    let mut store = FrameStore::new(config(4096));
    let cursor = store.add_cursor(Bounds::default(), 0).unwrap();
    // Without retention, nothing waits for a cursor that waits for a keyframe: not stored.
    assert_eq!(audio(&mut store, 1, 0, 40), Err(NotStored::NotNeeded));
    video(&mut store, 1, false, 5);
    assert_eq!(send_all(&mut store, cursor, 5), Vec::<String>::new());
    video(&mut store, 2, true, 10);
    audio(&mut store, 2, 12, 40).unwrap();
    assert_eq!(send_all(&mut store, cursor, 12), ["V2", "A2"]);
}

#[test]
fn the_audio_arena_is_bounded_and_frames_never_wrap() {
    // 1000 bytes: frames of 240 bytes (at most a quarter of the arena) fit four to a lap.
    let mut store = FrameStore::new(config(1000));
    let capacities = store.capacities();
    let cursor = store.add_cursor(Bounds::default(), 0).unwrap();
    video(&mut store, 0, true, 0);
    for n in 0..4 {
        audio(&mut store, n, u64::from(n), 240).unwrap();
    }
    // The cursor holds them all: the fifth does not fit, and is counted.
    assert_eq!(audio(&mut store, 4, 5, 240), Err(NotStored::NoRoom));
    assert_eq!(store.stats().audio_frames_dropped, 1);
    assert_eq!(
        send_all(&mut store, cursor, 5),
        ["V0", "A0", "A1", "A2", "A3"]
    );
    // Sent: room again. 960 bytes were used, so the next one starts the next lap whole.
    for n in 5..40 {
        audio(&mut store, n, u64::from(n), 240).unwrap();
        assert_eq!(
            send_all(&mut store, cursor, u64::from(n)),
            [format!("A{n}")]
        );
    }
    assert_eq!(
        audio(&mut store, 99, 50, 251),
        Err(NotStored::TooLarge),
        "larger than a quarter of the arena"
    );
    // Held again: four fit (the last one sent is reclaimed), the fifth does not.
    for n in 40..44 {
        audio(&mut store, n, u64::from(n), 240).unwrap();
    }
    assert_eq!(audio(&mut store, 44, 44, 240), Err(NotStored::NoRoom));
    assert!(store.depth().bytes <= 1000, "{:?}", store.depth());
    assert_eq!(store.capacities(), capacities);
}

#[test]
fn a_retained_gop_gives_way_to_audio_for_a_connection_that_is_caught_up() {
    // A GOP longer than the record ring, two audio frames per video frame, the connection
    // sending everything at once: the GOP kept for new connections gives up the slots.
    let mut store = FrameStore::new(StoreConfig {
        max_frames: 17,
        ..config(4096)
    });
    store.set_retention(true);
    let cursor = store.add_cursor(Bounds::default(), 0).unwrap();
    let mut lost = Vec::new();
    for n in 0..40u8 {
        let at = u64::from(n) * 40;
        video(&mut store, n, n == 0, at);
        for k in 0..2u64 {
            if audio(&mut store, n, at + 1 + 20 * k, 40).is_err() {
                lost.push(n);
            }
        }
        let _ = send_all(&mut store, cursor, at + 1);
    }
    assert_eq!(lost, Vec::<u8>::new());
    assert!(store.stats().retention_drops > 0);
}

#[test]
fn a_retained_gop_gives_way_when_its_audio_fills_the_arena() {
    let mut store = FrameStore::new(config(1000));
    store.set_retention(true);
    let cursor = store.add_cursor(Bounds::default(), 0).unwrap();
    let mut lost = Vec::new();
    for n in 0..20u8 {
        let at = u64::from(n) * 40;
        video(&mut store, n, n == 0, at);
        if audio(&mut store, n, at + 1, 200).is_err() {
            lost.push(n);
        }
        let _ = send_all(&mut store, cursor, at + 1);
    }
    assert_eq!(lost, Vec::<u8>::new());
}

#[test]
fn a_connection_that_lags_still_loses_audio_rather_than_block_the_input() {
    // The arena is full of frames the connection has not sent: those are not the retained
    // GOP's alone, so the new frame is lost (and counted), nothing else.
    let mut store = FrameStore::new(config(1000));
    store.set_retention(true);
    let cursor = store.add_cursor(Bounds::default(), 0).unwrap();
    video(&mut store, 0, true, 0);
    for n in 0..4 {
        audio(&mut store, n, u64::from(n) + 1, 240).unwrap();
    }
    assert_eq!(audio(&mut store, 4, 5, 240), Err(NotStored::NoRoom));
    assert_eq!(
        send_all(&mut store, cursor, 5),
        ["V0", "A0", "A1", "A2", "A3"]
    );
}

#[test]
fn admitting_says_the_sequence_number_audio_before_it_gave_the_frame() {
    let mut store = FrameStore::new(config(4096));
    let cursor = store.add_cursor(Bounds::default(), 0).unwrap();
    let stream = [
        &[0, 0, 0, 1, 0x65, 0x80, 7][..],
        &[0, 0, 0, 1, 0x65, 0x80, 8],
        &[0, 0, 0, 1, 0x41, 0x80, 9],
    ]
    .concat();
    let buf = store.write_buf(0);
    buf[..stream.len()].copy_from_slice(&stream);
    store.commit(stream.len(), 0);
    assert_eq!(store.admit_composed(0, 0, true), Some(0));
    let read_as = store.next_unadmitted().unwrap().seq();
    audio(&mut store, 1, 10, 50).unwrap();
    // The flow skips to this number when parameter sets change: the video frame's, not the
    // audio frame's that took its old one.
    let admitted = store.admit_composed(40, 0, true).unwrap();
    assert_eq!(admitted, read_as + 1);
    store.skip_to(cursor, admitted);
    assert_eq!(send_all(&mut store, cursor, 40), ["V8"]);
}

#[test]
fn held_camera_frames_wait_for_the_audio_of_their_time() {
    let mut store = FrameStore::new(config(4096));
    let cursor = store.add_cursor(Bounds::default(), 0).unwrap();
    video(&mut store, 1, true, 0);
    // Two camera frames come before the audio of their time: copied in, held.
    let held = |store: &mut FrameStore, n: u8, at: u64| {
        let nal = [0x41, 0x80, n];
        store.hold_copy_nals(at, false, [&nal[..]].into_iter(), at)
    };
    held(&mut store, 2, 33).unwrap();
    held(&mut store, 3, 66).unwrap();
    assert!(store.holds_unadmitted());
    // Nothing held is sent.
    assert_eq!(send_all(&mut store, cursor, 70), ["V1"]);
    audio(&mut store, 10, 21, 40).unwrap();
    audio(&mut store, 11, 42, 40).unwrap();
    assert_eq!(store.admit_composed(33, 0, false), Some(3));
    audio(&mut store, 12, 64, 40).unwrap();
    assert_eq!(store.admit_composed(66, 0, false), Some(5));
    assert!(!store.holds_unadmitted());
    assert_eq!(
        send_all(&mut store, cursor, 90),
        ["A10", "A11", "V2", "A12", "V3"]
    );
    // Timestamps are in order on the way out, as admitted.
    video(&mut store, 4, false, 99);
    assert_eq!(send_all(&mut store, cursor, 100), ["V4"]);
}
