//! Readiness of a V4L2 device for tokio: [`WatchedDevice`] owns a [`Device`] registered with
//! tokio's `AsyncFd`.
//!
//! `AsyncFd::register` is unsafe since tokio 1.52: the fd must stay open and mean the same file
//! for as long as it is registered. A `Device` owns its fd (an `OwnedFd`, closed only on drop), and
//! `WatchedDevice` never hands out `&mut Device`, so nothing can close or swap the fd while it is
//! registered. That is the whole reason this type exists, and why it lives in the V4L2 layer with
//! the rest of the crate's unsafe code.
//!
//! Register only once buffers are queued and the queue streams: videobuf2 reports POLLERR for a
//! capture queue that is not streaming or has nothing queued (see [`super::device`]).
#![allow(unsafe_code)]

use std::io;

use tokio::io::unix::{AsyncFd, AsyncFdReadyGuard};
use tokio::io::Interest;

use super::Device;

/// A device whose readiness tokio watches.
pub struct WatchedDevice {
    fd: AsyncFd<Device>,
}

impl WatchedDevice {
    /// Registers `device` with the current tokio runtime for `interest`. Must be called within a
    /// tokio runtime.
    pub fn new(device: Device, interest: Interest) -> io::Result<WatchedDevice> {
        // SAFETY: `Device` owns its fd (`OwnedFd`), which stays open and refers to the same open
        // file until the `Device` is dropped, and `as_raw_fd` always returns that fd. The
        // `AsyncFd` owns the `Device` and this type only lends it out shared (`&Device` has no
        // way to close or replace the fd), so the fd outlives the registration.
        let fd = unsafe { AsyncFd::register_with_interest(device, interest) }
            .map_err(|e| e.into_parts().1)?;
        Ok(WatchedDevice { fd })
    }

    pub fn device(&self) -> &Device {
        self.fd.get_ref()
    }

    /// Waits until epoll reports any of `interest`: readable, writable, or (PRIORITY) an event
    /// is pending. A memory-to-memory device needs all three on its one fd.
    pub async fn ready(&self, interest: Interest) -> io::Result<AsyncFdReadyGuard<'_, Device>> {
        self.fd.ready(interest).await
    }
}
