//! TLS for `rtmps://`, sans-IO: a rustls client connection driven through rustls' unbuffered API,
//! with every buffer owned here, allocated once and bounded. The driver moves bytes between the
//! socket and [`TlsSession`]; nothing in this module opens a socket or reads a clock.
//!
//! # Trust
//!
//! [`client_config`] builds the configuration once per process (share the `Arc` across
//! reconnections: it also holds the session-resumption cache, so a reconnection to the same
//! ingest usually skips the full handshake):
//!
//! - by default, the server certificate is verified against the system store: the first CA
//!   bundle found among [`SYSTEM_CA_BUNDLES`] (Debian and Raspberry Pi OS, Alpine, Buildroot and
//!   Yocto use `/etc/ssl/certs/ca-certificates.crt`), else every `*.pem` / `*.crt` file in
//!   [`SYSTEM_CA_DIR`]; when the system has none (a minimal image), the Mozilla roots compiled into
//!   the binary (`webpki-roots`) are used instead;
//! - `--ca-file PATH` REPLACES the system store: only the CAs in that file are trusted, as with
//!   FFmpeg's `-ca_file` and curl's `--cacert`. A private CA is for a private server (an NVR on
//!   the LAN); trusting the public roots in addition would only widen what is accepted for it;
//! - `--insecure` accepts any certificate for any name. The handshake signatures are still
//!   checked (the server proves it holds the key of the certificate it sent), so the connection
//!   is encrypted, but not authenticated: anyone on the path can impersonate the server. The
//!   caller must warn loudly. `--insecure` together with `--ca-file` is a configuration error.
//!
//! # Whose fault
//!
//! A CA file that cannot be read or holds no certificate, `--insecure` with `--ca-file`, or a host
//! that cannot be a TLS server name are [`Fault::Config`]: the user must fix them. A server that
//! presents a certificate that does not verify (unknown issuer, expired, not yet valid, issued
//! for another name, bad signature) is [`Fault::Peer`]: retried with backoff, because for a
//! camera that runs for months the server side is what changes: an ingest node may serve an
//! expired certificate for an hour, a load balancer may briefly present the wrong one, and a
//! Raspberry Pi has no real-time clock, so until NTP has set the time after boot every
//! certificate looks "not valid yet". Exiting would need a person to restart the stream; the
//! backoff keeps the log quiet and recovers by itself. The message says exactly what failed and
//! for which host, so a persistent misconfiguration is still obvious in the log.
//!
//! # Writing: one AEAD per record, few records, no allocation of ours
//!
//! [`TlsSession::encrypt_from`] takes the unwritten bytes of a [`Gather`] (chunk headers in its
//! scratch storage interleaved with ranges of the caller's frame buffer) and seals them into
//! TLS records in a fixed outgoing buffer that the driver writes to the socket. Pieces shorter
//! than [`COPY_BELOW`] (chunk headers, FLV tag headers, NAL length prefixes, SPS/PPS, and the
//! 4096-byte chunks of the usual chunk size) are first copied into a 16 KiB staging buffer so that
//! one record carries up to 16 KiB of them; longer pieces are handed to rustls where they lie.
//! See [`COPY_BELOW`] for the measurements behind this: with rustls 0.23 the payload is copied
//! by rustls itself whatever we do, so per-piece records would only add 22-29 bytes and an AEAD
//! call per chunk header.
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
//! - In steady state nothing here allocates; rustls 0.23 itself allocates one transient buffer
//!   per record it seals or opens (freed before the call returns: no growth).
//! - After a method returns `Err`, the session is finished: drop it (later calls return errors).
//! - Plaintext is handed out in order, exactly once; ciphertext leaves in order, exactly once.

use std::fmt;
use std::io::IoSlice;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::UnbufferedClientConnection;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncryptError, InsufficientSizeError, UnbufferedStatus,
    WriteTraffic,
};
use rustls::{
    CertificateError, CipherSuite, ClientConfig, DigitallySignedStruct, RootCertStore,
    SignatureScheme,
};

use crate::error::{Error, Fault, Result};
use crate::rtmp::chunk::Gather;

/// CA bundles tried in order; the first that holds at least one usable certificate is the
/// system store.
pub const SYSTEM_CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt", // Debian, Raspberry Pi OS, Ubuntu, Alpine, Arch, Buildroot
    "/etc/pki/tls/certs/ca-bundle.crt",   // Fedora, RHEL
    "/etc/ssl/ca-bundle.pem",             // openSUSE
    "/etc/ssl/cert.pem",                  // Alpine, OpenWrt
];

/// The directory whose `*.pem` and `*.crt` files are read when no bundle is found.
pub const SYSTEM_CA_DIR: &str = "/etc/ssl/certs";

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

/// Pieces of the Gather shorter than this are copied into the staging buffer and sealed
/// together, up to 16 KiB per record; longer pieces are sealed where they lie.
///
/// Why 4097, that is: everything up to and including a 4096-byte chunk is coalesced. rustls 0.23's
/// `WriteTraffic::encrypt` takes one slice per call and seals each call into its own record(s);
/// internally it copies the plaintext into a freshly allocated record buffer, seals it there and
/// copies the result into our outgoing buffer. So the payload is copied by rustls whatever we
/// do, and what we choose is only how many records a frame becomes:
///
/// - sealing each piece where it lies (threshold 0): a 4096-byte chunk is two records, a 1-byte
///   chunk header and its 4096-byte payload: 44-58 bytes of overhead per chunk (1.1-1.4 %),
///   two AEAD calls and two allocations inside rustls;
/// - coalescing everything below 4097 (this): four chunks per 16 KiB record, 22-29 bytes of
///   overhead per 16 KiB (0.13-0.18 %), a quarter of the AEAD calls and of rustls'
///   allocations, for one more memcpy of the payload into a 16 KiB buffer that stays in cache
///   and one fewer allocation.
///
/// Measured (the `encrypt_strategies` test, x86-64, best of three, 200 MB of 200 kB keyframes):
/// per piece / coalesced, TLS 1.3 AES-256-GCM 58 / 45 ms, TLS 1.3 ChaCha20 126 / 110 ms,
/// TLS 1.2 AES-256-GCM 88 / 45 ms, TLS 1.2 ChaCha20 172 / 150 ms. On a Raspberry Pi without AES
/// instructions the AEAD costs 15-30 times a cached memcpy per byte, so our copy adds a few per
/// cent at most there, against 1.75 fewer records (AEAD set-up, allocation, bookkeeping) and
/// about 40 fewer bytes on the wire per 4096-byte chunk.
///
/// Pieces above this (chunk sizes above 4096) are already large enough for the per-record
/// overhead not to matter, and are sealed without our copy.
pub const COPY_BELOW: usize = 4097;

/// `IoSlice`s taken from the Gather per batch (about 32 pieces fill the outgoing buffer at chunk
/// size 4096; a batch is 1 KiB of stack).
const SLICE_BATCH: usize = 64;

/// A record is sealed directly into the outgoing buffer only if at least this much room is
/// left; otherwise the driver drains the buffer first (no tiny records at its end).
const MIN_DIRECT_RECORD: usize = 2048;

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

/// Builds the client configuration: system roots (bundled roots where the system has none), or
/// only the CAs in `ca_file`, or no verification (`insecure`: the caller warns).
///
/// Cipher suites: on ARM processors without AES instructions (every Raspberry Pi before the 5),
/// ChaCha20-Poly1305 is offered first and AES-128 before AES-256: ChaCha20 is several times
/// faster there in constant time. Servers that honour the client's order (most ingest servers)
/// then pick it. TLS 1.2 and 1.3 are offered.
pub fn client_config(ca_file: Option<&Path>, insecure: bool) -> Result<Arc<ClientConfig>> {
    client_config_for(ca_file, insecure, has_aes_instructions())
}

fn client_config_for(
    ca_file: Option<&Path>,
    insecure: bool,
    aes_instructions: bool,
) -> Result<Arc<ClientConfig>> {
    let provider = Arc::new(provider(aes_instructions));
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::ours(format!("TLS configuration: {e}")))?;
    let config = match (ca_file, insecure) {
        (Some(path), true) => {
            return Err(Error::config(format!(
                "--insecure and --ca-file {} contradict each other: --insecure trusts any \
                 certificate, --ca-file trusts only that CA; keep one",
                path.display()
            )))
        }
        (None, true) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification {
                algorithms: provider.signature_verification_algorithms,
            }))
            .with_no_client_auth(),
        (Some(path), false) => builder
            .with_root_certificates(ca_file_roots(path)?)
            .with_no_client_auth(),
        (None, false) => builder
            .with_root_certificates(system_roots().0)
            .with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// Where the trusted roots came from (for a log line at startup).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RootsSource {
    /// A CA bundle file.
    Bundle(String),
    /// The `*.pem` / `*.crt` files of a directory.
    Directory(String),
    /// The Mozilla roots compiled into the binary.
    Bundled,
}

impl fmt::Display for RootsSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RootsSource::Bundle(path) => write!(f, "{path}"),
            RootsSource::Directory(path) => write!(f, "the certificates in {path}"),
            RootsSource::Bundled => f.write_str("the Mozilla roots built into v4l2rtmp"),
        }
    }
}

/// The system's trusted roots, or the bundled ones where the system has none; and where they came
/// from.
pub fn system_roots() -> (RootCertStore, RootsSource) {
    roots_from(SYSTEM_CA_BUNDLES, Path::new(SYSTEM_CA_DIR))
}

/// The first bundle of `bundles` that yields a usable certificate, else every `*.pem` / `*.crt`
/// file of `dir`, else the bundled roots.
fn roots_from(bundles: &[&str], dir: &Path) -> (RootCertStore, RootsSource) {
    for bundle in bundles {
        let mut store = RootCertStore::empty();
        if let Ok(certs) = CertificateDer::pem_file_iter(bundle) {
            store.add_parsable_certificates(certs.filter_map(|c| c.ok()));
        }
        if !store.is_empty() {
            log::debug!("trusting {} CA certificates from {bundle}", store.len());
            return (store, RootsSource::Bundle(bundle.to_string()));
        }
    }
    let mut store = RootCertStore::empty();
    if let Ok(entries) = std::fs::read_dir(dir) {
        let mut paths: Vec<_> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("pem" | "crt")))
            .collect();
        paths.sort();
        for path in paths {
            if let Ok(certs) = CertificateDer::pem_file_iter(&path) {
                store.add_parsable_certificates(certs.filter_map(|c| c.ok()));
            }
        }
    }
    if !store.is_empty() {
        log::debug!(
            "trusting {} CA certificates from {}",
            store.len(),
            dir.display()
        );
        return (store, RootsSource::Directory(dir.display().to_string()));
    }
    log::debug!("no CA certificates on this system: trusting the bundled Mozilla roots");
    let store = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    (store, RootsSource::Bundled)
}

/// The CAs of `--ca-file`: every PEM certificate in it; none, or one that cannot be used as a
/// trust anchor, is a configuration error.
fn ca_file_roots(path: &Path) -> Result<RootCertStore> {
    let shown = path.display();
    let certs = CertificateDer::pem_file_iter(path).map_err(|e| {
        Error::config(format!(
            "cannot read the CA file {shown}: {}",
            pem_error(&e)
        ))
    })?;
    let mut store = RootCertStore::empty();
    for (index, cert) in certs.enumerate() {
        let cert = cert.map_err(|e| {
            Error::config(format!(
                "the CA file {shown} is not valid PEM: {}",
                pem_error(&e)
            ))
        })?;
        store.add(cert).map_err(|e| {
            Error::config(format!(
                "certificate {} of the CA file {shown} cannot be a trust anchor: {e}",
                index + 1
            ))
        })?;
    }
    if store.is_empty() {
        return Err(Error::config(format!(
            "the CA file {shown} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
        )));
    }
    Ok(store)
}

fn pem_error(e: &rustls::pki_types::pem::Error) -> String {
    match e {
        rustls::pki_types::pem::Error::Io(io) => io.to_string(),
        other => format!("{other:?}"),
    }
}

/// The ring provider, with ChaCha20-Poly1305 first and AES-128 before AES-256 where the
/// processor has no AES instructions.
fn provider(aes_instructions: bool) -> CryptoProvider {
    let mut provider = rustls::crypto::ring::default_provider();
    if !aes_instructions {
        // Stable: TLS 1.3 suites stay before TLS 1.2 ones.
        provider.cipher_suites.sort_by_key(|suite| {
            let s = suite.suite();
            let tls12 = matches!(suite, rustls::SupportedCipherSuite::Tls12(_));
            let rank = match s {
                CipherSuite::TLS13_CHACHA20_POLY1305_SHA256
                | CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
                | CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 => 0,
                CipherSuite::TLS13_AES_128_GCM_SHA256
                | CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
                | CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => 1,
                _ => 2,
            };
            (tls12, rank)
        });
    }
    provider
}

/// Whether the processor has AES instructions (then AES-GCM is the fastest suite).
fn has_aes_instructions() -> bool {
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("aes")
    }
    #[cfg(target_arch = "arm")]
    {
        // `is_arm_feature_detected!` is unstable: the kernel lists the same flags here.
        std::fs::read_to_string("/proc/cpuinfo")
            .map(|info| {
                info.lines()
                    .filter(|l| l.starts_with("Features"))
                    .any(|l| l.split_whitespace().any(|flag| flag == "aes"))
            })
            .unwrap_or(false)
    }
    #[cfg(not(any(target_arch = "aarch64", target_arch = "arm")))]
    {
        // x86-64 has had AES-NI for fifteen years; other architectures keep rustls' order.
        true
    }
}

/// `--insecure`: any certificate, any name; handshake signatures still checked.
#[derive(Debug)]
struct NoVerification {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

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

// ---------------------------------------------------------------------------------------------
// Session
// ---------------------------------------------------------------------------------------------

/// One TLS client connection, sans-IO. See the module documentation and
/// [`encrypt_from`](Self::encrypt_from), [`received`](Self::received).
pub struct TlsSession {
    conn: UnbufferedClientConnection,
    /// The host as given, for messages.
    host: String,
    incoming: Incoming,
    outgoing: Outgoing,
    /// Small pieces copied here are sealed together (capacity one record, allocated once).
    stage: Vec<u8>,
    /// [`COPY_BELOW`], a field so the tests can compare strategies.
    copy_below: usize,
    handshaking: bool,
    close_requested: bool,
    peer_closed: bool,
    /// A method returned an error: the session is finished.
    failed: bool,
}

impl fmt::Debug for TlsSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsSession")
            .field("host", &self.host)
            .field("handshaking", &self.handshaking)
            .field("incoming", &self.incoming.len)
            .field("outgoing", &(self.outgoing.end - self.outgoing.start))
            .field("close_requested", &self.close_requested)
            .field("peer_closed", &self.peer_closed)
            .field("failed", &self.failed)
            .finish()
    }
}

/// What to do after one state of the connection.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Step {
    Again,
    Stop,
}

impl TlsSession {
    /// Starts a connection to `host` (a DNS name: verified and sent as SNI; or an IP address:
    /// verified against the certificate's IP addresses, no SNI). The ClientHello is ready in
    /// [`pending_output`](Self::pending_output) when this returns.
    pub fn new(config: Arc<ClientConfig>, host: &str) -> Result<TlsSession> {
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let name = ServerName::try_from(bare.to_string()).map_err(|_| {
            Error::config(format!(
                "{host} is not a host name or IP address TLS can verify"
            ))
        })?;
        let conn = UnbufferedClientConnection::new(config, name)
            .map_err(|e| Error::ours(format!("cannot start TLS: {e}")))?;
        let mut session = TlsSession {
            conn,
            host: host.to_string(),
            incoming: Incoming {
                buf: vec![0; INCOMING_INITIAL],
                len: 0,
            },
            outgoing: Outgoing {
                buf: vec![0; OUTGOING_CAPACITY],
                start: 0,
                end: 0,
            },
            stage: Vec::with_capacity(MAX_RECORD_PLAINTEXT),
            copy_below: COPY_BELOW,
            handshaking: true,
            close_requested: false,
            peer_closed: false,
            failed: false,
        };
        session.process(&mut |_| Ok(()))?;
        Ok(session)
    }

    /// Whether the TLS handshake is still going.
    pub fn is_handshaking(&self) -> bool {
        self.handshaking
    }

    /// The negotiated protocol and cipher suite, for a log line ("TLSv1_3
    /// TLS13_CHACHA20_POLY1305_SHA256"); `None` during the handshake.
    pub fn negotiated(&self) -> Option<String> {
        let version = self.conn.protocol_version()?;
        let suite = self.conn.negotiated_cipher_suite()?;
        Some(format!("{version:?} {:?}", suite.suite()))
    }

    /// Space to read ciphertext from the socket into; then call [`received`](Self::received)
    /// with the count. Never empty while the session is usable.
    pub fn read_buf(&mut self) -> &mut [u8] {
        &mut self.incoming.buf[self.incoming.len..]
    }

    /// Processes `n` bytes read into [`read_buf`](Self::read_buf): advances the handshake (its
    /// replies go to [`pending_output`](Self::pending_output)), decrypts application data and
    /// hands each plaintext record to `plaintext`, in order. An error from `plaintext` is returned
    /// as is. Errors: TLS alerts, certificates that do not verify, malformed records.
    pub fn received(
        &mut self,
        n: usize,
        plaintext: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        self.check_usable()?;
        self.incoming.len = (self.incoming.len + n).min(self.incoming.buf.len());
        let result = self.process(plaintext);
        if result.is_err() {
            self.failed = true;
            return result;
        }
        if self.incoming.len == self.incoming.buf.len() {
            // Only a handshake message longer than a record can fill the buffer: it is
            // reassembled in place and consumed whole.
            let grown = (self.incoming.buf.len() * 2).min(INCOMING_MAX);
            if grown == self.incoming.buf.len() {
                self.failed = true;
                return Err(Error::peer(format!(
                    "{} sent a TLS handshake message larger than {INCOMING_MAX} bytes",
                    self.host
                )));
            }
            self.incoming.buf.resize(grown, 0);
        }
        Ok(())
    }

    /// Seals as much of `gather` (its unwritten bytes, external pieces resolved against
    /// `external`) as fits in the outgoing buffer, advancing the gather by the plaintext bytes
    /// taken; returns that count. Returns 0 while handshaking (nothing may be sent yet), after
    /// the peer's close_notify has been answered, or when the outgoing buffer is full: write
    /// [`pending_output`](Self::pending_output) first.
    ///
    /// Every byte taken from the gather is in `pending_output` when this returns, so the
    /// external buffer may be reused as soon as the gather no longer refers to it
    /// ([`Gather::has_external`]).
    pub fn encrypt_from(&mut self, gather: &mut Gather, external: &[u8]) -> Result<usize> {
        self.check_usable()?;
        if self.close_requested {
            return Err(Error::ours("TLS: data queued after close_notify"));
        }
        if self.handshaking || gather.is_empty() {
            return Ok(0);
        }
        self.outgoing
            .make_room(MAX_RECORD_PLAINTEXT + RECORD_RESERVE + CLOSE_RESERVE);
        let copy_below = self.copy_below;
        let result = self.with_write_traffic(|traffic, outgoing, stage| {
            seal_gather(traffic, outgoing, stage, copy_below, gather, external)
        });
        if result.is_err() {
            self.failed = true;
        }
        Ok(result?.unwrap_or(0))
    }

    /// Ciphertext waiting for the socket: handshake records, sealed data, alerts.
    pub fn pending_output(&self) -> &[u8] {
        self.outgoing.pending()
    }

    /// `n` bytes of [`pending_output`](Self::pending_output) were written to the socket.
    pub fn consume_output(&mut self, n: usize) {
        self.outgoing.consume(n);
    }

    /// Queues close_notify (after everything already sealed). During the handshake nothing can
    /// be sent: the caller just closes the socket. Later [`encrypt_from`](Self::encrypt_from)
    /// calls are errors.
    pub fn close(&mut self) {
        if self.close_requested || self.failed {
            return;
        }
        self.close_requested = true;
        if self.handshaking {
            return;
        }
        self.outgoing.make_room(CLOSE_RESERVE);
        let result = self.with_write_traffic(|traffic, outgoing, _| {
            match traffic.queue_close_notify(outgoing.tail()) {
                Ok(n) => outgoing.commit(n),
                Err(e) => log::debug!("cannot queue TLS close_notify: {e}"),
            }
            Ok(())
        });
        if let Err(e) = result {
            log::debug!("cannot queue TLS close_notify: {e}");
        }
    }

    /// Whether the peer closed the TLS session (its close_notify arrived): no more data will
    /// come; an end of stream after this is clean, one before it may be a truncation.
    pub fn peer_closed(&self) -> bool {
        self.peer_closed
    }

    fn check_usable(&self) -> Result<()> {
        if self.failed {
            Err(Error::ours("TLS session used after an error"))
        } else {
            Ok(())
        }
    }

    /// Runs the connection's state machine over the buffered input until it needs more input or
    /// is ready to send data.
    fn process(&mut self, plaintext: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()> {
        loop {
            let UnbufferedStatus { mut discard, state } = self
                .conn
                .process_tls_records(&mut self.incoming.buf[..self.incoming.len]);
            let step = match state {
                Err(e) => {
                    self.incoming.discard(discard);
                    return Err(self.fail(e));
                }
                Ok(ConnectionState::ReadTraffic(mut traffic)) => {
                    while let Some(record) = traffic.next_record() {
                        let record = record.map_err(|e| map_tls_error(&e, &self.host))?;
                        discard += record.discard;
                        plaintext(record.payload)?;
                    }
                    Step::Again
                }
                Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                    encode_handshake(&mut self.outgoing, |buf| encode.encode(buf))?;
                    Step::Again
                }
                Ok(ConnectionState::TransmitTlsData(transmit)) => {
                    // Everything encoded is in `outgoing`, in order, before anything written
                    // later: for rustls it counts as sent.
                    transmit.done();
                    Step::Again
                }
                Ok(ConnectionState::BlockedHandshake) => Step::Stop,
                Ok(ConnectionState::WriteTraffic(_)) => {
                    self.handshaking = false;
                    Step::Stop
                }
                Ok(ConnectionState::PeerClosed) => {
                    self.peer_closed = true;
                    Step::Again
                }
                Ok(ConnectionState::Closed) => {
                    self.peer_closed = true;
                    Step::Stop
                }
                Ok(_) => Step::Stop,
            };
            self.incoming.discard(discard);
            if step == Step::Stop {
                return Ok(());
            }
        }
    }

    /// Brings the connection to its WriteTraffic state (encoding any queued handshake message on
    /// the way) and runs `f` in it. `Ok(None)` when it cannot send application data now.
    fn with_write_traffic<T>(
        &mut self,
        f: impl FnOnce(
            &mut WriteTraffic<'_, rustls::client::ClientConnectionData>,
            &mut Outgoing,
            &mut Vec<u8>,
        ) -> Result<T>,
    ) -> Result<Option<T>> {
        let mut f = Some(f);
        loop {
            let UnbufferedStatus { discard, state } = self
                .conn
                .process_tls_records(&mut self.incoming.buf[..self.incoming.len]);
            let (step, value) = match state {
                Err(e) => {
                    self.incoming.discard(discard);
                    return Err(self.fail(e));
                }
                Ok(ConnectionState::WriteTraffic(mut traffic)) => match f.take() {
                    Some(f) => {
                        let value = f(&mut traffic, &mut self.outgoing, &mut self.stage);
                        (Step::Stop, Some(value))
                    }
                    None => (Step::Stop, None),
                },
                Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                    encode_handshake(&mut self.outgoing, |buf| encode.encode(buf))?;
                    (Step::Again, None)
                }
                Ok(ConnectionState::TransmitTlsData(transmit)) => {
                    transmit.done();
                    (Step::Again, None)
                }
                Ok(ConnectionState::PeerClosed) => {
                    self.peer_closed = true;
                    (Step::Again, None)
                }
                Ok(ConnectionState::ReadTraffic(_)) => {
                    // `received` hands out every record it decrypts before returning.
                    return Err(Error::ours("TLS: decrypted data was left unread"));
                }
                Ok(_) => (Step::Stop, None),
            };
            self.incoming.discard(discard);
            if step == Step::Stop {
                return value.transpose();
            }
        }
    }

    /// Maps a rustls error, after queueing the alert rustls prepared for the peer (sent if the
    /// driver still flushes `pending_output`, which is polite but not required).
    fn fail(&mut self, e: rustls::Error) -> Error {
        self.failed = true;
        let error = map_tls_error(&e, &self.host);
        // Once only: rustls hands out a queued alert before it looks at the input again (which
        // must be the same buffer, minus what was discarded: it keeps offsets into it).
        let status = self
            .conn
            .process_tls_records(&mut self.incoming.buf[..self.incoming.len]);
        if let Ok(ConnectionState::EncodeTlsData(mut encode)) = status.state {
            let _ = encode_handshake(&mut self.outgoing, |buf| encode.encode(buf));
        }
        error
    }

    #[cfg(test)]
    fn buffer_capacities(&self) -> [usize; 3] {
        [
            self.incoming.buf.capacity(),
            self.outgoing.buf.capacity(),
            self.stage.capacity(),
        ]
    }
}

/// Encodes one handshake record into `outgoing`, growing it if a flight is larger than it.
fn encode_handshake(
    outgoing: &mut Outgoing,
    mut encode: impl FnMut(&mut [u8]) -> std::result::Result<usize, EncodeError>,
) -> Result<()> {
    loop {
        match encode(outgoing.tail()) {
            Ok(n) => {
                outgoing.commit(n);
                return Ok(());
            }
            Err(EncodeError::InsufficientSize(InsufficientSizeError { required_size })) => {
                outgoing.reserve(required_size)?
            }
            Err(EncodeError::AlreadyEncoded) => return Ok(()),
        }
    }
}

/// Seals `data` as one or more records at the end of `outgoing`. `Ok(false)`: it did not fit
/// (nothing written).
fn seal(
    traffic: &mut WriteTraffic<'_, rustls::client::ClientConnectionData>,
    outgoing: &mut Outgoing,
    data: &[u8],
) -> Result<bool> {
    match traffic.encrypt(data, outgoing.tail()) {
        Ok(n) => {
            outgoing.commit(n);
            Ok(true)
        }
        Err(EncryptError::InsufficientSize(_)) => Ok(false),
        Err(EncryptError::EncryptExhausted) => Err(Error::network(
            "the TLS session has sealed as many records as its keys allow: reconnecting",
        )),
    }
}

/// Seals the staged bytes; the staging buffer is sized so they always fit, and if rustls needs
/// more than reserved (it never should), the outgoing buffer grows rather than losing them.
fn flush_stage(
    traffic: &mut WriteTraffic<'_, rustls::client::ClientConnectionData>,
    outgoing: &mut Outgoing,
    stage: &mut Vec<u8>,
) -> Result<()> {
    if stage.is_empty() {
        return Ok(());
    }
    if !seal(traffic, outgoing, stage)? {
        outgoing.reserve(stage.len() + 2 * RECORD_RESERVE)?;
        if !seal(traffic, outgoing, stage)? {
            return Err(Error::ours("TLS: a record does not fit its reserved room"));
        }
    }
    stage.clear();
    Ok(())
}

/// The heart of [`TlsSession::encrypt_from`]: walks the gather's unwritten pieces, staging small
/// ones and sealing large ones where they lie, until the gather is empty or the outgoing buffer
/// has no room for another record.
fn seal_gather(
    traffic: &mut WriteTraffic<'_, rustls::client::ClientConnectionData>,
    outgoing: &mut Outgoing,
    stage: &mut Vec<u8>,
    copy_below: usize,
    gather: &mut Gather,
    external: &[u8],
) -> Result<usize> {
    debug_assert!(stage.is_empty());
    let mut total = 0;
    loop {
        let mut slices = [IoSlice::new(&[]); SLICE_BATCH];
        let count = gather.io_slices(external, &mut slices);
        if count == 0 {
            if gather.is_empty() {
                return Ok(total);
            }
            return Err(Error::ours(
                "queued bytes refer to a buffer that is no longer there",
            ));
        }
        let mut taken = 0;
        let mut full = false;
        'pieces: for slice in &slices[..count] {
            let mut bytes: &[u8] = slice;
            while !bytes.is_empty() {
                // Room for data: what the outgoing buffer can take as sealed records.
                let room = outgoing
                    .free()
                    .saturating_sub(CLOSE_RESERVE + RECORD_RESERVE);
                if bytes.len() < copy_below {
                    let limit = room.min(MAX_RECORD_PLAINTEXT);
                    // A new record only if it can be a sizeable one (or take all that is left).
                    let left = gather.remaining() - taken;
                    if stage.is_empty() && limit < left.min(MIN_DIRECT_RECORD) {
                        full = true;
                        break 'pieces;
                    }
                    if stage.len() >= limit {
                        if stage.is_empty() {
                            full = true;
                            break 'pieces;
                        }
                        flush_stage(traffic, outgoing, stage)?;
                        continue;
                    }
                    let n = bytes.len().min(limit - stage.len());
                    stage.extend_from_slice(&bytes[..n]);
                    bytes = &bytes[n..];
                    taken += n;
                    if stage.len() == MAX_RECORD_PLAINTEXT {
                        flush_stage(traffic, outgoing, stage)?;
                    }
                } else {
                    if !stage.is_empty() {
                        flush_stage(traffic, outgoing, stage)?;
                        continue;
                    }
                    let n = bytes.len().min(room).min(MAX_RECORD_PLAINTEXT);
                    if n < bytes.len().min(MIN_DIRECT_RECORD) || n == 0 {
                        full = true;
                        break 'pieces;
                    }
                    if !seal(traffic, outgoing, &bytes[..n])? {
                        full = true;
                        break 'pieces;
                    }
                    bytes = &bytes[n..];
                    taken += n;
                }
            }
        }
        flush_stage(traffic, outgoing, stage)?;
        gather.advance(taken);
        total += taken;
        if full || gather.is_empty() {
            return Ok(total);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// A rustls error as the crate's error, with a message that says what failed and for which host.
fn map_tls_error(e: &rustls::Error, host: &str) -> Error {
    use rustls::Error as E;
    match e {
        E::InvalidCertificate(cert) => Error::peer(certificate_message(cert, host)),
        E::NoCertificatesPresented => Error::peer(format!("{host} presented no TLS certificate")),
        E::AlertReceived(alert) => Error::peer(format!(
            "{host} ended the TLS session with the alert {alert:?}"
        )),
        E::PeerIncompatible(what) => Error::peer(format!(
            "{host} and v4l2rtmp have no TLS version or cipher suite in common ({what:?})"
        )),
        E::PeerMisbehaved(what) => Error::peer(format!("{host} broke the TLS protocol ({what:?})")),
        E::InvalidMessage(what) => {
            Error::peer(format!("{host} sent a malformed TLS message ({what:?})"))
        }
        E::DecryptError => Error::peer(format!(
            "a TLS record from {host} failed authentication (corrupted or forged)"
        )),
        E::PeerSentOversizedRecord => {
            Error::peer(format!("{host} sent a TLS record larger than allowed"))
        }
        E::InappropriateMessage { .. } | E::InappropriateHandshakeMessage { .. } => {
            Error::peer(format!("{host} sent an unexpected TLS message: {e}"))
        }
        E::FailedToGetCurrentTime => Error::ours(format!("TLS: {e}")),
        E::FailedToGetRandomBytes => Error::ours(format!("TLS: {e}")),
        _ => Error::new(Fault::Peer, format!("TLS with {host} failed: {e}")),
    }
}

/// "certificate for X is not valid for Y", "unknown issuer", "expired at", ...
fn certificate_message(cert: &CertificateError, host: &str) -> String {
    use CertificateError as C;
    let subject = format!("the TLS certificate presented by {host}");
    match cert {
        C::NotValidForNameContext {
            expected: _,
            presented,
        } => {
            let names = if presented.is_empty() {
                "no name".to_string()
            } else {
                let names: Vec<&str> = presented.iter().map(|n| presented_name(n)).collect();
                names.join(", ")
            };
            format!("the TLS certificate for {names} is not valid for {host}")
        }
        C::NotValidForName => format!("{subject} is not valid for {host}"),
        C::UnknownIssuer => format!(
            "{subject} has an unknown issuer: no CA trusted here signed it (the system's CAs, or \
             only those of --ca-file when it is given)"
        ),
        C::ExpiredContext { time, not_after } => format!(
            "{subject} expired at {} (the time here is {}; check the clock)",
            utc(*not_after),
            utc(*time)
        ),
        C::Expired => format!("{subject} expired (check the clock)"),
        C::NotValidYetContext { time, not_before } => format!(
            "{subject} is not valid before {} and the time here is {}: the system clock is \
             probably not set yet (no NTP since boot?)",
            utc(*not_before),
            utc(*time)
        ),
        C::NotValidYet => format!(
            "{subject} is not valid yet: the system clock is probably not set (no NTP since boot?)"
        ),
        C::Revoked => format!("{subject} has been revoked"),
        C::BadSignature => format!("{subject} has a bad signature"),
        C::BadEncoding => format!("{subject} is malformed"),
        C::InvalidPurposeContext { .. } | C::InvalidPurpose => {
            format!("{subject} is not for TLS servers")
        }
        C::Other(other) => format!("{subject} was refused: {other}"),
        other => format!("{subject} was refused: {other:?}"),
    }
}

/// `other.example.com` out of webpki's `DnsName("other.example.com")`, `10.0.0.1` out of
/// `IpAddress(10.0.0.1)`; anything else as it is.
fn presented_name(name: &str) -> &str {
    name.strip_prefix("DnsName(\"")
        .and_then(|n| n.strip_suffix("\")"))
        .or_else(|| {
            name.strip_prefix("IpAddress(")
                .and_then(|n| n.strip_suffix(')'))
        })
        .unwrap_or(name)
}

/// `2025-01-31 12:00:00 UTC`.
fn utc(time: UnixTime) -> String {
    let secs = time.as_secs();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use std::io::{ErrorKind, Read, Write};
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    use rustls::{ServerConfig, ServerConnection};

    use super::*;
    use crate::rtmp::chunk::{ChunkWriter, MessageHeader, Part};

    const HOST: &str = "ingest.example.com";

    struct Ca {
        cert: rcgen::Certificate,
        key: rcgen::KeyPair,
    }

    impl Ca {
        fn new(name: &str) -> Ca {
            let key = rcgen::KeyPair::generate().unwrap();
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, name);
            params.key_usages = vec![
                rcgen::KeyUsagePurpose::KeyCertSign,
                rcgen::KeyUsagePurpose::CrlSign,
            ];
            let cert = params.self_signed(&key).unwrap();
            Ca { cert, key }
        }

        /// A server certificate for `names`; `expired`: valid only in 2001.
        fn issue(
            &self,
            names: &[&str],
            expired: bool,
        ) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
            let key = rcgen::KeyPair::generate().unwrap();
            let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
            let mut params = rcgen::CertificateParams::new(names).unwrap();
            if expired {
                params.not_before = rcgen::date_time_ymd(2001, 1, 1);
                params.not_after = rcgen::date_time_ymd(2001, 12, 31);
            }
            let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
            let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
            (vec![cert.der().clone(), self.cert.der().clone()], key)
        }

        /// The CA certificate as a PEM file (removed when the returned guard drops).
        fn pem_file(&self) -> TempFile {
            TempFile::new(self.cert.pem().as_bytes())
        }
    }

    struct TempFile(PathBuf);

    impl TempFile {
        fn new(contents: &[u8]) -> TempFile {
            static COUNT: AtomicUsize = AtomicUsize::new(0);
            let path = std::env::temp_dir().join(format!(
                "v4l2rtmp-tls-{}-{}.pem",
                std::process::id(),
                COUNT.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::write(&path, contents).unwrap();
            TempFile(path)
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn server_config(
        (chain, key): (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>),
        tls12_only: bool,
    ) -> Arc<ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(provider);
        let builder = if tls12_only {
            builder.with_protocol_versions(&[&rustls::version::TLS12])
        } else {
            builder.with_safe_default_protocol_versions()
        };
        Arc::new(
            builder
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .unwrap(),
        )
    }

    /// A client and an in-memory server, and what each received.
    struct Pair {
        client: TlsSession,
        server: ServerConnection,
        at_client: Vec<u8>,
        at_server: Vec<u8>,
        /// Ciphertext bytes the client produced.
        client_ciphertext: usize,
        /// Feed the client at most this many bytes per `received` call.
        read_size: usize,
    }

    impl Pair {
        fn new(client_config: Arc<ClientConfig>, host: &str, server: Arc<ServerConfig>) -> Pair {
            Pair {
                client: TlsSession::new(client_config, host).unwrap(),
                server: ServerConnection::new(server).unwrap(),
                at_client: Vec::new(),
                at_server: Vec::new(),
                client_ciphertext: 0,
                read_size: usize::MAX,
            }
        }

        fn connect(ca: &Ca, names: &[&str], host: &str) -> Pair {
            let file = ca.pem_file();
            let config = client_config(Some(&file.0), false).unwrap();
            let mut pair = Pair::new(config, host, server_config(ca.issue(names, false), false));
            pair.pump().unwrap();
            assert!(!pair.client.is_handshaking());
            pair
        }

        /// Moves bytes both ways until neither side has anything to send. Client errors are
        /// returned; server errors panic.
        fn pump(&mut self) -> Result<()> {
            loop {
                let mut moved = false;
                while !self.client.pending_output().is_empty() {
                    let mut out = self.client.pending_output();
                    let n = self.server.read_tls(&mut out).unwrap();
                    self.client.consume_output(n);
                    self.client_ciphertext += n;
                    if let Err(e) = self.server.process_new_packets() {
                        // Flush the server's alert to the client, then report.
                        let mut alert = Vec::new();
                        let _ = self.server.write_tls(&mut alert);
                        panic!("server: {e}");
                    }
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        match self.server.reader().read(&mut buf) {
                            Ok(0) => break,
                            Ok(n) => self.at_server.extend_from_slice(&buf[..n]),
                            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                            Err(e) => panic!("server read: {e}"),
                        }
                    }
                    moved = true;
                }
                while self.server.wants_write() {
                    let mut ciphertext = Vec::new();
                    self.server.write_tls(&mut ciphertext).unwrap();
                    let mut rest = &ciphertext[..];
                    while !rest.is_empty() {
                        let buf = self.client.read_buf();
                        assert!(!buf.is_empty());
                        let n = buf.len().min(rest.len()).min(self.read_size);
                        buf[..n].copy_from_slice(&rest[..n]);
                        rest = &rest[n..];
                        let at_client = &mut self.at_client;
                        self.client.received(n, &mut |p| {
                            at_client.extend_from_slice(p);
                            Ok(())
                        })?;
                    }
                    moved = true;
                }
                if !moved {
                    return Ok(());
                }
            }
        }

        /// Seals the whole gather and delivers it.
        fn send(&mut self, gather: &mut Gather, external: &[u8]) {
            while !gather.is_empty() {
                self.client.encrypt_from(gather, external).unwrap();
                assert!(self.client.pending_output().len() <= OUTGOING_CAPACITY);
                self.pump().unwrap();
            }
        }
    }

    /// A keyframe of `len` bytes as the muxer sends it: FLV video tag header and a NAL length
    /// prefix inline, the NAL unit external, chunked at 4096.
    fn keyframe(writer: &mut ChunkWriter, gather: &mut Gather, timestamp: u32, len: usize) {
        let header = MessageHeader {
            chunk_stream_id: 6,
            timestamp,
            type_id: 9,
            stream_id: 1,
        };
        let nal_len = (len as u32).to_be_bytes();
        let parts = [
            Part::inline(&[0x17, 0x01, 0, 0, 0]),
            Part::inline(&nal_len),
            Part::external(0, len),
        ];
        writer.write_message(&header, &parts, gather);
    }

    fn frame_buffer(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    #[test]
    fn keyframe_arrives_byte_identical_over_tls13_and_tls12() {
        let ca = Ca::new("test CA");
        for tls12_only in [false, true] {
            let file = ca.pem_file();
            let config = client_config(Some(&file.0), false).unwrap();
            let server = server_config(ca.issue(&[HOST], false), tls12_only);
            let mut pair = Pair::new(config, HOST, server);
            assert!(pair.client.is_handshaking());
            assert!(
                !pair.client.pending_output().is_empty(),
                "ClientHello ready"
            );
            pair.pump().unwrap();
            assert!(!pair.client.is_handshaking());
            assert_eq!(pair.server.server_name(), Some(HOST), "SNI");
            let negotiated = pair.client.negotiated().unwrap();
            assert!(negotiated.contains(if tls12_only { "TLSv1_2" } else { "TLSv1_3" }));

            let external = frame_buffer(200_000);
            let mut writer = ChunkWriter::new();
            writer.set_chunk_size(4096);
            let mut gather = Gather::with_capacity(4096, 256);
            let mut expected = Vec::new();
            for timestamp in [0, 33, 66] {
                keyframe(&mut writer, &mut gather, timestamp, external.len());
                gather.write_to_vec(&external, &mut expected);
                pair.send(&mut gather, &external);
            }
            assert_eq!(pair.at_server.len(), expected.len());
            assert!(pair.at_server == expected, "payload differs");

            // Server to client: the plaintext callback gets it, in order.
            pair.server
                .writer()
                .write_all(b"\x02acknowledgement")
                .unwrap();
            pair.server.writer().write_all(&[9u8; 40_000]).unwrap();
            pair.pump().unwrap();
            assert_eq!(&pair.at_client[..16], b"\x02acknowledgement");
            assert_eq!(pair.at_client.len(), 16 + 40_000);
        }
    }

    #[test]
    fn tiny_reads_and_partial_writes() {
        let ca = Ca::new("test CA");
        let file = ca.pem_file();
        let config = client_config(Some(&file.0), false).unwrap();
        let mut pair = Pair::new(config, HOST, server_config(ca.issue(&[HOST], false), false));
        pair.read_size = 7;
        pair.pump().unwrap();
        assert!(!pair.client.is_handshaking());
        pair.server.writer().write_all(&[5u8; 20_000]).unwrap();
        pair.pump().unwrap();
        assert_eq!(pair.at_client, vec![5u8; 20_000]);

        // The socket takes 1000 bytes at a time: encrypt_from refills only what fits.
        let external = frame_buffer(300_000);
        let mut writer = ChunkWriter::new();
        writer.set_chunk_size(4096);
        let mut gather = Gather::default();
        keyframe(&mut writer, &mut gather, 0, external.len());
        let mut expected = Vec::new();
        gather.write_to_vec(&external, &mut expected);
        let mut wire = Vec::new();
        let mut taken = 0;
        while !gather.is_empty() || !pair.client.pending_output().is_empty() {
            taken += pair.client.encrypt_from(&mut gather, &external).unwrap();
            let out = pair.client.pending_output();
            assert!(out.len() <= OUTGOING_CAPACITY);
            let n = out.len().min(1000);
            wire.extend_from_slice(&out[..n]);
            pair.client.consume_output(n);
        }
        assert_eq!(taken, expected.len());
        let mut rest = &wire[..];
        let mut got = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        while !rest.is_empty() {
            pair.server.read_tls(&mut rest).unwrap();
            pair.server.process_new_packets().unwrap();
            while let Ok(n) = pair.server.reader().read(&mut buf) {
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
        }
        assert!(got == expected);
    }

    #[test]
    fn certificate_for_another_name_is_a_peer_error_naming_both() {
        let ca = Ca::new("test CA");
        let file = ca.pem_file();
        let config = client_config(Some(&file.0), false).unwrap();
        let server = server_config(ca.issue(&["other.example.net"], false), false);
        let mut pair = Pair::new(config, HOST, server);
        let err = pair.pump().unwrap_err();
        assert_eq!(err.fault(), Fault::Peer);
        assert_eq!(
            err.message(),
            "the TLS certificate for other.example.net is not valid for ingest.example.com"
        );
        // An IP address host and a certificate for other names.
        let config = client_config(Some(&file.0), false).unwrap();
        let server = server_config(ca.issue(&["10.0.0.1", "cam.example.net"], false), false);
        let err = Pair::new(config, "10.0.0.2", server).pump().unwrap_err();
        assert_eq!(
            err.message(),
            "the TLS certificate for 10.0.0.1, cam.example.net is not valid for 10.0.0.2"
        );
        // Later calls fail instead of going on.
        assert!(pair.client.received(0, &mut |_| Ok(())).is_err());
    }

    #[test]
    fn unknown_issuer_is_a_peer_error_and_the_server_gets_an_alert() {
        let ca = Ca::new("private CA");
        // System store (or bundled roots): the private CA is unknown.
        let config = client_config(None, false).unwrap();
        let server = server_config(ca.issue(&[HOST], false), false);
        let mut pair = Pair::new(config, HOST, server);
        let err = pair.pump().unwrap_err();
        assert_eq!(err.fault(), Fault::Peer);
        assert!(
            err.message().contains("unknown issuer"),
            "{}",
            err.message()
        );
        assert!(err.message().contains(HOST), "{}", err.message());
        // The alert rustls queued reaches the server.
        let mut out = pair.client.pending_output();
        assert!(!out.is_empty());
        pair.server.read_tls(&mut out).unwrap();
        let server_err = pair.server.process_new_packets().unwrap_err();
        assert!(
            matches!(server_err, rustls::Error::AlertReceived(_)),
            "{server_err:?}"
        );

        // Another CA in --ca-file: unknown issuer too.
        let other = Ca::new("other CA");
        let file = other.pem_file();
        let config = client_config(Some(&file.0), false).unwrap();
        let mut pair = Pair::new(config, HOST, server_config(ca.issue(&[HOST], false), false));
        let err = pair.pump().unwrap_err();
        assert!(
            err.message().contains("unknown issuer"),
            "{}",
            err.message()
        );
    }

    #[test]
    fn expired_certificate_says_when() {
        let ca = Ca::new("test CA");
        let file = ca.pem_file();
        let config = client_config(Some(&file.0), false).unwrap();
        let mut pair = Pair::new(config, HOST, server_config(ca.issue(&[HOST], true), false));
        let err = pair.pump().unwrap_err();
        assert_eq!(err.fault(), Fault::Peer);
        assert!(
            err.message().starts_with(
                "the TLS certificate presented by ingest.example.com expired at 2001-12-31 00:00:00 UTC"
            ),
            "{}",
            err.message()
        );
    }

    #[test]
    fn a_ca_certificate_as_the_server_certificate_is_refused() {
        let ca = Ca::new("test CA");
        let file = ca.pem_file();
        let config = client_config(Some(&file.0), false).unwrap();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ca.key.serialize_der()));
        let server = server_config((vec![ca.cert.der().clone()], key), false);
        let err = Pair::new(config, HOST, server).pump().unwrap_err();
        assert_eq!(err.fault(), Fault::Peer);
        assert_eq!(
            err.message(),
            "the TLS certificate presented by ingest.example.com was refused: CaUsedAsEndEntity"
        );
    }

    #[test]
    fn insecure_accepts_any_certificate_for_any_name() {
        let ca = Ca::new("unknown CA");
        let config = client_config(None, true).unwrap();
        let server = server_config(ca.issue(&["other.example.net"], true), false);
        let mut pair = Pair::new(config, HOST, server);
        pair.pump().unwrap();
        assert!(!pair.client.is_handshaking());
        let mut gather = Gather::default();
        gather.push_scratch(b"hello");
        pair.send(&mut gather, &[]);
        assert_eq!(pair.at_server, b"hello");
    }

    #[test]
    fn ip_address_host_is_verified_without_sni() {
        let ca = Ca::new("test CA");
        let mut pair = Pair::connect(&ca, &["127.0.0.1"], "127.0.0.1");
        assert_eq!(pair.server.server_name(), None);
        let mut pair6 = Pair::connect(&ca, &["::1"], "[::1]");
        assert_eq!(pair6.server.server_name(), None);
        let mut gather = Gather::default();
        gather.push_scratch(b"x");
        pair.send(&mut gather, &[]);
        gather.push_scratch(b"y");
        pair6.send(&mut gather, &[]);
        assert_eq!(
            (&pair.at_server[..], &pair6.at_server[..]),
            (&b"x"[..], &b"y"[..])
        );
    }

    #[test]
    fn long_certificate_chain_grows_the_input_buffer_during_the_handshake() {
        let ca = Ca::new("test CA");
        // ~1500 names: a Certificate message of about 40 KB, over three records.
        let names: Vec<String> = (0..1500).map(|i| format!("n{i}.example.com")).collect();
        let mut names: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
        names.push(HOST);
        let pair = Pair::connect(&ca, &names, HOST);
        assert!(pair.client.buffer_capacities()[0] > INCOMING_INITIAL);
        assert!(pair.client.buffer_capacities()[0] <= INCOMING_MAX);
    }

    #[test]
    fn server_key_update_is_answered() {
        let ca = Ca::new("test CA");
        let mut pair = Pair::connect(&ca, &[HOST], HOST);
        let external = frame_buffer(50_000);
        let mut writer = ChunkWriter::new();
        writer.set_chunk_size(4096);
        let mut gather = Gather::default();
        let mut expected = Vec::new();
        for round in 0..3u32 {
            // The server rolls its keys and asks us to roll ours (TLS 1.3 KeyUpdate).
            pair.server.refresh_traffic_keys().unwrap();
            pair.server.writer().write_all(b"ack").unwrap();
            pair.pump().unwrap();
            keyframe(&mut writer, &mut gather, round * 33, external.len());
            gather.write_to_vec(&external, &mut expected);
            pair.send(&mut gather, &external);
        }
        assert_eq!(pair.at_client, b"ackackack");
        assert!(pair.at_server == expected);
    }

    #[test]
    fn close_notify_both_ways() {
        let ca = Ca::new("test CA");
        let mut pair = Pair::connect(&ca, &[HOST], HOST);
        assert!(!pair.client.peer_closed());
        pair.server.send_close_notify();
        pair.pump().unwrap();
        assert!(pair.client.peer_closed());
        let mut gather = Gather::default();
        gather.push_scratch(b"last words");
        pair.send(&mut gather, &[]);
        pair.client.close();
        pair.pump().unwrap();
        assert_eq!(pair.at_server, b"last words");
        let mut buf = [0u8; 16];
        assert_eq!(pair.server.reader().read(&mut buf).unwrap(), 0, "clean EOF");
        gather.push_scratch(b"too late");
        assert_eq!(
            pair.client
                .encrypt_from(&mut gather, &[])
                .unwrap_err()
                .fault(),
            Fault::Ours
        );
    }

    #[test]
    fn nothing_is_sealed_during_the_handshake() {
        let ca = Ca::new("test CA");
        let file = ca.pem_file();
        let config = client_config(Some(&file.0), false).unwrap();
        let mut client = TlsSession::new(config, HOST).unwrap();
        let hello = client.pending_output().len();
        let mut gather = Gather::default();
        gather.push_scratch(b"early");
        assert_eq!(client.encrypt_from(&mut gather, &[]).unwrap(), 0);
        assert_eq!(gather.remaining(), 5);
        assert_eq!(client.pending_output().len(), hello);
    }

    #[test]
    fn configuration_errors() {
        let ca = Ca::new("test CA");
        let file = ca.pem_file();
        let err = client_config(Some(&file.0), true).unwrap_err();
        assert_eq!(err.fault(), Fault::Config);
        assert!(err.message().contains("--insecure and --ca-file"));

        let missing = Path::new("/nonexistent/ca.pem");
        let err = client_config(Some(missing), false).unwrap_err();
        assert_eq!(err.fault(), Fault::Config);
        assert!(err
            .message()
            .contains("cannot read the CA file /nonexistent/ca.pem"));

        let empty = TempFile::new(b"not a certificate\n");
        let err = client_config(Some(&empty.0), false).unwrap_err();
        assert_eq!(err.fault(), Fault::Config);
        assert!(
            err.message().contains("holds no PEM certificate"),
            "{}",
            err.message()
        );

        let config = client_config(None, true).unwrap();
        let err = TlsSession::new(config, "bad host!").unwrap_err();
        assert_eq!(err.fault(), Fault::Config);
    }

    #[test]
    fn roots_come_from_a_bundle_a_directory_or_the_binary() {
        let dir = std::env::temp_dir().join(format!("v4l2rtmp-tls-roots-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = Ca::new("dir CA");
        std::fs::write(dir.join("one.pem"), ca.cert.pem()).unwrap();
        std::fs::write(dir.join("ignored.txt"), "x").unwrap();
        let (store, source) = roots_from(&["/nonexistent/bundle.crt"], &dir);
        assert_eq!(
            (store.len(), &source),
            (1, &RootsSource::Directory(dir.display().to_string()))
        );

        let bundle = ca.pem_file();
        let bundle_path = bundle.0.to_str().unwrap();
        let (store, source) = roots_from(&[bundle_path], &dir);
        assert_eq!(
            (store.len(), source),
            (1, RootsSource::Bundle(bundle_path.into()))
        );

        let (store, source) = roots_from(&[], Path::new("/nonexistent"));
        assert_eq!(source, RootsSource::Bundled);
        assert!(store.len() > 100);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn chacha20_first_without_aes_instructions() {
        let suites = |aes| -> Vec<CipherSuite> {
            provider(aes)
                .cipher_suites
                .iter()
                .map(|s| s.suite())
                .collect()
        };
        let without = suites(false);
        assert_eq!(without[0], CipherSuite::TLS13_CHACHA20_POLY1305_SHA256);
        assert_eq!(without[1], CipherSuite::TLS13_AES_128_GCM_SHA256);
        assert_eq!(
            without[3],
            CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
        );
        assert_eq!(suites(true)[0], CipherSuite::TLS13_AES_256_GCM_SHA384);
        assert_eq!(without.len(), suites(true).len());
    }

    /// Seals the whole gather, returning the ciphertext (the socket takes everything at once).
    fn seal_all(client: &mut TlsSession, gather: &mut Gather, external: &[u8], wire: &mut Vec<u8>) {
        while !gather.is_empty() {
            client.encrypt_from(gather, external).unwrap();
            wire.extend_from_slice(client.pending_output());
            let n = client.pending_output().len();
            client.consume_output(n);
        }
    }

    /// Number of TLS records in `wire` (which holds whole records).
    fn count_records(wire: &[u8]) -> usize {
        let (mut at, mut records) = (0, 0);
        while at + 5 <= wire.len() {
            at += 5 + usize::from(u16::from_be_bytes([wire[at + 3], wire[at + 4]]));
            records += 1;
        }
        assert_eq!(at, wire.len());
        records
    }

    /// Ciphertext bytes and records for three 200 kB keyframes at chunk size 4096, with
    /// `copy_below`; checks that the server gets the plaintext.
    fn overhead(tls12_only: bool, copy_below: usize) -> (usize, usize, usize) {
        let ca = Ca::new("test CA");
        let file = ca.pem_file();
        let config = client_config(Some(&file.0), false).unwrap();
        let server = server_config(ca.issue(&[HOST], false), tls12_only);
        let mut pair = Pair::new(config, HOST, server);
        pair.pump().unwrap();
        pair.client.copy_below = copy_below;
        let external = frame_buffer(200_000);
        let mut writer = ChunkWriter::new();
        writer.set_chunk_size(4096);
        let mut gather = Gather::default();
        let (mut plaintext, mut wire) = (0, Vec::new());
        for timestamp in [0, 33, 66] {
            keyframe(&mut writer, &mut gather, timestamp, external.len());
            plaintext += gather.remaining();
            seal_all(&mut pair.client, &mut gather, &external, &mut wire);
        }
        let mut rest = &wire[..];
        let mut buf = vec![0u8; 64 * 1024];
        let mut got = 0;
        while !rest.is_empty() {
            pair.server.read_tls(&mut rest).unwrap();
            pair.server.process_new_packets().unwrap();
            while let Ok(n) = pair.server.reader().read(&mut buf) {
                if n == 0 {
                    break;
                }
                got += n;
            }
        }
        assert_eq!(got, plaintext);
        (plaintext, wire.len(), count_records(&wire))
    }

    #[test]
    fn ciphertext_overhead_per_4096_byte_chunk() {
        // TLS 1.3 records cost 22 bytes with either AEAD; TLS 1.2 costs 29 with AES-GCM (its
        // explicit nonce) and 21 with ChaCha20-Poly1305, which comes first without AES
        // instructions (every Raspberry Pi before the 5).
        let tls12_per_record = if has_aes_instructions() { 29 } else { 21 };
        for (tls12_only, per_record) in [(false, 22), (true, tls12_per_record)] {
            let (plaintext, wire, records) = overhead(tls12_only, COPY_BELOW);
            // 3 x 200 kB: 600 kB in 16 KiB records.
            assert_eq!(wire - plaintext, records * per_record);
            assert!(
                records <= plaintext.div_ceil(MAX_RECORD_PLAINTEXT) + 3,
                "{records}"
            );
            let chunks = 3 * 200_000_usize.div_ceil(4096);
            let per_chunk = (wire - plaintext) as f64 / chunks as f64;
            assert!(per_chunk < 8.0, "{per_chunk}");
            // Sealing each piece where it lies: two records per chunk.
            let (plaintext0, wire0, records0) = overhead(tls12_only, 0);
            assert_eq!(plaintext0, plaintext);
            assert!(records0 >= 2 * chunks);
            println!(
                "TLS 1.{}: {plaintext} bytes of RTMP in {records} records = {wire} bytes \
                 ({per_chunk:.1} bytes per 4096-byte chunk, {:.3} %); per piece: {records0} \
                 records = {wire0} bytes ({:.1} per chunk, {:.3} %)",
                if tls12_only { 2 } else { 3 },
                100.0 * (wire - plaintext) as f64 / plaintext as f64,
                (wire0 - plaintext) as f64 / chunks as f64,
                100.0 * (wire0 - plaintext) as f64 / plaintext as f64,
            );
        }
    }

    #[test]
    fn buffers_keep_their_capacity_over_1000_frames() {
        let ca = Ca::new("test CA");
        let mut pair = Pair::connect(&ca, &[HOST], HOST);
        let external = frame_buffer(60_000);
        let mut writer = ChunkWriter::new();
        writer.set_chunk_size(4096);
        let mut gather = Gather::default();
        let mut wire = Vec::with_capacity(128 * 1024);
        let mut capacities = None;
        for frame in 0..1100u32 {
            // Every 30th frame a keyframe, the others a tenth of it.
            let len = if frame % 30 == 0 { 60_000 } else { 6_000 };
            keyframe(&mut writer, &mut gather, frame * 33, len);
            wire.clear();
            seal_all(&mut pair.client, &mut gather, &external, &mut wire);
            if frame == 100 {
                capacities = Some(pair.client.buffer_capacities());
            }
        }
        assert_eq!(
            capacities.unwrap(),
            pair.client.buffer_capacities(),
            "no growth after warm-up"
        );
        assert_eq!(
            pair.client.buffer_capacities(),
            [INCOMING_INITIAL, OUTGOING_CAPACITY, MAX_RECORD_PLAINTEXT]
        );
    }

    /// Seconds to seal 100 keyframes of 200 kB at chunk size 4096 per strategy. Run with
    /// `cargo test --release --lib tls::tests::encrypt_strategies -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn encrypt_strategies() {
        for (tls12_only, aes) in [(false, true), (false, false), (true, true), (true, false)] {
            for copy_below in [0, COPY_BELOW, 0, COPY_BELOW, 0, COPY_BELOW] {
                let ca = Ca::new("test CA");
                let file = ca.pem_file();
                let config = client_config_for(Some(&file.0), false, aes).unwrap();
                let server = server_config(ca.issue(&[HOST], false), tls12_only);
                let mut pair = Pair::new(config, HOST, server);
                pair.pump().unwrap();
                pair.client.copy_below = copy_below;
                let external = frame_buffer(200_000);
                let mut writer = ChunkWriter::new();
                writer.set_chunk_size(4096);
                let mut gather = Gather::default();
                let mut wire = Vec::with_capacity(128 * 1024);
                let start = std::time::Instant::now();
                for frame in 0..1000u32 {
                    keyframe(&mut writer, &mut gather, frame * 33, external.len());
                    while !gather.is_empty() {
                        pair.client.encrypt_from(&mut gather, &external).unwrap();
                        wire.clear();
                        wire.extend_from_slice(pair.client.pending_output());
                        let n = wire.len();
                        pair.client.consume_output(n);
                    }
                }
                let took = start.elapsed();
                println!(
                    "{:<40} copy_below {copy_below:>5}: {:>7.1} MB/s ({took:?} for 200 MB)",
                    pair.client.negotiated().unwrap(),
                    200.0 / took.as_secs_f64()
                );
            }
        }
    }

    #[test]
    fn utc_dates() {
        assert_eq!(
            utc(UnixTime::since_unix_epoch(std::time::Duration::ZERO)),
            "1970-01-01 00:00:00 UTC"
        );
        let t = UnixTime::since_unix_epoch(std::time::Duration::from_secs(1_709_210_096));
        assert_eq!(utc(t), "2024-02-29 12:34:56 UTC");
    }
}
