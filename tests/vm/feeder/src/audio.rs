//! The feeder's microphone signal: ALSA playback into snd-aloop's playback side by raw ioctls,
//! with a beep placed at the sample that is played at a given CLOCK_MONOTONIC instant.
//!
//! snd-aloop moves a frame from the playback buffer to the capture buffer in the same timer
//! update that advances both positions (`loopback_jiffies_timer_pos_update` in
//! `sound/drivers/aloop.c`: `copy_play_buf`, then `bytepos_finish` on both), so the instant a
//! frame is played is the instant a capturing program is given it, and both sides' status
//! timestamps date it the same way.
//!
//! When is a written frame played? The status (`SNDRV_PCM_IOCTL_STATUS`, timestamps on
//! CLOCK_MONOTONIC through `SNDRV_PCM_IOCTL_TTSTAMP` and `sw_params.tstamp_type`) gives `tstamp`,
//! the time the position was last seen to move, and `delay`, the frames written and not yet
//! played at that position: the next frame written is played at `tstamp + delay / rate`. The
//! kernel takes `tstamp` when someone asks for the position after it moved, which is up to one
//! timer tick (4 ms at HZ=250) after it did; the earliest estimate over the last observations
//! is the closest, so the anchor is the minimum of `tstamp + delay / rate - written / rate` over
//! a sliding window (snd-aloop's rate is exact: its position is computed from jiffies).
//!
//! Layouts for 64-bit guests only (x86_64, aarch64), as the rest of the feeder; the sizes are
//! asserted against `sound/asound.h` (see `src/alsa/sys.rs` of v4l2rtmp for the other ABIs).
#![allow(non_camel_case_types)]

use std::fs::{self, File, OpenOptions};
use std::os::raw::{c_int, c_long, c_ulong, c_void};
use std::os::unix::io::AsRawFd;
use std::time::{Duration, Instant};

use crate::{clock, ioctl, xioctl};

const SNDRV_PCM_IOCTL_PVERSION: c_ulong = 0x8004_4100;
const SNDRV_PCM_IOCTL_TTSTAMP: c_ulong = 0x4004_4103;
const SNDRV_PCM_IOCTL_HW_PARAMS: c_ulong = 0xc260_4111;
const SNDRV_PCM_IOCTL_SW_PARAMS: c_ulong = 0xc088_4113;
const SNDRV_PCM_IOCTL_STATUS: c_ulong = 0x8098_4120;
const SNDRV_PCM_IOCTL_PREPARE: c_ulong = 0x4140;
const SNDRV_PCM_IOCTL_START: c_ulong = 0x4142;
const SNDRV_PCM_IOCTL_WRITEI_FRAMES: c_ulong = 0x4018_4150;
const SNDRV_PCM_IOCTL_READI_FRAMES: c_ulong = 0x8018_4151;

const PARAM_ACCESS: usize = 0;
const PARAM_FORMAT: usize = 1;
const PARAM_SUBFORMAT: usize = 2;
const PARAM_CHANNELS: usize = 10;
const PARAM_RATE: usize = 11;
const PARAM_PERIOD_SIZE: usize = 13;
const PARAM_BUFFER_SIZE: usize = 17;
const FIRST_INTERVAL: usize = 8;
const ACCESS_RW_INTERLEAVED: u32 = 3;
const FORMAT_S16_LE: u32 = 2;
const STATE_RUNNING: i32 = 3;
const TSTAMP_ENABLE: i32 = 1;
const TSTAMP_TYPE_MONOTONIC: u32 = 1;
const PROTO_TSTAMP_TYPE: u32 = 0x0002_000c;

#[repr(C)]
#[derive(Clone, Copy)]
struct snd_mask {
    bits: [u32; 8],
}

#[repr(C)]
#[derive(Clone, Copy)]
struct snd_interval {
    min: u32,
    max: u32,
    flags: u32, // openmin, openmax, integer, empty: bits 0..3
}

#[repr(C)]
struct snd_pcm_hw_params {
    flags: u32,
    masks: [snd_mask; 3],
    mres: [snd_mask; 5],
    intervals: [snd_interval; 12],
    ires: [snd_interval; 9],
    rmask: u32,
    cmask: u32,
    info: u32,
    msbits: u32,
    rate_num: u32,
    rate_den: u32,
    fifo_size: c_ulong,
    reserved: [u8; 64],
}

#[repr(C)]
struct snd_pcm_sw_params {
    tstamp_mode: c_int,
    period_step: u32,
    sleep_min: u32,
    avail_min: c_ulong,
    xfer_align: c_ulong,
    start_threshold: c_ulong,
    stop_threshold: c_ulong,
    silence_threshold: c_ulong,
    silence_size: c_ulong,
    boundary: c_ulong,
    proto: u32,
    tstamp_type: u32,
    reserved: [u8; 56],
}

#[repr(C)]
struct Timespec {
    sec: i64,
    nsec: i64,
}

#[repr(C)]
struct snd_pcm_status {
    state: c_int,
    pad1: c_int,
    trigger_tstamp: Timespec,
    tstamp: Timespec,
    appl_ptr: c_ulong,
    hw_ptr: c_ulong,
    delay: c_long,
    avail: c_ulong,
    avail_max: c_ulong,
    overrange: c_ulong,
    suspended_state: c_int,
    audio_tstamp_data: u32,
    audio_tstamp: Timespec,
    driver_tstamp: Timespec,
    audio_tstamp_accuracy: u32,
    reserved: [u8; 20],
}

#[repr(C)]
struct snd_xferi {
    result: c_long,
    buf: *mut c_void,
    frames: c_ulong,
}

const _: () = assert!(std::mem::size_of::<snd_pcm_hw_params>() == 608);
const _: () = assert!(std::mem::offset_of!(snd_pcm_hw_params, intervals) == 260);
const _: () = assert!(std::mem::offset_of!(snd_pcm_hw_params, rmask) == 512);
const _: () = assert!(std::mem::size_of::<snd_pcm_sw_params>() == 136);
const _: () = assert!(std::mem::offset_of!(snd_pcm_sw_params, proto) == 72);
const _: () = assert!(std::mem::size_of::<snd_pcm_status>() == 152);
const _: () = assert!(std::mem::offset_of!(snd_pcm_status, tstamp) == 24);
const _: () = assert!(std::mem::offset_of!(snd_pcm_status, delay) == 56);
const _: () = assert!(std::mem::offset_of!(snd_pcm_status, audio_tstamp) == 96);
const _: () = assert!(std::mem::size_of::<snd_xferi>() == 24);

fn zeroed<T>() -> T {
    // SAFETY: only used for the plain-integer ALSA structures above (and the xferi, whose null
    // pointer is replaced before use).
    unsafe { std::mem::zeroed() }
}

/// What to play: a continuous tone, and a beep at each instant the video writer flashes.
#[derive(Clone, Debug)]
pub struct Signal {
    pub rate: u32,
    pub channels: u32,
    pub tone_hz: f64,
    /// Peak amplitude, full scale = 1.
    pub tone_level: f64,
    pub beep_hz: f64,
    pub beep_level: f64,
    pub beep_frames: u64,
}

/// The feeder's signal: 48 kHz stereo S16_LE, a 440 Hz tone at peak 0.1 (whole cycles in 1200
/// frames), a 1 kHz beep at peak 0.5 for 100 ms. tests/vm/avsync/analyse expects these.
pub const SIGNAL: Signal = Signal {
    rate: 48000,
    channels: 2,
    tone_hz: 440.0,
    tone_level: 0.1,
    beep_hz: 1000.0,
    beep_level: 0.5,
    beep_frames: 4800,
};

/// One second of the tone and one beep, computed once: a sine per sample costs the emulated
/// guest a good part of a CPU.
struct Tables {
    tone: Vec<f64>,
    beep: Vec<f64>,
}

impl Tables {
    fn new(signal: &Signal) -> Tables {
        Tables {
            tone: (0..u64::from(signal.rate))
                .map(|k| signal.value(k, None))
                .collect(),
            beep: (0..signal.beep_frames)
                .map(|b| signal.value(0, Some(b)) - signal.value(0, None))
                .collect(),
        }
    }

    fn sample(&self, k: u64, beep: Option<u64>) -> i16 {
        let mut v = self.tone[(k % self.tone.len() as u64) as usize];
        if let Some(b) = beep {
            v += self.beep[b as usize];
        }
        (v * 32767.0).round().clamp(-32768.0, 32767.0) as i16
    }
}

impl Signal {
    /// The sample of frame `k` of the tone, `beep` frames into a beep if one is playing (as
    /// [`Tables`] gives it, computed directly: the tests' reference).
    #[cfg(test)]
    fn sample(&self, k: u64, beep: Option<u64>) -> i16 {
        (self.value(k, beep) * 32767.0)
            .round()
            .clamp(-32768.0, 32767.0) as i16
    }

    /// The same, full scale 1.
    fn value(&self, k: u64, beep: Option<u64>) -> f64 {
        let rate = f64::from(self.rate);
        let tau = 2.0 * std::f64::consts::PI;
        // The tone's phase from k modulo a whole number of its cycles' worth of frames when it
        // divides the rate (440 Hz at 48 kHz: 11 cycles in 1200 frames), so precision holds.
        let mut v =
            self.tone_level * (tau * self.tone_hz * (k % u64::from(self.rate)) as f64 / rate).sin();
        if let Some(b) = beep {
            v += self.beep_level * (tau * self.beep_hz * b as f64 / rate).sin();
        }
        v
    }
}

/// An open, configured playback PCM.
struct Playback {
    file: File,
    frame_bytes: usize,
}

/// `hw:CARD,DEV` (the subdevice, if given, must be 0: snd-aloop is loaded with one) to the
/// playback node, the card found by its id in /proc/asound.
pub fn node_of(name: &str, suffix: char) -> Result<String, String> {
    let rest = name
        .strip_prefix("hw:")
        .ok_or_else(|| format!("{name}: expected hw:CARD,DEV"))?;
    let mut parts = rest.split(',');
    let card = parts.next().unwrap_or_default();
    let device: u32 = parts
        .next()
        .unwrap_or("0")
        .parse()
        .map_err(|_| format!("{name}: bad device number"))?;
    let index = match card.parse::<u32>() {
        Ok(n) => n,
        Err(_) => {
            let link = fs::read_link(format!("/proc/asound/{card}"))
                .map_err(|e| format!("no sound card {card}: {e}"))?;
            let link = link.to_string_lossy();
            link.trim_start_matches("card")
                .parse()
                .map_err(|_| format!("/proc/asound/{card} -> {link}"))?
        }
    };
    Ok(format!("/dev/snd/pcmC{index}D{device}{suffix}"))
}

impl Playback {
    /// Opens and configures `name`'s playback side (`suffix` 'p'), or its capture side ('c').
    fn open(
        name: &str,
        suffix: char,
        signal: &Signal,
        period: u32,
        buffer: u32,
    ) -> Result<Playback, String> {
        let node = node_of(name, suffix)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&node)
            .map_err(|e| format!("cannot open {node}: {e}"))?;
        let mut proto: c_int = 0;
        xioctl(&file, SNDRV_PCM_IOCTL_PVERSION, &mut proto)
            .map_err(|e| format!("PVERSION: {e}"))?;
        let mut p: snd_pcm_hw_params = zeroed();
        for m in p.masks.iter_mut() {
            m.bits = [u32::MAX; 8];
        }
        for i in p.intervals.iter_mut() {
            *i = snd_interval {
                min: 0,
                max: u32::MAX,
                flags: 0,
            };
        }
        let only = |bit: u32| {
            let mut m = snd_mask { bits: [0; 8] };
            m.bits[(bit / 32) as usize] = 1 << (bit % 32);
            m
        };
        p.masks[PARAM_ACCESS] = only(ACCESS_RW_INTERLEAVED);
        p.masks[PARAM_FORMAT] = only(FORMAT_S16_LE);
        p.masks[PARAM_SUBFORMAT] = only(0);
        let exact = |v: u32| snd_interval {
            min: v,
            max: v,
            flags: 1 << 2,
        };
        p.intervals[PARAM_CHANNELS - FIRST_INTERVAL] = exact(signal.channels);
        p.intervals[PARAM_RATE - FIRST_INTERVAL] = exact(signal.rate);
        p.intervals[PARAM_PERIOD_SIZE - FIRST_INTERVAL] = exact(period);
        p.intervals[PARAM_BUFFER_SIZE - FIRST_INTERVAL] = exact(buffer);
        p.rmask = u32::MAX;
        xioctl(&file, SNDRV_PCM_IOCTL_HW_PARAMS, &mut p).map_err(|e| {
            format!(
                "{node}: HW_PARAMS (S16_LE, {} ch, {} Hz, period {period}, buffer {buffer}): {e}",
                signal.channels, signal.rate
            )
        })?;
        let mut clock_type = TSTAMP_TYPE_MONOTONIC as c_int;
        xioctl(&file, SNDRV_PCM_IOCTL_TTSTAMP, &mut clock_type)
            .map_err(|e| format!("{node}: TTSTAMP: {e}"))?;
        let mut sw: snd_pcm_sw_params = zeroed();
        sw.tstamp_mode = TSTAMP_ENABLE;
        sw.period_step = 1;
        sw.avail_min = period as c_ulong;
        // Starts with the first period written; stops (underrun) when it runs empty. The buffer
        // is long (1 s by default): the schedule does not depend on it, and snd-aloop, when its
        // position runs past what was written (a guest stall longer than the buffer), hands the
        // capture side the ring's stale contents: a beep of one lap before, a buffer late.
        sw.start_threshold = period as c_ulong;
        sw.stop_threshold = buffer as c_ulong;
        sw.proto = (proto as u32).min(0x0002_000f);
        if sw.proto >= PROTO_TSTAMP_TYPE {
            sw.tstamp_type = TSTAMP_TYPE_MONOTONIC;
        }
        xioctl(&file, SNDRV_PCM_IOCTL_SW_PARAMS, &mut sw)
            .map_err(|e| format!("{node}: SW_PARAMS: {e}"))?;
        let pb = Playback {
            file,
            frame_bytes: 2 * signal.channels as usize,
        };
        pb.prepare().map_err(|e| format!("{node}: PREPARE: {e}"))?;
        Ok(pb)
    }

    /// An ioctl without argument (PREPARE, START).
    fn bare(&self, request: c_ulong) -> std::io::Result<()> {
        // SAFETY: `request` is one that takes no argument; the null pointer is ignored.
        let r = unsafe {
            ioctl(
                self.file.as_raw_fd(),
                request,
                std::ptr::null_mut::<c_void>(),
            )
        };
        if r == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }

    fn prepare(&self) -> std::io::Result<()> {
        self.bare(SNDRV_PCM_IOCTL_PREPARE)
    }

    /// WRITEI_FRAMES or READI_FRAMES of the whole frames in `buf` (blocking); the frames moved.
    fn transfer(&self, request: c_ulong, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut x = snd_xferi {
            result: 0,
            buf: buf.as_mut_ptr().cast(),
            frames: (buf.len() / self.frame_bytes) as c_ulong,
        };
        loop {
            // SAFETY: `x` points into `buf`, borrowed exclusively for the call, for no more
            // frames of the configured frame size than it holds; `request` is one of the two
            // transfers, whose argument is a snd_xferi.
            let r = unsafe { ioctl(self.file.as_raw_fd(), request, &mut x as *mut snd_xferi) };
            if r == 0 {
                return Ok(x.result as usize);
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    /// Writes all of `buf` (whole frames), blocking for room.
    fn write(&self, buf: &mut [u8]) -> std::io::Result<()> {
        let mut done = 0;
        while done < buf.len() {
            let frames = self.transfer(SNDRV_PCM_IOCTL_WRITEI_FRAMES, &mut buf[done..])?;
            done += frames * self.frame_bytes;
        }
        Ok(())
    }

    /// Reads `buf.len() / frame_bytes` frames (blocking), returns how many.
    fn read(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.transfer(SNDRV_PCM_IOCTL_READI_FRAMES, buf)
    }

    fn start(&self) -> std::io::Result<()> {
        self.bare(SNDRV_PCM_IOCTL_START)
    }

    fn status(&self) -> std::io::Result<snd_pcm_status> {
        let mut s: snd_pcm_status = zeroed();
        xioctl(&self.file, SNDRV_PCM_IOCTL_STATUS, &mut s)?;
        Ok(s)
    }
}

/// The play time of frame 0 of the current stream, in ns of CLOCK_MONOTONIC: the minimum of the
/// recent estimates (each one late by up to a timer tick, never early).
struct Anchor {
    window: [i128; 64],
    filled: usize,
    next: usize,
}

impl Anchor {
    fn new() -> Anchor {
        Anchor {
            window: [0; 64],
            filled: 0,
            next: 0,
        }
    }

    fn observe(&mut self, estimate: i128) {
        self.window[self.next] = estimate;
        self.next = (self.next + 1) % self.window.len();
        self.filled = (self.filled + 1).min(self.window.len());
    }

    fn get(&self) -> Option<i128> {
        self.window[..self.filled].iter().copied().min()
    }
}

/// Plays `signal` into `device` for ever, with a beep at each instant `flashes` gives (in
/// increasing order, ns of CLOCK_MONOTONIC); reopens the device when it goes away.
pub fn play(
    device: &str,
    signal: &Signal,
    period: u32,
    buffer: u32,
    mut flashes: impl FnMut(u64) -> i128,
) -> ! {
    let rate = i128::from(signal.rate);
    let ns_per_s = 1_000_000_000i128;
    let mut flash_index = 0u64; // the next flash to beep for
    let mut beeps = 0u64;
    let mut missed = 0u64;
    let mut total = 0u64; // frames of the tone so far, across reopens (its phase)
    let mut buf = vec![0u8; period as usize * 2 * signal.channels as usize];
    let tables = Tables::new(signal);
    let mut lost_at: Option<Instant> = None;
    loop {
        let pb = match Playback::open(device, 'p', signal, period, buffer) {
            Ok(pb) => pb,
            Err(e) => {
                if lost_at.is_none() {
                    eprintln!("v4l2-feeder: audio: {e}; retrying");
                    lost_at = Some(Instant::now());
                }
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        match lost_at.take() {
            Some(t) => println!(
                "v4l2-feeder: audio: {device} open again after {:.1} s",
                t.elapsed().as_secs_f64()
            ),
            None => println!(
                "v4l2-feeder: audio: {device}: S16_LE {} ch {} Hz, period {period}, buffer {buffer} frames; \
                 tone {} Hz at {:.3}, beep {} Hz at {:.3} for {} frames",
                signal.channels, signal.rate, signal.tone_hz, signal.tone_level, signal.beep_hz,
                signal.beep_level, signal.beep_frames
            ),
        }
        let mut written = 0u64; // frames written since this open
        let mut anchor = Anchor::new();
        let mut beep: Option<(u64, u64)> = None; // (first frame, flash number) of the beep planned
        let mut xruns = 0u64;
        let error = loop {
            // Plan the next beep once the stream runs and its frames are not written yet.
            if beep.is_none() {
                if let Some(t0) = anchor.get() {
                    loop {
                        let at = flashes(flash_index);
                        let frame = (at - t0) * rate / ns_per_s;
                        if frame >= written as i128 {
                            beep = Some((frame as u64, flash_index));
                            break;
                        }
                        // Its time has passed (the stream was not running yet, or it was away).
                        if beeps > 0 {
                            missed += 1;
                        }
                        flash_index += 1;
                    }
                }
            }
            let frames = period as u64;
            for (i, frame) in buf
                .chunks_exact_mut(2 * signal.channels as usize)
                .enumerate()
            {
                let k = written + i as u64;
                let into = beep
                    .and_then(|(b, _)| k.checked_sub(b))
                    .filter(|&d| d < signal.beep_frames);
                let s = tables.sample(total + i as u64, into).to_le_bytes();
                for ch in frame.chunks_exact_mut(2) {
                    ch.copy_from_slice(&s);
                }
            }
            if let Err(e) = pb.write(&mut buf) {
                if e.raw_os_error() == Some(32) {
                    // EPIPE: an underrun; the schedule starts again from the next write.
                    xruns += 1;
                    eprintln!("v4l2-feeder: audio: underrun #{xruns}; prepared again");
                    if let Err(e) = pb.prepare() {
                        break e;
                    }
                    // A flash not beeped for yet is planned again on the new schedule (or passed).
                    written = 0;
                    anchor = Anchor::new();
                    beep = None;
                    continue;
                }
                break e;
            }
            if let Some((b, n)) = beep {
                if written <= b && b < written + frames {
                    beeps += 1;
                    if beeps == 1 || beeps.is_multiple_of(30) {
                        println!("v4l2-feeder: audio: {beeps} beeps placed ({missed} flashes passed without one), the last for flash {n}");
                    }
                }
                if b + signal.beep_frames <= written + frames {
                    beep = None;
                    flash_index = n + 1;
                }
            }
            written += frames;
            total += frames;
            match pb.status() {
                // A tstamp from before the start is stale: the kernel renews it only once the
                // position moves (update_audio_tstamp), and after an underrun's restart it still
                // dates the old stream's last move (the frames written since then make it look
                // 100 ms early, and beeps came 100 ms late).
                Ok(s)
                    if s.state == STATE_RUNNING
                        && (s.tstamp.sec, s.tstamp.nsec)
                            > (s.trigger_tstamp.sec, s.trigger_tstamp.nsec) =>
                {
                    let tstamp = i128::from(s.tstamp.sec) * ns_per_s + i128::from(s.tstamp.nsec);
                    // The next frame written (number `written`) plays `delay` frames after tstamp.
                    let estimate =
                        tstamp + (i128::from(s.delay) - written as i128) * ns_per_s / rate;
                    anchor.observe(estimate);
                }
                Ok(_) => {}
                Err(e) => break e,
            }
        };
        eprintln!(
            "v4l2-feeder: audio: {device}: {error} at {:.3} s (CLOCK_MONOTONIC); closing it and reopening",
            clock() as f64 / 1e9
        );
        drop(pb);
        lost_at = Some(Instant::now());
    }
}

/// The self-check (`--listen`): captures `device` (the loopback's other side) as v4l2rtmp would,
/// dating each read's first frame by the status taken after it (`tstamp` dates the newest frame
/// captured, `avail` frames after the ones read), finds each beep's onset (the first sample above
/// half the beep's level after 50 ms below it) and prints its time against the nearest flash
/// instant. For developing the test without v4l2rtmp; it holds the capture side.
pub fn listen(
    device: &str,
    signal: &Signal,
    period: u32,
    buffer: u32,
    flash_at: impl Fn(u64) -> i128,
) -> ! {
    let rate = i128::from(signal.rate);
    let threshold = (signal.beep_level * 0.5 * 32767.0) as i32;
    let mut next_flash = 0u64;
    loop {
        let pb = match Playback::open(device, 'c', signal, period, buffer) {
            Ok(pb) => pb,
            Err(_) => {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        if let Err(e) = pb.start() {
            eprintln!("v4l2-feeder: listen: START: {e}");
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        println!("v4l2-feeder: listen: capturing {device}");
        let mut buf = vec![0u8; period as usize * pb.frame_bytes];
        let mut quiet = 0u64;
        let error = loop {
            let n = match pb.read(&mut buf) {
                Ok(n) => n,
                Err(e) => break e,
            };
            let s = match pb.status() {
                Ok(s) => s,
                Err(e) => break e,
            };
            let tstamp = i128::from(s.tstamp.sec) * 1_000_000_000 + i128::from(s.tstamp.nsec);
            let first = tstamp - (s.avail as i128 + n as i128) * 1_000_000_000 / rate;
            for (i, frame) in buf[..n * pb.frame_bytes]
                .chunks_exact(pb.frame_bytes)
                .enumerate()
            {
                let v = i32::from(i16::from_le_bytes([frame[0], frame[1]]));
                if v.abs() < threshold {
                    quiet += 1;
                    continue;
                }
                if quiet >= u64::from(signal.rate) / 20 && tstamp != 0 {
                    let onset = first + i as i128 * 1_000_000_000 / rate;
                    while flash_at(next_flash + 1) < onset {
                        next_flash += 1;
                    }
                    let (a, b) = (flash_at(next_flash), flash_at(next_flash + 1));
                    let nearest = if onset - a < b - onset { a } else { b };
                    println!(
                        "v4l2-feeder: listen: beep at {:.6} s, {:+.3} ms from the flash instant",
                        onset as f64 / 1e9,
                        (onset - nearest) as f64 / 1e6
                    );
                }
                quiet = 0;
            }
        };
        println!("v4l2-feeder: listen: {device}: {error}; reopening");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_anchor_is_the_earliest_recent_estimate() {
        let mut a = Anchor::new();
        assert_eq!(a.get(), None);
        a.observe(1_000_400);
        a.observe(1_000_100);
        a.observe(1_003_900);
        assert_eq!(a.get(), Some(1_000_100));
        for _ in 0..64 {
            a.observe(2_000_000);
        }
        assert_eq!(a.get(), Some(2_000_000));
    }

    #[test]
    fn the_signal_is_the_tone_plus_the_beep() {
        let s = SIGNAL;
        assert_eq!(s.sample(0, None), 0);
        // A quarter cycle of the beep (12 frames at 1 kHz) is its peak.
        let tone12 = s.sample(12, None);
        assert!((s.sample(12, Some(12)) - tone12 - 16384).abs() <= 1);
        assert!((0..48000).all(|k| s.sample(k, None).unsigned_abs() <= 3277));
        let t = Tables::new(&s);
        for (k, b) in [
            (0, None),
            (12, Some(12)),
            (47999, Some(4799)),
            (48012, None),
        ] {
            assert!((t.sample(k, b) - s.sample(k, b)).abs() <= 1, "frame {k}");
        }
    }

    #[test]
    fn names_become_playback_nodes() {
        assert_eq!(node_of("hw:1,0", 'p').unwrap(), "/dev/snd/pcmC1D0p");
        assert_eq!(node_of("hw:0,2,0", 'c').unwrap(), "/dev/snd/pcmC0D2c");
        assert!(node_of("plughw:0", 'p').is_err());
    }
}
