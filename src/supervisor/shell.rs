//! The tokio shell around the [`Core`]: it waits on signals, the input, the socket and one
//! deadline, moves bytes (through [`Flow`]), tells the core what happened and carries out its
//! actions. It decides nothing.
//!
//! Invariants: every wait also watches the signals; the only clock read is [`Clock`]; the core
//! hears every event before the shell waits again.

use log::{debug, info, warn};

use crate::config::Config;
use crate::driver::{sleep_until_option, Clock, Connection};
use crate::error::{Error, Result};
use crate::notify::Notifier;
use crate::source::audio::{AudioEvent, AudioInput};
use crate::source::{Input, InputEvent};
use crate::url::Scheme;

use super::audio::{AudioAction, AudioSupervisor};
use super::core::{Action, Core, CoreOptions, Ending, LinkEvent, SourceEvent};
use super::flow::Flow;
use super::waits::{link_wait, sleep_until_monotonic, wait_audio, wait_input, Link, Signals, Wake};
use super::{count, stats_interval, Progress, Reload};

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
        stats: stats_interval(&config),
    };
    let mut tls = crate::tls::destination_config(&config)?;
    let mut jitter = crate::backoff::Jitter::from_entropy();
    let seed = jitter.next_u64();
    // A microphone: opened beside the video, supervised on its own.
    let mut audio = config.audio.as_ref().and_then(AudioInput::new);
    if audio.is_some() && !kind.is_live() {
        return Err(Error::config(format!(
            "--audio {}: a track with a clock of its own needs a live video input (a camera, a pipe, a FIFO or \
             exec:), not a file read faster than it was recorded",
            audio.as_ref().map_or("", |a| a.name())
        )));
    }
    let mut audio_supervisor = audio.as_ref().map(|a| {
        AudioSupervisor::new(
            a.name(),
            config.source_timeout_ms,
            jitter.next_u64(),
            clock.now_ms(),
        )
    });
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
        if let (Some(capture), Some(supervisor)) = (audio.as_mut(), audio_supervisor.as_mut()) {
            let now = clock.now_ms();
            while let Some(action) = supervisor.poll_action() {
                match action {
                    AudioAction::Open => match capture.open().await {
                        Ok(format) => {
                            if let Some(format) = format {
                                flow.set_audio_format(&format);
                            }
                            supervisor.handle_opened(now);
                        }
                        Err(e) => supervisor.handle_open_failed(&e, now),
                    },
                    AudioAction::Close => capture.close(),
                }
            }
            flow.set_audio_live(supervisor.video_waits(now));
        }
        while let Some(action) = core.poll_action() {
            match action {
                Action::Connect { url, auth_query } => {
                    let mut attempt = core.config().clone();
                    attempt.url = *url;
                    if attempt.url.scheme == Scheme::Rtmps && tls.is_none() {
                        // A redirect from rtmp:// to rtmps://.
                        tls = crate::tls::destination_config(&attempt)?;
                    }
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
                    match input.open_again(core.config(), anew).await {
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
                    let now = clock.now_ms();
                    notifier.status(&flow.status_line(&core, link.conn().map(|c| &*c), now));
                }
                Action::Stats => {
                    let now = clock.now_ms();
                    info!("{}", flow.stats_line(&core, link.conn().map(|c| &*c), now));
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
                        "sent {}, {} bytes in {:.1} s; {}, {}, {} dropped",
                        count(progress.frames_sent, "frame"),
                        progress.bytes_sent,
                        clock.now_ms() as f64 / 1000.0,
                        count(progress.connections, "connection"),
                        count(progress.failures, "failure"),
                        count(progress.frames_dropped, "frame"),
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
        flow.check_end(&pass, &input, link.conn().map(|c| &*c), &mut core, now);
        if core.has_actions() {
            continue;
        }

        let session_due = match &link {
            Link::Up(conn) => conn.session_timeout_ms(),
            _ => None,
        };
        let audio_due = audio_supervisor.as_ref().and_then(|s| s.poll_timeout());
        let others = [core.poll_timeout(), session_due, audio_due]
            .into_iter()
            .flatten()
            .min();
        let plan = flow.plan_wait(&pass, &input, &core, others, now);
        if let Some(due) = plan.pace_until {
            // The runtime then looks at signals and the socket once, without waiting.
            sleep_until_monotonic(clock.instant(due));
            tokio::task::yield_now().await;
        }
        let deadline = plan.deadline.map(|ms| clock.instant(ms));
        let wake = tokio::select! {
            biased;
            signal = signals.next() => signal,
            wake = link_wait(&mut link) => wake,
            event = wait_input(&mut input, &mut flow, now), if plan.read_input => Wake::Input(event),
            event = wait_audio(&mut audio) => Wake::Audio(event),
            _ = sleep_until_option(deadline) => Wake::Deadline,
            _ = std::future::ready(()), if plan.again => Wake::More,
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
                    match crate::tls::destination_config(new) {
                        Ok(config) => tls = config,
                        Err(e) => warn!("SIGHUP: {e}"),
                    }
                }
                core.handle_reload(new, now);
                notifier.ready();
            }
            Wake::Connected(Ok(conn)) => {
                link = Link::Up(conn);
                flow.connected(now);
                core.handle_link(LinkEvent::Publishing, now);
            }
            Wake::Connected(Err(e)) => {
                link = Link::None;
                core.handle_link(LinkEvent::Failed(e), now);
            }
            Wake::Socket { ready, read } => {
                if let Some(conn) = link.conn() {
                    if let Err(e) =
                        ready.and_then(|()| flow.socket_ready(conn, read, &mut core, now))
                    {
                        core.handle_link(LinkEvent::Failed(e), now);
                    }
                }
            }
            Wake::Input(event) => match event {
                Ok(InputEvent::Read(n)) => flow.read_done(n, now),
                // The next pass takes it.
                Ok(InputEvent::FrameReady) => {}
                Ok(InputEvent::Ended) => {
                    flow.read_ended(now);
                    let event = input.ended().await;
                    core.handle_source(event, now);
                }
                Err(e) => core.handle_source(SourceEvent::Failed(e), now),
            },
            Wake::Audio(event) => {
                if let (Some(capture), Some(supervisor)) =
                    (audio.as_ref(), audio_supervisor.as_mut())
                {
                    match event {
                        Ok(AudioEvent::Frame { at }) => {
                            supervisor.handle_frame(now);
                            if let Some(at) = clock.ms_from_monotonic(at) {
                                // The video up to this frame's time goes first, so that this
                                // one is stored after it: timestamp order.
                                flow.audio_arrives(at);
                                flow.pass(&mut input, link.conn(), &mut core, &clock, on_frame);
                                let duration = capture.frame_duration().as_millis() as u64;
                                flow.audio_frame(at, duration, capture.frame(), now);
                            }
                        }
                        Ok(AudioEvent::Format(format)) => flow.set_audio_format(&format),
                        Ok(AudioEvent::Ended) => {
                            info!("audio: {} ended; the video goes on", capture.name());
                            supervisor.handle_ended();
                        }
                        Ok(AudioEvent::Overrun { overruns }) => warn!(
                            "audio: {} overran ({overruns} times so far): samples were lost",
                            capture.name()
                        ),
                        Err(e) => supervisor.handle_failed(&e, now),
                    }
                }
            }
            Wake::Deadline => {
                if let Some(supervisor) = audio_supervisor.as_mut() {
                    supervisor.handle_timeout(now);
                }
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
