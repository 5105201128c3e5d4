//! The microphone: an ALSA capture device read one AAC frame (1024 samples per channel) at a
//! time, stamped on CLOCK_MONOTONIC by the [`AudioClock`] from the device's capture reports, and
//! encoded to AAC-LC. What comes out is a raw AAC frame with the capture time of its first
//! sample, ready for the frame store.
//!
//! - Stamps: frame `k` out of the encoder begins `delay` samples (its look-ahead) before input
//!   sample `k × 1024`; frames that begin before the first captured sample (the encoder's
//!   priming) are not given out.
//! - An overrun (the reader was late and the device dropped samples) is a discontinuity: the
//!   clock anchors again, the stamps jump over the gap, the encoder goes on.
//! - The device's rate is fixed at its first opening (the one asked for, else the device's), so
//!   a reopened device continues the same track.
//!
//! Invariants: no allocation per frame (the sample buffer and the encoder's output are
//! allocated at opening); [`AudioCapture::next`] is cancel-safe (its only wait is the device's
//! readiness, before any sample is taken; a partly filled frame stays in `self`).

use std::time::Duration;

use super::adts_audio::AdtsAudio;
use crate::alsa::{Capture, CaptureConfig, ReadError, Wanted};
use crate::config::{AudioOptions, AudioSource};
use crate::error::{Error, Result};
use crate::media::aac::{AudioSpecificConfig, SAMPLES_PER_FRAME};
use crate::media::aac_encoder::AacEncoder;
use crate::media::audio_clock::AudioClock;

/// What a wait on the audio source gave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AudioEvent {
    /// An AAC frame ([`AudioInput::frame`]) whose first sample was captured at `at`
    /// (CLOCK_MONOTONIC).
    Frame { at: Duration },
    /// The frames that follow are of this format (an ADTS stream's first frame, or a change).
    Format(AudioSpecificConfig),
    /// The device overran: samples were lost; capture goes on.
    Overrun { overruns: u64 },
    /// A file's audio is over (not to be opened again).
    Ended,
}

/// Where a track with a clock of its own comes from: a microphone, or ADTS from elsewhere.
pub enum AudioInput {
    Device(AudioCapture),
    Adts(AdtsAudio),
}

impl AudioInput {
    /// For `--audio hw:...` or `--audio PATH`; `None` for a silent track.
    pub fn new(options: &AudioOptions) -> Option<AudioInput> {
        match &options.source {
            AudioSource::Silence => None,
            AudioSource::Device(_) => AudioCapture::new(options).map(AudioInput::Device),
            AudioSource::Adts(path) => Some(AudioInput::Adts(AdtsAudio::new(path))),
        }
    }

    pub fn name(&self) -> &str {
        match self {
            AudioInput::Device(device) => device.name(),
            AudioInput::Adts(adts) => adts.name(),
        }
    }

    /// Opens it; a device's format is known at once, an ADTS stream's with its first frame.
    pub async fn open(&mut self) -> Result<Option<AudioSpecificConfig>> {
        match self {
            AudioInput::Device(device) => device.open().map(Some),
            AudioInput::Adts(adts) => adts.open().await.map(|()| None),
        }
    }

    pub fn close(&mut self) {
        match self {
            AudioInput::Device(device) => device.close(),
            AudioInput::Adts(adts) => adts.close(),
        }
    }

    /// The frame of the last [`AudioEvent::Frame`].
    pub fn frame(&self) -> &[u8] {
        match self {
            AudioInput::Device(device) => device.frame(),
            AudioInput::Adts(adts) => adts.frame(),
        }
    }

    pub fn frame_duration(&self) -> Duration {
        match self {
            AudioInput::Device(device) => device.frame_duration(),
            AudioInput::Adts(adts) => adts.frame_duration(),
        }
    }

    /// The next event; never completes while closed. Cancel-safe.
    pub async fn next(&mut self) -> Result<AudioEvent> {
        match self {
            AudioInput::Device(device) => device.next().await,
            AudioInput::Adts(adts) => adts.next().await,
        }
    }
}

/// An ALSA capture device and its AAC encoder.
pub struct AudioCapture {
    device: String,
    wanted: Wanted,
    channels: u8,
    bitrate: u32,
    capture: Option<Capture>,
    encoder: Option<AacEncoder>,
    clock: AudioClock,
    /// One frame of interleaved samples, filled by reads.
    pcm: Vec<i16>,
    filled: usize,
    /// Sample frames read since the opening: the count the clock's reports use.
    samples_read: u64,
    /// AAC frames out of the encoder since the opening.
    frames_out: u64,
    /// The encoder's look-ahead, in samples.
    delay: u64,
    /// The last frame given out.
    frame: Vec<u8>,
}

impl AudioCapture {
    /// For `--audio hw:...`; `None` for a track that is not captured.
    pub fn new(options: &AudioOptions) -> Option<AudioCapture> {
        let AudioSource::Device(device) = &options.source else {
            return None;
        };
        Some(AudioCapture {
            device: device.clone(),
            wanted: Wanted {
                channels: Some(u32::from(options.channels)),
                rate: options.rate,
                ..Wanted::default()
            },
            channels: options.channels,
            bitrate: options.bitrate,
            capture: None,
            encoder: None,
            clock: AudioClock::new(options.initial_rate(), 0),
            pcm: Vec::new(),
            filled: 0,
            samples_read: 0,
            frames_out: 0,
            delay: 0,
            frame: Vec::new(),
        })
    }

    /// The device as the user named it.
    pub fn name(&self) -> &str {
        &self.device
    }

    pub fn is_open(&self) -> bool {
        self.capture.is_some()
    }

    /// Opens and starts the device, with a fresh encoder; returns the track's format. Must be
    /// called within a tokio runtime.
    pub fn open(&mut self) -> Result<AudioSpecificConfig> {
        self.close();
        let capture = Capture::open(&CaptureConfig {
            device: self.device.clone(),
            wanted: self.wanted,
        })?;
        let negotiated = *capture.negotiated();
        let encoder = AacEncoder::new(negotiated.rate, self.channels, self.bitrate)?;
        let asc = encoder.audio_specific_config();
        log::info!(
            "audio: capturing {} ({negotiated}), AAC-LC {} kbit/s",
            capture.label(),
            self.bitrate / 1000
        );
        // The same track from now on, whatever device is plugged in next.
        self.wanted.rate = Some(negotiated.rate);
        self.clock = AudioClock::new(negotiated.rate, 0);
        self.pcm = vec![0; SAMPLES_PER_FRAME as usize * usize::from(self.channels)];
        // An AAC-LC frame holds at most 6144 bits per channel.
        self.frame = Vec::with_capacity(768 * usize::from(self.channels));
        self.filled = 0;
        self.samples_read = 0;
        self.frames_out = 0;
        self.delay = u64::from(encoder.delay_samples());
        self.encoder = Some(encoder);
        self.capture = Some(capture);
        Ok(asc)
    }

    pub fn close(&mut self) {
        self.capture = None;
        self.encoder = None;
    }

    /// The frame of the last [`AudioEvent::Frame`].
    pub fn frame(&self) -> &[u8] {
        &self.frame
    }

    /// Duration of one AAC frame at the device's rate.
    pub fn frame_duration(&self) -> Duration {
        Duration::from_nanos(
            u64::from(SAMPLES_PER_FRAME) * 1_000_000_000 / u64::from(self.clock.rate()),
        )
    }

    /// Waits for the next AAC frame. Never completes while the device is closed.
    pub async fn next(&mut self) -> Result<AudioEvent> {
        loop {
            let Some(capture) = self.capture.as_mut() else {
                return std::future::pending().await;
            };
            let captured = match capture.read_i16(&mut self.pcm[self.filled..]).await {
                Ok(captured) => captured,
                Err(ReadError::Overrun { overruns }) => {
                    self.clock.discontinuity();
                    return Ok(AudioEvent::Overrun { overruns });
                }
                Err(ReadError::Failed(e)) => return Err(e),
            };
            let channels = usize::from(self.channels);
            self.samples_read += captured.frames as u64;
            self.filled += captured.frames * channels;
            if !captured.status.tstamp.is_zero() {
                self.clock.report(
                    captured.status.tstamp.as_nanos() as u64,
                    self.samples_read + captured.status.avail,
                );
            }
            if self.filled < self.pcm.len() {
                continue;
            }
            self.filled = 0;
            let Some(encoder) = self.encoder.as_mut() else {
                return Err(Error::ours(
                    "audio: the encoder is gone while the device is open",
                ));
            };
            let Some(bytes) = encoder.encode(&self.pcm)? else {
                continue;
            };
            let k = self.frames_out;
            self.frames_out += 1;
            let Some(first_sample) = (k * u64::from(SAMPLES_PER_FRAME)).checked_sub(self.delay)
            else {
                // The encoder's priming: before the first sample captured.
                continue;
            };
            self.frame.clear();
            self.frame.extend_from_slice(bytes);
            let Some(stamp) = self.clock.stamp(first_sample) else {
                continue;
            };
            let Ok(ns) = u64::try_from(stamp.ns()) else {
                continue;
            };
            return Ok(AudioEvent::Frame {
                at: Duration::from_nanos(ns),
            });
        }
    }
}
