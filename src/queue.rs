//! The bounded frame queue between a live source and the socket, sans-IO.
//!
//! A live source (a pipe, a child encoder, a camera) cannot wait for the network: it must be read
//! at its own pace or it stalls or drops frames itself. When the socket takes a frame at once and
//! [`FrameQueue::may_send_directly`] agrees, the frame never enters this queue (it is sent
//! zero-copy, and [`FrameQueue::retain_sent`] is told). When it does not, frames are copied once
//! into this queue's ring storage, allocated once at its full size, and sent from there.
//!
//! A source that cannot make a keyframe on demand also keeps copies of the sent frames of the
//! current GOP (retention), so that a new connection can start at its keyframe at once. Those
//! copies are the first to go when room is needed, and are not kept at all for a GOP that lost a
//! frame.
//!
//! The queue is bounded in bytes, in frames and in stream time (from its oldest entry, retained
//! copies included, to its newest; a frame being sent does not count, as waiting does not help).
//! When a frame does not fit, whole GOPs go: first the retained copies, then the queued frames
//! older than the newest queued keyframe, then everything that is not being sent, and then
//! incoming frames until the next keyframe. A frame whose reference was dropped is never kept,
//! retained or let through to the socket, on this connection or the next, so the stream read back
//! always decodes.
//!
//! Invariants: memory never grows after construction; the entry at the front may be pinned (being
//! written to the socket) and is never moved or dropped while pinned; a queued or retained frame
//! that is not a keyframe always follows, without gap, the frame it references (the frame before
//! it in the queue, or the frame in flight, or the last frame sent).

use std::collections::VecDeque;

/// One queued frame: an FLV video tag body in the ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Where the body lies in [`FrameQueue::storage`].
    pub start: usize,
    pub len: usize,
    pub timestamp_ms: u64,
    pub keyframe: bool,
    /// When the frame came from the input (the caller's clock, see [`FrameQueue::set_now`]).
    pub arrival_ms: u64,
}

/// What happened to a pushed frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pushed {
    /// The frame was queued; `dropped` older frames made room for it.
    Queued { dropped: u32 },
    /// The frame was dropped: it is not a keyframe and its reference is gone (or it could never fit).
    Dropped,
}

/// Counters, for logs and STATUS.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueStats {
    pub frames_dropped: u64,
    pub bytes_dropped: u64,
    /// How many times frames had to be dropped (each drop event, not each frame).
    pub drop_events: u64,
}

/// A ring of FLV frame bodies with a GOP-dropping overflow policy.
pub struct FrameQueue {
    storage: Vec<u8>,
    entries: VecDeque<Entry>,
    max_frames: usize,
    max_duration_ms: u64,
    /// The first unsent entry is being sent and must stay where it is.
    front_pinned: bool,
    /// Entries `..retained` were sent already: copies of the current GOP, kept so that a new
    /// connection can start at its keyframe at once (sources that cannot make a keyframe on
    /// demand). They are the first to go when room is needed.
    retained: usize,
    /// Whether sent frames are retained at all.
    retention: bool,
    /// The retained GOP lost a frame: retain nothing until the next keyframe.
    retention_broken: bool,
    /// A frame was dropped: incoming frames are dropped until a keyframe.
    awaiting_keyframe: bool,
    /// The caller's clock, for the arrival time of frames queued now.
    now_ms: u64,
    stats: QueueStats,
}

impl FrameQueue {
    /// A queue of at most `max_bytes` of frame data (allocated now, zeroed lazily by the OS),
    /// `max_frames` frames and `max_duration_ms` of stream time.
    pub fn new(max_bytes: usize, max_frames: usize, max_duration_ms: u64) -> FrameQueue {
        FrameQueue {
            storage: vec![0; max_bytes],
            entries: VecDeque::with_capacity(max_frames),
            max_frames: max_frames.max(1),
            max_duration_ms,
            front_pinned: false,
            retained: 0,
            retention: false,
            retention_broken: false,
            awaiting_keyframe: false,
            now_ms: 0,
            stats: QueueStats::default(),
        }
    }

    /// Keep copies of the sent frames of the current GOP (see [`retain_sent`](Self::retain_sent)).
    pub fn set_retention(&mut self, retention: bool) {
        self.retention = retention;
        if !retention {
            self.drop_retained();
        }
    }

    /// Whether no frame waits to be sent (retained copies do not count).
    pub fn is_empty(&self) -> bool {
        self.entries.len() == self.retained
    }

    /// Whether a frame may go straight from its source to an idle socket, bypassing the queue:
    /// nothing waits to be sent, and the frame is a keyframe or no frame was dropped since the
    /// last one. If not, it is to be [pushed](Self::push) (which drops it if its reference is
    /// gone). An empty queue is not enough: after a drop, the next frame would follow a hole.
    pub fn may_send_directly(&self, keyframe: bool) -> bool {
        self.is_empty() && (keyframe || !self.awaiting_keyframe)
    }

    /// Frames waiting to be sent.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len() - self.retained
    }

    /// Bytes held by queued frames.
    #[cfg(test)]
    pub fn queued_bytes(&self) -> usize {
        self.entries.iter().map(|e| e.len).sum()
    }

    /// Stream time between the oldest and the newest queued frame.
    pub fn queued_duration_ms(&self) -> u64 {
        match (self.entries.front(), self.entries.back()) {
            (Some(first), Some(last)) => last.timestamp_ms.saturating_sub(first.timestamp_ms),
            _ => 0,
        }
    }

    pub fn stats(&self) -> QueueStats {
        self.stats
    }

    /// The ring; entries index into it.
    pub fn storage(&self) -> &[u8] {
        &self.storage
    }

    /// The next frame to send.
    pub fn front(&self) -> Option<Entry> {
        self.entries.get(self.retained).copied()
    }

    /// Marks the front entry as being sent: it stays put until [`pop_front`](Self::pop_front).
    pub fn pin_front(&mut self) {
        self.front_pinned = !self.is_empty();
    }

    /// The front entry is no longer being sent (its connection died); it may be dropped.
    pub fn unpin_front(&mut self) {
        self.front_pinned = false;
    }

    /// Removes the front entry (given up on).
    pub fn pop_front(&mut self) -> Option<Entry> {
        self.front_pinned = false;
        self.entries.remove(self.retained)
    }

    /// The front entry was sent: it is retained (with retention on) or removed.
    pub fn pop_sent(&mut self) -> Option<Entry> {
        let keyframe = self.front().is_some_and(|e| e.keyframe);
        if !self.retention || (self.retention_broken && !keyframe) {
            return self.pop_front();
        }
        self.front_pinned = false;
        let entry = self.entries.get(self.retained).copied()?;
        if entry.keyframe {
            // A new GOP: the copies before it are no longer needed.
            self.drop_retained();
            self.retention_broken = false;
        }
        self.retained += 1;
        Some(entry)
    }

    /// A frame was sent straight from its source: called for every such frame. A keyframe ends
    /// a wait for one. With retention on, and only while nothing waits to be sent, a copy is kept
    /// unless a frame before it in its GOP was dropped. Never drops an unsent frame for it.
    pub fn retain_sent(
        &mut self,
        timestamp_ms: u64,
        keyframe: bool,
        len: usize,
        fill: impl FnOnce(&mut [u8]),
    ) {
        if keyframe && self.is_empty() {
            // The frames after it have their reference again.
            self.awaiting_keyframe = false;
        }
        if !self.retention || !self.is_empty() {
            return;
        }
        if keyframe {
            self.drop_retained();
            self.retention_broken = false;
        } else if self.awaiting_keyframe {
            // Its reference was dropped: a replay would not decode.
            self.drop_retained();
            self.retention_broken = true;
        }
        if self.retention_broken {
            return;
        }
        let too_old = self.entries.front().is_some_and(|first| {
            timestamp_ms.saturating_sub(first.timestamp_ms) > self.max_duration_ms
        });
        let slot = if too_old || self.entries.len() >= self.max_frames {
            None
        } else {
            self.find_slot(len)
        };
        match slot {
            Some(start) => {
                fill(&mut self.storage[start..start + len]);
                self.entries.push_back(Entry {
                    start,
                    len,
                    timestamp_ms,
                    keyframe,
                    arrival_ms: self.now_ms,
                });
                self.retained += 1;
            }
            None => {
                // The GOP outgrew the queue: keep nothing until the next keyframe.
                self.drop_retained();
                self.retention_broken = true;
            }
        }
    }

    /// Drops the retained copies.
    fn drop_retained(&mut self) {
        self.entries.drain(..self.retained);
        self.retained = 0;
    }

    /// The next frame sent will be the newest queued keyframe: older frames go. Called when a new
    /// connection starts, so viewers get a picture at once. Returns how many frames were dropped.
    /// If a frame after the newest queued one was dropped, the wait for a keyframe goes on: the
    /// frames kept end where they did, and what comes next still lacks its reference.
    #[cfg(test)]
    pub fn skip_to_newest_keyframe(&mut self) -> u32 {
        self.skip_to_keyframe(None)
    }

    /// The caller's clock: frames queued from now on arrived at `now_ms`.
    pub fn set_now(&mut self, now_ms: u64) {
        self.now_ms = now_ms;
    }

    /// Like [`skip_to_newest_keyframe`](Self::skip_to_newest_keyframe), but only GOPs that are
    /// late by the wall clock go: the next frame sent is the oldest queued keyframe that arrived
    /// within the time bound, or else the newest. A pipe that gave its frames faster than real
    /// time before the first connection loses none of them; after an outage, what arrived
    /// within `--queue-time` is sent.
    pub fn skip_late_gops(&mut self) -> u32 {
        self.skip_to_keyframe(Some(self.now_ms))
    }

    fn skip_to_keyframe(&mut self, now_ms: Option<u64>) -> u32 {
        self.front_pinned = false;
        // Retained copies are replayed too, when they start the current GOP.
        let sent = std::mem::take(&mut self.retained);
        let Some(newest_key) = self.entries.iter().rposition(|e| e.keyframe) else {
            self.entries.drain(..sent);
            let dropped = self.entries.len() as u32;
            self.drop_range(0, self.entries.len());
            // Only a dropped frame breaks the chain of references: an empty queue waits for
            // nothing (the pipeline makes each connection start at a keyframe anyway).
            if dropped > 0 {
                self.awaiting_keyframe = true;
            }
            return dropped;
        };
        // The oldest unsent keyframe that is not late; else the newest keyframe, which may be a
        // retained one (the current GOP, already sent on the last connection).
        let start = now_ms
            .and_then(|now| {
                self.entries.iter().skip(sent).position(|e| {
                    e.keyframe && now.saturating_sub(e.arrival_ms) <= self.max_duration_ms
                })
            })
            .map_or(newest_key, |i| i + sent)
            .min(newest_key);
        // Copies of frames that were sent are not drops.
        let copies = sent.min(start);
        self.entries.drain(..copies);
        self.drop_range(0, start - copies)
    }

    /// Drops everything not pinned and waits for a keyframe (the parameter sets changed, say).
    pub fn clear_unpinned(&mut self) {
        self.drop_retained();
        self.retention_broken = true;
        let first = usize::from(self.front_pinned);
        self.drop_range(first, self.entries.len());
        self.awaiting_keyframe = true;
    }

    /// Queues a frame of `len` bytes at `timestamp_ms`; `fill` writes its body into the slot.
    pub fn push(
        &mut self,
        timestamp_ms: u64,
        keyframe: bool,
        len: usize,
        fill: impl FnOnce(&mut [u8]),
    ) -> Pushed {
        if self.awaiting_keyframe && !keyframe {
            return self.reject(len);
        }
        if len > self.storage.len() {
            self.clear_unpinned();
            return self.reject(len);
        }
        let mut dropped = 0;
        // Retained copies give way first: unsent frames matter more than a replay.
        if self.retained > 0 {
            let needs_room = self.find_slot(len).is_none()
                || self.entries.len() >= self.max_frames
                || self.entries.front().is_some_and(|first| {
                    timestamp_ms.saturating_sub(first.timestamp_ms) > self.max_duration_ms
                });
            if needs_room {
                self.drop_retained();
                self.retention_broken = true;
            }
        }
        // Every pass drops at least one entry or returns; the bound only guards that promise.
        for _ in 0..=self.entries.len() + 1 {
            // The time bound counts from the oldest frame that may be dropped: a pinned frame
            // being sent may be older than the bound on a slow link, and waiting does not help.
            let oldest = self.retained + usize::from(self.front_pinned);
            let fits_time = self.entries.get(oldest).is_none_or(|first| {
                timestamp_ms.saturating_sub(first.timestamp_ms) <= self.max_duration_ms
            });
            let slot = if self.entries.len() < self.max_frames && fits_time {
                self.find_slot(len)
            } else {
                None
            };
            if let Some(start) = slot {
                fill(&mut self.storage[start..start + len]);
                self.entries.push_back(Entry {
                    start,
                    len,
                    timestamp_ms,
                    keyframe,
                    arrival_ms: self.now_ms,
                });
                self.awaiting_keyframe = false;
                if dropped > 0 {
                    self.stats.drop_events += 1;
                }
                return Pushed::Queued { dropped };
            }
            // Make room: drop the oldest whole GOP that is not being sent.
            let first = self.retained + usize::from(self.front_pinned);
            let next_key = self
                .entries
                .iter()
                .skip(first + 1)
                .position(|e| e.keyframe)
                .map(|i| i + first + 1);
            match next_key {
                Some(key) => dropped += self.drop_range(first, key),
                None if keyframe => {
                    // Nothing queued starts a GOP: the incoming keyframe replaces all of it.
                    dropped += self.drop_range(first, self.entries.len());
                    if self.entries.len() == first && self.find_slot(len).is_none() && first == 1 {
                        // Even alone beside the pinned frame it does not fit: drop it too.
                        self.stats.drop_events += 1;
                        self.awaiting_keyframe = true;
                        return self.reject(len);
                    }
                }
                None => {
                    // The incoming frame would continue a GOP whose queue is full: it and the rest
                    // of its GOP are dropped; what is queued stays decodable.
                    self.awaiting_keyframe = true;
                    if dropped > 0 {
                        self.stats.drop_events += 1;
                    }
                    self.stats.drop_events += 1;
                    return self.reject(len);
                }
            }
        }
        // Unreachable while every pass drops something; if not, drop rather than spin.
        self.awaiting_keyframe = true;
        self.stats.drop_events += 1;
        self.reject(len)
    }

    fn reject(&mut self, len: usize) -> Pushed {
        self.stats.frames_dropped += 1;
        self.stats.bytes_dropped += len as u64;
        Pushed::Dropped
    }

    /// Drops entries `from..to`; returns how many.
    fn drop_range(&mut self, from: usize, to: usize) -> u32 {
        let mut count = 0;
        for entry in self.entries.drain(from..to) {
            self.stats.frames_dropped += 1;
            self.stats.bytes_dropped += entry.len as u64;
            count += 1;
        }
        count
    }

    /// Where `len` contiguous bytes fit after the newest entry and before the oldest, if anywhere.
    fn find_slot(&self, len: usize) -> Option<usize> {
        let capacity = self.storage.len();
        let (Some(first), Some(last)) = (self.entries.front(), self.entries.back()) else {
            return (len <= capacity).then_some(0);
        };
        let head = first.start;
        let tail = last.start + last.len;
        if tail > head
            || (tail == head && last.start >= head && self.entries.len() == 1 && first.len == 0)
        {
            // Used region is head..tail: free space is tail..capacity, then 0..head.
            if capacity - tail >= len {
                Some(tail)
            } else if head >= len {
                Some(0)
            } else {
                None
            }
        } else {
            // Wrapped: used is head..capacity and 0..tail; free is tail..head.
            (head - tail >= len).then_some(tail)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(queue: &mut FrameQueue, ts: u64, key: bool, len: usize) -> Pushed {
        let tag = ts as u8;
        queue.push(ts, key, len, |slot| slot.fill(tag))
    }

    fn timestamps(queue: &FrameQueue) -> Vec<u64> {
        queue.entries.iter().map(|e| e.timestamp_ms).collect()
    }

    /// Every queued non-keyframe follows its predecessor without a gap, and bodies are intact.
    fn assert_decodable(queue: &FrameQueue, frame_interval: u64) {
        let entries: Vec<Entry> = queue.entries.iter().copied().collect();
        for pair in entries.windows(2) {
            if !pair[1].keyframe {
                assert_eq!(
                    pair[1].timestamp_ms,
                    pair[0].timestamp_ms + frame_interval,
                    "{entries:?}"
                );
            }
        }
        for e in &entries {
            assert!(queue.storage[e.start..e.start + e.len]
                .iter()
                .all(|&b| b == e.timestamp_ms as u8));
        }
    }

    #[test]
    fn frames_come_out_in_order_with_their_bytes() {
        let mut queue = FrameQueue::new(1000, 100, 10_000);
        for ts in 0..5 {
            assert_eq!(
                push(&mut queue, ts, ts == 0, 100),
                Pushed::Queued { dropped: 0 }
            );
        }
        assert_eq!(queue.queued_bytes(), 500);
        for ts in 0..5 {
            let e = queue.pop_front().unwrap();
            assert_eq!(e.timestamp_ms, ts);
            assert!(queue.storage()[e.start..e.start + e.len]
                .iter()
                .all(|&b| b == ts as u8));
        }
        assert!(queue.is_empty());
    }

    #[test]
    fn the_ring_wraps_without_moving_or_overlapping_entries() {
        let mut queue = FrameQueue::new(1000, 100, u64::MAX);
        push(&mut queue, 0, true, 300);
        for ts in 1..200u64 {
            assert_eq!(
                push(&mut queue, ts, false, 300),
                Pushed::Queued { dropped: 0 },
                "ts {ts}"
            );
            queue.pop_front();
            assert_decodable(&queue, 1);
            let e = queue.front().unwrap();
            assert!(e.start + e.len <= 1000);
        }
    }

    #[test]
    fn overflow_drops_the_oldest_whole_gop() {
        // GOPs of 4 frames of 100 bytes; room for 10 frames.
        let mut queue = FrameQueue::new(1000, 100, u64::MAX);
        for ts in 0..10 {
            push(&mut queue, ts, ts % 4 == 0, 100);
        }
        assert_eq!(timestamps(&queue), (0..10).collect::<Vec<_>>());
        // Frame 10 does not fit: GOP 0..4 goes, the queue starts at keyframe 4.
        assert_eq!(
            push(&mut queue, 10, false, 100),
            Pushed::Queued { dropped: 4 }
        );
        assert_eq!(timestamps(&queue), (4..11).collect::<Vec<_>>());
        assert!(queue.front().unwrap().keyframe);
        assert_decodable(&queue, 1);
        assert_eq!(queue.stats().frames_dropped, 4);
        assert_eq!(queue.stats().drop_events, 1);
    }

    #[test]
    fn a_pinned_frame_is_never_dropped_and_its_gop_continues_or_stops_cleanly() {
        let mut queue = FrameQueue::new(500, 100, u64::MAX);
        for ts in 0..5 {
            push(&mut queue, ts, ts == 0, 100);
        }
        queue.pin_front();
        // No keyframe after the pinned one: the incoming inter frame is dropped, and so is every
        // frame up to the next keyframe.
        assert_eq!(push(&mut queue, 5, false, 100), Pushed::Dropped);
        assert_eq!(
            push(&mut queue, 6, false, 50),
            Pushed::Dropped,
            "its reference was dropped"
        );
        assert_eq!(timestamps(&queue), vec![0, 1, 2, 3, 4]);
        // A keyframe replaces everything but the pinned frame.
        assert_eq!(
            push(&mut queue, 7, true, 100),
            Pushed::Queued { dropped: 4 }
        );
        assert_eq!(timestamps(&queue), vec![0, 7]);
        assert_eq!(queue.pop_front().unwrap().timestamp_ms, 0);
        assert_eq!(
            push(&mut queue, 8, false, 100),
            Pushed::Queued { dropped: 0 }
        );
        assert_eq!(timestamps(&queue), vec![7, 8]);
    }

    #[test]
    fn the_time_bound_drops_gops_too() {
        // 2 s of video at most; 30 fps; a keyframe every second.
        let mut queue = FrameQueue::new(1 << 20, 1000, 2000);
        let interval = 1000 / 30;
        let mut dropped = 0;
        for i in 0..300u64 {
            match push(&mut queue, i * interval, i % 30 == 0, 1000) {
                Pushed::Queued { dropped: d } => dropped += d,
                Pushed::Dropped => panic!("frame {i} dropped"),
            }
            assert!(queue.queued_duration_ms() <= 2000);
            assert!(queue.front().unwrap().keyframe);
            assert_decodable(&queue, interval);
        }
        assert!(dropped > 200);
    }

    #[test]
    fn a_pinned_frame_older_than_the_time_bound_does_not_block_new_frames() {
        // A slow link: the frame being sent stays pinned while newer frames come and go.
        let mut queue = FrameQueue::new(1 << 20, 1000, 2000);
        push(&mut queue, 0, true, 1000);
        queue.pin_front();
        for i in 1..600u64 {
            let pushed = push(&mut queue, i * 33, i % 30 == 0, 1000);
            if i > 100 && i % 30 == 0 {
                assert!(
                    matches!(pushed, Pushed::Queued { .. }),
                    "keyframe {i}: {pushed:?}"
                );
            }
            assert_eq!(
                queue.front().unwrap().timestamp_ms,
                0,
                "the pinned frame stays"
            );
            assert_decodable(&queue, 33);
        }
        assert!(queue.stats().frames_dropped > 0);
    }

    #[test]
    fn retained_frames_let_a_new_connection_start_at_the_current_gop() {
        let mut queue = FrameQueue::new(10_000, 100, 2000);
        queue.set_retention(true);
        // Frames 0..5 went straight to the socket; copies of the GOP since keyframe 3 stay.
        for ts in 0..5 {
            queue.retain_sent(ts, ts == 0 || ts == 3, 100, |slot| slot.fill(ts as u8));
        }
        assert!(queue.is_empty(), "nothing waits to be sent");
        assert_eq!(queue.front(), None);
        assert_eq!(queue.queued_bytes(), 200, "keyframe 3 and frame 4");
        // The connection dies; the next one replays from keyframe 3.
        assert_eq!(queue.skip_to_newest_keyframe(), 0);
        assert_eq!(timestamps(&queue), vec![3, 4]);
        assert_eq!(queue.front().unwrap().timestamp_ms, 3);
        assert_decodable(&queue, 1);
        // Sent again from the queue, they are retained again; a new keyframe ends the GOP.
        queue.pin_front();
        queue.pop_sent();
        queue.pin_front();
        queue.pop_sent();
        assert!(queue.is_empty());
        queue.retain_sent(5, true, 100, |slot| slot.fill(5));
        assert_eq!(timestamps(&queue), vec![5]);
    }

    #[test]
    fn retained_frames_give_way_to_unsent_ones() {
        let mut queue = FrameQueue::new(1000, 100, u64::MAX);
        queue.set_retention(true);
        for ts in 0..8 {
            queue.retain_sent(ts, ts == 0, 100, |slot| slot.fill(ts as u8));
        }
        // The link slows down: unsent frames need the room.
        for ts in 8..14 {
            assert_eq!(
                push(&mut queue, ts, false, 100),
                Pushed::Queued { dropped: 0 },
                "frame {ts}"
            );
        }
        assert_eq!(queue.len(), 6);
        assert_eq!(queue.front().unwrap().timestamp_ms, 8);
        // The GOP's copies are gone (not a whole GOP any more), so nothing is retained until the
        // next keyframe, and a reconnect waits for one.
        assert_eq!(queue.skip_to_newest_keyframe(), 6);
        assert!(queue.is_empty());
    }

    #[test]
    fn retention_resumes_at_a_keyframe_sent_from_the_queue() {
        let mut queue = FrameQueue::new(1000, 100, u64::MAX);
        queue.set_retention(true);
        for ts in 0..8 {
            queue.retain_sent(ts, ts == 0, 100, |slot| slot.fill(ts as u8));
        }
        // The link slows down: the copies give way, and frames go through the queue from now on.
        for ts in 8..14 {
            push(&mut queue, ts, false, 100);
        }
        while queue.pop_sent().is_some() {}
        push(&mut queue, 14, true, 100);
        push(&mut queue, 15, false, 100);
        queue.pin_front();
        queue.pop_sent();
        queue.pin_front();
        queue.pop_sent();
        // The link dies: the next connection starts at keyframe 14 at once.
        assert_eq!(queue.skip_to_newest_keyframe(), 0);
        assert_eq!(timestamps(&queue), vec![14, 15]);
        assert_decodable(&queue, 1);
    }

    #[test]
    fn a_new_connection_on_an_empty_queue_accepts_the_next_inter_frame() {
        let mut queue = FrameQueue::new(1000, 100, u64::MAX);
        assert_eq!(queue.skip_to_newest_keyframe(), 0);
        assert_eq!(
            push(&mut queue, 7, false, 100),
            Pushed::Queued { dropped: 0 }
        );
    }

    #[test]
    fn retention_is_off_by_default_and_costs_nothing() {
        let mut queue = FrameQueue::new(1000, 100, u64::MAX);
        queue.retain_sent(0, true, 100, |_| panic!("no copy without retention"));
        assert_eq!(queue.queued_bytes(), 0);
    }

    #[test]
    fn a_frame_larger_than_the_queue_is_dropped_and_waits_for_a_keyframe() {
        let mut queue = FrameQueue::new(1000, 100, u64::MAX);
        push(&mut queue, 0, true, 100);
        assert_eq!(push(&mut queue, 1, true, 2000), Pushed::Dropped);
        assert_eq!(push(&mut queue, 2, false, 10), Pushed::Dropped);
        assert_eq!(push(&mut queue, 3, true, 10), Pushed::Queued { dropped: 0 });
    }

    #[test]
    fn a_new_connection_starts_at_the_newest_keyframe() {
        let mut queue = FrameQueue::new(10_000, 100, u64::MAX);
        for ts in 0..10 {
            push(&mut queue, ts, ts % 4 == 0, 100);
        }
        assert_eq!(queue.skip_to_newest_keyframe(), 8);
        assert_eq!(timestamps(&queue), vec![8, 9]);
        // With no keyframe queued, everything goes and the next keyframe is awaited.
        let mut queue = FrameQueue::new(10_000, 100, u64::MAX);
        push(&mut queue, 0, true, 100);
        queue.pop_front();
        push(&mut queue, 1, false, 100);
        assert_eq!(queue.skip_to_newest_keyframe(), 1);
        assert_eq!(push(&mut queue, 2, false, 100), Pushed::Dropped);
        assert_eq!(
            push(&mut queue, 3, true, 100),
            Pushed::Queued { dropped: 0 }
        );
    }

    #[test]
    fn a_new_connection_still_waits_for_a_keyframe_after_a_dropped_frame() {
        // The link is down; 66 ms of stream fit: keyframe 0 and frames 1 and 2 (33 ms apart).
        let mut queue = FrameQueue::new(10_000, 100, 66);
        queue.set_retention(true);
        for i in 0..3 {
            assert_eq!(
                push(&mut queue, i * 33, i == 0, 100),
                Pushed::Queued { dropped: 0 }
            );
        }
        // Frame 3 does not fit, and no later GOP can give way: it is dropped.
        assert_eq!(push(&mut queue, 99, false, 100), Pushed::Dropped);
        // A new connection starts at keyframe 0 and gets frames 0 and 1.
        assert_eq!(queue.skip_to_newest_keyframe(), 0);
        for _ in 0..2 {
            queue.pin_front();
            queue.pop_sent();
        }
        // Frame 4 would fit now, but its reference, frame 3, is gone: it must not follow frame 2.
        assert_eq!(push(&mut queue, 132, false, 100), Pushed::Dropped);
        assert_decodable(&queue, 33);
        assert_eq!(timestamps(&queue), vec![0, 33, 66], "0 and 33 retained");
        assert!(matches!(
            push(&mut queue, 165, true, 100),
            Pushed::Queued { .. }
        ));
    }

    #[test]
    fn a_keyframe_sent_straight_from_the_source_ends_the_wait_for_one() {
        let mut queue = FrameQueue::new(10_000, 100, 66);
        for i in 0..3 {
            push(&mut queue, i * 33, i == 0, 100);
        }
        assert_eq!(push(&mut queue, 99, false, 100), Pushed::Dropped);
        while queue.pop_sent().is_some() {}
        // Keyframe 4 goes straight to the idle socket; frame 5 finds it busy and is queued.
        queue.retain_sent(132, true, 100, |_| {});
        assert_eq!(
            push(&mut queue, 165, false, 100),
            Pushed::Queued { dropped: 0 }
        );
    }

    #[test]
    fn a_frame_sent_straight_after_a_dropped_one_is_not_kept_for_a_replay() {
        let mut queue = FrameQueue::new(1000, 100, u64::MAX);
        queue.set_retention(true);
        // Frame 0 (the end of a GOP) is being sent; keyframe 3 and frames 1 and 2 wait.
        push(&mut queue, 0, false, 100);
        queue.pin_front();
        push(&mut queue, 1, false, 300);
        push(&mut queue, 2, false, 300);
        push(&mut queue, 3, true, 250);
        // Frame 4 does not fit: frames 1 and 2 go, and it still does not fit beside keyframe 3.
        assert_eq!(push(&mut queue, 4, false, 100), Pushed::Dropped);
        assert_eq!(timestamps(&queue), vec![0, 3]);
        // The socket takes frame 0 and keyframe 3; keyframe 3 is retained.
        queue.pop_sent();
        queue.pin_front();
        queue.pop_sent();
        assert!(queue.is_empty());
        // Frame 5 went straight to the socket: there is room, but its GOP has lost frame 4.
        queue.retain_sent(5, false, 100, |slot| slot.fill(5));
        // The next connection must not replay keyframe 3 then frame 5.
        queue.skip_to_newest_keyframe();
        assert_decodable(&queue, 1);
        assert_eq!(timestamps(&queue), Vec::<u64>::new());
    }

    #[test]
    fn after_a_drop_only_a_keyframe_may_go_straight_to_the_socket() {
        let mut queue = FrameQueue::new(10_000, 100, 66);
        assert!(queue.may_send_directly(false));
        for i in 0..3 {
            push(&mut queue, i * 33, i == 0, 100);
        }
        assert!(!queue.may_send_directly(true), "frames wait");
        assert_eq!(push(&mut queue, 99, false, 100), Pushed::Dropped);
        while queue.pop_sent().is_some() {}
        assert!(queue.is_empty());
        assert!(!queue.may_send_directly(false), "frame 4 lacks frame 3");
        assert_eq!(push(&mut queue, 132, false, 100), Pushed::Dropped);
        assert!(queue.may_send_directly(true));
        queue.retain_sent(165, true, 100, |_| {});
        assert!(queue.may_send_directly(false));
    }

    #[test]
    fn random_traffic_keeps_every_invariant() {
        // A deterministic pseudo-random mix of frame sizes, pins and pops.
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut queue = FrameQueue::new(4096, 64, 500);
        let mut last_sent: Option<Entry> = None;
        for i in 0..20_000u64 {
            let key = i % 15 == 0;
            let len = (next() % 700) as usize + 1;
            push(&mut queue, i * 10, key, len);
            assert!(queue.queued_bytes() <= 4096 && queue.len() <= 64);
            assert_decodable(&queue, 10);
            if next() % 3 == 0 {
                if let Some(e) = queue.pop_front() {
                    // What is sent is decodable: a keyframe, or the successor of the last sent frame.
                    if !e.keyframe {
                        assert_eq!(
                            e.timestamp_ms,
                            last_sent.unwrap().timestamp_ms + 10,
                            "frame {i}"
                        );
                    }
                    last_sent = Some(e);
                }
                queue.pin_front();
            }
        }
    }

    /// A pipe that gave a whole clip faster than real time before the first connection: nothing
    /// is late, so the connection starts at the first keyframe and every frame goes out.
    #[test]
    fn a_connection_keeps_every_gop_that_is_not_late() {
        let mut queue = FrameQueue::new(10_000, 100, 2000);
        queue.set_now(50);
        for ts in 0..12u64 {
            assert_eq!(
                push(&mut queue, ts * 100, ts % 4 == 0, 100),
                Pushed::Queued { dropped: 0 }
            );
        }
        queue.set_now(80);
        assert_eq!(queue.skip_late_gops(), 0);
        assert_eq!(queue.front().unwrap().timestamp_ms, 0);
    }

    /// A switch: the retained copies of the current GOP were sent on the old connection; the
    /// new one starts at the keyframe queued for it, and the copies are not counted as drops.
    #[test]
    fn skipped_copies_of_sent_frames_are_not_drops() {
        let mut queue = FrameQueue::new(10_000, 100, 2000);
        queue.set_retention(true);
        for ts in 0..6u64 {
            queue.retain_sent(ts * 33, ts == 0, 100, |_| {});
        }
        push(&mut queue, 6 * 33, true, 100);
        assert_eq!(queue.skip_late_gops(), 0);
        assert_eq!(queue.front().unwrap().timestamp_ms, 6 * 33);
        assert_eq!(queue.stats().frames_dropped, 0);
    }

    /// After an outage, the GOPs that waited longer than the time bound go; the first keyframe
    /// that arrived within it starts the connection.
    #[test]
    fn a_connection_drops_the_gops_that_are_late_by_the_wall_clock() {
        let mut queue = FrameQueue::new(10_000, 100, 2000);
        for ts in 0..12u64 {
            queue.set_now(ts * 500);
            push(&mut queue, ts * 100, ts % 4 == 0, 100);
        }
        // Keyframes arrived at 0, 2000 and 4000 ms; at 5000 ms the first two are late.
        queue.set_now(5000);
        assert_eq!(queue.skip_late_gops(), 8);
        assert_eq!(queue.front().unwrap().timestamp_ms, 800);
        // All late: the newest keyframe, as before.
        let mut queue = FrameQueue::new(10_000, 100, 2000);
        for ts in 0..8u64 {
            push(&mut queue, ts * 100, ts % 4 == 0, 100);
        }
        queue.set_now(60_000);
        assert_eq!(queue.skip_late_gops(), 4);
        assert_eq!(queue.front().unwrap().timestamp_ms, 400);
    }
}

/// A model of the supervisor driving the queue, checked at the receiving end.
///
/// [`Receiver`] checks what one destination receives and knows nothing of the queue; [`Source`]
/// makes frames that name themselves; [`Supervisor`] replays src/supervisor.rs's calls on the
/// queue, the connection and the pipeline's keyframe gate.
#[cfg(test)]
mod model {
    use super::*;
    use proptest::prelude::*;

    use crate::store::receiver::Receiver;

    /// A live source: frame `seq` is stamped `seq * INTERVAL_MS`, every `gop`-th frame is a
    /// keyframe, and a frame's body (8 bytes or more) starts with its sequence number, followed
    /// by bytes derived from it, so that a body read back names its frame and shows whether it
    /// was overwritten.
    #[derive(Clone, Copy, Debug)]
    pub(crate) struct Source {
        pub gop: u64,
    }

    pub(crate) const INTERVAL_MS: u64 = 33;

    impl Source {
        pub fn keyframe(&self, seq: u64) -> bool {
            seq % self.gop == 0
        }

        pub fn fill(seq: u64, slot: &mut [u8]) {
            slot[..8].copy_from_slice(&seq.to_le_bytes());
            for (i, b) in slot[8..].iter_mut().enumerate() {
                *b = (seq as u8).wrapping_mul(31).wrapping_add(i as u8);
            }
        }

        /// The sequence number of the frame whose body this is, if the body is intact.
        pub fn seq_of(body: &[u8]) -> Result<u64, String> {
            let seq = u64::from_le_bytes(body[..8].try_into().unwrap());
            let intact = body[8..]
                .iter()
                .enumerate()
                .all(|(i, &b)| b == (seq as u8).wrapping_mul(31).wrapping_add(i as u8));
            if intact {
                Ok(seq)
            } else {
                Err(format!("the body of frame {seq} was overwritten"))
            }
        }
    }

    /// What the supervisor's loop does, one step at a time.
    #[derive(Clone, Debug)]
    pub(crate) enum Op {
        /// The input gives the next frame (`len` bytes; a keyframe may bring new parameter sets).
        Frame { len: usize, new_parameters: bool },
        /// The loop feeds the socket from the queue (`pump_queue`), as it does on every pass.
        Pump,
        /// The socket takes up to `frames` more frames (a Writable event).
        Writable { frames: u32 },
        /// The connection fails, possibly in the middle of a frame (`Uplink::fail`).
        Reset,
        /// A new connection is up (`LinkEvent::Connected`); its socket takes `room` frames at once.
        Connected { room: u32 },
        /// The input restarts (a reload, say): frames up to the next keyframe are lost, the
        /// connection waits for a keyframe, and retention is set anew.
        SourceRestart { retention: bool },
    }

    /// When the supervisor sends a frame straight from the input, bypassing the queue.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub(crate) enum Direct {
        /// The link is idle and [`FrameQueue::is_empty`]: not enough.
        WhenEmpty,
        /// The link is idle and [`FrameQueue::may_send_directly`].
        WhenTheQueueAgrees,
    }

    /// One connection, as the supervisor and the pipeline see it.
    #[derive(Debug)]
    struct Conn {
        /// The session holds data the socket has not taken (`!conn.is_idle()`).
        busy: bool,
        /// That data is the queue's front frame (`Pending::QueueFront`).
        pending_front: bool,
        /// Frames the socket takes before it blocks.
        room: u32,
        /// The pipeline sends nothing on this connection before a keyframe.
        need_keyframe: bool,
    }

    impl Conn {
        /// `write_some`: whether the socket took everything the session holds.
        fn write_some(&mut self) -> bool {
            if self.busy && self.room > 0 {
                self.room -= 1;
                self.busy = false;
            }
            !self.busy
        }

        /// `Pipeline::deliver`: whether the frame is sent, or dropped for want of a keyframe.
        fn deliver(&mut self, keyframe: bool) -> bool {
            if self.need_keyframe && !keyframe {
                return false;
            }
            self.need_keyframe = false;
            self.busy = true;
            true
        }
    }

    /// The supervisor with a live input that cannot make keyframes (retention on), its queue and
    /// the receiving end.
    pub(crate) struct Supervisor {
        pub queue: FrameQueue,
        pub receiver: Receiver,
        direct: Direct,
        source: Source,
        link: Option<Conn>,
        next_seq: u64,
        /// The entry pinned at the front and its body, while the connection writes it.
        pinned: Option<(Entry, Vec<u8>)>,
        /// A pump ran since the last event (the loop pumps once per pass).
        pumped: bool,
        storage_len: usize,
        entries_capacity: usize,
    }

    impl Supervisor {
        pub fn new(
            direct: Direct,
            gop: u64,
            max_bytes: usize,
            max_frames: usize,
            max_duration_ms: u64,
        ) -> Self {
            let mut queue = FrameQueue::new(max_bytes, max_frames, max_duration_ms);
            queue.set_retention(true);
            Supervisor {
                storage_len: queue.storage.len(),
                entries_capacity: queue.entries.capacity(),
                queue,
                receiver: Receiver::default(),
                direct,
                source: Source { gop: gop.max(1) },
                link: None,
                next_seq: 0,
                pinned: None,
                pumped: false,
            }
        }

        pub fn apply(&mut self, op: &Op) -> Result<(), String> {
            match *op {
                Op::Frame {
                    len,
                    new_parameters,
                } => self.frame(len, new_parameters)?,
                Op::Pump => self.pump()?,
                _ => {
                    // Every pass of the loop feeds the socket before it waits for an event.
                    if !self.pumped {
                        self.pump()?;
                    }
                    self.pumped = false;
                    self.event(op);
                }
            }
            self.check_queue()
        }

        fn event(&mut self, op: &Op) {
            match *op {
                Op::Writable { frames } => {
                    if let Some(conn) = &mut self.link {
                        conn.room += frames;
                        conn.write_some();
                    }
                }
                Op::Reset => {
                    if self.link.take().is_some() {
                        self.receiver.disconnect();
                        self.queue.unpin_front();
                        self.pinned = None;
                    }
                }
                Op::Connected { room } => {
                    if self.link.is_none() {
                        self.receiver.connect();
                        self.queue.skip_to_newest_keyframe();
                        self.link = Some(Conn {
                            busy: false,
                            pending_front: false,
                            room,
                            need_keyframe: true,
                        });
                    }
                }
                Op::SourceRestart { retention } => {
                    self.next_seq = self.next_seq.div_ceil(self.source.gop) * self.source.gop;
                    if let Some(conn) = &mut self.link {
                        conn.need_keyframe = true;
                    }
                    self.queue.set_retention(retention);
                }
                Op::Frame { .. } | Op::Pump => unreachable!(),
            }
        }

        /// A frame from the input: sent at once when the link is idle and the queue agrees, else
        /// queued.
        fn frame(&mut self, len: usize, new_parameters: bool) -> Result<(), String> {
            let seq = self.next_seq;
            self.next_seq += 1;
            let keyframe = self.source.keyframe(seq);
            let timestamp = seq * INTERVAL_MS;
            let link_idle = matches!(&self.link, Some(conn) if !conn.busy)
                && match self.direct {
                    Direct::WhenEmpty => self.queue.is_empty(),
                    Direct::WhenTheQueueAgrees => self.queue.may_send_directly(keyframe),
                };
            if keyframe && new_parameters && !self.queue.is_empty() {
                self.queue.clear_unpinned();
            }
            match &mut self.link {
                Some(conn) if link_idle => {
                    if conn.deliver(keyframe) {
                        self.receiver.receive(seq, keyframe)?;
                        // The rest is detached into the session if the socket does not take it.
                        conn.write_some();
                        self.queue
                            .retain_sent(timestamp, keyframe, len, |slot| Source::fill(seq, slot));
                    }
                }
                _ => {
                    // Nothing waits to be sent and the frame's reference went out on this
                    // connection or is kept for the next: there is room for the frame (retained
                    // copies give way), and dropping it would be needless.
                    let reference_kept = seq.checked_sub(1).is_some_and(|reference| {
                        self.receiver.last_on_connection() == Some(reference)
                            || self
                                .queue
                                .entries
                                .iter()
                                .any(|e| e.timestamp_ms == reference * INTERVAL_MS)
                    });
                    let must_fit = self.queue.is_empty()
                        && len <= self.storage_len
                        && (keyframe || reference_kept);
                    let pushed = self
                        .queue
                        .push(timestamp, keyframe, len, |slot| Source::fill(seq, slot));
                    match pushed {
                        Pushed::Queued { .. } => self.check_time_bound()?,
                        Pushed::Dropped if must_fit => {
                            return Err(format!("frame {seq} dropped, though nothing waited"));
                        }
                        Pushed::Dropped => {}
                    }
                }
            }
            Ok(())
        }

        /// `pump_queue`: while the socket takes them, the queued frames.
        fn pump(&mut self) -> Result<(), String> {
            self.pumped = true;
            let Some(conn) = &mut self.link else {
                return Ok(());
            };
            loop {
                if conn.busy && !conn.write_some() {
                    return Ok(());
                }
                if conn.pending_front {
                    let sent = self.queue.pop_sent();
                    let pinned = self.pinned.take().map(|(entry, _)| entry);
                    if sent != pinned {
                        return Err(format!("sent {sent:?}, but {pinned:?} was pinned"));
                    }
                    conn.pending_front = false;
                }
                let Some(entry) = self.queue.front() else {
                    return Ok(());
                };
                let body = &self.queue.storage()[entry.start..entry.start + entry.len];
                let seq = Source::seq_of(body)?;
                if conn.deliver(entry.keyframe) {
                    self.receiver.receive(seq, entry.keyframe)?;
                    self.pinned = Some((entry, body.to_vec()));
                    self.queue.pin_front();
                    conn.pending_front = true;
                } else {
                    self.queue.pop_front();
                }
            }
        }

        /// The queue's invariants (its module comment), after each step.
        fn check_queue(&self) -> Result<(), String> {
            let queue = &self.queue;
            if queue.storage.len() != self.storage_len
                || queue.entries.capacity() != self.entries_capacity
            {
                return Err("the queue's memory grew".into());
            }
            if let Some((entry, body)) = &self.pinned {
                if queue.front() != Some(*entry)
                    || queue.storage()[entry.start..entry.start + entry.len] != body[..]
                {
                    return Err(format!(
                        "the pinned front {entry:?} moved or was overwritten"
                    ));
                }
            }
            if queue.entries.len() > queue.max_frames || queue.queued_bytes() > self.storage_len {
                return Err("the queue holds more than its bounds".into());
            }
            let mut ranges: Vec<(usize, usize)> = queue
                .entries
                .iter()
                .map(|e| (e.start, e.start + e.len))
                .collect();
            ranges.sort();
            if ranges.windows(2).any(|w| w[0].1 > w[1].0) {
                return Err(format!("entries overlap: {:?}", queue.entries));
            }
            // Retained copies and queued frames alike: a non-keyframe follows its reference.
            let mut previous: Option<u64> = None;
            for entry in &queue.entries {
                let seq = Source::seq_of(&queue.storage()[entry.start..entry.start + entry.len])?;
                if entry.timestamp_ms != seq * INTERVAL_MS
                    || entry.keyframe != self.source.keyframe(seq)
                {
                    return Err(format!("entry {entry:?} does not describe frame {seq}"));
                }
                if let Some(previous) = previous.filter(|&p| !entry.keyframe && seq != p + 1) {
                    return Err(format!(
                        "queued inter frame {seq} follows frame {previous}: {:?}",
                        frames(queue)
                    ));
                }
                previous = Some(seq);
            }
            Ok(())
        }

        /// After a frame is queued, the frames that may be dropped (all but a pinned front) span
        /// at most the time bound.
        fn check_time_bound(&self) -> Result<(), String> {
            let queue = &self.queue;
            let pinned = self.pinned.is_some().then_some(queue.retained);
            let mut droppable = (0..queue.entries.len())
                .filter(|&i| Some(i) != pinned)
                .map(|i| queue.entries[i].timestamp_ms);
            if let Some(first) = droppable.next() {
                let last = droppable.next_back().unwrap_or(first);
                if last - first > queue.max_duration_ms {
                    return Err(format!(
                        "{} ms queued beside the pinned frame, bound {}: {:?}",
                        last - first,
                        queue.max_duration_ms,
                        frames(queue)
                    ));
                }
            }
            Ok(())
        }
    }

    /// The sequence numbers of the queue's entries, for messages.
    fn frames(queue: &FrameQueue) -> Vec<u64> {
        queue
            .entries
            .iter()
            .map(|e| e.timestamp_ms / INTERVAL_MS)
            .collect()
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            8 => (8usize..400, prop::bool::weighted(0.1))
                .prop_map(|(len, new_parameters)| Op::Frame { len, new_parameters }),
            3 => Just(Op::Pump),
            3 => (0u32..4).prop_map(|frames| Op::Writable { frames }),
            1 => Just(Op::Reset),
            1 => (0u32..3).prop_map(|room| Op::Connected { room }),
            1 => prop::bool::weighted(0.8).prop_map(|retention| Op::SourceRestart { retention }),
        ]
    }

    proptest! {
        // PROPTEST_CASES=100000 searches longer.
        #![proptest_config(ProptestConfig {
            cases: std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(1000),
            ..ProptestConfig::default()
        })]

        #[test]
        fn every_connection_gets_a_decodable_stream(
            gop in 1u64..8,
            max_bytes in 64usize..2000,
            max_frames in 1usize..16,
            max_duration_ms in 0u64..400,
            ops in prop::collection::vec(op(), 1..200),
        ) {
            let mut supervisor =
                Supervisor::new(Direct::WhenTheQueueAgrees, gop, max_bytes, max_frames, max_duration_ms);
            for (i, op) in ops.iter().enumerate() {
                supervisor
                    .apply(op)
                    .map_err(|e| TestCaseError::fail(format!("step {i} ({op:?}): {e}")))?;
            }
        }
    }

    #[test]
    fn a_frame_goes_straight_to_the_socket_only_if_the_queue_agrees() {
        // The link is down: keyframe 0 and frames 1 and 2 fill the 66 ms bound, frame 3 is
        // dropped. The next connection gets 0, 1 and 2 from the queue, which is then empty, and
        // the link idle, when frame 4 comes: it must not go out, its reference 3 is gone.
        let frame = Op::Frame {
            len: 100,
            new_parameters: false,
        };
        let ops = [
            frame.clone(),
            frame.clone(),
            frame.clone(),
            frame.clone(),
            Op::Connected { room: 10 },
            Op::Pump,
            frame.clone(),
        ];
        let mut when_empty = Supervisor::new(Direct::WhenEmpty, 30, 10_000, 100, 66);
        let result = ops.iter().try_for_each(|op| when_empty.apply(op));
        assert_eq!(
            result,
            Err("connection 1: inter frame 4 after frame 2".to_string())
        );
        let mut asking = Supervisor::new(Direct::WhenTheQueueAgrees, 30, 10_000, 100, 66);
        ops.iter().try_for_each(|op| asking.apply(op)).unwrap();
        assert_eq!(asking.receiver.frames, 3);
    }
}
