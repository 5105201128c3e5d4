//! v4l2rtmp: push hardware-encoded H.264 from a Linux camera to an RTMP server.
//!
//! # Layout
//!
//! The crate is a sans-IO core wrapped by thin I/O layers, in the style of quinn-proto and rustls:
//!
//! - [`rtmp`]: the RTMP protocol as pure state machines over bytes and a caller-supplied clock:
//!   [`rtmp::handshake`], [`rtmp::chunk`] (gather, zero-copy writer, check-then-parse reader),
//!   [`rtmp::amf0`], [`rtmp::message`], [`rtmp::session`] (the publish session) and
//!   [`rtmp::auth`] (Adobe and Limelight challenge-response).
//! - [`media`]: H.264, AAC and FLV as pure functions and state machines: [`media::annexb`] splits
//!   a byte stream into access units, [`media::sps`] parses sequence parameter sets (and the
//!   start of picture parameter sets), [`media::slice`] reads slice headers, [`media::poc`]
//!   computes picture order counts and composition offsets, [`media::avc`] builds the
//!   AVCDecoderConfigurationRecord and [`media::flv`] describes FLV video tags (with their
//!   composition times), AAC audio tags and onMetaData; [`media::adts`] splits an ADTS stream
//!   into AAC frames, [`media::aac`] builds and checks the AudioSpecificConfig and holds silent
//!   frames, and [`media::audio_clock`] stamps audio frames on the video's clock.
//! - [`store`]: the frame store, one bounded ring that byte-stream inputs are read into and
//!   cameras copy into at most once, with a cursor per destination that drops whole GOPs;
//!   `pipeline` (access units to timed FLV messages) and `backoff`: sans-IO too.
//! - [`supervisor`]: [`supervisor::core`] holds every policy (reconnects, refusals, redirects,
//!   watchdogs, source restarts, reloads) as a sans-IO state machine; a tokio shell waits and
//!   carries out its actions, and a flow moves frames.
//! - `driver`: the only code that owns a socket; [`tls`]: RTMPS over rustls' unbuffered API.
//! - [`url`] and [`config`]: the command line, the configuration file and the RTMP URL, parsed and
//!   validated with no side effects.
//! - [`source`]: where access units come from, behind one interface: a file, FIFO, stdin, an
//!   `exec:` child, a V4L2 camera or a raw camera through a V4L2 encoder; [`v4l2`]: the V4L2
//!   ioctl layer and [`alsa`]: audio capture through the kernel's PCM interface (no libasound),
//!   the only unsafe code, with `pod` (ioctl arguments as plain old data) that both share;
//!   [`notify`]: systemd's notify protocol.
//! - [`error`]: one error type whose [`error::Fault`] says whose fault a failure is, so the
//!   supervisor can decide to retry, back off or exit.
//!
//! Modules are private unless the binary or the tests use them, so the compiler reports dead code.
//!
//! # Invariants
//!
//! - Nothing under `rtmp`, `media`, `store`, `pipeline` or `supervisor::core` reads a clock,
//!   opens a socket or touches tokio.
//! - In steady state, publishing a frame allocates nothing: headers go into storage that was
//!   allocated once and the payload is referenced where the source put it.
//! - No input, from the camera or from the server, can make the code panic: it is an error.
#![deny(unsafe_code)]

pub mod alsa;
mod backoff;
pub mod config;
mod config_file;
mod driver;
pub mod error;
pub mod media;
pub mod net;
pub mod notify;
mod pipeline;
mod pod;
pub mod rtmp;
pub mod source;
pub mod store;
pub mod supervisor;
pub mod tls;
pub mod url;
pub mod v4l2;
