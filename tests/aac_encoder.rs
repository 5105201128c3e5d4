//! The AAC encoder against FFmpeg's decoder: 3 s of a -6 dBFS tone (1 kHz; 1.5 kHz on the right
//! channel of the stereo case, so a swap shows) is encoded, each frame wrapped in ADTS, decoded by
//! `ffmpeg` to S16, and each channel must come back at the tone's frequency (within 1 Hz), level
//! (within 0.5 dB), and with an SNR above 20 dB against the input shifted by the delay the encoder
//! reports (so the reported delay is checked too: 1 kHz at 48 kHz repeats every 48 samples, and a
//! delay off by a few samples costs the SNR). Needs ffmpeg (scripts/install-test-deps).
#![cfg(feature = "aac-encoder")]

mod common;

use std::f64::consts::PI;
use std::process::Command;

use common::{require_tool, TempDir};
use v4l2rtmp::media::aac_encoder::AacEncoder;
use v4l2rtmp::media::adts::AdtsHeader;

const SECONDS: usize = 3;
/// -6 dBFS: half of full scale.
const AMPLITUDE: f64 = 0.5 * 32767.0;

fn tone(frequency: f64, rate: u32, n: f64) -> f64 {
    AMPLITUDE * (2.0 * PI * frequency * n / f64::from(rate)).sin()
}

/// Encodes the tones (one per channel) to an ADTS file, decodes it with ffmpeg and checks each
/// channel.
fn round_trip(rate: u32, frequencies: &[f64], bitrate: u32) {
    require_tool("ffmpeg");
    let channels = frequencies.len();
    let mut encoder = AacEncoder::new(rate, channels as u8, bitrate).unwrap();
    let config = encoder.audio_specific_config();
    let delay = encoder.delay_samples() as usize;
    let per_channel = SECONDS * rate as usize;
    let input: Vec<i16> = (0..per_channel * channels)
        .map(|i| tone(frequencies[i % channels], rate, (i / channels) as f64).round() as i16)
        .collect();

    let mut adts = Vec::new();
    let mut frames = 0;
    for chunk in input.chunks(encoder.samples_per_frame()) {
        let mut pcm = chunk.to_vec();
        pcm.resize(encoder.samples_per_frame(), 0);
        if let Some(frame) = encoder.encode(&pcm).unwrap() {
            adts.extend_from_slice(&AdtsHeader::write(&config, frame.len()).unwrap());
            adts.extend_from_slice(frame);
            frames += 1;
        }
    }
    let dir = TempDir::new("aac-encoder");
    let file = dir.path().join("x.aac");
    std::fs::write(&file, &adts).unwrap();
    let output = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-i"])
        .arg(&file)
        .args([
            "-f",
            "s16le",
            "-ac",
            &channels.to_string(),
            "-ar",
            &rate.to_string(),
            "-",
        ])
        .output()
        .unwrap();
    let errors = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && errors.trim().is_empty(),
        "ffmpeg: {errors}"
    );
    let decoded: Vec<f64> = output
        .stdout
        .chunks_exact(2)
        .map(|b| f64::from(i16::from_le_bytes([b[0], b[1]])))
        .collect();
    assert_eq!(
        decoded.len(),
        frames * 1024 * channels,
        "ffmpeg decodes every frame"
    );

    // The input starts at full level at sample 0: before the delay the decoder gives (almost)
    // silence, after it the tone. With the tone's phase below, this pins the delay exactly.
    let rms = |from: usize, to: usize| {
        let power: f64 = decoded[from * channels..to * channels]
            .iter()
            .map(|x| x * x)
            .sum();
        (power / ((to - from) * channels) as f64).sqrt()
    };
    let before = 20.0 * (rms(0, delay - 512) / (AMPLITUDE / 2f64.sqrt())).log10();
    let after = 20.0 * (rms(delay + 512, delay + 2048) / (AMPLITUDE / 2f64.sqrt())).log10();
    assert!(
        before < -40.0 && after.abs() < 1.0,
        "before the delay {before:.1} dB, after {after:.1} dB"
    );

    // Decoded sample n is input sample n - delay; leave out the encoder's start and a margin at
    // both ends (the last delay samples of input are still inside the encoder).
    let first = delay + 4096;
    let last = decoded.len() / channels - 4096;
    assert!(
        last > first + rate as usize,
        "too little audio: {first}..{last}"
    );
    let bitrate_seen = adts.len() as f64 * 8.0 / (frames as f64 * 1024.0 / f64::from(rate));
    for (channel, &frequency) in frequencies.iter().enumerate() {
        let samples: Vec<f64> = (first..last)
            .map(|n| decoded[n * channels + channel])
            .collect();
        let measured = zero_crossing_frequency(&samples, rate);
        let fit = fit_sine(&samples, frequency, rate);
        let level_db = 20.0 * (fit.amplitude / AMPLITUDE).log10();
        let (signal, error) = (first..last).fold((0.0, 0.0), |(signal, error), n| {
            let reference = tone(frequency, rate, (n - delay) as f64);
            let got = decoded[n * channels + channel];
            (
                signal + reference * reference,
                error + (got - reference).powi(2),
            )
        });
        let snr_db = 10.0 * (signal / error).log10();
        let thd_n_db = 10.0 * (fit.residual / fit.power).log10();
        eprintln!(
            "{rate} Hz, channel {channel}/{channels}, {bitrate} bit/s (ADTS file: {bitrate_seen:.0}): \
             delay {delay}, frequency {measured:.3} Hz, level {level_db:+.3} dB, SNR {snr_db:.1} dB \
             (against the input at the reported delay), THD+N {thd_n_db:.1} dB"
        );
        assert!(
            (measured - frequency).abs() < 1.0,
            "frequency {measured} Hz, not {frequency}"
        );
        assert!(level_db.abs() < 0.5, "level {level_db:+.2} dB");
        assert!(
            snr_db > 20.0,
            "SNR {snr_db:.1} dB at the reported delay {delay}"
        );
    }
}

/// Frequency from the upward zero crossings, interpolated between samples: whole cycles between
/// the first and the last, over the time between them.
fn zero_crossing_frequency(samples: &[f64], rate: u32) -> f64 {
    let crossings: Vec<f64> = samples
        .windows(2)
        .enumerate()
        .filter(|(_, w)| w[0] < 0.0 && w[1] >= 0.0)
        .map(|(i, w)| i as f64 + w[0] / (w[0] - w[1]))
        .collect();
    let (Some(first), Some(last)) = (crossings.first(), crossings.last()) else {
        panic!("no zero crossings");
    };
    (crossings.len() - 1) as f64 * f64::from(rate) / (last - first)
}

struct Fit {
    amplitude: f64,
    /// Mean power of the fitted sine, and of what is left.
    power: f64,
    residual: f64,
}

/// Least-squares fit of DC, sine and cosine at `frequency`: the normal equations of three unknowns,
/// solved by Cramer's rule.
fn fit_sine(samples: &[f64], frequency: f64, rate: u32) -> Fit {
    let basis = |n: usize| {
        let phase = 2.0 * PI * frequency * n as f64 / f64::from(rate);
        [phase.sin(), phase.cos(), 1.0]
    };
    let mut a = [[0.0f64; 3]; 3];
    let mut b = [0.0f64; 3];
    for (n, &y) in samples.iter().enumerate() {
        let x = basis(n);
        for i in 0..3 {
            b[i] += x[i] * y;
            for j in 0..3 {
                a[i][j] += x[i] * x[j];
            }
        }
    }
    let det = |m: &[[f64; 3]; 3]| {
        m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
            - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
            + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
    };
    let d = det(&a);
    let mut coefficients = [0.0; 3];
    for (k, c) in coefficients.iter_mut().enumerate() {
        let mut m = a;
        for i in 0..3 {
            m[i][k] = b[i];
        }
        *c = det(&m) / d;
    }
    let (mut power, mut residual) = (0.0, 0.0);
    for (n, &y) in samples.iter().enumerate() {
        let x = basis(n);
        let fitted = coefficients[0] * x[0] + coefficients[1] * x[1];
        power += fitted * fitted;
        residual += (y - fitted - coefficients[2]).powi(2);
    }
    Fit {
        amplitude: coefficients[0].hypot(coefficients[1]),
        power,
        residual,
    }
}

#[test]
fn a_tone_at_48k_mono_comes_back_from_ffmpeg() {
    round_trip(48_000, &[1000.0], 64_000);
}

#[test]
fn tones_at_44k1_stereo_come_back_from_ffmpeg_on_their_channels() {
    round_trip(44_100, &[1000.0, 1500.0], 128_000);
}
