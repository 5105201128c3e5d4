//! V4L2: cameras and memory-to-memory encoders, through a thin ioctl layer of our own.
//!
//! # Why our own layer
//!
//! The `v4l` crate has no multi-planar or memory-to-memory support, and the Raspberry Pi's H.264
//! encoder (`bcm2835-codec`, `/dev/video11`) is a multi-planar M2M device. `v4l2r` (ChromeOS)
//! supports both, but generates its bindings with bindgen (libclang at build time, awkward to
//! cross-compile for aarch64 musl and armv7 glibc) and brings a large API. So v4l2rtmp has a thin,
//! audited layer over `nix` (features `ioctl`, `mman`, `poll`): [`sys`] mirrors the structures of
//! `linux/videodev2.h` with `#[repr(C)]` and `nix::libc` types (so `time_t`, pointers and unions
//! have the target's layout, 32-bit armv7 included), and `tests/v4l2_layout.rs` checks every size,
//! the offsets that matter and every ioctl request code against values gcc printed from the real
//! header for x86_64, aarch64 and armv7.
//!
//! Unsafe code lives only here, in [`sys`] (the ioctl calls and union reads), [`buffers`]
//! (`mmap`, the slices over mapped memory) and [`watch`] (registering a device's fd with tokio);
//! every `unsafe` block says why it is sound. The rest
//! of the crate keeps `#![deny(unsafe_code)]`.
//!
//! # Modules
//!
//! - [`sys`]: structures, constants, request codes, one safe function per ioctl.
//! - [`device`]: [`Device`]: open, capabilities, formats, frame sizes and intervals, format
//!   negotiation, frame rate, controls, encoder commands, events.
//! - [`buffers`]: [`BufferQueue`]: REQBUFS, QUERYBUF + mmap, QBUF/DQBUF, STREAMON/OFF, EXPBUF,
//!   single- and multi-planar, MMAP or DMABUF memory (a type parameter).
//! - [`list`]: the `v4l2rtmp devices` report.
//! - [`watch`]: [`WatchedDevice`], a device whose readiness tokio watches.
//!
//! Errors name the device (`/dev/video0 (vivid)`), what was asked and, where it helps, what the
//! device offers. A device that disappears (ENODEV, EIO, ENXIO: unplugged, or its driver failed)
//! is a [`Fault::Input`] error that says so; a request the device does not support is a
//! [`Fault::Config`] error. EINTR is retried.

pub mod buffers;
pub mod device;
pub mod list;
pub mod sys;
pub mod watch;

use std::fmt;
use std::time::Duration;

use nix::errno::Errno;

use crate::error::{Error, Fault};

pub use buffers::{BufferQueue, Dequeued, DmaBuf, DmaBufPlane, Memory, Mmap, PlanePayload};
pub use device::{Capabilities, Device, Offer, Readiness};
pub use watch::WatchedDevice;

/// A V4L2 buffer type (the queues v4l2rtmp uses).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BufType {
    /// Frames from the device: a camera's pictures, an encoder's bitstream.
    VideoCapture,
    /// Frames to the device: raw pictures into an encoder.
    VideoOutput,
    VideoCaptureMplane,
    VideoOutputMplane,
}

impl BufType {
    pub fn raw(self) -> u32 {
        match self {
            BufType::VideoCapture => sys::V4L2_BUF_TYPE_VIDEO_CAPTURE,
            BufType::VideoOutput => sys::V4L2_BUF_TYPE_VIDEO_OUTPUT,
            BufType::VideoCaptureMplane => sys::V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE,
            BufType::VideoOutputMplane => sys::V4L2_BUF_TYPE_VIDEO_OUTPUT_MPLANE,
        }
    }

    pub fn is_mplane(self) -> bool {
        matches!(
            self,
            BufType::VideoCaptureMplane | BufType::VideoOutputMplane
        )
    }

    pub fn is_output(self) -> bool {
        matches!(self, BufType::VideoOutput | BufType::VideoOutputMplane)
    }

    /// "capture", "output", "capture (multi-planar)", "output (multi-planar)".
    pub fn describe(self) -> &'static str {
        match self {
            BufType::VideoCapture => "capture",
            BufType::VideoOutput => "output",
            BufType::VideoCaptureMplane => "capture (multi-planar)",
            BufType::VideoOutputMplane => "output (multi-planar)",
        }
    }
}

/// A pixel format code: four ASCII characters, little-endian (`v4l2_fourcc('H','2','6','4')`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FourCC(pub u32);

impl FourCC {
    pub const H264: FourCC = FourCC::new(b"H264");
    pub const MJPG: FourCC = FourCC::new(b"MJPG");
    pub const JPEG: FourCC = FourCC::new(b"JPEG");
    pub const YUYV: FourCC = FourCC::new(b"YUYV");
    pub const UYVY: FourCC = FourCC::new(b"UYVY");
    pub const NV12: FourCC = FourCC::new(b"NV12");
    pub const NV21: FourCC = FourCC::new(b"NV21");
    /// `V4L2_PIX_FMT_YUV420`, planar I420.
    pub const YU12: FourCC = FourCC::new(b"YU12");
    pub const YV12: FourCC = FourCC::new(b"YV12");
    pub const RGB3: FourCC = FourCC::new(b"RGB3");
    pub const BGR3: FourCC = FourCC::new(b"BGR3");

    /// `V4L2_PIX_FMT_FLAG_BE_FOURCC`: a big-endian variant of a format.
    const BIG_ENDIAN: u32 = 1 << 31;

    pub const fn new(code: &[u8; 4]) -> FourCC {
        FourCC(u32::from_le_bytes(*code))
    }

    /// Parses what a user types: 1 to 4 printable ASCII characters, padded with spaces as V4L2
    /// pads short codes (`Y8` is `Y8  `). An all-lowercase code is upper-cased (`h264`, `nv12`);
    /// a mixed-case one is taken as written, for the few codes with lowercase letters (`pRAA`).
    pub fn parse(text: &str) -> Option<FourCC> {
        let bytes = text.as_bytes();
        if bytes.is_empty() || bytes.len() > 4 || !bytes.iter().all(|b| b.is_ascii_graphic()) {
            return None;
        }
        let upper = !bytes.iter().any(|b| b.is_ascii_uppercase());
        let mut code = [b' '; 4];
        for (slot, &b) in code.iter_mut().zip(bytes) {
            *slot = if upper { b.to_ascii_uppercase() } else { b };
        }
        Some(FourCC::new(&code))
    }
}

impl fmt::Display for FourCC {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let code = (self.0 & !FourCC::BIG_ENDIAN).to_le_bytes();
        if !code.iter().all(|&b| b == b' ' || b.is_ascii_graphic()) {
            return write!(f, "0x{:08x}", self.0);
        }
        let text = std::str::from_utf8(&code).unwrap_or("????").trim_end();
        f.write_str(text)?;
        if self.0 & FourCC::BIG_ENDIAN != 0 {
            f.write_str("-BE")?;
        }
        Ok(())
    }
}

impl fmt::Debug for FourCC {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FourCC({self})")
    }
}

/// A fraction: a frame rate in frames per second, or a frame interval in seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Fraction {
    pub num: u32,
    pub den: u32,
}

impl Fraction {
    pub const fn new(num: u32, den: u32) -> Fraction {
        Fraction { num, den }
    }

    /// The reciprocal: a frame interval from a frame rate and the other way round.
    pub fn recip(self) -> Fraction {
        Fraction::new(self.den, self.num)
    }

    pub fn as_f64(self) -> f64 {
        if self.den == 0 {
            0.0
        } else {
            f64::from(self.num) / f64::from(self.den)
        }
    }
}

impl fmt::Display for Fraction {
    /// `30`, `29.97`, `7.5`: at most two decimals, trailing zeroes dropped; `?` for x/0.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.den == 0 {
            return f.write_str("?");
        }
        if self.num % self.den == 0 {
            return write!(f, "{}", self.num / self.den);
        }
        let text = format!("{:.2}", self.as_f64());
        f.write_str(text.trim_end_matches('0').trim_end_matches('.'))
    }
}

/// One entry of ENUM_FMT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FormatDesc {
    pub fourcc: FourCC,
    pub description: String,
    /// `V4L2_FMT_FLAG_*`.
    pub flags: u32,
}

impl FormatDesc {
    pub fn is_compressed(&self) -> bool {
        self.flags & sys::V4L2_FMT_FLAG_COMPRESSED != 0
    }

    /// Converted in software by libv4l or the driver, not native.
    pub fn is_emulated(&self) -> bool {
        self.flags & sys::V4L2_FMT_FLAG_EMULATED != 0
    }
}

/// One entry of ENUM_FRAMESIZES.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameSize {
    Discrete {
        width: u32,
        height: u32,
    },
    /// Any size in the ranges, in steps (CONTINUOUS is stepwise with steps of 1).
    Stepwise {
        min_width: u32,
        max_width: u32,
        step_width: u32,
        min_height: u32,
        max_height: u32,
        step_height: u32,
    },
}

impl FrameSize {
    /// Whether `width`x`height` is this size or within this range.
    pub fn contains(&self, width: u32, height: u32) -> bool {
        fn in_steps(v: u32, min: u32, max: u32, step: u32) -> bool {
            v >= min && v <= max && (step <= 1 || (v - min) % step == 0)
        }
        match *self {
            FrameSize::Discrete {
                width: w,
                height: h,
            } => w == width && h == height,
            FrameSize::Stepwise {
                min_width,
                max_width,
                step_width,
                min_height,
                max_height,
                step_height,
            } => {
                in_steps(width, min_width, max_width, step_width)
                    && in_steps(height, min_height, max_height, step_height)
            }
        }
    }

    /// The largest size: the discrete size itself, or the range's maximum.
    pub fn max(&self) -> (u32, u32) {
        match *self {
            FrameSize::Discrete { width, height } => (width, height),
            FrameSize::Stepwise {
                max_width,
                max_height,
                ..
            } => (max_width, max_height),
        }
    }
}

impl fmt::Display for FrameSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            FrameSize::Discrete { width, height } => write!(f, "{width}x{height}"),
            FrameSize::Stepwise {
                min_width,
                max_width,
                step_width,
                min_height,
                max_height,
                step_height,
            } => {
                write!(f, "{min_width}x{min_height} to {max_width}x{max_height}")?;
                if step_width > 1 || step_height > 1 {
                    write!(f, " in steps of {step_width}x{step_height}")?;
                }
                Ok(())
            }
        }
    }
}

/// One entry of ENUM_FRAMEINTERVALS, as intervals (seconds per frame).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameInterval {
    Discrete(Fraction),
    /// Any interval from `min` to `max` in steps of `step` (CONTINUOUS: any interval in the
    /// range).
    Stepwise {
        min: Fraction,
        max: Fraction,
        step: Fraction,
    },
}

impl fmt::Display for FrameInterval {
    /// As frame rates: `30 fps`, `1 to 30 fps`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            FrameInterval::Discrete(interval) => write!(f, "{} fps", interval.recip()),
            // The shortest interval is the highest rate.
            FrameInterval::Stepwise { min, max, .. } => {
                write!(f, "{} to {} fps", max.recip(), min.recip())
            }
        }
    }
}

/// The size and line stride of one plane.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlaneFormat {
    /// Bytes per line; 0 lets the driver choose (and for compressed formats it is 0).
    pub bytes_per_line: u32,
    /// Bytes in the plane; for a compressed format, the buffer size the driver allocates.
    pub size_image: u32,
}

/// A format (G/S/TRY_FMT), single- or multi-planar alike.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Format {
    pub fourcc: FourCC,
    pub width: u32,
    pub height: u32,
    /// `enum v4l2_field`: 0 (ANY) lets the driver choose; 1 (NONE) is progressive.
    pub field: u32,
    /// `enum v4l2_colorspace`; 0 lets the driver choose.
    pub colorspace: u32,
    /// One entry per plane (one for single-planar buffer types). Empty lets the driver choose.
    pub planes: Vec<PlaneFormat>,
}

impl Format {
    /// A format to ask for: the driver chooses field, colorspace, strides and sizes.
    pub fn new(fourcc: FourCC, width: u32, height: u32) -> Format {
        Format {
            fourcc,
            width,
            height,
            field: sys::V4L2_FIELD_ANY,
            colorspace: 0,
            planes: Vec::new(),
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}x{}", self.fourcc, self.width, self.height)
    }
}

/// The type of a control.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlType {
    Integer,
    Boolean,
    Menu,
    Button,
    Integer64,
    /// A class heading ("Codec Controls"), not a control.
    Class,
    String,
    Bitmask,
    IntegerMenu,
    /// Compound and newer types (arrays, areas, codec parameter structures).
    Other(u32),
}

impl ControlType {
    pub fn from_raw(raw: u32) -> ControlType {
        match raw {
            sys::V4L2_CTRL_TYPE_INTEGER => ControlType::Integer,
            sys::V4L2_CTRL_TYPE_BOOLEAN => ControlType::Boolean,
            sys::V4L2_CTRL_TYPE_MENU => ControlType::Menu,
            sys::V4L2_CTRL_TYPE_BUTTON => ControlType::Button,
            sys::V4L2_CTRL_TYPE_INTEGER64 => ControlType::Integer64,
            sys::V4L2_CTRL_TYPE_CTRL_CLASS => ControlType::Class,
            sys::V4L2_CTRL_TYPE_STRING => ControlType::String,
            sys::V4L2_CTRL_TYPE_BITMASK => ControlType::Bitmask,
            sys::V4L2_CTRL_TYPE_INTEGER_MENU => ControlType::IntegerMenu,
            other => ControlType::Other(other),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ControlType::Integer => "int",
            ControlType::Boolean => "bool",
            ControlType::Menu => "menu",
            ControlType::Button => "button",
            ControlType::Integer64 => "int64",
            ControlType::Class => "class",
            ControlType::String => "string",
            ControlType::Bitmask => "bitmask",
            ControlType::IntegerMenu => "intmenu",
            ControlType::Other(_) => "compound",
        }
    }

    /// Whether the control has a single integer value that G/S_EXT_CTRLS pass by value.
    pub fn has_integer_value(self) -> bool {
        matches!(
            self,
            ControlType::Integer
                | ControlType::Boolean
                | ControlType::Menu
                | ControlType::Integer64
                | ControlType::Bitmask
                | ControlType::IntegerMenu
        )
    }
}

/// One item of a menu control: its index and its name (MENU) or value (INTEGER_MENU).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MenuItem {
    pub index: u32,
    pub label: String,
}

/// A control (QUERY_EXT_CTRL, or QUERYCTRL on old drivers) and, for menus, its items.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControlInfo {
    pub id: u32,
    pub name: String,
    pub kind: ControlType,
    pub min: i64,
    pub max: i64,
    pub step: u64,
    pub default: i64,
    /// `V4L2_CTRL_FLAG_*`.
    pub flags: u32,
    /// Menu items, holes (indices the driver skips) left out. Empty for other types.
    pub menu: Vec<MenuItem>,
}

impl ControlInfo {
    pub fn is_read_only(&self) -> bool {
        self.flags & (sys::V4L2_CTRL_FLAG_READ_ONLY | sys::V4L2_CTRL_FLAG_GRABBED) != 0
    }

    pub fn is_write_only(&self) -> bool {
        self.flags & sys::V4L2_CTRL_FLAG_WRITE_ONLY != 0
    }

    pub fn is_disabled(&self) -> bool {
        self.flags & sys::V4L2_CTRL_FLAG_DISABLED != 0
    }

    pub fn is_inactive(&self) -> bool {
        self.flags & sys::V4L2_CTRL_FLAG_INACTIVE != 0
    }

    /// Whether the current value can be read as an integer.
    pub fn is_readable(&self) -> bool {
        self.kind.has_integer_value() && !self.is_write_only() && !self.is_disabled()
    }

    /// The menu item's label for a value, if this is a menu and the value one of its items.
    pub fn menu_label(&self, value: i64) -> Option<&str> {
        let index = u32::try_from(value).ok()?;
        self.menu
            .iter()
            .find(|item| item.index == index)
            .map(|item| item.label.as_str())
    }

    /// Checks a value against the control's range, step and menu; the error says what is
    /// accepted.
    pub fn check_value(&self, value: i64) -> std::result::Result<(), String> {
        match self.kind {
            ControlType::Button => return Ok(()),
            ControlType::Bitmask => {
                return match u32::try_from(value) {
                    Ok(bits) if u64::from(bits) & !(self.max as u64) == 0 => Ok(()),
                    _ => Err(format!("it accepts the bits 0x{:08x}", self.max)),
                }
            }
            ControlType::Menu | ControlType::IntegerMenu => {
                if self.menu_label(value).is_some() {
                    return Ok(());
                }
                let items: Vec<String> = self
                    .menu
                    .iter()
                    .map(|item| format!("{} ({})", item.index, item.label))
                    .collect();
                return Err(format!("it accepts {}", items.join(", ")));
            }
            _ => {}
        }
        let in_range = value >= self.min && value <= self.max;
        let on_step = self.step <= 1
            || (value.wrapping_sub(self.min) as u64) % self.step == 0
            || value == self.max;
        if in_range && on_step {
            return Ok(());
        }
        let mut accepted = format!("the range is {}..={}", self.min, self.max);
        if self.step > 1 {
            accepted.push_str(&format!(" in steps of {}", self.step));
        }
        Err(accepted)
    }
}

/// An encoder command (ENCODER_CMD).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncoderCmd {
    /// Start (again, after a stop): the encoder resumes taking OUTPUT buffers.
    Start,
    /// Drain: encode what was queued, mark the last CAPTURE buffer with `V4L2_BUF_FLAG_LAST`,
    /// send `V4L2_EVENT_EOS`, then DQBUF on CAPTURE fails with EPIPE.
    Stop,
    Pause,
    Resume,
}

impl EncoderCmd {
    pub fn raw(self) -> u32 {
        match self {
            EncoderCmd::Start => sys::V4L2_ENC_CMD_START,
            EncoderCmd::Stop => sys::V4L2_ENC_CMD_STOP,
            EncoderCmd::Pause => sys::V4L2_ENC_CMD_PAUSE,
            EncoderCmd::Resume => sys::V4L2_ENC_CMD_RESUME,
        }
    }
}

/// Events v4l2rtmp subscribes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// End of stream: the last buffer after [`EncoderCmd::Stop`].
    Eos,
    /// The source changed (a decoder's or HDMI input's resolution).
    SourceChange,
}

impl EventKind {
    pub fn raw(self) -> u32 {
        match self {
            EventKind::Eos => sys::V4L2_EVENT_EOS,
            EventKind::SourceChange => sys::V4L2_EVENT_SOURCE_CHANGE,
        }
    }
}

/// A dequeued event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    Eos,
    SourceChange {
        /// `V4L2_EVENT_SRC_CH_*` flags (1: the resolution changed).
        changes: u32,
    },
    /// An event type v4l2rtmp does not interpret.
    Other {
        kind: u32,
    },
}

/// The error for a failed ioctl: a vanished device is an input fault that says so, anything
/// else an input fault naming the device and what was asked.
pub(crate) fn ioctl_error(device: &str, what: &str, errno: Errno) -> Error {
    let source = std::io::Error::from(errno);
    match errno {
        Errno::ENODEV | Errno::ENXIO | Errno::EIO => Error::io(
            Fault::Input,
            format!("{device} disappeared or failed (unplugged, or its driver reported an error) while {what}"),
            source,
        ),
        _ => Error::io(Fault::Input, format!("{device}: {what} failed"), source),
    }
}

/// A V4L2 `timeval` as a duration (negative or out-of-range parts count as 0).
pub(crate) fn timeval_to_duration(tv: &nix::libc::timeval) -> Duration {
    let secs = u64::try_from(tv.tv_sec).unwrap_or(0);
    let micros = u32::try_from(tv.tv_usec).unwrap_or(0).min(999_999);
    Duration::new(secs, micros * 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fourcc_formats_like_v4l2_ctl() {
        assert_eq!(FourCC::H264.to_string(), "H264");
        assert_eq!(FourCC(0x3436_3248), FourCC::H264);
        assert_eq!(FourCC::new(b"Y8  ").to_string(), "Y8");
        assert_eq!(
            FourCC(FourCC::new(b"RGBP").0 | 1 << 31).to_string(),
            "RGBP-BE"
        );
        assert_eq!(FourCC(0x0102_0304).to_string(), "0x01020304");
        assert_eq!(format!("{:?}", FourCC::NV12), "FourCC(NV12)");
    }

    #[test]
    fn fourcc_parses_what_users_type() {
        assert_eq!(FourCC::parse("H264"), Some(FourCC::H264));
        assert_eq!(FourCC::parse("h264"), Some(FourCC::H264));
        assert_eq!(FourCC::parse("yuyv"), Some(FourCC::YUYV));
        assert_eq!(FourCC::parse("Y8"), Some(FourCC::new(b"Y8  ")));
        assert_eq!(FourCC::parse("pRAA"), Some(FourCC::new(b"pRAA")));
        assert_eq!(FourCC::parse(""), None);
        assert_eq!(FourCC::parse("H2645"), None);
        assert_eq!(FourCC::parse("H 64"), None);
        assert_eq!(FourCC::parse("H26é"), None);
    }

    #[test]
    fn fractions_display_as_rates() {
        assert_eq!(Fraction::new(30, 1).to_string(), "30");
        assert_eq!(Fraction::new(30000, 1001).to_string(), "29.97");
        assert_eq!(Fraction::new(15, 2).to_string(), "7.5");
        assert_eq!(Fraction::new(1, 0).to_string(), "?");
        assert_eq!(
            FrameInterval::Discrete(Fraction::new(1, 30)).to_string(),
            "30 fps"
        );
        assert_eq!(
            FrameInterval::Stepwise {
                min: Fraction::new(1, 60),
                max: Fraction::new(1, 1),
                step: Fraction::new(1, 1),
            }
            .to_string(),
            "1 to 60 fps"
        );
    }

    #[test]
    fn frame_sizes_contain_and_display() {
        let discrete = FrameSize::Discrete {
            width: 640,
            height: 480,
        };
        assert!(discrete.contains(640, 480));
        assert!(!discrete.contains(640, 360));
        assert_eq!(discrete.to_string(), "640x480");
        let stepwise = FrameSize::Stepwise {
            min_width: 32,
            max_width: 1920,
            step_width: 2,
            min_height: 32,
            max_height: 1920,
            step_height: 2,
        };
        assert!(stepwise.contains(1920, 1080));
        assert!(!stepwise.contains(1921, 1080));
        assert!(!stepwise.contains(16, 16));
        assert!(!stepwise.contains(4000, 1080));
        assert_eq!(stepwise.max(), (1920, 1920));
        assert_eq!(stepwise.to_string(), "32x32 to 1920x1920 in steps of 2x2");
        let continuous = FrameSize::Stepwise {
            min_width: 1,
            max_width: 100,
            step_width: 1,
            min_height: 1,
            max_height: 100,
            step_height: 1,
        };
        assert!(continuous.contains(77, 3));
        assert_eq!(continuous.to_string(), "1x1 to 100x100");
    }

    fn control(kind: ControlType, min: i64, max: i64, step: u64) -> ControlInfo {
        ControlInfo {
            id: sys::V4L2_CID_MPEG_VIDEO_BITRATE,
            name: "Video Bitrate".into(),
            kind,
            min,
            max,
            step,
            default: min,
            flags: 0,
            menu: Vec::new(),
        }
    }

    #[test]
    fn control_values_are_checked_against_range_step_and_menu() {
        let bitrate = control(ControlType::Integer, 25_000, 25_000_000, 25_000);
        assert!(bitrate.check_value(2_000_000).is_ok());
        assert!(bitrate.check_value(25_000_000).is_ok());
        assert_eq!(
            bitrate.check_value(50_000_000).unwrap_err(),
            "the range is 25000..=25000000 in steps of 25000"
        );
        assert!(bitrate.check_value(2_000_001).is_err());
        let mut profile = control(ControlType::Menu, 0, 4, 1);
        profile.menu = vec![
            MenuItem {
                index: 0,
                label: "Baseline".into(),
            },
            MenuItem {
                index: 2,
                label: "Main".into(),
            },
            MenuItem {
                index: 4,
                label: "High".into(),
            },
        ];
        assert!(profile.check_value(4).is_ok());
        assert_eq!(profile.menu_label(2), Some("Main"));
        assert_eq!(
            profile.check_value(1).unwrap_err(),
            "it accepts 0 (Baseline), 2 (Main), 4 (High)"
        );
        assert_eq!(profile.menu_label(-1), None);
        let extremes = control(ControlType::Integer64, i64::MIN, i64::MAX, 1);
        assert!(extremes.check_value(i64::MIN).is_ok());
        assert!(extremes.check_value(i64::MAX).is_ok());
        let button = control(ControlType::Button, 0, 0, 0);
        assert!(button.check_value(1).is_ok());
        let bits = control(ControlType::Bitmask, 0, 0x8000_0003, 0);
        assert!(bits.check_value(0x8000_0001).is_ok());
        assert_eq!(
            bits.check_value(4).unwrap_err(),
            "it accepts the bits 0x80000003"
        );
        assert!(bits.check_value(-1).is_err());
    }

    #[test]
    fn a_vanished_device_says_so() {
        let gone = ioctl_error(
            "/dev/video0 (uvcvideo)",
            "dequeuing a buffer",
            Errno::ENODEV,
        );
        assert_eq!(gone.fault(), Fault::Input);
        assert!(gone
            .message()
            .contains("/dev/video0 (uvcvideo) disappeared"));
        let other = ioctl_error("/dev/video0 (uvcvideo)", "VIDIOC_S_PARM", Errno::EINVAL);
        assert_eq!(
            other.to_string(),
            "input error: /dev/video0 (uvcvideo): VIDIOC_S_PARM failed: Invalid argument (os error 22)"
        );
    }

    #[test]
    fn timevals_become_durations() {
        let tv = nix::libc::timeval {
            tv_sec: 12,
            tv_usec: 345_678,
        };
        assert_eq!(timeval_to_duration(&tv), Duration::new(12, 345_678_000));
        let bad = nix::libc::timeval {
            tv_sec: -1,
            tv_usec: -5,
        };
        assert_eq!(timeval_to_duration(&bad), Duration::ZERO);
    }
}
