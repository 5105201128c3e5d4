//! An open V4L2 device: capabilities, formats, frame sizes and intervals, format negotiation,
//! frame rate, controls, encoder commands and events. Buffers are in [`super::buffers`].
//!
//! The device is opened non-blocking, so DQBUF and DQEVENT never wait: readiness comes from
//! `poll` (POLLIN: a CAPTURE buffer is done; POLLOUT: an OUTPUT buffer is free; POLLPRI: an
//! event), through [`Device::poll`] or by registering [`Device::as_fd`] with tokio's `AsyncFd`.
//! Note that videobuf2 reports POLLERR for a capture queue that is not streaming or has no buffer
//! queued, so register the fd only once buffers are queued and streaming is on.

use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;
use nix::libc;
use nix::poll::{PollFd, PollFlags, PollTimeout};

use super::sys::{self, zeroed};
use super::{
    ioctl_error, BufType, ControlInfo, ControlType, EncoderCmd, Event, EventKind, FormatDesc,
    FourCC, Fraction, FrameInterval, FrameSize, MenuItem, PlaneFormat,
};
use crate::error::{Error, Fault, Result};

/// Most entries read from one enumeration: a driver that never says "no more" cannot make us
/// loop for ever.
const MAX_ENTRIES: u32 = 4096;
/// Most menu items queried per menu control.
const MAX_MENU_ITEMS: i64 = 256;

/// What QUERYCAP says about a device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capabilities {
    pub driver: String,
    pub card: String,
    pub bus_info: String,
    /// The kernel version (KERNEL_VERSION(a, b, c) = a << 16 | b << 8 | c).
    pub version: u32,
    /// The capabilities of the whole physical device.
    pub capabilities: u32,
    /// The capabilities of this node (`V4L2_CAP_*`), which is what matters.
    pub device_caps: u32,
}

impl Capabilities {
    pub fn from_raw(raw: &sys::v4l2_capability) -> Capabilities {
        let device_caps = if raw.capabilities & sys::V4L2_CAP_DEVICE_CAPS != 0 {
            raw.device_caps
        } else {
            raw.capabilities
        };
        Capabilities {
            driver: sys::c_str(&raw.driver),
            card: sys::c_str(&raw.card),
            bus_info: sys::c_str(&raw.bus_info),
            version: raw.version,
            capabilities: raw.capabilities,
            device_caps,
        }
    }

    fn has(&self, flags: u32) -> bool {
        self.device_caps & flags != 0
    }

    /// Memory-to-memory: an OUTPUT queue in and a CAPTURE queue out (an encoder, a scaler).
    pub fn is_m2m(&self) -> bool {
        self.has(sys::V4L2_CAP_VIDEO_M2M | sys::V4L2_CAP_VIDEO_M2M_MPLANE)
    }

    pub fn is_capture(&self) -> bool {
        self.capture_type().is_some()
    }

    pub fn is_output(&self) -> bool {
        self.output_type().is_some()
    }

    pub fn is_mplane(&self) -> bool {
        self.has(
            sys::V4L2_CAP_VIDEO_CAPTURE_MPLANE
                | sys::V4L2_CAP_VIDEO_OUTPUT_MPLANE
                | sys::V4L2_CAP_VIDEO_M2M_MPLANE,
        )
    }

    pub fn has_streaming(&self) -> bool {
        self.has(sys::V4L2_CAP_STREAMING)
    }

    /// The video capture queue, multi-planar if the node offers it.
    pub fn capture_type(&self) -> Option<BufType> {
        if self.has(sys::V4L2_CAP_VIDEO_CAPTURE_MPLANE | sys::V4L2_CAP_VIDEO_M2M_MPLANE) {
            Some(BufType::VideoCaptureMplane)
        } else if self.has(sys::V4L2_CAP_VIDEO_CAPTURE | sys::V4L2_CAP_VIDEO_M2M) {
            Some(BufType::VideoCapture)
        } else {
            None
        }
    }

    /// The video output queue, multi-planar if the node offers it.
    pub fn output_type(&self) -> Option<BufType> {
        if self.has(sys::V4L2_CAP_VIDEO_OUTPUT_MPLANE | sys::V4L2_CAP_VIDEO_M2M_MPLANE) {
            Some(BufType::VideoOutputMplane)
        } else if self.has(sys::V4L2_CAP_VIDEO_OUTPUT | sys::V4L2_CAP_VIDEO_M2M) {
            Some(BufType::VideoOutput)
        } else {
            None
        }
    }

    /// The video queues of this node: capture, then output.
    pub fn buf_types(&self) -> Vec<BufType> {
        self.capture_type()
            .into_iter()
            .chain(self.output_type())
            .collect()
    }

    /// `6.1.21`
    pub fn kernel_version(&self) -> String {
        format!(
            "{}.{}.{}",
            self.version >> 16,
            (self.version >> 8) & 0xff,
            self.version & 0xff
        )
    }

    /// `memory-to-memory, multi-planar, streaming`: what a person choosing a device needs.
    pub fn describe(&self) -> String {
        let mut parts: Vec<&str> = Vec::new();
        if self.is_m2m() {
            parts.push("memory-to-memory");
        } else {
            if self.is_capture() {
                parts.push("video capture");
            }
            if self.is_output() {
                parts.push("video output");
            }
        }
        if self.has(sys::V4L2_CAP_META_CAPTURE) {
            parts.push("metadata capture");
        }
        if self.has(sys::V4L2_CAP_META_OUTPUT) {
            parts.push("metadata output");
        }
        if parts.is_empty() {
            parts.push("no video queue");
        }
        if self.is_capture() || self.is_output() {
            parts.push(if self.is_mplane() {
                "multi-planar"
            } else {
                "single-planar"
            });
        }
        if self.has_streaming() {
            parts.push("streaming");
        }
        if self.has(sys::V4L2_CAP_READWRITE) {
            parts.push("read/write");
        }
        if self.has(sys::V4L2_CAP_IO_MC) {
            parts.push("configured through the media controller");
        }
        parts.join(", ")
    }
}

/// A format the device offers on a queue, with its frame sizes (empty when the driver does not
/// enumerate them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Offer {
    pub format: FormatDesc,
    pub sizes: Vec<FrameSize>,
}

/// What [`Device::poll`] found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Readiness {
    /// A CAPTURE buffer can be dequeued.
    pub capture: bool,
    /// An OUTPUT buffer can be dequeued (the device is done with it).
    pub output: bool,
    /// An event is pending.
    pub event: bool,
    /// POLLERR: a queue is not streaming or has nothing queued, or the device failed.
    pub error: bool,
}

/// An open V4L2 device node.
#[derive(Debug)]
pub struct Device {
    fd: OwnedFd,
    path: PathBuf,
    caps: Capabilities,
    /// `/dev/video0 (vivid)`, for messages.
    name: String,
}

impl Device {
    /// Opens a device node (read-write, non-blocking, close-on-exec) and asks what it is.
    pub fn open(path: &Path) -> Result<Device> {
        let shown = path.display();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => Error::io(
                    Fault::Config,
                    format!("{shown} does not exist (`v4l2rtmp devices` lists the devices)"),
                    e,
                ),
                // An input fault: at boot udev may not have set the node's group yet, and a
                // service that exits on it would not be restarted (exit 64 is final).
                io::ErrorKind::PermissionDenied => Error::io(
                    Fault::Input,
                    format!("cannot open {shown}: run v4l2rtmp as a user in the device's group (usually video)"),
                    e,
                ),
                _ => Error::io(Fault::Input, format!("cannot open {shown}"), e),
            })?;
        let fd = OwnedFd::from(file);
        let mut raw: sys::v4l2_capability = zeroed();
        match sys::querycap(fd.as_fd(), &mut raw) {
            Ok(()) => {}
            // ENOSYS: qemu-user, which does not translate V4L2 ioctls.
            Err(errno @ (Errno::ENOTTY | Errno::EINVAL | Errno::ENOSYS)) => {
                return Err(Error::io(
                    Fault::Config,
                    format!("{shown} is not a V4L2 device"),
                    errno.into(),
                ))
            }
            Err(errno) => return Err(ioctl_error(&shown.to_string(), "VIDIOC_QUERYCAP", errno)),
        }
        let caps = Capabilities::from_raw(&raw);
        let name = if caps.card.is_empty() {
            shown.to_string()
        } else {
            format!("{shown} ({})", caps.card)
        };
        Ok(Device {
            fd,
            path: path.to_path_buf(),
            caps,
            name,
        })
    }

    pub fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `/dev/video0 (vivid)`: how messages name the device.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    fn error(&self, what: &str, errno: Errno) -> Error {
        ioctl_error(&self.name, what, errno)
    }

    fn config_error(&self, message: impl std::fmt::Display) -> Error {
        Error::config(format!("{}: {message}", self.name))
    }

    /// The formats offered on a queue (ENUM_FMT).
    pub fn formats(&self, buf_type: BufType) -> Result<Vec<FormatDesc>> {
        let mut formats = Vec::new();
        for index in 0..MAX_ENTRIES {
            let mut raw: sys::v4l2_fmtdesc = zeroed();
            raw.index = index;
            raw.type_ = buf_type.raw();
            match sys::enum_fmt(self.as_fd(), &mut raw) {
                Ok(()) => formats.push(FormatDesc {
                    fourcc: FourCC(raw.pixelformat),
                    description: sys::c_str(&raw.description),
                    flags: raw.flags,
                }),
                Err(Errno::EINVAL) => break,
                Err(errno) => {
                    return Err(self.error(
                        &format!("listing the {} formats", buf_type.describe()),
                        errno,
                    ))
                }
            }
        }
        Ok(formats)
    }

    /// The frame sizes offered for a format (ENUM_FRAMESIZES); empty when the driver does not
    /// enumerate them (many encoders), in which case S_FMT is the only way to find out.
    pub fn frame_sizes(&self, fourcc: FourCC) -> Result<Vec<FrameSize>> {
        let mut sizes = Vec::new();
        for index in 0..MAX_ENTRIES {
            let mut raw: sys::v4l2_frmsizeenum = zeroed();
            raw.index = index;
            raw.pixel_format = fourcc.0;
            match sys::enum_framesizes(self.as_fd(), &mut raw) {
                Ok(()) => {}
                Err(Errno::EINVAL | Errno::ENOTTY) => break,
                Err(errno) => {
                    return Err(self.error(&format!("listing the frame sizes of {fourcc}"), errno))
                }
            }
            match raw.type_ {
                sys::V4L2_FRMSIZE_TYPE_DISCRETE => {
                    let d = raw.discrete();
                    sizes.push(FrameSize::Discrete {
                        width: d.width,
                        height: d.height,
                    });
                }
                sys::V4L2_FRMSIZE_TYPE_STEPWISE | sys::V4L2_FRMSIZE_TYPE_CONTINUOUS => {
                    let s = raw.stepwise();
                    let continuous = raw.type_ == sys::V4L2_FRMSIZE_TYPE_CONTINUOUS;
                    sizes.push(FrameSize::Stepwise {
                        min_width: s.min_width,
                        max_width: s.max_width,
                        step_width: if continuous { 1 } else { s.step_width },
                        min_height: s.min_height,
                        max_height: s.max_height,
                        step_height: if continuous { 1 } else { s.step_height },
                    });
                    // A range is the only entry.
                    break;
                }
                _ => break,
            }
        }
        Ok(sizes)
    }

    /// The frame intervals offered for a format at a size (ENUM_FRAMEINTERVALS); empty when the
    /// driver does not enumerate them.
    pub fn frame_intervals(
        &self,
        fourcc: FourCC,
        width: u32,
        height: u32,
    ) -> Result<Vec<FrameInterval>> {
        let mut intervals = Vec::new();
        for index in 0..MAX_ENTRIES {
            let mut raw: sys::v4l2_frmivalenum = zeroed();
            raw.index = index;
            raw.pixel_format = fourcc.0;
            raw.width = width;
            raw.height = height;
            match sys::enum_frameintervals(self.as_fd(), &mut raw) {
                Ok(()) => {}
                Err(Errno::EINVAL | Errno::ENOTTY) => break,
                Err(errno) => {
                    return Err(self.error(
                        &format!("listing the frame intervals of {fourcc} {width}x{height}"),
                        errno,
                    ))
                }
            }
            let fraction = |f: sys::v4l2_fract| Fraction::new(f.numerator, f.denominator);
            match raw.type_ {
                sys::V4L2_FRMIVAL_TYPE_DISCRETE => {
                    intervals.push(FrameInterval::Discrete(fraction(raw.discrete())))
                }
                sys::V4L2_FRMIVAL_TYPE_STEPWISE | sys::V4L2_FRMIVAL_TYPE_CONTINUOUS => {
                    let s = raw.stepwise();
                    intervals.push(FrameInterval::Stepwise {
                        min: fraction(s.min),
                        max: fraction(s.max),
                        step: fraction(s.step),
                    });
                    break;
                }
                _ => break,
            }
        }
        Ok(intervals)
    }

    /// Every format of a queue with its frame sizes.
    pub fn offers(&self, buf_type: BufType) -> Result<Vec<Offer>> {
        self.formats(buf_type)?
            .into_iter()
            .map(|format| {
                let sizes = self.frame_sizes(format.fourcc)?;
                Ok(Offer { format, sizes })
            })
            .collect()
    }

    /// The current format of a queue (G_FMT).
    pub fn get_format(&self, buf_type: BufType) -> Result<super::Format> {
        let mut raw: sys::v4l2_format = zeroed();
        raw.type_ = buf_type.raw();
        sys::g_fmt(self.as_fd(), &mut raw).map_err(|errno| {
            self.error(
                &format!("reading the {} format", buf_type.describe()),
                errno,
            )
        })?;
        Ok(format_from_raw(buf_type, &raw))
    }

    /// Sets the format of a queue (S_FMT) and returns what the driver chose, which may differ:
    /// drivers adjust sizes and strides and fall back to another format rather than fail.
    /// See [`Device::negotiate`] for a checked choice.
    pub fn set_format(&self, buf_type: BufType, format: &super::Format) -> Result<super::Format> {
        let mut raw = format_to_raw(buf_type, format);
        sys::s_fmt(self.as_fd(), &mut raw).map_err(|errno| match errno {
            Errno::EBUSY => self.config_error(format!(
                "cannot set the {} format {format}: the device is busy (streaming, or used by another program)",
                buf_type.describe()
            )),
            Errno::EINVAL => self.config_error(format!(
                "the {} format {format} was refused",
                buf_type.describe()
            )),
            _ => self.error(&format!("setting the {} format {format}", buf_type.describe()), errno),
        })?;
        Ok(format_from_raw(buf_type, &raw))
    }

    /// What the driver would choose for a format (TRY_FMT), changing nothing.
    pub fn try_format(&self, buf_type: BufType, format: &super::Format) -> Result<super::Format> {
        let mut raw = format_to_raw(buf_type, format);
        sys::try_fmt(self.as_fd(), &mut raw).map_err(|errno| {
            self.error(
                &format!("trying the {} format {format}", buf_type.describe()),
                errno,
            )
        })?;
        Ok(format_from_raw(buf_type, &raw))
    }

    /// Sets `fourcc` at `width`x`height` on a queue, after checking that the device offers it,
    /// and fails unless the driver took exactly that. The error says what the device offers.
    pub fn negotiate(
        &self,
        buf_type: BufType,
        fourcc: FourCC,
        width: u32,
        height: u32,
    ) -> Result<super::Format> {
        // Only the chosen format's sizes are needed, unless the format is missing and the error
        // lists what is offered instead.
        let formats = self.formats(buf_type)?;
        let offers = match formats.into_iter().find(|f| f.fourcc == fourcc) {
            Some(format) => vec![Offer {
                format,
                sizes: self.frame_sizes(fourcc)?,
            }],
            None => self.offers(buf_type)?,
        };
        check_offered(&self.name, buf_type, &offers, fourcc, width, height)?;
        let chosen = self.set_format(buf_type, &super::Format::new(fourcc, width, height))?;
        if chosen.fourcc != fourcc || chosen.width != width || chosen.height != height {
            return Err(self.config_error(format!(
                "asked for {fourcc} {width}x{height} on the {} queue, the driver chose {chosen}",
                buf_type.describe()
            )));
        }
        Ok(chosen)
    }

    /// The frame rate of a queue (G_PARM), if the driver has one.
    pub fn frame_rate(&self, buf_type: BufType) -> Result<Option<Fraction>> {
        let mut parm: sys::v4l2_streamparm = zeroed();
        parm.type_ = buf_type.raw();
        match sys::g_parm(self.as_fd(), &mut parm) {
            Ok(()) => {}
            Err(Errno::ENOTTY | Errno::EINVAL | Errno::ENODATA) => return Ok(None),
            Err(errno) => return Err(self.error("reading the frame rate", errno)),
        }
        let (capability, interval) = parm.timeperframe();
        // A 0/x or x/0 interval is no rate (a driver that does not know).
        if capability & sys::V4L2_CAP_TIMEPERFRAME == 0
            || interval.numerator == 0
            || interval.denominator == 0
        {
            return Ok(None);
        }
        Ok(Some(Fraction::new(
            interval.denominator,
            interval.numerator,
        )))
    }

    /// Sets the frame rate (frames per second, `fps.num / fps.den`) of a queue (S_PARM) and
    /// returns the rate the driver chose, or `None` if the driver has no settable frame rate.
    /// On an encoder's OUTPUT queue this is the rate the rate control assumes.
    pub fn set_frame_rate(&self, buf_type: BufType, fps: Fraction) -> Result<Option<Fraction>> {
        if fps.num == 0 || fps.den == 0 {
            return Err(
                self.config_error(format!("frame rate {}/{} is not a rate", fps.num, fps.den))
            );
        }
        let mut parm: sys::v4l2_streamparm = zeroed();
        parm.type_ = buf_type.raw();
        match sys::g_parm(self.as_fd(), &mut parm) {
            Ok(()) => {}
            Err(Errno::ENOTTY | Errno::EINVAL | Errno::ENODATA) => return Ok(None),
            Err(errno) => return Err(self.error("reading the frame rate", errno)),
        }
        let (capability, _) = parm.timeperframe();
        if capability & sys::V4L2_CAP_TIMEPERFRAME == 0 {
            return Ok(None);
        }
        parm.set_timeperframe(sys::v4l2_fract {
            numerator: fps.den,
            denominator: fps.num,
        });
        sys::s_parm(self.as_fd(), &mut parm).map_err(|errno| match errno {
            Errno::EBUSY => self.config_error("cannot change the frame rate while streaming"),
            _ => self.error(&format!("setting the frame rate to {fps} fps"), errno),
        })?;
        let (_, interval) = parm.timeperframe();
        if interval.numerator == 0 || interval.denominator == 0 {
            return Ok(None);
        }
        Ok(Some(Fraction::new(
            interval.denominator,
            interval.numerator,
        )))
    }

    /// Every control, class headings included, in the driver's order (QUERY_EXT_CTRL with
    /// NEXT_CTRL, or QUERYCTRL on drivers from before Linux 3.19), menus with their items.
    pub fn controls(&self) -> Result<Vec<ControlInfo>> {
        let mut controls = Vec::new();
        let mut id = 0u32;
        let next = sys::V4L2_CTRL_FLAG_NEXT_CTRL | sys::V4L2_CTRL_FLAG_NEXT_COMPOUND;
        for _ in 0..MAX_ENTRIES {
            let mut raw: sys::v4l2_query_ext_ctrl = zeroed();
            raw.id = id | next;
            match sys::query_ext_ctrl(self.as_fd(), &mut raw) {
                Ok(()) => {}
                Err(Errno::EINVAL) => break,
                Err(Errno::ENOTTY) => return self.controls_legacy(),
                Err(errno) => return Err(self.error("listing the controls", errno)),
            }
            if raw.id <= id && id != 0 {
                break; // a driver that does not advance
            }
            id = raw.id;
            controls.push(self.with_menu(info_from_ext(&raw))?);
        }
        Ok(controls)
    }

    fn controls_legacy(&self) -> Result<Vec<ControlInfo>> {
        let mut controls = Vec::new();
        let mut id = 0u32;
        for _ in 0..MAX_ENTRIES {
            let mut raw: sys::v4l2_queryctrl = zeroed();
            raw.id = id | sys::V4L2_CTRL_FLAG_NEXT_CTRL;
            match sys::queryctrl(self.as_fd(), &mut raw) {
                Ok(()) => {}
                Err(Errno::EINVAL | Errno::ENOTTY) => break,
                Err(errno) => return Err(self.error("listing the controls", errno)),
            }
            if raw.id <= id && id != 0 {
                break;
            }
            id = raw.id;
            controls.push(self.with_menu(info_from_legacy(&raw))?);
        }
        Ok(controls)
    }

    /// One control by id.
    pub fn query_control(&self, id: u32) -> Result<ControlInfo> {
        let mut raw: sys::v4l2_query_ext_ctrl = zeroed();
        raw.id = id;
        let info = match sys::query_ext_ctrl(self.as_fd(), &mut raw) {
            Ok(()) => info_from_ext(&raw),
            Err(Errno::ENOTTY) => {
                let mut raw: sys::v4l2_queryctrl = zeroed();
                raw.id = id;
                sys::queryctrl(self.as_fd(), &mut raw)
                    .map_err(|errno| self.control_query_error(id, errno))?;
                info_from_legacy(&raw)
            }
            Err(errno) => return Err(self.control_query_error(id, errno)),
        };
        self.with_menu(info)
    }

    fn control_query_error(&self, id: u32, errno: Errno) -> Error {
        match errno {
            Errno::EINVAL => self.config_error(format!(
                "has no control 0x{id:08x} (`v4l2rtmp devices` lists its controls)"
            )),
            _ => self.error(&format!("querying control 0x{id:08x}"), errno),
        }
    }

    fn with_menu(&self, mut info: ControlInfo) -> Result<ControlInfo> {
        if !matches!(info.kind, ControlType::Menu | ControlType::IntegerMenu) {
            return Ok(info);
        }
        let first = info.min.max(0);
        let last = info.max.min(first.saturating_add(MAX_MENU_ITEMS - 1));
        for index in first..=last {
            let Ok(index) = u32::try_from(index) else {
                break;
            };
            let mut raw: sys::v4l2_querymenu = zeroed();
            raw.id = info.id;
            raw.index = index;
            match sys::querymenu(self.as_fd(), &mut raw) {
                Ok(()) => {}
                Err(Errno::EINVAL) => continue, // a hole in the menu
                Err(errno) => {
                    return Err(self.error(&format!("listing the menu of {}", info.name), errno))
                }
            }
            let label = if info.kind == ControlType::IntegerMenu {
                raw.value().to_string()
            } else {
                sys::c_str(&raw.name())
            };
            info.menu.push(MenuItem { index, label });
        }
        Ok(info)
    }

    /// The current value of an integer, boolean, menu or bitmask control (G_EXT_CTRLS).
    pub fn get_control(&self, id: u32) -> Result<i64> {
        let info = self.query_control(id)?;
        if !info.kind.has_integer_value() {
            return Err(self.config_error(format!(
                "control {} is a {}, which has no integer value",
                info.name,
                info.kind.name()
            )));
        }
        let mut controls: [sys::v4l2_ext_control; 1] = [zeroed()];
        controls[0].id = id;
        match sys::g_ext_ctrls(self.as_fd(), sys::ctrl_id2which(id), &mut controls) {
            Ok(()) if info.kind == ControlType::Integer64 => Ok(controls[0].value64()),
            // A bitmask's 32 bits, not a negative number.
            Ok(()) if info.kind == ControlType::Bitmask => {
                Ok(i64::from(controls[0].value() as u32))
            }
            Ok(()) => Ok(i64::from(controls[0].value())),
            // Drivers from before the extended controls take only G_CTRL for user controls.
            Err((Errno::ENOTTY | Errno::EINVAL, _)) if info.kind != ControlType::Integer64 => {
                let mut raw = sys::v4l2_control { id, value: 0 };
                sys::g_ctrl(self.as_fd(), &mut raw)
                    .map_err(|errno| self.error(&format!("reading {}", info.name), errno))?;
                Ok(i64::from(raw.value))
            }
            Err((errno, _)) => Err(self.error(&format!("reading {}", info.name), errno)),
        }
    }

    /// Sets a control (S_EXT_CTRLS, in the control's own class: user, codec, camera...). The
    /// value is checked against the control's range and menu first, so the error can say what
    /// is accepted.
    pub fn set_control(&self, id: u32, value: i64) -> Result<()> {
        let info = self.query_control(id)?;
        if info.is_read_only() {
            return Err(self.config_error(format!("control {} is read-only", info.name)));
        }
        if !info.kind.has_integer_value() && info.kind != ControlType::Button {
            return Err(self.config_error(format!(
                "control {} is a {}, which cannot be set to a number",
                info.name,
                info.kind.name()
            )));
        }
        info.check_value(value).map_err(|accepted| {
            self.config_error(format!("{} = {value} is refused: {accepted}", info.name))
        })?;
        let mut controls: [sys::v4l2_ext_control; 1] = [zeroed()];
        controls[0].id = id;
        if info.kind == ControlType::Integer64 {
            controls[0].set_value64(value);
        } else {
            // check_value kept it within the control's 32-bit range; a bitmask's u32 bits
            // go through an i32 unchanged.
            controls[0].set_value(value as i32);
        }
        let refused = |errno: Errno| match errno {
            Errno::EBUSY => self.config_error(format!(
                "{} cannot be changed now (the device is busy or streaming)",
                info.name
            )),
            Errno::EINVAL | Errno::ERANGE => {
                self.config_error(format!("{} = {value} was refused by the driver", info.name))
            }
            Errno::EACCES => self.config_error(format!("control {} is read-only", info.name)),
            _ => self.error(&format!("setting {} to {value}", info.name), errno),
        };
        match sys::s_ext_ctrls(self.as_fd(), sys::ctrl_id2which(id), &mut controls) {
            Ok(()) => Ok(()),
            Err((Errno::ENOTTY, _)) if info.kind != ControlType::Integer64 => {
                let mut raw = sys::v4l2_control {
                    id,
                    value: value as i32,
                };
                sys::s_ctrl(self.as_fd(), &mut raw).map_err(refused)
            }
            Err((errno, _)) => Err(refused(errno)),
        }
    }

    /// The number of buffers the driver needs on a queue at least (MIN_BUFFERS_FOR_CAPTURE or
    /// _OUTPUT), if it says.
    pub fn min_buffers(&self, buf_type: BufType) -> Result<Option<u32>> {
        let id = if buf_type.is_output() {
            sys::V4L2_CID_MIN_BUFFERS_FOR_OUTPUT
        } else {
            sys::V4L2_CID_MIN_BUFFERS_FOR_CAPTURE
        };
        let mut controls: [sys::v4l2_ext_control; 1] = [zeroed()];
        controls[0].id = id;
        match sys::g_ext_ctrls(self.as_fd(), sys::ctrl_id2which(id), &mut controls) {
            Ok(()) => Ok(u32::try_from(controls[0].value()).ok()),
            Err((Errno::EINVAL | Errno::ENOTTY, _)) => Ok(None),
            Err((errno, _)) => Err(self.error("reading the minimum buffer count", errno)),
        }
    }

    /// ENCODER_CMD: start, or stop (drain) an encoder.
    pub fn encoder_command(&self, cmd: EncoderCmd) -> Result<()> {
        let mut raw: sys::v4l2_encoder_cmd = zeroed();
        raw.cmd = cmd.raw();
        sys::encoder_cmd(self.as_fd(), &mut raw).map_err(|errno| match errno {
            Errno::ENOTTY => self.config_error("is not an encoder (it has no encoder commands)"),
            Errno::EINVAL => {
                self.config_error(format!("does not support the encoder command {cmd:?}"))
            }
            _ => self.error(&format!("sending the encoder command {cmd:?}"), errno),
        })
    }

    /// SUBSCRIBE_EVENT; events are then read with [`Device::dequeue_event`] when `poll` reports
    /// POLLPRI.
    pub fn subscribe_event(&self, kind: EventKind) -> Result<()> {
        let mut raw: sys::v4l2_event_subscription = zeroed();
        raw.type_ = kind.raw();
        sys::subscribe_event(self.as_fd(), &mut raw).map_err(|errno| match errno {
            Errno::ENOTTY | Errno::EINVAL => {
                self.config_error(format!("does not send {kind:?} events"))
            }
            _ => self.error(&format!("subscribing to {kind:?} events"), errno),
        })
    }

    pub fn unsubscribe_event(&self, kind: EventKind) -> Result<()> {
        let mut raw: sys::v4l2_event_subscription = zeroed();
        raw.type_ = kind.raw();
        sys::unsubscribe_event(self.as_fd(), &mut raw)
            .map_err(|errno| self.error(&format!("unsubscribing from {kind:?} events"), errno))
    }

    /// DQEVENT: the next pending event, `None` if there is none.
    pub fn dequeue_event(&self) -> Result<Option<Event>> {
        let mut raw: sys::v4l2_event = zeroed();
        match sys::dqevent(self.as_fd(), &mut raw) {
            Ok(()) => {}
            Err(Errno::ENOENT | Errno::EAGAIN) => return Ok(None),
            Err(errno) => return Err(self.error("dequeuing an event", errno)),
        }
        Ok(Some(match raw.type_ {
            sys::V4L2_EVENT_EOS => Event::Eos,
            sys::V4L2_EVENT_SOURCE_CHANGE => Event::SourceChange {
                changes: raw.src_change().changes,
            },
            kind => Event::Other { kind },
        }))
    }

    /// Waits up to `timeout` (`None`: for ever) for a buffer or an event. Interrupted waits
    /// return no readiness.
    pub fn poll(&self, timeout: Option<Duration>) -> Result<Readiness> {
        let timeout = match timeout {
            None => PollTimeout::NONE,
            Some(t) => PollTimeout::try_from(t).unwrap_or(PollTimeout::MAX),
        };
        let mut fds = [PollFd::new(
            self.as_fd(),
            PollFlags::POLLIN | PollFlags::POLLOUT | PollFlags::POLLPRI,
        )];
        match nix::poll::poll(&mut fds, timeout) {
            Ok(_) => {}
            Err(Errno::EINTR) => return Ok(Readiness::default()),
            Err(errno) => return Err(self.error("waiting for a buffer", errno)),
        }
        let events = fds[0].revents().unwrap_or(PollFlags::empty());
        Ok(Readiness {
            capture: events.contains(PollFlags::POLLIN),
            output: events.contains(PollFlags::POLLOUT),
            event: events.contains(PollFlags::POLLPRI),
            error: events.intersects(PollFlags::POLLERR | PollFlags::POLLHUP | PollFlags::POLLNVAL),
        })
    }
}

impl AsFd for Device {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Device {
    /// For `tokio::io::unix::AsyncFd` (which wants `AsRawFd`); the fd stays owned by `self`.
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

fn info_from_ext(raw: &sys::v4l2_query_ext_ctrl) -> ControlInfo {
    ControlInfo {
        id: raw.id,
        name: sys::c_str(&raw.name),
        kind: ControlType::from_raw(raw.type_),
        min: raw.minimum,
        max: raw.maximum,
        step: raw.step,
        default: raw.default_value,
        flags: raw.flags,
        menu: Vec::new(),
    }
}

fn info_from_legacy(raw: &sys::v4l2_queryctrl) -> ControlInfo {
    ControlInfo {
        id: raw.id,
        name: sys::c_str(&raw.name),
        kind: ControlType::from_raw(raw.type_),
        min: i64::from(raw.minimum),
        max: i64::from(raw.maximum),
        step: u64::try_from(raw.step).unwrap_or(0),
        default: i64::from(raw.default_value),
        flags: raw.flags,
        menu: Vec::new(),
    }
}

/// A [`super::Format`] as a `v4l2_format` for S_FMT/TRY_FMT.
pub fn format_to_raw(buf_type: BufType, format: &super::Format) -> sys::v4l2_format {
    let mut raw: sys::v4l2_format = zeroed();
    raw.type_ = buf_type.raw();
    if buf_type.is_mplane() {
        let mp = raw.pix_mp_mut();
        mp.width = format.width;
        mp.height = format.height;
        mp.pixelformat = format.fourcc.0;
        mp.field = format.field;
        mp.colorspace = format.colorspace;
        let planes = &format.planes[..format.planes.len().min(sys::VIDEO_MAX_PLANES)];
        mp.num_planes = planes.len() as u8;
        for (slot, plane) in mp.plane_fmt.iter_mut().zip(planes) {
            slot.bytesperline = plane.bytes_per_line;
            slot.sizeimage = plane.size_image;
        }
    } else {
        let pix = raw.pix_mut();
        pix.width = format.width;
        pix.height = format.height;
        pix.pixelformat = format.fourcc.0;
        pix.field = format.field;
        pix.colorspace = format.colorspace;
        if let Some(plane) = format.planes.first() {
            pix.bytesperline = plane.bytes_per_line;
            pix.sizeimage = plane.size_image;
        }
    }
    raw
}

/// A `v4l2_format` from G_FMT/S_FMT/TRY_FMT as a [`super::Format`].
pub fn format_from_raw(buf_type: BufType, raw: &sys::v4l2_format) -> super::Format {
    if buf_type.is_mplane() {
        let mp = raw.pix_mp();
        let count = usize::from(mp.num_planes).min(sys::VIDEO_MAX_PLANES);
        let plane_fmt = mp.plane_fmt;
        let planes = plane_fmt[..count]
            .iter()
            .map(|p| PlaneFormat {
                bytes_per_line: p.bytesperline,
                size_image: p.sizeimage,
            })
            .collect();
        super::Format {
            fourcc: FourCC(mp.pixelformat),
            width: mp.width,
            height: mp.height,
            field: mp.field,
            colorspace: mp.colorspace,
            planes,
        }
    } else {
        let pix = raw.pix();
        super::Format {
            fourcc: FourCC(pix.pixelformat),
            width: pix.width,
            height: pix.height,
            field: pix.field,
            colorspace: pix.colorspace,
            planes: vec![PlaneFormat {
                bytes_per_line: pix.bytesperline,
                size_image: pix.sizeimage,
            }],
        }
    }
}

/// Most sizes listed per format in an error message.
const SIZES_IN_MESSAGE: usize = 6;

/// `YUYV at 640x480, 1280x720; MJPG at 1920x1080; H264 (sizes not listed)`
pub fn summarize_offers(offers: &[Offer]) -> String {
    let mut text = String::new();
    for (i, offer) in offers.iter().enumerate() {
        if i > 0 {
            text.push_str("; ");
        }
        let _ = write!(text, "{}", offer.format.fourcc);
        if offer.sizes.is_empty() {
            continue;
        }
        text.push_str(" at ");
        summarize_sizes(&mut text, &offer.sizes);
    }
    text
}

fn summarize_sizes(text: &mut String, sizes: &[FrameSize]) {
    for (i, size) in sizes.iter().take(SIZES_IN_MESSAGE).enumerate() {
        if i > 0 {
            text.push_str(", ");
        }
        let _ = write!(text, "{size}");
    }
    if sizes.len() > SIZES_IN_MESSAGE {
        let _ = write!(text, " and {} more", sizes.len() - SIZES_IN_MESSAGE);
    }
}

/// Whether a queue offers `fourcc` at `width`x`height`; the error (a configuration fault) says
/// what it offers instead. Sizes are only checked when the driver enumerates them.
pub fn check_offered(
    device: &str,
    buf_type: BufType,
    offers: &[Offer],
    fourcc: FourCC,
    width: u32,
    height: u32,
) -> Result<()> {
    let queue = buf_type.describe();
    let Some(offer) = offers.iter().find(|o| o.format.fourcc == fourcc) else {
        let offered = if offers.is_empty() {
            "it offers no format there".to_string()
        } else {
            format!("it offers {}", summarize_offers(offers))
        };
        return Err(Error::config(format!(
            "{device}: {fourcc} {width}x{height} is not offered on the {queue} queue; {offered}"
        )));
    };
    if offer.sizes.is_empty() || offer.sizes.iter().any(|s| s.contains(width, height)) {
        return Ok(());
    }
    let mut sizes = String::new();
    summarize_sizes(&mut sizes, &offer.sizes);
    Err(Error::config(format!(
        "{device}: {fourcc} is not offered at {width}x{height} on the {queue} queue; it offers {fourcc} at {sizes}"
    )))
}

#[cfg(test)]
mod tests {
    use super::super::Format;
    use super::*;

    fn offer(fourcc: FourCC, sizes: &[(u32, u32)]) -> Offer {
        Offer {
            format: FormatDesc {
                fourcc,
                description: String::new(),
                flags: 0,
            },
            sizes: sizes
                .iter()
                .map(|&(width, height)| FrameSize::Discrete { width, height })
                .collect(),
        }
    }

    #[test]
    fn a_missing_format_names_what_is_offered() {
        let offers = [
            offer(FourCC::YUYV, &[(640, 480), (1280, 720)]),
            offer(FourCC::NV12, &[(640, 480)]),
        ];
        let err = check_offered(
            "/dev/video0 (vivid)",
            BufType::VideoCapture,
            &offers,
            FourCC::H264,
            1920,
            1080,
        )
        .unwrap_err();
        assert_eq!(err.fault(), Fault::Config);
        assert_eq!(
            err.message(),
            "/dev/video0 (vivid): H264 1920x1080 is not offered on the capture queue; \
             it offers YUYV at 640x480, 1280x720; NV12 at 640x480"
        );
        let none = check_offered(
            "/dev/video9",
            BufType::VideoCapture,
            &[],
            FourCC::H264,
            1,
            1,
        )
        .unwrap_err();
        assert!(none.message().ends_with("it offers no format there"));
    }

    #[test]
    fn a_missing_size_names_the_sizes() {
        let sizes: Vec<(u32, u32)> = (1..=8).map(|i| (160 * i, 120 * i)).collect();
        let offers = [offer(FourCC::MJPG, &sizes)];
        assert!(check_offered("d", BufType::VideoCapture, &offers, FourCC::MJPG, 640, 480).is_ok());
        let err = check_offered(
            "d",
            BufType::VideoCapture,
            &offers,
            FourCC::MJPG,
            1920,
            1080,
        )
        .unwrap_err();
        assert_eq!(
            err.message(),
            "d: MJPG is not offered at 1920x1080 on the capture queue; it offers MJPG at \
             160x120, 320x240, 480x360, 640x480, 800x600, 960x720 and 2 more"
        );
    }

    #[test]
    fn unenumerated_or_stepwise_sizes_are_accepted_when_they_fit() {
        let mut encoder = offer(FourCC::NV12, &[]);
        assert!(check_offered(
            "e",
            BufType::VideoOutputMplane,
            std::slice::from_ref(&encoder),
            FourCC::NV12,
            1920,
            1080
        )
        .is_ok());
        encoder.sizes = vec![FrameSize::Stepwise {
            min_width: 32,
            max_width: 1920,
            step_width: 2,
            min_height: 32,
            max_height: 1920,
            step_height: 2,
        }];
        let offers = [encoder];
        assert!(check_offered(
            "e",
            BufType::VideoOutputMplane,
            &offers,
            FourCC::NV12,
            1280,
            720
        )
        .is_ok());
        let err = check_offered(
            "e",
            BufType::VideoOutputMplane,
            &offers,
            FourCC::NV12,
            3840,
            2160,
        )
        .unwrap_err();
        assert!(err
            .message()
            .ends_with("it offers NV12 at 32x32 to 1920x1920 in steps of 2x2"));
    }

    #[test]
    fn formats_round_trip_through_the_raw_structs() {
        let mut format = Format::new(FourCC::H264, 1920, 1080);
        format.planes = vec![PlaneFormat {
            bytes_per_line: 0,
            size_image: 512 * 1024,
        }];
        for buf_type in [BufType::VideoCapture, BufType::VideoCaptureMplane] {
            let raw = format_to_raw(buf_type, &format);
            assert_eq!(raw.type_, buf_type.raw());
            assert_eq!(format_from_raw(buf_type, &raw), format);
        }
        let raw = format_to_raw(BufType::VideoCaptureMplane, &format);
        assert_eq!(raw.pix_mp().num_planes, 1);
        let nv12 = Format::new(FourCC::NV12, 640, 480);
        let raw = format_to_raw(BufType::VideoOutputMplane, &nv12);
        assert_eq!(raw.pix_mp().num_planes, 0);
        assert_eq!(
            format_from_raw(BufType::VideoOutputMplane, &raw).planes,
            vec![]
        );
        // Single-planar always has its one plane.
        let single = format_from_raw(
            BufType::VideoOutput,
            &format_to_raw(BufType::VideoOutput, &nv12),
        );
        assert_eq!(single.planes.len(), 1);
    }

    fn caps(device_caps: u32) -> Capabilities {
        Capabilities::from_raw(&sys::v4l2_capability {
            driver: *b"bcm2835-codec\0\0\0",
            card: [0; 32],
            bus_info: [0; 32],
            version: 0x0006_0115,
            capabilities: device_caps | sys::V4L2_CAP_DEVICE_CAPS,
            device_caps,
            reserved: [0; 3],
        })
    }

    #[test]
    fn capabilities_choose_the_queues() {
        let encoder = caps(sys::V4L2_CAP_VIDEO_M2M_MPLANE | sys::V4L2_CAP_STREAMING);
        assert_eq!(encoder.driver, "bcm2835-codec");
        assert!(encoder.is_m2m() && encoder.is_mplane());
        assert_eq!(
            encoder.buf_types(),
            vec![BufType::VideoCaptureMplane, BufType::VideoOutputMplane]
        );
        assert_eq!(
            encoder.describe(),
            "memory-to-memory, multi-planar, streaming"
        );
        assert_eq!(encoder.kernel_version(), "6.1.21");

        let camera = caps(
            sys::V4L2_CAP_VIDEO_CAPTURE | sys::V4L2_CAP_STREAMING | sys::V4L2_CAP_EXT_PIX_FORMAT,
        );
        assert_eq!(camera.buf_types(), vec![BufType::VideoCapture]);
        assert!(!camera.is_m2m());
        assert_eq!(camera.describe(), "video capture, single-planar, streaming");

        let metadata = caps(sys::V4L2_CAP_META_CAPTURE | sys::V4L2_CAP_STREAMING);
        assert!(metadata.buf_types().is_empty());
        assert_eq!(metadata.describe(), "metadata capture, streaming");

        // Without DEVICE_CAPS the capabilities field describes the node.
        let mut raw: sys::v4l2_capability = zeroed();
        raw.capabilities = sys::V4L2_CAP_VIDEO_CAPTURE;
        assert!(Capabilities::from_raw(&raw).is_capture());
    }

    #[test]
    fn opening_something_that_is_not_a_device_is_explained() {
        let missing = Device::open(Path::new("/dev/video-does-not-exist")).unwrap_err();
        assert_eq!(missing.fault(), Fault::Config);
        assert!(missing.message().contains("does not exist"), "{missing}");
        let not_v4l2 = Device::open(Path::new("/dev/null")).unwrap_err();
        assert_eq!(not_v4l2.fault(), Fault::Config, "{not_v4l2}");
        assert_eq!(not_v4l2.message(), "/dev/null is not a V4L2 device");
    }
}
