//! From access units to timed FLV messages, sans-IO: muxing, timestamps, and what each connection
//! must receive before frames (onMetaData, the AVC sequence header, a keyframe).
//!
//! Timestamps come from a constant frame rate (`--fps`, else the SPS timing) counted in frames, so
//! rounding never accumulates; or, for live input without timing, from arrival time. They are
//! decoding timestamps; the muxer adds each frame's composition time (B-frames), given the frame
//! duration from here. Each new
//! connection starts at a keyframe, preceded by onMetaData and the sequence header; when SPS or
//! PPS change mid-stream the sequence header goes again before the next frame.
//!
//! Invariants: no clock is read here (`now_ms` is passed in); a connection never receives an inter
//! frame before a keyframe; after warm-up nothing here allocates per frame.

use log::{info, warn};

use crate::config::AudioSource;
use crate::config::{Config, FrameRate};
use crate::error::{Error, Fault, Result};
use crate::media::aac::{silent_frame, AudioSpecificConfig, SAMPLES_PER_FRAME};
use crate::media::annexb::AccessUnit;
use crate::media::flv::{
    aac_sequence_header, write_metadata, AudioInfo, AvcMuxer, FrameDuration, MuxError, Muxed,
    NalPieces, SkipReason, VideoInfo, AAC_SEQUENCE_HEADER_LEN,
};
use crate::rtmp::chunk::Part;
use crate::rtmp::session::PublishSession;

/// Frame rate assumed for a file whose SPS has no timing, as FFmpeg's raw H.264 demuxer does.
const FILE_DEFAULT_FPS: u32 = 25;

/// A muxed frame, ready to send: its body is [`Pipeline::frame_parts`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame {
    pub timestamp_ms: u64,
    pub keyframe: bool,
    /// SPS or PPS changed with this frame.
    pub parameters_changed: bool,
    /// Presentation time minus decode time, in ms (B-frames; else 0).
    pub composition_ms: i32,
}

/// What one connection has been sent.
#[derive(Clone, Copy, Debug, Default)]
struct Delivered {
    /// No keyframe sent yet: inter frames are dropped.
    need_keyframe: bool,
    /// The parameter-set version whose sequence header was sent.
    header_version: Option<u32>,
    /// The size announced in onMetaData.
    announced_size: Option<(u32, u32)>,
    /// The AAC sequence header was sent.
    audio_header: bool,
}

/// Gaps in the video's timeline longer than this (a stalled camera, a source restart) are not
/// filled with silence frame by frame: the silent track jumps with the video.
const SILENCE_MAX_FILL_MS: u64 = 1_000;

/// The audio track: what the connection is told of it, and for a silent track the next frame's
/// place on the video's timeline.
struct AudioTrack {
    info: AudioInfo,
    sequence_header: [u8; AAC_SEQUENCE_HEADER_LEN],
    /// The silent frame, for a silent track.
    silence: Option<&'static [u8]>,
    rate: u32,
    /// The stream time of silent frame 0 (the first video frame's), and the next one to make.
    silence_origin_ms: Option<u64>,
    next_silent: u64,
}

/// Counters for logs and STATUS.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PipelineStats {
    /// Access units not sent because no SPS/PPS/IDR had come yet, or they were unusable.
    pub skipped: u64,
    /// Frames dropped because a connection was waiting for a keyframe.
    pub dropped_waiting_for_keyframe: u64,
}

pub struct Pipeline {
    muxer: AvcMuxer,
    frame_rate: FrameRate,
    live: bool,
    /// Frame times come from the source (a camera's buffer timestamps), whatever the SPS says.
    source_timestamps: bool,
    start_timestamp_ms: u64,
    /// Chosen at the first frame: a fixed rate (numerator, denominator), or None for arrival time.
    rate: Option<(u32, u32)>,
    frame_index: u64,
    /// The stream time of the last frame, relative to the first.
    last_offset_ms: Option<u64>,
    /// When the first frame came, for arrival timestamps and real-time pacing.
    origin_ms: Option<u64>,
    /// Bumped whenever SPS or PPS change, so each connection knows which header it has.
    header_version: u32,
    /// The picture size of the SPS in force, to log a change.
    size: Option<(u32, u32)>,
    metadata: Vec<u8>,
    delivered: Delivered,
    warned_waiting: bool,
    warned_unusable: bool,
    last_error: Option<String>,
    stats: PipelineStats,
    audio: Option<AudioTrack>,
    /// The audio track is captured on a clock of its own: a live input's frames are then
    /// stamped by capture or arrival time, never by a frame rate, so that both tracks are on
    /// the one clock.
    captured_audio: bool,
}

impl Pipeline {
    pub fn new(config: &Config, live: bool) -> Pipeline {
        Pipeline {
            muxer: AvcMuxer::new(),
            frame_rate: config.frame_rate,
            live,
            source_timestamps: false,
            start_timestamp_ms: config.start_timestamp_ms,
            rate: None,
            frame_index: 0,
            last_offset_ms: None,
            origin_ms: None,
            header_version: 0,
            size: None,
            metadata: Vec::with_capacity(256),
            delivered: Delivered {
                need_keyframe: true,
                ..Delivered::default()
            },
            warned_waiting: false,
            warned_unusable: false,
            last_error: None,
            stats: PipelineStats::default(),
            captured_audio: config
                .audio
                .as_ref()
                .is_some_and(|audio| audio.source.is_captured()),
            audio: config.audio.as_ref().and_then(|audio| {
                // The configuration took only rates and channel counts that AAC-LC has.
                let rate = audio.initial_rate();
                let asc = AudioSpecificConfig::lc(rate, audio.channels).ok()?;
                Some(AudioTrack {
                    info: AudioInfo {
                        sample_rate: rate,
                        channels: audio.channels,
                        data_rate_kbps: Some(f64::from(audio.bitrate) / 1000.0),
                    },
                    sequence_header: aac_sequence_header(&asc),
                    silence: match audio.source {
                        AudioSource::Silence => silent_frame(audio.channels),
                        AudioSource::Device(_) | AudioSource::Adts(_) => None,
                    },
                    rate,
                    silence_origin_ms: None,
                    next_silent: 0,
                })
            }),
        }
    }

    /// The next frame of a silent track due at or before `until_ms` (the stream time of the
    /// video frame about to be stored), with its stream time; `None` when none is due. Frame n
    /// is at n × 1024 samples from the first video frame, rounded to the millisecond, so the
    /// track never drifts from the timeline; a gap in the video longer than
    /// [`SILENCE_MAX_FILL_MS`] is jumped over, not filled.
    pub fn next_silent_frame(&mut self, until_ms: u64) -> Option<(u64, &'static [u8])> {
        let track = self.audio.as_mut()?;
        let frame = track.silence?;
        let rate = u64::from(track.rate);
        let samples = u64::from(SAMPLES_PER_FRAME);
        let origin = *track.silence_origin_ms.get_or_insert(until_ms);
        let at = |n: u64| origin + (n * samples * 1000 + rate / 2) / rate;
        let mut due = at(track.next_silent);
        if until_ms.saturating_sub(due) > SILENCE_MAX_FILL_MS {
            // The first frame at or after `until_ms`.
            let elapsed = until_ms.saturating_sub(origin);
            track.next_silent = (elapsed * rate).div_ceil(samples * 1000);
            due = at(track.next_silent);
        }
        if due > until_ms {
            return None;
        }
        track.next_silent += 1;
        Some((due, frame))
    }

    /// The audio track's format changed (a device opened at another rate than the track
    /// announced): each connection gets the new sequence header and onMetaData.
    pub fn set_audio_format(&mut self, asc: &AudioSpecificConfig) {
        let Some(track) = self.audio.as_mut() else {
            return;
        };
        let header = aac_sequence_header(asc);
        if header == track.sequence_header {
            return;
        }
        info!(
            "the audio track is {} Hz, {} channel(s): sending its new sequence header",
            asc.sample_rate(),
            asc.channels()
        );
        track.sequence_header = header;
        track.info.sample_rate = asc.sample_rate();
        track.info.channels = asc.channels();
        track.rate = asc.sample_rate();
        self.delivered.audio_header = false;
        // onMetaData goes again with the next frame.
        self.header_version = self.header_version.wrapping_add(1);
    }

    /// The stream time of an instant on the stream's clock (a captured audio frame's), when
    /// the video is stamped on that clock: `None` before the first video frame, for an instant
    /// before it, or when the video is stamped by a frame rate.
    pub fn stream_time_of(&self, at_ms: u64) -> Option<u64> {
        let origin = self.origin_ms?;
        if self.rate.is_some() || at_ms < origin {
            return None;
        }
        Some(self.start_timestamp_ms.saturating_add(at_ms - origin))
    }

    /// Queues a stored audio frame whose body is `parts` (the tag header inline, the frame in the
    /// store), preceded by the AAC sequence header if this connection has not had it. False
    /// when dropped: the connection has had no keyframe yet.
    pub fn send_stored_audio(
        &mut self,
        session: &mut PublishSession,
        timestamp_ms: u64,
        parts: &[Part],
    ) -> Result<bool> {
        let Some(track) = &self.audio else {
            return Ok(false);
        };
        if self.delivered.need_keyframe {
            return Ok(false);
        }
        let wire_timestamp = timestamp_ms as u32;
        if !self.delivered.audio_header {
            session.send_audio_bytes(wire_timestamp, &track.sequence_header)?;
            self.delivered.audio_header = true;
        }
        session.send_audio(wire_timestamp, parts)?;
        Ok(true)
    }

    /// Timestamps from the `now_ms` given to [`Pipeline::mux`], which is then the source's time of
    /// capture (a camera's buffer timestamp), not a rate: dropped frames leave gaps.
    pub fn use_source_timestamps(&mut self, yes: bool) {
        self.source_timestamps = yes;
    }

    pub fn stats(&self) -> PipelineStats {
        self.stats
    }

    /// Whether any frame has been muxed yet.
    pub fn started(&self) -> bool {
        self.origin_ms.is_some()
    }

    /// Size and frame rate, once known, for STATUS.
    pub fn describe(&self) -> Option<(u32, u32, Option<f64>)> {
        let sps = self.muxer.sps()?;
        Some((
            sps.width,
            sps.height,
            self.rate.map(|(n, d)| f64::from(n) / f64::from(d)),
        ))
    }

    /// Muxes one access unit. None when it is not sent (waiting for SPS/PPS/IDR, no picture, or
    /// unusable: each counted and warned about once).
    pub fn mux(&mut self, au: &AccessUnit<'_>, now_ms: u64) -> Option<Frame> {
        let muxed = self.muxer.push(au);
        self.muxed(muxed, now_ms)
    }

    /// [`mux`](Self::mux) for an access unit given as its NAL units' pieces (a frame in the
    /// frame store's ring).
    pub fn mux_nals<'a, I>(&mut self, nals: I, now_ms: u64) -> Option<Frame>
    where
        I: Iterator<Item = NalPieces<'a>> + Clone,
    {
        let muxed = self.muxer.push_nals(nals);
        self.muxed(muxed, now_ms)
    }

    fn muxed(&mut self, muxed: Result<Muxed, MuxError>, now_ms: u64) -> Option<Frame> {
        let (keyframe, parameters_changed) = match muxed {
            Ok(Muxed::Frame {
                keyframe,
                sequence_header_changed,
            }) => (keyframe, sequence_header_changed),
            Ok(Muxed::Skipped(SkipReason::NoPicture)) => return None,
            Ok(Muxed::Skipped(reason)) => {
                self.stats.skipped += 1;
                if !self.warned_waiting {
                    self.warned_waiting = true;
                    warn!(
                        "skipping frames until SPS, PPS and a keyframe have arrived ({reason:?})"
                    );
                }
                return None;
            }
            Err(e) => {
                self.stats.skipped += 1;
                if self.started() && !self.warned_unusable {
                    self.warned_unusable = true;
                    warn!(
                        "dropping an unusable access unit and waiting for the next keyframe: {e}"
                    );
                }
                self.muxer.restart();
                self.last_error = Some(e.to_string());
                return None;
            }
        };
        self.warned_unusable = false;
        if parameters_changed {
            self.header_version = self.header_version.wrapping_add(1);
            self.note_size();
        }
        let timestamp_ms = self.next_timestamp(now_ms);
        self.muxer.set_frame_duration(self.frame_duration());
        Some(Frame {
            timestamp_ms,
            keyframe,
            parameters_changed,
            composition_ms: self.muxer.composition_time_ms() as i32,
        })
    }

    /// A frame's duration, for composition times: from the frame rate in use, else the SPS's,
    /// else the mean interval of the frames so far (arrival or capture times).
    fn frame_duration(&self) -> FrameDuration {
        let rate = self.rate.or_else(|| self.muxer.sps()?.frame_rate());
        rate.and_then(|(frames, seconds)| FrameDuration::from_rate(frames, seconds))
            .or_else(|| FrameDuration::from_ms(self.last_offset_ms?, self.frame_index - 1))
            .unwrap_or_default()
    }

    /// Logs a change of picture size (each connection then gets the new sequence header and
    /// onMetaData before the next frame).
    fn note_size(&mut self) {
        let Some(sps) = self.muxer.sps() else {
            return;
        };
        let size = (sps.width, sps.height);
        if let Some((w, h)) = self.size.replace(size) {
            if (w, h) != size {
                info!(
                    "the picture size changed from {w}x{h} to {}x{}: sending the new sequence \
                     header and onMetaData",
                    size.0, size.1
                );
            }
        }
    }

    /// A new connection: it needs metadata, the sequence header and a keyframe first.
    pub fn new_connection(&mut self) {
        self.delivered = Delivered {
            need_keyframe: true,
            ..Delivered::default()
        };
    }

    /// The source restarted: its first frame muxed will be a keyframe. Frames of the old source
    /// that wait in the queue are still sent: they decode, and they come before it. Parameter
    /// sets are kept: the new source's are compared with them, and only a real change sends a
    /// new sequence header (and clears the queue, whose frames belong to the old one).
    pub fn source_restarted(&mut self) {
        self.muxer.wait_for_idr();
    }

    /// Frames were lost before the next one (a camera skipped some): inter frames could refer
    /// to a lost picture, so nothing is muxed until the next keyframe. Parameter sets are kept,
    /// and so are the frames before the loss that wait to be sent.
    pub fn frames_lost(&mut self) {
        self.muxer.wait_for_idr();
    }

    /// Whether a frame would be sent or dropped (a connection waiting for a keyframe).
    pub fn wants(&self, keyframe: bool) -> bool {
        keyframe || !self.delivered.need_keyframe
    }

    /// Queues the frame just muxed, from its access unit's buffer, preceded by what the connection
    /// still lacks. Returns false when the frame was dropped because the connection waits for a
    /// keyframe.
    pub fn send_muxed(&mut self, session: &mut PublishSession, frame: Frame) -> Result<bool> {
        self.deliver(session, frame, None)
    }

    /// Queues a stored frame whose body is `parts` (from the frame queue), likewise.
    pub fn send_stored(
        &mut self,
        session: &mut PublishSession,
        frame: Frame,
        parts: &[Part],
    ) -> Result<bool> {
        self.deliver(session, frame, Some(parts))
    }

    fn deliver(
        &mut self,
        session: &mut PublishSession,
        frame: Frame,
        parts: Option<&[Part]>,
    ) -> Result<bool> {
        if !self.wants(frame.keyframe) {
            self.stats.dropped_waiting_for_keyframe += 1;
            return Ok(false);
        }
        self.delivered.need_keyframe = false;
        let wire_timestamp = frame.timestamp_ms as u32;
        if self.delivered.header_version != Some(self.header_version) {
            self.announce(session, wire_timestamp)?;
            session.send_video_bytes(wire_timestamp, self.muxer.sequence_header())?;
            self.delivered.header_version = Some(self.header_version);
        }
        if let Some(track) = self.audio.as_ref().filter(|_| !self.delivered.audio_header) {
            // Before any media of the connection's audio track, as FFmpeg sends it.
            session.send_audio_bytes(wire_timestamp, &track.sequence_header)?;
            self.delivered.audio_header = true;
        }
        let parts = parts.unwrap_or(self.muxer.frame_parts());
        session.send_video(wire_timestamp, parts)?;
        Ok(true)
    }

    /// Sends onMetaData when this connection has not had it for the current size.
    fn announce(&mut self, session: &mut PublishSession, timestamp: u32) -> Result<()> {
        let Some(sps) = self.muxer.sps() else {
            return Ok(());
        };
        let size = (sps.width, sps.height);
        if self.delivered.announced_size == Some(size) {
            return Ok(());
        }
        self.delivered.announced_size = Some(size);
        let info = VideoInfo {
            width: size.0,
            height: size.1,
            frame_rate: self.rate.map(|(n, d)| f64::from(n) / f64::from(d)),
            data_rate_kbps: None,
        };
        self.metadata.clear();
        write_metadata(
            &info,
            self.audio.as_ref().map(|track| &track.info),
            concat!("v4l2rtmp/", env!("CARGO_PKG_VERSION")),
            &mut self.metadata,
        );
        session.send_data(timestamp, &self.metadata)
    }

    /// When the next frame of a file is due, for `--realtime` (None before the first frame).
    pub fn next_due_ms(&self) -> Option<u64> {
        let origin = self.origin_ms?;
        Some(origin + self.offset_ms(self.frame_index)?)
    }

    fn offset_ms(&self, frame_index: u64) -> Option<u64> {
        let (numerator, denominator) = self.rate?;
        let numerator = u128::from(numerator);
        let scaled = u128::from(frame_index) * 1000 * u128::from(denominator);
        Some(((scaled + numerator / 2) / numerator) as u64)
    }

    /// The stream time of the next frame, in milliseconds.
    fn next_timestamp(&mut self, now_ms: u64) -> u64 {
        if self.origin_ms.is_none() {
            self.origin_ms = Some(now_ms);
            self.rate = match self.frame_rate {
                _ if self.source_timestamps => None,
                _ if self.live && self.captured_audio => None,
                FrameRate::Fixed {
                    numerator,
                    denominator,
                } => Some((numerator, denominator)),
                FrameRate::Auto => match self.muxer.sps().and_then(|sps| sps.frame_rate()) {
                    Some(rate) => Some(rate),
                    None if self.live => None,
                    None => {
                        warn!("the SPS has no frame rate and none was given: assuming {FILE_DEFAULT_FPS} fps (use --fps)");
                        Some((FILE_DEFAULT_FPS, 1))
                    }
                },
            };
            if let Some(sps) = self.muxer.sps() {
                info!(
                    "H.264 {}x{} profile {} level {}.{}, {}",
                    sps.width,
                    sps.height,
                    sps.profile_idc,
                    sps.level_idc / 10,
                    sps.level_idc % 10,
                    match self.rate {
                        Some((n, d)) => format!("{:.3} fps", f64::from(n) / f64::from(d)),
                        None if self.source_timestamps => "timestamps from the camera".to_string(),
                        None => "timestamps from arrival time".to_string(),
                    }
                );
            }
        }
        let origin = self.origin_ms.unwrap_or(now_ms);
        let offset = match self.offset_ms(self.frame_index) {
            Some(offset) => offset,
            // Times of arrival or capture: two frames taken in the same millisecond (a burst
            // after a stall) still get increasing timestamps.
            None => match self.last_offset_ms {
                Some(last) => now_ms.saturating_sub(origin).max(last + 1),
                None => now_ms.saturating_sub(origin),
            },
        };
        self.last_offset_ms = Some(offset);
        self.frame_index += 1;
        self.start_timestamp_ms.saturating_add(offset)
    }

    /// The error for an input that ended, or went on too long, without a usable frame.
    pub fn nothing_sent_error(&self, name: &str, bytes_read: u64, skipped_bytes: u64) -> Error {
        let detail = match &self.last_error {
            Some(e) => format!(": {e}"),
            None if self.muxer.sps().is_none() && bytes_read > 0 => {
                ": no SPS was found (is the input an Annex-B H.264 stream?)".to_string()
            }
            None if self.muxer.sps().is_none() => ": no SPS was found".to_string(),
            None if self.muxer.sequence_header().is_empty() => ": no PPS was found".to_string(),
            None => ": no keyframe (IDR) was found".to_string(),
        };
        Error::new(
            Fault::Input,
            format!(
                "{name} held no H.264 that can be streamed ({bytes_read} bytes read, {skipped_bytes} skipped before \
                 the first start code){detail}"
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::annexb::split_nals;
    use crate::url::RtmpUrl;

    const SPS: &[u8] = &[
        0x67, 0x42, 0xc0, 0x0a, 0xd9, 0x04, 0x26, 0xc0, 0x44, 0x00, 0x00, 0x03, 0x00, 0x04, 0x00,
        0x00, 0x03, 0x00, 0xc8, 0x3c, 0x48, 0x99, 0x20,
    ];
    const PPS: &[u8] = &[0x68, 0xcb, 0x83, 0xcb, 0x20];

    fn au_bytes(nals: &[&[u8]]) -> Vec<u8> {
        nals.iter()
            .flat_map(|nal| [&[0, 0, 0, 1][..], nal].concat())
            .collect()
    }

    fn mux(pipeline: &mut Pipeline, bytes: &[u8], now_ms: u64) -> Option<Frame> {
        let mut nals = Vec::new();
        split_nals(bytes, &mut nals);
        pipeline.mux(
            &AccessUnit {
                data: bytes,
                nals: &nals,
            },
            now_ms,
        )
    }

    fn config(fps: Option<&str>) -> Config {
        let mut config = Config::new("-", RtmpUrl::parse("rtmp://h/a/k").unwrap());
        if let Some(fps) = fps {
            config.frame_rate = crate::config::parse_frame_rate(fps).unwrap();
        }
        config
    }

    fn silent_config(rate: u32) -> Config {
        let mut config = config(None);
        config.audio = Some(crate::config::AudioOptions {
            source: AudioSource::Silence,
            rate: Some(rate),
            channels: 1,
            bitrate: 64_000,
        });
        config
    }

    #[test]
    fn a_silent_track_follows_the_video_timeline_without_drift() {
        let mut pipeline = Pipeline::new(&silent_config(44_100), true);
        // The first video frame at 1000 ms: frame 0 there, then every 1024/44100 s, rounded
        // from the exact sample count, so a day of frames ends where it should.
        assert_eq!(
            pipeline.next_silent_frame(1000),
            Some((1000, &[1, 0x18, 0x20, 7][..]))
        );
        assert_eq!(pipeline.next_silent_frame(1000), None);
        let mut last = 1000;
        let mut count = 1u64;
        let mut last_video = 0;
        for video_ms in (1033..=1000 + 86_400_000).step_by(33) {
            last_video = video_ms;
            while let Some((at, _)) = pipeline.next_silent_frame(video_ms) {
                assert!(at <= video_ms && at > last, "{at} after {last}");
                assert!((23..=24).contains(&(at - last)), "step {}", at - last);
                assert_eq!(at, 1000 + (count * 1024 * 1000 + 22_050) / 44_100);
                last = at;
                count += 1;
            }
        }
        // A day later the track is still within a frame of the video.
        assert!(last_video - last < 24, "{last_video} {last}");
    }

    #[test]
    fn a_silent_track_jumps_a_long_gap_in_the_video() {
        let mut pipeline = Pipeline::new(&silent_config(48_000), true);
        assert_eq!(pipeline.next_silent_frame(0).map(|f| f.0), Some(0));
        // A camera stalled for 5 s: no 234 frames at once, the track goes on from the video.
        let after: Vec<u64> = std::iter::from_fn(|| pipeline.next_silent_frame(5_000))
            .map(|f| f.0)
            .collect();
        assert_eq!(
            after,
            Vec::<u64>::new(),
            "the next frame is the first after 5000 ms"
        );
        // From there the track is filled frame by frame: 5013 ms (frame 235) on.
        let filled: Vec<u64> = std::iter::from_fn(|| pipeline.next_silent_frame(5_200))
            .map(|f| f.0)
            .collect();
        assert_eq!(filled.len(), 9, "{filled:?}");
        assert_eq!(filled[0], 5_013);
    }

    #[test]
    fn constant_rate_timestamps_do_not_accumulate_rounding() {
        let mut pipeline = Pipeline::new(&config(Some("30000/1001")), true);
        let idr = au_bytes(&[SPS, PPS, &[0x65, 0x88]]);
        let p = au_bytes(&[&[0x41, 0x9a]]);
        let mut stamps = vec![mux(&mut pipeline, &idr, 5).unwrap().timestamp_ms];
        for _ in 1..30_000 {
            stamps.push(mux(&mut pipeline, &p, 6).unwrap().timestamp_ms);
        }
        assert_eq!(stamps[..4], [0, 33, 67, 100]);
        // Frame 29999 of 29.97 fps is at 1000.9667 s.
        assert_eq!(stamps[29_999], 1_000_967);
    }

    #[test]
    fn sps_timing_is_the_default_and_arrival_time_for_live_input_without_it() {
        // This SPS says 25 fps.
        let mut pipeline = Pipeline::new(&config(None), false);
        let idr = au_bytes(&[SPS, PPS, &[0x65, 0x88]]);
        assert_eq!(mux(&mut pipeline, &idr, 1000).unwrap().timestamp_ms, 0);
        assert_eq!(
            mux(&mut pipeline, &au_bytes(&[&[0x41, 0x9a]]), 1000)
                .unwrap()
                .timestamp_ms,
            40
        );
        assert_eq!(pipeline.next_due_ms(), Some(1080));
    }

    #[test]
    fn camera_timestamps_override_the_sps_rate_and_always_increase() {
        // The SPS says 25 fps, and --fps 30 was given: a camera's capture times win anyway.
        let mut pipeline = Pipeline::new(&config(Some("30")), true);
        pipeline.use_source_timestamps(true);
        let idr = au_bytes(&[SPS, PPS, &[0x65, 0x88]]);
        let p = au_bytes(&[&[0x41, 0x9a]]);
        let stamps: Vec<u64> = [(&idr, 5000), (&p, 5100), (&p, 5100), (&p, 5099), (&p, 5300)]
            .into_iter()
            .map(|(bytes, at)| mux(&mut pipeline, bytes, at).unwrap().timestamp_ms)
            .collect();
        // Frames captured in the same millisecond (or out of order) still move forward.
        assert_eq!(stamps, [0, 100, 101, 102, 300]);
        assert_eq!(pipeline.next_due_ms(), None);
    }

    #[test]
    fn after_lost_frames_only_a_keyframe_goes_out() {
        let mut pipeline = Pipeline::new(&config(Some("30")), true);
        let idr = au_bytes(&[SPS, PPS, &[0x65, 0x88]]);
        let p = au_bytes(&[&[0x41, 0x9a]]);
        assert!(mux(&mut pipeline, &idr, 0).is_some());
        assert!(mux(&mut pipeline, &p, 33).is_some());
        // A connection that has had its keyframe.
        pipeline.delivered.need_keyframe = false;
        pipeline.frames_lost();
        assert!(
            mux(&mut pipeline, &p, 100).is_none(),
            "an inter frame after a gap is dropped"
        );
        // Frames muxed before the gap that wait to be sent still go out.
        assert!(pipeline.wants(false));
        let key = mux(&mut pipeline, &idr, 133).expect("the next keyframe goes out");
        assert!(key.keyframe);
        assert!(mux(&mut pipeline, &p, 166).is_some());
    }

    #[test]
    fn start_timestamp_offsets_everything() {
        let mut config = config(Some("30"));
        config.start_timestamp_ms = 16_777_000;
        let mut pipeline = Pipeline::new(&config, false);
        let idr = au_bytes(&[SPS, PPS, &[0x65, 0x88]]);
        assert_eq!(
            mux(&mut pipeline, &idr, 0).unwrap().timestamp_ms,
            16_777_000
        );
        assert_eq!(
            mux(&mut pipeline, &idr, 0).unwrap().timestamp_ms,
            16_777_033
        );
    }

    #[test]
    fn a_new_connection_waits_for_a_keyframe() {
        let mut pipeline = Pipeline::new(&config(Some("30")), true);
        assert!(pipeline.wants(true));
        assert!(!pipeline.wants(false));
        pipeline.delivered.need_keyframe = false;
        assert!(pipeline.wants(false));
        pipeline.new_connection();
        assert!(!pipeline.wants(false));
    }
}
