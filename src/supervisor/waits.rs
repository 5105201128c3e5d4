//! What the shell waits on, and how: signals, the link, the input, and the one absolute sleep
//! that paces a file. Each is a small future (or call) that moves no frame and decides nothing.

use tokio::signal::unix::{signal, Signal, SignalKind};

use std::future::Future;
use std::pin::Pin;

use crate::driver::Connection;
use crate::error::{Error, Fault, Result};
use crate::source::audio::{AudioEvent, AudioInput};
use crate::source::{Input, InputEvent};

use super::flow::Flow;

type Connecting = Pin<Box<dyn Future<Output = Result<Box<Connection>>>>>;

/// The connection, as I/O: the core knows what state it is in.
pub(super) enum Link {
    None,
    Connecting(Connecting),
    Up(Box<Connection>),
}

impl Link {
    pub(super) fn conn(&mut self) -> Option<&mut Connection> {
        match self {
            Link::Up(conn) => Some(conn),
            _ => None,
        }
    }
}

/// What woke the shell.
pub(super) enum Wake {
    Stop(&'static str),
    Reload,
    Connected(Result<Box<Connection>>),
    /// The socket is readable (`read`) or writable, or reports an error.
    Socket {
        ready: Result<()>,
        read: bool,
    },
    Input(Result<InputEvent>),
    Audio(Result<AudioEvent>),
    Deadline,
    More,
}

/// Waits for what the link needs next.
pub(super) async fn link_wait(link: &mut Link) -> Wake {
    match link {
        Link::None => std::future::pending().await,
        Link::Connecting(connecting) => Wake::Connected(connecting.as_mut().await),
        Link::Up(conn) => {
            tokio::select! {
                biased;
                ready = conn.readable() => Wake::Socket { ready, read: true },
                ready = conn.writable(), if !conn.is_idle() => Wake::Socket { ready, read: false },
            }
        }
    }
}

/// Waits on the input: a byte stream is read straight into the frame store's ring, a camera is
/// waited on until it has a frame. Called only when [`Flow::input_room`] said there is room.
pub(super) async fn wait_input(input: &mut Input, flow: &mut Flow, now: u64) -> Result<InputEvent> {
    let buf = if input.reads_bytes() {
        flow.read_buf(now)
    } else {
        &mut []
    };
    input.next_event(buf).await
}

/// Waits for the microphone's next AAC frame; for ever when there is none (or it is closed).
pub(super) async fn wait_audio(audio: &mut Option<AudioInput>) -> Result<AudioEvent> {
    match audio {
        Some(audio) => audio.next().await,
        None => std::future::pending().await,
    }
}

/// SIGINT/SIGTERM (stop) and SIGHUP (reload).
pub(super) struct Signals {
    interrupt: Signal,
    terminate: Signal,
    hangup: Signal,
}

impl Signals {
    pub(super) fn new() -> Result<Signals> {
        let register = |kind| {
            signal(kind).map_err(|e| Error::io(Fault::Ours, "cannot install signal handlers", e))
        };
        Ok(Signals {
            interrupt: register(SignalKind::interrupt())?,
            terminate: register(SignalKind::terminate())?,
            hangup: register(SignalKind::hangup())?,
        })
    }

    pub(super) async fn next(&mut self) -> Wake {
        tokio::select! {
            _ = self.interrupt.recv() => Wake::Stop("SIGINT"),
            _ = self.terminate.recv() => Wake::Stop("SIGTERM"),
            _ = self.hangup.recv() => Wake::Reload,
        }
    }
}

/// Sleeps until `deadline` (CLOCK_MONOTONIC, which tokio's `Instant` is on Linux), blocking
/// the thread: one system call, with no timer to arm or cancel.
pub(super) fn sleep_until_monotonic(deadline: tokio::time::Instant) {
    use nix::time::{clock_gettime, clock_nanosleep, ClockId, ClockNanosleepFlags};
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    let Ok(now) = clock_gettime(ClockId::CLOCK_MONOTONIC) else {
        return std::thread::sleep(left);
    };
    let target = now + nix::sys::time::TimeSpec::from_duration(left);
    loop {
        match clock_nanosleep(
            ClockId::CLOCK_MONOTONIC,
            ClockNanosleepFlags::TIMER_ABSTIME,
            &target,
        ) {
            Err(nix::errno::Errno::EINTR) => continue,
            _ => return,
        }
    }
}
