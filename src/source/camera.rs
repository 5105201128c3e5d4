//! An H.264 camera: a V4L2 capture device whose frames are already H.264 (UVC H.264 webcams, SoC
//! capture paths with an encoder behind them, v4l2loopback carrying H.264).
//!
//! [`CameraSource::open`] negotiates H.264 on the capture queue (single- or multi-planar), at the
//! asked or the current size and frame rate, sets rotation and flips where the driver has those
//! controls, maps a few buffers once, queues them all and starts streaming.
//! [`CameraSource::next_frame`] never blocks: it gives the next filled buffer's payload, straight
//! from the mapped memory, with the buffer's timestamp and keyframe flag. The caller hands those
//! bytes to the socket (or copies what the socket did not take); the buffer goes back to the
//! driver at the next call.
//!
//! # Waiting without busy loops
//!
//! The device fd is registered with tokio's `AsyncFd` only after buffers are queued and the queue
//! streams: videobuf2 reports `POLLERR` for a capture queue that is not streaming or has no buffer
//! queued, and an edge-triggered epoll that keeps reporting an error would wake the loop for
//! nothing. [`CameraSource::wait`] checks what a wakeup meant with a zero-timeout `poll`: a buffer
//! (return), nothing (clear the readiness and wait again), or an error. An error while buffers are
//! queued means the device failed or went away: DQBUF then says why (ENODEV, EIO) and that is the
//! error. If DQBUF only says "try again" while `POLLERR` stays, the wait sleeps a little between
//! looks and gives up after [`ERROR_PATIENCE`] with an input error naming the device.
//!
//! Invariants: at most one buffer is held (the frame last returned); every other buffer is queued
//! while streaming, so the driver never starves; nothing here allocates per frame.

use std::path::{Path, PathBuf};
use std::time::Duration;

use log::{debug, info, warn};
use nix::poll::PollFlags;

use super::poller::DevicePoller;
use crate::error::{Error, Fault, Result};
use crate::v4l2::{BufType, BufferQueue, Dequeued, Device, FourCC, Fraction, Mmap};

/// `V4L2_CID_HFLIP`, `V4L2_CID_VFLIP`, `V4L2_CID_ROTATE` (user class, `V4L2_CID_BASE` + 20, 21, 34).
pub const CID_HFLIP: u32 = 0x0098_0900 + 20;
pub const CID_VFLIP: u32 = 0x0098_0900 + 21;
pub const CID_ROTATE: u32 = 0x0098_0900 + 34;

/// How long a device may report `POLLERR` without giving a buffer or a reason.
pub const ERROR_PATIENCE: Duration = Duration::from_secs(2);
/// The pause between looks at a device that reports `POLLERR`.
const ERROR_PAUSE: Duration = Duration::from_millis(20);

/// What to ask of the camera.
#[derive(Clone, Debug, PartialEq)]
pub struct CameraSettings {
    pub path: PathBuf,
    /// Width and height; `None`: the current size if H.264 is offered at it, else the largest.
    pub size: Option<(u32, u32)>,
    /// Frames per second; `None`: the driver's current rate.
    pub fps: Option<Fraction>,
    /// Degrees, where the driver has `V4L2_CID_ROTATE`.
    pub rotate: Option<i64>,
    pub hflip: bool,
    pub vflip: bool,
    /// Buffers to ask for (the driver may give more).
    pub buffers: u32,
}

impl CameraSettings {
    pub fn new(path: impl Into<PathBuf>) -> CameraSettings {
        CameraSettings {
            path: path.into(),
            size: None,
            fps: None,
            rotate: None,
            hflip: false,
            vflip: false,
            buffers: 4,
        }
    }
}

/// A frame from the camera: its bytes stay in the driver's buffer until the next
/// [`CameraSource::next_frame`].
#[derive(Debug)]
pub struct CameraFrame<'a> {
    pub data: &'a [u8],
    /// CLOCK_MONOTONIC time of capture, when the driver stamps buffers with it.
    pub timestamp: Option<Duration>,
    /// `V4L2_BUF_FLAG_KEYFRAME`.
    pub keyframe: bool,
    /// Frames the driver skipped before this one (a gap in its sequence numbers).
    pub skipped: u32,
}

/// What a device offers, as far as choosing a source goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CaptureKind {
    /// Its capture queue offers H.264.
    H264,
    /// Capture without H.264: raw frames for an encoder (or MJPEG, which v4l2rtmp cannot use).
    Raw,
}

/// Opens `path` and tells whether it captures H.264 or only other formats. Errors for nodes that
/// cannot capture at all (an encoder, a metadata node, a loopback without a writer).
pub fn capture_kind(path: &Path) -> Result<CaptureKind> {
    let device = Device::open(path)?;
    let capture = capture_type(&device)?;
    let formats = device.formats(capture)?;
    if formats.iter().any(|f| f.fourcc == FourCC::H264) {
        Ok(CaptureKind::H264)
    } else {
        Ok(CaptureKind::Raw)
    }
}

fn capture_type(device: &Device) -> Result<BufType> {
    let caps = device.capabilities();
    if caps.is_m2m() {
        return Err(Error::config(format!(
            "{} is a memory-to-memory device (an encoder or a converter), not a camera: give the \
             camera as --input and this device as --encoder",
            device.name()
        )));
    }
    let Some(capture) = caps.capture_type().filter(|_| caps.is_capture()) else {
        return Err(Error::config(format!(
            "{} cannot capture video ({}); `v4l2rtmp devices` lists the cameras",
            device.name(),
            caps.describe()
        )));
    };
    if !caps.has_streaming() {
        return Err(Error::config(format!(
            "{} has no streaming I/O (only read()), which v4l2rtmp does not use",
            device.name()
        )));
    }
    Ok(capture)
}

pub struct CameraSource {
    device: Device,
    poller: DevicePoller,
    queue: BufferQueue<Mmap>,
    held: Option<Dequeued>,
    /// The next sequence number expected, to count frames the driver dropped.
    next_sequence: Option<u32>,
    /// When POLLERR was first seen without a buffer, in a row.
    error_since: Option<tokio::time::Instant>,
}

impl CameraSource {
    /// Opens the camera, negotiates H.264, maps buffers and starts streaming. Must be called within
    /// a tokio runtime.
    pub fn open(settings: &CameraSettings) -> Result<CameraSource> {
        let device = Device::open(&settings.path)?;
        let capture = capture_type(&device)?;
        let (width, height) = match settings.size {
            Some(size) => size,
            None => default_size(&device, capture)?,
        };
        let format = device.negotiate(capture, FourCC::H264, width, height)?;
        let mut rate = device.frame_rate(capture)?;
        if let Some(fps) = settings.fps {
            match device.set_frame_rate(capture, fps)? {
                Some(chosen) => {
                    if chosen != fps {
                        warn!(
                            "{}: asked for {fps} fps, the driver chose {chosen} fps",
                            device.name()
                        );
                    }
                    rate = Some(chosen);
                }
                None => warn!(
                    "{}: the driver has no settable frame rate; --fps {fps} is ignored",
                    device.name()
                ),
            }
        }
        let mut controls = Vec::new();
        if let Some(degrees) = settings.rotate {
            controls.push(("rotate", CID_ROTATE, degrees));
        }
        if settings.hflip {
            controls.push(("hflip", CID_HFLIP, 1));
        }
        if settings.vflip {
            controls.push(("vflip", CID_VFLIP, 1));
        }
        for (what, id, value) in controls {
            set_optional_control(&device, what, id, value)?;
        }
        let mut queue = BufferQueue::new_mmap(&device, capture, settings.buffers.max(2))?;
        if queue.len() < 2 {
            return Err(Error::input(format!(
                "{}: the driver gave {} buffer(s); at least 2 are needed",
                device.name(),
                queue.len()
            )));
        }
        queue.queue_all()?;
        queue.stream_on()?;
        let description = format!(
            "{}: H.264 {}x{}{}, {} buffers of {} KiB, {}",
            device.name(),
            format.width,
            format.height,
            match rate {
                Some(fps) => format!(" at {:.3} fps", fps.as_f64()),
                None => String::new(),
            },
            queue.len(),
            queue.plane_length(0, 0).unwrap_or(0) / 1024,
            if capture.is_mplane() {
                "multi-planar"
            } else {
                "single-planar"
            }
        );
        let poller = DevicePoller::new(&device, PollFlags::POLLIN)?;
        info!("{description}");
        Ok(CameraSource {
            device,
            poller,
            queue,
            held: None,
            next_sequence: None,
            error_since: None,
        })
    }

    pub fn name(&self) -> &str {
        self.device.name()
    }

    /// The next captured frame, if one is ready; never blocks. The frame returned before is
    /// given back to the driver first.
    pub fn next_frame(&mut self) -> Result<Option<CameraFrame<'_>>> {
        if let Some(held) = self.held.take() {
            self.queue.queue(held.index, &[], None)?;
        }
        loop {
            let Some(buffer) = self.queue.dequeue()? else {
                return Ok(None);
            };
            self.error_since = None;
            let skipped = match self.next_sequence {
                Some(expected) => buffer.sequence.wrapping_sub(expected),
                None => 0,
            };
            self.next_sequence = Some(buffer.sequence.wrapping_add(1));
            if buffer.is_error() || buffer.bytes_used() == 0 {
                debug!(
                    "{}: buffer {} {}; queued again",
                    self.name(),
                    buffer.index,
                    if buffer.is_error() {
                        "has an error flag"
                    } else {
                        "is empty"
                    }
                );
                self.queue.queue(buffer.index, &[], None)?;
                continue;
            }
            self.held = Some(buffer);
            let data = self.queue.payload(&buffer, 0)?;
            return Ok(Some(CameraFrame {
                data,
                timestamp: buffer.is_monotonic().then_some(buffer.timestamp),
                keyframe: buffer.is_keyframe(),
                skipped: if skipped > 1_000_000 { 0 } else { skipped },
            }));
        }
    }

    /// Waits until a frame may be ready (or the device reports an error). Cancel-safe.
    pub async fn wait(&mut self) -> Result<()> {
        loop {
            let readiness = self.poller.wait().await?;
            if readiness.capture {
                return Ok(());
            }
            if !readiness.error {
                continue;
            }
            // POLLERR: let DQBUF say why (ENODEV, EIO), unless it already said "nothing yet".
            let now = tokio::time::Instant::now();
            match self.error_since {
                None => {
                    self.error_since = Some(now);
                    return Ok(());
                }
                Some(since) if now.duration_since(since) >= ERROR_PATIENCE => {
                    return Err(Error::input(format!(
                        "{} reports an error (POLLERR) and has given no frame for {} s",
                        self.name(),
                        ERROR_PATIENCE.as_secs()
                    )));
                }
                Some(_) => {
                    tokio::time::sleep(ERROR_PAUSE).await;
                    return Ok(());
                }
            }
        }
    }
}

impl Drop for CameraSource {
    fn drop(&mut self) {
        // STREAMOFF returns every buffer; a device that is gone cannot, and that is fine.
        if let Err(e) = self.queue.stream_off() {
            debug!("{e}");
        }
    }
}

/// The current size if the device offers H.264 at it, else the largest H.264 size.
fn default_size(device: &Device, capture: BufType) -> Result<(u32, u32)> {
    let sizes = device.frame_sizes(FourCC::H264)?;
    let current = device.get_format(capture)?;
    let offered_now = sizes.is_empty()
        || sizes
            .iter()
            .any(|s| s.contains(current.width, current.height));
    if offered_now && current.width > 0 && current.height > 0 {
        return Ok((current.width, current.height));
    }
    sizes
        .iter()
        .map(|s| s.max())
        .max_by_key(|&(w, h)| u64::from(w) * u64::from(h))
        .ok_or_else(|| {
            Error::config(format!(
                "{} offers H.264 but no frame size for it",
                device.name()
            ))
        })
}

/// Sets a control if the device has it; a missing control is a warning, a refused value an error.
pub fn set_optional_control(device: &Device, what: &str, id: u32, value: i64) -> Result<bool> {
    let info = match device.query_control(id) {
        Ok(info) => info,
        Err(e) if e.fault() == Fault::Input => return Err(e),
        Err(_) => {
            warn!(
                "{} has no {what} control; --{what} is ignored",
                device.name()
            );
            return Ok(false);
        }
    };
    if let Err(reason) = info.check_value(value) {
        return Err(Error::config(format!(
            "{}: --{what} {value}: {reason}",
            device.name()
        )));
    }
    device.set_control(id, value)?;
    Ok(true)
}
