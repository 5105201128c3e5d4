//! AAC-LC encoding of captured PCM: interleaved signed 16-bit samples in, one raw AAC-LC frame
//! (a raw_data_block, as FLV carries it) out per 1024 samples of each channel.
//!
//! The encoder is the Fraunhofer FDK AAC library (feature `aac-encoder`, on by default), through
//! the safe `fdk-aac` crate: constant bitrate, no transport framing, no SBR, afterburner off (the
//! crate does not expose it). Why this library, and what its licence asks of whoever ships the
//! binary: the README's "Why FDK AAC" and bench/aac/REPORT.md. Built without the feature,
//! [`AacEncoder::new`] is a configuration error that says so and names what works without an
//! encoder (`--audio silence`, or an ADTS source of AAC already encoded).
//!
//! Invariants:
//! - Only what [`check_settings`] admits reaches FDK: an indexed rate of
//!   [`crate::config::AUDIO_RATES`], 1 or 2 channels, 8 to 512 kbit/s, and no more than FDK's
//!   ceiling of 6144 bits a frame per channel, which FDK would otherwise lower silently. Anything
//!   else is a [`Fault::Config`] error naming the combination.
//! - The AudioSpecificConfig FDK reports is checked at construction against
//!   [`AudioSpecificConfig::lc`] of the settings: the sequence header says what the frames are.
//! - [`AacEncoder::encode`] takes exactly one frame ([`AacEncoder::samples_per_frame`]) and gives
//!   at most one frame, written into a buffer allocated once by [`AacEncoder::new`]: no heap
//!   allocation per frame, here or (measured in bench/aac/REPORT.md) inside FDK.
//! - Nothing here panics. A failure of FDK while encoding, or a frame of the wrong length, is a
//!   [`Fault::Ours`] error: the settings were checked, so it is a bug, not the user's doing.
//! - Output frame k starts [`AacEncoder::delay_samples`] samples before input sample k × 1024 (per
//!   channel): the caller stamps it at that input sample minus the delay.
//!
//! No unsafe code: the `fdk-aac` crate holds it.

use crate::error::{Error, Result};
use crate::media::aac::{AudioSpecificConfig, SAMPLES_PER_FRAME};

/// What `--version` says about the AAC encoder of this build.
#[cfg(feature = "aac-encoder")]
pub const ENCODER_DESCRIPTION: &str = "AAC encoder: Fraunhofer FDK AAC (see LICENSES/FDK-AAC.txt)";
/// What `--version` says about the AAC encoder of this build.
#[cfg(not(feature = "aac-encoder"))]
pub const ENCODER_DESCRIPTION: &str = "no AAC encoder in this build";

/// Lowest bitrate taken, bits per second.
pub const MIN_BITRATE: u32 = 8_000;
/// Highest bitrate taken, bits per second (if the rate and channels allow it: [`max_bitrate`]).
pub const MAX_BITRATE: u32 = 512_000;

/// FDK's ceiling for one frame of one channel (MIN_BUFSIZE_PER_EFF_CHAN in libAACenc's aacenc.h):
/// the bit reservoir of AAC-LC's decoder buffer model.
const MAX_BITS_PER_CHANNEL_FRAME: u64 = 6144;

/// The highest bitrate FDK encodes at `sample_rate` with `channels`: 6144 bits a frame per
/// channel (288,000 bit/s a channel at 48 kHz, 96,000 at 16 kHz). Asked for more, FDK would lower
/// it without a word, so [`check_settings`] refuses it instead.
pub fn max_bitrate(sample_rate: u32, channels: u8) -> u32 {
    let max = MAX_BITS_PER_CHANNEL_FRAME * u64::from(channels) * u64::from(sample_rate)
        / u64::from(SAMPLES_PER_FRAME);
    max.min(u64::from(MAX_BITRATE)) as u32
}

/// Checks settings before they reach an encoder, and gives the AudioSpecificConfig they make.
pub fn check_settings(sample_rate: u32, channels: u8, bitrate: u32) -> Result<AudioSpecificConfig> {
    if !crate::config::AUDIO_RATES.contains(&sample_rate) {
        return Err(Error::config(format!(
            "the AAC encoder takes sample rates 48000, 44100, 32000, 22050 and 16000 Hz, not \
             {sample_rate}"
        )));
    }
    let config = AudioSpecificConfig::lc(sample_rate, channels)
        .map_err(|e| Error::config(format!("AAC encoder: {e}")))?;
    let max = max_bitrate(sample_rate, channels);
    if !(MIN_BITRATE..=max).contains(&bitrate) {
        return Err(Error::config(format!(
            "the AAC encoder cannot encode {bitrate} bit/s at {sample_rate} Hz {}: it takes \
             {MIN_BITRATE} to {max} bit/s there",
            channel_name(channels)
        )));
    }
    Ok(config)
}

fn channel_name(channels: u8) -> &'static str {
    match channels {
        1 => "mono",
        _ => "stereo",
    }
}

/// An AAC-LC encoder for one audio track. See the module's notes.
pub struct AacEncoder {
    #[cfg(feature = "aac-encoder")]
    encoder: fdk_aac::enc::Encoder,
    /// No encoder in this build: no value of this type exists.
    #[cfg(not(feature = "aac-encoder"))]
    encoder: std::convert::Infallible,
    config: AudioSpecificConfig,
    bitrate: u32,
    delay: u32,
    /// One frame's worth of output, the most FDK writes for a frame (maxOutBufBytes).
    out: Box<[u8]>,
}

impl std::fmt::Debug for AacEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AacEncoder")
            .field("config", &self.config)
            .field("bitrate", &self.bitrate)
            .field("delay", &self.delay)
            .finish_non_exhaustive()
    }
}

impl AacEncoder {
    /// An encoder of `channels` interleaved channels at `sample_rate` Hz, constant `bitrate` bit/s.
    #[cfg(feature = "aac-encoder")]
    pub fn new(sample_rate: u32, channels: u8, bitrate: u32) -> Result<AacEncoder> {
        use fdk_aac::enc::{
            AudioObjectType, BitRate, ChannelMode, Encoder, EncoderParams, Transport,
        };

        let config = check_settings(sample_rate, channels, bitrate)?;
        let combination = format!(
            "{bitrate} bit/s at {sample_rate} Hz {}",
            channel_name(channels)
        );
        let encoder = Encoder::new(EncoderParams {
            bit_rate: BitRate::Cbr(bitrate),
            sample_rate,
            transport: Transport::Raw,
            channels: match channels {
                1 => ChannelMode::Mono,
                _ => ChannelMode::Stereo,
            },
            audio_object_type: AudioObjectType::Mpeg4LowComplexity,
        })
        .map_err(|e| {
            Error::config(format!(
                "the AAC encoder (FDK AAC) refuses {combination}: {e}"
            ))
        })?;
        let info = encoder.info().map_err(|e| {
            Error::ours(format!(
                "FDK AAC gives no encoder information for {combination}: {e}"
            ))
        })?;
        let size = (info.confSize as usize).min(info.confBuf.len());
        let reported = AudioSpecificConfig::parse(&info.confBuf[..size]).map_err(|e| {
            Error::ours(format!(
                "FDK AAC's AudioSpecificConfig {:02x?} for {combination}: {e}",
                &info.confBuf[..size]
            ))
        })?;
        if reported != config {
            return Err(Error::ours(format!(
                "FDK AAC configured {reported:?} when asked for {config:?} ({combination})"
            )));
        }
        if info.frameLength != SAMPLES_PER_FRAME {
            return Err(Error::ours(format!(
                "FDK AAC frames are {} samples for {combination}, not {SAMPLES_PER_FRAME}",
                info.frameLength
            )));
        }
        // The largest frame: 6144 bits a channel, what maxOutBufBytes says for two channels.
        let capacity = (info.maxOutBufBytes as usize).max(768 * usize::from(channels));
        Ok(AacEncoder {
            encoder,
            config,
            bitrate,
            delay: info.nDelay,
            out: vec![0u8; capacity].into_boxed_slice(),
        })
    }

    /// This build has no AAC encoder: always a configuration error saying what works instead.
    #[cfg(not(feature = "aac-encoder"))]
    pub fn new(sample_rate: u32, channels: u8, bitrate: u32) -> Result<AacEncoder> {
        check_settings(sample_rate, channels, bitrate)?;
        Err(Error::config(
            "this build of v4l2rtmp has no AAC encoder (built without the aac-encoder feature), \
             so it cannot encode captured audio: use --audio silence, or an ADTS source (AAC \
             already encoded, from a file, FIFO or command)",
        ))
    }

    /// Interleaved samples [`encode`](Self::encode) takes at a time: 1024 per channel.
    pub fn samples_per_frame(&self) -> usize {
        SAMPLES_PER_FRAME as usize * usize::from(self.config.channels())
    }

    /// The encoder's delay in samples per channel: the first output frame's samples start this
    /// many samples before the first input sample (FDK's nDelay: 2048 at 48 kHz mono 64 kbit/s).
    pub fn delay_samples(&self) -> u32 {
        self.delay
    }

    /// The configuration for the FLV sequence header: FDK's own, checked equal to the settings'.
    pub fn audio_specific_config(&self) -> AudioSpecificConfig {
        self.config
    }

    /// The constant bitrate, bits per second.
    pub fn bitrate(&self) -> u32 {
        self.bitrate
    }

    /// Encodes one frame of interleaved samples (exactly [`samples_per_frame`](Self::samples_per_frame))
    /// and returns the raw AAC-LC frame that came out, if one did (none while FDK fills its
    /// look-ahead). The frame is valid until the next call.
    #[cfg(feature = "aac-encoder")]
    pub fn encode(&mut self, pcm: &[i16]) -> Result<Option<&[u8]>> {
        let expected = self.samples_per_frame();
        if pcm.len() != expected {
            return Err(Error::ours(format!(
                "an AAC frame is {expected} interleaved samples ({} channel(s) of \
                 {SAMPLES_PER_FRAME}), not {}",
                self.config.channels(),
                pcm.len()
            )));
        }
        let done = self
            .encoder
            .encode(pcm, &mut self.out)
            .map_err(|e| Error::ours(format!("FDK AAC failed to encode a frame: {e}")))?;
        // FDK buffers what it is given and encodes once it holds a whole frame: given exactly one,
        // it takes all of it and writes at most one raw frame (one access unit: no superframing
        // without a transport). Anything else would lose or repeat audio.
        if done.input_consumed != pcm.len() {
            return Err(Error::ours(format!(
                "FDK AAC took {} of the {} samples of a frame",
                done.input_consumed,
                pcm.len()
            )));
        }
        match self.out.get(..done.output_size) {
            Some([]) => Ok(None),
            Some(frame) => Ok(Some(frame)),
            None => Err(Error::ours(format!(
                "FDK AAC wrote {} bytes into a {}-byte buffer",
                done.output_size,
                self.out.len()
            ))),
        }
    }

    /// This build has no AAC encoder, so there is no encoder to call.
    #[cfg(not(feature = "aac-encoder"))]
    pub fn encode(&mut self, pcm: &[i16]) -> Result<Option<&[u8]>> {
        let _ = (pcm, &self.out);
        match self.encoder {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Fault;

    #[test]
    fn settings_outside_what_we_take_are_configuration_errors() {
        for (rate, channels, bitrate, words) in [
            (96_000, 1, 64_000, "not 96000"),
            (8_000, 1, 16_000, "not 8000"),
            (48_000, 3, 64_000, "channel configuration 3"),
            (48_000, 0, 64_000, "channel configuration 0"),
            (48_000, 1, 7_999, "7999 bit/s at 48000 Hz mono"),
            (48_000, 2, 512_001, "512001 bit/s at 48000 Hz stereo"),
            // FDK's ceiling: 6144 bits a frame per channel.
            (
                48_000,
                1,
                288_001,
                "288001 bit/s at 48000 Hz mono: it takes 8000 to 288000",
            ),
            (
                16_000,
                1,
                128_000,
                "128000 bit/s at 16000 Hz mono: it takes 8000 to 96000",
            ),
            (16_000, 2, 512_000, "it takes 8000 to 192000"),
        ] {
            let err = AacEncoder::new(rate, channels, bitrate).unwrap_err();
            assert_eq!(err.fault(), Fault::Config, "{err}");
            assert!(
                err.message().contains(words),
                "{rate} {channels} {bitrate}: {err}"
            );
        }
    }

    #[test]
    fn the_ceiling_follows_rate_and_channels() {
        assert_eq!(max_bitrate(48_000, 1), 288_000);
        assert_eq!(max_bitrate(48_000, 2), 512_000);
        assert_eq!(max_bitrate(44_100, 1), 264_600);
        assert_eq!(max_bitrate(22_050, 2), 264_600);
        assert_eq!(max_bitrate(16_000, 1), 96_000);
    }

    #[cfg(not(feature = "aac-encoder"))]
    #[test]
    fn a_build_without_the_encoder_says_what_works_instead() {
        assert_eq!(ENCODER_DESCRIPTION, "no AAC encoder in this build");
        let err = AacEncoder::new(48_000, 1, 64_000).unwrap_err();
        assert_eq!(err.fault(), Fault::Config);
        assert!(err.message().contains("has no AAC encoder"), "{err}");
        assert!(err.message().contains("--audio silence"), "{err}");
        assert!(err.message().contains("ADTS"), "{err}");
    }

    #[cfg(feature = "aac-encoder")]
    mod fdk {
        use super::super::*;
        use crate::error::Fault;

        fn asc(rate: u32, channels: u8) -> [u8; 2] {
            let encoder = AacEncoder::new(rate, channels, 64_000 * u32::from(channels)).unwrap();
            encoder.audio_specific_config().to_bytes()
        }

        #[test]
        fn audio_specific_configs_are_fdks_and_aac_lcs() {
            assert_eq!(asc(48_000, 1), [0x11, 0x88]);
            assert_eq!(asc(44_100, 2), [0x12, 0x10]);
            assert_eq!(asc(16_000, 1), [0x14, 0x08]);
        }

        /// 2048 samples: FDK's AAC-LC delay (1600, as bench/aac/REPORT.md measured with the AAC
        /// module alone) plus the 448 of the metadata encoder's delay line, which the `fdk-aac`
        /// crate opens with every other module (`aacEncOpen(.., 0, ..)`). tests/aac_encoder.rs
        /// checks the decoded audio lines up at it.
        #[test]
        fn the_delay_is_reported() {
            let encoder = AacEncoder::new(48_000, 1, 64_000).unwrap();
            assert_eq!(encoder.delay_samples(), 2048);
            assert_eq!(encoder.samples_per_frame(), 1024);
            assert_eq!(
                AacEncoder::new(44_100, 2, 128_000)
                    .unwrap()
                    .samples_per_frame(),
                2048
            );
        }

        /// Every rate and channel count we take, at the lowest and highest bitrate FDK allows
        /// there: FDK accepts each one, reports a sane delay (more than a frame's look-ahead, less
        /// than three frames) and encodes a frame of its configured size.
        #[test]
        fn every_combination_we_take_encodes() {
            for rate in crate::config::AUDIO_RATES {
                for channels in [1u8, 2] {
                    for bitrate in [MIN_BITRATE, 64_000, max_bitrate(rate, channels)] {
                        let mut encoder = AacEncoder::new(rate, channels, bitrate)
                            .unwrap_or_else(|e| panic!("{rate} {channels} {bitrate}: {e}"));
                        let delay = encoder.delay_samples();
                        assert!(
                            (1024..3 * 1024).contains(&delay),
                            "{rate} {channels} {bitrate}: {delay}"
                        );
                        let pcm = vec![0i16; encoder.samples_per_frame()];
                        let mut frames = 0;
                        for _ in 0..4 {
                            if let Some(frame) = encoder.encode(&pcm).unwrap() {
                                assert!(!frame.is_empty());
                                frames += 1;
                            }
                        }
                        assert!(frames >= 2, "{rate} {channels} {bitrate}: {frames} frames");
                    }
                }
            }
        }

        #[test]
        fn a_frame_of_the_wrong_length_is_our_bug() {
            let mut encoder = AacEncoder::new(48_000, 2, 128_000).unwrap();
            for len in [0, 1024, 2047, 2049, 4096] {
                let err = encoder.encode(&vec![0; len]).unwrap_err();
                assert_eq!(err.fault(), Fault::Ours, "{err}");
                assert!(err.message().contains(&format!("not {len}")), "{err}");
            }
            assert!(encoder.encode(&[0; 2048]).is_ok());
        }
    }
}
