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
//!   the LAN); trusting the public roots in addition would only widen what is accepted for it;
//! - `--insecure` accepts any certificate for any name. The handshake signatures are still
//!   checked (the server proves it holds the key of the certificate it sent), so the connection
//!   is encrypted, but not authenticated: anyone on the path can impersonate the server. The
//!   caller must warn loudly. `--insecure` together with `--ca-file` is a configuration error.
//!
//! # Invariants
//!
//! - A CA file that cannot be read or holds no certificate, and `--insecure` with `--ca-file`, are
//!   configuration errors ([`Fault::Config`](crate::error::Fault::Config)); the system store
//!   never is: without one, the bundled roots are trusted.
//! - `--insecure` skips only the certificate check: handshake signatures are always verified.
//! - A refused certificate is explained in words that name the host and say what failed (the
//!   names it is for, an unknown issuer, its validity period and the time here, in UTC), so the
//!   log shows what to fix.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, CipherSuite, ClientConfig, DigitallySignedStruct, RootCertStore,
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
/// only the CAs in `ca_file`, or no verification (`insecure`: the caller warns).
///
/// Cipher suites: on ARM processors without AES instructions (every Raspberry Pi before the 5),
/// ChaCha20-Poly1305 is offered first and AES-128 before AES-256: ChaCha20 is several times
/// faster there in constant time. Servers that honour the client's order (most ingest servers)
/// then pick it. TLS 1.2 and 1.3 are offered.
pub fn client_config(ca_file: Option<&Path>, insecure: bool) -> Result<Arc<ClientConfig>> {
    client_config_for(ca_file, insecure, has_aes_instructions())
}

pub(super) fn client_config_for(
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

// ---------------------------------------------------------------------------------------------
// Refused certificates
// ---------------------------------------------------------------------------------------------

/// "certificate for X is not valid for Y", "unknown issuer", "expired at", ...
pub(super) fn certificate_message(cert: &CertificateError, host: &str) -> String {
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

/// The TLS client configuration for an rtmps:// destination (None for rtmp://).
pub fn destination_config(config: &crate::config::Config) -> Result<Option<Arc<ClientConfig>>> {
    if config.url.scheme != crate::url::Scheme::Rtmps {
        if config.insecure || config.ca_file.is_some() {
            log::warn!("--insecure and --ca-file apply to rtmps:// only");
        }
        return Ok(None);
    }
    if config.insecure {
        log::warn!(
            "--insecure: the server's TLS certificate is NOT verified; anyone on the path can pose as the \
             server and read the stream key and the video"
        );
    }
    client_config(config.ca_file.as_deref(), config.insecure).map(Some)
}

#[cfg(test)]
mod tests {
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

    use super::*;
    use crate::error::Fault;
    use crate::rtmp::chunk::Gather;
    use crate::tls::testing::{server_config, Ca, Pair, TempFile, HOST};
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
