//! The exec: input through the library API: a child's stdout read byte for byte, its stderr
//! logged without blocking stdout, its whole process group stopped and reaped, and the pure parts
//! (command parsing, restart backoff). Uses only sh and coreutils.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

use v4l2rtmp::error::Fault;
use v4l2rtmp::source::exec::{ExecSource, ExitReport, STDERR_LINE_MAX};

/// No test may hang: every await on a child is bounded by this.
const LIMIT: Duration = Duration::from_secs(30);

// A logger that keeps every line, so tests can look for what the child wrote to stderr.
static LINES: Mutex<Vec<(log::Level, String)>> = Mutex::new(Vec::new());

struct Recorder;

impl log::Log for Recorder {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, record: &log::Record) {
        LINES
            .lock()
            .unwrap()
            .push((record.level(), record.args().to_string()));
    }
    fn flush(&self) {}
}

fn record_log() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        log::set_logger(&Recorder).unwrap();
        log::set_max_level(log::LevelFilter::Debug);
    });
}

/// The lines logged at info level or above that contain `needle`.
fn logged(needle: &str) -> Vec<String> {
    LINES
        .lock()
        .unwrap()
        .iter()
        .filter(|(level, line)| *level <= log::Level::Info && line.contains(needle))
        .map(|(_, line)| line.clone())
        .collect()
}

/// A string no other test (or run) uses, to find this test's lines in the shared log.
fn unique(tag: &str) -> String {
    static COUNT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{tag}-{}-{}",
        std::process::id(),
        COUNT.fetch_add(1, Ordering::Relaxed)
    )
}

fn spawn(command: &str) -> ExecSource {
    let argv = ExecSource::parse_command(command).unwrap();
    ExecSource::spawn(&argv).unwrap()
}

/// Reads until end of input (bounded in time), with a buffer of `chunk` bytes.
async fn read_all(source: &mut ExecSource, chunk: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; chunk];
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let n = tokio::time::timeout_at(deadline, source.read(&mut buf))
            .await
            .expect("the child's stdout should end")
            .unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&buf[..n]);
    }
}

/// Reads until `needle` has appeared on stdout.
async fn read_until(source: &mut ExecSource, needle: &[u8]) {
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    while !seen.windows(needle.len()).any(|w| w == needle) {
        let n = tokio::time::timeout(LIMIT, source.read(&mut buf))
            .await
            .expect("the child should write")
            .unwrap();
        assert!(n > 0, "stdout ended before {needle:?}: {seen:?}");
        seen.extend_from_slice(&buf[..n]);
    }
}

/// The processes whose process group is `pgid`, with their state (from /proc/PID/stat).
fn group_members(pgid: u32) -> Vec<(u32, char)> {
    let mut members = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue; // gone meanwhile
        };
        // pid (comm) state ppid pgrp ...: comm may hold anything, so parse after the last ')'.
        let Some(rest) = stat.rfind(')').map(|at| &stat[at + 1..]) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.get(2).and_then(|f| f.parse::<u32>().ok()) == Some(pgid) {
            members.push((pid, fields[0].chars().next().unwrap_or('?')));
        }
    }
    members
}

/// A deterministic pseudo-random byte stream.
fn pattern(len: usize) -> Vec<u8> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

fn assert_exited(report: &ExitReport, code: i32) {
    assert_eq!(report.code, Some(code), "{report}");
    assert_eq!(report.signal, None, "{report}");
    assert_eq!(report.sent, None, "{report}");
    assert!(report.reaped, "{report}");
}

#[tokio::test]
async fn stdout_is_read_byte_for_byte() {
    record_log();
    let mut source = spawn(r#"sh -c 'printf "hello\n"; head -c 100000 /dev/zero'"#);
    assert!(source.name().starts_with("sh["), "{}", source.name());
    assert!(source.name().contains(&source.pid().to_string()));
    let out = read_all(&mut source, 4096).await;
    let mut expected = b"hello\n".to_vec();
    expected.resize(6 + 100_000, 0);
    assert!(out == expected, "{} bytes read", out.len());
    let mut buf = [0u8; 16];
    assert_eq!(source.read(&mut buf).await.unwrap(), 0, "still the end");
    let report = source.wait(LIMIT).await;
    assert_exited(&report, 0);
    assert!(report.success());
    assert!(
        report.to_string().starts_with("exited with code 0"),
        "{report}"
    );
}

#[tokio::test]
async fn a_file_is_read_through_cat_unchanged() {
    record_log();
    let data = pattern(1 << 20);
    let path = std::env::temp_dir().join(format!("{}.h264", unique("exec-cat")));
    std::fs::write(&path, &data).unwrap();
    let mut source = spawn(&format!("cat '{}'", path.display()));
    let out = read_all(&mut source, 7001).await;
    std::fs::remove_file(&path).unwrap();
    assert!(out == data, "{} bytes read of {}", out.len(), data.len());
    assert_exited(&source.wait(LIMIT).await, 0);
}

#[tokio::test]
async fn stderr_is_logged_and_does_not_block_stdout() {
    record_log();
    let tag = unique("spam");
    // 20000 stderr lines (far more than a pipe holds) before any stdout, then stdout and stderr
    // interleaved: if stderr were not drained, the child would block and the read time out.
    let command = format!(
        "sh -c 'yes {tag} | head -n 20000 >&2; i=0; while [ $i -lt 300 ]; do \
         head -c 1000 /dev/zero; echo {tag}-late-$i >&2; i=$((i+1)); done; echo {tag}-last >&2'"
    );
    let mut source = spawn(&command);
    let name = source.name().to_string();
    let out = read_all(&mut source, 4096).await;
    assert_eq!(out.len(), 300_000);
    assert!(out.iter().all(|&b| b == 0));
    let report = source.wait(LIMIT).await;
    assert_exited(&report, 0);
    let lines = logged(&tag);
    let first = format!("{name}: {tag}");
    assert_eq!(
        lines.first(),
        Some(&first),
        "lines are `program[pid]: text`"
    );
    // A burst is logged, the rest counted and said so; nowhere near 20300 lines.
    assert!(
        lines.len() >= 50 && lines.len() < 1000,
        "{} lines",
        lines.len()
    );
    let counted = lines.iter().any(|l| l.contains("earlier lines not logged"))
        || logged(&format!("{name}: "))
            .iter()
            .any(|l| l.contains("more lines on stderr were not logged"));
    assert!(counted, "the lines not logged are counted");
}

#[tokio::test]
async fn a_huge_stderr_line_is_cut_not_kept() {
    record_log();
    let tag = unique("long");
    let mut source = spawn(&format!(
        r#"sh -c 'printf {tag} >&2; head -c 5000000 /dev/zero | tr "\0" x >&2; echo >&2; printf payload'"#
    ));
    let out = read_all(&mut source, 4096).await;
    assert_eq!(out, b"payload");
    assert_exited(&source.wait(LIMIT).await, 0);
    let lines = logged(&tag);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let dropped = tag.len() + 5_000_000 - STDERR_LINE_MAX;
    assert!(
        lines[0].contains(&format!("[line cut: {dropped} more bytes dropped]")),
        "{}",
        &lines[0][lines[0].len() - 80..]
    );
    assert!(lines[0].len() < STDERR_LINE_MAX + 200);
}

#[tokio::test]
async fn stop_ends_the_whole_process_group() {
    record_log();
    let mut source = spawn("sh -c 'sleep 1000 & echo started; sleep 1000'");
    let pgid = source.pid();
    read_until(&mut source, b"started").await;
    let before = group_members(pgid);
    assert!(before.len() >= 2, "sh and its sleeps: {before:?}");
    let grace = Duration::from_secs(3);
    let start = Instant::now();
    let report = source.stop(grace).await;
    let took = start.elapsed();
    assert!(took < grace + Duration::from_secs(1), "took {took:?}");
    assert_eq!(report.signal, Some(15), "{report}");
    assert_eq!(report.sent, Some(15), "{report}");
    assert!(report.reaped);
    assert!(report.to_string().contains("SIGTERM"), "{report}");
    // Not even a zombie: the stray sleep was reparented to us and reaped.
    assert_eq!(group_members(pgid), [], "left in the group after stop");
}

#[tokio::test]
async fn stop_escalates_to_sigkill() {
    record_log();
    // The ignored SIGTERM is inherited by sleep too.
    let mut source = spawn("sh -c 'trap \"\" TERM; echo started; sleep 1000'");
    let pgid = source.pid();
    read_until(&mut source, b"started").await;
    let grace = Duration::from_millis(300);
    let start = Instant::now();
    let report = source.stop(grace).await;
    let took = start.elapsed();
    assert!(took >= grace, "took {took:?}");
    assert!(took < grace + Duration::from_millis(1500), "took {took:?}");
    assert_eq!(report.signal, Some(9), "{report}");
    assert_eq!(report.sent, Some(9), "{report}");
    assert_eq!(group_members(pgid), []);
}

#[tokio::test]
async fn stop_lets_a_child_exit_cleanly_on_sigterm() {
    record_log();
    // It fills its stdout pipe and keeps writing; on SIGTERM it says goodbye on stdout (read and
    // thrown away while stopping) and stderr, then exits 0.
    let tag = unique("bye");
    let mut source = spawn(&format!(
        r#"sh -c 'trap "echo bye; echo {tag} >&2; exit 0" TERM; echo started; while :; do head -c 65536 /dev/zero; done'"#
    ));
    read_until(&mut source, b"started").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let report = source.stop(Duration::from_secs(5)).await;
    assert_eq!(report.code, Some(0), "{report}");
    assert_eq!(report.sent, Some(15), "{report}");
    assert!(
        report.to_string().contains("exited with code 0"),
        "{report}"
    );
    assert_eq!(logged(&tag).len(), 1, "its last stderr line is logged");
}

#[tokio::test]
async fn a_cancelled_read_loses_nothing() {
    record_log();
    let mut source = spawn("sh -c 'sleep 0.3; printf abc; sleep 0.2; printf def'");
    let mut buf = [0u8; 16];
    let early = tokio::time::timeout(Duration::from_millis(50), source.read(&mut buf)).await;
    assert!(early.is_err(), "nothing to read yet");
    assert_eq!(read_all(&mut source, 2).await, b"abcdef");
    assert_exited(&source.wait(LIMIT).await, 0);
}

#[test]
fn spawn_outside_a_runtime_is_an_error_and_starts_nothing() {
    let marker = std::env::temp_dir().join(unique("no-runtime"));
    let argv = ["touch".to_string(), marker.display().to_string()];
    let err = ExecSource::spawn(&argv).err().unwrap();
    assert_eq!(err.fault(), Fault::Ours, "{err}");
    std::thread::sleep(Duration::from_millis(100));
    assert!(!marker.exists(), "the program must not have run");
}

#[tokio::test]
async fn a_child_that_leaves_a_process_holding_stdout_still_ends() {
    record_log();
    // The background sleep keeps stdout open after sh exits with 4.
    let mut source = spawn("sh -c 'sleep 1000 & printf data; exit 4'");
    let pgid = source.pid();
    let start = Instant::now();
    let out = read_all(&mut source, 64).await;
    assert_eq!(out, b"data");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    let report = source.wait(Duration::from_secs(2)).await;
    assert_eq!(report.code, Some(4), "{report}");
    assert_eq!(
        report.sent,
        Some(15),
        "the stray sleep was stopped: {report}"
    );
    assert!(report.to_string().contains("sent SIGTERM"), "{report}");
    assert_eq!(group_members(pgid), []);
}

#[tokio::test]
async fn exit_code_3_is_reported() {
    record_log();
    let mut source = spawn("sh -c 'exit 3'");
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(LIMIT, source.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 0);
    let report = source.wait(LIMIT).await;
    assert_exited(&report, 3);
    assert!(!report.success());
    assert!(
        report.to_string().starts_with("exited with code 3"),
        "{report}"
    );
}

#[tokio::test]
async fn the_child_gets_null_stdin_and_no_systemd_variables() {
    record_log();
    // Set for this test process only; the child must not see them.
    std::env::set_var("NOTIFY_SOCKET", "/run/systemd/notify");
    std::env::set_var("WATCHDOG_USEC", "1000000");
    std::env::set_var("WATCHDOG_PID", "1");
    let mut source = spawn(
        r#"sh -c 'cat; echo "n=${NOTIFY_SOCKET-unset} u=${WATCHDOG_USEC-unset} p=${WATCHDOG_PID-unset}"; echo "pg=$(cut -d" " -f5 /proc/$$/stat)"'"#,
    );
    let pid = source.pid();
    let out = String::from_utf8(read_all(&mut source, 256).await).unwrap();
    assert_eq!(
        out,
        format!("n=unset u=unset p=unset\npg={pid}\n"),
        "stdin at end of file, variables removed, its own process group"
    );
    assert_exited(&source.wait(LIMIT).await, 0);
}

#[tokio::test]
async fn dropping_the_source_kills_and_reaps_the_child() {
    record_log();
    let mut source = spawn("sh -c 'sleep 1000 & echo started; sleep 1000'");
    let pgid = source.pid();
    read_until(&mut source, b"started").await;
    drop(source);
    let start = Instant::now();
    while !group_members(pgid).is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            group_members(pgid)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_missing_program_is_an_input_error_that_names_it() {
    record_log();
    let argv = ExecSource::parse_command("v4l2rtmp-no-such-program --flag").unwrap();
    let err = ExecSource::spawn(&argv).err().unwrap();
    assert_eq!(err.fault(), Fault::Input, "{err}");
    assert!(err.message().contains("v4l2rtmp-no-such-program"), "{err}");
    let err = ExecSource::spawn(&["/nonexistent/dir/cam".to_string()])
        .err()
        .unwrap();
    assert_eq!(err.fault(), Fault::Input, "{err}");
    assert!(err.to_string().contains("/nonexistent/dir/cam"), "{err}");
    // Exists, but is not executable.
    let path = std::env::temp_dir().join(unique("not-executable"));
    std::fs::write(&path, "#!/bin/sh\n").unwrap();
    let err = ExecSource::spawn(&[path.display().to_string()])
        .err()
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(err.fault(), Fault::Input, "{err}");
    assert!(err.message().contains("permission denied"), "{err}");
    assert_eq!(ExecSource::spawn(&[]).err().unwrap().fault(), Fault::Config);
}

fn words(text: &str) -> Vec<String> {
    ExecSource::parse_command(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

#[test]
fn commands_are_split_like_a_shell_would() {
    assert_eq!(
        words("rpicam-vid -t 0 --codec h264 --inline -o -"),
        [
            "rpicam-vid",
            "-t",
            "0",
            "--codec",
            "h264",
            "--inline",
            "-o",
            "-"
        ]
    );
    assert_eq!(words("  a\t\tb \n c  "), ["a", "b", "c"]);
    assert_eq!(
        words(r#"sh -c 'printf "%s\n" $x | cat'"#),
        ["sh", "-c", r#"printf "%s\n" $x | cat"#]
    );
    assert_eq!(
        words(r#"a "b 'c' d" 'e "f" g'"#),
        ["a", "b 'c' d", r#"e "f" g"#]
    );
    assert_eq!(
        words(r#"a "x\"y" "x\\y" "x\y" "\$HOME""#),
        ["a", "x\"y", "x\\y", "x\\y", "$HOME"]
    );
    assert_eq!(words(r"a b\ c \' \\ \|"), ["a", "b c", "'", "\\", "|"]);
    assert_eq!(words("a '' \"\" x''y"), ["a", "", "", "xy"]);
    assert_eq!(words("a 'b\nc'"), ["a", "b\nc"]);
    assert_eq!(words("a \\\n b"), ["a", "b"]);
    assert_eq!(
        words("ffmpeg -i http://cam/x?a=1 *.h264 ~ #"),
        ["ffmpeg", "-i", "http://cam/x?a=1", "*.h264", "~", "#"]
    );
}

#[test]
fn commands_that_need_a_shell_or_are_broken_are_refused() {
    let refused = |text: &str| {
        let err = ExecSource::parse_command(text).expect_err(text);
        assert_eq!(err.fault(), Fault::Config, "{text:?}: {err}");
        err.message().to_string()
    };
    assert!(refused("").contains("needs a command"));
    assert!(refused(" \t\n").contains("needs a command"));
    assert!(refused("cam 'x").contains("never closed"));
    assert!(refused("cam \"x").contains("never closed"));
    assert!(refused("cam 'x\"").contains("never closed"));
    assert!(refused("cam x\\").contains("backslash"));
    assert!(refused("'' x").contains("empty"));
    for text in [
        "cam | ffmpeg",
        "cam > out",
        "cam < in",
        "cam & other",
        "cam; other",
        "cam $OPTIONS",
        "cam \"$OPTIONS\"",
        "cam `opts`",
        "cam \"`opts`\"",
        "cam (x)",
        "cam x&&y",
    ] {
        assert!(refused(text).contains("exec:sh -c"), "{text:?}");
    }
}
