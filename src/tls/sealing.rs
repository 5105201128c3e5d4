//! Sealing the unwritten bytes of a [`Gather`] into TLS records, for
//! [`TlsSession::encrypt_from`](super::TlsSession::encrypt_from).
//!
//! # Writing: one AEAD per record, few records, no allocation of ours
//!
//! `TlsSession::encrypt_from` takes the unwritten bytes of a [`Gather`] (chunk headers in its
//! scratch storage interleaved with ranges of the caller's frame buffer) and seals them into
//! TLS records in a fixed outgoing buffer that the driver writes to the socket. Pieces shorter
//! than [`COPY_BELOW`] (chunk headers, FLV tag headers, NAL length prefixes, SPS/PPS, and the
//! 4096-byte chunks of the usual chunk size) are first copied into a 16 KiB staging buffer so that
//! one record carries up to 16 KiB of them; longer pieces are handed to rustls where they lie.
//! See [`COPY_BELOW`] for the measurements behind this: with rustls 0.23 the payload is copied
//! by rustls itself whatever we do, so per-piece records would only add 22-29 bytes and an AEAD
//! call per chunk header.
//!
//! # Invariants
//!
//! - Every byte taken from the gather is sealed into the outgoing buffer before the call returns
//!   (the gather advances by exactly that count), so the caller's frame buffer may be reused as
//!   soon as the gather no longer refers to it.
//! - The staging buffer never holds more than one record's plaintext and is empty between calls.
//! - Records go into the room the outgoing buffer has, less what `close_notify` needs; the
//!   buffer grows only if rustls needs more than reserved for a staged record (it never should).

use std::io::IoSlice;

use rustls::unbuffered::{EncryptError, WriteTraffic};

use super::{Outgoing, CLOSE_RESERVE, MAX_RECORD_PLAINTEXT, RECORD_RESERVE};
use crate::error::{Error, Result};
use crate::rtmp::chunk::Gather;

/// Pieces of the Gather shorter than this are copied into the staging buffer and sealed
/// together, up to 16 KiB per record; longer pieces are sealed where they lie.
///
/// Why 4097, that is: everything up to and including a 4096-byte chunk is coalesced. rustls 0.23's
/// `WriteTraffic::encrypt` takes one slice per call and seals each call into its own record(s);
/// internally it copies the plaintext into a freshly allocated record buffer, seals it there and
/// copies the result into our outgoing buffer. So the payload is copied by rustls whatever we
/// do, and what we choose is only how many records a frame becomes:
///
/// - sealing each piece where it lies (threshold 0): a 4096-byte chunk is two records, a 1-byte
///   chunk header and its 4096-byte payload: 44-58 bytes of overhead per chunk (1.1-1.4 %),
///   two AEAD calls and two allocations inside rustls;
/// - coalescing everything below 4097 (this): four chunks per 16 KiB record, 22-29 bytes of
///   overhead per 16 KiB (0.13-0.18 %), a quarter of the AEAD calls and of rustls'
///   allocations, for one more memcpy of the payload into a 16 KiB buffer that stays in cache
///   and one fewer allocation.
///
/// Measured (the `encrypt_strategies` test, x86-64, best of three, 200 MB of 200 kB keyframes):
/// per piece / coalesced, TLS 1.3 AES-256-GCM 58 / 45 ms, TLS 1.3 ChaCha20 126 / 110 ms,
/// TLS 1.2 AES-256-GCM 88 / 45 ms, TLS 1.2 ChaCha20 172 / 150 ms. On a Raspberry Pi without AES
/// instructions the AEAD costs 15-30 times a cached memcpy per byte, so our copy adds a few per
/// cent at most there, against 1.75 fewer records (AEAD set-up, allocation, bookkeeping) and
/// about 40 fewer bytes on the wire per 4096-byte chunk.
///
/// Pieces above this (chunk sizes above 4096) are already large enough for the per-record
/// overhead not to matter, and are sealed without our copy.
pub const COPY_BELOW: usize = 4097;

/// `IoSlice`s taken from the Gather per batch (about 32 pieces fill the outgoing buffer at chunk
/// size 4096; a batch is 1 KiB of stack).
const SLICE_BATCH: usize = 64;

/// A record is sealed directly into the outgoing buffer only if at least this much room is
/// left; otherwise the driver drains the buffer first (no tiny records at its end).
const MIN_DIRECT_RECORD: usize = 2048;

/// Seals `data` as one or more records at the end of `outgoing`. `Ok(false)`: it did not fit
/// (nothing written).
fn seal(
    traffic: &mut WriteTraffic<'_, rustls::client::ClientConnectionData>,
    outgoing: &mut Outgoing,
    data: &[u8],
) -> Result<bool> {
    match traffic.encrypt(data, outgoing.tail()) {
        Ok(n) => {
            outgoing.commit(n);
            Ok(true)
        }
        Err(EncryptError::InsufficientSize(_)) => Ok(false),
        Err(EncryptError::EncryptExhausted) => Err(Error::network(
            "the TLS session has sealed as many records as its keys allow: reconnecting",
        )),
    }
}

/// Seals the staged bytes; the staging buffer is sized so they always fit, and if rustls needs
/// more than reserved (it never should), the outgoing buffer grows rather than losing them.
fn flush_stage(
    traffic: &mut WriteTraffic<'_, rustls::client::ClientConnectionData>,
    outgoing: &mut Outgoing,
    stage: &mut Vec<u8>,
) -> Result<()> {
    if stage.is_empty() {
        return Ok(());
    }
    if !seal(traffic, outgoing, stage)? {
        outgoing.reserve(stage.len() + 2 * RECORD_RESERVE)?;
        if !seal(traffic, outgoing, stage)? {
            return Err(Error::ours("TLS: a record does not fit its reserved room"));
        }
    }
    stage.clear();
    Ok(())
}

/// The heart of [`TlsSession::encrypt_from`]: walks the gather's unwritten pieces, staging small
/// ones and sealing large ones where they lie, until the gather is empty or the outgoing buffer
/// has no room for another record.
pub(super) fn seal_gather(
    traffic: &mut WriteTraffic<'_, rustls::client::ClientConnectionData>,
    outgoing: &mut Outgoing,
    stage: &mut Vec<u8>,
    copy_below: usize,
    gather: &mut Gather,
    external: &[u8],
) -> Result<usize> {
    debug_assert!(stage.is_empty());
    let mut total = 0;
    loop {
        let mut slices = [IoSlice::new(&[]); SLICE_BATCH];
        let count = gather.io_slices(external, &mut slices);
        if count == 0 {
            if gather.is_empty() {
                return Ok(total);
            }
            return Err(Error::ours(
                "queued bytes refer to a buffer that is no longer there",
            ));
        }
        let mut taken = 0;
        let mut full = false;
        'pieces: for slice in &slices[..count] {
            let mut bytes: &[u8] = slice;
            while !bytes.is_empty() {
                // Room for data: what the outgoing buffer can take as sealed records.
                let room = outgoing
                    .free()
                    .saturating_sub(CLOSE_RESERVE + RECORD_RESERVE);
                if bytes.len() < copy_below {
                    let limit = room.min(MAX_RECORD_PLAINTEXT);
                    // A new record only if it can be a sizeable one (or take all that is left).
                    let left = gather.remaining() - taken;
                    if stage.is_empty() && limit < left.min(MIN_DIRECT_RECORD) {
                        full = true;
                        break 'pieces;
                    }
                    if stage.len() >= limit {
                        if stage.is_empty() {
                            full = true;
                            break 'pieces;
                        }
                        flush_stage(traffic, outgoing, stage)?;
                        continue;
                    }
                    let n = bytes.len().min(limit - stage.len());
                    stage.extend_from_slice(&bytes[..n]);
                    bytes = &bytes[n..];
                    taken += n;
                    if stage.len() == MAX_RECORD_PLAINTEXT {
                        flush_stage(traffic, outgoing, stage)?;
                    }
                } else {
                    if !stage.is_empty() {
                        flush_stage(traffic, outgoing, stage)?;
                        continue;
                    }
                    let n = bytes.len().min(room).min(MAX_RECORD_PLAINTEXT);
                    if n < bytes.len().min(MIN_DIRECT_RECORD) || n == 0 {
                        full = true;
                        break 'pieces;
                    }
                    if !seal(traffic, outgoing, &bytes[..n])? {
                        full = true;
                        break 'pieces;
                    }
                    bytes = &bytes[n..];
                    taken += n;
                }
            }
        }
        flush_stage(traffic, outgoing, stage)?;
        gather.advance(taken);
        total += taken;
        if full || gather.is_empty() {
            return Ok(total);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;
    use crate::rtmp::chunk::ChunkWriter;
    use crate::tls::testing::{frame_buffer, keyframe, server_config, Ca, Pair, HOST};
    use crate::tls::trust::{client_config_for, has_aes_instructions};
    use crate::tls::{client_config, TlsSession, INCOMING_INITIAL, OUTGOING_CAPACITY};

    /// Seals the whole gather, returning the ciphertext (the socket takes everything at once).
    fn seal_all(client: &mut TlsSession, gather: &mut Gather, external: &[u8], wire: &mut Vec<u8>) {
        while !gather.is_empty() {
            client.encrypt_from(gather, external).unwrap();
            wire.extend_from_slice(client.pending_output());
            let n = client.pending_output().len();
            client.consume_output(n);
        }
    }

    /// Number of TLS records in `wire` (which holds whole records).
    fn count_records(wire: &[u8]) -> usize {
        let (mut at, mut records) = (0, 0);
        while at + 5 <= wire.len() {
            at += 5 + usize::from(u16::from_be_bytes([wire[at + 3], wire[at + 4]]));
            records += 1;
        }
        assert_eq!(at, wire.len());
        records
    }

    /// Ciphertext bytes and records for three 200 kB keyframes at chunk size 4096, with
    /// `copy_below`; checks that the server gets the plaintext.
    fn overhead(tls12_only: bool, copy_below: usize) -> (usize, usize, usize) {
        let ca = Ca::new("test CA");
        let file = ca.pem_file();
        let config = client_config(Some(&file.0), false).unwrap();
        let server = server_config(ca.issue(&[HOST], false), tls12_only);
        let mut pair = Pair::new(config, HOST, server);
        pair.pump().unwrap();
        pair.client.set_copy_below(copy_below);
        let external = frame_buffer(200_000);
        let mut writer = ChunkWriter::new();
        writer.set_chunk_size(4096);
        let mut gather = Gather::default();
        let (mut plaintext, mut wire) = (0, Vec::new());
        for timestamp in [0, 33, 66] {
            keyframe(&mut writer, &mut gather, timestamp, external.len());
            plaintext += gather.remaining();
            seal_all(&mut pair.client, &mut gather, &external, &mut wire);
        }
        let mut rest = &wire[..];
        let mut buf = vec![0u8; 64 * 1024];
        let mut got = 0;
        while !rest.is_empty() {
            pair.server.read_tls(&mut rest).unwrap();
            pair.server.process_new_packets().unwrap();
            while let Ok(n) = pair.server.reader().read(&mut buf) {
                if n == 0 {
                    break;
                }
                got += n;
            }
        }
        assert_eq!(got, plaintext);
        (plaintext, wire.len(), count_records(&wire))
    }

    #[test]
    fn ciphertext_overhead_per_4096_byte_chunk() {
        // TLS 1.3 records cost 22 bytes with either AEAD; TLS 1.2 costs 29 with AES-GCM (its
        // explicit nonce) and 21 with ChaCha20-Poly1305, which comes first without AES
        // instructions (every Raspberry Pi before the 5).
        let tls12_per_record = if has_aes_instructions() { 29 } else { 21 };
        for (tls12_only, per_record) in [(false, 22), (true, tls12_per_record)] {
            let (plaintext, wire, records) = overhead(tls12_only, COPY_BELOW);
            // 3 x 200 kB: 600 kB in 16 KiB records.
            assert_eq!(wire - plaintext, records * per_record);
            assert!(
                records <= plaintext.div_ceil(MAX_RECORD_PLAINTEXT) + 3,
                "{records}"
            );
            let chunks = 3 * 200_000_usize.div_ceil(4096);
            let per_chunk = (wire - plaintext) as f64 / chunks as f64;
            assert!(per_chunk < 8.0, "{per_chunk}");
            // Sealing each piece where it lies: two records per chunk.
            let (plaintext0, wire0, records0) = overhead(tls12_only, 0);
            assert_eq!(plaintext0, plaintext);
            assert!(records0 >= 2 * chunks);
            println!(
                "TLS 1.{}: {plaintext} bytes of RTMP in {records} records = {wire} bytes \
                 ({per_chunk:.1} bytes per 4096-byte chunk, {:.3} %); per piece: {records0} \
                 records = {wire0} bytes ({:.1} per chunk, {:.3} %)",
                if tls12_only { 2 } else { 3 },
                100.0 * (wire - plaintext) as f64 / plaintext as f64,
                (wire0 - plaintext) as f64 / chunks as f64,
                100.0 * (wire0 - plaintext) as f64 / plaintext as f64,
            );
        }
    }

    #[test]
    fn buffers_keep_their_capacity_over_1000_frames() {
        let ca = Ca::new("test CA");
        let mut pair = Pair::connect(&ca, &[HOST], HOST);
        let external = frame_buffer(60_000);
        let mut writer = ChunkWriter::new();
        writer.set_chunk_size(4096);
        let mut gather = Gather::default();
        let mut wire = Vec::with_capacity(128 * 1024);
        let mut capacities = None;
        for frame in 0..1100u32 {
            // Every 30th frame a keyframe, the others a tenth of it.
            let len = if frame % 30 == 0 { 60_000 } else { 6_000 };
            keyframe(&mut writer, &mut gather, frame * 33, len);
            wire.clear();
            seal_all(&mut pair.client, &mut gather, &external, &mut wire);
            if frame == 100 {
                capacities = Some(pair.client.buffer_capacities());
            }
        }
        assert_eq!(
            capacities.unwrap(),
            pair.client.buffer_capacities(),
            "no growth after warm-up"
        );
        assert_eq!(
            pair.client.buffer_capacities(),
            [INCOMING_INITIAL, OUTGOING_CAPACITY, MAX_RECORD_PLAINTEXT]
        );
    }

    /// Seconds to seal 100 keyframes of 200 kB at chunk size 4096 per strategy. Run with `cargo
    /// test --release --lib tls::sealing::tests::encrypt_strategies -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn encrypt_strategies() {
        for (tls12_only, aes) in [(false, true), (false, false), (true, true), (true, false)] {
            for copy_below in [0, COPY_BELOW, 0, COPY_BELOW, 0, COPY_BELOW] {
                let ca = Ca::new("test CA");
                let file = ca.pem_file();
                let config = client_config_for(Some(&file.0), None, false, aes).unwrap();
                let server = server_config(ca.issue(&[HOST], false), tls12_only);
                let mut pair = Pair::new(config, HOST, server);
                pair.pump().unwrap();
                pair.client.set_copy_below(copy_below);
                let external = frame_buffer(200_000);
                let mut writer = ChunkWriter::new();
                writer.set_chunk_size(4096);
                let mut gather = Gather::default();
                let mut wire = Vec::with_capacity(128 * 1024);
                let start = std::time::Instant::now();
                for frame in 0..1000u32 {
                    keyframe(&mut writer, &mut gather, frame * 33, external.len());
                    while !gather.is_empty() {
                        pair.client.encrypt_from(&mut gather, &external).unwrap();
                        wire.clear();
                        wire.extend_from_slice(pair.client.pending_output());
                        let n = wire.len();
                        pair.client.consume_output(n);
                    }
                }
                let took = start.elapsed();
                println!(
                    "{:<40} copy_below {copy_below:>5}: {:>7.1} MB/s ({took:?} for 200 MB)",
                    pair.client.negotiated().unwrap(),
                    200.0 / took.as_secs_f64()
                );
            }
        }
    }
}
