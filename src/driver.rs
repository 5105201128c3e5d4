//! The I/O side of one RTMP connection: the only code that owns a socket. It resolves and connects
//! (every address in turn), sets keepalive and TCP_USER_TIMEOUT, runs the sans-IO
//! [`PublishSession`] until the server accepts the publish, and then does non-blocking vectored
//! writes and reads for the supervisor's event loop, which decides when to wait for what.
//!
//! Invariants: writes come straight from the buffers the session's [`Gather`] refers to (the
//! frame store's ring, or a camera's buffer) and nothing here allocates per frame; `IoSlice`
//! arrays live on the stack; every error carries the fault the supervisor needs (network, peer, refusal).
//!
//! [`Gather`]: crate::rtmp::chunk::Gather

use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use log::{debug, info};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::backoff::Jitter;
use crate::config::Config;
use crate::error::{Error, Fault, Result};
use crate::rtmp::handshake::RANDOM_SIZE;
use crate::rtmp::session::{Event, PublishSession, SessionConfig};
use crate::tls::TlsSession;

/// How many `IoSlice`s one `writev` gets: a 4096-byte chunk is two slices (header, payload), so
/// this covers about 1 MB per call; well under IOV_MAX (1024) and 8 KiB of stack.
const IOV_BATCH: usize = 512;
/// Most unsent bytes the kernel holds for us (TCP_NOTSENT_LOWAT): 64 ms of a 4 Mbit/s stream, so
/// a slow link shows in the frame queue (bounded by --queue-time) almost at once.
const UNSENT_LIMIT: u32 = 32 * 1024;
/// Room in the transmit queue besides one frame: the handshake (C0+C1+C2, 3073 bytes), the publish
/// commands, onMetaData and the AVC sequence header before a connection's first frame, and the
/// control replies (acknowledgements, pongs: under 32 bytes each) queued while a frame waits.
const TRANSMIT_SLACK: usize = 16 * 1024;
/// Largest server message accepted (servers send commands of a few hundred bytes).
const MAX_SERVER_MESSAGE: u32 = 1 << 20;
/// How long closing may take: flushing the unpublish commands, then waiting for the server to
/// close its side. SIGTERM must end the process within a second.
pub const CLOSE_BUDGET: Duration = Duration::from_millis(750);

/// Milliseconds since the program started: the only clock the sans-IO core sees.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    origin: Instant,
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock {
    pub fn new() -> Clock {
        Clock {
            origin: Instant::now(),
        }
    }

    pub fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    pub fn instant(&self, ms: u64) -> Instant {
        self.origin + Duration::from_millis(ms)
    }

    /// A CLOCK_MONOTONIC time (a V4L2 buffer's timestamp) on this clock, in milliseconds; `None`
    /// when it is implausible (more than [`MONOTONIC_SLACK`] in the future or in the past), as a
    /// driver that stamps buffers with another clock would give.
    pub fn ms_from_monotonic(&self, at: Duration) -> Option<u64> {
        let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).ok()?;
        let now = Duration::new(now.tv_sec() as u64, now.tv_nsec() as u32);
        let now_ms = self.now_ms();
        if at > now {
            let ahead = at - now;
            return (ahead <= MONOTONIC_SLACK).then_some(now_ms);
        }
        let age = now - at;
        if age > MONOTONIC_SLACK {
            return None;
        }
        Some(now_ms.saturating_sub(age.as_millis() as u64))
    }
}

/// How far a buffer timestamp may be from now and still be taken as CLOCK_MONOTONIC.
pub const MONOTONIC_SLACK: Duration = Duration::from_secs(10);

/// A publishing connection: the socket and its session.
pub struct Connection {
    stream: TcpStream,
    session: PublishSession,
    clock: Clock,
    /// Where server bytes land before the session parses them.
    read_buf: Vec<u8>,
    /// Bytes written to the socket.
    bytes_sent: u64,
    /// The server asked us to reconnect (Enhanced RTMP), to this tcUrl if given.
    reconnect_request: Option<Option<String>>,
    /// RTMPS: the TLS session the RTMP bytes go through.
    tls: Option<TlsSession>,
}

impl Connection {
    /// Resolves, connects, and runs the handshake and the publish sequence. Each step is bounded
    /// by `config.timeout_ms`. `auth_query` (Adobe/Limelight authentication, `?authmod=...`) is
    /// appended to the app and the tcUrl of connect. Cancel-safe: dropping the future drops the
    /// socket.
    pub async fn open(
        config: &Config,
        tls_config: Option<Arc<rustls::ClientConfig>>,
        clock: Clock,
        auth_query: Option<String>,
    ) -> Result<Connection> {
        let stream = connect(config).await?;
        let tls = match tls_config {
            Some(tls_config) => Some(tls_handshake(&stream, tls_config, config).await?),
            None => None,
        };
        let session_config = SessionConfig {
            app: format!("{}{}", config.url.app, auth_query.as_deref().unwrap_or("")),
            tc_url: format!(
                "{}{}",
                config.url.tc_url(),
                auth_query.as_deref().unwrap_or("")
            ),
            stream_name: config.url.stream_name(),
            chunk_size: config.chunk_size,
            flash_ver: SessionConfig::DEFAULT_FLASH_VER.to_string(),
            reply_timeout_ms: config.timeout_ms,
            max_message_size: MAX_SERVER_MESSAGE,
        };
        let mut random = [0u8; RANDOM_SIZE];
        let mut jitter = Jitter::from_entropy();
        random.iter_mut().for_each(|b| *b = jitter.next_u64() as u8);
        let now = clock.now_ms();
        let mut session = PublishSession::new(session_config, now, &random);
        session
            .transmit()
            .reserve_scratch(transmit_capacity(config.max_frame_size, config.chunk_size));
        let mut conn = Connection {
            stream,
            session,
            clock,
            read_buf: vec![0; 16 * 1024],
            bytes_sent: 0,
            reconnect_request: None,
            tls,
        };
        while !conn.session.is_publishing() {
            let all_written = conn.write_some(&[])?;
            let deadline = conn.session.poll_timeout().map(|ms| clock.instant(ms));
            tokio::select! {
                biased;
                ready = conn.stream.readable() => {
                    ready.map_err(|e| Error::io(Fault::Network, "socket error", e))?;
                    if let Err(e) = conn.read_available() {
                        // Publish.Start and the close came in one read: nginx-rtmp's access rules.
                        return Err(if conn.session.is_publishing() { refusal_after_acceptance(e) } else { e });
                    }
                }
                ready = conn.stream.writable(), if !all_written => {
                    ready.map_err(|e| Error::io(Fault::Network, "socket error", e))?;
                }
                _ = sleep_until_option(deadline) => conn.session.handle_timeout(clock.now_ms())?,
            }
        }
        conn.write_some(&[]).map_err(refusal_after_acceptance)?;
        Ok(conn)
    }

    pub fn session(&mut self) -> &mut PublishSession {
        &mut self.session
    }

    pub fn bytes_sent(&self) -> u64 {
        self.bytes_sent
    }

    /// Whether nothing waits to be written.
    pub fn is_idle(&self) -> bool {
        self.session.transmit_ref().is_empty()
            && self
                .tls
                .as_ref()
                .is_none_or(|tls| tls.pending_output().is_empty())
    }

    /// The pending reconnect request: `Some(tc_url)` (the tcUrl is optional).
    pub fn take_reconnect_request(&mut self) -> Option<Option<String>> {
        self.reconnect_request.take()
    }

    /// When the session next needs [`PublishSession::handle_timeout`].
    pub fn session_timeout_ms(&self) -> Option<u64> {
        self.session.poll_timeout()
    }

    /// Writes as much of the queue as the socket takes now; true when everything is written.
    /// `external` is the buffer the queued external pieces refer to.
    pub fn write_some(&mut self, external: &[u8]) -> Result<bool> {
        if self.tls.is_some() {
            return self.write_some_tls(external);
        }
        loop {
            let out = self.session.transmit();
            if out.is_empty() {
                return Ok(true);
            }
            let mut slices = [IoSlice::new(&[]); IOV_BATCH];
            let count = out.io_slices(external, &mut slices);
            if count == 0 {
                return Err(Error::ours(
                    "queued bytes refer to a buffer that is no longer there",
                ));
            }
            match self.stream.try_write_vectored(&slices[..count]) {
                Ok(0) => return Err(Error::network("the server stopped accepting data")),
                Ok(n) => {
                    self.session.transmit().advance(n);
                    self.bytes_sent += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io(Fault::Network, "cannot send to the server", e)),
            }
        }
    }

    /// RTMPS: encrypts the queue into TLS records (the payload read once, by the encryption) and
    /// writes the records as the socket takes them.
    fn write_some_tls(&mut self, external: &[u8]) -> Result<bool> {
        let Some(tls) = &mut self.tls else {
            return Ok(true);
        };
        loop {
            while !tls.pending_output().is_empty() {
                match self.stream.try_write(tls.pending_output()) {
                    Ok(0) => return Err(Error::network("the server stopped accepting data")),
                    Ok(n) => {
                        tls.consume_output(n);
                        self.bytes_sent += n as u64;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        return Err(Error::io(Fault::Network, "cannot send to the server", e))
                    }
                }
            }
            let out = self.session.transmit();
            if out.is_empty() {
                return Ok(true);
            }
            if tls.encrypt_from(out, external)? == 0 && tls.pending_output().is_empty() {
                return Err(Error::ours("TLS took none of the queued bytes"));
            }
        }
    }

    /// Copies the unwritten part of a frame out of `external`, which the caller is about to reuse.
    pub fn detach(&mut self, external: &[u8]) {
        self.session.transmit().detach_external(external);
    }

    /// Waits until the socket has bytes to read (or an error to report).
    pub async fn readable(&self) -> Result<()> {
        self.stream
            .readable()
            .await
            .map_err(|e| Error::io(Fault::Network, "socket error", e))
    }

    /// Waits until the socket can take more bytes.
    pub async fn writable(&self) -> Result<()> {
        self.stream
            .writable()
            .await
            .map_err(|e| Error::io(Fault::Network, "socket error", e))
    }

    /// Reads what the server sent, without waiting, and hands it to the session (which may queue
    /// replies: the caller writes them).
    pub fn read_available(&mut self) -> Result<()> {
        if self.tls.is_some() {
            return self.read_available_tls();
        }
        loop {
            match self.stream.try_read(&mut self.read_buf) {
                Ok(0) => return Err(self.session.handle_eof()),
                Ok(n) => {
                    let now = self.clock.now_ms();
                    self.session.handle_input(&self.read_buf[..n], now)?;
                    self.log_events();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io(Fault::Network, "cannot read from the server", e)),
            }
        }
    }

    /// RTMPS: reads TLS records and hands the decrypted bytes to the session.
    fn read_available_tls(&mut self) -> Result<()> {
        loop {
            let Some(tls) = &mut self.tls else {
                return Ok(());
            };
            match self.stream.try_read(tls.read_buf()) {
                Ok(0) if tls.peer_closed() => {
                    return Err(Error::network("the server closed the TLS session"))
                }
                Ok(0) => return Err(self.session.handle_eof()),
                Ok(n) => {
                    let now = self.clock.now_ms();
                    let session = &mut self.session;
                    tls.received(n, &mut |plaintext| session.handle_input(plaintext, now))?;
                    self.log_events();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io(Fault::Network, "cannot read from the server", e)),
            }
        }
    }

    fn log_events(&mut self) {
        while let Some(event) = self.session.poll_event() {
            match event {
                Event::HandshakeDone => debug!("handshake done"),
                Event::Connected { description } => debug!("connected: {description}"),
                Event::Publishing => {
                    debug!("the server accepted the publish");
                }
                Event::Status {
                    level,
                    code,
                    description,
                } => info!("server status {level} {code}: {description}"),
                Event::ReconnectRequest {
                    tc_url,
                    description,
                } => {
                    debug!("the server asks us to reconnect ({description})");
                    self.reconnect_request = Some(tc_url);
                }
            }
        }
    }

    /// Unpublishes, flushes what is queued, half-closes, and reads until the server closes too,
    /// all within [`CLOSE_BUDGET`]. `external` is the buffer queued pieces refer to.
    ///
    /// Closing a socket with unread bytes in its receive queue sends a reset, and a reset makes
    /// the server discard what it has received but not yet read: the last frames of the stream.
    pub async fn close(mut self, external: &[u8]) {
        let deadline = Instant::now() + CLOSE_BUDGET;
        self.session.unpublish();
        let flushed = tokio::time::timeout_at(deadline, async {
            while !self.write_some(external)? {
                self.writable().await?;
            }
            Ok::<(), Error>(())
        })
        .await;
        if !matches!(flushed, Ok(Ok(()))) {
            debug!("could not send the unpublish commands in time");
            return;
        }
        if let Some(tls) = &mut self.tls {
            tls.close();
            let notified = tokio::time::timeout_at(deadline, async {
                while !self.write_some(&[])? {
                    self.writable().await?;
                }
                Ok::<(), Error>(())
            })
            .await;
            if !matches!(notified, Ok(Ok(()))) {
                return;
            }
        }
        if tokio::time::timeout_at(deadline, self.stream.shutdown())
            .await
            .is_err()
        {
            return;
        }
        let mut sink = [0u8; 4096];
        loop {
            let read = tokio::time::timeout_at(deadline, async {
                self.stream.readable().await?;
                self.stream.try_read(&mut sink)
            });
            match read.await {
                Ok(Ok(0)) | Err(_) => return,
                Ok(Ok(_)) => continue,
                Ok(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Ok(Err(_)) => return,
            }
        }
    }
}

/// The scratch storage the session's transmit queue gets up front, so that it never grows while
/// publishing. A frame is queued only on an idle link (the queue has just been emptied, which
/// resets its storage). A frame from the frame store stays there (the queue refers to the ring);
/// when the socket does not take all of a camera frame sent from the driver's buffer, the
/// supervisor copies the rest in ([`Connection::detach`]): the queue then holds one frame
/// message, what preceded it on this link (onMetaData, the sequence header) and the control
/// replies queued since, within [`TRANSMIT_SLACK`]. How much is copied depends on how much the
/// socket took: up to the whole frame, at any time. A frame body is at most
/// [`AvcMuxer::max_body_len`] of the largest access unit (`--max-frame-size`, and [`READ_SLACK`]
/// more for safety) and at most the 24-bit message length. Reserved, not written: the pages are mapped as frames are copied in.
///
/// [`AvcMuxer::max_body_len`]: crate::media::flv::AvcMuxer::max_body_len
/// [`READ_SLACK`]: crate::media::annexb::READ_SLACK
pub fn transmit_capacity(max_frame_size: usize, chunk_size: u32) -> usize {
    let largest_access_unit = max_frame_size.saturating_add(crate::media::annexb::READ_SLACK);
    let body = crate::media::flv::AvcMuxer::max_body_len(largest_access_unit)
        .min(crate::rtmp::chunk::MAX_MESSAGE_LEN as usize);
    crate::rtmp::chunk::max_wire_len(body, chunk_size).saturating_add(TRANSMIT_SLACK)
}

/// A connection lost right after the server accepted the publish: nginx-rtmp answers
/// NetStream.Publish.Start before its access rules drop the connection, so this is most likely a
/// refusal. The message is fixed, so a repeated refusal reads the same and is logged once.
pub fn refusal_after_acceptance(err: Error) -> Error {
    if err.fault() != Fault::Network {
        return err;
    }
    debug!("lost right after the publish was accepted: {err}");
    Error::rejected(
        "the server dropped the connection right after accepting the publish: it probably refuses this \
         stream (nginx-rtmp access rules do this)",
    )
}

/// Runs the TLS handshake on a connected socket, within the timeout.
async fn tls_handshake(
    stream: &TcpStream,
    tls_config: Arc<rustls::ClientConfig>,
    config: &Config,
) -> Result<TlsSession> {
    let mut tls = TlsSession::new(tls_config, &config.url.host)?;
    let timeout = Duration::from_millis(config.timeout_ms);
    let handshake = async {
        while tls.is_handshaking() {
            while !tls.pending_output().is_empty() {
                match stream.try_write(tls.pending_output()) {
                    Ok(n) => tls.consume_output(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => stream
                        .writable()
                        .await
                        .map_err(|e| Error::io(Fault::Network, "socket error", e))?,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        return Err(Error::io(Fault::Network, "cannot send to the server", e))
                    }
                }
            }
            if !tls.is_handshaking() {
                break;
            }
            stream
                .readable()
                .await
                .map_err(|e| Error::io(Fault::Network, "socket error", e))?;
            match stream.try_read(tls.read_buf()) {
                Ok(0) => {
                    return Err(Error::peer(
                        "the server closed the connection during the TLS handshake",
                    ))
                }
                Ok(n) => tls.received(n, &mut |_| Ok(()))?,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(Error::io(Fault::Network, "cannot read from the server", e)),
            }
        }
        Ok(())
    };
    match tokio::time::timeout(timeout, handshake).await {
        Ok(result) => result?,
        Err(_) => {
            return Err(Error::peer(format!(
                "the TLS handshake took longer than {timeout:?}"
            )))
        }
    }
    info!("TLS: {}", tls.negotiated().unwrap_or_default());
    Ok(tls)
}

/// Resolves the host (again on every attempt: the address may have changed; `.local` names over
/// mDNS if the system cannot) and connects to each address in turn, each bounded by the timeout.
async fn connect(config: &Config) -> Result<TcpStream> {
    let url = &config.url;
    let timeout = Duration::from_millis(config.timeout_ms);
    let addresses: Vec<SocketAddr> = crate::net::resolve(&url.host, url.port, timeout).await?;
    let mut last_error = Error::network(format!("{} resolved to no address", url.host));
    for address in addresses {
        debug!("connecting to {address}");
        match tokio::time::timeout(timeout, TcpStream::connect(address)).await {
            Ok(Ok(stream)) => {
                configure_socket(&stream, config);
                info!("connected to {address}");
                return Ok(stream);
            }
            Ok(Err(e)) => {
                last_error = Error::io(Fault::Network, format!("cannot connect to {address}"), e)
            }
            Err(_) => {
                last_error = Error::network(format!(
                    "connecting to {address} took longer than {timeout:?}"
                ))
            }
        }
    }
    Err(last_error)
}

/// TCP_NODELAY (frames go out whole, at once), keepalive probes (an idle dead peer is noticed),
/// and TCP_USER_TIMEOUT (unacknowledged data for longer than the stall timeout kills the
/// connection in the kernel too). Failures are logged, not fatal.
fn configure_socket(stream: &TcpStream, config: &Config) {
    use nix::sys::socket::{setsockopt, sockopt};
    let _ = stream.set_nodelay(true);
    let fd = stream.as_fd();
    let idle = (config.stall_timeout_ms / 1000).clamp(1, 7200) as u32;
    let results = [
        setsockopt(&fd, sockopt::KeepAlive, &true),
        setsockopt(&fd, sockopt::TcpKeepIdle, &idle),
        setsockopt(&fd, sockopt::TcpKeepInterval, &idle.div_ceil(3).max(1)),
        setsockopt(&fd, sockopt::TcpKeepCount, &3),
        setsockopt(
            &fd,
            sockopt::TcpUserTimeout,
            &(config.stall_timeout_ms.min(u32::MAX as u64) as u32),
        ),
    ];
    if let Some(Err(e)) = results.iter().find(|r| r.is_err()) {
        debug!("cannot set TCP keepalive options: {e}");
    }
    // Keep at most this much unsent data in the kernel: the send buffer autotunes to megabytes,
    // which would hide a slow link from the frame queue (where --queue-time applies) and from
    // the write-stall watchdog. Data in flight is not limited, so long fat links keep their speed.
    if let Err(e) = socket2::SockRef::from(stream).set_tcp_notsent_lowat(UNSENT_LIMIT) {
        debug!("cannot set TCP_NOTSENT_LOWAT: {e}");
    }
}

pub async fn sleep_until_option(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
