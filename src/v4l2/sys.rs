//! The raw V4L2 ABI: `#[repr(C)]` mirrors of the structures of `linux/videodev2.h`, the constants
//! v4l2rtmp uses, the ioctl request codes, and one safe function per ioctl.
//!
//! Layout rules, checked by `tests/v4l2_layout.rs` against values printed by gcc from the real
//! header for x86_64, aarch64 and 32-bit armv7:
//!
//! - `__u32`/`__s64`/... are Rust's fixed-size integers; `unsigned long`, pointers, `struct timeval`
//!   and `struct timespec` come from `nix::libc`, so their size follows the target's C library
//!   (32-bit `time_t` on armv7 glibc, 64-bit where the C library says so). The kernel accepts both
//!   time layouts: the size is encoded in the request code, which is computed from the Rust struct.
//! - Unions that contain pointers in C (`v4l2_format.fmt` holds `struct v4l2_window`) carry a
//!   zero-length pointer array so they get the pointer's alignment; unions with an `__s64` member
//!   (`v4l2_event.u`) carry a zero-length `u64` array.
//! - `__attribute__((packed))` structs are `#[repr(C, packed)]`.
//!
//! Safety: every ioctl goes through `ioctl`, an `unsafe fn` whose caller promises that the
//! argument has the type the request code names. The public wrappers below fix that type by their
//! signature and never hand the kernel a pointer other than to their own arguments: the pointer
//! fields (`v4l2_buffer.m.planes`, `v4l2_ext_controls.controls`) are set by the wrapper from a
//! slice it borrows for the duration of the call, `V4L2_MEMORY_USERPTR` (a user pointer the kernel
//! would write through) is refused, and extended controls are always passed by value (`size` 0),
//! never through a pointer. So the wrappers are safe functions.
#![allow(unsafe_code)]
#![allow(non_camel_case_types)]

use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use nix::errno::Errno;
use nix::libc::{self, c_int, c_ulong, c_void};

/// The type of an ioctl request code on this target (`c_ulong` with glibc, `c_int` with musl).
pub type Request = nix::sys::ioctl::ioctl_num_type;

// ---------------------------------------------------------------------------------------------
// Constants
// ---------------------------------------------------------------------------------------------

pub const VIDEO_MAX_PLANES: usize = 8;

// enum v4l2_buf_type
pub const V4L2_BUF_TYPE_VIDEO_CAPTURE: u32 = 1;
pub const V4L2_BUF_TYPE_VIDEO_OUTPUT: u32 = 2;
pub const V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE: u32 = 9;
pub const V4L2_BUF_TYPE_VIDEO_OUTPUT_MPLANE: u32 = 10;

// enum v4l2_memory
pub const V4L2_MEMORY_MMAP: u32 = 1;
pub const V4L2_MEMORY_USERPTR: u32 = 2;
pub const V4L2_MEMORY_DMABUF: u32 = 4;

// enum v4l2_field
pub const V4L2_FIELD_ANY: u32 = 0;
pub const V4L2_FIELD_NONE: u32 = 1;

// struct v4l2_capability: capabilities and device_caps
pub const V4L2_CAP_VIDEO_CAPTURE: u32 = 0x0000_0001;
pub const V4L2_CAP_VIDEO_OUTPUT: u32 = 0x0000_0002;
pub const V4L2_CAP_VIDEO_CAPTURE_MPLANE: u32 = 0x0000_1000;
pub const V4L2_CAP_VIDEO_OUTPUT_MPLANE: u32 = 0x0000_2000;
pub const V4L2_CAP_VIDEO_M2M_MPLANE: u32 = 0x0000_4000;
pub const V4L2_CAP_VIDEO_M2M: u32 = 0x0000_8000;
pub const V4L2_CAP_EXT_PIX_FORMAT: u32 = 0x0020_0000;
pub const V4L2_CAP_META_CAPTURE: u32 = 0x0080_0000;
pub const V4L2_CAP_READWRITE: u32 = 0x0100_0000;
pub const V4L2_CAP_STREAMING: u32 = 0x0400_0000;
pub const V4L2_CAP_META_OUTPUT: u32 = 0x0800_0000;
pub const V4L2_CAP_IO_MC: u32 = 0x2000_0000;
pub const V4L2_CAP_DEVICE_CAPS: u32 = 0x8000_0000;

// struct v4l2_fmtdesc: flags
pub const V4L2_FMT_FLAG_COMPRESSED: u32 = 0x0001;
pub const V4L2_FMT_FLAG_EMULATED: u32 = 0x0002;

// enum v4l2_frmsizetypes, enum v4l2_frmivaltypes
pub const V4L2_FRMSIZE_TYPE_DISCRETE: u32 = 1;
pub const V4L2_FRMSIZE_TYPE_CONTINUOUS: u32 = 2;
pub const V4L2_FRMSIZE_TYPE_STEPWISE: u32 = 3;
pub const V4L2_FRMIVAL_TYPE_DISCRETE: u32 = 1;
pub const V4L2_FRMIVAL_TYPE_CONTINUOUS: u32 = 2;
pub const V4L2_FRMIVAL_TYPE_STEPWISE: u32 = 3;

// struct v4l2_captureparm / v4l2_outputparm: capability
pub const V4L2_CAP_TIMEPERFRAME: u32 = 0x1000;

// struct v4l2_buffer: flags
pub const V4L2_BUF_FLAG_MAPPED: u32 = 0x0000_0001;
pub const V4L2_BUF_FLAG_QUEUED: u32 = 0x0000_0002;
pub const V4L2_BUF_FLAG_DONE: u32 = 0x0000_0004;
pub const V4L2_BUF_FLAG_KEYFRAME: u32 = 0x0000_0008;
pub const V4L2_BUF_FLAG_PFRAME: u32 = 0x0000_0010;
pub const V4L2_BUF_FLAG_BFRAME: u32 = 0x0000_0020;
pub const V4L2_BUF_FLAG_ERROR: u32 = 0x0000_0040;
pub const V4L2_BUF_FLAG_TIMESTAMP_MASK: u32 = 0x0000_e000;
pub const V4L2_BUF_FLAG_TIMESTAMP_MONOTONIC: u32 = 0x0000_2000;
pub const V4L2_BUF_FLAG_TIMESTAMP_COPY: u32 = 0x0000_4000;
pub const V4L2_BUF_FLAG_LAST: u32 = 0x0010_0000;

// enum v4l2_ctrl_type
pub const V4L2_CTRL_TYPE_INTEGER: u32 = 1;
pub const V4L2_CTRL_TYPE_BOOLEAN: u32 = 2;
pub const V4L2_CTRL_TYPE_MENU: u32 = 3;
pub const V4L2_CTRL_TYPE_BUTTON: u32 = 4;
pub const V4L2_CTRL_TYPE_INTEGER64: u32 = 5;
pub const V4L2_CTRL_TYPE_CTRL_CLASS: u32 = 6;
pub const V4L2_CTRL_TYPE_STRING: u32 = 7;
pub const V4L2_CTRL_TYPE_BITMASK: u32 = 8;
pub const V4L2_CTRL_TYPE_INTEGER_MENU: u32 = 9;

// control flags
pub const V4L2_CTRL_FLAG_DISABLED: u32 = 0x0001;
pub const V4L2_CTRL_FLAG_GRABBED: u32 = 0x0002;
pub const V4L2_CTRL_FLAG_READ_ONLY: u32 = 0x0004;
pub const V4L2_CTRL_FLAG_INACTIVE: u32 = 0x0010;
pub const V4L2_CTRL_FLAG_WRITE_ONLY: u32 = 0x0040;
pub const V4L2_CTRL_FLAG_VOLATILE: u32 = 0x0080;
pub const V4L2_CTRL_FLAG_HAS_PAYLOAD: u32 = 0x0100;
pub const V4L2_CTRL_FLAG_NEXT_CTRL: u32 = 0x8000_0000;
pub const V4L2_CTRL_FLAG_NEXT_COMPOUND: u32 = 0x4000_0000;

/// `V4L2_CTRL_ID2WHICH(id)`: the class of a control, as `v4l2_ext_controls.which`.
pub const fn ctrl_id2which(id: u32) -> u32 {
    id & 0x0fff_0000
}

// control classes and ids (linux/v4l2-controls.h)
pub const V4L2_CTRL_CLASS_USER: u32 = 0x0098_0000;
pub const V4L2_CTRL_CLASS_CODEC: u32 = 0x0099_0000;
pub const V4L2_CTRL_CLASS_CAMERA: u32 = 0x009a_0000;
pub const V4L2_CID_BASE: u32 = V4L2_CTRL_CLASS_USER | 0x900;
pub const V4L2_CID_CODEC_BASE: u32 = V4L2_CTRL_CLASS_CODEC | 0x900;
pub const V4L2_CID_HFLIP: u32 = V4L2_CID_BASE + 20;
pub const V4L2_CID_VFLIP: u32 = V4L2_CID_BASE + 21;
pub const V4L2_CID_ROTATE: u32 = V4L2_CID_BASE + 34;
pub const V4L2_CID_MIN_BUFFERS_FOR_CAPTURE: u32 = V4L2_CID_BASE + 39;
pub const V4L2_CID_MIN_BUFFERS_FOR_OUTPUT: u32 = V4L2_CID_BASE + 40;
pub const V4L2_CID_MPEG_VIDEO_GOP_SIZE: u32 = V4L2_CID_CODEC_BASE + 203;
pub const V4L2_CID_MPEG_VIDEO_BITRATE_MODE: u32 = V4L2_CID_CODEC_BASE + 206;
pub const V4L2_CID_MPEG_VIDEO_BITRATE: u32 = V4L2_CID_CODEC_BASE + 207;
pub const V4L2_CID_MPEG_VIDEO_HEADER_MODE: u32 = V4L2_CID_CODEC_BASE + 216;
pub const V4L2_CID_MPEG_VIDEO_REPEAT_SEQ_HEADER: u32 = V4L2_CID_CODEC_BASE + 226;
pub const V4L2_CID_MPEG_VIDEO_FORCE_KEY_FRAME: u32 = V4L2_CID_CODEC_BASE + 229;
pub const V4L2_CID_MPEG_VIDEO_H264_I_PERIOD: u32 = V4L2_CID_CODEC_BASE + 358;
pub const V4L2_CID_MPEG_VIDEO_H264_LEVEL: u32 = V4L2_CID_CODEC_BASE + 359;
pub const V4L2_CID_MPEG_VIDEO_H264_PROFILE: u32 = V4L2_CID_CODEC_BASE + 363;
pub const V4L2_CID_MPEG_VIDEO_PREPEND_SPSPPS_TO_IDR: u32 = V4L2_CID_CODEC_BASE + 644;

// encoder commands
pub const V4L2_ENC_CMD_START: u32 = 0;
pub const V4L2_ENC_CMD_STOP: u32 = 1;
pub const V4L2_ENC_CMD_PAUSE: u32 = 2;
pub const V4L2_ENC_CMD_RESUME: u32 = 3;

// events
pub const V4L2_EVENT_EOS: u32 = 2;
pub const V4L2_EVENT_CTRL: u32 = 3;
pub const V4L2_EVENT_SOURCE_CHANGE: u32 = 5;
pub const V4L2_EVENT_SRC_CH_RESOLUTION: u32 = 1;

// ---------------------------------------------------------------------------------------------
// Structures
// ---------------------------------------------------------------------------------------------

use crate::pod;
pub use crate::pod::{zeroed, Pod};

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct v4l2_capability {
    pub driver: [u8; 16],
    pub card: [u8; 32],
    pub bus_info: [u8; 32],
    pub version: u32,
    pub capabilities: u32,
    pub device_caps: u32,
    pub reserved: [u32; 3],
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct v4l2_fmtdesc {
    pub index: u32,
    pub type_: u32,
    pub flags: u32,
    pub description: [u8; 32],
    pub pixelformat: u32,
    pub mbus_code: u32,
    pub reserved: [u32; 3],
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct v4l2_frmsize_discrete {
    pub width: u32,
    pub height: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct v4l2_frmsize_stepwise {
    pub min_width: u32,
    pub max_width: u32,
    pub step_width: u32,
    pub min_height: u32,
    pub max_height: u32,
    pub step_height: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub union v4l2_frmsizeenum_u {
    pub discrete: v4l2_frmsize_discrete,
    pub stepwise: v4l2_frmsize_stepwise,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct v4l2_frmsizeenum {
    pub index: u32,
    pub pixel_format: u32,
    pub type_: u32,
    pub u: v4l2_frmsizeenum_u,
    pub reserved: [u32; 2],
}

impl v4l2_frmsizeenum {
    pub fn discrete(&self) -> v4l2_frmsize_discrete {
        // SAFETY: both union members are plain u32s; any bit pattern is valid.
        unsafe { self.u.discrete }
    }

    pub fn stepwise(&self) -> v4l2_frmsize_stepwise {
        // SAFETY: as above.
        unsafe { self.u.stepwise }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct v4l2_fract {
    pub numerator: u32,
    pub denominator: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct v4l2_frmival_stepwise {
    pub min: v4l2_fract,
    pub max: v4l2_fract,
    pub step: v4l2_fract,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub union v4l2_frmivalenum_u {
    pub discrete: v4l2_fract,
    pub stepwise: v4l2_frmival_stepwise,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct v4l2_frmivalenum {
    pub index: u32,
    pub pixel_format: u32,
    pub width: u32,
    pub height: u32,
    pub type_: u32,
    pub u: v4l2_frmivalenum_u,
    pub reserved: [u32; 2],
}

impl v4l2_frmivalenum {
    pub fn discrete(&self) -> v4l2_fract {
        // SAFETY: both union members are plain u32s; any bit pattern is valid.
        unsafe { self.u.discrete }
    }

    pub fn stepwise(&self) -> v4l2_frmival_stepwise {
        // SAFETY: as above.
        unsafe { self.u.stepwise }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct v4l2_pix_format {
    pub width: u32,
    pub height: u32,
    pub pixelformat: u32,
    pub field: u32,
    pub bytesperline: u32,
    pub sizeimage: u32,
    pub colorspace: u32,
    pub priv_: u32,
    pub flags: u32,
    /// `ycbcr_enc` or `hsv_enc` (a union of two `__u32`).
    pub ycbcr_enc: u32,
    pub quantization: u32,
    pub xfer_func: u32,
}

#[repr(C, packed)]
#[derive(Clone, Copy, Debug)]
pub struct v4l2_plane_pix_format {
    pub sizeimage: u32,
    pub bytesperline: u32,
    pub reserved: [u16; 6],
}

#[repr(C, packed)]
#[derive(Clone, Copy, Debug)]
pub struct v4l2_pix_format_mplane {
    pub width: u32,
    pub height: u32,
    pub pixelformat: u32,
    pub field: u32,
    pub colorspace: u32,
    pub plane_fmt: [v4l2_plane_pix_format; VIDEO_MAX_PLANES],
    pub num_planes: u8,
    pub flags: u8,
    /// `ycbcr_enc` or `hsv_enc` (a union of two `__u8`).
    pub ycbcr_enc: u8,
    pub quantization: u8,
    pub xfer_func: u8,
    pub reserved: [u8; 7],
}

#[repr(C)]
#[derive(Clone, Copy)]
pub union v4l2_format_fmt {
    pub pix: v4l2_pix_format,
    pub pix_mp: v4l2_pix_format_mplane,
    pub raw_data: [u8; 200],
    /// `struct v4l2_window` (a member in C) holds pointers: the union is pointer-aligned.
    _align: [*mut c_void; 0],
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct v4l2_format {
    pub type_: u32,
    pub fmt: v4l2_format_fmt,
}

impl v4l2_format {
    pub fn pix(&self) -> v4l2_pix_format {
        // SAFETY: every union member is plain integers; any bit pattern is a valid
        // v4l2_pix_format (which member the kernel filled in is the caller's concern).
        unsafe { self.fmt.pix }
    }

    pub fn pix_mut(&mut self) -> &mut v4l2_pix_format {
        // SAFETY: as above; the reference borrows `self` exclusively.
        unsafe { &mut self.fmt.pix }
    }

    pub fn pix_mp(&self) -> v4l2_pix_format_mplane {
        // SAFETY: as above.
        unsafe { self.fmt.pix_mp }
    }

    pub fn pix_mp_mut(&mut self) -> &mut v4l2_pix_format_mplane {
        // SAFETY: as above; v4l2_pix_format_mplane is packed (alignment 1), so the reference is
        // aligned wherever it points.
        unsafe { &mut self.fmt.pix_mp }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct v4l2_captureparm {
    pub capability: u32,
    pub capturemode: u32,
    pub timeperframe: v4l2_fract,
    pub extendedmode: u32,
    pub readbuffers: u32,
    pub reserved: [u32; 4],
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct v4l2_outputparm {
    pub capability: u32,
    pub outputmode: u32,
    pub timeperframe: v4l2_fract,
    pub extendedmode: u32,
    pub writebuffers: u32,
    pub reserved: [u32; 4],
}

#[repr(C)]
#[derive(Clone, Copy)]
pub union v4l2_streamparm_parm {
    pub capture: v4l2_captureparm,
    pub output: v4l2_outputparm,
    pub raw_data: [u8; 200],
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct v4l2_streamparm {
    pub type_: u32,
    pub parm: v4l2_streamparm_parm,
}

impl v4l2_streamparm {
    /// The capture and output members have the same layout (capability, mode, timeperframe):
    /// `(capability, timeperframe)` of whichever the type says.
    pub fn timeperframe(&self) -> (u32, v4l2_fract) {
        // SAFETY: both members are plain integers with identical layouts.
        let p = unsafe { self.parm.capture };
        (p.capability, p.timeperframe)
    }

    pub fn set_timeperframe(&mut self, interval: v4l2_fract) {
        // Writing a union field is safe; both members put timeperframe at the same place.
        self.parm.capture.timeperframe = interval;
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct v4l2_requestbuffers {
    pub count: u32,
    pub type_: u32,
    pub memory: u32,
    pub capabilities: u32,
    pub flags: u8,
    pub reserved: [u8; 3],
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct v4l2_timecode {
    pub type_: u32,
    pub flags: u32,
    pub frames: u8,
    pub seconds: u8,
    pub minutes: u8,
    pub hours: u8,
    pub userbits: [u8; 4],
}

#[repr(C)]
#[derive(Clone, Copy)]
pub union v4l2_plane_m {
    pub mem_offset: u32,
    pub userptr: c_ulong,
    pub fd: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct v4l2_plane {
    pub bytesused: u32,
    pub length: u32,
    pub m: v4l2_plane_m,
    pub data_offset: u32,
    pub reserved: [u32; 11],
}

impl v4l2_plane {
    pub fn mem_offset(&self) -> u32 {
        // SAFETY: the union's members are integers; any bit pattern is valid.
        unsafe { self.m.mem_offset }
    }

    pub fn fd(&self) -> i32 {
        // SAFETY: as above.
        unsafe { self.m.fd }
    }
}

#[repr(C)]
#[derive(Clone, Copy)]
pub union v4l2_buffer_m {
    pub offset: u32,
    pub userptr: c_ulong,
    pub planes: *mut v4l2_plane,
    pub fd: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct v4l2_buffer {
    pub index: u32,
    pub type_: u32,
    pub bytesused: u32,
    pub flags: u32,
    pub field: u32,
    pub timestamp: libc::timeval,
    pub timecode: v4l2_timecode,
    pub sequence: u32,
    pub memory: u32,
    pub m: v4l2_buffer_m,
    pub length: u32,
    pub reserved2: u32,
    /// `request_fd` or `reserved` (a union of two 32-bit integers).
    pub request_fd: i32,
}

impl v4l2_buffer {
    pub fn offset(&self) -> u32 {
        // SAFETY: reading the u32 member of a union of integers and a pointer: any bit pattern
        // is a valid u32.
        unsafe { self.m.offset }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct v4l2_exportbuffer {
    pub type_: u32,
    pub index: u32,
    pub plane: u32,
    pub flags: u32,
    pub fd: i32,
    pub reserved: [u32; 11],
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct v4l2_control {
    pub id: u32,
    pub value: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct v4l2_queryctrl {
    pub id: u32,
    pub type_: u32,
    pub name: [u8; 32],
    pub minimum: i32,
    pub maximum: i32,
    pub step: i32,
    pub default_value: i32,
    pub flags: u32,
    pub reserved: [u32; 2],
}

pub const V4L2_CTRL_MAX_DIMS: usize = 4;

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct v4l2_query_ext_ctrl {
    pub id: u32,
    pub type_: u32,
    pub name: [u8; 32],
    pub minimum: i64,
    pub maximum: i64,
    pub step: u64,
    pub default_value: i64,
    pub flags: u32,
    pub elem_size: u32,
    pub elems: u32,
    pub nr_of_dims: u32,
    pub dims: [u32; V4L2_CTRL_MAX_DIMS],
    pub reserved: [u32; 32],
}

#[repr(C)]
#[derive(Clone, Copy)]
pub union v4l2_querymenu_u {
    pub name: [u8; 32],
    pub value: i64,
}

#[repr(C, packed)]
#[derive(Clone, Copy)]
pub struct v4l2_querymenu {
    pub id: u32,
    pub index: u32,
    pub u: v4l2_querymenu_u,
    pub reserved: u32,
}

impl v4l2_querymenu {
    pub fn name(&self) -> [u8; 32] {
        // SAFETY: a by-value read (no reference into the packed struct) of a union of integers.
        unsafe { self.u.name }
    }

    pub fn value(&self) -> i64 {
        // SAFETY: as above.
        unsafe { self.u.value }
    }
}

#[repr(C)]
#[derive(Clone, Copy)]
pub union v4l2_ext_control_u {
    pub value: i32,
    pub value64: i64,
    /// `char *string`, `__u8 *p_u8`, ...: never used here (controls go by value).
    pub ptr: *mut c_void,
}

#[repr(C, packed)]
#[derive(Clone, Copy)]
pub struct v4l2_ext_control {
    pub id: u32,
    pub size: u32,
    pub reserved2: [u32; 1],
    pub u: v4l2_ext_control_u,
}

impl v4l2_ext_control {
    pub fn value(&self) -> i32 {
        // SAFETY: a by-value read of an integer member; any bit pattern is valid.
        unsafe { self.u.value }
    }

    pub fn value64(&self) -> i64 {
        // SAFETY: as above.
        unsafe { self.u.value64 }
    }

    pub fn set_value(&mut self, value: i32) {
        self.u = v4l2_ext_control_u { value };
    }

    pub fn set_value64(&mut self, value64: i64) {
        self.u = v4l2_ext_control_u { value64 };
    }
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct v4l2_ext_controls {
    /// `ctrl_class` or `which` (a union of two `__u32`).
    pub which: u32,
    pub count: u32,
    pub error_idx: u32,
    pub request_fd: i32,
    pub reserved: [u32; 1],
    pub controls: *mut v4l2_ext_control,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct v4l2_encoder_cmd {
    pub cmd: u32,
    pub flags: u32,
    /// `union { struct { __u32 data[8]; } raw; }`
    pub raw: [u32; 8],
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct v4l2_event_src_change {
    pub changes: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub union v4l2_event_u {
    pub src_change: v4l2_event_src_change,
    pub data: [u8; 64],
    /// `struct v4l2_event_ctrl` (a member in C) holds an `__s64`: the union is 8-aligned.
    _align: [u64; 0],
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct v4l2_event {
    pub type_: u32,
    pub u: v4l2_event_u,
    pub pending: u32,
    pub sequence: u32,
    pub timestamp: libc::timespec,
    pub id: u32,
    pub reserved: [u32; 8],
}

impl v4l2_event {
    pub fn src_change(&self) -> v4l2_event_src_change {
        // SAFETY: the union's members are integers; any bit pattern is valid.
        unsafe { self.u.src_change }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct v4l2_event_subscription {
    pub type_: u32,
    pub id: u32,
    pub flags: u32,
    pub reserved: [u32; 5],
}

pod!(
    v4l2_capability,
    v4l2_fmtdesc,
    v4l2_frmsizeenum,
    v4l2_frmivalenum,
    v4l2_fract,
    v4l2_pix_format,
    v4l2_plane_pix_format,
    v4l2_pix_format_mplane,
    v4l2_format,
    v4l2_streamparm,
    v4l2_requestbuffers,
    v4l2_plane,
    v4l2_buffer,
    v4l2_exportbuffer,
    v4l2_control,
    v4l2_queryctrl,
    v4l2_query_ext_ctrl,
    v4l2_querymenu,
    v4l2_ext_control,
    v4l2_ext_controls,
    v4l2_encoder_cmd,
    v4l2_event,
    v4l2_event_subscription,
);

// ---------------------------------------------------------------------------------------------
// Request codes (_IOR/_IOW/_IOWR('V', nr, type), computed from the Rust struct sizes)
// ---------------------------------------------------------------------------------------------

const V: u8 = b'V';

pub const VIDIOC_QUERYCAP: Request = nix::request_code_read!(V, 0, size_of::<v4l2_capability>());
pub const VIDIOC_ENUM_FMT: Request = nix::request_code_readwrite!(V, 2, size_of::<v4l2_fmtdesc>());
pub const VIDIOC_G_FMT: Request = nix::request_code_readwrite!(V, 4, size_of::<v4l2_format>());
pub const VIDIOC_S_FMT: Request = nix::request_code_readwrite!(V, 5, size_of::<v4l2_format>());
pub const VIDIOC_REQBUFS: Request =
    nix::request_code_readwrite!(V, 8, size_of::<v4l2_requestbuffers>());
pub const VIDIOC_QUERYBUF: Request = nix::request_code_readwrite!(V, 9, size_of::<v4l2_buffer>());
pub const VIDIOC_QBUF: Request = nix::request_code_readwrite!(V, 15, size_of::<v4l2_buffer>());
pub const VIDIOC_EXPBUF: Request =
    nix::request_code_readwrite!(V, 16, size_of::<v4l2_exportbuffer>());
pub const VIDIOC_DQBUF: Request = nix::request_code_readwrite!(V, 17, size_of::<v4l2_buffer>());
pub const VIDIOC_STREAMON: Request = nix::request_code_write!(V, 18, size_of::<c_int>());
pub const VIDIOC_STREAMOFF: Request = nix::request_code_write!(V, 19, size_of::<c_int>());
pub const VIDIOC_G_PARM: Request =
    nix::request_code_readwrite!(V, 21, size_of::<v4l2_streamparm>());
pub const VIDIOC_S_PARM: Request =
    nix::request_code_readwrite!(V, 22, size_of::<v4l2_streamparm>());
pub const VIDIOC_G_CTRL: Request = nix::request_code_readwrite!(V, 27, size_of::<v4l2_control>());
pub const VIDIOC_S_CTRL: Request = nix::request_code_readwrite!(V, 28, size_of::<v4l2_control>());
pub const VIDIOC_QUERYCTRL: Request =
    nix::request_code_readwrite!(V, 36, size_of::<v4l2_queryctrl>());
pub const VIDIOC_QUERYMENU: Request =
    nix::request_code_readwrite!(V, 37, size_of::<v4l2_querymenu>());
pub const VIDIOC_TRY_FMT: Request = nix::request_code_readwrite!(V, 64, size_of::<v4l2_format>());
pub const VIDIOC_G_EXT_CTRLS: Request =
    nix::request_code_readwrite!(V, 71, size_of::<v4l2_ext_controls>());
pub const VIDIOC_S_EXT_CTRLS: Request =
    nix::request_code_readwrite!(V, 72, size_of::<v4l2_ext_controls>());
pub const VIDIOC_ENUM_FRAMESIZES: Request =
    nix::request_code_readwrite!(V, 74, size_of::<v4l2_frmsizeenum>());
pub const VIDIOC_ENUM_FRAMEINTERVALS: Request =
    nix::request_code_readwrite!(V, 75, size_of::<v4l2_frmivalenum>());
pub const VIDIOC_ENCODER_CMD: Request =
    nix::request_code_readwrite!(V, 77, size_of::<v4l2_encoder_cmd>());
pub const VIDIOC_TRY_ENCODER_CMD: Request =
    nix::request_code_readwrite!(V, 78, size_of::<v4l2_encoder_cmd>());
pub const VIDIOC_DQEVENT: Request = nix::request_code_read!(V, 89, size_of::<v4l2_event>());
pub const VIDIOC_SUBSCRIBE_EVENT: Request =
    nix::request_code_write!(V, 90, size_of::<v4l2_event_subscription>());
pub const VIDIOC_UNSUBSCRIBE_EVENT: Request =
    nix::request_code_write!(V, 91, size_of::<v4l2_event_subscription>());
pub const VIDIOC_QUERY_EXT_CTRL: Request =
    nix::request_code_readwrite!(V, 103, size_of::<v4l2_query_ext_ctrl>());

// ---------------------------------------------------------------------------------------------
// The ioctls
// ---------------------------------------------------------------------------------------------

/// `ioctl(fd, request, arg)`, retried on EINTR.
///
/// # Safety
/// `arg` must point to a valid, writable `T`, `T` must be the type `request` encodes, and every
/// pointer inside `*arg` must be valid for what the kernel does with it during the call.
unsafe fn ioctl<T>(fd: BorrowedFd<'_>, request: Request, arg: *mut T) -> Result<c_int, Errno> {
    loop {
        // SAFETY: forwarded to the caller.
        let ret = unsafe { libc::ioctl(fd.as_raw_fd(), request, arg) };
        match Errno::result(ret) {
            Err(Errno::EINTR) => continue,
            other => return other,
        }
    }
}

/// Defines a safe wrapper for an ioctl whose argument holds no pointer.
macro_rules! plain_ioctl {
    ($(#[$attr:meta])* $vis:vis $name:ident, $request:expr, $t:ty) => {
        $(#[$attr])*
        $vis fn $name(fd: BorrowedFd<'_>, arg: &mut $t) -> Result<(), Errno> {
            // SAFETY: `arg` is a valid, exclusive `$t`, the type `$request` encodes, and `$t`
            // contains no pointer the kernel would follow.
            unsafe { ioctl(fd, $request, arg as *mut $t) }.map(drop)
        }
    };
}

plain_ioctl!(pub querycap, VIDIOC_QUERYCAP, v4l2_capability);
plain_ioctl!(pub enum_fmt, VIDIOC_ENUM_FMT, v4l2_fmtdesc);
plain_ioctl!(pub enum_framesizes, VIDIOC_ENUM_FRAMESIZES, v4l2_frmsizeenum);
plain_ioctl!(pub enum_frameintervals, VIDIOC_ENUM_FRAMEINTERVALS, v4l2_frmivalenum);
// v4l2_format's union holds `struct v4l2_window` whose `clips`/`bitmap` pointers are only read
// for overlay buffer types, which v4l2rtmp never passes (see `check_video_type`).
plain_ioctl!(
    /// Use through [`g_fmt`], which checks the buffer type.
    g_fmt_raw,
    VIDIOC_G_FMT,
    v4l2_format
);
plain_ioctl!(
    /// Use through [`s_fmt`], which checks the buffer type.
    s_fmt_raw,
    VIDIOC_S_FMT,
    v4l2_format
);
plain_ioctl!(
    /// Use through [`try_fmt`], which checks the buffer type.
    try_fmt_raw,
    VIDIOC_TRY_FMT,
    v4l2_format
);
plain_ioctl!(pub reqbufs, VIDIOC_REQBUFS, v4l2_requestbuffers);
plain_ioctl!(
    /// Use through [`expbuf`], which takes ownership of the new fd.
    expbuf_raw, VIDIOC_EXPBUF, v4l2_exportbuffer);
plain_ioctl!(pub g_parm, VIDIOC_G_PARM, v4l2_streamparm);
plain_ioctl!(pub s_parm, VIDIOC_S_PARM, v4l2_streamparm);
plain_ioctl!(pub g_ctrl, VIDIOC_G_CTRL, v4l2_control);
plain_ioctl!(pub s_ctrl, VIDIOC_S_CTRL, v4l2_control);
plain_ioctl!(pub queryctrl, VIDIOC_QUERYCTRL, v4l2_queryctrl);
plain_ioctl!(pub query_ext_ctrl, VIDIOC_QUERY_EXT_CTRL, v4l2_query_ext_ctrl);
plain_ioctl!(pub querymenu, VIDIOC_QUERYMENU, v4l2_querymenu);
plain_ioctl!(pub encoder_cmd, VIDIOC_ENCODER_CMD, v4l2_encoder_cmd);
plain_ioctl!(pub try_encoder_cmd, VIDIOC_TRY_ENCODER_CMD, v4l2_encoder_cmd);
plain_ioctl!(pub dqevent, VIDIOC_DQEVENT, v4l2_event);
plain_ioctl!(pub subscribe_event, VIDIOC_SUBSCRIBE_EVENT, v4l2_event_subscription);
plain_ioctl!(pub unsubscribe_event, VIDIOC_UNSUBSCRIBE_EVENT, v4l2_event_subscription);

/// Only the four video buffer types are passed to G/S/TRY_FMT: the overlay types would make the
/// kernel read `struct v4l2_window`'s pointers.
fn check_video_type(type_: u32) -> Result<(), Errno> {
    match type_ {
        V4L2_BUF_TYPE_VIDEO_CAPTURE
        | V4L2_BUF_TYPE_VIDEO_OUTPUT
        | V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE
        | V4L2_BUF_TYPE_VIDEO_OUTPUT_MPLANE => Ok(()),
        _ => Err(Errno::EINVAL),
    }
}

pub fn g_fmt(fd: BorrowedFd<'_>, arg: &mut v4l2_format) -> Result<(), Errno> {
    check_video_type(arg.type_)?;
    g_fmt_raw(fd, arg)
}

pub fn s_fmt(fd: BorrowedFd<'_>, arg: &mut v4l2_format) -> Result<(), Errno> {
    check_video_type(arg.type_)?;
    s_fmt_raw(fd, arg)
}

pub fn try_fmt(fd: BorrowedFd<'_>, arg: &mut v4l2_format) -> Result<(), Errno> {
    check_video_type(arg.type_)?;
    try_fmt_raw(fd, arg)
}

pub fn streamon(fd: BorrowedFd<'_>, buf_type: u32) -> Result<(), Errno> {
    let mut arg = buf_type as c_int;
    // SAFETY: VIDIOC_STREAMON takes a pointer to an int, which `arg` is.
    unsafe { ioctl(fd, VIDIOC_STREAMON, &mut arg as *mut c_int) }.map(drop)
}

pub fn streamoff(fd: BorrowedFd<'_>, buf_type: u32) -> Result<(), Errno> {
    let mut arg = buf_type as c_int;
    // SAFETY: VIDIOC_STREAMOFF takes a pointer to an int, which `arg` is.
    unsafe { ioctl(fd, VIDIOC_STREAMOFF, &mut arg as *mut c_int) }.map(drop)
}

/// Whether a buffer type is multi-planar (its `v4l2_buffer.m.planes` points to a plane array).
pub fn is_mplane(buf_type: u32) -> bool {
    matches!(
        buf_type,
        V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE | V4L2_BUF_TYPE_VIDEO_OUTPUT_MPLANE
    )
}

/// QUERYBUF, QBUF and DQBUF: for a multi-planar type, `buf.m.planes` and `buf.length` are set
/// here to `planes`; for a single-planar type `planes` is not used.
fn buffer_ioctl(
    fd: BorrowedFd<'_>,
    request: Request,
    buf: &mut v4l2_buffer,
    planes: &mut [v4l2_plane],
) -> Result<(), Errno> {
    if buf.memory == V4L2_MEMORY_USERPTR {
        // The kernel would write to whatever address `m.userptr` holds.
        return Err(Errno::EINVAL);
    }
    if is_mplane(buf.type_) {
        if planes.is_empty() || planes.len() > VIDEO_MAX_PLANES {
            return Err(Errno::EINVAL);
        }
        buf.m.planes = planes.as_mut_ptr();
        buf.length = planes.len() as u32;
    }
    // SAFETY: `buf` is a valid, exclusive v4l2_buffer, the type `request` encodes (one of
    // QUERYBUF/QBUF/DQBUF). Its only pointer, `m.planes` for a multi-planar type, was set just
    // above to `planes`, which is borrowed exclusively for this call and holds `buf.length`
    // (at most VIDEO_MAX_PLANES) elements; the kernel copies at most `length` of them in and
    // out. USERPTR memory is refused above, so the kernel reads each plane's `m` as an MMAP
    // offset or a DMABUF fd (which it checks), never as a user pointer.
    let result = unsafe { ioctl(fd, request, buf as *mut v4l2_buffer) }.map(drop);
    if is_mplane(buf.type_) {
        // Do not leave a pointer to `planes` behind in the caller's struct.
        buf.m = v4l2_buffer_m { offset: 0 };
    }
    result
}

pub fn querybuf(
    fd: BorrowedFd<'_>,
    buf: &mut v4l2_buffer,
    planes: &mut [v4l2_plane],
) -> Result<(), Errno> {
    buffer_ioctl(fd, VIDIOC_QUERYBUF, buf, planes)
}

pub fn qbuf(
    fd: BorrowedFd<'_>,
    buf: &mut v4l2_buffer,
    planes: &mut [v4l2_plane],
) -> Result<(), Errno> {
    buffer_ioctl(fd, VIDIOC_QBUF, buf, planes)
}

pub fn dqbuf(
    fd: BorrowedFd<'_>,
    buf: &mut v4l2_buffer,
    planes: &mut [v4l2_plane],
) -> Result<(), Errno> {
    buffer_ioctl(fd, VIDIOC_DQBUF, buf, planes)
}

/// EXPBUF: a new file descriptor for one plane of one buffer, as a DMABUF.
pub fn expbuf(fd: BorrowedFd<'_>, arg: &mut v4l2_exportbuffer) -> Result<OwnedFd, Errno> {
    arg.fd = -1;
    expbuf_raw(fd, arg)?;
    if arg.fd < 0 {
        return Err(Errno::EBADF);
    }
    // SAFETY: on success the kernel put a newly installed file descriptor in `arg.fd`; nothing
    // else owns it, so it is ours to own and close.
    Ok(unsafe { OwnedFd::from_raw_fd(arg.fd) })
}

/// G_EXT_CTRLS or S_EXT_CTRLS on `controls`, each passed by value (`size` is forced to 0, so the
/// kernel reads and writes `value`/`value64` only and follows no pointer). On failure the error
/// index is returned with the errno (`count` means "before any control was looked at").
fn ext_ctrls(
    fd: BorrowedFd<'_>,
    request: Request,
    which: u32,
    controls: &mut [v4l2_ext_control],
) -> Result<(), (Errno, u32)> {
    for control in controls.iter_mut() {
        control.size = 0;
    }
    let count = u32::try_from(controls.len()).map_err(|_| (Errno::E2BIG, 0))?;
    let mut arg: v4l2_ext_controls = zeroed();
    arg.which = which;
    arg.count = count;
    arg.controls = controls.as_mut_ptr();
    // SAFETY: `arg` is a valid v4l2_ext_controls, the type `request` encodes (G/S_EXT_CTRLS).
    // Its pointer `controls` refers to `count` elements borrowed exclusively for this call, and
    // each has `size` 0, so the kernel treats its union as a value and follows no pointer in it.
    unsafe { ioctl(fd, request, &mut arg as *mut v4l2_ext_controls) }
        .map(drop)
        .map_err(|e| (e, arg.error_idx))
}

pub fn g_ext_ctrls(
    fd: BorrowedFd<'_>,
    which: u32,
    controls: &mut [v4l2_ext_control],
) -> Result<(), (Errno, u32)> {
    ext_ctrls(fd, VIDIOC_G_EXT_CTRLS, which, controls)
}

pub fn s_ext_ctrls(
    fd: BorrowedFd<'_>,
    which: u32,
    controls: &mut [v4l2_ext_control],
) -> Result<(), (Errno, u32)> {
    ext_ctrls(fd, VIDIOC_S_EXT_CTRLS, which, controls)
}

/// A NUL-terminated (or full) byte array from a V4L2 struct, as text.
pub fn c_str(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).trim().to_string()
}
