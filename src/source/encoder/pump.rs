//! Moving frames through the encoder at run time: [`EncoderSource::next_frame`] moves every ready
//! camera frame into the encoder (as DMABUF, or copied with [`copy_frame`]), recycles the buffers
//! the encoder is done with and hands out the next coded frame; [`EncoderSource::wait`] waits for
//! the devices; [`EncoderSource::force_keyframe`] asks for a keyframe;
//! [`EncoderSource::drain`] and [`EncoderSource::resume`] stop and restart the encoder.
//!
//! # Invariants
//!
//! - At most one coded buffer is held by the caller: the one [`EncoderSource::next_frame`]
//!   returned, requeued at the next call (or by drain/resume).
//! - Coded timestamps are the camera's (CLOCK_MONOTONIC of the capture): they are set on the
//!   OUTPUT buffer and the encoder copies them (`V4L2_BUF_FLAG_TIMESTAMP_COPY`).
//! - While draining and after a drain until [`EncoderSource::resume`], camera frames are
//!   requeued to the camera at once (dropped): nothing is fed to a stopped encoder.
//! - In steady state nothing is allocated per frame (DMABUF planes and byte counts are built on
//!   the stack); only a drain copies the frames it returns.
//!
//! # Waiting without busy loops (EPOLLERR)
//!
//! The encoder's fd is registered with tokio's `AsyncFd` (edge-triggered epoll) for readable,
//! writable and priority (events) readiness; the camera's is watched by a poll(2) thread
//! ([`crate::source::poller`]), because v4l2loopback misses epoll wakeups. [`EncoderSource::wait`]
//! waits for either and clears the readiness it saw *before* the caller drains the queues, so a
//! buffer completing meanwhile raises a fresh edge. videobuf2 and v4l2-mem2mem report EPOLLERR while a queue is not
//! streaming or has nothing queued (an encoder whose OUTPUT queue is empty and whose CAPTURE
//! buffers are all held; a camera before its first QBUF), and after a drain the CAPTURE queue
//! reports EPOLLIN until the encoder is started again: conditions that hold without anything
//! to dequeue. So `wait` counts wakeups after which [`EncoderSource::next_frame`] moved nothing;
//! after such a wakeup it first sleeps a short, growing pause (5 ms per idle wakeup, at most
//! 50 ms), so a condition that keeps an fd ready costs at most 20 wakeups a second, never a busy
//! loop. If, over those idle wakeups, a device keeps reporting POLLERR for 2 s while every one
//! of its queues is streaming with buffers queued, that is an input error (the device failed).
//! `wait` also returns after at most 1 s without readiness, so a device that vanished without
//! waking its poll queue is still noticed by the next DQBUF (ENODEV).

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use tokio::io::Interest;

use super::plan::sub_planes;
use super::{CodedFrame, DrainedFrame, EncoderSource, PlaneLayout, RawQueue, State};
use crate::error::{Error, Fault, Result};
use crate::v4l2::{sys, Dequeued, DmaBufPlane, EncoderCmd, Event, FourCC};

/// Longest `wait` without readiness.
const WAIT_CAP: Duration = Duration::from_secs(1);
/// Pause per idle wakeup before waiting again, and its cap.
const IDLE_PAUSE: Duration = Duration::from_millis(5);
const IDLE_PAUSE_MAX: Duration = Duration::from_millis(50);
/// POLLERR with buffers queued for this long is a failed device.
const POLLERR_LIMIT: Duration = Duration::from_secs(2);

/// Whether a coded frame is a keyframe, read from its bytes: the I-frame flag of an FWHT
/// header (vicodec sets no buffer flag), an IDR slice in H.264 Annex B. `None`: cannot tell.
pub fn payload_is_keyframe(codec: FourCC, data: &[u8]) -> Option<bool> {
    const FWHT_MAGIC: [u8; 8] = [0x4f, 0x4f, 0x4f, 0x4f, 0xff, 0xff, 0xff, 0xff];
    const FWHT_FL_I_FRAME: u32 = 1 << 10;
    if codec == FourCC::new(b"FWHT") {
        if !data.starts_with(&FWHT_MAGIC) {
            return None;
        }
        let flags: [u8; 4] = data.get(20..24)?.try_into().ok()?;
        return Some(u32::from_be_bytes(flags) & FWHT_FL_I_FRAME != 0);
    }
    if codec == FourCC::H264 {
        let mut picture = None;
        for window in data.windows(4) {
            if window[..3] == [0, 0, 1] {
                match window[3] & 0x1f {
                    5 => return Some(true),
                    1 => picture = Some(false),
                    _ => {}
                }
            }
        }
        return picture;
    }
    None
}

/// Copies a raw frame of `height` rows between buffers of different layouts, sub-plane by
/// sub-plane and row by row. `Err` when the format's layout is not known or a buffer is short.
pub fn copy_frame(
    fourcc: FourCC,
    height: u32,
    src: &[u8],
    from: PlaneLayout,
    dst: &mut [u8],
    to: PlaneLayout,
) -> std::result::Result<usize, String> {
    if from == to {
        let room = dst.len();
        let dst = dst.get_mut(..src.len()).ok_or_else(|| {
            format!(
                "a {}-byte frame does not fit a {room}-byte buffer",
                src.len()
            )
        })?;
        dst.copy_from_slice(src);
        return Ok(src.len());
    }
    let subs = sub_planes(fourcc)
        .ok_or_else(|| format!("the layout of {fourcc} is not known, and the two sides' differ"))?;
    let (mut at_src, mut at_dst) = (0usize, 0usize);
    for &(row_div, bpl_div) in subs {
        let (src_bpl, dst_bpl) = (
            (from.bytes_per_line / bpl_div) as usize,
            (to.bytes_per_line / bpl_div) as usize,
        );
        let row = src_bpl.min(dst_bpl);
        for r in 0..(height / row_div) as usize {
            let s = src.get(at_src + r * src_bpl..at_src + r * src_bpl + row);
            let d = dst.get_mut(at_dst + r * dst_bpl..at_dst + r * dst_bpl + row);
            match (s, d) {
                (Some(s), Some(d)) => d.copy_from_slice(s),
                _ => return Err(format!("a {fourcc} frame does not fit its buffers")),
            }
        }
        at_src += src_bpl * (from.rows / row_div) as usize;
        at_dst += dst_bpl * (to.rows / row_div) as usize;
    }
    Ok(at_dst.min(dst.len()))
}

impl EncoderSource {
    /// Moves every ready raw frame from the camera into the encoder and recycles what the
    /// encoder is done with. Never blocks.
    fn pump(&mut self) -> Result<()> {
        // Events: only EOS is subscribed; reading them clears POLLPRI.
        while let Some(event) = self.encoder.device().dequeue_event()? {
            self.progress = true;
            if event != Event::Eos {
                log::debug!("{}: event {event:?}", self.name);
            }
        }
        // The encoder's raw buffers it is done with.
        while let Some(done) = self.raw.dequeue()? {
            self.progress = true;
            if let RawQueue::DmaBuf { .. } = self.raw {
                self.frames.queue(done.index, &[], None)?;
            }
        }
        // The camera's new frames.
        while let Some(frame) = self.frames.dequeue()? {
            self.progress = true;
            // An errored or empty frame (a USB hiccup) is not fed to the encoder: some drivers
            // take an empty OUTPUT buffer as the old end-of-stream signal.
            if frame.is_error() || frame.bytes_used() == 0 || self.state != State::Running {
                self.dropped += u64::from(!frame.is_error());
                self.frames.queue(frame.index, &[], None)?;
                continue;
            }
            match &mut self.raw {
                RawQueue::DmaBuf { queue, exported } => {
                    let fds = exported.get(frame.index as usize).ok_or_else(|| {
                        Error::input(format!(
                            "{}: the camera returned buffer {}, which was not exported",
                            self.name, frame.index
                        ))
                    })?;
                    let count = fds.len().min(frame.planes().len());
                    let (Some(first_fd), Some(_)) = (fds.first(), frame.planes().first()) else {
                        return Err(Error::input(format!(
                            "{}: the camera returned buffer {} without planes",
                            self.name, frame.index
                        )));
                    };
                    // On the stack: nothing is allocated per frame.
                    let placeholder = DmaBufPlane {
                        fd: first_fd.as_fd(),
                        bytes_used: 0,
                        data_offset: 0,
                        length: 0,
                    };
                    let mut planes = [placeholder; sys::VIDEO_MAX_PLANES];
                    for (p, slot) in planes.iter_mut().enumerate().take(count) {
                        let payload = frame.planes()[p];
                        *slot = DmaBufPlane {
                            fd: fds[p].as_fd(),
                            bytes_used: payload.bytes_used,
                            data_offset: payload.data_offset,
                            length: self.frames.plane_length(frame.index, p)?,
                        };
                    }
                    queue.queue_dmabuf(frame.index, &planes[..count], Some(frame.timestamp))?;
                }
                RawQueue::Copy {
                    queue,
                    fourcc,
                    height,
                    layouts,
                } => {
                    let Some(slot) = queue.free_buffer() else {
                        self.dropped += 1;
                        self.frames.queue(frame.index, &[], None)?;
                        continue;
                    };
                    let mut used = [0u32; sys::VIDEO_MAX_PLANES];
                    let planes = queue.num_planes();
                    for (p, used) in used.iter_mut().enumerate().take(planes) {
                        let src = self.frames.payload(&frame, p)?;
                        let dst = queue.plane_mut(slot, p)?;
                        let (from, to) = layouts.get(p).copied().ok_or_else(|| {
                            Error::ours(format!("{}: no layout for plane {p}", self.name))
                        })?;
                        let n = copy_frame(*fourcc, *height, src, from, dst, to)
                            .map_err(|why| Error::input(format!("{}: {why}", self.name)))?;
                        *used = n as u32;
                    }
                    queue.queue(slot, &used[..planes], Some(frame.timestamp))?;
                    self.frames.queue(frame.index, &[], None)?;
                }
            }
        }
        Ok(())
    }

    /// Requeues the coded buffer handed out by the last call, if any.
    fn release_held(&mut self) -> Result<()> {
        if let Some(index) = self.held.take() {
            self.coded.queue(index, &[], None)?;
        }
        Ok(())
    }

    /// The next coded buffer with data, skipping empty and corrupt ones. A LAST buffer moves
    /// the state to Stopped and ends the search.
    fn next_coded(&mut self) -> Result<Option<Dequeued>> {
        if matches!(self.state, State::Stopped) {
            return Ok(None);
        }
        while let Some(d) = self.coded.dequeue()? {
            self.progress = true;
            if d.is_last() {
                self.state = State::Stopped;
                if d.bytes_used() > 0 && !d.is_error() {
                    // The last frame is handed out; the buffer is requeued at resume.
                    return Ok(Some(d));
                }
                return Ok(None);
            }
            if d.bytes_used() == 0 || d.is_error() {
                self.coded.queue(d.index, &[], None)?;
                continue;
            }
            return Ok(Some(d));
        }
        Ok(None)
    }

    /// Moves every ready raw frame from the camera to the encoder, recycles buffers, and returns
    /// the next coded frame if one is ready. Never blocks. The frame's buffer is requeued at the
    /// next call.
    pub fn next_frame(&mut self) -> Result<Option<CodedFrame<'_>>> {
        self.release_held()?;
        self.pump()?;
        let Some(d) = self.next_coded()? else {
            return Ok(None);
        };
        self.delivered += 1;
        if !matches!(self.state, State::Stopped) {
            self.held = Some(d.index);
        }
        let data = self.coded.payload(&d, 0)?;
        let keyframe = d.is_keyframe() || payload_is_keyframe(self.codec, data) == Some(true);
        Ok(Some(CodedFrame {
            data,
            timestamp: d.timestamp,
            keyframe,
        }))
    }

    /// Whether every queue of a device is streaming with buffers queued (so POLLERR there is a
    /// failure, not an idle queue).
    fn fully_queued(&self, encoder: bool) -> bool {
        if encoder {
            self.state == State::Running
                && self.coded.queued_count() > 0
                && self.raw.queued_count() > 0
        } else {
            self.frames.queued_count() > 0
        }
    }

    /// Checks the devices for POLLERR after an idle wakeup; a persistent one with buffers queued
    /// is an error.
    fn check_pollerr(&mut self) -> Result<()> {
        let mut failing = None;
        for encoder in [false, true] {
            let device = if encoder {
                self.encoder.device()
            } else {
                &self.camera
            };
            let readiness = device.poll(Some(Duration::ZERO))?;
            if readiness.error && self.fully_queued(encoder) {
                failing = Some(device.name().to_string());
            }
        }
        match failing {
            None => self.pollerr_since = None,
            Some(device) => {
                let since = *self.pollerr_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= POLLERR_LIMIT {
                    return Err(Error::input(format!(
                        "{device} has reported an error (POLLERR) for {} s with buffers queued: the device failed",
                        POLLERR_LIMIT.as_secs()
                    )));
                }
            }
        }
        Ok(())
    }

    /// Resolves when [`EncoderSource::next_frame`] may have something: a device became readable
    /// or writable, an event arrived, or 1 s passed. Never busy-loops (see the module comment).
    pub async fn wait(&mut self) -> Result<()> {
        if self.progress {
            self.idle_wakeups = 0;
            self.pollerr_since = None;
        } else if self.woke {
            // The last wait returned on readiness and next_frame moved nothing. (A wait that was
            // cancelled by the caller's select! is not an idle wakeup.)
            self.idle_wakeups = self.idle_wakeups.saturating_add(1);
            self.check_pollerr()?;
            let pause = IDLE_PAUSE
                .saturating_mul(self.idle_wakeups)
                .min(IDLE_PAUSE_MAX);
            tokio::time::sleep(pause).await;
        }
        self.progress = false;
        self.woke = false;
        let all = Interest::READABLE | Interest::WRITABLE | Interest::PRIORITY;
        let io_error = |name: &str, e: std::io::Error| {
            Error::io(Fault::Input, format!("{name}: waiting for a buffer"), e)
        };
        tokio::select! {
            ready = self.camera_poller.wait() => {
                ready?;
            }
            ready = self.encoder.ready(all) => {
                let mut guard = ready.map_err(|e| io_error(self.encoder.device().name(), e))?;
                guard.clear_ready();
            }
            () = tokio::time::sleep(WAIT_CAP) => {}
        }
        self.woke = true;
        Ok(())
    }

    /// Whether [`EncoderSource::force_keyframe`] can ask for a keyframe.
    pub fn can_force_keyframe(&self) -> bool {
        self.force_key_frame
    }

    /// Asks for a keyframe as soon as possible (V4L2_CID_MPEG_VIDEO_FORCE_KEY_FRAME);
    /// `Ok(false)` when the encoder has no such control.
    pub fn force_keyframe(&mut self) -> Result<bool> {
        if !self.force_key_frame {
            return Ok(false);
        }
        self.encoder
            .device()
            .set_control(sys::V4L2_CID_MPEG_VIDEO_FORCE_KEY_FRAME, 1)?;
        Ok(true)
    }

    /// Drains the encoder (dev-encoder.rst, "Drain"): ENCODER_CMD STOP, then every coded frame
    /// up to the buffer flagged LAST, which are returned (copied). Camera frames arriving
    /// meanwhile are dropped. Afterwards no frames flow until [`EncoderSource::resume`].
    /// Fails when the LAST buffer has not come within `timeout`.
    pub async fn drain(&mut self, timeout: Duration) -> Result<Vec<DrainedFrame>> {
        match self.state {
            State::Stopped => return Ok(Vec::new()),
            State::Draining => {}
            State::Running => {
                self.release_held()?;
                self.encoder.device().encoder_command(EncoderCmd::Stop)?;
                self.state = State::Draining;
            }
        }
        let deadline = Instant::now() + timeout;
        let mut drained = Vec::new();
        loop {
            self.release_held()?;
            self.pump()?;
            while let Some(d) = self.next_coded()? {
                let data = self.coded.payload(&d, 0)?.to_vec();
                let keyframe =
                    d.is_keyframe() || payload_is_keyframe(self.codec, &data) == Some(true);
                drained.push(DrainedFrame {
                    data,
                    timestamp: d.timestamp,
                    keyframe,
                });
                if matches!(self.state, State::Stopped) {
                    break;
                }
                self.coded.queue(d.index, &[], None)?;
            }
            if matches!(self.state, State::Stopped) {
                // Clears the EOS event (POLLPRI).
                self.pump()?;
                return Ok(drained);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::input(format!(
                    "{}: the drain did not end within {} ms (no buffer flagged LAST)",
                    self.encoder.device().name(),
                    timeout.as_millis()
                )));
            }
            let _ = tokio::time::timeout(left, self.wait()).await;
        }
    }

    /// Starts the encoder again after a drain (ENCODER_CMD START): frames flow again.
    pub fn resume(&mut self) -> Result<()> {
        match self.state {
            State::Running => Ok(()),
            State::Draining => Err(Error::ours(format!(
                "{}: resume during a drain",
                self.encoder.device().name()
            ))),
            State::Stopped => {
                self.encoder.device().encoder_command(EncoderCmd::Start)?;
                // dev-encoder.rst allows START or STREAMOFF+STREAMON of the CAPTURE queue; both
                // are needed in practice: vicodec (6.1) clears its "last buffer dequeued" state
                // only on STREAMOFF (START finds it already stopped and skips that), and a frame
                // in flight at the STOP may complete after the LAST buffer. Restarting the queue
                // returns every coded buffer to us (the LAST one included) and clears both.
                self.coded.stream_off()?;
                self.coded.queue_all()?;
                self.coded.stream_on()?;
                self.state = State::Running;
                self.progress = true;
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyframes_are_read_from_the_payload() {
        let mut fwht = vec![0x4f, 0x4f, 0x4f, 0x4f, 0xff, 0xff, 0xff, 0xff];
        fwht.extend_from_slice(&[0; 12]);
        fwht.extend_from_slice(&(1u32 << 10 | 3).to_be_bytes());
        let codec = FourCC::new(b"FWHT");
        assert_eq!(payload_is_keyframe(codec, &fwht), Some(true));
        fwht[22] = 0;
        assert_eq!(payload_is_keyframe(codec, &fwht), Some(false));
        assert_eq!(payload_is_keyframe(codec, &fwht[..22]), None);
        assert_eq!(payload_is_keyframe(codec, b"garbage garbage garbage"), None);
        let idr = [
            0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 1, 0x65, 0x88,
        ];
        assert_eq!(payload_is_keyframe(FourCC::H264, &idr), Some(true));
        assert_eq!(
            payload_is_keyframe(FourCC::H264, &[0, 0, 1, 0x41, 0x9a]),
            Some(false)
        );
        assert_eq!(
            payload_is_keyframe(FourCC::H264, &[0, 0, 1, 0x09, 0x10]),
            None
        );
        assert_eq!(payload_is_keyframe(FourCC::MJPG, &idr), None);
    }

    #[test]
    fn frames_are_copied_between_layouts() {
        use crate::v4l2::PlaneFormat;
        // A 4x2 NV12 frame: Y rows then one UV row; the encoder reserves 4 luma rows (aligned).
        let cam = PlaneFormat {
            bytes_per_line: 4,
            size_image: 12,
        };
        let enc = PlaneFormat {
            bytes_per_line: 8,
            size_image: 48,
        };
        let from = PlaneLayout::of(FourCC::NV12, 2, &cam);
        let to = PlaneLayout::of(FourCC::NV12, 2, &enc);
        assert_eq!(
            from,
            PlaneLayout {
                bytes_per_line: 4,
                rows: 2
            }
        );
        assert_eq!(
            to,
            PlaneLayout {
                bytes_per_line: 8,
                rows: 4
            }
        );
        let src: Vec<u8> = (1..=12).collect();
        let mut dst = vec![0u8; 48];
        let n = copy_frame(FourCC::NV12, 2, &src, from, &mut dst, to).unwrap();
        assert_eq!(n, 48);
        assert_eq!(&dst[0..8], &[1, 2, 3, 4, 0, 0, 0, 0]);
        assert_eq!(&dst[8..12], &[5, 6, 7, 8]);
        // The chroma starts after the 4 reserved luma rows.
        assert_eq!(&dst[32..36], &[9, 10, 11, 12]);
        assert!(dst[16..32].iter().all(|&b| b == 0));
        // The same layout: one copy.
        let mut same = vec![0u8; 12];
        assert_eq!(
            copy_frame(FourCC::NV12, 2, &src, from, &mut same, from),
            Ok(12)
        );
        assert_eq!(same, src);
        // A short buffer or an unknown layout is an error, not a panic.
        assert!(copy_frame(FourCC::NV12, 2, &src, from, &mut [0u8; 20], to).is_err());
        assert!(copy_frame(FourCC::MJPG, 2, &src, from, &mut dst, to).is_err());
        // YU12 640x480 in a 1088-row-style aligned buffer: rows from the image size.
        let pi = PlaneFormat {
            bytes_per_line: 640,
            size_image: 640 * 496 * 3 / 2,
        };
        assert_eq!(PlaneLayout::of(FourCC::YU12, 480, &pi).rows, 496);
    }
}
