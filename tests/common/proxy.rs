//! A fault-injecting TCP proxy on 127.0.0.1, in the spirit of smoltcp's fault injector: it sits
//! between v4l2rtmp and the real server and, while connections are live, forwards, throttles,
//! stalls, black-holes or resets them.
//!
//! - [`Mode::Forward`]: bytes go both ways as they come.
//! - [`Mode::Throttle`]: client→server bytes pass through a token bucket (bytes per second, small
//!   bursts, short sleeps); server→client bytes are not limited.
//! - [`Mode::Stall`]: the proxy stops reading from the client but keeps every connection open and
//!   still forwards the server's bytes: the client's send buffer fills.
//! - [`Mode::BlackHole`]: the proxy stops reading and forwarding in both directions, as if the link
//!   was cut without a FIN or a reset.
//! - [`Proxy::reset_all`]: every current connection is closed with a reset (RST). std has no
//!   `SO_LINGER`, so the proxy uses the other way Linux sends a reset: it stops reading from the
//!   client, waits (bounded) until some of the client's bytes sit unread in its receive buffer, and
//!   closes the socket (`close()` with unread data sends RST, RFC 2525 2.17).
//! - [`Proxy::cut_after`]: the same reset, but after exactly N more client→server bytes of each
//!   current connection: a reset in the middle of a frame.
//!
//! - [`Proxy::with_stale_connections`]: what a real black hole does to the server's side of a
//!   connection whose client gave up meanwhile. The client's FIN or RST, and whatever it sent
//!   into the dead link, are lost with the link; the server still holds a healthy-looking
//!   connection (and, for RTMP, a publisher) until one of its own retransmissions or pings reaches
//!   the client's host after the link returns and that host answers with a reset. The proxy
//!   cannot leave this to the kernel: on loopback the client's close reaches the proxy at once,
//!   and forwarding it when the link returns would make the server drop the publisher at once.
//!   So when a black hole ends, each connection that lived through it is looked at: a client
//!   that is still there gets its bytes forwarded as usual; a client that closed (EOF or reset,
//!   behind whatever it had sent) makes the connection stale: nothing of the client's reaches
//!   the server, the server's bytes are swallowed, and after the configured hold the server's
//!   side is closed with a reset (SO_LINGER 0), the moment noted ([`Proxy::stale_released`]).
//!
//! Counters: bytes forwarded per direction, connections accepted, resets sent. Optionally the
//! first bytes each connection sent to the server are captured ([`Proxy::with_capture`]) so a test
//! can parse what the client sent on every connection.
//!
//! Invariants: everything listens and connects on 127.0.0.1 only; std only, one thread to accept
//! and two per connection, each waking at least every 20 ms (socket timeouts) to look at the
//! controls, so no loop spins and every thread ends soon after the proxy is dropped (Drop joins
//! them all).
#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a blocked read or write waits before the thread looks at the controls again.
const POLL: Duration = Duration::from_millis(20);
/// How long a paused direction sleeps between looks at the controls.
const IDLE: Duration = Duration::from_millis(5);
/// How long a reset waits for unread client bytes (which make `close()` send RST) before it
/// closes anyway (then the client sees a FIN).
const RST_WAIT: Duration = Duration::from_millis(1500);
/// Connecting to the server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Read size per direction.
const BUF: usize = 64 * 1024;
/// After a black hole, with stale connections on: a client whose socket yields no byte for this
/// long (and no EOF) is still there.
const SETTLE_QUIET: Duration = Duration::from_millis(200);
/// ...and one still sending after this long is too.
const SETTLE_MAX: Duration = Duration::from_secs(2);

/// What the proxy does with the bytes of its connections.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mode {
    Forward,
    /// Client→server at most this many bytes per second.
    Throttle(u64),
    /// Stop reading from the client; keep the connections open.
    Stall,
    /// Stop reading and forwarding in both directions.
    BlackHole,
}

/// One proxied connection's controls and counters.
struct Conn {
    id: u64,
    /// A reset was asked for.
    kill: AtomicBool,
    /// Reset once this many client→server bytes have been forwarded (u64::MAX: never).
    cut_at: AtomicU64,
    /// Client→server bytes forwarded on this connection.
    up: AtomicU64,
    /// Both directions have ended and the sockets are closed.
    done: AtomicBool,
    /// The connection ended with a reset sent to the client (not a FIN).
    reset_sent: AtomicBool,
    /// The first client→server bytes, when capturing.
    capture: Mutex<Vec<u8>>,
    /// Lived through a black hole that has not been looked at yet (stale connections only).
    black_holed: AtomicBool,
    /// Its client gave up during a black hole: the server's side is held, then reset.
    stale: AtomicBool,
    /// When the stale server side was reset.
    stale_released: Mutex<Option<Instant>>,
}

struct Shared {
    upstream: Mutex<SocketAddr>,
    mode: Mutex<Mode>,
    stop: AtomicBool,
    capture_limit: AtomicU64,
    /// With stale connections: how long the server's side of a connection whose client gave up
    /// during a black hole is held after the link returns.
    stale_hold: Mutex<Option<Duration>>,
    accepted: AtomicU64,
    up_bytes: AtomicU64,
    down_bytes: AtomicU64,
    resets: AtomicU64,
    conns: Mutex<Vec<Arc<Conn>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Shared {
    fn mode(&self) -> Mode {
        *self.mode.lock().unwrap()
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    fn stale_hold(&self) -> Option<Duration> {
        *self.stale_hold.lock().unwrap()
    }
}

/// A fault-injecting proxy listening on 127.0.0.1:`port`.
pub struct Proxy {
    pub port: u16,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Starts a proxy in [`Mode::Forward`] to `upstream` (which must be on 127.0.0.1).
    pub fn start(upstream: SocketAddr) -> Proxy {
        Self::start_with_link_buffer(upstream, None)
    }

    /// Like [`Proxy::start`], with the receive buffer of every accepted connection fixed at
    /// `link_buffer` bytes (`SO_RCVBUF`, which also stops the kernel's autotuning): the bytes the
    /// emulated link holds between the client and the throttle, like a router's queue. Without
    /// it, loopback autotuning may let the proxy's receive buffer grow to megabytes.
    pub fn start_with_link_buffer(upstream: SocketAddr, link_buffer: Option<usize>) -> Proxy {
        assert!(
            upstream.ip().is_loopback(),
            "the proxy only forwards to loopback"
        );
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        if let Some(bytes) = link_buffer {
            // Accepted sockets inherit the listener's buffer size and its lock.
            socket2::SockRef::from(&listener)
                .set_recv_buffer_size(bytes)
                .expect("SO_RCVBUF on the proxy's listener");
        }
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared {
            upstream: Mutex::new(upstream),
            mode: Mutex::new(Mode::Forward),
            stop: AtomicBool::new(false),
            capture_limit: AtomicU64::new(0),
            stale_hold: Mutex::new(None),
            accepted: AtomicU64::new(0),
            up_bytes: AtomicU64::new(0),
            down_bytes: AtomicU64::new(0),
            resets: AtomicU64::new(0),
            conns: Mutex::new(Vec::new()),
            threads: Mutex::new(Vec::new()),
        });
        let acceptor = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("proxy-accept-{port}"))
                .spawn(move || {
                    super::alloc::exclude_this_thread();
                    accept_loop(listener, shared)
                })
                .unwrap()
        };
        Proxy {
            port,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// A proxy to 127.0.0.1:`port`.
    pub fn to_port(port: u16) -> Proxy {
        Self::start(SocketAddr::from(([127, 0, 0, 1], port)))
    }

    /// A proxy to 127.0.0.1:`port` whose link holds at most about `bytes` bytes in flight (see
    /// [`Proxy::start_with_link_buffer`]).
    pub fn to_port_with_link_buffer(port: u16, bytes: usize) -> Proxy {
        Self::start_with_link_buffer(SocketAddr::from(([127, 0, 0, 1], port)), Some(bytes))
    }

    /// Bytes the proxy has received from clients but not read yet (its receive queues, from
    /// /proc/net/tcp): what the emulated link holds.
    pub fn link_queued(&self) -> u64 {
        tcp_queues(self.port, Side::Local)
            .iter()
            .map(|&(_, rx)| rx)
            .sum()
    }

    /// Keeps the first `limit` client→server bytes of every connection accepted from now on.
    pub fn with_capture(self, limit: usize) -> Proxy {
        self.shared
            .capture_limit
            .store(limit as u64, Ordering::SeqCst);
        self
    }

    /// Emulates the stale server side of connections whose client gave up during a black hole
    /// (see the module documentation): held for `hold` after the link returns, then reset.
    pub fn with_stale_connections(self, hold: Duration) -> Proxy {
        *self.shared.stale_hold.lock().unwrap() = Some(hold);
        self
    }

    /// When the server's side of each stale connection was reset, in accept order (None: the
    /// connection was not stale, or is still held).
    pub fn stale_released(&self) -> Vec<Option<Instant>> {
        self.shared
            .conns
            .lock()
            .unwrap()
            .iter()
            .map(|c| *c.stale_released.lock().unwrap())
            .collect()
    }

    /// Connections found stale so far (held or released), among those not forgotten.
    pub fn stale_connections(&self) -> usize {
        self.shared
            .conns
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.stale.load(Ordering::SeqCst))
            .count()
    }

    /// Forgets the connections that have ended, like [`Proxy::forget_closed`], and returns their
    /// captures and whether each ended with a reset sent to the client, in accept order.
    pub fn take_closed(&self) -> Vec<(Vec<u8>, bool)> {
        let mut conns = self.shared.conns.lock().unwrap();
        let (closed, live): (Vec<_>, Vec<_>) =
            conns.drain(..).partition(|c| c.done.load(Ordering::SeqCst));
        *conns = live;
        drop(conns);
        self.forget_closed();
        closed
            .into_iter()
            .map(|c| {
                let capture = std::mem::take(&mut *c.capture.lock().unwrap());
                (capture, c.reset_sent.load(Ordering::SeqCst))
            })
            .collect()
    }

    pub fn url(&self, app: &str, key: &str) -> String {
        format!("rtmp://127.0.0.1:{}/{app}/{key}", self.port)
    }

    /// Where new connections go.
    pub fn set_upstream(&self, upstream: SocketAddr) {
        *self.shared.upstream.lock().unwrap() = upstream;
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.shared.mode.lock().unwrap() = mode;
    }

    pub fn mode(&self) -> Mode {
        self.shared.mode()
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Client→server bytes forwarded so far, on all connections.
    pub fn bytes_up(&self) -> u64 {
        self.shared.up_bytes.load(Ordering::SeqCst)
    }

    /// Server→client bytes forwarded so far, on all connections.
    pub fn bytes_down(&self) -> u64 {
        self.shared.down_bytes.load(Ordering::SeqCst)
    }

    /// Connections closed with a reset so far.
    pub fn resets(&self) -> u64 {
        self.shared.resets.load(Ordering::SeqCst)
    }

    /// Connections not closed yet.
    pub fn live_connections(&self) -> usize {
        self.live().len()
    }

    fn live(&self) -> Vec<Arc<Conn>> {
        self.shared
            .conns
            .lock()
            .unwrap()
            .iter()
            .filter(|c| !c.done.load(Ordering::SeqCst))
            .cloned()
            .collect()
    }

    /// Closes every current connection with a reset, and waits (up to 3 s) until they are closed.
    /// Returns how many connections were reset (a connection whose client sent nothing within
    /// 1.5 s is closed with a FIN instead and not counted).
    pub fn reset_all(&self) -> usize {
        let live = self.live();
        for conn in &live {
            conn.kill.store(true, Ordering::SeqCst);
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        while live.iter().any(|c| !c.done.load(Ordering::SeqCst)) && Instant::now() < deadline {
            std::thread::sleep(IDLE);
        }
        live.iter()
            .filter(|c| c.reset_sent.load(Ordering::SeqCst))
            .count()
    }

    /// Resets every current connection after exactly `n` more client→server bytes. Returns, for
    /// each connection armed, the client→server byte count at which it will be cut; does not wait.
    pub fn cut_after(&self, n: u64) -> Vec<u64> {
        self.live()
            .iter()
            .map(|conn| {
                // The pump adds to `up` only after forwarding, and reads `cut_at` before each read:
                // retry until the count did not move while arming.
                loop {
                    let up = conn.up.load(Ordering::SeqCst);
                    let at = up.saturating_add(n);
                    conn.cut_at.store(at, Ordering::SeqCst);
                    if conn.up.load(Ordering::SeqCst) == up {
                        return at;
                    }
                }
            })
            .collect()
    }

    /// The client→server bytes captured on each connection so far, in accept order.
    pub fn captures(&self) -> Vec<Vec<u8>> {
        self.shared
            .conns
            .lock()
            .unwrap()
            .iter()
            .map(|c| c.capture.lock().unwrap().clone())
            .collect()
    }

    /// Whether each connection so far ended with a reset sent to the client, in accept order.
    pub fn reset_flags(&self) -> Vec<bool> {
        self.shared
            .conns
            .lock()
            .unwrap()
            .iter()
            .map(|c| c.reset_sent.load(Ordering::SeqCst))
            .collect()
    }

    /// Forgets the connections that have ended (their captures too), so a long test does not
    /// keep them all. Counters are kept.
    pub fn forget_closed(&self) {
        self.shared
            .conns
            .lock()
            .unwrap()
            .retain(|c| !c.done.load(Ordering::SeqCst));
        let mut threads = self.shared.threads.lock().unwrap();
        let (finished, running): (Vec<_>, Vec<_>) =
            threads.drain(..).partition(|t| t.is_finished());
        *threads = running;
        drop(threads);
        for thread in finished {
            let _ = thread.join();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        // The acceptor has ended: no thread is added any more.
        let threads: Vec<_> = self.shared.threads.lock().unwrap().drain(..).collect();
        for thread in threads {
            let _ = thread.join();
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut next_id = 0;
    while !shared.stopping() {
        match listener.accept() {
            Ok((client, _)) => {
                shared.accepted.fetch_add(1, Ordering::SeqCst);
                next_id += 1;
                let conn = Arc::new(Conn {
                    id: next_id,
                    kill: AtomicBool::new(false),
                    cut_at: AtomicU64::new(u64::MAX),
                    up: AtomicU64::new(0),
                    done: AtomicBool::new(false),
                    reset_sent: AtomicBool::new(false),
                    capture: Mutex::new(Vec::new()),
                    black_holed: AtomicBool::new(false),
                    stale: AtomicBool::new(false),
                    stale_released: Mutex::new(None),
                });
                shared.conns.lock().unwrap().push(conn.clone());
                let thread_shared = shared.clone();
                let thread = std::thread::Builder::new()
                    .name(format!("proxy-conn-{next_id}"))
                    .spawn(move || {
                        super::alloc::exclude_this_thread();
                        run_connection(client, &conn, &thread_shared);
                        conn.done.store(true, Ordering::SeqCst);
                    })
                    .unwrap();
                shared.threads.lock().unwrap().push(thread);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(IDLE),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                eprintln!("proxy: accept failed: {e}");
                std::thread::sleep(IDLE);
            }
        }
    }
}

/// How a direction ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// Its source sent EOF.
    Eof,
    /// A reset was asked for (or the proxy is stopping).
    Killed,
    /// A socket error.
    Error,
    /// The client gave up during a black hole and the hold is over: reset the server's side.
    Stale,
}

/// Runs one connection: connects to the server, pumps server→client on a second thread and
/// client→server on this one, and closes both sockets (with a reset when asked to).
fn run_connection(client: TcpStream, conn: &Arc<Conn>, shared: &Arc<Shared>) {
    let _ = client.set_nonblocking(false);
    let upstream = *shared.upstream.lock().unwrap();
    let server = match TcpStream::connect_timeout(&upstream, CONNECT_TIMEOUT) {
        Ok(server) => server,
        Err(e) => {
            eprintln!(
                "proxy: connection {}: cannot connect to {upstream}: {e}",
                conn.id
            );
            return;
        }
    };
    let _ = server.set_nodelay(true);
    let _ = client.set_nodelay(true);
    for socket in [&client, &server] {
        socket.set_read_timeout(Some(POLL)).unwrap();
        socket.set_write_timeout(Some(POLL)).unwrap();
    }
    let (client_down, server_down) = match (client.try_clone(), server.try_clone()) {
        (Ok(c), Ok(s)) => (c, s),
        _ => return,
    };
    let down = {
        let conn = conn.clone();
        let shared = shared.clone();
        std::thread::Builder::new()
            .name(format!("proxy-down-{}", conn.id))
            .spawn(move || {
                super::alloc::exclude_this_thread();
                let end = pump_down(server_down, &client_down, &conn, &shared);
                if end != End::Eof {
                    // The server reset or the link is being killed: end the whole connection.
                    conn.kill.store(true, Ordering::SeqCst);
                } else {
                    let _ = client_down.shutdown(Shutdown::Write);
                }
                // client_down is dropped here.
            })
            .unwrap()
    };
    let end = pump_up(&client, &server, conn, shared);
    match end {
        End::Eof => {
            let _ = server.shutdown(Shutdown::Write);
        }
        End::Killed | End::Error | End::Stale => conn.kill.store(true, Ordering::SeqCst),
    }
    // Wait for the other direction (it ends on EOF, on kill, or when the proxy stops).
    let _ = down.join();
    if end == End::Stale {
        // What the client's host answers to the server's next segment: a reset.
        let _ = socket2::SockRef::from(&server).set_linger(Some(Duration::ZERO));
        drop(server);
        *conn.stale_released.lock().unwrap() = Some(Instant::now());
        return;
    }
    if conn.kill.load(Ordering::SeqCst) && !shared.stopping() {
        // Make close() send RST: leave client bytes unread in the receive buffer.
        if wait_for_unread(&client, shared) {
            conn.reset_sent.store(true, Ordering::SeqCst);
            shared.resets.fetch_add(1, Ordering::SeqCst);
        }
    }
    drop(client);
    drop(server);
}

/// Waits until the client's bytes wait unread in the socket (so closing it sends a reset).
/// False when the client closed or sent nothing in time.
fn wait_for_unread(client: &TcpStream, shared: &Shared) -> bool {
    let deadline = Instant::now() + RST_WAIT;
    let mut probe = [0u8; 1];
    while Instant::now() < deadline && !shared.stopping() {
        match client.peek(&mut probe) {
            Ok(0) => return false,
            Ok(_) => return true,
            Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    false
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Client→server: modes, throttling, cuts, capture.
fn pump_up(client: &TcpStream, server: &TcpStream, conn: &Conn, shared: &Shared) -> End {
    let mut buf = vec![0u8; BUF];
    let mut source = client;
    let mut sink = server;
    // Token bucket for Throttle.
    let mut tokens = 0.0f64;
    let mut last_refill = Instant::now();
    loop {
        if shared.stopping() || conn.kill.load(Ordering::SeqCst) {
            return End::Killed;
        }
        let now = Instant::now();
        let elapsed = now.duration_since(last_refill).as_secs_f64();
        last_refill = now;
        let mut limit = BUF;
        let mode = shared.mode();
        if let Some(hold) = shared.stale_hold() {
            if mode == Mode::BlackHole {
                conn.black_holed.store(true, Ordering::SeqCst);
            } else if conn.black_holed.load(Ordering::SeqCst) {
                // The link is back: did the client give up meanwhile?
                match settle_after_black_hole(source, conn, shared) {
                    Some(pending) => {
                        if let Err(end) = forward_up(&mut sink, &pending, conn, shared) {
                            return end;
                        }
                        conn.black_holed.store(false, Ordering::SeqCst);
                    }
                    None => {
                        conn.stale.store(true, Ordering::SeqCst);
                        conn.black_holed.store(false, Ordering::SeqCst);
                        let until = Instant::now() + hold;
                        while Instant::now() < until {
                            if shared.stopping() || conn.kill.load(Ordering::SeqCst) {
                                return End::Killed;
                            }
                            std::thread::sleep(IDLE);
                        }
                        return End::Stale;
                    }
                }
                continue;
            }
        }
        match mode {
            Mode::Stall | Mode::BlackHole => {
                tokens = 0.0;
                std::thread::sleep(IDLE);
                continue;
            }
            Mode::Forward => tokens = 0.0,
            Mode::Throttle(rate) => {
                let rate = rate.max(1) as f64;
                // Bursts of at most 20 ms worth (and at least one TCP segment).
                let burst = (rate / 50.0).max(1460.0);
                tokens = (tokens + elapsed * rate).min(burst);
                if tokens < 1.0 {
                    let wait = Duration::from_secs_f64((1.0 - tokens) / rate);
                    std::thread::sleep(wait.clamp(Duration::from_millis(1), IDLE));
                    continue;
                }
                limit = (tokens as usize).min(BUF);
            }
        }
        let cut_at = conn.cut_at.load(Ordering::SeqCst);
        if cut_at != u64::MAX {
            let left = cut_at.saturating_sub(conn.up.load(Ordering::SeqCst));
            if left == 0 {
                return End::Killed;
            }
            limit = limit.min(left.min(BUF as u64) as usize);
        }
        let read = match source.read(&mut buf[..limit]) {
            Ok(0) => return End::Eof,
            Ok(n) => n,
            Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return End::Error,
        };
        // A cut armed while the read was under way: forward exactly up to it, drop the rest.
        let cut_at = conn.cut_at.load(Ordering::SeqCst);
        let n = if cut_at == u64::MAX {
            read
        } else {
            let left = cut_at.saturating_sub(conn.up.load(Ordering::SeqCst));
            read.min(left.min(BUF as u64) as usize)
        };
        if let Mode::Throttle(_) = shared.mode() {
            tokens -= n as f64;
        }
        if let Err(end) = forward_up(&mut sink, &buf[..n], conn, shared) {
            return end;
        }
        if n < read {
            return End::Killed;
        }
    }
}

/// Captures, forwards and counts client→server bytes.
fn forward_up(sink: &mut &TcpStream, data: &[u8], conn: &Conn, shared: &Shared) -> Result<(), End> {
    let capture_limit = shared.capture_limit.load(Ordering::SeqCst) as usize;
    if capture_limit > 0 {
        let mut capture = conn.capture.lock().unwrap();
        let room = capture_limit.saturating_sub(capture.len());
        capture.extend_from_slice(&data[..data.len().min(room)]);
    }
    write_all(sink, data, conn, shared)?;
    conn.up.fetch_add(data.len() as u64, Ordering::SeqCst);
    shared
        .up_bytes
        .fetch_add(data.len() as u64, Ordering::SeqCst);
    Ok(())
}

/// After a black hole (stale connections on): reads what the client sent into the dead link
/// until its end shows (EOF or an error: it gave up, None) or it falls quiet or keeps sending
/// (still there: Some(what it sent), to be forwarded).
fn settle_after_black_hole(client: &TcpStream, conn: &Conn, shared: &Shared) -> Option<Vec<u8>> {
    let mut source = client;
    let mut pending = Vec::new();
    let mut buf = vec![0u8; BUF];
    let started = Instant::now();
    let mut last_byte = started;
    loop {
        if shared.stopping() || conn.kill.load(Ordering::SeqCst) {
            return Some(pending);
        }
        let now = Instant::now();
        if now.duration_since(last_byte) >= SETTLE_QUIET
            || now.duration_since(started) >= SETTLE_MAX
        {
            return Some(pending);
        }
        match source.read(&mut buf) {
            Ok(0) => return None,
            Ok(n) => {
                pending.extend_from_slice(&buf[..n]);
                last_byte = Instant::now();
            }
            Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
}

/// Server→client: stops only in BlackHole (and, with stale connections, until a connection that
/// lived through one is settled; a stale one's bytes are swallowed).
fn pump_down(server: TcpStream, client: &TcpStream, conn: &Conn, shared: &Shared) -> End {
    let mut buf = vec![0u8; BUF];
    let mut source = &server;
    let mut sink = client;
    loop {
        if shared.stopping() || conn.kill.load(Ordering::SeqCst) {
            return End::Killed;
        }
        let mode = shared.mode();
        if mode == Mode::BlackHole {
            if shared.stale_hold().is_some() {
                conn.black_holed.store(true, Ordering::SeqCst);
            }
            std::thread::sleep(IDLE);
            continue;
        }
        if conn.black_holed.load(Ordering::SeqCst) {
            // pump_up is finding out whether the client is still there.
            std::thread::sleep(IDLE);
            continue;
        }
        let n = match source.read(&mut buf) {
            Ok(0) => return End::Eof,
            Ok(n) => n,
            Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return End::Error,
        };
        if conn.stale.load(Ordering::SeqCst) {
            // Lost on the way to a host that no longer knows the connection.
            continue;
        }
        if let Err(end) = write_all(&mut sink, &buf[..n], conn, shared) {
            return end;
        }
        shared.down_bytes.fetch_add(n as u64, Ordering::SeqCst);
    }
}

/// Writes everything, giving up when the connection is killed or the proxy stops.
fn write_all(
    sink: &mut &TcpStream,
    mut data: &[u8],
    conn: &Conn,
    shared: &Shared,
) -> Result<(), End> {
    while !data.is_empty() {
        if shared.stopping() || conn.kill.load(Ordering::SeqCst) {
            return Err(End::Killed);
        }
        match sink.write(data) {
            Ok(0) => return Err(End::Error),
            Ok(n) => data = &data[n..],
            Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Err(End::Error),
        }
    }
    Ok(())
}

/// Which end of a connection a port is matched against in [`tcp_queues`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Side {
    /// Connections accepted on this port (the server's end).
    Local,
    /// Connections made to this port (the client's end).
    Remote,
}

/// The (send queue, receive queue) in bytes of each established IPv4 connection whose local or
/// remote port is `port`, from /proc/net/tcp.
pub fn tcp_queues(port: u16, side: Side) -> Vec<(u64, u64)> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let needle = format!(":{port:04X}");
    let column = match side {
        Side::Local => 1,
        Side::Remote => 2,
    };
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            // sl, local, remote, state (01: established), tx_queue:rx_queue, ...
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() <= 4 || !fields[column].ends_with(&needle) || fields[3] != "01" {
                return None;
            }
            let (tx, rx) = fields[4].split_once(':')?;
            Some((
                u64::from_str_radix(tx, 16).ok()?,
                u64::from_str_radix(rx, 16).ok()?,
            ))
        })
        .collect()
}
