//! aac-bench: the tool behind `scripts/bench-aac` (see REPORT.md beside Cargo.toml).
//!
//!   aac-bench tone OUT.wav SECONDS HZ AMPLITUDE     a sine, 48 kHz mono S16_LE WAV
//!   aac-bench encode CODEC BITRATE IN.wav OUT.aac   WAV (S16_LE, mono or stereo) to ADTS
//!   aac-bench compare REF.wav DECODED.wav [HZ [DELAY]]
//!                                                   align for the encoder delay (found by
//!                                                   cross-correlation unless DELAY is given),
//!                                                   then SNR, and THD+N when HZ (the tone) is
//!                                                   given
//!
//! CODEC is `fdk` (Fraunhofer FDK AAC through fdk-aac-sys, the library's defaults), `fdk-ab`
//! (the same with its afterburner on) or `rusty` (rusty_aac's encoder); each needs its cargo
//! feature. `encode` prints `encode_cpu_s=` on stderr: the process CPU time spent between reading
//! the input and writing the output, the encoder's own share of the process's CPU.

use aac_bench::{read_wav, write_wav_s16, Res};
use std::fs;
use std::io::Write;
use std::process::ExitCode;

const RATE: u32 = 48_000;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("tone") if args.len() == 5 => tone(&args[1..]),
        Some("encode") if args.len() == 5 => encode(&args[1], &args[2], &args[3], &args[4]),
        Some("compare") if (3..=5).contains(&args.len()) => {
            compare(&args[1], &args[2], args.get(3), args.get(4))
        }
        _ => Err(
            "usage: aac-bench tone OUT SECONDS HZ AMP | encode CODEC BITRATE IN OUT | \
                  compare REF DECODED [HZ [DELAY]]"
                .into(),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("aac-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn num<T: std::str::FromStr>(s: &str, what: &str) -> Res<T> {
    s.parse().map_err(|_| format!("bad {what}: {s:?}"))
}

fn tone(a: &[String]) -> Res<()> {
    let seconds: f64 = num(&a[1], "seconds")?;
    let hz: f64 = num(&a[2], "frequency")?;
    let amp: f64 = num(&a[3], "amplitude")?;
    let n = (seconds * f64::from(RATE)) as usize;
    let w = 2.0 * std::f64::consts::PI * hz / f64::from(RATE);
    let s: Vec<i16> = (0..n)
        .map(|i| (amp * 32767.0 * (w * i as f64).sin()).round() as i16)
        .collect();
    write_wav_s16(&a[0], RATE, &s)
}

// ---------------------------------------------------------------------------------------------
// Encoding.

/// CPU time of this process (all threads), in seconds: CLOCK_PROCESS_CPUTIME_ID.
fn process_cpu() -> f64 {
    // struct timespec is two C longs on every target built here (x86_64, aarch64-musl,
    // armv7-gnueabihf with glibc's default 32-bit time_t).
    #[repr(C)]
    struct Timespec {
        sec: std::ffi::c_long,
        nsec: std::ffi::c_long,
    }
    extern "C" {
        fn clock_gettime(clock: std::ffi::c_int, ts: *mut Timespec) -> std::ffi::c_int;
    }
    const CLOCK_PROCESS_CPUTIME_ID: std::ffi::c_int = 2;
    let mut ts = Timespec { sec: 0, nsec: 0 };
    // SAFETY: clock_gettime writes one struct timespec through a valid pointer.
    unsafe { clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.sec as f64 + ts.nsec as f64 * 1e-9
}

fn encode(codec: &str, bitrate: &str, input: &str, output: &str) -> Res<()> {
    let bitrate: u32 = num(bitrate, "bitrate")?;
    let pcm = read_wav(input)?;
    let t0 = process_cpu();
    let adts = aac_bench::encode(codec, &pcm, bitrate)?;
    let cpu = process_cpu() - t0;
    fs::File::create(output)
        .and_then(|mut f| f.write_all(&adts))
        .map_err(|e| format!("{output}: {e}"))?;
    eprintln!("encode_cpu_s={cpu:.4}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Comparison.

/// The lag (decoded sample index of reference sample 0) in 0..max_lag that maximises the
/// normalised cross-correlation over a window in the middle of the reference.
fn find_delay(r: &[f32], d: &[f32], max_lag: usize) -> usize {
    let start = r.len() / 4;
    let len = (r.len() / 2).min(4 * RATE as usize);
    let seg = &r[start..start + len];
    let mut best = (f64::MIN, 0);
    for lag in 0..max_lag {
        if start + lag + len > d.len() {
            break;
        }
        let x = &d[start + lag..start + lag + len];
        let (mut dot, mut e) = (0.0f64, 0.0f64);
        for (a, b) in seg.iter().zip(x) {
            dot += f64::from(*a) * f64::from(*b);
            e += f64::from(*b) * f64::from(*b);
        }
        let score = dot / e.sqrt().max(1e-12);
        if score > best.0 {
            best = (score, lag);
        }
    }
    best.1
}

fn compare(
    reference: &str,
    decoded: &str,
    tone_hz: Option<&String>,
    delay: Option<&String>,
) -> Res<()> {
    let r = read_wav(reference)?;
    let d = read_wav(decoded)?;
    if r.channels != 1 || d.channels != 1 || r.rate != d.rate {
        return Err("compare wants two mono files at the same rate".into());
    }
    let (r, d) = (r.samples, d.samples);
    // A tone correlates equally well at every whole period: scripts/bench-aac passes the delay
    // found on the speech (an encoder's delay does not depend on the signal).
    let delay = match delay {
        Some(s) => num(s, "delay")?,
        None => find_delay(&r, &d, 8192),
    };
    // Leave out the first and last 4096 samples of the reference (start-up and the flush).
    let (lo, hi) = (
        4096,
        r.len()
            .saturating_sub(4096)
            .min(d.len().saturating_sub(delay)),
    );
    if hi <= lo {
        return Err("decoded output too short".into());
    }
    let (mut sig, mut err) = (0.0f64, 0.0f64);
    for i in lo..hi {
        let (a, b) = (f64::from(r[i]), f64::from(d[i + delay]));
        sig += a * a;
        err += (b - a) * (b - a);
    }
    let snr = 10.0 * (sig / err.max(1e-30)).log10();
    let mut line = format!("delay={delay} snr_db={snr:.2}");
    if let Some(hz) = tone_hz {
        let hz: f64 = num(hz, "frequency")?;
        // THD+N: least-squares fit of DC + sin + cos at the tone's frequency to the decoded
        // signal; everything the fit leaves is distortion plus noise, over the whole band.
        let w = 2.0 * std::f64::consts::PI * hz / f64::from(RATE);
        let x: Vec<f64> = (lo..hi).map(|i| f64::from(d[i + delay])).collect();
        let basis = |k: usize, n: usize| -> f64 {
            match k {
                0 => 1.0,
                1 => (w * n as f64).sin(),
                _ => (w * n as f64).cos(),
            }
        };
        let mut ata = [[0.0f64; 3]; 3];
        let mut atb = [0.0f64; 3];
        for (n, &v) in x.iter().enumerate() {
            let b = [basis(0, n), basis(1, n), basis(2, n)];
            for i in 0..3 {
                atb[i] += b[i] * v;
                for j in 0..3 {
                    ata[i][j] += b[i] * b[j];
                }
            }
        }
        let c = solve3(ata, atb);
        let (mut total, mut resid) = (0.0f64, 0.0f64);
        for (n, &v) in x.iter().enumerate() {
            let fit = c[0] + c[1] * basis(1, n) + c[2] * basis(2, n);
            total += v * v;
            resid += (v - fit) * (v - fit);
        }
        let ratio = (resid / total.max(1e-30)).sqrt();
        let amp = (c[1] * c[1] + c[2] * c[2]).sqrt();
        line += &format!(
            " thdn_db={:.2} thdn_pct={:.4} tone_amp={amp:.4}",
            20.0 * ratio.max(1e-15).log10(),
            100.0 * ratio
        );
    }
    println!("{line}");
    Ok(())
}

/// Solves a 3x3 linear system by Gaussian elimination with partial pivoting.
fn solve3(mut a: [[f64; 3]; 3], mut b: [f64; 3]) -> [f64; 3] {
    for col in 0..3 {
        let p = (col..3)
            .max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))
            .unwrap();
        a.swap(col, p);
        b.swap(col, p);
        for row in col + 1..3 {
            let f = a[row][col] / a[col][col];
            let pivot = a[col];
            for (x, p) in a[row].iter_mut().zip(pivot).skip(col) {
                *x -= f * p;
            }
            b[row] -= f * b[col];
        }
    }
    let mut x = [0.0; 3];
    for row in (0..3).rev() {
        let s: f64 = (row + 1..3).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - s) / a[row][row];
    }
    x
}
