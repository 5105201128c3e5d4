//! Where the H.264 comes from, behind one interface: a V4L2 camera (see [`camera`]), or an
//! Annex-B byte stream from a regular file, a FIFO, a pipe, stdin, or the stdout of a supervised
//! child process (`exec:`, see [`exec`]).
//!
//! The supervisor's shell waits on every kind of input the same way, with
//! [`Input::next_event`], and hears one of three things ([`InputEvent`]): bytes of a stream were
//! read straight into the buffer it gave (the frame store's ring, where the store finds the access
//! units in place and stamps them with their arrival time), a camera has a frame (taken with
//! [`Input::next_frame`]: a whole access unit with its capture time, still in the driver's
//! memory), or the input ended, in the way particular to its kind (a file or a pipe ended, a
//! FIFO's writer left, a child exited and how). What is particular to a kind of input lives here:
//! how it is read, what its end means, how it is closed and opened again ([`Input::close`],
//! [`Input::open_again`]), whether it can be asked for a keyframe.
//!
//! A regular file is read directly (reads from the page cache do not block for long, and epoll
//! refuses regular files). Pipes and FIFOs are switched to non-blocking mode and read when tokio
//! reports them readable, so waiting for input never stops the supervisor from answering the
//! server. When a named FIFO's writer closes it, the supervisor flushes the last frame and opens
//! the FIFO again for the next writer (a camera program restarted), so the stream goes on; the
//! source watchdog notices silence. Pipes (stdin) end when their writer closes them. A camera that
//! fails or disappears is closed and opened again by the supervisor after a backoff.
//!
//! Invariants: reads go straight into the caller's buffer (the frame store's ring), never through an
//! intermediate copy; a camera's frame is borrowed from the driver's buffer until the next one is
//! taken; the end of a byte stream is reported once, with what it means for its kind.

pub mod adts_audio;
pub mod audio;
pub mod camera;
pub mod encoder;
pub mod exec;
pub mod poller;

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;
use std::time::Duration;

use tokio::net::unix::pipe;

use crate::config::{Config, FrameRate};
use crate::error::{Error, Fault, Result};
use crate::media::annexb::{split_nals, AccessUnit, NalRef};
use crate::supervisor::core::{SourceEvent, SourceKind};
use crate::v4l2::{BufType, Device, FourCC, Fraction};
use camera::{CameraSettings, CameraSource, CaptureKind};
use encoder::{EncoderSettings, EncoderSource};
use exec::ExecSource;

/// How long a child gets to stop after SIGTERM before SIGKILL.
pub const CHILD_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

/// An open input.
pub enum Input {
    /// A regular file: read synchronously.
    File { file: File, name: String },
    /// A pipe or FIFO, in non-blocking mode.
    Stream {
        pipe: pipe::Receiver,
        name: String,
        /// A named FIFO, which can be opened again; stdin cannot.
        reopen: bool,
    },
    /// A V4L2 camera; `None` between a failure and the reopen.
    Device {
        source: Option<VideoDevice>,
        spec: Box<DeviceSpec>,
        name: String,
    },
    /// The stdout of a child process (`exec:CMD ARGS`), restarted when it exits.
    Exec {
        /// The running child; `None` between its exit and its restart.
        child: Option<Box<ExecSource>>,
        argv: Vec<String>,
        name: String,
    },
}

/// An open V4L2 source.
pub enum VideoDevice {
    /// A camera that gives H.264.
    Camera(Box<CameraSource>),
    /// A raw camera feeding a V4L2 H.264 encoder.
    Encoder(Box<EncoderSource>),
}

/// How to open a V4L2 source again.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceSpec {
    pub camera: CameraSettings,
    /// For a raw camera (or when an encoder or a pixel format is given).
    pub encoder: EncoderSettings,
    /// The encoder was asked for: use it even if the camera gives H.264 itself.
    pub force_encoder: bool,
    pub keyframe_interval_ms: u64,
    /// Encoder options given, which a camera that gives H.264 itself does not use.
    pub encoder_options: Vec<&'static str>,
    /// It has been opened and set up once: a later failure to set it up is the device's state
    /// (a v4l2loopback camera whose writer left has no capture queue until one comes back), to
    /// be waited for, not a configuration error.
    pub worked: bool,
}

/// What waiting on an input gave ([`Input::next_event`]).
#[derive(Debug)]
pub enum InputEvent {
    /// `n` bytes of a byte stream were read into the buffer given (never 0).
    Read(usize),
    /// A camera has a frame ready: take it with [`Input::next_frame`].
    FrameReady,
    /// The byte stream ended: [`Input::ended`] says what that means for its kind.
    Ended,
}

/// A timed access unit from a V4L2 source, its bytes in the driver's buffer.
pub struct DeviceFrame<'a> {
    pub au: AccessUnit<'a>,
    /// CLOCK_MONOTONIC time of capture, when the driver gives it.
    pub timestamp: Option<Duration>,
    /// Frames the driver dropped before this one.
    pub skipped: u32,
}

impl DeviceSpec {
    pub fn from_config(config: &Config) -> DeviceSpec {
        let options = &config.device;
        let mut camera = CameraSettings::new(&config.input);
        camera.size = options.size;
        camera.fps = match config.frame_rate {
            FrameRate::Fixed {
                numerator,
                denominator,
            } => Some(Fraction::new(numerator, denominator)),
            FrameRate::Auto => None,
        };
        camera.rotate = options.rotate;
        camera.hflip = options.hflip;
        camera.vflip = options.vflip;
        let encoder = EncoderSettings {
            camera: camera.path.clone(),
            encoder: options.encoder.clone(),
            codec: FourCC::H264,
            size: options.size,
            fps: camera.fps,
            pixel_format: options.pixel_format.as_deref().and_then(FourCC::parse),
            bitrate: options.bitrate,
            keyframe_interval_frames: None,
            profile: options.profile,
            level: options.level,
            rotate: options.rotate,
            hflip: options.hflip,
            vflip: options.vflip,
            ..EncoderSettings::default()
        };
        let defaults = crate::config::DeviceOptions::default();
        let encoder_options = [
            ("--bitrate", options.bitrate.is_some()),
            (
                "--keyframe-interval",
                options.keyframe_interval_ms != defaults.keyframe_interval_ms,
            ),
            ("--profile", options.profile.is_some()),
            ("--level", options.level.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, given)| given.then_some(name))
        .collect();
        DeviceSpec {
            camera,
            encoder,
            force_encoder: options.encoder.is_some() || options.pixel_format.is_some(),
            keyframe_interval_ms: options.keyframe_interval_ms,
            encoder_options,
            worked: false,
        }
    }

    fn open(&self) -> Result<VideoDevice> {
        let kind = camera::capture_kind(&self.camera.path)?;
        if kind == CaptureKind::H264 && !self.force_encoder {
            if !self.encoder_options.is_empty() {
                log::warn!(
                    "{} gives H.264 itself: {} apply to an encoder and are ignored (its own \
                     controls are in `v4l2rtmp devices`)",
                    self.camera.path.display(),
                    self.encoder_options.join(", ")
                );
            }
            return Ok(VideoDevice::Camera(Box::new(CameraSource::open(
                &self.camera,
            )?)));
        }
        let mut settings = self.encoder.clone();
        let fps = settings
            .fps
            .or_else(|| current_frame_rate(&settings.camera));
        let frames = keyframe_interval_frames(self.keyframe_interval_ms, fps);
        if fps.is_none() {
            log::warn!(
                "{}: the camera does not say its frame rate; a keyframe every {frames} frames \
                 assumes 30 fps (give --fps)",
                self.camera.path.display()
            );
        }
        settings.keyframe_interval_frames = Some(frames);
        // EncoderSource::open logs what it negotiated.
        Ok(VideoDevice::Encoder(Box::new(EncoderSource::open(
            &settings,
        )?)))
    }
}

/// The camera's frame rate, if it says.
fn current_frame_rate(path: &std::path::Path) -> Option<Fraction> {
    let device = Device::open(path).ok()?;
    let capture: BufType = device.capabilities().capture_type()?;
    device.frame_rate(capture).ok().flatten()
}

/// Frames between keyframes for an interval in milliseconds (30 fps when the rate is unknown).
pub fn keyframe_interval_frames(interval_ms: u64, fps: Option<Fraction>) -> u32 {
    let (num, den) = fps.map_or((30, 1), |f| (u64::from(f.num), u64::from(f.den.max(1))));
    let frames = (interval_ms * num + 500 * den) / (1000 * den);
    frames.clamp(1, u64::from(u32::MAX)) as u32
}

impl VideoDevice {
    fn name(&self) -> &str {
        match self {
            VideoDevice::Camera(camera) => camera.name(),
            VideoDevice::Encoder(encoder) => encoder.name(),
        }
    }
}

impl Input {
    /// Opens the configured input. Must be called within a tokio runtime.
    ///
    /// A camera that is missing (not plugged in yet) or fails to open for a reason of its own
    /// (busy, an I/O error) gives an input that is down: [`Input::is_down`], and the supervisor
    /// opens it with [`Input::respawn`] until it works. A camera that cannot do what the
    /// configuration asks is an error.
    pub async fn open_config(config: &Config) -> Result<Input> {
        if is_device_path(&config.input) {
            let mut spec = Box::new(DeviceSpec::from_config(config));
            let name = config.input.clone();
            if !spec.camera.path.exists() {
                log::warn!("{name} does not exist (yet): waiting for the camera");
                return Ok(Input::Device {
                    source: None,
                    spec,
                    name,
                });
            }
            return match spec.open() {
                Ok(source) => {
                    spec.worked = true;
                    Ok(Input::Device {
                        name: source.name().to_string(),
                        source: Some(source),
                        spec,
                    })
                }
                Err(e) if e.fault() == Fault::Input => {
                    log::warn!("{e}: waiting for the camera");
                    Ok(Input::Device {
                        source: None,
                        spec,
                        name,
                    })
                }
                Err(e) => Err(e),
            };
        }
        Self::open(&config.input).await
    }

    /// Opens `path` (`-` is stdin) as a byte stream. Must be called within a tokio runtime.
    pub async fn open(path: &str) -> Result<Input> {
        if let Some(command) = path.strip_prefix("exec:") {
            let argv = ExecSource::parse_command(command)?;
            let child = Box::new(ExecSource::spawn(&argv)?);
            let name = child.name().to_string();
            return Ok(Input::Exec {
                child: Some(child),
                argv,
                name,
            });
        }
        if path != "-" {
            let metadata = std::fs::metadata(path)
                .map_err(|e| Error::io(Fault::Input, format!("cannot open {path}"), e))?;
            if metadata.file_type().is_fifo() {
                // Non-blocking, so opening does not wait for a writer; Linux reports no hang-up on
                // a fresh FIFO until a writer has come and gone, so waiting costs nothing.
                let pipe = pipe::OpenOptions::new().open_receiver(path).map_err(|e| {
                    Error::io(Fault::Input, format!("cannot open the FIFO {path}"), e)
                })?;
                return Ok(Input::Stream {
                    pipe,
                    name: path.to_string(),
                    reopen: true,
                });
            }
        }
        let (file, name) = if path == "-" {
            let fd: OwnedFd = io::stdin()
                .as_fd()
                .try_clone_to_owned()
                .map_err(|e| Error::io(Fault::Input, "cannot use stdin", e))?;
            (File::from(fd), "stdin".to_string())
        } else {
            let file = File::open(path)
                .map_err(|e| Error::io(Fault::Input, format!("cannot open {path}"), e))?;
            (file, path.to_string())
        };
        let metadata = file
            .metadata()
            .map_err(|e| Error::io(Fault::Input, format!("cannot stat {name}"), e))?;
        if metadata.is_dir() {
            return Err(Error::input(format!("{name} is a directory")));
        }
        if metadata.is_file() {
            return Ok(Input::File { file, name });
        }
        let pipe = pipe::Receiver::from_file(file).map_err(|e| {
            Error::io(
                Fault::Input,
                format!("{name} is neither a regular file nor a pipe or FIFO"),
                e,
            )
        })?;
        Ok(Input::Stream {
            pipe,
            name,
            reopen: false,
        })
    }

    pub fn name(&self) -> &str {
        match self {
            Input::File { name, .. }
            | Input::Stream { name, .. }
            | Input::Exec { name, .. }
            | Input::Device { name, .. } => name,
        }
    }

    /// Whether the input is waiting to be started again: a child that exited, a device that
    /// failed.
    pub fn is_down(&self) -> bool {
        matches!(
            self,
            Input::Exec { child: None, .. } | Input::Device { source: None, .. }
        )
    }

    /// Whether the input gives a byte stream, read into a buffer that [`Input::next_event`] is
    /// given; a camera gives whole frames in its driver's buffers instead.
    pub fn reads_bytes(&self) -> bool {
        !matches!(self, Input::Device { .. })
    }

    /// Waits until the input has something for the flow: reads a byte stream into `buf` (an
    /// empty `buf` waits for ever: the store has no room, and the flow frees some first), waits
    /// for a camera's next frame, or reports the stream's end. Between a child's exit and its
    /// restart, or a camera's failure and its reopen, it never resolves. Cancel-safe: nothing is
    /// lost if the future is dropped (the shell waits on signals and the socket beside it).
    pub async fn next_event(&mut self, buf: &mut [u8]) -> Result<InputEvent> {
        if !self.reads_bytes() {
            return self.device_wait().await.map(|()| InputEvent::FrameReady);
        }
        if buf.is_empty() {
            return std::future::pending().await;
        }
        match self.read(buf).await? {
            0 => Ok(InputEvent::Ended),
            n => Ok(InputEvent::Read(n)),
        }
    }

    /// After [`InputEvent::Ended`]: what the end of this byte stream means. A FIFO's writer left
    /// (another may come), a child exited (waited for, bounded by [`CHILD_GRACE`], to say how), a
    /// file or a pipe ended. Not cancel-safe: a child's report would be lost, so it is awaited
    /// on its own, not beside other waits.
    pub async fn ended(&mut self) -> SourceEvent {
        match self {
            Input::Stream { reopen: true, .. } => SourceEvent::WriterGone,
            Input::Exec { child, .. } => {
                let report = match child.take() {
                    Some(child) => Some(child.wait(CHILD_GRACE).await),
                    None => None,
                };
                SourceEvent::Exited {
                    ran_for: report.as_ref().map(|r| r.ran_for).unwrap_or_default(),
                    how: report.map(|r| r.to_string()).unwrap_or_default(),
                }
            }
            Input::File { .. } | Input::Stream { .. } | Input::Device { .. } => SourceEvent::Ended,
        }
    }

    /// The camera's next frame, if one is ready; never blocks (a byte stream has none: its
    /// access units are found in the store). `nals` receives the NAL units found in it. The
    /// frame returned before goes back to the driver first.
    pub fn next_frame<'a>(
        &'a mut self,
        nals: &'a mut Vec<NalRef>,
    ) -> Result<Option<DeviceFrame<'a>>> {
        let Input::Device {
            source: Some(source),
            ..
        } = self
        else {
            return Ok(None);
        };
        let (data, timestamp, skipped, flagged_keyframe) = match source {
            VideoDevice::Camera(camera) => match camera.next_frame()? {
                Some(frame) => (frame.data, frame.timestamp, frame.skipped, frame.keyframe),
                None => return Ok(None),
            },
            // The encoder's CAPTURE buffers carry the OUTPUT buffer's timestamp: the camera's.
            VideoDevice::Encoder(encoder) => match encoder.next_frame()? {
                Some(frame) => (frame.data, Some(frame.timestamp), 0, frame.keyframe),
                None => return Ok(None),
            },
        };
        nals.clear();
        split_nals(data, nals);
        let au = AccessUnit { data, nals };
        // Keyframes are taken from the NAL types; the driver's flag is only a check.
        if flagged_keyframe && !au.is_idr() {
            log::debug!("a buffer flagged as a keyframe holds no IDR picture");
        }
        Ok(Some(DeviceFrame {
            au,
            timestamp,
            skipped,
        }))
    }

    /// Waits until the V4L2 source may have a frame; never resolves while it is down.
    async fn device_wait(&mut self) -> Result<()> {
        match self {
            Input::Device {
                source: Some(source),
                ..
            } => match source {
                VideoDevice::Camera(camera) => camera.wait().await,
                VideoDevice::Encoder(encoder) => encoder.wait().await,
            },
            _ => std::future::pending().await,
        }
    }

    /// Whether the source can be asked for a keyframe (a V4L2 encoder with FORCE_KEY_FRAME).
    pub fn can_force_keyframe(&self) -> bool {
        matches!(self, Input::Device { source: Some(source), .. }
            if matches!(source, VideoDevice::Encoder(e) if e.can_force_keyframe()))
    }

    /// Asks the source for a keyframe now (a new connection wants a picture at once); false
    /// when it cannot.
    pub fn force_keyframe(&mut self) -> Result<bool> {
        match self {
            Input::Device {
                source: Some(source),
                ..
            } => match source {
                VideoDevice::Encoder(encoder) => encoder.force_keyframe(),
                VideoDevice::Camera(_) => Ok(false),
            },
            _ => Ok(false),
        }
    }

    /// Closes a V4L2 source that failed; [`Input::respawn`] opens it again.
    pub fn device_failed(&mut self) {
        if let Input::Device { source, spec, .. } = self {
            if let Some(VideoDevice::Encoder(encoder)) = source {
                if encoder.is_zero_copy() && encoder.delivered() == 0 && spec.encoder.dmabuf {
                    // The encoder never produced a frame from the camera's buffers: it may not
                    // be able to read them (a vmalloc camera into a dma-contig encoder). Copy.
                    log::warn!(
                        "{}: no frame came out while the encoder read the camera's buffers \
                         directly (DMABUF); copying frames from now on",
                        encoder.name()
                    );
                    spec.encoder.dmabuf = false;
                }
            }
            *source = None;
        }
    }

    /// Whether the input is a camera whose device node is missing (unplugged).
    pub fn device_missing(&self) -> bool {
        matches!(self, Input::Device { spec, .. } if !spec.camera.path.exists())
    }

    /// Starts the child again after it exited.
    pub fn respawn(&mut self) -> Result<()> {
        match self {
            Input::Exec { child, argv, name } => {
                let started = Box::new(ExecSource::spawn(argv)?);
                *name = started.name().to_string();
                *child = Some(started);
            }
            Input::Device { source, spec, name } => {
                // Closed before it is opened again: a camera is opened by one user at a time.
                *source = None;
                let opened = spec.open().map_err(|e| {
                    if spec.worked && e.fault() == Fault::Config {
                        Error::input(e.message().to_string())
                    } else {
                        e
                    }
                })?;
                spec.worked = true;
                *name = opened.name().to_string();
                *source = Some(opened);
            }
            _ => {}
        }
        Ok(())
    }

    /// Stops a child (SIGTERM to its process group, SIGKILL after the grace period).
    pub async fn shutdown(&mut self) {
        if let Input::Exec { child, .. } = self {
            if let Some(child) = child.take() {
                let name = child.name().to_string();
                let report = child.stop(CHILD_GRACE).await;
                log::info!("{name} stopped: {report}");
            }
        }
    }

    /// The kind of input, as the supervisor's policy sees it.
    pub fn kind(&self) -> SourceKind {
        match self {
            Input::File { .. } => SourceKind::File,
            Input::Stream { reopen: false, .. } => SourceKind::Pipe,
            Input::Stream { reopen: true, .. } => SourceKind::Fifo,
            Input::Exec { .. } => SourceKind::Exec,
            Input::Device { .. } => SourceKind::Device,
        }
    }

    /// Closes what can be opened again: a camera is released, a child is stopped. A FIFO is
    /// reopened by [`Input::reopen`] alone; a file or a pipe cannot be closed and reopened.
    pub async fn close(&mut self) {
        match self {
            Input::Device { .. } => self.device_failed(),
            Input::Exec { .. } => self.shutdown().await,
            Input::File { .. } | Input::Stream { .. } => {}
        }
    }

    /// Opens the input again: the same one (a FIFO for its next writer, a child anew, a camera),
    /// or the configuration's input when it names another (`anew`, after a reload). A camera
    /// that is not there is an error here: the supervisor looks again later.
    pub async fn open_again(&mut self, config: &Config, anew: bool) -> Result<()> {
        if anew || matches!(self.kind(), SourceKind::File | SourceKind::Pipe) {
            *self = Input::open_config(config).await?;
            if self.is_down() {
                return Err(Error::input(format!("{} is not there", config.input)));
            }
            return Ok(());
        }
        self.reopen().await
    }

    /// Opens the input again: a FIFO for its next writer, a child started anew, a camera opened
    /// again. A file or a pipe cannot be reopened: that is an input error.
    pub async fn reopen(&mut self) -> Result<()> {
        match self {
            Input::Stream {
                reopen: true, name, ..
            } => {
                let name = name.clone();
                *self = Input::open(&name).await?;
                Ok(())
            }
            Input::Exec { .. } | Input::Device { .. } => self.respawn(),
            Input::File { name, .. } | Input::Stream { name, .. } => {
                Err(Error::input(format!("{name} cannot be opened again")))
            }
        }
    }

    /// Reads into `buf`; 0 means end of input. Waits for a live input to become readable.
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize> {
        match self {
            Input::File { file, name } => loop {
                match file.read(buf) {
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        return Err(Error::io(Fault::Input, format!("cannot read {name}"), e))
                    }
                }
            },
            Input::Stream { pipe, name, .. } => loop {
                pipe.readable()
                    .await
                    .map_err(|e| Error::io(Fault::Input, format!("cannot poll {name}"), e))?;
                match read_pipe(pipe, buf) {
                    Ok(n) => return Ok(n),
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                        ) =>
                    {
                        continue
                    }
                    Err(e) => {
                        return Err(Error::io(Fault::Input, format!("cannot read {name}"), e))
                    }
                }
            },
            Input::Exec {
                child: Some(child), ..
            } => child.read(buf).await,
            // Between a child's exit and its restart there is nothing to read; a camera's frames
            // are taken with next_frame.
            Input::Exec { child: None, .. } | Input::Device { .. } => std::future::pending().await,
        }
    }
}

/// Reads what a non-blocking pipe holds. A read shorter than `buf` found the pipe empty, so
/// tokio's readiness is cleared then (as a `WouldBlock` would), and the next wait goes to epoll
/// rather than to one more read that would only say EAGAIN: one read per frame, not two. Data
/// written after the read raises a new edge, so no wake-up is lost.
pub(crate) fn read_pipe(pipe: &pipe::Receiver, buf: &mut [u8]) -> io::Result<usize> {
    let wanted = buf.len();
    let mut got = 0;
    let result = pipe.try_io(|| {
        let n = nix::unistd::read(pipe.as_fd(), buf).map_err(io::Error::from)?;
        got = n;
        if n > 0 && n < wanted {
            Err(io::ErrorKind::WouldBlock.into())
        } else {
            Ok(n)
        }
    });
    match result {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock && got > 0 => Ok(got),
        other => other,
    }
}

/// Whether `path` names a V4L2 camera: a character device, or a path where cameras appear
/// (`/dev/video*`, `/dev/v4l/...`) even while it is missing (unplugged at boot).
pub fn is_device_path(path: &str) -> bool {
    if path == "-" || path.starts_with("exec:") {
        return false;
    }
    match std::fs::metadata(path) {
        Ok(metadata) => metadata.file_type().is_char_device(),
        Err(_) => path.starts_with("/dev/video") || path.starts_with("/dev/v4l/"),
    }
}

#[cfg(test)]
mod tests {
    //! Every byte-stream kind through the one interface: bytes, then the end as its kind means it.

    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// Reads everything through `next_event`, then asks what the end meant.
    async fn drain(input: &mut Input) -> (Vec<u8>, SourceEvent) {
        assert!(input.reads_bytes());
        let mut got = Vec::new();
        let mut buf = [0u8; 7];
        loop {
            match input.next_event(&mut buf).await.unwrap() {
                InputEvent::Read(n) => {
                    assert!(n > 0 && n <= buf.len());
                    got.extend_from_slice(&buf[..n]);
                }
                InputEvent::Ended => return (got, input.ended().await),
                InputEvent::FrameReady => panic!("a byte stream has no device frames"),
            }
        }
    }

    fn temp_path(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("v4l2rtmp-source-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    #[test]
    fn a_file_gives_its_bytes_then_ends() {
        let path = temp_path("clip.h264");
        std::fs::write(&path, b"0123456789abcdefghij").unwrap();
        let (got, end) = runtime().block_on(async {
            let mut input = Input::open(path.to_str().unwrap()).await.unwrap();
            assert_eq!(input.kind(), SourceKind::File);
            drain(&mut input).await
        });
        let _ = std::fs::remove_file(&path);
        assert_eq!(got, b"0123456789abcdefghij");
        assert!(matches!(end, SourceEvent::Ended), "{end:?}");
    }

    #[test]
    fn a_fifo_whose_writer_leaves_says_so() {
        let path = temp_path("camera.fifo");
        let _ = std::fs::remove_file(&path);
        let made = std::process::Command::new("mkfifo")
            .arg(&path)
            .status()
            .unwrap();
        assert!(made.success());
        let (got, end) = runtime().block_on(async {
            let mut input = Input::open(path.to_str().unwrap()).await.unwrap();
            assert_eq!(input.kind(), SourceKind::Fifo);
            let writer_path = path.clone();
            let writer = std::thread::spawn(move || {
                std::fs::write(writer_path, b"frames from a camera program").unwrap();
            });
            let drained = drain(&mut input).await;
            writer.join().unwrap();
            drained
        });
        let _ = std::fs::remove_file(&path);
        assert_eq!(got, b"frames from a camera program");
        assert!(matches!(end, SourceEvent::WriterGone), "{end:?}");
    }

    #[test]
    fn a_child_that_exits_says_how() {
        let (got, end) = runtime().block_on(async {
            let mut input = Input::open("exec:sh -c 'printf encoded; exit 3'")
                .await
                .unwrap();
            assert_eq!(input.kind(), SourceKind::Exec);
            let drained = drain(&mut input).await;
            assert!(
                input.is_down(),
                "the child is gone until it is started again"
            );
            drained
        });
        assert_eq!(got, b"encoded");
        match end {
            SourceEvent::Exited { how, .. } => assert!(how.contains("exited with code 3"), "{how}"),
            other => panic!("{other:?}"),
        }
    }
}
