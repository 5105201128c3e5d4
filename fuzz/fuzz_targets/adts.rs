//! Fuzzes the ADTS splitter and the AAC configuration parser: any bytes, fed in pieces whose
//! sizes come from the input, must give frames or skipped bytes, never a panic; the frames must
//! be the same whatever the piece sizes, lie in order within the input, each start with a header
//! that reads back with its length, and with the skipped bytes account for every byte. The
//! same bytes are read as an AudioSpecificConfig: one that is accepted must write back to
//! bytes that read as itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use v4l2rtmp::media::aac::AudioSpecificConfig;
use v4l2rtmp::media::adts::{AdtsEvent, AdtsHeader, AdtsSplitter};

fuzz_target!(|data: &[u8]| {
    let (seed, stream) = match data.split_first() {
        Some((&seed, rest)) => (seed, rest),
        None => return,
    };
    let whole = split(stream, |_| usize::MAX);
    let pieces = split(stream, |offset| {
        let byte = stream[(offset + usize::from(seed)) % stream.len()];
        1 + usize::from(byte ^ seed) % 61
    });
    assert_eq!(whole, pieces);

    let (events, skipped) = whole;
    let mut previous_end = 0;
    let mut reported = 0;
    for event in &events {
        if let AdtsEvent::Frame(frame) = event {
            assert!(frame.start >= previous_end);
            assert!(frame.start < frame.payload_start && frame.payload_start < frame.end);
            let bytes = &stream[frame.start as usize..frame.end as usize];
            let header = AdtsHeader::parse(bytes).expect("a reported frame starts with a header");
            assert_eq!(header.frame_len(), bytes.len());
            assert_eq!(header.check(), Ok(frame.config));
            previous_end = frame.end;
            reported += frame.end - frame.start;
        }
    }
    assert_eq!(reported + skipped, stream.len() as u64);

    let _ = AdtsHeader::parse(data);
    if let Ok(config) = AudioSpecificConfig::parse(data) {
        assert_eq!(AudioSpecificConfig::parse(&config.to_bytes()), Ok(config));
    }
});

/// Every event, and the bytes skipped once the input has ended.
fn split(stream: &[u8], piece: impl Fn(usize) -> usize) -> (Vec<AdtsEvent>, u64) {
    let mut splitter = AdtsSplitter::new();
    let mut events = Vec::new();
    let mut offset = 0;
    while offset < stream.len() {
        let end = offset.saturating_add(piece(offset)).min(stream.len());
        while offset < end {
            let (used, event) = splitter.scan(&stream[offset..end], offset as u64);
            offset += used;
            events.extend(event);
        }
    }
    splitter.finish();
    (events, splitter.skipped_bytes())
}
