//! The frame store's memory: a long random run of byte-stream reads, copy-ins and cursor moves
//! under the tests' counting allocator. Capacities never change, and after construction nothing
//! allocates.

mod common;

use common::alloc::{count_this_thread, CountingAllocator};
use v4l2rtmp::store::{Bounds, FrameStore, InFlight, StoreConfig};

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

const AUD: &[u8] = &[0x09, 0xf0];
const SPS: &[u8] = &[0x67, 0x42, 0xc0, 0x1e, 0xda, 0x02];
const PPS: &[u8] = &[0x68, 0xce, 0x3c, 0x80];

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

/// A long random run of byte-stream reads, copy-ins and cursor moves: capacities never change
/// and, after construction, nothing allocates.
#[test]
fn memory_never_grows_and_nothing_allocates_per_frame() {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut stream = Vec::new();
    for i in 0..3000u32 {
        let mut slice: Vec<u8> = vec![if i % 30 == 0 { 0x65 } else { 0x41 }, 0x88];
        slice.extend((0..(next() % 900) as u32).map(|j| (j % 250 + 2) as u8));
        let nals: Vec<&[u8]> = if i % 30 == 0 {
            vec![AUD, SPS, PPS, &slice]
        } else {
            vec![AUD, &slice]
        };
        stream.extend(annexb(&nals, i % 2 == 0));
    }
    let mut store = FrameStore::new(config(8192, 1024, 32));
    store.set_retention(true);
    let cursors = [
        store.add_cursor(unbounded(), 0).unwrap(),
        store
            .add_cursor(
                Bounds {
                    max_wait_ms: Some(50),
                    max_bytes: None,
                },
                0,
            )
            .unwrap(),
        store
            .add_cursor(
                Bounds {
                    max_wait_ms: None,
                    max_bytes: Some(3000),
                },
                0,
            )
            .unwrap(),
    ];
    let capacities = store.capacities();
    let mut tokens: [Option<InFlight>; 3] = [None, None, None];
    let ((), counts) = count_this_thread(|| {
        let mut offset = 0;
        let mut now = 0;
        let mut frames = 0u64;
        while offset < stream.len() {
            now += next() % 5;
            let buf = store.write_buf(now);
            let n = buf
                .len()
                .min((next() % 3000) as usize + 1)
                .min(stream.len() - offset);
            buf[..n].copy_from_slice(&stream[offset..offset + n]);
            store.commit(n, now);
            offset += n;
            while let Some(frame) = store.next_unadmitted() {
                let key = frame.is_idr();
                store.admit(now, key);
                frames += 1;
            }
            for (i, &cursor) in cursors.iter().enumerate() {
                if next() % (i as u64 + 1) != 0 {
                    continue;
                }
                if let Some(token) = tokens[i].take() {
                    store.advance(token);
                }
                tokens[i] = store.take(cursor, now);
                if next() % 50 == 0 {
                    if let Some(token) = tokens[i].take() {
                        store.abandon(token);
                    }
                    store.cursor_restart(cursor, now);
                }
            }
            assert_eq!(store.capacities(), capacities);
        }
        assert!(frames > 2500, "{frames}");
    });
    assert_eq!(
        counts.allocations, 0,
        "allocations after construction: {counts:?}"
    );
}
