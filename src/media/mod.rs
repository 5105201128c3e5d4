//! H.264 and FLV, sans-IO: pure functions and state machines over bytes.
//!
//! - [`annexb`]: splits an Annex-B byte stream (file, pipe, camera buffer) into access units of NAL
//!   units, by reference, tolerant of NAL units split across reads.
//! - [`sps`]: parses a sequence parameter set: profile, level, cropped size, VUI timing, what
//!   picture order counts need; and the start of a picture parameter set.
//! - [`slice`]: reads a slice header as far as picture order counts need (7.3.3).
//! - [`poc`]: picture order counts (8.2.1), and from them each frame's composition offset.
//! - [`avc`]: the AVCDecoderConfigurationRecord (avcC) that FLV's sequence header carries.
//! - [`flv`]: FLV video tag bodies (with composition times) and onMetaData, as parts for the
//!   zero-copy chunk writer.

pub mod annexb;
pub mod avc;
pub mod flv;
pub mod poc;
pub mod slice;
pub mod sps;
