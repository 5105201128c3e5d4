//! The AVCDecoderConfigurationRecord (ISO/IEC 14496-15 5.3.3.1, "avcC"): the decoder setup that an
//! FLV AVC sequence header (and an MP4 avcC box) carries ahead of the first picture.
//!
//! Invariants:
//! - The record always holds exactly one SPS and one PPS, stored as whole NAL units (header byte
//!   included, emulation prevention kept), and declares 4-byte NAL unit lengths
//!   (lengthSizeMinusOne = 3), which is how the FLV layer frames NAL units.
//! - Profile, compatibility and level bytes come from the parsed SPS, which the caller parsed from
//!   the same NAL unit.
//! - The writer only appends to the caller's buffer; on error nothing is appended.

use std::fmt;

use crate::media::sps::Sps;

/// Profiles whose record carries the chroma format / bit depth extension (14496-15 5.3.3.1.2).
const PROFILES_WITH_EXTENSION: [u8; 4] = [100, 110, 122, 144];

/// Why the record could not be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AvcError {
    /// An SPS or PPS is longer than the 16-bit length field allows (65535 bytes).
    ParameterSetTooLong,
    /// An SPS or PPS is empty.
    EmptyParameterSet,
}

impl fmt::Display for AvcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AvcError::ParameterSetTooLong => {
                f.write_str("H.264 parameter set longer than 65535 bytes")
            }
            AvcError::EmptyParameterSet => f.write_str("empty H.264 parameter set"),
        }
    }
}

impl std::error::Error for AvcError {}

/// Appends the avcC record (ISO/IEC 14496-15 5.3.3.1) for one SPS and one PPS (whole NAL units incl. header) to `out`.
/// lengthSizeMinusOne = 3. For profile_idc 100, 110, 122, 144 append the chroma_format / bit depth extension
/// with zero SPS-extension NALs.
pub fn write_avc_decoder_configuration_record(
    sps_nal: &[u8],
    sps: &Sps,
    pps_nal: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), AvcError> {
    let sps_len = parameter_set_length(sps_nal)?;
    let pps_len = parameter_set_length(pps_nal)?;
    out.reserve(11 + sps_nal.len() + pps_nal.len() + 4);
    out.push(1); // configurationVersion
    out.push(sps.profile_idc); // AVCProfileIndication
    out.push(sps.constraint_flags); // profile_compatibility
    out.push(sps.level_idc); // AVCLevelIndication
    out.push(0xfc | 3); // reserved '111111', lengthSizeMinusOne = 3
    out.push(0xe0 | 1); // reserved '111', numOfSequenceParameterSets = 1
    out.extend_from_slice(&sps_len.to_be_bytes());
    out.extend_from_slice(sps_nal);
    out.push(1); // numOfPictureParameterSets
    out.extend_from_slice(&pps_len.to_be_bytes());
    out.extend_from_slice(pps_nal);
    if PROFILES_WITH_EXTENSION.contains(&sps.profile_idc) {
        // The SPS parser bounds these: chroma_format_idc <= 3, bit depths 8..=14.
        out.push(0xfc | (sps.chroma_format_idc & 3) as u8);
        out.push(0xf8 | (sps.bit_depth_luma.saturating_sub(8) & 7));
        out.push(0xf8 | (sps.bit_depth_chroma.saturating_sub(8) & 7));
        out.push(0); // numOfSequenceParameterSetExt
    }
    Ok(())
}

/// The 16-bit length field for a parameter set NAL unit.
fn parameter_set_length(nal: &[u8]) -> Result<u16, AvcError> {
    if nal.is_empty() {
        return Err(AvcError::EmptyParameterSet);
    }
    u16::try_from(nal.len()).map_err(|_| AvcError::ParameterSetTooLong)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::media::testing::hex;

    fn record(sps_hex: &str, pps_hex: &str) -> Vec<u8> {
        let sps_nal = hex(sps_hex);
        let sps = Sps::parse(&sps_nal).unwrap();
        let mut out = vec![0xaa]; // existing content must be kept
        write_avc_decoder_configuration_record(&sps_nal, &sps, &hex(pps_hex), &mut out).unwrap();
        assert_eq!(out[0], 0xaa);
        out.split_off(1)
    }

    /// SPS and PPS of ../shared/clips/pi-hw-1080p-20frames.h264 (Raspberry Pi, High 4.1).
    const PI_SPS: &str =
        "27640029ac2b403c0113f2c200000300020000030079c9800072708000ee6bdef700f1226a";
    const PI_PPS: &str = "28ee025cb0";

    #[test]
    fn raspberry_pi_record() {
        // Compared with FFmpeg 5.1 (`ffmpeg -i pi.h264 -c copy -f mp4` avcC box, and the first
        // video tag of `-f flv`), which wrote
        // 01640029ffe10025<SPS>01000628ee025cb000fdf8f800: identical except that FFmpeg keeps the
        // zero byte of the following 4-byte start code at the end of the PPS (length 6). Annex B
        // says that byte is not part of the NAL unit, so this record has the 5-byte PPS.
        let expected = hex(concat!(
            "01640029ffe10025",
            "27640029ac2b403c0113f2c200000300020000030079c9800072708000ee6bdef700f1226a",
            "01000528ee025cb0",
            "fdf8f800"
        ));
        assert_eq!(record(PI_SPS, PI_PPS), expected);
    }

    #[test]
    fn baseline_record_has_no_extension() {
        // x264 Constrained Baseline 640x480 (see sps.rs tests). Byte-identical to the avcC box
        // FFmpeg 5.1 wrote for the same stream (`-c copy -f mp4`) and to its FLV sequence header.
        let sps = "6742c01ed900a03db011000003000100000300320f162e48";
        let pps = "68cb83cb20";
        let expected = hex(concat!(
            "0142c01effe10018",
            "6742c01ed900a03db011000003000100000300320f162e48",
            "01000568cb83cb20"
        ));
        assert_eq!(record(sps, pps), expected);
    }

    #[test]
    fn high_422_10bit_extension() {
        // x264 High 4:2:2 10-bit (see sps.rs tests); FFmpeg 5.1 wrote the same bytes in its avcC
        // box: extension fe fa fa 00 (chroma_format 2, both bit depths 10).
        let sps = "677a000db6cd94141fbff0040002d100000303e90000bb800f142996";
        let pps = "68ebe3cb3002c0";
        let expected = hex(concat!(
            "017a000dffe1001c",
            "677a000db6cd94141fbff0040002d100000303e90000bb800f142996",
            "01000768ebe3cb3002c0",
            "fefafa00"
        ));
        assert_eq!(record(sps, pps), expected);
    }

    #[test]
    fn parameter_set_errors_append_nothing() {
        let sps_nal = hex(PI_SPS);
        let sps = Sps::parse(&sps_nal).unwrap();
        let mut out = Vec::new();
        assert_eq!(
            write_avc_decoder_configuration_record(&sps_nal, &sps, &[], &mut out),
            Err(AvcError::EmptyParameterSet)
        );
        assert_eq!(
            write_avc_decoder_configuration_record(&[], &sps, &hex(PI_PPS), &mut out),
            Err(AvcError::EmptyParameterSet)
        );
        let huge = vec![0x68; 65536];
        assert_eq!(
            write_avc_decoder_configuration_record(&sps_nal, &sps, &huge, &mut out),
            Err(AvcError::ParameterSetTooLong)
        );
        assert!(out.is_empty());
        let largest = vec![0x68; 65535];
        write_avc_decoder_configuration_record(&sps_nal, &sps, &largest, &mut out).unwrap();
        assert_eq!(out.len(), 6 + 2 + 37 + 1 + 2 + 65535 + 4);
        assert!(AvcError::ParameterSetTooLong.to_string().contains("65535"));
    }
}
