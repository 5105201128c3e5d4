//! The supervisor: keeps a stream alive for months.
//!
//! It is split the way quinn splits quinn-proto from its I/O:
//!
//! - [`core`]: every decision, sans-IO (no socket, no tokio, no clock): when to connect and
//!   where, how long to back off, what a refusal or a redirect means, the stall, source and
//!   systemd watchdogs, source restarts, reloads, the end of input. Driven by `handle_*(event,
//!   now)`, read with `poll_action()` and `poll_timeout()`, and tested on a virtual clock.
//! - `flow`: the frames' way from the input through the pipeline and the frame store
//!   ([`crate::store`]) to the socket; it reports what happened to the core.
//! - [`audio`]: the captured audio track's supervision (open, reopen with backoff, the silent
//!   device watchdog, whether the video waits for it), sans-IO like the core.
//! - `shell`: the tokio loop that waits on signals, the input, the socket and one deadline,
//!   and carries out the core's actions.
//!
//! Invariants: every wait also watches the signals; nothing per frame allocates; errors end the
//! program only when retrying cannot help (configuration, input, a bug) or retries are exhausted.

pub mod audio;
pub mod core;
mod flow;
mod shell;
mod waits;

pub use self::core::Ending;
pub use shell::run;

use crate::config::Config;
use crate::error::Result;

/// What happened so far, for the log, STATUS, and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Video frames handed to the socket.
    pub frames_sent: u64,
    /// Bytes written to the socket, on all connections.
    pub bytes_sent: u64,
    /// Access units not sent: before the first SPS/PPS/IDR, or unusable.
    pub frames_skipped: u64,
    /// Frames dropped: by the frame store's drop policy, at the input (too large), or while a
    /// connection waited for a keyframe.
    pub frames_dropped: u64,
    /// Connections that reached publishing.
    pub connections: u64,
    /// Connection attempts that failed or connections that were lost.
    pub failures: u64,
    /// Source restarts.
    pub source_restarts: u64,
}

/// Reads the configuration again (SIGHUP).
pub type Reload<'a> = &'a dyn Fn() -> Result<Config>;

/// `1 frame`, `2 frames`: a count with its noun, for log lines.
pub(crate) fn count(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// How often the progress line is logged: as configured, else every 5 s on a terminal (as
/// FFmpeg's) and every 5 minutes under a service manager or into a file.
pub(crate) fn stats_interval(config: &Config) -> Option<std::time::Duration> {
    use std::io::IsTerminal;
    let ms = config
        .stats_interval_ms
        .unwrap_or(if std::io::stderr().is_terminal() {
            5_000
        } else {
            300_000
        });
    (ms > 0).then(|| std::time::Duration::from_millis(ms))
}
