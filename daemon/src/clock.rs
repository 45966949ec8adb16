//! Time. Decisions (motion refresh, track expiry, stalls, heartbeats) use monotonic time or a
//! stream's own time: boards without a real-time clock step their wall clock at boot, often
//! backwards. Wall-clock time only stamps what people read (`ts`) and, made strictly
//! increasing by [`IdClock`], the ids of records from live cameras.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Wall-clock time, unix milliseconds: for people and records' `ts`, never for decisions.
pub fn unix_ms() -> i64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    now + test_hooks::wall_clock_offset_ms()
}

/// Milliseconds of monotonic time since the process's first call: a time line of its own that
/// no clock step moves.
pub fn monotonic_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// The keys of live cameras' record ids: the capture's wall-clock milliseconds, moved forward
/// when needed so that every key is greater than every key handed out before, also by an
/// earlier run (the outbox keeps the high-water mark with the records). A backward clock step
/// therefore cannot make an id that was already used.
#[derive(Debug, Default)]
pub struct IdClock(AtomicU64);

impl IdClock {
    /// A clock that continues after `high_water` (the greatest key handed out before).
    pub fn after(high_water: u64) -> Self {
        Self(AtomicU64::new(high_water))
    }

    /// The key for a capture at `wall_ms`.
    pub fn next(&self, wall_ms: u64) -> u64 {
        let mut key = 0;
        let _ = self.0.fetch_update(Ordering::AcqRel, Ordering::Acquire, |last| {
            key = wall_ms.max(last + 1);
            Some(key)
        });
        key
    }

    /// The greatest key handed out so far.
    pub fn high_water(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }
}

/// A wall-clock offset that tests set to step the clock (`test-hooks` builds only).
mod test_hooks {
    /// With `GLIMPSE_TEST_CLOCK_OFFSET_FILE` set, the file's number (milliseconds, may be
    /// negative) is added to the wall clock; rewriting it steps the clock as NTP would.
    #[cfg(feature = "test-hooks")]
    pub fn wall_clock_offset_ms() -> i64 {
        std::env::var_os("GLIMPSE_TEST_CLOCK_OFFSET_FILE")
            .and_then(|path| std::fs::read_to_string(path).ok())
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(0)
    }

    #[cfg(not(feature = "test-hooks"))]
    pub fn wall_clock_offset_ms() -> i64 {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_keep_increasing_across_a_backward_clock_step() {
        let clock = IdClock::after(0);
        let before: Vec<u64> = [1_000, 2_000, 2_000, 3_000].map(|ms| clock.next(ms)).to_vec();
        assert_eq!(before, [1_000, 2_000, 2_001, 3_000]);
        // NTP steps the clock back by two seconds: keys go on from the high-water mark.
        let after: Vec<u64> = [1_000, 1_500, 3_500].map(|ms| clock.next(ms)).to_vec();
        assert_eq!(after, [3_001, 3_002, 3_500]);
    }

    #[test]
    fn a_restart_continues_after_the_stored_high_water_mark() {
        let first = IdClock::after(0);
        first.next(50_000);
        // The board reboots into 1970 and the clock says 10 s.
        let second = IdClock::after(first.high_water());
        assert_eq!(second.next(10_000), 50_001);
    }
}
