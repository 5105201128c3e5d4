//! TLS for `rtmps://`, sans-IO: a rustls client connection driven through rustls' unbuffered API,
//! with every buffer owned here, allocated once and bounded. The driver moves bytes between the
//! socket and [`TlsSession`]; nothing in this module opens a socket or reads a clock.
//!
//! # Files
//!
//! - this one: the ciphertext buffers (outgoing and incoming) and the sizes that bound every
//!   buffer;
//! - `trust.rs`: the client configuration ([`client_config`]): which certificates are trusted
//!   (the system store, `--ca-file`, a pinned certificate, or none with `--insecure`), the cipher
//!   suites offered, and what a refused certificate is reported as;
//! - `session.rs`: [`TlsSession`], the connection's state machine: handshake, received records,
//!   close_notify, and rustls' errors as the crate's;
//! - `sealing.rs`: the unwritten bytes of a [`Gather`] sealed into few, full records
//!   ([`TlsSession::encrypt_from`], [`COPY_BELOW`]).
//!
//! # Whose fault
//!
//! A CA file that cannot be read or holds no certificate, a malformed `--tls-fingerprint`,
//! `--insecure` with `--ca-file` or `--tls-fingerprint`, or a host that cannot be a TLS server
//! name are [`Fault::Config`]: the user must fix them, and the program exits. A server that
//! presents a certificate that does not verify (self-signed and not pinned, not the pinned one,
//! unknown issuer, expired, not yet valid, issued for another name, bad signature) is
//! [`Fault::Peer`]: retried with exponential backoff up to `--backoff-max` (30 s), the error logged
//! once and then only at debug level while it stays the same. Retrying soon is pointless for most
//! of these, but exiting would be worse: the systemd unit restarts v4l2rtmp on every exit, 2 s
//! later, so a configuration error here would become a full restart (camera reopened, new
//! handshake, a new error line) every 2 s for as long as the certificate is wrong, where the
//! backoff makes one handshake every 15 s on average. And for a camera that runs for months the
//! server side is what changes: an ingest node may serve an expired certificate for an hour, a
//! load balancer may briefly present the wrong one, an NVR's admin fixes its certificate, and a
//! Raspberry Pi has no real-time clock, so until NTP has set the time after boot every
//! certificate looks "not valid yet" (that one must be retried soon, and is). The stream then
//! comes back by itself; a configuration reloaded with SIGHUP applies from the next attempt.
//! `--max-retries 0` exits at the first refusal (exit code 76), for a first try by hand. The
//! message says what is wrong, what to do and the presented certificate's SHA-256, so a
//! persistent problem is still obvious in the log.
//!
//! # Driving it from a non-blocking socket
//!
//! ```text
//! tls = TlsSession::new(config, host)?            // the ClientHello is already pending
//! handshake: while tls.is_handshaking() {
//!     write pending_output() (consume_output(n) for what the socket took)
//!     wait readable (and writable while output is pending)
//!     n = read(tls.read_buf()); n == 0 -> network error "closed during the TLS handshake"
//!     tls.received(n, &mut |_| Ok(()))?            // no application data before the end
//! }
//! write a Gather: loop {
//!     tls.encrypt_from(gather, external)?          // seals what fits; 0 when the buffer is full
//!     n = write(pending_output()) -> consume_output(n); WouldBlock -> wait writable
//!     done when gather.is_empty() && pending_output().is_empty()
//! }
//! read: n = read(tls.read_buf()); n == 0 -> EOF (clean if tls.peer_closed())
//!     tls.received(n, &mut |bytes| session.handle_input(bytes, now))?
//!     then write: received may have queued TLS output (key updates, alerts)
//! close: flush the gather, tls.close(), write pending_output(), shutdown(Write)
//! ```
//!
//! Idle means `gather.is_empty() && tls.pending_output().is_empty()`. Bytes in
//! `pending_output` are sealed copies, so [`Gather::detach_external`] is only needed for what
//! the gather still holds.
//!
//! # Invariants
//!
//! - Memory is bounded: the outgoing buffer holds at most [`OUTGOING_CAPACITY`] bytes, the
//!   incoming buffer grows only during the handshake (to hold one handshake message of up to
//!   64 KiB) and never beyond [`INCOMING_MAX`], the staging buffer never beyond one record.
//!   (Only a handshake flight larger than the outgoing buffer may grow it, up to 256 KiB.)
//! - In steady state nothing here allocates; rustls 0.23 itself allocates one transient buffer
//!   per record it seals or opens (freed before the call returns: no growth).
//! - After a method returns `Err`, the session is finished: drop it (later calls return errors).
//! - Plaintext is handed out in order, exactly once; ciphertext leaves in order, exactly once.

mod sealing;
mod session;
#[cfg(test)]
mod testing;
mod trust;

pub use sealing::COPY_BELOW;
pub use session::TlsSession;
pub use trust::{
    client_config, client_config_with, destination_config, system_roots, Fingerprint, RootsSource,
    SYSTEM_CA_BUNDLES, SYSTEM_CA_DIR,
};

use crate::error::{Error, Result};
#[cfg(doc)]
use crate::{error::Fault, rtmp::chunk::Gather};

/// Largest plaintext in one TLS record (RFC 8446 5.1, RFC 5246 6.2.1).
const MAX_RECORD_PLAINTEXT: usize = 16 * 1024;

/// Bytes kept free per record beyond its plaintext: the 5-byte header, TLS 1.2's 8-byte
/// explicit nonce, TLS 1.3's content type byte, the 16-byte tag (29 at most), plus room for a
/// TLS 1.3 KeyUpdate that rustls may put in front of a record (27 bytes), rounded up.
const RECORD_RESERVE: usize = 64;

/// Bytes of the outgoing buffer that application data never takes, so that `close_notify`
/// always fits.
const CLOSE_RESERVE: usize = 64;

/// The outgoing ciphertext buffer: four full records, so one socket write carries 64 KiB.
pub const OUTGOING_CAPACITY: usize = 4 * (MAX_RECORD_PLAINTEXT + RECORD_RESERVE) + CLOSE_RESERVE;

/// Only handshake flights larger than the outgoing buffer may grow it, up to this.
const OUTGOING_MAX: usize = 256 * 1024;

/// A largest record on the wire: header, 16 KiB of plaintext and TLS 1.2's largest expansion.
const MAX_RECORD_WIRE: usize = 5 + MAX_RECORD_PLAINTEXT + 2048;

/// The incoming buffer holds one largest record (steady state)...
const INCOMING_INITIAL: usize = MAX_RECORD_WIRE;

/// ... and, during the handshake, one handshake message of up to 64 KiB (a long certificate
/// chain), which rustls reassembles in place across records.
pub const INCOMING_MAX: usize = 64 * 1024 + 5 * MAX_RECORD_WIRE;

// ---------------------------------------------------------------------------------------------
// Buffers
// ---------------------------------------------------------------------------------------------

/// Ciphertext waiting for the socket: `buf[start..end]`.
struct Outgoing {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Outgoing {
    fn pending(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Free bytes at the end.
    fn free(&self) -> usize {
        self.buf.len() - self.end
    }

    /// Moves pending bytes to the front when less than `want` is free at the end and moving
    /// would help.
    fn make_room(&mut self, want: usize) {
        if self.free() < want && self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
    }

    /// Makes at least `want` bytes free at the end, growing (handshake flights only) up to
    /// [`OUTGOING_MAX`].
    fn reserve(&mut self, want: usize) -> Result<()> {
        self.make_room(want);
        if self.free() < want {
            let len = self.end + want;
            if len > OUTGOING_MAX {
                return Err(Error::peer(format!(
                    "a TLS handshake message of {want} bytes is too large to send"
                )));
            }
            self.buf.resize(len, 0);
        }
        Ok(())
    }

    fn tail(&mut self) -> &mut [u8] {
        &mut self.buf[self.end..]
    }

    fn commit(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }
}

/// Ciphertext received and not yet processed: `buf[..len]`.
struct Incoming {
    buf: Vec<u8>,
    len: usize,
}

impl Incoming {
    fn discard(&mut self, n: usize) {
        let n = n.min(self.len);
        if n > 0 {
            self.buf.copy_within(n..self.len, 0);
            self.len -= n;
        }
    }
}
