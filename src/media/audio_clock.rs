//! Audio timestamps on the video's clock: each AAC frame is stamped with the CLOCK_MONOTONIC
//! time at which its first sample was captured, relative to the stream's origin, so that audio
//! and video stay together for days although the sound card's crystal and the system clock
//! disagree by up to a few hundred ppm (300 ppm is 26 s a day).
//!
//! # Input
//!
//! The capture loop reports, whenever it reads, the time at which the device had captured a
//! given number of samples since the stream started ([`AudioClock::report`]): ALSA's
//! `status.tstamp` (with `SNDRV_PCM_IOCTL_TTSTAMP` set to monotonic) and the samples read plus
//! those still available. Such a report is never early, but may be late (the time is taken
//! after the hardware pointer moved, by up to a period or a scheduling delay): the model is
//! `time = capture_time(samples) + delay`, `delay >= 0`, random. A byte-stream input without
//! capture times (ADTS from a pipe) reports, for each read, its arrival time and the samples up
//! to the end of the last frame it completed, then stamps those frames: the same model, with
//! the encoder's latency in the delay (the stamps follow the earliest arrivals).
//!
//! # Estimate
//!
//! The capture times lie on a line, `time = a + samples / actual_rate`. Reports are grouped in
//! buckets of [`BUCKET_SECONDS`] of samples; each bucket keeps its least delayed report (the
//! lowest residual against the current line), and a least-squares line through the last
//! [`WINDOW_BUCKETS`] bucket minima gives the actual rate and the offset. Until
//! [`MIN_FIT_BUCKETS`] buckets are closed, the rate is the last estimate (the nominal rate at
//! first) and the line goes through the least delayed report so far, which it follows as better
//! ones come. The rate is held within [`MAX_PPM`] of the nominal one.
//!
//! # Output
//!
//! Each stamp ([`AudioClock::stamp`]) is the previous one plus the frame's duration at the
//! estimated rate, moved towards the line by at most [`MAX_SLEW`] of the frame's nominal
//! duration: so the spacing of consecutive stamps differs from the nominal spacing by at most
//! `MAX_PPM + MAX_SLEW` of a frame (0.096 ms at 48 kHz, a small fraction of the 21.3 ms frame),
//! while the line is followed at up to 2500 ppm, far faster than any crystal drifts. The first
//! stamps after an anchoring are as late as the first report was (the only thing known then),
//! and come back to the line at that pace as less delayed reports arrive.
//!
//! Measured by the tests (48 kHz, a report per 1024 samples late by 0 to 20 ms at random, 24
//! virtual hours): at +300 and -300 ppm the stamps stay within 12 ms of the true capture times
//! (the worst at the start: the first report's delay), within 0.6 ms over the last hour, and
//! consecutive stamps are spaced within 0.061 ms of 21.333 ms (21 or 22 ms in FLV's unit).
//!
//! # Discontinuities
//!
//! When samples are lost (an overrun) or the stream restarts, the caller says so
//! ([`AudioClock::discontinuity`]) and the clock anchors again on the next report, keeping its
//! rate estimate (the same crystal). It also anchors again by itself when a report is more than
//! [`REANCHOR_NS`] earlier than the line allows, or when a whole bucket is later than that
//! (samples lost without a word): the stamps then jump, as they must.
//!
//! Invariants: sans-IO (every time is given), no allocation (the state is a few fixed arrays),
//! no panic on any input (times and counts going backwards, huge gaps: at worst a re-anchor).

/// Seconds of nominal samples per bucket.
pub const BUCKET_SECONDS: u64 = 2;
/// Bucket minima the rate is fitted to: 64 s of capture.
pub const WINDOW_BUCKETS: usize = 32;
/// Closed buckets needed before the rate is fitted rather than assumed.
pub const MIN_FIT_BUCKETS: usize = 4;
/// The most the fitted rate may differ from the nominal rate, in parts per million.
pub const MAX_PPM: f64 = 2000.0;
/// The most a stamp may be moved towards the line, as a fraction of the frame's nominal
/// duration (2500 ppm: 53 us for a 21.3 ms frame).
pub const MAX_SLEW: f64 = 1.0 / 400.0;
/// A report this much earlier than the line, or a bucket whose least delayed report is this
/// much later, means the line is wrong (lost samples, a clock step): anchor again.
pub const REANCHOR_NS: i64 = 100_000_000;

const NS_PER_SECOND: f64 = 1e9;

/// An audio frame's time, relative to the clock's origin (negative: captured before it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Stamp {
    ns: i64,
}

impl Stamp {
    /// Nanoseconds after the origin.
    pub fn ns(self) -> i64 {
        self.ns
    }

    /// Milliseconds after the origin, rounded to the nearest (FLV's unit).
    pub fn ms(self) -> i64 {
        self.ns.saturating_add(500_000).div_euclid(1_000_000)
    }
}

/// A report: `samples` had been captured by `time` (ns, CLOCK_MONOTONIC).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Point {
    samples: u64,
    time: u64,
}

/// The estimated capture time of sample `n`: `time + (n - samples) * slope` ns.
#[derive(Clone, Copy, Debug)]
struct Line {
    at: Point,
    slope: f64,
}

impl Line {
    /// Nanoseconds from `self.at.time` to the capture of sample `samples`.
    fn offset(&self, samples: u64) -> f64 {
        (samples as i128 - self.at.samples as i128) as f64 * self.slope
    }

    /// How much later than the line `point` is, in ns.
    fn residual(&self, point: Point) -> f64 {
        (point.time as i128 - self.at.time as i128) as f64 - self.offset(point.samples)
    }
}

/// The last stamp given.
#[derive(Clone, Copy, Debug)]
struct Output {
    samples: u64,
    /// Nanoseconds after the origin, unrounded.
    ns: f64,
}

/// Audio timestamps from capture reports; see the module's notes.
#[derive(Clone, Debug)]
pub struct AudioClock {
    rate: u32,
    origin_ns: u64,
    /// Nominal nanoseconds per sample.
    nominal_slope: f64,
    /// The rate estimate, as nanoseconds per sample: kept across discontinuities.
    slope: f64,
    /// The estimated capture line; None until the first report after a (re)start.
    line: Option<Line>,
    /// The samples count of the first report since the last anchoring: buckets count from it.
    anchor_samples: u64,
    /// The bucket being filled and its least delayed report.
    open_bucket: u64,
    open_best: Option<Point>,
    /// The least delayed report of each closed bucket, a ring of the latest `closed` ones.
    closed: [Point; WINDOW_BUCKETS],
    closed_len: usize,
    closed_next: usize,
    /// The last report, to see counts going backwards.
    last_report: Option<Point>,
    output: Option<Output>,
    reanchors: u64,
}

impl AudioClock {
    /// A clock for a device whose nominal rate is `rate` Hz (0 is taken as 1), stamping
    /// relative to `origin_ns` on CLOCK_MONOTONIC.
    pub fn new(rate: u32, origin_ns: u64) -> AudioClock {
        let rate = rate.max(1);
        let nominal_slope = NS_PER_SECOND / f64::from(rate);
        AudioClock {
            rate,
            origin_ns,
            nominal_slope,
            slope: nominal_slope,
            line: None,
            anchor_samples: 0,
            open_bucket: 0,
            open_best: None,
            closed: [Point {
                samples: 0,
                time: 0,
            }; WINDOW_BUCKETS],
            closed_len: 0,
            closed_next: 0,
            last_report: None,
            output: None,
            reanchors: 0,
        }
    }

    /// The nominal rate in Hz.
    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// How far the estimated rate is from the nominal one, in ppm (positive: the device
    /// captures faster than nominal).
    pub fn rate_error_ppm(&self) -> f64 {
        (self.nominal_slope / self.slope - 1.0) * 1e6
    }

    /// How many times the clock anchored again by itself (not counting
    /// [`discontinuity`](Self::discontinuity)): worth a log line.
    pub fn reanchors(&self) -> u64 {
        self.reanchors
    }

    /// The device had captured `samples` samples (per channel, since the stream started) by
    /// `time_ns` on CLOCK_MONOTONIC.
    pub fn report(&mut self, time_ns: u64, samples: u64) {
        let point = Point {
            samples,
            time: time_ns,
        };
        let previous = self.last_report.replace(point);
        let Some(line) = self.line else {
            self.anchor(point);
            return;
        };
        if previous.is_some_and(|p| samples < p.samples) {
            // The count went back without a word: a new stream.
            self.reanchors += 1;
            self.restart_output();
            self.anchor(point);
            return;
        }
        if line.residual(point) < -(REANCHOR_NS as f64) {
            self.reanchors += 1;
            self.restart_output();
            self.anchor(point);
            return;
        }
        let bucket = (samples - self.anchor_samples) / self.bucket_samples();
        if bucket != self.open_bucket {
            if let Some(best) = self.open_best {
                if line.residual(best) > REANCHOR_NS as f64 {
                    // A whole bucket late: samples were lost and the count did not say so.
                    self.reanchors += 1;
                    self.restart_output();
                    self.anchor(point);
                    return;
                }
                self.close(best);
            }
            self.open_bucket = bucket;
            self.open_best = Some(point);
            self.fit();
            return;
        }
        let better = self
            .open_best
            .is_none_or(|best| line.residual(point) < line.residual(best));
        if better {
            self.open_best = Some(point);
            if self.closed_len < MIN_FIT_BUCKETS {
                self.fit();
            }
        }
    }

    /// Samples were lost (an overrun) or the stream restarted: the next report anchors the
    /// clock again and the next stamp follows it without slewing. The rate estimate is kept.
    pub fn discontinuity(&mut self) {
        self.line = None;
        self.last_report = None;
        self.restart_output();
    }

    /// The time of the frame whose first sample is `first_sample` (in the count the reports
    /// use); None before the first report. Frames are expected in order: a frame that does not
    /// come after the last one stamped is stamped on the line, without slewing.
    pub fn stamp(&mut self, first_sample: u64) -> Option<Stamp> {
        let line = self.line?;
        let target =
            (line.at.time as i128 - self.origin_ns as i128) as f64 + line.offset(first_sample);
        let ns = match self.output {
            Some(last) if first_sample > last.samples => {
                let elapsed = (first_sample - last.samples) as f64;
                let predicted = last.ns + elapsed * line.slope;
                let slew = elapsed * self.nominal_slope * MAX_SLEW;
                predicted + (target - predicted).clamp(-slew, slew)
            }
            _ => target,
        };
        self.output = Some(Output {
            samples: first_sample,
            ns,
        });
        let ns = ns.round().clamp(i64::MIN as f64, i64::MAX as f64) as i64;
        Some(Stamp { ns })
    }

    fn bucket_samples(&self) -> u64 {
        u64::from(self.rate) * BUCKET_SECONDS
    }

    fn restart_output(&mut self) {
        self.output = None;
    }

    /// Starts the line afresh through `point`, at the rate estimate.
    fn anchor(&mut self, point: Point) {
        self.line = Some(Line {
            at: point,
            slope: self.slope,
        });
        self.last_report = Some(point);
        self.anchor_samples = point.samples;
        self.open_bucket = 0;
        self.open_best = Some(point);
        self.closed_len = 0;
        self.closed_next = 0;
    }

    fn close(&mut self, best: Point) {
        self.closed[self.closed_next] = best;
        self.closed_next = (self.closed_next + 1) % WINDOW_BUCKETS;
        self.closed_len = (self.closed_len + 1).min(WINDOW_BUCKETS);
    }

    /// The closed buckets' minima, oldest first.
    fn closed_points(&self) -> impl Iterator<Item = Point> + '_ {
        let start = (self.closed_next + WINDOW_BUCKETS - self.closed_len) % WINDOW_BUCKETS;
        (0..self.closed_len).map(move |i| self.closed[(start + i) % WINDOW_BUCKETS])
    }

    /// Fits the line to the bucket minima (or, with too few, puts it through the least
    /// delayed report at the rate estimate).
    fn fit(&mut self) {
        let Some(line) = self.line else {
            return;
        };
        if self.closed_len < MIN_FIT_BUCKETS {
            let slope = self.slope;
            let through = |at: Point| Line { at, slope };
            let mut best: Option<Point> = None;
            for point in self.closed_points().chain(self.open_best) {
                if best.is_none_or(|b| through(b).residual(point) < 0.0) {
                    best = Some(point);
                }
            }
            if let Some(at) = best {
                self.line = Some(through(at));
            }
            return;
        }
        // Least squares over the minima, in coordinates relative to the oldest one.
        let Some(base) = self.closed_points().next() else {
            return;
        };
        let count = self.closed_len as f64;
        let coordinates = |p: Point| {
            (
                (p.samples as i128 - base.samples as i128) as f64,
                (p.time as i128 - base.time as i128) as f64,
            )
        };
        let (mut sum_x, mut sum_y) = (0.0, 0.0);
        for point in self.closed_points() {
            let (x, y) = coordinates(point);
            sum_x += x;
            sum_y += y;
        }
        let (mean_x, mean_y) = (sum_x / count, sum_y / count);
        let (mut sxx, mut sxy) = (0.0, 0.0);
        for point in self.closed_points() {
            let (x, y) = coordinates(point);
            sxx += (x - mean_x) * (x - mean_x);
            sxy += (x - mean_x) * (y - mean_y);
        }
        if sxx <= 0.0 {
            return;
        }
        let limit = self.nominal_slope * MAX_PPM / 1e6;
        let slope = (sxy / sxx).clamp(self.nominal_slope - limit, self.nominal_slope + limit);
        self.slope = slope;
        // Through the centroid, expressed at the newest report's count.
        let at_samples = line
            .at
            .samples
            .max(self.last_report.map_or(0, |p| p.samples));
        let x = (at_samples as i128 - base.samples as i128) as f64;
        let y = mean_y + (x - mean_x) * slope;
        let time = base.time as i128 + y.round() as i128;
        self.line = Some(Line {
            at: Point {
                samples: at_samples,
                time: time.clamp(0, i128::from(u64::MAX)) as u64,
            },
            slope,
        });
    }
}

/// The nominal time of `samples` samples at `rate` Hz, in ns (for sources paced by the system
/// clock, such as the silent track, whose samples need no estimate).
pub fn nominal_ns(samples: u64, rate: u32) -> u64 {
    let ns = u128::from(samples) * 1_000_000_000 / u128::from(rate.max(1));
    ns.min(u128::from(u64::MAX)) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: u32 = 48000;
    /// A 1024-sample frame at 48 kHz: 21.333 ms.
    const FRAME_NS: f64 = 1024.0 * 1e9 / 48000.0;
    const MS: f64 = 1e6;

    /// xorshift64*: reproducible jitter without a dependency.
    struct Random(u64);

    impl Random {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        /// Uniform in 0..=max.
        fn below(&mut self, max: u64) -> u64 {
            self.next() % (max + 1)
        }
    }

    /// What a run measured.
    #[derive(Debug, Default)]
    struct Figures {
        frames: u64,
        /// The largest |stamp - true capture time of the frame's first sample|.
        max_offset_ns: f64,
        /// When it was, in seconds from the first sample.
        max_offset_at_s: f64,
        /// The largest |spacing of consecutive stamps - nominal frame duration|.
        max_step_ns: f64,
        /// The spacings of consecutive stamps in whole milliseconds (FLV's unit).
        ms_steps: std::collections::BTreeSet<i64>,
        /// The largest |offset| over the last hour.
        last_hour_offset_ns: f64,
    }

    /// A sound card `ppm` fast (negative: slow) against the system clock, read every
    /// `period` samples; each report is late by 0..=`max_delay_ns` at random (and never before
    /// the previous one). Every frame is stamped as soon as its samples are reported.
    struct Run {
        ppm: f64,
        seconds: u64,
        period: u64,
        max_delay_ns: u64,
        lost: Option<Loss>,
        /// Frames captured in this span (seconds from the first sample) are not measured:
        /// the time an unreported loss takes to be noticed.
        unmeasured: Option<(f64, f64)>,
    }

    /// Samples lost at `at` seconds: `gap` seconds of them.
    #[derive(Clone, Copy)]
    struct Loss {
        at: u64,
        gap: f64,
        /// The caller calls `discontinuity` (it saw the overrun).
        said: bool,
        /// The device's count restarts at 0 (a new stream), rather than going on as if
        /// nothing was lost.
        count_restarts: bool,
    }

    impl Run {
        fn new(ppm: f64, seconds: u64) -> Run {
            Run {
                ppm,
                seconds,
                period: 1024,
                max_delay_ns: 20_000_000,
                lost: None,
                unmeasured: None,
            }
        }

        fn go(&self) -> Figures {
            let mut random = Random(0x9e37_79b9_7f4a_7c15 ^ self.ppm.to_bits());
            let true_slope = 1e9 / (f64::from(RATE) * (1.0 + self.ppm * 1e-6));
            let origin = 1_000_000_000_000u64;
            // Capture starts 1.5 s after the origin (the video's first frame).
            let mut start = origin + 1_500_000_000;
            let mut clock = AudioClock::new(RATE, origin);
            let mut figures = Figures::default();
            let total = (self.seconds as f64 * 1e9 / true_slope) as u64;
            let mut reported = 0u64;
            let mut next_frame = 0u64;
            let mut last_report_time = 0u64;
            let mut previous_stamp: Option<Stamp> = None;
            let mut lost = self.lost;
            let mut segment_samples = 0u64;
            while segment_samples + reported < total {
                let samples = reported + self.period;
                let capture = start as f64 + samples as f64 * true_slope;
                let time = (capture as u64 + random.below(self.max_delay_ns)).max(last_report_time);
                last_report_time = time;
                clock.report(time, samples);
                reported = samples;
                while (next_frame + 1) * 1024 <= reported {
                    let first = next_frame * 1024;
                    let stamp = clock.stamp(first).expect("reported");
                    let truth = start as f64 + first as f64 * true_slope - origin as f64;
                    let elapsed_s = (truth - 1.5e9) / 1e9;
                    if self
                        .unmeasured
                        .is_some_and(|(from, to)| (from..to).contains(&elapsed_s))
                    {
                        previous_stamp = None;
                        next_frame += 1;
                        continue;
                    }
                    let offset = (stamp.ns() as f64 - truth).abs();
                    if offset > figures.max_offset_ns {
                        figures.max_offset_ns = offset;
                        figures.max_offset_at_s = elapsed_s;
                    }
                    if elapsed_s > self.seconds as f64 - 3600.0 {
                        figures.last_hour_offset_ns = figures.last_hour_offset_ns.max(offset);
                    }
                    if let Some(previous) = previous_stamp {
                        let step = (stamp.ns() - previous.ns()) as f64 - FRAME_NS;
                        figures.max_step_ns = figures.max_step_ns.max(step.abs());
                        figures.ms_steps.insert(stamp.ms() - previous.ms());
                    }
                    previous_stamp = Some(stamp);
                    figures.frames += 1;
                    next_frame += 1;
                }
                if let Some(loss) = lost {
                    let since_first =
                        (start - origin) as f64 - 1.5e9 + reported as f64 * true_slope;
                    if since_first > loss.at as f64 * 1e9 {
                        // Capture goes on after the gap: the first sample after it is
                        // `reported` (its count going on) or 0 (a new stream).
                        start += (loss.gap * 1e9) as u64;
                        if loss.count_restarts {
                            segment_samples += reported;
                            start += (reported as f64 * true_slope) as u64;
                            reported = 0;
                            next_frame = 0;
                        }
                        previous_stamp = None;
                        lost = None;
                        if loss.said {
                            clock.discontinuity();
                        }
                    }
                }
            }
            figures
        }
    }

    /// Holds for every run: within one frame of the truth throughout, and consecutive stamps
    /// spaced within 0.1 ms of the nominal 21.333 ms (so 21 or 22 ms apart in FLV).
    fn check(name: &str, figures: &Figures) {
        println!(
            "{name}: {} frames, max offset {:.3} ms at {:.1} s (last hour {:.3} ms), \
             max step {:.4} ms, ms steps {:?}",
            figures.frames,
            figures.max_offset_ns / MS,
            figures.max_offset_at_s,
            figures.last_hour_offset_ns / MS,
            figures.max_step_ns / MS,
            figures.ms_steps
        );
        assert!(
            figures.max_offset_ns < FRAME_NS,
            "{name}: offset {} ms",
            figures.max_offset_ns / MS
        );
        assert!(
            figures.max_step_ns <= 0.1 * MS,
            "{name}: step {} ms",
            figures.max_step_ns / MS
        );
        assert!(
            figures.ms_steps.iter().all(|s| (21..=22).contains(s)),
            "{name}"
        );
    }

    const DAY: u64 = 24 * 3600;

    #[test]
    fn a_card_300_ppm_fast_stays_within_a_frame_for_24_hours() {
        let figures = Run::new(300.0, DAY).go();
        check("+300 ppm", &figures);
        assert!(figures.frames > 4_000_000);
        assert!(figures.last_hour_offset_ns < 2.0 * MS);
    }

    #[test]
    fn a_card_300_ppm_slow_stays_within_a_frame_for_24_hours() {
        let figures = Run::new(-300.0, DAY).go();
        check("-300 ppm", &figures);
        assert!(figures.last_hour_offset_ns < 2.0 * MS);
    }

    #[test]
    fn an_exact_card_stays_within_a_frame_for_24_hours() {
        let figures = Run::new(0.0, DAY).go();
        check("0 ppm", &figures);
        assert!(figures.last_hour_offset_ns < 2.0 * MS);
    }

    const HOUR: u64 = 3600;

    #[test]
    fn an_overrun_that_is_said_re_anchors_at_once() {
        // Half a second lost after an hour; the stream restarts with its count at 0.
        for ppm in [300.0, -300.0] {
            let mut run = Run::new(ppm, 2 * HOUR);
            run.lost = Some(Loss {
                at: HOUR,
                gap: 0.5,
                said: true,
                count_restarts: true,
            });
            check(&format!("overrun said, {ppm:+} ppm"), &run.go());
        }
    }

    #[test]
    fn an_overrun_that_is_not_said_is_noticed() {
        // The count restarting gives it away at once.
        let mut run = Run::new(300.0, 2 * HOUR);
        run.lost = Some(Loss {
            at: HOUR,
            gap: 0.5,
            said: false,
            count_restarts: true,
        });
        check("count restarts, not said", &run.go());
        // A count that goes on as if nothing was lost: the first bucket after it is late by
        // the gap, and the clock anchors again when it closes (within two buckets, 4 s).
        let mut run = Run::new(-300.0, 2 * HOUR);
        run.lost = Some(Loss {
            at: HOUR,
            gap: 0.5,
            said: false,
            count_restarts: false,
        });
        let loss_at = HOUR as f64 + 0.5;
        run.unmeasured = Some((loss_at - 1.0, loss_at + 2.0 * BUCKET_SECONDS as f64 + 1.0));
        check("count goes on, not said", &run.go());
    }

    #[test]
    fn short_periods_and_long_delays() {
        // 10 ms periods (480 samples), reports late by up to 20 ms: more reports per frame.
        let mut run = Run::new(250.0, 2 * HOUR);
        run.period = 480;
        check("10 ms periods", &run.go());
        // Reports late by up to 20 ms once a frame (as above) is the common case; up to 15 ms
        // with 5 ms periods too.
        let mut run = Run::new(-250.0, 2 * HOUR);
        run.period = 240;
        run.max_delay_ns = 15_000_000;
        check("5 ms periods", &run.go());
    }

    #[test]
    fn a_byte_stream_is_stamped_by_arrival_smoothed() {
        // ADTS from a pipe: an encoder (on a card 150 ppm slow) writes four frames at once,
        // 50 ms after the last of them is captured, and they arrive up to 30 ms later still.
        // Each read is reported on arrival with the samples up to its last frame's end, then
        // its frames are stamped. The stamps follow the earliest arrivals, capture time plus
        // the encoder's 50 ms: at first as late as the first read was, within a frame once
        // settled.
        let true_slope = 1e9 / (48000.0 * (1.0 - 150e-6));
        let origin = 7_000_000_000u64;
        let start = origin + 300_000_000;
        let latency = 50e6;
        let mut clock = AudioClock::new(RATE, origin);
        let mut random = Random(42);
        let mut previous: Option<Stamp> = None;
        let (mut first_offset, mut settled_offset, mut max_step) = (None, 0f64, 0f64);
        let mut steps = std::collections::BTreeSet::new();
        for burst in 0..(HOUR * 48000 / 4096) {
            let end = (burst + 1) * 4096;
            let arrival =
                start as f64 + end as f64 * true_slope + latency + random.below(30_000_000) as f64;
            clock.report(arrival as u64, end);
            for frame in burst * 4..burst * 4 + 4 {
                let stamp = clock.stamp(frame * 1024).unwrap();
                let truth = start as f64 + (frame * 1024) as f64 * true_slope + latency;
                let offset = (stamp.ns() as f64 - (truth - origin as f64)).abs();
                first_offset.get_or_insert(offset);
                if truth - start as f64 > 30e9 {
                    settled_offset = settled_offset.max(offset);
                }
                if let Some(previous) = previous {
                    let step = (stamp.ns() - previous.ns()) as f64 - FRAME_NS;
                    max_step = max_step.max(step.abs());
                    steps.insert(stamp.ms() - previous.ms());
                }
                previous = Some(stamp);
            }
        }
        let first_offset = first_offset.unwrap();
        println!(
            "byte stream: first offset {:.3} ms, max offset after 30 s {:.3} ms, max step \
             {:.4} ms, ms steps {steps:?}",
            first_offset / MS,
            settled_offset / MS,
            max_step / MS
        );
        assert!(first_offset <= 30.0 * MS);
        assert!(settled_offset < FRAME_NS, "{} ms", settled_offset / MS);
        assert!(max_step <= 0.1 * MS, "{} ms", max_step / MS);
        assert!(steps.iter().all(|s| (21..=22).contains(s)));
        let ppm = clock.rate_error_ppm();
        println!("byte stream: rate error {ppm:.1} ppm (truly -150)");
        assert!((ppm + 150.0).abs() < 30.0, "{ppm} ppm");
    }

    #[test]
    fn the_rate_is_learnt_and_kept_across_a_discontinuity() {
        let slope = 1e9 / (48000.0 * (1.0 + 300e-6));
        let mut clock = AudioClock::new(RATE, 0);
        assert_eq!(clock.stamp(0), None);
        for period in 1..=(600 * 48000 / 1024) {
            let samples = period * 1024;
            clock.report(1_000_000_000 + (samples as f64 * slope) as u64, samples);
        }
        assert!(
            (clock.rate_error_ppm() - 300.0).abs() < 2.0,
            "{}",
            clock.rate_error_ppm()
        );
        clock.discontinuity();
        assert_eq!(clock.stamp(0), None);
        clock.report(900_000_000_000, 1024);
        assert!((clock.rate_error_ppm() - 300.0).abs() < 2.0);
        // The new line goes through the report, at the learnt rate.
        let stamp = clock.stamp(0).unwrap();
        assert_eq!(
            stamp.ns(),
            900_000_000_000 - (1024.0 * slope).round() as i64
        );
        assert_eq!(clock.reanchors(), 0);
    }

    #[test]
    fn impossible_reports_re_anchor_rather_than_bend_the_line() {
        let mut clock = AudioClock::new(RATE, 0);
        clock.report(10_000_000_000, 48000);
        clock.report(11_000_000_000, 96000);
        // 200 ms earlier than the line allows: anchored there.
        clock.report(11_800_000_000, 144000);
        assert_eq!(clock.reanchors(), 1);
        assert_eq!(clock.stamp(144000).unwrap().ns(), 11_800_000_000);
        // The count going back.
        clock.report(12_000_000_000, 1000);
        assert_eq!(clock.reanchors(), 2);
        assert_eq!(clock.stamp(1000).unwrap().ns(), 12_000_000_000);
        // A time going back a little is a late report of nothing new: no harm.
        clock.report(11_999_000_000, 1000);
        assert_eq!(clock.reanchors(), 2);
    }

    #[test]
    fn stamps_round_to_milliseconds_on_either_side_of_the_origin() {
        assert_eq!(Stamp { ns: 1_499_999 }.ms(), 1);
        assert_eq!(Stamp { ns: 1_500_000 }.ms(), 2);
        assert_eq!(Stamp { ns: -400_000 }.ms(), 0);
        assert_eq!(Stamp { ns: -600_000 }.ms(), -1);
        // Captured before the origin: a negative stamp (the caller drops such frames).
        let mut clock = AudioClock::new(RATE, 5_000_000_000);
        clock.report(5_000_000_000, 48000);
        assert_eq!(clock.stamp(0).unwrap().ms(), -1000);
        assert_eq!(nominal_ns(48000, 48000), 1_000_000_000);
        assert_eq!(nominal_ns(1024, 44100), 23_219_954);
        assert_eq!(nominal_ns(u64::MAX, 1), u64::MAX);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn any_reports_give_stamps_and_no_panic(
                rate in prop_oneof![Just(0u32), Just(48000u32), any::<u32>()],
                events in proptest::collection::vec(
                    (any::<u64>(), any::<u64>(), 0u8..4), 1..200),
            ) {
                let mut clock = AudioClock::new(rate, 1 << 40);
                let mut samples = 0u64;
                for (time, count, kind) in events {
                    match kind {
                        0 => clock.report(time, count),
                        1 => {
                            samples = samples.saturating_add(count % 100_000);
                            clock.report(time % (1 << 50), samples);
                        }
                        2 => clock.discontinuity(),
                        _ => {
                            let _ = clock.stamp(count);
                        }
                    }
                    let _ = clock.stamp(samples);
                    prop_assert!(clock.rate_error_ppm().abs() <= MAX_PPM * 1.01);
                }
            }
        }
    }
}
