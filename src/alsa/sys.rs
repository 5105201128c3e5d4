//! The raw ALSA ABI: `#[repr(C)]` mirrors of the structures of `sound/asound.h` that capture and
//! listing need, their constants, the ioctl request codes, and one safe function per ioctl.
//!
//! # Layouts
//!
//! `__u32`/`int`/`unsigned char` are Rust's fixed-size integers; `snd_pcm_uframes_t` (`unsigned
//! long`), `snd_pcm_sframes_t` (`long`), pointers and `struct timespec` come from `nix::libc`, so
//! they follow the target's C library. Four ABIs matter, and the constant assertions at the end of
//! this file pin each structure's size and the offsets that differ between them to the values gcc
//! printed from the real header (Debian 12: linux-libc-dev 6.1 for x86_64,
//! linux-libc-dev-arm64-cross and linux-libc-dev-armhf-cross 6.1.4 for the ARM ABIs; the program is
//! in `ABI_PROBE` below):
//!
//! | | x86_64, aarch64 | armv7, 32-bit `time_t` | armv7, 64-bit `time_t` |
//! | --- | --- | --- | --- |
//! | `snd_pcm_hw_params` | 608 | 604 | 604 |
//! | `snd_pcm_sw_params` | 136 | 104 | 104 |
//! | `snd_pcm_status` | 152 | 108 | 128 |
//! | `snd_xferi` | 24 | 12 | 12 |
//! | `snd_pcm_info`, `snd_ctl_card_info` | 288, 376 | the same | the same |
//!
//! `snd_pcm_status` is the one that depends on `time_t`: it holds four `struct timespec`, with a
//! pad after `state` as wide as `time_t` minus `int` (the header's `__time_pad`). The kernel takes
//! both 32-bit layouts (`SNDRV_PCM_IOCTL_STATUS_EXT32` and `..._EXT64` in `pcm_native.c`, and their
//! compat forms on a 64-bit kernel) and tells them apart by the size encoded in the request code,
//! which is computed here from the Rust structure. Rust's armv7 glibc target has a 32-bit `time_t`.
//! The status is read with `SNDRV_PCM_IOCTL_STATUS_EXT` (a copy made under the stream lock), never
//! through the mmap'ed `snd_pcm_mmap_status`, whose layout has its own 32/64-bit variants.
//!
//! `snd_interval`'s four one-bit fields (`openmin`, `openmax`, `integer`, `empty`) share one
//! `u32`, least significant bit first, as gcc allocates bit-fields on little-endian Linux ABIs.
//!
//! # Safety
//!
//! Every ioctl goes through `ioctl`, an `unsafe fn` whose caller promises that the argument has
//! the type the request code names. The public wrappers fix that type by their signature. The one
//! structure with a pointer, `snd_xferi`, is built by [`readi_frames`] from a byte slice it borrows
//! for the call, with a frame count the slice can hold; so the wrappers are safe functions.
#![allow(unsafe_code)]
#![allow(non_camel_case_types)]

use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd};

use nix::errno::Errno;
use nix::libc::{self, c_int, c_long, c_ulong, c_void};

/// The type of an ioctl request code on this target (`c_ulong` with glibc, `c_int` with musl).
pub type Request = nix::sys::ioctl::ioctl_num_type;

// ---------------------------------------------------------------------------------------------
// Constants
// ---------------------------------------------------------------------------------------------

/// `SNDRV_PROTOCOL_VERSION(major, minor, subminor)`.
pub const fn protocol_version(major: u32, minor: u32, subminor: u32) -> u32 {
    (major << 16) | (minor << 8) | subminor
}

/// The PCM protocol this mirror follows (`SNDRV_PCM_VERSION` of Linux 6.1's header).
pub const SNDRV_PCM_VERSION: u32 = protocol_version(2, 0, 15);
/// `snd_pcm_sw_params.tstamp_type` is read by kernels from this protocol on (Linux 3.16).
pub const SNDRV_PCM_VERSION_TSTAMP_TYPE: u32 = protocol_version(2, 0, 12);
/// `SNDRV_PCM_IOCTL_STATUS_EXT` exists from this protocol on (Linux 4.1).
pub const SNDRV_PCM_VERSION_STATUS_EXT: u32 = protocol_version(2, 0, 13);

// snd_pcm_stream_t
pub const SNDRV_PCM_STREAM_PLAYBACK: i32 = 0;
pub const SNDRV_PCM_STREAM_CAPTURE: i32 = 1;

// snd_pcm_access_t
pub const SNDRV_PCM_ACCESS_MMAP_INTERLEAVED: u32 = 0;
pub const SNDRV_PCM_ACCESS_RW_INTERLEAVED: u32 = 3;
pub const SNDRV_PCM_ACCESS_LAST: u32 = 4;

// snd_pcm_format_t (the ones v4l2rtmp reads or names; see `super::params::format_name`)
pub const SNDRV_PCM_FORMAT_S8: u32 = 0;
pub const SNDRV_PCM_FORMAT_U8: u32 = 1;
pub const SNDRV_PCM_FORMAT_S16_LE: u32 = 2;
pub const SNDRV_PCM_FORMAT_S16_BE: u32 = 3;
pub const SNDRV_PCM_FORMAT_S24_LE: u32 = 6;
pub const SNDRV_PCM_FORMAT_S32_LE: u32 = 10;
pub const SNDRV_PCM_FORMAT_FLOAT_LE: u32 = 14;
pub const SNDRV_PCM_FORMAT_S24_3LE: u32 = 32;
pub const SNDRV_PCM_FORMAT_LAST: u32 = 52;

// snd_pcm_subformat_t
pub const SNDRV_PCM_SUBFORMAT_STD: u32 = 0;
/// `SNDRV_PCM_SUBFORMAT_LAST` of Linux 6.1 (later kernels add MSBITS_* subformats).
pub const SNDRV_PCM_SUBFORMAT_LAST: u32 = 0;

// snd_pcm_hw_param_t
pub const SNDRV_PCM_HW_PARAM_ACCESS: usize = 0;
pub const SNDRV_PCM_HW_PARAM_FORMAT: usize = 1;
pub const SNDRV_PCM_HW_PARAM_SUBFORMAT: usize = 2;
pub const SNDRV_PCM_HW_PARAM_FIRST_MASK: usize = SNDRV_PCM_HW_PARAM_ACCESS;
pub const SNDRV_PCM_HW_PARAM_LAST_MASK: usize = SNDRV_PCM_HW_PARAM_SUBFORMAT;
pub const SNDRV_PCM_HW_PARAM_SAMPLE_BITS: usize = 8;
pub const SNDRV_PCM_HW_PARAM_FRAME_BITS: usize = 9;
pub const SNDRV_PCM_HW_PARAM_CHANNELS: usize = 10;
pub const SNDRV_PCM_HW_PARAM_RATE: usize = 11;
pub const SNDRV_PCM_HW_PARAM_PERIOD_TIME: usize = 12;
pub const SNDRV_PCM_HW_PARAM_PERIOD_SIZE: usize = 13;
pub const SNDRV_PCM_HW_PARAM_PERIOD_BYTES: usize = 14;
pub const SNDRV_PCM_HW_PARAM_PERIODS: usize = 15;
pub const SNDRV_PCM_HW_PARAM_BUFFER_TIME: usize = 16;
pub const SNDRV_PCM_HW_PARAM_BUFFER_SIZE: usize = 17;
pub const SNDRV_PCM_HW_PARAM_BUFFER_BYTES: usize = 18;
pub const SNDRV_PCM_HW_PARAM_TICK_TIME: usize = 19;
pub const SNDRV_PCM_HW_PARAM_FIRST_INTERVAL: usize = SNDRV_PCM_HW_PARAM_SAMPLE_BITS;
pub const SNDRV_PCM_HW_PARAM_LAST_INTERVAL: usize = SNDRV_PCM_HW_PARAM_TICK_TIME;
pub const MASK_COUNT: usize = SNDRV_PCM_HW_PARAM_LAST_MASK - SNDRV_PCM_HW_PARAM_FIRST_MASK + 1;
pub const INTERVAL_COUNT: usize =
    SNDRV_PCM_HW_PARAM_LAST_INTERVAL - SNDRV_PCM_HW_PARAM_FIRST_INTERVAL + 1;
/// `SNDRV_MASK_MAX`: bits in a `snd_mask`.
pub const SNDRV_MASK_MAX: usize = 256;

// snd_interval's bit-fields, in its `flags` word
pub const INTERVAL_OPENMIN: u32 = 1 << 0;
pub const INTERVAL_OPENMAX: u32 = 1 << 1;
pub const INTERVAL_INTEGER: u32 = 1 << 2;
pub const INTERVAL_EMPTY: u32 = 1 << 3;

// snd_pcm_state_t
pub const SNDRV_PCM_STATE_OPEN: i32 = 0;
pub const SNDRV_PCM_STATE_SETUP: i32 = 1;
pub const SNDRV_PCM_STATE_PREPARED: i32 = 2;
pub const SNDRV_PCM_STATE_RUNNING: i32 = 3;
pub const SNDRV_PCM_STATE_XRUN: i32 = 4;
pub const SNDRV_PCM_STATE_DRAINING: i32 = 5;
pub const SNDRV_PCM_STATE_PAUSED: i32 = 6;
pub const SNDRV_PCM_STATE_SUSPENDED: i32 = 7;
pub const SNDRV_PCM_STATE_DISCONNECTED: i32 = 8;

// sw_params.tstamp_mode
pub const SNDRV_PCM_TSTAMP_NONE: i32 = 0;
pub const SNDRV_PCM_TSTAMP_ENABLE: i32 = 1;

// sw_params.tstamp_type and SNDRV_PCM_IOCTL_TTSTAMP
pub const SNDRV_PCM_TSTAMP_TYPE_GETTIMEOFDAY: u32 = 0;
pub const SNDRV_PCM_TSTAMP_TYPE_MONOTONIC: u32 = 1;

// ---------------------------------------------------------------------------------------------
// Structures
// ---------------------------------------------------------------------------------------------

use crate::pod;
pub use crate::pod::{zeroed, Pod};

/// `struct snd_pcm_info` (also the control device's `SNDRV_CTL_IOCTL_PCM_INFO` argument).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct snd_pcm_info {
    pub device: u32,
    pub subdevice: u32,
    pub stream: i32,
    pub card: i32,
    pub id: [u8; 64],
    pub name: [u8; 80],
    pub subname: [u8; 32],
    pub dev_class: i32,
    pub dev_subclass: i32,
    pub subdevices_count: u32,
    pub subdevices_avail: u32,
    /// `union snd_pcm_sync_id`: 16 bytes, read as bytes.
    pub sync: [u8; 16],
    pub reserved: [u8; 64],
}

/// `struct snd_interval`: a range of unsigned values; `flags` holds the four bit-fields
/// (`INTERVAL_*`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct snd_interval {
    pub min: u32,
    pub max: u32,
    pub flags: u32,
}

/// `struct snd_mask`: a 256-bit set.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct snd_mask {
    pub bits: [u32; SNDRV_MASK_MAX / 32],
}

/// `struct snd_pcm_hw_params`: a configuration space, narrowed by HW_REFINE and fixed by
/// HW_PARAMS.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct snd_pcm_hw_params {
    pub flags: u32,
    pub masks: [snd_mask; MASK_COUNT],
    pub mres: [snd_mask; 5],
    pub intervals: [snd_interval; INTERVAL_COUNT],
    pub ires: [snd_interval; 9],
    /// Which parameters to refine (bit = parameter index).
    pub rmask: u32,
    /// Which parameters the kernel changed.
    pub cmask: u32,
    pub info: u32,
    pub msbits: u32,
    pub rate_num: u32,
    pub rate_den: u32,
    pub fifo_size: c_ulong,
    pub reserved: [u8; 64],
}

/// `struct snd_pcm_sw_params`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct snd_pcm_sw_params {
    pub tstamp_mode: i32,
    pub period_step: u32,
    pub sleep_min: u32,
    pub avail_min: c_ulong,
    pub xfer_align: c_ulong,
    pub start_threshold: c_ulong,
    pub stop_threshold: c_ulong,
    pub silence_threshold: c_ulong,
    pub silence_size: c_ulong,
    pub boundary: c_ulong,
    /// The protocol version the caller speaks: `tstamp_type` is read only from 2.0.12 on.
    pub proto: u32,
    pub tstamp_type: u32,
    pub reserved: [u8; 56],
}

/// `sizeof(time_t)` as the C library has it: `tv_sec` is `timespec`'s first field and `tv_nsec`
/// follows it directly on the little-endian ABIs v4l2rtmp is built for. (Not `libc::time_t`,
/// which the libc crate deprecates on musl while it plans that type's change to 64 bits.)
pub const TIME_T_BYTES: usize = std::mem::offset_of!(libc::timespec, tv_nsec);

/// `struct snd_pcm_status` (`SNDRV_PCM_IOCTL_STATUS`/`STATUS_EXT`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct snd_pcm_status {
    pub state: i32,
    /// `__time_pad`: 4 bytes where `time_t` is 64-bit, none where it is 32-bit.
    pub pad1: [u8; TIME_T_BYTES - size_of::<c_int>()],
    pub trigger_tstamp: libc::timespec,
    /// The system time (of the clock `tstamp_type` chose) at which `hw_ptr` was last updated.
    pub tstamp: libc::timespec,
    pub appl_ptr: c_ulong,
    pub hw_ptr: c_ulong,
    pub delay: c_long,
    pub avail: c_ulong,
    pub avail_max: c_ulong,
    pub overrange: c_ulong,
    pub suspended_state: i32,
    /// STATUS_EXT: in, the audio timestamp type asked for; out, the type and accuracy given.
    pub audio_tstamp_data: u32,
    pub audio_tstamp: libc::timespec,
    pub driver_tstamp: libc::timespec,
    pub audio_tstamp_accuracy: u32,
    pub reserved: [u8; 52 - 2 * size_of::<libc::timespec>()],
}

/// `struct snd_xferi` (READI_FRAMES, WRITEI_FRAMES).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct snd_xferi {
    pub result: c_long,
    pub buf: *mut c_void,
    pub frames: c_ulong,
}

/// `struct snd_ctl_card_info`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct snd_ctl_card_info {
    pub card: i32,
    pub pad: i32,
    pub id: [u8; 16],
    pub driver: [u8; 16],
    pub name: [u8; 32],
    pub longname: [u8; 80],
    pub reserved_: [u8; 16],
    pub mixername: [u8; 80],
    pub components: [u8; 128],
}

pod!(
    snd_pcm_info,
    snd_interval,
    snd_mask,
    snd_pcm_hw_params,
    snd_pcm_sw_params,
    snd_pcm_status,
    snd_xferi,
    snd_ctl_card_info,
);

// ---------------------------------------------------------------------------------------------
// Request codes (_IOR/_IOW/_IOWR('A' or 'U', nr, type), computed from the Rust struct sizes)
// ---------------------------------------------------------------------------------------------

const A: u8 = b'A';
const U: u8 = b'U';

pub const SNDRV_PCM_IOCTL_PVERSION: Request = nix::request_code_read!(A, 0x00, size_of::<c_int>());
pub const SNDRV_PCM_IOCTL_INFO: Request =
    nix::request_code_read!(A, 0x01, size_of::<snd_pcm_info>());
pub const SNDRV_PCM_IOCTL_TTSTAMP: Request = nix::request_code_write!(A, 0x03, size_of::<c_int>());
pub const SNDRV_PCM_IOCTL_HW_REFINE: Request =
    nix::request_code_readwrite!(A, 0x10, size_of::<snd_pcm_hw_params>());
pub const SNDRV_PCM_IOCTL_HW_PARAMS: Request =
    nix::request_code_readwrite!(A, 0x11, size_of::<snd_pcm_hw_params>());
pub const SNDRV_PCM_IOCTL_HW_FREE: Request = nix::request_code_none!(A, 0x12);
pub const SNDRV_PCM_IOCTL_SW_PARAMS: Request =
    nix::request_code_readwrite!(A, 0x13, size_of::<snd_pcm_sw_params>());
pub const SNDRV_PCM_IOCTL_STATUS: Request =
    nix::request_code_read!(A, 0x20, size_of::<snd_pcm_status>());
pub const SNDRV_PCM_IOCTL_STATUS_EXT: Request =
    nix::request_code_readwrite!(A, 0x24, size_of::<snd_pcm_status>());
pub const SNDRV_PCM_IOCTL_PREPARE: Request = nix::request_code_none!(A, 0x40);
pub const SNDRV_PCM_IOCTL_START: Request = nix::request_code_none!(A, 0x42);
pub const SNDRV_PCM_IOCTL_DROP: Request = nix::request_code_none!(A, 0x43);
pub const SNDRV_PCM_IOCTL_READI_FRAMES: Request =
    nix::request_code_read!(A, 0x51, size_of::<snd_xferi>());

pub const SNDRV_CTL_IOCTL_PVERSION: Request = nix::request_code_read!(U, 0x00, size_of::<c_int>());
pub const SNDRV_CTL_IOCTL_CARD_INFO: Request =
    nix::request_code_read!(U, 0x01, size_of::<snd_ctl_card_info>());
pub const SNDRV_CTL_IOCTL_PCM_NEXT_DEVICE: Request =
    nix::request_code_read!(U, 0x30, size_of::<c_int>());
pub const SNDRV_CTL_IOCTL_PCM_INFO: Request =
    nix::request_code_readwrite!(U, 0x31, size_of::<snd_pcm_info>());
pub const SNDRV_CTL_IOCTL_PCM_PREFER_SUBDEVICE: Request =
    nix::request_code_write!(U, 0x32, size_of::<c_int>());

// ---------------------------------------------------------------------------------------------
// The ioctls
// ---------------------------------------------------------------------------------------------

/// `ioctl(fd, request, arg)`, retried on EINTR.
///
/// # Safety
/// `arg` must be null for a request that takes no argument, or else point to a valid, writable
/// `T` of the type `request` encodes, with every pointer inside `*arg` valid for what the kernel
/// does with it during the call.
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
    ($vis:vis $name:ident, $request:expr, $t:ty) => {
        #[doc = concat!("`", stringify!($request), "`.")]
        $vis fn $name(fd: BorrowedFd<'_>, arg: &mut $t) -> Result<(), Errno> {
            // SAFETY: `arg` is a valid, exclusive `$t`, the type the request code encodes, and
            // holds no pointer.
            unsafe { ioctl(fd, $request, arg as *mut $t) }.map(drop)
        }
    };
}

/// Defines a safe wrapper for an ioctl that takes no argument.
macro_rules! bare_ioctl {
    ($vis:vis $name:ident, $request:expr) => {
        #[doc = concat!("`", stringify!($request), "`.")]
        $vis fn $name(fd: BorrowedFd<'_>) -> Result<(), Errno> {
            // SAFETY: the request code encodes no argument (`_IO`); the kernel ignores it.
            unsafe { ioctl(fd, $request, std::ptr::null_mut::<c_void>()) }.map(drop)
        }
    };
}

plain_ioctl!(pub pcm_pversion, SNDRV_PCM_IOCTL_PVERSION, c_int);
plain_ioctl!(pub pcm_info, SNDRV_PCM_IOCTL_INFO, snd_pcm_info);
plain_ioctl!(pub pcm_ttstamp, SNDRV_PCM_IOCTL_TTSTAMP, c_int);
plain_ioctl!(pub pcm_hw_refine, SNDRV_PCM_IOCTL_HW_REFINE, snd_pcm_hw_params);
plain_ioctl!(pub pcm_hw_params, SNDRV_PCM_IOCTL_HW_PARAMS, snd_pcm_hw_params);
bare_ioctl!(pub pcm_hw_free, SNDRV_PCM_IOCTL_HW_FREE);
plain_ioctl!(pub pcm_sw_params, SNDRV_PCM_IOCTL_SW_PARAMS, snd_pcm_sw_params);
plain_ioctl!(pub pcm_status, SNDRV_PCM_IOCTL_STATUS, snd_pcm_status);
plain_ioctl!(pub pcm_status_ext, SNDRV_PCM_IOCTL_STATUS_EXT, snd_pcm_status);
bare_ioctl!(pub pcm_prepare, SNDRV_PCM_IOCTL_PREPARE);
bare_ioctl!(pub pcm_start, SNDRV_PCM_IOCTL_START);
bare_ioctl!(pub pcm_drop, SNDRV_PCM_IOCTL_DROP);

plain_ioctl!(pub ctl_pversion, SNDRV_CTL_IOCTL_PVERSION, c_int);
plain_ioctl!(pub ctl_card_info, SNDRV_CTL_IOCTL_CARD_INFO, snd_ctl_card_info);
plain_ioctl!(pub ctl_pcm_next_device, SNDRV_CTL_IOCTL_PCM_NEXT_DEVICE, c_int);
plain_ioctl!(pub ctl_pcm_info, SNDRV_CTL_IOCTL_PCM_INFO, snd_pcm_info);
plain_ioctl!(pub ctl_pcm_prefer_subdevice, SNDRV_CTL_IOCTL_PCM_PREFER_SUBDEVICE, c_int);

/// READI_FRAMES: reads up to `buf.len() / frame_bytes` interleaved frames into `buf` and returns
/// how many were read. Fails with EINVAL when `frame_bytes` is 0; a short read and EAGAIN are
/// the kernel's answers on a non-blocking PCM with fewer frames available. Private to the layer:
/// its soundness rests on `frame_bytes` being the configured frame size, which only
/// [`PcmDevice::read`](super::pcm::PcmDevice::read) knows.
pub(super) fn readi_frames(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    frame_bytes: usize,
) -> Result<usize, Errno> {
    if frame_bytes == 0 {
        return Err(Errno::EINVAL);
    }
    let frames = buf.len() / frame_bytes;
    if frames == 0 {
        return Ok(0);
    }
    let mut xfer = snd_xferi {
        result: 0,
        buf: buf.as_mut_ptr().cast(),
        frames: frames as c_ulong,
    };
    // SAFETY: `xfer` is a valid snd_xferi, the type READI_FRAMES encodes. Its pointer is `buf`,
    // borrowed exclusively for this call, and it asks for `frames` frames, which fit in `buf`
    // as long as a frame of the configured hw_params takes `frame_bytes` bytes: the caller
    // passes the frame size of the format and channels it set with HW_PARAMS, so the kernel
    // writes at most `frames * frame_bytes <= buf.len()` bytes.
    unsafe {
        ioctl(
            fd,
            SNDRV_PCM_IOCTL_READI_FRAMES,
            &mut xfer as *mut snd_xferi,
        )
    }?;
    Ok(usize::try_from(xfer.result).unwrap_or(0).min(frames))
}

/// A `snd_pcm_uframes_t` (`unsigned long`: 32 or 64 bits) as `u64`.
#[allow(clippy::useless_conversion)] // a no-op where `c_ulong` is `u64`
pub fn uframes(value: c_ulong) -> u64 {
    u64::from(value)
}

/// A NUL-terminated (or full) byte array from an ALSA struct, as text.
pub fn c_str(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).trim().to_string()
}

// ---------------------------------------------------------------------------------------------
// The layouts, checked at compile time against the header
// ---------------------------------------------------------------------------------------------

/// The program that printed the sizes and offsets asserted below (and the request codes of the
/// unit test), compiled against `sound/asound.h` of each ABI: `gcc gen.c && ./a.out`;
/// `aarch64-linux-gnu-gcc -static` and `arm-linux-gnueabihf-gcc -static` (and again with
/// `-D_FILE_OFFSET_BITS=64 -D_TIME_BITS=64` for a 64-bit `time_t`), run under qemu-user.
pub const ABI_PROBE: &str = r#"
#include <stdio.h>
#include <stddef.h>
#include <time.h>
#include <sys/ioctl.h>
#include <sound/asound.h>
#define S(t) printf("size %s %zu\n", #t, sizeof(struct t));
#define O(t, f) printf("offset %s.%s %zu\n", #t, #f, offsetof(struct t, f));
#define I(n) printf("ioctl %s 0x%08lx\n", #n, (unsigned long)(n));
int main(void) {
  S(snd_pcm_info) S(snd_interval) S(snd_mask) S(snd_pcm_hw_params) S(snd_pcm_sw_params)
  S(snd_pcm_status) S(snd_xferi) S(snd_ctl_card_info)
  O(snd_pcm_info, name) O(snd_pcm_info, subdevices_count) O(snd_pcm_info, sync)
  O(snd_pcm_hw_params, intervals) O(snd_pcm_hw_params, rmask) O(snd_pcm_hw_params, fifo_size)
  O(snd_pcm_sw_params, avail_min) O(snd_pcm_sw_params, boundary) O(snd_pcm_sw_params, proto)
  O(snd_pcm_sw_params, tstamp_type) O(snd_pcm_status, trigger_tstamp) O(snd_pcm_status, tstamp)
  O(snd_pcm_status, appl_ptr) O(snd_pcm_status, hw_ptr) O(snd_pcm_status, avail)
  O(snd_pcm_status, audio_tstamp_data) O(snd_pcm_status, audio_tstamp)
  O(snd_pcm_status, driver_tstamp) O(snd_pcm_status, reserved) O(snd_xferi, buf)
  O(snd_xferi, frames) O(snd_ctl_card_info, id) O(snd_ctl_card_info, components)
  I(SNDRV_PCM_IOCTL_PVERSION) I(SNDRV_PCM_IOCTL_INFO) I(SNDRV_PCM_IOCTL_TTSTAMP)
  I(SNDRV_PCM_IOCTL_HW_REFINE) I(SNDRV_PCM_IOCTL_HW_PARAMS) I(SNDRV_PCM_IOCTL_HW_FREE)
  I(SNDRV_PCM_IOCTL_SW_PARAMS) I(SNDRV_PCM_IOCTL_STATUS) I(SNDRV_PCM_IOCTL_STATUS_EXT)
  I(SNDRV_PCM_IOCTL_PREPARE) I(SNDRV_PCM_IOCTL_START) I(SNDRV_PCM_IOCTL_DROP)
  I(SNDRV_PCM_IOCTL_READI_FRAMES) I(SNDRV_CTL_IOCTL_PVERSION) I(SNDRV_CTL_IOCTL_CARD_INFO)
  I(SNDRV_CTL_IOCTL_PCM_NEXT_DEVICE) I(SNDRV_CTL_IOCTL_PCM_INFO)
  I(SNDRV_CTL_IOCTL_PCM_PREFER_SUBDEVICE)
  return 0;
}
"#;

/// The ABI this build has, as the table in the module comment names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Abi {
    /// x86_64 and aarch64 (LP64, 64-bit `time_t`).
    Lp64,
    /// 32-bit `long` and `time_t` (armv7 glibc as Rust builds it).
    Ilp32Time32,
    /// 32-bit `long`, 64-bit `time_t` (musl >= 1.2, glibc with `_TIME_BITS=64`).
    Ilp32Time64,
}

pub const ABI: Abi = match (size_of::<c_long>(), TIME_T_BYTES) {
    (8, _) => Abi::Lp64,
    (_, 4) => Abi::Ilp32Time32,
    _ => Abi::Ilp32Time64,
};

macro_rules! layout {
    ($t:ident: size $lp64:expr, $t32:expr, $t64:expr) => {
        const _: () = assert!(
            size_of::<$t>()
                == match ABI {
                    Abi::Lp64 => $lp64,
                    Abi::Ilp32Time32 => $t32,
                    Abi::Ilp32Time64 => $t64,
                }
        );
    };
    ($t:ident . $f:ident: $lp64:expr, $t32:expr, $t64:expr) => {
        const _: () = assert!(
            std::mem::offset_of!($t, $f)
                == match ABI {
                    Abi::Lp64 => $lp64,
                    Abi::Ilp32Time32 => $t32,
                    Abi::Ilp32Time64 => $t64,
                }
        );
    };
}

layout!(snd_pcm_info: size 288, 288, 288);
layout!(snd_interval: size 12, 12, 12);
layout!(snd_mask: size 32, 32, 32);
layout!(snd_pcm_hw_params: size 608, 604, 604);
layout!(snd_pcm_sw_params: size 136, 104, 104);
layout!(snd_pcm_status: size 152, 108, 128);
layout!(snd_xferi: size 24, 12, 12);
layout!(snd_ctl_card_info: size 376, 376, 376);
layout!(snd_pcm_info.name: 80, 80, 80);
layout!(snd_pcm_info.subdevices_count: 200, 200, 200);
layout!(snd_pcm_info.sync: 208, 208, 208);
layout!(snd_pcm_hw_params.intervals: 260, 260, 260);
layout!(snd_pcm_hw_params.rmask: 512, 512, 512);
layout!(snd_pcm_hw_params.fifo_size: 536, 536, 536);
layout!(snd_pcm_sw_params.avail_min: 16, 12, 12);
layout!(snd_pcm_sw_params.boundary: 64, 36, 36);
layout!(snd_pcm_sw_params.proto: 72, 40, 40);
layout!(snd_pcm_sw_params.tstamp_type: 76, 44, 44);
layout!(snd_pcm_status.trigger_tstamp: 8, 4, 8);
layout!(snd_pcm_status.tstamp: 24, 12, 24);
layout!(snd_pcm_status.appl_ptr: 40, 20, 40);
layout!(snd_pcm_status.hw_ptr: 48, 24, 44);
layout!(snd_pcm_status.avail: 64, 32, 52);
layout!(snd_pcm_status.audio_tstamp_data: 92, 48, 68);
layout!(snd_pcm_status.audio_tstamp: 96, 52, 72);
layout!(snd_pcm_status.driver_tstamp: 112, 60, 88);
layout!(snd_pcm_status.reserved: 132, 72, 108);
layout!(snd_xferi.buf: 8, 4, 4);
layout!(snd_xferi.frames: 16, 8, 8);
layout!(snd_ctl_card_info.id: 8, 8, 8);
layout!(snd_ctl_card_info.components: 248, 248, 248);

#[cfg(test)]
mod tests {
    use super::*;

    /// The request codes `ABI_PROBE` printed, per ABI (`_IOC` is the same on x86 and ARM).
    #[test]
    #[allow(clippy::unnecessary_cast)] // `Request` is `u32` on some targets
    fn request_codes_match_the_header() {
        let by_abi = |lp64: u32, t32: u32, t64: u32| match ABI {
            Abi::Lp64 => lp64,
            Abi::Ilp32Time32 => t32,
            Abi::Ilp32Time64 => t64,
        };
        let expected: [(Request, u32); 18] = [
            (SNDRV_PCM_IOCTL_PVERSION, 0x8004_4100),
            (SNDRV_PCM_IOCTL_INFO, 0x8120_4101),
            (SNDRV_PCM_IOCTL_TTSTAMP, 0x4004_4103),
            (
                SNDRV_PCM_IOCTL_HW_REFINE,
                by_abi(0xc260_4110, 0xc25c_4110, 0xc25c_4110),
            ),
            (
                SNDRV_PCM_IOCTL_HW_PARAMS,
                by_abi(0xc260_4111, 0xc25c_4111, 0xc25c_4111),
            ),
            (SNDRV_PCM_IOCTL_HW_FREE, 0x0000_4112),
            (
                SNDRV_PCM_IOCTL_SW_PARAMS,
                by_abi(0xc088_4113, 0xc068_4113, 0xc068_4113),
            ),
            (
                SNDRV_PCM_IOCTL_STATUS,
                by_abi(0x8098_4120, 0x806c_4120, 0x8080_4120),
            ),
            (
                SNDRV_PCM_IOCTL_STATUS_EXT,
                by_abi(0xc098_4124, 0xc06c_4124, 0xc080_4124),
            ),
            (SNDRV_PCM_IOCTL_PREPARE, 0x0000_4140),
            (SNDRV_PCM_IOCTL_START, 0x0000_4142),
            (SNDRV_PCM_IOCTL_DROP, 0x0000_4143),
            (
                SNDRV_PCM_IOCTL_READI_FRAMES,
                by_abi(0x8018_4151, 0x800c_4151, 0x800c_4151),
            ),
            (SNDRV_CTL_IOCTL_PVERSION, 0x8004_5500),
            (SNDRV_CTL_IOCTL_CARD_INFO, 0x8178_5501),
            (SNDRV_CTL_IOCTL_PCM_NEXT_DEVICE, 0x8004_5530),
            (SNDRV_CTL_IOCTL_PCM_INFO, 0xc120_5531),
            (SNDRV_CTL_IOCTL_PCM_PREFER_SUBDEVICE, 0x4004_5532),
        ];
        for (i, (code, want)) in expected.into_iter().enumerate() {
            assert_eq!(
                code as u32, want,
                "request code #{i}: {:#010x}",
                code as u32
            );
        }
        assert_eq!(SNDRV_PCM_VERSION, 0x0002_000f);
    }

    #[test]
    fn c_strings_stop_at_nul() {
        assert_eq!(c_str(b"Loopback\0\0junk"), "Loopback");
        assert_eq!(c_str(b"full"), "full");
        assert_eq!(c_str(b" padded \0"), "padded");
    }
}
