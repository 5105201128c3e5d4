//! ALSA: audio capture through the kernel's PCM interface, with a thin ioctl layer of our own.
//!
//! # Why our own layer
//!
//! alsa-lib (libasound) is a shared C library with a configuration language and run-time
//! plugins; linking it would end the static aarch64-musl and armv7 builds. A capture needs a
//! dozen ioctls on `/dev/snd/pcmC<card>D<device>c` (what tinyalsa does too), and a device
//! listing a few on `/dev/snd/controlC<card>`, so v4l2rtmp has them here, like its V4L2 layer:
//! [`sys`] mirrors the structures of `sound/asound.h` with `#[repr(C)]` and `nix::libc` types, and
//! asserts at compile time every size and the offsets that differ between ABIs (x86_64 and
//! aarch64; armv7 with a 32-bit or a 64-bit `time_t`) against what gcc printed from the header.
//!
//! Unsafe code lives only in [`sys`] (the ioctl calls) and [`capture`] (registering the fd with
//! tokio); every `unsafe` block says why it is sound. The rest of the crate keeps
//! `#![deny(unsafe_code)]`.
//!
//! # Modules
//!
//! - [`sys`]: structures, constants, request codes, one safe function per ioctl.
//! - [`name`]: `hw:CARD,DEV[,SUBDEV]`, `hw:CARD=Name,DEV=0`, `/dev/snd/pcmC1D0c`, parsed.
//! - [`ctl`]: the control device: card information, PCM devices, subdevice preference, card ids.
//! - [`params`]: the hardware parameter space and the negotiation (access RW_INTERLEAVED;
//!   S16_LE, S32_LE, S24_LE or S24_3LE; 1 or 2 channels; a standard rate; a period near 1024
//!   frames and a buffer of several), pure and tested against simulated devices.
//! - [`convert`]: device frames to interleaved `i16` or `f32`, mono or stereo.
//! - [`pcm`]: [`PcmDevice`], the synchronous steps: open, configure, start, read, status.
//! - [`capture`]: [`Capture`], the running capture for tokio: reads into the caller's buffers,
//!   dated on CLOCK_MONOTONIC; an overrun is [`ReadError::Overrun`] and capture goes on.
//! - [`list`]: capture devices with what they offer, for `v4l2rtmp devices`.
//!
//! # Timestamps
//!
//! Timestamps are enabled (`tstamp_mode` ENABLE) on CLOCK_MONOTONIC (`SNDRV_PCM_IOCTL_TTSTAMP`,
//! and `sw_params.tstamp_type` on protocol 2.0.12 and later), the clock of V4L2's buffers. After
//! each read, STATUS_EXT gives `tstamp`, the time at which the device's position last moved,
//! that is the capture time of the newest frame, and `avail`, the frames captured since the ones
//! read; so the first frame read was captured `(avail + frames) / rate` before `tstamp`
//! ([`Captured::first_frame_time`]).
//!
//! # Errors
//!
//! Errors name the device as the user did, with its node (`hw:Loopback,1 (/dev/snd/pcmC0D1c)`).
//! A device that cannot be configured as asked is a [`Fault::Config`] error saying what it
//! offers; one that disappears (ENODEV: unplugged, or its driver unbound), is suspended
//! (ESTRPIPE) or fails is a [`Fault::Input`] error that says so, for the supervisor to reopen it.
//! EINTR is retried.

pub mod capture;
pub mod convert;
pub mod ctl;
pub mod list;
pub mod name;
pub mod params;
pub mod pcm;
pub mod sys;

use nix::errno::Errno;

use crate::error::{Error, Fault};

pub use capture::{Capture, CaptureConfig, Captured, ReadError};
pub use convert::{Converter, SampleFormat};
pub use name::{CardRef, PcmName};
pub use params::{Negotiated, Wanted, STANDARD_RATES};
pub use pcm::{PcmDevice, PcmState, Status};

/// The error for a failed ioctl on `device`: gone, suspended, or failed, always an input fault.
pub(crate) fn ioctl_error(device: &str, what: &str, errno: Errno) -> Error {
    let source = std::io::Error::from(errno);
    let message = match errno {
        Errno::ENODEV | Errno::ENXIO | Errno::EIO => format!(
            "{device} disappeared or failed (unplugged, or its driver was unbound or reported \
             an error) while {what}"
        ),
        Errno::ESTRPIPE => format!("{device} was suspended while {what}"),
        Errno::EBADFD => format!("{device} is not in a state that allows {what}"),
        _ => format!("{device}: {what} failed"),
    };
    Error::io(Fault::Input, message, source)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vanished_device_says_so() {
        let gone = ioctl_error(
            "hw:Loopback,1 (/dev/snd/pcmC0D1c)",
            "reading audio",
            Errno::ENODEV,
        );
        assert_eq!(gone.fault(), Fault::Input);
        assert!(gone
            .message()
            .starts_with("hw:Loopback,1 (/dev/snd/pcmC0D1c) disappeared"));
        let suspended = ioctl_error("hw:1,0", "reading audio", Errno::ESTRPIPE);
        // The C library's text for the errno differs (glibc: "Streams pipe error", musl: "No
        // error information"): ours and the number are what is pinned.
        assert_eq!(
            suspended.message(),
            "hw:1,0 was suspended while reading audio"
        );
        assert!(
            suspended.to_string().ends_with("(os error 86)"),
            "{suspended}"
        );
        let other = ioctl_error("hw:1,0", "starting the capture", Errno::EINVAL);
        assert_eq!(other.message(), "hw:1,0: starting the capture failed");
    }
}
