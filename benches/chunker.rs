//! Chunker throughput: a 200 kB keyframe of 40 NAL units (an FLV tag header, then a 4-byte length
//! prefix and an external range per NAL unit) chunked at 4096 and at 128 bytes into a reused
//! Gather, drained through io_slices into a fake writev that takes at most 64 KiB per call; and
//! ChunkReader decoding the same bytes.

use std::io::IoSlice;

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use v4l2rtmp::rtmp::chunk::{ChunkReader, ChunkWriter, Gather, MessageHeader, Part};

const NALS: usize = 40;
const NAL_LEN: usize = 5000;
/// What the fake socket accepts per writev.
const WRITEV_LIMIT: usize = 64 * 1024;
/// IoSlice slots per writev, as a driver would put on its stack.
const SLOTS: usize = 64;

fn keyframe() -> (Vec<u8>, Vec<Part>) {
    let buffer: Vec<u8> = (0..NALS * NAL_LEN).map(|i| (i * 31) as u8).collect();
    let mut parts = vec![Part::inline(&[0x17, 1, 0, 0, 0])];
    for i in 0..NALS {
        parts.push(Part::inline(&(NAL_LEN as u32).to_be_bytes()));
        parts.push(Part::External {
            start: i * NAL_LEN,
            len: NAL_LEN,
        });
    }
    (buffer, parts)
}

fn body_len(parts: &[Part]) -> usize {
    parts.iter().map(Part::len).sum()
}

/// A writev that accepts up to `WRITEV_LIMIT` bytes; returns how many it took.
fn fake_writev(slices: &[IoSlice<'_>]) -> usize {
    let mut accepted = 0;
    for s in slices {
        let take = s.len().min(WRITEV_LIMIT - accepted);
        black_box(&s[..take]);
        accepted += take;
        if accepted == WRITEV_LIMIT {
            break;
        }
    }
    accepted
}

/// Chunks one frame and drains it; returns the number of writev calls.
fn send_frame(
    writer: &mut ChunkWriter,
    gather: &mut Gather,
    parts: &[Part],
    buffer: &[u8],
    timestamp: u32,
) -> usize {
    let header = MessageHeader {
        chunk_stream_id: 6,
        timestamp,
        type_id: 9,
        stream_id: 1,
    };
    writer.write_message(&header, parts, gather);
    let mut calls = 0;
    while !gather.is_empty() {
        let mut slots = [IoSlice::new(&[]); SLOTS];
        let n = gather.io_slices(buffer, &mut slots);
        let written = fake_writev(&slots[..n]);
        gather.advance(written);
        calls += 1;
    }
    calls
}

/// The wire bytes of one keyframe, preceded by the Set Chunk Size message the session sends.
fn wire_bytes(chunk_size: u32, parts: &[Part], buffer: &[u8]) -> Vec<u8> {
    let mut writer = ChunkWriter::new();
    let mut gather = Gather::with_capacity(0, 0);
    let control = MessageHeader {
        chunk_stream_id: 2,
        timestamp: 0,
        type_id: 1,
        stream_id: 0,
    };
    writer.write_message_bytes(&control, &chunk_size.to_be_bytes(), &mut gather);
    writer.set_chunk_size(chunk_size);
    let header = MessageHeader {
        chunk_stream_id: 6,
        timestamp: 0,
        type_id: 9,
        stream_id: 1,
    };
    writer.write_message(&header, parts, &mut gather);
    let mut out = Vec::new();
    gather.write_to_vec(buffer, &mut out);
    out
}

fn bench_writer(c: &mut Criterion) {
    let (buffer, parts) = keyframe();
    let mut group = c.benchmark_group("chunk_write_200kB_keyframe");
    group.throughput(Throughput::Bytes(body_len(&parts) as u64));
    for chunk_size in [4096u32, 128] {
        let mut writer = ChunkWriter::new();
        writer.set_chunk_size(chunk_size);
        let mut gather = Gather::with_capacity(64 * 1024, 4096);
        // Report what one frame costs in pieces and writev calls.
        let header = MessageHeader {
            chunk_stream_id: 6,
            timestamp: 0,
            type_id: 9,
            stream_id: 1,
        };
        writer.write_message(&header, &parts, &mut gather);
        eprintln!(
            "chunk size {chunk_size}: {} bytes on the wire, {} pieces (iovecs), {} bytes of scratch",
            gather.remaining(),
            gather.pieces().len(),
            gather.scratch_len()
        );
        gather.advance(usize::MAX);
        let calls = send_frame(&mut writer, &mut gather, &parts, &buffer, 33);
        eprintln!("chunk size {chunk_size}: {calls} writev calls of at most {SLOTS} slices / {WRITEV_LIMIT} bytes");
        let mut timestamp = 66u32;
        group.bench_with_input(
            BenchmarkId::from_parameter(chunk_size),
            &chunk_size,
            |b, _| {
                b.iter(|| {
                    timestamp = timestamp.wrapping_add(33);
                    black_box(send_frame(
                        &mut writer,
                        &mut gather,
                        &parts,
                        &buffer,
                        timestamp,
                    ))
                })
            },
        );
    }
    group.finish();
}

fn bench_reader(c: &mut Criterion) {
    let (buffer, parts) = keyframe();
    let mut group = c.benchmark_group("chunk_read_200kB_keyframe");
    for chunk_size in [4096u32, 128] {
        let wire = wire_bytes(chunk_size, &parts, &buffer);
        group.throughput(Throughput::Bytes(wire.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(chunk_size), &wire, |b, wire| {
            b.iter(|| {
                let mut reader = ChunkReader::new(1 << 20);
                let mut pos = 0;
                let mut payload = 0;
                while pos < wire.len() {
                    let (used, message) = reader.decode(&wire[pos..]).expect("valid chunk stream");
                    assert!(used > 0);
                    pos += used;
                    if let Some(message) = message {
                        payload += message.payload.len();
                    }
                }
                black_box(payload)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_writer, bench_reader);
criterion_main!(benches);
