//! Where the H.264 comes from: a V4L2 camera (see [`camera`]), or an Annex-B byte stream from a
//! regular file, a FIFO, a pipe, stdin, or the stdout of a supervised child process (`exec:`, see
//! [`exec`]).
//!
//! A camera gives whole access units, one per buffer, which the supervisor takes with
//! [`Input::next_device_frame`] (zero-copy, straight from the driver's memory) after
//! [`Input::device_wait`]. A camera that fails or disappears is closed and opened again by the
//! supervisor after a backoff ([`Input::close`], [`Input::reopen`]).
//!
//! A regular file is read directly (reads from the page cache do not block for long, and epoll
//! refuses regular files). Pipes and FIFOs are switched to non-blocking mode and read when tokio
//! reports them readable, so waiting for input never stops the supervisor from answering the
//! server. When a named FIFO's writer closes it, the supervisor flushes the last frame and opens
//! the FIFO again for the next writer (a camera program restarted), so the stream goes on; the
//! source watchdog notices silence. Pipes (stdin) end when their writer closes them.
//!
//! Invariants: reads go straight into the caller's buffer (the frame store's ring), never through an
//! intermediate copy; a read of 0 bytes means end of input.

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
use crate::supervisor::core::SourceKind;
use crate::v4l2::{BufType, Device, FourCC, Fraction};
use camera::{CameraSettings, CameraSource, CaptureKind};
use encoder::{EncoderSettings, EncoderSource};
use exec::{ExecSource, ExitReport};

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

/// A frame from a V4L2 source, its bytes in the driver's buffer.
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

    /// The next frame of a V4L2 source, if one is ready; never blocks. `nals` receives the NAL
    /// units found in it. The frame returned before goes back to the driver first.
    pub fn next_device_frame<'a>(
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
    pub async fn device_wait(&mut self) -> Result<()> {
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

    /// After a child's stdout ended: waits (bounded) for it to exit and reports how it ended.
    pub async fn child_exited(&mut self) -> Option<ExitReport> {
        match self {
            Input::Exec { child, .. } => Some(child.take()?.wait(CHILD_GRACE).await),
            _ => None,
        }
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
    pub async fn read(&mut self, buf: &mut [u8]) -> Result<usize> {
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
            // Between a child's exit and its restart there is nothing to read; a device is read
            // with next_device_frame.
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
