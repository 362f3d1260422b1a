//! Exponential back-off with full jitter for reconnecting to a relay: never a tight
//! retry loop, and many agents restarted together do not retry in lock-step.

use std::time::Duration;

/// Back-off state: the n-th consecutive failure waits a random time in
/// `[base * 2^n / 2, base * 2^n]`, capped at `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    failures: u32,
}

impl Default for Backoff {
    /// 250 ms doubling up to 30 s.
    fn default() -> Self {
        Self::new(Duration::from_millis(250), Duration::from_secs(30))
    }
}

impl Backoff {
    /// Starts at `base`, doubles per failure up to `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max: max.max(base),
            failures: 0,
        }
    }

    /// The delay before the next attempt after one more failure.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1u32 << self.failures.min(20))
            .min(self.max);
        self.failures = self.failures.saturating_add(1);
        // Equal jitter: half fixed, half random, so the delay still grows.
        let half = ceiling / 2;
        let jitter = rand::random::<f64>();
        half + half.mul_f64(jitter)
    }

    /// Consecutive failures so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Forgets past failures (after a success).
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_exponentially_within_jitter_and_caps() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let delays: Vec<Duration> = (0..8).map(|_| b.next_delay()).collect();
        for (n, d) in delays.iter().enumerate() {
            let ceiling = (Duration::from_millis(100) * (1 << n)).min(Duration::from_secs(2));
            assert!(*d >= ceiling / 2 && *d <= ceiling, "failure {n}: {d:?}");
        }
        assert_eq!(b.failures(), 8);
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
