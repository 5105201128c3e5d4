//! Round trip of the chunk stream through the public API.
//!
//! Random sequences of messages (any chunk stream id, type, stream id; timestamps that repeat,
//! step forward, go backwards and cross 0xFFFFFF and 2^32; bodies of 0 to 70000 bytes made of
//! inline and external parts) with the chunk size changed mid-sequence (announced with a Set
//! Chunk Size message written through the writer itself, as the session does) are written with
//! `ChunkWriter` into a `Gather`, drained with random partial writes through `io_slices` and
//! `advance`, and read back twice: by an independent minimal reader written here from the
//! specification, and by `ChunkReader` fed in random pieces. Both must return exactly the
//! messages sent.
//!
//! A second test checks with a counting global allocator that the steady-state write path
//! (write_message, io_slices, advance) allocates nothing over 1000 frames.

mod common;

use std::collections::HashMap;
use std::io::IoSlice;

use common::alloc::{count_this_thread, CountingAllocator};
use proptest::prelude::*;
use proptest::test_runner::Config;
use v4l2rtmp::rtmp::chunk::{ChunkReader, ChunkWriter, Gather, Message, MessageHeader, Part};

// Counts per thread ([`count_this_thread`]), so tests running in parallel do not disturb each
// other.
#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

// ---------------------------------------------------------------------------------------------
// An independent minimal chunk reader (RTMP 1.0, 5.3), written from the specification and
// sharing no code with `ChunkReader`. It parses a complete byte string and panics on anything
// malformed (a test failure).
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct Previous {
    timestamp: u32,
    delta: u32,
    length: usize,
    type_id: u8,
    stream_id: u32,
    extended: bool,
    partial: Option<Vec<u8>>,
}

fn independent_decode(bytes: &[u8]) -> Vec<Message> {
    fn take<'a>(bytes: &'a [u8], at: &mut usize, n: usize) -> &'a [u8] {
        let s = &bytes[*at..*at + n];
        *at += n;
        s
    }
    fn uint_be(b: &[u8]) -> u32 {
        b.iter().fold(0, |v, &x| (v << 8) | u32::from(x))
    }

    let mut chunk_size = 128usize;
    let mut streams: HashMap<u32, Previous> = HashMap::new();
    let mut messages = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let first = take(bytes, &mut at, 1)[0];
        let fmt = first >> 6;
        let csid = match first & 0x3F {
            0 => 64 + u32::from(take(bytes, &mut at, 1)[0]),
            1 => {
                let b = take(bytes, &mut at, 2);
                64 + u32::from(b[0]) + 256 * u32::from(b[1])
            }
            n => u32::from(n),
        };
        if fmt != 0 {
            assert!(
                streams.contains_key(&csid),
                "fmt {fmt} on new chunk stream {csid}"
            );
        }
        let st = streams.entry(csid).or_default();
        let continuing = st.partial.is_some();
        if continuing {
            assert_eq!(fmt, 3, "new header in the middle of a message on {csid}");
        }
        let mut ts_field = 0;
        if fmt <= 2 {
            ts_field = uint_be(take(bytes, &mut at, 3));
        }
        if fmt <= 1 {
            st.length = uint_be(take(bytes, &mut at, 3)) as usize;
            st.type_id = take(bytes, &mut at, 1)[0];
        }
        if fmt == 0 {
            let b = take(bytes, &mut at, 4);
            st.stream_id = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        }
        if fmt <= 2 {
            st.extended = ts_field == 0xFF_FFFF;
        }
        let ext = if st.extended {
            Some(uint_be(take(bytes, &mut at, 4)))
        } else {
            None
        };
        if !continuing {
            match fmt {
                0 => {
                    st.timestamp = ext.unwrap_or(ts_field);
                    st.delta = st.timestamp;
                }
                1 | 2 => {
                    st.delta = ext.unwrap_or(ts_field);
                    st.timestamp = st.timestamp.wrapping_add(st.delta);
                }
                _ => {
                    if let Some(delta) = ext {
                        st.delta = delta;
                    }
                    st.timestamp = st.timestamp.wrapping_add(st.delta);
                }
            }
            st.partial = Some(Vec::new());
        }
        let mut payload = st.partial.take().unwrap();
        let n = (st.length - payload.len()).min(chunk_size);
        payload.extend_from_slice(take(bytes, &mut at, n));
        if payload.len() < st.length {
            st.partial = Some(payload);
            continue;
        }
        if st.type_id == 1 {
            chunk_size = uint_be(&payload[..4]) as usize;
        }
        messages.push(Message {
            header: MessageHeader {
                chunk_stream_id: csid,
                timestamp: st.timestamp,
                type_id: st.type_id,
                stream_id: st.stream_id,
            },
            payload,
        });
    }
    messages
}

// ---------------------------------------------------------------------------------------------
// Generated scenarios
// ---------------------------------------------------------------------------------------------

/// How a message's timestamp follows the previous one on its chunk stream.
#[derive(Clone, Debug)]
enum Step {
    /// The same timestamp.
    Same,
    /// Forward by this many ms.
    Forward(u32),
    /// Forward by the previous step of the chunk stream (fmt 3 new messages).
    Repeat,
    /// Backwards by this many ms (serial arithmetic: 1..=2^31).
    Back(u32),
    /// Just below or at the 24-bit limit.
    NearExtended(u32),
    /// Just below 2^32.
    NearWrap(u32),
    /// Anywhere.
    Absolute(u32),
}

#[derive(Clone, Debug)]
enum Op {
    Message {
        /// Index into the scenario's palette of chunk stream ids.
        csid: usize,
        step: Step,
        type_id: u8,
        stream_id: u32,
        /// Body length; `None`: the same as the previous message on the chunk stream.
        len: Option<usize>,
        /// How the body is cut into parts: (inline?, size seed).
        cuts: Vec<(bool, u32)>,
        seed: u8,
    },
    /// Set Chunk Size sent, then used.
    ChunkSize(u32),
    /// Write up to this many bytes of what is queued (a socket that accepts part of it).
    Flush(usize),
}

fn csid_strategy() -> impl Strategy<Value = u32> {
    prop_oneof![
        4 => 2u32..=10,
        1 => 60u32..=70,
        1 => 310u32..=330,
        1 => 65_580u32..=65_599,
        1 => 2u32..=65_599,
    ]
}

fn step_strategy() -> impl Strategy<Value = Step> {
    prop_oneof![
        2 => Just(Step::Same),
        4 => (0u32..100).prop_map(Step::Forward),
        1 => (0xFF_FF00u32..0x100_0100).prop_map(Step::Forward),
        1 => (0u32..0x8000_0000).prop_map(Step::Forward),
        4 => Just(Step::Repeat),
        1 => (1u32..1000).prop_map(Step::Back),
        1 => (1u32..=0x8000_0000).prop_map(Step::Back),
        1 => (0u32..4).prop_map(Step::NearExtended),
        1 => (0u32..64).prop_map(Step::NearWrap),
        1 => any::<u32>().prop_map(Step::Absolute),
    ]
}

fn len_strategy() -> impl Strategy<Value = Option<usize>> {
    prop_oneof![
        2 => Just(None),
        3 => (0usize..=16).prop_map(Some),
        3 => (0usize..=300).prop_map(Some),
        2 => (0usize..=5000).prop_map(Some),
        1 => (0usize..=70_000).prop_map(Some),
    ]
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let message = (
        0usize..4,
        step_strategy(),
        prop_oneof![4 => prop::sample::select(vec![8u8, 9, 18, 20]), 1 => 3u8..=255],
        prop_oneof![3 => Just(1u32), 1 => Just(0u32), 1 => any::<u32>()],
        len_strategy(),
        prop::collection::vec((any::<bool>(), any::<u32>()), 0..12),
        any::<u8>(),
    )
        .prop_map(
            |(csid, step, type_id, stream_id, len, cuts, seed)| Op::Message {
                csid,
                step,
                type_id,
                stream_id,
                len,
                cuts,
                seed,
            },
        );
    prop_oneof![
        12 => message,
        1 => prop_oneof![1u32..=16, 1u32..=70_000, prop::sample::select(vec![128u32, 4096, 65_536])]
            .prop_map(Op::ChunkSize),
        2 => (1usize..=100_000).prop_map(Op::Flush),
    ]
}

#[derive(Clone, Debug)]
struct Scenario {
    palette: Vec<u32>,
    start_timestamp: u32,
    ops: Vec<Op>,
    /// Bytes accepted by successive simulated writes (cycled).
    write_sizes: Vec<usize>,
    /// How many IoSlice slots each io_slices call gets (cycled).
    slot_counts: Vec<usize>,
    /// Bytes the simulated socket delivers to ChunkReader at a time (cycled).
    read_sizes: Vec<usize>,
}

fn scenario_strategy() -> impl Strategy<Value = Scenario> {
    (
        prop::collection::vec(csid_strategy(), 4),
        prop_oneof![Just(0u32), Just(0xFF_FFF0), Just(0xFFFF_FFF0), any::<u32>()],
        prop::collection::vec(op_strategy(), 1..24),
        prop::collection::vec(prop_oneof![1usize..=16, 1usize..=70_000], 1..6),
        prop::collection::vec(1usize..=8, 1..4),
        prop::collection::vec(prop_oneof![1usize..=16, 1usize..=70_000], 1..6),
    )
        .prop_map(
            |(palette, start_timestamp, ops, write_sizes, slot_counts, read_sizes)| Scenario {
                palette,
                start_timestamp,
                ops,
                write_sizes,
                slot_counts,
                read_sizes,
            },
        )
}

fn body_byte(seed: u8, i: usize) -> u8 {
    ((i as u32).wrapping_mul(2_654_435_761) >> 13) as u8 ^ seed
}

/// Drains up to `limit` bytes of `gather` into `wire` through io_slices and advance, with
/// partial writes of the sizes in `sizes`, checking the io_slices contract on the way.
fn drain(
    gather: &mut Gather,
    external: &[u8],
    wire: &mut Vec<u8>,
    sizes: &mut impl Iterator<Item = usize>,
    slots: &mut impl Iterator<Item = usize>,
    limit: usize,
) {
    let mut budget = limit;
    while !gather.is_empty() && budget > 0 {
        let mut array = [IoSlice::new(&[]); 8];
        let room = slots.next().unwrap();
        let n = gather.io_slices(external, &mut array[..room]);
        assert!(n > 0);
        let total: usize = array[..n].iter().map(|s| s.len()).sum();
        if n < room {
            assert_eq!(
                total,
                gather.remaining(),
                "short count without everything included"
            );
        }
        assert!(total <= gather.remaining());
        let accept = total.min(sizes.next().unwrap()).min(budget);
        let mut left = accept;
        for slice in &array[..n] {
            let k = left.min(slice.len());
            wire.extend_from_slice(&slice[..k]);
            left -= k;
        }
        let before = gather.remaining();
        gather.advance(accept);
        assert_eq!(gather.remaining(), before - accept);
        budget -= accept;
    }
}

/// Per chunk stream memory of the generator, to make repeats likely.
#[derive(Default, Clone, Copy)]
struct Last {
    timestamp: u32,
    step: u32,
    len: usize,
}

fn run(scenario: &Scenario) -> Result<(), TestCaseError> {
    // Plan the messages: headers, bodies, and where each body lies in the external buffer.
    let mut external = Vec::new();
    let mut last: HashMap<u32, Last> = HashMap::new();
    struct Planned {
        header: MessageHeader,
        body_at: usize,
        len: usize,
    }
    let mut plan = Vec::new();
    for op in &scenario.ops {
        if let Op::Message {
            csid,
            step,
            type_id,
            stream_id,
            len,
            seed,
            ..
        } = op
        {
            let csid = scenario.palette[*csid];
            let prev = last.get(&csid).copied().unwrap_or(Last {
                timestamp: scenario.start_timestamp,
                step: 0,
                len: 0,
            });
            let (timestamp, new_step) = match *step {
                Step::Same => (prev.timestamp, 0),
                Step::Forward(d) => (prev.timestamp.wrapping_add(d), d),
                Step::Repeat => (prev.timestamp.wrapping_add(prev.step), prev.step),
                Step::Back(d) => (prev.timestamp.wrapping_sub(d), prev.step),
                Step::NearExtended(d) => (0xFF_FFFF - d, prev.step),
                Step::NearWrap(d) => (u32::MAX - d, prev.step),
                Step::Absolute(t) => (t, prev.step),
            };
            let len = len.unwrap_or(prev.len);
            last.insert(
                csid,
                Last {
                    timestamp,
                    step: new_step,
                    len,
                },
            );
            let body_at = external.len();
            external.extend((0..len).map(|i| body_byte(*seed, i)));
            plan.push(Planned {
                header: MessageHeader {
                    chunk_stream_id: csid,
                    timestamp,
                    type_id: *type_id,
                    stream_id: *stream_id,
                },
                body_at,
                len,
            });
        }
    }

    let mut writer = ChunkWriter::new();
    let mut gather = Gather::with_capacity(256, 16);
    let mut wire = Vec::new();
    let mut sizes = scenario.write_sizes.iter().copied().cycle();
    let mut slots = scenario.slot_counts.iter().copied().cycle();
    let mut expected = Vec::new();
    let mut planned = plan.iter();
    let mut parts = Vec::new();
    for op in &scenario.ops {
        match op {
            Op::Message { cuts, .. } => {
                let p = planned.next().unwrap();
                let body = &external[p.body_at..p.body_at + p.len];
                parts.clear();
                let mut offset = 0;
                for &(inline, seed) in cuts {
                    let rest = p.len - offset;
                    let n = if inline {
                        (seed as usize % 9).min(rest)
                    } else {
                        seed as usize % (rest + 1)
                    };
                    parts.push(if inline {
                        Part::inline(&body[offset..offset + n])
                    } else {
                        Part::External {
                            start: p.body_at + offset,
                            len: n,
                        }
                    });
                    offset += n;
                }
                if offset < p.len {
                    parts.push(Part::External {
                        start: p.body_at + offset,
                        len: p.len - offset,
                    });
                }
                writer
                    .try_write_message(&p.header, &parts, &mut gather)
                    .unwrap();
                expected.push(Message {
                    header: p.header,
                    payload: body.to_vec(),
                });
            }
            Op::ChunkSize(size) => {
                let header = MessageHeader {
                    chunk_stream_id: 2,
                    timestamp: 0,
                    type_id: 1,
                    stream_id: 0,
                };
                writer.write_message_bytes(&header, &size.to_be_bytes(), &mut gather);
                writer.set_chunk_size(*size);
                prop_assert_eq!(writer.chunk_size(), *size);
                expected.push(Message {
                    header,
                    payload: size.to_be_bytes().to_vec(),
                });
            }
            Op::Flush(limit) => drain(
                &mut gather,
                &external,
                &mut wire,
                &mut sizes,
                &mut slots,
                *limit,
            ),
        }
    }
    drain(
        &mut gather,
        &external,
        &mut wire,
        &mut sizes,
        &mut slots,
        usize::MAX,
    );
    prop_assert!(gather.is_empty());
    prop_assert!(!gather.has_external());

    // The independent reader.
    let independent = independent_decode(&wire);
    prop_assert_eq!(independent.len(), expected.len());
    for (got, want) in independent.iter().zip(&expected) {
        prop_assert_eq!(got, want);
    }

    // ChunkReader, fed in random pieces.
    let mut reader = ChunkReader::new(1 << 24);
    let mut reads = scenario.read_sizes.iter().copied().cycle();
    let mut received = Vec::new();
    let (mut pos, mut avail) = (0, 0);
    while pos < wire.len() {
        let (used, message) = reader
            .decode(&wire[pos..avail])
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        if used == 0 {
            prop_assert!(
                avail < wire.len(),
                "ChunkReader stuck at {} of {}",
                pos,
                wire.len()
            );
            avail = (avail + reads.next().unwrap()).min(wire.len());
        }
        pos += used;
        received.extend(message);
    }
    prop_assert_eq!(received.len(), expected.len());
    for (got, want) in received.iter().zip(&expected) {
        prop_assert_eq!(got, want);
    }
    prop_assert_eq!(reader.buffered(), 0);
    Ok(())
}

proptest! {
    #![proptest_config(Config { failure_persistence: None, ..Config::default() })]

    #[test]
    fn writer_and_readers_round_trip(scenario in scenario_strategy()) {
        run(&scenario)?;
    }
}

// ---------------------------------------------------------------------------------------------
// Steady state allocates nothing
// ---------------------------------------------------------------------------------------------

/// Writes frames `from..to` (video, audio-like and a control message each) and drains them into
/// a fake socket that takes at most 64 KiB per writev; returns the bytes written.
fn write_frames(
    writer: &mut ChunkWriter,
    gather: &mut Gather,
    frames: &[Vec<Part>],
    buffer: &[u8],
    range: std::ops::Range<u32>,
) -> usize {
    let mut written = 0;
    for n in range {
        let video = MessageHeader {
            chunk_stream_id: 6,
            timestamp: n * 33,
            type_id: 9,
            stream_id: 1,
        };
        let frame = &frames[if n % 30 == 0 { 0 } else { 1 + (n as usize % 2) }];
        writer.write_message(&video, frame, gather);
        let audio = MessageHeader {
            chunk_stream_id: 4,
            timestamp: n * 33,
            type_id: 8,
            stream_id: 1,
        };
        writer.write_message(
            &audio,
            &[
                Part::inline(&[0xAF, 1]),
                Part::External { start: 0, len: 300 },
            ],
            gather,
        );
        let control = MessageHeader {
            chunk_stream_id: 2,
            timestamp: 0,
            type_id: 3,
            stream_id: 0,
        };
        writer.write_message_bytes(&control, &n.to_be_bytes(), gather);
        while !gather.is_empty() {
            let mut slots = [IoSlice::new(&[]); 64];
            let k = gather.io_slices(buffer, &mut slots);
            let mut accepted = 0;
            for s in &slots[..k] {
                accepted += s.len().min(65_536 - accepted);
            }
            written += accepted;
            gather.advance(accepted);
        }
    }
    written
}

#[test]
fn steady_state_write_path_does_not_allocate() {
    // A camera-like stream: frames of 40 NAL units behind an FLV tag header, a keyframe every
    // 30 frames (the largest frame comes first, so capacities are reached on frame 0), audio-like
    // and control messages in between.
    let buffer: Vec<u8> = (0..220_000).map(|i| body_byte(7, i)).collect();
    let mut frames: Vec<Vec<Part>> = Vec::new();
    for (k, nal) in [5000usize, 800, 120].into_iter().enumerate() {
        let mut parts = vec![Part::inline(&[0x17 + k as u8, 1, 0, 0, 0])];
        for i in 0..40 {
            parts.push(Part::inline(&(nal as u32).to_be_bytes()));
            parts.push(Part::External {
                start: i * 5000 + k,
                len: nal - k,
            });
        }
        frames.push(parts);
    }
    let mut writer = ChunkWriter::new();
    let mut gather = Gather::with_capacity(0, 0);
    for chunk_size in [128u32, 4096] {
        writer.reset();
        writer.set_chunk_size(chunk_size);
        // Warm up: capacities reach what the keyframe needs.
        write_frames(&mut writer, &mut gather, &frames, &buffer, 0..2);
        let (written, counts) =
            count_this_thread(|| write_frames(&mut writer, &mut gather, &frames, &buffer, 2..1002));
        let during = counts.allocations;
        assert!(written > 1000 * 40 * 120);
        assert_eq!(
            during, 0,
            "{during} allocations over 1000 frames at chunk size {chunk_size}"
        );
    }
}
