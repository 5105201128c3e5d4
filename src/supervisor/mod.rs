//! The supervisor: one event loop that keeps a stream alive for months.
//!
//! It owns the input, the access-unit reader, the [`Pipeline`], the [`FrameQueue`] and the link to
//! the server, and waits on all of them at once: server bytes, socket writability, the input,
//! timers (reconnect backoff, the write-stall watchdog, the source watchdog, real-time pacing, the
//! systemd watchdog) and signals.
//!
//! - The link is down, connecting or up. A failed or lost connection is retried after a jittered,
//!   capped exponential backoff (a refusal waits the whole cap), re-resolving the host each time.
//! - A frame from the input goes straight to the socket when the link is idle (zero-copy). If the
//!   socket does not take all of it, the rest is copied out of the input buffer, and later frames of
//!   a live input wait in the bounded [`FrameQueue`], which drops whole GOPs when full. A file is
//!   simply read more slowly: nothing is dropped.
//! - A new connection starts at the newest queued keyframe, after onMetaData and the sequence
//!   header, so viewers get a picture as soon as the server accepts the publish.
//! - A live input that delivers no frame for `--source-timeout` is restarted.
//! - systemd hears READY=1 once publishing, WATCHDOG=1 only while frames flow or the supervisor is
//!   reconnecting, STATUS= with what a person needs to know, and STOPPING=1.
//!
//! Invariants: every wait also watches the signals; nothing per frame allocates; errors end the
//! program only when retrying cannot help (configuration, input, a bug) or retries are exhausted.

pub mod core;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use log::{debug, error, info, warn};
use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::backoff::{Backoff, Jitter};
use crate::config::Config;
use crate::driver::{refusal_after_acceptance, sleep_until_option, Clock, Connection};
use crate::error::{Error, Fault, Result};
use crate::media::annexb::AnnexBReader;
use crate::notify::Notifier;
use crate::pipeline::{Frame, Pipeline};
use crate::queue::{FrameQueue, Pushed};
use crate::rtmp::auth::{AuthStep, Authenticator};
use crate::rtmp::chunk::Part;
use crate::source::Input;

/// The first reconnect comes within this long.
const FIRST_RETRY: Duration = Duration::from_millis(500);
/// Frames processed before the loop looks at the socket and signals again.
const FRAME_BUDGET: u32 = 64;
/// Most frames the queue holds (its byte and time bounds usually bind first).
const QUEUE_FRAMES: usize = 4096;
/// How often STATUS= is refreshed.
const STATUS_INTERVAL: Duration = Duration::from_secs(5);

/// What happened so far, for the log, STATUS, and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Video frames handed to the socket.
    pub frames_sent: u64,
    /// Bytes written to the socket, on all connections.
    pub bytes_sent: u64,
    /// Access units not sent: before the first SPS/PPS/IDR, or unusable.
    pub frames_skipped: u64,
    /// Frames dropped by the queue or while a connection waited for a keyframe.
    pub frames_dropped: u64,
    /// Connections that reached publishing.
    pub connections: u64,
    /// Connection attempts that failed or connections that were lost.
    pub failures: u64,
    /// Source restarts.
    pub source_restarts: u64,
}

/// How a run ended without error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// The input ended and everything was sent.
    EndOfInput,
    /// SIGINT or SIGTERM.
    Signal,
}

type Connecting = Pin<Box<dyn Future<Output = Result<Box<Connection>>>>>;

/// The connection to the server.
enum Link {
    Down { retry_at_ms: u64 },
    Connecting(Connecting),
    Up(Box<Connection>),
}

/// What the link is waiting for produced.
enum LinkEvent {
    RetryDue,
    Connected(Result<Box<Connection>>),
    Readable(Result<()>),
    Writable(Result<()>),
    Stalled,
    SessionTimeout,
}

/// Which buffer the connection's queued external pieces refer to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pending {
    /// None (anything queued is in the session's own storage).
    Nothing,
    /// The frame at the front of the queue.
    QueueFront,
}

/// The link and what it needs to decide about retries.
struct Uplink {
    link: Link,
    pending: Pending,
    backoff: Backoff,
    jitter: Jitter,
    /// The last failure's text, so a repeated reason is logged once.
    last_failure: Option<String>,
    bytes_sent_before: u64,
    /// Adobe/Limelight challenge-response state, across the reconnects the schemes need.
    auth: Authenticator,
    /// RTMPS: the TLS client configuration, built once (it holds the session-resumption cache).
    tls_config: Option<Arc<rustls::ClientConfig>>,
}

/// SIGINT/SIGTERM (stop) and SIGHUP (reload).
struct Signals {
    interrupt: Signal,
    terminate: Signal,
    hangup: Signal,
}

enum SignalEvent {
    Stop(&'static str),
    Reload,
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

    async fn next(&mut self) -> SignalEvent {
        tokio::select! {
            _ = self.interrupt.recv() => SignalEvent::Stop("SIGINT"),
            _ = self.terminate.recv() => SignalEvent::Stop("SIGTERM"),
            _ = self.hangup.recv() => SignalEvent::Reload,
        }
    }
}

/// Reads the configuration again (SIGHUP).
pub type Reload<'a> = &'a dyn Fn() -> Result<Config>;

/// Runs until the input ends, a signal stops it, or an error that retrying cannot fix.
/// `reload` reads the configuration again on SIGHUP. `on_frame` is called after each frame is
/// handed to the socket (tests watch allocations with it).
pub async fn run(
    config: Config,
    reload: Reload<'_>,
    notifier: &Notifier,
    on_frame: &mut dyn FnMut(&Progress),
) -> Result<(Ending, Progress)> {
    let mut config = config;
    let clock = Clock::new();
    let mut signals = Signals::new()?;
    let mut input = Input::open_config(&config).await?;
    let live = input.is_live();
    info!(
        "reading H.264 from {}{}",
        input.name(),
        if live { " (live)" } else { "" }
    );
    let mut reader = AnnexBReader::new(config.max_frame_size);
    let mut pipeline = Pipeline::new(&config, live);
    pipeline.use_source_timestamps(input.is_device());
    // The NAL units of the frame a V4L2 device gave last.
    let mut device_nals = Vec::with_capacity(64);
    // A V4L2 source failed: it is closed and opened again after a backoff.
    let mut device_error: Option<Error> = None;
    // When the V4L2 source was opened last (its healthy time resets the backoff).
    let mut device_opened_ms = 0;
    // Whether this opening of the V4L2 source stamps buffers with CLOCK_MONOTONIC: decided at
    // its first frame, so capture and arrival times never mix.
    let mut device_clock: Option<bool> = None;
    // Allocated at full size, but the OS maps its pages only when they are written: a file input
    // uses it only to carry a keyframe across an Enhanced RTMP reconnect.
    let mut queue = FrameQueue::new(config.queue_size, QUEUE_FRAMES, config.queue_time_ms);
    // A live input that cannot be asked for a keyframe (pipe, FIFO, exec:, an H.264 camera)
    // keeps copies of the current GOP, so that after a reconnect the server gets a picture at
    // once, not a GOP later. A V4L2 encoder is asked for a keyframe instead, with no copies.
    queue.set_retention(live && !input.can_force_keyframe());
    // A camera that is not there yet is opened as soon as the loop runs, then retried.
    let mut uplink = Uplink {
        link: Link::Down { retry_at_ms: 0 },
        pending: Pending::Nothing,
        backoff: Backoff::new(
            FIRST_RETRY,
            Duration::from_millis(config.backoff_max_ms),
            Duration::from_millis(config.backoff_reset_ms),
        ),
        jitter: Jitter::from_entropy(),
        last_failure: None,
        bytes_sent_before: 0,
        auth: authenticator_for(&config),
        tls_config: tls_config_for(&config)?,
    };
    let mut progress = Progress::default();
    let mut drop_log = DropLog::default();
    let mut input_ended = false;
    // A FIFO's writer closed it: once its last frames are out, open it again.
    let mut reopen_input = false;
    // A child exited: once its last frames are out, a fresh reader; then a restart at this time.
    let mut child_exited = false;
    let mut child_restart_at_ms: Option<u64> = input.is_down().then_some(0);
    let mut child_backoff = Backoff::new(
        FIRST_RETRY,
        Duration::from_millis(config.backoff_max_ms),
        Duration::from_secs(60),
    );
    let mut last_frame_ms = clock.now_ms();
    // Ready once the configuration is valid and the input open: a server that is down at boot
    // must not keep systemd waiting (it would kill the service after TimeoutStartSec).
    notifier.ready_with_status(&format!(
        "starting: reading {}, connecting to {}",
        input.name(),
        config.url
    ));
    let mut watchdog_frames = 0u64;
    let watchdog_interval = notifier.watchdog_interval();
    let mut watchdog_tick = tokio::time::interval(
        watchdog_interval
            .unwrap_or(STATUS_INTERVAL)
            .min(STATUS_INTERVAL),
    );
    watchdog_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    loop {
        let now = clock.now_ms();
        if let Link::Down { retry_at_ms } = uplink.link {
            if now >= retry_at_ms {
                let attempt_config = config.clone();
                let tls_config = uplink.tls_config.clone();
                let auth_query = uplink.auth.connect_query();
                match uplink.auth.connect_query_redacted() {
                    Some(query) => {
                        debug!("connecting to {} with authentication {query}", config.url)
                    }
                    None => debug!("connecting to {}", config.url),
                }
                uplink.link = Link::Connecting(Box::pin(async move {
                    Connection::open(&attempt_config, tls_config, clock, auth_query)
                        .await
                        .map(Box::new)
                }));
            }
        }

        // Take the access units that are ready, as far as the link allows.
        let mut needs_input = false;
        let mut switch_servers = false;
        let mut budget = FRAME_BUDGET;
        let mut pacing_due = None;
        while budget > 0 {
            let link_idle =
                matches!(&uplink.link, Link::Up(conn) if conn.is_idle()) && queue.is_empty();
            if !live && !link_idle {
                break;
            }
            if !live && config.realtime {
                if let Some(due) = pipeline.next_due_ms().filter(|&due| due > now) {
                    pacing_due = Some(due);
                    break;
                }
            }
            let (au, frame_ms) = if input.is_device() {
                match input.next_device_frame(&mut device_nals) {
                    Ok(Some(frame)) => {
                        if frame.skipped > 0 {
                            // A lost picture may be the reference of the frames that follow:
                            // they would decode as garbage, so wait for the next keyframe.
                            debug!(
                                "the camera dropped {} frame(s): waiting for a keyframe",
                                frame.skipped
                            );
                            pipeline.frames_lost();
                        }
                        let captured = frame.timestamp.and_then(|t| clock.ms_from_monotonic(t));
                        let use_capture_time = *device_clock.get_or_insert_with(|| {
                            if captured.is_none() {
                                info!("the camera's buffers carry no capture time: timestamps from arrival");
                            }
                            captured.is_some()
                        });
                        let at = if use_capture_time {
                            captured.unwrap_or(now)
                        } else {
                            now
                        };
                        log::trace!(
                            "device frame: {} bytes, captured {:?}, stream clock {at} ms, now {now} ms",
                            frame.au.data.len(),
                            frame.timestamp
                        );
                        (frame.au, at)
                    }
                    Ok(None) => {
                        needs_input = true;
                        break;
                    }
                    Err(e) => {
                        device_error = Some(e);
                        needs_input = true;
                        break;
                    }
                }
            } else {
                let Some(au) = reader.next_access_unit() else {
                    needs_input = true;
                    break;
                };
                (au, now)
            };
            budget -= 1;
            last_frame_ms = now;
            let Some(frame) = pipeline.mux(&au, frame_ms) else {
                progress.frames_skipped = pipeline.stats().skipped;
                continue;
            };
            if frame.parameters_changed && !queue.is_empty() {
                queue.clear_unpinned();
            }
            if frame.keyframe
                && matches!(&uplink.link, Link::Up(conn) if conn.reconnect_requested())
            {
                // The server asked for a reconnect: this keyframe opens the new connection.
                let len = pipeline.frame_len();
                queue.push(frame.timestamp_ms, true, len, |slot| {
                    pipeline.copy_frame(au.data, slot)
                });
                switch_servers = true;
                break;
            }
            match &mut uplink.link {
                Link::Up(conn) if link_idle => {
                    let result = send_direct(conn, &mut pipeline, frame, au.data);
                    match result {
                        Ok(true) => {
                            progress.frames_sent += 1;
                            let len = pipeline.frame_len();
                            queue.retain_sent(frame.timestamp_ms, frame.keyframe, len, |slot| {
                                pipeline.copy_frame(au.data, slot)
                            });
                            on_frame(&progress);
                        }
                        Ok(false) => {}
                        Err(e) => uplink.fail(e, &clock, &config, &mut queue, &mut progress)?,
                    }
                }
                _ if live => {
                    let len = pipeline.frame_len();
                    let pushed = queue.push(frame.timestamp_ms, frame.keyframe, len, |slot| {
                        pipeline.copy_frame(au.data, slot)
                    });
                    if pushed != (Pushed::Queued { dropped: 0 }) {
                        drop_log.note(&queue, now);
                    }
                }
                _ => {}
            }
        }
        progress.frames_dropped =
            queue.stats().frames_dropped + pipeline.stats().dropped_waiting_for_keyframe;

        // Feed the socket from the queue.
        if let Link::Up(conn) = &mut uplink.link {
            match pump_queue(
                conn,
                &mut pipeline,
                &mut queue,
                &mut uplink.pending,
                &mut progress,
                on_frame,
            ) {
                Ok(at_keyframe) => switch_servers |= at_keyframe && conn.reconnect_requested(),
                Err(e) => uplink.fail(e, &clock, &config, &mut queue, &mut progress)?,
            }
        }
        if switch_servers {
            uplink.switch_servers(&mut config, &queue, &clock).await;
            queue.unpin_front();
        }

        // The end: a finished input whose every frame went out.
        if input_ended && needs_input && queue.is_empty() {
            if let Link::Up(conn) = &uplink.link {
                if conn.is_idle() {
                    if progress.frames_sent == 0 {
                        return Err(pipeline.nothing_sent_error(
                            input.name(),
                            reader.bytes_read(),
                            reader.skipped_bytes(),
                        ));
                    }
                    info!("end of input after {} frames", progress.frames_sent);
                    return finish(
                        uplink,
                        &queue,
                        &mut input,
                        notifier,
                        Ending::EndOfInput,
                        progress,
                        &clock,
                    )
                    .await;
                }
            } else if !pipeline.started() {
                return Err(pipeline.nothing_sent_error(
                    input.name(),
                    reader.bytes_read(),
                    reader.skipped_bytes(),
                ));
            }
        }
        if !pipeline.started() && reader.bytes_read() > 2 * config.max_frame_size as u64 {
            return Err(pipeline.nothing_sent_error(
                input.name(),
                reader.bytes_read(),
                reader.skipped_bytes(),
            ));
        }

        if reopen_input && needs_input {
            reopen_input = false;
            input = input.restart().await?;
            reader = AnnexBReader::new(config.max_frame_size);
            last_frame_ms = clock.now_ms();
        }
        if let Some(e) = device_error.take() {
            // A camera that failed or went away: close it, open it again after a backoff.
            if e.fault() != Fault::Input {
                return Err(e);
            }
            input.device_failed();
            pipeline.source_restarted();
            let healthy = Duration::from_millis(clock.now_ms().saturating_sub(device_opened_ms));
            let delay = child_backoff.next_delay(healthy, uplink.jitter.unit());
            warn!("{e}; opening it again in {:.1} s", delay.as_secs_f64());
            notifier.status(&format!("camera lost: {e}"));
            child_restart_at_ms = Some(clock.now_ms() + delay.as_millis() as u64);
        }
        if child_exited && needs_input {
            // The child's last frames are out: the next child starts a fresh byte stream.
            child_exited = false;
            reader = AnnexBReader::new(config.max_frame_size);
        }
        let want_input = needs_input && !input_ended && !child_exited;
        let more_work = budget == 0;
        let source_deadline =
            (live && config.source_timeout_ms > 0 && !input_ended && !input.is_down())
                .then(|| clock.instant(last_frame_ms.saturating_add(config.source_timeout_ms)));
        tokio::select! {
            biased;
            signal = signals.next() => match signal {
                SignalEvent::Stop(name) => {
                    info!("{name}: stopping");
                    return finish(uplink, &queue, &mut input, notifier, Ending::Signal, progress, &clock).await;
                }
                SignalEvent::Reload => {
                    notifier.reloading();
                    match reload() {
                        Ok(new) => {
                            let changes = apply_reload(&mut config, new, &mut uplink);
                            if changes.input {
                                // The old device is closed first: the new input may be the same
                                // camera with other settings.
                                input.device_failed();
                                input = Input::open_config(&config).await?;
                                reader = AnnexBReader::new(config.max_frame_size);
                                pipeline.source_restarted();
                                pipeline.use_source_timestamps(input.is_device());
                                queue.set_retention(live && !input.can_force_keyframe());
                                device_error = None;
                                device_clock = None;
                                device_opened_ms = clock.now_ms();
                                child_restart_at_ms = input.is_down().then(|| clock.now_ms());
                                last_frame_ms = clock.now_ms();
                            }
                            if changes.destination {
                                if let Link::Up(conn) = std::mem::replace(&mut uplink.link, Link::Down { retry_at_ms: 0 }) {
                                    uplink.bytes_sent_before += conn.bytes_sent();
                                    conn.close(external_for(uplink.pending, &queue)).await;
                                }
                                uplink.pending = Pending::Nothing;
                                queue.unpin_front();
                            }
                        }
                        Err(e) => error!("SIGHUP: keeping the running configuration: {e}"),
                    }
                    notifier.ready();
                }
            },
            event = next_link_event(&mut uplink.link, &clock, config.stall_timeout_ms) => {
                let connections = progress.connections;
                let result = handle_link_event(event, &mut uplink, &mut pipeline, &mut queue, &mut progress, &clock, &config);
                if let Err(e) = result {
                    uplink.fail(e, &clock, &config, &mut queue, &mut progress)?;
                } else if progress.connections > connections {
                    // A new connection starts at a keyframe: ask the encoder for one now
                    // rather than wait up to a whole keyframe interval.
                    match input.force_keyframe() {
                        Ok(true) => debug!("asked {} for a keyframe", input.name()),
                        Ok(false) => {}
                        Err(e) => warn!("cannot ask {} for a keyframe: {e}", input.name()),
                    }
                }
            },
            read = async {
                if input.is_device() {
                    // A camera: its frames are taken by next_device_frame; this only waits.
                    return input.device_wait().await.map(|()| None);
                }
                let buf = reader.read_buf().map_err(|e| Error::input(format!("{}: {e}", input.name())))?;
                input.read(buf).await.map(Some)
            }, if want_input && !input.is_down() => match read {
                Err(e) if input.is_device() => device_error = Some(e),
                Err(e) => return Err(e),
                Ok(None) => {}
                Ok(Some(0)) if input.is_child() => {
                    // The child closed its stdout: send its last frames, restart it after a backoff.
                    reader.finish();
                    child_exited = true;
                    let report = input.child_exited().await;
                    let ran_for = report.as_ref().map(|r| r.ran_for).unwrap_or_default();
                    let delay = child_backoff.next_delay(ran_for, uplink.jitter.unit());
                    let how = report.map(|r| r.to_string()).unwrap_or_default();
                    warn!("{} ended ({how}); starting it again in {:.1} s", input.name(), delay.as_secs_f64());
                    child_restart_at_ms = Some(clock.now_ms() + delay.as_millis() as u64);
                }
                Ok(Some(0)) if input.reopens() => {
                    // The FIFO's writer went away: send what it wrote, then wait for the next one.
                    info!("the writer of {} closed it; waiting for the next writer", input.name());
                    reader.finish();
                    reopen_input = true;
                }
                Ok(Some(0)) => {
                    info!("end of input from {}", input.name());
                    reader.finish();
                    input_ended = true;
                }
                Ok(Some(n)) => reader.commit(n),
            },
            _ = sleep_until_option(pacing_due.map(|ms| clock.instant(ms))), if pacing_due.is_some() => {},
            _ = sleep_until_option(child_restart_at_ms.map(|ms| clock.instant(ms))), if child_restart_at_ms.is_some() && !child_exited => {
                child_restart_at_ms = None;
                match input.respawn() {
                    Ok(()) => {
                        info!("started {}", input.name());
                        pipeline.source_restarted();
                        queue.set_retention(live && !input.can_force_keyframe());
                        device_clock = None;
                        device_opened_ms = clock.now_ms();
                        progress.source_restarts += 1;
                        last_frame_ms = clock.now_ms();
                    }
                    // A camera that is not back yet (unplugged: its node is gone; busy) is tried
                    // again; one that cannot do what is asked is the configuration's error.
                    Err(e) if e.fault() == Fault::Input || input.device_missing() => {
                        let delay = child_backoff.next_delay(Duration::ZERO, uplink.jitter.unit());
                        if input.device_missing() {
                            warn!("{} is not there (unplugged?); looking again in {:.1} s", input.name(), delay.as_secs_f64());
                        } else {
                            warn!("{e}; trying again in {:.1} s", delay.as_secs_f64());
                        }
                        child_restart_at_ms = Some(clock.now_ms() + delay.as_millis() as u64);
                    }
                    Err(e) => return Err(e),
                }
            },
            _ = sleep_until_option(source_deadline), if source_deadline.is_some() => {
                warn!("no frame from {} for {} s: restarting it", input.name(), config.source_timeout_ms / 1000);
                if input.is_device() {
                    // Closed now, opened again at once by the restart timer (and retried there).
                    input.device_failed();
                    child_restart_at_ms = Some(clock.now_ms());
                    pipeline.source_restarted();
                    continue;
                }
                input = input.restart().await?;
                reader = AnnexBReader::new(config.max_frame_size);
                pipeline.source_restarted();
                progress.source_restarts += 1;
                last_frame_ms = clock.now_ms();
            },
            _ = watchdog_tick.tick() => {
                let flowing = progress.frames_sent > watchdog_frames;
                let reconnecting = !matches!(uplink.link, Link::Up(_));
                // Waiting for a camera (or a child) to come back is the loop doing its job.
                let source_coming_back = input.is_down() || child_restart_at_ms.is_some();
                if flowing || reconnecting || !pipeline.started() || source_coming_back {
                    notifier.watchdog();
                }
                watchdog_frames = progress.frames_sent;
                progress.bytes_sent = uplink.bytes_sent();
                if notifier.is_enabled() {
                    // Formatting allocates: only for systemd, every few seconds.
                    notifier.status(&status_line(&config, &pipeline, &progress, &uplink, &clock));
                }
            },
            _ = std::future::ready(()), if more_work => {},
        }
    }
}

impl Uplink {
    /// Bytes sent on all connections so far.
    fn bytes_sent(&self) -> u64 {
        self.bytes_sent_before
            + match &self.link {
                Link::Up(conn) => conn.bytes_sent(),
                _ => 0,
            }
    }

    /// The server asked for a reconnect and a keyframe is due: close this connection politely
    /// and connect again at once, to the tcUrl the server gave if any.
    async fn switch_servers(&mut self, config: &mut Config, queue: &FrameQueue, clock: &Clock) {
        let Link::Up(mut conn) = std::mem::replace(
            &mut self.link,
            Link::Down {
                retry_at_ms: clock.now_ms(),
            },
        ) else {
            return;
        };
        let request = conn.take_reconnect_request();
        self.bytes_sent_before += conn.bytes_sent();
        conn.close(external_for(self.pending, queue)).await;
        self.pending = Pending::Nothing;
        if let Some(Some(tc_url)) = request {
            match config.url.with_tc_url(&tc_url) {
                Ok(url) => {
                    info!("reconnecting to {url}, as the server asked");
                    config.url = url;
                    self.auth = authenticator_for(config);
                    match tls_config_for(config) {
                        Ok(tls_config) => self.tls_config = tls_config,
                        Err(e) => warn!("{e}"),
                    }
                }
                Err(e) => warn!("{e}; reconnecting to the same server"),
            }
        } else {
            info!("reconnecting, as the server asked");
        }
    }

    /// The connection failed: decide whether to retry and when, or give up.
    fn fail(
        &mut self,
        err: Error,
        clock: &Clock,
        config: &Config,
        queue: &mut FrameQueue,
        progress: &mut Progress,
    ) -> Result<()> {
        if matches!(err.fault(), Fault::Config | Fault::Ours | Fault::Input) {
            return Err(err);
        }
        let now = clock.now_ms();
        // A refused connect may be an authentication challenge: answer it at once.
        if let Some(description) = err.server_description() {
            let random = self.jitter.next_u64() as u32;
            match self.auth.on_connect_rejected(description, random) {
                AuthStep::Retry => {
                    info!(
                        "the server asks for authentication ({}): answering",
                        self.auth
                    );
                    self.link = Link::Down { retry_at_ms: now };
                    return Ok(());
                }
                AuthStep::Fail(reason) => {
                    self.auth.reset();
                    let err = Error::rejected(format!("authentication failed: {reason}"));
                    return self.fail(err, clock, config, queue, progress);
                }
                AuthStep::NotAuth => {}
            }
        }
        self.auth.reset();
        let (healthy_for, err) =
            match std::mem::replace(&mut self.link, Link::Down { retry_at_ms: now }) {
                Link::Up(conn) => {
                    self.bytes_sent_before += conn.bytes_sent();
                    let since = conn.publishing_since_ms().unwrap_or(now);
                    let healthy = now.saturating_sub(since);
                    let err = if healthy < 1000 {
                        refusal_after_acceptance(err)
                    } else {
                        err
                    };
                    (Duration::from_millis(healthy), err)
                }
                _ => (Duration::ZERO, err),
            };
        // A connection that streamed for a while ends an incident: its failure is news again.
        if healthy_for >= Duration::from_secs(1) {
            self.last_failure = None;
        }
        progress.failures += 1;
        self.pending = Pending::Nothing;
        // The frame in flight went partly to a dead connection; the next one starts afresh.
        queue.unpin_front();
        if let Some(limit) = config.max_retries {
            if self.backoff.failures() >= limit {
                return Err(err);
            }
        }
        let delay = if err.fault() == Fault::Rejected {
            self.backoff.refused()
        } else {
            self.backoff.next_delay(healthy_for, self.jitter.unit())
        };
        let text = err.to_string();
        if self.last_failure.as_deref() != Some(text.as_str()) {
            error!("{text}; retrying in {:.1} s", delay.as_secs_f64());
            self.last_failure = Some(text);
        } else {
            debug!("again: {text}; retrying in {:.1} s", delay.as_secs_f64());
        }
        self.link = Link::Down {
            retry_at_ms: now.saturating_add(delay.as_millis() as u64),
        };
        Ok(())
    }
}

/// What a reload changed that needs action.
struct ReloadChanges {
    input: bool,
    destination: bool,
}

/// Takes the new configuration. Options read on every use (timeouts, retries) apply at once; the
/// caller reopens the input and reconnects as the changes say. Frame rate, start time and queue
/// sizes are fixed for the life of the process (a restart applies them).
fn apply_reload(config: &mut Config, new: Config, uplink: &mut Uplink) -> ReloadChanges {
    let changes = ReloadChanges {
        input: new.input != config.input || new.device != config.device,
        destination: new.url != config.url
            || new.chunk_size != config.chunk_size
            || new.timeout_ms != config.timeout_ms,
    };
    if new.frame_rate != config.frame_rate
        || new.start_timestamp_ms != config.start_timestamp_ms
        || new.queue_size != config.queue_size
        || new.queue_time_ms != config.queue_time_ms
        || new.max_frame_size != config.max_frame_size
    {
        warn!("SIGHUP: fps, start-timestamp, queue and frame-size changes apply after a restart");
    }
    if new.backoff_max_ms != config.backoff_max_ms
        || new.backoff_reset_ms != config.backoff_reset_ms
    {
        uplink.backoff = Backoff::new(
            FIRST_RETRY,
            Duration::from_millis(new.backoff_max_ms),
            Duration::from_millis(new.backoff_reset_ms),
        );
    }
    if let Some(level) = new.log_level {
        log::set_max_level(level);
    }
    info!(
        "SIGHUP: configuration reloaded{}{}",
        if changes.destination {
            "; reconnecting to the new destination"
        } else {
            ""
        },
        if changes.input {
            "; reopening the new input"
        } else {
            ""
        }
    );
    let (frame_rate, start, queue_size, queue_time, max_frame) = (
        config.frame_rate,
        config.start_timestamp_ms,
        config.queue_size,
        config.queue_time_ms,
        config.max_frame_size,
    );
    *config = new;
    if changes.destination {
        uplink.auth = authenticator_for(config);
        match tls_config_for(config) {
            Ok(tls_config) => uplink.tls_config = tls_config,
            Err(e) => error!("SIGHUP: {e}"),
        }
    }
    (
        config.frame_rate,
        config.start_timestamp_ms,
        config.queue_size,
        config.queue_time_ms,
        config.max_frame_size,
    ) = (frame_rate, start, queue_size, queue_time, max_frame);
    changes
}

/// The TLS client configuration for an rtmps:// destination (None for rtmp://).
fn tls_config_for(config: &Config) -> Result<Option<Arc<rustls::ClientConfig>>> {
    if config.url.scheme != crate::url::Scheme::Rtmps {
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

/// The authenticator for the URL's credentials (empty ones when there are none: a server that asks
/// for authentication then gets a clear "put user:password@ in the URL").
fn authenticator_for(config: &Config) -> Authenticator {
    let (user, password) = config.url.credentials.clone().unwrap_or_default();
    Authenticator::new(user, password, config.url.app.clone())
}

/// Waits for what the link needs next.
async fn next_link_event(link: &mut Link, clock: &Clock, stall_timeout_ms: u64) -> LinkEvent {
    match link {
        Link::Down { retry_at_ms } => {
            tokio::time::sleep_until(clock.instant(*retry_at_ms)).await;
            LinkEvent::RetryDue
        }
        Link::Connecting(connecting) => LinkEvent::Connected(connecting.as_mut().await),
        Link::Up(conn) => {
            let stall = conn
                .stall_deadline_ms(stall_timeout_ms)
                .map(|ms| clock.instant(ms));
            let session_deadline = conn.session_timeout_ms().map(|ms| clock.instant(ms));
            tokio::select! {
                biased;
                ready = conn.readable() => LinkEvent::Readable(ready),
                ready = conn.writable(), if !conn.is_idle() => LinkEvent::Writable(ready),
                _ = sleep_until_option(stall) => LinkEvent::Stalled,
                _ = sleep_until_option(session_deadline) => LinkEvent::SessionTimeout,
            }
        }
    }
}

fn handle_link_event(
    event: LinkEvent,
    uplink: &mut Uplink,
    pipeline: &mut Pipeline,
    queue: &mut FrameQueue,
    progress: &mut Progress,
    clock: &Clock,
    config: &Config,
) -> Result<()> {
    match event {
        LinkEvent::RetryDue => Ok(()),
        LinkEvent::Connected(result) => {
            let conn = result?;
            // A later connection starts without the one-time answer of this one.
            uplink.auth.reset();
            info!("publishing to {}", config.url);
            if uplink.last_failure.is_some() {
                info!(
                    "streaming again after {} failures",
                    uplink.backoff.failures()
                );
            }
            progress.connections += 1;
            pipeline.new_connection();
            let dropped = queue.skip_to_newest_keyframe();
            if dropped > 0 {
                debug!("starting the new connection at the newest queued keyframe ({dropped} older frames dropped)");
            }
            uplink.pending = Pending::Nothing;
            uplink.link = Link::Up(conn);
            Ok(())
        }
        LinkEvent::Readable(ready) => {
            ready?;
            let Link::Up(conn) = &mut uplink.link else {
                return Ok(());
            };
            conn.read_available()?;
            let external = external_for(uplink.pending, queue);
            conn.write_some(external).map(|_| ())
        }
        LinkEvent::Writable(ready) => {
            ready?;
            let Link::Up(conn) = &mut uplink.link else {
                return Ok(());
            };
            let external = external_for(uplink.pending, queue);
            conn.write_some(external).map(|_| ())
        }
        LinkEvent::Stalled => Err(Error::network(format!(
            "the server accepted no data for {} s: the link is stalled",
            config.stall_timeout_ms / 1000
        ))),
        LinkEvent::SessionTimeout => {
            let Link::Up(conn) = &mut uplink.link else {
                return Ok(());
            };
            conn.session().handle_timeout(clock.now_ms())
        }
    }
}

fn external_for(pending: Pending, queue: &FrameQueue) -> &[u8] {
    match pending {
        Pending::Nothing => &[],
        Pending::QueueFront => queue.storage(),
    }
}

/// Sends the frame just muxed, straight from the input buffer; if the socket does not take all of
/// it now, copies the rest out so the input can move on. Returns whether the frame was sent (not
/// dropped for want of a keyframe).
fn send_direct(
    conn: &mut Connection,
    pipeline: &mut Pipeline,
    frame: Frame,
    data: &[u8],
) -> Result<bool> {
    match pipeline.send_muxed(conn.session(), frame) {
        Ok(true) => {}
        Ok(false) => return Ok(false),
        Err(e) if e.fault() == Fault::Input => {
            warn!("dropping a frame: {e}");
            return Ok(false);
        }
        Err(e) => return Err(e),
    }
    if !conn.write_some(data)? {
        conn.detach(data);
    }
    Ok(true)
}

/// Writes what is queued on the connection and, while the socket takes it, the queued frames.
/// Returns true when it stopped before a keyframe because the server asked for a reconnect.
fn pump_queue(
    conn: &mut Connection,
    pipeline: &mut Pipeline,
    queue: &mut FrameQueue,
    pending: &mut Pending,
    progress: &mut Progress,
    on_frame: &mut dyn FnMut(&Progress),
) -> Result<bool> {
    loop {
        if !conn.is_idle() && !conn.write_some(external_for(*pending, queue))? {
            return Ok(false);
        }
        if *pending == Pending::QueueFront {
            queue.pop_sent();
            *pending = Pending::Nothing;
        }
        let Some(entry) = queue.front() else {
            return Ok(false);
        };
        if entry.keyframe && conn.reconnect_requested() {
            return Ok(true);
        }
        let frame = Frame {
            timestamp_ms: entry.timestamp_ms,
            keyframe: entry.keyframe,
            parameters_changed: false,
        };
        let parts = [Part::External {
            start: entry.start,
            len: entry.len,
        }];
        match pipeline.send_stored(conn.session(), frame, &parts) {
            Ok(true) => {
                queue.pin_front();
                *pending = Pending::QueueFront;
                progress.frames_sent += 1;
                on_frame(progress);
            }
            Ok(false) => {
                queue.pop_front();
            }
            Err(e) if e.fault() == Fault::Input => {
                warn!("dropping a queued frame: {e}");
                queue.pop_front();
            }
            Err(e) => return Err(e),
        }
    }
}

/// How often dropped frames are reported at most.
const DROP_LOG_INTERVAL_MS: u64 = 10_000;

/// Reports queue drops, rate-limited: the first drop at once, then at most one line per interval
/// with what was dropped since the last line.
#[derive(Default)]
struct DropLog {
    /// When the last line was written, and the frame count it reported.
    last: Option<(u64, u64)>,
}

impl DropLog {
    fn note(&mut self, queue: &FrameQueue, now_ms: u64) {
        let stats = queue.stats();
        let (since_ms, reported) = self.last.unwrap_or((0, 0));
        if self.last.is_some() && now_ms.saturating_sub(since_ms) < DROP_LOG_INTERVAL_MS {
            return;
        }
        let new = stats.frames_dropped - reported;
        if new == 0 {
            return;
        }
        warn!(
            "the network is slower than the video: {new} frames dropped as whole GOPs{}; {} frames ({} bytes) so far",
            if self.last.is_some() { format!(" in the last {} s", (now_ms - since_ms) / 1000) } else { String::new() },
            stats.frames_dropped,
            stats.bytes_dropped
        );
        self.last = Some((now_ms, stats.frames_dropped));
    }
}

/// Unpublishes and closes (bounded), tells systemd, and reports.
async fn finish(
    uplink: Uplink,
    queue: &FrameQueue,
    input: &mut Input,
    notifier: &Notifier,
    ending: Ending,
    mut progress: Progress,
    clock: &Clock,
) -> Result<(Ending, Progress)> {
    notifier.stopping();
    progress.bytes_sent = uplink.bytes_sent();
    // The unpublish and the child's shutdown run side by side: SIGTERM must end us within 1 s.
    let close = async {
        if let Link::Up(conn) = uplink.link {
            conn.close(external_for(uplink.pending, queue)).await;
        }
    };
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
    Ok((ending, progress))
}

/// STATUS= for systemd: resolution, fps, bitrate, destination (key redacted), uptime, reconnects
/// and drops.
fn status_line(
    config: &Config,
    pipeline: &Pipeline,
    progress: &Progress,
    uplink: &Uplink,
    clock: &Clock,
) -> String {
    let uptime = clock.now_ms() / 1000;
    let video = match pipeline.describe() {
        Some((w, h, Some(fps))) => format!("{w}x{h} {fps:.2} fps"),
        Some((w, h, None)) => format!("{w}x{h}"),
        None => "waiting for H.264".to_string(),
    };
    let kbps = (uplink.bytes_sent() * 8 / 1000)
        .checked_div(uptime)
        .unwrap_or(0);
    let state = match uplink.link {
        Link::Up(_) => "streaming",
        Link::Connecting(_) => "connecting",
        Link::Down { .. } => "reconnecting",
    };
    format!(
        "{state} {video} ~{kbps} kbit/s to {}; up {}h{:02}m; {} reconnects, {} frames dropped",
        config.url,
        uptime / 3600,
        uptime / 60 % 60,
        progress.connections.saturating_sub(1),
        progress.frames_dropped
    )
}
