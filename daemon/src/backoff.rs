//! Capped exponential backoff with jitter, shared by sources, the syncer and MQTT.

use std::time::Duration;

/// Each delay is drawn at random from a window that doubles from `base` up to `cap`, so many
/// cameras or devices do not retry in lockstep.
#[derive(Clone, Debug)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    current: Duration,
    jitter: Jitter,
}

/// How much of the window is random.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Jitter {
    /// The upper half of the window: never retries too soon (sources, MQTT).
    Equal,
    /// Anywhere in the window: spreads a crowd of clients best (HTTP to a throttling server).
    Full,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self { base, cap, current: base, jitter: Jitter::Equal }
    }

    pub fn with_full_jitter(base: Duration, cap: Duration) -> Self {
        Self { jitter: Jitter::Full, ..Self::new(base, cap) }
    }

    pub fn next_delay(&mut self) -> Duration {
        let window = self.current;
        self.current = (self.current * 2).min(self.cap);
        match self.jitter {
            Jitter::Equal => window / 2 + (window / 2).mul_f64(rand::random::<f64>()),
            Jitter::Full => window.mul_f64(rand::random::<f64>()),
        }
    }

    /// The largest delay this backoff gives: for errors that will not clear up quickly.
    pub fn cap(&self) -> Duration {
        self.cap
    }

    pub fn reset(&mut self) {
        self.current = self.base;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_with_jitter_and_reset() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        let delays: Vec<_> = (0..8).map(|_| b.next_delay()).collect();
        assert!(delays[0] >= Duration::from_millis(500) && delays[0] <= Duration::from_secs(1));
        assert!(delays[1] >= Duration::from_secs(1) && delays[1] <= Duration::from_secs(2));
        assert!(delays[7] >= Duration::from_secs(15) && delays[7] <= Duration::from_secs(30));
        b.reset();
        assert!(b.next_delay() <= Duration::from_secs(1));
    }

    #[test]
    fn full_jitter_stays_within_the_doubling_window() {
        let mut b = Backoff::with_full_jitter(Duration::from_millis(100), Duration::from_secs(2));
        for n in 0..10u32 {
            let window = (Duration::from_millis(100) * 2u32.pow(n)).min(Duration::from_secs(2));
            assert!(b.next_delay() <= window);
        }
    }
}
