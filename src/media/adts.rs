//! ADTS (ISO/IEC 13818-7 §6.2 and 14496-3 §1.A.2): AAC frames as a file, a FIFO or an `exec:`
//! child gives them, split into frames by reference so that each raw frame is sent as it is.
//!
//! Two levels, in the check-then-parse style:
//! - [`AdtsHeader::parse`] reads the header at the start of a buffer: `Incomplete` says how many
//!   bytes it needs (not an error), `NotAHeader` says the bytes are not an ADTS header (no sync
//!   word, layer not 0, reserved sampling frequency index, a frame length that cannot hold the
//!   header and a raw data block, or one above what a decoder's input buffer holds: 6144 bits
//!   per channel and block). [`AdtsHeader::check`] says whether a header is one this program
//!   can send: AAC-LC (profile 1, object type 2), mono or stereo (channel configuration 1 or 2;
//!   0 and 3..=7 are refused), one raw data block per frame.
//! - [`AdtsSplitter`] follows a stream given in pieces of any size at growing logical positions
//!   (as the frame store's ring holds it) and reports each frame as a range of positions: the
//!   header, the CRC if there is one (skipped, not checked), and the raw data block that FLV
//!   carries. It never looks back at bytes it has passed: it keeps the last 7 bytes.
//!
//! Synchronisation: a frame is trusted once a valid header with the same fixed fields (ID,
//! profile, sampling frequency, channels, protection) starts where it ends; from then on each
//! frame whose header comes where the previous one ended, and agrees with it, is handed out as
//! soon as its last byte is in, its body passed over without a look. Anything else (garbage
//! before the stream, a corrupted header, a frame cut short) is hunted through byte by byte:
//! every position is judged as a header, up to 8 unconfirmed candidates are followed at once,
//! and the first candidate that a header confirms is reported. A false header in garbage (one
//! that happens to look valid and claims thousands of bytes) thus hides nothing of the true
//! stream inside it. What is not reported is counted in [`AdtsSplitter::skipped_bytes`]; a
//! corrupted frame costs that frame only.
//!
//! Each frame is [`SAMPLES_PER_FRAME`] (1024) samples per channel: 21.33 ms at 48 kHz.
//!
//! Invariants: reported frames are consecutive or separated by skipped bytes, never overlap, and
//! lie within the bytes fed; every byte fed is either in a reported frame, counted as skipped,
//! or still held (a header in progress, a frame not yet complete or confirmed); the first
//! reported frame and every change of configuration are flagged `new_config`. No input makes
//! this code panic, and it allocates nothing.

use std::fmt;
use std::ops::Range;

use crate::error::Error;
use crate::media::aac::{AacError, AudioSpecificConfig, SAMPLES_PER_FRAME, SAMPLING_FREQUENCIES};

/// Bytes of a header without CRC (protection_absent 1).
pub const HEADER_LEN: usize = 7;
/// Bytes of a header with its CRC (protection_absent 0).
pub const HEADER_WITH_CRC_LEN: usize = 9;
/// The largest frame the 13-bit frame_length field can describe.
pub const MAX_FRAME_LEN: usize = 0x1fff;
/// A raw data block holds at most 6144 bits per channel (the decoder's input buffer, ISO/IEC
/// 14496-3 §4.5.3.1).
const MAX_BLOCK_BYTES_PER_CHANNEL: usize = 6144 / 8;

/// Why bytes are not an ADTS header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotAHeader {
    /// The 12-bit sync word 0xFFF is not there.
    Sync,
    /// layer is not 0.
    Layer,
    /// sampling_frequency_index 13, 14 (reserved) or 15 (not allowed in ADTS).
    FrequencyIndex(u8),
    /// frame_length is shorter than the header and a raw data block of at least one byte.
    TooShort(u16),
    /// frame_length is longer than a decoder's input buffer can hold for these channels.
    TooLong(u16),
}

/// What [`AdtsHeader::parse`] could not do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderError {
    /// Not enough bytes yet: the header needs this many (7, or 9 with a CRC).
    Incomplete(usize),
    NotAHeader(NotAHeader),
}

/// A valid ADTS header that this program cannot send: the input's fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdtsError {
    /// Not AAC-LC, not mono or stereo.
    Config(AacError),
    /// More than one raw data block in a frame (number_of_raw_data_blocks_in_frame + 1).
    RawDataBlocks(u8),
}

impl fmt::Display for AdtsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdtsError::Config(e) => write!(f, "the ADTS audio input cannot be sent: {e}"),
            AdtsError::RawDataBlocks(n) => write!(
                f,
                "the ADTS audio input has {n} raw data blocks per frame; only 1 is supported \
                 (FFmpeg, faac and fdk-aac write 1)"
            ),
        }
    }
}

impl std::error::Error for AdtsError {}

impl From<AdtsError> for Error {
    /// The ADTS input is the source's: an input error.
    fn from(e: AdtsError) -> Error {
        Error::input(e.to_string())
    }
}

/// The fields of an ADTS header (fixed and variable parts).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdtsHeader {
    /// ID 1: MPEG-2 AAC; 0: MPEG-4. The AAC-LC bitstream is the same.
    pub mpeg2: bool,
    /// protection_absent 0: a 16-bit CRC follows the 7 header bytes.
    pub has_crc: bool,
    /// profile_ObjectType + 1: the MPEG-4 audio object type (2 is AAC-LC).
    pub object_type: u8,
    /// sampling_frequency_index (0..=12).
    pub frequency_index: u8,
    /// channel_configuration (0..=7).
    pub channel_configuration: u8,
    /// frame_length: the whole frame, header included.
    pub frame_length: u16,
    /// adts_buffer_fullness (0x7FF: variable bitrate).
    pub buffer_fullness: u16,
    /// number_of_raw_data_blocks_in_frame + 1.
    pub raw_data_blocks: u8,
}

impl AdtsHeader {
    /// Reads the header at the start of `bytes`.
    pub fn parse(bytes: &[u8]) -> Result<AdtsHeader, HeaderError> {
        if bytes.len() < 2 {
            if bytes.first().is_some_and(|&b| b != 0xff) {
                return Err(HeaderError::NotAHeader(NotAHeader::Sync));
            }
            return Err(HeaderError::Incomplete(HEADER_LEN));
        }
        if bytes[0] != 0xff || bytes[1] & 0xf0 != 0xf0 {
            return Err(HeaderError::NotAHeader(NotAHeader::Sync));
        }
        if bytes[1] & 0x06 != 0 {
            return Err(HeaderError::NotAHeader(NotAHeader::Layer));
        }
        let has_crc = bytes[1] & 1 == 0;
        let header_len = if has_crc {
            HEADER_WITH_CRC_LEN
        } else {
            HEADER_LEN
        };
        if bytes.len() < HEADER_LEN {
            return Err(HeaderError::Incomplete(header_len));
        }
        let frequency_index = (bytes[2] >> 2) & 0xf;
        if usize::from(frequency_index) >= SAMPLING_FREQUENCIES.len() {
            return Err(HeaderError::NotAHeader(NotAHeader::FrequencyIndex(
                frequency_index,
            )));
        }
        let header = AdtsHeader {
            mpeg2: bytes[1] & 0x08 != 0,
            has_crc,
            object_type: (bytes[2] >> 6) + 1,
            frequency_index,
            channel_configuration: ((bytes[2] & 1) << 2) | (bytes[3] >> 6),
            frame_length: (u16::from(bytes[3] & 3) << 11)
                | (u16::from(bytes[4]) << 3)
                | u16::from(bytes[5] >> 5),
            buffer_fullness: (u16::from(bytes[5] & 0x1f) << 6) | u16::from(bytes[6] >> 2),
            raw_data_blocks: (bytes[6] & 3) + 1,
        };
        let len = usize::from(header.frame_length);
        if len <= header_len {
            return Err(HeaderError::NotAHeader(NotAHeader::TooShort(
                header.frame_length,
            )));
        }
        // Channel configuration 0 gives its count in the payload: no bound from it.
        let channels = match header.channel_configuration {
            0 => 8,
            7 => 8,
            n => usize::from(n),
        };
        let max = MAX_BLOCK_BYTES_PER_CHANNEL * channels * usize::from(header.raw_data_blocks);
        if len - header_len > max {
            return Err(HeaderError::NotAHeader(NotAHeader::TooLong(
                header.frame_length,
            )));
        }
        if bytes.len() < header_len {
            return Err(HeaderError::Incomplete(header_len));
        }
        Ok(header)
    }

    /// Reads the fixed 7 bytes (the CRC of a protected header, if any, follows them).
    fn judge(window: &[u8; HEADER_LEN]) -> Option<AdtsHeader> {
        match Self::parse(window) {
            Ok(header) => Some(header),
            // A header with a CRC: its fields are all in the 7 bytes.
            Err(HeaderError::Incomplete(HEADER_WITH_CRC_LEN)) => {
                let mut padded = [0u8; HEADER_WITH_CRC_LEN];
                padded[..HEADER_LEN].copy_from_slice(window);
                Self::parse(&padded).ok()
            }
            Err(_) => None,
        }
    }

    /// Header bytes, CRC included.
    pub fn header_len(&self) -> usize {
        if self.has_crc {
            HEADER_WITH_CRC_LEN
        } else {
            HEADER_LEN
        }
    }

    /// The whole frame in bytes.
    pub fn frame_len(&self) -> usize {
        usize::from(self.frame_length)
    }

    /// The raw data block's length: what FLV carries.
    pub fn payload_len(&self) -> usize {
        self.frame_len().saturating_sub(self.header_len())
    }

    /// Samples per channel in the frame: 1024 per raw data block (21.33 ms at 48 kHz).
    pub fn samples(&self) -> u32 {
        SAMPLES_PER_FRAME * u32::from(self.raw_data_blocks)
    }

    /// The sampling frequency in Hz.
    pub fn sample_rate(&self) -> u32 {
        SAMPLING_FREQUENCIES
            .get(usize::from(self.frequency_index))
            .copied()
            .unwrap_or(0)
    }

    /// The configuration to announce in the FLV sequence header, if this program can send the
    /// stream.
    pub fn check(&self) -> Result<AudioSpecificConfig, AdtsError> {
        let config = AudioSpecificConfig::from_fields(
            self.object_type,
            self.frequency_index,
            self.channel_configuration,
        )
        .map_err(AdtsError::Config)?;
        if self.raw_data_blocks != 1 {
            return Err(AdtsError::RawDataBlocks(self.raw_data_blocks));
        }
        Ok(config)
    }

    /// Whether the fields that must not change within a stream are the same.
    fn same_stream(&self, other: &AdtsHeader) -> bool {
        (
            self.mpeg2,
            self.has_crc,
            self.object_type,
            self.frequency_index,
            self.channel_configuration,
        ) == (
            other.mpeg2,
            other.has_crc,
            other.object_type,
            other.frequency_index,
            other.channel_configuration,
        )
    }

    /// The 7-byte header (no CRC, one raw data block, buffer fullness 0x7FF: variable bitrate)
    /// of a frame of `config` carrying `payload_len` bytes, or None if the frame would be
    /// longer than ADTS allows. For tests and for tools that wrap raw frames.
    pub fn write(config: &AudioSpecificConfig, payload_len: usize) -> Option<[u8; HEADER_LEN]> {
        let len = payload_len.checked_add(HEADER_LEN)?;
        if len > MAX_FRAME_LEN {
            return None;
        }
        let len = len as u32;
        let fullness = 0x7ffu32;
        Some([
            0xff,
            0xf1,
            ((config.frequency_index() << 2) | (1 << 6)) | (config.channels() >> 2),
            ((config.channels() & 3) << 6) | (len >> 11) as u8,
            (len >> 3) as u8,
            (((len & 7) << 5) | (fullness >> 6)) as u8,
            ((fullness & 0x3f) << 2) as u8,
        ])
    }
}

/// One frame found by the [`AdtsSplitter`], as logical positions in the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdtsFrame {
    /// The first byte of its header.
    pub start: u64,
    /// The first byte of its raw data block (after the header and CRC).
    pub payload_start: u64,
    /// One past its last byte.
    pub end: u64,
    pub header: AdtsHeader,
    /// What the FLV sequence header must announce (checked: AAC-LC, mono or stereo).
    pub config: AudioSpecificConfig,
    /// The first frame, or one whose configuration differs from the previous frame's: the
    /// sequence header must be sent (again) before it.
    pub new_config: bool,
}

impl AdtsFrame {
    /// The raw data block: what an FLV AAC frame tag carries after its 2-byte header.
    pub fn payload(&self) -> Range<u64> {
        self.payload_start..self.end
    }
}

/// What [`AdtsSplitter::scan`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdtsEvent {
    Frame(AdtsFrame),
    /// A confirmed frame that this program cannot send (its bytes are counted as skipped). The
    /// stream is unusable: every following frame would say the same.
    Unsupported(AdtsError),
}

/// How many unconfirmed candidates are followed at once.
const MAX_CANDIDATES: usize = 8;

/// Where the splitter is in the stream.
#[derive(Clone, Copy, Debug)]
enum Mode {
    /// Looking at every position for a header that a frame before it ends at.
    Hunting,
    /// Following a stream: the header at `next_at` must agree with `last`.
    Trusted { last: AdtsHeader, next_at: u64 },
    /// Passing over the rest of a trusted frame, reported when its last byte is in.
    Body { frame: Pending },
}

/// A frame whose header has been read.
#[derive(Clone, Copy, Debug)]
struct Pending {
    start: u64,
    header: AdtsHeader,
}

impl Pending {
    fn end(&self) -> u64 {
        self.start + u64::from(self.header.frame_length)
    }
}

/// Splits an ADTS byte stream fed in pieces into frames; see the module's notes.
#[derive(Clone, Debug)]
pub struct AdtsSplitter {
    mode: Mode,
    /// The last bytes seen (at most 7), ending at `position`: a header is judged when its
    /// seventh byte comes.
    window: [u8; HEADER_LEN],
    window_len: usize,
    /// While hunting: headers whose frame has not been confirmed by a header where it ends.
    candidates: [Option<Pending>; MAX_CANDIDATES],
    /// The position of the next byte expected.
    position: u64,
    /// Every byte before this one was reported or counted as skipped.
    accounted: u64,
    /// The configuration of the last reported frame.
    config: Option<AudioSpecificConfig>,
    skipped: u64,
    frames: u64,
}

impl Default for AdtsSplitter {
    fn default() -> Self {
        Self::new()
    }
}

impl AdtsSplitter {
    pub fn new() -> Self {
        AdtsSplitter {
            mode: Mode::Hunting,
            window: [0; HEADER_LEN],
            window_len: 0,
            candidates: [None; MAX_CANDIDATES],
            position: 0,
            accounted: 0,
            config: None,
            skipped: 0,
            frames: 0,
        }
    }

    /// Bytes skipped so far: garbage, corrupted frames, unconfirmed candidates, frames that
    /// cannot be sent, and what was held when the input ended or restarted. Bytes still held
    /// (see [`held_from`](Self::held_from)) are not counted yet.
    pub fn skipped_bytes(&self) -> u64 {
        self.skipped
    }

    /// Frames reported so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Where the next byte is expected (`base` of the next piece).
    pub fn position(&self) -> u64 {
        self.position
    }

    /// The oldest byte still needed (a frame not yet reported, a candidate, a header in
    /// progress): bytes before it were reported or skipped and may be reclaimed.
    pub fn held_from(&self) -> u64 {
        match self.mode {
            Mode::Body { frame } => frame.start,
            Mode::Trusted { next_at, .. } => next_at,
            Mode::Hunting => {
                // The last 6 bytes may start a header that is not judged yet.
                let unjudged = self.position - self.window_len.min(HEADER_LEN - 1) as u64;
                self.candidates
                    .iter()
                    .flatten()
                    .map(|c| c.start)
                    .fold(unjudged, u64::min)
            }
        }
    }

    /// Looks at `data`, the bytes at logical positions `base..`, where `base` is
    /// [`position`](Self::position) (another `base` is taken as a gap: what was held is
    /// skipped and the stream is looked for afresh from `base`). Returns how many bytes it
    /// took (all of them, unless it stopped at an event) and the event, if any: call again
    /// with the rest.
    pub fn scan(&mut self, data: &[u8], base: u64) -> (usize, Option<AdtsEvent>) {
        if base != self.position {
            self.drop_held(base);
        }
        let mut used = 0;
        let mut event = None;
        while used < data.len() && event.is_none() {
            let rest = &data[used..];
            match self.mode {
                Mode::Body { frame } => {
                    let left = frame.end().saturating_sub(self.position);
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(rest.len());
                    used += take;
                    self.position += take as u64;
                    if self.position >= frame.end() {
                        self.window_len = 0;
                        self.mode = Mode::Trusted {
                            last: frame.header,
                            next_at: frame.end(),
                        };
                        event = self.report(frame);
                    }
                }
                Mode::Hunting if self.nothing_pending() => {
                    // No header can start before the next 0xff.
                    let skip = rest.iter().position(|&b| b == 0xff).unwrap_or(rest.len());
                    if skip > 0 {
                        used += skip;
                        self.position += skip as u64;
                        self.window_len = 0;
                    } else {
                        used += 1;
                        event = self.step(rest[0]);
                    }
                }
                _ => {
                    used += 1;
                    event = self.step(rest[0]);
                }
            }
        }
        self.settle();
        (used, event)
    }

    /// The input ended: what is held (a header in progress, candidates, a frame cut short) is
    /// skipped. The next byte may start a new stream of the same configuration.
    pub fn finish(&mut self) {
        self.drop_held(self.position);
    }

    /// Forgets the stream followed so far (the input was opened again), from `base` on: the
    /// next frame is flagged `new_config`. The counters are kept.
    pub fn reset(&mut self, base: u64) {
        self.drop_held(base);
        self.config = None;
    }

    /// Skips what is held and hunts from `base`.
    fn drop_held(&mut self, base: u64) {
        self.skipped += self.position.saturating_sub(self.accounted);
        self.mode = Mode::Hunting;
        self.window_len = 0;
        self.candidates = [None; MAX_CANDIDATES];
        self.position = base;
        self.accounted = base;
    }

    /// While hunting: no candidate, and no 0xff among the bytes that may still start a header.
    fn nothing_pending(&self) -> bool {
        self.candidates.iter().all(Option::is_none)
            && !self.window[..self.window_len].contains(&0xff)
    }

    /// Counts what hunting let go of as skipped.
    fn settle(&mut self) {
        let held = self.held_from();
        if held > self.accounted {
            self.skipped += held - self.accounted;
            self.accounted = held;
        }
    }

    /// Takes one byte outside a trusted frame's body; judges the header that it completes.
    fn step(&mut self, byte: u8) -> Option<AdtsEvent> {
        if self.window_len == HEADER_LEN {
            self.window.copy_within(1.., 0);
            self.window_len -= 1;
        }
        self.window[self.window_len] = byte;
        self.window_len += 1;
        self.position += 1;
        if self.window_len < HEADER_LEN {
            return None;
        }
        let at = self.position - HEADER_LEN as u64;
        let header = AdtsHeader::judge(&self.window);
        match self.mode {
            Mode::Trusted { last, next_at } if next_at == at => match header {
                Some(header) if header.same_stream(&last) => {
                    self.mode = Mode::Body {
                        frame: Pending { start: at, header },
                    };
                    self.window_len = 0;
                    None
                }
                _ => {
                    // Not the stream followed so far: hunt, from this position on.
                    self.mode = Mode::Hunting;
                    if let Some(header) = header {
                        self.add_candidate(Pending { start: at, header });
                    }
                    None
                }
            },
            Mode::Trusted { .. } => None,
            Mode::Body { .. } => None,
            Mode::Hunting => {
                let header = header?;
                // Candidates whose end has passed will never be confirmed.
                for slot in &mut self.candidates {
                    if slot.is_some_and(|c| c.end() < at) {
                        *slot = None;
                    }
                }
                let confirmed = self
                    .candidates
                    .iter()
                    .flatten()
                    .filter(|c| c.end() == at && c.header.same_stream(&header))
                    .min_by_key(|c| c.start)
                    .copied();
                match confirmed {
                    Some(candidate) => {
                        self.candidates = [None; MAX_CANDIDATES];
                        self.mode = Mode::Body {
                            frame: Pending { start: at, header },
                        };
                        self.window_len = 0;
                        self.report(candidate)
                    }
                    None => {
                        self.add_candidate(Pending { start: at, header });
                        None
                    }
                }
            }
        }
    }

    /// Follows one more candidate; with all slots taken, it replaces the one that ends
    /// farthest, if it ends sooner.
    fn add_candidate(&mut self, candidate: Pending) {
        if let Some(slot) = self.candidates.iter_mut().find(|c| c.is_none()) {
            *slot = Some(candidate);
            return;
        }
        if let Some(farthest) = self
            .candidates
            .iter_mut()
            .max_by_key(|c| c.map_or(0, |c| c.end()))
        {
            if farthest.is_some_and(|f| f.end() > candidate.end()) {
                *farthest = Some(candidate);
            }
        }
    }

    /// Hands out a frame, or says why it cannot be sent; what lay before it was skipped.
    fn report(&mut self, frame: Pending) -> Option<AdtsEvent> {
        self.skipped += frame.start.saturating_sub(self.accounted);
        self.accounted = frame.end();
        match frame.header.check() {
            Ok(config) => {
                let new_config = self.config != Some(config);
                self.config = Some(config);
                self.frames += 1;
                Some(AdtsEvent::Frame(AdtsFrame {
                    start: frame.start,
                    payload_start: frame.start + frame.header.header_len() as u64,
                    end: frame.end(),
                    header: frame.header,
                    config,
                    new_config,
                }))
            }
            Err(e) => {
                self.skipped += frame.end() - frame.start;
                Some(AdtsEvent::Unsupported(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::testing::hex;

    /// `ffmpeg -f lavfi -i sine=f=1000:d=0.1 -c:a aac -b:a 64k -ac 1 -ar 48000 -fflags +bitexact
    /// -flags:a +bitexact -f adts`: six frames that ffprobe reports as AAC LC, 48000 Hz, mono,
    /// 0.021333 s each, of these sizes.
    const FIXTURE: &[u8] = include_bytes!("../../tests/fixtures/sine-48k-mono.aac");
    const FIXTURE_SIZES: [u64; 6] = [248, 253, 141, 165, 171, 164];

    fn lc(rate: u32, channels: u8) -> AudioSpecificConfig {
        AudioSpecificConfig::lc(rate, channels).unwrap()
    }

    /// An ADTS frame of `config` with `payload_len` bytes of `fill`.
    fn frame(config: AudioSpecificConfig, payload_len: usize, fill: u8) -> Vec<u8> {
        let mut out = AdtsHeader::write(&config, payload_len).unwrap().to_vec();
        out.resize(HEADER_LEN + payload_len, fill);
        out
    }

    /// Every event of `data` fed in pieces of the given sizes (cycled), then `finish`.
    fn split(data: &[u8], pieces: &[usize]) -> (Vec<AdtsEvent>, AdtsSplitter) {
        let mut splitter = AdtsSplitter::new();
        let mut events = Vec::new();
        let mut offset = 0;
        let mut sizes = pieces.iter().cycle();
        while offset < data.len() {
            let size = (*sizes.next().unwrap()).max(1);
            let end = (offset + size).min(data.len());
            let mut at = offset;
            while at < end {
                let (used, event) = splitter.scan(&data[at..end], at as u64);
                at += used;
                events.extend(event);
            }
            offset = end;
        }
        splitter.finish();
        (events, splitter)
    }

    fn frames(events: &[AdtsEvent]) -> Vec<AdtsFrame> {
        events
            .iter()
            .filter_map(|e| match e {
                AdtsEvent::Frame(f) => Some(*f),
                AdtsEvent::Unsupported(_) => None,
            })
            .collect()
    }

    #[test]
    fn ffmpeg_headers_read_as_ffprobe_reports_them() {
        // 48 kHz mono, 44.1 kHz stereo and 16 kHz mono, each the first header FFmpeg wrote.
        let cases = [
            ("fff14c401f1ffc", 48000, 1, 248),
            ("fff15080299ffc", 44100, 2, 332),
            ("fff16040205ffc", 16000, 1, 258),
        ];
        for (bytes, rate, channels, len) in cases {
            let header = AdtsHeader::parse(&hex(bytes)).unwrap();
            assert_eq!(
                header,
                AdtsHeader {
                    mpeg2: false,
                    has_crc: false,
                    object_type: 2,
                    frequency_index: header.frequency_index,
                    channel_configuration: channels,
                    frame_length: len,
                    buffer_fullness: 0x7ff,
                    raw_data_blocks: 1,
                }
            );
            assert_eq!(header.sample_rate(), rate);
            assert_eq!(header.header_len(), 7);
            assert_eq!(header.samples(), 1024);
            assert_eq!(header.payload_len(), usize::from(len) - 7);
            assert_eq!(header.check(), Ok(lc(rate, channels)));
            // Written back the same (FFmpeg writes MPEG-4, no CRC, VBR fullness too).
            let written = AdtsHeader::write(&lc(rate, channels), header.payload_len()).unwrap();
            assert_eq!(written.to_vec(), hex(bytes));
        }
    }

    #[test]
    fn a_crc_makes_the_header_nine_bytes() {
        // protection_absent 0 (0xf0), MPEG-2 (ID 1: 0xf8): 48 kHz stereo, 20-byte frame.
        let bytes = hex("fff8 4c80 029f fc 1234");
        let header = AdtsHeader::parse(&bytes).unwrap();
        assert!(header.has_crc && header.mpeg2);
        assert_eq!(header.header_len(), 9);
        assert_eq!(header.payload_len(), 11);
        assert_eq!(header.check(), Ok(lc(48000, 2)));
        assert_eq!(
            AdtsHeader::parse(&bytes[..7]),
            Err(HeaderError::Incomplete(9))
        );
    }

    #[test]
    fn a_short_buffer_is_incomplete_not_an_error() {
        let bytes = hex("fff14c401f1ffc");
        for len in 0..7 {
            assert_eq!(
                AdtsHeader::parse(&bytes[..len]),
                Err(HeaderError::Incomplete(7)),
                "{len} bytes"
            );
        }
        // Not a header is said as soon as a byte shows it.
        assert_eq!(
            AdtsHeader::parse(&[0x12]),
            Err(HeaderError::NotAHeader(NotAHeader::Sync))
        );
    }

    #[test]
    fn what_is_not_a_header_is_said_by_field() {
        let not = |text: &str| match AdtsHeader::parse(&hex(text)) {
            Err(HeaderError::NotAHeader(why)) => why,
            other => panic!("{text}: {other:?}"),
        };
        assert_eq!(not("ffe14c401f1ffc"), NotAHeader::Sync);
        assert_eq!(not("fef14c401f1ffc"), NotAHeader::Sync);
        // layer 1, 2 and 3.
        assert_eq!(not("fff34c401f1ffc"), NotAHeader::Layer);
        assert_eq!(not("fff54c401f1ffc"), NotAHeader::Layer);
        assert_eq!(not("fff74c401f1ffc"), NotAHeader::Layer);
        // sampling_frequency_index 13 (reserved) and 15 (the escape, not allowed in ADTS).
        assert_eq!(not("fff17440 1f1ffc"), NotAHeader::FrequencyIndex(13));
        assert_eq!(not("fff17c40 1f1ffc"), NotAHeader::FrequencyIndex(15));
        // frame_length 7 (no room for a raw data block) and 9 with a CRC.
        assert_eq!(not("fff14c4000fffc"), NotAHeader::TooShort(7));
        assert_eq!(not("fff04c40013ffc"), NotAHeader::TooShort(9));
        // Mono: at most 768 bytes of raw data block; 776 = 7 + 769 is one too many.
        assert_eq!(not("fff14c40611ffc"), NotAHeader::TooLong(776));
        assert!(AdtsHeader::parse(&hex("fff14c4060fffc")).is_ok());
    }

    #[test]
    fn what_cannot_be_sent_is_said_by_name() {
        let check = |text: &str| AdtsHeader::parse(&hex(text)).unwrap().check();
        // profile 0 (AAC Main) and 3 (LTP): object types 1 and 4.
        assert_eq!(
            check("fff10c401f1ffc"),
            Err(AdtsError::Config(AacError::ObjectType(1)))
        );
        assert_eq!(
            check("fff1cc401f1ffc"),
            Err(AdtsError::Config(AacError::ObjectType(4)))
        );
        // Channel configurations 0 (program config element), 3 and 6.
        assert_eq!(
            check("fff14c001f1ffc"),
            Err(AdtsError::Config(AacError::ProgramConfig))
        );
        assert_eq!(
            check("fff14cc01f1ffc"),
            Err(AdtsError::Config(AacError::Channels(3)))
        );
        assert_eq!(
            check("fff14d801f1ffc"),
            Err(AdtsError::Config(AacError::Channels(6)))
        );
        // number_of_raw_data_blocks_in_frame 1: two blocks.
        assert_eq!(check("fff14c401f1ffd"), Err(AdtsError::RawDataBlocks(2)));
        let error: Error = AdtsError::RawDataBlocks(2).into();
        assert_eq!(error.fault(), crate::error::Fault::Input);
        assert!(error.to_string().contains("only 1 is supported"));
        let error: Error = AdtsError::Config(AacError::ObjectType(1)).into();
        assert!(error.to_string().contains("AAC Main"), "{error}");
    }

    #[test]
    fn headers_are_written_for_every_config_and_read_back() {
        for &rate in &crate::media::aac::SAMPLING_FREQUENCIES {
            for channels in 1..=2 {
                let config = lc(rate, channels);
                for len in [1, 100, 768 * usize::from(channels)] {
                    let bytes = AdtsHeader::write(&config, len).unwrap();
                    let header = AdtsHeader::parse(&bytes).unwrap();
                    assert_eq!(header.check(), Ok(config));
                    assert_eq!(header.payload_len(), len);
                }
            }
        }
        assert_eq!(AdtsHeader::write(&lc(48000, 1), MAX_FRAME_LEN - 6), None);
    }

    #[test]
    fn the_ffmpeg_file_splits_into_its_six_frames_by_reference() {
        let (events, splitter) = split(FIXTURE, &[FIXTURE.len()]);
        let frames = frames(&events);
        assert_eq!(frames.len(), 6);
        let mut start = 0;
        for (index, (frame, &size)) in frames.iter().zip(&FIXTURE_SIZES).enumerate() {
            assert_eq!((frame.start, frame.end), (start, start + size));
            assert_eq!(frame.payload(), start + 7..start + size);
            assert_eq!(frame.config, lc(48000, 1));
            assert_eq!(frame.new_config, index == 0);
            start += size;
        }
        assert_eq!(start, FIXTURE.len() as u64);
        assert_eq!(splitter.skipped_bytes(), 0);
        assert_eq!(splitter.frames(), 6);
    }

    #[test]
    fn a_trusted_frame_is_reported_with_its_last_byte() {
        let mut splitter = AdtsSplitter::new();
        // The first frame waits for the second header to confirm it.
        let first = FIXTURE_SIZES[0] as usize;
        assert_eq!(splitter.scan(&FIXTURE[..first + 6], 0), (first + 6, None));
        let (used, event) = splitter.scan(&FIXTURE[first + 6..], first as u64 + 6);
        assert_eq!(used, 1);
        assert!(matches!(event, Some(AdtsEvent::Frame(f)) if f.end == first as u64));
        // The second is reported as soon as its last byte is in, without the third header.
        let second_end = first + FIXTURE_SIZES[1] as usize;
        let at = first + 7;
        let (used, event) = splitter.scan(&FIXTURE[at..second_end], at as u64);
        assert_eq!(used, second_end - at);
        assert!(matches!(event, Some(AdtsEvent::Frame(f)) if f.end == second_end as u64));
        assert_eq!(splitter.held_from(), second_end as u64);
    }

    #[test]
    fn garbage_is_skipped_counted_and_followed_by_the_stream() {
        // Garbage with sync-like bytes, a header cut short and a lone 0xff at its end.
        let garbage = hex("00 ff 12 fff1 ff ff f1 4c 40 ff");
        let mut data = garbage.clone();
        data.extend_from_slice(FIXTURE);
        let (events, splitter) = split(&data, &[3, 1, 50]);
        let frames = frames(&events);
        assert_eq!(frames.len(), 6);
        assert_eq!(frames[0].start, garbage.len() as u64);
        assert_eq!(splitter.skipped_bytes(), garbage.len() as u64);
    }

    #[test]
    fn a_false_header_in_garbage_is_not_reported() {
        // A well-formed header of a 20-byte frame, then no header where it ends.
        let mut data = frame(lc(48000, 1), 13, 0x55);
        data.extend_from_slice(&[0x00; 30]);
        let real_at = data.len() as u64;
        for _ in 0..3 {
            data.extend_from_slice(&frame(lc(44100, 2), 40, 0x21));
        }
        let (events, splitter) = split(&data, &[7]);
        let frames = frames(&events);
        assert_eq!(frames.len(), 3);
        assert_eq!(frames[0].start, real_at);
        assert_eq!(frames[0].config, lc(44100, 2));
        assert_eq!(splitter.skipped_bytes(), real_at);
    }

    #[test]
    fn a_long_false_header_hides_nothing_inside_it() {
        // `ff f1 "garbage"` reads as a valid header (12 kHz, channel configuration 5) of a
        // 2963-byte frame: the real frames inside that span are found all the same.
        let garbage = b"\x00\xff\xf1garbage".to_vec();
        assert!(AdtsHeader::parse(&garbage[1..]).is_ok());
        let mut data = garbage.clone();
        for index in 0..40u8 {
            data.extend_from_slice(&frame(lc(44100, 2), 100, index));
        }
        let (events, splitter) = split(&data, &[100]);
        assert_eq!(frames(&events).len(), 40);
        assert_eq!(frames(&events)[0].start, garbage.len() as u64);
        assert_eq!(splitter.skipped_bytes(), garbage.len() as u64);
    }

    #[test]
    fn a_sync_word_inside_a_rejected_header_is_found() {
        // `ff f1 ff f1 4c 40 ..` reads as a header with sampling frequency index 15 (from the
        // second 0xff): rejected, and its third byte starts the real header.
        let mut data = hex("fff1");
        data.extend_from_slice(&frame(lc(48000, 1), 20, 0x11));
        data.extend_from_slice(&frame(lc(48000, 1), 20, 0x11));
        let (events, splitter) = split(&data, &[1]);
        assert_eq!(frames(&events).len(), 2);
        assert_eq!(frames(&events)[0].start, 2);
        assert_eq!(splitter.skipped_bytes(), 2);
    }

    #[test]
    fn a_corrupted_frame_costs_that_frame_only() {
        let config = lc(48000, 2);
        let mut data = Vec::new();
        for index in 0..10u8 {
            data.extend_from_slice(&frame(config, 30 + usize::from(index), index));
        }
        // Frame 4's header loses its sync word.
        let at = (0..4).map(|i| 37 + i).sum::<usize>();
        data[at] = 0x00;
        let (events, splitter) = split(&data, &[5]);
        let starts: Vec<u64> = frames(&events).iter().map(|f| f.start).collect();
        // Frames 0-3 out; 4 lost; 5, a candidate confirmed by 6, and the rest out.
        assert_eq!(starts.len(), 9);
        assert!(!starts.contains(&(at as u64)));
        assert_eq!(splitter.skipped_bytes(), 37 + 4);
        assert!(frames(&events).iter().skip(4).all(|f| !f.new_config));
    }

    #[test]
    fn a_new_configuration_is_confirmed_then_flagged() {
        let mut data = Vec::new();
        for _ in 0..3 {
            data.extend_from_slice(&frame(lc(48000, 1), 10, 1));
        }
        for _ in 0..3 {
            data.extend_from_slice(&frame(lc(44100, 2), 10, 2));
        }
        let (events, splitter) = split(&data, &[4]);
        let frames = frames(&events);
        let flags: Vec<(u32, bool)> = frames
            .iter()
            .map(|f| (f.config.sample_rate(), f.new_config))
            .collect();
        assert_eq!(
            flags,
            [
                (48000, true),
                (48000, false),
                (48000, false),
                (44100, true),
                (44100, false),
                (44100, false)
            ]
        );
        assert_eq!(splitter.skipped_bytes(), 0);
    }

    #[test]
    fn a_stream_that_cannot_be_sent_says_why_for_each_frame() {
        // AAC Main (profile 0), well-formed: confirmed, then refused.
        let mut main = frame(lc(48000, 1), 10, 0);
        main[2] &= 0x3f;
        let data: Vec<u8> = main.iter().copied().cycle().take(main.len() * 3).collect();
        let (events, splitter) = split(&data, &[100]);
        assert_eq!(
            events,
            vec![AdtsEvent::Unsupported(AdtsError::Config(AacError::ObjectType(1))); 3]
        );
        assert_eq!(splitter.skipped_bytes(), data.len() as u64);
        // Two raw data blocks per frame.
        let mut two = frame(lc(48000, 1), 10, 0);
        two[6] |= 1;
        let data: Vec<u8> = two.iter().copied().cycle().take(two.len() * 2).collect();
        let (events, _) = split(&data, &[100]);
        assert_eq!(
            events[0],
            AdtsEvent::Unsupported(AdtsError::RawDataBlocks(2))
        );
    }

    #[test]
    fn crc_frames_carry_their_raw_block_after_the_crc() {
        let mut one = hex("fff04c80029ffc beef");
        one.extend_from_slice(&[0x42; 11]);
        let data = [one.clone(), one.clone()].concat();
        let (events, _) = split(&data, &[2]);
        let frames = frames(&events);
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].payload(), 9..20);
        assert_eq!(frames[1].payload(), 29..40);
    }

    #[test]
    fn the_end_of_input_drops_what_is_held_and_a_gap_restarts() {
        // A lone frame is a candidate that nothing confirms: skipped at the end.
        let one = frame(lc(48000, 1), 10, 3);
        let (events, splitter) = split(&one, &[100]);
        assert!(events.is_empty());
        assert_eq!(splitter.skipped_bytes(), one.len() as u64);
        // A gap (a piece not at `position`): what was held is skipped, the new bytes followed.
        let mut splitter = AdtsSplitter::new();
        let two = [one.clone(), one.clone()].concat();
        let (used, _) = splitter.scan(&two[..20], 0);
        assert_eq!(used, 20);
        assert_eq!(splitter.held_from(), 0);
        let mut at = 0;
        let mut events = Vec::new();
        while at < two.len() {
            let (used, event) = splitter.scan(&two[at..], 1000 + at as u64);
            at += used;
            events.extend(event);
        }
        assert_eq!(splitter.skipped_bytes(), 20);
        assert_eq!(frames(&events)[0].start, 1000);
        assert!(frames(&events)[0].new_config);
    }

    #[test]
    fn a_reset_flags_the_next_frame_as_new() {
        let mut splitter = AdtsSplitter::new();
        let feed = |splitter: &mut AdtsSplitter, data: &[u8], base: u64| {
            let mut events = Vec::new();
            let mut at = 0;
            while at < data.len() {
                let (used, event) = splitter.scan(&data[at..], base + at as u64);
                at += used;
                events.extend(event);
            }
            frames(&events)
        };
        let got = feed(&mut splitter, FIXTURE, 0);
        assert_eq!(got.len(), 6);
        splitter.reset(5000);
        let got = feed(&mut splitter, FIXTURE, 5000);
        assert_eq!(got.len(), 6);
        assert!(got[0].new_config && got[0].start == 5000);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// Frames, garbage and corruptions.
        fn stream() -> impl Strategy<Value = Vec<u8>> {
            let piece = prop_oneof![
                4 => (1usize..60, any::<u8>(), prop::bool::ANY).prop_map(|(len, fill, stereo)| {
                    frame(lc(if stereo { 44100 } else { 48000 }, 1 + u8::from(stereo)), len, fill)
                }),
                1 => proptest::collection::vec(
                    prop_oneof![Just(0xffu8), Just(0xf1u8), Just(0x4cu8), any::<u8>()], 0..12),
            ];
            proptest::collection::vec(piece, 0..12).prop_map(|pieces| pieces.concat())
        }

        proptest! {
            #[test]
            fn piece_sizes_do_not_change_what_is_found(
                data in stream(),
                sizes in proptest::collection::vec(1usize..40, 1..6),
            ) {
                let (whole, whole_splitter) = split(&data, &[data.len().max(1)]);
                let (pieces, splitter) = split(&data, &sizes);
                prop_assert_eq!(&pieces, &whole);
                prop_assert_eq!(splitter.skipped_bytes(), whole_splitter.skipped_bytes());
            }

            #[test]
            fn every_byte_is_reported_or_skipped(
                data in stream(),
                sizes in proptest::collection::vec(1usize..40, 1..6),
            ) {
                let (events, splitter) = split(&data, &sizes);
                let frames = frames(&events);
                let mut previous_end = 0;
                let mut reported = 0;
                for frame in &frames {
                    prop_assert!(frame.start >= previous_end);
                    prop_assert!(frame.start < frame.payload_start);
                    prop_assert!(frame.payload_start < frame.end);
                    prop_assert!(frame.end <= data.len() as u64);
                    let bytes = &data[frame.start as usize..frame.end as usize];
                    prop_assert_eq!(AdtsHeader::parse(bytes).map(|h| h.frame_len()),
                                    Ok(bytes.len()));
                    previous_end = frame.end;
                    reported += frame.end - frame.start;
                }
                prop_assert_eq!(reported + splitter.skipped_bytes(), data.len() as u64);
            }
        }
    }
}
