//! Exponential back-off with full jitter for reconnecting to a relay: never a tight
//! retry loop, and many agents restarted together do not retry in lock-step. A relay's
//! `Retry-After` lengthens a wait ([`Backoff::next_delay_at_least`]), up to the cap.

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

    /// Like [`Self::next_delay`], but at least `floor` (the relay's `Retry-After`) capped
    /// at `max`: the relay's hint lengthens a wait up to the cap (a hostile relay cannot
    /// park the caller for longer), and never shortens one.
    pub fn next_delay_at_least(&mut self, floor: Duration) -> Duration {
        self.next_delay().max(floor.min(self.max))
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

    #[test]
    fn a_floor_lengthens_a_wait_up_to_the_cap_and_never_shortens_one() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100), Duration::from_secs(2));
        // The first waits are 50-100 ms and 100-200 ms: a 1 s floor decides them.
        assert_eq!(
            b.next_delay_at_least(Duration::from_secs(1)),
            Duration::from_secs(1)
        );
        assert_eq!(
            b.next_delay_at_least(Duration::from_secs(1)),
            Duration::from_secs(1)
        );
        // An hour is capped at the 2 s maximum.
        assert_eq!(
            b.next_delay_at_least(Duration::from_secs(3600)),
            Duration::from_secs(2)
        );
        assert_eq!(b.failures(), 3);
        // A floor under the back-off changes nothing: 400-800 ms, then 800-1600 ms.
        for n in 3..5 {
            let ceiling = ms(100) * (1 << n);
            let d = b.next_delay_at_least(ms(10));
            assert!(d >= ceiling / 2 && d <= ceiling, "failure {n}: {d:?}");
        }
        let d = b.next_delay_at_least(Duration::ZERO);
        assert!(
            d >= Duration::from_secs(1) && d <= Duration::from_secs(2),
            "{d:?}"
        );
    }
}
