//! What the tests of the TLS module share: a test CA issuing server certificates, temporary PEM
//! files, and an in-memory rustls server paired with a [`TlsSession`].

use std::io::{ErrorKind, Read};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ClientConfig, ServerConfig, ServerConnection};

use crate::error::Result;
use crate::rtmp::chunk::{ChunkWriter, Gather, MessageHeader, Part};
use crate::tls::{client_config, TlsSession, OUTGOING_CAPACITY};

pub(super) const HOST: &str = "ingest.example.com";

pub(super) struct Ca {
    pub(super) cert: rcgen::Certificate,
    pub(super) key: rcgen::KeyPair,
}

impl Ca {
    pub(super) fn new(name: &str) -> Ca {
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
    pub(super) fn issue(
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
    pub(super) fn pem_file(&self) -> TempFile {
        TempFile::new(self.cert.pem().as_bytes())
    }
}

/// A self-signed server certificate with rcgen's default subject (so two of them have the same).
pub(super) struct SelfSigned {
    pub(super) cert: rcgen::Certificate,
    pub(super) key: rcgen::KeyPair,
}

impl SelfSigned {
    /// For `names`; `ca`: with basicConstraints CA:TRUE, as `openssl req -x509` makes them;
    /// `expired`: valid only in 2001.
    pub(super) fn new(names: &[&str], ca: bool, expired: bool) -> SelfSigned {
        let key = rcgen::KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(names).unwrap();
        if ca {
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        }
        if expired {
            params.not_before = rcgen::date_time_ymd(2001, 1, 1);
            params.not_after = rcgen::date_time_ymd(2001, 12, 31);
        }
        let cert = params.self_signed(&key).unwrap();
        SelfSigned { cert, key }
    }

    /// What the server sends, and its key.
    pub(super) fn served(&self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.serialize_der()));
        (vec![self.cert.der().clone()], key)
    }

    pub(super) fn pem_file(&self) -> TempFile {
        TempFile::new(self.cert.pem().as_bytes())
    }

    pub(super) fn fingerprint(&self) -> crate::tls::Fingerprint {
        crate::tls::Fingerprint::of(self.cert.der())
    }
}

pub(super) struct TempFile(pub(super) PathBuf);

impl TempFile {
    pub(super) fn new(contents: &[u8]) -> TempFile {
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

pub(super) fn server_config(
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

/// A server that presents `chain` but signs the handshake with `key`, which need not match.
pub(super) fn server_config_signing_with(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Arc<ServerConfig> {
    #[derive(Debug)]
    struct Fixed(Arc<rustls::sign::CertifiedKey>);
    impl rustls::server::ResolvesServerCert for Fixed {
        fn resolve(
            &self,
            _: rustls::server::ClientHello<'_>,
        ) -> Option<Arc<rustls::sign::CertifiedKey>> {
            Some(self.0.clone())
        }
    }
    let signing = rustls::crypto::ring::sign::any_supported_type(&key).unwrap();
    let certified = Arc::new(rustls::sign::CertifiedKey::new(chain, signing));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Fixed(certified))),
    )
}

/// A client and an in-memory server, and what each received.
pub(super) struct Pair {
    pub(super) client: TlsSession,
    pub(super) server: ServerConnection,
    pub(super) at_client: Vec<u8>,
    pub(super) at_server: Vec<u8>,
    /// Ciphertext bytes the client produced.
    pub(super) client_ciphertext: usize,
    /// Feed the client at most this many bytes per `received` call.
    pub(super) read_size: usize,
}

impl Pair {
    pub(super) fn new(
        client_config: Arc<ClientConfig>,
        host: &str,
        server: Arc<ServerConfig>,
    ) -> Pair {
        Pair {
            client: TlsSession::new(client_config, host).unwrap(),
            server: ServerConnection::new(server).unwrap(),
            at_client: Vec::new(),
            at_server: Vec::new(),
            client_ciphertext: 0,
            read_size: usize::MAX,
        }
    }

    pub(super) fn connect(ca: &Ca, names: &[&str], host: &str) -> Pair {
        let file = ca.pem_file();
        let config = client_config(Some(&file.0), false).unwrap();
        let mut pair = Pair::new(config, host, server_config(ca.issue(names, false), false));
        pair.pump().unwrap();
        assert!(!pair.client.is_handshaking());
        pair
    }

    /// Moves bytes both ways until neither side has anything to send. Client errors are
    /// returned; server errors panic.
    pub(super) fn pump(&mut self) -> Result<()> {
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
    pub(super) fn send(&mut self, gather: &mut Gather, external: &[u8]) {
        while !gather.is_empty() {
            self.client.encrypt_from(gather, external).unwrap();
            assert!(self.client.pending_output().len() <= OUTGOING_CAPACITY);
            self.pump().unwrap();
        }
    }
}

/// A keyframe of `len` bytes as the muxer sends it: FLV video tag header and a NAL length
/// prefix inline, the NAL unit external, chunked at 4096.
pub(super) fn keyframe(writer: &mut ChunkWriter, gather: &mut Gather, timestamp: u32, len: usize) {
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

pub(super) fn frame_buffer(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}
