//! FLV video tags for H.264 (FLV 10.1 §E.4.3, "AVCVIDEOPACKET"), audio tags for AAC (§E.4.2,
//! "AACAUDIODATA") and onMetaData, built for the zero-copy chunk writer.
//!
//! [`AvcMuxer`] turns access units into FLV video tag bodies described as [`Part`]s: the 5-byte
//! tag header and each NAL unit's 4-byte length prefix are inline parts (written into header
//! storage by the chunk writer), and the NAL units themselves are external ranges of the access
//! unit's own buffer, never copied. It caches SPS and PPS (both checked: a PPS must
//! belong to the SPS in force), builds the AVC sequence header (avcC) when they first appear or
//! change, and holds frames back until it has SPS, PPS and an IDR.
//!
//! Each frame's tag header carries its composition time (CTS = PTS - DTS, a signed 24-bit count
//! of milliseconds, FLV 10.1 §E.4.3.1). The muxer reads the first slice header of each access
//! unit, computes its picture order count and places the frame in display order
//! ([`crate::media::poc`]): CTS is its composition offset in frames times the frame duration the
//! caller gives ([`AvcMuxer::set_frame_duration`]). A stream that does not reorder frames (every
//! hardware encoder: pic_order_cnt_type 2, or counts that only grow) gets CTS 0, as it always did.
//!
//! An AAC audio tag is a 2-byte header, [`aac_frame_header`] or [`aac_sequence_header`] (which
//! carries the AudioSpecificConfig, [`crate::media::aac`]), then the raw frame, referenced where
//! it lies ([`aac_frame_parts`]). They sit here, beside the video tags, because they are FLV's
//! syntax, as onMetaData's audio fields are; what the AAC bytes mean is `media::aac`'s.
//!
//! Invariants: a frame is emitted only after a sequence header for the SPS/PPS in force;
//! the first emitted frame is an IDR; AUD NAL units are dropped; composition time is never
//! negative, and 0 for a stream without reordering; a slice header that cannot be read leaves its
//! frame in decoding order (CTS = the reorder delay), never fails the frame; after warm-up,
//! [`AvcMuxer::push`] allocates nothing unless the SPS or PPS changed.

use std::fmt;

use crate::media::aac::AudioSpecificConfig;
use crate::media::annexb::AccessUnit;
use crate::media::avc::{write_avc_decoder_configuration_record, AvcError};
use crate::media::poc::{DisplayOrder, PocState};
use crate::media::slice::{SliceError, SliceHeader};
use crate::media::sps::{Pps, PpsError, Sps, SpsError};
use crate::rtmp::amf0;
use crate::rtmp::chunk::Part;

/// FLV codec id for AVC (H.264).
pub const CODEC_ID_AVC: u8 = 7;
/// FLV frame types, in the high nibble of the first byte of a video tag.
const FRAME_TYPE_KEY: u8 = 1;
const FRAME_TYPE_INTER: u8 = 2;
/// AVCPacketType values.
const AVC_SEQUENCE_HEADER: u8 = 0;
const AVC_NALU: u8 = 1;

const NAL_SLICE: u8 = 1;
const NAL_IDR: u8 = 5;
const NAL_SPS: u8 = 7;
const NAL_PPS: u8 = 8;
const NAL_AUD: u8 = 9;

/// What [`AvcMuxer::push`] made of an access unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Muxed {
    /// A frame is ready in [`AvcMuxer::frame_parts`]. When `sequence_header_changed`, send
    /// [`AvcMuxer::sequence_header`] (and metadata, if the size changed) before it.
    Frame {
        keyframe: bool,
        sequence_header_changed: bool,
    },
    /// The access unit was not sent: the reason says why.
    Skipped(SkipReason),
}

/// Why an access unit was not sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// No SPS and PPS seen yet.
    WaitingForParameterSets,
    /// Parameter sets are known but no IDR has come yet: a decoder could not start here.
    WaitingForKeyframe,
    /// The access unit has no picture (only parameter sets or SEI); they were cached if any.
    NoPicture,
}

/// One NAL unit as the muxer takes it: its bytes in one piece, or two when it wraps around the
/// end of the buffer it lies in, each with its offset in that buffer (for the external parts).
#[derive(Clone, Copy, Debug)]
pub struct NalPieces<'a> {
    pub nal_type: u8,
    pub first: &'a [u8],
    pub first_at: usize,
    /// Empty unless the unit wraps.
    pub second: &'a [u8],
    pub second_at: usize,
}

impl NalPieces<'_> {
    pub fn len(&self) -> usize {
        self.first.len() + self.second.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether its bytes are `bytes`, compared piece by piece.
    fn equals(&self, bytes: &[u8]) -> bool {
        bytes.len() == self.len()
            && bytes[..self.first.len()] == *self.first
            && bytes[self.first.len()..] == *self.second
    }

    /// Its bytes, contiguous, in `out` (cleared first).
    fn copy_to(&self, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(self.first);
        out.extend_from_slice(self.second);
    }
}

/// The 5-byte header of an FLV AVC video tag carrying a frame (FLV 10.1 §E.4.3.1): frame type
/// and codec, AVCPacketType 1 (NALUs), and the composition time offset in ms (SI24).
pub fn avc_frame_header(keyframe: bool, composition_ms: i32) -> [u8; 5] {
    let frame_type = if keyframe {
        FRAME_TYPE_KEY
    } else {
        FRAME_TYPE_INTER
    };
    let cts = composition_ms.clamp(-0x80_0000, 0x7f_ffff).to_be_bytes();
    [
        (frame_type << 4) | CODEC_ID_AVC,
        AVC_NALU,
        cts[1],
        cts[2],
        cts[3],
    ]
}

/// FLV SoundFormat of AAC (FLV 10.1 §E.4.2.1), and onMetaData's audiocodecid.
pub const SOUND_FORMAT_AAC: u8 = 10;
/// The first byte of every AAC audio tag: SoundFormat 10, SoundRate 3 (44 kHz), SoundSize 1
/// (16-bit), SoundType 1 (stereo), whatever the stream's rate and channels. FLV 10.1 says so
/// for AAC, and FFmpeg (`flvenc.c`, `get_audio_flags`: "specs force these parameters") and OBS
/// (`flv-mux.c`) write it for mono too; decoders take the rate and channels from the
/// AudioSpecificConfig. Writing SoundType 0 for mono would follow no reference muxer.
const AAC_SOUND_FLAGS: u8 = (SOUND_FORMAT_AAC << 4) | (3 << 2) | (1 << 1) | 1;
/// AACPacketType values.
const AAC_SEQUENCE_HEADER: u8 = 0;
const AAC_RAW: u8 = 1;

/// The bytes of an AAC sequence header tag body: the 2-byte tag header and the 2-byte
/// AudioSpecificConfig.
pub const AAC_SEQUENCE_HEADER_LEN: usize = 4;

/// The 2-byte header of an FLV AAC audio tag carrying a raw frame (AACPacketType 1).
pub fn aac_frame_header() -> [u8; 2] {
    [AAC_SOUND_FLAGS, AAC_RAW]
}

/// The whole body of the AAC sequence header tag (AACPacketType 0): sent before the first
/// frame on every connection, and again when the configuration changes.
pub fn aac_sequence_header(config: &AudioSpecificConfig) -> [u8; AAC_SEQUENCE_HEADER_LEN] {
    let asc = config.to_bytes();
    [AAC_SOUND_FLAGS, AAC_SEQUENCE_HEADER, asc[0], asc[1]]
}

/// The body of an AAC frame tag as parts for the chunk writer: the tag header inline, then the
/// raw frame `payload_len` bytes at `payload_start` of the caller's buffer, never copied.
pub fn aac_frame_parts(payload_start: usize, payload_len: usize) -> [Part; 2] {
    [
        Part::inline(&aac_frame_header()),
        Part::External {
            start: payload_start,
            len: payload_len,
        },
    ]
}

/// Input that cannot be muxed: the source's fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MuxError {
    Sps(SpsError),
    Pps(PpsError),
    /// The PPS belongs to another SPS than the one in force: no sequence header can be built.
    PpsForAnotherSps {
        pps_sps_id: u32,
        sps_id: u32,
    },
    Avc(AvcError),
    /// A NAL unit or frame too large for FLV's 24-bit / 32-bit fields.
    TooLarge(usize),
}

impl fmt::Display for MuxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MuxError::Sps(e) => write!(f, "invalid SPS: {e}"),
            MuxError::Pps(e) => write!(f, "invalid PPS: {e}"),
            MuxError::PpsForAnotherSps { pps_sps_id, sps_id } => write!(
                f,
                "the PPS refers to SPS {pps_sps_id}, but the SPS in force has id {sps_id}"
            ),
            MuxError::Avc(e) => write!(f, "cannot build the AVC configuration record: {e}"),
            MuxError::TooLarge(n) => write!(f, "a NAL unit of {n} bytes is too large for FLV"),
        }
    }
}

impl std::error::Error for MuxError {}

/// Video properties for onMetaData.
#[derive(Clone, Debug, PartialEq)]
pub struct VideoInfo {
    pub width: u32,
    pub height: u32,
    /// Frames per second, when known.
    pub frame_rate: Option<f64>,
    /// Target bitrate in kbit/s, when known (an encoder setting).
    pub data_rate_kbps: Option<f64>,
}

/// Audio properties for onMetaData, when an audio track is sent.
#[derive(Clone, Debug, PartialEq)]
pub struct AudioInfo {
    pub sample_rate: u32,
    pub channels: u8,
    /// Target bitrate in kbit/s (1000 bit/s), when known (an encoder setting).
    pub data_rate_kbps: Option<f64>,
}

/// Bytes of a slice that wraps around the ring's end made contiguous to read its header: enough
/// for any header but one with long reference list changes and weight tables, which then reads
/// as truncated (its frame goes out in decoding order).
const SLICE_PREFIX: usize = 512;

/// Largest composition time FLV's signed 24-bit field holds, in milliseconds.
const MAX_COMPOSITION_TIME_MS: u64 = 0x7f_ffff;

/// The duration of one frame, `numerator_ms / denominator` milliseconds, which turns composition
/// offsets counted in frames into milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameDuration {
    numerator_ms: u64,
    denominator: u64,
}

impl FrameDuration {
    /// At a frame rate of `frames` per `seconds` (`30000, 1001` for 29.97 fps); None with a 0.
    pub fn from_rate(frames: u32, seconds: u32) -> Option<FrameDuration> {
        (frames > 0 && seconds > 0).then(|| FrameDuration {
            numerator_ms: 1000 * u64::from(seconds),
            denominator: u64::from(frames),
        })
    }

    /// `total_ms` spread over `frames` frames (a measured mean); None with a 0.
    pub fn from_ms(total_ms: u64, frames: u64) -> Option<FrameDuration> {
        (total_ms > 0 && frames > 0).then_some(FrameDuration {
            numerator_ms: total_ms,
            denominator: frames,
        })
    }

    /// `frames` frames, in milliseconds rounded to the nearest, at most what FLV can carry.
    pub fn times(self, frames: u32) -> u32 {
        let scaled = u128::from(frames) * u128::from(self.numerator_ms);
        let denominator = u128::from(self.denominator.max(1));
        let ms = (scaled + denominator / 2) / denominator;
        ms.min(u128::from(MAX_COMPOSITION_TIME_MS)) as u32
    }
}

impl Default for FrameDuration {
    /// 40 ms: 25 fps, what FFmpeg assumes for raw H.264 without timing.
    fn default() -> Self {
        FrameDuration {
            numerator_ms: 40,
            denominator: 1,
        }
    }
}

/// Turns access units into FLV AVC video tag bodies, by reference.
pub struct AvcMuxer {
    /// The SPS and PPS in force (whole NAL units), compared byte for byte with new ones so a
    /// repeated parameter set (REPEAT_SEQ_HEADER) costs a comparison, not a parse.
    sps: Vec<u8>,
    pps: Vec<u8>,
    sps_info: Option<Sps>,
    pps_info: Option<Pps>,
    /// The tag body of the AVC sequence header for `sps`/`pps`; empty until both are known.
    sequence_header: Vec<u8>,
    /// The sequence header changed since the last emitted frame and must be sent first.
    sequence_header_pending: bool,
    /// An IDR has been emitted, so inter frames may follow.
    started: bool,
    /// The parts of the last frame: reused, never shrunk.
    parts: Vec<Part>,
    /// A new parameter set, made contiguous to be parsed (it may wrap around the ring's end).
    scratch: Vec<u8>,
    /// The start of a slice that wraps around the ring's end, made contiguous for its header.
    slice_prefix: [u8; SLICE_PREFIX],
    /// Picture order count state of the stream (8.2.1); starts again with each new SPS.
    poc: PocState,
    /// Where frames go in display order, and the reorder delay learnt so far.
    display_order: DisplayOrder,
    /// For composition times: set by the caller, who knows the frame rate in use.
    frame_duration: FrameDuration,
    /// The last frame's composition offset, in frames.
    composition_frames: u32,
    /// Why the last frame's slice header could not be read, if it could not.
    slice_error: Option<SliceError>,
}

impl Default for AvcMuxer {
    fn default() -> Self {
        Self::new()
    }
}

impl AvcMuxer {
    pub fn new() -> Self {
        AvcMuxer {
            sps: Vec::with_capacity(256),
            pps: Vec::with_capacity(256),
            sps_info: None,
            pps_info: None,
            sequence_header: Vec::with_capacity(512),
            sequence_header_pending: false,
            started: false,
            parts: Vec::with_capacity(64),
            scratch: Vec::with_capacity(256),
            slice_prefix: [0; SLICE_PREFIX],
            poc: PocState::new(),
            display_order: DisplayOrder::new(None, true),
            frame_duration: FrameDuration::default(),
            composition_frames: 0,
            slice_error: None,
        }
    }

    /// Forgets that frames were sent (a new connection): the next frame must be an IDR and is
    /// preceded by the sequence header. Cached parameter sets are kept.
    pub fn restart(&mut self) {
        self.started = false;
        self.sequence_header_pending = !self.sequence_header.is_empty();
    }

    /// Frames were lost before the next one: it must be an IDR (later frames could refer to a
    /// lost picture). Parameter sets and the sequence header are kept.
    pub fn wait_for_idr(&mut self) {
        self.started = false;
    }

    /// Takes one access unit. On `Muxed::Frame`, [`frame_parts`](Self::frame_parts) describes the
    /// tag body, with external ranges relative to `au.data`.
    pub fn push(&mut self, au: &AccessUnit<'_>) -> Result<Muxed, MuxError> {
        let data = au.data;
        self.push_nals(au.nals.iter().map(move |nal| NalPieces {
            nal_type: nal.nal_type,
            first: slice(data, nal.start, nal.len),
            first_at: nal.start,
            second: &[],
            second_at: 0,
        }))
    }

    /// Takes one access unit given as its NAL units, each in one or two pieces of an external
    /// buffer (the frame store's ring, where a NAL unit may wrap around its end). On
    /// `Muxed::Frame`, [`frame_parts`](Self::frame_parts) describes the tag body, with external
    /// ranges at the pieces' offsets.
    pub fn push_nals<'a, I>(&mut self, nals: I) -> Result<Muxed, MuxError>
    where
        I: Iterator<Item = NalPieces<'a>> + Clone,
    {
        let mut sps = None;
        let mut pps = None;
        let mut has_picture = false;
        let mut is_idr = false;
        let mut first_slice = None;
        for nal in nals.clone() {
            if matches!(nal.nal_type, NAL_SLICE | NAL_IDR) && first_slice.is_none() {
                first_slice = Some(nal);
            }
            match nal.nal_type {
                NAL_SPS => sps = Some(nal),
                NAL_PPS => pps = Some(nal),
                NAL_IDR => {
                    is_idr = true;
                    has_picture = true;
                }
                1..=4 => has_picture = true,
                _ => {}
            }
        }
        if let Some(nal) = sps {
            if !nal.equals(&self.sps) {
                nal.copy_to(&mut self.scratch);
                let parsed = Sps::parse(&self.scratch).map_err(MuxError::Sps)?;
                std::mem::swap(&mut self.sps, &mut self.scratch);
                // A new sequence: its pictures are counted, and its reordering learnt, afresh.
                self.poc = PocState::new();
                self.display_order = DisplayOrder::for_sps(&parsed);
                self.sps_info = Some(parsed);
                self.sequence_header.clear();
            }
        }
        if let Some(nal) = pps {
            if !nal.equals(&self.pps) {
                nal.copy_to(&mut self.scratch);
                let parsed = Pps::parse(&self.scratch).map_err(MuxError::Pps)?;
                std::mem::swap(&mut self.pps, &mut self.scratch);
                self.pps_info = Some(parsed);
                self.sequence_header.clear();
            }
        }
        if self.sequence_header.is_empty() {
            if let (Some(info), Some(pps)) = (&self.sps_info, &self.pps_info) {
                // A PPS may come before its SPS (it is kept), but a header is built only from a
                // pair that belongs together.
                if pps.seq_parameter_set_id != info.seq_parameter_set_id {
                    return Err(MuxError::PpsForAnotherSps {
                        pps_sps_id: pps.seq_parameter_set_id,
                        sps_id: info.seq_parameter_set_id,
                    });
                }
                self.sequence_header.extend_from_slice(&[
                    (FRAME_TYPE_KEY << 4) | CODEC_ID_AVC,
                    AVC_SEQUENCE_HEADER,
                    0,
                    0,
                    0,
                ]);
                write_avc_decoder_configuration_record(
                    &self.sps,
                    info,
                    &self.pps,
                    &mut self.sequence_header,
                )
                .map_err(|e| {
                    self.sequence_header.clear();
                    MuxError::Avc(e)
                })?;
                self.sequence_header_pending = true;
            }
        }
        if !has_picture {
            return Ok(Muxed::Skipped(SkipReason::NoPicture));
        }
        if self.sequence_header.is_empty() {
            return Ok(Muxed::Skipped(SkipReason::WaitingForParameterSets));
        }
        if !self.started && !is_idr {
            return Ok(Muxed::Skipped(SkipReason::WaitingForKeyframe));
        }
        self.started = true;

        self.parts.clear();
        self.parts.push(Part::inline(&avc_frame_header(is_idr, 0)));
        for nal in nals {
            let len = nal.len();
            if nal.nal_type == NAL_AUD || len == 0 {
                continue;
            }
            let len32 = u32::try_from(len).map_err(|_| MuxError::TooLarge(len))?;
            self.parts.push(Part::inline(&len32.to_be_bytes()));
            for (bytes, at) in [(nal.first, nal.first_at), (nal.second, nal.second_at)] {
                if !bytes.is_empty() {
                    self.parts.push(Part::External {
                        start: at,
                        len: bytes.len(),
                    });
                }
            }
        }
        self.composition_frames = self.place(first_slice, is_idr);
        self.write_composition_time();
        let changed = std::mem::take(&mut self.sequence_header_pending);
        Ok(Muxed::Frame {
            keyframe: is_idr,
            sequence_header_changed: changed,
        })
    }

    /// The composition offset, in frames, of the frame whose first slice is `first_slice`: from
    /// its header's picture order count, or its decoding position when that cannot be read.
    fn place(&mut self, first_slice: Option<NalPieces<'_>>, is_idr: bool) -> u32 {
        let picture = match (&self.sps_info, &self.pps_info, first_slice) {
            (Some(sps), Some(pps), Some(nal)) => {
                let header = if nal.second.is_empty() {
                    nal.first
                } else {
                    // It wraps around the ring's end: its start, made contiguous, holds the
                    // header (one longer than that reads as truncated).
                    let len = nal.len().min(SLICE_PREFIX);
                    let first = nal.first.len().min(len);
                    self.slice_prefix[..first].copy_from_slice(&nal.first[..first]);
                    self.slice_prefix[first..len].copy_from_slice(&nal.second[..len - first]);
                    &self.slice_prefix[..len]
                };
                SliceHeader::parse(header, sps, pps).map(|header| self.poc.picture(sps, &header))
            }
            (Some(_), Some(_), None) => Err(SliceError::NotASlice),
            _ => Err(SliceError::PpsIncomplete),
        };
        match picture {
            Ok(picture) => {
                self.slice_error = None;
                self.display_order.next(picture)
            }
            Err(error) => {
                self.slice_error = Some(error);
                self.display_order.unknown(is_idr)
            }
        }
    }

    /// Writes the last frame's composition time into its tag header (SI24, big-endian).
    fn write_composition_time(&mut self) {
        let ms = self.frame_duration.times(self.composition_frames);
        if let Some(Part::Inline { bytes, .. }) = self.parts.first_mut() {
            bytes[2..5].copy_from_slice(&ms.to_be_bytes()[1..]);
        }
    }

    /// The duration of a frame, for composition times: it applies to the frame just pushed (its
    /// tag header is rewritten) and to every later one. Until it is set, 40 ms (25 fps).
    pub fn set_frame_duration(&mut self, duration: FrameDuration) {
        self.frame_duration = duration;
        self.write_composition_time();
    }

    /// The last frame's composition time in milliseconds, as its tag header carries it.
    pub fn composition_time_ms(&self) -> u32 {
        self.frame_duration.times(self.composition_frames)
    }

    /// The reorder delay learnt so far, in frames: the composition offset of a frame shown in
    /// its decoding position.
    pub fn reorder_delay(&self) -> u32 {
        self.display_order.delay()
    }

    /// Why the last frame's slice header could not be read (its frame was then placed in
    /// decoding order), or None.
    pub fn slice_error(&self) -> Option<&SliceError> {
        self.slice_error.as_ref()
    }

    /// The longest video tag body [`push`](Self::push) makes from an access unit of at most
    /// `max_access_unit` bytes (`AccessUnit::data`): the 5-byte tag header and a 4-byte length
    /// before each NAL unit. With `n` NAL units of at least 1 byte, separated by start codes of
    /// at least 3 bytes, the payload is at most `max_access_unit - 3 (n - 1)` bytes and `n` at
    /// most `(max_access_unit + 3) / 4`, so the body is at most
    /// `5 + max_access_unit + 3 + n` (reached by an access unit of 1-byte NAL units).
    pub fn max_body_len(max_access_unit: usize) -> usize {
        let nal_units = max_access_unit.saturating_add(3) / 4;
        max_access_unit.saturating_add(8).saturating_add(nal_units)
    }

    /// The body of the last frame's video tag.
    pub fn frame_parts(&self) -> &[Part] {
        &self.parts
    }

    /// The body of the AVC sequence header tag; empty before SPS and PPS are known.
    pub fn sequence_header(&self) -> &[u8] {
        &self.sequence_header
    }

    /// The SPS in force, parsed.
    pub fn sps(&self) -> Option<&Sps> {
        self.sps_info.as_ref()
    }
}

fn slice(data: &[u8], start: usize, len: usize) -> &[u8] {
    data.get(start..start.saturating_add(len)).unwrap_or(&[])
}

/// Writes the body of an `@setDataFrame("onMetaData", {...})` data message, the form FFmpeg and
/// OBS publish and every server understands. With `audio`, the audio fields follow the video
/// ones, named, typed and ordered as FFmpeg's `flvenc.c` writes them: audiodatarate (when
/// known), audiosamplerate, audiosamplesize (16), stereo (a boolean), audiocodecid (10). Without,
/// the bytes are what they were before audio existed.
pub fn write_metadata(
    info: &VideoInfo,
    audio: Option<&AudioInfo>,
    encoder: &str,
    out: &mut Vec<u8>,
) {
    amf0::encode_string(out, "@setDataFrame");
    amf0::encode_string(out, "onMetaData");
    let video_count =
        5 + u32::from(info.frame_rate.is_some()) + u32::from(info.data_rate_kbps.is_some());
    let audio_count = audio.map_or(0, |audio| 4 + u32::from(audio.data_rate_kbps.is_some()));
    amf0::encode_ecma_array_start(out, video_count + audio_count);
    amf0::encode_property_name(out, "duration");
    amf0::encode_number(out, 0.0);
    amf0::encode_property_name(out, "width");
    amf0::encode_number(out, f64::from(info.width));
    amf0::encode_property_name(out, "height");
    amf0::encode_number(out, f64::from(info.height));
    if let Some(rate) = info.data_rate_kbps {
        amf0::encode_property_name(out, "videodatarate");
        amf0::encode_number(out, rate);
    }
    if let Some(fps) = info.frame_rate {
        amf0::encode_property_name(out, "framerate");
        amf0::encode_number(out, fps);
    }
    amf0::encode_property_name(out, "videocodecid");
    amf0::encode_number(out, f64::from(CODEC_ID_AVC));
    if let Some(audio) = audio {
        if let Some(rate) = audio.data_rate_kbps {
            amf0::encode_property_name(out, "audiodatarate");
            amf0::encode_number(out, rate);
        }
        amf0::encode_property_name(out, "audiosamplerate");
        amf0::encode_number(out, f64::from(audio.sample_rate));
        amf0::encode_property_name(out, "audiosamplesize");
        amf0::encode_number(out, 16.0);
        amf0::encode_property_name(out, "stereo");
        amf0::encode_bool(out, audio.channels == 2);
        amf0::encode_property_name(out, "audiocodecid");
        amf0::encode_number(out, f64::from(SOUND_FORMAT_AAC));
    }
    amf0::encode_property_name(out, "encoder");
    amf0::encode_string(out, encoder);
    amf0::encode_object_end(out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::annexb::split_nals;

    /// SPS and PPS of a 64x64 Baseline stream at 25 fps, as x264 writes them:
    /// `ffmpeg -f lavfi -i testsrc2=size=64x64:rate=25 -frames:v 2 -c:v libx264 -profile:v baseline -f h264`.
    const SPS: &[u8] = &[
        0x67, 0x42, 0xc0, 0x0a, 0xd9, 0x04, 0x26, 0xc0, 0x44, 0x00, 0x00, 0x03, 0x00, 0x04, 0x00,
        0x00, 0x03, 0x00, 0xc8, 0x3c, 0x48, 0x99, 0x20,
    ];
    const PPS: &[u8] = &[0x68, 0xcb, 0x83, 0xcb, 0x20];

    fn annexb(nals: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for nal in nals {
            out.extend_from_slice(&[0, 0, 0, 1]);
            out.extend_from_slice(nal);
        }
        out
    }

    fn push(muxer: &mut AvcMuxer, stream: &[u8]) -> Muxed {
        let mut nals = Vec::new();
        split_nals(stream, &mut nals);
        muxer
            .push(&AccessUnit {
                data: stream,
                nals: &nals,
            })
            .unwrap()
    }

    fn flatten(parts: &[Part], data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for part in parts {
            match *part {
                Part::Inline { bytes, len } => out.extend_from_slice(&bytes[..usize::from(len)]),
                Part::External { start, len } => out.extend_from_slice(&data[start..start + len]),
            }
        }
        out
    }

    #[test]
    fn waits_for_parameter_sets_then_a_keyframe() {
        let mut muxer = AvcMuxer::new();
        let p_slice: &[u8] = &[0x41, 0x9a, 0x01, 0x02];
        let idr: &[u8] = &[0x65, 0x88, 0x84, 0x00];
        assert_eq!(
            push(&mut muxer, &annexb(&[p_slice])),
            Muxed::Skipped(SkipReason::WaitingForParameterSets)
        );
        assert_eq!(
            push(&mut muxer, &annexb(&[SPS, PPS])),
            Muxed::Skipped(SkipReason::NoPicture)
        );
        assert_eq!(
            push(&mut muxer, &annexb(&[p_slice])),
            Muxed::Skipped(SkipReason::WaitingForKeyframe)
        );
        assert_eq!(
            push(&mut muxer, &annexb(&[idr])),
            Muxed::Frame {
                keyframe: true,
                sequence_header_changed: true
            }
        );
        assert_eq!(
            push(&mut muxer, &annexb(&[p_slice])),
            Muxed::Frame {
                keyframe: false,
                sequence_header_changed: false
            }
        );
    }

    #[test]
    fn frame_body_is_length_prefixed_without_aud_and_references_the_input() {
        let mut muxer = AvcMuxer::new();
        let aud: &[u8] = &[0x09, 0xf0];
        let idr: &[u8] = &[0x65, 0x88, 0x84, 0x00, 0x33];
        let stream = annexb(&[aud, SPS, PPS, idr]);
        assert_eq!(
            push(&mut muxer, &stream),
            Muxed::Frame {
                keyframe: true,
                sequence_header_changed: true
            }
        );
        let mut expected = vec![0x17, 0x01, 0, 0, 0];
        for nal in [SPS, PPS, idr] {
            expected.extend_from_slice(&(nal.len() as u32).to_be_bytes());
            expected.extend_from_slice(nal);
        }
        assert_eq!(flatten(muxer.frame_parts(), &stream), expected);
        // The NAL payloads are references, not copies.
        let external: usize = muxer
            .frame_parts()
            .iter()
            .map(|p| {
                if let Part::External { len, .. } = p {
                    *len
                } else {
                    0
                }
            })
            .sum();
        assert_eq!(external, SPS.len() + PPS.len() + idr.len());
    }

    #[test]
    fn sequence_header_is_the_avc_record_and_resent_on_change_only() {
        let mut muxer = AvcMuxer::new();
        let idr: &[u8] = &[0x65, 0x88, 0x84, 0x00];
        push(&mut muxer, &annexb(&[SPS, PPS, idr]));
        let header = muxer.sequence_header().to_vec();
        assert_eq!(&header[..5], &[0x17, 0x00, 0, 0, 0]);
        assert_eq!(&header[5..9], &[1, 0x42, 0xc0, 0x0a]);
        // The same parameter sets repeated before every IDR change nothing.
        assert_eq!(
            push(&mut muxer, &annexb(&[SPS, PPS, idr])),
            Muxed::Frame {
                keyframe: true,
                sequence_header_changed: false
            }
        );
        // A new PPS does.
        let pps2: &[u8] = &[0x68, 0xce, 0x38, 0x80];
        assert_eq!(
            push(&mut muxer, &annexb(&[SPS, pps2, idr])),
            Muxed::Frame {
                keyframe: true,
                sequence_header_changed: true
            }
        );
        assert_ne!(muxer.sequence_header(), header.as_slice());
        // After a reconnect the header goes again, before an IDR.
        muxer.restart();
        let p_slice: &[u8] = &[0x41, 0x9a];
        assert_eq!(
            push(&mut muxer, &annexb(&[p_slice])),
            Muxed::Skipped(SkipReason::WaitingForKeyframe)
        );
        assert_eq!(
            push(&mut muxer, &annexb(&[idr])),
            Muxed::Frame {
                keyframe: true,
                sequence_header_changed: true
            }
        );
    }

    #[test]
    fn bad_sps_is_an_error_not_a_panic() {
        let mut muxer = AvcMuxer::new();
        let stream = annexb(&[&[0x67, 0x42], PPS, &[0x65, 0x88]]);
        let mut nals = Vec::new();
        split_nals(&stream, &mut nals);
        assert!(matches!(
            muxer.push(&AccessUnit {
                data: &stream,
                nals: &nals
            }),
            Err(MuxError::Sps(_))
        ));
    }

    #[test]
    fn pps_of_another_sps_gives_no_sequence_header() {
        let idr: &[u8] = &[0x65, 0x88, 0x84];
        // pic_parameter_set_id 0, seq_parameter_set_id 1 (ue 010), then x264's PPS bits.
        let pps_of_sps1: &[u8] = &[0x68, 0xa2, 0xe0, 0xf2, 0xc8];
        let mut muxer = AvcMuxer::new();
        let stream = annexb(&[SPS, pps_of_sps1, idr]);
        let mut nals = Vec::new();
        split_nals(&stream, &mut nals);
        let au = AccessUnit {
            data: &stream,
            nals: &nals,
        };
        let error = muxer.push(&au).unwrap_err();
        assert_eq!(
            error,
            MuxError::PpsForAnotherSps {
                pps_sps_id: 1,
                sps_id: 0
            }
        );
        assert!(error.to_string().contains("refers to SPS 1"));
        assert!(muxer.sequence_header().is_empty());
        // The matching PPS then gives the header and the frame.
        assert_eq!(
            push(&mut muxer, &annexb(&[PPS, idr])),
            Muxed::Frame {
                keyframe: true,
                sequence_header_changed: true
            }
        );
        assert!(!muxer.sequence_header().is_empty());
    }

    #[test]
    fn pps_before_its_sps_is_kept() {
        let idr: &[u8] = &[0x65, 0x88, 0x84];
        let mut muxer = AvcMuxer::new();
        assert_eq!(
            push(&mut muxer, &annexb(&[PPS])),
            Muxed::Skipped(SkipReason::NoPicture)
        );
        assert_eq!(
            push(&mut muxer, &annexb(&[SPS, idr])),
            Muxed::Frame {
                keyframe: true,
                sequence_header_changed: true
            }
        );
    }

    #[test]
    fn bad_pps_is_an_error_and_leaves_the_pair_in_force() {
        let idr: &[u8] = &[0x65, 0x88, 0x84];
        let mut muxer = AvcMuxer::new();
        push(&mut muxer, &annexb(&[SPS, PPS, idr]));
        let header = muxer.sequence_header().to_vec();
        // pic_parameter_set_id 256 (ue with 8 leading zeros: 00000000 1 00000001).
        let bad: &[u8] = &[0x68, 0x00, 0x80, 0x80];
        let stream = annexb(&[bad, idr]);
        let mut nals = Vec::new();
        split_nals(&stream, &mut nals);
        let error = muxer
            .push(&AccessUnit {
                data: &stream,
                nals: &nals,
            })
            .unwrap_err();
        assert_eq!(
            error,
            MuxError::Pps(PpsError::Invalid("pic_parameter_set_id above 255"))
        );
        assert_eq!(muxer.sequence_header(), &header[..]);
    }

    #[test]
    fn metadata_is_set_data_frame_on_metadata() {
        let mut out = Vec::new();
        let info = VideoInfo {
            width: 1920,
            height: 1080,
            frame_rate: Some(30.0),
            data_rate_kbps: None,
        };
        write_metadata(&info, None, "v4l2rtmp", &mut out);
        let values = amf0::decode_all(&out).unwrap();
        assert_eq!(values[0].as_str(), Some("@setDataFrame"));
        assert_eq!(values[1].as_str(), Some("onMetaData"));
        let meta = &values[2];
        assert_eq!(meta.get("width").and_then(|v| v.as_f64()), Some(1920.0));
        assert_eq!(meta.get("height").and_then(|v| v.as_f64()), Some(1080.0));
        assert_eq!(meta.get("framerate").and_then(|v| v.as_f64()), Some(30.0));
        assert_eq!(meta.get("videocodecid").and_then(|v| v.as_f64()), Some(7.0));
        assert_eq!(
            meta.get("encoder").and_then(|v| v.as_str()),
            Some("v4l2rtmp")
        );
        assert!(meta.get("videodatarate").is_none());
        assert_eq!(values.len(), 3);
    }

    /// The bytes of onMetaData, pinned: with every video field, and with the optional ones
    /// absent (as `pipeline` sends it: no data rate).
    #[test]
    fn metadata_bytes_are_pinned() {
        let mut out = Vec::new();
        let full = VideoInfo {
            width: 1920,
            height: 1080,
            frame_rate: Some(30.0),
            data_rate_kbps: Some(4000.0),
        };
        write_metadata(&full, None, "v4l2rtmp", &mut out);
        assert_eq!(
            out,
            hex(
                "02000d40736574446174614672616d6502000a6f6e4d65746144617461080000000700086475\
                 726174696f6e0000000000000000000005776964746800409e0000000000000006686569676874\
                 004090e00000000000000d766964656f64617461726174650040af400000000000000966726\
                 16d657261746500403e000000000000000c766964656f636f646563696400401c000000000000\
                 0007656e636f64657202000876346c3272746d70000009"
            )
        );
        let bare = VideoInfo {
            width: 640,
            height: 480,
            frame_rate: None,
            data_rate_kbps: None,
        };
        out.clear();
        write_metadata(&bare, None, "v4l2rtmp", &mut out);
        assert_eq!(
            out,
            hex(
                "02000d40736574446174614672616d6502000a6f6e4d65746144617461080000000500086475\
                 726174696f6e00000000000000000000057769647468004084000000000000000668656967687\
                 400407e000000000000000c766964656f636f646563696400401c00000000000000076\
                 56e636f64657202000876346c3272746d70000009"
            )
        );
    }

    #[test]
    fn metadata_with_audio_adds_ffmpegs_audio_fields() {
        let video = VideoInfo {
            width: 1280,
            height: 720,
            frame_rate: Some(30.0),
            data_rate_kbps: None,
        };
        let mono = AudioInfo {
            sample_rate: 48000,
            channels: 1,
            data_rate_kbps: Some(64.0),
        };
        let mut out = Vec::new();
        write_metadata(&video, Some(&mono), "v4l2rtmp", &mut out);
        assert_eq!(
            out,
            hex(
                "02000d40736574446174614672616d6502000a6f6e4d65746144617461080000000b000864757261\
                 74696f6e000000000000000000000577696474680040940000000000000006686569676874004086\
                 80000000000000096672616d657261746500403e000000000000000c766964656f636f6465636964\
                 00401c000000000000000d617564696f6461746172617465004050000000000000000f617564696f\
                 73616d706c65726174650040e7700000000000000f617564696f73616d706c6573697a6500403000\
                 0000000000000673746572656f0100000c617564696f636f64656369640040240000000000000007\
                 656e636f64657202000876346c3272746d70000009"
            )
        );
        // Stereo, without a known data rate, and without a frame rate.
        let stereo = AudioInfo {
            sample_rate: 44100,
            channels: 2,
            data_rate_kbps: None,
        };
        let video = VideoInfo {
            frame_rate: None,
            ..video
        };
        out.clear();
        write_metadata(&video, Some(&stereo), "v4l2rtmp", &mut out);
        assert_eq!(
            out,
            hex(
                "02000d40736574446174614672616d6502000a6f6e4d657461446174610800000009000864757261\
                 74696f6e000000000000000000000577696474680040940000000000000006686569676874004086\
                 800000000000000c766964656f636f646563696400401c000000000000000f617564696f73616d70\
                 6c65726174650040e5888000000000000f617564696f73616d706c6573697a650040300000000000\
                 00000673746572656f0101000c617564696f636f64656369640040240000000000000007656e636f\
                 64657202000876346c3272746d70000009"
            )
        );
    }

    /// onMetaData as FFmpeg 5.1 writes it for `-f lavfi -i sine -c:a aac -b:a 64k -ac 1 -ar
    /// 48000 -f flv` (audio only; its data rate is bit_rate / 1024).
    const FFMPEG_AUDIO_METADATA: &str = "02000a6f6e4d65746144617461080000000800086475726174696f6e\
        003fcc49ba5e353f7d000d617564696f646174617261746500404f400000000000000f617564696f73616d\
        706c65726174650040e7700000000000000f617564696f73616d706c6573697a6500403000000000000000\
        0673746572656f0100000c617564696f636f64656369640040240000000000000007656e636f6465720200\
        0d4c61766635392e32372e313030000866696c6573697a650040a26e0000000000000009";

    #[test]
    fn audio_metadata_fields_have_ffmpegs_names_types_and_values() {
        let theirs = amf0::decode_all(&hex(FFMPEG_AUDIO_METADATA)).unwrap();
        let video = VideoInfo {
            width: 640,
            height: 480,
            frame_rate: None,
            data_rate_kbps: None,
        };
        let audio = AudioInfo {
            sample_rate: 48000,
            channels: 1,
            data_rate_kbps: Some(62.5),
        };
        let mut out = Vec::new();
        write_metadata(&video, Some(&audio), "v4l2rtmp", &mut out);
        let ours = amf0::decode_all(&out).unwrap();
        let keys = |meta: &amf0::Value| -> Vec<String> {
            match meta {
                amf0::Value::EcmaArray(properties) => properties
                    .iter()
                    .map(|(key, _)| key.clone())
                    .filter(|key| key.starts_with("audio") || key == "stereo")
                    .collect(),
                _ => panic!("not an ECMA array: {meta:?}"),
            }
        };
        // The same fields in the same order, with the same values (the same types).
        assert_eq!(keys(&ours[2]), keys(&theirs[1]));
        for key in keys(&theirs[1]) {
            assert_eq!(ours[2].get(&key), theirs[1].get(&key), "{key}");
        }
        assert_eq!(ours[2].get("stereo"), Some(&amf0::Value::Boolean(false)));
    }

    #[test]
    fn aac_tag_headers_are_what_ffmpeg_writes() {
        // FFmpeg 5.1, `-c:a aac -f flv`: the sequence header tag of 48 kHz mono is
        // `af 00 11 88 56 e5 00` and of 44.1 kHz stereo `af 00 12 10 56 e5 00` (the same
        // AudioSpecificConfig and an extension saying "no SBR"); each frame tag starts `af 01`.
        let mono = AudioSpecificConfig::lc(48000, 1).unwrap();
        assert_eq!(aac_sequence_header(&mono), [0xaf, 0x00, 0x11, 0x88]);
        let stereo = AudioSpecificConfig::lc(44100, 2).unwrap();
        assert_eq!(aac_sequence_header(&stereo), [0xaf, 0x00, 0x12, 0x10]);
        assert_eq!(aac_frame_header(), [0xaf, 0x01]);
        // A frame's body: the header inline, the raw frame where it lies.
        let payload = [0x01, 0x18, 0x20, 0x07];
        let mut buffer = vec![0xee; 10];
        buffer[3..7].copy_from_slice(&payload);
        let parts = aac_frame_parts(3, 4);
        assert_eq!(
            flatten(&parts, &buffer),
            [0xaf, 0x01, 0x01, 0x18, 0x20, 0x07]
        );
        assert!(matches!(parts[1], Part::External { start: 3, len: 4 }));
    }

    #[test]
    fn max_body_len_bounds_the_body_of_the_densest_access_unit() {
        let mut muxer = AvcMuxer::new();
        let mut stream = annexb(&[SPS, PPS, &[0x65, 0x88]]);
        // 1-byte NAL units behind 3-byte start codes: the most length prefixes per byte.
        for _ in 0..1000 {
            stream.extend_from_slice(&[0, 0, 1, 0x06]);
        }
        assert!(matches!(push(&mut muxer, &stream), Muxed::Frame { .. }));
        let body: usize = muxer.frame_parts().iter().map(Part::len).sum();
        let bound = AvcMuxer::max_body_len(stream.len());
        assert!(body <= bound, "body {body} above the bound {bound}");
        assert!(bound - body < 32, "the bound {bound} is loose for {body}");
    }

    /// x264 `-bf 3` at 160x96 and 25 fps (pic_order_cnt_type 0, B-pyramid,
    /// max_num_reorder_frames 2): SPS, PPS and its first five slices, cut after the header, in
    /// decoding order (I0 P4 B2 b1 b3); as in `media::poc`'s tests.
    const X264_SPS: &str = "6764000bacd9428db011000003000100000300320f142996";
    const X264_PPS: &str = "68ebe3cb22c0";
    const X264_SLICES: [&str; 5] = [
        "658884017f",
        "419a246c57b3",
        "419e427885bf",
        "019e617442df",
        "019e636a42df",
    ];

    use crate::media::testing::hex;

    /// The 5-byte tag header of each frame of the stream, muxed at `duration`.
    fn headers(muxer: &mut AvcMuxer, duration: FrameDuration, slices: &[&str]) -> Vec<[u8; 5]> {
        let (sps, pps) = (hex(X264_SPS), hex(X264_PPS));
        slices
            .iter()
            .enumerate()
            .map(|(index, slice)| {
                let slice = hex(slice);
                let stream = if index == 0 {
                    annexb(&[&sps, &pps, &slice])
                } else {
                    annexb(&[&slice])
                };
                assert!(matches!(push(muxer, &stream), Muxed::Frame { .. }));
                muxer.set_frame_duration(duration);
                let body = flatten(&muxer.frame_parts()[..1], &stream);
                body.try_into().unwrap()
            })
            .collect()
    }

    #[test]
    fn b_frames_carry_their_composition_time() {
        let mut muxer = AvcMuxer::new();
        let at_25 = FrameDuration::from_rate(25, 1).unwrap();
        // Shown in order I0 b1 B2 b3 P4, two frames late (the VUI's reorder depth): CTS =
        // (display - decode + 2) x 40 ms = 80, 200, 80, 0, 40 ms.
        assert_eq!(
            headers(&mut muxer, at_25, &X264_SLICES),
            [
                [0x17, 1, 0, 0, 80],
                [0x27, 1, 0, 0, 200],
                [0x27, 1, 0, 0, 80],
                [0x27, 1, 0, 0, 0],
                [0x27, 1, 0, 0, 40],
            ]
        );
        assert_eq!(muxer.reorder_delay(), 2);
        assert_eq!(muxer.slice_error(), None);
        // At 29.97 fps a frame is 33.367 ms: 5 frames are 166.83, rounded to 167.
        let mut muxer = AvcMuxer::new();
        let ntsc = FrameDuration::from_rate(30000, 1001).unwrap();
        let ctss: Vec<u32> = headers(&mut muxer, ntsc, &X264_SLICES)
            .iter()
            .map(|h| u32::from_be_bytes([0, h[2], h[3], h[4]]))
            .collect();
        assert_eq!(ctss, [67, 167, 67, 0, 33]);
    }

    #[test]
    fn the_frame_duration_given_after_the_push_rewrites_the_header() {
        let mut muxer = AvcMuxer::new();
        let stream = annexb(&[&hex(X264_SPS), &hex(X264_PPS), &hex(X264_SLICES[0])]);
        push(&mut muxer, &stream);
        // Until told, a frame lasts 40 ms.
        assert_eq!(muxer.composition_time_ms(), 80);
        muxer.set_frame_duration(FrameDuration::from_ms(1000, 60).unwrap());
        assert_eq!(muxer.composition_time_ms(), 33);
        assert_eq!(
            flatten(&muxer.frame_parts()[..1], &stream),
            [0x17, 1, 0, 0, 33]
        );
        // A composition time beyond FLV's 24 bits is clamped to the largest positive one.
        muxer.set_frame_duration(FrameDuration::from_ms(u64::MAX / 4, 1).unwrap());
        assert_eq!(
            flatten(&muxer.frame_parts()[..1], &stream),
            [0x17, 1, 0x7f, 0xff, 0xff]
        );
        assert_eq!(FrameDuration::from_rate(0, 1), None);
        assert_eq!(FrameDuration::from_ms(10, 0), None);
    }

    #[test]
    fn unreadable_slices_are_sent_in_decoding_order() {
        let mut muxer = AvcMuxer::new();
        let at_25 = FrameDuration::from_rate(25, 1).unwrap();
        // A P slice cut inside its header: the frame goes out, at the reorder delay (80 ms).
        let slices = [X264_SLICES[0], X264_SLICES[1], "419a"];
        let got = headers(&mut muxer, at_25, &slices);
        assert_eq!(got[2], [0x27, 1, 0, 0, 80]);
        assert_eq!(muxer.slice_error(), Some(&SliceError::Truncated));
    }

    #[test]
    fn a_new_sps_starts_the_reordering_afresh() {
        let mut muxer = AvcMuxer::new();
        let at_25 = FrameDuration::from_rate(25, 1).unwrap();
        headers(&mut muxer, at_25, &X264_SLICES);
        assert_eq!(muxer.reorder_delay(), 2);
        // The Baseline SPS (pic_order_cnt_type 2) of the other tests: CTS 0 from its IDR on.
        let idr: &[u8] = &[0x65, 0x88, 0x84, 0x00];
        let stream = annexb(&[SPS, PPS, idr]);
        push(&mut muxer, &stream);
        muxer.set_frame_duration(at_25);
        assert_eq!(muxer.reorder_delay(), 0);
        assert_eq!(
            flatten(&muxer.frame_parts()[..1], &stream),
            [0x17, 1, 0, 0, 0]
        );
    }
}
