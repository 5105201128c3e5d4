//! Fuzzes the frame store: the input is read into the store in pieces whose sizes come from the
//! input, with cursor operations (take, advance, abandon, restart, clock ticks) chosen by the
//! input too. Asserts that nothing panics, that the access units found are exactly
//! `AnnexBReader`'s (when none was dropped for size), that every cursor's connection starts at a
//! keyframe and continues frame by frame, and that the store's memory never grows. Audio frames
//! are pushed between the access units too: they come out whole, after a keyframe, and never
//! break the video's continuity.
#![no_main]

use libfuzzer_sys::fuzz_target;
use v4l2rtmp::media::annexb::AnnexBReader;
use v4l2rtmp::store::{Bounds, CursorId, FrameStore, InFlight, StoreConfig, Track};

/// Access units as lists of NAL units.
type Aus = Vec<Vec<Vec<u8>>>;

fn reader_aus(stream: &[u8]) -> Aus {
    let mut reader = AnnexBReader::new(1 << 20);
    let mut out = Vec::new();
    let mut offset = 0;
    while offset < stream.len() {
        let spare = reader.read_buf().unwrap();
        let n = spare.len().min(stream.len() - offset);
        spare[..n].copy_from_slice(&stream[offset..offset + n]);
        reader.commit(n);
        offset += n;
        while let Some(au) = reader.next_access_unit() {
            out.push(au.nal_bytes().map(|(_, b)| b.to_vec()).collect());
        }
    }
    reader.finish();
    while let Some(au) = reader.next_access_unit() {
        out.push(au.nal_bytes().map(|(_, b)| b.to_vec()).collect());
    }
    out
}

struct Conn {
    cursor: CursorId,
    token: Option<InFlight>,
    /// The last video frame sent on this connection.
    last: Option<u64>,
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    let small = seed & 0x80 != 0;
    let mut store = FrameStore::new(StoreConfig {
        queue_bytes: usize::from(seed & 0x3f) * 16,
        max_frame_bytes: if small { 64 } else { 1 << 16 },
        max_frames: 4 + usize::from(seed & 0x0f),
        max_nals_per_frame: 16,
        audio_bytes: if seed & 0x10 != 0 { 512 } else { 0 },
    });
    store.set_retention(seed & 0x40 != 0);
    store.set_backpressure(seed & 0x20 != 0);
    let capacities = store.capacities();
    let mut now = 0u64;
    let mut conns: Vec<Conn> = (0..3u64)
        .map(|i| Conn {
            cursor: store
                .add_cursor(
                    Bounds {
                        max_wait_ms: (i == 1).then_some(20),
                        max_bytes: (i == 2).then_some(300),
                    },
                    0,
                )
                .unwrap(),
            token: None,
            last: None,
        })
        .collect();
    let mut found: Aus = Vec::new();
    // By sequence number: whether the record is a video frame (not discarded), in order.
    let mut video: Vec<bool> = Vec::new();
    let mut audio_sent = 0u64;
    let mut offset = 0;
    let mut step = 0usize;
    let mut stuck = 0;
    let mut finished = false;
    loop {
        let control = stream.get(step % stream.len().max(1)).copied().unwrap_or(0) ^ seed;
        step += 1;
        if offset < stream.len() {
            let want = 1 + usize::from(control) % 61;
            let buf = store.write_buf(now);
            let n = want.min(buf.len()).min(stream.len() - offset);
            buf[..n].copy_from_slice(&stream[offset..offset + n]);
            store.commit(n, now);
            offset += n;
            stuck = if n == 0 { stuck + 1 } else { 0 };
        } else if !finished {
            store.finish(now);
            finished = true;
        }
        // As the flow does before looking for frames: scanning paused while slots were short
        // picks up once sent frames freed them.
        store.scan(now);
        while let Some(frame) = store.next_unadmitted() {
            let bytes: Vec<Vec<u8>> = frame
                .nals()
                .map(|nal| {
                    let (a, b) = nal.bytes();
                    [a, b].concat()
                })
                .collect();
            found.push(bytes);
            assert_eq!(frame.seq(), video.len() as u64, "sequence numbers follow admission");
            let key = frame.is_idr();
            // As the pipeline does with an access unit without a picture.
            let picture = frame.nals().any(|nal| (1..=5).contains(&nal.nal_type));
            video.push(!(!picture && control & 0x10 != 0));
            if !picture && control & 0x10 != 0 {
                store.discard();
            } else {
                store.admit(now, key);
            }
        }
        if control & 0x60 == 0x60 && !finished {
            // An audio frame between access units (while the video lasts, as the flow stores
            // audio only before a video frame): its bytes name its length.
            let len = 1 + usize::from(control >> 3);
            if let Ok(seq) = store.push_audio(now, &vec![len as u8; len], now) {
                assert_eq!(seq, video.len() as u64, "audio goes after every admitted record");
                video.push(false);
            }
        }
        now += u64::from(control & 0x07);
        let drain_all = stuck > 2 || finished;
        for (i, conn) in conns.iter_mut().enumerate() {
            let op = (control >> (i * 2)) & 0x03;
            if drain_all || op != 0 {
                if let Some(token) = conn.token.take() {
                    store.advance(token);
                }
                if let Some(token) = store.take(conn.cursor, now) {
                    let frame = store.frame(&token);
                    if frame.track() == Track::Audio {
                        let bytes = frame.audio_bytes();
                        assert!(!bytes.is_empty() && bytes.iter().all(|&b| b as usize == bytes.len()));
                        assert!(conn.last.is_some(), "audio before the first keyframe");
                        audio_sent += 1;
                        conn.token = Some(token);
                        continue;
                    }
                    // The video frame before it, passing over discarded access units and audio.
                    let previous = (0..frame.seq()).rev().find(|&s| video[s as usize]);
                    assert!(
                        frame.keyframe() || (conn.last.is_some() && conn.last == previous),
                        "inter frame {} after {:?}",
                        frame.seq(),
                        conn.last
                    );
                    conn.last = Some(frame.seq());
                    conn.token = Some(token);
                }
            }
            if !drain_all && op == 3 && control & 0x08 != 0 {
                if let Some(token) = conn.token.take() {
                    store.abandon(token);
                }
                store.cursor_restart(conn.cursor, now);
                conn.last = None;
            }
        }
        assert_eq!(store.capacities(), capacities);
        if finished && store.scanned_all() && conns.iter().all(|c| c.token.is_none()) {
            break;
        }
        if step > 100 * (stream.len() + 10) {
            // Backpressure with frames in flight forever cannot happen: every connection
            // advances when draining.
            panic!("no progress: {store:?}");
        }
    }
    // Every audio frame sent was stored (restarts may send one again).
    assert!(audio_sent == 0 || store.stats().audio_frames_stored > 0);
    if store.stats().input_frames_dropped == 0 {
        assert_eq!(found, reader_aus(stream));
    }
});
