//! The audio media pieces against FFmpeg's decoder: the silent AAC-LC frames of `--audio
//! silence`, wrapped in ADTS and in FLV (with our AudioSpecificConfig and audio tag headers),
//! decode with no error to digital silence of the right length, rate and channels; and an ADTS
//! file split by reference and sent as FLV audio tags decodes to the very samples the file does.
//!
//! `ffmpeg -v error` must print nothing. ffmpeg and ffprobe are required, as every tool of the
//! integration tests is: a missing one fails the test with the command that installs it.

mod common;

use std::path::Path;
use std::process::Command;

use common::TempDir;
use v4l2rtmp::media::aac::{silent_frame, AudioSpecificConfig, SAMPLES_PER_FRAME};
use v4l2rtmp::media::adts::{AdtsEvent, AdtsHeader, AdtsSplitter};
use v4l2rtmp::media::flv::{aac_frame_header, aac_sequence_header};

/// The rates the audio input offers (every indexed rate would do: the frames are the same).
const RATES: [u32; 5] = [48000, 44100, 32000, 22050, 16000];
const FRAMES: u32 = 50;

/// Fails, saying how to install them, when ffmpeg or ffprobe is missing.
fn require_ffmpeg() {
    for tool in ["ffmpeg", "ffprobe"] {
        let found = Command::new(tool)
            .arg("-version")
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(found, "{tool} missing: apt-get install ffmpeg");
    }
}

/// Decodes `path` to signed 16-bit PCM with `ffmpeg -v error`; asserts it printed nothing.
fn decode(path: &Path) -> Vec<i16> {
    let output = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-i"])
        .arg(path)
        .args(["-f", "s16le", "-acodec", "pcm_s16le", "-"])
        .output()
        .expect("run ffmpeg");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stderr.trim().is_empty(),
        "ffmpeg -v error on {}: {}\n{stderr}",
        path.display(),
        output.status
    );
    output
        .stdout
        .chunks_exact(2)
        .map(|pair| i16::from_le_bytes([pair[0], pair[1]]))
        .collect()
}

/// What ffprobe says of the audio stream: codec, profile, rate, channels.
fn probe(path: &Path) -> String {
    let output = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "a:0", "-show_entries"])
        .arg("stream=codec_name,profile,sample_rate,channels")
        .args(["-of", "csv=p=0"])
        .arg(path)
        .output()
        .expect("run ffprobe");
    assert!(output.status.success());
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// An FLV file of audio tags: the sequence header at 0 ms, then each body at its time.
fn flv(config: &AudioSpecificConfig, frames: &[(u32, Vec<u8>)]) -> Vec<u8> {
    let mut out = b"FLV\x01\x04\x00\x00\x00\x09\x00\x00\x00\x00".to_vec();
    let mut tag = |timestamp: u32, body: &[u8]| {
        let size = body.len() as u32;
        out.push(8);
        out.extend_from_slice(&size.to_be_bytes()[1..]);
        out.extend_from_slice(&timestamp.to_be_bytes()[1..]);
        out.push((timestamp >> 24) as u8);
        out.extend_from_slice(&[0, 0, 0]);
        out.extend_from_slice(body);
        out.extend_from_slice(&(size + 11).to_be_bytes());
    };
    tag(0, &aac_sequence_header(config));
    for (timestamp, body) in frames {
        tag(*timestamp, body);
    }
    out
}

fn frame_time_ms(index: u32, rate: u32) -> u32 {
    (u64::from(index) * u64::from(SAMPLES_PER_FRAME) * 1000 / u64::from(rate)) as u32
}

#[test]
fn silent_frames_decode_to_silence_in_adts_at_every_rate() {
    require_ffmpeg();
    let dir = TempDir::new("audio-silence-adts");
    for rate in RATES {
        for channels in 1..=2u8 {
            let config = AudioSpecificConfig::lc(rate, channels).unwrap();
            let frame = silent_frame(channels).unwrap();
            let header = AdtsHeader::write(&config, frame.len()).unwrap();
            let mut stream = Vec::new();
            for _ in 0..FRAMES {
                stream.extend_from_slice(&header);
                stream.extend_from_slice(frame);
            }
            let path = dir.path().join(format!("silence-{rate}-{channels}.aac"));
            std::fs::write(&path, &stream).unwrap();
            assert_eq!(probe(&path), format!("aac,LC,{rate},{channels}"));
            let samples = decode(&path);
            assert_eq!(
                samples.len(),
                (FRAMES * SAMPLES_PER_FRAME) as usize * usize::from(channels),
                "{rate} Hz, {channels} channels"
            );
            assert!(samples.iter().all(|&s| s == 0), "{rate} Hz: not silent");
        }
    }
}

#[test]
fn silent_frames_decode_to_silence_in_flv_with_our_sequence_header() {
    require_ffmpeg();
    let dir = TempDir::new("audio-silence-flv");
    for rate in RATES {
        for channels in 1..=2u8 {
            let config = AudioSpecificConfig::lc(rate, channels).unwrap();
            let mut body = aac_frame_header().to_vec();
            body.extend_from_slice(silent_frame(channels).unwrap());
            let frames: Vec<(u32, Vec<u8>)> = (0..FRAMES)
                .map(|i| (frame_time_ms(i, rate), body.clone()))
                .collect();
            let path = dir.path().join(format!("silence-{rate}-{channels}.flv"));
            std::fs::write(&path, flv(&config, &frames)).unwrap();
            // The rate and channels come from the AudioSpecificConfig (the tag header says
            // 44 kHz stereo for every AAC stream).
            assert_eq!(probe(&path), format!("aac,LC,{rate},{channels}"));
            let samples = decode(&path);
            assert_eq!(
                samples.len(),
                (FRAMES * SAMPLES_PER_FRAME) as usize * usize::from(channels),
                "{rate} Hz, {channels} channels"
            );
            assert!(samples.iter().all(|&s| s == 0), "{rate} Hz: not silent");
        }
    }
}

#[test]
fn an_adts_file_sent_as_flv_tags_decodes_to_the_same_samples() {
    require_ffmpeg();
    let dir = TempDir::new("audio-adts-flv");
    // A second of a 1 kHz tone from FFmpeg's encoder, 44.1 kHz stereo, with garbage in front.
    let adts = dir.path().join("tone.aac");
    let status = Command::new("ffmpeg")
        .args([
            "-nostdin",
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "sine=f=1000:d=1",
        ])
        .args([
            "-c:a", "aac", "-b:a", "128k", "-ac", "2", "-ar", "44100", "-f", "adts",
        ])
        .arg(&adts)
        .status()
        .unwrap();
    assert!(status.success());
    let bytes = std::fs::read(&adts).unwrap();
    let mut input = b"\x00\xff\xf1garbage".to_vec();
    input.extend_from_slice(&bytes);

    // Split in pieces of 100 bytes; each frame's raw data block goes into an FLV tag.
    let mut splitter = AdtsSplitter::new();
    let mut config = None;
    let mut frames = Vec::new();
    let mut at = 0;
    while at < input.len() {
        let end = (at + 100).min(input.len());
        while at < end {
            let (used, event) = splitter.scan(&input[at..end], at as u64);
            at += used;
            match event {
                Some(AdtsEvent::Frame(frame)) => {
                    if frame.new_config {
                        assert!(config.is_none(), "one configuration");
                        config = Some(frame.config);
                    }
                    let payload = frame.payload();
                    let mut body = aac_frame_header().to_vec();
                    body.extend_from_slice(&input[payload.start as usize..payload.end as usize]);
                    let index = frames.len() as u32;
                    frames.push((frame_time_ms(index, 44100), body));
                }
                Some(AdtsEvent::Unsupported(e)) => panic!("{e}"),
                None => {}
            }
        }
    }
    splitter.finish();
    assert_eq!(splitter.skipped_bytes(), 10);
    let config = config.unwrap();
    assert_eq!((config.sample_rate(), config.channels()), (44100, 2));
    let flv_path = dir.path().join("tone.flv");
    std::fs::write(&flv_path, flv(&config, &frames)).unwrap();
    assert_eq!(probe(&flv_path), "aac,LC,44100,2");
    let from_adts = decode(&adts);
    let from_flv = decode(&flv_path);
    assert_eq!(from_flv.len(), from_adts.len());
    assert!(from_flv == from_adts, "the FLV decodes to other samples");
    assert!(from_adts.iter().any(|&s| s.unsigned_abs() > 1000), "a tone");
}
