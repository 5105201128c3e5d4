//! [`Capture`]: a configured, running capture PCM whose readiness tokio watches, read into
//! caller-provided buffers as the device's raw frames or converted to `i16`/`f32` samples.
//!
//! Waiting for audio never blocks the runtime: the PCM is non-blocking and its fd is registered
//! with tokio's `AsyncFd`; a read that finds nothing clears readiness and waits for the next
//! wake-up (ALSA wakes pollers once a period is available, and on overrun or disconnection).
//!
//! `AsyncFd::register` is unsafe since tokio 1.52: the fd must stay open and mean the same file
//! for as long as it is registered. [`PcmDevice`] owns its fd (closed only on drop) and `Capture`
//! never hands out `&mut PcmDevice` or the device itself, so nothing can close or swap the fd
//! while it is registered.
//!
//! No allocation per read: the scratch buffer for conversion is allocated once, at open, for
//! one buffer's worth of frames. Reads are cancel-safe (a `select!` may drop them): they wait
//! only before taking frames from the device.
#![allow(unsafe_code)]

use std::time::Duration;

use nix::errno::Errno;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use super::convert::Converter;
use super::params::{Negotiated, Wanted};
use super::pcm::{frames_to_duration, PcmDevice, Status};
use crate::error::{Error, Fault, Result};

/// Frames read and when they were captured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Captured {
    /// Frames written to the caller's buffer (at least 1).
    pub frames: usize,
    /// The status taken right after the read: `tstamp` dates the newest captured frame, `avail`
    /// counts the frames captured after the ones read.
    pub status: Status,
    /// CLOCK_MONOTONIC capture time of the first frame read (`None` while the driver gives no
    /// timestamp).
    pub first_frame_time: Option<Duration>,
}

/// Why a read gave no frames.
#[derive(Debug)]
pub enum ReadError {
    /// The buffer overran (the reader was too slow): frames were lost and the stream was
    /// restarted. Reading may go on; timestamps after this jump over the gap. `overruns` counts
    /// them since the open.
    Overrun { overruns: u64 },
    /// The device failed: unplugged, suspended, or an error; reopen it (an input fault naming
    /// the device).
    Failed(Error),
}

impl From<ReadError> for Error {
    fn from(e: ReadError) -> Error {
        match e {
            ReadError::Overrun { overruns } => Error::input(format!(
                "the audio capture overran ({overruns} times since it was opened)"
            )),
            ReadError::Failed(e) => e,
        }
    }
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Overrun { overruns } => write!(f, "overrun (#{overruns})"),
            ReadError::Failed(e) => write!(f, "{e}"),
        }
    }
}

/// What to open and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaptureConfig {
    /// `hw:CARD,DEV`, `hw:CARD=Name,DEV=0` or `/dev/snd/pcmC1D0c`.
    pub device: String,
    pub wanted: Wanted,
}

/// A running capture.
pub struct Capture {
    fd: AsyncFd<PcmDevice>,
    negotiated: Negotiated,
    converter: Converter,
    /// Raw frames for the converting reads: one buffer's worth.
    scratch: Vec<u8>,
    overruns: u64,
}

impl Capture {
    /// Opens, configures and starts the capture. Must be called within a tokio runtime.
    pub fn open(config: &CaptureConfig) -> Result<Capture> {
        let mut pcm = PcmDevice::open(&config.device)?;
        let negotiated = pcm.configure(&config.wanted)?;
        let converter = Converter::new(
            negotiated.format,
            negotiated.device_channels,
            negotiated.output_channels,
        )
        .ok_or_else(|| Error::ours(format!("{}: no conversion for {negotiated}", pcm.label())))?;
        pcm.start()
            .map_err(|e| super::ioctl_error(pcm.label(), "starting the capture", e))?;
        let scratch = vec![0; negotiated.buffer_frames as usize * converter.device_frame_bytes()];
        // SAFETY: `PcmDevice` owns its fd (`OwnedFd`), which stays open and refers to the same
        // open file until the `PcmDevice` is dropped, and `as_raw_fd` always returns that fd.
        // The `AsyncFd` owns the `PcmDevice` and this type only lends it out shared (`&PcmDevice`
        // has no way to close or replace the fd), so the fd outlives the registration.
        let fd =
            unsafe { AsyncFd::register_with_interest(pcm, Interest::READABLE | Interest::ERROR) }
                .map_err(|e| {
                let (pcm, source) = e.into_parts();
                Error::io(
                    Fault::Ours,
                    format!("{}: cannot watch it with tokio", pcm.label()),
                    source,
                )
            })?;
        Ok(Capture {
            fd,
            negotiated,
            converter,
            scratch,
            overruns: 0,
        })
    }

    pub fn negotiated(&self) -> &Negotiated {
        &self.negotiated
    }

    pub fn device(&self) -> &PcmDevice {
        self.fd.get_ref()
    }

    /// How errors name the device.
    pub fn label(&self) -> &str {
        self.device().label()
    }

    /// Overruns since the open.
    pub fn overruns(&self) -> u64 {
        self.overruns
    }

    /// Bytes of one raw frame (device format and channels).
    pub fn device_frame_bytes(&self) -> usize {
        self.converter.device_frame_bytes()
    }

    /// Samples per output frame (the channels after conversion).
    pub fn output_channels(&self) -> usize {
        self.negotiated.output_channels as usize
    }

    /// Waits for frames and reads as many as are available and fit in `buf`, in the device's
    /// format and channel count, at least one.
    pub async fn read_raw(&mut self, buf: &mut [u8]) -> std::result::Result<Captured, ReadError> {
        let frame_bytes = self.device_frame_bytes();
        if buf.len() < frame_bytes {
            return Err(ReadError::Failed(Error::ours(format!(
                "{}: a read buffer of {} bytes holds no frame of {frame_bytes}",
                self.label(),
                buf.len()
            ))));
        }
        let frames = self.read_into(buf).await?;
        self.captured(frames)
    }

    /// Like [`Capture::read_raw`], converted to interleaved `i16` samples of the output channel
    /// count; `out` holds whole frames.
    pub async fn read_i16(&mut self, out: &mut [i16]) -> std::result::Result<Captured, ReadError> {
        let frames = self.read_converted(out.len()).await?;
        let bytes = frames * self.device_frame_bytes();
        let converted = self.converter.to_i16(&self.scratch[..bytes], out);
        debug_assert_eq!(converted, frames);
        self.captured(frames)
    }

    /// Like [`Capture::read_raw`], converted to interleaved `f32` samples in [-1, 1).
    pub async fn read_f32(&mut self, out: &mut [f32]) -> std::result::Result<Captured, ReadError> {
        let frames = self.read_converted(out.len()).await?;
        let bytes = frames * self.device_frame_bytes();
        let converted = self.converter.to_f32(&self.scratch[..bytes], out);
        debug_assert_eq!(converted, frames);
        self.captured(frames)
    }

    /// Reads up to `samples / channels` frames into the scratch buffer.
    async fn read_converted(&mut self, samples: usize) -> std::result::Result<usize, ReadError> {
        let want_frames = samples / self.output_channels();
        if want_frames == 0 {
            return Err(ReadError::Failed(Error::ours(format!(
                "{}: a read buffer of {samples} samples holds no frame of {}",
                self.label(),
                self.output_channels()
            ))));
        }
        let limit = (want_frames * self.device_frame_bytes()).min(self.scratch.len());
        let result = read_when_ready(&self.fd, &mut self.scratch[..limit]).await;
        self.settle(result)
    }

    async fn read_into(&mut self, buf: &mut [u8]) -> std::result::Result<usize, ReadError> {
        let result = read_when_ready(&self.fd, buf).await;
        self.settle(result)
    }

    /// Frames read, or the error: an overrun is counted and recovered from.
    fn settle(
        &mut self,
        result: std::result::Result<usize, Errno>,
    ) -> std::result::Result<usize, ReadError> {
        match result {
            Ok(frames) => Ok(frames),
            Err(Errno::EPIPE) => Err(self.recover_overrun()),
            Err(errno) => Err(ReadError::Failed(super::ioctl_error(
                self.label(),
                "reading audio",
                errno,
            ))),
        }
    }

    /// After EPIPE: count the overrun and start again (PREPARE, START).
    fn recover_overrun(&mut self) -> ReadError {
        self.overruns += 1;
        match self.fd.get_ref().start() {
            Ok(()) => ReadError::Overrun {
                overruns: self.overruns,
            },
            Err(errno) => ReadError::Failed(super::ioctl_error(
                self.fd.get_ref().label(),
                "restarting after an overrun",
                errno,
            )),
        }
    }

    fn captured(&self, frames: usize) -> std::result::Result<Captured, ReadError> {
        let status = self.fd.get_ref().status().map_err(|errno| {
            ReadError::Failed(super::ioctl_error(
                self.fd.get_ref().label(),
                "reading the capture status",
                errno,
            ))
        })?;
        Ok(Captured {
            frames,
            first_frame_time: status.time_of_first(frames as u64, self.negotiated.rate),
            status,
        })
    }

    /// The duration of `frames` frames at the negotiated rate.
    pub fn duration_of(&self, frames: u64) -> Duration {
        frames_to_duration(frames, self.negotiated.rate)
    }
}

/// READI_FRAMES until it gives frames, waiting for readiness between tries. The only await is
/// the wait for readiness, before any frame is taken: dropping the future loses nothing.
async fn read_when_ready(
    fd: &AsyncFd<PcmDevice>,
    buf: &mut [u8],
) -> std::result::Result<usize, Errno> {
    loop {
        let mut guard = fd
            .ready(Interest::READABLE | Interest::ERROR)
            .await
            .map_err(|e| e.raw_os_error().map_or(Errno::EIO, Errno::from_raw))?;
        match fd.get_ref().read(buf) {
            // Nothing yet: wait for the next wake-up (a period, an overrun, a disconnection).
            Ok(0) | Err(Errno::EAGAIN) => guard.clear_ready(),
            other => return other,
        }
    }
}
