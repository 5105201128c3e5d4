//! The size probe: the least program that encodes a buffer. Built once with no encoder feature
//! (the baseline: the same harness, whose `encode` only returns an error) and once per
//! candidate; the difference in stripped static binary size is what the encoder adds.
//! It encodes one second of a 440 Hz tone at 64 kbit/s and prints the ADTS byte count.

use std::io::Write;

fn main() {
    let codec = std::env::args().nth(1).unwrap_or_default();
    let samples = (0..48_000)
        .map(|i| 0.5 * (2.0 * std::f32::consts::PI * 440.0 * i as f32 / 48_000.0).sin())
        .collect();
    let pcm = aac_bench::Pcm {
        rate: 48_000,
        channels: 1,
        samples,
    };
    let code = match aac_bench::encode(&codec, &pcm, 64_000) {
        Ok(adts) => {
            let _ = writeln!(std::io::stdout(), "{} bytes of ADTS", adts.len());
            0
        }
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "{e}");
            1
        }
    };
    std::process::exit(code);
}
