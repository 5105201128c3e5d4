//! Test support: real RTMP servers started on 127.0.0.1 by the tests themselves (nginx with
//! libnginx-mod-rtmp, `ffmpeg -listen 1`), clips generated with ffmpeg, and read-back with ffprobe.
//!
//! The tools are required: a missing one fails the test with the command that installs it
//! (`scripts/test` installs them), rather than skipping silently. Only the shared Raspberry Pi clip
//! may be absent, and the tests that use it say so and return.
#![allow(dead_code)]

pub mod alloc;
pub mod proxy;
pub mod scripted;

use std::fs;
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_v4l2rtmp");
pub const RTMP_MODULE: &str = "/usr/lib/nginx/modules/ngx_rtmp_module.so";
pub const STREAM_MODULE: &str = "/usr/lib/nginx/modules/ngx_stream_module.so";

/// The real Raspberry Pi recording (1920x1088 coded, cropped to 1080), if present.
pub fn pi_clip() -> Option<PathBuf> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/clips/pi-hw-1080p-20frames.h264");
    if path.exists() {
        Some(path)
    } else {
        eprintln!("SKIP: {} is absent (it is present in CI)", path.display());
        None
    }
}

pub fn require_tool(tool: &str) {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
        .unwrap_or(false);
    assert!(found, "{tool} is not installed: run scripts/test (apt-get install ffmpeg nginx libnginx-mod-rtmp)");
}

/// A fresh directory under target/, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("{tag}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether something listens on 127.0.0.1:`port`, from /proc (connecting would use up
/// `ffmpeg -listen 1`'s single connection).
pub fn is_listening(port: u16) -> bool {
    let needle = format!(":{port:04X} ");
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|file| {
        fs::read_to_string(file)
            .map(|table| {
                table.lines().skip(1).any(|line| {
                    let fields: Vec<&str> = line.split_whitespace().collect();
                    fields.len() > 3
                        && format!("{} ", fields[1]).contains(&needle)
                        && fields[3] == "0A"
                })
            })
            .unwrap_or(false)
    })
}

pub fn wait_listening(port: u16, child: &mut Child, what: &str) {
    let start = Instant::now();
    while !is_listening(port) {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited before listening on {port}: {status}");
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{what} did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// nginx with the RTMP module, on 127.0.0.1, recording every stream of application `live`.
/// Application `closed` denies publishing with an access rule (nginx-rtmp accepts the publish,
/// then closes the connection); application `auth` asks an `on_publish` HTTP callback, served by
/// the same nginx, which refuses every key with 403 (nginx-rtmp closes without a reply).
pub struct Nginx {
    pub port: u16,
    /// With [`Nginx::start_with_tls`]: the port where nginx's stream module terminates TLS and
    /// forwards to `port` (RTMPS).
    pub tls_port: Option<u16>,
    /// When /proc/net/tcp first showed `port` listening (polled every 2 ms).
    pub listening_at: Instant,
    pub dir: TempDir,
    child: Child,
}

impl Nginx {
    pub fn start() -> Nginx {
        Self::start_with_chunk_size(4096)
    }

    pub fn start_with_chunk_size(server_chunk_size: u32) -> Nginx {
        Self::start_with(server_chunk_size, None, free_port())
    }

    /// On a given port (a server restarted where its clients expect it).
    pub fn start_on(port: u16) -> Nginx {
        Self::start_with(4096, None, port)
    }

    /// Recording each publishing connection to a file of its own (`record_unique on`: nginx-rtmp
    /// names it KEY-UNIXSECONDS.flv, so two publishes of the same key must be a second apart);
    /// [`Nginx::recordings`] lists them.
    pub fn start_recording_each_publish() -> Nginx {
        Self::start_with_options(4096, None, free_port(), true)
    }

    /// With RTMPS on `tls_port`: TLS terminated by nginx's stream module with `certificate` and
    /// `key`, in front of the RTMP server.
    pub fn start_with_tls(certificate: &Path, key: &Path) -> Nginx {
        Self::start_with(4096, Some((certificate, key)), free_port())
    }

    fn start_with(server_chunk_size: u32, tls: Option<(&Path, &Path)>, port: u16) -> Nginx {
        Self::start_with_options(server_chunk_size, tls, port, false)
    }

    fn start_with_options(
        server_chunk_size: u32,
        tls: Option<(&Path, &Path)>,
        port: u16,
        record_unique: bool,
    ) -> Nginx {
        require_tool("nginx");
        assert!(
            Path::new(RTMP_MODULE).exists(),
            "{RTMP_MODULE} missing: apt-get install libnginx-mod-rtmp"
        );
        let dir = TempDir::new("nginx");
        let http_port = free_port();
        let tls_port = tls.map(|_| free_port());
        let (stream_module, stream_block) = match (tls, tls_port) {
            (Some((certificate, key)), Some(tls_port)) => {
                assert!(
                    Path::new(STREAM_MODULE).exists(),
                    "{STREAM_MODULE} missing: apt-get install libnginx-mod-stream"
                );
                (
                    format!("load_module {STREAM_MODULE};"),
                    format!(
                        "stream {{\n    server {{\n        listen 127.0.0.1:{tls_port} ssl;\n        ssl_certificate {};\n        \
                         ssl_certificate_key {};\n        proxy_pass 127.0.0.1:{port};\n    }}\n}}\n",
                        certificate.display(),
                        key.display()
                    ),
                )
            }
            _ => (String::new(), String::new()),
        };
        fs::create_dir_all(dir.path().join("rec")).unwrap();
        fs::create_dir_all(dir.path().join("logs")).unwrap();
        let conf = format!(
            "daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
load_module {RTMP_MODULE};
{stream_module}
events {{ worker_connections 64; }}
{stream_block}
http {{
    access_log off;
    server {{
        listen 127.0.0.1:{http_port};
        location /on_publish {{ return 403; }}
    }}
}}
rtmp {{
    server {{
        listen 127.0.0.1:{port};
        chunk_size {server_chunk_size};
        # nginx-rtmp drops publishers whose messages exceed max_message (default 1M).
        max_message 16M;
        ping 5s;
        application live {{
            live on;
            record all;
            record_path {d}/rec;
            record_unique {record_unique};
        }}
        application closed {{
            live on;
            deny publish all;
        }}
        application auth {{
            live on;
            on_publish http://127.0.0.1:{http_port}/on_publish;
        }}
    }}
}}
",
            d = dir.path().display(),
            record_unique = if record_unique { "on" } else { "off" },
        );
        let mut child = spawn_nginx(dir.path(), &conf, "nginx");
        wait_listening(port, &mut child, "nginx");
        let listening_at = Instant::now();
        if let Some(tls_port) = tls_port {
            wait_listening(tls_port, &mut child, "nginx (TLS)");
        }
        Nginx {
            port,
            tls_port,
            listening_at,
            dir,
            child,
        }
    }

    pub fn url(&self, app: &str, key: &str) -> String {
        format!("rtmp://127.0.0.1:{}/{app}/{key}", self.port)
    }

    pub fn recording(&self, key: &str) -> PathBuf {
        self.dir.path().join("rec").join(format!("{key}.flv"))
    }

    /// With [`Nginx::start_recording_each_publish`]: the recordings of `key` so far, oldest first.
    pub fn recordings(&self, key: &str) -> Vec<PathBuf> {
        recordings_in(&self.dir.path().join("rec"), key)
    }

    pub fn error_log(&self) -> String {
        fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }

    /// SIGKILL: a crash. The directory (with what was recorded) is kept.
    pub fn kill(mut self) -> TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let dir = TempDir(self.dir.0.clone());
        std::mem::forget(std::mem::replace(&mut self.dir, TempDir(PathBuf::new())));
        dir
    }

    /// Stops nginx gracefully, which closes its recordings.
    pub fn stop(mut self) -> TempDir {
        let _ = Command::new("kill")
            .arg("-QUIT")
            .arg(self.child.id().to_string())
            .status();
        let start = Instant::now();
        while self.child.try_wait().unwrap().is_none() {
            if start.elapsed() > Duration::from_secs(10) {
                let _ = self.child.kill();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let dir = TempDir(self.dir.0.clone());
        std::mem::forget(std::mem::replace(&mut self.dir, TempDir(PathBuf::new())));
        dir
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `record_unique on` recordings of `key` in `dir` (KEY-UNIXSECONDS.flv), oldest first.
pub fn recordings_in(dir: &Path, key: &str) -> Vec<PathBuf> {
    let prefix = format!("{key}-");
    let mut found: Vec<(u64, PathBuf)> = fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let seconds = name
                        .strip_prefix(&prefix)?
                        .strip_suffix(".flv")?
                        .parse()
                        .ok()?;
                    Some((seconds, e.path()))
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found.into_iter().map(|(_, path)| path).collect()
}

/// nginx's stream module alone, terminating TLS on 127.0.0.1:`port` and forwarding the plain
/// bytes to 127.0.0.1:`upstream`: RTMPS in front of a server of the test's own (a scripted peer).
pub struct TlsTerminator {
    pub port: u16,
    pub dir: TempDir,
    child: Child,
}

impl TlsTerminator {
    pub fn start(certificate: &Path, key: &Path, upstream: u16) -> TlsTerminator {
        require_tool("nginx");
        assert!(
            Path::new(STREAM_MODULE).exists(),
            "{STREAM_MODULE} missing: apt-get install libnginx-mod-stream"
        );
        let dir = TempDir::new("tls-terminator");
        let port = free_port();
        let conf = format!(
            "daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
load_module {STREAM_MODULE};
events {{ worker_connections 64; }}
stream {{
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {certificate};
        ssl_certificate_key {key};
        proxy_pass 127.0.0.1:{upstream};
    }}
}}
",
            d = dir.path().display(),
            certificate = certificate.display(),
            key = key.display(),
        );
        let mut child = spawn_nginx(dir.path(), &conf, "nginx (TLS terminator)");
        wait_listening(port, &mut child, "nginx (TLS terminator)");
        TlsTerminator { port, dir, child }
    }

    pub fn error_log(&self) -> String {
        fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for TlsTerminator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `ffmpeg -listen 1 -i rtmp://127.0.0.1:PORT/live/KEY -c copy -f flv OUT`: FFmpeg as the server.
pub struct FfmpegListener {
    pub port: u16,
    pub dir: TempDir,
    child: Child,
}

impl FfmpegListener {
    pub fn start(key: &str) -> FfmpegListener {
        Self::start_with(key, &[])
    }

    /// With extra output options, e.g. `-copyts` to keep the publisher's timestamps.
    pub fn start_with(key: &str, output_options: &[&str]) -> FfmpegListener {
        require_tool("ffmpeg");
        let dir = TempDir::new("ffmpeg-listen");
        let port = free_port();
        let mut child = Command::new("ffmpeg")
            .args([
                "-hide_banner",
                "-loglevel",
                "error",
                "-nostdin",
                "-listen",
                "1",
                "-timeout",
                "30",
                "-i",
            ])
            .arg(format!("rtmp://127.0.0.1:{port}/live/{key}"))
            .args(output_options)
            .args(["-c", "copy", "-f", "flv"])
            .arg(dir.path().join("out.flv"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ffmpeg");
        wait_listening(port, &mut child, "ffmpeg -listen");
        FfmpegListener { port, dir, child }
    }

    pub fn url(&self, key: &str) -> String {
        format!("rtmp://127.0.0.1:{}/live/{key}", self.port)
    }

    /// Waits for FFmpeg to finish writing (it ends when the publisher closes).
    pub fn finish(mut self) -> (TempDir, PathBuf) {
        let start = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if start.elapsed() > Duration::from_secs(60) {
                let _ = self.child.kill();
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut stderr = String::new();
        if let Some(mut pipe) = self.child.stderr.take() {
            let _ = pipe.read_to_string(&mut stderr);
        }
        assert!(
            status.success(),
            "ffmpeg -listen failed: {status}\n{stderr}"
        );
        let out = self.dir.path().join("out.flv");
        let dir = TempDir(self.dir.0.clone());
        std::mem::forget(std::mem::replace(&mut self.dir, TempDir(PathBuf::new())));
        (dir, out)
    }
}

impl Drop for FfmpegListener {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs v4l2rtmp to completion (killed after `limit`).
pub fn run_v4l2rtmp(args: &[&str], stdin: Option<&[u8]>, limit: Duration) -> Output {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("RUST_LOG", "info");
    command.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut child = command.spawn().expect("start v4l2rtmp");
    let writer = stdin.map(|bytes| {
        let mut pipe = child.stdin.take().unwrap();
        let bytes = bytes.to_vec();
        std::thread::spawn(move || {
            use std::io::Write;
            let _ = pipe.write_all(&bytes);
        })
    });
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!(
                "v4l2rtmp ran longer than {limit:?}\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    if let Some(writer) = writer {
        let _ = writer.join();
    }
    child.wait_with_output().unwrap()
}

pub fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

pub fn assert_success(output: &Output) {
    assert!(
        output.status.success(),
        "v4l2rtmp failed: {}\n{}",
        output.status,
        stderr_of(output)
    );
}

pub fn exit_code(status: ExitStatus) -> i32 {
    status.code().unwrap_or(-1)
}

/// Generates (once per test run, shared between test binaries) an H.264 Annex-B clip with libx264,
/// without B-frames, as hardware encoders make them.
pub fn generated_clip(name: &str, ffmpeg_args: &[&str]) -> PathBuf {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    require_tool("ffmpeg");
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("clips");
    fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.h264"));
    if path.exists() {
        return path;
    }
    let partial = dir.join(format!("{name}.{}.partial", std::process::id()));
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y"])
        .args(ffmpeg_args)
        .args(["-f", "h264"])
        .arg(&partial)
        .status()
        .expect("run ffmpeg");
    assert!(status.success(), "ffmpeg could not generate {name}");
    fs::rename(&partial, &path).unwrap();
    path
}

/// 60 s of 1080p30 at about 4 Mbit/s, a keyframe every 2 s.
pub fn clip_1080p30_60s() -> PathBuf {
    generated_clip(
        "testsrc2-1080p30-60s-4M",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=1920x1080:rate=30",
            "-t",
            "60",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-bf",
            "0",
            "-g",
            "60",
            "-b:v",
            "4M",
            "-maxrate",
            "4M",
            "-bufsize",
            "4M",
            "-pix_fmt",
            "yuv420p",
        ],
    )
}

/// 4 s of 640x360 at 30 fps, a keyframe every second: quick tests.
pub fn clip_small() -> PathBuf {
    generated_clip(
        "testsrc2-360p30-4s",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=640x360:rate=30",
            "-t",
            "4",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-bf",
            "0",
            "-g",
            "30",
            "-pix_fmt",
            "yuv420p",
        ],
    )
}

/// 5 frames of 1080p noise at QP 1 (High profile; QP 0 would be lossless High 4:4:4): every
/// keyframe is several megabytes.
pub fn clip_huge_keyframes() -> PathBuf {
    generated_clip(
        "noise-1080p-qp1-5f",
        &[
            "-f",
            "lavfi",
            "-i",
            "nullsrc=size=1920x1080:rate=30,geq=lum='random(1)*255':cb=128:cr=128",
            "-frames:v",
            "5",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-qp",
            "0",
            "-bf",
            "0",
            "-g",
            "2",
            "-pix_fmt",
            "yuv420p",
        ],
    )
}

/// One packet as ffprobe reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct Packet {
    /// Presentation time in milliseconds.
    pub pts_ms: f64,
    pub dts_ms: f64,
    pub keyframe: bool,
    pub size: usize,
}

/// What ffprobe reads from a file: the video stream's size and every packet.
#[derive(Clone, Debug)]
pub struct Probe {
    pub codec: String,
    pub width: u32,
    pub height: u32,
    pub packets: Vec<Packet>,
}

pub fn ffprobe(path: &Path, extra: &[&str]) -> Probe {
    require_tool("ffprobe");
    let run = |entries: &str| -> String {
        let output = Command::new("ffprobe")
            .args(["-v", "error"])
            .args(extra)
            .args([
                "-select_streams",
                "v:0",
                "-show_entries",
                entries,
                "-of",
                "csv=p=0",
            ])
            .arg(path)
            .output()
            .expect("run ffprobe");
        assert!(
            output.status.success(),
            "ffprobe {}: {}",
            path.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    let stream = run("stream=codec_name,width,height");
    let fields: Vec<&str> = stream.lines().next().unwrap_or("").split(',').collect();
    assert_eq!(
        fields.len(),
        3,
        "no video stream in {}: {stream:?}",
        path.display()
    );
    let packets = run("packet=pts_time,dts_time,flags,size")
        .lines()
        .filter(|line| !line.is_empty())
        .map(|line| {
            let f: Vec<&str> = line.split(',').collect();
            let ms = |s: &str| s.parse::<f64>().map(|t| t * 1000.0).unwrap_or(f64::NAN);
            Packet {
                pts_ms: ms(f[0]),
                dts_ms: ms(f[1]),
                size: f[2].parse().unwrap(),
                keyframe: f[3].starts_with('K'),
            }
        })
        .collect();
    Probe {
        codec: fields[0].to_string(),
        width: fields[1].parse().unwrap(),
        height: fields[2].parse().unwrap(),
        packets,
    }
}

/// Decodes a file completely; returns ffmpeg's error output (empty when every frame decoded).
pub fn decode_errors(path: &Path) -> String {
    let output = Command::new("ffmpeg")
        .args(["-hide_banner", "-v", "error", "-nostdin", "-i"])
        .arg(path)
        .args(["-f", "null", "-"])
        .output()
        .expect("run ffmpeg");
    assert!(
        output.status.success(),
        "ffmpeg could not decode {}",
        path.display()
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The packets of a source Annex-B clip: how many, and which are keyframes.
pub fn source_keyframes(path: &Path) -> Vec<bool> {
    ffprobe(path, &[])
        .packets
        .iter()
        .map(|p| p.keyframe)
        .collect()
}

/// Asserts a read-back stream matches its source: every frame, keyframes in the same places, the
/// size, and timestamps monotonic and within 1 ms of `first_ms + i * 1000 / fps`.
pub fn assert_matches_source(
    readback: &Probe,
    source_keyframes: &[bool],
    width: u32,
    height: u32,
    fps: f64,
) {
    assert_eq!(readback.codec, "h264");
    assert_eq!(
        (readback.width, readback.height),
        (width, height),
        "resolution"
    );
    assert_eq!(
        readback.packets.len(),
        source_keyframes.len(),
        "every frame arrived"
    );
    let keyframes: Vec<bool> = readback.packets.iter().map(|p| p.keyframe).collect();
    assert_eq!(keyframes, source_keyframes, "keyframe positions");
    let first = readback.packets[0].dts_ms;
    let mut previous = f64::NEG_INFINITY;
    for (i, packet) in readback.packets.iter().enumerate() {
        assert!(
            packet.dts_ms > previous,
            "timestamps increase at packet {i}: {} after {previous}",
            packet.dts_ms
        );
        previous = packet.dts_ms;
        let expected = first + i as f64 * 1000.0 / fps;
        assert!(
            (packet.dts_ms - expected).abs() <= 1.0,
            "packet {i} at {} ms, expected {expected:.3} ms",
            packet.dts_ms
        );
        assert_eq!(packet.pts_ms, packet.dts_ms, "composition time 0");
    }
}

/// The lines a child writes to `pipe`, as they come.
pub fn log_lines(pipe: impl Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(pipe).lines().map_while(|l| l.ok()) {
            eprintln!("  | {line}");
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    receiver
}

/// Starts nginx with `conf` written to `dir`/nginx.conf, its prefix and error log in `dir`.
fn spawn_nginx(dir: &Path, conf: &str, what: &str) -> Child {
    let conf_path = dir.join("nginx.conf");
    fs::write(&conf_path, conf).unwrap();
    Command::new("nginx")
        .arg("-p")
        .arg(dir)
        .arg("-e")
        .arg(dir.join("error.log"))
        .arg("-c")
        .arg(&conf_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {what}: {e}"))
}

/// Waits for a line containing `needle`; panics after `limit`.
pub fn wait_for_line(
    lines: &std::sync::mpsc::Receiver<String>,
    needle: &str,
    limit: Duration,
) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return line,
            Ok(_) => continue,
            Err(_) => panic!("no log line containing {needle:?} within {limit:?}"),
        }
    }
}

/// Sends a signal (`INT`, `TERM`, `KILL`, ...) and waits for the child; returns its status.
pub fn stop(child: &mut Child, signal: &str) -> ExitStatus {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    child.wait().unwrap()
}

/// A certificate authority and a server certificate made with the openssl CLI, in `dir`.
pub struct TestPki {
    pub ca_certificate: PathBuf,
    pub server_certificate: PathBuf,
    pub server_key: PathBuf,
}

impl TestPki {
    /// A CA, and a certificate it signs for `names` (DNS names and IP addresses).
    pub fn new(dir: &Path, names: &[&str]) -> TestPki {
        require_tool("openssl");
        let run = |args: &[&str]| {
            let output = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .expect("run openssl");
            assert!(
                output.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        };
        run(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!(
                "/CN=v4l2rtmp test CA {}",
                dir.file_name().unwrap().to_string_lossy()
            ),
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ]);
        run(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            &format!("/CN={}", names[0]),
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ]);
        let alt_names: Vec<String> = names
            .iter()
            .map(|n| {
                if n.parse::<std::net::IpAddr>().is_ok() {
                    format!("IP:{n}")
                } else {
                    format!("DNS:{n}")
                }
            })
            .collect();
        fs::write(
            dir.join("ext.cnf"),
            format!("subjectAltName={}\n", alt_names.join(",")),
        )
        .unwrap();
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
            "-out",
            "server.pem",
        ]);
        TestPki {
            ca_certificate: dir.join("ca.pem"),
            server_certificate: dir.join("server.pem"),
            server_key: dir.join("server.key"),
        }
    }
}

/// A self-signed certificate made as self-hosted NVRs make theirs, `openssl req -x509` with the
/// defaults: RSA 2048, basicConstraints CA:TRUE, a common name and no subjectAltName.
pub struct SelfSigned {
    pub certificate: PathBuf,
    pub key: PathBuf,
    /// As `openssl x509 -fingerprint -sha256` prints it: `1C:EF:...`, 32 bytes.
    pub fingerprint: String,
}

impl SelfSigned {
    pub fn new(dir: &Path, common_name: &str) -> SelfSigned {
        require_tool("openssl");
        let run = |args: &[&str]| -> String {
            let output = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .expect("run openssl");
            assert!(
                output.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            String::from_utf8_lossy(&output.stdout).into_owned()
        };
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={common_name}"),
            "-keyout",
            "self-signed.key",
            "-out",
            "self-signed.pem",
        ]);
        // "sha256 Fingerprint=1C:EF:..."
        let printed = run(&[
            "x509",
            "-in",
            "self-signed.pem",
            "-noout",
            "-fingerprint",
            "-sha256",
        ]);
        let fingerprint = printed
            .trim()
            .split_once('=')
            .map(|(_, hex)| hex.to_string())
            .unwrap_or_else(|| panic!("openssl printed {printed:?}"));
        assert_eq!(fingerprint.len(), 32 * 3 - 1, "{fingerprint}");
        SelfSigned {
            certificate: dir.join("self-signed.pem"),
            key: dir.join("self-signed.key"),
            fingerprint,
        }
    }
}
