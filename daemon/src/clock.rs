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

/// RFC 3339 (`2026-12-01T08:00:00Z`, `…+01:00`, fractions allowed) or an age before now
/// with its unit (`90s`, `2h`, `3d`), as unix ms. A bare number is refused: it is more often a
/// timestamp (`1700000000000`) than an age in seconds.
pub fn parse_instant(text: &str) -> Option<i64> {
    let has_unit = text.trim().ends_with(|c: char| c.is_ascii_alphabetic());
    if let (true, Ok(crate::validate::Age(age))) = (has_unit, crate::validate::Age::try_from(toml::Value::String(text.to_owned()))) {
        let now = unix_ms();
        return i64::try_from(age.as_millis()).ok().filter(|&ms| ms <= now).map(|ms| now - ms);
    }
    let number = |s: &str| s.parse::<i64>().ok();
    let (date, rest) = text.split_once(['T', 't', ' '])?;
    let mut ymd = date.splitn(3, '-').map(number);
    let (y, m, d) = (ymd.next()??, ymd.next()??, ymd.next()??);
    let zone_at = rest.find(['Z', 'z', '+', '-'])?;
    let (clock, zone) = rest.split_at(zone_at);
    let mut hms = clock.splitn(3, ':');
    let (h, min) = (number(hms.next()?)?, number(hms.next()?)?);
    let seconds: f64 = hms.next().unwrap_or("0").parse().ok()?;
    let offset_min = match zone {
        "Z" | "z" => 0,
        _ => {
            let (hh, mm) = zone[1..].split_once(':')?;
            let minutes = number(hh)? * 60 + number(mm)?;
            if zone.starts_with('-') {
                -minutes
            } else {
                minutes
            }
        }
    };
    if !(1..=12).contains(&m)
        || !(1..=31).contains(&d)
        || !(0..24).contains(&h)
        || !(0..60).contains(&min)
        || !(0.0..61.0).contains(&seconds)
    {
        return None;
    }
    let days = days_from_civil(y, m as u32, d as u32);
    Some(((days * 86_400 + h * 3600 + min * 60 - offset_min * 60) as f64 * 1000.0 + seconds * 1000.0) as i64)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DD HH:MM:SS` in the machine's time zone.
pub fn local_time(ts_ms: i64) -> String {
    let seconds = ts_ms.div_euclid(1000) as nix::libc::time_t;
    // SAFETY: localtime_r only writes the `tm` we pass it.
    let mut tm: nix::libc::tm = unsafe { std::mem::zeroed() };
    if unsafe { nix::libc::localtime_r(&seconds, &mut tm) }.is_null() {
        return ts_ms.to_string();
    }
    format!("{:04}-{:02}-{:02} {:02}:{:02}:{:02}", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec)
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
