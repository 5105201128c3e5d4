//! The tokio shell around the [`Core`]: it waits on signals, the input, the socket and one
//! deadline, moves bytes (through [`Flow`]), tells the core what happened and carries out its
//! actions. It decides nothing.
//!
//! Invariants: every wait also watches the signals; the only clock read is [`Clock`]; the core
//! hears every event before the shell waits again.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use log::{debug, info, warn};
use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::config::Config;
use crate::driver::{sleep_until_option, Clock, Connection};
use crate::error::{Error, Fault, Result};
use crate::notify::Notifier;
use crate::source::Input;
use crate::url::{RtmpUrl, Scheme};

use super::core::{Action, Core, CoreOptions, Ending, LinkEvent, SourceEvent, SourceKind};
use super::flow::{write, Flow};
use super::{Progress, Reload};

/// The longest gap between a paced file's frames slept without watching anything else.
const PACE_SLEEP_MAX_MS: u64 = 100;

type Connecting = Pin<Box<dyn Future<Output = Result<Box<Connection>>>>>;

/// The connection, as I/O: the core knows what state it is in.
enum Link {
    None,
    Connecting(Connecting),
    Up(Box<Connection>),
}

impl Link {
    fn conn(&mut self) -> Option<&mut Connection> {
        match self {
            Link::Up(conn) => Some(conn),
            _ => None,
        }
    }
}

/// What woke the shell.
enum Wake {
    Stop(&'static str),
    Reload,
    Connected(Result<Box<Connection>>),
    Readable(Result<()>),
    Writable(Result<()>),
    Input(Result<Option<usize>>),
    Deadline,
    More,
}

/// Runs until the input ends, a signal stops it, or an error that retrying cannot fix.
pub async fn run(
    config: Config,
    reload: Reload<'_>,
    notifier: &Notifier,
    on_frame: &mut dyn FnMut(&Progress),
) -> Result<(Ending, Progress)> {
    let clock = Clock::new();
    let mut signals = Signals::new()?;
    let mut input = Input::open_config(&config).await?;
    let kind = input.kind();
    let options = CoreOptions {
        watchdog: notifier.watchdog_interval(),
        status: notifier.is_enabled(),
        redirect_credentials: config.redirect_credentials,
    };
    let mut tls = tls_config_for(&config)?;
    let seed = crate::backoff::Jitter::from_entropy().next_u64();
    let source = (kind, input.name().to_string());
    let mut core = Core::new(config, source, options, seed, clock.now_ms());
    let mut flow = Flow::new(&core, &input);
    if input.is_down() {
        core.handle_source(SourceEvent::NotOpen, clock.now_ms());
    } else {
        info!(
            "reading H.264 from {}{}",
            input.name(),
            if kind.is_live() { " (live)" } else { "" }
        );
    }
    // Ready once the configuration is valid and the input open: a server that is down at boot
    // must not keep systemd waiting (it would kill the service after TimeoutStartSec).
    notifier.ready_with_status(&format!(
        "starting: reading {}, connecting to {}",
        input.name(),
        core.config().url
    ));
    let mut link = Link::None;
    loop {
        while let Some(action) = core.poll_action() {
            match action {
                Action::Connect { url, auth_query } => {
                    let mut attempt = core.config().clone();
                    if url.scheme == Scheme::Rtmps && tls.is_none() {
                        tls = tls_config_for(&attempt)?;
                    }
                    attempt.url = *url;
                    let tls = tls.clone();
                    link = Link::Connecting(Box::pin(async move {
                        Connection::open(&attempt, tls, clock, auth_query)
                            .await
                            .map(Box::new)
                    }));
                }
                Action::Close { graceful } => {
                    if let Link::Up(conn) = std::mem::replace(&mut link, Link::None) {
                        let bytes_sent = conn.bytes_sent();
                        if graceful {
                            conn.close(flow.external()).await;
                        }
                        flow.disconnected(bytes_sent);
                    }
                }
                Action::ForceKeyframe => match input.force_keyframe() {
                    Ok(true) => debug!("asked {} for a keyframe", input.name()),
                    Ok(false) => {}
                    Err(e) => warn!("cannot ask {} for a keyframe: {e}", input.name()),
                },
                Action::CloseSource => input.close().await,
                Action::OpenSource { anew } => {
                    // The complete frames of the old byte stream go first.
                    flow.pass(&mut input, link.conn(), &mut core, &clock, on_frame);
                    let now = clock.now_ms();
                    match open_source(&mut input, core.config(), anew).await {
                        Ok(()) => {
                            let kind = input.kind();
                            flow.source_reopened(&input, kind);
                            info!("started {}", input.name());
                            let name = input.name().to_string();
                            core.handle_source(SourceEvent::Opened { kind, name }, now);
                        }
                        Err(error) => {
                            let missing = input.device_missing();
                            core.handle_source(SourceEvent::OpenFailed { error, missing }, now);
                        }
                    }
                }
                Action::Watchdog => notifier.watchdog(),
                Action::Status => {
                    let progress = flow.progress(&core, link.conn().map(|c| &*c));
                    notifier.status(&status_line(&core, &flow, &progress, &clock));
                }
                Action::Finish(ending) => {
                    notifier.stopping();
                    let progress = flow.progress(&core, link.conn().map(|c| &*c));
                    let close = async {
                        if let Link::Up(conn) = link {
                            conn.close(flow.external()).await;
                        }
                    };
                    // The unpublish and the child's shutdown run side by side: SIGTERM must end
                    // us within a second.
                    tokio::join!(close, input.shutdown());
                    info!(
                        "sent {} frames, {} bytes in {:.1} s; {} connections, {} failures, {} frames dropped",
                        progress.frames_sent,
                        progress.bytes_sent,
                        clock.now_ms() as f64 / 1000.0,
                        progress.connections,
                        progress.failures,
                        progress.frames_dropped
                    );
                    return Ok((ending, progress));
                }
                Action::Exit(err) => {
                    input.shutdown().await;
                    return Err(err);
                }
            }
        }

        let pass = flow.pass(&mut input, link.conn(), &mut core, &clock, on_frame);
        let now = clock.now_ms();
        if pass.needs_input && core.source_ended() {
            let conn = link.conn().map(|c| &*c);
            if flow.drained(conn) {
                if flow.progress(&core, conn).frames_sent == 0 {
                    core.handle_source(SourceEvent::Unusable(flow.nothing_sent_error(&input)), now);
                } else {
                    core.handle_drained(now);
                }
            } else if !flow.pipeline.started() {
                core.handle_source(SourceEvent::Unusable(flow.nothing_sent_error(&input)), now);
            }
        }
        if flow.hopeless() {
            core.handle_source(SourceEvent::Unusable(flow.nothing_sent_error(&input)), now);
        }
        if core.has_actions() {
            continue;
        }

        let want_input = pass.needs_input && core.wants_input() && !input.is_down();
        let session_due = match &link {
            Link::Up(conn) => conn.session_timeout_ms(),
            _ => None,
        };
        let deadline = [core.poll_timeout(), pass.pacing_due, session_due]
            .into_iter()
            .flatten()
            .min()
            .map(|ms| clock.instant(ms));
        // A paced file's next frame, due within a frame or so, with the link idle and nothing
        // else due before it: one absolute sleep, as the one-write floor does. A tokio timer
        // re-armed per frame costs an eventfd write, a second epoll_wait and, every 64 ms, a
        // wake-up of its own (its wheel's cascade). The runtime then looks at signals and the
        // socket once, without waiting, before the next frame.
        let others = [core.poll_timeout(), session_due]
            .into_iter()
            .flatten()
            .min();
        let paced = match pass.pacing_due {
            Some(due) if !pass.more && due.saturating_sub(now) <= PACE_SLEEP_MAX_MS => {
                others.is_none_or(|at| at > due)
            }
            _ => false,
        };
        if paced {
            sleep_until_monotonic(clock.instant(pass.pacing_due.unwrap_or(now)));
            tokio::task::yield_now().await;
        }
        let wake = tokio::select! {
            biased;
            signal = signals.next() => signal,
            wake = link_wait(&mut link) => wake,
            read = read_input(&mut input, &mut flow), if want_input => Wake::Input(read),
            _ = sleep_until_option(deadline), if !paced => Wake::Deadline,
            _ = std::future::ready(()), if pass.more || paced => Wake::More,
        };
        let now = clock.now_ms();
        match wake {
            Wake::Stop(name) => core.handle_stop(name, now),
            Wake::Reload => {
                notifier.reloading();
                let new = reload();
                if let Ok(new) = &new {
                    if let Some(level) = new.log_level {
                        log::set_max_level(level);
                    }
                    match tls_config_for(new) {
                        Ok(config) => tls = config,
                        Err(e) => warn!("SIGHUP: {e}"),
                    }
                }
                core.handle_reload(new, now);
                notifier.ready();
            }
            Wake::Connected(Ok(conn)) => {
                link = Link::Up(conn);
                flow.connected();
                core.handle_link(LinkEvent::Publishing, now);
            }
            Wake::Connected(Err(e)) => {
                link = Link::None;
                core.handle_link(LinkEvent::Failed(e), now);
            }
            Wake::Readable(ready) => {
                let result = ready.and_then(|()| match link.conn() {
                    Some(conn) => {
                        conn.read_available()?;
                        if let Some(tc_url) = conn.take_reconnect_request() {
                            core.handle_link(LinkEvent::ReconnectRequest { tc_url }, now);
                        }
                        write(conn, flow.external(), &mut core, now).map(|_| ())
                    }
                    None => Ok(()),
                });
                if let Err(e) = result {
                    core.handle_link(LinkEvent::Failed(e), now);
                }
            }
            Wake::Writable(ready) => {
                let result = ready.and_then(|()| match link.conn() {
                    Some(conn) => write(conn, flow.external(), &mut core, now).map(|_| ()),
                    None => Ok(()),
                });
                if let Err(e) = result {
                    core.handle_link(LinkEvent::Failed(e), now);
                }
            }
            Wake::Input(read) => match read {
                Ok(None) => {}
                Ok(Some(0)) => {
                    flow.reader.finish();
                    let event = match input.kind() {
                        SourceKind::Fifo => SourceEvent::WriterGone,
                        SourceKind::Exec => {
                            let report = input.child_exited().await;
                            SourceEvent::Exited {
                                ran_for: report.as_ref().map(|r| r.ran_for).unwrap_or_default(),
                                how: report.map(|r| r.to_string()).unwrap_or_default(),
                            }
                        }
                        _ => SourceEvent::Ended,
                    };
                    core.handle_source(event, now);
                }
                Ok(Some(n)) => flow.reader.commit(n),
                Err(e) => core.handle_source(SourceEvent::Failed(e), now),
            },
            Wake::Deadline => {
                if let Link::Up(conn) = &mut link {
                    if conn.session_timeout_ms().is_some_and(|due| now >= due) {
                        if let Err(e) = conn.session().handle_timeout(now) {
                            core.handle_link(LinkEvent::Failed(e), now);
                        }
                    }
                }
                core.handle_timeout(now);
            }
            Wake::More => {}
        }
    }
}

/// Sleeps until `deadline` (CLOCK_MONOTONIC, which tokio's `Instant` is on Linux), blocking
/// the thread: one system call, with no timer to arm or cancel.
fn sleep_until_monotonic(deadline: tokio::time::Instant) {
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

/// Opens the input again: the same one (a FIFO for its next writer, a child anew, a camera), or
/// the configuration's input when it names another (`anew`, after a reload).
async fn open_source(input: &mut Input, config: &Config, anew: bool) -> Result<()> {
    if anew || matches!(input.kind(), SourceKind::File | SourceKind::Pipe) {
        *input = Input::open_config(config).await?;
        if input.is_down() {
            return Err(Error::input(format!("{} is not there", config.input)));
        }
        return Ok(());
    }
    input.reopen().await
}

/// Waits for what the link needs next.
async fn link_wait(link: &mut Link) -> Wake {
    match link {
        Link::None => std::future::pending().await,
        Link::Connecting(connecting) => Wake::Connected(connecting.as_mut().await),
        Link::Up(conn) => {
            tokio::select! {
                biased;
                ready = conn.readable() => Wake::Readable(ready),
                ready = conn.writable(), if !conn.is_idle() => Wake::Writable(ready),
            }
        }
    }
}

/// Reads the input: a byte stream into the reader's buffer (`Some(bytes)`, 0 at its end), or
/// waits for a camera's next frame (`None`).
async fn read_input(input: &mut Input, flow: &mut Flow) -> Result<Option<usize>> {
    if input.kind() == SourceKind::Device {
        return input.device_wait().await.map(|()| None);
    }
    let buf = match flow.reader.read_buf() {
        Ok(buf) => buf,
        Err(e) => return Err(Error::input(format!("{}: {e}", input.name()))),
    };
    input.read(buf).await.map(Some)
}

/// SIGINT/SIGTERM (stop) and SIGHUP (reload).
struct Signals {
    interrupt: Signal,
    terminate: Signal,
    hangup: Signal,
}

impl Signals {
    fn new() -> Result<Signals> {
        let register = |kind| {
            signal(kind).map_err(|e| Error::io(Fault::Ours, "cannot install signal handlers", e))
        };
        Ok(Signals {
            interrupt: register(SignalKind::interrupt())?,
            terminate: register(SignalKind::terminate())?,
            hangup: register(SignalKind::hangup())?,
        })
    }

    async fn next(&mut self) -> Wake {
        tokio::select! {
            _ = self.interrupt.recv() => Wake::Stop("SIGINT"),
            _ = self.terminate.recv() => Wake::Stop("SIGTERM"),
            _ = self.hangup.recv() => Wake::Reload,
        }
    }
}

/// The TLS client configuration for an rtmps:// destination (None for rtmp://).
fn tls_config_for(config: &Config) -> Result<Option<Arc<rustls::ClientConfig>>> {
    if config.url.scheme != Scheme::Rtmps {
        if config.insecure || config.ca_file.is_some() {
            warn!("--insecure and --ca-file apply to rtmps:// only");
        }
        return Ok(None);
    }
    if config.insecure {
        warn!(
            "--insecure: the server's TLS certificate is NOT verified; anyone on the path can pose as the \
             server and read the stream key and the video"
        );
    }
    crate::tls::client_config(config.ca_file.as_deref(), config.insecure).map(Some)
}

/// STATUS= for systemd: resolution, fps, bitrate, destination (key redacted), uptime, reconnects
/// and drops.
fn status_line(core: &Core, flow: &Flow, progress: &Progress, clock: &Clock) -> String {
    let uptime = clock.now_ms() / 1000;
    let video = match flow.pipeline.describe() {
        Some((w, h, Some(fps))) => format!("{w}x{h} {fps:.2} fps"),
        Some((w, h, None)) => format!("{w}x{h}"),
        None => "waiting for H.264".to_string(),
    };
    let kbps = (progress.bytes_sent * 8 / 1000)
        .checked_div(uptime)
        .unwrap_or(0);
    let state = match core.link() {
        super::core::LinkState::Up { .. } => "streaming",
        super::core::LinkState::Connecting { .. } => "connecting",
        _ => "reconnecting",
    };
    let target: &RtmpUrl = core.target();
    format!(
        "{state} {video} ~{kbps} kbit/s to {target}; up {}h{:02}m; {} reconnects, {} frames dropped",
        uptime / 3600,
        uptime / 60 % 60,
        progress.connections.saturating_sub(1),
        progress.frames_dropped
    )
}
