//! The RTMP protocol, sans-IO: every type here is a state machine over bytes and a clock value
//! passed in by the caller. Nothing here opens a socket, reads a clock or depends on tokio.
//!
//! - [`handshake`]: the client side of the plain RTMP handshake (C0/C1, S0/S1, C2, S2).
//! - [`chunk`]: the chunk stream: a zero-copy [`chunk::ChunkWriter`] that emits headers into
//!   preallocated storage and references payload, and a check-then-parse [`chunk::ChunkReader`].
//! - [`amf0`]: AMF0 values, encoding and a decoder that never panics.
//! - [`message`]: protocol control, user control and command messages.
//! - [`session`]: the publish session that ties them together.

pub mod amf0;
pub mod auth;
pub mod chunk;
pub mod handshake;
pub mod message;
pub mod session;
