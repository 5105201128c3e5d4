//! A raw camera feeding a V4L2 stateful memory-to-memory encoder: the Raspberry Pi's
//! `bcm2835-codec` (`/dev/video11`), Rockchip, i.MX and Allwinner encoders, or vicodec in the VM
//! tests. It follows the kernel's stateful encoder interface
//! (`Documentation/userspace-api/media/v4l/dev-encoder.rst`).
//!
//! # Files
//!
//! - this one: the settings, the frames handed out, and [`EncoderSource`]'s state;
//! - `plan.rs`: the pure decisions, testable without a device: the raw format
//!   ([`choose_pixel_format`]), the controls and which device takes each ([`plan_controls`]),
//!   and whether the two sides' buffer layouts let the encoder read the camera's buffers
//!   ([`layouts_match`], [`PlaneLayout`]);
//! - `setup.rs`: [`EncoderSource::open`]: finding, opening and configuring both devices, and
//!   allocating their buffers (zero-copy DMABUF, else MMAP with one copy);
//! - `pump.rs`: moving frames at run time: camera frames into the encoder (in place, or with
//!   [`copy_frame`]), coded frames out ([`EncoderSource::next_frame`], keyframes recognised with
//!   [`payload_is_keyframe`]), waiting without busy loops ([`EncoderSource::wait`]), keyframes on
//!   demand, drain and resume.
//!
//! # Invariants
//!
//! - A camera buffer is in exactly one place: queued to the camera, ours, or (DMABUF path)
//!   queued to the encoder in the OUTPUT slot of the same index; it goes back to the camera when
//!   the encoder returns that slot.
//! - A device that disappears (ENODEV, EIO, ENXIO: unplugged, driver unbound) is a
//!   [`Fault::Input`] error naming it; a request a device cannot satisfy is a [`Fault::Config`]
//!   error naming the device, what was asked and what it offers. Nothing here panics on what a
//!   driver returns.

mod plan;
mod pump;
mod setup;

pub use plan::{
    choose_pixel_format, layouts_match, plan_controls, PlaneLayout, PlannedControl, Target,
    PREFERRED_RAW,
};
pub use pump::{copy_frame, payload_is_keyframe};

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::poller::DevicePoller;

#[cfg(doc)]
use crate::error::Fault;
use crate::error::Result;
use crate::v4l2::{BufferQueue, Dequeued, Device, DmaBuf, FourCC, Fraction, Mmap, WatchedDevice};

/// What to open and how to set it up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncoderSettings {
    /// The raw capture device, e.g. /dev/video0.
    pub camera: PathBuf,
    /// The encoder; `None`: the first memory-to-memory device whose CAPTURE side offers `codec`
    /// and whose OUTPUT side accepts a raw format the camera offers.
    pub encoder: Option<PathBuf>,
    /// The coded format: H264 in production, FWHT with vicodec.
    pub codec: FourCC,
    /// `None`: the camera's current size.
    pub size: Option<(u32, u32)>,
    /// Frames per second, set on the camera and on the encoder's OUTPUT side.
    pub fps: Option<Fraction>,
    /// The raw format; `None`: the first both sides accept, preferring NV12, YU12, YUYV.
    pub pixel_format: Option<FourCC>,
    /// Bits per second (V4L2_CID_MPEG_VIDEO_BITRATE).
    pub bitrate: Option<u32>,
    /// Frames from one keyframe to the next (H264_I_PERIOD and/or GOP_SIZE).
    pub keyframe_interval_frames: Option<u32>,
    /// V4L2_CID_MPEG_VIDEO_H264_PROFILE menu value.
    pub profile: Option<i64>,
    /// V4L2_CID_MPEG_VIDEO_H264_LEVEL menu value.
    pub level: Option<i64>,
    /// Degrees (V4L2_CID_ROTATE), on the camera if it has the control, else on the encoder.
    pub rotate: Option<i64>,
    pub hflip: bool,
    pub vflip: bool,
    /// Buffers per queue.
    pub buffers: u32,
    /// Hand frames to the encoder as DMABUF when both drivers allow it (default); `false`
    /// forces the copying MMAP path.
    pub dmabuf: bool,
}

impl Default for EncoderSettings {
    fn default() -> Self {
        EncoderSettings {
            camera: PathBuf::from("/dev/video0"),
            encoder: None,
            codec: FourCC::H264,
            size: None,
            fps: None,
            pixel_format: None,
            bitrate: None,
            keyframe_interval_frames: None,
            profile: None,
            level: None,
            rotate: None,
            hflip: false,
            vflip: false,
            buffers: 4,
            dmabuf: true,
        }
    }
}

/// A coded frame, borrowed from the encoder's buffer until the next call.
#[derive(Debug)]
pub struct CodedFrame<'a> {
    pub data: &'a [u8],
    /// CLOCK_MONOTONIC of the capture.
    pub timestamp: Duration,
    pub keyframe: bool,
}

/// A coded frame collected by [`EncoderSource::drain`] (copied: drains are rare).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DrainedFrame {
    pub data: Vec<u8>,
    pub timestamp: Duration,
    pub keyframe: bool,
}

/// The encoder's raw input queue.
enum RawQueue {
    /// Camera buffers imported by DMABUF; `exported[i][p]` is plane `p` of camera buffer `i`.
    DmaBuf {
        queue: BufferQueue<DmaBuf>,
        exported: Vec<Vec<OwnedFd>>,
    },
    /// Encoder-allocated buffers, each raw frame copied in; the layouts of each plane on the
    /// camera and in the encoder.
    Copy {
        queue: BufferQueue<Mmap>,
        fourcc: FourCC,
        height: u32,
        layouts: Vec<(PlaneLayout, PlaneLayout)>,
    },
}

impl RawQueue {
    fn queued_count(&self) -> usize {
        match self {
            RawQueue::DmaBuf { queue, .. } => queue.queued_count(),
            RawQueue::Copy { queue, .. } => queue.queued_count(),
        }
    }

    fn len(&self) -> u32 {
        match self {
            RawQueue::DmaBuf { queue, .. } => queue.len(),
            RawQueue::Copy { queue, .. } => queue.len(),
        }
    }

    fn dequeue(&mut self) -> Result<Option<Dequeued>> {
        match self {
            RawQueue::DmaBuf { queue, .. } => queue.dequeue(),
            RawQueue::Copy { queue, .. } => queue.dequeue(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Running,
    /// ENCODER_CMD STOP sent, the LAST buffer not seen yet.
    Draining,
    /// The LAST buffer was dequeued; [`EncoderSource::resume`] requeues it.
    Stopped,
}

/// A raw camera feeding a stateful M2M encoder. See the module documentation.
pub struct EncoderSource {
    /// The raw camera, watched by a poll(2) thread (see [`super::poller`]: epoll misses
    /// v4l2loopback's wakeups).
    camera: Device,
    camera_poller: DevicePoller,
    encoder: WatchedDevice,
    name: String,
    codec: FourCC,
    frames: BufferQueue<Mmap>,
    raw: RawQueue,
    coded: BufferQueue<Mmap>,
    held: Option<u32>,
    state: State,
    description: String,
    read_back: Vec<(String, i64)>,
    force_key_frame: bool,
    /// Something moved since the last `wait`.
    progress: bool,
    /// The last [`EncoderSource::wait`] ran to its end (was not cancelled).
    woke: bool,
    /// Coded frames returned so far.
    delivered: u64,
    /// Consecutive wakeups after which nothing moved.
    idle_wakeups: u32,
    /// Since when a device has reported POLLERR with buffers queued, over idle wakeups.
    pollerr_since: Option<Instant>,
    /// Camera frames dropped because no encoder buffer was free (copy path) or while drained.
    dropped: u64,
}

impl std::fmt::Debug for EncoderSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncoderSource")
            .field("name", &self.name)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl EncoderSource {
    /// `/dev/video0 (vivid) → /dev/video11 (bcm2835-codec)`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What was negotiated: formats, rates, the frame path, buffers, controls and read-backs.
    pub fn describe(&self) -> String {
        self.description.clone()
    }

    /// The controls set, as they read back (`video_gop_size`, ...).
    pub fn controls_read_back(&self) -> Vec<(String, i64)> {
        self.read_back.clone()
    }

    /// Whether the frames go to the encoder as DMABUF (no copy).
    pub fn is_zero_copy(&self) -> bool {
        matches!(self.raw, RawQueue::DmaBuf { .. })
    }

    /// Coded frames returned by [`EncoderSource::next_frame`] so far.
    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    /// Camera frames dropped so far (no free encoder buffer on the copy path, or while drained).
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}
