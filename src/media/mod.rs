//! H.264 and FLV, sans-IO: pure functions and state machines over bytes.
//!
//! - [`annexb`]: splits an Annex-B byte stream (file, pipe, camera buffer) into access units of NAL
//!   units, by reference, tolerant of NAL units split across reads.
//! - [`sps`]: parses a sequence parameter set: profile, level, cropped size, VUI timing.
//! - [`avc`]: the AVCDecoderConfigurationRecord (avcC) that FLV's sequence header carries.
//! - [`flv`]: FLV video tag bodies and onMetaData, as parts for the zero-copy chunk writer.

pub mod annexb;
pub mod avc;
pub mod flv;
pub mod sps;
