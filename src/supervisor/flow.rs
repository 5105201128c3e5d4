//! Moving frames: from the input through the [`Pipeline`] straight to the socket, or into the
//! [`FrameQueue`] when the socket is busy, and from the queue to the socket. Mechanism only:
//! what happens is reported to the [`Core`], which decides; the queue applies the drop policy.
//!
//! - A frame goes straight from the input's buffer to the socket (zero-copy) when the link is
//!   idle and the queue allows it ([`FrameQueue::may_send_directly`]: not after a dropped frame
//!   whose GOP is not over). If the socket does not take all of it, the rest is copied out of
//!   the input buffer so the input can move on.
//! - A live input is read at its own pace: frames the link cannot take wait in the queue, which
//!   drops whole GOPs when full. A file is read only as fast as the link takes it.
//! - A frame at the front of the queue is pinned while the socket takes it; [`Pending`] says
//!   which buffer the connection's queued external pieces refer to.
//!
//! Invariants: nothing here allocates per frame; a connection never gets a frame whose
//! reference it did not get (the pipeline and the queue see to it); a switch the server asked
//! for happens before a keyframe, which then opens the new connection.

use std::time::Duration;

use log::{debug, info, trace, warn};

use crate::driver::{Clock, Connection};
use crate::error::{Error, Fault, Result};
use crate::media::annexb::{AnnexBReader, NalRef};
use crate::pipeline::{Frame, Pipeline};
use crate::queue::{FrameQueue, Pushed};
use crate::rtmp::chunk::Part;
use crate::source::Input;

use super::core::{Core, LinkEvent, LinkState, SourceEvent, SourceKind, Wait};
use super::{count, Progress};

/// Frames processed before the loop looks at the socket and signals again.
const FRAME_BUDGET: u32 = 64;
/// Most frames the queue holds (its byte and time bounds usually bind first).
const QUEUE_FRAMES: usize = 4096;
/// How often dropped frames are reported at most.
const DROP_LOG_INTERVAL_MS: u64 = 10_000;

/// Which buffer the connection's queued external pieces refer to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pending {
    /// None (anything queued is in the session's own storage).
    Nothing,
    /// The frame at the front of the queue.
    QueueFront,
}

/// What a pass over the input left to wait for.
#[derive(Clone, Copy, Debug, Default)]
pub struct Pass {
    /// The reader (or the camera) has no complete frame: wait for the input.
    pub needs_input: bool,
    /// A paced file's next frame is due then.
    pub pacing_due: Option<u64>,
    /// The frame budget ran out: go round again at once.
    pub more: bool,
}

/// The frames' way from the input to the connection.
pub struct Flow {
    pub reader: AnnexBReader,
    pub pipeline: Pipeline,
    pub queue: FrameQueue,
    pending: Pending,
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
}

impl Flow {
    pub fn new(core: &Core, input: &Input) -> Flow {
        let config = core.config();
        let live = core.source_kind().is_live();
        let mut pipeline = Pipeline::new(config, live);
        pipeline.use_source_timestamps(core.source_kind() == SourceKind::Device);
        // Allocated at full size, but the OS maps its pages only when they are written: a file
        // input uses it only to carry a keyframe across a requested reconnect.
        let mut queue = FrameQueue::new(config.queue_size, QUEUE_FRAMES, config.queue_time_ms);
        // A live input that cannot be asked for a keyframe (pipe, FIFO, exec:, an H.264 camera)
        // keeps copies of the current GOP, so that after a reconnect the server gets a picture
        // at once, not a GOP later. A V4L2 encoder is asked for a keyframe instead.
        queue.set_retention(live && !input.can_force_keyframe());
        Flow {
            reader: AnnexBReader::new(config.max_frame_size),
            pipeline,
            queue,
            pending: Pending::Nothing,
            device_nals: Vec::with_capacity(64),
            device_clock: None,
            realtime: config.realtime,
            max_frame_size: config.max_frame_size,
            bytes_sent_before: 0,
            frames_sent: 0,
            status_rate: Rate::default(),
            stats_rate: Rate::default(),
            drop_log: DropLog::default(),
        }
    }

    /// The buffer the connection's queued external pieces refer to.
    pub fn external(&self) -> &[u8] {
        match self.pending {
            Pending::Nothing => &[],
            Pending::QueueFront => self.queue.storage(),
        }
    }

    /// A connection is publishing: it starts, after onMetaData and the sequence header, at the
    /// oldest queued keyframe that is not late by the wall clock (else the newest).
    pub fn connected(&mut self, now: u64) {
        self.pipeline.new_connection();
        self.queue.set_now(now);
        let dropped = self.queue.skip_late_gops();
        if dropped > 0 {
            debug!(
                "starting the new connection at a queued keyframe ({dropped} late frames dropped)"
            );
        }
        self.pending = Pending::Nothing;
    }

    /// The connection is gone: the frame in flight went partly to it; the next starts afresh.
    pub fn disconnected(&mut self, bytes_sent: u64) {
        self.bytes_sent_before += bytes_sent;
        self.pending = Pending::Nothing;
        self.queue.unpin_front();
    }

    /// The input was opened again: a fresh byte stream, a new timeline for the pipeline.
    pub fn source_reopened(&mut self, input: &Input, kind: SourceKind) {
        self.reader = AnnexBReader::new(self.max_frame_size);
        self.pipeline.source_restarted();
        self.pipeline
            .use_source_timestamps(kind == SourceKind::Device);
        self.queue
            .set_retention(kind.is_live() && !input.can_force_keyframe());
        self.device_clock = None;
    }

    /// Whether everything read was sent: nothing queued and nothing waiting in the socket.
    fn drained(&self, conn: Option<&Connection>) -> bool {
        self.queue.is_empty() && conn.is_some_and(|c| c.is_idle())
    }

    /// The counters, with `conn`'s bytes.
    pub fn progress(&self, core: &Core, conn: Option<&Connection>) -> Progress {
        progress(
            self.frames_sent,
            self.bytes_sent_before,
            &self.pipeline,
            &self.queue,
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
    /// drops, and what waits in the queue.
    pub fn stats_line(&mut self, core: &Core, conn: Option<&Connection>, now: u64) -> String {
        let progress = self.progress(core, conn);
        let (fps, kbps) = self.stats_rate.update(now, &progress);
        format!(
            "frame={} fps={fps:.1} bitrate={kbps:.1}kbits/s dropped={} queue={:.2}s reconnects={}",
            progress.frames_sent,
            progress.frames_dropped,
            self.queue.queued_duration_ms() as f64 / 1000.0,
            progress.connections.saturating_sub(1)
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
        self.pipeline.nothing_sent_error(
            input.name(),
            self.reader.bytes_read(),
            self.reader.skipped_bytes(),
        )
    }

    /// Whether so much was read without a usable frame that the input cannot be H.264.
    fn hopeless(&self) -> bool {
        !self.pipeline.started() && self.reader.bytes_read() > 2 * self.max_frame_size as u64
    }

    /// Takes the access units that are ready, as far as the link allows, and sends what is
    /// queued. On a write error the core hears of it and the pass ends.
    pub fn pass(
        &mut self,
        input: &mut Input,
        conn: Option<&mut Connection>,
        core: &mut Core,
        clock: &Clock,
        on_frame: &mut dyn FnMut(&Progress),
    ) -> Pass {
        // A camera's frame borrows this list while the rest of the flow is used.
        let mut nals = std::mem::take(&mut self.device_nals);
        let pass = self.take_frames(input, &mut nals, conn, core, clock, on_frame);
        self.device_nals = nals;
        pass
    }

    fn take_frames(
        &mut self,
        input: &mut Input,
        nals: &mut Vec<NalRef>,
        mut conn: Option<&mut Connection>,
        core: &mut Core,
        clock: &Clock,
        on_frame: &mut dyn FnMut(&Progress),
    ) -> Pass {
        let now = clock.now_ms();
        let live = core.source_kind().is_live();
        let mut pass = Pass::default();
        self.queue.set_now(now);
        // What is queued goes first: a file is read only once the link is idle.
        if let Some(c) = conn.as_deref_mut() {
            if let Err(e) = self.pump(c, core, now, on_frame) {
                core.handle_link(LinkEvent::Failed(e), now);
                return pass;
            }
        }
        let mut budget = FRAME_BUDGET;
        while budget > 0 {
            let link_idle = conn.as_ref().is_some_and(|c| c.is_idle()) && self.queue.is_empty();
            // A file is read as fast as the link takes it, except that its first keyframe is
            // looked for before any connection is made.
            if !live && !link_idle && (conn.is_some() || self.pipeline.started()) {
                break;
            }
            if !live && self.realtime {
                if let Some(due) = self.pipeline.next_due_ms().filter(|&due| due > now) {
                    pass.pacing_due = Some(due);
                    break;
                }
            }
            let (au, frame_ms) = if input.kind() == SourceKind::Device {
                match input.next_device_frame(nals) {
                    Ok(Some(frame)) => {
                        if frame.skipped > 0 {
                            // A lost picture may be the reference of the frames that follow:
                            // they would decode as garbage, so wait for the next keyframe.
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
                        (frame.au, at)
                    }
                    Ok(None) => {
                        pass.needs_input = true;
                        break;
                    }
                    Err(e) => {
                        core.handle_source(SourceEvent::Failed(e), now);
                        pass.needs_input = true;
                        break;
                    }
                }
            } else {
                let Some(au) = self.reader.next_access_unit() else {
                    pass.needs_input = true;
                    break;
                };
                (au, now)
            };
            budget -= 1;
            core.handle_source(SourceEvent::Frame, now);
            let Some(frame) = self.pipeline.mux(&au, frame_ms) else {
                continue;
            };
            if frame.keyframe {
                // The first one lets the core connect; it ignores the rest.
                core.handle_source(SourceEvent::Ready, now);
            }
            if frame.parameters_changed && !self.queue.is_empty() {
                self.queue.clear_unpinned();
            }
            if frame.keyframe && core.switch_pending() {
                // The server asked for a reconnect: this keyframe opens the new connection.
                let len = self.pipeline.frame_len();
                let pipeline = &self.pipeline;
                self.queue.push(frame.timestamp_ms, true, len, |slot| {
                    pipeline.copy_frame(au.data, slot)
                });
                core.handle_link(LinkEvent::KeyframeNext, now);
                return pass;
            }
            let connected = conn.is_some();
            match conn.as_deref_mut() {
                Some(c) if link_idle && self.queue.may_send_directly(frame.keyframe) => {
                    match send_direct(&mut self.pipeline, c, frame, au.data, core, now) {
                        Ok(true) => {
                            self.frames_sent += 1;
                            core.handle_link(
                                LinkEvent::FrameSent {
                                    keyframe: frame.keyframe,
                                },
                                now,
                            );
                            let len = self.pipeline.frame_len();
                            let pipeline = &self.pipeline;
                            self.queue.retain_sent(
                                frame.timestamp_ms,
                                frame.keyframe,
                                len,
                                |slot| pipeline.copy_frame(au.data, slot),
                            );
                            on_frame(&progress(
                                self.frames_sent,
                                self.bytes_sent_before,
                                &self.pipeline,
                                &self.queue,
                                core,
                                Some(c),
                            ));
                        }
                        Ok(false) => {}
                        Err(e) => {
                            core.handle_link(LinkEvent::Failed(e), now);
                            return pass;
                        }
                    }
                }
                _ if live || !connected => {
                    let len = self.pipeline.frame_len();
                    let pipeline = &self.pipeline;
                    let pushed = self
                        .queue
                        .push(frame.timestamp_ms, frame.keyframe, len, |slot| {
                            pipeline.copy_frame(au.data, slot)
                        });
                    if pushed != (Pushed::Queued { dropped: 0 }) {
                        self.drop_log.note(&self.queue, now);
                    }
                }
                _ => {}
            }
        }
        pass.more = budget == 0;
        if let Some(c) = conn {
            if let Err(e) = self.pump(c, core, now, on_frame) {
                core.handle_link(LinkEvent::Failed(e), now);
            }
        }
        pass
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
        write(conn, self.external(), core, now).map(|_| ())
    }

    /// Writes what is queued on the connection and, while the socket takes it, the queued
    /// frames. Stops before a keyframe when the server asked for a reconnect.
    pub fn pump(
        &mut self,
        conn: &mut Connection,
        core: &mut Core,
        now: u64,
        on_frame: &mut dyn FnMut(&Progress),
    ) -> Result<()> {
        loop {
            if !conn.is_idle() && !write(conn, self.external(), core, now)? {
                return Ok(());
            }
            if self.pending == Pending::QueueFront {
                self.queue.pop_sent();
                self.pending = Pending::Nothing;
            }
            let Some(entry) = self.queue.front() else {
                return Ok(());
            };
            if entry.keyframe && core.switch_pending() {
                core.handle_link(LinkEvent::KeyframeNext, now);
                return Ok(());
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
            match self.pipeline.send_stored(conn.session(), frame, &parts) {
                Ok(true) => {
                    self.queue.pin_front();
                    self.pending = Pending::QueueFront;
                    self.frames_sent += 1;
                    core.handle_link(
                        LinkEvent::FrameSent {
                            keyframe: entry.keyframe,
                        },
                        now,
                    );
                    on_frame(&self.progress(core, Some(conn)));
                }
                Ok(false) => {
                    self.queue.pop_front();
                }
                Err(e) if e.fault() == Fault::Input => {
                    warn!("dropping a queued frame: {e}");
                    self.queue.pop_front();
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// The counters, with `conn`'s bytes.
fn progress(
    frames_sent: u64,
    bytes_sent_before: u64,
    pipeline: &Pipeline,
    queue: &FrameQueue,
    core: &Core,
    conn: Option<&Connection>,
) -> Progress {
    let counters = core.counters();
    Progress {
        frames_sent,
        bytes_sent: bytes_sent_before + conn.map_or(0, |c| c.bytes_sent()),
        frames_skipped: pipeline.stats().skipped,
        frames_dropped: queue.stats().frames_dropped
            + pipeline.stats().dropped_waiting_for_keyframe,
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
