//! v4l2rtmp: push hardware-encoded H.264 from a Linux camera to an RTMP server.
//!
//! # Layout
//!
//! The crate is a sans-IO core wrapped by thin I/O layers, in the style of quinn-proto and rustls:
//!
//! - [`rtmp`]: the RTMP protocol as pure state machines over bytes and a caller-supplied clock:
//!   [`rtmp::handshake`], [`rtmp::chunk`] (zero-copy writer and a check-then-parse reader),
//!   [`rtmp::amf0`], [`rtmp::message`] (control and command messages) and [`rtmp::session`]
//!   (the publish session: connect, createStream, publish, media).
//! - [`media`]: H.264 and FLV as pure functions and state machines: [`media::annexb`] splits a byte
//!   stream into access units, [`media::sps`] parses sequence parameter sets, [`media::avc`] builds the
//!   AVCDecoderConfigurationRecord and [`media::flv`] describes FLV video tags and onMetaData.
//! - [`url`] and [`config`]: the command line and the RTMP URL, parsed and validated with no side effects.
//! - [`source`]: where access units come from (a file, FIFO or stdin today).
//! - [`driver`]: the only place that owns a socket and a clock; it moves bytes between the socket,
//!   the session and the source on a tokio current-thread runtime.
//! - [`error`]: one error type whose [`error::Fault`] says whose fault a failure is, so the caller
//!   can decide to retry, back off or exit.
//!
//! # Invariants
//!
//! - Nothing under `rtmp` or `media` reads a clock, opens a socket or touches tokio.
//! - In steady state, publishing a frame allocates nothing: headers go into storage that was
//!   allocated once and the payload is referenced where the source put it.
//! - No input, from the camera or from the server, can make the code panic: it is an error.
#![deny(unsafe_code)]

pub mod backoff;
pub mod config;
pub mod config_file;
pub mod driver;
pub mod error;
pub mod media;
pub mod notify;
pub mod pipeline;
pub mod queue;
pub mod rtmp;
pub mod source;
pub mod store;
pub mod supervisor;
pub mod tls;
pub mod url;
pub mod v4l2;
