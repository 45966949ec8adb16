//! The sd_notify protocol: READY, RELOADING, STATUS, WATCHDOG and STOPPING. Outside systemd (no
//! `NOTIFY_SOCKET`) every call is a no-op.
//!
//! The watchdog is pinged only while every registered stage shows signs of life: each stage's
//! [`Heartbeat`] is beaten when it makes progress and while it is legitimately idle (waiting
//! for input). A stage stuck in one piece of work stops beating; the pings stop; systemd
//! restarts the service.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use systemd::daemon::{self, STATE_READY, STATE_RELOADING, STATE_STATUS, STATE_STOPPING, STATE_WATCHDOG};
use tokio::time::Instant;

use crate::shutdown::Shutdown;

/// How often an idle stage shows it is alive (it waits for input at most this long at a time).
pub const IDLE_BEAT: Duration = Duration::from_millis(250);

fn send(states: &[(&str, String)]) {
    if let Err(e) = daemon::notify(states.iter()) {
        tracing::warn!(error = %e, "sd_notify failed");
    }
}

pub fn ready(status: &str) {
    send(&[(STATE_READY, "1".into()), (STATE_STATUS, status.to_owned())]);
}

pub fn reloading() {
    send(&[(STATE_RELOADING, "1".into()), (STATE_STATUS, "reloading the configuration".into())]);
}

pub fn status(status: &str) {
    send(&[(STATE_STATUS, status.to_owned())]);
}

pub fn stopping() {
    send(&[(STATE_STOPPING, "1".into()), (STATE_STATUS, "stopping".into())]);
}

/// A stage's sign of life: the last time (monotonic, ms after its registry's base) it made
/// progress or waited for input. Monotonic, so a wall-clock step at boot cannot make every
/// stage look stale (or fresh).
#[derive(Debug)]
pub struct Heartbeat {
    base: Instant,
    last_ms: AtomicU64,
}

impl Heartbeat {
    pub fn beat(&self) {
        self.last_ms.store(self.base.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// The stage has finished its work for good (a file read to its end): never stale again.
    pub fn retire(&self) {
        self.last_ms.store(u64::MAX, Ordering::Relaxed);
    }

    fn age(&self) -> Duration {
        Duration::from_millis((self.base.elapsed().as_millis() as u64).saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// Every stage's heartbeat, by stage name.
pub struct Heartbeats {
    base: Instant,
    beats: Mutex<BTreeMap<String, Arc<Heartbeat>>>,
}

impl Default for Heartbeats {
    fn default() -> Self {
        Self { base: Instant::now(), beats: Mutex::default() }
    }
}

impl Heartbeats {
    pub fn register(&self, stage: &str) -> Arc<Heartbeat> {
        let beat = Arc::new(Heartbeat { base: self.base, last_ms: AtomicU64::new(0) });
        beat.beat();
        self.beats.lock().unwrap_or_else(|p| p.into_inner()).insert(stage.to_owned(), beat.clone());
        beat
    }

    pub fn unregister(&self, stage: &str) {
        self.beats.lock().unwrap_or_else(|p| p.into_inner()).remove(stage);
    }

    /// The stages that have not beaten for longer than `limit`.
    pub fn stale(&self, limit: Duration) -> Vec<String> {
        let beats = self.beats.lock().unwrap_or_else(|p| p.into_inner());
        beats.iter().filter(|(_, b)| b.age() > limit).map(|(name, _)| name.clone()).collect()
    }
}

/// Pings the systemd watchdog at a third of its interval, while no stage is stale, until
/// shutdown. Does nothing when `WatchdogSec` is not set.
pub async fn watchdog_pings(heartbeats: Arc<Heartbeats>, mut shutdown: Shutdown) {
    let usec = match daemon::watchdog_enabled() {
        Ok(usec) if usec > 0 => usec,
        _ => return,
    };
    let interval = Duration::from_micros(usec);
    let mut tick = tokio::time::interval(interval / 3);
    let mut reported = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                // A stage may be silent for up to half the interval before pings stop.
                let stale = heartbeats.stale(interval / 2);
                if stale.is_empty() {
                    send(&[(STATE_WATCHDOG, "1".into())]);
                    reported = false;
                } else if !reported {
                    tracing::error!(stages = ?stale, "stages stopped making progress; withholding the watchdog ping so systemd restarts glimpse");
                    send(&[(STATE_STATUS, format!("stuck: {}", stale.join(", ")))]);
                    reported = true;
                }
            }
            _ = shutdown.recv() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_stage_is_stale_once_it_has_not_beaten_for_longer_than_the_limit() {
        let heartbeats = Heartbeats::default();
        let camera = heartbeats.register("camera door");
        let writer = heartbeats.register("outbox writer");
        tokio::time::advance(Duration::from_secs(20)).await;
        writer.beat();
        tokio::time::advance(Duration::from_secs(20)).await;
        assert_eq!(heartbeats.stale(Duration::from_secs(30)), ["camera door"]);
        camera.beat();
        assert!(heartbeats.stale(Duration::from_secs(30)).is_empty());
        heartbeats.unregister("camera door");
        let finished = heartbeats.register("camera file");
        finished.retire();
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(heartbeats.stale(Duration::from_secs(30)), ["outbox writer"]);
    }
}
