//! The client configuration: what is trusted, which cipher suites are offered, and what a refused
//! certificate is reported as.
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
//!   the LAN); trusting the public roots in addition would only widen what is accepted for it.
//!   A certificate of the file that is exactly (byte for byte) the one the server presents is
//!   accepted as it is: it is pinned. That is how a self-signed certificate is trusted, including
//!   the CA:TRUE kind that `openssl req -x509` makes by default, which chain verification refuses
//!   as "a CA used as an end entity";
//! - `--tls-fingerprint SHA256` pins the certificate whose SHA-256 is that, without a file. Alone
//!   it trusts nothing else (no system roots): a pin says which certificate the server has, and
//!   falling back to the public CAs would accept any certificate one of them issued for the name,
//!   which is what a pin is there to exclude. MediaMTX's clients pin the same way. With
//!   `--ca-file`, either is accepted;
//! - a pinned certificate is accepted whatever its names and dates, as a trust anchor is: the
//!   pin is a decision about those exact bytes. Self-signed certificates are made valid for 30 days
//!   by default (`openssl req -x509`) and their names are often `localhost`, while the camera
//!   reaches the NVR by its address; and a Raspberry Pi without a clock would see them as not yet
//!   valid. The handshake signature is still verified with the certificate's key, so the server
//!   must hold that certificate's private key;
//! - `--insecure` accepts any certificate for any name. The handshake signatures are still
//!   checked (the server proves it holds the key of the certificate it sent), so the connection
//!   is encrypted, but not authenticated: anyone on the path can impersonate the server. The
//!   caller must warn loudly. `--insecure` together with `--ca-file` or `--tls-fingerprint` is a
//!   configuration error.
//!
//! # Invariants
//!
//! - A CA file that cannot be read or holds no certificate, and `--insecure` with `--ca-file` or
//!   `--tls-fingerprint`, are configuration errors ([`Fault::Config`](crate::error::Fault::Config));
//!   the system store never is: without one, the bundled roots are trusted.
//! - Handshake signatures are always verified, with the presented certificate's key: pinned, or
//!   `--insecure`.
//! - A refused certificate is explained in words that name the host, say what is wrong and what
//!   to do (the names it is for, its issuer, its validity period and the time here, in UTC), and
//!   give the presented certificate's SHA-256 fingerprint, so the log shows what to fix.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, CipherSuite, ClientConfig, DigitallySignedStruct, OtherError, RootCertStore,
    SignatureScheme,
};

use crate::error::{Error, Result};

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

/// Builds the client configuration: system roots (bundled roots where the system has none), or
/// only the CAs in `ca_file`, or no verification (`insecure`: the caller warns). Certificates of
/// `ca_file` are also pinned (see the module's documentation).
pub fn client_config(ca_file: Option<&Path>, insecure: bool) -> Result<Arc<ClientConfig>> {
    client_config_with(ca_file, None, insecure)
}

/// [`client_config`] with `--tls-fingerprint`: the certificate whose SHA-256 is `fingerprint` is
/// trusted; alone, nothing else is.
///
/// Cipher suites: on ARM processors without AES instructions (every Raspberry Pi before the 5),
/// ChaCha20-Poly1305 is offered first and AES-128 before AES-256: ChaCha20 is several times
/// faster there in constant time. Servers that honour the client's order (most ingest servers)
/// then pick it. TLS 1.2 and 1.3 are offered.
pub fn client_config_with(
    ca_file: Option<&Path>,
    fingerprint: Option<Fingerprint>,
    insecure: bool,
) -> Result<Arc<ClientConfig>> {
    client_config_for(ca_file, fingerprint, insecure, has_aes_instructions())
}

pub(super) fn client_config_for(
    ca_file: Option<&Path>,
    fingerprint: Option<Fingerprint>,
    insecure: bool,
    aes_instructions: bool,
) -> Result<Arc<ClientConfig>> {
    let provider = Arc::new(provider(aes_instructions));
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::ours(format!("TLS configuration: {e}")))?;
    if insecure {
        if let Some(path) = ca_file {
            return Err(Error::config(format!(
                "--insecure and --ca-file {} contradict each other: --insecure trusts any \
                 certificate, --ca-file trusts only that CA; keep one",
                path.display()
            )));
        }
        if fingerprint.is_some() {
            return Err(Error::config(
                "--insecure and --tls-fingerprint contradict each other: --insecure trusts any \
                 certificate, --tls-fingerprint only the pinned one; keep one",
            ));
        }
    }
    let algorithms = provider.signature_verification_algorithms;
    let verifier: Arc<dyn ServerCertVerifier> = if insecure {
        Arc::new(NoVerification { algorithms })
    } else {
        let (pinned, chain, shown) = match ca_file {
            Some(path) => {
                let (roots, pinned) = ca_file_roots(path)?;
                let chain = chain_verifier(roots, &provider)?;
                (pinned, Some(chain), Some(path.display().to_string()))
            }
            // A pin alone trusts nothing else.
            None if fingerprint.is_some() => (Vec::new(), None, None),
            None => {
                let chain = chain_verifier(system_roots().0, &provider)?;
                (Vec::new(), Some(chain), None)
            }
        };
        Arc::new(PinningVerifier {
            pinned,
            fingerprint,
            chain,
            ca_file: shown,
            algorithms,
        })
    };
    let config = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// rustls' verification of a chain to `roots`, the name included.
fn chain_verifier(
    roots: RootCertStore,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<WebPkiServerVerifier>> {
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| Error::ours(format!("TLS certificate verifier: {e}")))
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

/// The CAs of `--ca-file` and its certificates as they are (to pin them): every PEM certificate
/// in it; none, or one that cannot be used as a trust anchor, is a configuration error.
fn ca_file_roots(path: &Path) -> Result<(RootCertStore, Vec<CertificateDer<'static>>)> {
    let shown = path.display();
    let certs = CertificateDer::pem_file_iter(path).map_err(|e| {
        Error::config(format!(
            "cannot read the CA file {shown}: {}",
            pem_error(&e)
        ))
    })?;
    let mut store = RootCertStore::empty();
    let mut pinned = Vec::new();
    for (index, cert) in certs.enumerate() {
        let cert = cert.map_err(|e| {
            Error::config(format!(
                "the CA file {shown} is not valid PEM: {}",
                pem_error(&e)
            ))
        })?;
        pinned.push(cert.clone());
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
    Ok((store, pinned))
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
pub(super) fn has_aes_instructions() -> bool {
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

/// Pinned certificates first, then (unless only a fingerprint is trusted) rustls' chain
/// verification; a refusal carries what the message needs ([`Refusal`]).
#[derive(Debug)]
struct PinningVerifier {
    /// The certificates of `--ca-file`, accepted as they are when presented exactly.
    pinned: Vec<CertificateDer<'static>>,
    /// `--tls-fingerprint`.
    fingerprint: Option<Fingerprint>,
    /// Chain verification to the CAs of `--ca-file` or the system's; None: only the pin.
    chain: Option<Arc<WebPkiServerVerifier>>,
    /// `--ca-file`, for messages.
    ca_file: Option<String>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinningVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let presented = Fingerprint::of(end_entity);
        if self.fingerprint == Some(presented)
            || self
                .pinned
                .iter()
                .any(|p| p.as_ref() == end_entity.as_ref())
        {
            // Names and dates are not checked: see the module's documentation. The handshake
            // signature, checked next by rustls with this certificate's key, still is.
            log::debug!("the server presented the pinned certificate (SHA-256 {presented})");
            return Ok(ServerCertVerified::assertion());
        }
        let cause = match &self.chain {
            Some(chain) => match chain.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            ) {
                Ok(verified) => return Ok(verified),
                Err(rustls::Error::InvalidCertificate(cause)) => Some(cause),
                Err(other) => return Err(other),
            },
            None => None,
        };
        // rustls sends the server the alert certificate_unknown for this (not, say,
        // unknown_ca): the price of carrying the fingerprint to the message.
        Err(rustls::Error::InvalidCertificate(CertificateError::Other(
            OtherError(Arc::new(Refusal {
                cause,
                presented,
                self_issued: is_self_issued(end_entity),
                ca_file: self.ca_file.clone(),
                pin: self.fingerprint,
            })),
        )))
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

/// A certificate's SHA-256 fingerprint, as `--tls-fingerprint` gives it and `openssl x509
/// -noout -fingerprint -sha256` prints it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// The SHA-256 of a certificate's DER (ring's, through rustls' provider).
    pub fn of(certificate: &[u8]) -> Fingerprint {
        let rustls::SupportedCipherSuite::Tls13(suite) =
            rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256
        else {
            unreachable!("TLS13_AES_128_GCM_SHA256 is a TLS 1.3 suite")
        };
        let hash = suite.common.hash_provider.hash(certificate);
        let mut bytes = [0; 32];
        bytes.copy_from_slice(hash.as_ref());
        Fingerprint(bytes)
    }

    /// 64 hexadecimal digits, in either case, bare or in colon-separated pairs; what openssl
    /// prints (`sha256 Fingerprint=1C:EF:...`) is taken whole. Errors are for `--tls-fingerprint`.
    pub fn parse(text: &str) -> Result<Fingerprint> {
        const HOW: &str = "give the certificate's SHA-256 as 64 hexadecimal digits, with or \
                           without colons (`openssl x509 -in CERT -noout -fingerprint -sha256` \
                           prints it)";
        let mut hex = text.trim();
        if let Some((label, rest)) = hex.split_once('=') {
            if label.trim().eq_ignore_ascii_case("sha256 fingerprint") {
                hex = rest.trim();
            }
        }
        if let Some(bad) = hex.chars().find(|&c| c != ':' && !c.is_ascii_hexdigit()) {
            return Err(Error::config(format!(
                "--tls-fingerprint: {bad:?} is not a hexadecimal digit; {HOW}"
            )));
        }
        if hex.contains(':') && !hex.split(':').all(|pair| pair.len() == 2) {
            return Err(Error::config(format!(
                "--tls-fingerprint: {text:?} has colons in the wrong places (they go between \
                 pairs of digits, AB:CD:...); {HOW}"
            )));
        }
        let digits = hex.replace(':', "");
        if digits.len() != 64 {
            let what = if digits.len() == 40 {
                " (that is the length of a SHA-1 fingerprint)".to_string()
            } else {
                String::new()
            };
            return Err(Error::config(format!(
                "--tls-fingerprint: {} hexadecimal digits{what}, a SHA-256 fingerprint has 64 \
                 (32 bytes); {HOW}",
                digits.len()
            )));
        }
        let mut bytes = [0; 32];
        for (byte, pair) in bytes.iter_mut().zip(digits.as_bytes().chunks(2)) {
            let pair = std::str::from_utf8(pair).expect("ASCII digits");
            *byte = u8::from_str_radix(pair, 16).expect("hexadecimal digits");
        }
        Ok(Fingerprint(bytes))
    }
}

/// `1C:EF:E5:...`, as openssl prints it.
impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, byte) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{byte:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// Whether a certificate's issuer is its subject: self-signed, in practice. False when the DER
/// cannot be read that far (the message then says less, nothing worse).
fn is_self_issued(certificate: &[u8]) -> bool {
    issuer_and_subject(certificate).is_some_and(|(issuer, subject)| issuer == subject)
}

/// The issuer and subject Names of an X.509 certificate, as DER (RFC 5280 4.1).
fn issuer_and_subject(certificate: &[u8]) -> Option<(&[u8], &[u8])> {
    const SEQUENCE: u8 = 0x30;
    let (SEQUENCE, certificate, _) = der(certificate)? else {
        return None;
    };
    let (SEQUENCE, tbs, _) = der(certificate)? else {
        return None;
    };
    let mut rest = tbs;
    let mut next = || -> Option<(u8, &[u8])> {
        let (tag, value, after) = der(rest)?;
        rest = after;
        Some((tag, value))
    };
    let (mut tag, _) = next()?;
    if tag == 0xA0 {
        // [0] version, then the serial number.
        (tag, _) = next()?;
    }
    if tag != 0x02 {
        return None;
    }
    let (SEQUENCE, _signature) = next()? else {
        return None;
    };
    let (SEQUENCE, issuer) = next()? else {
        return None;
    };
    let (SEQUENCE, _validity) = next()? else {
        return None;
    };
    let (SEQUENCE, subject) = next()? else {
        return None;
    };
    Some((issuer, subject))
}

/// One DER element of `input`: its tag, its contents and what follows it.
fn der(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7F);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let len = rest[..count]
            .iter()
            .fold(0usize, |len, &b| len << 8 | usize::from(b));
        (len, &rest[count..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

// ---------------------------------------------------------------------------------------------
// Refused certificates
// ---------------------------------------------------------------------------------------------

/// Why [`PinningVerifier`] refused a certificate, and what the message needs to say what to do.
#[derive(Debug)]
struct Refusal {
    /// Why chain verification failed; None: only `--tls-fingerprint` is trusted and this is not
    /// the pinned certificate.
    cause: Option<CertificateError>,
    /// The presented certificate's fingerprint.
    presented: Fingerprint,
    /// Its issuer is its subject: self-signed.
    self_issued: bool,
    /// `--ca-file`.
    ca_file: Option<String>,
    /// `--tls-fingerprint`.
    pin: Option<Fingerprint>,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.cause {
            Some(cause) => write!(f, "{cause}")?,
            None => f.write_str("not the pinned certificate")?,
        }
        write!(f, " (SHA-256 {})", self.presented)
    }
}

impl std::error::Error for Refusal {}

/// What a refused certificate is reported as: what is wrong and what to do, naming `host`.
pub(super) fn certificate_message(cert: &CertificateError, host: &str) -> String {
    if let CertificateError::Other(OtherError(other)) = cert {
        if let Some(refusal) = other.downcast_ref::<Refusal>() {
            return refusal_message(refusal, host);
        }
    }
    cause_message(cert, host, None)
}

fn refusal_message(refusal: &Refusal, host: &str) -> String {
    let presented = refusal.presented;
    match &refusal.cause {
        None => format!(
            "the TLS certificate presented by {host} is not the pinned one: its SHA-256 \
             fingerprint is {presented}, --tls-fingerprint is {}. If the server's certificate \
             was replaced (a reinstalled server makes a new self-signed one), check the new one \
             on the server (openssl x509 -in CERT -noout -fingerprint -sha256) and pin it; \
             otherwise something between here and {host} is posing as the server",
            refusal.pin.map(|p| p.to_string()).unwrap_or_default()
        ),
        Some(cause) => cause_message(cause, host, Some(refusal)),
    }
}

/// The message for `cause`; `refusal` (when the certificate was seen) adds what is trusted here
/// and the certificate's fingerprint.
fn cause_message(cause: &CertificateError, host: &str, refusal: Option<&Refusal>) -> String {
    use CertificateError as C;
    let subject = format!("the TLS certificate presented by {host}");
    // How to trust exactly this certificate, fingerprint included.
    let pin = match refusal {
        Some(r) => format!(
            "to trust exactly this certificate, put it in --ca-file (it will be pinned) or \
             pass --tls-fingerprint {}",
            r.presented
        ),
        None => "to trust exactly this certificate, put it in --ca-file (it will be pinned) or \
                 pass --tls-fingerprint with its SHA-256 fingerprint"
            .to_string(),
    };
    // The fingerprint where the message does not suggest pinning.
    let fingerprint = match refusal {
        Some(r) => format!(" (its SHA-256 fingerprint is {})", r.presented),
        None => String::new(),
    };
    // What is trusted here, when the certificate is not.
    let not_trusted = match refusal {
        Some(Refusal {
            ca_file: Some(file),
            pin: Some(_),
            ..
        }) => format!(" and is neither in --ca-file {file} nor the one --tls-fingerprint pins"),
        Some(Refusal {
            ca_file: Some(file),
            ..
        }) => format!(" and is not in --ca-file {file}"),
        _ => String::new(),
    };
    let trusted = match refusal {
        Some(Refusal {
            ca_file: Some(file),
            ..
        }) => format!("only the CAs in --ca-file {file} are trusted"),
        Some(_) => "the system's CAs are trusted".to_string(),
        None => {
            "the system's CAs, or only those of --ca-file when it is given, are trusted".to_string()
        }
    };
    let self_issued = refusal.is_some_and(|r| r.self_issued);
    let webpki = match cause {
        C::Other(OtherError(other)) => webpki_name(&format!("{other:?}")),
        _ => String::new(),
    };
    match cause {
        _ if webpki == "CaUsedAsEndEntity" && self_issued => format!(
            "{subject} is self-signed (a CA certificate used as the server's own){not_trusted}; \
             {pin}"
        ),
        C::UnknownIssuer if self_issued => format!("{subject} is self-signed{not_trusted}; {pin}"),
        // A trusted certificate has its issuer's name, but not its key.
        C::BadSignature if self_issued => format!(
            "{subject} is self-signed{not_trusted} (a certificate trusted here has the same name \
             but another key: the server's certificate was replaced, or something is posing as \
             the server); {pin}"
        ),
        _ if webpki == "CaUsedAsEndEntity" => format!(
            "{subject} is a CA certificate, not a server certificate (the server is set up with \
             its CA's certificate instead of its own): give the server a certificate issued for \
             {host}, or, {pin}"
        ),
        C::UnknownIssuer => format!(
            "{subject} has an unknown issuer: no CA trusted here signed it ({trusted}). If the \
             server has a private CA, pass that CA's certificate with --ca-file; if its CA is a \
             public one, the server probably does not send its intermediate certificates (fix \
             its chain); or, {pin}"
        ),
        C::NotValidForNameContext {
            expected: _,
            presented,
        } if presented.is_empty() => format!(
            "{subject} names no host (it has no subjectAltName, and the common name does not \
             count): give the server a certificate with subjectAltName={}:{host}, or, {pin}",
            if host.parse::<std::net::IpAddr>().is_ok() {
                "IP"
            } else {
                "DNS"
            }
        ),
        C::NotValidForNameContext {
            expected: _,
            presented,
        } => {
            let names: Vec<&str> = presented.iter().map(|n| presented_name(n)).collect();
            format!(
                "the TLS certificate for {} is not valid for {host}: use one of those names in \
                 the URL, or give the server a certificate for {host}, or, {pin}",
                names.join(", ")
            )
        }
        C::NotValidForName => format!(
            "{subject} is not valid for {host}: use a name the certificate lists in the URL, or \
             give the server a certificate for {host}, or, {pin}"
        ),
        C::ExpiredContext { time, not_after } => format!(
            "{subject} expired at {} (the time here is {}): the server must renew it; if that \
             date is still to come, this machine's clock is wrong{fingerprint}",
            utc(*not_after),
            utc(*time)
        ),
        C::Expired => format!(
            "{subject} has expired (or its validity dates are invalid): the server must renew it; \
             check this machine's clock too{fingerprint}"
        ),
        C::NotValidYetContext { time, not_before } => format!(
            "{subject} is not valid before {} and the time here is {}: this machine's clock is \
             probably not set yet (a Raspberry Pi has no real-time clock and keeps a wrong time \
             until NTP sets it: see timedatectl); if the clock is right, the certificate was \
             made with a start date still to come{fingerprint}",
            utc(*not_before),
            utc(*time)
        ),
        C::NotValidYet => format!(
            "{subject} is not valid yet: this machine's clock is probably not set (a Raspberry Pi \
             has no real-time clock and keeps a wrong time until NTP sets it: see \
             timedatectl){fingerprint}"
        ),
        C::Revoked => format!(
            "{subject} has been revoked by its CA: the server needs a new certificate{fingerprint}"
        ),
        C::BadSignature if refusal.is_some() => format!(
            "the signature on {subject} does not verify with its issuer's key: the certificate \
             or its chain is damaged or forged; check the certificate files on the \
             server{fingerprint}"
        ),
        C::BadSignature => format!(
            "a signature from {host} does not verify (its certificate's, or the handshake's with \
             the certificate's key): the server's certificate and key may not match, or \
             something is tampering with the connection"
        ),
        #[allow(deprecated)]
        C::UnsupportedSignatureAlgorithm
        | C::UnsupportedSignatureAlgorithmContext { .. }
        | C::UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => format!(
            "{subject} is signed with an algorithm v4l2rtmp does not accept (SHA-1, or a key \
             type or size it does not support): give the server a certificate signed with \
             SHA-256 and an RSA (2048 bits or more), ECDSA P-256/P-384 or Ed25519 key, or, {pin}"
        ),
        C::BadEncoding => format!(
            "{subject} is malformed (not valid DER): check the certificate file on the \
             server{fingerprint}"
        ),
        C::UnhandledCriticalExtension => format!(
            "{subject} has a critical extension v4l2rtmp does not understand: give the server a \
             certificate without it, or, {pin}"
        ),
        C::InvalidPurposeContext { .. } | C::InvalidPurpose => format!(
            "{subject} is not for TLS servers (its extended key usage lacks serverAuth): give \
             the server a certificate with extendedKeyUsage=serverAuth, or, {pin}"
        ),
        C::Other(_) => match webpki.as_str() {
            "UnsupportedCertVersion" => format!(
                "{subject} is an X.509 version 1 certificate (made without extensions), which \
                 v4l2rtmp cannot use, not even pinned: make a version 3 one, e.g. openssl req \
                 -x509 -newkey rsa:2048 -nodes -days 3650 -subj /CN={host} -addext \
                 subjectAltName={}:{host} -keyout key.pem -out cert.pem{fingerprint}",
                if host.parse::<std::net::IpAddr>().is_ok() {
                    "IP"
                } else {
                    "DNS"
                }
            ),
            "EndEntityUsedAsCa" => format!(
                "the certificate chain {host} sent has a server certificate where a CA \
                 certificate should be (an intermediate without CA:TRUE): fix the chain on the \
                 server, or, {pin}"
            ),
            "PathLenConstraintViolated" | "NameConstraintViolation" => format!(
                "{subject} breaks a constraint its CA set ({webpki}): that CA may not issue it; \
                 give the server a certificate its CA allows, or, {pin}"
            ),
            "MaximumPathDepthExceeded"
            | "MaximumSignatureChecksExceeded"
            | "MaximumPathBuildCallsExceeded"
            | "MaximumNameConstraintComparisonsExceeded" => format!(
                "the certificate chain {host} sent is too long or too complex to verify \
                 ({webpki}): send a shorter chain from the server, or, {pin}"
            ),
            "CertDistrusted" => format!(
                "{subject} has a key that is explicitly distrusted: the server needs a new \
                 certificate{fingerprint}"
            ),
            "MalformedExtensions"
            | "ExtensionValueInvalid"
            | "EmptyEkuExtension"
            | "MalformedDnsIdentifier"
            | "BadDer"
            | "BadDerTime" => format!(
                "{subject} is malformed ({webpki}): give the server a certificate made by a \
                 standard tool, or, {pin}"
            ),
            _ => format!("{subject} was refused ({webpki}); {pin}"),
        },
        other => format!("{subject} was refused ({other:?}); {pin}"),
    }
}

/// `CaUsedAsEndEntity` out of webpki's error as rustls wraps it (`CaUsedAsEndEntity`,
/// `TrailingData(Certificate)`): the variant's name. webpki is not a dependency of ours to
/// downcast to, and its variant names are its public API.
fn webpki_name(debug: &str) -> String {
    debug
        .split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
        .next()
        .unwrap_or_default()
        .to_string()
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

/// The TLS client configuration for an rtmps:// destination (None for rtmp://).
pub fn destination_config(config: &crate::config::Config) -> Result<Option<Arc<ClientConfig>>> {
    if config.url.scheme != crate::url::Scheme::Rtmps {
        if config.insecure || config.ca_file.is_some() || config.tls_fingerprint.is_some() {
            log::warn!("--insecure, --ca-file and --tls-fingerprint apply to rtmps:// only");
        }
        return Ok(None);
    }
    if config.insecure {
        log::warn!(
            "--insecure: the server's TLS certificate is NOT verified; anyone on the path can pose as the \
             server and read the stream key and the video"
        );
    }
    client_config_with(
        config.ca_file.as_deref(),
        config.tls_fingerprint,
        config.insecure,
    )
    .map(Some)
}

#[cfg(test)]
mod tests {
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    use rustls::ServerConfig;

    use super::*;
    use crate::error::Fault;
    use crate::rtmp::chunk::Gather;
    use crate::tls::testing::{
        server_config, server_config_signing_with, Ca, Pair, SelfSigned, TempFile, HOST,
    };
    use crate::tls::TlsSession;

    #[test]
    fn certificate_for_another_name_is_a_peer_error_naming_both() {
        let ca = Ca::new("test CA");
        let file = ca.pem_file();
        let config = client_config(Some(&file.0), false).unwrap();
        let server = server_config(ca.issue(&["other.example.net"], false), false);
        let mut pair = Pair::new(config, HOST, server);
        let err = pair.pump().unwrap_err();
        assert_eq!(err.fault(), Fault::Peer);
        assert!(
            err.message().starts_with(
                "the TLS certificate for other.example.net is not valid for ingest.example.com: \
                 use one of those names in the URL, or give the server a certificate for \
                 ingest.example.com, or, to trust exactly this certificate, put it in --ca-file \
                 (it will be pinned) or pass --tls-fingerprint "
            ),
            "{}",
            err.message()
        );
        // An IP address host and a certificate for other names.
        let config = client_config(Some(&file.0), false).unwrap();
        let server = server_config(ca.issue(&["10.0.0.1", "cam.example.net"], false), false);
        let err = Pair::new(config, "10.0.0.2", server).pump().unwrap_err();
        assert!(
            err.message().starts_with(
                "the TLS certificate for 10.0.0.1, cam.example.net is not valid for 10.0.0.2:"
            ),
            "{}",
            err.message()
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

    /// A handshake with `server`; Ok when it completes and the server gets application data.
    fn handshake(config: Arc<ClientConfig>, host: &str, server: Arc<ServerConfig>) -> Result<()> {
        let mut pair = Pair::new(config, host, server);
        pair.pump()?;
        assert!(!pair.client.is_handshaking());
        let mut gather = Gather::default();
        gather.push_scratch(b"hello");
        pair.send(&mut gather, &[]);
        assert_eq!(pair.at_server, b"hello");
        Ok(())
    }

    #[test]
    fn a_ca_certificate_presented_by_a_server_is_explained() {
        // The server presents its CA's certificate (CA:TRUE, not self-signed for it: issued by
        // another CA) instead of its own.
        let root = Ca::new("root CA");
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec![HOST.to_string()]).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let intermediate = params.signed_by(&key, &root.cert, &root.key).unwrap();
        let file = root.pem_file();
        let config = client_config(Some(&file.0), false).unwrap();
        let served = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let server = server_config((vec![intermediate.der().clone()], served), false);
        let err = Pair::new(config, HOST, server).pump().unwrap_err();
        assert_eq!(err.fault(), Fault::Peer);
        assert_eq!(
            err.message(),
            format!(
                "the TLS certificate presented by ingest.example.com is a CA certificate, not a \
                 server certificate (the server is set up with its CA's certificate instead of \
                 its own): give the server a certificate issued for ingest.example.com, or, to \
                 trust exactly this certificate, put it in --ca-file (it will be pinned) or pass \
                 --tls-fingerprint {}",
                Fingerprint::of(intermediate.der())
            )
        );
    }

    #[test]
    fn a_self_signed_certificate_in_the_ca_file_is_pinned_whatever_its_names_and_dates() {
        // CA:TRUE (openssl req -x509's default) or not; the right name, another, expired.
        for ca in [true, false] {
            for (names, expired) in [
                (&[HOST][..], false),
                (&["localhost"], false),
                (&[HOST], true),
            ] {
                let cert = SelfSigned::new(names, ca, expired);
                let file = cert.pem_file();
                let config = client_config(Some(&file.0), false).unwrap();
                let server = server_config(cert.served(), false);
                handshake(config, HOST, server)
                    .unwrap_or_else(|e| panic!("CA {ca}, {names:?}, expired {expired}: {e}"));
            }
        }
        // Among other certificates in the file, over TLS 1.2 too.
        let cert = SelfSigned::new(&["localhost"], true, false);
        let other = Ca::new("another CA");
        let both = TempFile::new(format!("{}{}", other.cert.pem(), cert.cert.pem()).as_bytes());
        let config = client_config(Some(&both.0), false).unwrap();
        handshake(config, HOST, server_config(cert.served(), true)).unwrap();
    }

    #[test]
    fn another_self_signed_certificate_with_the_same_name_is_refused() {
        let pinned = SelfSigned::new(&[HOST], true, false);
        let file = pinned.pem_file();
        let shown = file.0.display().to_string();
        // CA:TRUE, as openssl makes them.
        let impostor = SelfSigned::new(&[HOST], true, false);
        let config = client_config(Some(&file.0), false).unwrap();
        let err = Pair::new(config, HOST, server_config(impostor.served(), false))
            .pump()
            .unwrap_err();
        assert_eq!(err.fault(), Fault::Peer);
        assert_eq!(
            err.message(),
            format!(
                "the TLS certificate presented by ingest.example.com is self-signed (a CA \
                 certificate used as the server's own) and is not in --ca-file {shown}; to \
                 trust exactly this certificate, put it in --ca-file (it will be pinned) or pass \
                 --tls-fingerprint {}",
                impostor.fingerprint()
            )
        );
        // CA:FALSE: the pinned certificate has its issuer's name, not its key.
        let impostor = SelfSigned::new(&[HOST], false, false);
        let config = client_config(Some(&file.0), false).unwrap();
        let err = Pair::new(config, HOST, server_config(impostor.served(), false))
            .pump()
            .unwrap_err();
        assert_eq!(
            err.message(),
            format!(
                "the TLS certificate presented by ingest.example.com is self-signed and is not \
                 in --ca-file {shown} (a certificate trusted here has the same name but another \
                 key: the server's certificate was replaced, or something is posing as the \
                 server); to trust exactly this certificate, put it in --ca-file (it will be \
                 pinned) or pass --tls-fingerprint {}",
                impostor.fingerprint()
            )
        );
    }

    #[test]
    fn a_self_signed_certificate_without_a_pin_says_how_to_pin_it() {
        // The system's roots (or the bundled ones).
        let cert = SelfSigned::new(&[HOST], true, false);
        let config = client_config(None, false).unwrap();
        let err = Pair::new(config, HOST, server_config(cert.served(), false))
            .pump()
            .unwrap_err();
        assert_eq!(err.fault(), Fault::Peer);
        assert_eq!(
            err.message(),
            format!(
                "the TLS certificate presented by ingest.example.com is self-signed (a CA \
                 certificate used as the server's own); to trust exactly this certificate, put \
                 it in --ca-file (it will be pinned) or pass --tls-fingerprint {}",
                cert.fingerprint()
            )
        );
        let cert = SelfSigned::new(&[HOST], false, false);
        let config = client_config(None, false).unwrap();
        let err = Pair::new(config, HOST, server_config(cert.served(), false))
            .pump()
            .unwrap_err();
        assert_eq!(
            err.message(),
            format!(
                "the TLS certificate presented by ingest.example.com is self-signed; to trust \
                 exactly this certificate, put it in --ca-file (it will be pinned) or pass \
                 --tls-fingerprint {}",
                cert.fingerprint()
            )
        );
    }

    #[test]
    fn a_fingerprint_pins_one_certificate_and_nothing_else() {
        let cert = SelfSigned::new(&["localhost"], true, true);
        let pin = Some(cert.fingerprint());
        // Any name, any dates.
        let config = client_config_with(None, pin, false).unwrap();
        handshake(config, HOST, server_config(cert.served(), false)).unwrap();
        let config = client_config_with(None, pin, false).unwrap();
        handshake(config, HOST, server_config(cert.served(), true)).unwrap();

        // Another certificate, even one a CA issued for the right name: nothing but the pin.
        let ca = Ca::new("test CA");
        let served = ca.issue(&[HOST], false);
        let presented = Fingerprint::of(&served.0[0]);
        let config = client_config_with(None, pin, false).unwrap();
        let err = Pair::new(config, HOST, server_config(served, false))
            .pump()
            .unwrap_err();
        assert_eq!(err.fault(), Fault::Peer);
        assert_eq!(
            err.message(),
            format!(
                "the TLS certificate presented by ingest.example.com is not the pinned one: its \
                 SHA-256 fingerprint is {presented}, --tls-fingerprint is {}. If the server's \
                 certificate was replaced (a reinstalled server makes a new self-signed one), \
                 check the new one on the server (openssl x509 -in CERT -noout -fingerprint \
                 -sha256) and pin it; otherwise something between here and ingest.example.com \
                 is posing as the server",
                cert.fingerprint()
            )
        );

        // With --ca-file: the pin, or a chain to the file's CAs.
        let file = ca.pem_file();
        let config = client_config_with(Some(&file.0), pin, false).unwrap();
        handshake(config, HOST, server_config(cert.served(), false)).unwrap();
        let config = client_config_with(Some(&file.0), pin, false).unwrap();
        handshake(config, HOST, server_config(ca.issue(&[HOST], false), false)).unwrap();
        let stranger = SelfSigned::new(&[HOST], true, false);
        let config = client_config_with(Some(&file.0), pin, false).unwrap();
        let err = Pair::new(config, HOST, server_config(stranger.served(), false))
            .pump()
            .unwrap_err();
        assert!(
            err.message().contains(&format!(
                "is self-signed (a CA certificate used as the server's own) and is neither in \
                 --ca-file {} nor the one --tls-fingerprint pins; ",
                file.0.display()
            )),
            "{}",
            err.message()
        );
        assert!(err
            .message()
            .ends_with(&format!("--tls-fingerprint {}", stranger.fingerprint())));
    }

    #[test]
    fn a_pinned_certificate_must_still_sign_the_handshake() {
        // The pinned certificate, served by someone without its key.
        let cert = SelfSigned::new(&[HOST], true, false);
        let impostor = SelfSigned::new(&[HOST], true, false);
        for pinned_by_file in [false, true] {
            let file = cert.pem_file();
            let config = if pinned_by_file {
                client_config(Some(&file.0), false).unwrap()
            } else {
                client_config_with(None, Some(cert.fingerprint()), false).unwrap()
            };
            let server =
                server_config_signing_with(vec![cert.cert.der().clone()], impostor.served().1);
            let err = Pair::new(config, HOST, server).pump().unwrap_err();
            assert_eq!(err.fault(), Fault::Peer);
            assert!(
                err.message().starts_with(
                    "a signature from ingest.example.com does not verify (its certificate's, or \
                     the handshake's with the certificate's key)"
                ),
                "{}",
                err.message()
            );
        }
    }

    #[test]
    fn insecure_contradicts_a_pin() {
        let cert = SelfSigned::new(&[HOST], true, false);
        let err = client_config_with(None, Some(cert.fingerprint()), true).unwrap_err();
        assert_eq!(err.fault(), Fault::Config);
        assert!(err.message().contains("--insecure and --tls-fingerprint"));
    }

    #[test]
    fn fingerprints_are_sha256_in_hex() {
        // FIPS 180-2's "abc".
        let abc = Fingerprint::of(b"abc");
        let hex = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(abc.to_string().replace(':', "").to_lowercase(), hex);
        assert_eq!(
            abc.to_string(),
            "BA:78:16:BF:8F:01:CF:EA:41:41:40:DE:5D:AE:22:23:B0:03:61:A3:96:17:7A:9C:B4:10:FF:61:F2:00:15:AD"
        );
        for text in [
            hex.to_string(),
            hex.to_uppercase(),
            abc.to_string(),
            abc.to_string().to_lowercase(),
            format!("  {hex}\n"),
            format!("sha256 Fingerprint={abc}"),
            format!("SHA256 Fingerprint={abc}"),
        ] {
            assert_eq!(Fingerprint::parse(&text).unwrap(), abc, "{text:?}");
        }
        let refused = |text: &str| {
            let err = Fingerprint::parse(text).unwrap_err();
            assert_eq!(err.fault(), Fault::Config);
            assert!(
                err.message().starts_with("--tls-fingerprint: "),
                "{}",
                err.message()
            );
            assert!(
                err.message().ends_with(
                    "give the certificate's SHA-256 as 64 hexadecimal digits, with or without \
                     colons (`openssl x509 -in CERT -noout -fingerprint -sha256` prints it)"
                ),
                "{}",
                err.message()
            );
            err.message().to_string()
        };
        assert!(refused(&hex[..63])
            .contains("63 hexadecimal digits, a SHA-256 fingerprint has 64 (32 bytes)"));
        assert!(refused(&format!("{hex}00")).contains("66 hexadecimal digits"));
        assert!(refused("").contains("0 hexadecimal digits"));
        assert!(refused(&hex[..40]).contains("(that is the length of a SHA-1 fingerprint)"));
        assert!(refused(&hex.replace('b', "g")).contains("'g' is not a hexadecimal digit"));
        assert!(
            refused(&format!("sha1 Fingerprint={abc}")).contains("'s' is not a hexadecimal digit")
        );
        assert!(
            refused(&format!("{}:{}", &hex[..3], &hex[3..])).contains("colons in the wrong places")
        );
        assert!(refused(&format!("{abc}:")).contains("colons in the wrong places"));
    }

    #[test]
    fn self_issued_certificates_are_told_apart() {
        let ca = Ca::new("test CA");
        assert!(is_self_issued(ca.cert.der()));
        assert!(is_self_issued(
            SelfSigned::new(&[HOST], false, false).cert.der()
        ));
        let (chain, _) = ca.issue(&[HOST], false);
        assert!(!is_self_issued(&chain[0]));
        let der = ca.cert.der();
        for len in 0..der.len() {
            assert!(!is_self_issued(&der[..len]));
        }
        assert!(!is_self_issued(b"\x30\x84\xff\xff\xff\xff"));
    }

    #[test]
    fn every_certificate_error_says_what_to_do() {
        use CertificateError as C;
        let at = |secs| UnixTime::since_unix_epoch(std::time::Duration::from_secs(secs));
        // webpki's errors, as rustls wraps them, print as their variant.
        let webpki = |name: &'static str| C::Other(OtherError(Arc::new(Webpki(name))));
        let cases: Vec<(CertificateError, &str)> = vec![
            (webpki("CaUsedAsEndEntity"), "is a CA certificate, not a server certificate"),
            (C::UnknownIssuer, "has an unknown issuer"),
            (C::NotValidForName, "is not valid for h.example: use a name"),
            (C::ExpiredContext { time: at(1_000_000_000), not_after: at(999_999_000) }, "expired at 2001-09-09 01:30:00 UTC (the time here is 2001-09-09 01:46:40 UTC): the server must renew it"),
            (C::Expired, "the server must renew it"),
            (C::NotValidYetContext { time: at(0), not_before: at(1_000_000_000) }, "is not valid before 2001-09-09 01:46:40 UTC and the time here is 1970-01-01 00:00:00 UTC: this machine's clock is probably not set yet (a Raspberry Pi has no real-time clock"),
            (C::NotValidYet, "a Raspberry Pi has no real-time clock"),
            (C::BadSignature, "the server's certificate and key may not match"),
            (C::BadEncoding, "is malformed (not valid DER)"),
            (C::Revoked, "has been revoked by its CA: the server needs a new certificate"),
            (C::InvalidPurpose, "is not for TLS servers"),
            (C::UnhandledCriticalExtension, "has a critical extension"),
            (webpki("UnsupportedCertVersion"), "is an X.509 version 1 certificate"),
            (webpki("EndEntityUsedAsCa"), "has a server certificate where a CA certificate should be"),
            (webpki("PathLenConstraintViolated"), "breaks a constraint its CA set"),
            (webpki("MaximumPathDepthExceeded"), "too long or too complex"),
            (webpki("CertDistrusted"), "explicitly distrusted"),
            (webpki("MalformedExtensions"), "is malformed (MalformedExtensions)"),
            (webpki("TrailingData(Certificate)"), "was refused (TrailingData)"),
            (C::ApplicationVerificationFailure, "was refused (ApplicationVerificationFailure)"),
        ];
        for (cause, words) in cases {
            let message = certificate_message(&cause, "h.example");
            assert!(message.contains(words), "{cause:?}: {message}");
            assert!(message.contains("h.example"), "{message}");
        }
        // With the certificate seen: its fingerprint in every message.
        let presented = Fingerprint::of(b"certificate");
        for cause in [
            C::Expired,
            C::NotValidYet,
            C::BadEncoding,
            C::UnknownIssuer,
            webpki("CertDistrusted"),
        ] {
            let refusal = Refusal {
                cause: Some(cause),
                presented,
                self_issued: false,
                ca_file: None,
                pin: None,
            };
            let message = refusal_message(&refusal, "h.example");
            assert!(message.contains(&presented.to_string()), "{message}");
        }
    }

    /// A webpki error: Debug prints the variant.
    struct Webpki(&'static str);

    impl fmt::Debug for Webpki {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl fmt::Display for Webpki {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Webpki {}

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
