//! Exponential back-off with jitter, for what ponte retries on its own: a bridge
//! reconnecting to its remote broker, a webhook re-sending an event.
//!
//! The delay doubles from `min` up to `max`; each delay is drawn uniformly from its upper
//! half ("equal jitter"), so many peers that failed together do not retry together, yet no
//! retry comes sooner than half the nominal delay. [`Backoff::step`] names the doubling the
//! delay is at, so a caller can log a failure once per step instead of once per attempt.

use std::time::Duration;

/// The state of one retry sequence.
#[derive(Debug, Clone)]
pub struct Backoff {
    /// The first delay.
    min: Duration,
    /// No delay is longer than this.
    max: Duration,
    /// Failed attempts since the last [`Backoff::reset`].
    attempts: u32,
}

impl Backoff {
    /// A sequence starting at `min` and capped at `max` (`max` below `min` counts as `min`).
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max: max.max(min),
            attempts: 0,
        }
    }

    /// Start over: the next delay is `min` again (after a success).
    pub fn reset(&mut self) {
        self.attempts = 0;
    }

    /// Failed attempts since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The delay's doubling before the next attempt: 0 for `min`, 1 for 2×`min`, …,
    /// staying put once the delay reached `max`. A caller that logs when this changes logs
    /// a persistent failure a few times, not at every attempt.
    pub fn step(&self) -> u32 {
        let mut step = 0;
        let mut d = self.min;
        while step < self.attempts && d < self.max {
            d = d.saturating_mul(2);
            step += 1;
        }
        step
    }

    /// The nominal delay (no jitter) after the failures so far.
    pub fn nominal(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempts.min(31)).unwrap_or(u32::MAX);
        self.min.saturating_mul(factor).min(self.max)
    }

    /// Record one more failure and return how long to wait before the next attempt: the
    /// nominal delay with equal jitter (uniform in its upper half).
    pub fn fail(&mut self) -> Duration {
        let nominal = self.nominal();
        self.attempts = self.attempts.saturating_add(1);
        jitter(nominal)
    }
}

/// A duration drawn uniformly from `[d/2, d]`.
pub fn jitter(d: Duration) -> Duration {
    let half = d / 2;
    let nanos = u64::try_from((d - half).as_nanos()).unwrap_or(u64::MAX);
    half + Duration::from_nanos(fastrand::u64(0..=nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_with_jitter_in_the_upper_half() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(5));
        let mut nominals = Vec::new();
        for _ in 0..6 {
            let n = b.nominal();
            let d = b.fail();
            assert!(d >= n / 2 && d <= n, "{d:?} outside [{:?}, {n:?}]", n / 2);
            nominals.push(n.as_secs());
        }
        assert_eq!(nominals, [1, 2, 4, 5, 5, 5]);
        b.reset();
        assert_eq!(b.nominal(), Duration::from_secs(1));
    }

    #[test]
    fn steps_stop_growing_at_the_cap() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(4));
        let steps: Vec<u32> = (0..6)
            .map(|_| {
                let s = b.step();
                b.fail();
                s
            })
            .collect();
        assert_eq!(steps, [0, 1, 2, 2, 2, 2]);
        let mut huge = Backoff::new(Duration::from_millis(1), Duration::MAX);
        for _ in 0..100 {
            huge.fail();
        }
        assert!(huge.nominal() > Duration::from_secs(1), "no overflow panic");
    }
}
