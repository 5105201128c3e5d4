//! RTMP message types: protocol control (RTMP 1.0 §5.4), user control (§6.2) and the fixed chunk
//! streams a publisher uses.
//!
//! Encoders write into caller-owned buffers; decoders take a message payload and return a typed
//! view or an error that says what was wrong. Nothing here allocates except the error text.

use std::fmt;

/// Message type ids (RTMP 1.0 §5.4, §7.1).
pub mod type_id {
    pub const SET_CHUNK_SIZE: u8 = 1;
    pub const ABORT: u8 = 2;
    pub const ACKNOWLEDGEMENT: u8 = 3;
    pub const USER_CONTROL: u8 = 4;
    pub const WINDOW_ACK_SIZE: u8 = 5;
    pub const SET_PEER_BANDWIDTH: u8 = 6;
    pub const AUDIO: u8 = 8;
    pub const VIDEO: u8 = 9;
    pub const DATA_AMF3: u8 = 15;
    pub const COMMAND_AMF3: u8 = 17;
    pub const DATA_AMF0: u8 = 18;
    pub const COMMAND_AMF0: u8 = 20;
    pub const AGGREGATE: u8 = 22;
}

/// The chunk streams v4l2rtmp sends on. FFmpeg uses the same numbers, which servers are used to.
pub mod chunk_stream {
    /// Protocol control and user control messages (required by the spec).
    pub const CONTROL: u32 = 2;
    /// NetConnection commands (connect, createStream, ...).
    pub const COMMAND: u32 = 3;
    /// Audio on the published stream (FFmpeg's RTMP_AUDIO_CHANNEL): a chunk stream of its own,
    /// so that header compression works across consecutive audio frames as across video ones.
    pub const AUDIO: u32 = 4;
    /// Video and metadata on the published stream. Only one message at a time is in flight on it,
    /// so header compression (fmt 1-3) works across consecutive frames.
    pub const VIDEO: u32 = 6;
    /// NetStream commands and data messages (publish, @setDataFrame).
    pub const STREAM_COMMAND: u32 = 8;
}

/// User control event types (§6.2, §7.1.7).
pub mod user_control {
    pub const STREAM_BEGIN: u16 = 0;
    pub const STREAM_EOF: u16 = 1;
    pub const STREAM_DRY: u16 = 2;
    pub const SET_BUFFER_LENGTH: u16 = 3;
    pub const STREAM_IS_RECORDED: u16 = 4;
    pub const PING_REQUEST: u16 = 6;
    pub const PING_RESPONSE: u16 = 7;
}

/// A protocol or user control message the server sent, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    SetChunkSize(u32),
    Abort {
        chunk_stream_id: u32,
    },
    Acknowledgement {
        sequence_number: u32,
    },
    WindowAckSize(u32),
    SetPeerBandwidth {
        size: u32,
        limit_type: u8,
    },
    /// A user control event: type and the first 4-byte argument (every event we act on has one).
    UserControl {
        event: u16,
        value: u32,
    },
}

/// A malformed control message: the server's fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MalformedControl {
    pub type_id: u8,
    pub length: usize,
}

impl fmt::Display for MalformedControl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "control message of type {} has a malformed {}-byte body",
            self.type_id, self.length
        )
    }
}

impl std::error::Error for MalformedControl {}

fn be32(payload: &[u8], at: usize) -> Option<u32> {
    let bytes = payload.get(at..at + 4)?;
    Some(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

impl Control {
    /// Decodes a control message. Returns `Ok(None)` for types that are not control messages.
    pub fn decode(type_id: u8, payload: &[u8]) -> Result<Option<Control>, MalformedControl> {
        let malformed = || MalformedControl {
            type_id,
            length: payload.len(),
        };
        let control = match type_id {
            type_id::SET_CHUNK_SIZE => {
                Control::SetChunkSize(be32(payload, 0).ok_or_else(malformed)?)
            }
            // Nothing depends on these (a publisher never has a message to abort, and the
            // server's acknowledgements only report progress): a short one is ignored, as FFmpeg
            // ignores them whatever their size.
            type_id::ABORT => match be32(payload, 0) {
                Some(chunk_stream_id) => Control::Abort { chunk_stream_id },
                None => return Ok(None),
            },
            type_id::ACKNOWLEDGEMENT => match be32(payload, 0) {
                Some(sequence_number) => Control::Acknowledgement { sequence_number },
                None => return Ok(None),
            },
            type_id::WINDOW_ACK_SIZE => {
                Control::WindowAckSize(be32(payload, 0).ok_or_else(malformed)?)
            }
            type_id::SET_PEER_BANDWIDTH => Control::SetPeerBandwidth {
                size: be32(payload, 0).ok_or_else(malformed)?,
                // Some servers omit the limit type; treat it as dynamic (2), as FFmpeg does.
                limit_type: payload.get(4).copied().unwrap_or(2),
            },
            type_id::USER_CONTROL => {
                let event = payload.get(0..2).ok_or_else(malformed)?;
                let event = u16::from_be_bytes([event[0], event[1]]);
                // StreamBegin and friends carry a stream id, pings a timestamp; a few servers send
                // short bodies for events we ignore, so a missing value is 0 rather than an error.
                let value = be32(payload, 2).unwrap_or(0);
                if event == user_control::PING_REQUEST && payload.len() < 6 {
                    return Err(malformed());
                }
                Control::UserControl { event, value }
            }
            _ => return Ok(None),
        };
        Ok(Some(control))
    }
}

/// Body of Set Chunk Size, Acknowledgement or Window Acknowledgement Size: one big-endian u32.
pub fn u32_body(value: u32) -> [u8; 4] {
    value.to_be_bytes()
}

/// Body of a user control event with one 4-byte argument.
pub fn user_control_body(event: u16, value: u32) -> [u8; 6] {
    let e = event.to_be_bytes();
    let v = value.to_be_bytes();
    [e[0], e[1], v[0], v[1], v[2], v[3]]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_control_messages() {
        assert_eq!(
            Control::decode(1, &[0, 0, 0x10, 0]),
            Ok(Some(Control::SetChunkSize(4096)))
        );
        assert_eq!(
            Control::decode(2, &[0, 0, 0, 6]),
            Ok(Some(Control::Abort { chunk_stream_id: 6 }))
        );
        assert_eq!(
            Control::decode(3, &[0, 0, 1, 0]),
            Ok(Some(Control::Acknowledgement {
                sequence_number: 256
            }))
        );
        assert_eq!(
            Control::decode(5, &[0, 0x4c, 0x4b, 0x40]),
            Ok(Some(Control::WindowAckSize(5_000_000)))
        );
        assert_eq!(
            Control::decode(6, &[0, 0x4c, 0x4b, 0x40, 2]),
            Ok(Some(Control::SetPeerBandwidth {
                size: 5_000_000,
                limit_type: 2
            }))
        );
        assert_eq!(
            Control::decode(4, &[0, 6, 0, 0, 0x12, 0x34]),
            Ok(Some(Control::UserControl {
                event: 6,
                value: 0x1234
            }))
        );
        assert_eq!(
            Control::decode(4, &[0, 0]),
            Ok(Some(Control::UserControl { event: 0, value: 0 }))
        );
        assert_eq!(Control::decode(20, &[1, 2, 3]), Ok(None));
    }

    #[test]
    fn rejects_short_bodies() {
        for type_id in [1u8, 5, 6] {
            assert!(Control::decode(type_id, &[0, 0, 1]).is_err());
        }
        // A short Abort or Acknowledgement is ignored, as FFmpeg ignores them: nothing depends
        // on either.
        for type_id in [2u8, 3] {
            assert_eq!(Control::decode(type_id, &[0, 0, 1]), Ok(None));
            assert_eq!(Control::decode(type_id, &[]), Ok(None));
        }
        assert!(Control::decode(4, &[0]).is_err());
        assert!(
            Control::decode(4, &[0, 6, 0]).is_err(),
            "a ping without its timestamp"
        );
    }

    #[test]
    fn encodes_bodies() {
        assert_eq!(u32_body(4096), [0, 0, 0x10, 0]);
        assert_eq!(
            user_control_body(7, 0xdeadbeef),
            [0, 7, 0xde, 0xad, 0xbe, 0xef]
        );
    }
}
