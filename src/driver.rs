//! The I/O driver: the only code that owns a socket and reads a clock. It runs on a tokio
//! current-thread runtime and moves bytes between the input, the sans-IO core and the server.
//!
//! One publish is: open the input; resolve the host and connect (every address in turn); run the
//! [`PublishSession`] until the server accepts the publish; then, per access unit, mux it by
//! reference ([`AvcMuxer`]) and write the session's gathered chunks with vectored writes until
//! they are all out, reading and answering the server all the while; at the end of input or on
//! SIGINT/SIGTERM, unpublish and close.
//!
//! Invariants: a frame's bytes are written straight from the input buffer (the Annex-B reader's)
//! to the socket, and the reader is not touched until the frame is fully written; in steady state
//! nothing here allocates per frame (`IoSlice` arrays live on the stack); every wait also watches
//! the server, the session's deadline and the shutdown signals.

use std::future::Future;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::time::Duration;

use log::{debug, info, warn};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::time::Instant;

use crate::config::{Config, FrameRate};
use crate::error::{Error, Fault, Result};
use crate::media::annexb::{AccessUnit, AnnexBReader};
use crate::media::flv::{write_metadata, AvcMuxer, Muxed, SkipReason, VideoInfo};
use crate::rtmp::handshake::RANDOM_SIZE;
use crate::rtmp::session::{Event, PublishSession, SessionConfig};
use crate::source::Input;

/// How many `IoSlice`s one `writev` gets: a 4096-byte chunk is two slices (header, payload), so
/// this covers about 1 MB per call; well under IOV_MAX (1024) and 8 KiB of stack.
const IOV_BATCH: usize = 512;
/// Frame rate assumed for a file whose SPS has no timing, as FFmpeg's raw H.264 demuxer does.
const FILE_DEFAULT_FPS: u32 = 25;
/// How long closing may take: flushing the unpublish commands, then waiting for the server to
/// close its side. SIGTERM must end the process within a second.
const CLOSE_BUDGET: Duration = Duration::from_millis(900);
/// Largest server message accepted (servers send commands of a few hundred bytes).
const MAX_SERVER_MESSAGE: u32 = 1 << 20;

/// What a publish did, for the log and for tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Video frames written to the socket.
    pub frames_sent: u64,
    /// Bytes written to the socket, handshake included.
    pub bytes_sent: u64,
    /// Access units not sent (before the first keyframe, or unusable).
    pub frames_skipped: u64,
}

/// How a publish ended without error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// The input ended and everything was sent.
    EndOfInput,
    /// SIGINT or SIGTERM.
    Signal,
}

/// Runs one publish from `config.input` to `config.url`. `on_frame` is called after each frame is
/// written (tests use it to watch allocations); it must not block.
pub async fn publish(
    config: &Config,
    on_frame: &mut dyn FnMut(&Progress),
) -> Result<(Ending, Progress)> {
    let mut shutdown = Shutdown::new()?;
    let mut input = Input::open(&config.input)?;
    info!("reading H.264 from {}", input.name());
    let clock = Clock::new();
    let stream = connect(config, &mut shutdown).await?;
    let session_config = SessionConfig {
        app: config.url.app.clone(),
        tc_url: config.url.tc_url(),
        stream_name: config.url.stream_name(),
        chunk_size: config.chunk_size,
        flash_ver: SessionConfig::DEFAULT_FLASH_VER.to_string(),
        reply_timeout_ms: config.timeout_ms,
        max_message_size: MAX_SERVER_MESSAGE,
    };
    let session = PublishSession::new(session_config, clock.now_ms(), &random_bytes());
    let mut conn = Connection {
        stream,
        session,
        clock,
        progress: Progress::default(),
        read_buf: vec![0; 16 * 1024],
        publishing_since_ms: None,
    };
    let result = match conn.establish(&mut shutdown).await {
        Ok(false) => Ok(Ending::Signal),
        Ok(true) => {
            info!("publishing to {}", config.url);
            stream_input(config, &mut input, &mut conn, &mut shutdown, on_frame).await
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(ending) => conn.close(ending, &mut shutdown).await,
        Err(e) if e.fault() == Fault::Network && conn.lost_right_after_acceptance() => Err(Error::rejected(format!(
            "the server dropped the connection right after accepting the publish ({e}): it probably refuses \
             this stream (nginx-rtmp access rules do this)"
        ))),
        Err(e) => Err(e),
    }
}

/// A connection lost this soon after the server accepted the publish is taken for a refusal:
/// nginx-rtmp answers NetStream.Publish.Start before its access rules drop the connection.
const REFUSAL_WINDOW_MS: u64 = 1000;

/// Sends access units from the input until it ends or a signal arrives.
async fn stream_input(
    config: &Config,
    input: &mut Input,
    conn: &mut Connection,
    shutdown: &mut Shutdown,
    on_frame: &mut dyn FnMut(&Progress),
) -> Result<Ending> {
    let mut pipeline = Pipeline::new(config, input.is_live());
    let mut reader = AnnexBReader::new(config.max_frame_size);
    let mut input_ended = false;
    loop {
        if let Some(au) = reader.next_access_unit() {
            if !pipeline.send(&au, conn, shutdown).await? {
                return Ok(Ending::Signal);
            }
            on_frame(&conn.progress);
            continue;
        }
        if input_ended {
            break;
        }
        let buf = reader
            .read_buf()
            .map_err(|e| Error::input(format!("{}: {e}", input.name())))?;
        let read = input.read(buf);
        match conn.serve_while(read, shutdown).await?.transpose()? {
            None => return Ok(Ending::Signal),
            Some(0) => {
                reader.finish();
                input_ended = true;
            }
            Some(n) => reader.commit(n),
        }
        pipeline.check_input_progress(&reader, input.name())?;
    }
    if conn.progress.frames_sent == 0 {
        return Err(pipeline.nothing_sent_error(&reader, input.name()));
    }
    info!("end of input after {} frames", conn.progress.frames_sent);
    Ok(Ending::EndOfInput)
}

/// SIGINT and SIGTERM, registered once.
struct Shutdown {
    interrupt: Signal,
    terminate: Signal,
}

impl Shutdown {
    fn new() -> Result<Shutdown> {
        let register = |kind| {
            signal(kind).map_err(|e| Error::io(Fault::Ours, "cannot install signal handlers", e))
        };
        Ok(Shutdown {
            interrupt: register(SignalKind::interrupt())?,
            terminate: register(SignalKind::terminate())?,
        })
    }

    async fn requested(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => info!("SIGINT: stopping"),
            _ = self.terminate.recv() => info!("SIGTERM: stopping"),
        }
    }
}

/// Milliseconds since the driver started: the only clock the session sees.
#[derive(Clone, Copy)]
struct Clock {
    origin: Instant,
}

impl Clock {
    fn new() -> Clock {
        Clock {
            origin: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    fn instant(&self, ms: u64) -> Instant {
        self.origin + Duration::from_millis(ms)
    }
}

/// Unpredictable bytes for C1 (the handshake needs no cryptographic quality).
fn random_bytes() -> [u8; RANDOM_SIZE] {
    use std::hash::{BuildHasher, Hasher};
    let mut bytes = [0u8; RANDOM_SIZE];
    let mut state = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
        | 1;
    for byte in bytes.iter_mut() {
        // xorshift64*
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        *byte = (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8;
    }
    bytes
}

/// Resolves the host and connects to each address in turn.
async fn connect(config: &Config, shutdown: &mut Shutdown) -> Result<TcpStream> {
    let url = &config.url;
    let timeout = Duration::from_millis(config.timeout_ms);
    let lookup = tokio::net::lookup_host((url.host.as_str(), url.port));
    let addresses: Vec<SocketAddr> = tokio::select! {
        result = tokio::time::timeout(timeout, lookup) => match result {
            Ok(Ok(addresses)) => addresses.collect(),
            Ok(Err(e)) => return Err(Error::io(Fault::Network, format!("cannot resolve {}", url.host), e)),
            Err(_) => return Err(Error::network(format!("resolving {} took longer than {timeout:?}", url.host))),
        },
        _ = shutdown.requested() => return Err(Error::network("stopped while resolving the server")),
    };
    let mut last_error = Error::network(format!("{} resolved to no address", url.host));
    for address in addresses {
        debug!("connecting to {address}");
        let attempt = tokio::time::timeout(timeout, TcpStream::connect(address));
        let result = tokio::select! {
            result = attempt => result,
            _ = shutdown.requested() => return Err(Error::network("stopped while connecting")),
        };
        match result {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
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

/// A connected socket and its session.
struct Connection {
    stream: TcpStream,
    session: PublishSession,
    clock: Clock,
    progress: Progress,
    /// Where server bytes land before the session parses them.
    read_buf: Vec<u8>,
    /// When the server accepted the publish.
    publishing_since_ms: Option<u64>,
}

impl Connection {
    /// Runs the handshake and the publish sequence. Returns false if a signal stopped it.
    async fn establish(&mut self, shutdown: &mut Shutdown) -> Result<bool> {
        while !self.session.is_publishing() {
            if !self.flush(&[], shutdown).await? || !self.serve_once(shutdown).await? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Waits for `work` while reading and answering the server, honouring the session's deadline.
    /// Returns None if a signal arrived first.
    async fn serve_while<T>(
        &mut self,
        work: impl Future<Output = T>,
        shutdown: &mut Shutdown,
    ) -> Result<Option<T>> {
        tokio::pin!(work);
        loop {
            tokio::select! {
                biased;
                output = &mut work => return Ok(Some(output)),
                served = self.serve_once(shutdown) => if !served? { return Ok(None) },
            }
        }
    }

    /// Waits for one thing to happen on the connection: server bytes (read, handled and answered
    /// at once), the session's deadline, or a signal (returns false).
    async fn serve_once(&mut self, shutdown: &mut Shutdown) -> Result<bool> {
        let deadline = self.session.poll_timeout().map(|ms| self.clock.instant(ms));
        tokio::select! {
            biased;
            _ = shutdown.requested() => return Ok(false),
            readable = self.stream.readable() => {
                readable.map_err(|e| Error::io(Fault::Network, "socket error", e))?;
                self.read_available()?;
                // Replies (pongs, acknowledgements, commands) go out at once, unless a frame is
                // being written: then they follow it.
                if !self.session.transmit().has_external() {
                    self.write_some(&[])?;
                }
            }
            _ = sleep_until_option(deadline) => self.session.handle_timeout(self.clock.now_ms())?,
        }
        Ok(true)
    }

    /// Reads what the server sent, without waiting, and hands it to the session.
    fn read_available(&mut self) -> Result<()> {
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

    fn log_events(&mut self) {
        while let Some(event) = self.session.poll_event() {
            match event {
                Event::HandshakeDone => debug!("handshake done"),
                Event::Connected { description } => debug!("connected: {description}"),
                Event::Publishing => {
                    debug!("the server accepted the publish");
                    self.publishing_since_ms = Some(self.clock.now_ms());
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
                    warn!(
                        "the server asks for a reconnect ({description}); new tcUrl given: {}",
                        tc_url.is_some()
                    )
                }
            }
        }
    }

    /// Writes as much of the queue as the socket takes now. `external` is the frame buffer that
    /// queued external pieces refer to.
    fn write_some(&mut self, external: &[u8]) -> Result<bool> {
        loop {
            let out = self.session.transmit();
            if out.is_empty() {
                return Ok(true);
            }
            let mut slices = [IoSlice::new(&[]); IOV_BATCH];
            let count = out.io_slices(external, &mut slices);
            match self.stream.try_write_vectored(&slices[..count]) {
                Ok(0) => return Err(Error::network("the server stopped accepting data")),
                Ok(n) => {
                    self.session.transmit().advance(n);
                    self.progress.bytes_sent += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io(Fault::Network, "cannot send to the server", e)),
            }
        }
    }

    /// Writes the whole queue, reading from the server meanwhile. Returns false on a signal.
    async fn flush(&mut self, external: &[u8], shutdown: &mut Shutdown) -> Result<bool> {
        while !self.write_some(external)? {
            let deadline = self.session.poll_timeout().map(|ms| self.clock.instant(ms));
            tokio::select! {
                biased;
                _ = shutdown.requested() => return Ok(false),
                writable = self.stream.writable() => {
                    writable.map_err(|e| Error::io(Fault::Network, "socket error", e))?;
                }
                readable = self.stream.readable() => {
                    readable.map_err(|e| Error::io(Fault::Network, "socket error", e))?;
                    self.read_available()?;
                }
                _ = sleep_until_option(deadline) => {
                    self.session.handle_timeout(self.clock.now_ms())?;
                }
            }
        }
        Ok(true)
    }

    /// Unpublishes, flushes (for at most a second, or until another signal) and closes.
    async fn close(
        mut self,
        ending: Ending,
        shutdown: &mut Shutdown,
    ) -> Result<(Ending, Progress)> {
        self.session.unpublish();
        let flush = tokio::time::timeout(CLOSE_BUDGET, self.flush(&[], shutdown)).await;
        if !matches!(flush, Ok(Ok(true))) {
            debug!("could not send the unpublish commands in time");
        }
        self.linger(Instant::now() + CLOSE_BUDGET).await;
        info!(
            "sent {} frames, {} bytes in {:.1} s",
            self.progress.frames_sent,
            self.progress.bytes_sent,
            self.clock.now_ms() as f64 / 1000.0
        );
        Ok((ending, self.progress))
    }
}

impl Connection {
    fn lost_right_after_acceptance(&self) -> bool {
        self.publishing_since_ms
            .is_some_and(|since| self.clock.now_ms().saturating_sub(since) < REFUSAL_WINDOW_MS)
    }

    /// Closes gracefully: half-closes our side, then reads until the server closes too. Closing a
    /// socket with unread bytes in its receive queue sends a reset, and a reset makes the server
    /// discard what it has received but not yet read: the last frames of the stream.
    async fn linger(&mut self, deadline: Instant) {
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

async fn sleep_until_option(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Turns access units into timed FLV messages: timestamps, pacing, metadata and the sequence header.
struct Pipeline {
    muxer: AvcMuxer,
    frame_rate: FrameRate,
    live: bool,
    realtime: bool,
    start_timestamp_ms: u64,
    /// Chosen at the first frame: a fixed rate, or None for arrival time.
    rate: Option<(u32, u32)>,
    frame_index: u64,
    /// When the first frame was sent, for arrival timestamps and real-time pacing.
    origin_ms: Option<u64>,
    metadata: Vec<u8>,
    /// The size announced in onMetaData, to announce a change.
    announced_size: Option<(u32, u32)>,
    warned_waiting: bool,
    last_error: Option<Error>,
    skipped_since_warning: u64,
}

impl Pipeline {
    fn new(config: &Config, live: bool) -> Pipeline {
        Pipeline {
            muxer: AvcMuxer::new(),
            frame_rate: config.frame_rate,
            live,
            realtime: config.realtime,
            start_timestamp_ms: config.start_timestamp_ms,
            rate: None,
            frame_index: 0,
            origin_ms: None,
            metadata: Vec::with_capacity(256),
            announced_size: None,
            warned_waiting: false,
            last_error: None,
            skipped_since_warning: 0,
        }
    }

    /// Sends one access unit. Returns false if a signal interrupted it.
    async fn send(
        &mut self,
        au: &AccessUnit<'_>,
        conn: &mut Connection,
        shutdown: &mut Shutdown,
    ) -> Result<bool> {
        let (keyframe, header_changed) = match self.muxer.push(au) {
            Ok(Muxed::Frame {
                keyframe,
                sequence_header_changed,
            }) => (keyframe, sequence_header_changed),
            Ok(Muxed::Skipped(reason)) => {
                if reason != SkipReason::NoPicture {
                    conn.progress.frames_skipped += 1;
                    if !self.warned_waiting {
                        self.warned_waiting = true;
                        warn!("skipping frames until SPS, PPS and a keyframe have arrived ({reason:?})");
                    }
                }
                return Ok(true);
            }
            Err(e) => {
                conn.progress.frames_skipped += 1;
                let started = conn.progress.frames_sent > 0;
                if started && self.skipped_since_warning == 0 {
                    warn!(
                        "dropping an unusable access unit and waiting for the next keyframe: {e}"
                    );
                }
                self.skipped_since_warning += 1;
                self.muxer.restart();
                self.last_error = Some(Error::input(e.to_string()));
                return Ok(true);
            }
        };
        self.skipped_since_warning = 0;
        let timestamp = self.next_timestamp(conn.clock.now_ms());
        if self.realtime && !self.live {
            let due = self.origin_ms.unwrap_or(0) + (timestamp - self.start_timestamp_ms);
            let sleep = tokio::time::sleep_until(conn.clock.instant(due));
            if conn.serve_while(sleep, shutdown).await?.is_none() {
                return Ok(false);
            }
        }
        let wire_timestamp = timestamp as u32;
        if header_changed {
            self.announce(conn, wire_timestamp)?;
            conn.session
                .send_video_bytes(wire_timestamp, self.muxer.sequence_header())?;
        }
        conn.session
            .send_video(wire_timestamp, self.muxer.frame_parts())?;
        if !conn.flush(au.data, shutdown).await? {
            return Ok(false);
        }
        conn.progress.frames_sent += 1;
        if keyframe {
            debug!("keyframe at {timestamp} ms");
        }
        Ok(true)
    }

    /// Sends onMetaData when the size is new.
    fn announce(&mut self, conn: &mut Connection, timestamp: u32) -> Result<()> {
        let Some(sps) = self.muxer.sps() else {
            return Ok(());
        };
        let size = (sps.width, sps.height);
        if self.announced_size == Some(size) {
            return Ok(());
        }
        if self.announced_size.is_none() {
            info!(
                "H.264 {}x{} profile {} level {}.{}, {}",
                size.0,
                size.1,
                sps.profile_idc,
                sps.level_idc / 10,
                sps.level_idc % 10,
                match self.rate {
                    Some((n, d)) => format!("{:.3} fps", f64::from(n) / f64::from(d)),
                    None => "timestamps from arrival time".to_string(),
                }
            );
        }
        self.announced_size = Some(size);
        let info = VideoInfo {
            width: size.0,
            height: size.1,
            frame_rate: self.rate.map(|(n, d)| f64::from(n) / f64::from(d)),
            data_rate_kbps: None,
        };
        self.metadata.clear();
        write_metadata(
            &info,
            concat!("v4l2rtmp/", env!("CARGO_PKG_VERSION")),
            &mut self.metadata,
        );
        conn.session.send_data(timestamp, &self.metadata)
    }

    /// The stream time of the next frame, in milliseconds.
    fn next_timestamp(&mut self, now_ms: u64) -> u64 {
        if self.origin_ms.is_none() {
            self.origin_ms = Some(now_ms);
            self.rate = match self.frame_rate {
                FrameRate::Fixed {
                    numerator,
                    denominator,
                } => Some((numerator, denominator)),
                FrameRate::Auto => match self.muxer.sps().and_then(|sps| sps.frame_rate()) {
                    Some(rate) => Some(rate),
                    None if self.live => None,
                    None => {
                        warn!("the SPS has no frame rate and none was given: assuming {FILE_DEFAULT_FPS} fps (use --fps)");
                        Some((FILE_DEFAULT_FPS, 1))
                    }
                },
            };
        }
        let origin = self.origin_ms.unwrap_or(now_ms);
        let offset = match self.rate {
            // Rounded from the frame count, so the error never accumulates.
            Some((numerator, denominator)) => {
                let numerator = u128::from(numerator);
                let scaled = u128::from(self.frame_index) * 1000 * u128::from(denominator);
                ((scaled + numerator / 2) / numerator) as u64
            }
            None => now_ms.saturating_sub(origin),
        };
        self.frame_index += 1;
        self.start_timestamp_ms.saturating_add(offset)
    }

    /// Fails when the input has gone on for too long without a usable frame.
    fn check_input_progress(&self, reader: &AnnexBReader, name: &str) -> Result<()> {
        if self.origin_ms.is_none()
            && reader.bytes_read() > 2 * crate::config::DEFAULT_MAX_FRAME_SIZE as u64
        {
            return Err(self.nothing_sent_error(reader, name));
        }
        Ok(())
    }

    fn nothing_sent_error(&self, reader: &AnnexBReader, name: &str) -> Error {
        let detail = match &self.last_error {
            Some(e) => format!(": {}", e.message()),
            None if self.muxer.sps().is_none() => ": no SPS was found".to_string(),
            None if self.muxer.sequence_header().is_empty() => ": no PPS was found".to_string(),
            None => ": no keyframe (IDR) was found".to_string(),
        };
        Error::input(format!(
            "{name} held no H.264 that can be streamed ({} bytes read, {} skipped before the first start code){detail}",
            reader.bytes_read(),
            reader.skipped_bytes()
        ))
    }
}
