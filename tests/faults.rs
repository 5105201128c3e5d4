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

use common::proxy::{tcp_queues, Mode, Proxy, Side};
use common::scripted::{self, info, status, ScriptedPeer};
use common::*;
use v4l2rtmp::media::annexb::AnnexBReader;
use v4l2rtmp::rtmp::amf0::{self, Value};
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
    assert!(
        units[0].keyframe,
        "{} starts with a keyframe",
        path.display()
    );
    Arc::new(units)
}

struct SourceCtl {
    paused: AtomicBool,
    stop: AtomicBool,
    frames: AtomicU64,
    /// Keyframes written so far, and when the last one was.
    keyframes: Mutex<(u64, Option<Instant>)>,
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
            keyframes: Mutex::new((0, None)),
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

    /// When the last keyframe was written.
    fn last_keyframe_written(&self) -> Option<Instant> {
        self.ctl.keyframes.lock().unwrap().1
    }

    /// Waits for the next keyframe to be written; returns when it was.
    fn next_keyframe_written(&self) -> Instant {
        let (count, _) = *self.ctl.keyframes.lock().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let (n, Some(when)) = *self.ctl.keyframes.lock().unwrap() {
                if n > count {
                    return when;
                }
            }
            assert!(Instant::now() < deadline, "no keyframe written for 5 s");
            std::thread::sleep(Duration::from_millis(1));
        }
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
        if units[index].keyframe {
            let mut keyframes = ctl.keyframes.lock().unwrap();
            *keyframes = (keyframes.0 + 1, Some(Instant::now()));
        }
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
    /// The pipe reached its end (the child exited).
    ended: Arc<AtomicBool>,
}

impl TimedLog {
    fn follow(
        pipe: impl io::Read + Send + 'static,
        tag: &'static str,
        origin: Instant,
    ) -> TimedLog {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let ended = Arc::new(AtomicBool::new(false));
        let sink = lines.clone();
        let end = ended.clone();
        std::thread::spawn(move || {
            for line in io::BufReader::new(pipe).lines().map_while(|l| l.ok()) {
                let now = Instant::now();
                eprintln!(
                    "  [{tag} {:7.3}] | {line}",
                    now.duration_since(origin).as_secs_f64()
                );
                sink.lock().unwrap().push((now, line));
            }
            end.store(true, Ordering::SeqCst);
        });
        TimedLog { lines, ended }
    }

    fn len(&self) -> usize {
        self.lines.lock().unwrap().len()
    }

    fn since(&self, from: usize) -> Vec<(Instant, String)> {
        let lines = self.lines.lock().unwrap();
        lines[from.min(lines.len())..].to_vec()
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

    /// Like [`TimedLog::wait_for`], but None instead of a panic when no such line came by
    /// `deadline`.
    fn try_wait_until(
        &self,
        needle: &str,
        from: usize,
        deadline: Instant,
    ) -> Option<(usize, Instant, String)> {
        loop {
            {
                let lines = self.lines.lock().unwrap();
                if let Some((i, (when, line))) = lines
                    .iter()
                    .enumerate()
                    .skip(from)
                    .find(|(_, (_, line))| line.contains(needle))
                {
                    return Some((i, *when, line.clone()));
                }
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn count(&self, needle: &str) -> usize {
        self.all()
            .iter()
            .filter(|(_, l)| l.contains(needle))
            .count()
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

    /// Sends SIGTERM; returns the exit status and how long the process took to end (then waits
    /// for the rest of its log).
    fn terminate(&mut self) -> (ExitStatus, Duration) {
        let sent = Instant::now();
        let status = stop(&mut self.child, "TERM");
        let took = sent.elapsed();
        self.settle_log();
        (status, took)
    }

    /// Waits for the process to end by itself.
    fn wait(&mut self, limit: Duration) -> (ExitStatus, Instant) {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, Instant::now());
            }
            assert!(
                Instant::now() < deadline,
                "v4l2rtmp still runs after {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// After the process exited: waits (up to 2 s) until its stderr has been read to the end.
    fn settle_log(&self) {
        let deadline = Instant::now() + Duration::from_secs(2);
        while !self.log.ended.load(Ordering::SeqCst) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The delay in seconds of a "...; retrying in X s" or "...; retrying in N ms" line.
fn retry_delay(line: &str) -> Option<f64> {
    let rest = &line[line.find("retrying in ")? + "retrying in ".len()..];
    let mut words = rest.split_whitespace();
    let value: f64 = words.next()?.parse().ok()?;
    match words.next()?.trim_end_matches(|c: char| !c.is_alphabetic()) {
        "ms" => Some(value / 1000.0),
        "s" => Some(value),
        _ => None,
    }
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
    text.split("; retrying in")
        .next()
        .unwrap_or(text)
        .to_string()
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
    (
        sorted[0],
        sorted[sorted.len() / 2],
        sorted[sorted.len() - 1],
    )
}

// ---------------------------------------------------------------------------------------------
// nginx on a given port (the same port across restarts)
// ---------------------------------------------------------------------------------------------

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
        let timestamp_ms = u32::from_be_bytes([
            bytes[pos + 7],
            bytes[pos + 4],
            bytes[pos + 5],
            bytes[pos + 6],
        ]);
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
#[allow(dead_code)] // Some fields are only printed.
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
    assert_eq!(
        videos[0],
        (0x17, 0),
        "{what}: first video message is the AVC sequence header"
    );
    assert_eq!(
        videos[1],
        (0x17, 1),
        "{what}: the first frame is a keyframe"
    );
}

/// The client's send queue towards `port`, from /proc/net/tcp (bytes not yet acknowledged or
/// not yet sent; for information).
fn send_queues_to(port: u16) -> Vec<u64> {
    tcp_queues(port, Side::Remote)
        .into_iter()
        .map(|(tx, _)| tx)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// 1. The server is killed and restarted 20 times
// ---------------------------------------------------------------------------------------------

/// nginx is killed (SIGKILL, a crash) and restarted on the same port 20 times during one stream,
/// with `--backoff-reset 1 --backoff-max 2` so that the test is bounded (each instance stays up
/// for more than a second: the backoff starts again at 0.5 s; a longer outage reaches the 2 s
/// cap). The servers stay down between 0.05 and 2.5 s; the shortest outages come 0.1 s after
/// the camera wrote a keyframe (the worst case: no keyframe is queued by the time of the
/// reconnect, and the stream is 0.9 s from the next one).
///
/// Recovery is measured from the moment nginx listens (the port appears in /proc/net/tcp, polled
/// every 2 ms) to the moment the new instance's recording holds a complete keyframe (its FLV file
/// parsed every 5 ms, complete tags only): nginx-rtmp writes each frame to the file as it
/// arrives, so this is when the server has received the first frame, and it needs no parsing of
/// nginx's log. The backoff in force is the delay of the "retrying in X s" line that scheduled
/// the successful attempt (the last one before "publishing to").
///
/// nginx-rtmp's recorder itself skips inter frames until the first keyframe, so the recordings
/// starting with a keyframe says little about the client; the tests with the proxy in the path
/// (black hole, mid-frame reset) parse what the client sent on each connection instead.
#[test]
fn server_killed_and_restarted_20_times() {
    const RESTARTS: usize = 20;
    const DOWN_MS: [u64; 5] = [50, 300, 700, 1500, 2500];
    let units = access_units(&live_clip(), 300);
    let work = TempDir::new("faults-restarts");
    let source = LiveSource::start(work.path(), units);
    let port = free_port();
    let mut nginx = Nginx::start_on(port);
    let mut client = Client::spawn(
        "restarts",
        source.path(),
        &nginx.url("live", KEY),
        &["--backoff-reset", "1", "--backoff-max", "2"],
    );
    wait_for_keyframe(&nginx.recording(KEY), Duration::from_secs(15));
    let mut dirs = Vec::new();
    // (restart, down ms, backoff in force s, left of it when nginx listened s, recovery s,
    // keyframe wait after publishing s)
    let mut rows: Vec<(usize, u64, f64, f64, f64, f64)> = Vec::new();
    for restart in 1..=RESTARTS {
        // Healthy for more than --backoff-reset.
        std::thread::sleep(Duration::from_millis(1300));
        let down = DOWN_MS[restart % DOWN_MS.len()];
        if down == DOWN_MS[0] {
            // The worst case for a short outage: the crash comes just after a keyframe, so the
            // frames queued until the reconnect hold none.
            let keyframe = source.next_keyframe_written();
            std::thread::sleep(Duration::from_millis(100).saturating_sub(keyframe.elapsed()));
        }
        let mark = client.log.len();
        let recorded_before = recorded_frames(&nginx.recording(KEY)).len();
        let killed_at = Instant::now();
        dirs.push(nginx.kill());
        let phase = source
            .last_keyframe_written()
            .map_or(f64::NAN, |k| since(k, killed_at));
        assert!(recorded_before > 0, "restart {restart}: nothing recorded");
        client
            .log
            .wait_for("retrying in", mark, Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(down));
        nginx = Nginx::start_on(port);
        let listening = nginx.listening_at;
        let keyframe = wait_for_keyframe(&nginx.recording(KEY), Duration::from_secs(10));
        let (published, published_at, _) =
            client
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
        // What the new connection waited for its first keyframe after publishing.
        let keyframe_wait = since(published_at, keyframe);
        eprintln!(
            "restart {restart:2}: killed {phase:.3} s after a keyframe, down {down:4} ms, backoff in force {in_force:.1} s \
             ({left:.3} s of it left when nginx listened), first keyframe {recovery:.3} s \
             after nginx listened, {keyframe_wait:.3} s after publishing"
        );
        rows.push((restart, down, in_force, left, recovery, keyframe_wait));
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
    let waits: Vec<f64> = rows.iter().map(|r| r.5).collect();
    let (wait_min, wait_median, wait_max) = min_median_max(&waits);
    eprintln!(
        "server restarts: first keyframe after publishing: min {wait_min:.3} s, median \
         {wait_median:.3} s, max {wait_max:.3} s"
    );
    let late: Vec<_> = rows.iter().filter(|r| r.4 > r.2 + 0.5).collect();
    assert!(
        late.is_empty(),
        "recovery took longer than the backoff in force + 0.5 s: (restart, down ms, backoff s, \
         left of it when nginx listened s, recovery s, keyframe wait after publishing s) {late:?}"
    );
    assert_eq!(
        client.log.count("publishing to"),
        RESTARTS + 1,
        "one publishing connection per nginx instance"
    );
}

// ---------------------------------------------------------------------------------------------
// 2. A black-holed link
// ---------------------------------------------------------------------------------------------

/// The proxy black-holes the link (no byte read or forwarded either way, no FIN, no reset) with
/// `--stall-timeout 3`: the client notices within the stall timeout plus the time its socket
/// buffers take to fill (on loopback the kernel still acknowledges what it buffers), and when the
/// link comes back it streams again on a fresh connection that starts with a keyframe.
#[test]
fn black_holed_link_is_detected_and_left() {
    const STALL_S: f64 = 3.0;
    let units = access_units(&live_clip(), 300);
    let work = TempDir::new("faults-blackhole");
    let source = LiveSource::start(work.path(), units);
    let nginx = Nginx::start();
    let proxy = Proxy::to_port(nginx.port).with_capture(4 << 20);
    let mut client = Client::spawn(
        "blackhole",
        source.path(),
        &proxy.url("live", KEY),
        &["--stall-timeout", "3", "--backoff-max", "2"],
    );
    client
        .log
        .wait_for("publishing to", 0, Duration::from_secs(15));
    wait_for_keyframe(&nginx.recording(KEY), Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(2));

    let mark = client.log.len();
    let up_before = proxy.bytes_up();
    let cut = Instant::now();
    proxy.set_mode(Mode::BlackHole);
    // On loopback the proxy's kernel still acknowledges what fits in its receive buffer: the
    // link stops taking data when the client's send queue stops draining. Sample it until the
    // client gives up.
    let mut samples: Vec<(Instant, u64)> = Vec::new();
    while client
        .log
        .since(mark)
        .iter()
        .all(|(_, l)| !l.contains("retrying in"))
        && cut.elapsed() < Duration::from_secs(30)
    {
        let queued = send_queues_to(proxy.port).into_iter().max().unwrap_or(0);
        samples.push((Instant::now(), queued));
        std::thread::sleep(Duration::from_millis(10));
    }
    let (failed_at_line, failed_at, failure) =
        client
            .log
            .wait_for("retrying in", mark, Duration::from_secs(1));
    let detection = since(cut, failed_at);
    // The link stopped taking data (the proxy's window closed) where the client's send queue
    // began to grow for good: the start of the last run of positive, non-decreasing samples
    // (before that, acknowledgements drain it).
    // (Walk back from the peak: the last samples may be taken as the socket closes.)
    let mut first = samples
        .iter()
        .enumerate()
        .max_by_key(|&(i, &(_, q))| (q, i))
        .map_or(0, |(i, _)| i);
    while first > 0 && samples[first - 1].1 > 0 && samples[first - 1].1 <= samples[first].1 {
        first -= 1;
    }
    let blocked_at = samples.get(first).map_or(cut, |&(when, _)| when);
    let filled = since(cut, blocked_at);
    let after_blocked = since(blocked_at, failed_at);
    let peak = samples.iter().map(|&(_, q)| q).max().unwrap_or(0);
    let trace: Vec<String> = samples
        .iter()
        .step_by(20)
        .map(|&(when, q)| format!("{:.1}s:{}K", since(cut, when), q / 1024))
        .collect();
    eprintln!(
        "black hole: client send queue every 0.2 s: {}",
        trace.join(" ")
    );
    eprintln!(
        "black hole: detected {detection:.3} s after the cut; the proxy's receive buffer filled in \
         {filled:.3} s, so {after_blocked:.3} s after the link stopped taking data (--stall-timeout 3); \
         client send queue peaked at {peak} bytes: {failure}"
    );
    // Leave the link black-holed a little longer: attempts made meanwhile hang.
    std::thread::sleep(Duration::from_secs(1));
    let restored = Instant::now();
    proxy.set_mode(Mode::Forward);
    let (_, published_at, _) =
        client
            .log
            .wait_for("publishing to", failed_at_line, Duration::from_secs(20));
    let frames_after = wait_for_frames(&nginx.recording(KEY), 0, Duration::from_secs(10));
    eprintln!(
        "black hole: link restored; publishing again {:.3} s later, frames recorded {:.3} s later; \
         {} connections accepted by the proxy, {} bytes forwarded up before the cut",
        since(restored, published_at),
        since(restored, frames_after),
        proxy.accepted(),
        up_before
    );
    std::thread::sleep(Duration::from_secs(2));
    let (status, _) = client.terminate();
    assert!(status.success(), "v4l2rtmp: {status}");
    let recording = nginx.recording(KEY);
    let log = nginx.error_log();
    let _dir = nginx.stop();

    assert!(
        after_blocked <= STALL_S + 1.0,
        "the black hole was detected {after_blocked:.3} s after the link stopped taking data, more \
         than the stall timeout (3 s) + 1 s"
    );
    assert!(
        failure.contains("stalled") || failure.contains("timed out"),
        "the failure names the stall: {failure}"
    );
    // The connection that published after the black hole started with a keyframe.
    let captures = proxy.captures();
    let last = captures
        .iter()
        .rev()
        .find(|c| sent_video(c).len() >= 2)
        .expect("a connection that sent video after the black hole");
    assert_connection_starts_with_keyframe(last, "the connection after the black hole");
    assert!(
        log.matches("publish: name='cam'").count() >= 2,
        "nginx saw the second publish"
    );
    let rec = check_recording(&recording, "after the black hole");
    eprintln!("black hole: the recording after it: {rec:?}");
    assert!(rec.frames >= 30, "{rec:?}");
    drop(source);
}

// ---------------------------------------------------------------------------------------------
// 3. A peer that never answers the handshake
// ---------------------------------------------------------------------------------------------

/// A listener that accepts TCP connections, reads nothing and answers nothing; it counts the
/// connections and when each came.
struct SilentPeer {
    port: u16,
    accepted: Arc<Mutex<Vec<Instant>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl SilentPeer {
    fn start() -> SilentPeer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let accepted = accepted.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut held = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((socket, _)) => {
                            accepted.lock().unwrap().push(Instant::now());
                            held.push(socket);
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(2)),
                    }
                }
            })
        };
        SilentPeer {
            port,
            accepted,
            stop,
            thread: Some(thread),
        }
    }

    fn accepted(&self) -> Vec<Instant> {
        self.accepted.lock().unwrap().clone()
    }
}

impl Drop for SilentPeer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A peer that accepts TCP and never answers the handshake, with `--timeout 1 --max-retries 5
/// --backoff-max 4`: six attempts (one, then five retries), each given up after 1 s, separated by
/// jittered delays under 0.5, 1, 2, 4, 4 s; then exit code 76 (EX_PROTOCOL).
#[test]
fn silent_peer_is_retried_with_growing_jittered_backoff_then_given_up() {
    const RETRIES: usize = 5;
    let units = access_units(&live_clip(), 300);
    let work = TempDir::new("faults-silent");
    let source = LiveSource::start(work.path(), units);
    let peer = SilentPeer::start();
    let url = format!("rtmp://127.0.0.1:{}/live/{KEY}", peer.port);
    let mut client = Client::spawn(
        "silent",
        source.path(),
        &url,
        &[
            "--timeout",
            "1",
            "--max-retries",
            &RETRIES.to_string(),
            "--backoff-max",
            "4",
        ],
    );
    let (status, _) = client.wait(Duration::from_secs(40));
    client.settle_log();
    let accepted = peer.accepted();
    let lines = client.log.all();
    let delays: Vec<f64> = lines.iter().filter_map(|(_, l)| retry_delay(l)).collect();
    let ceilings: Vec<f64> = (0..RETRIES)
        .map(|i| (0.5 * f64::from(1u32 << i)).min(4.0))
        .collect();
    let gaps: Vec<f64> = accepted.windows(2).map(|w| since(w[0], w[1])).collect();
    eprintln!(
        "silent peer: exit {status}; {} attempts; delays logged {delays:?} s (ceilings {ceilings:?}); \
         gaps between attempts {gaps:.3?} s",
        accepted.len()
    );
    assert_eq!(exit_code(status), 76, "exit code");
    assert_eq!(
        accepted.len(),
        RETRIES + 1,
        "--max-retries {RETRIES}: attempts"
    );
    assert_eq!(delays.len(), RETRIES, "one 'retrying in' line per retry");
    assert!(
        delays[0] <= 0.5,
        "the first retry comes within 0.5 s: {delays:?}"
    );
    for (i, (&delay, &ceiling)) in delays.iter().zip(&ceilings).enumerate() {
        // Logged with one decimal.
        assert!(
            delay <= ceiling + 0.05,
            "retry {i}: {delay} s above its ceiling {ceiling} s"
        );
        // Each attempt waited its handshake timeout (1 s) and then the delay.
        assert!(
            (gaps[i] - 1.0 - delay).abs() < 0.25,
            "retry {i}: attempts {:.3} s apart, expected 1 s + {delay} s",
            gaps[i]
        );
    }
    // Growing: the later delays add up to more than the first ceiling (the probability that full
    // jitter gives less is below 1e-4); jittered: not all at a fixed fraction of their ceiling.
    let later: f64 = delays[1..].iter().sum();
    assert!(later > 0.5, "the delays grow: {delays:?}");
    let fractions: Vec<f64> = delays.iter().zip(&ceilings).map(|(d, c)| d / c).collect();
    let spread = fractions.iter().cloned().fold(f64::MIN, f64::max)
        - fractions.iter().cloned().fold(f64::MAX, f64::min);
    assert!(spread > 0.05, "the delays are jittered: {delays:?}");
    let last = &lines.last().unwrap().1;
    assert!(
        lines
            .iter()
            .any(|(_, l)| l.contains("ERROR") && !l.contains("retrying")),
        "the final error is logged"
    );
    eprintln!("silent peer: last line: {last}");
    drop(source);
}

// ---------------------------------------------------------------------------------------------
// 4. A reset in the middle of a frame
// ---------------------------------------------------------------------------------------------

/// Once publishing (for more than a second, so the loss is not mistaken for a refusal), the proxy
/// forwards exactly 12345 more client bytes and resets the connection: the server got part of a
/// frame. The client reconnects, the new connection starts with the sequence header and a
/// keyframe, and the new recording decodes from its first frame.
#[test]
fn reset_in_the_middle_of_a_frame() {
    const CUT: u64 = 12_345;
    let units = access_units(&live_clip(), 300);
    let work = TempDir::new("faults-midframe");
    let source = LiveSource::start(work.path(), units);
    let nginx = Nginx::start();
    let proxy = Proxy::to_port(nginx.port).with_capture(8 << 20);
    let mut client = Client::spawn(
        "midframe",
        source.path(),
        &proxy.url("live", KEY),
        &["--backoff-max", "2"],
    );
    client
        .log
        .wait_for("publishing to", 0, Duration::from_secs(15));
    wait_for_keyframe(&nginx.recording(KEY), Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(1500));
    let mark = client.log.len();
    let cuts = proxy.cut_after(CUT);
    assert_eq!(cuts.len(), 1, "one connection to cut");
    let (_, failed_at, failure) = client
        .log
        .wait_for("retrying in", mark, Duration::from_secs(10));
    let (_, published_at, _) = client
        .log
        .wait_for("publishing to", mark, Duration::from_secs(10));
    eprintln!(
        "mid-frame reset: {failure}\n  reconnected {:.3} s after the failure was logged",
        since(failed_at, published_at)
    );
    std::thread::sleep(Duration::from_secs(2));
    let (status, _) = client.terminate();
    assert!(status.success(), "v4l2rtmp: {status}");
    let recording = nginx.recording(KEY);
    let _dir = nginx.stop();

    let captures = proxy.captures();
    assert_eq!(captures.len(), 2, "two connections");
    assert!(
        proxy.reset_flags()[0],
        "the first connection ended with a reset"
    );
    let first = &captures[0];
    assert_eq!(
        first.len() as u64,
        cuts[0],
        "exactly {CUT} more bytes went through before the reset"
    );
    // The cut fell inside a message: the chunk reader holds part of one, or a partial chunk is left.
    let mut reader = ChunkReader::new(16 << 20);
    let mut pos = 1 + 1536 + 1536;
    while let Ok((n, _)) = reader.decode(&first[pos..]) {
        if n == 0 {
            break;
        }
        pos += n;
    }
    let partial = reader.buffered() + (first.len() - pos);
    eprintln!(
        "mid-frame reset: {} bytes forwarded on the first connection; {partial} bytes of an \
         unfinished message at the cut",
        first.len()
    );
    assert!(
        partial > 0,
        "the cut fell between two messages: try another CUT"
    );
    assert_connection_starts_with_keyframe(&captures[1], "the connection after the reset");
    let rec = check_recording(&recording, "after the reset");
    eprintln!("mid-frame reset: the recording after it: {rec:?}");
    assert!(rec.frames >= 30, "{rec:?}");
    drop(source);
}

// ---------------------------------------------------------------------------------------------
// 5. A server that refuses the key
// ---------------------------------------------------------------------------------------------

/// nginx-rtmp refuses the key, in the two ways it has: `auth` (an on_publish callback answers
/// 403: nginx closes without a reply) and `closed` (an access rule: nginx accepts the publish,
/// then closes). With `--backoff-max 2` every retry waits the whole cap, and the reason is logged
/// at error level once per change of reason; repeats are at debug level. The key never appears.
#[test]
fn refused_key_backs_off_to_the_cap_and_logs_the_reason_once() {
    const SECRET: &str = "secretkey42";
    const FAILURES: usize = 4;
    let units = access_units(&live_clip(), 300);
    for app in ["auth", "closed"] {
        let work = TempDir::new("faults-refused");
        let source = LiveSource::start(work.path(), units.clone());
        let nginx = Nginx::start();
        let tag: &'static str = if app == "auth" {
            "refused-auth"
        } else {
            "refused-closed"
        };
        let mut client = Client::spawn(
            tag,
            source.path(),
            &nginx.url(app, SECRET),
            &["--backoff-max", "2"],
        );
        let mut from = 0;
        for _ in 0..FAILURES {
            let (i, _, _) = client
                .log
                .wait_for("retrying in", from, Duration::from_secs(15));
            from = i + 1;
        }
        let (status, _) = client.terminate();
        assert!(status.success(), "{app}: v4l2rtmp: {status}");
        let lines = client.log.all();
        let failures: Vec<(Instant, String)> = lines
            .iter()
            .filter(|(_, l)| retry_delay(l).is_some())
            .cloned()
            .collect();
        let attempts: Vec<Instant> = lines
            .iter()
            .filter(|(_, l)| l.contains("DEBUG connecting to rtmp://"))
            .map(|(when, _)| *when)
            .collect();
        let gaps: Vec<f64> = attempts.windows(2).map(|w| since(w[0], w[1])).collect();
        let errors = failures.iter().filter(|(_, l)| level(l) == "ERROR").count();
        let reasons: Vec<String> = failures.iter().map(|(_, l)| failure_reason(l)).collect();
        eprintln!(
            "refused ({app}): {} failures, {errors} at error level; delays {:?}; attempts {gaps:.3?} s apart; reasons: {:#?}",
            failures.len(),
            failures.iter().filter_map(|(_, l)| retry_delay(l)).collect::<Vec<_>>(),
            reasons
        );
        for (_, line) in &failures {
            assert_eq!(
                retry_delay(line),
                Some(2.0),
                "{app}: a refusal waits the cap: {line}"
            );
        }
        for gap in &gaps {
            assert!(
                *gap >= 1.95,
                "{app}: attempts {gap:.3} s apart, less than the 2 s cap"
            );
        }
        // Error level exactly when the reason changed.
        for (i, (_, line)) in failures.iter().enumerate() {
            let changed = i == 0 || reasons[i] != reasons[i - 1];
            let expected = if changed { "ERROR" } else { "DEBUG" };
            assert_eq!(
                level(line),
                expected,
                "{app}: failure {i} should be logged at {expected} level: {line}"
            );
        }
        assert!(
            reasons[0].contains("rejected by the server"),
            "{app}: the reason says the server refused: {}",
            reasons[0]
        );
        assert_eq!(
            errors, 1,
            "{app}: the same refusal is logged at error level once"
        );
        assert!(
            lines.iter().all(|(_, l)| !l.contains(SECRET)),
            "{app}: the key leaked into the log"
        );
        drop(source);
    }
}

// ---------------------------------------------------------------------------------------------
// 6. A source that stalls
// ---------------------------------------------------------------------------------------------

/// The camera stops writing for 3.5 s with `--source-timeout 2`: the client restarts the source
/// (reopens the FIFO) about 2 s after the last frame; when the camera writes again, from a
/// keyframe, frames reach the server again and the recording decodes throughout.
#[test]
fn stalled_source_is_restarted_and_frames_flow_again() {
    let units = access_units(&live_clip(), 300);
    let work = TempDir::new("faults-source");
    let source = LiveSource::start(work.path(), units);
    let nginx = Nginx::start();
    let recording = nginx.recording(KEY);
    let mut client = Client::spawn(
        "source-stall",
        source.path(),
        &nginx.url("live", KEY),
        &["--source-timeout", "2"],
    );
    client
        .log
        .wait_for("publishing to", 0, Duration::from_secs(15));
    wait_for_keyframe(&recording, Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(2));
    let mark = client.log.len();
    let written_before = source.frames();
    source.pause();
    let paused = Instant::now();
    let (_, restarted_at, line) =
        client
            .log
            .wait_for("restarting it", mark, Duration::from_secs(10));
    let restart_after = since(paused, restarted_at);
    std::thread::sleep(Duration::from_millis(3500).saturating_sub(paused.elapsed()));
    let recorded_during = recorded_frames(&recording).len();
    source.resume();
    let resumed = Instant::now();
    let flowing = wait_for_frames(&recording, recorded_during, Duration::from_secs(10));
    eprintln!(
        "source stall: {written_before} frames written, then paused 3.5 s; '{line}' {restart_after:.3} s \
         after the pause; frames recorded again {:.3} s after the camera resumed",
        since(resumed, flowing)
    );
    std::thread::sleep(Duration::from_secs(2));
    let (status, _) = client.terminate();
    assert!(status.success(), "v4l2rtmp: {status}");
    let _dir = nginx.stop();
    let restarts = client.log.count("restarting it");
    let rec = check_recording(&recording, "across the source stall");
    eprintln!("source stall: {restarts} source restarts; recording: {rec:?}");
    assert!(
        (1.8..=3.0).contains(&restart_after),
        "the source was restarted {restart_after:.3} s after it stalled (--source-timeout 2)"
    );
    assert!(
        since(resumed, flowing) < 1.0,
        "frames flowed again {:.3} s after the camera resumed",
        since(resumed, flowing)
    );
    assert!(
        rec.frames >= recorded_during + 45,
        "{rec:?}: frames after the stall"
    );
    assert_eq!(
        client.log.count("publishing to"),
        1,
        "the connection survived the source stall"
    );
    drop(source);
}

// ---------------------------------------------------------------------------------------------
// 7. Memory after 100 reconnects
// ---------------------------------------------------------------------------------------------

/// After a warm-up outage longer than `--queue-time` (see below), the proxy resets the connection
/// 100 times, each time once the client has published for more than a second (with
/// `--backoff-reset 1`, so each reconnect comes within 0.5 s): VmRSS after the 100th reconnect is
/// within 5% of VmRSS after the first.
#[test]
fn memory_after_100_reconnects() {
    const RECONNECTS: usize = 100;
    let units = access_units(&live_clip(), 300);
    let work = TempDir::new("faults-rss");
    let source = LiveSource::start(work.path(), units);
    let nginx = Nginx::start();
    let proxy = Proxy::to_port(nginx.port);
    let mut client = Client::spawn(
        "rss",
        source.path(),
        &proxy.url("live", KEY),
        // The frame store's ring: 384 KiB, about 3 s of this video (see the warm-up below).
        &[
            "--backoff-reset",
            "1",
            "--backoff-max",
            "2",
            "--queue-size",
            "393216",
            "--max-frame-size",
            "262144",
        ],
    );
    let (first_line, _, _) = client
        .log
        .wait_for("publishing to", 0, Duration::from_secs(15));
    std::thread::sleep(Duration::from_millis(1100));
    let rss_start = client.rss_kb();
    // Warm-up: the frame store's ring becomes resident as the input is written round it (here
    // all of its 384 KiB, about 3 s of video; by default twice its high-water mark, at least
    // 1 MiB, which would take 10 s at this bitrate). The 1.1 s above, one outage longer than
    // --queue-time (the server unreachable for 2.6 s, which also fills the ring to its
    // high-water mark) and the 0.3 s below write more than that before the first measurement, so
    // what remains is what reconnecting costs.
    proxy.set_upstream(std::net::SocketAddr::from(([127, 0, 0, 1], free_port())));
    proxy.reset_all();
    std::thread::sleep(Duration::from_millis(2600));
    proxy.set_upstream(std::net::SocketAddr::from(([127, 0, 0, 1], nginx.port)));
    let (mut published_line, mut published_at, _) =
        client
            .log
            .wait_for("publishing to", first_line + 1, Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(300));
    let rss_warm = client.rss_kb();
    eprintln!("rss: VmRSS {rss_start} kB once publishing, {rss_warm} kB after the warm-up outage");
    let started = Instant::now();
    let mut rss = Vec::new();
    let mut rss_first = 0;
    let mut resets_with_rst = 0;
    for k in 1..=RECONNECTS {
        let healthy = Duration::from_millis(1100);
        std::thread::sleep(healthy.saturating_sub(published_at.elapsed()));
        resets_with_rst += proxy.reset_all();
        let (line, at, _) =
            client
                .log
                .wait_for("publishing to", published_line + 1, Duration::from_secs(10));
        published_line = line;
        published_at = at;
        if k == 1 || k % 10 == 0 {
            std::thread::sleep(Duration::from_millis(300));
            let now = client.rss_kb();
            if k == 1 {
                rss_first = now;
            }
            rss.push((k, now));
            eprintln!("rss: after reconnect {k:3}: VmRSS {now} kB");
            proxy.forget_closed();
        }
    }
    let rss_last = rss.last().unwrap().1;
    let elapsed = started.elapsed();
    let recording = nginx.recording(KEY);
    // The last connection's recording (nginx starts the file again on each publish) gets its
    // first keyframe, and a little more, before the end.
    wait_for_keyframe(&recording, Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(500));
    let (status, _) = client.terminate();
    assert!(status.success(), "v4l2rtmp: {status}");
    let _dir = nginx.stop();
    let change = (rss_last as f64 - rss_first as f64) / rss_first as f64 * 100.0;
    eprintln!(
        "rss: {RECONNECTS} reconnects in {:.1} s ({resets_with_rst} by RST); VmRSS after the 1st \
         {rss_first} kB, after the {RECONNECTS}th {rss_last} kB ({change:+.1}%); samples {rss:?}",
        seconds(elapsed)
    );
    assert_eq!(
        client.log.count("publishing to"),
        RECONNECTS + 2,
        "every reset was followed by one reconnect"
    );
    assert!(
        change.abs() <= 5.0,
        "VmRSS changed by {change:+.1}% between the 1st and the {RECONNECTS}th reconnect"
    );
    check_recording(&recording, "after the last reconnect");
    drop(source);
}

// ---------------------------------------------------------------------------------------------
// 8. A link slower than the video
// ---------------------------------------------------------------------------------------------

/// 1080p30 at about 4 Mbit/s through a link throttled to 1.5 Mbit/s for 15 s: frames keep
/// reaching the server, whole GOPs are dropped (every gap in the recording ends at a keyframe),
/// VmRSS stays within the queue size (8 MiB) plus 8 MiB of what it was, and the recording decodes
/// with increasing timestamps.
#[test]
fn throttled_link_drops_whole_gops_and_stays_live() {
    const THROTTLE: u64 = 1_500_000 / 8;
    let units = access_units(&clip_1080p30_60s(), 900);
    let work = TempDir::new("faults-throttle");
    let source = LiveSource::start(work.path(), units);
    let nginx = Nginx::start();
    let recording = nginx.recording(KEY);
    // The emulated link holds at most 64 KiB (the kernel doubles it for bookkeeping) between the
    // client and the throttle, like a router's queue; loopback autotuning would otherwise let it
    // grow to megabytes, seconds of video the client cannot see or drop.
    let proxy = Proxy::to_port_with_link_buffer(nginx.port, 64 * 1024);
    let mut client = Client::spawn("throttle", source.path(), &proxy.url("live", KEY), &[]);
    client
        .log
        .wait_for("publishing to", 0, Duration::from_secs(15));
    let recording_started = wait_for_keyframe(&recording, Duration::from_secs(10));
    let up0 = proxy.bytes_up();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    let rate_free = (proxy.bytes_up() - up0) as f64 * 8.0 / seconds(t0.elapsed()) / 1e6;
    let rss_before = client.rss_kb();
    // How far behind real time the server is: the time since the first frame was recorded minus
    // the stream time recorded since (the client's timestamps count frames at 30 fps, dropped
    // ones included, so stream time keeps up with the camera).
    let first_recorded = recording_started;
    let lag = || {
        let frames = recorded_frames(&recording);
        let span = frames
            .last()
            .map_or(0, |t| t.timestamp_ms - frames[0].timestamp_ms);
        seconds(first_recorded.elapsed()) - f64::from(span) / 1000.0
    };
    let lag_before = lag();

    let mark = client.log.len();
    proxy.set_mode(Mode::Throttle(THROTTLE));
    let throttled = Instant::now();
    let up1 = proxy.bytes_up();
    let mut rss_max = rss_before;
    let mut lag_max = lag_before;
    let mut windows = Vec::new();
    let mut last_count = recorded_frames(&recording).len();
    let mut window_start = Instant::now();
    while throttled.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(250));
        rss_max = rss_max.max(client.rss_kb());
        lag_max = lag_max.max(lag());
        if window_start.elapsed() >= Duration::from_secs(3) {
            let count = recorded_frames(&recording).len();
            windows.push(count - last_count);
            last_count = count;
            window_start = Instant::now();
        }
    }
    let rate_throttled = (proxy.bytes_up() - up1) as f64 * 8.0 / seconds(throttled.elapsed()) / 1e6;
    let queued = send_queues_to(proxy.port);
    let link_queued = proxy.link_queued();
    let lag_end = lag();
    let link_seconds = link_queued as f64 / THROTTLE as f64;
    proxy.set_mode(Mode::Forward);
    std::thread::sleep(Duration::from_secs(3));
    let (status, _) = client.terminate();
    assert!(status.success(), "v4l2rtmp: {status}");
    let _dir = nginx.stop();
    let drop_lines = client
        .log
        .since(mark)
        .iter()
        .filter(|(_, l)| l.contains("the network is slower than the video"))
        .map(|(_, l)| l.clone())
        .collect::<Vec<_>>();
    let summary = client
        .log
        .all()
        .iter()
        .rev()
        .find(|(_, l)| l.contains("frames dropped"))
        .map(|(_, l)| l.clone())
        .unwrap_or_default();
    let rec = check_recording(&recording, "through the throttled link");
    eprintln!(
        "throttle: {rate_free:.2} Mbit/s unthrottled, {rate_throttled:.2} Mbit/s through the \
         1.5 Mbit/s throttle; frames recorded per 3 s window while throttled {windows:?}; client \
         send queue at the end of the throttle {queued:?} bytes"
    );
    eprintln!(
        "throttle: VmRSS before {rss_before} kB, max while throttled {rss_max} kB (+{} kB); {} drop \
         log lines, last: {:?}; summary: {summary}",
        rss_max - rss_before,
        drop_lines.len(),
        drop_lines.last()
    );
    eprintln!(
        "throttle: the server's lag behind real time: {lag_before:.2} s before the throttle, {lag_end:.2} s \
         at its end (max {lag_max:.2} s); the bytes the client's kernel still held then would take \
         {:.1} s at 1.5 Mbit/s, the {link_queued} bytes the link held {link_seconds:.1} s",
        queued.iter().sum::<u64>() as f64 / THROTTLE as f64
    );
    eprintln!("throttle: recording {rec:?}");
    assert!(
        windows.iter().all(|&n| n > 0),
        "frames reached the server in every 3 s window while throttled: {windows:?}"
    );
    assert!(!drop_lines.is_empty(), "the client dropped frames");
    assert!(
        !rec.gaps.is_empty(),
        "the recording has gaps where GOPs were dropped"
    );
    assert!(
        rec.gaps_end_at_keyframes,
        "frames were dropped by whole GOPs: every gap ends at a keyframe: {:?}",
        rec.gaps
    );
    // --queue-time 2 s bounds the stream time held back once the link is saturated; allow 1 s
    // more for the frame being sent and the 32 KiB the kernel may hold unsent. What the emulated
    // link itself holds (its queue, beyond the client's control) is not the client's lag: it is
    // measured and taken off. While the throttle begins the transient may reach 2 s more.
    assert!(
        lag_end - link_seconds <= 3.0,
        "the stream fell {lag_end:.1} s behind real time through a link slower than the video \
         (--queue-time 2 s; {link_seconds:.1} s of it in the link): frames wait in the kernel's \
         send buffer instead of being dropped"
    );
    assert!(lag_max <= 5.0, "the lag peaked at {lag_max:.1} s");
    assert!(
        rss_max <= rss_before + 16 * 1024,
        "VmRSS grew from {rss_before} kB to {rss_max} kB"
    );
    drop(source);
}

// ---------------------------------------------------------------------------------------------
// 9. SIGTERM while the link is stalled
// ---------------------------------------------------------------------------------------------

/// The proxy stops reading (Stall), then black-holes, the link; once the client's socket is full
/// SIGTERM ends the process within a second, with exit code 0.
#[test]
fn sigterm_while_the_link_is_stalled_exits_within_a_second() {
    let units = access_units(&live_clip(), 300);
    for mode in [Mode::Stall, Mode::BlackHole] {
        let work = TempDir::new("faults-sigterm");
        let source = LiveSource::start(work.path(), units.clone());
        let nginx = Nginx::start();
        let proxy = Proxy::to_port(nginx.port);
        let mut client = Client::spawn("sigterm", source.path(), &proxy.url("live", KEY), &[]);
        client
            .log
            .wait_for("publishing to", 0, Duration::from_secs(15));
        std::thread::sleep(Duration::from_secs(1));
        proxy.set_mode(mode);
        // Wait until the client's bytes stop going through and its send queue stops growing.
        let mut queue = 0;
        let stalled = Instant::now();
        loop {
            std::thread::sleep(Duration::from_millis(500));
            let now: u64 = send_queues_to(proxy.port).iter().sum();
            if (now > 0 && now == queue) || stalled.elapsed() > Duration::from_secs(6) {
                queue = now;
                break;
            }
            queue = now;
        }
        let (status, took) = client.terminate();
        eprintln!(
            "sigterm ({mode:?}): client send queue {queue} bytes after {:.1} s; exited {status} in {:.3} s",
            seconds(stalled.elapsed()),
            seconds(took)
        );
        assert!(status.success(), "{mode:?}: v4l2rtmp: {status}");
        assert!(
            took < Duration::from_secs(1),
            "{mode:?}: SIGTERM took {took:?}"
        );
        assert_eq!(
            client.log.count("publishing to"),
            1,
            "{mode:?}: the link was not replaced"
        );
        drop(proxy);
        drop(source);
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers for the requirement tests below
// ---------------------------------------------------------------------------------------------

/// A seeded generator for the moments and kinds of faults (xorshift64*), so that a failing run
/// can be repeated.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Sleeps until `when` (at once if it has passed).
fn sleep_until(when: Instant) {
    std::thread::sleep(when.saturating_duration_since(Instant::now()));
}

/// Polls `path` until it holds a complete keyframe or `deadline` passes.
fn keyframe_recorded_by(path: &Path, deadline: Instant) -> Option<Instant> {
    loop {
        if recorded_frames(path).iter().any(|t| t.keyframe) {
            return Some(Instant::now());
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// What one recording holds, found without asserting (so that every recording of a long test
/// is looked at before it fails).
#[derive(Debug)]
struct RecordingReport {
    name: String,
    frames: usize,
    keyframes: usize,
    starts_with_keyframe: bool,
    /// Timestamp holes longer than 1.5 frame intervals: (index of the frame after it, hole ms,
    /// whether that frame is a keyframe).
    holes: Vec<(usize, u32, bool)>,
    /// Frames whose timestamp is not above the one before.
    backwards: usize,
    /// `ffmpeg -v error -i REC -f null -` (one decoding thread), on the complete tags.
    decode_errors: String,
}

impl RecordingReport {
    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.frames == 0 {
            problems.push(format!("{}: no frame recorded", self.name));
            return problems;
        }
        if !self.starts_with_keyframe {
            problems.push(format!("{}: starts with an inter frame", self.name));
        }
        let bad: Vec<_> = self.holes.iter().filter(|h| !h.2).collect();
        if !bad.is_empty() {
            problems.push(format!(
                "{}: a timestamp hole followed by an inter frame: (frame, hole ms) {:?}",
                self.name,
                bad.iter().map(|h| (h.0, h.1)).collect::<Vec<_>>()
            ));
        }
        if self.backwards > 0 {
            problems.push(format!(
                "{}: {} timestamps go back or repeat",
                self.name, self.backwards
            ));
        }
        if !self.decode_errors.is_empty() {
            let first: Vec<&str> = self.decode_errors.lines().take(3).collect();
            problems.push(format!(
                "{}: does not decode cleanly: {}",
                self.name,
                first.join(" / ")
            ));
        }
        problems
    }
}

fn inspect_recording(path: &Path) -> RecordingReport {
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let bytes = fs::read(path).unwrap_or_default();
    let (tags, complete) = flv_tags(&bytes);
    let frames: Vec<Tag> = tags
        .into_iter()
        .filter(|t| t.kind == 9 && t.avc_packet_type == 1)
        .collect();
    let mut holes = Vec::new();
    let mut backwards = 0;
    for (i, pair) in frames.windows(2).enumerate() {
        if pair[1].timestamp_ms <= pair[0].timestamp_ms {
            backwards += 1;
        } else {
            let step = pair[1].timestamp_ms - pair[0].timestamp_ms;
            // 1.5 frame intervals at 30 fps is 50 ms; FLV timestamps are whole milliseconds.
            if f64::from(step) > 1.5 * 1000.0 / 30.0 {
                holes.push((i + 1, step, pair[1].keyframe));
            }
        }
    }
    let decode_errors = if frames.is_empty() {
        String::new()
    } else {
        let copy = path.with_extension("complete.flv");
        fs::write(&copy, &bytes[..complete]).unwrap();
        let output = Command::new("ffmpeg")
            .args([
                "-hide_banner",
                "-nostdin",
                "-v",
                "error",
                "-threads",
                "1",
                "-i",
            ])
            .arg(&copy)
            .args(["-f", "null", "-"])
            .output()
            .expect("run ffmpeg");
        let _ = fs::remove_file(&copy);
        let mut errors = String::from_utf8_lossy(&output.stderr).into_owned();
        if !output.status.success() && errors.is_empty() {
            errors = format!("ffmpeg failed: {}", output.status);
        }
        errors
    };
    RecordingReport {
        name,
        frames: frames.len(),
        keyframes: frames.iter().filter(|t| t.keyframe).count(),
        starts_with_keyframe: frames.first().is_some_and(|t| t.keyframe),
        holes,
        backwards,
        decode_errors,
    }
}

/// Bytes of an unfinished message (or chunk) at the end of what a client sent on a connection:
/// more than 0 when the connection was cut in the middle of a message.
fn unfinished_at_end(capture: &[u8]) -> usize {
    const HANDSHAKE: usize = 1 + 1536 + 1536;
    if capture.len() <= HANDSHAKE {
        return 0;
    }
    let mut reader = ChunkReader::new(16 << 20);
    let mut pos = HANDSHAKE;
    while let Ok((n, _)) = reader.decode(&capture[pos..]) {
        if n == 0 {
            break;
        }
        pos += n;
    }
    reader.buffered() + (capture.len() - pos)
}

// ---------------------------------------------------------------------------------------------
// 10. Forty resets: every recording starts with a keyframe and decodes
// ---------------------------------------------------------------------------------------------

/// 1080p30 at about 4 Mbit/s with a keyframe every 2 s (the same clip as the throttle test:
/// a frame queue of `--queue-time 2000` holds about one GOP, so a reconnect lands near the edge
/// of what the queue keeps), live from a FIFO, through the fault proxy; the connection is reset
/// 40 times at seeded random moments, default options otherwise.
///
/// Each connection is first left publishing for 2.1 s, longer than the 2 s after which a
/// connection that took a keyframe proves the server healthy (`HEALTHY_AFTER` in
/// src/supervisor/core.rs), so that each reset is answered by a reconnect within 0.5 s and 40
/// of them fit in the test's time; 40 x (2.1 s + the reconnect) is also why this test takes
/// about 105 s. Then one of three resets, chosen by the seeded generator:
/// - just after a keyframe (when the camera's next one is due within 0.5 s): 0 to 80 ms after the
///   camera wrote it, a reset (RST);
/// - mid-frame: a reset after a random 1 to 150,000 more client bytes (most of them fall inside
///   a message; the test counts how many did);
/// - anytime: a reset 0 to 400 ms later.
///
/// nginx records each publishing connection to a file of its own (`record_unique on`: each
/// file is named after the second its publish began, and publishes here are more than 2 s
/// apart); every recording must start with a keyframe, have no timestamp hole (over 1.5 frame
/// intervals) followed by an inter frame, and decode with no error from ffmpeg. nginx-rtmp's
/// recorder skips inter frames until the first keyframe by itself, so the proxy's capture of
/// each connection is also checked: the sequence header, then a keyframe, before any inter frame.
/// Recordings are checked while the stream goes on (each one once the next publish proves it
/// closed), with a single decoding thread.
#[test]
fn forty_resets_every_recording_starts_with_a_keyframe_and_decodes() {
    const RESETS: usize = 40;
    const SEED: u64 = 0x5eed_4040;
    const HEALTHY: Duration = Duration::from_millis(2100);
    const GOP: Duration = Duration::from_secs(2);
    const RECONNECT_LIMIT: Duration = Duration::from_secs(10);
    let started = Instant::now();
    let units = access_units(&clip_1080p30_60s(), 900);
    let work = TempDir::new("faults-forty");
    let source = LiveSource::start(work.path(), units);
    let nginx = Nginx::start_recording_each_publish();
    let proxy = Proxy::to_port(nginx.port).with_capture(16 << 20);
    let mut client = Client::spawn(
        "forty",
        source.path(),
        &proxy.url("live", KEY),
        &["--queue-time", "2000"],
    );
    let mut rng = Rng::new(SEED);
    let (to_check, checking) = std::sync::mpsc::channel::<PathBuf>();
    let checker = std::thread::spawn(move || {
        checking
            .iter()
            .map(|path| inspect_recording(&path))
            .collect::<Vec<_>>()
    });
    let mut sent_to_check = 0;
    let mut connection_problems: Vec<String> = Vec::new();
    let mut connections_with_video = 0;
    let mut cut_mid_message = 0;
    let mut check_closed = |proxy: &Proxy, problems: &mut Vec<String>| {
        for (capture, _) in proxy.take_closed() {
            let videos = sent_video(&capture);
            if videos.is_empty() {
                continue;
            }
            connections_with_video += 1;
            let n = connections_with_video;
            if unfinished_at_end(&capture) > 0 {
                cut_mid_message += 1;
            }
            if videos.len() < 2 || videos[0] != (0x17, 0) || videos[1] != (0x17, 1) {
                problems.push(format!(
                    "connection {n}: does not start with the sequence header and a keyframe: {:x?}",
                    &videos[..videos.len().min(3)]
                ));
            }
        }
    };

    let (mut line, mut published_at, _) =
        client
            .log
            .wait_for("publishing to", 0, Duration::from_secs(15));
    let mut kinds = [0usize; 3];
    let mut reconnects: Vec<f64> = Vec::new();
    let mut stuck: Option<String> = None;
    for k in 1..=RESETS {
        sleep_until(published_at + HEALTHY);
        let now = Instant::now();
        let keyframe_soon = source
            .last_keyframe_written()
            .is_some_and(|last| last + GOP <= now + Duration::from_millis(500));
        let kind = if keyframe_soon {
            0
        } else {
            1 + rng.below(2) as usize
        };
        kinds[kind] += 1;
        let mark = client.log.len();
        match kind {
            0 => {
                let written = source.next_keyframe_written();
                sleep_until(written + Duration::from_millis(rng.below(81)));
                proxy.reset_all();
            }
            1 => {
                let armed = proxy.cut_after(1 + rng.below(150_000));
                assert_eq!(armed.len(), 1, "reset {k}: one connection to cut");
            }
            _ => {
                std::thread::sleep(Duration::from_millis(rng.below(401)));
                proxy.reset_all();
            }
        }
        let reset_at = Instant::now();
        match client
            .log
            .try_wait_until("publishing to", line + 1, reset_at + RECONNECT_LIMIT)
        {
            Some((i, at, _)) => {
                reconnects.push(since(reset_at, at));
                line = i;
                published_at = at;
            }
            None => {
                let delays: Vec<f64> = client
                    .log
                    .since(mark)
                    .iter()
                    .filter_map(|(_, l)| retry_delay(l))
                    .collect();
                stuck = Some(format!(
                    "reset {k}: not publishing again within {RECONNECT_LIMIT:?} (retry delays \
                     logged since the reset: {delays:?} s)"
                ));
                break;
            }
        }
        check_closed(&proxy, &mut connection_problems);
        // Every recording but the newest is closed: the newest publish of the key replaced it.
        let recordings = nginx.recordings(KEY);
        for path in recordings
            .iter()
            .take(recordings.len().saturating_sub(1))
            .skip(sent_to_check)
        {
            to_check.send(path.clone()).unwrap();
            sent_to_check += 1;
        }
    }
    // The last connection shows a little more than its start.
    std::thread::sleep(Duration::from_millis(500));
    let (status, _) = client.terminate();
    let publishes = client.log.count("publishing to");
    let dir = nginx.stop();
    let deadline = Instant::now() + Duration::from_secs(5);
    while proxy.live_connections() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    check_closed(&proxy, &mut connection_problems);
    let recordings = recordings_in(&dir.path().join("rec"), KEY);
    for path in recordings.iter().skip(sent_to_check) {
        to_check.send(path.clone()).unwrap();
    }
    drop(to_check);
    let reports = checker.join().unwrap();
    drop(source);

    let frames: usize = reports.iter().map(|r| r.frames).sum();
    let keyframes: usize = reports.iter().map(|r| r.keyframes).sum();
    let holes: usize = reports.iter().map(|r| r.holes.len()).sum();
    let bad_holes: usize = reports
        .iter()
        .map(|r| r.holes.iter().filter(|h| !h.2).count())
        .sum();
    let not_decoding = reports
        .iter()
        .filter(|r| !r.decode_errors.is_empty())
        .count();
    let (rmin, rmedian, rmax) = if reconnects.is_empty() {
        (f64::NAN, f64::NAN, f64::NAN)
    } else {
        min_median_max(&reconnects)
    };
    eprintln!(
        "forty resets: {} resets done ({} just after a keyframe, {} after N more bytes, {} \
         anytime); {connections_with_video} connections carried video, {cut_mid_message} of them \
         cut inside a message; reconnect (reset -> publishing): min {rmin:.3} s, median \
         {rmedian:.3} s, max {rmax:.3} s; {publishes} publishes",
        kinds.iter().sum::<usize>(),
        kinds[0],
        kinds[1],
        kinds[2],
    );
    eprintln!(
        "forty resets: {} recordings, {frames} frames ({keyframes} keyframes), {holes} holes \
         ({bad_holes} followed by an inter frame), {not_decoding} recordings with decoding \
         errors; {:.1} s in all",
        reports.len(),
        seconds(started.elapsed())
    );
    for report in &reports {
        if !report.problems().is_empty() || !report.holes.is_empty() {
            eprintln!("  {report:?}");
        }
    }

    let mut problems: Vec<String> = Vec::new();
    problems.extend(stuck);
    if !status.success() {
        problems.push(format!("v4l2rtmp: {status}"));
    }
    if reports.len() != publishes {
        problems.push(format!(
            "{} recordings for {publishes} publishes: one file per publishing connection expected",
            reports.len()
        ));
    }
    problems.extend(connection_problems);
    problems.extend(reports.iter().flat_map(|r| r.problems()));
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
    assert_eq!(kinds.iter().sum::<usize>(), RESETS);
}

// ---------------------------------------------------------------------------------------------
// 11. A black hole that leaves a stale publisher behind
// ---------------------------------------------------------------------------------------------

/// The commonest Wi-Fi or LTE fault: the link black-holes (no FIN, no reset) for longer than
/// the stall timeout, the client gives up on its connection, and when the link returns the
/// server still holds that connection, and its publisher, for a while: it answers a new publish
/// of the same key with `NetStream.Publish.BadName (Already publishing)` until it notices.
///
/// The proxy's plain BlackHole-then-Forward does not reproduce this with nginx-rtmp: on loopback
/// the client's close reaches the proxy's kernel at once, and when the proxy forwards again the
/// server reads the end of the stream and drops the publisher at once (the black-hole test above
/// publishes again 0.05 s after the link returns). So the proxy runs with stale connections
/// ([`Proxy::with_stale_connections`]): a connection whose client gave up during the black hole
/// is held open towards nginx, silent, and reset 2.5 s after the link returns. That reset stands
/// for the server's next retransmission (or ping: `ping 5s` here) reaching the client's host,
/// which no longer knows the connection and answers RST; after an 8 s outage, with the
/// retransmission timer backed off exponentially, that comes anywhere from at once to several
/// seconds after the link returns. nginx's log and the client's show the "Already publishing"
/// answers; the test prints how many.
///
/// The requirement: the client publishes again (its "publishing to" line, and a keyframe in a
/// recording of the new connection) within 5 s of the link returning; that recording starts with
/// a keyframe and decodes. With `--stall-timeout 3`, default options otherwise.
#[test]
fn stale_publisher_after_a_black_hole_publishes_again_within_5_s_of_the_link_returning() {
    const STALE_HOLD: Duration = Duration::from_millis(2500);
    const BLACK_HOLE: Duration = Duration::from_secs(8);
    const REQUIRED_S: f64 = 5.0;
    const WAIT_AT_MOST: Duration = Duration::from_secs(15);
    let units = access_units(&live_clip(), 300);
    let work = TempDir::new("faults-stale");
    let source = LiveSource::start(work.path(), units);
    let nginx = Nginx::start_recording_each_publish();
    let proxy = Proxy::to_port(nginx.port).with_stale_connections(STALE_HOLD);
    let mut client = Client::spawn(
        "stale",
        source.path(),
        &proxy.url("live", KEY),
        &["--stall-timeout", "3"],
    );
    client
        .log
        .wait_for("publishing to", 0, Duration::from_secs(15));
    let first = loop {
        if let Some(path) = nginx.recordings(KEY).first() {
            break path.clone();
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    wait_for_keyframe(&first, Duration::from_secs(10));
    // Healthy for longer than HEALTHY_AFTER (2 s) before the fault.
    std::thread::sleep(Duration::from_millis(2500));
    let before: Vec<PathBuf> = nginx.recordings(KEY);

    let mark = client.log.len();
    proxy.set_mode(Mode::BlackHole);
    let cut = Instant::now();
    let (gave_up_line, gave_up_at, failure) =
        client
            .log
            .wait_for("retrying in", mark, Duration::from_secs(30));
    // Black-holed for 8 s, and for 2 s at least after the client gave up.
    sleep_until((cut + BLACK_HOLE).max(gave_up_at + Duration::from_secs(2)));
    let returned = Instant::now();
    proxy.set_mode(Mode::Forward);
    eprintln!(
        "stale: the client gave up {:.3} s into the black hole ({failure}); the link returned \
         after {:.3} s",
        since(cut, gave_up_at),
        since(cut, returned)
    );

    let published =
        client
            .log
            .try_wait_until("publishing to", gave_up_line + 1, returned + WAIT_AT_MOST);
    // A keyframe in a recording that began after the link returned.
    let new_recording = || {
        nginx
            .recordings(KEY)
            .into_iter()
            .find(|path| !before.contains(path) && recorded_frames(path).iter().any(|t| t.keyframe))
    };
    let deadline = published
        .as_ref()
        .map_or(returned + WAIT_AT_MOST, |p| p.1 + Duration::from_secs(10));
    let keyframe = loop {
        if let Some(path) = new_recording() {
            break Some((path, Instant::now()));
        }
        if Instant::now() >= deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    if keyframe.is_some() {
        // A little more of the new connection for the decoding check.
        std::thread::sleep(Duration::from_secs(2));
    }
    let (status, _) = client.terminate();
    let released = proxy.stale_released();
    let stale = proxy.stale_connections();
    let nginx_log = nginx.error_log();
    let dir = nginx.stop();
    drop(source);
    let already_nginx = nginx_log.matches("already publishing").count();
    let already_client = client
        .log
        .since(gave_up_line)
        .iter()
        .filter(|(_, l)| l.contains("Already publishing"))
        .count();
    let publisher_released = released.first().copied().flatten();
    let published_after = published.as_ref().map(|p| since(returned, p.1));
    let keyframe_after = keyframe.as_ref().map(|k| since(returned, k.1));
    let show = |x: Option<f64>| {
        x.map_or(format!("not within {WAIT_AT_MOST:?}"), |s| {
            format!("{s:.3} s")
        })
    };
    eprintln!(
        "stale: {stale} stale connections; nginx lost the stale publisher {} after the link \
         returned; 'already publishing' {already_nginx} times in nginx's log, {already_client} \
         times in the client's; publishing again {} and a keyframe recorded {} after the link \
         returned ({} after nginx lost the stale publisher)",
        show(publisher_released.map(|r| signed(returned, r))),
        show(published_after),
        show(keyframe_after),
        show(match (publisher_released, &published) {
            (Some(r), Some(p)) => Some(signed(r, p.1)),
            _ => None,
        }),
    );

    assert!(status.success(), "v4l2rtmp: {status}");
    assert!(
        publisher_released.is_some(),
        "the proxy did not hold the first connection as a stale publisher (stale connections: \
         {stale}): the fault was not reproduced"
    );
    let published_after = published_after.unwrap_or_else(|| {
        panic!(
            "not publishing again within {WAIT_AT_MOST:?} of the link returning (required: \
             {REQUIRED_S} s; 'Already publishing' {already_client} times in the client's log)"
        )
    });
    assert!(
        published_after <= REQUIRED_S,
        "publishing again {published_after:.3} s after the link returned, more than {REQUIRED_S} s"
    );
    let (path, _) = keyframe.expect("a keyframe recorded after publishing again");
    let keyframe_after = keyframe_after.unwrap();
    assert!(
        keyframe_after <= REQUIRED_S,
        "the first keyframe recorded {keyframe_after:.3} s after the link returned, more than \
         {REQUIRED_S} s"
    );
    let path = dir.path().join("rec").join(path.file_name().unwrap());
    let rec = check_recording(&path, "after the stale publisher");
    eprintln!("stale: the recording after it: {rec:?}");
}

// ---------------------------------------------------------------------------------------------
// 12. Four restarts, five seconds apart, with default options
// ---------------------------------------------------------------------------------------------

/// nginx is killed (SIGKILL) and a new nginx listens on the same port right away, four times,
/// 5 s apart: each instance is up for 5 s (the first one from its first keyframe recorded), then
/// killed. The client runs with default options (no `--backoff-*`): after losing a connection
/// that was healthy (it took a keyframe and lasted longer than 2 s), it must be back within
/// 1.5 s of the server listening again, every time, not only the first.
///
/// Measured for each restart from the moment the new nginx listens (/proc/net/tcp, polled every
/// 2 ms) to the client's "publishing to" line, and to the first keyframe in the new instance's
/// recording (its FLV file polled every 5 ms). Each figure is waited for until the instance's
/// 5 s are over (then it is "not within 5 s" and the instance is killed all the same).
#[test]
fn four_restarts_five_seconds_apart_are_each_back_within_1_5_s() {
    const RESTARTS: usize = 4;
    const APART: Duration = Duration::from_secs(5);
    const REQUIRED_S: f64 = 1.5;
    let units = access_units(&live_clip(), 300);
    let work = TempDir::new("faults-four-restarts");
    let source = LiveSource::start(work.path(), units);
    let port = free_port();
    let mut nginx = Nginx::start_on(port);
    let mut client = Client::spawn("four-restarts", source.path(), &nginx.url("live", KEY), &[]);
    client
        .log
        .wait_for("publishing to", 0, Duration::from_secs(15));
    let mut up_since = wait_for_keyframe(&nginx.recording(KEY), Duration::from_secs(10));
    let mut dirs = Vec::new();
    // (publishing, first keyframe recorded), in seconds after nginx listened.
    let mut figures: Vec<(Option<f64>, Option<f64>)> = Vec::new();
    for restart in 1..=RESTARTS {
        sleep_until(up_since + APART);
        let mark = client.log.len();
        dirs.push(nginx.kill());
        nginx = Nginx::start_on(port);
        let listening = nginx.listening_at;
        let deadline = listening + APART;
        let published = client
            .log
            .try_wait_until("publishing to", mark, deadline)
            .map(|(_, at, _)| since(listening, at));
        let keyframe =
            keyframe_recorded_by(&nginx.recording(KEY), deadline).map(|at| since(listening, at));
        let delays: Vec<f64> = client
            .log
            .since(mark)
            .iter()
            .filter_map(|(_, l)| retry_delay(l))
            .collect();
        let show = |x: Option<f64>| x.map_or("not within 5 s".to_string(), |s| format!("{s:.3} s"));
        eprintln!(
            "restart {restart}: publishing {} and first keyframe recorded {} after nginx listened \
             (retry delays logged: {delays:?} s)",
            show(published),
            show(keyframe)
        );
        figures.push((published, keyframe));
        up_since = listening;
    }
    sleep_until(up_since + APART);
    let (status, _) = client.terminate();
    dirs.push(nginx.stop());
    drop(source);
    let show = |x: &Option<f64>| x.map_or("-".to_string(), |s| format!("{s:.2}"));
    eprintln!(
        "four restarts: publishing after nginx listened [{}] s; first keyframe recorded [{}] s \
         (required: within {REQUIRED_S} s each)",
        figures
            .iter()
            .map(|f| show(&f.0))
            .collect::<Vec<_>>()
            .join(", "),
        figures
            .iter()
            .map(|f| show(&f.1))
            .collect::<Vec<_>>()
            .join(", "),
    );
    assert!(status.success(), "v4l2rtmp: {status}");
    let late: Vec<String> = figures
        .iter()
        .enumerate()
        .filter(|(_, f)| {
            !(f.0.is_some_and(|s| s <= REQUIRED_S) && f.1.is_some_and(|s| s <= REQUIRED_S))
        })
        .map(|(i, f)| {
            format!(
                "restart {}: publishing {}, first keyframe {}",
                i + 1,
                f.0.map_or("not within 5 s".into(), |s| format!("{s:.3} s")),
                f.1.map_or("not within 5 s".into(), |s| format!("{s:.3} s"))
            )
        })
        .collect();
    assert!(
        late.is_empty(),
        "not back within {REQUIRED_S} s of nginx listening: {}",
        late.join("; ")
    );
    for (i, dir) in dirs.iter().enumerate() {
        let path = dir.path().join("rec").join(format!("{KEY}.flv"));
        check_recording(&path, &format!("nginx instance {i}"));
    }
}

// ---------------------------------------------------------------------------------------------
// 13. Enhanced RTMP ReconnectRequest: never down to plain RTMP, never credentials to another host
// ---------------------------------------------------------------------------------------------

/// The payload type of video messages, and whether one carries a frame (not the sequence header).
fn is_video_frame(message: &v4l2rtmp::rtmp::chunk::Message) -> bool {
    message.header.type_id == 9 && message.payload.get(1) == Some(&1)
}

/// `onStatus(NetConnection.Connect.ReconnectRequest)` with a `tcUrl`.
fn send_reconnect_request(peer: &mut ScriptedPeer, tc_url: &str) {
    let mut request = info("status", "NetConnection.Connect.ReconnectRequest", "moving");
    if let Value::Object(props) = &mut request {
        props.push(("tcUrl".to_string(), Value::String(tc_url.to_string())));
    }
    peer.send_command(0, &status(request));
}

/// Connections to the [`PlainTrap`]: when each came, and what the client sent on it.
type Trapped = Arc<Mutex<Vec<(Instant, Vec<u8>)>>>;

/// A plain TCP listener that should never get a connection: it counts any that come and, to show
/// what would have leaked, plays an RTMP server up to the first video message and keeps every
/// byte the client sent.
struct PlainTrap {
    port: u16,
    seen: Trapped,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl PlainTrap {
    fn start() -> PlainTrap {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let seen = seen.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let Some(mut peer) =
                        ScriptedPeer::accept_within(&listener, Duration::from_millis(50))
                    else {
                        continue;
                    };
                    let index = {
                        let mut seen = seen.lock().unwrap();
                        seen.push((Instant::now(), Vec::new()));
                        seen.len() - 1
                    };
                    peer.accept_publish(|_, message| message.header.type_id == 9);
                    seen.lock().unwrap()[index].1 = peer.transcript().to_vec();
                }
            })
        };
        PlainTrap {
            port,
            seen,
            stop,
            thread: Some(thread),
        }
    }

    fn seen(&self) -> Vec<(Instant, Vec<u8>)> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for PlainTrap {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// What the scripted RTMPS server saw.
enum Seen {
    /// It sent the ReconnectRequest.
    Requested(Instant),
    /// A video frame came on the second connection, which published this name.
    SecondPublish(Instant, Option<String>),
}

/// An RTMPS server (nginx's stream module terminating TLS in front of a scripted RTMP server)
/// asks the publisher, with an Enhanced RTMP ReconnectRequest, to move to
/// `rtmp://127.0.0.1:PORT/live`, plain RTMP, where PORT is a listener of the test's own. Moving
/// would send the stream key (and, to a server that asks for authentication, the user name and
/// the password's response) in clear text. Required: no connection ever reaches PORT (watched for
/// 4 s after the request at least), the client logs a warning that it refused to leave TLS,
/// and it reconnects to the original server over TLS (the scripted server sees a second
/// publish of the key). The URL carries credentials (`rtmps://camuser:s3cret@...`); none of
/// them, nor the key, can reach the plain listener since it gets no connection at all.
#[test]
fn rtmps_reconnect_request_to_plain_rtmp_opens_no_plain_connection() {
    const SECRET_KEY: &str = "k3ysecret";
    const REQUEST_AFTER: usize = 45;
    let started = Instant::now();
    let work = TempDir::new("faults-rtmps-redirect");
    let pki = TestPki::new(work.path(), &["localhost", "127.0.0.1"]);
    let backend = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let backend_port = backend.local_addr().unwrap().port();
    let tls = TlsTerminator::start(&pki.server_certificate, &pki.server_key, backend_port);
    let trap = PlainTrap::start();
    let tc_url = format!("rtmp://127.0.0.1:{}/live", trap.port);
    let (events, seen) = std::sync::mpsc::channel::<Seen>();
    let server = std::thread::spawn(move || {
        let mut peer = ScriptedPeer::accept_within(&backend, Duration::from_secs(30))
            .expect("the client connects over TLS");
        let mut frames = 0;
        peer.accept_publish(|peer, message| {
            if is_video_frame(message) {
                frames += 1;
                if frames == REQUEST_AFTER {
                    send_reconnect_request(peer, &tc_url);
                    let _ = events.send(Seen::Requested(Instant::now()));
                }
            }
            false
        });
        let Some(mut peer) = ScriptedPeer::accept_within(&backend, Duration::from_secs(20)) else {
            return;
        };
        let mut frames = 0;
        peer.accept_publish(|peer, message| {
            if is_video_frame(message) {
                frames += 1;
                if frames == 1 {
                    let name = peer.published().map(str::to_string);
                    let _ = events.send(Seen::SecondPublish(Instant::now(), name));
                }
            }
            frames >= 30
        });
    });
    let units = access_units(&live_clip(), 300);
    let source = LiveSource::start(work.path(), units);
    let url = format!(
        "rtmps://camuser:s3cret@127.0.0.1:{}/live/{SECRET_KEY}",
        tls.port
    );
    let mut client = Client::spawn(
        "rtmps-redirect",
        source.path(),
        &url,
        &["--ca-file", pki.ca_certificate.to_str().unwrap()],
    );
    let requested_at = match seen.recv_timeout(Duration::from_secs(30)) {
        Ok(Seen::Requested(at)) => at,
        _ => panic!("the scripted RTMPS server did not get {REQUEST_AFTER} frames"),
    };
    let mark = client
        .log
        .all()
        .iter()
        .position(|(when, _)| *when >= requested_at)
        .unwrap_or(client.log.len());
    let second = match seen.recv_timeout(Duration::from_secs(15)) {
        Ok(Seen::SecondPublish(at, name)) => Some((at, name)),
        _ => None,
    };
    // Watch the plain listener for 4 s after the request at least.
    sleep_until(requested_at + Duration::from_secs(4));
    let (status, _) = client.terminate();
    drop(source);
    let _ = server.join();
    let trapped = trap.seen();
    drop(trap);
    let lines = client.log.since(mark);
    let tls_warnings: Vec<&String> = lines
        .iter()
        .map(|(_, l)| l)
        .filter(|l| level(l) == "WARN" && l.contains("TLS"))
        .collect();
    eprintln!(
        "rtmps redirect: {} connections to the plain listener{}; TLS warnings after the request: \
         {tls_warnings:?}; second publish over TLS {}; {:.1} s in all",
        trapped.len(),
        trapped
            .iter()
            .map(|(at, bytes)| format!(
                " ({:.3} s after the request, {} bytes, key {}, user {})",
                signed(requested_at, *at),
                bytes.len(),
                if contains(bytes, SECRET_KEY) {
                    "sent in clear text"
                } else {
                    "not seen"
                },
                if contains(bytes, "camuser") {
                    "sent in clear text"
                } else {
                    "not seen"
                },
            ))
            .collect::<String>(),
        second
            .as_ref()
            .map_or("none".to_string(), |(at, name)| format!(
                "{:.3} s after the request, publishing {name:?}",
                signed(requested_at, *at)
            )),
        seconds(started.elapsed())
    );
    assert!(status.success(), "v4l2rtmp: {status}");
    assert!(
        trapped.is_empty(),
        "{} connection(s) reached the plain RTMP listener after an RTMPS server's \
         ReconnectRequest (the key {} in clear text)",
        trapped.len(),
        if trapped.iter().any(|(_, b)| contains(b, SECRET_KEY)) {
            "went"
        } else {
            "did not go"
        }
    );
    assert!(
        !tls_warnings.is_empty(),
        "no warning that the client refused to move from RTMPS to plain RTMP"
    );
    let (_, name) = second.expect("the client published to the original server again, over TLS");
    assert_eq!(
        name.as_deref(),
        Some(SECRET_KEY),
        "the second publish's name"
    );
}

/// One connection to the other host, as its scripted server saw it.
#[derive(Debug)]
struct OtherHostConnection {
    app: String,
    tc_url: String,
    published: Option<String>,
    transcript: Vec<u8>,
}

/// Reads up to the client's `connect`; returns its app and tcUrl (None if it closed first).
fn read_connect(peer: &mut ScriptedPeer) -> Option<(String, String)> {
    while let Some(message) = peer.next_message() {
        if message.header.type_id == 20 {
            let values = amf0::decode_all(&message.payload).unwrap();
            if values[0].as_str() == Some("connect") {
                let field = |name: &str| {
                    values[2]
                        .get(name)
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string()
                };
                return Some((field("app"), field("tcUrl")));
            }
        }
    }
    None
}

fn refuse_connect(peer: &mut ScriptedPeer, description: &str) {
    peer.send_command(
        0,
        &scripted::error(
            1.0,
            info("error", "NetConnection.Connect.Rejected", description),
        ),
    );
}

/// A plain RTMP server (scripted, 127.0.0.1) with `rtmp://camuser:s3cret@127.0.0.1:PA/live/KEY`
/// asks the publisher to move to another host, `rtmp://127.0.0.2:PB/live` (another address of
/// the loopback, so the host differs, not only the port). The other host takes the stream (the
/// key must arrive there: the redirect works), drops it after 1.5 s, and asks the client that
/// comes back for Adobe authentication (`code=403 need auth; authmod=adobe`), as a server that
/// wants to harvest credentials would. A client that carried the URL's user and password to the
/// other host would connect again at once with `?authmod=adobe&user=camuser`. Required: no
/// connect to the other host names an `authmod` or a `user`, and neither the user nor the
/// password appear in any byte it received (watched for 4 s after the challenge).
#[test]
fn reconnect_request_to_another_host_does_not_carry_credentials() {
    const SECRET_KEY: &str = "k3ysecret";
    let started = Instant::now();
    let origin = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let origin_port = origin.local_addr().unwrap().port();
    let other = std::net::TcpListener::bind("127.0.0.2:0").expect("bind 127.0.0.2");
    let other_port = other.local_addr().unwrap().port();
    let tc_url = format!("rtmp://127.0.0.2:{other_port}/live");
    let origin_server = std::thread::spawn(move || {
        let Some(mut peer) = ScriptedPeer::accept_within(&origin, Duration::from_secs(30)) else {
            return false;
        };
        let mut frames = 0;
        let mut requested = false;
        peer.accept_publish(|peer, message| {
            if is_video_frame(message) {
                frames += 1;
                if frames == 45 {
                    send_reconnect_request(peer, &tc_url);
                    requested = true;
                }
            }
            false
        });
        requested
    });
    let other_server = std::thread::spawn(move || {
        let mut seen: Vec<OtherHostConnection> = Vec::new();
        let mut challenged_at = None;
        // 1. The redirected stream: taken for 1.5 s (longer than a refusal in disguise), dropped.
        let Some(mut peer) = ScriptedPeer::accept_within(&other, Duration::from_secs(30)) else {
            return (seen, challenged_at);
        };
        let mut frames = 0;
        let connect = peer.accept_publish(|_, message| {
            frames += usize::from(is_video_frame(message));
            frames >= 45
        });
        let field = |name: &str| {
            connect
                .get(2)
                .and_then(|c| c.get(name))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        seen.push(OtherHostConnection {
            app: field("app"),
            tc_url: field("tcUrl"),
            published: peer.published().map(str::to_string),
            transcript: peer.transcript().to_vec(),
        });
        drop(peer);
        // 2. The client comes back: the server asks for authentication.
        let Some(mut peer) = ScriptedPeer::accept_within(&other, Duration::from_secs(15)) else {
            return (seen, challenged_at);
        };
        if let Some((app, tc_url)) = read_connect(&mut peer) {
            refuse_connect(
                &mut peer,
                "[ AccessManager.Reject ] : [ code=403 need auth; authmod=adobe ] : ",
            );
            challenged_at = Some(Instant::now());
            seen.push(OtherHostConnection {
                app,
                tc_url,
                published: None,
                transcript: peer.transcript().to_vec(),
            });
        }
        // 3. Whatever comes within 4 s: a client carrying credentials answers at once.
        let until = Instant::now() + Duration::from_secs(4);
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            let Some(mut peer) = ScriptedPeer::accept_within(&other, left) else {
                break;
            };
            if let Some((app, tc_url)) = read_connect(&mut peer) {
                refuse_connect(
                    &mut peer,
                    "[ AccessManager.Reject ] : [ authmod=adobe ] : ?reason=authfailed",
                );
                seen.push(OtherHostConnection {
                    app,
                    tc_url,
                    published: None,
                    transcript: peer.transcript().to_vec(),
                });
            }
        }
        (seen, challenged_at)
    });
    let units = access_units(&live_clip(), 300);
    let work = TempDir::new("faults-other-host");
    let source = LiveSource::start(work.path(), units);
    let url = format!("rtmp://camuser:s3cret@127.0.0.1:{origin_port}/live/{SECRET_KEY}");
    let mut client = Client::spawn("other-host", source.path(), &url, &[]);
    let (seen, challenged_at) = other_server.join().unwrap();
    let (status, _) = client.terminate();
    drop(source);
    let requested = origin_server.join().unwrap();
    eprintln!(
        "other host: {} connections there{}; {:.1} s in all",
        seen.len(),
        seen.iter()
            .map(|c| format!(
                "\n  app {:?}, tcUrl {:?}, published {:?}, {} bytes",
                c.app,
                c.tc_url,
                c.published,
                c.transcript.len()
            ))
            .collect::<String>(),
        seconds(started.elapsed())
    );
    let warnings: Vec<String> = client
        .log
        .all()
        .into_iter()
        .map(|(_, l)| l)
        .filter(|l| level(l) == "WARN" && (l.contains("password") || l.contains("credential")))
        .collect();
    eprintln!("other host: the client's warnings about credentials: {warnings:?}");
    assert!(status.success(), "v4l2rtmp: {status}");
    assert!(requested, "the origin server sent its ReconnectRequest");
    assert!(
        !seen.is_empty(),
        "the client did not move to the other host"
    );
    assert_eq!(
        seen[0].published.as_deref(),
        Some(SECRET_KEY),
        "the key went to the other host with the stream"
    );
    assert!(
        challenged_at.is_some(),
        "the client did not come back to the other host after it dropped the stream"
    );
    for (i, c) in seen.iter().enumerate() {
        for field in [&c.app, &c.tc_url] {
            assert!(
                !field.contains("authmod") && !field.contains("user="),
                "connection {} to the other host carried credentials: app {:?}, tcUrl {:?}",
                i + 1,
                c.app,
                c.tc_url
            );
        }
        assert!(
            !contains(&c.transcript, "camuser") && !contains(&c.transcript, "s3cret"),
            "connection {} to the other host: the user or password in its bytes",
            i + 1
        );
    }
}
