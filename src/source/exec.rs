//! A child process as the video input: `--input 'exec:rpicam-vid -t 0 --codec h264 --inline -o -'`.
//!
//! v4l2rtmp starts the encoder itself, reads Annex-B H.264 from its stdout, forwards its stderr to
//! the log line by line, and stops it when the stream ends. The supervisor restarts it after it
//! exits, spacing the restarts with the supervisor core's backoff.
//!
//! # The command line
//!
//! [`ExecSource::parse_command`] splits the text after `exec:` into words like a POSIX shell does:
//! whitespace separates words, `'...'` quotes literally, `"..."` quotes with `\"`, `\\`, `\$` and
//! `` \` `` as escapes, and a backslash outside quotes escapes the next character. There is no shell:
//! no variables, no command substitution, no pipes, redirections, `&` or `;`. An unquoted `| & ; < >
//! ( ) $` or backquote (or `$` or a backquote inside double quotes) is an error rather than a
//! surprise, and the message says to quote it or to write `exec:sh -c '...'`. Globs (`* ? [`), `~`
//! and `#` are not special: they are passed on as they are.
//!
//! # The child
//!
//! The child runs in a process group of its own (its pid is the group id), with stdin from
//! `/dev/null`, stdout and stderr piped to v4l2rtmp, and without the systemd variables that belong
//! to v4l2rtmp (`NOTIFY_SOCKET`, `WATCHDOG_PID`, `WATCHDOG_USEC`, `LISTEN_FDS`, `LISTEN_PID`,
//! `LISTEN_FDNAMES`), so it cannot notify or feed the watchdog on v4l2rtmp's behalf.
//!
//! Signals go to the whole group, so `sh -c 'a | b'` and helpers the encoder starts are stopped
//! with it. The first spawn makes v4l2rtmp a child subreaper (`PR_SET_CHILD_SUBREAPER`): processes
//! the child leaves behind in its group are reparented to v4l2rtmp, which reaps them, so no zombie
//! is left even under an init that does not reap (containers). A process that leaves the group
//! (`setsid`, a daemon) escapes both the signals and the reaping.
//!
//! The stream is over when the child closes its stdout, or when the child (the group leader) has
//! exited and its stdout has stayed silent for a moment since (a process it left behind may hold the
//! pipe open forever). Processes still in its group then get SIGTERM, then SIGKILL: the group leader
//! is the service, like systemd's main process.
//!
//! # Waiting
//!
//! Tokio is built without its `process` feature, so there is no asynchronous wait: [`ExecSource::stop`]
//! and [`ExecSource::wait`] poll `waitpid(WNOHANG)` every [`POLL_INTERVAL`] with `tokio::time::sleep`,
//! for a bounded time, meanwhile draining the child's stdout (discarded) and stderr (logged) so a
//! child that flushes on SIGTERM does not block on a full pipe. A child that does not die within
//! [`KILL_WAIT`] of SIGKILL (stuck in the kernel, state D) is handed to a small thread that waits for
//! it, so it is reaped whenever it does die.
//!
//! # Stderr
//!
//! Lines end at `\n` or `\r` (progress output). Each is logged at info level as `program[pid]: line`.
//! A line longer than [`STDERR_LINE_MAX`] bytes is cut there and the rest counted and dropped, so
//! megabytes without a newline cost no memory. At most [`STDERR_LINE_BURST`] lines are logged at once,
//! then one per [`STDERR_LINE_PERIOD`]; the lines over that are counted, and the count is logged with
//! the next line that is, so an encoder printing a line per frame cannot flood the journal of a
//! device that runs for months. Stderr is read whenever [`ExecSource::read`] waits, without
//! delaying stdout: stdout is read first, and stderr at most [`STDERR_BUDGET`] bytes per call.
//!
//! # Invariants
//!
//! - [`ExecSource::read`] reads straight into the caller's buffer, and is cancel-safe: a read that is
//!   dropped before it finishes loses no byte of stdout and no stderr line.
//! - Every child is signalled and reaped: by [`ExecSource::stop`], [`ExecSource::wait`] or, if the
//!   source is dropped instead, by [`Drop`] (SIGKILL to the group, then a reaper thread when the child
//!   has not died yet). The only zombie that can be left is one whose reaper thread could not be
//!   started; that is logged.

use std::future::pending;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Once;
use std::time::Duration;

use log::{debug, info, warn};
use nix::errno::Errno;
use nix::sys::signal::{kill, killpg, Signal};
use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::net::unix::pipe;
use tokio::time::Instant;

use crate::error::{Error, Fault, Result};

/// How often [`ExecSource::stop`] and [`ExecSource::wait`] look whether the child has exited.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// How long to wait for the child to die after SIGKILL before a thread takes over the waiting.
pub const KILL_WAIT: Duration = Duration::from_secs(1);
/// How long stdout must have been idle while [`ExecSource::read`] waits before it checks whether
/// the child has exited.
pub const EXIT_CHECK: Duration = Duration::from_secs(1);
/// After the child is seen to have exited, how long its stdout may stay silent (held open by a
/// process it left behind) before [`ExecSource::read`] calls it the end.
pub const EXIT_LINGER: Duration = Duration::from_millis(250);
/// How long to wait, after the child is gone, for the last of its stderr.
const FINAL_STDERR_WAIT: Duration = Duration::from_millis(250);
/// Bytes of a stderr line that are kept; the rest of the line is counted and dropped.
pub const STDERR_LINE_MAX: usize = 1024;
/// Stderr lines logged at once before the rate limit applies.
pub const STDERR_LINE_BURST: u32 = 100;
/// After a burst, one more stderr line may be logged per period.
pub const STDERR_LINE_PERIOD: Duration = Duration::from_millis(500);
/// Bytes of stderr read per call of [`ExecSource::read`], so stderr cannot starve stdout.
pub const STDERR_BUDGET: usize = 64 * 1024;
/// Bytes of stdout read and discarded per poll while stopping.
const DISCARD_BUDGET: usize = 1 << 20;

/// A supervised child process whose stdout is the H.264 input.
pub struct ExecSource {
    /// The child; `None` once it has been handed to a reaper thread.
    child: Option<Child>,
    /// The child's pid, which is also its process group id.
    pid: Pid,
    /// `program[pid]`.
    name: String,
    stdout: pipe::Receiver,
    stdout_closed: bool,
    stderr: StderrLog,
    leader: Leader,
    started: Instant,
    /// `stop` or `wait` has run to the end: nothing is left for `Drop` to do.
    finished: bool,
}

/// What is known of the group leader (the child itself).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Leader {
    Running,
    /// Exited and not yet reaped (seen with `WNOWAIT`).
    Exited,
    /// Reaped, with its status and when.
    Reaped(ExitStatus, Instant),
    /// Could not be waited for (someone else reaped it).
    Lost(Instant),
}

impl ExecSource {
    /// Parses a command line (the text after `exec:`) into the program and its arguments: words
    /// are separated by whitespace, with `'...'`, `"..."` and backslash escapes as in a POSIX shell.
    ///
    /// There are no variables, globs, pipes or redirections: an unquoted `| & ; < > ( ) $` or
    /// backquote is a [`Fault::Config`] error that says to quote it or to run
    /// `exec:sh -c '...'`; `* ? [ ~ #` are passed on literally. An empty command, an unbalanced
    /// quote, a backslash at the very end or a NUL character are errors too.
    pub fn parse_command(text: &str) -> Result<Vec<String>> {
        let column = |at: usize| text[..at].chars().count() + 1;
        let mut words = Vec::new();
        let mut word = String::new();
        // Whether a word has begun: `''` is an empty argument, not nothing.
        let mut in_word = false;
        let mut chars = text.char_indices().peekable();
        while let Some((at, c)) = chars.next() {
            match c {
                ' ' | '\t' | '\n' | '\r' => {
                    if in_word {
                        words.push(std::mem::take(&mut word));
                        in_word = false;
                    }
                }
                '\'' => {
                    in_word = true;
                    loop {
                        match chars.next() {
                            Some((_, '\'')) => break,
                            Some((_, c)) => word.push(c),
                            None => return Err(unbalanced('\'', column(at))),
                        }
                    }
                }
                '"' => {
                    in_word = true;
                    loop {
                        match chars.next() {
                            Some((_, '"')) => break,
                            Some((_, '\\')) => match chars.peek() {
                                Some(&(_, c @ ('"' | '\\' | '$' | '`'))) => {
                                    word.push(c);
                                    chars.next();
                                }
                                Some(&(_, '\n')) => {
                                    chars.next();
                                }
                                _ => word.push('\\'),
                            },
                            Some((i, c @ ('$' | '`'))) => return Err(needs_shell(c, column(i))),
                            Some((_, c)) => word.push(c),
                            None => return Err(unbalanced('"', column(at))),
                        }
                    }
                }
                '\\' => match chars.next() {
                    // A line continuation.
                    Some((_, '\n')) => {}
                    Some((_, c)) => {
                        in_word = true;
                        word.push(c);
                    }
                    None => {
                        return Err(Error::config(
                            "exec command ends with a backslash that escapes nothing",
                        ))
                    }
                },
                '|' | '&' | ';' | '<' | '>' | '(' | ')' | '$' | '`' => {
                    return Err(needs_shell(c, column(at)))
                }
                c => {
                    in_word = true;
                    word.push(c);
                }
            }
        }
        if in_word {
            words.push(word);
        }
        if words.is_empty() {
            return Err(Error::config(
                "exec: needs a command, e.g. exec:rpicam-vid -t 0 --codec h264 --inline -o -",
            ));
        }
        if words[0].is_empty() {
            return Err(Error::config("exec command: the program name is empty"));
        }
        if words.iter().any(|w| w.contains('\0')) {
            return Err(Error::config(
                "exec command: contains a NUL character, which no argument can hold",
            ));
        }
        Ok(words)
    }

    /// Starts `argv[0]` with the arguments `argv[1..]` (looked up in `PATH` unless it contains a
    /// `/`) in its own process group, stdin from `/dev/null`, stdout and stderr piped, and
    /// `NOTIFY_SOCKET`, `WATCHDOG_*` and `LISTEN_*` removed from its environment.
    ///
    /// A program that does not exist or cannot be executed is a [`Fault::Input`] error naming it
    /// (exit 65 at start; later, while it is being reinstalled say, it is tried again with
    /// backoff); other failures (out of processes, memory or file descriptors) are too. Must be
    /// called within a tokio runtime with I/O enabled (without a runtime it is a [`Fault::Ours`]
    /// error).
    pub fn spawn(argv: &[String]) -> Result<ExecSource> {
        let Some((program, args)) = argv.split_first() else {
            return Err(Error::config("exec: no program given"));
        };
        if program.is_empty() {
            return Err(Error::config("exec command: the program name is empty"));
        }
        if tokio::runtime::Handle::try_current().is_err() {
            // Checked before the child exists: the pipes would panic without a runtime.
            return Err(Error::ours(
                "exec: spawn must be called within a tokio runtime",
            ));
        }
        become_subreaper();
        let mut command = Command::new(program);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        crate::notify::remove_from_environment_of(&mut command);
        let mut child = command.spawn().map_err(|e| spawn_error(program, e))?;
        let pid = Pid::from_raw(child.id() as i32);
        let name = format!("{}[{}]", short_name(program), child.id());
        let pipes = match (child.stdout.take(), child.stderr.take()) {
            (Some(stdout), Some(stderr)) => pipe::Receiver::from_owned_fd(OwnedFd::from(stdout))
                .and_then(|stdout| {
                    pipe::Receiver::from_owned_fd(OwnedFd::from(stderr))
                        .map(|stderr| (stdout, stderr))
                })
                .map_err(|e| Error::io(Fault::Input, format!("{name}: cannot poll its output"), e)),
            _ => Err(Error::ours(format!("{name}: started without its pipes"))),
        };
        let (stdout, stderr) = match pipes {
            Ok(pipes) => pipes,
            Err(e) => {
                abandon(child, pid, &name);
                return Err(e);
            }
        };
        debug!("{name}: started {argv:?}");
        Ok(ExecSource {
            child: Some(child),
            pid,
            stderr: StderrLog::new(stderr),
            name,
            stdout,
            stdout_closed: false,
            leader: Leader::Running,
            started: Instant::now(),
            finished: false,
        })
    }

    /// Reads the child's stdout into `buf` (which must not be empty); `Ok(0)` when the child
    /// closed its stdout, or when it has exited and its stdout has been silent since: the exit is
    /// looked for after [`EXIT_CHECK`] without data, and the end declared [`EXIT_LINGER`] later (a
    /// process it left behind may keep the pipe open). Then call [`ExecSource::wait`].
    ///
    /// While it waits for stdout it forwards the child's stderr to the log (see the module
    /// documentation). Cancel-safe.
    pub async fn read(&mut self, buf: &mut [u8]) -> Result<usize> {
        if self.stdout_closed {
            return Ok(0);
        }
        let mut check_at = Instant::now() + EXIT_CHECK;
        let mut exit_seen = false;
        loop {
            // Stderr first if the reactor has seen it readable (no system call if not), bounded so
            // that it cannot starve stdout.
            self.stderr.drain(&self.name, STDERR_BUDGET);
            match super::read_pipe(&self.stdout, buf) {
                Ok(0) => {
                    self.stdout_closed = true;
                    return Ok(0);
                }
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(Error::io(
                        Fault::Input,
                        format!("cannot read the output of {}", self.name),
                        e,
                    ))
                }
            }
            // Nothing on stdout for now: wait for it, for stderr, or for the time to look whether
            // the child is still there.
            let woke = tokio::select! {
                biased;
                ready = self.stdout.readable() => Woke::Stdout(ready),
                () = self.stderr.readable() => Woke::Stderr,
                () = tokio::time::sleep_until(check_at) => Woke::Timer,
            };
            match woke {
                Woke::Stdout(ready) => ready.map_err(|e| {
                    Error::io(
                        Fault::Input,
                        format!("cannot poll the output of {}", self.name),
                        e,
                    )
                })?,
                // Drained at the top of the loop. Yielding keeps a child that floods stderr from
                // holding the (single-threaded) runtime.
                Woke::Stderr => tokio::task::yield_now().await,
                Woke::Timer if exit_seen => {
                    debug!(
                        "{}: exited, and its stdout is held open by another process: end of input",
                        self.name
                    );
                    self.stdout_closed = true;
                    return Ok(0);
                }
                Woke::Timer => {
                    if self.leader_has_exited() {
                        exit_seen = true;
                        check_at = Instant::now() + EXIT_LINGER;
                    } else {
                        check_at = Instant::now() + EXIT_CHECK;
                    }
                }
            }
        }
    }

    /// `program[pid]`, for logs. The program is the last component of `argv[0]`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The child's pid, which is also its process group id.
    pub fn pid(&self) -> u32 {
        self.pid.as_raw() as u32
    }

    /// Stops the child: SIGTERM to its process group, then SIGKILL after `grace` to whatever is left
    /// of the group; reaps it and the processes it left behind in its group. Returns how the child
    /// ended, for the log.
    ///
    /// Takes at most `grace` + [`KILL_WAIT`] + 250 ms (for the last stderr lines). A child that
    /// survives SIGKILL that long is handed to a reaper thread (`reaped: false` in the report), so
    /// no zombie is left.
    pub async fn stop(mut self, grace: Duration) -> ExitReport {
        self.finish(Duration::ZERO, grace).await
    }

    /// After [`ExecSource::read`] returned 0: waits up to `limit` for the child to exit by itself,
    /// then stops what is left of its process group as [`ExecSource::stop`] with a grace of `limit`
    /// would: the child if it is still running, or the processes it left behind in its group as
    /// soon as it has exited. Reports how the child ended. Takes at most 2 × `limit` +
    /// [`KILL_WAIT`] + 250 ms.
    ///
    /// If the child still writes to stdout, that is read and discarded meanwhile.
    pub async fn wait(mut self, limit: Duration) -> ExitReport {
        self.finish(limit, limit).await
    }

    async fn finish(&mut self, natural: Duration, grace: Duration) -> ExitReport {
        let mut sent = None;
        self.settle(natural, false).await;
        if !self.group_gone() {
            for (signal, wait) in [(Signal::SIGTERM, grace), (Signal::SIGKILL, KILL_WAIT)] {
                sent = Some(signal);
                self.signal_group(signal);
                if self.settle(wait, true).await {
                    break;
                }
            }
        }
        self.last_of_stderr().await;
        let report = self.report(sent);
        if !self.group_gone() {
            // Stuck in the kernel (state D): a thread waits for it.
            if let Some(child) = self.child.take() {
                reap_in_background(child, self.pid, self.name.clone());
            }
        }
        self.finished = true;
        report
    }

    /// Polls until the child has been reaped (and, if `group`, its process group is empty), or
    /// `limit` has passed. Meanwhile discards stdout and logs stderr.
    async fn settle(&mut self, limit: Duration, group: bool) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            self.discard_stdout();
            self.stderr.drain(&self.name, STDERR_BUDGET);
            let done = if group {
                self.group_gone()
            } else {
                self.reap_leader()
            };
            let now = Instant::now();
            if done || now >= deadline {
                return done;
            }
            tokio::time::sleep(POLL_INTERVAL.min(deadline - now)).await;
        }
    }

    /// Whether the child has been reaped and no process is left in its group (reaping the ones
    /// that were reparented to us).
    fn group_gone(&mut self) -> bool {
        if !self.reap_leader() {
            return false;
        }
        // Members left behind were reparented to us (we are a subreaper): reap those that died.
        // Only after the leader is reaped, so this never reaps the leader behind `Child`'s back.
        loop {
            let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG;
            match waitid(Id::PGid(self.pid), flags) {
                Ok(WaitStatus::StillAlive) => break,
                Ok(status) => debug!("{}: reaped {status:?} from its group", self.name),
                Err(Errno::EINTR) => {}
                Err(_) => break, // ECHILD: no child of ours is left in the group
            }
        }
        // Members that are not our children (if we could not become a subreaper).
        match killpg(self.pid, None) {
            Err(Errno::ESRCH) => true,
            Ok(()) => false,
            Err(e) => {
                debug!("{}: cannot probe its process group: {e}", self.name);
                false
            }
        }
    }

    /// Reaps the child if it has exited; whether it has been reaped.
    fn reap_leader(&mut self) -> bool {
        if matches!(self.leader, Leader::Reaped(..) | Leader::Lost(_)) {
            return true;
        }
        let Some(child) = self.child.as_mut() else {
            return false;
        };
        match child.try_wait() {
            Ok(Some(status)) => {
                self.leader = Leader::Reaped(status, Instant::now());
                true
            }
            Ok(None) => false,
            Err(e) => {
                warn!("{}: cannot wait for it: {e}", self.name);
                self.leader = Leader::Lost(Instant::now());
                true
            }
        }
    }

    /// Whether the child has exited, without reaping it (so its pid, the group id, stays ours).
    fn leader_has_exited(&mut self) -> bool {
        if self.leader != Leader::Running {
            return true;
        }
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        match waitid(Id::Pid(self.pid), flags) {
            Ok(WaitStatus::StillAlive) | Err(Errno::EINTR) => false,
            Ok(_) => {
                self.leader = Leader::Exited;
                true
            }
            Err(e) => {
                debug!("{}: cannot look whether it exited: {e}", self.name);
                false
            }
        }
    }

    /// Sends `signal` to the child's process group, and to the child itself in case it left the
    /// group (it has not been reaped, so its pid is still ours).
    fn signal_group(&self, signal: Signal) {
        debug!(
            "{}: sending {} to its process group",
            self.name,
            signal.as_str()
        );
        match killpg(self.pid, signal) {
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(e) => warn!(
                "{}: cannot send {signal} to its process group: {e}",
                self.name
            ),
        }
        if matches!(self.leader, Leader::Running | Leader::Exited) {
            let _ = kill(self.pid, signal);
        }
    }

    /// Reads and throws away what the child has written to stdout, so it does not block on a full
    /// pipe while it is being stopped.
    fn discard_stdout(&mut self) {
        let mut sink = [0u8; 8192];
        let mut discarded = 0;
        while !self.stdout_closed && discarded < DISCARD_BUDGET {
            match self.stdout.try_read(&mut sink) {
                Ok(0) => self.stdout_closed = true,
                Ok(n) => discarded += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
    }

    /// Logs what is left on stderr once the group is gone, waiting a little for it to arrive.
    async fn last_of_stderr(&mut self) {
        let deadline = Instant::now() + FINAL_STDERR_WAIT;
        loop {
            self.stderr.drain(&self.name, usize::MAX);
            if self.stderr.pipe.is_none() {
                break;
            }
            if tokio::time::timeout_at(deadline, self.stderr.readable())
                .await
                .is_err()
            {
                break;
            }
        }
        self.stderr.finish(&self.name);
    }

    fn report(&self, sent: Option<Signal>) -> ExitReport {
        let (status, ended) = match self.leader {
            Leader::Reaped(status, at) => (Some(status), at),
            Leader::Lost(at) => (None, at),
            Leader::Running | Leader::Exited => (None, Instant::now()),
        };
        ExitReport {
            code: status.and_then(|s| s.code()),
            signal: status.and_then(|s| s.signal()),
            core_dumped: status.is_some_and(|s| s.core_dumped()),
            sent: sent.map(|s| s as i32),
            reaped: !matches!(self.leader, Leader::Running | Leader::Exited),
            ran_for: ended.saturating_duration_since(self.started),
        }
    }
}

/// What woke [`ExecSource::read`].
enum Woke {
    Stdout(io::Result<()>),
    Stderr,
    Timer,
}

impl Drop for ExecSource {
    /// Best effort, without blocking: SIGKILL to the process group, then reaps the child if it is
    /// already dead, or else hands it to a reaper thread (if that thread cannot be started, the
    /// child is left a zombie; that is logged). Unread stderr lines are lost.
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        self.signal_group(Signal::SIGKILL);
        if self.group_gone() {
            return;
        }
        // The child, or a process it left in its group (reparented to us), is still dying.
        if let Some(child) = self.child.take() {
            reap_in_background(child, self.pid, self.name.clone());
        }
    }
}

/// How a child ended, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitReport {
    /// Its exit code, if it exited.
    pub code: Option<i32>,
    /// The signal that ended it, if one did.
    pub signal: Option<i32>,
    pub core_dumped: bool,
    /// The last signal v4l2rtmp sent to its process group (SIGTERM or SIGKILL), if it had to.
    pub sent: Option<i32>,
    /// False if it had not died yet when `stop` or `wait` gave up waiting: a thread reaps it later.
    /// Then `code` and `signal` are `None`.
    pub reaped: bool,
    /// From the spawn to when it was seen to have ended.
    pub ran_for: Duration,
}

impl ExitReport {
    /// Whether it exited by itself with code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

impl std::fmt::Display for ExitReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = |signal: i32| Signal::try_from(signal).map_or("unknown signal", |s| s.as_str());
        if !self.reaped {
            write!(f, "still running after SIGKILL (stuck in the kernel?); it will be reaped when it dies")?;
            return Ok(());
        }
        match (self.code, self.signal) {
            (Some(code), _) => write!(f, "exited with code {code}")?,
            (None, Some(signal)) => {
                write!(f, "killed by {} ({signal})", name(signal))?;
                if self.core_dumped {
                    write!(f, ", core dumped")?;
                }
                if self.sent == Some(signal) {
                    write!(f, " from v4l2rtmp")?;
                }
            }
            (None, None) => write!(f, "ended (how is unknown)")?,
        }
        write!(f, " after {:.1} s", self.ran_for.as_secs_f64())?;
        match self.sent {
            Some(sent) if self.signal != Some(sent) => {
                write!(f, "; v4l2rtmp sent {} to its process group", name(sent))
            }
            _ => Ok(()),
        }
    }
}

/// The child's stderr, split into lines and logged within limits.
struct StderrLog {
    /// `None` after end of file.
    pipe: Option<pipe::Receiver>,
    lines: Lines,
    budget: LineBudget,
}

impl StderrLog {
    fn new(pipe: pipe::Receiver) -> StderrLog {
        StderrLog {
            pipe: Some(pipe),
            lines: Lines::new(),
            budget: LineBudget::new(std::time::Instant::now()),
        }
    }

    /// Waits until stderr is readable; never, once it is closed.
    async fn readable(&self) {
        match &self.pipe {
            Some(pipe) => {
                if pipe.readable().await.is_err() {
                    pending::<()>().await
                }
            }
            None => pending().await,
        }
    }

    /// Reads what stderr has now, up to about `limit` bytes, and logs the complete lines.
    fn drain(&mut self, name: &str, limit: usize) {
        let StderrLog {
            pipe,
            lines,
            budget,
        } = self;
        let Some(reader) = pipe.as_ref() else {
            return;
        };
        let mut chunk = [0u8; 4096];
        let mut taken = 0usize;
        while taken < limit {
            match reader.try_read(&mut chunk) {
                Ok(0) => {
                    *pipe = None;
                    break;
                }
                Ok(n) => {
                    taken += n;
                    lines.push(&chunk[..n], &mut |line, dropped| {
                        log_line(name, budget, line, dropped)
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    warn!("{name}: cannot read its stderr ({e}); no longer logging it");
                    *pipe = None;
                    break;
                }
            }
        }
    }

    /// Logs the unfinished last line and how many lines were not logged.
    fn finish(&mut self, name: &str) {
        let StderrLog { lines, budget, .. } = self;
        lines.finish(&mut |line, dropped| log_line(name, budget, line, dropped));
        let skipped = std::mem::take(&mut budget.skipped);
        if skipped > 0 {
            info!("{name}: {skipped} more lines on stderr were not logged");
        }
    }
}

fn log_line(name: &str, budget: &mut LineBudget, line: &[u8], dropped: u64) {
    let text = String::from_utf8_lossy(line);
    let text = text.trim_end();
    if text.is_empty() && dropped == 0 {
        return;
    }
    if let Some(skipped) = budget.admit(std::time::Instant::now()) {
        info!("{name}: {text}{}", Notes { dropped, skipped });
    }
}

/// The remarks after a logged stderr line.
struct Notes {
    dropped: u64,
    skipped: u64,
}

impl std::fmt::Display for Notes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.dropped > 0 {
            write!(f, " [line cut: {} more bytes dropped]", self.dropped)?;
        }
        if self.skipped > 0 {
            write!(f, " [{} earlier lines not logged]", self.skipped)?;
        }
        Ok(())
    }
}

/// Splits a byte stream into lines at `\n` or `\r`, keeping at most [`STDERR_LINE_MAX`] bytes of
/// each and counting the rest.
struct Lines {
    line: Vec<u8>,
    dropped: u64,
}

impl Lines {
    fn new() -> Lines {
        Lines {
            line: Vec::with_capacity(STDERR_LINE_MAX),
            dropped: 0,
        }
    }

    /// Adds `bytes`; calls `emit(line, bytes dropped from it)` for each line they complete.
    fn push(&mut self, mut bytes: &[u8], emit: &mut dyn FnMut(&[u8], u64)) {
        while let Some(end) = bytes.iter().position(|&b| b == b'\n' || b == b'\r') {
            self.append(&bytes[..end]);
            self.flush(emit);
            bytes = &bytes[end + 1..];
        }
        self.append(bytes);
    }

    /// Emits the unfinished line, if any.
    fn finish(&mut self, emit: &mut dyn FnMut(&[u8], u64)) {
        if !self.line.is_empty() || self.dropped > 0 {
            self.flush(emit);
        }
    }

    fn flush(&mut self, emit: &mut dyn FnMut(&[u8], u64)) {
        emit(&self.line, self.dropped);
        self.line.clear();
        self.dropped = 0;
    }

    fn append(&mut self, bytes: &[u8]) {
        let room = STDERR_LINE_MAX - self.line.len();
        let kept = room.min(bytes.len());
        self.line.extend_from_slice(&bytes[..kept]);
        self.dropped = self.dropped.saturating_add((bytes.len() - kept) as u64);
    }
}

/// A token bucket for log lines: [`STDERR_LINE_BURST`] at once, then one per
/// [`STDERR_LINE_PERIOD`].
struct LineBudget {
    tokens: u32,
    refilled_at: std::time::Instant,
    /// Lines refused since the last one admitted.
    skipped: u64,
}

impl LineBudget {
    fn new(now: std::time::Instant) -> LineBudget {
        LineBudget {
            tokens: STDERR_LINE_BURST,
            refilled_at: now,
            skipped: 0,
        }
    }

    /// Whether a line may be logged at `now`: `Some(lines skipped before it)`, or `None` (counted).
    fn admit(&mut self, now: std::time::Instant) -> Option<u64> {
        let periods = now.saturating_duration_since(self.refilled_at).as_nanos()
            / STDERR_LINE_PERIOD.as_nanos();
        if periods > 0 {
            let room = u128::from(STDERR_LINE_BURST - self.tokens);
            if periods >= room {
                self.tokens = STDERR_LINE_BURST;
                self.refilled_at = now;
            } else {
                // periods < room <= STDERR_LINE_BURST: fits in u32.
                self.tokens += periods as u32;
                self.refilled_at += STDERR_LINE_PERIOD * periods as u32;
            }
        }
        if self.tokens == 0 {
            self.skipped = self.skipped.saturating_add(1);
            return None;
        }
        self.tokens -= 1;
        Some(std::mem::take(&mut self.skipped))
    }
}

fn unbalanced(quote: char, column: usize) -> Error {
    Error::config(format!(
        "exec command: the {quote} at character {column} is never closed"
    ))
}

fn needs_shell(c: char, column: usize) -> Error {
    Error::config(format!(
        "exec command: {c:?} at character {column} needs a shell, and v4l2rtmp runs the program \
         directly (no pipes, redirections, variables or command substitution); quote or escape it \
         if it belongs in an argument, or write exec:sh -c '...'"
    ))
}

fn spawn_error(program: &str, e: io::Error) -> Error {
    let errno = e.raw_os_error().map(Errno::from_raw);
    let what = match errno {
        Some(Errno::ENOENT) if program.contains('/') => {
            "no such file (or its interpreter is missing)"
        }
        Some(Errno::ENOENT) => "no such program in PATH",
        Some(Errno::EACCES) => "permission denied (is it executable?)",
        Some(Errno::ENOEXEC) => "not an executable for this machine",
        Some(Errno::ENOTDIR | Errno::ELOOP | Errno::ENAMETOOLONG | Errno::EISDIR) => "bad path",
        _ if e.kind() == io::ErrorKind::InvalidInput => "invalid command",
        _ => return Error::io(Fault::Input, format!("cannot start {program}"), e),
    };
    Error::io(Fault::Input, format!("cannot run {program}: {what}"), e)
}

fn short_name(program: &str) -> &str {
    Path::new(program)
        .file_name()
        .and_then(|name| name.to_str())
        .unwrap_or(program)
}

/// Makes this process a child subreaper once, so processes orphaned in a child's group are
/// reparented to us and reaped by `group_gone`.
fn become_subreaper() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
            debug!("cannot become a child subreaper ({e}): orphans are left to init");
        }
    });
}

/// Kills a child that could not be set up, and reaps it.
fn abandon(mut child: Child, pid: Pid, name: &str) {
    let _ = killpg(pid, Signal::SIGKILL);
    if !matches!(child.try_wait(), Ok(Some(_))) {
        reap_in_background(child, pid, name.to_string());
    }
}

/// Waits for `child` on a thread of its own, then reaps what its process group left behind.
fn reap_in_background(mut child: Child, pid: Pid, name: String) {
    let spawned = std::thread::Builder::new()
        .name("v4l2rtmp-reaper".into())
        .stack_size(128 * 1024)
        .spawn(move || {
            match child.wait() {
                Ok(status) => debug!("{name}: reaped at last ({status})"),
                Err(e) => warn!("{name}: cannot wait for it: {e}"),
            }
            while matches!(
                waitid(Id::PGid(pid), WaitPidFlag::WEXITED),
                Ok(_) | Err(Errno::EINTR)
            ) {}
        });
    if let Err(e) = spawned {
        warn!("cannot start a thread to reap a child ({e}): it will be left a zombie");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant as StdInstant;

    fn words(text: &str) -> Vec<String> {
        ExecSource::parse_command(text).unwrap()
    }

    #[test]
    fn parses_like_a_shell() {
        assert_eq!(words("a b\t c\n"), ["a", "b", "c"]);
        assert_eq!(words("a 'b c' \"d e\""), ["a", "b c", "d e"]);
        assert_eq!(words("a '' \"\""), ["a", "", ""]);
        assert_eq!(
            words(r#"a b\ c \'x\' "q\"q" "\$\\\`\n""#),
            ["a", "b c", "'x'", "q\"q", "$\\`\\n"]
        );
        assert_eq!(words("a 'it'\\''s'"), ["a", "it's"]);
        assert_eq!(words("a\\\nb"), ["ab"]);
        assert_eq!(words("a 'x|y' \"<>;&()\" \\|"), ["a", "x|y", "<>;&()", "|"]);
        assert_eq!(words("a * ~ #x"), ["a", "*", "~", "#x"]);
        assert_eq!(words("prög 'ünï'"), ["prög", "ünï"]);
    }

    #[test]
    fn rejects_what_needs_a_shell() {
        for text in [
            "",
            "   ",
            "a 'b",
            "a \"b",
            "a \\",
            "a | b",
            "a > f",
            "a $HOME",
            "a \"$HOME\"",
            "a `b`",
            "a; b",
            "a & b",
            "'' b",
            "a (b)",
        ] {
            let err = ExecSource::parse_command(text).unwrap_err();
            assert_eq!(err.fault(), Fault::Config, "{text:?}: {err}");
        }
        let err = ExecSource::parse_command("cam -o - | ffmpeg").unwrap_err();
        assert!(err.message().contains("'|' at character 10"), "{err}");
        assert!(err.message().contains("sh -c"), "{err}");
        let err = ExecSource::parse_command("cam 'oops").unwrap_err();
        assert!(err.message().contains("character 5"), "{err}");
    }

    fn split(chunks: &[&[u8]]) -> Vec<(Vec<u8>, u64)> {
        let mut lines = Lines::new();
        let mut out = Vec::new();
        for chunk in chunks {
            lines.push(chunk, &mut |line, dropped| {
                out.push((line.to_vec(), dropped))
            });
        }
        lines.finish(&mut |line, dropped| out.push((line.to_vec(), dropped)));
        out
    }

    #[test]
    fn splits_lines_across_chunks_and_caps_them() {
        let out = split(&[b"ab", b"c\nde\r\n", b"f"]);
        let expected: Vec<(Vec<u8>, u64)> = vec![
            (b"abc".to_vec(), 0),
            (b"de".to_vec(), 0),
            (Vec::new(), 0),
            (b"f".to_vec(), 0),
        ];
        assert_eq!(out, expected);
        let long = vec![b'x'; STDERR_LINE_MAX + 10];
        let out = split(&[&long, &long, b"\nok"]);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].0.len(), STDERR_LINE_MAX);
        assert_eq!(out[0].1, (STDERR_LINE_MAX + 20) as u64);
        assert_eq!(out[1], (b"ok".to_vec(), 0));
        assert!(split(&[]).is_empty());
    }

    #[test]
    fn line_budget_bursts_then_refills() {
        let start = StdInstant::now();
        let mut budget = LineBudget::new(start);
        for _ in 0..STDERR_LINE_BURST {
            assert_eq!(budget.admit(start), Some(0));
        }
        assert_eq!(budget.admit(start), None);
        assert_eq!(budget.admit(start), None);
        let later = start + STDERR_LINE_PERIOD;
        assert_eq!(budget.admit(later), Some(2));
        assert_eq!(budget.admit(later), None);
        // A long quiet time refills the burst, and no more.
        let much_later = later + STDERR_LINE_PERIOD * 10_000;
        for _ in 0..STDERR_LINE_BURST {
            assert!(budget.admit(much_later).is_some());
        }
        assert_eq!(budget.admit(much_later), None);
    }

    #[test]
    fn reports_read_well() {
        let report = ExitReport {
            code: None,
            signal: Some(15),
            core_dumped: false,
            sent: Some(15),
            reaped: true,
            ran_for: Duration::from_millis(1500),
        };
        assert_eq!(
            report.to_string(),
            "killed by SIGTERM (15) from v4l2rtmp after 1.5 s"
        );
        let report = ExitReport {
            code: Some(0),
            signal: None,
            sent: Some(9),
            ..report
        };
        assert_eq!(
            report.to_string(),
            "exited with code 0 after 1.5 s; v4l2rtmp sent SIGKILL to its process group"
        );
        let report = ExitReport {
            reaped: false,
            code: None,
            ..report
        };
        assert!(report
            .to_string()
            .starts_with("still running after SIGKILL"));
    }
}
