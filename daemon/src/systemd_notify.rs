//! The sd_notify protocol: READY, STATUS, WATCHDOG and STOPPING. Outside systemd (no
//! `NOTIFY_SOCKET`) every call is a no-op.

use std::time::Duration;

use systemd::daemon::{self, STATE_READY, STATE_STATUS, STATE_STOPPING, STATE_WATCHDOG};
use tokio::sync::watch;

fn send(states: &[(&str, String)]) {
    if let Err(e) = daemon::notify(states.iter()) {
        tracing::warn!(error = %e, "sd_notify failed");
    }
}

pub fn ready(cameras: usize) {
    send(&[(STATE_READY, "1".into()), (STATE_STATUS, format!("running {cameras} camera(s)"))]);
}

pub fn stopping() {
    send(&[(STATE_STOPPING, "1".into()), (STATE_STATUS, "stopping".into())]);
}

/// Pings the systemd watchdog at half its interval until shutdown, when `WatchdogSec` is set.
pub async fn watchdog_pings(mut shutdown: watch::Receiver<bool>) {
    let usec = match daemon::watchdog_enabled() {
        Ok(usec) if usec > 0 => usec,
        _ => return,
    };
    let mut tick = tokio::time::interval(Duration::from_micros(usec / 2));
    loop {
        tokio::select! {
            _ = tick.tick() => send(&[(STATE_WATCHDOG, "1".into())]),
            _ = shutdown.changed() => return,
        }
    }
}
