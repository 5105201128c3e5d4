//! The supervisor's policy on a virtual clock: each test plays a scenario as the shell would
//! report it and asserts the actions and their times. Nothing sleeps.

use super::*;
use crate::config::Config;
use crate::url::RtmpUrl;

/// The core, a virtual clock, and every action with the time it was taken.
struct Sim {
    core: Core,
    now: u64,
    log: Vec<(u64, Action)>,
}

impl Sim {
    fn new(config: Config, kind: SourceKind) -> Sim {
        Sim::with_options(config, kind, CoreOptions::default())
    }

    fn with_options(config: Config, kind: SourceKind, options: CoreOptions) -> Sim {
        let mut core = Core::new(config, (kind, "cam".into()), options, 7, 0);
        core.handle_source(SourceEvent::Ready, 0);
        let mut sim = Sim {
            core,
            now: 0,
            log: Vec::new(),
        };
        sim.collect();
        sim
    }

    fn collect(&mut self) {
        while let Some(action) = self.core.poll_action() {
            self.log.push((self.now, action));
        }
    }

    /// Runs the timers up to `t`.
    fn advance_to(&mut self, t: u64) {
        while let Some(at) = self.core.poll_timeout() {
            if at > t {
                break;
            }
            self.now = self.now.max(at);
            self.core.handle_timeout(self.now);
            self.collect();
        }
        self.now = self.now.max(t);
    }

    fn link(&mut self, event: LinkEvent) {
        self.core.handle_link(event, self.now);
        self.collect();
    }

    fn source(&mut self, event: SourceEvent) {
        self.core.handle_source(event, self.now);
        self.collect();
    }

    /// Actions taken since `since` (inclusive), as short names with their times.
    fn actions_since(&self, since: u64) -> Vec<(u64, String)> {
        self.log
            .iter()
            .filter(|(t, _)| *t >= since)
            .map(|(t, a)| (*t, describe(a)))
            .collect()
    }

    /// Times of the Connect actions since `since`.
    fn connects_since(&self, since: u64) -> Vec<u64> {
        self.log
            .iter()
            .filter(|(t, a)| *t >= since && matches!(a, Action::Connect { .. }))
            .map(|(t, _)| *t)
            .collect()
    }

    fn last_connect_url(&self) -> String {
        self.log
            .iter()
            .rev()
            .find_map(|(_, a)| match a {
                Action::Connect { url, .. } => Some(format!(
                    "{}://{}@{}:{}/{}/{}",
                    url.scheme.as_str(),
                    url.credentials
                        .as_ref()
                        .map_or("-".to_string(), |(u, p)| format!("{u}:{p}")),
                    url.host,
                    url.port,
                    url.app,
                    url.key
                )),
                _ => None,
            })
            .expect("a connect")
    }

    /// The connection attempt under way succeeds: publishing, and a keyframe goes out.
    fn publish_ok(&mut self) {
        assert!(
            matches!(self.core.link(), LinkState::Connecting { .. }),
            "at {} the link is {:?}",
            self.now,
            self.core.link()
        );
        self.link(LinkEvent::Publishing);
        self.link(LinkEvent::FrameSent { keyframe: true });
        self.link(LinkEvent::Wrote { idle: true });
    }

    /// Streams for `ms`: a frame every 33 ms, each written at once.
    fn stream_for(&mut self, ms: u64) {
        let end = self.now + ms;
        while self.now + 33 <= end {
            self.advance_to(self.now + 33);
            self.source(SourceEvent::Frame);
            self.link(LinkEvent::FrameSent { keyframe: false });
            self.link(LinkEvent::Wrote { idle: true });
        }
        self.advance_to(end);
    }

    /// Every attempt fails with `err()` until `until`; returns the time of the attempt after it.
    fn fail_attempts_until(&mut self, until: u64, mut err: impl FnMut() -> Error) -> u64 {
        loop {
            if let LinkState::Connecting { since } = self.core.link() {
                if since >= until {
                    return since;
                }
                self.link(LinkEvent::Failed(err()));
            }
            let next = self.core.poll_timeout().expect("a retry is scheduled");
            self.advance_to(next);
        }
    }
}

fn describe(action: &Action) -> String {
    match action {
        Action::Connect { .. } => "connect".into(),
        Action::Close { graceful: true } => "close".into(),
        Action::Close { graceful: false } => "drop".into(),
        Action::ForceKeyframe => "force-keyframe".into(),
        Action::CloseSource => "close-source".into(),
        Action::OpenSource { anew: false } => "open-source".into(),
        Action::OpenSource { anew: true } => "open-new-source".into(),
        Action::Watchdog => "watchdog".into(),
        Action::Status => "status".into(),
        Action::Stats => "stats".into(),
        Action::Finish(ending) => format!("finish {ending:?}"),
        Action::Exit(err) => format!("exit {:?}", err.fault()),
    }
}

fn config(url: &str) -> Config {
    Config::new("/run/cam.h264", RtmpUrl::parse(url).unwrap())
}

fn refused() -> Error {
    Error::io(
        Fault::Network,
        "cannot connect to 127.0.0.1:1935",
        std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
    )
}

fn already_publishing() -> Error {
    Error::rejected("publish was refused: NetStream.Publish.BadName (Already publishing)")
}

fn bad_name() -> Error {
    Error::rejected("publish was refused: NetStream.Publish.BadName (Bad stream name)")
}

#[test]
fn no_connection_before_the_input_gave_a_keyframe() {
    let mut core = Core::new(
        config("rtmp://h/live/k"),
        (SourceKind::Fifo, "cam".into()),
        CoreOptions::default(),
        7,
        0,
    );
    // Nothing is due meanwhile but the source watchdog: the shell sleeps, it does not spin.
    assert_eq!(core.poll_timeout(), Some(10_000));
    core.handle_source(SourceEvent::Frame, 100);
    assert_eq!(core.poll_timeout(), Some(10_100));
    core.handle_timeout(5_000);
    assert!(core.poll_action().is_none());
    assert_eq!(core.link(), LinkState::Down { retry_at: 0 });
    core.handle_source(SourceEvent::Ready, 6_000);
    assert!(matches!(core.poll_action(), Some(Action::Connect { .. })));
    assert_eq!(core.link(), LinkState::Connecting { since: 6_000 });
}

#[test]
fn first_attempt_is_at_once() {
    let sim = Sim::new(config("rtmp://h/live/k"), SourceKind::Fifo);
    assert_eq!(sim.connects_since(0), vec![0]);
    assert_eq!(sim.core.poll_timeout(), None.or(sim.core.poll_timeout()));
}

#[test]
fn server_restarted_four_times_five_seconds_apart_is_back_within_a_second_each_time() {
    let mut sim = Sim::new(config("rtmp://h/live/k"), SourceKind::Fifo);
    sim.publish_ok();
    for round in 0..4 {
        sim.stream_for(5_000);
        // Killed: the connection is lost; nginx listens again 400 ms later.
        let killed = sim.now;
        sim.link(LinkEvent::Failed(Error::network(
            "the server closed the connection",
        )));
        let listening = killed + 400;
        let back = sim.fail_attempts_until(listening, refused);
        assert!(
            back - listening <= 1_000,
            "round {round}: back {} ms after the server listened again ({:?})",
            back - listening,
            sim.actions_since(killed)
        );
        sim.publish_ok();
    }
    assert_eq!(sim.core.counters().connections, 5);
}

#[test]
fn a_long_server_outage_backs_off_after_the_fast_window() {
    let mut sim = Sim::new(config("rtmp://h/live/k"), SourceKind::Fifo);
    sim.publish_ok();
    sim.stream_for(10_000);
    let lost = sim.now;
    sim.link(LinkEvent::Failed(Error::network("reset")));
    sim.fail_attempts_until(lost + 200_000, refused);
    let connects = sim.connects_since(lost);
    let gaps: Vec<u64> = connects.windows(2).map(|w| w[1] - w[0]).collect();
    // Within the fast window attempts are at most a second apart...
    for (at, gap) in connects.iter().zip(&gaps) {
        if *at < lost + ms(FAST_RETRY_WINDOW) {
            assert!(*gap <= 1_000, "gap {gap} at {at}");
        }
    }
    // ...then the ordinary backoff takes over, up to the cap.
    let late: Vec<u64> = connects
        .iter()
        .zip(&gaps)
        .filter(|(at, _)| **at > lost + ms(FAST_RETRY_WINDOW) + 60_000)
        .map(|(_, gap)| *gap)
        .collect();
    assert!(late.iter().all(|&gap| gap <= 30_000));
    assert!(late.iter().any(|&gap| gap > 2_000), "{late:?}");
}

#[test]
fn a_server_that_accepts_and_drops_at_once_backs_off_like_a_refusal() {
    let mut sim = Sim::new(config("rtmp://h/live/k"), SourceKind::Fifo);
    for _ in 0..3 {
        sim.link(LinkEvent::Publishing);
        sim.advance_to(sim.now + 100);
        let dropped = sim.now;
        sim.link(LinkEvent::Failed(Error::network(
            "the server closed the connection",
        )));
        sim.advance_to(dropped + 30_000);
        assert_eq!(sim.connects_since(dropped + 1), vec![dropped + 30_000]);
    }
}

#[test]
fn a_flapping_server_that_takes_a_keyframe_then_drops_within_a_second_and_a_half_backs_off() {
    let mut sim = Sim::new(config("rtmp://h/live/k"), SourceKind::Fifo);
    let mut delays = Vec::new();
    for _ in 0..8 {
        sim.publish_ok();
        sim.stream_for(1_500);
        let dropped = sim.now;
        sim.link(LinkEvent::Failed(Error::network("reset")));
        let LinkState::Down { retry_at } = sim.core.link() else {
            panic!("not down")
        };
        delays.push(retry_at - dropped);
        sim.advance_to(retry_at);
    }
    // Full jitter: single delays are random, but the ceiling grows, so late ones reach seconds.
    assert!(delays.iter().all(|&d| d <= 30_000));
    assert!(delays[4..].iter().any(|&d| d > 2_000), "{delays:?}");
}

#[test]
fn black_hole_then_stale_publisher_publishes_again_within_seconds_of_the_link_returning() {
    // A file: the source watchdog is another test's business.
    let mut sim = Sim::new(config("rtmp://h/live/k"), SourceKind::File);
    sim.publish_ok();
    sim.stream_for(20_000);
    sim.link(LinkEvent::Wrote { idle: true });
    // The link black-holes: frames stop going out.
    let hole = sim.now;
    sim.link(LinkEvent::FrameSent { keyframe: false });
    sim.link(LinkEvent::Blocked);
    sim.advance_to(hole + 10_000);
    let actions = sim.actions_since(hole);
    assert_eq!(
        actions[0],
        (hole + 10_000, "drop".into()),
        "the stall watchdog fires at the stall timeout: {actions:?}"
    );
    let first_retry = sim.core.poll_timeout().unwrap();
    assert!(first_retry < hole + 10_500, "{first_retry}");
    // Attempts time out while the link is down (30 s), then the server still holds our stale
    // publisher for 20 s (until its own timeout), then accepts.
    let link_back = hole + 40_000;
    sim.fail_attempts_until(link_back, || {
        Error::network("connecting took longer than 10s")
    });
    let stale_gone = link_back + 20_000;
    let mut refusals = Vec::new();
    let back = sim.fail_attempts_until(stale_gone, || {
        refusals.push(());
        already_publishing()
    });
    assert!(
        back - stale_gone <= 1_000,
        "published {} ms after the server dropped the stale publisher: {:?}",
        back - stale_gone,
        sim.actions_since(link_back)
    );
    assert!(refusals.len() >= 15);
    sim.publish_ok();
}

#[test]
fn already_publishing_without_a_loss_of_ours_is_a_refusal() {
    let mut sim = Sim::new(config("rtmp://h/live/k"), SourceKind::Fifo);
    sim.link(LinkEvent::Failed(already_publishing()));
    assert_eq!(sim.core.link(), LinkState::Down { retry_at: 30_000 });
}

#[test]
fn a_stale_publisher_that_persists_past_the_window_is_backed_off() {
    let mut sim = Sim::new(config("rtmp://h/live/k"), SourceKind::Fifo);
    sim.publish_ok();
    sim.stream_for(5_000);
    let lost = sim.now;
    sim.link(LinkEvent::Failed(Error::network("reset")));
    sim.fail_attempts_until(lost + 200_000, already_publishing);
    let connects = sim.connects_since(lost + ms(STALE_WINDOW) + 1_000);
    let gaps: Vec<u64> = connects.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        !gaps.is_empty() && gaps.iter().all(|&g| g == 30_000),
        "{gaps:?}"
    );
}

#[test]
fn a_refused_key_waits_the_cap_every_time() {
    let mut sim = Sim::new(config("rtmp://h/live/k"), SourceKind::Fifo);
    sim.fail_attempts_until(100_000, bad_name);
    assert_eq!(
        sim.connects_since(0),
        vec![0, 30_000, 60_000, 90_000, 120_000]
    );
}

#[test]
fn max_retries_gives_up_with_the_last_error() {
    let mut cfg = config("rtmp://h/live/k");
    cfg.max_retries = Some(2);
    let mut sim = Sim::new(cfg, SourceKind::Fifo);
    while let LinkState::Connecting { .. } = sim.core.link() {
        sim.link(LinkEvent::Failed(refused()));
        if let Some(next) = sim.core.poll_timeout() {
            sim.advance_to(next);
        }
    }
    let actions = sim.actions_since(0);
    assert_eq!(
        actions.iter().filter(|(_, a)| a == "connect").count(),
        3,
        "{actions:?}"
    );
    assert_eq!(actions.last().unwrap().1, "exit Network");
    assert_eq!(sim.core.link(), LinkState::Stopped);
}

#[test]
fn a_configuration_error_from_the_connection_exits() {
    let mut sim = Sim::new(config("rtmp://h/live/k"), SourceKind::Fifo);
    sim.link(LinkEvent::Failed(Error::config("bad CA file")));
    assert_eq!(sim.actions_since(0).last().unwrap().1, "exit Config");
}

#[test]
fn an_authentication_challenge_is_answered_at_once() {
    let mut sim = Sim::new(config("rtmp://u:p@h/live/k"), SourceKind::Fifo);
    let challenge = Error::rejected("connect was refused").with_server_description(
        "[ AccessManager.Reject ] : [ code=403 need auth; authmod=adobe ] : ",
    );
    sim.link(LinkEvent::Failed(challenge));
    assert_eq!(sim.connects_since(0), vec![0, 0]);
    let Some((_, Action::Connect { auth_query, .. })) = sim.log.last() else {
        panic!("no connect")
    };
    assert_eq!(auth_query.as_deref(), Some("?authmod=adobe&user=u"));
}

#[test]
fn reconnect_request_without_tc_url_reconnects_to_the_same_server_at_the_next_keyframe() {
    let mut sim = Sim::new(config("rtmp://h/live/k"), SourceKind::Fifo);
    sim.publish_ok();
    sim.stream_for(1_000);
    sim.link(LinkEvent::ReconnectRequest { tc_url: None });
    assert!(sim.core.switch_pending());
    sim.stream_for(500);
    let at = sim.now;
    sim.link(LinkEvent::KeyframeNext);
    assert_eq!(
        sim.actions_since(at),
        vec![(at, "close".into()), (at, "connect".into())]
    );
    assert_eq!(sim.last_connect_url(), "rtmp://-@h:1935/live/k");
}

#[test]
fn reconnect_request_without_a_keyframe_switches_after_the_deadline() {
    let mut sim = Sim::new(config("rtmp://h/live/k"), SourceKind::Fifo);
    sim.publish_ok();
    let at = sim.now;
    sim.link(LinkEvent::ReconnectRequest { tc_url: None });
    sim.stream_for(ms(SWITCH_DEADLINE) + 100);
    assert_eq!(sim.connects_since(1), vec![at + ms(SWITCH_DEADLINE)]);
}

#[test]
fn reconnect_request_to_another_host_keeps_key_and_query_but_not_credentials() {
    let mut sim = Sim::new(config("rtmp://u:p@h/live/k?token=t"), SourceKind::Fifo);
    sim.publish_ok();
    sim.link(LinkEvent::ReconnectRequest {
        tc_url: Some("rtmp://other:1936/live".into()),
    });
    sim.link(LinkEvent::KeyframeNext);
    assert_eq!(sim.last_connect_url(), "rtmp://-@other:1936/live/k");
    assert_eq!(sim.core.target().query.as_deref(), Some("token=t"));
}

#[test]
fn reconnect_request_to_another_host_carries_credentials_when_allowed() {
    let options = CoreOptions {
        redirect_credentials: true,
        ..CoreOptions::default()
    };
    let mut sim = Sim::with_options(config("rtmp://u:p@h/live/k"), SourceKind::Fifo, options);
    sim.publish_ok();
    sim.link(LinkEvent::ReconnectRequest {
        tc_url: Some("rtmp://other/live".into()),
    });
    sim.link(LinkEvent::KeyframeNext);
    assert_eq!(sim.last_connect_url(), "rtmp://u:p@other:1935/live/k");
}

#[test]
fn reconnect_request_on_the_same_host_keeps_credentials() {
    let mut sim = Sim::new(config("rtmp://u:p@h/live/k"), SourceKind::Fifo);
    sim.publish_ok();
    sim.link(LinkEvent::ReconnectRequest {
        tc_url: Some("rtmp://h/live2".into()),
    });
    sim.link(LinkEvent::KeyframeNext);
    assert_eq!(sim.last_connect_url(), "rtmp://u:p@h:1935/live2/k");
}

#[test]
fn reconnect_request_from_rtmps_to_rtmp_is_refused_and_stays_on_tls() {
    let mut sim = Sim::new(config("rtmps://u:p@h/live/k?token=t"), SourceKind::Fifo);
    sim.publish_ok();
    sim.link(LinkEvent::ReconnectRequest {
        tc_url: Some("rtmp://evil/live".into()),
    });
    sim.link(LinkEvent::KeyframeNext);
    assert_eq!(sim.last_connect_url(), "rtmps://u:p@h:443/live/k");
    // And later reconnects stay there too.
    sim.link(LinkEvent::Failed(refused()));
    let next = sim.core.poll_timeout().unwrap();
    sim.advance_to(next);
    assert_eq!(sim.last_connect_url(), "rtmps://u:p@h:443/live/k");
}

#[test]
fn a_dead_redirect_target_gives_way_to_the_configured_server() {
    let mut sim = Sim::new(config("rtmp://h/live/k"), SourceKind::Fifo);
    sim.publish_ok();
    sim.link(LinkEvent::ReconnectRequest {
        tc_url: Some("rtmp://dead/live".into()),
    });
    sim.link(LinkEvent::KeyframeNext);
    let mut hosts = Vec::new();
    for _ in 0..5 {
        hosts.push(sim.core.target().host.clone());
        sim.link(LinkEvent::Failed(refused()));
        let next = sim.core.poll_timeout().unwrap();
        sim.advance_to(next);
    }
    assert_eq!(hosts, ["dead", "dead", "dead", "h", "h"]);
}

#[test]
fn a_redirect_target_that_works_is_kept_across_failures() {
    let mut sim = Sim::new(config("rtmp://h/live/k"), SourceKind::Fifo);
    sim.publish_ok();
    sim.link(LinkEvent::ReconnectRequest {
        tc_url: Some("rtmp://other/live".into()),
    });
    sim.link(LinkEvent::KeyframeNext);
    sim.publish_ok();
    sim.stream_for(5_000);
    sim.link(LinkEvent::Failed(Error::network("reset")));
    let next = sim.core.poll_timeout().unwrap();
    sim.advance_to(next);
    assert_eq!(sim.core.target().host, "other");
}

#[test]
fn a_silent_live_source_is_restarted_at_the_source_timeout() {
    let mut sim = Sim::new(config("rtmp://h/live/k"), SourceKind::Exec);
    sim.publish_ok();
    sim.stream_for(3_000);
    let last = sim.log.iter().map(|(t, _)| *t).max().unwrap();
    let silent_from = sim.now;
    sim.advance_to(silent_from + 20_000);
    let restarts: Vec<_> = sim
        .actions_since(silent_from)
        .into_iter()
        .filter(|(_, a)| a.ends_with("source"))
        .collect();
    let due = silent_from - (silent_from - last) % 33 + 10_000;
    assert_eq!(
        restarts[..2],
        [(due, "close-source".into()), (due, "open-source".into())],
        "{restarts:?}"
    );
    sim.source(SourceEvent::Opened {
        kind: SourceKind::Exec,
        name: "cam".into(),
    });
    assert_eq!(sim.core.counters().source_restarts, 1);
}

#[test]
fn a_file_has_no_source_watchdog() {
    let mut sim = Sim::new(config("rtmp://h/live/k"), SourceKind::File);
    sim.publish_ok();
    sim.advance_to(100_000);
    assert!(!sim
        .actions_since(0)
        .iter()
        .any(|(_, a)| a.ends_with("source")));
}

#[test]
fn a_child_that_exits_is_restarted_with_backoff_and_counted_once() {
    let mut sim = Sim::new(config("rtmp://h/live/k"), SourceKind::Exec);
    sim.publish_ok();
    let mut opens = Vec::new();
    for _ in 0..5 {
        let exited = sim.now;
        sim.source(SourceEvent::Exited {
            ran_for: Duration::from_millis(50),
            how: "exit status 1".into(),
        });
        assert!(sim.core.source_down());
        let at = sim.core.poll_timeout().unwrap();
        sim.advance_to(at);
        let open = sim
            .actions_since(exited)
            .into_iter()
            .find(|(_, a)| a == "open-source")
            .expect("reopened");
        opens.push(open.0 - exited);
        sim.source(SourceEvent::Opened {
            kind: SourceKind::Exec,
            name: "cam".into(),
        });
    }
    assert_eq!(sim.core.counters().source_restarts, 5);
    assert!(opens[0] < 500, "{opens:?}");
    assert!(opens.iter().all(|&d| d <= 30_000));
}

#[test]
fn a_camera_that_fails_is_closed_at_once_and_reopened_until_it_is_back() {
    let mut sim = Sim::new(config("rtmp://h/live/k"), SourceKind::Device);
    sim.publish_ok();
    sim.stream_for(1_000);
    let failed = sim.now;
    sim.source(SourceEvent::Failed(Error::input("/dev/video0 is gone")));
    assert_eq!(
        sim.actions_since(failed),
        vec![(failed, "close-source".into())]
    );
    for _ in 0..3 {
        let at = sim.core.poll_timeout().unwrap();
        sim.advance_to(at);
        sim.source(SourceEvent::OpenFailed {
            error: Error::config("/dev/video0 does not exist"),
            missing: true,
        });
    }
    let at = sim.core.poll_timeout().unwrap();
    sim.advance_to(at);
    sim.source(SourceEvent::Opened {
        kind: SourceKind::Device,
        name: "cam".into(),
    });
    let opens = sim
        .actions_since(failed)
        .iter()
        .filter(|(_, a)| a == "open-source")
        .count();
    assert_eq!(opens, 4);
    assert_eq!(sim.core.counters().source_restarts, 1);
    // The link was never touched.
    assert!(matches!(sim.core.link(), LinkState::Up { .. }));
}

#[test]
fn a_camera_that_cannot_do_what_is_asked_exits() {
    let mut sim = Sim::new(config("rtmp://h/live/k"), SourceKind::Device);
    sim.source(SourceEvent::OpenFailed {
        error: Error::config("the device offers no H.264"),
        missing: false,
    });
    assert_eq!(sim.actions_since(0).last().unwrap().1, "exit Config");
}

#[test]
fn a_fifo_whose_writer_leaves_is_reopened_at_once() {
    let mut sim = Sim::new(config("rtmp://h/live/k"), SourceKind::Fifo);
    sim.publish_ok();
    sim.stream_for(1_000);
    let at = sim.now;
    sim.source(SourceEvent::WriterGone);
    assert_eq!(sim.actions_since(at), vec![(at, "open-source".into())]);
}

#[test]
fn a_read_error_on_a_pipe_exits() {
    let mut sim = Sim::new(config("rtmp://h/live/k"), SourceKind::Pipe);
    sim.source(SourceEvent::Failed(Error::input("read error")));
    assert_eq!(sim.actions_since(0).last().unwrap().1, "exit Input");
}

#[test]
fn end_of_input_finishes_once_everything_is_sent_on_a_live_connection() {
    let mut sim = Sim::new(config("rtmp://h/live/k"), SourceKind::File);
    sim.source(SourceEvent::Ended);
    // Not connected yet: nothing to finish.
    assert!(!sim.core.handle_drained(sim.now));
    sim.publish_ok();
    assert!(sim.core.handle_drained(sim.now));
    sim.collect();
    assert_eq!(sim.actions_since(0).last().unwrap().1, "finish EndOfInput");
}

#[test]
fn a_signal_finishes_and_nothing_happens_after() {
    let mut sim = Sim::new(config("rtmp://h/live/k"), SourceKind::Fifo);
    sim.core.handle_stop("SIGTERM", 0);
    sim.collect();
    sim.link(LinkEvent::Failed(refused()));
    sim.advance_to(100_000);
    assert_eq!(
        sim.actions_since(0),
        vec![(0, "connect".into()), (0, "finish Signal".into())]
    );
}

#[test]
fn reload_with_a_new_destination_closes_politely_and_connects_there_at_once() {
    let mut sim = Sim::new(config("rtmp://h/live/k"), SourceKind::Fifo);
    sim.publish_ok();
    sim.stream_for(1_000);
    let at = sim.now;
    sim.core
        .handle_reload(Ok(config("rtmp://new/live/k2")), sim.now);
    sim.collect();
    assert_eq!(
        sim.actions_since(at),
        vec![(at, "close".into()), (at, "connect".into())]
    );
    assert_eq!(sim.last_connect_url(), "rtmp://-@new:1935/live/k2");
}

#[test]
fn reload_with_a_new_input_reopens_it_and_keeps_the_connection() {
    let mut sim = Sim::new(config("rtmp://h/live/k"), SourceKind::Fifo);
    sim.publish_ok();
    sim.stream_for(1_000);
    let at = sim.now;
    let mut new = config("rtmp://h/live/k");
    new.input = "/dev/video0".into();
    sim.core.handle_reload(Ok(new), at);
    sim.collect();
    assert_eq!(
        sim.actions_since(at),
        vec![(at, "close-source".into()), (at, "open-new-source".into())]
    );
    sim.source(SourceEvent::Opened {
        kind: SourceKind::Device,
        name: "cam".into(),
    });
    assert_eq!(sim.core.source_kind(), SourceKind::Device);
    assert!(matches!(sim.core.link(), LinkState::Up { .. }));
}

#[test]
fn reload_of_timeouts_applies_at_once_and_fixed_options_stay() {
    let mut sim = Sim::new(config("rtmp://h/live/k"), SourceKind::Fifo);
    sim.publish_ok();
    sim.stream_for(1_000);
    let mut new = config("rtmp://h/live/k");
    new.stall_timeout_ms = 3_000;
    new.queue_size = 1;
    new.audio = Some(crate::config::AudioOptions {
        source: crate::config::AudioSource::Silence,
        rate: Some(48_000),
        channels: 1,
        bitrate: 64_000,
    });
    sim.core.handle_reload(Ok(new), sim.now);
    sim.collect();
    assert!(sim.actions_since(sim.now).is_empty());
    assert_eq!(sim.core.config().stall_timeout_ms, 3_000);
    assert_eq!(sim.core.config().queue_size, 8 * 1024 * 1024);
    assert_eq!(
        sim.core.config().audio,
        None,
        "an audio track comes with a restart"
    );
    let busy = sim.now;
    sim.link(LinkEvent::Wrote { idle: false });
    sim.advance_to(busy + 3_000);
    assert_eq!(sim.actions_since(busy)[0], (busy + 3_000, "drop".into()));
}

#[test]
fn a_bad_reload_keeps_everything() {
    let mut sim = Sim::new(config("rtmp://h/live/k"), SourceKind::Fifo);
    sim.publish_ok();
    sim.stream_for(1_000);
    sim.core
        .handle_reload(Err(Error::config("bad file")), sim.now);
    sim.collect();
    assert!(sim.actions_since(sim.now).is_empty());
    assert_eq!(sim.core.config().url.host, "h");
}

#[test]
fn the_systemd_watchdog_is_fed_while_frames_flow_or_a_recovery_is_under_way() {
    let options = CoreOptions {
        watchdog: Some(Duration::from_secs(30)),
        ..CoreOptions::default()
    };
    let fed = |sim: &Sim, from: u64| -> Vec<u64> {
        sim.actions_since(from)
            .into_iter()
            .filter(|(_, a)| a == "watchdog")
            .map(|(t, _)| t)
            .collect()
    };
    let mut sim = Sim::with_options(config("rtmp://h/live/k"), SourceKind::File, options);
    // Connecting counts as a recovery under way.
    sim.advance_to(16_000);
    assert_eq!(fed(&sim, 0), vec![15_000]);
    sim.publish_ok();
    sim.stream_for(15_000);
    assert_eq!(fed(&sim, 0), vec![15_000, 30_000]);
    // Frames stop while the link is up and the input is open: the watchdog starves after the
    // tick that still counts the last frames.
    sim.advance_to(100_000);
    assert_eq!(fed(&sim, 30_001), vec![45_000]);
    // The link fails: reconnecting feeds it again.
    sim.link(LinkEvent::Failed(refused()));
    sim.advance_to(106_000);
    assert_eq!(fed(&sim, 100_000), vec![105_000]);
}

#[test]
fn status_is_refreshed_every_five_seconds_when_someone_listens() {
    let options = CoreOptions {
        status: true,
        ..CoreOptions::default()
    };
    let mut sim = Sim::with_options(config("rtmp://h/live/k"), SourceKind::File, options);
    sim.publish_ok();
    sim.advance_to(16_000);
    let status: Vec<u64> = sim
        .actions_since(0)
        .into_iter()
        .filter(|(_, a)| a == "status")
        .map(|(t, _)| t)
        .collect();
    assert_eq!(status, vec![5_000, 10_000, 15_000]);
}

#[test]
fn a_new_connection_asks_for_a_keyframe() {
    let mut sim = Sim::new(config("rtmp://h/live/k"), SourceKind::Device);
    sim.link(LinkEvent::Publishing);
    assert_eq!(sim.actions_since(0)[1].1, "force-keyframe");
}

#[test]
fn the_progress_line_comes_at_its_interval_while_streaming_only() {
    let options = CoreOptions {
        stats: Some(Duration::from_secs(5)),
        ..CoreOptions::default()
    };
    let mut sim = Sim::with_options(config("rtmp://h/live/k"), SourceKind::File, options);
    sim.publish_ok();
    sim.advance_to(12_000);
    sim.link(LinkEvent::Failed(refused()));
    sim.advance_to(12_001);
    let at = |sim: &Sim| -> Vec<u64> {
        sim.actions_since(0)
            .into_iter()
            .filter(|(_, a)| a == "stats")
            .map(|(t, _)| t)
            .collect()
    };
    assert_eq!(at(&sim), vec![5_000, 10_000]);
    // Down: no progress line (the outage has lines of its own), and STATUS can tell why.
    let outage = sim.core.outage().expect("an outage");
    assert_eq!(outage.attempts, 1);
    assert!(
        outage.reason.contains("cannot connect"),
        "{}",
        outage.reason
    );
    assert!(outage.retry_at.is_some());
    let retry = outage.retry_at.unwrap();
    sim.advance_to(retry.max(16_000));
    sim.link(LinkEvent::Failed(refused()));
    sim.advance_to(40_000);
    assert_eq!(at(&sim), vec![5_000, 10_000]);
}
