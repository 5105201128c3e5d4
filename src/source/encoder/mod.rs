//! A raw camera feeding a V4L2 stateful memory-to-memory encoder: the Raspberry Pi's
//! `bcm2835-codec` (`/dev/video11`), Rockchip, i.MX and Allwinner encoders, or vicodec in the VM
//! tests. It follows the kernel's stateful encoder interface
//! (`Documentation/userspace-api/media/v4l/dev-encoder.rst`).
//!
//! # Setup ([`EncoderSource::open`])
//!
//! 1. The camera's raw format: the one asked for, else the first format both the camera and the
//!    encoder's OUTPUT queue offer, preferring NV12, YU12, YUYV ([`choose_pixel_format`]); the
//!    size asked for, else the camera's current one; the frame rate (S_PARM) when asked for.
//! 2. The encoder: the coded format on its CAPTURE queue first (the OUTPUT formats it offers may
//!    depend on it), then the raw format and size on its OUTPUT queue, then the frame rate on
//!    the OUTPUT queue (the rate control's assumption; drivers without S_PARM are left alone).
//! 3. Controls ([`plan_controls`]): bitrate, keyframe period (H264_I_PERIOD and GOP_SIZE,
//!    whichever the encoder has), profile, level, REPEAT_SEQ_HEADER and PREPEND_SPSPPS_TO_IDR on
//!    when the encoder has them; rotation and flips on the camera when it has them, else on the
//!    encoder. Each is read back and reported ([`EncoderSource::controls_read_back`]).
//! 4. Buffers, allocated once: the camera's MMAP buffers are exported (EXPBUF) and queued as
//!    DMABUF into the encoder's OUTPUT queue, slot *i* carrying camera buffer *i*, so no frame
//!    is copied. When the camera cannot export, the encoder refuses DMABUF, or the two sides'
//!    layouts differ (plane count, stride, or a camera buffer smaller than the encoder's
//!    image size), both queues use MMAP and each raw frame is copied once. The choice is logged
//!    at info and shown by [`EncoderSource::describe`].
//!
//! # Invariants
//!
//! - A camera buffer is in exactly one place: queued to the camera, ours, or (DMABUF path)
//!   queued to the encoder in the OUTPUT slot of the same index; it goes back to the camera when
//!   the encoder returns that slot.
//! - At most one coded buffer is held by the caller: the one [`EncoderSource::next_frame`]
//!   returned, requeued at the next call (or by drain/resume).
//! - Coded timestamps are the camera's (CLOCK_MONOTONIC of the capture): they are set on the
//!   OUTPUT buffer and the encoder copies them (`V4L2_BUF_FLAG_TIMESTAMP_COPY`).
//! - While draining and after a drain until [`EncoderSource::resume`], camera frames are
//!   requeued to the camera at once (dropped): nothing is fed to a stopped encoder.
//! - A device that disappears (ENODEV, EIO, ENXIO: unplugged, driver unbound) is a
//!   [`Fault::Input`] error naming it; a request a device cannot satisfy is a [`Fault::Config`]
//!   error naming the device, what was asked and what it offers. Nothing here panics on what a
//!   driver returns.
//!
//! # Waiting without busy loops (EPOLLERR)
//!
//! The encoder's fd is registered with tokio's `AsyncFd` (edge-triggered epoll) for readable,
//! writable and priority (events) readiness; the camera's is watched by a poll(2) thread
//! ([`super::poller`]), because v4l2loopback misses epoll wakeups. [`EncoderSource::wait`]
//! waits for either and clears the readiness it saw *before* the caller drains the queues, so a
//! buffer completing meanwhile raises a fresh edge. videobuf2 and v4l2-mem2mem report EPOLLERR while a queue is not
//! streaming or has nothing queued (an encoder whose OUTPUT queue is empty and whose CAPTURE
//! buffers are all held; a camera before its first QBUF), and after a drain the CAPTURE queue
//! reports EPOLLIN until the encoder is started again: conditions that hold without anything
//! to dequeue. So `wait` counts wakeups after which [`EncoderSource::next_frame`] moved nothing;
//! after such a wakeup it first sleeps a short, growing pause (5 ms per idle wakeup, at most
//! 50 ms), so a condition that keeps an fd ready costs at most 20 wakeups a second, never a busy
//! loop. If, over those idle wakeups, a device keeps reporting POLLERR for 2 s while every one
//! of its queues is streaming with buffers queued, that is an input error (the device failed).
//! `wait` also returns after at most 1 s without readiness, so a device that vanished without
//! waking its poll queue is still noticed by the next DQBUF (ENODEV).

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::poll::PollFlags;
use tokio::io::Interest;

use super::poller::DevicePoller;

use crate::error::{Error, Fault, Result};
use crate::v4l2::device::{summarize_offers, Offer};
use crate::v4l2::list::{control_key, video_nodes};
use crate::v4l2::{
    sys, BufType, BufferQueue, Dequeued, Device, DmaBuf, DmaBufPlane, EncoderCmd, Event, EventKind,
    Format, FourCC, Fraction, Mmap, WatchedDevice,
};

/// The raw formats chosen first, in this order, when both sides offer them.
pub const PREFERRED_RAW: [FourCC; 3] = [FourCC::NV12, FourCC::YU12, FourCC::YUYV];

/// Longest `wait` without readiness.
const WAIT_CAP: Duration = Duration::from_secs(1);
/// Pause per idle wakeup before waiting again, and its cap.
const IDLE_PAUSE: Duration = Duration::from_millis(5);
const IDLE_PAUSE_MAX: Duration = Duration::from_millis(50);
/// POLLERR with buffers queued for this long is a failed device.
const POLLERR_LIMIT: Duration = Duration::from_secs(2);

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

/// Which device a control goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Camera,
    Encoder,
}

/// A control to set, as [`plan_controls`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlannedControl {
    pub id: u32,
    pub value: i64,
    pub target: Target,
}

/// The controls to set for `settings`, given which controls each device has. Asked-for
/// settings that neither device can take are an error naming what is missing.
pub fn plan_controls(
    settings: &EncoderSettings,
    camera_has: impl Fn(u32) -> bool,
    encoder_has: impl Fn(u32) -> bool,
) -> std::result::Result<Vec<PlannedControl>, String> {
    let mut plan = Vec::new();
    let enc = |id, value| PlannedControl {
        id,
        value,
        target: Target::Encoder,
    };
    // Late joiners and reconnects need SPS/PPS before every IDR.
    for id in [
        sys::V4L2_CID_MPEG_VIDEO_REPEAT_SEQ_HEADER,
        sys::V4L2_CID_MPEG_VIDEO_PREPEND_SPSPPS_TO_IDR,
    ] {
        if encoder_has(id) {
            plan.push(enc(id, 1));
        }
    }
    if let Some(bitrate) = settings.bitrate {
        if !encoder_has(sys::V4L2_CID_MPEG_VIDEO_BITRATE) {
            return Err(format!(
                "a bitrate ({bitrate} bit/s) was asked for, but the encoder has no bitrate control"
            ));
        }
        plan.push(enc(sys::V4L2_CID_MPEG_VIDEO_BITRATE, i64::from(bitrate)));
    }
    if let Some(frames) = settings.keyframe_interval_frames {
        let ids: Vec<u32> = [
            sys::V4L2_CID_MPEG_VIDEO_H264_I_PERIOD,
            sys::V4L2_CID_MPEG_VIDEO_GOP_SIZE,
        ]
        .into_iter()
        .filter(|&id| encoder_has(id))
        .collect();
        if ids.is_empty() {
            return Err(format!("a keyframe interval ({frames} frames) was asked for, but the encoder has neither an H.264 I-frame period nor a GOP size control"));
        }
        plan.extend(ids.into_iter().map(|id| enc(id, i64::from(frames))));
    }
    for (value, id, what) in [
        (
            settings.profile,
            sys::V4L2_CID_MPEG_VIDEO_H264_PROFILE,
            "an H.264 profile",
        ),
        (
            settings.level,
            sys::V4L2_CID_MPEG_VIDEO_H264_LEVEL,
            "an H.264 level",
        ),
    ] {
        if let Some(value) = value {
            if !encoder_has(id) {
                return Err(format!(
                    "{what} ({value}) was asked for, but the encoder has no such control"
                ));
            }
            plan.push(enc(id, value));
        }
    }
    let picture = [
        (settings.rotate, sys::V4L2_CID_ROTATE, "rotation"),
        (settings.hflip.then_some(1), sys::V4L2_CID_HFLIP, "hflip"),
        (settings.vflip.then_some(1), sys::V4L2_CID_VFLIP, "vflip"),
    ];
    for (value, id, what) in picture {
        let Some(value) = value else { continue };
        let target = if camera_has(id) {
            Target::Camera
        } else if encoder_has(id) {
            Target::Encoder
        } else {
            return Err(format!(
                "{what} was asked for, but neither the camera nor the encoder has that control"
            ));
        };
        plan.push(PlannedControl { id, value, target });
    }
    Ok(plan)
}

/// The raw format to use: `requested` if both sides offer it, else the first of
/// [`PREFERRED_RAW`] both offer, else the first camera format the encoder accepts; among those,
/// the first the encoder takes at exactly the asked size (`fits`: encoders align sizes per
/// format, vicodec 4:2:0 heights to 8), else the first.
pub fn choose_pixel_format(
    requested: Option<FourCC>,
    camera: &[FourCC],
    encoder: &[FourCC],
    fits: impl Fn(FourCC) -> bool,
) -> std::result::Result<FourCC, String> {
    let both = |f: &FourCC| camera.contains(f) && encoder.contains(f);
    let list = |formats: &[FourCC]| {
        if formats.is_empty() {
            "nothing".to_string()
        } else {
            formats
                .iter()
                .map(|f| f.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    if let Some(fourcc) = requested {
        if both(&fourcc) {
            return Ok(fourcc);
        }
        let side = if camera.contains(&fourcc) {
            "the encoder's raw input"
        } else {
            "the camera"
        };
        return Err(format!(
            "pixel format {fourcc} is not offered by {side}; the camera offers {}, the encoder accepts {}",
            list(camera),
            list(encoder)
        ));
    }
    let mut candidates = PREFERRED_RAW.iter().chain(camera).copied().filter(both);
    let first = candidates.clone().next();
    candidates
        .find(|&f| fits(f))
        .or(first)
        .ok_or_else(|| {
            format!(
                "the camera and the encoder share no raw format; the camera offers {}, the encoder accepts {}",
                list(camera),
                list(encoder)
            )
        })
}

/// Whether camera buffers of `camera` layout (with `lengths` bytes per plane) can be read by
/// the encoder as its `encoder` layout: the same planes and strides, and each camera plane at
/// least as large as the encoder's image size for it. `Err` says why not.
pub fn layouts_match(
    camera: &Format,
    lengths: &[u32],
    encoder: &Format,
) -> std::result::Result<(), String> {
    if camera.planes.len() != encoder.planes.len() || lengths.len() != camera.planes.len() {
        return Err(format!(
            "the camera's buffers have {} planes, the encoder's {}",
            camera.planes.len(),
            encoder.planes.len()
        ));
    }
    for (p, ((cam, enc), &length)) in camera
        .planes
        .iter()
        .zip(&encoder.planes)
        .zip(lengths)
        .enumerate()
    {
        if cam.bytes_per_line != enc.bytes_per_line {
            return Err(format!(
                "plane {p}: the camera's lines are {} bytes apart, the encoder's {}",
                cam.bytes_per_line, enc.bytes_per_line
            ));
        }
        // In a single-plane 4:2:0 buffer the chroma starts after `rows` luma rows: the rows
        // must agree too, or the encoder reads the chroma from the wrong place.
        let cam_rows = PlaneLayout::of(camera.fourcc, camera.height, cam).rows;
        let enc_rows = PlaneLayout::of(encoder.fourcc, encoder.height, enc).rows;
        if cam_rows != enc_rows {
            return Err(format!(
                "plane {p}: the camera lays out {cam_rows} rows, the encoder {enc_rows}"
            ));
        }
        if length < enc.size_image {
            return Err(format!(
                "plane {p}: the camera's buffers hold {length} bytes, the encoder needs {}",
                enc.size_image
            ));
        }
    }
    Ok(())
}

/// Whether a coded frame is a keyframe, read from its bytes: the I-frame flag of an FWHT
/// header (vicodec sets no buffer flag), an IDR slice in H.264 Annex B. `None`: cannot tell.
pub fn payload_is_keyframe(codec: FourCC, data: &[u8]) -> Option<bool> {
    const FWHT_MAGIC: [u8; 8] = [0x4f, 0x4f, 0x4f, 0x4f, 0xff, 0xff, 0xff, 0xff];
    const FWHT_FL_I_FRAME: u32 = 1 << 10;
    if codec == FourCC::new(b"FWHT") {
        if !data.starts_with(&FWHT_MAGIC) {
            return None;
        }
        let flags: [u8; 4] = data.get(20..24)?.try_into().ok()?;
        return Some(u32::from_be_bytes(flags) & FWHT_FL_I_FRAME != 0);
    }
    if codec == FourCC::H264 {
        let mut picture = None;
        for window in data.windows(4) {
            if window[..3] == [0, 0, 1] {
                match window[3] & 0x1f {
                    5 => return Some(true),
                    1 => picture = Some(false),
                    _ => {}
                }
            }
        }
        return picture;
    }
    None
}

/// The rows of the sub-planes of a frame in one buffer plane, as (rows per frame row count
/// divisor, bytes-per-line divisor): how a raw frame is laid out, for copying between buffers
/// whose strides or plane heights differ. `None` for formats not described here.
fn sub_planes(fourcc: FourCC) -> Option<&'static [(u32, u32)]> {
    const PACKED: &[(u32, u32)] = &[(1, 1)];
    const SEMI_420: &[(u32, u32)] = &[(1, 1), (2, 1)];
    const PLANAR_420: &[(u32, u32)] = &[(1, 1), (2, 2), (2, 2)];
    const SEMI_422: &[(u32, u32)] = &[(1, 1), (1, 1)];
    match &fourcc.0.to_le_bytes() {
        b"YUYV" | b"YVYU" | b"UYVY" | b"VYUY" | b"GREY" | b"RGB3" | b"BGR3" | b"RGB4" | b"BGR4"
        | b"XR24" | b"AR24" | b"BX24" | b"BA24" | b"RX24" | b"RA24" | b"XB24" | b"AB24" => {
            Some(PACKED)
        }
        b"NV12" | b"NV21" => Some(SEMI_420),
        b"NV16" | b"NV61" => Some(SEMI_422),
        b"YU12" | b"YV12" => Some(PLANAR_420),
        _ => None,
    }
}

/// How one plane of a raw frame sits in its buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlaneLayout {
    pub bytes_per_line: u32,
    /// Luma rows the buffer reserves before the chroma (the height, or more when the driver
    /// aligns it: bcm2835-codec reserves 1088 rows for 1080).
    pub rows: u32,
}

impl PlaneLayout {
    /// The layout a driver's format describes: the rows follow from its image size.
    pub fn of(fourcc: FourCC, height: u32, plane: &crate::v4l2::PlaneFormat) -> PlaneLayout {
        let rows = sub_planes(fourcc)
            .and_then(|subs| {
                // Bytes per luma row over all sub-planes, times 2 (4:2:0 chroma rows are halves).
                let per_row2: u64 = subs
                    .iter()
                    .map(|&(row_div, bpl_div)| {
                        2 * u64::from(plane.bytes_per_line / bpl_div) / u64::from(row_div)
                    })
                    .sum();
                let rows = u64::from(plane.size_image) * 2 / per_row2.max(1);
                u32::try_from(rows).ok()
            })
            .unwrap_or(height)
            .max(height);
        PlaneLayout {
            bytes_per_line: plane.bytes_per_line,
            rows,
        }
    }
}

/// Copies a raw frame of `height` rows between buffers of different layouts, sub-plane by
/// sub-plane and row by row. `Err` when the format's layout is not known or a buffer is short.
pub fn copy_frame(
    fourcc: FourCC,
    height: u32,
    src: &[u8],
    from: PlaneLayout,
    dst: &mut [u8],
    to: PlaneLayout,
) -> std::result::Result<usize, String> {
    if from == to {
        let room = dst.len();
        let dst = dst.get_mut(..src.len()).ok_or_else(|| {
            format!(
                "a {}-byte frame does not fit a {room}-byte buffer",
                src.len()
            )
        })?;
        dst.copy_from_slice(src);
        return Ok(src.len());
    }
    let subs = sub_planes(fourcc)
        .ok_or_else(|| format!("the layout of {fourcc} is not known, and the two sides' differ"))?;
    let (mut at_src, mut at_dst) = (0usize, 0usize);
    for &(row_div, bpl_div) in subs {
        let (src_bpl, dst_bpl) = (
            (from.bytes_per_line / bpl_div) as usize,
            (to.bytes_per_line / bpl_div) as usize,
        );
        let row = src_bpl.min(dst_bpl);
        for r in 0..(height / row_div) as usize {
            let s = src.get(at_src + r * src_bpl..at_src + r * src_bpl + row);
            let d = dst.get_mut(at_dst + r * dst_bpl..at_dst + r * dst_bpl + row);
            match (s, d) {
                (Some(s), Some(d)) => d.copy_from_slice(s),
                _ => return Err(format!("a {fourcc} frame does not fit its buffers")),
            }
        }
        at_src += src_bpl * (from.rows / row_div) as usize;
        at_dst += dst_bpl * (to.rows / row_div) as usize;
    }
    Ok(at_dst.min(dst.len()))
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

fn async_fd(device: Device, interest: Interest) -> Result<WatchedDevice> {
    let name = device.name().to_string();
    WatchedDevice::new(device, interest).map_err(|e| {
        Error::io(
            Fault::Ours,
            format!("{name}: cannot register with the event loop (outside a tokio runtime?)"),
            e,
        )
    })
}

fn has_control(device: &Device, id: u32) -> bool {
    device
        .query_control(id)
        .is_ok_and(|info| !info.is_disabled() && !info.is_read_only())
}

/// Whether a queue offers `fourcc` at the size, as a configuration error naming the offers.
fn raw_formats(device: &Device, buf_type: BufType) -> Result<Vec<FourCC>> {
    Ok(device
        .formats(buf_type)?
        .into_iter()
        .filter(|f| !f.is_compressed() && !f.is_emulated())
        .map(|f| f.fourcc)
        .collect())
}

/// Finds the encoder: the first M2M node whose CAPTURE side offers `codec` and whose OUTPUT side
/// accepts one of `raw` (the camera's raw formats).
fn find_encoder(camera: &Path, codec: FourCC, raw: &[FourCC]) -> Result<Device> {
    let mut seen = Vec::new();
    for path in video_nodes(Path::new("/dev"))? {
        if path == camera {
            continue;
        }
        let Ok(device) = Device::open(&path) else {
            continue;
        };
        let caps = device.capabilities().clone();
        if !caps.is_m2m() {
            continue;
        }
        let (Some(output), Some(capture)) = (caps.output_type(), caps.capture_type()) else {
            continue;
        };
        let coded = device.formats(capture).unwrap_or_default();
        if !coded.iter().any(|f| f.fourcc == codec) {
            seen.push(format!(
                "{} (produces {})",
                device.name(),
                coded
                    .iter()
                    .map(|f| f.fourcc.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            continue;
        }
        // The OUTPUT formats may depend on the coded format: set it first.
        let _ = device.set_format(capture, &Format::new(codec, 0, 0));
        let accepts = raw_formats(&device, output).unwrap_or_default();
        if accepts.iter().any(|f| raw.contains(f)) {
            return Ok(device);
        }
        seen.push(format!(
            "{} (encodes {codec} but takes none of the camera's formats)",
            device.name()
        ));
    }
    let seen = if seen.is_empty() {
        "there is no memory-to-memory device".to_string()
    } else {
        format!("memory-to-memory devices: {}", seen.join("; "))
    };
    Err(Error::config(format!(
        "no V4L2 encoder produces {codec} from {} ({seen}); name one with --encoder",
        camera.display()
    )))
}

impl EncoderSource {
    /// Opens and sets up both devices and starts streaming. Must be called inside a tokio
    /// runtime.
    pub fn open(settings: &EncoderSettings) -> Result<EncoderSource> {
        let camera = Device::open(&settings.camera)?;
        let cam_caps = camera.capabilities().clone();
        let cam_type = match cam_caps.capture_type() {
            Some(t) if !cam_caps.is_m2m() && cam_caps.has_streaming() => t,
            _ => {
                return Err(Error::config(format!(
                    "{} is not a streaming video capture device ({})",
                    camera.name(),
                    cam_caps.describe()
                )))
            }
        };
        let camera_raw = raw_formats(&camera, cam_type)?;
        let encoder = match &settings.encoder {
            Some(path) => Device::open(path)?,
            None => find_encoder(&settings.camera, settings.codec, &camera_raw)?,
        };
        let enc_caps = encoder.capabilities().clone();
        let (Some(out_type), Some(cod_type), true) = (
            enc_caps.output_type(),
            enc_caps.capture_type(),
            enc_caps.is_m2m(),
        ) else {
            return Err(Error::config(format!(
                "{} is not a memory-to-memory encoder ({})",
                encoder.name(),
                enc_caps.describe()
            )));
        };
        let name = format!("{} → {}", camera.name(), encoder.name());

        // The coded format first (dev-encoder.rst, Initialization 1).
        let coded_offers = encoder.formats(cod_type)?;
        if !coded_offers.iter().any(|f| f.fourcc == settings.codec) {
            let offers: Vec<Offer> = coded_offers
                .into_iter()
                .map(|format| Offer {
                    format,
                    sizes: Vec::new(),
                })
                .collect();
            return Err(Error::config(format!(
                "{}: does not encode {}; it produces {}",
                encoder.name(),
                settings.codec,
                summarize_offers(&offers)
            )));
        }
        let current = camera.get_format(cam_type)?;
        let (width, height) = settings.size.unwrap_or((current.width, current.height));
        encoder.set_format(cod_type, &Format::new(settings.codec, width, height))?;

        // The raw format both sides take.
        let encoder_raw = raw_formats(&encoder, out_type)?;
        let fits = |fourcc| {
            encoder
                .try_format(out_type, &Format::new(fourcc, width, height))
                .is_ok_and(|f| f.fourcc == fourcc && f.width == width && f.height == height)
        };
        let fourcc = choose_pixel_format(settings.pixel_format, &camera_raw, &encoder_raw, fits)
            .map_err(|why| Error::config(format!("{name}: {why}")))?;
        let cam_format = camera.negotiate(cam_type, fourcc, width, height)?;
        let camera_fps = match settings.fps {
            Some(fps) => camera.set_frame_rate(cam_type, fps)?,
            None => camera.frame_rate(cam_type)?,
        };
        let raw_format = encoder.negotiate(out_type, fourcc, width, height)?;
        let coded_format = encoder.get_format(cod_type)?;
        if coded_format.fourcc != settings.codec {
            return Err(Error::config(format!(
                "{}: asked for {} on its coded side, the driver chose {coded_format}",
                encoder.name(),
                settings.codec
            )));
        }
        let encoder_fps = match settings.fps.or(camera_fps) {
            Some(fps) => encoder.set_frame_rate(out_type, fps)?,
            None => None,
        };

        // Controls.
        let plan = plan_controls(
            settings,
            |id| has_control(&camera, id),
            |id| has_control(&encoder, id),
        )
        .map_err(|why| Error::config(format!("{name}: {why}")))?;
        let mut read_back = Vec::new();
        for control in &plan {
            let device = match control.target {
                Target::Camera => &camera,
                Target::Encoder => &encoder,
            };
            device.set_control(control.id, control.value)?;
            // Reading back is for the log and the tests: a write-only control, or one the
            // driver will not read, is no reason to stop.
            match device
                .query_control(control.id)
                .and_then(|info| Ok((info.name.clone(), device.get_control(control.id)?)))
            {
                Ok((name, value)) => read_back.push((control_key(&name), value)),
                Err(e) => log::debug!("{e} (reading a control back)"),
            }
        }
        let force_key_frame = encoder
            .query_control(sys::V4L2_CID_MPEG_VIDEO_FORCE_KEY_FRAME)
            .is_ok_and(|info| !info.is_disabled());
        if let Err(e) = encoder.subscribe_event(EventKind::Eos) {
            log::debug!("{e} (the LAST buffer flag ends a drain all the same)");
        }

        // Buffers: the camera's first, then the encoder's raw input, zero-copy if possible.
        let count = settings.buffers.clamp(2, 32);
        let mut frames = BufferQueue::new_mmap(&camera, cam_type, count)?;
        let raw = Self::raw_queue(
            settings,
            &camera,
            &encoder,
            out_type,
            &cam_format,
            &raw_format,
            &frames,
        )?;
        let coded_count = count
            .max(encoder.min_buffers(cod_type)?.unwrap_or(0))
            .max(2);
        let mut coded = BufferQueue::new_mmap(&encoder, cod_type, coded_count)?;
        if coded.num_planes() != 1 {
            return Err(Error::input(format!(
                "{}: its coded buffers have {} planes, expected 1",
                encoder.name(),
                coded.num_planes()
            )));
        }
        frames.queue_all()?;
        coded.queue_all()?;
        coded.stream_on()?;
        let mut raw = raw;
        match &mut raw {
            RawQueue::DmaBuf { queue, .. } => queue.stream_on()?,
            RawQueue::Copy { queue, .. } => queue.stream_on()?,
        }
        frames.stream_on()?;

        let path = match raw {
            RawQueue::DmaBuf { .. } => {
                "zero-copy: camera buffers exported as DMABUF into the encoder"
            }
            RawQueue::Copy { .. } => {
                "copy: each raw frame copied once into the encoder's MMAP buffers"
            }
        };
        let rate = |fps: Option<Fraction>| fps.map_or("unset".to_string(), |f| format!("{f} fps"));
        let mut description = format!(
            "{name}: {cam_format} ({} plane(s), {} bytes per line) at {} on the camera, {} on the encoder; \
             {coded_format} out; {path}; buffers: camera {}, encoder in {}, out {}",
            cam_format.planes.len(),
            cam_format.planes.first().map_or(0, |p| p.bytes_per_line),
            rate(camera_fps),
            rate(encoder_fps),
            frames.len(),
            raw.len(),
            coded.len()
        );
        if read_back.is_empty() {
            description.push_str("; no controls set");
        } else {
            let shown: Vec<String> = plan
                .iter()
                .zip(&read_back)
                .map(|(c, (key, value))| {
                    let on = match c.target {
                        Target::Camera => "camera",
                        Target::Encoder => "encoder",
                    };
                    format!("{key}={value} ({on}, asked {})", c.value)
                })
                .collect();
            description.push_str(&format!("; controls: {}", shown.join(", ")));
        }
        if !force_key_frame {
            description.push_str("; no force-key-frame control");
        }
        log::info!("{description}");

        Ok(EncoderSource {
            camera_poller: DevicePoller::new(&camera, PollFlags::POLLIN | PollFlags::POLLPRI)?,
            camera,
            encoder: async_fd(
                encoder,
                Interest::READABLE | Interest::WRITABLE | Interest::PRIORITY,
            )?,
            name,
            codec: settings.codec,
            frames,
            raw,
            coded,
            held: None,
            state: State::Running,
            description,
            read_back,
            force_key_frame,
            progress: true,
            woke: false,
            delivered: 0,
            idle_wakeups: 0,
            pollerr_since: None,
            dropped: 0,
        })
    }

    /// The encoder's raw input queue: DMABUF from the camera when possible, else MMAP.
    fn raw_queue(
        settings: &EncoderSettings,
        camera: &Device,
        encoder: &Device,
        out_type: BufType,
        cam_format: &Format,
        raw_format: &Format,
        frames: &BufferQueue<Mmap>,
    ) -> Result<RawQueue> {
        let zero_copy = || -> Result<std::result::Result<RawQueue, String>> {
            if !settings.dmabuf {
                return Ok(Err("DMABUF is turned off in the settings".into()));
            }
            let lengths = (0..frames.num_planes())
                .map(|p| frames.plane_length(0, p))
                .collect::<Result<Vec<u32>>>()?;
            if let Err(why) = layouts_match(cam_format, &lengths, raw_format) {
                return Ok(Err(why));
            }
            let mut exported = Vec::new();
            for index in 0..frames.len() {
                let mut planes = Vec::new();
                for plane in 0..frames.num_planes() {
                    match frames.export(index, plane) {
                        Ok(fd) => planes.push(fd),
                        Err(e) if e.fault() == Fault::Config => {
                            return Ok(Err(e.message().to_string()))
                        }
                        Err(e) => return Err(e),
                    }
                }
                exported.push(planes);
            }
            match BufferQueue::new_dmabuf(encoder, out_type, frames.len()) {
                Ok(queue)
                    if queue.len() >= frames.len() && queue.num_planes() == frames.num_planes() =>
                {
                    Ok(Ok(RawQueue::DmaBuf { queue, exported }))
                }
                Ok(queue) => Ok(Err(format!(
                    "the encoder gave {} DMABUF slots of {} planes for {} camera buffers of {}",
                    queue.len(),
                    queue.num_planes(),
                    frames.len(),
                    frames.num_planes()
                ))),
                Err(e) if e.fault() == Fault::Config => Ok(Err(e.message().to_string())),
                Err(e) => Err(e),
            }
        };
        match zero_copy()? {
            Ok(raw) => {
                log::info!(
                    "{} → {}: frames go to the encoder without a copy (DMABUF)",
                    camera.name(),
                    encoder.name()
                );
                Ok(raw)
            }
            Err(why) => {
                log::info!(
                    "{} → {}: frames are copied once into the encoder's buffers (no DMABUF: {why})",
                    camera.name(),
                    encoder.name()
                );
                let queue =
                    BufferQueue::new_mmap(encoder, out_type, settings.buffers.clamp(2, 32))?;
                if queue.num_planes() != frames.num_planes() {
                    return Err(Error::config(format!(
                        "{}: its raw buffers have {} planes, the camera's {}: choose another pixel format",
                        encoder.name(),
                        queue.num_planes(),
                        frames.num_planes()
                    )));
                }
                let (fourcc, height) = (cam_format.fourcc, cam_format.height);
                let layouts: Vec<(PlaneLayout, PlaneLayout)> = cam_format
                    .planes
                    .iter()
                    .zip(&raw_format.planes)
                    .map(|(cam, enc)| {
                        (
                            PlaneLayout::of(fourcc, height, cam),
                            PlaneLayout::of(fourcc, height, enc),
                        )
                    })
                    .collect();
                for (p, (from, to)) in layouts.iter().enumerate() {
                    if from != to && (sub_planes(fourcc).is_none() || queue.num_planes() > 1) {
                        return Err(Error::config(format!(
                            "{} → {}: plane {p} of {fourcc} is laid out as {from:?} on the camera and {to:?} \
                             in the encoder, and converting that is not supported; choose another size or \
                             pixel format",
                            camera.name(),
                            encoder.name(),
                        )));
                    }
                }
                if layouts.iter().any(|(from, to)| from != to) {
                    log::info!(
                        "{} → {}: the copy converts {layouts:?}",
                        camera.name(),
                        encoder.name()
                    );
                }
                Ok(RawQueue::Copy {
                    queue,
                    fourcc,
                    height,
                    layouts,
                })
            }
        }
    }

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

    /// Moves every ready raw frame from the camera into the encoder and recycles what the
    /// encoder is done with. Never blocks.
    fn pump(&mut self) -> Result<()> {
        // Events: only EOS is subscribed; reading them clears POLLPRI.
        while let Some(event) = self.encoder.device().dequeue_event()? {
            self.progress = true;
            if event != Event::Eos {
                log::debug!("{}: event {event:?}", self.name);
            }
        }
        // The encoder's raw buffers it is done with.
        while let Some(done) = self.raw.dequeue()? {
            self.progress = true;
            if let RawQueue::DmaBuf { .. } = self.raw {
                self.frames.queue(done.index, &[], None)?;
            }
        }
        // The camera's new frames.
        while let Some(frame) = self.frames.dequeue()? {
            self.progress = true;
            // An errored or empty frame (a USB hiccup) is not fed to the encoder: some drivers
            // take an empty OUTPUT buffer as the old end-of-stream signal.
            if frame.is_error() || frame.bytes_used() == 0 || self.state != State::Running {
                self.dropped += u64::from(!frame.is_error());
                self.frames.queue(frame.index, &[], None)?;
                continue;
            }
            match &mut self.raw {
                RawQueue::DmaBuf { queue, exported } => {
                    let fds = exported.get(frame.index as usize).ok_or_else(|| {
                        Error::input(format!(
                            "{}: the camera returned buffer {}, which was not exported",
                            self.name, frame.index
                        ))
                    })?;
                    let count = fds.len().min(frame.planes().len());
                    let (Some(first_fd), Some(_)) = (fds.first(), frame.planes().first()) else {
                        return Err(Error::input(format!(
                            "{}: the camera returned buffer {} without planes",
                            self.name, frame.index
                        )));
                    };
                    // On the stack: nothing is allocated per frame.
                    let placeholder = DmaBufPlane {
                        fd: first_fd.as_fd(),
                        bytes_used: 0,
                        data_offset: 0,
                        length: 0,
                    };
                    let mut planes = [placeholder; sys::VIDEO_MAX_PLANES];
                    for (p, slot) in planes.iter_mut().enumerate().take(count) {
                        let payload = frame.planes()[p];
                        *slot = DmaBufPlane {
                            fd: fds[p].as_fd(),
                            bytes_used: payload.bytes_used,
                            data_offset: payload.data_offset,
                            length: self.frames.plane_length(frame.index, p)?,
                        };
                    }
                    queue.queue_dmabuf(frame.index, &planes[..count], Some(frame.timestamp))?;
                }
                RawQueue::Copy {
                    queue,
                    fourcc,
                    height,
                    layouts,
                } => {
                    let Some(slot) = queue.free_buffer() else {
                        self.dropped += 1;
                        self.frames.queue(frame.index, &[], None)?;
                        continue;
                    };
                    let mut used = [0u32; sys::VIDEO_MAX_PLANES];
                    let planes = queue.num_planes();
                    for (p, used) in used.iter_mut().enumerate().take(planes) {
                        let src = self.frames.payload(&frame, p)?;
                        let dst = queue.plane_mut(slot, p)?;
                        let (from, to) = layouts.get(p).copied().ok_or_else(|| {
                            Error::ours(format!("{}: no layout for plane {p}", self.name))
                        })?;
                        let n = copy_frame(*fourcc, *height, src, from, dst, to)
                            .map_err(|why| Error::input(format!("{}: {why}", self.name)))?;
                        *used = n as u32;
                    }
                    queue.queue(slot, &used[..planes], Some(frame.timestamp))?;
                    self.frames.queue(frame.index, &[], None)?;
                }
            }
        }
        Ok(())
    }

    /// Requeues the coded buffer handed out by the last call, if any.
    fn release_held(&mut self) -> Result<()> {
        if let Some(index) = self.held.take() {
            self.coded.queue(index, &[], None)?;
        }
        Ok(())
    }

    /// The next coded buffer with data, skipping empty and corrupt ones. A LAST buffer moves
    /// the state to Stopped and ends the search.
    fn next_coded(&mut self) -> Result<Option<Dequeued>> {
        if matches!(self.state, State::Stopped) {
            return Ok(None);
        }
        while let Some(d) = self.coded.dequeue()? {
            self.progress = true;
            if d.is_last() {
                self.state = State::Stopped;
                if d.bytes_used() > 0 && !d.is_error() {
                    // The last frame is handed out; the buffer is requeued at resume.
                    return Ok(Some(d));
                }
                return Ok(None);
            }
            if d.bytes_used() == 0 || d.is_error() {
                self.coded.queue(d.index, &[], None)?;
                continue;
            }
            return Ok(Some(d));
        }
        Ok(None)
    }

    /// Moves every ready raw frame from the camera to the encoder, recycles buffers, and returns
    /// the next coded frame if one is ready. Never blocks. The frame's buffer is requeued at the
    /// next call.
    pub fn next_frame(&mut self) -> Result<Option<CodedFrame<'_>>> {
        self.release_held()?;
        self.pump()?;
        let Some(d) = self.next_coded()? else {
            return Ok(None);
        };
        self.delivered += 1;
        if !matches!(self.state, State::Stopped) {
            self.held = Some(d.index);
        }
        let data = self.coded.payload(&d, 0)?;
        let keyframe = d.is_keyframe() || payload_is_keyframe(self.codec, data) == Some(true);
        Ok(Some(CodedFrame {
            data,
            timestamp: d.timestamp,
            keyframe,
        }))
    }

    /// Whether every queue of a device is streaming with buffers queued (so POLLERR there is a
    /// failure, not an idle queue).
    fn fully_queued(&self, encoder: bool) -> bool {
        if encoder {
            self.state == State::Running
                && self.coded.queued_count() > 0
                && self.raw.queued_count() > 0
        } else {
            self.frames.queued_count() > 0
        }
    }

    /// Checks the devices for POLLERR after an idle wakeup; a persistent one with buffers queued
    /// is an error.
    fn check_pollerr(&mut self) -> Result<()> {
        let mut failing = None;
        for encoder in [false, true] {
            let device = if encoder {
                self.encoder.device()
            } else {
                &self.camera
            };
            let readiness = device.poll(Some(Duration::ZERO))?;
            if readiness.error && self.fully_queued(encoder) {
                failing = Some(device.name().to_string());
            }
        }
        match failing {
            None => self.pollerr_since = None,
            Some(device) => {
                let since = *self.pollerr_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= POLLERR_LIMIT {
                    return Err(Error::input(format!(
                        "{device} has reported an error (POLLERR) for {} s with buffers queued: the device failed",
                        POLLERR_LIMIT.as_secs()
                    )));
                }
            }
        }
        Ok(())
    }

    /// Resolves when [`EncoderSource::next_frame`] may have something: a device became readable
    /// or writable, an event arrived, or 1 s passed. Never busy-loops (see the module comment).
    pub async fn wait(&mut self) -> Result<()> {
        if self.progress {
            self.idle_wakeups = 0;
            self.pollerr_since = None;
        } else if self.woke {
            // The last wait returned on readiness and next_frame moved nothing. (A wait that was
            // cancelled by the caller's select! is not an idle wakeup.)
            self.idle_wakeups = self.idle_wakeups.saturating_add(1);
            self.check_pollerr()?;
            let pause = IDLE_PAUSE
                .saturating_mul(self.idle_wakeups)
                .min(IDLE_PAUSE_MAX);
            tokio::time::sleep(pause).await;
        }
        self.progress = false;
        self.woke = false;
        let all = Interest::READABLE | Interest::WRITABLE | Interest::PRIORITY;
        let io_error = |name: &str, e: std::io::Error| {
            Error::io(Fault::Input, format!("{name}: waiting for a buffer"), e)
        };
        tokio::select! {
            ready = self.camera_poller.wait() => {
                ready?;
            }
            ready = self.encoder.ready(all) => {
                let mut guard = ready.map_err(|e| io_error(self.encoder.device().name(), e))?;
                guard.clear_ready();
            }
            () = tokio::time::sleep(WAIT_CAP) => {}
        }
        self.woke = true;
        Ok(())
    }

    /// Whether [`EncoderSource::force_keyframe`] can ask for a keyframe.
    pub fn can_force_keyframe(&self) -> bool {
        self.force_key_frame
    }

    /// Asks for a keyframe as soon as possible (V4L2_CID_MPEG_VIDEO_FORCE_KEY_FRAME);
    /// `Ok(false)` when the encoder has no such control.
    pub fn force_keyframe(&mut self) -> Result<bool> {
        if !self.force_key_frame {
            return Ok(false);
        }
        self.encoder
            .device()
            .set_control(sys::V4L2_CID_MPEG_VIDEO_FORCE_KEY_FRAME, 1)?;
        Ok(true)
    }

    /// Drains the encoder (dev-encoder.rst, "Drain"): ENCODER_CMD STOP, then every coded frame
    /// up to the buffer flagged LAST, which are returned (copied). Camera frames arriving
    /// meanwhile are dropped. Afterwards no frames flow until [`EncoderSource::resume`].
    /// Fails when the LAST buffer has not come within `timeout`.
    pub async fn drain(&mut self, timeout: Duration) -> Result<Vec<DrainedFrame>> {
        match self.state {
            State::Stopped => return Ok(Vec::new()),
            State::Draining => {}
            State::Running => {
                self.release_held()?;
                self.encoder.device().encoder_command(EncoderCmd::Stop)?;
                self.state = State::Draining;
            }
        }
        let deadline = Instant::now() + timeout;
        let mut drained = Vec::new();
        loop {
            self.release_held()?;
            self.pump()?;
            while let Some(d) = self.next_coded()? {
                let data = self.coded.payload(&d, 0)?.to_vec();
                let keyframe =
                    d.is_keyframe() || payload_is_keyframe(self.codec, &data) == Some(true);
                drained.push(DrainedFrame {
                    data,
                    timestamp: d.timestamp,
                    keyframe,
                });
                if matches!(self.state, State::Stopped) {
                    break;
                }
                self.coded.queue(d.index, &[], None)?;
            }
            if matches!(self.state, State::Stopped) {
                // Clears the EOS event (POLLPRI).
                self.pump()?;
                return Ok(drained);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::input(format!(
                    "{}: the drain did not end within {} ms (no buffer flagged LAST)",
                    self.encoder.device().name(),
                    timeout.as_millis()
                )));
            }
            let _ = tokio::time::timeout(left, self.wait()).await;
        }
    }

    /// Starts the encoder again after a drain (ENCODER_CMD START): frames flow again.
    pub fn resume(&mut self) -> Result<()> {
        match self.state {
            State::Running => Ok(()),
            State::Draining => Err(Error::ours(format!(
                "{}: resume during a drain",
                self.encoder.device().name()
            ))),
            State::Stopped => {
                self.encoder.device().encoder_command(EncoderCmd::Start)?;
                // dev-encoder.rst allows START or STREAMOFF+STREAMON of the CAPTURE queue; both
                // are needed in practice: vicodec (6.1) clears its "last buffer dequeued" state
                // only on STREAMOFF (START finds it already stopped and skips that), and a frame
                // in flight at the STOP may complete after the LAST buffer. Restarting the queue
                // returns every coded buffer to us (the LAST one included) and clears both.
                self.coded.stream_off()?;
                self.coded.queue_all()?;
                self.coded.stream_on()?;
                self.state = State::Running;
                self.progress = true;
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v4l2::PlaneFormat;

    #[test]
    fn the_pixel_format_prefers_nv12_yu12_yuyv() {
        let camera = [FourCC::YUYV, FourCC::UYVY, FourCC::YU12, FourCC::NV12];
        let encoder = [FourCC::YU12, FourCC::NV12, FourCC::UYVY];
        assert_eq!(
            choose_pixel_format(None, &camera, &encoder, |_| true),
            Ok(FourCC::NV12)
        );
        assert_eq!(
            choose_pixel_format(None, &camera, &[FourCC::UYVY, FourCC::YUYV], |_| true),
            Ok(FourCC::YUYV)
        );
        // None of the preferred: the camera's order.
        assert_eq!(
            choose_pixel_format(
                None,
                &[FourCC::RGB3, FourCC::UYVY],
                &[FourCC::UYVY, FourCC::RGB3],
                |_| true
            ),
            Ok(FourCC::RGB3)
        );
        assert_eq!(
            choose_pixel_format(Some(FourCC::UYVY), &camera, &encoder, |_| false),
            Ok(FourCC::UYVY)
        );
    }

    #[test]
    fn a_pixel_format_nobody_shares_is_explained() {
        let err = choose_pixel_format(Some(FourCC::RGB3), &[FourCC::YUYV], &[FourCC::NV12], |_| {
            true
        })
        .unwrap_err();
        assert_eq!(
            err,
            "pixel format RGB3 is not offered by the camera; the camera offers YUYV, the encoder accepts NV12"
        );
        let err = choose_pixel_format(Some(FourCC::YUYV), &[FourCC::YUYV], &[FourCC::NV12], |_| {
            true
        })
        .unwrap_err();
        assert!(
            err.contains("not offered by the encoder's raw input"),
            "{err}"
        );
        let err = choose_pixel_format(None, &[FourCC::YUYV], &[], |_| true).unwrap_err();
        assert_eq!(
            err,
            "the camera and the encoder share no raw format; the camera offers YUYV, the encoder accepts nothing"
        );
    }

    #[test]
    fn a_format_the_encoder_takes_at_the_exact_size_wins() {
        let camera = [FourCC::YUYV, FourCC::YU12, FourCC::NV12];
        let encoder = [FourCC::YU12, FourCC::NV12, FourCC::YUYV];
        // vicodec aligns 4:2:0 heights to 8 (640x360 becomes 640x368): YUYV fits.
        assert_eq!(
            choose_pixel_format(None, &camera, &encoder, |f| f == FourCC::YUYV),
            Ok(FourCC::YUYV)
        );
        // Nothing fits exactly: the preferred one (negotiation then says what the driver chose).
        assert_eq!(
            choose_pixel_format(None, &camera, &encoder, |_| false),
            Ok(FourCC::NV12)
        );
    }

    #[test]
    fn keyframes_are_read_from_the_payload() {
        let mut fwht = vec![0x4f, 0x4f, 0x4f, 0x4f, 0xff, 0xff, 0xff, 0xff];
        fwht.extend_from_slice(&[0; 12]);
        fwht.extend_from_slice(&(1u32 << 10 | 3).to_be_bytes());
        let codec = FourCC::new(b"FWHT");
        assert_eq!(payload_is_keyframe(codec, &fwht), Some(true));
        fwht[22] = 0;
        assert_eq!(payload_is_keyframe(codec, &fwht), Some(false));
        assert_eq!(payload_is_keyframe(codec, &fwht[..22]), None);
        assert_eq!(payload_is_keyframe(codec, b"garbage garbage garbage"), None);
        let idr = [
            0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 1, 0x65, 0x88,
        ];
        assert_eq!(payload_is_keyframe(FourCC::H264, &idr), Some(true));
        assert_eq!(
            payload_is_keyframe(FourCC::H264, &[0, 0, 1, 0x41, 0x9a]),
            Some(false)
        );
        assert_eq!(
            payload_is_keyframe(FourCC::H264, &[0, 0, 1, 0x09, 0x10]),
            None
        );
        assert_eq!(payload_is_keyframe(FourCC::MJPG, &idr), None);
    }

    #[test]
    fn frames_are_copied_between_layouts() {
        use crate::v4l2::PlaneFormat;
        // A 4x2 NV12 frame: Y rows then one UV row; the encoder reserves 4 luma rows (aligned).
        let cam = PlaneFormat {
            bytes_per_line: 4,
            size_image: 12,
        };
        let enc = PlaneFormat {
            bytes_per_line: 8,
            size_image: 48,
        };
        let from = PlaneLayout::of(FourCC::NV12, 2, &cam);
        let to = PlaneLayout::of(FourCC::NV12, 2, &enc);
        assert_eq!(
            from,
            PlaneLayout {
                bytes_per_line: 4,
                rows: 2
            }
        );
        assert_eq!(
            to,
            PlaneLayout {
                bytes_per_line: 8,
                rows: 4
            }
        );
        let src: Vec<u8> = (1..=12).collect();
        let mut dst = vec![0u8; 48];
        let n = copy_frame(FourCC::NV12, 2, &src, from, &mut dst, to).unwrap();
        assert_eq!(n, 48);
        assert_eq!(&dst[0..8], &[1, 2, 3, 4, 0, 0, 0, 0]);
        assert_eq!(&dst[8..12], &[5, 6, 7, 8]);
        // The chroma starts after the 4 reserved luma rows.
        assert_eq!(&dst[32..36], &[9, 10, 11, 12]);
        assert!(dst[16..32].iter().all(|&b| b == 0));
        // The same layout: one copy.
        let mut same = vec![0u8; 12];
        assert_eq!(
            copy_frame(FourCC::NV12, 2, &src, from, &mut same, from),
            Ok(12)
        );
        assert_eq!(same, src);
        // A short buffer or an unknown layout is an error, not a panic.
        assert!(copy_frame(FourCC::NV12, 2, &src, from, &mut [0u8; 20], to).is_err());
        assert!(copy_frame(FourCC::MJPG, 2, &src, from, &mut dst, to).is_err());
        // YU12 640x480 in a 1088-row-style aligned buffer: rows from the image size.
        let pi = PlaneFormat {
            bytes_per_line: 640,
            size_image: 640 * 496 * 3 / 2,
        };
        assert_eq!(PlaneLayout::of(FourCC::YU12, 480, &pi).rows, 496);
    }

    fn settings() -> EncoderSettings {
        EncoderSettings::default()
    }

    #[test]
    fn controls_map_to_what_the_encoder_has() {
        let bcm2835 = [
            sys::V4L2_CID_MPEG_VIDEO_BITRATE,
            sys::V4L2_CID_MPEG_VIDEO_H264_I_PERIOD,
            sys::V4L2_CID_MPEG_VIDEO_H264_PROFILE,
            sys::V4L2_CID_MPEG_VIDEO_H264_LEVEL,
            sys::V4L2_CID_MPEG_VIDEO_REPEAT_SEQ_HEADER,
            sys::V4L2_CID_ROTATE,
            sys::V4L2_CID_HFLIP,
        ];
        let s = EncoderSettings {
            bitrate: Some(2_000_000),
            keyframe_interval_frames: Some(60),
            profile: Some(4),
            level: Some(11),
            rotate: Some(180),
            hflip: true,
            ..settings()
        };
        let camera = [sys::V4L2_CID_HFLIP];
        let plan =
            plan_controls(&s, |id| camera.contains(&id), |id| bcm2835.contains(&id)).unwrap();
        let enc = |id, value| PlannedControl {
            id,
            value,
            target: Target::Encoder,
        };
        assert_eq!(
            plan,
            vec![
                enc(sys::V4L2_CID_MPEG_VIDEO_REPEAT_SEQ_HEADER, 1),
                enc(sys::V4L2_CID_MPEG_VIDEO_BITRATE, 2_000_000),
                enc(sys::V4L2_CID_MPEG_VIDEO_H264_I_PERIOD, 60),
                enc(sys::V4L2_CID_MPEG_VIDEO_H264_PROFILE, 4),
                enc(sys::V4L2_CID_MPEG_VIDEO_H264_LEVEL, 11),
                // The camera lacks rotation: the encoder rotates.
                enc(sys::V4L2_CID_ROTATE, 180),
                PlannedControl {
                    id: sys::V4L2_CID_HFLIP,
                    value: 1,
                    target: Target::Camera
                },
            ]
        );
        // Nothing asked: only what late joiners need, and only if the encoder has it.
        assert_eq!(plan_controls(&settings(), |_| false, |_| false), Ok(vec![]));
    }

    #[test]
    fn vicodec_takes_the_keyframe_interval_as_gop_size() {
        let vicodec = [sys::V4L2_CID_MPEG_VIDEO_GOP_SIZE];
        let s = EncoderSettings {
            keyframe_interval_frames: Some(5),
            ..settings()
        };
        assert_eq!(
            plan_controls(&s, |_| false, |id| vicodec.contains(&id)),
            Ok(vec![PlannedControl {
                id: sys::V4L2_CID_MPEG_VIDEO_GOP_SIZE,
                value: 5,
                target: Target::Encoder
            }])
        );
        let both = [
            sys::V4L2_CID_MPEG_VIDEO_GOP_SIZE,
            sys::V4L2_CID_MPEG_VIDEO_H264_I_PERIOD,
        ];
        assert_eq!(
            plan_controls(&s, |_| false, |id| both.contains(&id))
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn settings_no_device_can_take_are_refused() {
        let err = plan_controls(
            &EncoderSettings {
                bitrate: Some(1_000_000),
                ..settings()
            },
            |_| true,
            |_| false,
        )
        .unwrap_err();
        assert!(err.contains("no bitrate control"), "{err}");
        let err = plan_controls(
            &EncoderSettings {
                keyframe_interval_frames: Some(30),
                ..settings()
            },
            |_| false,
            |_| false,
        )
        .unwrap_err();
        assert!(
            err.contains("neither an H.264 I-frame period nor a GOP size"),
            "{err}"
        );
        let err = plan_controls(
            &EncoderSettings {
                profile: Some(4),
                ..settings()
            },
            |_| false,
            |_| false,
        )
        .unwrap_err();
        assert!(err.starts_with("an H.264 profile (4)"), "{err}");
        let err = plan_controls(
            &EncoderSettings {
                vflip: true,
                ..settings()
            },
            |_| false,
            |_| false,
        )
        .unwrap_err();
        assert!(err.starts_with("vflip was asked for"), "{err}");
    }

    fn format(planes: &[(u32, u32)]) -> Format {
        Format {
            planes: planes
                .iter()
                .map(|&(bytes_per_line, size_image)| PlaneFormat {
                    bytes_per_line,
                    size_image,
                })
                .collect(),
            ..Format::new(FourCC::YU12, 640, 480)
        }
    }

    #[test]
    fn zero_copy_needs_the_same_layout() {
        let vivid = format(&[(640, 460_800)]);
        let vicodec = format(&[(640, 460_800)]);
        assert_eq!(layouts_match(&vivid, &[460_800], &vicodec), Ok(()));
        // bcm2835-codec aligns the height to 16: 1920x1088 lines for 1080p. A 1080-row camera
        // frame has its chroma 8 rows earlier, whatever the size of its buffers.
        let size = |w, h| Format {
            planes: vec![PlaneFormat {
                bytes_per_line: w,
                size_image: w * h * 3 / 2,
            }],
            ..Format::new(FourCC::NV12, 1920, 1080)
        };
        let (camera, pi) = (size(1920, 1080), size(1920, 1088));
        assert_eq!(
            layouts_match(&camera, &[1920 * 1080 * 3 / 2], &pi).unwrap_err(),
            "plane 0: the camera lays out 1080 rows, the encoder 1088"
        );
        assert_eq!(
            layouts_match(&camera, &[3_133_440], &pi).unwrap_err(),
            "plane 0: the camera lays out 1080 rows, the encoder 1088"
        );
        // A camera that pads to 1088 rows too shares its buffers.
        let padded = size(1920, 1088);
        assert_eq!(layouts_match(&padded, &[3_133_440], &pi), Ok(()));
        assert_eq!(
            layouts_match(&padded, &[3_000_000], &pi).unwrap_err(),
            "plane 0: the camera's buffers hold 3000000 bytes, the encoder needs 3133440"
        );
        let strided = format(&[(704, 704 * 480 * 3 / 2)]);
        assert!(layouts_match(&vivid, &[460_800], &strided)
            .unwrap_err()
            .contains("640 bytes apart, the encoder's 704"));
        let two = format(&[(640, 307_200), (640, 153_600)]);
        assert!(layouts_match(&vivid, &[460_800], &two)
            .unwrap_err()
            .contains("1 planes, the encoder's 2"));
    }
}
