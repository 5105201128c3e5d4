//! AAC-LC as FLV carries it: the AudioSpecificConfig of the sequence header (ISO/IEC 14496-3
//! §1.6.2.1), and a silent raw frame for a track with no device (`--audio silence`).
//!
//! Only AAC-LC (audio object type 2) is built or accepted, with 1024-sample frames, mono or
//! stereo, at one of the 13 sampling frequencies of the standard's index table (96000 to
//! 7350 Hz). A configuration is therefore always the 2-byte form. Parsing also reads the 24-bit
//! frequency escape (index 15), but a frequency that is not in the table is refused: every
//! encoder, ingest and player handles the indexed rates, and the audio input converts to one.
//! Parsing tolerates what an AAC-LC decoder may ignore: the backward-compatible extension that
//! says "no SBR" (FFmpeg's encoder writes it: `11 88 56 e5 00`) and trailing bits; it refuses
//! explicit SBR or PS (HE-AAC), a program config element (channel configuration 0), more than
//! two channels and 960-sample frames, each with an error that names the setting.
//!
//! The silent frames ([`silent_frame`]) are raw_data_blocks (§4.4.2.1) built here, field by
//! field, from the syntax: one channel element whose `max_sfb` is 0, so it carries no section,
//! scale factor or spectral data at all (the decoder outputs zeros), then ID_END. With no
//! scale factor band, nothing depends on the sampling frequency: the same bytes serve every rate.
//!
//! Invariants: an [`AudioSpecificConfig`] always holds an indexed rate and 1 or 2 channels, so
//! writing it cannot fail; nothing here allocates or panics, whatever the input.

use std::fmt;

/// Samples per channel in one AAC-LC frame (frameLengthFlag 0).
pub const SAMPLES_PER_FRAME: u32 = 1024;

/// How long one AAC frame lasts at `rate` Hz (0 is taken as 1).
pub fn frame_duration(rate: u32) -> std::time::Duration {
    std::time::Duration::from_nanos(
        u64::from(SAMPLES_PER_FRAME) * 1_000_000_000 / u64::from(rate.max(1)),
    )
}

/// Audio object type of AAC-LC (Low Complexity).
pub const OBJECT_TYPE_LC: u8 = 2;

/// The sampling frequencies of samplingFrequencyIndex 0..=12 (ISO/IEC 14496-3 Table 1.18); 13
/// and 14 are reserved, 15 is the escape to an explicit 24-bit frequency.
pub const SAMPLING_FREQUENCIES: [u32; 13] = [
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
];

/// samplingFrequencyIndex of `rate`, if it has one.
pub fn sampling_frequency_index(rate: u32) -> Option<u8> {
    SAMPLING_FREQUENCIES
        .iter()
        .position(|&r| r == rate)
        .map(|index| index as u8)
}

/// Why an AAC configuration cannot be used. Built from settings, it is the configuration's
/// fault; read from an input (ADTS headers, an encoder's output), the input's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AacError {
    /// Not AAC-LC: the audio object type (1 Main, 3 SSR, 4 LTP, 5 SBR, 29 PS, ...).
    ObjectType(u8),
    /// HE-AAC signalled inside an AAC-LC configuration (explicit SBR or PS extension).
    Sbr,
    /// A channel configuration other than 1 (mono) or 2 (stereo): 3 to 7 are multichannel
    /// layouts, 8 and above reserved (as a count when built from settings).
    Channels(u8),
    /// Channel configuration 0: the layout is in a program config element, which is not read.
    ProgramConfig,
    /// A sampling frequency outside the index table (or a sample rate setting not in it).
    SampleRate(u32),
    /// samplingFrequencyIndex 13 or 14 (reserved).
    ReservedFrequencyIndex(u8),
    /// frameLengthFlag 1: 960-sample frames.
    FrameLength960,
    /// dependsOnCoreCoder 1: a scalable configuration, not plain AAC-LC.
    CoreCoder,
    /// The configuration ends before its last field.
    Truncated,
}

impl fmt::Display for AacError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AacError::ObjectType(5) | AacError::ObjectType(29) | AacError::Sbr => {
                write!(f, "HE-AAC (SBR/PS) is not supported, only AAC-LC")
            }
            AacError::ObjectType(t) => write!(
                f,
                "AAC audio object type {t} ({}) is not supported, only AAC-LC (2)",
                object_type_name(*t)
            ),
            AacError::Channels(n) => write!(
                f,
                "channel configuration {n} is not supported, only mono (1) and stereo (2)"
            ),
            AacError::ProgramConfig => write!(
                f,
                "channel configuration 0 (layout in a program config element) is not supported, \
                 only mono (1) and stereo (2)"
            ),
            AacError::SampleRate(rate) => write!(
                f,
                "sample rate {rate} Hz is not one of AAC's indexed rates ({})",
                IndexedRates
            ),
            AacError::ReservedFrequencyIndex(i) => {
                write!(f, "sampling frequency index {i} is reserved")
            }
            AacError::FrameLength960 => write!(f, "960-sample AAC frames are not supported"),
            AacError::CoreCoder => write!(
                f,
                "a scalable AAC configuration (core coder) is not supported"
            ),
            AacError::Truncated => write!(f, "the AudioSpecificConfig is truncated"),
        }
    }
}

impl std::error::Error for AacError {}

/// The indexed rates, for messages.
struct IndexedRates;

impl fmt::Display for IndexedRates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, rate) in SAMPLING_FREQUENCIES.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{rate}")?;
        }
        Ok(())
    }
}

fn object_type_name(object_type: u8) -> &'static str {
    match object_type {
        0 => "null",
        1 => "AAC Main",
        2 => "AAC-LC",
        3 => "AAC SSR",
        4 => "AAC LTP",
        5 => "SBR",
        6 => "AAC Scalable",
        17 => "ER AAC-LC",
        23 => "ER AAC-LD",
        29 => "PS",
        39 => "ER AAC-ELD",
        _ => "other",
    }
}

/// An AAC-LC AudioSpecificConfig: 1024-sample frames at an indexed rate, mono or stereo.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AudioSpecificConfig {
    sample_rate: u32,
    channels: u8,
}

impl AudioSpecificConfig {
    /// AAC-LC at `sample_rate` Hz (one of [`SAMPLING_FREQUENCIES`]) with 1 or 2 channels.
    pub fn lc(sample_rate: u32, channels: u8) -> Result<Self, AacError> {
        if sampling_frequency_index(sample_rate).is_none() {
            return Err(AacError::SampleRate(sample_rate));
        }
        if !(1..=2).contains(&channels) {
            return Err(AacError::Channels(channels));
        }
        Ok(AudioSpecificConfig {
            sample_rate,
            channels,
        })
    }

    /// From the fields an ADTS header carries: profile + 1 is the object type.
    pub fn from_fields(
        object_type: u8,
        frequency_index: u8,
        channel_configuration: u8,
    ) -> Result<Self, AacError> {
        if object_type != OBJECT_TYPE_LC {
            return Err(AacError::ObjectType(object_type));
        }
        let rate = *SAMPLING_FREQUENCIES
            .get(usize::from(frequency_index))
            .ok_or(AacError::ReservedFrequencyIndex(frequency_index))?;
        match channel_configuration {
            0 => Err(AacError::ProgramConfig),
            1 | 2 => Self::lc(rate, channel_configuration),
            n => Err(AacError::Channels(n)),
        }
    }

    pub fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    pub fn channels(&self) -> u8 {
        self.channels
    }

    /// samplingFrequencyIndex (0..=12).
    pub fn frequency_index(&self) -> u8 {
        // The constructors admit only indexed rates.
        sampling_frequency_index(self.sample_rate).unwrap_or(0)
    }

    /// The 2-byte AudioSpecificConfig: audioObjectType 2 (5 bits), samplingFrequencyIndex (4),
    /// channelConfiguration (4), then GASpecificConfig: frameLengthFlag 0, dependsOnCoreCoder
    /// 0, extensionFlag 0.
    pub fn to_bytes(&self) -> [u8; 2] {
        let bits = (u16::from(OBJECT_TYPE_LC) << 11)
            | (u16::from(self.frequency_index()) << 7)
            | (u16::from(self.channels) << 3);
        bits.to_be_bytes()
    }

    /// Reads an AudioSpecificConfig and accepts it if it is plain AAC-LC (see the module's
    /// notes for what is tolerated).
    pub fn parse(bytes: &[u8]) -> Result<Self, AacError> {
        let mut bits = Bits::new(bytes);
        let mut object_type = bits.read(5)?;
        if object_type == 31 {
            object_type = 32 + bits.read(6)?;
        }
        let index = bits.read(4)? as u8;
        let rate = match index {
            0..=12 => SAMPLING_FREQUENCIES[usize::from(index)],
            13 | 14 => return Err(AacError::ReservedFrequencyIndex(index)),
            _ => bits.read(24)?,
        };
        let channel_configuration = bits.read(4)? as u8;
        if object_type != u32::from(OBJECT_TYPE_LC) {
            return Err(AacError::ObjectType(object_type.min(255) as u8));
        }
        match channel_configuration {
            0 => return Err(AacError::ProgramConfig),
            1 | 2 => {}
            n => return Err(AacError::Channels(n)),
        }
        // GASpecificConfig.
        if bits.read(1)? == 1 {
            return Err(AacError::FrameLength960);
        }
        if bits.read(1)? == 1 {
            return Err(AacError::CoreCoder);
        }
        if bits.read(1)? == 1 {
            // extensionFlag: for AAC-LC only extensionFlag3 follows, reserved and ignored.
            bits.read(1)?;
        }
        // Backward-compatible signalling of an extension: syncExtensionType 0x2b7, then
        // extensionAudioObjectType; SBR (5) with sbrPresentFlag 1 makes this HE-AAC.
        if bits.remaining() >= 16 && bits.read(11)? == 0x2b7 {
            let extension = bits.read(5)?;
            if extension == 5 && bits.remaining() >= 1 && bits.read(1)? == 1 {
                return Err(AacError::Sbr);
            }
        }
        let config = Self::lc(rate, channel_configuration)?;
        Ok(config)
    }
}

/// Reads bits, most significant first, from a byte slice.
struct Bits<'a> {
    data: &'a [u8],
    /// Bits consumed.
    pos: usize,
}

impl<'a> Bits<'a> {
    fn new(data: &'a [u8]) -> Self {
        Bits { data, pos: 0 }
    }

    fn remaining(&self) -> usize {
        (self.data.len() * 8).saturating_sub(self.pos)
    }

    /// u(n) for n <= 32.
    fn read(&mut self, count: usize) -> Result<u32, AacError> {
        if count > 32 || count > self.remaining() {
            return Err(AacError::Truncated);
        }
        let mut value = 0u32;
        for _ in 0..count {
            let byte = self.data[self.pos / 8];
            let bit = (byte >> (7 - self.pos % 8)) & 1;
            value = (value << 1) | u32::from(bit);
            self.pos += 1;
        }
        Ok(value)
    }
}

/// Writes bits, most significant first, into at most 8 bytes, at compile time.
#[derive(Clone, Copy)]
struct BitWriter {
    bytes: [u8; 8],
    /// Bits written.
    len: usize,
}

impl BitWriter {
    const fn new() -> Self {
        BitWriter {
            bytes: [0; 8],
            len: 0,
        }
    }

    /// Appends the low `count` bits of `value`.
    const fn put(self, value: u32, count: usize) -> Self {
        let mut bytes = self.bytes;
        let mut len = self.len;
        let mut i = count;
        while i > 0 {
            i -= 1;
            if (value >> i) & 1 == 1 {
                bytes[len / 8] |= 0x80 >> (len % 8);
            }
            len += 1;
        }
        BitWriter { bytes, len }
    }

    /// byte_alignment(): zero bits up to the next byte boundary.
    const fn align(self) -> Self {
        BitWriter {
            bytes: self.bytes,
            len: self.len.div_ceil(8) * 8,
        }
    }

    /// The first `N` bytes; `N` must be the written length in bytes (checked at compile time
    /// by the constants that use it).
    const fn take<const N: usize>(self) -> [u8; N] {
        assert!(self.len == N * 8);
        let mut out = [0u8; N];
        let mut i = 0;
        while i < N {
            out[i] = self.bytes[i];
            i += 1;
        }
        out
    }
}

/// Syntactic element ids (ISO/IEC 14496-3 Table 4.85).
const ID_SCE: u32 = 0;
const ID_CPE: u32 = 1;
const ID_END: u32 = 7;
/// global_gain of the silent channels. With max_sfb 0 no scale factor is decoded from it, so any
/// value does; 140 is what FFmpeg's encoder writes for digital silence, which makes these frames
/// byte for byte the ones it writes.
const SILENT_GLOBAL_GAIN: u32 = 140;
/// window_shape 1 (KBD), as FFmpeg writes it too: with all-zero spectra the shape is moot.
const SILENT_WINDOW_SHAPE: u32 = 1;

/// ics_info() of a long window with no scale factor band: ics_reserved_bit 0, window_sequence
/// ONLY_LONG_SEQUENCE (0), window_shape, max_sfb 0 (6 bits), predictor_data_present 0.
const fn silent_ics_info(w: BitWriter) -> BitWriter {
    w.put(0, 1)
        .put(0, 2)
        .put(SILENT_WINDOW_SHAPE, 1)
        .put(0, 6)
        .put(0, 1)
}

/// The rest of an individual_channel_stream() after ics_info, with max_sfb 0: section_data(),
/// scale_factor_data() and spectral_data() have no band to describe and take no bits; then
/// pulse_data_present 0, tns_data_present 0, gain_control_data_present 0.
const fn silent_ics_tail(w: BitWriter) -> BitWriter {
    w.put(0, 1).put(0, 1).put(0, 1)
}

/// Mono: SCE (element_instance_tag 0; individual_channel_stream(0, 0): global_gain, ics_info,
/// no data, three absent tools), ID_END, byte alignment: 29 + 3 = 32 bits.
const SILENT_MONO: [u8; 4] = {
    let w = BitWriter::new().put(ID_SCE, 3).put(0, 4);
    let w = silent_ics_info(w.put(SILENT_GLOBAL_GAIN, 8));
    silent_ics_tail(w).put(ID_END, 3).align().take::<4>()
};

/// Stereo: CPE (element_instance_tag 0, common_window 1, one ics_info for both channels,
/// ms_mask_present 0), then two individual_channel_stream(1, 0) of global_gain and the three
/// absent tools, ID_END, byte alignment: 43 + 3 + 2 = 48 bits.
const SILENT_STEREO: [u8; 6] = {
    let w = BitWriter::new().put(ID_CPE, 3).put(0, 4).put(1, 1);
    let w = silent_ics_info(w).put(0, 2);
    let w = silent_ics_tail(w.put(SILENT_GLOBAL_GAIN, 8));
    let w = silent_ics_tail(w.put(SILENT_GLOBAL_GAIN, 8));
    w.put(ID_END, 3).align().take::<6>()
};

/// A raw AAC-LC frame (1024 samples of silence per channel) for 1 or 2 channels, at any rate;
/// `None` for another channel count.
pub fn silent_frame(channels: u8) -> Option<&'static [u8]> {
    match channels {
        1 => Some(&SILENT_MONO),
        2 => Some(&SILENT_STEREO),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::testing::hex;

    #[test]
    fn the_two_byte_form_for_every_indexed_rate() {
        // audioObjectType 00010, index, channels, 000: 48 kHz mono is 0x1188 (as FFmpeg's
        // sequence header `af 00 11 88 56 e5 00` starts), 44.1 kHz stereo 0x1210.
        let cases = [
            (48000, 1, [0x11, 0x88]),
            (48000, 2, [0x11, 0x90]),
            (44100, 1, [0x12, 0x08]),
            (44100, 2, [0x12, 0x10]),
            (32000, 1, [0x12, 0x88]),
            (22050, 2, [0x13, 0x90]),
            (16000, 1, [0x14, 0x08]),
            (96000, 2, [0x10, 0x10]),
            (7350, 1, [0x16, 0x08]),
        ];
        for (rate, channels, bytes) in cases {
            let config = AudioSpecificConfig::lc(rate, channels).unwrap();
            assert_eq!(config.to_bytes(), bytes, "{rate} Hz, {channels} channels");
            assert_eq!(AudioSpecificConfig::parse(&bytes), Ok(config));
        }
        for (index, &rate) in SAMPLING_FREQUENCIES.iter().enumerate() {
            for channels in 1..=2 {
                let config = AudioSpecificConfig::lc(rate, channels).unwrap();
                assert_eq!(usize::from(config.frequency_index()), index);
                assert_eq!(AudioSpecificConfig::parse(&config.to_bytes()), Ok(config));
            }
        }
    }

    #[test]
    fn ffmpeg_sequence_headers_parse_as_the_config_we_build() {
        // The AudioSpecificConfig of FFmpeg 5.1's `-c:a aac -f flv` (the sequence header tag
        // after `af 00`): two bytes, then syncExtensionType 0x2b7, SBR (5), sbrPresentFlag 0.
        let cases = [
            ("118856e500", 48000, 1),
            ("121056e500", 44100, 2),
            ("128856e500", 32000, 1),
            ("139056e500", 22050, 2),
            ("140856e500", 16000, 1),
        ];
        for (bytes, rate, channels) in cases {
            let ours = AudioSpecificConfig::lc(rate, channels).unwrap();
            let theirs = hex(bytes);
            assert_eq!(AudioSpecificConfig::parse(&theirs), Ok(ours), "{bytes}");
            assert_eq!(&theirs[..2], &ours.to_bytes());
        }
    }

    #[test]
    fn what_is_not_plain_aac_lc_is_refused_by_name() {
        let parse = |text: &str| AudioSpecificConfig::parse(&hex(text));
        // Main (1), SSR (3), LTP (4), SBR (5): 5-bit object types.
        assert_eq!(parse("0988"), Err(AacError::ObjectType(1)));
        assert_eq!(parse("1988"), Err(AacError::ObjectType(3)));
        assert_eq!(parse("2188"), Err(AacError::ObjectType(4)));
        assert_eq!(parse("2b8a"), Err(AacError::ObjectType(5)));
        // The escape: 11111 then 6 bits (ER AAC-ELD, 39 = 32 + 7).
        assert_eq!(parse("f8e6 2000"), Err(AacError::ObjectType(39)));
        // Explicit SBR after the LC config: HE-AAC.
        assert_eq!(parse("1188 56e5 80"), Err(AacError::Sbr));
        // Channel configurations 0 (PCE) and 6 (5.1).
        assert_eq!(parse("1180"), Err(AacError::ProgramConfig));
        assert_eq!(parse("11b0"), Err(AacError::Channels(6)));
        // Reserved index 13; frameLengthFlag 1; dependsOnCoreCoder 1.
        assert_eq!(parse("1688"), Err(AacError::ReservedFrequencyIndex(13)));
        assert_eq!(parse("118c"), Err(AacError::FrameLength960));
        assert_eq!(parse("118a"), Err(AacError::CoreCoder));
        assert_eq!(parse("11"), Err(AacError::Truncated));
        assert_eq!(parse(""), Err(AacError::Truncated));
        // Building: a rate outside the table, three channels, none.
        assert_eq!(
            AudioSpecificConfig::lc(37800, 1),
            Err(AacError::SampleRate(37800))
        );
        assert_eq!(
            AudioSpecificConfig::lc(48000, 3),
            Err(AacError::Channels(3))
        );
        assert_eq!(
            AudioSpecificConfig::lc(48000, 0),
            Err(AacError::Channels(0))
        );
        let message = AacError::ObjectType(1).to_string();
        assert!(message.contains("AAC Main") && message.contains("only AAC-LC"));
        assert!(AacError::SampleRate(37800)
            .to_string()
            .contains("48000, 44100"));
        assert!(AacError::Sbr.to_string().contains("HE-AAC"));
    }

    #[test]
    fn the_frequency_escape_is_read_and_unindexed_rates_refused() {
        // 00010 1111 then 24 bits of frequency, channels 0001, 000.
        let escaped = |rate: u32| {
            let bits =
                (u64::from(OBJECT_TYPE_LC) << 35) | (0xf << 31) | (u64::from(rate) << 7) | (1 << 3);
            bits.to_be_bytes()[3..].to_vec()
        };
        assert_eq!(
            AudioSpecificConfig::parse(&escaped(48000)),
            AudioSpecificConfig::lc(48000, 1)
        );
        assert_eq!(
            AudioSpecificConfig::parse(&escaped(37800)),
            Err(AacError::SampleRate(37800))
        );
    }

    #[test]
    fn silent_frames_are_what_ffmpeg_writes_for_digital_silence() {
        // `ffmpeg -f lavfi -i anullsrc=r=48000:cl=mono -c:a aac -f adts`, every frame after the
        // first (which carries FFmpeg's name in a fill element); likewise cl=stereo.
        assert_eq!(silent_frame(1), Some(&hex("01182007")[..]));
        assert_eq!(silent_frame(2), Some(&hex("211004608c1c")[..]));
        assert_eq!(silent_frame(0), None);
        assert_eq!(silent_frame(3), None);
    }

    #[test]
    fn silent_frames_decode_field_by_field() {
        // Read back with the syntax: SCE, tag 0, global_gain, ics_info (max_sfb 0), no tools, END.
        let mono = silent_frame(1).unwrap();
        let mut bits = Bits::new(mono);
        let fields: Vec<u32> = [3, 4, 8, 1, 2, 1, 6, 1, 1, 1, 1, 3]
            .iter()
            .map(|&n| bits.read(n).unwrap())
            .collect();
        assert_eq!(fields, [ID_SCE, 0, 140, 0, 0, 1, 0, 0, 0, 0, 0, ID_END]);
        assert_eq!(bits.remaining(), 0);
        // CPE, tag 0, common_window 1, ics_info, ms_mask_present 0, two channels, END, padding.
        let stereo = silent_frame(2).unwrap();
        let mut bits = Bits::new(stereo);
        let fields: Vec<u32> = [3, 4, 1, 1, 2, 1, 6, 1, 2, 8, 1, 1, 1, 8, 1, 1, 1, 3, 2]
            .iter()
            .map(|&n| bits.read(n).unwrap())
            .collect();
        assert_eq!(
            fields,
            [ID_CPE, 0, 1, 0, 0, 1, 0, 0, 0, 140, 0, 0, 0, 140, 0, 0, 0, ID_END, 0]
        );
        assert_eq!(bits.remaining(), 0);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn parsing_never_panics_and_accepts_only_what_it_can_rebuild(
                bytes in proptest::collection::vec(any::<u8>(), 0..12)
            ) {
                if let Ok(config) = AudioSpecificConfig::parse(&bytes) {
                    prop_assert!(config.channels() == 1 || config.channels() == 2);
                    prop_assert_eq!(AudioSpecificConfig::parse(&config.to_bytes()), Ok(config));
                }
            }
        }
    }
}
