//! Moving frames: from the input into the [`FrameStore`], and from the store through the
//! connection's cursor to the socket. Mechanism only: what happens is reported to the [`Core`],
//! which decides; the store applies the drop policy.
//!
//! - A byte stream (file, pipe, FIFO, `exec:`) is read straight into the store's ring (by the
//!   shell, [`Flow::read_buf`]); here each access unit found there is muxed (checked, stamped)
//!   and admitted, or discarded. Its bytes are never copied: the socket writes them from the
//!   ring, retained GOP included.
//! - A camera frame lives in the driver's buffer. It goes straight to the socket when the link
//!   is idle, nothing waits in the store and no GOP is retained (a V4L2 encoder, which is asked
//!   for a keyframe instead); if the socket does not take all of it, the rest is copied into
//!   the session. Otherwise it is copied into the ring, once, and sent from there.
//! - A live input is read at its own pace: frames the link cannot take wait in the store, which
//!   drops whole GOPs that are late by the wall clock, and holds a pipe back while nothing is
//!   late. A file is admitted only as fast as the link takes it, paced with `--realtime`.
//! - One frame is in flight at a time: its [`InFlight`] token pins its ring bytes while the
//!   session's queued pieces refer to them. Those pieces only ever refer to the ring (a camera
//!   frame sent from its buffer is detached before the pass goes on), so the buffer they name is
//!   known by type, not checked at run time.
//!
//! Invariants: nothing here allocates per frame; a connection never gets a frame whose
//! reference it did not get (the pipeline and the store see to it); a switch the server asked
//! for happens before a keyframe, which then opens the new connection.

use std::collections::VecDeque;
use std::time::Duration;

use log::{debug, info, trace, warn};

use crate::driver::{Clock, Connection};
use crate::error::{Error, Fault, Result};
use crate::media::annexb::{AccessUnit, NalRef};
use crate::media::flv::{aac_frame_parts, avc_frame_header};
use crate::pipeline::{Frame, Pipeline};
use crate::rtmp::chunk::Part;
use crate::source::Input;
use crate::store::{
    Bounds, CursorId, CursorSet, FrameStore, InFlight, NotStored, Room, StoreConfig, Track,
};

use super::audio::{AudioGate, AudioVerdict, AUDIO_WAIT_MAX_MS};
use super::core::{Core, LinkEvent, LinkState, SourceEvent, SourceKind, Wait};
use super::{count, Progress};

/// Frames processed before the loop looks at the socket and signals again.
const FRAME_BUDGET: u32 = 64;
/// The highest frame rate the store is sized for: it holds `--queue-time` of frames at this rate,
/// and [`STORE_SPARE_FRAMES`] more.
const STORE_MAX_FPS: u64 = 120;
const STORE_SPARE_FRAMES: u64 = 128;
/// Most frames the store holds at most, whatever `--queue-time` says (bytes bind first).
const STORE_MAX_FRAMES: u64 = 16_384;

/// Audio frames per second at most (48 kHz in frames of 1024 samples is 46.9), for the record
/// slots an audio track adds.
const STORE_AUDIO_FPS: u64 = 48;

/// The audio arena's bytes at least, and per second of `--queue-time` at the track's bitrate
/// (twice it: AAC frames vary around the mean).
const STORE_AUDIO_MIN_BYTES: u64 = 64 * 1024;
/// Most NAL units in one access unit (encoders that cut a picture into one slice per macroblock
/// row make 68 for 1080p); an access unit with more is dropped.
const MAX_NALS_PER_FRAME: usize = 256;
/// Camera frames held at most while they wait for the audio of their time (120 fps for
/// [`AUDIO_WAIT_MAX_MS`] is 48): when full, the oldest is admitted without waiting more.
const HELD_FRAMES: usize = 64;
/// Captured audio frames that wait, beside a camera, for the video of their time: their
/// slots, each as large as an AAC-LC frame can be (6144 bits per channel, stereo).
const QUEUED_AUDIO_FRAMES: usize = 32;
const QUEUED_AUDIO_SLOT: usize = 2 * 768;
/// How often dropped frames are reported at most.
const DROP_LOG_INTERVAL_MS: u64 = 10_000;

/// What a pass over the input left to wait for.
#[derive(Clone, Copy, Debug, Default)]
pub struct Pass {
    /// No complete frame is waiting (or the camera has none): wait for the input.
    pub needs_input: bool,
    /// A paced file's next frame is due then.
    pub pacing_due: Option<u64>,
    /// The frame budget ran out: go round again at once.
    pub more: bool,
    /// A video frame waits for the audio of its time until then at the latest.
    pub audio_due: Option<u64>,
}

/// The longest gap between a paced file's frames slept without watching anything else.
const PACE_SLEEP_MAX_MS: u64 = 100;

/// What the shell waits for after a pass, and until when.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WaitPlan {
    /// Wait on the input too (it has room, or it is a camera).
    pub read_input: bool,
    /// Wake then at the latest (clock ms); none while a paced file sleeps.
    pub deadline: Option<u64>,
    /// Sleep until then first, watching nothing (a paced file's next frame), then look at
    /// everything once without waiting.
    pub pace_until: Option<u64>,
    /// Look again at once, without waiting (the frame budget ran out).
    pub again: bool,
}

impl WaitPlan {
    /// The plan from what is due: the core's next timer and the session's (`others`), a full
    /// store's hold, and the pass. A paced file's next frame, due within a frame or so, with
    /// the link idle and nothing else due before it, is one absolute sleep, as the one-write
    /// floor does: a tokio timer re-armed per frame costs an eventfd write, a second
    /// `epoll_wait` and, every 64 ms, a wake-up of its own (its wheel's cascade).
    pub fn new(
        pass: &Pass,
        read_input: bool,
        others: Option<u64>,
        held_until: Option<u64>,
        now: u64,
    ) -> WaitPlan {
        let deadline = [others, pass.pacing_due, held_until, pass.audio_due]
            .into_iter()
            .flatten()
            .min();
        let pace_until = pass.pacing_due.filter(|&due| {
            !pass.more
                && due.saturating_sub(now) <= PACE_SLEEP_MAX_MS
                && others.is_none_or(|at| at > due)
        });
        WaitPlan {
            read_input,
            deadline: if pace_until.is_some() { None } else { deadline },
            pace_until,
            again: pass.more || pace_until.is_some(),
        }
    }
}

/// Whether the input may be read now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputRoom {
    /// There is room to read into (or the input is a camera).
    Read,
    /// A full store holds the input back until a frame is sent, or until then (when its oldest
    /// frame becomes late and may be dropped).
    Hold(u64),
    /// No room until a frame is sent.
    Full,
}

/// The frames' way from the input to the connection.
pub struct Flow {
    store: FrameStore,
    /// The connection's position in the store.
    cursor: CursorId,
    /// The frame whose bytes the connection is writing from the ring.
    in_flight: Option<InFlight>,
    /// The core was told that a keyframe opens the connection the server asked for: nothing
    /// more goes to this one.
    switching: bool,
    pipeline: Pipeline,
    /// The body of the frame being sent: reused.
    parts: Vec<Part>,
    /// The NAL units of the frame a V4L2 device gave last.
    device_nals: Vec<NalRef>,
    /// Whether this opening of the V4L2 source stamps buffers with CLOCK_MONOTONIC: decided at
    /// its first frame, so capture and arrival times never mix.
    device_clock: Option<bool>,
    realtime: bool,
    max_frame_size: usize,
    /// Bytes written on connections that are closed.
    bytes_sent_before: u64,
    frames_sent: u64,
    /// Where STATUS= and the progress line measured last, for current rates.
    status_rate: Rate,
    stats_rate: Rate,
    drop_log: DropLog,
    /// A captured audio track's order with the video: video frames wait for the audio of their
    /// time, audio older than video already admitted is dropped.
    audio_gate: AudioGate,
    /// Camera frames copied into the store and held there for the audio of their time: their
    /// clock time, arrival and stamps, in order.
    held: VecDeque<HeldFrame>,
    /// Beside a camera, captured audio frames wait here until a camera frame of their time or
    /// later has been taken (a camera frame may come later than the audio of its time), then go
    /// into the store merged with the held camera frames by time.
    audio_queue: VecDeque<QueuedAudio>,
    audio_slots: Vec<u8>,
    /// Slot of the next frame queued.
    audio_slot_next: usize,
    /// The time of the newest camera frame taken.
    video_seen: Option<u64>,
    /// The input is a camera (frames come whole, with their capture time).
    camera: bool,
}

/// A captured audio frame waiting in [`Flow::audio_slots`].
#[derive(Clone, Copy, Debug)]
struct QueuedAudio {
    at: u64,
    duration_ms: u64,
    arrived: u64,
    slot: usize,
    len: usize,
}

/// A camera frame held in the store, unadmitted, until the audio of its time has come.
#[derive(Clone, Copy, Debug)]
struct HeldFrame {
    at: u64,
    arrived: u64,
    frame: Frame,
}

impl Flow {
    pub fn new(core: &Core, input: &Input) -> Flow {
        let config = core.config();
        let live = core.source_kind().is_live();
        let mut pipeline = Pipeline::new(config, live);
        pipeline.use_source_timestamps(core.source_kind() == SourceKind::Device);
        // Allocated at full size, but the OS maps its pages only when they are written.
        let mut store = FrameStore::new(StoreConfig {
            queue_bytes: config.queue_size,
            max_frame_bytes: config.max_frame_size,
            // Its record and NAL rings, like the byte ring, become resident as they are written
            // round: they are no larger than the time bound needs.
            max_frames: (config.queue_time_ms.saturating_mul(STORE_MAX_FPS) / 1000)
                .saturating_add(STORE_SPARE_FRAMES)
                .min(STORE_MAX_FRAMES)
                .saturating_add(config.audio.as_ref().map_or(0, |_| {
                    config.queue_time_ms.saturating_mul(STORE_AUDIO_FPS) / 1000
                })) as usize,
            max_nals_per_frame: MAX_NALS_PER_FRAME,
            audio_bytes: config.audio.as_ref().map_or(0, |audio| {
                (u64::from(audio.bitrate) / 8)
                    .saturating_mul(config.queue_time_ms / 1000 + 1)
                    .saturating_mul(2)
                    .max(STORE_AUDIO_MIN_BYTES) as usize
            }),
        });
        let bounds = Bounds {
            max_wait_ms: Some(config.queue_time_ms),
            max_bytes: None,
        };
        let cursor = store
            .add_cursor(bounds, 0)
            .expect("a new store has a free cursor");
        let mut flow = Flow {
            store,
            cursor,
            in_flight: None,
            switching: false,
            pipeline,
            parts: Vec::with_capacity(4 * MAX_NALS_PER_FRAME),
            device_nals: Vec::with_capacity(64),
            device_clock: None,
            realtime: config.realtime,
            max_frame_size: config.max_frame_size,
            bytes_sent_before: 0,
            frames_sent: 0,
            status_rate: Rate::default(),
            stats_rate: Rate::default(),
            drop_log: DropLog::default(),
            audio_gate: AudioGate::default(),
            held: VecDeque::with_capacity(HELD_FRAMES),
            audio_queue: VecDeque::with_capacity(QUEUED_AUDIO_FRAMES),
            audio_slots: if config
                .audio
                .as_ref()
                .is_some_and(|a| a.source.is_captured())
            {
                vec![0; QUEUED_AUDIO_FRAMES * QUEUED_AUDIO_SLOT]
            } else {
                Vec::new()
            },
            audio_slot_next: 0,
            video_seen: None,
            camera: false,
        };
        flow.set_source(input, core.source_kind());
        flow
    }

    /// The store's modes for a kind of input.
    fn set_source(&mut self, input: &Input, kind: SourceKind) {
        let live = kind.is_live();
        // A live input that cannot be asked for a keyframe (pipe, FIFO, exec:, an H.264 camera)
        // keeps the current GOP, so that after a reconnect the server gets a picture at once,
        // not a GOP later. A V4L2 encoder is asked for a keyframe instead.
        self.store
            .set_retention(live && !input.can_force_keyframe());
        // A file is read only as fast as the link takes it, and nothing of it is dropped.
        self.store.set_backpressure(!live);
        self.store.set_input_can_wait(kind != SourceKind::Device);
        self.camera = !input.reads_bytes();
    }

    /// The buffer the connection's queued external pieces refer to: the ring.
    pub fn external(&self) -> &[u8] {
        self.store.ring()
    }

    /// Whether the input may be read now; makes room by the drop policy if it must.
    /// What the shell waits for after `pass`: the input when the core wants it and the store
    /// has room, and the earliest of the deadlines (`others`: the core's and the session's).
    pub fn plan_wait(
        &mut self,
        pass: &Pass,
        input: &Input,
        core: &Core,
        others: Option<u64>,
        now: u64,
    ) -> WaitPlan {
        let mut read_input = pass.needs_input && core.wants_input() && !input.is_down();
        let mut held_until = None;
        if read_input {
            match self.input_room(input, now) {
                InputRoom::Read => {}
                InputRoom::Hold(until) => {
                    read_input = false;
                    held_until = Some(until);
                }
                InputRoom::Full => read_input = false,
            }
        }
        WaitPlan::new(pass, read_input, others, held_until, now)
    }

    pub fn input_room(&mut self, input: &Input, now: u64) -> InputRoom {
        if !input.reads_bytes() || !self.store.write_buf(now).is_empty() {
            return InputRoom::Read;
        }
        match self.store.room() {
            Room::Hold { until_ms } => InputRoom::Hold(until_ms),
            _ => InputRoom::Full,
        }
    }

    /// Where a byte stream is read into (empty when there is no room).
    pub fn read_buf(&mut self, now: u64) -> &mut [u8] {
        self.store.write_buf(now)
    }

    /// `n` bytes were read into [`read_buf`](Self::read_buf).
    pub fn read_done(&mut self, n: usize, now: u64) {
        self.store.commit(n, now);
    }

    /// The byte stream ended: its last access unit is complete.
    pub fn read_ended(&mut self, now: u64) {
        self.store.finish(now);
    }

    /// A connection is publishing: it starts, after onMetaData and the sequence header, at the
    /// oldest stored keyframe that is not late by the wall clock (else the newest).
    pub fn connected(&mut self, now: u64) {
        self.pipeline.new_connection();
        self.switching = false;
        if let Some(token) = self.in_flight.take() {
            self.store.abandon(token);
        }
        self.store.cursor_restart(self.cursor, now);
    }

    /// The connection is gone: the frame in flight went partly to it; the next starts afresh.
    pub fn disconnected(&mut self, bytes_sent: u64) {
        self.bytes_sent_before += bytes_sent;
        self.switching = false;
        if let Some(token) = self.in_flight.take() {
            self.store.abandon(token);
        }
    }

    /// The input was opened again: a fresh byte stream, a new timeline for the pipeline.
    pub fn source_reopened(&mut self, input: &Input, kind: SourceKind) {
        self.store.new_stream();
        self.held.clear();
        self.video_seen = None;
        self.pipeline.source_restarted();
        self.pipeline
            .use_source_timestamps(kind == SourceKind::Device);
        self.set_source(input, kind);
        self.device_clock = None;
    }

    /// Whether everything read was sent: nothing waits in the store or in the socket.
    fn drained(&self, conn: Option<&Connection>) -> bool {
        self.in_flight.is_none()
            && self.store.scanned_all()
            && !self.store.has_backlog(self.cursor)
            && self.store.next_unadmitted().is_none()
            && conn.is_some_and(|c| c.is_idle())
    }

    /// Frames dropped: by the drop policy, at the input, and waiting for a keyframe.
    fn frames_dropped(&self) -> u64 {
        self.store.cursor_stats(self.cursor).frames_dropped
            + self.store.stats().input_frames_dropped
            + self.pipeline.stats().dropped_waiting_for_keyframe
    }

    /// The counters, with `conn`'s bytes.
    pub fn progress(&self, core: &Core, conn: Option<&Connection>) -> Progress {
        progress(
            self.frames_sent,
            self.bytes_sent_before,
            self.frames_dropped(),
            &self.pipeline,
            core,
            conn,
        )
    }

    /// STATUS= for systemd: resolution, fps, bitrate, destination (key redacted), uptime,
    /// reconnects and drops.
    pub fn status_line(&mut self, core: &Core, conn: Option<&Connection>, now: u64) -> String {
        let progress = self.progress(core, conn);
        let video = match self.pipeline.describe() {
            Some((w, h, Some(fps))) => format!("{w}x{h} {fps:.2} fps"),
            Some((w, h, None)) => format!("{w}x{h}"),
            None => "waiting for H.264".to_string(),
        };
        let uptime_s = now / 1000;
        let (_, kbps) = self.status_rate.update(now, &progress);
        let state = match (core.link(), core.outage()) {
            (LinkState::Up { .. }, _) => {
                format!("streaming {video} {kbps:.0} kbit/s to {}", core.target())
            }
            (_, Some(outage)) => format!(
                "reconnecting to {} for {} s, {} failed{}: {}",
                core.target(),
                now.saturating_sub(outage.since) / 1000,
                count(u64::from(outage.attempts), "attempt"),
                match outage.retry_at {
                    Some(at) => format!(
                        ", next in {}",
                        Wait(Duration::from_millis(at.saturating_sub(now)))
                    ),
                    None => String::new(),
                },
                outage.reason
            ),
            (LinkState::Connecting { .. }, None) => format!("connecting to {}", core.target()),
            (_, None) => format!(
                "waiting for the input before connecting to {}",
                core.target()
            ),
        };
        format!(
            "{state}; up {}h{:02}m; {} sent, {}, {} dropped",
            uptime_s / 3600,
            uptime_s / 60 % 60,
            count(progress.frames_sent, "frame"),
            count(progress.connections.saturating_sub(1), "reconnect"),
            count(progress.frames_dropped, "frame")
        )
    }

    /// The progress line, as FFmpeg's: frames sent, frame rate and bitrate since the last line,
    /// drops, and what waits in the store.
    pub fn stats_line(&mut self, core: &Core, conn: Option<&Connection>, now: u64) -> String {
        let progress = self.progress(core, conn);
        let (fps, kbps) = self.stats_rate.update(now, &progress);
        format!(
            "frame={} fps={fps:.1} bitrate={kbps:.1}kbits/s dropped={} queue={:.2}s reconnects={}{}",
            progress.frames_sent,
            progress.frames_dropped,
            self.store.backlog(self.cursor).ms as f64 / 1000.0,
            progress.connections.saturating_sub(1),
            match self.audio_gate.late() {
                0 => String::new(),
                late => format!(" audio_late={late}"),
            }
        )
    }

    /// After a pass that found no more input: tells the core when an input that ended is all
    /// sent, or gave nothing usable; likewise for an input that gave megabytes and no frame.
    pub fn check_end(
        &self,
        pass: &Pass,
        input: &Input,
        conn: Option<&Connection>,
        core: &mut Core,
        now: u64,
    ) {
        if pass.needs_input && core.source_ended() {
            if self.drained(conn) {
                if self.frames_sent == 0 {
                    core.handle_source(SourceEvent::Unusable(self.nothing_sent_error(input)), now);
                } else {
                    core.handle_drained(now);
                }
            } else if !self.pipeline.started() {
                core.handle_source(SourceEvent::Unusable(self.nothing_sent_error(input)), now);
            }
        }
        if self.hopeless() {
            core.handle_source(SourceEvent::Unusable(self.nothing_sent_error(input)), now);
        }
    }

    /// The input gave nothing usable: the error that says so.
    fn nothing_sent_error(&self, input: &Input) -> Error {
        let stats = self.store.stats();
        self.pipeline
            .nothing_sent_error(input.name(), stats.bytes_read, stats.skipped_bytes)
    }

    /// Whether so much was read without a usable frame that the input cannot be H.264.
    fn hopeless(&self) -> bool {
        !self.pipeline.started() && self.store.stats().bytes_read > 2 * self.max_frame_size as u64
    }

    /// Takes the frames that are ready, as far as the link allows, and sends what the store
    /// holds for the connection. On a write error the core hears of it and the pass ends.
    pub fn pass(
        &mut self,
        input: &mut Input,
        mut conn: Option<&mut Connection>,
        core: &mut Core,
        clock: &Clock,
        on_frame: &mut dyn FnMut(&Progress),
    ) -> Pass {
        let now = clock.now_ms();
        // Camera frames whose audio has come since.
        self.admit_held(now);
        // What is stored goes first: a file is admitted only once the link is idle.
        if !self.pump_or_fail(conn.as_deref_mut(), core, now, on_frame) {
            return Pass::default();
        }
        let pass = if !input.reads_bytes() {
            // A camera's frame borrows this list while the rest of the flow is used.
            let mut nals = std::mem::take(&mut self.device_nals);
            let mut pass = self.take_device_frames(input, &mut nals, conn, core, clock, on_frame);
            self.device_nals = nals;
            let held = self.held.len();
            pass.audio_due = self.admit_held(clock.now_ms());
            // Frames admitted now are sent in the next pass, at once.
            pass.more |= self.held.len() < held;
            pass
        } else {
            self.admit_stream_frames(conn, core, now, on_frame)
        };
        self.drop_log.note(&self.store, self.cursor, now);
        pass
    }

    /// Muxes and admits the access units read into the store; a file's only as fast as the link
    /// sends them.
    fn admit_stream_frames(
        &mut self,
        mut conn: Option<&mut Connection>,
        core: &mut Core,
        now: u64,
        on_frame: &mut dyn FnMut(&Progress),
    ) -> Pass {
        let live = core.source_kind().is_live();
        let mut pass = Pass::default();
        let mut budget = FRAME_BUDGET;
        loop {
            if budget == 0 {
                pass.more = true;
                break;
            }
            if !live {
                // A file's first keyframe is looked for before any connection is made; after
                // that, a frame is admitted when the one before it is sent.
                let link_idle = conn.as_ref().is_some_and(|c| c.is_idle())
                    && self.in_flight.is_none()
                    && !self.store.has_backlog(self.cursor);
                if !link_idle && (conn.is_some() || self.pipeline.started()) {
                    break;
                }
                if self.realtime {
                    if let Some(due) = self.pipeline.next_due_ms().filter(|&due| due > now) {
                        pass.pacing_due = Some(due);
                        break;
                    }
                }
            }
            // What was read while the store had no free record slot is scanned now.
            self.store.scan(now);
            let Some(frame) = self.store.next_unadmitted() else {
                pass.needs_input = true;
                break;
            };
            // A live stream is stamped by when its frames arrived, a file by its pacing.
            let at = if live { frame.arrival_ms() } else { now };
            if let Some(due) = self.audio_gate.video_due(at, frame.arrival_ms(), now) {
                pass.audio_due = Some(due);
                pass.needs_input = true;
                break;
            }
            budget -= 1;
            let muxed = self
                .pipeline
                .mux_nals(frame.nals().map(|nal| nal.pieces()), at);
            core.handle_source(SourceEvent::Frame, now);
            let Some(muxed) = muxed else {
                self.store.discard();
                continue;
            };
            self.store_audio_until(muxed.timestamp_ms, now);
            // Its sequence number once the audio before it is stored.
            let seq =
                self.store
                    .admit_composed(muxed.timestamp_ms, muxed.composition_ms, muxed.keyframe);
            if muxed.keyframe {
                // The first one lets the core connect; it ignores the rest.
                core.handle_source(SourceEvent::Ready, now);
            }
            if let Some(seq) = seq.filter(|_| muxed.parameters_changed) {
                // The frames before it belong to the old sequence header.
                self.store.skip_to(self.cursor, seq);
            }
            self.audio_gate.video_admitted(at);
            if !live && !self.pump_or_fail(conn.as_deref_mut(), core, now, on_frame) {
                return pass;
            }
        }
        self.pump_or_fail(conn, core, now, on_frame);
        pass
    }

    /// Takes the camera's frames: each goes straight from its buffer to an idle link, or is
    /// copied into the store once.
    fn take_device_frames(
        &mut self,
        input: &mut Input,
        nals: &mut Vec<NalRef>,
        mut conn: Option<&mut Connection>,
        core: &mut Core,
        clock: &Clock,
        on_frame: &mut dyn FnMut(&Progress),
    ) -> Pass {
        let now = clock.now_ms();
        let mut pass = Pass::default();
        let mut budget = FRAME_BUDGET;
        loop {
            if budget == 0 {
                pass.more = true;
                break;
            }
            let frame = match input.next_frame(nals) {
                Ok(Some(frame)) => frame,
                Ok(None) => {
                    pass.needs_input = true;
                    break;
                }
                Err(e) => {
                    core.handle_source(SourceEvent::Failed(e), now);
                    pass.needs_input = true;
                    break;
                }
            };
            budget -= 1;
            if frame.skipped > 0 {
                // A lost picture may be the reference of the frames that follow: they would
                // decode as garbage, so wait for the next keyframe.
                debug!(
                    "the camera dropped {} frame(s): waiting for a keyframe",
                    frame.skipped
                );
                self.pipeline.frames_lost();
            }
            let captured = frame.timestamp.and_then(|t| clock.ms_from_monotonic(t));
            let use_capture_time = *self.device_clock.get_or_insert_with(|| {
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
            trace!(
                "device frame: {} bytes, captured {:?}, stream clock {at} ms, now {now} ms",
                frame.au.data.len(),
                frame.timestamp
            );
            core.handle_source(SourceEvent::Frame, now);
            let Some(muxed) = self.pipeline.mux(&frame.au, at) else {
                continue;
            };
            if muxed.keyframe {
                core.handle_source(SourceEvent::Ready, now);
            }
            self.video_seen = Some(self.video_seen.map_or(at, |seen| seen.max(at)));
            if !self.held.is_empty()
                || !self.audio_queue.is_empty()
                || self.audio_gate.video_due(at, now, now).is_some()
            {
                // The audio of its time has not come yet: copied in, and held until it has.
                self.hold_device_frame(at, now, muxed, &frame.au);
                if muxed.keyframe && core.switch_pending() {
                    self.switching = true;
                    core.handle_link(LinkEvent::KeyframeNext, now);
                    return pass;
                }
                continue;
            }
            if muxed.parameters_changed {
                self.store.skip_to(self.cursor, self.store.next_seq());
            }
            // The audio up to this frame goes first; stored, it also keeps this frame from
            // overtaking it straight from the camera's buffer.
            self.store_audio_until(muxed.timestamp_ms, now);
            let switch = muxed.keyframe && core.switch_pending();
            let mut sent = CursorSet::EMPTY;
            if let Some(c) = conn.as_deref_mut() {
                let direct = !switch
                    && !self.switching
                    && !self.store.retention()
                    && self.in_flight.is_none()
                    && c.is_idle()
                    && self.store.may_send_directly(self.cursor, muxed.keyframe);
                if direct {
                    match send_direct(&mut self.pipeline, c, muxed, frame.au.data, core, now) {
                        Ok(delivered) => {
                            sent.insert(self.cursor);
                            if delivered {
                                self.frames_sent += 1;
                                core.handle_link(
                                    LinkEvent::FrameSent {
                                        keyframe: muxed.keyframe,
                                    },
                                    now,
                                );
                                on_frame(&progress(
                                    self.frames_sent,
                                    self.bytes_sent_before,
                                    self.frames_dropped(),
                                    &self.pipeline,
                                    core,
                                    Some(c),
                                ));
                            }
                        }
                        Err(e) => {
                            core.handle_link(LinkEvent::Failed(e), now);
                            return pass;
                        }
                    }
                }
            }
            // Copied only if the connection did not take it, or the retained GOP needs it.
            let stored = self.store.push_copy_nals(
                Track::Video,
                muxed.timestamp_ms,
                muxed.keyframe,
                frame.au.nal_bytes().map(|(_, bytes)| bytes),
                now,
                sent,
            );
            self.audio_gate.video_admitted(at);
            if stored == Err(NotStored::NoRoom) && self.store.room() != Room::Stalled {
                // A camera's buffer goes back to the driver: the frame cannot wait.
                self.store.frame_lost(sent);
            }
            if switch {
                // The server asked for a reconnect: this keyframe opens the new connection.
                self.switching = true;
                core.handle_link(LinkEvent::KeyframeNext, now);
                return pass;
            }
            if !self.pump_or_fail(conn.as_deref_mut(), core, now, on_frame) {
                return pass;
            }
        }
        pass
    }

    /// Copies a camera frame into the store, held until the audio of its time has come.
    fn hold_device_frame(&mut self, at: u64, now: u64, frame: Frame, au: &AccessUnit<'_>) {
        if self.held.len() == HELD_FRAMES {
            self.admit_front_held();
        }
        let held = self.store.hold_copy_nals(
            frame.timestamp_ms,
            frame.keyframe,
            au.nal_bytes().map(|(_, bytes)| bytes),
            now,
        );
        match held {
            Ok(_) => self.held.push_back(HeldFrame {
                at,
                arrived: now,
                frame,
            }),
            Err(NotStored::NoRoom) if self.store.room() != Room::Stalled => {
                self.store.frame_lost(CursorSet::EMPTY)
            }
            Err(_) => {}
        }
    }

    /// Beside a camera: stores the queued audio and admits the held camera frames, merged by
    /// time, as far as each has what it waits for (the video, the audio of its time; each
    /// [`AUDIO_WAIT_MAX_MS`] at most); returns when to look again.
    fn admit_held(&mut self, now: u64) -> Option<u64> {
        loop {
            let audio = self.audio_queue.front().copied();
            let video = self.held.front().copied();
            match (audio, video) {
                // Both known: the older goes first.
                (Some(audio), Some(video)) if audio.at <= video.at => self.store_queued_audio(now),
                (Some(_), Some(_)) => self.admit_front_held(),
                (Some(audio), None) => {
                    let seen = self.video_seen.is_some_and(|seen| seen >= audio.at);
                    let give_up = audio.arrived.saturating_add(AUDIO_WAIT_MAX_MS);
                    if !seen && now < give_up {
                        return Some(give_up);
                    }
                    self.store_queued_audio(now);
                }
                (None, Some(video)) => {
                    if let Some(due) = self.audio_gate.video_due(video.at, video.arrived, now) {
                        return Some(due);
                    }
                    self.admit_front_held();
                }
                (None, None) => return None,
            }
        }
    }

    /// Stores the oldest queued audio frame.
    fn store_queued_audio(&mut self, now: u64) {
        let Some(queued) = self.audio_queue.pop_front() else {
            return;
        };
        let from = queued.slot * QUEUED_AUDIO_SLOT;
        let bytes = std::mem::take(&mut self.audio_slots);
        self.store_audio(
            queued.at,
            queued.duration_ms,
            &bytes[from..from + queued.len],
            now,
        );
        self.audio_slots = bytes;
    }

    fn admit_front_held(&mut self) {
        let Some(held) = self.held.pop_front() else {
            return;
        };
        let frame = held.frame;
        match self
            .store
            .admit_composed(frame.timestamp_ms, frame.composition_ms, frame.keyframe)
        {
            Some(seq) => {
                if frame.parameters_changed {
                    // The frames before it belong to the old sequence header.
                    self.store.skip_to(self.cursor, seq);
                }
                self.audio_gate.video_admitted(held.at);
            }
            // The store let the stream go (a restart): nothing held is left in it.
            None => self.held.clear(),
        }
    }

    /// Whether a captured audio track is delivering (the video then waits for its frames).
    pub fn set_audio_live(&mut self, live: bool) {
        self.audio_gate.set_live(live);
    }

    /// The captured audio track's format, known once its device has opened.
    pub fn set_audio_format(&mut self, asc: &crate::media::aac::AudioSpecificConfig) {
        self.pipeline.set_audio_format(asc);
    }

    /// A captured audio frame whose first sample was captured at `at` (clock ms), lasting
    /// `duration_ms`: stored in timestamp order with the video. Dropped before the first video
    /// frame, and when late (older than a video frame already admitted, after the video gave up
    /// waiting for it): counted.
    pub fn audio_frame(&mut self, at: u64, duration_ms: u64, bytes: &[u8], now: u64) {
        if !self.camera || bytes.len() > QUEUED_AUDIO_SLOT || self.audio_slots.is_empty() {
            // A byte stream's frames are stamped when they are complete, never before the audio
            // that came first: nothing to wait for.
            self.store_audio(at, duration_ms, bytes, now);
            return;
        }
        if self.audio_queue.len() == QUEUED_AUDIO_FRAMES {
            self.store_queued_audio(now);
        }
        let slot = self.audio_slot_next;
        self.audio_slot_next = (slot + 1) % QUEUED_AUDIO_FRAMES;
        let from = slot * QUEUED_AUDIO_SLOT;
        self.audio_slots[from..from + bytes.len()].copy_from_slice(bytes);
        self.audio_queue.push_back(QueuedAudio {
            at,
            duration_ms,
            arrived: now,
            slot,
            len: bytes.len(),
        });
        self.admit_held(now);
    }

    /// An audio frame of time `at` has come (and will be given with
    /// [`audio_frame`](Self::audio_frame) after a pass): the video before it need not wait.
    pub fn audio_arrives(&mut self, at: u64) {
        self.audio_gate.audio_arrives(at);
    }

    fn store_audio(&mut self, at: u64, duration_ms: u64, bytes: &[u8], now: u64) {
        if self.audio_gate.audio(at, duration_ms) == AudioVerdict::Late {
            if self.audio_gate.late() == 1 {
                warn!(
                    "an audio frame came after the video of its time had been sent: dropped \
                     (counted as audio_late in the progress line)"
                );
            }
            return;
        }
        if let Some(timestamp_ms) = self.pipeline.stream_time_of(at) {
            let _ = self.store.push_audio(timestamp_ms, bytes, now);
        }
    }

    /// Stores the audio frames due at or before `until_ms` (the stream time of the video frame
    /// about to be stored), so that the store holds both tracks in timestamp order. A frame
    /// that finds no room is lost alone (counted by the store).
    fn store_audio_until(&mut self, until_ms: u64, now: u64) {
        while let Some((timestamp_ms, frame)) = self.pipeline.next_silent_frame(until_ms) {
            let _ = self.store.push_audio(timestamp_ms, frame, now);
        }
    }

    /// The socket is readable (`read`) or writable: hands what the server sent to the session
    /// (a reconnect request goes to the core), then writes what is queued.
    pub fn socket_ready(
        &mut self,
        conn: &mut Connection,
        read: bool,
        core: &mut Core,
        now: u64,
    ) -> Result<()> {
        if read {
            conn.read_available()?;
            if let Some(tc_url) = conn.take_reconnect_request() {
                core.handle_link(LinkEvent::ReconnectRequest { tc_url }, now);
            }
        }
        write(conn, self.store.ring(), core, now).map(|_| ())
    }

    /// [`pump`](Self::pump) when there is a connection; a write error goes to the core. False
    /// when it failed (the pass ends).
    fn pump_or_fail(
        &mut self,
        conn: Option<&mut Connection>,
        core: &mut Core,
        now: u64,
        on_frame: &mut dyn FnMut(&Progress),
    ) -> bool {
        let Some(c) = conn else {
            return true;
        };
        match self.pump(c, core, now, on_frame) {
            Ok(()) => true,
            Err(e) => {
                core.handle_link(LinkEvent::Failed(e), now);
                false
            }
        }
    }

    /// Writes what is queued on the connection and, while the socket takes it, the frames the
    /// store holds for it. Stops before a keyframe when the server asked for a reconnect.
    pub fn pump(
        &mut self,
        conn: &mut Connection,
        core: &mut Core,
        now: u64,
        on_frame: &mut dyn FnMut(&Progress),
    ) -> Result<()> {
        loop {
            if !conn.is_idle() && !write(conn, self.store.ring(), core, now)? {
                return Ok(());
            }
            if let Some(token) = self.in_flight.take() {
                self.store.advance(token);
            }
            if self.switching {
                return Ok(());
            }
            if core.switch_pending() {
                self.store.apply_policy(self.cursor, now);
                if self.store.peek(self.cursor).is_some_and(|f| f.keyframe()) {
                    self.switching = true;
                    core.handle_link(LinkEvent::KeyframeNext, now);
                    return Ok(());
                }
            }
            let Some(token) = self.store.take(self.cursor, now) else {
                return Ok(());
            };
            let frame = self.store.frame(&token);
            if let Some(range) = frame.audio_range() {
                let parts = aac_frame_parts(range.start, range.len);
                let timestamp_ms = frame.timestamp_ms();
                match self
                    .pipeline
                    .send_stored_audio(conn.session(), timestamp_ms, &parts)
                {
                    Ok(true) => self.in_flight = Some(token),
                    Ok(false) => self.store.advance(token),
                    Err(e) if e.fault() == Fault::Input => {
                        warn!("dropping a stored audio frame: {e}");
                        self.store.advance(token);
                    }
                    Err(e) => {
                        self.store.abandon(token);
                        return Err(e);
                    }
                }
                continue;
            }
            let muxed = Frame {
                timestamp_ms: frame.timestamp_ms(),
                keyframe: frame.keyframe(),
                parameters_changed: false,
                composition_ms: frame.composition_ms(),
            };
            self.parts.clear();
            self.parts.push(Part::inline(&avc_frame_header(
                muxed.keyframe,
                muxed.composition_ms,
            )));
            frame.push_avc_parts(&mut self.parts);
            match self
                .pipeline
                .send_stored(conn.session(), muxed, &self.parts)
            {
                Ok(true) => {
                    self.in_flight = Some(token);
                    self.frames_sent += 1;
                    core.handle_link(
                        LinkEvent::FrameSent {
                            keyframe: muxed.keyframe,
                        },
                        now,
                    );
                    on_frame(&self.progress(core, Some(conn)));
                }
                Ok(false) => self.store.advance(token),
                Err(e) if e.fault() == Fault::Input => {
                    warn!("dropping a stored frame: {e}");
                    self.store.advance(token);
                }
                Err(e) => {
                    self.store.abandon(token);
                    return Err(e);
                }
            }
        }
    }
}

/// The counters, with `conn`'s bytes.
fn progress(
    frames_sent: u64,
    bytes_sent_before: u64,
    frames_dropped: u64,
    pipeline: &Pipeline,
    core: &Core,
    conn: Option<&Connection>,
) -> Progress {
    let counters = core.counters();
    Progress {
        frames_sent,
        bytes_sent: bytes_sent_before + conn.map_or(0, |c| c.bytes_sent()),
        frames_skipped: pipeline.stats().skipped,
        frames_dropped,
        connections: counters.connections,
        failures: counters.failures,
        source_restarts: counters.source_restarts,
    }
}

/// Sends the frame just muxed, straight from the input buffer; if the socket does not take all
/// of it now, copies the rest out so the input can move on. Returns whether the frame was sent
/// (not dropped for want of a keyframe).
fn send_direct(
    pipeline: &mut Pipeline,
    conn: &mut Connection,
    frame: Frame,
    data: &[u8],
    core: &mut Core,
    now: u64,
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
    if !write(conn, data, core, now)? {
        conn.detach(data);
    }
    Ok(true)
}

/// Writes what the socket takes now and tells the core whether it made progress (the stall
/// watchdog). True when everything queued is written.
pub fn write(conn: &mut Connection, external: &[u8], core: &mut Core, now: u64) -> Result<bool> {
    let before = conn.bytes_sent();
    let idle = conn.write_some(external)?;
    let event = if idle || conn.bytes_sent() > before {
        LinkEvent::Wrote { idle }
    } else {
        LinkEvent::Blocked
    };
    core.handle_link(event, now);
    Ok(idle)
}

/// A rate over the time since the last measurement: frames per second and kbit/s now, not
/// averaged since the start.
#[derive(Clone, Copy, Debug, Default)]
struct Rate {
    at_ms: u64,
    frames: u64,
    bytes: u64,
}

impl Rate {
    /// The frame rate and bitrate since the last call; remembers this one.
    fn update(&mut self, now_ms: u64, progress: &Progress) -> (f64, f64) {
        let seconds = now_ms.saturating_sub(self.at_ms) as f64 / 1000.0;
        let frames = progress.frames_sent.saturating_sub(self.frames) as f64;
        let bits = progress.bytes_sent.saturating_sub(self.bytes) as f64 * 8.0;
        *self = Rate {
            at_ms: now_ms,
            frames: progress.frames_sent,
            bytes: progress.bytes_sent,
        };
        if seconds <= 0.0 {
            return (0.0, 0.0);
        }
        (frames / seconds, bits / seconds / 1000.0)
    }
}

/// Reports the drop policy's drops, rate-limited: the first drop at once, then at most one line per interval
/// with what was dropped since the last line.
#[derive(Default)]
struct DropLog {
    /// When the last line was written, and the frame count it reported.
    last: Option<(u64, u64)>,
}

impl DropLog {
    fn note(&mut self, store: &FrameStore, cursor: CursorId, now_ms: u64) {
        let stats = store.cursor_stats(cursor);
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

#[cfg(test)]
mod tests {
    //! The shell's wait plan: when a paced file sleeps without watching anything, and what
    //! deadline the shell waits for otherwise.

    use super::*;

    fn pass(pacing_due: Option<u64>, more: bool) -> Pass {
        Pass {
            needs_input: true,
            pacing_due,
            more,
            audio_due: None,
        }
    }

    #[test]
    fn a_frame_waiting_for_its_audio_sets_the_deadline() {
        let waiting = Pass {
            audio_due: Some(1_400),
            ..pass(None, false)
        };
        let plan = WaitPlan::new(&waiting, true, Some(5_000), None, 1_000);
        assert_eq!(plan.deadline, Some(1_400));
        assert!(plan.read_input, "the input is read meanwhile");
    }

    #[test]
    fn a_paced_frame_due_soon_with_nothing_before_it_is_one_sleep() {
        let plan = WaitPlan::new(&pass(Some(1_033), false), false, Some(5_000), None, 1_000);
        assert_eq!(plan.pace_until, Some(1_033));
        assert_eq!(plan.deadline, None, "the sleep replaces the timer");
        assert!(plan.again, "then one look at everything without waiting");
    }

    #[test]
    fn a_timer_due_first_or_a_far_frame_is_waited_for_with_everything_else() {
        // The core's timer comes first: no blind sleep past it.
        let plan = WaitPlan::new(&pass(Some(1_033), false), false, Some(1_010), None, 1_000);
        assert_eq!((plan.pace_until, plan.deadline), (None, Some(1_010)));
        // A frame due later than a frame or so (a slow --fps): a timer, watching the rest.
        let plan = WaitPlan::new(&pass(Some(1_500), false), false, None, None, 1_000);
        assert_eq!((plan.pace_until, plan.deadline), (None, Some(1_500)));
        // A full store's hold counts as a deadline too.
        let plan = WaitPlan::new(&pass(None, false), false, Some(9_000), Some(1_200), 1_000);
        assert_eq!((plan.pace_until, plan.deadline), (None, Some(1_200)));
        assert!(!plan.again);
    }

    #[test]
    fn an_exhausted_budget_looks_again_and_keeps_its_deadline() {
        let plan = WaitPlan::new(&pass(Some(1_033), true), true, Some(1_020), None, 1_000);
        assert_eq!(plan.pace_until, None, "no sleep while frames wait");
        assert_eq!(
            plan.deadline,
            Some(1_020),
            "timers still fire between rounds"
        );
        assert!(plan.again && plan.read_input);
    }
}
