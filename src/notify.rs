//! systemd's service notification protocol (`sd_notify(3)`), spoken directly over a Unix datagram
//! socket, without libsystemd: readiness (`READY=1`), a status line for `systemctl status`, the
//! watchdog keep-alive (`WATCHDOG=1`), reload and stop announcements.
//!
//! Under `Type=notify` systemd passes `NOTIFY_SOCKET` (a path, or `@name` for an abstract socket)
//! and, with `WatchdogSec=`, `WATCHDOG_USEC` and `WATCHDOG_PID`. [`Notifier::from_env`] reads them
//! once; every message is then one datagram on a socket created at that moment.
//!
//! # Invariants
//!
//! - Notification is best effort and never stops the program: a missing, malformed or unreachable
//!   `NOTIFY_SOCKET` gives a disabled notifier or a logged failure (`warn` once per outage, then
//!   `debug`), never an error or a panic.
//! - Sending never blocks: the socket is non-blocking, and a message that finds the receiver's queue
//!   full is dropped with a `debug` log. Messages are sent every few seconds, not per frame, so
//!   formatting one may allocate.
//! - The process environment is read and never changed. Removing variables from it
//!   (`std::env::remove_var`) is unsound while other threads may read the environment (it is
//!   `unsafe` from edition 2024 on, and this crate denies unsafe code). Children that v4l2rtmp
//!   starts (an `exec:` source) are kept from inheriting the variables by
//!   [`remove_from_environment_of`] instead: with `NotifyAccess=main` systemd would reject their
//!   messages anyway, but a notify-aware child would log warnings or believe it has a watchdog.
//! - Status text is one line: newlines and other control characters become spaces, and it is
//!   capped at [`MAX_STATUS_BYTES`]. It is shown by `systemctl status`, so callers never put the
//!   stream key in it.
//!
//! # Reloading without `MONOTONIC_USEC`
//!
//! systemd 253 and later want `RELOADING=1` to carry `MONOTONIC_USEC=` (the `CLOCK_MONOTONIC` time
//! of the reload, in microseconds) for `Type=notify-reload`, which ignores a `RELOADING=1` without
//! it. The standard library cannot read `CLOCK_MONOTONIC`'s absolute value without unsafe code or
//! libc: [`std::time::Instant`] is opaque (its `Debug` output is not a stable interface),
//! `/proc/uptime` is `CLOCK_BOOTTIME` and `/proc/timer_list` is root-only. So
//! [`Notifier::reloading`] sends `RELOADING=1` alone, and the unit uses `Type=notify` with
//! `ExecReload=kill -HUP $MAINPID`, where systemd accepts `RELOADING=1` without a timestamp (and
//! Debian bookworm's systemd 252 has no `notify-reload` anyway). After `RELOADING=1`, send
//! [`Notifier::ready`] when the new configuration is in effect.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use log::{debug, info, warn};

/// Where systemd listens: a path, or `@name` for an abstract socket.
const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";
/// The watchdog timeout in microseconds (`WatchdogSec=`).
const WATCHDOG_USEC: &str = "WATCHDOG_USEC";
/// The process the watchdog applies to; when unset, whoever reads `WATCHDOG_USEC`.
const WATCHDOG_PID: &str = "WATCHDOG_PID";

/// The longest status text sent, in bytes; longer text is cut at a character boundary. systemd
/// accepts a few kilobytes, but a status is one line for `systemctl status`.
pub const MAX_STATUS_BYTES: usize = 1024;

/// Sends notifications to the service manager, or does nothing when there is none.
///
/// Every method takes `&self` and never fails: see the module documentation.
#[derive(Debug)]
pub struct Notifier {
    /// None when notification is disabled (not under systemd, or a broken `NOTIFY_SOCKET`).
    target: Option<Target>,
    /// The watchdog timeout systemd enforces on us (`WATCHDOG_USEC`), never zero.
    watchdog: Option<Duration>,
    /// Whether the last send failed (other than a full queue), so an outage is warned about once.
    failing: AtomicBool,
}

/// An open notification socket and where it sends.
#[derive(Debug)]
struct Target {
    /// Unbound and non-blocking, created once.
    socket: UnixDatagram,
    address: SocketAddr,
    /// `NOTIFY_SOCKET` as given, for log messages.
    name: String,
}

/// A parsed `NOTIFY_SOCKET`.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Address {
    Path(PathBuf),
    Abstract(Vec<u8>),
}

/// What the environment says, before any socket is created.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Settings {
    address: Option<Address>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET` (a path, or `@name` for an abstract socket), `WATCHDOG_USEC` and
    /// `WATCHDOG_PID` (the watchdog applies only if `WATCHDOG_PID` is unset or equals our pid) and
    /// opens the socket. Without `NOTIFY_SOCKET` the notifier is disabled; malformed values are
    /// ignored with a warning. The environment is left as it is (see the module documentation);
    /// use [`remove_from_environment_of`] for children.
    pub fn from_env() -> Notifier {
        let notify_socket = env_text(NOTIFY_SOCKET);
        let watchdog_usec = env_text(WATCHDOG_USEC);
        let watchdog_pid = env_text(WATCHDOG_PID);
        let settings = parse_env(
            notify_socket.as_deref(),
            watchdog_usec.as_deref(),
            watchdog_pid.as_deref(),
            std::process::id(),
        );
        Notifier::from_settings(notify_socket.unwrap_or_default(), settings)
    }

    /// A notifier that sends to `path_or_abstract` (a path, or `@name` for an abstract socket) and
    /// reports `watchdog` as the watchdog timeout, as if systemd had passed them: for tests.
    pub fn to_socket(path_or_abstract: &str, watchdog: Option<Duration>) -> Notifier {
        let settings = Settings {
            address: parse_address(path_or_abstract),
            watchdog: watchdog.filter(|timeout| !timeout.is_zero()),
        };
        Notifier::from_settings(path_or_abstract.to_string(), settings)
    }

    /// A notifier that sends nothing.
    pub fn disabled() -> Notifier {
        Notifier {
            target: None,
            watchdog: None,
            failing: AtomicBool::new(false),
        }
    }

    fn from_settings(name: String, settings: Settings) -> Notifier {
        let target = settings
            .address
            .and_then(|address| open(&name, &address))
            .map(|(socket, address)| Target {
                socket,
                address,
                name,
            });
        if target.is_none() && settings.watchdog.is_some() {
            debug!("a watchdog is configured but there is no notification socket to feed it");
        }
        Notifier {
            target,
            watchdog: settings.watchdog,
            failing: AtomicBool::new(false),
        }
    }

    /// Whether messages are sent anywhere.
    pub fn is_enabled(&self) -> bool {
        self.target.is_some()
    }

    /// How often to send [`Notifier::watchdog`]: half of `WATCHDOG_USEC`, as systemd recommends.
    /// None when no watchdog is configured for this process or notification is disabled. Never
    /// zero (a zero period would make a timer loop spin or panic).
    pub fn watchdog_interval(&self) -> Option<Duration> {
        if !self.is_enabled() {
            return None;
        }
        self.watchdog.map(|timeout| {
            let half = timeout / 2;
            if half.is_zero() {
                timeout
            } else {
                half
            }
        })
    }

    /// Start-up is complete: `READY=1`. Under `Type=notify`, `systemctl start` returns and units
    /// ordered after this one start only now. Also ends a reload begun with
    /// [`Notifier::reloading`].
    pub fn ready(&self) {
        self.send("READY=1");
    }

    /// `READY=1` and a status line in one message.
    pub fn ready_with_status(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={}", one_line(status)));
    }

    /// A status line for `systemctl status`: `STATUS=...`. Newlines and other control characters
    /// become spaces; the text is cut to [`MAX_STATUS_BYTES`]. Never include the stream key.
    pub fn status(&self, status: &str) {
        self.send(&format!("STATUS={}", one_line(status)));
    }

    /// The watchdog keep-alive: `WATCHDOG=1`. Send it every [`Notifier::watchdog_interval`], from
    /// the loop whose progress it vouches for.
    pub fn watchdog(&self) {
        self.send("WATCHDOG=1");
    }

    /// A configuration reload began: `RELOADING=1`. Send [`Notifier::ready`] when it is done.
    /// Carries no `MONOTONIC_USEC` (see the module documentation), which is enough for
    /// `Type=notify`, not for `Type=notify-reload`.
    pub fn reloading(&self) {
        self.send("RELOADING=1");
    }

    /// Shutdown began: `STOPPING=1`.
    pub fn stopping(&self) {
        self.send("STOPPING=1");
    }

    /// Sends one datagram; logs instead of failing.
    fn send(&self, message: &str) {
        let Some(target) = &self.target else {
            return;
        };
        // The first line names the message in logs; a status text is not logged.
        let kind = message.split('\n').next().unwrap_or_default();
        loop {
            match target
                .socket
                .send_to_addr(message.as_bytes(), &target.address)
            {
                Ok(_) => {
                    if self.failing.swap(false, Ordering::Relaxed) {
                        info!("systemd notification socket {} works again", target.name);
                    }
                    return;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    debug!(
                        "systemd notification socket {} is full: {kind} dropped",
                        target.name
                    );
                    return;
                }
                Err(e) => {
                    if self.failing.swap(true, Ordering::Relaxed) {
                        debug!("cannot notify systemd at {} ({kind}): {e}", target.name);
                    } else {
                        warn!(
                            "cannot notify systemd at {} ({kind}): {e}; will keep trying",
                            target.name
                        );
                    }
                    return;
                }
            }
        }
    }
}

/// Removes `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` from the environment `command`
/// will give its child, so that a child (an `exec:` source) neither talks to systemd on our behalf
/// nor thinks it has a watchdog. Returns `command` for chaining.
pub fn remove_from_environment_of(command: &mut Command) -> &mut Command {
    // Socket activation's variables name our file descriptors too, not the child's.
    for name in [
        NOTIFY_SOCKET,
        WATCHDOG_USEC,
        WATCHDOG_PID,
        "LISTEN_FDS",
        "LISTEN_PID",
        "LISTEN_FDNAMES",
    ] {
        command.env_remove(name);
    }
    command
}

/// A variable's value; a value that is not Unicode is ignored with a warning.
fn env_text(name: &str) -> Option<String> {
    match std::env::var(name) {
        Ok(value) => Some(value),
        Err(std::env::VarError::NotPresent) => None,
        Err(std::env::VarError::NotUnicode(value)) => {
            warn!("ignoring {name}: {value:?} is not Unicode");
            None
        }
    }
}

/// Interprets the notification variables as systemd's `sd_notify` and `sd_watchdog_enabled` do,
/// without touching the environment or opening anything.
fn parse_env(
    notify_socket: Option<&str>,
    watchdog_usec: Option<&str>,
    watchdog_pid: Option<&str>,
    my_pid: u32,
) -> Settings {
    let address = match notify_socket {
        None => {
            debug!("{NOTIFY_SOCKET} is not set: not notifying systemd");
            None
        }
        Some(text) => parse_address(text),
    };
    Settings {
        address,
        watchdog: parse_watchdog(watchdog_usec, watchdog_pid, my_pid),
    }
}

/// `/absolute/path` or `@abstract-name`; anything else is ignored with a warning.
fn parse_address(text: &str) -> Option<Address> {
    if text.starts_with('/') {
        Some(Address::Path(PathBuf::from(text)))
    } else if let Some(name) = text.strip_prefix('@') {
        if name.is_empty() {
            warn!("ignoring {NOTIFY_SOCKET}={text:?}: the abstract socket name is empty");
            None
        } else {
            Some(Address::Abstract(name.as_bytes().to_vec()))
        }
    } else {
        warn!(
            "ignoring {NOTIFY_SOCKET}={text:?}: not an absolute path or an @abstract name \
             (other socket kinds are not supported)"
        );
        None
    }
}

/// The watchdog timeout, if `WATCHDOG_USEC` is valid and meant for `my_pid`.
fn parse_watchdog(
    watchdog_usec: Option<&str>,
    watchdog_pid: Option<&str>,
    my_pid: u32,
) -> Option<Duration> {
    let text = watchdog_usec?;
    let usec = match text.parse::<u64>() {
        // u64::MAX is systemd's "infinity", which it never passes as a timeout.
        Ok(usec) if usec > 0 && usec < u64::MAX => usec,
        _ => {
            warn!("ignoring {WATCHDOG_USEC}={text:?}: not a positive number of microseconds");
            return None;
        }
    };
    if let Some(pid_text) = watchdog_pid {
        match pid_text.parse::<u32>() {
            Ok(pid) if pid > 0 => {
                if pid != my_pid {
                    debug!("the watchdog is meant for process {pid}, not this one ({my_pid})");
                    return None;
                }
            }
            _ => {
                warn!("ignoring the watchdog: {WATCHDOG_PID}={pid_text:?} is not a process id");
                return None;
            }
        }
    }
    Some(Duration::from_micros(usec))
}

/// An unbound, non-blocking datagram socket and the address it sends to, or None (logged).
fn open(name: &str, address: &Address) -> Option<(UnixDatagram, SocketAddr)> {
    let socket_address = match address {
        Address::Path(path) => SocketAddr::from_pathname(path),
        Address::Abstract(bytes) => SocketAddr::from_abstract_name(bytes),
    };
    let socket_address = match socket_address {
        Ok(socket_address) => socket_address,
        Err(e) => {
            warn!("ignoring {NOTIFY_SOCKET}={name:?}: {e}");
            return None;
        }
    };
    let socket = match UnixDatagram::unbound() {
        Ok(socket) => socket,
        Err(e) => {
            warn!("cannot create a socket to notify systemd: {e}");
            return None;
        }
    };
    // A blocking send to a full queue would stall the runtime thread.
    if let Err(e) = socket.set_nonblocking(true) {
        warn!("cannot make the systemd notification socket non-blocking: {e}");
        return None;
    }
    debug!("notifying systemd at {name}");
    Some((socket, socket_address))
}

/// `text` as one line of at most [`MAX_STATUS_BYTES`]: control characters become spaces.
fn one_line(text: &str) -> String {
    let mut line = String::with_capacity(text.len().min(MAX_STATUS_BYTES));
    for c in text.chars() {
        let c = if c.is_control() { ' ' } else { c };
        if line.len() + c.len_utf8() > MAX_STATUS_BYTES {
            break;
        }
        line.push(c);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// A unique name per call, across tests running in parallel and concurrent test processes.
    fn unique(prefix: &str) -> String {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        format!(
            "{prefix}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// A temporary directory removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            let path = std::env::temp_dir().join(unique("v4l2rtmp-notify"));
            std::fs::create_dir_all(&path).expect("create a temporary directory");
            TempDir(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A receiver standing in for systemd.
    fn receiver(socket: UnixDatagram) -> UnixDatagram {
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("set a read timeout");
        socket
    }

    fn receive(socket: &UnixDatagram) -> Vec<u8> {
        let mut buffer = [0u8; 4096];
        let n = socket.recv(&mut buffer).expect("a notification");
        buffer[..n].to_vec()
    }

    /// Sends every kind of message and checks the bytes systemd would get.
    fn check_every_message(notifier: &Notifier, systemd: &UnixDatagram) {
        assert!(notifier.is_enabled());
        let cases: [(&dyn Fn(), &[u8]); 7] = [
            (&|| notifier.ready(), b"READY=1"),
            (
                &|| notifier.ready_with_status("publishing to nvr.local"),
                b"READY=1\nSTATUS=publishing to nvr.local",
            ),
            (
                &|| notifier.status("reconnecting in 2 s"),
                b"STATUS=reconnecting in 2 s",
            ),
            (
                &|| notifier.status("two\nlines\r\tand a tab"),
                b"STATUS=two lines  and a tab",
            ),
            (&|| notifier.watchdog(), b"WATCHDOG=1"),
            (&|| notifier.reloading(), b"RELOADING=1"),
            (&|| notifier.stopping(), b"STOPPING=1"),
        ];
        for (send, expected) in cases {
            send();
            assert_eq!(
                receive(systemd),
                expected,
                "expected {:?}",
                String::from_utf8_lossy(expected)
            );
        }
    }

    #[test]
    fn sends_each_message_to_a_path_socket() {
        let dir = TempDir::new();
        let path = dir.0.join("notify");
        let systemd = receiver(UnixDatagram::bind(&path).expect("bind"));
        let notifier = Notifier::to_socket(path.to_str().unwrap(), Some(Duration::from_secs(30)));
        check_every_message(&notifier, &systemd);
        assert_eq!(notifier.watchdog_interval(), Some(Duration::from_secs(15)));
    }

    #[test]
    fn sends_each_message_to_an_abstract_socket() {
        let name = unique("v4l2rtmp-notify-test");
        let address = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let systemd = receiver(UnixDatagram::bind_addr(&address).expect("bind"));
        let notifier = Notifier::to_socket(&format!("@{name}"), None);
        check_every_message(&notifier, &systemd);
        assert_eq!(notifier.watchdog_interval(), None);
    }

    #[test]
    fn status_is_cut_at_a_character_boundary() {
        let dir = TempDir::new();
        let path = dir.0.join("notify");
        let systemd = receiver(UnixDatagram::bind(&path).expect("bind"));
        let notifier = Notifier::to_socket(path.to_str().unwrap(), None);
        // 'é' is two bytes: 600 of them do not fit in 1024 bytes, and no character is split.
        notifier.status(&"é".repeat(600));
        let got = receive(&systemd);
        let text = std::str::from_utf8(&got).expect("UTF-8");
        let status = text.strip_prefix("STATUS=").unwrap();
        assert_eq!(status, "é".repeat(MAX_STATUS_BYTES / 2));
        notifier.ready_with_status("");
        assert_eq!(receive(&systemd), b"READY=1\nSTATUS=");
    }

    #[test]
    fn parses_the_environment_like_sd_notify() {
        let parse = |socket, usec, pid| parse_env(socket, usec, pid, 4242);
        let settings = |address, watchdog| Settings { address, watchdog };
        let run = Some("/run/systemd/notify");
        let path = || Some(Address::Path(PathBuf::from("/run/systemd/notify")));
        let thirty = Some(Duration::from_secs(30));

        // Not under systemd; under systemd with a path or an abstract socket.
        assert_eq!(parse(None, None, None), settings(None, None));
        assert_eq!(parse(run, None, None), settings(path(), None));
        assert_eq!(
            parse(Some("@/org/freedesktop/systemd1/notify/1"), None, None),
            settings(
                Some(Address::Abstract(
                    b"/org/freedesktop/systemd1/notify/1".to_vec()
                )),
                None
            )
        );
        // Garbage addresses are ignored (vsock: is a newer systemd's, not supported here).
        for garbage in ["", "@", "run/notify", "vsock:2:1234"] {
            assert_eq!(parse(Some(garbage), None, None), settings(None, None));
        }

        // The watchdog, for any process or for this one.
        assert_eq!(parse(run, Some("30000000"), None), settings(path(), thirty));
        assert_eq!(
            parse(run, Some("30000000"), Some("4242")),
            settings(path(), thirty)
        );
        // For another process (the variables were inherited from a parent): not ours.
        assert_eq!(
            parse(run, Some("30000000"), Some("17")),
            settings(path(), None)
        );
        // Garbage watchdog values are ignored, never a panic.
        for usec in [
            "0",
            "-5",
            "30s",
            " 30",
            "",
            "18446744073709551615",
            "99999999999999999999999",
        ] {
            assert_eq!(
                parse(run, Some(usec), None),
                settings(path(), None),
                "{usec:?}"
            );
        }
        for pid in ["pid", "0", "-1", ""] {
            assert_eq!(
                parse(run, Some("30000000"), Some(pid)),
                settings(path(), None),
                "{pid:?}"
            );
        }
        // A watchdog without a socket is parsed; the notifier then reports no interval.
        assert_eq!(
            parse(None, Some("1"), None),
            settings(None, Some(Duration::from_micros(1)))
        );
    }

    #[test]
    fn watchdog_interval_is_half_the_timeout_and_never_zero() {
        let dir = TempDir::new();
        let path = dir.0.join("notify");
        let _systemd = UnixDatagram::bind(&path).expect("bind");
        let path = path.to_str().unwrap();
        let interval = |timeout| Notifier::to_socket(path, timeout).watchdog_interval();
        assert_eq!(
            interval(Some(Duration::from_secs(30))),
            Some(Duration::from_secs(15))
        );
        assert_eq!(
            interval(Some(Duration::from_nanos(1))),
            Some(Duration::from_nanos(1))
        );
        assert_eq!(interval(Some(Duration::ZERO)), None);
        assert_eq!(interval(None), None);
        // No socket, no watchdog: nothing could be fed.
        let settings = parse_env(None, Some("30000000"), None, 1);
        let notifier = Notifier::from_settings(String::new(), settings);
        assert_eq!(notifier.watchdog_interval(), None);
    }

    #[test]
    fn a_disabled_notifier_does_nothing() {
        let too_long = format!("/{}", "x".repeat(200));
        for notifier in [
            Notifier::disabled(),
            Notifier::to_socket("", Some(Duration::from_secs(30))),
            Notifier::to_socket("@", Some(Duration::from_secs(30))),
            Notifier::to_socket("relative", Some(Duration::from_secs(30))),
            Notifier::to_socket(&too_long, Some(Duration::from_secs(30))),
            Notifier::to_socket(&format!("@{}", "x".repeat(200)), None),
        ] {
            assert!(!notifier.is_enabled());
            assert_eq!(notifier.watchdog_interval(), None);
            notifier.ready();
            notifier.ready_with_status("status");
            notifier.status("status");
            notifier.watchdog();
            notifier.reloading();
            notifier.stopping();
        }
    }

    #[test]
    fn a_missing_receiver_is_logged_not_fatal_and_recovers() {
        let dir = TempDir::new();
        let path = dir.0.join("notify");
        let notifier = Notifier::to_socket(path.to_str().unwrap(), None);
        assert!(notifier.is_enabled());
        // Nobody listens yet (systemd being re-executed, say).
        notifier.ready();
        notifier.watchdog();
        assert!(notifier.failing.load(Ordering::Relaxed));
        let systemd = receiver(UnixDatagram::bind(&path).expect("bind"));
        notifier.watchdog();
        assert_eq!(receive(&systemd), b"WATCHDOG=1");
        assert!(!notifier.failing.load(Ordering::Relaxed));
    }

    #[test]
    fn a_full_receiver_never_blocks_the_sender() {
        let dir = TempDir::new();
        let path = dir.0.join("notify");
        // Bound but never read: its queue fills after a few messages.
        let _systemd = UnixDatagram::bind(&path).expect("bind");
        let notifier = Notifier::to_socket(path.to_str().unwrap(), None);
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for _ in 0..10_000 {
                notifier.watchdog();
            }
            let _ = done.send(());
        });
        finished
            .recv_timeout(Duration::from_secs(10))
            .expect("sending to a full queue blocked");
    }

    #[test]
    fn children_do_not_inherit_the_notification_variables() {
        let mut command = Command::new("true");
        command
            .env("NOTIFY_SOCKET", "/run/systemd/notify")
            .env("KEEP", "1");
        remove_from_environment_of(&mut command);
        let envs: Vec<(String, Option<String>)> = command
            .get_envs()
            .map(|(k, v)| {
                (
                    k.to_string_lossy().into_owned(),
                    v.map(|v| v.to_string_lossy().into_owned()),
                )
            })
            .collect();
        for name in [NOTIFY_SOCKET, WATCHDOG_USEC, WATCHDOG_PID] {
            assert!(
                envs.contains(&(name.to_string(), None)),
                "{name} is not removed: {envs:?}"
            );
        }
        assert!(envs.contains(&("KEEP".to_string(), Some("1".to_string()))));
    }

    #[test]
    fn from_env_never_fails() {
        // Whatever this process's environment holds (a test may run under systemd), reading it
        // gives a notifier and never panics.
        let notifier = Notifier::from_env();
        if !notifier.is_enabled() {
            assert_eq!(notifier.watchdog_interval(), None);
        }
    }
}
