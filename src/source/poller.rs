//! A poll(2) thread that tells the event loop when a V4L2 device has something: the readiness
//! source for cameras.
//!
//! Why not tokio's `AsyncFd` (epoll)? epoll asks a driver's `poll` to join its wait queue once,
//! when the fd is added, and v4l2loopback (a common "camera", and the one the VM tests use) only
//! joins it when no frame is ready at that moment: registered while a frame waits, the fd never
//! wakes epoll again (seen: frames read only when a timer happened to wake the loop). poll(2)
//! asks the driver afresh on every call, which every driver gets right. It is also level
//! triggered, so the POLLERR that videobuf2 reports while nothing is queued cannot leave a stale
//! edge behind: the caller sees each report and decides.
//!
//! The protocol: [`DevicePoller::wait`] arms the thread and awaits a [`Notify`]; the armed thread
//! polls the device (and a socket that wakes it on drop), disarms, stores what it saw and
//! notifies. The thread polls only while armed, so a frame the loop has not taken yet cannot make
//! it spin. A wait cancelled by `select!` leaves the thread armed; its later notification is
//! kept as a permit and makes the next wait return at once, which costs one extra look.
//!
//! Invariants: one thread per device, no busy loop (the thread sleeps in poll or on the condvar),
//! and dropping the poller stops and joins the thread at once.

use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use tokio::sync::Notify;

use crate::error::{Error, Fault, Result};
use crate::v4l2::{Device, Readiness};

struct State {
    armed: bool,
    stop: bool,
    /// What the last poll saw, or why it failed.
    last: std::result::Result<Readiness, Errno>,
}

struct Shared {
    state: Mutex<State>,
    armed: Condvar,
    ready: Notify,
}

impl Default for State {
    fn default() -> Self {
        State {
            armed: false,
            stop: false,
            last: Ok(Readiness::default()),
        }
    }
}

/// Watches one device from a thread of its own.
pub struct DevicePoller {
    shared: Arc<Shared>,
    wake: UnixStream,
    thread: Option<JoinHandle<()>>,
    name: String,
}

impl DevicePoller {
    /// Starts a thread that polls `device` for `events` (POLLIN for a capture queue, POLLOUT for
    /// an output queue, POLLPRI for events) whenever [`DevicePoller::wait`] asks.
    pub fn new(device: &Device, events: PollFlags) -> Result<DevicePoller> {
        let name = device.name().to_string();
        let ours = |e| Error::io(Fault::Ours, format!("cannot watch {name}"), e);
        let fd = device.as_fd().try_clone_to_owned().map_err(ours)?;
        let (wake, wake_rx) = UnixStream::pair().map_err(ours)?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            armed: Condvar::new(),
            ready: Notify::new(),
        });
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("v4l2-poll".into())
                .spawn(move || poll_loop(fd, wake_rx, events, &shared))
                .map_err(ours)?
        };
        Ok(DevicePoller {
            shared,
            wake,
            thread: Some(thread),
            name,
        })
    }

    /// Waits until the device reports something (or an error); cancel-safe.
    pub async fn wait(&self) -> Result<Readiness> {
        {
            let mut state = lock(&self.shared);
            state.armed = true;
        }
        self.shared.armed.notify_one();
        self.shared.ready.notified().await;
        let last = lock(&self.shared).last;
        last.map_err(|errno| {
            Error::io(
                Fault::Input,
                format!("cannot poll {}", self.name),
                errno.into(),
            )
        })
    }
}

impl Drop for DevicePoller {
    fn drop(&mut self) {
        lock(&self.shared).stop = true;
        self.shared.armed.notify_one();
        let _ = self.wake.write_all(&[1]);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, State> {
    // A poisoned lock only means the other side panicked; the state is plain data.
    shared.state.lock().unwrap_or_else(|e| e.into_inner())
}

fn poll_loop(fd: OwnedFd, wake: UnixStream, events: PollFlags, shared: &Shared) {
    loop {
        {
            let mut state = lock(shared);
            while !state.armed && !state.stop {
                state = shared.armed.wait(state).unwrap_or_else(|e| e.into_inner());
            }
            if state.stop {
                return;
            }
        }
        let mut fds = [
            PollFd::new(fd.as_fd(), events),
            PollFd::new(wake.as_fd(), PollFlags::POLLIN),
        ];
        let outcome = match nix::poll::poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {
                if fds[1].any().unwrap_or(false) {
                    return;
                }
                let seen = fds[0].revents().unwrap_or(PollFlags::empty());
                Ok(Readiness {
                    capture: seen.contains(PollFlags::POLLIN),
                    output: seen.contains(PollFlags::POLLOUT),
                    event: seen.contains(PollFlags::POLLPRI),
                    error: seen
                        .intersects(PollFlags::POLLERR | PollFlags::POLLHUP | PollFlags::POLLNVAL),
                })
            }
            Err(Errno::EINTR) => continue,
            Err(errno) => Err(errno),
        };
        {
            let mut state = lock(shared);
            state.armed = false;
            state.last = outcome;
        }
        shared.ready.notify_one();
        if outcome.is_err() {
            // Do not spin on a failing poll: the caller decides, and arms again if it wants.
            continue;
        }
    }
}
