//! [`PcmDevice`]: an open capture PCM (`/dev/snd/pcmC<card>D<device>c`) and the synchronous
//! steps of its life: open (non-blocking), HW_REFINE and HW_PARAMS, SW_PARAMS with monotonic
//! timestamps, PREPARE and START, READI_FRAMES, STATUS_EXT; and on drop DROP, HW_FREE and close.
//!
//! Invariants: the fd is opened with `O_NONBLOCK`, so no call here ever waits for audio (a read
//! with nothing available fails with EAGAIN); the fd is owned and closed only on drop;
//! `frame_bytes` is set from what HW_PARAMS accepted before any read, and reads hand the kernel
//! only whole frames of that size.

use std::fs::OpenOptions;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::time::Duration;

use nix::errno::Errno;
use nix::libc;

use super::ctl::{self, Control, PcmInfo};
use super::name::PcmName;
use super::params::{self, HwParams, Negotiated, Wanted};
use super::sys;
use crate::error::{Error, Fault, Result};

/// The state of a PCM stream (`SNDRV_PCM_STATE_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PcmState {
    Open,
    Setup,
    Prepared,
    Running,
    /// Overrun: the buffer filled up before it was read; the stream stopped.
    Xrun,
    Draining,
    Paused,
    Suspended,
    Disconnected,
    Unknown(i32),
}

impl PcmState {
    pub fn from_raw(raw: i32) -> PcmState {
        match raw {
            sys::SNDRV_PCM_STATE_OPEN => PcmState::Open,
            sys::SNDRV_PCM_STATE_SETUP => PcmState::Setup,
            sys::SNDRV_PCM_STATE_PREPARED => PcmState::Prepared,
            sys::SNDRV_PCM_STATE_RUNNING => PcmState::Running,
            sys::SNDRV_PCM_STATE_XRUN => PcmState::Xrun,
            sys::SNDRV_PCM_STATE_DRAINING => PcmState::Draining,
            sys::SNDRV_PCM_STATE_PAUSED => PcmState::Paused,
            sys::SNDRV_PCM_STATE_SUSPENDED => PcmState::Suspended,
            sys::SNDRV_PCM_STATE_DISCONNECTED => PcmState::Disconnected,
            other => PcmState::Unknown(other),
        }
    }
}

/// The stream's position and clock at one instant (`SNDRV_PCM_IOCTL_STATUS_EXT`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status {
    pub state: PcmState,
    /// CLOCK_MONOTONIC time at which the device's position (`hw_ptr`) was last seen to move:
    /// the capture time of the newest frame in the buffer. Zero before the stream runs.
    pub tstamp: Duration,
    /// Frames captured and not yet read.
    pub avail: u64,
    /// The device's position, in frames (wraps at the kernel's boundary).
    pub hw_ptr: u64,
    /// The reader's position, in frames.
    pub appl_ptr: u64,
    /// The position's timestamp as audio time (frames at the rate since start), as the driver
    /// reports it.
    pub audio_tstamp: Duration,
}

impl Status {
    fn from_raw(raw: &sys::snd_pcm_status) -> Status {
        Status {
            state: PcmState::from_raw(raw.state),
            tstamp: timespec_to_duration(&raw.tstamp),
            avail: sys::uframes(raw.avail),
            hw_ptr: sys::uframes(raw.hw_ptr),
            appl_ptr: sys::uframes(raw.appl_ptr),
            audio_tstamp: timespec_to_duration(&raw.audio_tstamp),
        }
    }

    /// The capture time of the first of `frames` frames read just before this status was
    /// taken: the newest frame was captured at `tstamp`, and `avail + frames` frames are older
    /// than it by one frame period each. `None` when there is no timestamp yet or the rate is 0.
    pub fn time_of_first(&self, frames: u64, rate: u32) -> Option<Duration> {
        if self.tstamp.is_zero() || rate == 0 {
            return None;
        }
        let back = frames_to_duration(self.avail.saturating_add(frames), rate);
        self.tstamp.checked_sub(back)
    }
}

/// The duration of `frames` frames at `rate` Hz, to the nanosecond.
pub fn frames_to_duration(frames: u64, rate: u32) -> Duration {
    if rate == 0 {
        return Duration::ZERO;
    }
    let rate = u64::from(rate);
    let nanos = u128::from(frames % rate) * 1_000_000_000 / u128::from(rate);
    Duration::new(frames / rate, nanos as u32)
}

fn timespec_to_duration(ts: &libc::timespec) -> Duration {
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u32::try_from(ts.tv_nsec).unwrap_or(0).min(999_999_999);
    Duration::new(secs, nanos)
}

/// An open capture PCM.
pub struct PcmDevice {
    fd: OwnedFd,
    /// How errors name it: `hw:Loopback,1 (/dev/snd/pcmC0D1c)`.
    label: String,
    info: PcmInfo,
    /// The kernel's PCM protocol version (`SNDRV_PCM_IOCTL_PVERSION`).
    protocol: u32,
    /// Bytes per frame once HW_PARAMS succeeded; 0 before.
    frame_bytes: usize,
    /// STATUS_EXT is there (protocol 2.0.13, Linux 4.1); else STATUS.
    status_ext: bool,
}

impl AsRawFd for PcmDevice {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for PcmDevice {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl PcmDevice {
    /// Opens the capture PCM `name` (`hw:...` or a node path) without blocking: a device in
    /// use fails at once (EBUSY) instead of waiting for it.
    pub fn open(name: &str) -> Result<PcmDevice> {
        let pcm = PcmName::parse(name).map_err(Error::config)?;
        PcmDevice::open_name(&pcm, name)
    }

    /// Opens a parsed name; `text` is what the user wrote, for messages.
    pub fn open_name(pcm: &PcmName, text: &str) -> Result<PcmDevice> {
        let card = ctl::find_card(&pcm.card)?;
        let node = PcmName::node(card, pcm.device);
        let label = if text.starts_with('/') {
            node.clone()
        } else {
            format!("{text} ({node})")
        };
        // A subdevice is chosen by telling the card's control device before the open; the
        // preference holds while that control device is open, so it lives until after it.
        let control = match pcm.subdevice {
            Some(subdevice) => {
                let control = Control::open(card)?;
                control.prefer_subdevice(subdevice)?;
                Some(control)
            }
            None => None,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&node)
            .map_err(|e| open_error(&label, card, &node, e))?;
        drop(control);
        let fd: OwnedFd = file.into();
        let mut protocol: libc::c_int = 0;
        sys::pcm_pversion(fd.as_fd(), &mut protocol)
            .map_err(|e| super::ioctl_error(&label, "reading the protocol version", e))?;
        let protocol = protocol as u32;
        let mut raw: sys::snd_pcm_info = sys::zeroed();
        sys::pcm_info(fd.as_fd(), &mut raw)
            .map_err(|e| super::ioctl_error(&label, "reading the PCM information", e))?;
        if raw.stream != sys::SNDRV_PCM_STREAM_CAPTURE {
            return Err(Error::config(format!("{label} is not a capture device")));
        }
        let info = PcmInfo::from_raw(&raw);
        if let Some(wanted) = pcm.subdevice {
            if info.subdevice != wanted {
                return Err(Error::input(format!(
                    "{label}: subdevice {wanted} is busy or missing (the kernel gave subdevice {} \
                     of {})",
                    info.subdevice, info.subdevices
                )));
            }
        }
        Ok(PcmDevice {
            fd,
            label,
            info,
            protocol,
            frame_bytes: 0,
            status_ext: protocol >= sys::SNDRV_PCM_VERSION_STATUS_EXT,
        })
    }

    /// `hw:Loopback,1 (/dev/snd/pcmC0D1c)`: how errors name this device.
    pub fn label(&self) -> &str {
        &self.label
    }

    pub fn info(&self) -> &PcmInfo {
        &self.info
    }

    pub fn protocol(&self) -> u32 {
        self.protocol
    }

    /// HW_REFINE: narrows `params` to what the device can do within them.
    pub fn refine(&self, params: &mut HwParams) -> std::result::Result<(), Errno> {
        sys::pcm_hw_refine(self.fd.as_fd(), params.raw_mut())
    }

    /// The device's whole configuration space.
    pub fn space(&self) -> Result<HwParams> {
        let mut space = HwParams::any();
        self.refine(&mut space)
            .map_err(|e| super::ioctl_error(&self.label, "reading what it can do", e))?;
        Ok(space)
    }

    /// Negotiates and sets the hardware parameters (a configuration error says what the
    /// device offers instead), then the software parameters: wake-up after a period, stop on
    /// overrun, timestamps enabled on CLOCK_MONOTONIC.
    pub fn configure(&mut self, wanted: &Wanted) -> Result<Negotiated> {
        let space = self.space()?;
        let (mut chosen, asked) = params::negotiate(&mut |p| self.refine(p), &space, wanted)
            .map_err(|refusal| self.refusal(refusal))?;
        chosen.refine_all();
        sys::pcm_hw_params(self.fd.as_fd(), chosen.raw_mut())
            .map_err(|e| self.refusal(params::Refusal::Device(e)))?;
        let negotiated = params::negotiated_from(&chosen, &asked).map_err(|r| self.refusal(r))?;
        self.frame_bytes = negotiated.format.bytes() * negotiated.device_channels as usize;
        self.set_sw_params(&negotiated)?;
        Ok(negotiated)
    }

    fn refusal(&self, refusal: params::Refusal) -> Error {
        match refusal {
            params::Refusal::Device(errno) => {
                super::ioctl_error(&self.label, "setting the hardware parameters", errno)
            }
            other => Error::config(format!("{} cannot be used: {other}", self.label)),
        }
    }

    fn set_sw_params(&self, negotiated: &Negotiated) -> Result<()> {
        // TTSTAMP first: the only way on kernels before protocol 2.0.12, harmless after.
        let mut clock = sys::SNDRV_PCM_TSTAMP_TYPE_MONOTONIC as libc::c_int;
        sys::pcm_ttstamp(self.fd.as_fd(), &mut clock)
            .map_err(|e| super::ioctl_error(&self.label, "choosing the monotonic clock", e))?;
        let mut sw: sys::snd_pcm_sw_params = sys::zeroed();
        sw.tstamp_mode = sys::SNDRV_PCM_TSTAMP_ENABLE;
        sw.period_step = 1;
        sw.avail_min = negotiated.period_frames as libc::c_ulong;
        // Started by START; stop (overrun) when the whole buffer is full.
        sw.start_threshold = 1;
        sw.stop_threshold = negotiated.buffer_frames as libc::c_ulong;
        if self.protocol >= sys::SNDRV_PCM_VERSION_TSTAMP_TYPE {
            sw.proto = self.protocol.min(sys::SNDRV_PCM_VERSION);
            sw.tstamp_type = sys::SNDRV_PCM_TSTAMP_TYPE_MONOTONIC;
        }
        sys::pcm_sw_params(self.fd.as_fd(), &mut sw)
            .map_err(|e| super::ioctl_error(&self.label, "setting the software parameters", e))
    }

    /// PREPARE then START: capture runs from now on (again, after an overrun).
    pub fn start(&self) -> std::result::Result<(), Errno> {
        sys::pcm_prepare(self.fd.as_fd())?;
        sys::pcm_start(self.fd.as_fd())
    }

    /// READI_FRAMES into `buf` (whole frames of the negotiated format): the frames read, or
    /// EAGAIN when none are available, EPIPE after an overrun, ENODEV when the device is gone,
    /// ESTRPIPE when it is suspended.
    pub fn read(&self, buf: &mut [u8]) -> std::result::Result<usize, Errno> {
        if self.frame_bytes == 0 {
            return Err(Errno::EBADFD);
        }
        sys::readi_frames(self.fd.as_fd(), buf, self.frame_bytes)
    }

    /// The stream's status now.
    pub fn status(&self) -> std::result::Result<Status, Errno> {
        let mut raw: sys::snd_pcm_status = sys::zeroed();
        if self.status_ext {
            // Audio timestamp type 0: the default (derived from the position).
            raw.audio_tstamp_data = 0;
            sys::pcm_status_ext(self.fd.as_fd(), &mut raw)?;
        } else {
            sys::pcm_status(self.fd.as_fd(), &mut raw)?;
        }
        Ok(Status::from_raw(&raw))
    }

    pub fn frame_bytes(&self) -> usize {
        self.frame_bytes
    }
}

impl Drop for PcmDevice {
    fn drop(&mut self) {
        if self.frame_bytes != 0 {
            // Errors are of no use here (the device may be gone); close follows regardless.
            let _ = sys::pcm_drop(self.fd.as_fd());
            let _ = sys::pcm_hw_free(self.fd.as_fd());
        }
    }
}

/// The error for a failed open: no such device, busy, or not permitted, naming the device.
fn open_error(label: &str, card: u32, node: &str, e: std::io::Error) -> Error {
    let what = match e.raw_os_error().map(Errno::from_raw) {
        Some(Errno::ENOENT) | Some(Errno::ENODEV) | Some(Errno::ENXIO) => {
            let cards = ctl::cards();
            if cards.iter().any(|c| c.index == card) {
                format!("{label}: sound card {card} has no capture device {node}")
            } else {
                format!(
                    "{label}: there is no sound card {card} ({})",
                    ctl::describe_cards(&cards)
                )
            }
        }
        Some(Errno::EBUSY) => {
            format!("{label} is busy: another program is recording from it")
        }
        Some(Errno::EACCES) | Some(Errno::EPERM) => {
            format!("{label}: permission denied (is the user in the 'audio' group?)")
        }
        _ => format!("{label}: cannot open it"),
    };
    Error::io(Fault::Input, what, e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_counts_become_durations() {
        assert_eq!(frames_to_duration(48000, 48000), Duration::from_secs(1));
        assert_eq!(
            frames_to_duration(1024, 48000),
            Duration::from_nanos(21_333_333)
        );
        assert_eq!(
            frames_to_duration(44100 * 3 + 441, 44100),
            Duration::from_millis(3010)
        );
        assert_eq!(frames_to_duration(5, 0), Duration::ZERO);
        assert_eq!(
            frames_to_duration(u64::MAX, 16000),
            Duration::new(u64::MAX / 16000, ((u64::MAX % 16000) * 62_500) as u32)
        );
    }

    #[test]
    fn the_first_frame_read_is_dated_from_the_newest() {
        let status = Status {
            state: PcmState::Running,
            tstamp: Duration::from_secs(100),
            avail: 480,
            hw_ptr: 96_480,
            appl_ptr: 96_000,
            audio_tstamp: Duration::ZERO,
        };
        // 1024 frames read, 480 still waiting: the first of them is 1504 frames old.
        assert_eq!(
            status.time_of_first(1024, 48000),
            Some(Duration::from_secs(100) - Duration::from_nanos(31_333_333))
        );
        assert_eq!(status.time_of_first(0, 0), None);
        let early = Status {
            tstamp: Duration::ZERO,
            ..status
        };
        assert_eq!(early.time_of_first(1024, 48000), None);
        let too_far = Status {
            tstamp: Duration::from_millis(1),
            ..status
        };
        assert_eq!(too_far.time_of_first(1024, 48000), None);
    }

    #[test]
    fn states_and_timespecs_are_read_safely() {
        assert_eq!(PcmState::from_raw(4), PcmState::Xrun);
        assert_eq!(PcmState::from_raw(8), PcmState::Disconnected);
        assert_eq!(PcmState::from_raw(42), PcmState::Unknown(42));
        let mut ts: libc::timespec = unsafe_free_zero_timespec();
        ts.tv_sec = 5;
        ts.tv_nsec = 7;
        assert_eq!(timespec_to_duration(&ts), Duration::new(5, 7));
        ts.tv_sec = -1;
        ts.tv_nsec = 2_000_000_000;
        assert_eq!(timespec_to_duration(&ts), Duration::new(0, 999_999_999));
    }

    fn unsafe_free_zero_timespec() -> libc::timespec {
        let status: sys::snd_pcm_status = sys::zeroed();
        status.tstamp
    }

    #[test]
    fn open_errors_name_the_device() {
        let busy = open_error(
            "hw:1,0 (/dev/snd/pcmC1D0c)",
            1,
            "/dev/snd/pcmC1D0c",
            std::io::Error::from_raw_os_error(libc::EBUSY),
        );
        assert_eq!(busy.fault(), Fault::Input);
        assert!(busy
            .message()
            .starts_with("hw:1,0 (/dev/snd/pcmC1D0c) is busy"));
        let denied = open_error(
            "/dev/snd/pcmC0D0c",
            0,
            "/dev/snd/pcmC0D0c",
            std::io::Error::from_raw_os_error(libc::EACCES),
        );
        assert!(denied.message().contains("'audio' group"));
    }

    #[test]
    fn bad_names_are_configuration_errors() {
        let error = PcmDevice::open("plughw:0,0").err().unwrap();
        assert_eq!(error.fault(), Fault::Config);
    }
}
