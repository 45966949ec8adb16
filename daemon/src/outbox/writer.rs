//! The outbox writer thread: group commit of records coming from inference.
//!
//! Records are appended and flushed at most `flush_ms` after the first of them arrived, or as
//! soon as `flush_records` are waiting; only then are they accepted (counted, logged under the
//! `glimpse::accepted` target at trace level, and the syncer woken). A failing disk is retried,
//! never skipped; with `pause_ingest` at a cap the writer waits, and the bounded channel in
//! front of it pushes back on inference.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::{Outbox, OutboxError};
use crate::record::Record;
use crate::stats::Stats;
use crate::systemd_notify::Heartbeat;

/// Where the writer sends what it accepted, and what tells it the daemon is stopping.
pub struct WriterLinks {
    pub stats: Arc<Stats>,
    pub heartbeat: Arc<Heartbeat>,
    pub wake: Arc<Notify>,
    pub stopping: Arc<AtomicBool>,
}

pub fn run_writer(outbox: Arc<Outbox>, records: Receiver<Vec<Record>>, links: WriterLinks, flush_ms: u64, flush_records: usize) {
    let flush_after = Duration::from_millis(flush_ms);
    let mut waiting: Vec<Record> = Vec::new();
    let mut first_at = Instant::now();
    loop {
        links.heartbeat.beat();
        let received = if waiting.is_empty() {
            match records.recv_timeout(crate::supervisor::IDLE_BEAT) {
                Err(RecvTimeoutError::Timeout) => continue,
                other => other,
            }
        } else {
            records.recv_timeout(flush_after.saturating_sub(first_at.elapsed()))
        };
        let closed = match received {
            Ok(batch) => {
                if waiting.is_empty() {
                    first_at = Instant::now();
                }
                waiting.extend(batch);
                if waiting.len() < flush_records && first_at.elapsed() < flush_after {
                    continue;
                }
                false
            }
            Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => true,
        };
        if !waiting.is_empty() {
            if !commit(&outbox, &waiting, &links) {
                return;
            }
            waiting.clear();
            links.wake.notify_one();
        }
        if closed {
            return;
        }
    }
}

/// Appends until the outbox takes the records: they are never dropped here. Returns false
/// only when the daemon stops while the outbox is full (`pause_ingest`): those records were
/// never accepted, and the log says how many.
fn commit(outbox: &Outbox, records: &[Record], links: &WriterLinks) -> bool {
    let stats = &links.stats;
    let mut delay = Duration::from_millis(100);
    let mut paused_since: Option<Instant> = None;
    loop {
        match outbox.append(records) {
            Ok(appended) => {
                if paused_since.is_some() {
                    tracing::info!("outbox has room again; ingest resumed");
                    stats.outbox_paused(false);
                }
                if appended.dropped > 0 {
                    stats.outbox_dropped(appended.dropped);
                }
                if appended.dropped > 0 || stats.outbox.oldest_ts.load(Ordering::Relaxed) == 0 {
                    stats.outbox_oldest(outbox.oldest_ts().ok().flatten());
                }
                stats.outbox_accepted(records.len() as u64, outbox.backlog());
                for record in records {
                    tracing::trace!(target: "glimpse::accepted", id = %record.id);
                }
                return true;
            }
            Err(OutboxError::Full { reason }) => {
                if paused_since.is_none() {
                    tracing::warn!(%reason, "outbox full: ingest paused until the syncer makes room");
                    stats.outbox_paused(true);
                    paused_since = Some(Instant::now());
                }
                if links.stopping.load(Ordering::Relaxed) {
                    tracing::error!(records = records.len(), "stopping while the outbox is full: these records were not accepted");
                    return false;
                }
                links.heartbeat.beat(); // waiting for room is legitimate idleness
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => {
                tracing::error!(error = %e, records = records.len(), "cannot write to the outbox; retrying");
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}
