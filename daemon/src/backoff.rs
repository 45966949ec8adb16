//! Capped exponential backoff with jitter, shared by sources, the syncer and MQTT.

use std::time::Duration;

/// Each delay is drawn from the upper half of a window that doubles from `base` up to `cap`
/// ("equal jitter"), so many cameras or devices do not retry in lockstep.
#[derive(Clone, Debug)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    current: Duration,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self { base, cap, current: base }
    }

    pub fn next_delay(&mut self) -> Duration {
        let window = self.current;
        self.current = (self.current * 2).min(self.cap);
        let half = window / 2;
        half + half.mul_f64(rand::random::<f64>())
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
}
