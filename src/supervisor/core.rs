//! The supervisor's decisions, sans-IO: every policy that keeps a stream alive for months, with
//! no socket, no tokio and no clock inside, in the manner of quinn-proto.
//!
//! The shell (`super::shell`) tells the core what happened with `handle_*(event, now)`, takes
//! what to do with [`Core::poll_action`], and wakes it at [`Core::poll_timeout`]. Time is
//! milliseconds on the shell's monotonic clock. The core decides:
//!
//! - **When to connect, and where.** A failed attempt is retried after a jittered exponential
//!   backoff capped at `--backoff-max`. A server that accepted the publish and took a keyframe,
//!   and then stayed up for `--backoff-reset` (2 s), was healthy: losing it starts a fast-retry window
//!   in which attempts come at most [`FAST_RETRY`] apart, so a restarted server gets us back within
//!   a second of listening. A server that accepts and drops at once is a refusal in disguise and
//!   backs off like one.
//! - **Refusals.** A refusal waits the whole cap, except one: "already publishing" soon after we
//!   lost a connection ourselves is our own stale publisher, which the server drops after its
//!   timeout; it is retried every [`STALE_RETRY`] for [`STALE_WINDOW`], then backed off.
//! - **Redirects** (Enhanced RTMP `ReconnectRequest`). The switch happens at the next keyframe
//!   (or after [`SWITCH_DEADLINE`]). A redirect never lowers security (an `rtmps` stream is never
//!   moved to `rtmp`), never carries the URL's `user:password` to another host unless the user
//!   allowed it, and a target that fails [`REDIRECT_ATTEMPTS`] times in a row gives way to the
//!   configured server.
//! - **Watchdogs.** A connection whose socket takes nothing for `--stall-timeout` is dropped; a
//!   live source silent for `--source-timeout` is restarted; systemd's watchdog is fed only while
//!   frames flow or the supervisor is visibly working on a recovery.
//! - **Sources.** A child that exits, a camera that fails or vanishes, a FIFO whose writer left:
//!   each is reopened after its own backoff, counted once, in one place.
//! - **Reloads**, **signals** and **the end of input**.
//!
//! Invariants: the core never reads a clock (every `now` is given); at most one connection exists
//! or is being made; every timer is in `Timers`, and [`Core::poll_timeout`] is their minimum;
//! a configuration, input or internal error ends the run, everything else is retried unless
//! `--max-retries` says otherwise.

use std::collections::VecDeque;
use std::time::Duration;

use log::{debug, error, info, warn};

use crate::backoff::{Backoff, Jitter};
use crate::config::Config;
use crate::error::{Error, Fault};
use crate::rtmp::auth::{AuthStep, Authenticator};
use crate::url::{RtmpUrl, Scheme};

/// The first retry after a failure comes within this long.
pub const FIRST_RETRY: Duration = Duration::from_millis(500);
/// After losing a healthy connection, attempts come at most this far apart...
pub const FAST_RETRY: Duration = Duration::from_millis(1000);
/// ...for this long, before the ordinary backoff takes over.
pub const FAST_RETRY_WINDOW: Duration = Duration::from_secs(60);
/// A connection lost within this long of the server's acceptance was probably refused.
pub const REFUSED_WITHIN: Duration = Duration::from_secs(1);
/// "Already publishing" after our own lost connection is retried this often...
pub const STALE_RETRY: Duration = Duration::from_millis(1000);
/// ...for this long after the loss (nginx-rtmp drops a silent publisher after its 60 s timeout).
pub const STALE_WINDOW: Duration = Duration::from_secs(90);
/// A redirect target that fails this many times in a row gives way to the configured server.
pub const REDIRECT_ATTEMPTS: u32 = 3;
/// A requested reconnect happens at the next keyframe, or after this long without one.
pub const SWITCH_DEADLINE: Duration = Duration::from_secs(10);
/// How often STATUS= is refreshed.
pub const STATUS_INTERVAL: Duration = Duration::from_secs(5);
/// During an outage, a reminder at warning level this often.
pub const OUTAGE_REMINDER: Duration = Duration::from_secs(300);

/// The kind of input, as far as policy cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceKind {
    /// A regular file: read as fast as the link takes it; its end ends the run.
    File,
    /// stdin or another pipe that cannot be opened again: its end ends the run.
    Pipe,
    /// A named FIFO: opened again when its writer leaves.
    Fifo,
    /// A child process's stdout (`exec:`): restarted when it exits.
    Exec,
    /// A V4L2 camera (and its encoder): reopened when it fails or vanishes.
    Device,
}

impl SourceKind {
    /// A live source cannot wait for the network: it is read at its own pace.
    pub fn is_live(self) -> bool {
        self != SourceKind::File
    }
}

/// What happened to the input.
#[derive(Debug)]
pub enum SourceEvent {
    /// The source is open (again) and frames may come; `name` says which (`ffmpeg[1234]`).
    Opened { kind: SourceKind, name: String },
    /// The source is not open (a camera that is not there yet): open it now, then retry.
    NotOpen,
    /// Opening it failed. `missing`: the device node is not there (yet).
    OpenFailed { error: Error, missing: bool },
    /// An access unit came.
    Frame,
    /// The input gave its first keyframe (after its SPS and PPS): it is H.264 worth publishing,
    /// so connecting now makes sense. Until then no connection is made, and a bad input leaves
    /// no empty recording on the server.
    Ready,
    /// A file or pipe reached its end: what is read is sent, then the run ends.
    Ended,
    /// A FIFO's writer closed it; its last frames were taken.
    WriterGone,
    /// The child exited after running for `ran_for`; `how` says how (exit code, signal).
    Exited { ran_for: Duration, how: String },
    /// Reading failed (a camera unplugged, an encoder error, a pipe error).
    Failed(Error),
    /// The input is not H.264 that can be sent: nothing to retry.
    Unusable(Error),
}

/// What happened to the connection.
#[derive(Debug)]
pub enum LinkEvent {
    /// The server accepted the publish.
    Publishing,
    /// A frame was handed to the connection.
    FrameSent { keyframe: bool },
    /// The socket took bytes; `idle`: nothing of ours waits to be written now.
    Wrote { idle: bool },
    /// The socket would not take bytes that wait to be written.
    Blocked,
    /// The attempt or the connection failed.
    Failed(Error),
    /// The server asked us to reconnect (Enhanced RTMP), to `tc_url` if given.
    ReconnectRequest { tc_url: Option<String> },
    /// The next frame to send is a keyframe: a requested switch happens now.
    KeyframeNext,
}

/// What the shell must do.
#[derive(Debug)]
pub enum Action {
    /// Open a connection to `url` (the key included), appending `auth_query` to connect.
    Connect {
        url: Box<RtmpUrl>,
        auth_query: Option<String>,
    },
    /// Close the connection: politely (unpublish, flush, wait for the server to close) or drop it.
    Close { graceful: bool },
    /// A new connection is publishing: ask the encoder for a keyframe if it can make one.
    ForceKeyframe,
    /// Close the input now (a camera that failed, a silent source); [`Action::OpenSource`] follows.
    CloseSource,
    /// Open the input again; `anew`: the configuration names another input (a reload).
    OpenSource { anew: bool },
    /// Tell systemd we are alive.
    Watchdog,
    /// Refresh systemd's STATUS=.
    Status,
    /// Log the progress line (frames, fps, current bitrate, drops, what waits in the store).
    Stats,
    /// Stop: close the connection politely and end the run without error.
    Finish(Ending),
    /// End the run with this error.
    Exit(Error),
}

/// How a run ended without error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// The input ended and everything was sent.
    EndOfInput,
    /// SIGINT or SIGTERM.
    Signal,
}

/// The connection, as policy sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkState {
    /// No connection; the next attempt is due at `retry_at`.
    Down { retry_at: u64 },
    /// An attempt is under way since `since`.
    Connecting { since: u64 },
    /// Publishing since `since`.
    Up {
        since: u64,
        /// A keyframe went out on this connection.
        keyframe_sent: bool,
        /// Bytes of ours wait for the socket, which last took some at `last_progress`.
        busy: bool,
        last_progress: u64,
    },
    /// Finished or exited: nothing more happens.
    Stopped,
}

/// The input, as policy sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SourceState {
    /// Frames may come; the last one (or the opening) was at `last_frame`.
    Running { since: u64, last_frame: u64 },
    /// Closed, to be opened again at `at`.
    Restarting { at: u64 },
    /// A child exited or a FIFO's writer left: the input is reopened when its last frames are out
    /// (the shell says [`SourceEvent::Opened`]); `at` is when.
    Waiting { at: u64 },
    /// A file or pipe ended.
    Ended,
}

/// Counters kept by the core, for the log, STATUS and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Connections that reached publishing.
    pub connections: u64,
    /// Attempts that failed and connections that were lost.
    pub failures: u64,
    /// Times the input was opened again.
    pub source_restarts: u64,
    /// Frames handed to connections.
    pub frames_sent: u64,
}

/// Where a redirect sent us, and how that is going.
#[derive(Clone, Debug)]
struct Redirect {
    url: RtmpUrl,
    /// Consecutive failed attempts at it.
    failures: u32,
}

/// A requested switch waiting for a keyframe.
#[derive(Clone, Debug)]
struct PendingSwitch {
    /// The new target; None: the same server again.
    to: Option<RtmpUrl>,
    deadline: u64,
}

/// The outage in progress, for its log lines.
#[derive(Clone, Debug)]
struct Outage {
    since: u64,
    attempts: u32,
    last_reason: String,
    reminded_at: u64,
}

/// An outage, as STATUS tells it.
#[derive(Clone, Copy, Debug)]
pub struct OutageView<'a> {
    pub since: u64,
    pub attempts: u32,
    pub reason: &'a str,
    /// When the next attempt is due (None while one is under way).
    pub retry_at: Option<u64>,
}

/// Options of the run that are not in the configuration.
#[derive(Clone, Copy, Debug, Default)]
pub struct CoreOptions {
    /// systemd's watchdog interval, if it watches us (WATCHDOG=1 is sent twice per interval).
    pub watchdog: Option<Duration>,
    /// Whether anyone reads STATUS= (systemd).
    pub status: bool,
    /// Redirects may carry the URL's user:password to another host.
    pub redirect_credentials: bool,
    /// How often the progress line is logged (None: never).
    pub stats: Option<Duration>,
}

/// The supervisor's policy. See the module documentation.
pub struct Core {
    config: Config,
    options: CoreOptions,
    kind: SourceKind,
    /// The input's name for messages (`/dev/video0`, `ffmpeg[1234]`).
    source_name: String,
    link: LinkState,
    source: SourceState,
    /// Connection retries.
    backoff: Backoff,
    /// Source restarts.
    source_backoff: Backoff,
    jitter: Jitter,
    auth: Authenticator,
    redirect: Option<Redirect>,
    switch: Option<PendingSwitch>,
    /// Attempts until then come at most [`FAST_RETRY`] apart.
    fast_until: Option<u64>,
    /// "Already publishing" until then is our own stale publisher.
    stale_until: Option<u64>,
    /// Consecutive refusals (a refusal that persists backs off).
    outage: Option<Outage>,
    watchdog_at: Option<u64>,
    watchdog_frames: u64,
    status_at: Option<u64>,
    stats_at: Option<u64>,
    /// Frames from the source since it was opened.
    source_frames: u64,
    /// The input gave a keyframe: connections may be made.
    input_ready: bool,
    counters: Counters,
    actions: VecDeque<Action>,
}

impl Core {
    /// A core for `config`, whose input (of `kind`, called `source_name` in messages) is open,
    /// or, for a camera that is not there yet, is looked for ([`SourceEvent::NotOpen`]). The
    /// first connection attempt is made as soon as the input is [`SourceEvent::Ready`].
    pub fn new(
        config: Config,
        (kind, source_name): (SourceKind, String),
        options: CoreOptions,
        seed: u64,
        now: u64,
    ) -> Core {
        let backoff = connection_backoff(&config);
        let source_backoff = source_backoff(&config);
        let auth = authenticator_for(&config.url, true);
        let mut core = Core {
            config,
            options,
            kind,
            source_name,
            link: LinkState::Down { retry_at: now },
            source: SourceState::Running {
                since: now,
                last_frame: now,
            },
            backoff,
            source_backoff,
            jitter: Jitter::new(seed),
            auth,
            redirect: None,
            switch: None,
            fast_until: None,
            stale_until: None,
            outage: None,
            watchdog_at: options.watchdog.map(|interval| now + ms(half(interval))),
            watchdog_frames: 0,
            status_at: options.status.then_some(now + ms(STATUS_INTERVAL)),
            stats_at: options.stats.map(|interval| now + ms(interval)),
            source_frames: 0,
            input_ready: false,
            counters: Counters::default(),
            actions: VecDeque::new(),
        };
        core.connect_if_due(now);
        core
    }

    /// The configuration in force (a reload replaces it).
    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn link(&self) -> LinkState {
        self.link
    }

    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// The kind of input in force.
    pub fn source_kind(&self) -> SourceKind {
        self.kind
    }

    /// Where the next or current connection goes (key included: never log it, log its Display).
    pub fn target(&self) -> &RtmpUrl {
        self.redirect.as_ref().map_or(&self.config.url, |r| &r.url)
    }

    /// The outage in progress, for STATUS: since when, how many attempts failed, the last reason,
    /// and when the next attempt is due.
    pub fn outage(&self) -> Option<OutageView<'_>> {
        let outage = self.outage.as_ref()?;
        Some(OutageView {
            since: outage.since,
            attempts: outage.attempts,
            reason: &outage.last_reason,
            retry_at: match self.link {
                LinkState::Down { retry_at } => Some(retry_at),
                _ => None,
            },
        })
    }

    /// Whether a switch waits for the next keyframe: the shell reports
    /// [`LinkEvent::KeyframeNext`] before it sends one.
    pub fn switch_pending(&self) -> bool {
        self.switch.is_some()
    }

    /// Whether the source is being brought back (closed, waiting to be reopened).
    pub fn source_down(&self) -> bool {
        matches!(
            self.source,
            SourceState::Restarting { .. } | SourceState::Waiting { .. }
        )
    }

    /// Whether the input reached its end (a file, a pipe).
    pub fn source_ended(&self) -> bool {
        self.source == SourceState::Ended
    }

    /// Whether the input should be read now (it is open and has not ended).
    pub fn wants_input(&self) -> bool {
        matches!(self.source, SourceState::Running { .. })
    }

    /// Whether actions wait to be taken.
    pub fn has_actions(&self) -> bool {
        !self.actions.is_empty()
    }

    /// The next thing for the shell to do.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`Core::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Option<u64> {
        if self.link == LinkState::Stopped {
            return None;
        }
        self.timers().next()
    }

    fn timers(&self) -> Timers {
        // No attempt is due before the input gave a keyframe ([`SourceEvent::Ready`] connects).
        let retry = match self.link {
            LinkState::Down { retry_at } if self.input_ready => Some(retry_at),
            _ => None,
        };
        let stall = match self.link {
            LinkState::Up {
                busy: true,
                last_progress,
                ..
            } if self.config.stall_timeout_ms > 0 => {
                Some(last_progress.saturating_add(self.config.stall_timeout_ms))
            }
            _ => None,
        };
        let source = match self.source {
            SourceState::Restarting { at } => Some(at),
            SourceState::Running { last_frame, .. }
                if self.kind.is_live() && self.config.source_timeout_ms > 0 =>
            {
                Some(last_frame.saturating_add(self.config.source_timeout_ms))
            }
            _ => None,
        };
        Timers {
            retry,
            stall,
            source,
            switch: self.switch.as_ref().map(|s| s.deadline),
            watchdog: self.watchdog_at,
            status: self.status_at,
            stats: self.stats_at,
        }
    }

    /// Time passed: fire every timer that is due.
    pub fn handle_timeout(&mut self, now: u64) {
        if self.link == LinkState::Stopped {
            return;
        }
        let timers = self.timers();
        if timers.stall.is_some_and(|at| now >= at) {
            let err = Error::network(format!(
                "the server accepted no data for {} s: the link is stalled",
                self.config.stall_timeout_ms / 1000
            ));
            self.actions.push_back(Action::Close { graceful: false });
            self.connection_failed(err, now);
        }
        if timers.switch.is_some_and(|at| now >= at) {
            debug!("no keyframe came for the requested reconnect: switching now");
            self.switch_now(now);
        }
        if timers.source.is_some_and(|at| now >= at) {
            match self.source {
                SourceState::Restarting { .. } => {
                    self.source = SourceState::Waiting { at: now };
                    self.actions.push_back(Action::OpenSource { anew: false });
                }
                SourceState::Running { .. } if self.kind == SourceKind::Pipe => {
                    self.exit(Error::input(format!(
                        "no frame from {} for {} s, and a pipe cannot be opened again",
                        self.source_name,
                        self.config.source_timeout_ms / 1000
                    )));
                    return;
                }
                SourceState::Running { .. } => {
                    warn!(
                        "no frame from {} for {} s: restarting it",
                        self.source_name,
                        self.config.source_timeout_ms / 1000
                    );
                    self.source = SourceState::Waiting { at: now };
                    self.actions.push_back(Action::CloseSource);
                    self.actions.push_back(Action::OpenSource { anew: false });
                }
                _ => {}
            }
        }
        if timers.watchdog.is_some_and(|at| now >= at) {
            let flowing = self.counters.frames_sent > self.watchdog_frames;
            let reconnecting = !matches!(self.link, LinkState::Up { .. });
            // Waiting for a camera or a child to come back, or for the first frame, is the
            // supervisor doing its job.
            if flowing || reconnecting || self.source_down() || self.source_frames == 0 {
                self.actions.push_back(Action::Watchdog);
            }
            self.watchdog_frames = self.counters.frames_sent;
            let interval = self.options.watchdog.map_or(STATUS_INTERVAL, half);
            self.watchdog_at = Some(now + ms(interval));
        }
        if timers.status.is_some_and(|at| now >= at) {
            self.actions.push_back(Action::Status);
            self.status_at = Some(now + ms(STATUS_INTERVAL));
        }
        if let (Some(at), Some(interval)) = (timers.stats, self.options.stats) {
            if now >= at {
                // Only while streaming: an outage has lines of its own.
                if matches!(self.link, LinkState::Up { .. }) {
                    self.actions.push_back(Action::Stats);
                }
                self.stats_at = Some(now + ms(interval));
            }
        }
        let remind = self
            .outage
            .as_ref()
            .is_some_and(|o| now.saturating_sub(o.reminded_at) >= ms(OUTAGE_REMINDER));
        if remind {
            let target = self.target_display();
            if let Some(outage) = &mut self.outage {
                outage.reminded_at = now;
                warn!(
                    "still not publishing to {target} after {} s and {}: {}",
                    (now - outage.since) / 1000,
                    super::count(u64::from(outage.attempts), "attempt"),
                    outage.last_reason
                );
            }
        }
        self.connect_if_due(now);
    }

    /// Something happened on the connection.
    pub fn handle_link(&mut self, event: LinkEvent, now: u64) {
        if self.link == LinkState::Stopped {
            return;
        }
        match event {
            LinkEvent::Publishing => self.publishing(now),
            LinkEvent::FrameSent { keyframe } => {
                self.counters.frames_sent += 1;
                if let LinkState::Up { keyframe_sent, .. } = &mut self.link {
                    *keyframe_sent |= keyframe;
                }
                if self.outage.is_some() {
                    self.note_recovery(now);
                }
            }
            LinkEvent::Wrote { idle } => {
                if let LinkState::Up {
                    busy,
                    last_progress,
                    ..
                } = &mut self.link
                {
                    *busy = !idle;
                    *last_progress = now;
                }
            }
            LinkEvent::Blocked => {
                if let LinkState::Up { busy, .. } = &mut self.link {
                    *busy = true;
                }
            }
            LinkEvent::Failed(err) => {
                self.actions.push_back(Action::Close { graceful: false });
                self.connection_failed(err, now);
            }
            LinkEvent::ReconnectRequest { tc_url } => self.reconnect_requested(tc_url, now),
            LinkEvent::KeyframeNext => {
                if self.switch.is_some() {
                    self.switch_now(now);
                }
            }
        }
        self.connect_if_due(now);
    }

    /// Something happened to the input.
    pub fn handle_source(&mut self, event: SourceEvent, now: u64) {
        if self.link == LinkState::Stopped {
            return;
        }
        match event {
            SourceEvent::Opened { kind, name } => {
                self.source_name = name;
                if self.source_frames > 0 || self.counters.source_restarts > 0 || self.source_down()
                {
                    self.counters.source_restarts += 1;
                }
                self.kind = kind;
                self.source_frames = 0;
                self.source = SourceState::Running {
                    since: now,
                    last_frame: now,
                };
            }
            SourceEvent::NotOpen => {
                self.source = SourceState::Restarting { at: now };
            }
            SourceEvent::OpenFailed { error, missing } => {
                if error.fault() != Fault::Input && !missing {
                    self.exit(error);
                    return;
                }
                let delay = self
                    .source_backoff
                    .next_delay(Duration::ZERO, self.jitter.unit());
                if missing {
                    warn!(
                        "{} is not there (unplugged?); looking again in {}",
                        self.source_name,
                        Wait(delay)
                    );
                } else {
                    warn!("{error}; trying again in {}", Wait(delay));
                }
                self.source = SourceState::Restarting {
                    at: now + ms(delay),
                };
            }
            SourceEvent::Ready => {
                if !self.input_ready {
                    self.input_ready = true;
                    self.connect_if_due(now);
                }
            }
            SourceEvent::Frame => {
                self.source_frames += 1;
                if let SourceState::Running { last_frame, .. } = &mut self.source {
                    *last_frame = now;
                }
            }
            SourceEvent::Ended => {
                info!("end of input from {}", self.source_name);
                self.source = SourceState::Ended;
            }
            SourceEvent::WriterGone => {
                info!(
                    "the writer of {} closed it; waiting for the next writer",
                    self.source_name
                );
                self.source = SourceState::Waiting { at: now };
                self.actions.push_back(Action::OpenSource { anew: false });
            }
            SourceEvent::Exited { ran_for, how } => {
                let delay = self.source_backoff.next_delay(ran_for, self.jitter.unit());
                warn!(
                    "{} ended ({how}); starting it again in {}",
                    self.source_name,
                    Wait(delay)
                );
                self.source = SourceState::Restarting {
                    at: now + ms(delay),
                };
            }
            SourceEvent::Failed(err) => {
                let restartable = matches!(self.kind, SourceKind::Device | SourceKind::Exec);
                if err.fault() != Fault::Input || !restartable {
                    self.exit(err);
                    return;
                }
                let healthy = match self.source {
                    SourceState::Running { since, .. } => now.saturating_sub(since),
                    _ => 0,
                };
                let delay = self
                    .source_backoff
                    .next_delay(Duration::from_millis(healthy), self.jitter.unit());
                warn!("{err}; opening it again in {}", Wait(delay));
                self.source = SourceState::Restarting {
                    at: now + ms(delay),
                };
                self.actions.push_back(Action::CloseSource);
            }
            SourceEvent::Unusable(err) => self.exit(err),
        }
    }

    /// The input ended (see [`SourceEvent::Ended`]) and everything read was sent: the run is done.
    /// Returns whether the core finished.
    pub fn handle_drained(&mut self, now: u64) -> bool {
        let _ = now;
        if self.source == SourceState::Ended && matches!(self.link, LinkState::Up { .. }) {
            info!("end of input after {} frames", self.counters.frames_sent);
            self.finish(Ending::EndOfInput);
            return true;
        }
        false
    }

    /// SIGINT or SIGTERM.
    pub fn handle_stop(&mut self, signal: &str, now: u64) {
        let _ = now;
        if self.link == LinkState::Stopped {
            return;
        }
        info!("{signal}: stopping");
        self.finish(Ending::Signal);
    }

    /// SIGHUP: the configuration read again (or why it could not be).
    pub fn handle_reload(&mut self, new: Result<Config, Error>, now: u64) {
        let new = match new {
            Ok(new) => new,
            Err(e) => {
                error!("SIGHUP: keeping the running configuration: {e}");
                return;
            }
        };
        let input_changed = new.input != self.config.input || new.device != self.config.device;
        let destination_changed = new.url != self.config.url
            || new.chunk_size != self.config.chunk_size
            || new.timeout_ms != self.config.timeout_ms
            || new.ca_file != self.config.ca_file
            || new.tls_fingerprint != self.config.tls_fingerprint
            || new.insecure != self.config.insecure;
        let old = &self.config;
        if new.frame_rate != old.frame_rate
            || new.start_timestamp_ms != old.start_timestamp_ms
            || new.queue_size != old.queue_size
            || new.queue_time_ms != old.queue_time_ms
            || new.max_frame_size != old.max_frame_size
            || new.audio != old.audio
        {
            warn!(
                "SIGHUP: fps, start-timestamp, queue, frame-size and audio changes apply after a \
                 restart"
            );
        }
        let backoff_changed = new.backoff_max_ms != old.backoff_max_ms
            || new.backoff_reset_ms != old.backoff_reset_ms;
        info!(
            "SIGHUP: configuration reloaded{}{}",
            if destination_changed {
                "; reconnecting to the new destination"
            } else {
                ""
            },
            if input_changed {
                "; reopening the new input"
            } else {
                ""
            }
        );
        // What is fixed for the life of the process stays.
        let mut new = new;
        new.frame_rate = self.config.frame_rate;
        new.start_timestamp_ms = self.config.start_timestamp_ms;
        new.queue_size = self.config.queue_size;
        new.queue_time_ms = self.config.queue_time_ms;
        new.max_frame_size = self.config.max_frame_size;
        // The audio track is announced in onMetaData and sized into the frame store.
        new.audio = self.config.audio.clone();
        self.config = new;
        if backoff_changed {
            self.backoff = connection_backoff(&self.config);
            self.source_backoff = source_backoff(&self.config);
        }
        if input_changed {
            self.source = SourceState::Waiting { at: now };
            self.actions.push_back(Action::CloseSource);
            self.actions.push_back(Action::OpenSource { anew: true });
        }
        if destination_changed {
            self.redirect = None;
            self.switch = None;
            self.auth = authenticator_for(&self.config.url, true);
            self.backoff.reset();
            self.fast_until = None;
            self.stale_until = None;
            self.outage = None;
            if matches!(
                self.link,
                LinkState::Up { .. } | LinkState::Connecting { .. }
            ) {
                let graceful = matches!(self.link, LinkState::Up { .. });
                self.actions.push_back(Action::Close { graceful });
            }
            self.link = LinkState::Down { retry_at: now };
            self.connect_if_due(now);
        }
    }

    fn publishing(&mut self, now: u64) {
        // A later connection starts without the one-time answer of this one.
        self.auth.reset();
        info!("publishing to {}", self.target_display());
        if let Some(redirect) = &mut self.redirect {
            redirect.failures = 0;
        }
        self.counters.connections += 1;
        self.link = LinkState::Up {
            since: now,
            keyframe_sent: false,
            busy: false,
            last_progress: now,
        };
        // A new connection starts at a keyframe: ask the encoder for one now rather than wait
        // up to a whole keyframe interval.
        self.actions.push_back(Action::ForceKeyframe);
    }

    /// An attempt failed or a connection was lost: decide whether and when to retry.
    fn connection_failed(&mut self, err: Error, now: u64) {
        if matches!(err.fault(), Fault::Config | Fault::Ours | Fault::Input) {
            self.exit(err);
            return;
        }
        // A refused connect may be an authentication challenge: answer it at once.
        if let Some(description) = err.server_description() {
            let random = self.jitter.next_u64() as u32;
            match self.auth.on_connect_rejected(description, random) {
                AuthStep::Retry => {
                    info!(
                        "the server asks for authentication ({}): answering",
                        self.auth.scheme().map(|s| s.authmod()).unwrap_or("unknown")
                    );
                    self.link = LinkState::Down { retry_at: now };
                    return;
                }
                AuthStep::Fail(reason) => {
                    self.auth.reset();
                    let err = Error::rejected(format!("authentication failed: {reason}"));
                    return self.connection_failed(err, now);
                }
                AuthStep::NotAuth => {}
            }
        }
        self.auth.reset();
        self.switch = None;
        self.counters.failures += 1;
        let lost = match self.link {
            LinkState::Up {
                since,
                keyframe_sent,
                ..
            } => Some((now.saturating_sub(since), keyframe_sent)),
            _ => None,
        };
        let mut err = err;
        let delay = match lost {
            // The server proved healthy: it restarted or the network blinked. Be back at once,
            // and keep trying often while it comes back.
            Some((up_for, true)) if up_for >= self.config.backoff_reset_ms => {
                // A new incident: its first failure is news.
                self.outage = None;
                self.backoff.reset();
                self.fast_until = Some(now + ms(FAST_RETRY_WINDOW));
                self.stale_until = Some(now + ms(STALE_WINDOW));
                self.backoff.next_delay(Duration::ZERO, self.jitter.unit())
            }
            // Accepted and dropped at once: a refusal in disguise (nginx-rtmp's access rules).
            Some((up_for, _)) if up_for < ms(REFUSED_WITHIN) && err.fault() == Fault::Network => {
                debug!("lost right after the publish was accepted: {err}");
                err = Error::rejected(
                    "the server dropped the connection right after accepting the publish: it probably \
                     refuses this stream (nginx-rtmp access rules do this)",
                );
                self.backoff.refused()
            }
            // Up for a while but short of proving the server healthy: a flapping server.
            Some((up_for, _)) => {
                self.stale_until = Some(now + ms(STALE_WINDOW));
                self.backoff
                    .next_delay(Duration::from_millis(up_for), self.jitter.unit())
            }
            None if err.fault() == Fault::Rejected => {
                if self.is_stale_publisher(&err, now) {
                    info!(
                        "{err}: probably our own connection that was lost, which the server has not \
                         noticed yet; trying again in {:.1} s",
                        STALE_RETRY.as_secs_f64()
                    );
                    self.backoff.note_failure();
                    STALE_RETRY
                } else {
                    self.backoff.refused()
                }
            }
            None => {
                let delay = self.backoff.next_delay(Duration::ZERO, self.jitter.unit());
                match self.fast_until {
                    Some(until) if now < until => delay.min(FAST_RETRY),
                    _ => delay,
                }
            }
        };
        if let Some(redirect) = &mut self.redirect {
            redirect.failures += 1;
            if redirect.failures >= REDIRECT_ATTEMPTS {
                warn!(
                    "{} failed {} times: going back to {}",
                    redirect.url, redirect.failures, &self.config.url
                );
                self.redirect = None;
                self.auth = authenticator_for(&self.config.url, true);
            }
        }
        if let Some(limit) = self.config.max_retries {
            if self.backoff.failures() > limit {
                error!("{err}; giving up after {limit} retries (--max-retries)");
                self.exit(err);
                return;
            }
        }
        self.note_outage(&err, delay, now);
        self.link = LinkState::Down {
            retry_at: now.saturating_add(ms(delay)),
        };
    }

    /// An outage ends when a connection proves the server healthy (a keyframe taken and
    /// `--backoff-reset` of streaming), not at the publish: a server that accepts and drops at
    /// once is still down, and its repeated refusals stay quiet.
    fn note_recovery(&mut self, now: u64) {
        let LinkState::Up {
            since,
            keyframe_sent: true,
            ..
        } = self.link
        else {
            return;
        };
        if now.saturating_sub(since) < self.config.backoff_reset_ms {
            return;
        }
        if let Some(outage) = self.outage.take() {
            warn!(
                "publishing again after an outage of {:.1} s ({}; the last: {})",
                since.saturating_sub(outage.since) as f64 / 1000.0,
                super::count(u64::from(outage.attempts), "failed attempt"),
                outage.last_reason
            );
        }
    }

    /// "Already publishing" within the window after we lost a connection ourselves.
    fn is_stale_publisher(&self, err: &Error, now: u64) -> bool {
        let text = err.message().to_ascii_lowercase();
        let already = text.contains("already publishing")
            || text.contains("already in use")
            || text.contains("streambusy")
            || text.contains("stream busy");
        already && self.stale_until.is_some_and(|until| now < until)
    }

    /// Logs a failure: the first of an outage at error level with when the next try is, repeats
    /// of the same reason at debug, a new reason at warning, and a reminder every few minutes.
    fn note_outage(&mut self, err: &Error, delay: Duration, now: u64) {
        let text = err.to_string();
        let retry = format!("retrying in {}", Wait(delay));
        match &mut self.outage {
            None => {
                error!("{text}; {retry}");
                self.outage = Some(Outage {
                    since: now,
                    attempts: 1,
                    last_reason: text,
                    reminded_at: now,
                });
            }
            Some(outage) => {
                outage.attempts += 1;
                if outage.last_reason == text {
                    debug!("again: {text}; {retry} (attempt {})", outage.attempts);
                } else {
                    warn!("{text}; {retry} (attempt {})", outage.attempts);
                    outage.last_reason = text;
                }
            }
        }
    }

    /// The server asked for a reconnect: decide where to, and wait for a keyframe.
    fn reconnect_requested(&mut self, tc_url: Option<String>, now: u64) {
        if !matches!(self.link, LinkState::Up { .. }) {
            return;
        }
        let current = self.target().clone();
        let to = match tc_url {
            None => {
                info!("the server asks us to reconnect: switching at the next keyframe");
                None
            }
            Some(tc_url) => match current.with_tc_url(&tc_url) {
                Err(e) => {
                    warn!("{e}; reconnecting to the same server");
                    None
                }
                Ok(url) if current.scheme == Scheme::Rtmps && url.scheme != Scheme::Rtmps => {
                    warn!(
                        "the server asks us to reconnect without TLS ({}): refused, it would expose \
                         the stream key; reconnecting to the same server over TLS",
                        url
                    );
                    None
                }
                Ok(mut url) => {
                    let same_host =
                        url.host.eq_ignore_ascii_case(&current.host) && url.port == current.port;
                    if !same_host && url.credentials.is_some() && !self.options.redirect_credentials
                    {
                        warn!(
                            "the server redirects us to another host ({}): the URL's user and password \
                             are not sent there (--redirect-credentials allows it)",
                            url
                        );
                        url.credentials = None;
                    }
                    info!(
                        "the server asks us to reconnect to {url}: switching at the next keyframe"
                    );
                    Some(url)
                }
            },
        };
        self.switch = Some(PendingSwitch {
            to,
            deadline: now + ms(SWITCH_DEADLINE),
        });
    }

    /// Closes the connection politely and connects at once to the switch's target.
    fn switch_now(&mut self, now: u64) {
        let Some(switch) = self.switch.take() else {
            return;
        };
        match &switch.to {
            Some(url) => info!("reconnecting to {url}, as the server asked"),
            None => info!("reconnecting, as the server asked"),
        }
        if let Some(url) = switch.to {
            let same_as_configured = url == self.config.url;
            self.auth = authenticator_for(&url, true);
            self.redirect = (!same_as_configured).then_some(Redirect { url, failures: 0 });
        }
        self.actions.push_back(Action::Close { graceful: true });
        self.link = LinkState::Down { retry_at: now };
        self.connect_if_due(now);
    }

    fn connect_if_due(&mut self, now: u64) {
        if !self.input_ready {
            return;
        }
        if let LinkState::Down { retry_at } = self.link {
            if now >= retry_at {
                let url = self.target().clone();
                match self.auth.connect_query_redacted() {
                    Some(query) => debug!("connecting to {url} with authentication {query}"),
                    None => debug!("connecting to {url}"),
                }
                self.actions.push_back(Action::Connect {
                    url: Box::new(url),
                    auth_query: self.auth.connect_query(),
                });
                self.link = LinkState::Connecting { since: now };
            }
        }
    }

    fn finish(&mut self, ending: Ending) {
        self.actions.push_back(Action::Finish(ending));
        self.link = LinkState::Stopped;
    }

    fn exit(&mut self, err: Error) {
        self.actions.push_back(Action::Exit(err));
        self.link = LinkState::Stopped;
    }

    fn target_display(&self) -> String {
        self.target().to_string()
    }
}

/// Every timer of the core; [`Core::poll_timeout`] is the earliest.
#[derive(Clone, Copy, Debug, Default)]
struct Timers {
    /// The next connection attempt.
    retry: Option<u64>,
    /// The write-stall watchdog.
    stall: Option<u64>,
    /// The source watchdog, or the source's reopening.
    source: Option<u64>,
    /// A requested switch that found no keyframe.
    switch: Option<u64>,
    /// systemd's watchdog.
    watchdog: Option<u64>,
    /// STATUS=.
    status: Option<u64>,
    /// The progress line.
    stats: Option<u64>,
}

impl Timers {
    fn next(&self) -> Option<u64> {
        [
            self.retry,
            self.stall,
            self.source,
            self.switch,
            self.watchdog,
            self.status,
            self.stats,
        ]
        .into_iter()
        .flatten()
        .min()
    }
}

/// A wait as a person reads it: `40 ms` below a second, else `2.3 s` (never "0.0 s").
pub struct Wait(pub Duration);

impl std::fmt::Display for Wait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.as_millis() {
            ms @ 0..=999 => write!(f, "{ms} ms"),
            _ => write!(f, "{:.1} s", self.0.as_secs_f64()),
        }
    }
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

fn half(d: Duration) -> Duration {
    d / 2
}

fn connection_backoff(config: &Config) -> Backoff {
    Backoff::new(
        FIRST_RETRY,
        Duration::from_millis(config.backoff_max_ms),
        Duration::from_millis(config.backoff_reset_ms),
    )
}

fn source_backoff(config: &Config) -> Backoff {
    Backoff::new(
        FIRST_RETRY,
        Duration::from_millis(config.backoff_max_ms),
        Duration::from_secs(60),
    )
}

/// The authenticator for the URL's credentials (empty ones when there are none: a server that
/// asks for authentication then gets a clear "put user:password@ in the URL").
fn authenticator_for(url: &RtmpUrl, with_credentials: bool) -> Authenticator {
    let (user, password) = if with_credentials {
        url.credentials.clone().unwrap_or_default()
    } else {
        Default::default()
    };
    Authenticator::new(user, password, url.app.clone())
}

#[cfg(test)]
mod tests;
