//! Exponential backoff with full jitter, sans-IO: the caller supplies time and randomness.
//!
//! Used for reconnecting to the server and for restarting a source that failed. The n-th
//! consecutive failure waits a uniformly random time in `[0, min(cap, first * 2^n))`, so the first
//! retry comes within `first` and a fleet of cameras does not reconnect in lockstep after an
//! outage. A refusal by the server waits the full cap (it will not change its mind quickly). The
//! count resets once an attempt has stayed healthy for the stable period.
//!
//! Invariants: every delay is at most `cap`; the first delay after a reset is below `first`.

use std::time::Duration;

/// Backoff state for one kind of attempt.
#[derive(Clone, Debug)]
pub struct Backoff {
    first: Duration,
    cap: Duration,
    stable: Duration,
    /// Consecutive failures since the last healthy period.
    failures: u32,
}

impl Backoff {
    pub fn new(first: Duration, cap: Duration, stable: Duration) -> Backoff {
        Backoff {
            first,
            cap: cap.max(first),
            stable,
            failures: 0,
        }
    }

    /// Consecutive failures so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The attempt that just ended was healthy for `healthy_for` (0 if it never got going):
    /// returns how long to wait before the next one. `random` is uniform in `[0, 1)`.
    pub fn next_delay(&mut self, healthy_for: Duration, random: f64) -> Duration {
        if healthy_for >= self.stable {
            self.failures = 0;
        }
        let exponent = self.failures.min(30);
        self.failures = self.failures.saturating_add(1);
        let ceiling = self.first.saturating_mul(1u32 << exponent).min(self.cap);
        ceiling.mul_f64(random.clamp(0.0, 0.999_999))
    }

    /// A refusal: wait the whole cap, and count it as a failure.
    pub fn refused(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        self.cap
    }

    /// Counts a failure whose delay the caller chose (a known, short-lived condition).
    pub fn note_failure(&mut self) {
        self.failures = self.failures.saturating_add(1);
    }

    /// Forgets past failures.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

/// A small, fast, seedable generator for jitter (xorshift64*): not for secrets.
#[derive(Clone, Debug)]
pub struct Jitter(u64);

impl Jitter {
    pub fn new(seed: u64) -> Jitter {
        Jitter(seed | 1)
    }

    /// Seeded from std's per-process random hasher keys.
    pub fn from_entropy() -> Jitter {
        use std::hash::{BuildHasher, Hasher};
        Jitter::new(
            std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish(),
        )
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIRST: Duration = Duration::from_millis(500);
    const CAP: Duration = Duration::from_secs(30);
    const STABLE: Duration = Duration::from_secs(10);

    #[test]
    fn first_retry_within_first_then_doubling_to_the_cap() {
        let mut backoff = Backoff::new(FIRST, CAP, STABLE);
        let ceilings: Vec<Duration> = (0..10)
            .map(|_| backoff.next_delay(Duration::ZERO, 0.999_999))
            .collect();
        assert!(ceilings[0] < FIRST);
        assert!(ceilings[1] < FIRST * 2 && ceilings[1] > FIRST);
        assert!(ceilings[5] < Duration::from_secs(16) && ceilings[5] > Duration::from_secs(15));
        assert!(ceilings[6..]
            .iter()
            .all(|&d| d < CAP && d > CAP - Duration::from_millis(1)));
    }

    #[test]
    fn jitter_spreads_over_the_whole_interval() {
        let mut jitter = Jitter::new(7);
        let mut backoff = Backoff::new(FIRST, CAP, STABLE);
        for _ in 0..6 {
            backoff.next_delay(Duration::ZERO, 0.5);
        }
        let delays: Vec<Duration> = (0..1000)
            .map(|_| {
                let mut b = backoff.clone();
                b.next_delay(Duration::ZERO, jitter.unit())
            })
            .collect();
        let min = delays.iter().min().unwrap();
        let max = delays.iter().max().unwrap();
        assert!(*min < Duration::from_secs(1) && *max > Duration::from_secs(29) && *max <= CAP);
    }

    #[test]
    fn a_stable_period_resets_the_count() {
        let mut backoff = Backoff::new(FIRST, CAP, STABLE);
        for _ in 0..8 {
            backoff.next_delay(Duration::from_secs(1), 0.9);
        }
        assert_eq!(backoff.failures(), 8);
        assert!(backoff.next_delay(STABLE, 0.999) < FIRST);
        assert_eq!(backoff.failures(), 1);
    }

    #[test]
    fn refusals_wait_the_cap() {
        let mut backoff = Backoff::new(FIRST, CAP, STABLE);
        assert_eq!(backoff.refused(), CAP);
        assert_eq!(backoff.failures(), 1);
    }

    #[test]
    fn unit_is_in_range() {
        let mut jitter = Jitter::new(0);
        for _ in 0..10_000 {
            let u = jitter.unit();
            assert!((0.0..1.0).contains(&u));
        }
    }
}
