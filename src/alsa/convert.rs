//! Sample conversion: interleaved frames in the device's format and channel count to the
//! interleaved 16-bit integer or 32-bit float samples an encoder takes, mono or stereo.
//!
//! Every input sample is first widened to a 32-bit full-scale value (S16 shifted left by 16,
//! S24 by 8, S32 as it is); from there:
//!
//! - to `i16`: the top 16 bits (an arithmetic shift, so rounding is toward minus infinity);
//!   stereo to mono is `(left + right) >> 17` of the widened values;
//! - to `f32`: the widened value over 2^31 (exact for 16- and 24-bit input, rounded to nearest
//!   for 32-bit); stereo to mono is `(left + right) / 2^32`, computed in `f64`;
//! - mono to stereo repeats the sample.
//!
//! Nothing here allocates or panics: a conversion converts as many whole frames as both buffers
//! hold and says how many.

use std::fmt;

use super::sys;

/// A sample format v4l2rtmp can read from a device, little-endian and signed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SampleFormat {
    /// 16 bits in 2 bytes.
    S16Le,
    /// 32 bits in 4 bytes.
    S32Le,
    /// 24 bits in the low 3 bytes of 4 (the top byte is ignored).
    S24Le,
    /// 24 bits in 3 bytes.
    S24_3Le,
}

impl SampleFormat {
    /// In the order v4l2rtmp prefers them when a device offers several.
    pub const PREFERENCE: [SampleFormat; 4] = [
        SampleFormat::S16Le,
        SampleFormat::S32Le,
        SampleFormat::S24Le,
        SampleFormat::S24_3Le,
    ];

    /// The `SNDRV_PCM_FORMAT_*` number.
    pub fn raw(self) -> u32 {
        match self {
            SampleFormat::S16Le => sys::SNDRV_PCM_FORMAT_S16_LE,
            SampleFormat::S32Le => sys::SNDRV_PCM_FORMAT_S32_LE,
            SampleFormat::S24Le => sys::SNDRV_PCM_FORMAT_S24_LE,
            SampleFormat::S24_3Le => sys::SNDRV_PCM_FORMAT_S24_3LE,
        }
    }

    pub fn from_raw(raw: u32) -> Option<SampleFormat> {
        SampleFormat::PREFERENCE
            .into_iter()
            .find(|format| format.raw() == raw)
    }

    /// Bytes one sample takes in a frame.
    pub fn bytes(self) -> usize {
        match self {
            SampleFormat::S16Le => 2,
            SampleFormat::S32Le | SampleFormat::S24Le => 4,
            SampleFormat::S24_3Le => 3,
        }
    }

    /// ALSA's name (`S16_LE`), as `arecord` prints it.
    pub fn name(self) -> &'static str {
        match self {
            SampleFormat::S16Le => "S16_LE",
            SampleFormat::S32Le => "S32_LE",
            SampleFormat::S24Le => "S24_LE",
            SampleFormat::S24_3Le => "S24_3LE",
        }
    }
}

impl fmt::Display for SampleFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Converts frames of one device format and channel count to another channel count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Converter {
    format: SampleFormat,
    device_channels: usize,
    output_channels: usize,
}

impl Converter {
    /// `None` unless both channel counts are 1 or 2.
    pub fn new(
        format: SampleFormat,
        device_channels: u32,
        output_channels: u32,
    ) -> Option<Converter> {
        let ok = |c: u32| c == 1 || c == 2;
        if !ok(device_channels) || !ok(output_channels) {
            return None;
        }
        Some(Converter {
            format,
            device_channels: device_channels as usize,
            output_channels: output_channels as usize,
        })
    }

    pub fn format(&self) -> SampleFormat {
        self.format
    }

    /// Bytes of one frame as the device gives it.
    pub fn device_frame_bytes(&self) -> usize {
        self.format.bytes() * self.device_channels
    }

    pub fn device_channels(&self) -> u32 {
        self.device_channels as u32
    }

    pub fn output_channels(&self) -> u32 {
        self.output_channels as u32
    }

    /// Converts the whole frames of `raw` that fit in `out`; returns the number of frames.
    pub fn to_i16(&self, raw: &[u8], out: &mut [i16]) -> usize {
        self.run(
            raw,
            out,
            |v| (v >> 16) as i16,
            |l, r| ((l + r) >> 17) as i16,
        )
    }

    /// Converts the whole frames of `raw` that fit in `out` to floats in [-1, 1); returns the
    /// number of frames.
    pub fn to_f32(&self, raw: &[u8], out: &mut [f32]) -> usize {
        const SCALE_ONE: f64 = 1.0 / 2_147_483_648.0;
        const SCALE_SUM: f64 = 1.0 / 4_294_967_296.0;
        self.run(
            raw,
            out,
            |v| (f64::from(v) * SCALE_ONE) as f32,
            |l, r| ((l + r) as f64 * SCALE_SUM) as f32,
        )
    }

    /// The frame loop, once per input format so that decoding is inlined.
    fn run<T: Copy>(
        &self,
        raw: &[u8],
        out: &mut [T],
        one: impl Fn(i32) -> T,
        mix: impl Fn(i64, i64) -> T,
    ) -> usize {
        match self.format {
            SampleFormat::S16Le => self.frames::<2, T>(raw, out, widen_s16, one, mix),
            SampleFormat::S32Le => self.frames::<4, T>(raw, out, widen_s32, one, mix),
            SampleFormat::S24Le => self.frames::<4, T>(raw, out, widen_s24, one, mix),
            SampleFormat::S24_3Le => self.frames::<3, T>(raw, out, widen_s24_3, one, mix),
        }
    }

    fn frames<const N: usize, T: Copy>(
        &self,
        raw: &[u8],
        out: &mut [T],
        widen: fn([u8; N]) -> i32,
        one: impl Fn(i32) -> T,
        mix: impl Fn(i64, i64) -> T,
    ) -> usize {
        let sample = |bytes: &[u8]| {
            let mut array = [0u8; N];
            array.copy_from_slice(&bytes[..N]);
            widen(array)
        };
        let in_frames = raw.chunks_exact(N * self.device_channels);
        let out_frames = out.chunks_exact_mut(self.output_channels);
        let mut count = 0;
        for (frame, slot) in in_frames.zip(out_frames) {
            match (self.device_channels, self.output_channels) {
                (1, 1) => slot[0] = one(sample(frame)),
                (2, 2) => {
                    slot[0] = one(sample(frame));
                    slot[1] = one(sample(&frame[N..]));
                }
                (1, _) => {
                    let value = one(sample(frame));
                    slot[0] = value;
                    slot[1] = value;
                }
                _ => slot[0] = mix(i64::from(sample(frame)), i64::from(sample(&frame[N..]))),
            }
            count += 1;
        }
        count
    }
}

fn widen_s16(b: [u8; 2]) -> i32 {
    i32::from(i16::from_le_bytes(b)) << 16
}

fn widen_s32(b: [u8; 4]) -> i32 {
    i32::from_le_bytes(b)
}

/// The low 24 bits, sign-extended from bit 23 whatever the top byte holds.
fn widen_s24(b: [u8; 4]) -> i32 {
    (u32::from_le_bytes(b) << 8) as i32
}

fn widen_s24_3(b: [u8; 3]) -> i32 {
    i32::from_le_bytes([0, b[0], b[1], b[2]])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn convert_i16(format: SampleFormat, from: u32, to: u32, raw: &[u8]) -> Vec<i16> {
        let conv = Converter::new(format, from, to).unwrap();
        let mut out = vec![0x5555i16; raw.len()];
        let n = conv.to_i16(raw, &mut out);
        out.truncate(n * to as usize);
        out
    }

    fn convert_f32(format: SampleFormat, from: u32, to: u32, raw: &[u8]) -> Vec<f32> {
        let conv = Converter::new(format, from, to).unwrap();
        let mut out = vec![9.0f32; raw.len()];
        let n = conv.to_f32(raw, &mut out);
        out.truncate(n * to as usize);
        out
    }

    #[test]
    fn s16_passes_through_byte_exact() {
        let samples: [i16; 6] = [0, 1, -1, i16::MAX, i16::MIN, 0x1234];
        let raw: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
        assert_eq!(convert_i16(SampleFormat::S16Le, 2, 2, &raw), samples);
        assert_eq!(convert_i16(SampleFormat::S16Le, 1, 1, &raw), samples);
    }

    #[test]
    fn wider_formats_keep_their_top_16_bits() {
        // S32_LE: 0x12345678 -> 0x1234; -1 (0xffffffff) -> -1; MIN -> MIN; 0x0000ffff -> 0.
        let raw = [
            0x78, 0x56, 0x34, 0x12, 0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x80, 0xff, 0xff,
            0x00, 0x00,
        ];
        assert_eq!(
            convert_i16(SampleFormat::S32Le, 1, 1, &raw),
            [0x1234, -1, i16::MIN, 0]
        );
        // S24_LE: 0x(xx)123456 -> 0x1234 whatever the top byte; 0x800000 is the minimum.
        let raw = [
            0x56, 0x34, 0x12, 0x00, 0x56, 0x34, 0x12, 0xab, 0x00, 0x00, 0x80, 0x00, 0xff, 0xff,
            0xff, 0x00,
        ];
        assert_eq!(
            convert_i16(SampleFormat::S24Le, 1, 1, &raw),
            [0x1234, 0x1234, i16::MIN, -1]
        );
        // S24_3LE: three bytes each.
        let raw = [0x56, 0x34, 0x12, 0x00, 0x00, 0x80, 0xff, 0xff, 0x7f];
        assert_eq!(
            convert_i16(SampleFormat::S24_3Le, 1, 1, &raw),
            [0x1234, i16::MIN, i16::MAX]
        );
    }

    #[test]
    fn stereo_to_mono_averages_and_mono_to_stereo_repeats() {
        let stereo: Vec<u8> = [100i16, 300, -3, 0, i16::MAX, i16::MAX, i16::MIN, i16::MIN]
            .iter()
            .flat_map(|s| s.to_le_bytes())
            .collect();
        // (l + r) >> 1, rounding toward minus infinity: -3 / 2 -> -2.
        assert_eq!(
            convert_i16(SampleFormat::S16Le, 2, 1, &stereo),
            [200, -2, i16::MAX, i16::MIN]
        );
        let mono: Vec<u8> = [7i16, -8].iter().flat_map(|s| s.to_le_bytes()).collect();
        assert_eq!(
            convert_i16(SampleFormat::S16Le, 1, 2, &mono),
            [7, 7, -8, -8]
        );
        // S32 stereo to mono keeps precision until the end: (0x00018000 + 0x00008000) >> 17 = 1.
        let raw = [0x00, 0x80, 0x01, 0x00, 0x00, 0x80, 0x00, 0x00];
        assert_eq!(convert_i16(SampleFormat::S32Le, 2, 1, &raw), [1]);
    }

    #[test]
    fn floats_are_exact_for_16_and_24_bits() {
        let raw: Vec<u8> = [16384i16, -32768, 1]
            .iter()
            .flat_map(|s| s.to_le_bytes())
            .collect();
        let out = convert_f32(SampleFormat::S16Le, 1, 1, &raw);
        assert_eq!(out, [0.5, -1.0, 1.0 / 32768.0]);
        assert_eq!(out[2].to_bits(), (1.0f32 / 32768.0).to_bits());
        let raw = [0x01, 0x00, 0x00, 0xff, 0xff, 0x7f];
        let out = convert_f32(SampleFormat::S24_3Le, 1, 1, &raw);
        assert_eq!(out, [1.0 / 8_388_608.0, 8_388_607.0 / 8_388_608.0]);
        let stereo: Vec<u8> = [16384i16, -16384, 32767, 32767]
            .iter()
            .flat_map(|s| s.to_le_bytes())
            .collect();
        assert_eq!(
            convert_f32(SampleFormat::S16Le, 2, 1, &stereo),
            [0.0, 32767.0 / 32768.0]
        );
        let mono: Vec<u8> = [-16384i16].iter().flat_map(|s| s.to_le_bytes()).collect();
        assert_eq!(convert_f32(SampleFormat::S16Le, 1, 2, &mono), [-0.5, -0.5]);
        let raw = [0xff, 0xff, 0xff, 0x7f];
        assert_eq!(convert_f32(SampleFormat::S32Le, 1, 1, &raw), [1.0]);
    }

    #[test]
    fn converts_only_whole_frames_that_fit() {
        let conv = Converter::new(SampleFormat::S24_3Le, 2, 2).unwrap();
        assert_eq!(conv.device_frame_bytes(), 6);
        // 2 whole frames and 5 stray bytes in; room for 1 frame out.
        let raw = [0u8; 17];
        let mut out = [1i16; 3];
        assert_eq!(conv.to_i16(&raw, &mut out), 1);
        assert_eq!(out, [0, 0, 1]);
        let mut none: [i16; 0] = [];
        assert_eq!(conv.to_i16(&raw, &mut none), 0);
        assert_eq!(conv.to_i16(&[], &mut out), 0);
        assert!(Converter::new(SampleFormat::S16Le, 4, 2).is_none());
        assert!(Converter::new(SampleFormat::S16Le, 2, 0).is_none());
    }

    #[test]
    fn formats_round_trip_their_numbers() {
        for format in SampleFormat::PREFERENCE {
            assert_eq!(SampleFormat::from_raw(format.raw()), Some(format));
        }
        assert_eq!(SampleFormat::from_raw(sys::SNDRV_PCM_FORMAT_FLOAT_LE), None);
        assert_eq!(SampleFormat::S24_3Le.to_string(), "S24_3LE");
    }
}
