//! An audio frame allocates nothing in steady state: splitting ADTS, describing the FLV tag
//! (header inline, payload referenced), stamping it on the audio clock and the silent frames
//! are counted under a counting global allocator, on this thread only.

mod common;

use common::alloc::{count_this_thread, CountingAllocator};
use v4l2rtmp::media::aac::{silent_frame, AudioSpecificConfig, SAMPLES_PER_FRAME};
use v4l2rtmp::media::adts::{AdtsEvent, AdtsSplitter};
use v4l2rtmp::media::audio_clock::AudioClock;
use v4l2rtmp::media::flv::{aac_frame_parts, aac_sequence_header};
use v4l2rtmp::rtmp::chunk::Part;

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// FFmpeg's 6-frame ADTS fixture, over and over: one long stream.
fn stream(repeats: usize) -> Vec<u8> {
    let fixture = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/sine-48k-mono.aac"
    ))
    .unwrap();
    fixture.repeat(repeats)
}

#[test]
fn splitting_describing_and_stamping_audio_frames_allocates_nothing() {
    let input = stream(500);
    let mut splitter = AdtsSplitter::new();
    let mut clock = AudioClock::new(48000, 0);
    let mut parts_sent = 0usize;
    let mut frames = 0u64;
    let mut header = [0u8; 4];
    let (_, counts) = count_this_thread(|| {
        let mut at = 0;
        // Pieces of 700 bytes, as reads from a pipe.
        while at < input.len() {
            let end = (at + 700).min(input.len());
            while at < end {
                let (used, event) = splitter.scan(&input[at..end], at as u64);
                at += used;
                match event {
                    Some(AdtsEvent::Frame(frame)) => {
                        if frame.new_config {
                            header = aac_sequence_header(&frame.config);
                        }
                        let payload = frame.payload();
                        let parts = aac_frame_parts(
                            payload.start as usize,
                            (payload.end - payload.start) as usize,
                        );
                        parts_sent += parts.iter().map(Part::len).sum::<usize>();
                        // Arrival time: 21.333 ms a frame, 40 ms late.
                        let samples = (frames + 1) * u64::from(SAMPLES_PER_FRAME);
                        clock.report(40_000_000 + samples * 1_000_000_000 / 48000, samples);
                        let stamp = clock.stamp(frames * u64::from(SAMPLES_PER_FRAME));
                        assert!(stamp.is_some());
                        frames += 1;
                    }
                    Some(AdtsEvent::Unsupported(e)) => panic!("{e}"),
                    None => {}
                }
            }
        }
        splitter.finish();
        // The silent track: a static frame each time.
        for _ in 0..1000 {
            parts_sent += silent_frame(2).unwrap().len();
        }
    });
    assert_eq!(frames, 6 * 500);
    assert_eq!(
        header,
        aac_sequence_header(&AudioSpecificConfig::lc(48000, 1).unwrap())
    );
    assert!(parts_sent > input.len() - 7 * 3000);
    assert_eq!(
        counts.allocations, 0,
        "{} allocations ({} bytes) for {frames} audio frames",
        counts.allocations, counts.allocated
    );
}

/// The AAC encoder in steady state: 200 frames of a stereo tone, after 20 to fill its look-ahead,
/// allocate nothing in Rust (the output goes into the buffer `AacEncoder::new` allocated). FDK's
/// own C++ calls malloc directly, which this allocator does not see: bench/aac/REPORT.md counted
/// those with an LD_PRELOAD library (set-up only, none per frame).
#[cfg(feature = "aac-encoder")]
#[test]
fn encoding_aac_frames_allocates_nothing() {
    use v4l2rtmp::media::aac_encoder::AacEncoder;

    let mut encoder = AacEncoder::new(48_000, 2, 128_000).unwrap();
    let pcm: Vec<i16> = (0..encoder.samples_per_frame() * 4)
        .map(|i| ((i as f64 * 0.07).sin() * 12_000.0) as i16)
        .collect();
    let frame_len = encoder.samples_per_frame();
    let mut bytes = 0usize;
    for k in 0..20 {
        let frame = &pcm[(k % 4) * frame_len..][..frame_len];
        encoder.encode(frame).unwrap();
    }
    let (_, counts) = count_this_thread(|| {
        for k in 0..200 {
            let frame = &pcm[(k % 4) * frame_len..][..frame_len];
            bytes += encoder.encode(frame).unwrap().map_or(0, <[u8]>::len);
        }
    });
    // 128 kbit/s at 46.875 frames a second: 341 bytes a frame.
    assert!(
        bytes > 200 * 300,
        "{bytes} bytes for 200 frames at 128 kbit/s"
    );
    assert_eq!(
        counts.allocations, 0,
        "{} allocations ({} bytes) for 200 AAC frames",
        counts.allocations, counts.allocated
    );
}
