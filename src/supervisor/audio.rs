//! The captured audio track's supervision: when to open the microphone, when to give up on it
//! and reopen it, and whether the video should wait for its frames. Sans-IO: the shell reports
//! what happened (`handle_*`, with the time) and carries out [`AudioAction`]s; every decision is
//! tested with a virtual clock.
//!
//! - A device that fails to open, fails while capturing (unplugged: ENODEV; suspended; an
//!   error) or goes silent for `--source-timeout` without saying so is closed and opened again
//!   after a backoff, as a camera is. The video never waits for any of this.
//! - While the microphone delivers, the video waits for the audio of its time (at most
//!   [`AUDIO_WAIT_MAX_MS`]), so that both tracks go on the wire in timestamp order; once it has
//!   delivered nothing for that long, the video stops waiting for it.
//!
//! Invariants: at most one action is pending at a time (open or close); an open is never asked
//! for while the device is open; no allocation, no clock read.

use std::time::Duration;

use log::{info, warn};

use crate::backoff::{Backoff, Jitter};
use crate::error::{Error, Fault};

/// The longest a video frame waits for the audio of its time. The audio path's own latency (a
/// period of capture, and the AAC encoder's look-ahead: about 55 ms at 48 kHz) is well within.
pub const AUDIO_WAIT_MAX_MS: u64 = 400;
/// How long after opening the video waits for a track's first frame.
pub const AUDIO_FIRST_FRAME_MS: u64 = 1_000;
/// Reopening a failed microphone: the first retry within this, doubling up to the cap.
const REOPEN_FIRST: Duration = Duration::from_millis(500);
const REOPEN_CAP: Duration = Duration::from_secs(30);
/// An opening that delivered for this long resets the backoff.
const REOPEN_STABLE: Duration = Duration::from_secs(30);

/// What the shell is to do with the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AudioAction {
    Open,
    Close,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Closed; opened again at `retry_at`.
    Closed { retry_at: u64 },
    /// A file's audio is over: not opened again.
    Ended,
    /// Open since `since`; its last frame came at `last_frame` (none yet: `None`).
    Open { since: u64, last_frame: Option<u64> },
}

/// Supervision of one captured audio source.
#[derive(Debug)]
pub struct AudioSupervisor {
    state: State,
    action: Option<AudioAction>,
    backoff: Backoff,
    jitter: Jitter,
    /// A device that delivers nothing for this long is reopened (0: never).
    stall_ms: u64,
    /// Since when the device has been down, for the log line when it is back.
    down_since: Option<u64>,
    /// Openings that failed or ended, for STATUS and the logs.
    failures: u64,
    label: String,
}

impl AudioSupervisor {
    /// Supervision of `label` (the device as the user named it), to be opened at once.
    pub fn new(label: &str, stall_ms: u64, seed: u64, now: u64) -> AudioSupervisor {
        AudioSupervisor {
            state: State::Closed { retry_at: now },
            action: Some(AudioAction::Open),
            backoff: Backoff::new(REOPEN_FIRST, REOPEN_CAP, REOPEN_STABLE),
            jitter: Jitter::new(seed),
            stall_ms,
            down_since: None,
            failures: 0,
            label: label.to_string(),
        }
    }

    /// The next thing to do, once.
    pub fn poll_action(&mut self) -> Option<AudioAction> {
        self.action.take()
    }

    /// When [`handle_timeout`](Self::handle_timeout) is due.
    pub fn poll_timeout(&self) -> Option<u64> {
        if self.action.is_some() {
            return None;
        }
        match self.state {
            State::Closed { retry_at } => Some(retry_at),
            State::Open { since, last_frame } if self.stall_ms > 0 => {
                Some(last_frame.unwrap_or(since).saturating_add(self.stall_ms))
            }
            State::Open { .. } | State::Ended => None,
        }
    }

    pub fn is_open(&self) -> bool {
        matches!(self.state, State::Open { .. })
    }

    pub fn failures(&self) -> u64 {
        self.failures
    }

    /// The device opened (after [`AudioAction::Open`]).
    pub fn handle_opened(&mut self, now: u64) {
        if let Some(since) = self.down_since.take() {
            info!(
                "audio: {} is back after {:.1} s",
                self.label,
                now.saturating_sub(since) as f64 / 1000.0
            );
        }
        self.state = State::Open {
            since: now,
            last_frame: None,
        };
    }

    /// The open failed. A configuration error (the device cannot give what is asked) is
    /// retried too: the device may be a different one next time (another USB microphone).
    pub fn handle_open_failed(&mut self, error: &Error, now: u64) {
        self.went_down(error, 0, now);
    }

    /// A frame came from the device.
    pub fn handle_frame(&mut self, now: u64) {
        if let State::Open { last_frame, .. } = &mut self.state {
            *last_frame = Some(now);
        }
    }

    /// The device failed while open (unplugged, suspended, an error): close it, reopen later.
    pub fn handle_failed(&mut self, error: &Error, now: u64) {
        let healthy = match self.state {
            State::Open { since, .. } => now.saturating_sub(since),
            State::Closed { .. } | State::Ended => return,
        };
        self.action = Some(AudioAction::Close);
        self.went_down(error, healthy, now);
    }

    /// The source ended for good (a file read to its end): the video goes on alone.
    pub fn handle_ended(&mut self) {
        self.state = State::Ended;
        self.action = None;
    }

    /// Time passed: a reopen is due, or an open device has been silent too long.
    pub fn handle_timeout(&mut self, now: u64) {
        if self.action.is_some() {
            return;
        }
        match self.state {
            State::Closed { retry_at } if now >= retry_at => {
                self.action = Some(AudioAction::Open);
            }
            State::Open { since, last_frame }
                if self.stall_ms > 0
                    && now >= last_frame.unwrap_or(since).saturating_add(self.stall_ms) =>
            {
                let last_frame = last_frame.unwrap_or(since);
                let error = Error::new(
                    Fault::Input,
                    format!(
                        "{} gave no audio for {} s",
                        self.label,
                        now.saturating_sub(last_frame) / 1000
                    ),
                );
                self.action = Some(AudioAction::Close);
                self.went_down(&error, last_frame.saturating_sub(since), now);
            }
            _ => {}
        }
    }

    fn went_down(&mut self, error: &Error, healthy_ms: u64, now: u64) {
        self.failures += 1;
        let delay = self
            .backoff
            .next_delay(Duration::from_millis(healthy_ms), self.jitter.unit());
        let delay_ms = delay.as_millis() as u64;
        self.down_since.get_or_insert(now);
        warn!(
            "audio: {error}; the video goes on without it, trying again in {:.1} s",
            delay_ms as f64 / 1000.0
        );
        self.state = State::Closed {
            retry_at: now.saturating_add(delay_ms),
        };
    }

    /// Whether the video should wait for the audio of its time: the track has delivered
    /// within [`AUDIO_WAIT_MAX_MS`], or opened less than [`AUDIO_FIRST_FRAME_MS`] ago (so that
    /// the video does not run ahead of a track about to start, whose first frames would then
    /// all be late).
    pub fn video_waits(&self, now: u64) -> bool {
        match self.state {
            State::Open {
                last_frame: Some(at),
                ..
            } => now.saturating_sub(at) < AUDIO_WAIT_MAX_MS,
            State::Open { since, .. } => now.saturating_sub(since) < AUDIO_FIRST_FRAME_MS,
            _ => false,
        }
    }
}

/// The order of the two tracks in the store: a video frame waits until the captured audio of
/// its time has been stored (while the track delivers, [`AUDIO_WAIT_MAX_MS`] at most), and an
/// audio frame older than video already admitted is late. Times are clock milliseconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct AudioGate {
    /// A captured track is delivering.
    live: bool,
    /// The end of the last audio frame that came.
    covered_until: Option<u64>,
    /// The stream timestamp of the last video frame admitted.
    last_video_ts: Option<u64>,
    /// Audio frames dropped as late.
    late: u64,
}

/// What to do with a captured audio frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AudioVerdict {
    /// Store it with this stream timestamp.
    Store(u64),
    /// Older than video already admitted (the video gave up waiting for it): dropped.
    Late,
}

/// An audio frame at most this much older than the video before it (a burst of video stamped
/// a millisecond apart, rounding) is moved up to it rather than dropped.
pub const AUDIO_CLAMP_MS: u64 = 10;

impl AudioGate {
    /// Whether the track delivers (see [`AudioSupervisor::video_waits`]).
    pub fn set_live(&mut self, live: bool) {
        self.live = live;
    }

    /// `None` when a video frame of time `at`, which came at `arrived`, may be admitted now;
    /// else when to look again.
    pub fn video_due(&self, at: u64, arrived: u64, now: u64) -> Option<u64> {
        if !self.live || self.covered_until.is_some_and(|until| until >= at) {
            return None;
        }
        let give_up = arrived.saturating_add(AUDIO_WAIT_MAX_MS);
        (now < give_up).then_some(give_up)
    }

    /// An audio frame of time `at` has come: everything before it has come too (frames come in
    /// order), so video up to `at` need not wait for it.
    pub fn audio_arrives(&mut self, at: u64) {
        self.covered_until = Some(self.covered_until.map_or(at, |until| until.max(at)));
    }

    /// A video frame stamped `timestamp_ms` (stream time) was admitted.
    pub fn video_admitted(&mut self, timestamp_ms: u64) {
        self.last_video_ts = Some(
            self.last_video_ts
                .map_or(timestamp_ms, |last| last.max(timestamp_ms)),
        );
    }

    /// An audio frame of time `at` (clock), lasting `duration_ms`, came; `timestamp_ms` is its
    /// stream time (`None` before the first video frame: not stored). Its stream time never
    /// goes before the last video frame's: a little older is moved up to it, more is late.
    pub fn audio(
        &mut self,
        at: u64,
        duration_ms: u64,
        timestamp_ms: Option<u64>,
    ) -> Option<AudioVerdict> {
        let end = at.saturating_add(duration_ms);
        self.covered_until = Some(self.covered_until.map_or(end, |until| until.max(end)));
        let timestamp = timestamp_ms?;
        match self.last_video_ts {
            Some(video) if timestamp.saturating_add(AUDIO_CLAMP_MS) < video => {
                self.late += 1;
                Some(AudioVerdict::Late)
            }
            Some(video) => Some(AudioVerdict::Store(timestamp.max(video))),
            None => Some(AudioVerdict::Store(timestamp)),
        }
    }

    /// Audio frames dropped as late so far.
    pub fn late(&self) -> u64 {
        self.late
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gone() -> Error {
        Error::new(Fault::Input, "hw:1,0 disappeared")
    }

    #[test]
    fn opens_at_once_and_reopens_after_a_failure_with_backoff() {
        let mut audio = AudioSupervisor::new("hw:1,0", 5_000, 7, 0);
        assert_eq!(audio.poll_action(), Some(AudioAction::Open));
        assert_eq!(audio.poll_action(), None);
        audio.handle_opened(10);
        assert!(audio.is_open());
        audio.handle_frame(30);
        audio.handle_failed(&gone(), 1_000);
        assert_eq!(audio.poll_action(), Some(AudioAction::Close));
        assert!(!audio.is_open());
        let retry = audio.poll_timeout().unwrap();
        assert!((1_000..1_000 + 500).contains(&retry), "{retry}");
        audio.handle_timeout(retry - 1);
        assert_eq!(audio.poll_action(), None);
        audio.handle_timeout(retry);
        assert_eq!(audio.poll_action(), Some(AudioAction::Open));
        // Still gone: the next wait is longer (up to twice the first).
        audio.handle_open_failed(&gone(), retry + 5);
        let again = audio.poll_timeout().unwrap();
        assert!(again < retry + 5 + 1_000, "{again}");
        assert_eq!(audio.failures(), 2);
    }

    #[test]
    fn the_backoff_grows_to_its_cap_and_resets_after_a_stable_opening() {
        let mut audio = AudioSupervisor::new("hw:1,0", 0, 3, 0);
        let mut now = 0;
        let mut longest = 0;
        for _ in 0..20 {
            assert_eq!(audio.poll_action(), Some(AudioAction::Open));
            audio.handle_open_failed(&gone(), now);
            let at = audio.poll_timeout().unwrap();
            longest = longest.max(at - now);
            now = at;
            audio.handle_timeout(now);
        }
        assert!(longest <= 30_000 && longest > 5_000, "{longest}");
        // An opening that lasts 30 s: the next failure retries within the first delay.
        assert_eq!(audio.poll_action(), Some(AudioAction::Open));
        audio.handle_opened(now);
        audio.handle_frame(now + 30_000);
        audio.handle_failed(&gone(), now + 30_000);
        assert_eq!(audio.poll_action(), Some(AudioAction::Close));
        assert!(audio.poll_timeout().unwrap() < now + 30_000 + 500);
    }

    #[test]
    fn a_silent_device_is_reopened_after_the_source_timeout() {
        let mut audio = AudioSupervisor::new("hw:1,0", 5_000, 1, 0);
        audio.poll_action();
        audio.handle_opened(0);
        audio.handle_frame(2_000);
        assert_eq!(audio.poll_timeout(), Some(7_000));
        audio.handle_timeout(6_999);
        assert_eq!(audio.poll_action(), None);
        audio.handle_timeout(7_000);
        assert_eq!(audio.poll_action(), Some(AudioAction::Close));
        assert!(!audio.is_open());
        let retry = audio.poll_timeout().unwrap();
        audio.handle_timeout(retry);
        assert_eq!(audio.poll_action(), Some(AudioAction::Open));
    }

    #[test]
    fn video_waits_for_the_audio_of_its_time_and_no_longer_than_the_bound() {
        let mut gate = AudioGate::default();
        // No captured track delivering: nothing waits.
        assert_eq!(gate.video_due(100, 100, 100), None);
        gate.set_live(true);
        // A camera frame captured at 100, come at 110; the audio so far ends at 90. Stream
        // times here are clock times less 50.
        let store = |ts| Some(AudioVerdict::Store(ts));
        assert_eq!(gate.audio(69, 21, Some(19)), store(19));
        assert_eq!(gate.video_due(100, 110, 110), Some(110 + AUDIO_WAIT_MAX_MS));
        assert_eq!(gate.audio(90, 21, Some(40)), store(40));
        assert_eq!(gate.video_due(100, 110, 160), None, "covered to 111");
        gate.video_admitted(50);
        // Audio stops coming: the next frame waits the bound, then goes.
        assert_eq!(gate.video_due(133, 140, 140), Some(540));
        assert_eq!(gate.video_due(133, 140, 540), None);
        gate.video_admitted(83);
        // The audio of before it comes after all: late, dropped; a little before it (a burst
        // stamped a millisecond apart): moved up to it; after it: stored.
        assert_eq!(gate.audio(111, 21, Some(61)), Some(AudioVerdict::Late));
        assert_eq!(gate.audio(128, 21, Some(78)), store(83));
        assert_eq!(gate.audio(149, 21, Some(99)), store(99));
        assert_eq!(gate.late(), 1);
        // Before the first video frame: coverage only.
        assert_eq!(gate.audio(170, 21, None), None);
        // The track stops delivering (the supervisor says): nothing waits.
        gate.set_live(false);
        assert_eq!(gate.video_due(1_000, 1_000, 1_000), None);
    }

    #[test]
    fn the_video_waits_only_for_a_track_that_delivers() {
        let mut audio = AudioSupervisor::new("hw:1,0", 5_000, 1, 0);
        audio.poll_action();
        assert!(!audio.video_waits(0), "not open");
        audio.handle_opened(0);
        assert!(audio.video_waits(10), "open, about to deliver");
        assert!(
            !audio.video_waits(AUDIO_FIRST_FRAME_MS),
            "open, nothing delivered for too long"
        );
        audio.handle_frame(100);
        assert!(audio.video_waits(100 + AUDIO_WAIT_MAX_MS - 1));
        assert!(!audio.video_waits(100 + AUDIO_WAIT_MAX_MS), "stalled");
        audio.handle_failed(&gone(), 200);
        assert!(!audio.video_waits(201), "closed");
    }
}
