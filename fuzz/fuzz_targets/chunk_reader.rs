//! Fuzzes ChunkReader: arbitrary server bytes must never make it panic, report consuming more
//! than it was given, or return a message without consuming bytes; and because decoding is
//! check-then-parse, delivering the bytes in small pieces must give exactly the same messages and
//! the same error as delivering them all at once.
//!
//! The first input byte chooses the piece size (1 to 64 bytes per read); the rest is the stream.
#![no_main]

use libfuzzer_sys::fuzz_target;
use v4l2rtmp::rtmp::chunk::{ChunkError, ChunkReader, Message};

const LIMIT: u32 = 1 << 20;

/// Decodes `stream` delivered `step` bytes at a time; returns the messages and the error, if any.
fn decode(stream: &[u8], step: usize) -> (Vec<Message>, Option<ChunkError>) {
    let mut reader = ChunkReader::new(LIMIT);
    let mut messages = Vec::new();
    let (mut pos, mut avail) = (0usize, step.min(stream.len()));
    loop {
        match reader.decode(&stream[pos..avail]) {
            Err(e) => return (messages, Some(e)),
            Ok((0, message)) => {
                assert!(message.is_none(), "a message without consuming bytes");
                if avail == stream.len() {
                    return (messages, None);
                }
                avail = avail.saturating_add(step).min(stream.len());
            }
            Ok((used, message)) => {
                assert!(
                    used <= avail - pos,
                    "consumed {used} of {} bytes",
                    avail - pos
                );
                pos += used;
                if let Some(message) = message {
                    assert!(message.payload.len() <= LIMIT as usize);
                    messages.push(message);
                }
                assert!(reader.buffered() <= 2 * LIMIT as usize);
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, stream)) = data.split_first() else {
        return;
    };
    let step = usize::from(first % 64) + 1;
    let in_pieces = decode(stream, step);
    let at_once = decode(stream, usize::MAX);
    assert_eq!(in_pieces, at_once);
});
