//! Opening and configuring the devices: [`EncoderSource::open`] finds the encoder if none is
//! named, negotiates formats, sizes, rates and controls on both devices (the choices themselves
//! are `plan.rs`'s), allocates the buffers once and starts streaming. It follows the
//! initialization sequence of `dev-encoder.rst`.
//!
//! # Steps
//!
//! 1. The camera's raw format: the one asked for, else the first format both the camera and the
//!    encoder's OUTPUT queue offer, preferring NV12, YU12, YUYV ([`choose_pixel_format`]); the
//!    size asked for, else the camera's current one; the frame rate (S_PARM) when asked for.
//! 2. The encoder: the coded format on its CAPTURE queue first (the OUTPUT formats it offers may
//!    depend on it), then the raw format and size on its OUTPUT queue, then the frame rate on
//!    the OUTPUT queue (the rate control's assumption; drivers without S_PARM are left alone).
//! 3. Controls ([`plan_controls`]): bitrate, keyframe period (H264_I_PERIOD and GOP_SIZE,
//!    whichever the encoder has), profile, level, REPEAT_SEQ_HEADER and PREPEND_SPSPPS_TO_IDR on
//!    when the encoder has them; rotation and flips on the camera when it has them, else on the
//!    encoder. Each is read back and reported ([`EncoderSource::controls_read_back`]).
//! 4. Buffers, allocated once: the camera's MMAP buffers are exported (EXPBUF) and queued as
//!    DMABUF into the encoder's OUTPUT queue, slot *i* carrying camera buffer *i*, so no frame
//!    is copied. When the camera cannot export, the encoder refuses DMABUF, or the two sides'
//!    layouts differ (plane count, stride, or a camera buffer smaller than the encoder's
//!    image size), both queues use MMAP and each raw frame is copied once. The choice is logged
//!    at info and shown by [`EncoderSource::describe`].
//!
//! # Invariants
//!
//! - The order is dev-encoder.rst's: the coded format on the encoder's CAPTURE queue before
//!   anything on its OUTPUT queue, and a coded format other than the one asked for is refused.
//! - Zero-copy is used only when it is safe: the same planes, strides and rows on both sides
//!   and camera buffers at least as large as the encoder's image size; anything else falls back
//!   to the copying path, or to a configuration error when even a copy cannot convert.
//! - All buffers are allocated here, once, before streaming starts.

use std::path::Path;

use nix::poll::PollFlags;
use tokio::io::Interest;

use super::plan::{choose_pixel_format, layouts_match, plan_controls, sub_planes};
use super::{EncoderSettings, EncoderSource, PlaneLayout, RawQueue, State, Target};
use crate::error::{Error, Fault, Result};
use crate::source::poller::DevicePoller;
use crate::v4l2::device::{summarize_offers, Offer};
use crate::v4l2::list::{control_key, video_nodes};
use crate::v4l2::{
    sys, BufType, BufferQueue, Device, EventKind, Format, FourCC, Fraction, Mmap, WatchedDevice,
};

fn async_fd(device: Device, interest: Interest) -> Result<WatchedDevice> {
    let name = device.name().to_string();
    WatchedDevice::new(device, interest).map_err(|e| {
        Error::io(
            Fault::Ours,
            format!("{name}: cannot register with the event loop (outside a tokio runtime?)"),
            e,
        )
    })
}

fn has_control(device: &Device, id: u32) -> bool {
    device
        .query_control(id)
        .is_ok_and(|info| !info.is_disabled() && !info.is_read_only())
}

/// Whether a queue offers `fourcc` at the size, as a configuration error naming the offers.
fn raw_formats(device: &Device, buf_type: BufType) -> Result<Vec<FourCC>> {
    Ok(device
        .formats(buf_type)?
        .into_iter()
        .filter(|f| !f.is_compressed() && !f.is_emulated())
        .map(|f| f.fourcc)
        .collect())
}

/// Finds the encoder: the first M2M node whose CAPTURE side offers `codec` and whose OUTPUT side
/// accepts one of `raw` (the camera's raw formats).
fn find_encoder(camera: &Path, codec: FourCC, raw: &[FourCC]) -> Result<Device> {
    let mut seen = Vec::new();
    for path in video_nodes(Path::new("/dev"))? {
        if path == camera {
            continue;
        }
        let Ok(device) = Device::open(&path) else {
            continue;
        };
        let caps = device.capabilities().clone();
        if !caps.is_m2m() {
            continue;
        }
        let (Some(output), Some(capture)) = (caps.output_type(), caps.capture_type()) else {
            continue;
        };
        let coded = device.formats(capture).unwrap_or_default();
        if !coded.iter().any(|f| f.fourcc == codec) {
            seen.push(format!(
                "{} (produces {})",
                device.name(),
                coded
                    .iter()
                    .map(|f| f.fourcc.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            continue;
        }
        // The OUTPUT formats may depend on the coded format: set it first.
        let _ = device.set_format(capture, &Format::new(codec, 0, 0));
        let accepts = raw_formats(&device, output).unwrap_or_default();
        if accepts.iter().any(|f| raw.contains(f)) {
            return Ok(device);
        }
        seen.push(format!(
            "{} (encodes {codec} but takes none of the camera's formats)",
            device.name()
        ));
    }
    if seen.is_empty() {
        // At boot an encoder's driver (bcm2835-codec on a Pi) may load after we start: with no
        // memory-to-memory device at all, the camera is waited for like one that is missing,
        // rather than the service stopped for a configuration error.
        return Err(Error::input(format!(
            "no V4L2 encoder for {} yet: there is no memory-to-memory device (is the encoder's \
             driver loaded? on a Pi 5, which has none, use exec:rpicam-vid)",
            camera.display()
        )));
    }
    Err(Error::config(format!(
        "no V4L2 encoder produces {codec} from {} (memory-to-memory devices: {}); name one with \
         --encoder",
        camera.display(),
        seen.join("; ")
    )))
}

impl EncoderSource {
    /// Opens and sets up both devices and starts streaming. Must be called inside a tokio
    /// runtime.
    pub fn open(settings: &EncoderSettings) -> Result<EncoderSource> {
        let camera = Device::open(&settings.camera)?;
        let cam_caps = camera.capabilities().clone();
        let cam_type = match cam_caps.capture_type() {
            Some(t) if !cam_caps.is_m2m() && cam_caps.has_streaming() => t,
            _ => {
                return Err(Error::config(format!(
                    "{} is not a streaming video capture device ({})",
                    camera.name(),
                    cam_caps.describe()
                )))
            }
        };
        let camera_raw = raw_formats(&camera, cam_type)?;
        let encoder = match &settings.encoder {
            Some(path) => Device::open(path)?,
            None => find_encoder(&settings.camera, settings.codec, &camera_raw)?,
        };
        let enc_caps = encoder.capabilities().clone();
        let (Some(out_type), Some(cod_type), true) = (
            enc_caps.output_type(),
            enc_caps.capture_type(),
            enc_caps.is_m2m(),
        ) else {
            return Err(Error::config(format!(
                "{} is not a memory-to-memory encoder ({})",
                encoder.name(),
                enc_caps.describe()
            )));
        };
        let name = format!("{} → {}", camera.name(), encoder.name());

        // The coded format first (dev-encoder.rst, Initialization 1).
        let coded_offers = encoder.formats(cod_type)?;
        if !coded_offers.iter().any(|f| f.fourcc == settings.codec) {
            let offers: Vec<Offer> = coded_offers
                .into_iter()
                .map(|format| Offer {
                    format,
                    sizes: Vec::new(),
                })
                .collect();
            return Err(Error::config(format!(
                "{}: does not encode {}; it produces {}",
                encoder.name(),
                settings.codec,
                summarize_offers(&offers)
            )));
        }
        let current = camera.get_format(cam_type)?;
        let (width, height) = settings.size.unwrap_or((current.width, current.height));
        encoder.set_format(cod_type, &Format::new(settings.codec, width, height))?;

        // The raw format both sides take.
        let encoder_raw = raw_formats(&encoder, out_type)?;
        let fits = |fourcc| {
            encoder
                .try_format(out_type, &Format::new(fourcc, width, height))
                .is_ok_and(|f| f.fourcc == fourcc && f.width == width && f.height == height)
        };
        let fourcc = choose_pixel_format(settings.pixel_format, &camera_raw, &encoder_raw, fits)
            .map_err(|why| Error::config(format!("{name}: {why}")))?;
        let cam_format = camera.negotiate(cam_type, fourcc, width, height)?;
        let camera_fps = match settings.fps {
            Some(fps) => camera.set_frame_rate(cam_type, fps)?,
            None => camera.frame_rate(cam_type)?,
        };
        let raw_format = encoder.negotiate(out_type, fourcc, width, height)?;
        let coded_format = encoder.get_format(cod_type)?;
        if coded_format.fourcc != settings.codec {
            return Err(Error::config(format!(
                "{}: asked for {} on its coded side, the driver chose {coded_format}",
                encoder.name(),
                settings.codec
            )));
        }
        let encoder_fps = match settings.fps.or(camera_fps) {
            Some(fps) => encoder.set_frame_rate(out_type, fps)?,
            None => None,
        };

        // Controls.
        let plan = plan_controls(
            settings,
            |id| has_control(&camera, id),
            |id| has_control(&encoder, id),
        )
        .map_err(|why| Error::config(format!("{name}: {why}")))?;
        let mut read_back = Vec::new();
        for control in &plan {
            let device = match control.target {
                Target::Camera => &camera,
                Target::Encoder => &encoder,
            };
            device.set_control(control.id, control.value)?;
            // Reading back is for the log and the tests: a write-only control, or one the
            // driver will not read, is no reason to stop.
            match device
                .query_control(control.id)
                .and_then(|info| Ok((info.name.clone(), device.get_control(control.id)?)))
            {
                Ok((name, value)) => read_back.push((control_key(&name), value)),
                Err(e) => log::debug!("{e} (reading a control back)"),
            }
        }
        let force_key_frame = encoder
            .query_control(sys::V4L2_CID_MPEG_VIDEO_FORCE_KEY_FRAME)
            .is_ok_and(|info| !info.is_disabled());
        if let Err(e) = encoder.subscribe_event(EventKind::Eos) {
            log::debug!("{e} (the LAST buffer flag ends a drain all the same)");
        }

        // Buffers: the camera's first, then the encoder's raw input, zero-copy if possible.
        let count = settings.buffers.clamp(2, 32);
        let mut frames = BufferQueue::new_mmap(&camera, cam_type, count)?;
        let raw = Self::raw_queue(
            settings,
            &camera,
            &encoder,
            out_type,
            &cam_format,
            &raw_format,
            &frames,
        )?;
        let coded_count = count
            .max(encoder.min_buffers(cod_type)?.unwrap_or(0))
            .max(2);
        let mut coded = BufferQueue::new_mmap(&encoder, cod_type, coded_count)?;
        if coded.num_planes() != 1 {
            return Err(Error::input(format!(
                "{}: its coded buffers have {} planes, expected 1",
                encoder.name(),
                coded.num_planes()
            )));
        }
        frames.queue_all()?;
        coded.queue_all()?;
        coded.stream_on()?;
        let mut raw = raw;
        match &mut raw {
            RawQueue::DmaBuf { queue, .. } => queue.stream_on()?,
            RawQueue::Copy { queue, .. } => queue.stream_on()?,
        }
        frames.stream_on()?;

        let path = match raw {
            RawQueue::DmaBuf { .. } => {
                "zero-copy: camera buffers exported as DMABUF into the encoder"
            }
            RawQueue::Copy { .. } => {
                "copy: each raw frame copied once into the encoder's MMAP buffers"
            }
        };
        let rate = |fps: Option<Fraction>| fps.map_or("unset".to_string(), |f| format!("{f} fps"));
        let mut description = format!(
            "{name}: {cam_format} ({} plane(s), {} bytes per line) at {} on the camera, {} on the encoder; \
             {coded_format} out; {path}; buffers: camera {}, encoder in {}, out {}",
            cam_format.planes.len(),
            cam_format.planes.first().map_or(0, |p| p.bytes_per_line),
            rate(camera_fps),
            rate(encoder_fps),
            frames.len(),
            raw.len(),
            coded.len()
        );
        if read_back.is_empty() {
            description.push_str("; no controls set");
        } else {
            let shown: Vec<String> = plan
                .iter()
                .zip(&read_back)
                .map(|(c, (key, value))| {
                    let on = match c.target {
                        Target::Camera => "camera",
                        Target::Encoder => "encoder",
                    };
                    format!("{key}={value} ({on}, asked {})", c.value)
                })
                .collect();
            description.push_str(&format!("; controls: {}", shown.join(", ")));
        }
        if !force_key_frame {
            description.push_str("; no force-key-frame control");
        }
        log::info!("{description}");

        Ok(EncoderSource {
            camera_poller: DevicePoller::new(&camera, PollFlags::POLLIN | PollFlags::POLLPRI)?,
            camera,
            encoder: async_fd(
                encoder,
                Interest::READABLE | Interest::WRITABLE | Interest::PRIORITY,
            )?,
            name,
            codec: settings.codec,
            frames,
            raw,
            coded,
            held: None,
            state: State::Running,
            description,
            read_back,
            force_key_frame,
            progress: true,
            woke: false,
            delivered: 0,
            idle_wakeups: 0,
            pollerr_since: None,
            dropped: 0,
        })
    }

    /// The encoder's raw input queue: DMABUF from the camera when possible, else MMAP.
    fn raw_queue(
        settings: &EncoderSettings,
        camera: &Device,
        encoder: &Device,
        out_type: BufType,
        cam_format: &Format,
        raw_format: &Format,
        frames: &BufferQueue<Mmap>,
    ) -> Result<RawQueue> {
        let zero_copy = || -> Result<std::result::Result<RawQueue, String>> {
            if !settings.dmabuf {
                return Ok(Err("DMABUF is turned off in the settings".into()));
            }
            let lengths = (0..frames.num_planes())
                .map(|p| frames.plane_length(0, p))
                .collect::<Result<Vec<u32>>>()?;
            if let Err(why) = layouts_match(cam_format, &lengths, raw_format) {
                return Ok(Err(why));
            }
            let mut exported = Vec::new();
            for index in 0..frames.len() {
                let mut planes = Vec::new();
                for plane in 0..frames.num_planes() {
                    match frames.export(index, plane) {
                        Ok(fd) => planes.push(fd),
                        Err(e) if e.fault() == Fault::Config => {
                            return Ok(Err(e.message().to_string()))
                        }
                        Err(e) => return Err(e),
                    }
                }
                exported.push(planes);
            }
            match BufferQueue::new_dmabuf(encoder, out_type, frames.len()) {
                Ok(queue)
                    if queue.len() >= frames.len() && queue.num_planes() == frames.num_planes() =>
                {
                    Ok(Ok(RawQueue::DmaBuf { queue, exported }))
                }
                Ok(queue) => Ok(Err(format!(
                    "the encoder gave {} DMABUF slots of {} planes for {} camera buffers of {}",
                    queue.len(),
                    queue.num_planes(),
                    frames.len(),
                    frames.num_planes()
                ))),
                Err(e) if e.fault() == Fault::Config => Ok(Err(e.message().to_string())),
                Err(e) => Err(e),
            }
        };
        match zero_copy()? {
            Ok(raw) => {
                log::info!(
                    "{} → {}: frames go to the encoder without a copy (DMABUF)",
                    camera.name(),
                    encoder.name()
                );
                Ok(raw)
            }
            Err(why) => {
                log::info!(
                    "{} → {}: frames are copied once into the encoder's buffers (no DMABUF: {why})",
                    camera.name(),
                    encoder.name()
                );
                let queue =
                    BufferQueue::new_mmap(encoder, out_type, settings.buffers.clamp(2, 32))?;
                if queue.num_planes() != frames.num_planes() {
                    return Err(Error::config(format!(
                        "{}: its raw buffers have {} planes, the camera's {}: choose another pixel format",
                        encoder.name(),
                        queue.num_planes(),
                        frames.num_planes()
                    )));
                }
                let (fourcc, height) = (cam_format.fourcc, cam_format.height);
                let layouts: Vec<(PlaneLayout, PlaneLayout)> = cam_format
                    .planes
                    .iter()
                    .zip(&raw_format.planes)
                    .map(|(cam, enc)| {
                        (
                            PlaneLayout::of(fourcc, height, cam),
                            PlaneLayout::of(fourcc, height, enc),
                        )
                    })
                    .collect();
                for (p, (from, to)) in layouts.iter().enumerate() {
                    if from != to && (sub_planes(fourcc).is_none() || queue.num_planes() > 1) {
                        return Err(Error::config(format!(
                            "{} → {}: plane {p} of {fourcc} is laid out as {from:?} on the camera and {to:?} \
                             in the encoder, and converting that is not supported; choose another size or \
                             pixel format",
                            camera.name(),
                            encoder.name(),
                        )));
                    }
                }
                if layouts.iter().any(|(from, to)| from != to) {
                    log::info!(
                        "{} → {}: the copy converts {layouts:?}",
                        camera.name(),
                        encoder.name()
                    );
                }
                Ok(RawQueue::Copy {
                    queue,
                    fourcc,
                    height,
                    layouts,
                })
            }
        }
    }
}
