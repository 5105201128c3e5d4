//! v4l2-feeder: the "H.264 camera" of the VM tests.
//!
//! It splits an Annex-B H.264 clip into access units and writes them, one `write()` per access
//! unit, into the OUTPUT side of a v4l2loopback device at a fixed frame rate, after setting the
//! H264 format and the frame interval there. A reader of the device's CAPTURE side (v4l2rtmp,
//! v4l2-ctl) then sees what a UVC H.264 camera delivers: one access unit per buffer, start codes
//! included.
//!
//! With `--verify N` it also reads N frames back from the CAPTURE side (`read()`) and checks that
//! each one is byte-identical to an access unit of the clip, and that they come in the clip's
//! order; it exits 1 otherwise. That is the smoke test of the loopback path.
//!
//! With `--audio hw:Loopback,0,0` it is the microphone too (`audio.rs`): it plays a tone into
//! that ALSA playback device and, for each `--flash` frame of the clip, a beep that starts at the
//! sample played at the CLOCK_MONOTONIC instant the flash frame is written. v4l2loopback stamps
//! a buffer with CLOCK_MONOTONIC when it is written (`v4l2_loopback_write` calls
//! `v4l2l_get_timestamp`, which is `ktime_get_ts64`, after copying the frame), so a reader that
//! keeps both tracks on their devices' timestamps gets the flash and the beep at the same time.
//! Each flash frame's write is printed with its error from the planned instant.
//!
//! Dependency-free on purpose (raw ioctls through libc's `ioctl`); tests/vm/run builds it static
//! for the guest. Only the few V4L2 structures it needs are declared, sized for 64-bit guests.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::raw::{c_int, c_ulong};
use std::os::unix::io::AsRawFd;
use std::process::exit;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

mod audio;

#[repr(C)]
struct Timespec {
    sec: i64,
    nsec: i64,
}

#[repr(C)]
struct SchedParam {
    priority: c_int,
}

extern "C" {
    // musl declares the request as int, glibc as unsigned long: both are passed in a 64-bit
    // register and every request number here fits in 32 bits.
    fn ioctl(fd: c_int, request: c_ulong, ...) -> c_int;
    fn clock_gettime(clock: c_int, ts: *mut Timespec) -> c_int;
    fn pthread_self() -> c_ulong;
    fn pthread_setschedparam(thread: c_ulong, policy: c_int, param: *const SchedParam) -> c_int;
}

const CLOCK_MONOTONIC: c_int = 1;
const SCHED_FIFO: c_int = 1;

/// CLOCK_MONOTONIC now, in ns (the clock of V4L2 and ALSA timestamps).
fn clock() -> i128 {
    let mut ts = Timespec { sec: 0, nsec: 0 };
    // SAFETY: `ts` is a valid timespec (64-bit time_t on the 64-bit targets the feeder is for).
    unsafe { clock_gettime(CLOCK_MONOTONIC, &mut ts) };
    i128::from(ts.sec) * 1_000_000_000 + i128::from(ts.nsec)
}

/// Sleeps until CLOCK_MONOTONIC reaches `at` (ns); with `spin`, sleeps until 2 ms before and
/// polls the clock for the rest, for a write on time under a slow, loaded guest. (A margin of
/// 5 ms did worse on the arm64 guest: writes 3.8 ms late, about a timer tick, half the time.)
fn sleep_until(at: i128, spin: bool) {
    let margin = if spin { 2_000_000 } else { 0 };
    let now = clock();
    if at - margin > now {
        thread::sleep(Duration::from_nanos((at - margin - now) as u64));
    }
    while spin && clock() < at {
        std::hint::spin_loop();
    }
}

/// SCHED_FIFO for the calling thread, so that a busy guest delays the schedule less. (Through
/// pthread_setschedparam: musl's sched_setscheduler is ENOSYS by design.)
fn realtime() {
    let param = SchedParam { priority: 10 };
    // SAFETY: `param` is a valid sched_param; pthread_self() is the calling thread (pthread_t
    // is an unsigned long in glibc and a pointer in musl: one 64-bit register either way).
    let err = unsafe { pthread_setschedparam(pthread_self(), SCHED_FIFO, &param) };
    if err != 0 {
        eprintln!(
            "v4l2-feeder: SCHED_FIFO: {}; going on without",
            std::io::Error::from_raw_os_error(err)
        );
    }
}

const USAGE: &str = "\
usage: v4l2-feeder [OPTIONS] CLIP.h264
Writes the Annex-B clip's access units into a v4l2loopback device, one write() per access unit.
  --device PATH   the loopback node (default: the first /dev/video* whose driver is v4l2 loopback)
  --fps N         access units per second (default 30)
  --loops N       times through the clip, 0 = until killed (default 1; with --verify: until done)
  --size WxH      width and height announced in the H264 format (default 1920x1080)
  --ready PATH    create PATH once the first access unit is written
  --verify N      also read N frames from the CAPTURE side and check each is byte-identical to an
                  access unit of the clip, in order; exit 1 if not. The writer then waits
                  for the reader before each access unit, so none is dropped
  --info          only list the clip's access units
  --audio DEVICE  also play into the ALSA playback DEVICE (hw:CARD,DEV; S16_LE, 48000 Hz, 2 ch):
                  a 440 Hz tone at peak 0.1 and, for every --flash frame, a 1 kHz beep at peak 0.5
                  for 100 ms starting at the sample played when that frame is written
  --flash N,N,..  the clip's flash frames (0-based access unit indices), for --audio
  --period N      --audio's period in frames (default 480: 10 ms); --buffer N its buffer (48000: 1 s)
  --realtime      run the writers with SCHED_FIFO
  --listen DEVICE capture DEVICE (the loopback's other side, hw:Loopback,1,0) and print each
                  beep's onset, dated by ALSA's timestamps, against its flash instant";

const VIDIOC_QUERYCAP: c_ulong = 0x8068_5600;
const VIDIOC_G_FMT: c_ulong = 0xc0d0_5604;
const VIDIOC_S_FMT: c_ulong = 0xc0d0_5605;
const VIDIOC_S_PARM: c_ulong = 0xc0cc_5616;
const BUF_TYPE_VIDEO_CAPTURE: u32 = 1;
const BUF_TYPE_VIDEO_OUTPUT: u32 = 2;
const FIELD_NONE: u32 = 1;
const PIX_FMT_H264: u32 = u32::from_le_bytes(*b"H264");

#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
struct PixFormat {
    width: u32,
    height: u32,
    pixelformat: u32,
    field: u32,
    bytesperline: u32,
    sizeimage: u32,
    colorspace: u32,
    priv_: u32,
    flags: u32,
    ycbcr_enc: u32,
    quantization: u32,
    xfer_func: u32,
}

/// struct v4l2_format: the union holds pointers in some members, hence 8-byte alignment.
#[repr(C, align(8))]
struct Format {
    type_: u32,
    _pad: u32,
    pix: PixFormat,
    _rest: [u8; 152],
}

#[repr(C)]
struct Capability {
    driver: [u8; 16],
    card: [u8; 32],
    bus_info: [u8; 32],
    version: u32,
    capabilities: u32,
    device_caps: u32,
    reserved: [u32; 3],
}

/// struct v4l2_streamparm with the v4l2_outputparm member of its union.
#[repr(C)]
struct StreamParm {
    type_: u32,
    capability: u32,
    outputmode: u32,
    timeperframe: [u32; 2], // numerator, denominator
    extendedmode: u32,
    writebuffers: u32,
    _rest: [u8; 200 - 24],
}

const _: () = assert!(std::mem::size_of::<Format>() == 208);
const _: () = assert!(std::mem::size_of::<Capability>() == 104);
const _: () = assert!(std::mem::size_of::<StreamParm>() == 204);

fn zeroed<T>() -> T {
    // SAFETY: only used for the plain-integer V4L2 structures above.
    unsafe { std::mem::zeroed() }
}

fn xioctl<T>(file: &File, request: c_ulong, arg: &mut T) -> std::io::Result<()> {
    // SAFETY: `arg` is the structure `request` is defined with (sizes asserted above).
    if unsafe { ioctl(file.as_raw_fd(), request, arg as *mut T) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn cstr(b: &[u8]) -> String {
    String::from_utf8_lossy(b.split(|&c| c == 0).next().unwrap_or_default()).into()
}

fn querycap(file: &File) -> std::io::Result<Capability> {
    let mut cap: Capability = zeroed();
    xioctl(file, VIDIOC_QUERYCAP, &mut cap)?;
    Ok(cap)
}

/// Splits an Annex-B stream into access units (start codes kept). A new access unit starts at an
/// AUD, SPS, PPS, SEI or prefix NAL unit, or at a slice whose first_mb_in_slice is 0, once the
/// current one holds a slice (H.264 7.4.1.2.3, for streams without redundant pictures or ASO).
fn access_units(data: &[u8]) -> Vec<&[u8]> {
    // (start of the start code, index of the NAL header)
    let mut nals = Vec::new();
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            let start = if i > 0 && data[i - 1] == 0 { i - 1 } else { i };
            nals.push((start, i + 3));
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut units = Vec::new();
    let mut au_start = None;
    let mut has_slice = false;
    for &(start, header) in &nals {
        let kind = data.get(header).map_or(0, |b| b & 0x1f);
        let first_mb_zero = data.get(header + 1).is_some_and(|b| b & 0x80 != 0);
        let is_slice = kind == 1 || kind == 5;
        let begins_au = matches!(kind, 6..=9 | 14..=18) || (is_slice && first_mb_zero);
        if has_slice && begins_au {
            if let Some(s) = au_start {
                units.push(&data[s..start]);
            }
            au_start = Some(start);
            has_slice = false;
        }
        au_start.get_or_insert(start);
        has_slice |= is_slice;
    }
    if let Some(s) = au_start {
        units.push(&data[s..]);
    }
    units
}

fn find_loopback() -> Option<String> {
    let mut nodes: Vec<_> = fs::read_dir("/dev")
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("video"))
        .collect();
    nodes.sort_by_key(|n| n[5..].parse::<u32>().unwrap_or(u32::MAX));
    nodes.into_iter().map(|n| format!("/dev/{n}")).find(|path| {
        File::open(path)
            .and_then(|f| querycap(&f))
            .is_ok_and(|cap| cstr(&cap.driver) == "v4l2 loopback")
    })
}

struct Options {
    device: Option<String>,
    fps: u32,
    loops: Option<u64>,
    size: (u32, u32),
    ready: Option<String>,
    verify: usize,
    info: bool,
    clip: String,
    audio: Option<String>,
    flashes: Vec<usize>,
    period: u32,
    buffer: u32,
    realtime: bool,
    listen: Option<String>,
}

fn parse_args() -> Result<Options, String> {
    let mut o = Options {
        device: None,
        fps: 30,
        loops: None,
        size: (1920, 1080),
        ready: None,
        verify: 0,
        info: false,
        clip: String::new(),
        audio: None,
        flashes: Vec::new(),
        period: 480,
        buffer: 48000,
        realtime: false,
        listen: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--device" => o.device = Some(value("--device")?),
            "--fps" => o.fps = value("--fps")?.parse().map_err(|e| format!("--fps: {e}"))?,
            "--loops" => {
                o.loops = Some(
                    value("--loops")?
                        .parse()
                        .map_err(|e| format!("--loops: {e}"))?,
                )
            }
            "--size" => {
                let v = value("--size")?;
                let (w, h) = v.split_once('x').ok_or("--size takes WxH")?;
                o.size = (
                    w.parse().map_err(|_| "bad width")?,
                    h.parse().map_err(|_| "bad height")?,
                );
            }
            "--ready" => o.ready = Some(value("--ready")?),
            "--verify" => {
                o.verify = value("--verify")?
                    .parse()
                    .map_err(|e| format!("--verify: {e}"))?
            }
            "--info" => o.info = true,
            "--audio" => o.audio = Some(value("--audio")?),
            "--flash" => {
                o.flashes = value("--flash")?
                    .split(',')
                    .map(|n| n.parse().map_err(|e| format!("--flash: {e}")))
                    .collect::<Result<_, _>>()?;
                o.flashes.sort_unstable();
            }
            "--period" => {
                o.period = value("--period")?
                    .parse()
                    .map_err(|e| format!("--period: {e}"))?
            }
            "--buffer" => {
                o.buffer = value("--buffer")?
                    .parse()
                    .map_err(|e| format!("--buffer: {e}"))?
            }
            "--realtime" => o.realtime = true,
            "--listen" => o.listen = Some(value("--listen")?),
            "-h" | "--help" => return Err(String::new()),
            s if s.starts_with('-') => return Err(format!("unknown option {s}")),
            s if o.clip.is_empty() => o.clip = s.into(),
            s => return Err(format!("unexpected argument {s}")),
        }
    }
    if o.clip.is_empty() {
        return Err("no clip given".into());
    }
    if o.fps == 0 {
        return Err("--fps must be at least 1".into());
    }
    if o.audio.is_some() && o.flashes.is_empty() {
        return Err("--audio needs --flash".into());
    }
    Ok(o)
}

fn main() {
    let o = parse_args().unwrap_or_else(|e| {
        if !e.is_empty() {
            eprintln!("v4l2-feeder: {e}");
        }
        eprintln!("{USAGE}");
        exit(2)
    });
    let data = fs::read(&o.clip).unwrap_or_else(|e| fail(&format!("cannot read {}: {e}", o.clip)));
    let units = access_units(&data);
    if units.is_empty() {
        fail(&format!("{}: no H.264 access unit", o.clip));
    }
    let sizes: Vec<usize> = units.iter().map(|u| u.len()).collect();
    println!(
        "v4l2-feeder: {}: {} access units, {} to {} bytes",
        o.clip,
        units.len(),
        sizes.iter().min().unwrap(),
        sizes.iter().max().unwrap()
    );
    if o.info {
        for (i, u) in units.iter().enumerate() {
            let types: Vec<u8> = access_units_nal_types(u);
            println!("  {i:3}: {:7} bytes, NAL types {types:?}", u.len());
        }
        return;
    }

    let device = o
        .device
        .clone()
        .or_else(find_loopback)
        .unwrap_or_else(|| fail("no v4l2loopback device (modprobe v4l2loopback?)"));
    let out = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&device)
        .unwrap_or_else(|e| fail(&format!("cannot open {device}: {e}")));
    let cap = querycap(&out).unwrap_or_else(|e| fail(&format!("{device}: VIDIOC_QUERYCAP: {e}")));
    let mut f: Format = zeroed();
    f.type_ = BUF_TYPE_VIDEO_OUTPUT;
    f.pix = PixFormat {
        width: o.size.0,
        height: o.size.1,
        pixelformat: PIX_FMT_H264,
        field: FIELD_NONE,
        sizeimage: o.size.0 * o.size.1 * 2,
        ..Default::default()
    };
    xioctl(&out, VIDIOC_S_FMT, &mut f)
        .unwrap_or_else(|e| fail(&format!("{device}: VIDIOC_S_FMT(H264): {e}")));
    if f.pix.pixelformat != PIX_FMT_H264 {
        fail(&format!(
            "{device}: the driver did not take the H264 format"
        ));
    }
    if (f.pix.sizeimage as usize) < *sizes.iter().max().unwrap() {
        fail(&format!(
            "{device}: buffers of {} bytes, too small for the clip",
            f.pix.sizeimage
        ));
    }
    let mut parm: StreamParm = zeroed();
    parm.type_ = BUF_TYPE_VIDEO_OUTPUT;
    parm.timeperframe = [1, o.fps];
    if let Err(e) = xioctl(&out, VIDIOC_S_PARM, &mut parm) {
        eprintln!(
            "v4l2-feeder: {device}: VIDIOC_S_PARM (1/{} s): {e}; going on",
            o.fps
        );
    }
    println!(
        "v4l2-feeder: {device} (driver {}, card {}): H264 {}x{}, buffers of {} bytes, {} fps, loops {}",
        cstr(&cap.driver),
        cstr(&cap.card),
        f.pix.width,
        f.pix.height,
        f.pix.sizeimage,
        o.fps,
        match o.loops {
            Some(0) => "forever".to_string(),
            Some(n) => n.to_string(),
            None if o.verify > 0 => "until verified".to_string(),
            None => "1".to_string(),
        }
    );

    let owned: Vec<Vec<u8>> = units.iter().map(|u| u.to_vec()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let first_written = Arc::new(AtomicBool::new(false));
    // With --verify the writer goes in step with the reader: it writes an access unit only once
    // the reader has read all the earlier ones. A v4l2loopback reader that falls more than two
    // frames behind is moved to the newest frame, which a loaded TCG guest would otherwise do now
    // and then; in step, every access unit must come back, in order.
    let lockstep = o.verify > 0;
    let consumed = Arc::new(AtomicU64::new(0));
    let loops = o.loops.unwrap_or(if o.verify > 0 { 0 } else { 1 });
    // With --audio the schedule starts 1.5 s from now, time for the audio to run and be dated.
    let start = clock() + if o.audio.is_some() { 1_500_000_000 } else { 0 };
    let frame_ns = 1_000_000_000 / i128::from(o.fps);
    let flashes = o.flashes.clone();
    if let Some(device) = o.audio.clone() {
        let signal = audio::SIGNAL;
        let (period, buffer, rt, clip_len) = (o.period, o.buffer, o.realtime, owned.len());
        // The i-th flash of the whole run: its frame's instant on the video schedule.
        let flash_at = {
            let flashes = flashes.clone();
            move |i: u64| {
                let i = i as usize;
                let frame = (i / flashes.len()) * clip_len + flashes[i % flashes.len()];
                start + frame as i128 * frame_ns
            }
        };
        if let Some(other) = o.listen.clone() {
            let (signal, flash_at) = (signal.clone(), flash_at.clone());
            // A buffer of 200 ms: a busy guest must not make the check overrun.
            thread::spawn(move || {
                if rt {
                    realtime();
                }
                audio::listen(&other, &signal, 960, 9600, flash_at)
            });
        }
        thread::spawn(move || {
            if rt {
                realtime();
            }
            audio::play(&device, &signal, period, buffer, flash_at)
        });
    }
    let writer = {
        let (units, stop, first_written, consumed, ready, rt) = (
            owned.clone(),
            stop.clone(),
            first_written.clone(),
            consumed.clone(),
            o.ready.clone(),
            o.realtime,
        );
        let timed = o.audio.is_some();
        let mut out = out;
        thread::spawn(move || -> u64 {
            if rt {
                realtime();
            }
            let mut written = 0u64;
            let mut round = 0u64;
            let mut flashed = 0u64;
            while loops == 0 || round < loops {
                for (index, unit) in units.iter().enumerate() {
                    while lockstep && written > 0 && consumed.load(Ordering::Acquire) < written {
                        if stop.load(Ordering::Relaxed) {
                            return written;
                        }
                        thread::sleep(Duration::from_millis(1));
                    }
                    if stop.load(Ordering::Relaxed) {
                        return written;
                    }
                    let flash = timed && flashes.binary_search(&index).is_ok();
                    let deadline = start + written as i128 * frame_ns;
                    sleep_until(deadline, flash);
                    let before = clock();
                    match out.write(unit) {
                        Ok(n) if n == unit.len() => {}
                        Ok(n) => fail(&format!("short write: {n} of {} bytes", unit.len())),
                        Err(e) => fail(&format!("write: {e}")),
                    }
                    if flash {
                        let after = clock();
                        println!(
                            "v4l2-feeder: flash {flashed} (frame {written}) written {:+.3} ms from its instant {:.6} s, in {:.3} ms",
                            (before - deadline) as f64 / 1e6,
                            deadline as f64 / 1e9,
                            (after - before) as f64 / 1e6
                        );
                        flashed += 1;
                    }
                    written += 1;
                    if written == 1 {
                        first_written.store(true, Ordering::Release);
                        if let Some(path) = &ready {
                            let _ = File::create(path);
                        }
                    }
                }
                round += 1;
            }
            written
        })
    };

    let mut status = 0;
    if o.verify > 0 {
        while !first_written.load(Ordering::Acquire) {
            thread::sleep(Duration::from_millis(5));
        }
        let mut capf = File::open(&device)
            .unwrap_or_else(|e| fail(&format!("cannot open {device} to read: {e}")));
        let mut g: Format = zeroed();
        g.type_ = BUF_TYPE_VIDEO_CAPTURE;
        xioctl(&capf, VIDIOC_G_FMT, &mut g)
            .unwrap_or_else(|e| fail(&format!("{device}: VIDIOC_G_FMT(capture): {e}")));
        let ccap =
            querycap(&capf).unwrap_or_else(|e| fail(&format!("{device}: VIDIOC_QUERYCAP: {e}")));
        println!(
            "v4l2-feeder: capture side: device_caps {:#x}, format {} {}x{} sizeimage {}",
            ccap.device_caps,
            String::from_utf8_lossy(&g.pix.pixelformat.to_le_bytes()),
            g.pix.width,
            g.pix.height,
            g.pix.sizeimage
        );
        let mut buf = vec![0u8; (g.pix.sizeimage as usize).max(*sizes.iter().max().unwrap() + 1)];
        let (mut identical, mut in_order) = (0, 0);
        let mut previous: Option<usize> = None;
        for _ in 0..o.verify {
            let n = capf
                .read(&mut buf)
                .unwrap_or_else(|e| fail(&format!("read: {e}")));
            let index = owned.iter().position(|u| u[..] == buf[..n]);
            let ordered = match (previous, index) {
                (Some(p), Some(i)) => i == (p + 1) % owned.len(),
                (None, Some(_)) => true,
                _ => false,
            };
            println!(
                "v4l2-feeder: read {n} bytes: {}{}",
                index.map_or("NOT an access unit of the clip".into(), |i| format!(
                    "access unit {i}"
                )),
                if ordered || index.is_none() {
                    ""
                } else {
                    " (out of order)"
                }
            );
            identical += index.is_some() as usize;
            in_order += ordered as usize;
            previous = index;
            consumed.fetch_add(1, Ordering::Release);
        }
        stop.store(true, Ordering::Relaxed);
        println!(
            "v4l2-feeder: {identical}/{} frames read back byte-identical to access units, {in_order} in order",
            o.verify
        );
        if identical != o.verify || in_order != o.verify {
            status = 1;
        }
    }
    let written = writer.join().unwrap_or(0);
    println!("v4l2-feeder: wrote {written} access units");
    exit(status)
}

fn access_units_nal_types(unit: &[u8]) -> Vec<u8> {
    unit.windows(4)
        .filter(|w| w[..3] == [0, 0, 1])
        .map(|w| w[3] & 0x1f)
        .collect()
}

fn fail(message: &str) -> ! {
    eprintln!("v4l2-feeder: {message}");
    exit(1)
}

#[cfg(test)]
mod tests {
    use super::access_units;

    #[test]
    fn splits_at_parameter_sets_and_first_slices() {
        let clip = [
            &[0, 0, 0, 1, 0x67, 1][..], // SPS
            &[0, 0, 0, 1, 0x68, 2],     // PPS
            &[0, 0, 0, 1, 0x65, 0x88],  // IDR slice, first_mb 0
            &[0, 0, 1, 0x65, 0x40],     // IDR slice, first_mb != 0: same picture
            &[0, 0, 0, 1, 0x41, 0x9a],  // P slice, first_mb 0: next picture
            &[0, 0, 0, 1, 0x06, 5],     // SEI: next picture
            &[0, 0, 0, 1, 0x41, 0x9b],
        ]
        .concat();
        let units = access_units(&clip);
        assert_eq!(units.len(), 3);
        assert_eq!(units[0].len(), 6 + 6 + 6 + 5);
        assert_eq!(units[1], &[0, 0, 0, 1, 0x41, 0x9a]);
        assert_eq!(units[2], &[0, 0, 0, 1, 0x06, 5, 0, 0, 0, 1, 0x41, 0x9b]);
        assert_eq!(units.concat(), clip);
    }
}
