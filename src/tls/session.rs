//! [`TlsSession`]: one TLS client connection driven through rustls' unbuffered API, sans-IO: the
//! handshake, the records received (their plaintext handed to the caller), close_notify both
//! ways, and rustls' errors as the crate's. Sealing application data is in `sealing.rs`; the
//! buffers are the parent module's.
//!
//! # Invariants
//!
//! - The incoming buffer holds one largest record; it grows only when a handshake message longer
//!   than it fills it, and never beyond [`INCOMING_MAX`].
//! - Handshake records are encoded into the outgoing buffer as rustls produces them, before
//!   anything sealed later: for rustls they count as sent. Every record decrypted is handed out
//!   before [`TlsSession::received`] returns.
//! - After a method returns `Err`, the session is finished: drop it (later calls return errors).
//! - Plaintext is handed out in order, exactly once; ciphertext leaves in order, exactly once.

use std::fmt;
use std::sync::Arc;

use rustls::client::UnbufferedClientConnection;
use rustls::pki_types::ServerName;
use rustls::unbuffered::{
    ConnectionState, EncodeError, InsufficientSizeError, UnbufferedStatus, WriteTraffic,
};
use rustls::ClientConfig;

use super::sealing::{seal_gather, COPY_BELOW};
use super::trust::certificate_message;
use super::{
    Incoming, Outgoing, CLOSE_RESERVE, INCOMING_INITIAL, INCOMING_MAX, MAX_RECORD_PLAINTEXT,
    OUTGOING_CAPACITY, RECORD_RESERVE,
};
use crate::error::{Error, Fault, Result};
use crate::rtmp::chunk::Gather;

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

    /// The capacities of the incoming, outgoing and staging buffers.
    #[cfg(test)]
    pub(super) fn buffer_capacities(&self) -> [usize; 3] {
        [
            self.incoming.buf.capacity(),
            self.outgoing.buf.capacity(),
            self.stage.capacity(),
        ]
    }

    /// Replaces [`COPY_BELOW`], to compare sealing strategies.
    #[cfg(test)]
    pub(super) fn set_copy_below(&mut self, copy_below: usize) {
        self.copy_below = copy_below;
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

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;
    use crate::rtmp::chunk::ChunkWriter;
    use crate::tls::client_config;
    use crate::tls::testing::{frame_buffer, keyframe, server_config, Ca, Pair, HOST};

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
}
