//! ADTS AAC from a FIFO, a pipe, an `exec:` child or a regular file (`--audio PATH`), for a user
//! whose encoder runs elsewhere: each raw frame is sent as it came, with no re-encoding.
//!
//! - A live stream (FIFO, pipe, `exec:`) is stamped by arrival: each frame's end arrived no
//!   earlier than it was made, so the [`AudioClock`] fits its line through the earliest
//!   arrivals of the frames counted by their samples, as it does with a sound card's reports.
//!   Of frames that arrive together (a backlog, a burst), only the last is reported: it alone
//!   says when the others were made at the latest. The others are stamped from the line, and
//!   those of a first burst, before there is a line, are dropped.
//! - A regular file is played in real time from its opening: frame n is given out, and stamped,
//!   at n × 1024 samples after it.
//! - The configuration (rate, channels) is the stream's: the first frame and every change are
//!   announced with [`AudioEvent::Format`] before the frame.
//!
//! Invariants: no allocation per frame (the read buffer and the frame are allocated at
//! opening); [`AdtsAudio::next`] is cancel-safe: a frame found is kept until it is given out,
//! bytes read stay in the buffer.

use std::time::Duration;

use super::audio::AudioEvent;
use super::{Input, InputEvent};
use crate::error::{Error, Fault, Result};
use crate::media::aac::{AudioSpecificConfig, SAMPLES_PER_FRAME};
use crate::media::adts::{AdtsEvent, AdtsHeader, AdtsSplitter, MAX_FRAME_LEN};
use crate::media::audio_clock::AudioClock;

/// Bytes read at a time: several frames (a frame is at most 8191 bytes).
const BUFFER_BYTES: usize = 4 * MAX_FRAME_LEN + 4096;

/// A frame found and not yet given out.
#[derive(Clone, Copy, Debug)]
enum Ready {
    None,
    /// Its format must be announced first.
    Format(AudioSpecificConfig),
    /// Given out at `at` (CLOCK_MONOTONIC).
    Frame {
        at: Duration,
    },
}

/// An ADTS byte stream read into frames.
pub struct AdtsAudio {
    path: String,
    input: Option<Input>,
    paced: bool,
    buf: Vec<u8>,
    /// The logical position of `buf[0]`; bytes `start..end` of `buf` are not yet scanned.
    base: u64,
    start: usize,
    end: usize,
    splitter: AdtsSplitter,
    clock: AudioClock,
    /// Samples per channel of the frames found since the opening.
    samples: u64,
    /// CLOCK_MONOTONIC at the opening (a file's frame 0) and at the last read (arrival).
    opened_ns: u64,
    arrival_ns: u64,
    format: Option<AudioSpecificConfig>,
    frame: Vec<u8>,
    ready: Ready,
    /// A file was read to its end.
    ended: bool,
    /// Another whole frame follows the one just found in what was read: not the last of its
    /// arrival.
    burst: bool,
}

fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| Duration::new(t.tv_sec() as u64, t.tv_nsec() as u32).as_nanos() as u64)
        .unwrap_or(0)
}

impl AdtsAudio {
    pub fn new(path: &str) -> AdtsAudio {
        AdtsAudio {
            path: path.to_string(),
            input: None,
            paced: false,
            buf: Vec::new(),
            base: 0,
            start: 0,
            end: 0,
            splitter: AdtsSplitter::new(),
            clock: AudioClock::new(48_000, 0),
            samples: 0,
            opened_ns: 0,
            arrival_ns: 0,
            format: None,
            frame: Vec::new(),
            ready: Ready::None,
            ended: false,
            burst: false,
        }
    }

    pub fn name(&self) -> &str {
        &self.path
    }

    pub fn is_open(&self) -> bool {
        self.input.is_some()
    }

    /// Opens (or opens again) the stream. Its format is known from its first frame.
    pub async fn open(&mut self) -> Result<()> {
        self.close();
        let input = Input::open(&self.path).await?;
        self.paced = matches!(input, Input::File { .. });
        log::info!(
            "audio: reading ADTS AAC from {}{}",
            input.name(),
            if self.paced { " (in real time)" } else { "" }
        );
        self.input = Some(input);
        self.buf = vec![0; BUFFER_BYTES];
        self.frame = Vec::with_capacity(MAX_FRAME_LEN);
        self.base = self.splitter.position();
        self.start = 0;
        self.end = 0;
        self.splitter.reset(self.base);
        self.samples = 0;
        self.opened_ns = monotonic_ns();
        self.format = None;
        self.ready = Ready::None;
        self.ended = false;
        Ok(())
    }

    pub fn close(&mut self) {
        self.input = None;
    }

    /// The frame of the last [`AudioEvent::Frame`].
    pub fn frame(&self) -> &[u8] {
        &self.frame
    }

    /// Duration of one AAC frame at the stream's rate.
    pub fn frame_duration(&self) -> Duration {
        Duration::from_nanos(
            u64::from(SAMPLES_PER_FRAME) * 1_000_000_000 / u64::from(self.clock.rate()),
        )
    }

    /// Waits for the next frame (its format first, when it is new). Never completes while the
    /// stream is closed; its end is an input error (the supervisor opens it again).
    pub async fn next(&mut self) -> Result<AudioEvent> {
        loop {
            if self.input.is_none() {
                return std::future::pending().await;
            }
            match self.ready {
                Ready::Format(format) => {
                    self.ready = self.stamp();
                    return Ok(AudioEvent::Format(format));
                }
                Ready::Frame { at } => {
                    if self.paced {
                        // Cancel-safe: the frame stays ready if this sleep is dropped.
                        tokio::time::sleep(at.saturating_sub(Duration::from_nanos(monotonic_ns())))
                            .await;
                    }
                    self.ready = Ready::None;
                    return Ok(AudioEvent::Frame { at });
                }
                Ready::None => {}
            }
            if self.split()? {
                continue;
            }
            if self.ended {
                self.close();
                return Ok(AudioEvent::Ended);
            }
            self.read().await?;
        }
    }

    /// Looks for the next frame in the bytes read; true when one is ready.
    fn split(&mut self) -> Result<bool> {
        while self.start < self.end {
            let at = self.base + self.start as u64;
            let (used, event) = self.splitter.scan(&self.buf[self.start..self.end], at);
            self.start += used;
            match event {
                Some(AdtsEvent::Frame(frame)) => {
                    let payload = frame.payload();
                    let from = (payload.start - self.base) as usize;
                    let to = (payload.end - self.base) as usize;
                    self.frame.clear();
                    self.frame.extend_from_slice(&self.buf[from..to]);
                    self.samples += u64::from(SAMPLES_PER_FRAME);
                    self.burst = self.complete_frame_at(frame.end);
                    if frame.new_config || self.format != Some(frame.config) {
                        self.format = Some(frame.config);
                        self.clock = AudioClock::new(frame.config.sample_rate(), 0);
                        self.samples = u64::from(SAMPLES_PER_FRAME);
                        self.opened_ns = self.arrival_ns.max(self.opened_ns);
                        self.ready = Ready::Format(frame.config);
                    } else {
                        self.ready = self.stamp();
                    }
                    return Ok(true);
                }
                Some(AdtsEvent::Unsupported(e)) => {
                    return Err(Error::new(
                        Fault::Config,
                        format!("--audio {}: {e}", self.path),
                    ))
                }
                None => {}
            }
        }
        Ok(false)
    }

    /// The time of the frame just found (the last `SAMPLES_PER_FRAME` of `samples`).
    fn stamp(&mut self) -> Ready {
        let first = self.samples - u64::from(SAMPLES_PER_FRAME);
        let rate = u64::from(self.clock.rate());
        if self.paced {
            let at = self.opened_ns + first * 1_000_000_000 / rate;
            return Ready::Frame {
                at: Duration::from_nanos(at),
            };
        }
        if !self.burst {
            self.clock.report(self.arrival_ns, self.samples);
        }
        match self.clock.stamp(first).map(|s| s.ns()) {
            Some(ns) if ns >= 0 => Ready::Frame {
                at: Duration::from_nanos(ns as u64),
            },
            _ => Ready::None,
        }
    }

    /// Whether a whole frame lies in the buffer at logical position `at`.
    fn complete_frame_at(&self, at: u64) -> bool {
        let from = (at - self.base) as usize;
        match self.buf.get(from..self.end).map(AdtsHeader::parse) {
            Some(Ok(header)) => from + header.frame_len() <= self.end,
            _ => false,
        }
    }

    /// Keeps the bytes still needed at the front of the buffer and reads more after them.
    async fn read(&mut self) -> Result<()> {
        let keep = (self.splitter.held_from().saturating_sub(self.base) as usize).min(self.end);
        self.buf.copy_within(keep..self.end, 0);
        self.base += keep as u64;
        self.start -= keep.min(self.start);
        self.end -= keep;
        if self.end == self.buf.len() {
            // A frame longer than the buffer cannot be: what is held is garbage.
            self.splitter.finish();
            self.base += self.end as u64;
            self.start = 0;
            self.end = 0;
        }
        let Some(input) = self.input.as_mut() else {
            return Ok(());
        };
        match input.next_event(&mut self.buf[self.end..]).await? {
            InputEvent::Read(n) => {
                self.end += n;
                self.arrival_ns = monotonic_ns();
                Ok(())
            }
            InputEvent::Ended | InputEvent::FrameReady if self.paced => {
                // A file's audio is over; the video goes on without it.
                self.splitter.finish();
                self.ended = true;
                Ok(())
            }
            InputEvent::Ended | InputEvent::FrameReady => {
                self.splitter.finish();
                Err(Error::new(
                    Fault::Input,
                    format!("the ADTS audio from {} ended", self.path),
                ))
            }
        }
    }
}
