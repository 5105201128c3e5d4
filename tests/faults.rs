//! Fault tests: v4l2rtmp publishes a live, real-time source (a FIFO written at 30 fps by a test
//! thread, as a camera program would) to a real nginx-rtmp on 127.0.0.1, while the tests kill and
//! restart the server, cut, black-hole, stall, throttle and reset the link (through
//! [`common::proxy::Proxy`]), refuse the key, and stall the source. Each test checks that the
//! stream recovers by itself, how fast, that what the server records decodes from its first frame,
//! and that memory stays bounded; each prints the figures it measures (`--nocapture`).
//!
//! The client runs with `RUST_LOG=debug` so that repeated failures (logged at debug level) can be
//! counted; its stderr lines are echoed with the test's name and the time since it started.

mod common;

use std::fs;
use std::io::{self, BufRead, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::proxy::{Mode, Proxy};
use common::*;
use v4l2rtmp::media::annexb::AnnexBReader;
use v4l2rtmp::rtmp::chunk::ChunkReader;

const KEY: &str = "cam";

// ---------------------------------------------------------------------------------------------
// The live source: access units of a clip, written to a FIFO in real time
// ---------------------------------------------------------------------------------------------

/// 10 s of 640x360 at 30 fps and about 1 Mbit/s, a keyframe every second, SPS and PPS before
/// every keyframe (as cameras send them), so the clip can be looped and the source restarted.
fn live_clip() -> PathBuf {
    generated_clip(
        "testsrc2-360p30-10s-1M-repeat-headers",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=640x360:rate=30",
            "-t",
            "10",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-bf",
            "0",
            "-g",
            "30",
            "-b:v",
            "1M",
            "-maxrate",
            "1M",
            "-bufsize",
            "1M",
            "-x264-params",
            "repeat-headers=1",
            "-pix_fmt",
            "yuv420p",
        ],
    )
}

/// One access unit, with its start code, as the camera writes it.
struct Unit {
    bytes: Vec<u8>,
    keyframe: bool,
}

/// The first `limit` access units of an Annex-B clip, split with the crate's own reader.
fn access_units(path: &Path, limit: usize) -> Arc<Vec<Unit>> {
    let data = fs::read(path).unwrap();
    let mut reader = AnnexBReader::new(8 << 20);
    let mut units = Vec::new();
    let mut fed = 0;
    let mut finished = false;
    while units.len() < limit {
        match reader.next_access_unit() {
            Some(au) => {
                if au.has_vcl() {
                    let mut bytes = vec![0, 0, 0, 1];
                    bytes.extend_from_slice(au.data);
                    units.push(Unit {
                        bytes,
                        keyframe: au.is_idr(),
                    });
                }
                continue;
            }
            None if finished => break,
            None => {}
        }
        if fed == data.len() {
            reader.finish();
            finished = true;
            continue;
        }
        let buf = reader.read_buf().unwrap();
        let n = buf.len().min(data.len() - fed).min(1 << 20);
        buf[..n].copy_from_slice(&data[fed..fed + n]);
        reader.commit(n);
        fed += n;
    }
    assert!(units[0].keyframe, "{} starts with a keyframe", path.display());
    Arc::new(units)
}

struct SourceCtl {
    paused: AtomicBool,
    stop: AtomicBool,
    frames: AtomicU64,
}

/// A FIFO written by a thread at 30 fps, looping the clip; it can pause (a stalled camera) and
/// resume from the next keyframe.
struct LiveSource {
    path: PathBuf,
    ctl: Arc<SourceCtl>,
    thread: Option<JoinHandle<()>>,
}

/// O_NONBLOCK on Linux (x86, ARM, RISC-V): opening the FIFO for writing fails with ENXIO until a
/// reader has it open, instead of blocking, so the writer thread can always be stopped.
const O_NONBLOCK: i32 = 0o4000;
const ENXIO: i32 = 6;

impl LiveSource {
    fn start(dir: &Path, units: Arc<Vec<Unit>>) -> LiveSource {
        let path = dir.join("camera.fifo");
        let status = Command::new("mkfifo").arg(&path).status().unwrap();
        assert!(status.success(), "mkfifo {}", path.display());
        let ctl = Arc::new(SourceCtl {
            paused: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            frames: AtomicU64::new(0),
        });
        let thread = {
            let ctl = ctl.clone();
            let path = path.clone();
            std::thread::spawn(move || write_paced(&path, &units, &ctl))
        };
        LiveSource {
            path,
            ctl,
            thread: Some(thread),
        }
    }

    fn path(&self) -> &str {
        self.path.to_str().unwrap()
    }

    fn pause(&self) {
        self.ctl.paused.store(true, Ordering::SeqCst);
    }

    fn resume(&self) {
        self.ctl.paused.store(false, Ordering::SeqCst);
    }

    fn frames(&self) -> u64 {
        self.ctl.frames.load(Ordering::SeqCst)
    }
}

impl Drop for LiveSource {
    fn drop(&mut self) {
        self.ctl.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn write_paced(path: &Path, units: &[Unit], ctl: &SourceCtl) {
    const FPS: f64 = 30.0;
    let mut file = loop {
        if ctl.stop.load(Ordering::SeqCst) {
            return;
        }
        match fs::OpenOptions::new()
            .write(true)
            .custom_flags(O_NONBLOCK)
            .open(path)
        {
            Ok(file) => break file,
            Err(e) if e.raw_os_error() == Some(ENXIO) => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(e) => panic!("open {} for writing: {e}", path.display()),
        }
    };
    let mut index = 0;
    let mut origin = Instant::now();
    let mut sent_since_origin = 0u64;
    let mut was_paused = false;
    while !ctl.stop.load(Ordering::SeqCst) {
        if ctl.paused.load(Ordering::SeqCst) {
            was_paused = true;
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        if was_paused {
            // A camera that comes back starts with a keyframe.
            was_paused = false;
            while !units[index].keyframe {
                index = (index + 1) % units.len();
            }
            origin = Instant::now();
            sent_since_origin = 0;
        }
        let due = origin + Duration::from_secs_f64(sent_since_origin as f64 / FPS);
        let now = Instant::now();
        if now < due {
            std::thread::sleep((due - now).min(Duration::from_millis(10)));
            continue;
        }
        let mut rest = &units[index].bytes[..];
        while !rest.is_empty() {
            if ctl.stop.load(Ordering::SeqCst) {
                return;
            }
            match file.write(rest) {
                Ok(n) => rest = &rest[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // The reader is gone for good (v4l2rtmp exited).
                Err(_) => return,
            }
        }
        ctl.frames.fetch_add(1, Ordering::SeqCst);
        index = (index + 1) % units.len();
        sent_since_origin += 1;
        if now.duration_since(due) > Duration::from_secs(1) {
            // Far behind (the reader did not read): a camera drops frames rather than bursting.
            origin = Instant::now();
            sent_since_origin = 0;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The client, its timestamped log, its memory
// ---------------------------------------------------------------------------------------------

/// A child's stderr lines, each with the moment it was read.
#[derive(Clone)]
struct TimedLog {
    lines: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl TimedLog {
    fn follow(pipe: impl io::Read + Send + 'static, tag: &'static str, origin: Instant) -> TimedLog {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in io::BufReader::new(pipe).lines().map_while(|l| l.ok()) {
                let now = Instant::now();
                eprintln!(
                    "  [{tag} {:7.3}] | {line}",
                    now.duration_since(origin).as_secs_f64()
                );
                sink.lock().unwrap().push((now, line));
            }
        });
        TimedLog { lines }
    }

    fn len(&self) -> usize {
        self.lines.lock().unwrap().len()
    }

    fn since(&self, from: usize) -> Vec<(Instant, String)> {
        self.lines.lock().unwrap()[from.min(self.len())..].to_vec()
    }

    fn all(&self) -> Vec<(Instant, String)> {
        self.since(0)
    }

    /// The first line at or after index `from` containing `needle`: (index, when, line). Panics
    /// after `limit`.
    fn wait_for(&self, needle: &str, from: usize, limit: Duration) -> (usize, Instant, String) {
        let deadline = Instant::now() + limit;
        loop {
            {
                let lines = self.lines.lock().unwrap();
                if let Some((i, (when, line))) = lines
                    .iter()
                    .enumerate()
                    .skip(from)
                    .find(|(_, (_, line))| line.contains(needle))
                {
                    return (i, *when, line.clone());
                }
            }
            assert!(
                Instant::now() < deadline,
                "no log line containing {needle:?} within {limit:?} (after line {from})"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn count(&self, needle: &str) -> usize {
        self.all().iter().filter(|(_, l)| l.contains(needle)).count()
    }
}

/// v4l2rtmp, publishing; killed when dropped.
struct Client {
    child: Child,
    log: TimedLog,
}

impl Client {
    fn spawn(tag: &'static str, input: &str, url: &str, extra: &[&str]) -> Client {
        let origin = Instant::now();
        let mut child = Command::new(BIN)
            .args(["--input", input, "--fps", "30"])
            .args(extra)
            .arg(url)
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start v4l2rtmp");
        let log = TimedLog::follow(child.stderr.take().unwrap(), tag, origin);
        Client { child, log }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// VmRSS in kB.
    fn rss_kb(&self) -> u64 {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }

    /// Sends SIGTERM; returns the exit status and how long the process took to end.
    fn terminate(&mut self) -> (ExitStatus, Duration) {
        let sent = Instant::now();
        let status = stop(&mut self.child, "TERM");
        (status, sent.elapsed())
    }

    /// Waits for the process to end by itself.
    fn wait(&mut self, limit: Duration) -> (ExitStatus, Instant) {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, Instant::now());
            }
            assert!(Instant::now() < deadline, "v4l2rtmp still runs after {limit:?}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits until the log has a line with `needle` after line `from`, and stderr has been read
    /// to the end if the process exited.
    fn settle_log(&self) {
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The delay in a "...; retrying in X s" line.
fn retry_delay(line: &str) -> Option<f64> {
    let rest = &line[line.find("retrying in ")? + "retrying in ".len()..];
    rest.split_whitespace().next()?.parse().ok()
}

/// The level of a log line ("ERROR", "DEBUG", ...).
fn level(line: &str) -> &str {
    line.strip_prefix("v4l2rtmp ")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or("")
}

/// The failure reason of a "retrying in" line, without level and "again: ".
fn failure_reason(line: &str) -> String {
    let text = line
        .strip_prefix("v4l2rtmp ")
        .map(|rest| rest[5..].trim_start())
        .unwrap_or(line);
    let text = text.strip_prefix("again: ").unwrap_or(text);
    text.split("; retrying in").next().unwrap_or(text).to_string()
}

fn seconds(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn since(earlier: Instant, later: Instant) -> f64 {
    later.saturating_duration_since(earlier).as_secs_f64()
}

/// `later - earlier` in seconds, negative when `later` is earlier.
fn signed(earlier: Instant, later: Instant) -> f64 {
    if later >= earlier {
        since(earlier, later)
    } else {
        -since(later, earlier)
    }
}

fn min_median_max(values: &[f64]) -> (f64, f64, f64) {
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (sorted[0], sorted[sorted.len() / 2], sorted[sorted.len() - 1])
}

// ---------------------------------------------------------------------------------------------
// nginx on a given port (the same port across restarts)
// ---------------------------------------------------------------------------------------------

/// nginx-rtmp on 127.0.0.1:`port`, application `live` recording into its own directory.
struct NginxOn {
    port: u16,
    dir: TempDir,
    child: Child,
    /// When /proc/net/tcp first showed the port listening.
    listening_at: Instant,
}

impl NginxOn {
    fn start(port: u16, tag: &str) -> NginxOn {
        require_tool("nginx");
        let dir = TempDir::new(tag);
        fs::create_dir_all(dir.path().join("rec")).unwrap();
        fs::create_dir_all(dir.path().join("logs")).unwrap();
        let conf = format!(
            "daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
load_module {RTMP_MODULE};
events {{ worker_connections 64; }}
rtmp {{
    server {{
        listen 127.0.0.1:{port};
        chunk_size 4096;
        max_message 16M;
        ping 5s;
        application live {{
            live on;
            record all;
            record_path {d}/rec;
            record_unique off;
        }}
    }}
}}
",
            d = dir.path().display()
        );
        let conf_path = dir.path().join("nginx.conf");
        fs::write(&conf_path, conf).unwrap();
        let mut child = Command::new("nginx")
            .arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx");
        let start = Instant::now();
        while !is_listening(port) {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "nginx exited before listening on {port}: {status}\n{}",
                    fs::read_to_string(dir.path().join("error.log")).unwrap_or_default()
                );
            }
            assert!(start.elapsed() < Duration::from_secs(20), "nginx did not listen on {port}");
            std::thread::sleep(Duration::from_millis(2));
        }
        NginxOn {
            port,
            dir,
            child,
            listening_at: Instant::now(),
        }
    }

    fn url(&self) -> String {
        format!("rtmp://127.0.0.1:{}/live/{KEY}", self.port)
    }

    fn recording(&self) -> PathBuf {
        self.dir.path().join("rec").join(format!("{KEY}.flv"))
    }

    /// SIGKILL: a crash. The directory is kept.
    fn kill(mut self) -> TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let dir = TempDir(self.dir.0.clone());
        std::mem::forget(std::mem::replace(&mut self.dir, TempDir(PathBuf::new())));
        dir
    }

    /// SIGQUIT: graceful, the recording is closed. The directory is kept.
    fn stop(mut self) -> TempDir {
        let _ = Command::new("kill")
            .arg("-QUIT")
            .arg(self.child.id().to_string())
            .status();
        let start = Instant::now();
        while self.child.try_wait().unwrap().is_none() {
            if start.elapsed() > Duration::from_secs(10) {
                let _ = self.child.kill();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let dir = TempDir(self.dir.0.clone());
        std::mem::forget(std::mem::replace(&mut self.dir, TempDir(PathBuf::new())));
        dir
    }
}

impl Drop for NginxOn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// Reading what the server recorded (FLV) and what the client sent (RTMP chunks)
// ---------------------------------------------------------------------------------------------

/// One FLV tag.
#[derive(Clone, Copy, Debug)]
struct Tag {
    kind: u8,
    timestamp_ms: u32,
    /// Video: FLV frame type 1, AVC NALU (not the sequence header).
    keyframe: bool,
    /// Video: AVC packet type (0 sequence header, 1 NALU).
    avc_packet_type: u8,
}

/// The complete tags of an FLV file (a file being written may end in a partial tag), and the
/// length of the complete part.
fn flv_tags(bytes: &[u8]) -> (Vec<Tag>, usize) {
    let mut tags = Vec::new();
    if bytes.len() < 13 || &bytes[..3] != b"FLV" {
        return (tags, 0);
    }
    let header = u32::from_be_bytes(bytes[5..9].try_into().unwrap()) as usize;
    let mut pos = header + 4;
    let mut complete = pos.min(bytes.len());
    while pos + 11 <= bytes.len() {
        let kind = bytes[pos] & 0x1f;
        let size = u32::from_be_bytes([0, bytes[pos + 1], bytes[pos + 2], bytes[pos + 3]]) as usize;
        let timestamp_ms =
            u32::from_be_bytes([bytes[pos + 7], bytes[pos + 4], bytes[pos + 5], bytes[pos + 6]]);
        let end = pos + 11 + size + 4;
        if end > bytes.len() {
            break;
        }
        let data = &bytes[pos + 11..pos + 11 + size];
        let (keyframe, avc_packet_type) = if kind == 9 && data.len() >= 2 {
            (data[0] >> 4 == 1 && data[1] == 1, data[1])
        } else {
            (false, 0xff)
        };
        tags.push(Tag {
            kind,
            timestamp_ms,
            keyframe,
            avc_packet_type,
        });
        pos = end;
        complete = end;
    }
    (tags, complete)
}

/// Video frames (AVC NALU tags) in an FLV file so far.
fn recorded_frames(path: &Path) -> Vec<Tag> {
    let bytes = fs::read(path).unwrap_or_default();
    flv_tags(&bytes)
        .0
        .into_iter()
        .filter(|t| t.kind == 9 && t.avc_packet_type == 1)
        .collect()
}

/// Polls `path` until it holds a complete keyframe; returns when that was seen.
fn wait_for_keyframe(path: &Path, limit: Duration) -> Instant {
    let deadline = Instant::now() + limit;
    loop {
        if recorded_frames(path).iter().any(|t| t.keyframe) {
            return Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "no keyframe recorded in {} within {limit:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Polls `path` until it holds more than `count` frames.
fn wait_for_frames(path: &Path, count: usize, limit: Duration) -> Instant {
    let deadline = Instant::now() + limit;
    loop {
        if recorded_frames(path).len() > count {
            return Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "no more than {count} frames recorded in {} within {limit:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// What a recording holds, checked: read back with ffprobe and decoded with ffmpeg (the complete
/// tags only: a server killed mid-write leaves a partial last tag).
#[derive(Debug)]
struct Recording {
    frames: usize,
    keyframes: usize,
    /// Gaps in the timestamps longer than 1.5 frames: (index of the frame after it, its length ms).
    gaps: Vec<(usize, f64)>,
    /// Whether every frame after a gap is a keyframe (frames were dropped by whole GOPs).
    gaps_end_at_keyframes: bool,
    duration_ms: f64,
}

fn check_recording(path: &Path, what: &str) -> Recording {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("{what}: {}: {e}", path.display()));
    let (_, complete) = flv_tags(&bytes);
    let copy = path.with_extension("complete.flv");
    fs::write(&copy, &bytes[..complete]).unwrap();
    let probe = ffprobe(&copy, &[]);
    assert_eq!(probe.codec, "h264", "{what}");
    assert!(!probe.packets.is_empty(), "{what}: no frame recorded");
    assert!(
        probe.packets[0].keyframe,
        "{what}: the recording starts with an inter frame: {:?}",
        &probe.packets[..probe.packets.len().min(3)]
    );
    let errors = decode_errors(&copy);
    assert_eq!(errors, "", "{what}: the recording does not decode cleanly");
    let mut gaps = Vec::new();
    for (i, pair) in probe.packets.windows(2).enumerate() {
        let step = pair[1].dts_ms - pair[0].dts_ms;
        assert!(
            step > 0.0,
            "{what}: timestamps go back or repeat at frame {}: {} then {}",
            i + 1,
            pair[0].dts_ms,
            pair[1].dts_ms
        );
        if step > 1.5 * 1000.0 / 30.0 {
            gaps.push((i + 1, step));
        }
    }
    let gaps_end_at_keyframes = gaps.iter().all(|&(i, _)| probe.packets[i].keyframe);
    Recording {
        frames: probe.packets.len(),
        keyframes: probe.packets.iter().filter(|p| p.keyframe).count(),
        gaps,
        gaps_end_at_keyframes,
        duration_ms: probe.packets.last().unwrap().dts_ms - probe.packets[0].dts_ms,
    }
}

/// The video messages a client sent on one connection, from the bytes the proxy captured:
/// (first body byte: FLV frame type and codec, AVC packet type) of each, in order.
fn sent_video(capture: &[u8]) -> Vec<(u8, u8)> {
    // C0 + C1, then C2.
    const HANDSHAKE: usize = 1 + 1536 + 1536;
    let mut videos = Vec::new();
    if capture.len() <= HANDSHAKE {
        return videos;
    }
    let mut reader = ChunkReader::new(16 << 20);
    let mut pos = HANDSHAKE;
    while pos < capture.len() {
        match reader.decode(&capture[pos..]) {
            Ok((0, _)) => break,
            Ok((n, message)) => {
                pos += n;
                if let Some(message) = message {
                    if message.header.type_id == 9 && message.payload.len() >= 2 {
                        videos.push((message.payload[0], message.payload[1]));
                    }
                }
            }
            Err(e) => panic!("the client's chunk stream does not parse at byte {pos}: {e}"),
        }
    }
    videos
}

/// Whether what the client sent on a connection starts with the AVC sequence header and then a
/// keyframe, with no inter frame before it.
fn assert_connection_starts_with_keyframe(capture: &[u8], what: &str) {
    let videos = sent_video(capture);
    assert!(
        videos.len() >= 2,
        "{what}: fewer than 2 video messages captured ({} bytes)",
        capture.len()
    );
    assert_eq!(videos[0], (0x17, 0), "{what}: first video message is the AVC sequence header");
    assert_eq!(videos[1], (0x17, 1), "{what}: the first frame is a keyframe");
}

/// The client's send queue towards `port`, from /proc/net/tcp (bytes not yet acknowledged or
/// not yet sent; for information).
fn send_queues_to(port: u16) -> Vec<u64> {
    let table = fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let needle = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // local, remote, state, tx_queue:rx_queue
            (fields.len() > 4 && fields[2].ends_with(&needle) && fields[3] == "01")
                .then(|| u64::from_str_radix(fields[4].split(':').next()?, 16).ok())
                .flatten()
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// 1. The server is killed and restarted 20 times
// ---------------------------------------------------------------------------------------------

/// nginx is killed (SIGKILL, a crash) and restarted on the same port 20 times during one stream,
/// with `--backoff-reset 1 --backoff-max 2` so that the test is bounded (each instance stays up
/// for more than a second: the backoff starts again at 0.5 s; a longer outage reaches the 2 s
/// cap). The servers stay down between 0.05 and 2.5 s.
///
/// Recovery is measured from the moment nginx listens (the port appears in /proc/net/tcp, polled
/// every 2 ms) to the moment the new instance's recording holds a complete keyframe (its FLV file
/// parsed every 5 ms, complete tags only): nginx-rtmp writes each frame to the file as it
/// arrives, so this is when the server has received the first frame, and it needs no parsing of
/// nginx's log. The backoff in force is the delay of the "retrying in X s" line that scheduled
/// the successful attempt (the last one before "publishing to").
#[test]
fn server_killed_and_restarted_20_times() {
    const RESTARTS: usize = 20;
    const DOWN_MS: [u64; 5] = [50, 300, 700, 1500, 2500];
    let units = access_units(&live_clip(), 300);
    let work = TempDir::new("faults-restarts");
    let source = LiveSource::start(work.path(), units);
    let port = free_port();
    let mut nginx = NginxOn::start(port, "faults-restarts-nginx-0");
    let mut client = Client::spawn(
        "restarts",
        source.path(),
        &nginx.url(),
        &["--backoff-reset", "1", "--backoff-max", "2"],
    );
    wait_for_keyframe(&nginx.recording(), Duration::from_secs(15));
    let mut dirs = Vec::new();
    // (restart, down ms, backoff in force s, left of it when nginx listened s, recovery s)
    let mut rows: Vec<(usize, u64, f64, f64, f64)> = Vec::new();
    for restart in 1..=RESTARTS {
        // Healthy for more than --backoff-reset.
        std::thread::sleep(Duration::from_millis(1300));
        let mark = client.log.len();
        let recorded_before = recorded_frames(&nginx.recording()).len();
        dirs.push(nginx.kill());
        assert!(recorded_before > 0, "restart {restart}: nothing recorded");
        client
            .log
            .wait_for("retrying in", mark, Duration::from_secs(10));
        let down = DOWN_MS[restart % DOWN_MS.len()];
        std::thread::sleep(Duration::from_millis(down));
        nginx = NginxOn::start(port, &format!("faults-restarts-nginx-{restart}"));
        let listening = nginx.listening_at;
        let keyframe = wait_for_keyframe(&nginx.recording(), Duration::from_secs(10));
        let (published, _, _) = client
            .log
            .wait_for("publishing to", mark, Duration::from_secs(5));
        let lines = client.log.all();
        let (scheduled_at, in_force) = lines[mark..published]
            .iter()
            .rev()
            .find_map(|(when, line)| retry_delay(line).map(|d| (*when, d)))
            .expect("a retrying line before publishing");
        // When the successful attempt was due, relative to nginx listening.
        let left = (in_force + signed(listening, scheduled_at)).max(0.0);
        let recovery = since(listening, keyframe);
        eprintln!(
            "restart {restart:2}: down {down:4} ms, backoff in force {in_force:.1} s \
             ({left:.3} s of it left when nginx listened), first keyframe {recovery:.3} s \
             after nginx listened"
        );
        rows.push((restart, down, in_force, left, recovery));
    }
    std::thread::sleep(Duration::from_millis(1000));
    let (status, took) = client.terminate();
    dirs.push(nginx.stop());
    assert!(status.success(), "v4l2rtmp: {status}");
    eprintln!("SIGTERM: exited in {:.3} s", seconds(took));
    drop(source);

    // Every instance's recording starts with a keyframe and decodes.
    for (i, dir) in dirs.iter().enumerate() {
        let path = dir.path().join("rec").join(format!("{KEY}.flv"));
        let rec = check_recording(&path, &format!("nginx instance {i}"));
        assert!(
            rec.frames >= 20,
            "instance {i}: only {} frames recorded",
            rec.frames
        );
    }
    let recoveries: Vec<f64> = rows.iter().map(|r| r.4).collect();
    let (min, median, max) = min_median_max(&recoveries);
    eprintln!(
        "server restarts: {RESTARTS}, recovery (nginx listening -> first keyframe recorded): \
         min {min:.3} s, median {median:.3} s, max {max:.3} s"
    );
    let late: Vec<_> = rows
        .iter()
        .filter(|(_, _, in_force, _, recovery)| *recovery > in_force + 0.5)
        .collect();
    assert!(
        late.is_empty(),
        "recovery took longer than the backoff in force + 0.5 s: \
         (restart, down ms, backoff s, left s, recovery s) {late:?}"
    );
    assert_eq!(
        client.log.count("publishing to"),
        RESTARTS + 1,
        "one publishing connection per nginx instance"
    );
}
