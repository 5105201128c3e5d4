//! H.264, AAC and FLV, sans-IO: pure functions and state machines over bytes.
//!
//! - [`annexb`]: splits an Annex-B byte stream (file, pipe, camera buffer) into access units of NAL
//!   units, by reference, tolerant of NAL units split across reads.
//! - [`sps`]: parses a sequence parameter set: profile, level, cropped size, VUI timing, what
//!   picture order counts need; and the start of a picture parameter set.
//! - [`slice`]: reads a slice header as far as picture order counts need (7.3.3).
//! - [`poc`]: picture order counts (8.2.1), and from them each frame's composition offset.
//! - [`avc`]: the AVCDecoderConfigurationRecord (avcC) that FLV's sequence header carries.
//! - [`flv`]: FLV video tag bodies (with composition times), AAC audio tag headers and
//!   onMetaData (with its audio fields), as parts for the zero-copy chunk writer.
//! - [`adts`]: splits an ADTS byte stream (AAC frames from a file, FIFO or `exec:` child) into
//!   frames by reference, resynchronising after garbage.
//! - [`aac`]: the AAC-LC AudioSpecificConfig (built and checked), and silent raw frames.
//! - [`aac_encoder`]: encodes captured PCM to raw AAC-LC frames (FDK AAC, feature
//!   `aac-encoder`), one frame in, at most one out, with no allocation per frame.
//! - [`audio_clock`]: stamps AAC frames on the video's CLOCK_MONOTONIC timeline from capture
//!   reports, following the sound card's actual rate.

pub mod aac;
pub mod aac_encoder;
pub mod adts;
pub mod annexb;
pub mod audio_clock;
pub mod avc;
pub mod flv;
pub mod poc;
pub mod slice;
pub mod sps;

/// Helpers for the tests of this module's parsers.
#[cfg(test)]
pub(crate) mod testing {
    /// Bytes from hex digits (anything else, such as spaces, is skipped).
    pub(crate) fn hex(text: &str) -> Vec<u8> {
        let digits: Vec<u8> = text.bytes().filter(u8::is_ascii_hexdigit).collect();
        digits
            .chunks(2)
            .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
            .collect()
    }

    /// Escaped NAL unit from a header byte and a bit string (spaces ignored), with a stop bit and
    /// zero padding, and emulation prevention where the bytes need it.
    pub(crate) fn escaped_nal(header: u8, bits: &str) -> Vec<u8> {
        let mut bits: Vec<u8> = bits.bytes().filter(|b| *b == b'0' || *b == b'1').collect();
        bits.push(b'1');
        let mut out = vec![header];
        let mut zeros = 0;
        for chunk in bits.chunks(8) {
            let mut byte = 0u8;
            for (index, bit) in chunk.iter().enumerate() {
                byte |= (bit - b'0') << (7 - index);
            }
            if zeros >= 2 && byte <= 3 {
                out.push(3);
                zeros = 0;
            }
            zeros = if byte == 0 { zeros + 1 } else { 0 };
            out.push(byte);
        }
        out
    }
}
