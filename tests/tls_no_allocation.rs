//! RTMPS in steady state: what sealing frames allocates. A [`TlsSession`] publishes 1100 frames
//! (a 200 kB keyframe every 30 frames, 20 kB frames between, chunked at 4096) to an in-memory
//! rustls server, under a counting global allocator that counts only inside the client's calls.
//!
//! v4l2rtmp's own buffers do not allocate after warm-up. rustls 0.23 itself allocates one
//! buffer per record it seals (the record is built in a fresh `Vec`, sealed in place, copied to
//! our outgoing buffer and freed before `encrypt` returns) and one per record it opens. So the
//! test pins what is true and bounded: at most one allocation per TLS record (never per chunk or
//! per piece), and no growth: every byte allocated in the window is freed in it.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::sync::Arc;

use common::alloc::{count_all_threads, CountingAllocator, Counts};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ServerConfig, ServerConnection};
use v4l2rtmp::rtmp::chunk::{ChunkWriter, Gather, MessageHeader, Part};
use v4l2rtmp::tls::{client_config, TlsSession};

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

const HOST: &str = "ingest.example.com";
const WARM_UP_FRAMES: u32 = 100;
const FRAMES: u32 = 1100;

/// Number of TLS records in `wire` (whole records).
fn count_records(wire: &[u8]) -> u64 {
    let (mut at, mut records) = (0, 0);
    while at + 5 <= wire.len() {
        at += 5 + usize::from(u16::from_be_bytes([wire[at + 3], wire[at + 4]]));
        records += 1;
    }
    assert_eq!(at, wire.len());
    records
}

#[test]
fn sealing_frames_allocates_at_most_once_per_record_and_never_grows() {
    // A CA, a server certificate, the CA as a --ca-file.
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec![HOST.to_string()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    let ca_file =
        std::env::temp_dir().join(format!("v4l2rtmp-tls-alloc-{}.pem", std::process::id()));
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let chain: Vec<CertificateDer<'static>> = vec![cert.der().clone()];
    let server_key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let server_config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, server_key)
            .unwrap();
    let mut server = ServerConnection::new(Arc::new(server_config)).unwrap();
    let mut client = TlsSession::new(client_config(Some(&ca_file), false).unwrap(), HOST).unwrap();
    std::fs::remove_file(&ca_file).unwrap();

    // Handshake.
    let mut plain = vec![0u8; 64 * 1024];
    while client.is_handshaking() {
        let mut out = client.pending_output();
        while !out.is_empty() {
            server.read_tls(&mut out).unwrap();
        }
        let n = client.pending_output().len();
        client.consume_output(n);
        server.process_new_packets().unwrap();
        let mut wire = Vec::new();
        server.write_tls(&mut wire).unwrap();
        let buf = client.read_buf();
        buf[..wire.len()].copy_from_slice(&wire);
        client.received(wire.len(), &mut |_| Ok(())).unwrap();
    }

    let external: Vec<u8> = (0..200_000).map(|i| (i % 251) as u8).collect();
    let mut writer = ChunkWriter::new();
    writer.set_chunk_size(4096);
    let mut gather = Gather::with_capacity(64 * 1024, 512);
    let mut wire = Vec::with_capacity(128 * 1024);
    let (mut records, mut chunks, mut plaintext, mut ciphertext) = (0u64, 0u64, 0u64, 0u64);
    let mut received = 0usize;
    // What the client's calls in the measured frames did, on every thread.
    let mut counts = Counts::default();
    let acknowledgement = [0x02u8; 16];
    for frame in 0..FRAMES {
        let len = if frame % 30 == 0 { 200_000 } else { 20_000 };
        let header = MessageHeader {
            chunk_stream_id: 6,
            timestamp: frame * 33,
            type_id: 9,
            stream_id: 1,
        };
        let parts = [
            Part::inline(&[0x17, 0x01, 0, 0, 0]),
            Part::inline(&(len as u32).to_be_bytes()),
            Part::external(0, len),
        ];
        writer.write_message(&header, &parts, &mut gather);
        let measured = frame >= WARM_UP_FRAMES;
        if measured {
            chunks += (len as u64).div_ceil(4096);
            plaintext += gather.remaining() as u64;
        }
        while !gather.is_empty() {
            wire.clear();
            let mut step = || {
                client.encrypt_from(&mut gather, &external).unwrap();
                wire.extend_from_slice(client.pending_output());
                client.consume_output(wire.len());
            };
            if measured {
                counts += count_all_threads(&mut step).1;
                records += count_records(&wire);
                ciphertext += wire.len() as u64;
            } else {
                step();
            }
            let mut rest = &wire[..];
            while !rest.is_empty() {
                server.read_tls(&mut rest).unwrap();
                server.process_new_packets().unwrap();
                loop {
                    match server.reader().read(&mut plain) {
                        Ok(0) => break,
                        Ok(_) => {}
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) => panic!("{e}"),
                    }
                }
            }
        }
        // The server acknowledges now and then (RTMP Acknowledgement): the read path.
        if frame % 10 == 0 {
            server.writer().write_all(&acknowledgement).unwrap();
            let mut back = Vec::new();
            server.write_tls(&mut back).unwrap();
            let mut step = || {
                let buf = client.read_buf();
                buf[..back.len()].copy_from_slice(&back);
                client
                    .received(back.len(), &mut |p| {
                        received += p.len();
                        Ok(())
                    })
                    .unwrap();
            };
            if measured {
                counts += count_all_threads(&mut step).1;
                records += 1;
            } else {
                step();
            }
        }
    }
    let Counts {
        allocations,
        allocated,
        freed,
    } = counts;
    println!(
        "{} frames, {chunks} chunks of 4096: {plaintext} bytes of RTMP in {records} TLS records \
         ({ciphertext} bytes, {:.3} % overhead); {allocations} allocations ({:.2} per record), \
         {allocated} bytes allocated, {freed} freed",
        FRAMES - WARM_UP_FRAMES,
        100.0 * (ciphertext - plaintext) as f64 / plaintext as f64,
        allocations as f64 / records as f64
    );
    assert_eq!(
        received,
        acknowledgement.len() * (FRAMES as usize).div_ceil(10)
    );
    assert!(
        allocations <= records,
        "{allocations} allocations for {records} records"
    );
    // Sealing each piece apart would make two records per chunk (header, payload).
    assert!(
        records * 2 < chunks,
        "records are coalesced: {records} for {chunks} chunks"
    );
    assert_eq!(
        allocated, freed,
        "everything allocated in steady state is freed"
    );
}
