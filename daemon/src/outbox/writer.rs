//! The outbox writer thread: group commit of records coming from inference.
//!
//! Records are appended and flushed at most `flush_ms` after the first of them arrived, or as
//! soon as `flush_records` are waiting; only then are they accepted (counted, and the syncer
//! woken). A failing disk is retried,
//! never skipped; with `pause_ingest` at a cap the writer waits, and the bounded channel in
//! front of it pushes back on inference.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::{Outbox, OutboxError};
use crate::analyzer::IDLE_BEAT;
use crate::clock::IdClock;
use crate::crops::CropStore;
use crate::index::Index;
use crate::record::{NewRecord, Record};
use crate::shutdown::Shutdown;
use crate::stats::Stats;
use crate::systemd_notify::Heartbeat;

/// Where the writer reports what it accepted, and what tells it the daemon is stopping.
pub struct WriterLinks {
    pub stats: Arc<Stats>,
    pub heartbeat: Arc<Heartbeat>,
    /// Wakes the syncer after every commit.
    pub wake: Arc<Notify>,
    /// The id clock whose high-water mark is stored with each commit.
    pub ids: Arc<IdClock>,
    pub shutdown: Shutdown,
}

/// What the writer keeps beside the outbox: records' crops (stored before the records are
/// accepted) and the index on the device (fed right after).
#[derive(Default)]
pub struct AlsoKept {
    pub crops: Option<CropStore>,
    pub index: Option<Index>,
}

/// The writer's loop.
pub fn run_writer(
    outbox: Arc<Outbox>,
    records: Receiver<Vec<NewRecord>>,
    mut kept: AlsoKept,
    links: WriterLinks,
    flush_ms: u64,
    flush_records: usize,
) {
    if let Some(index) = kept.index.as_mut() {
        reindex_pending(&outbox, index, &links);
    }
    let flush_after = Duration::from_millis(flush_ms);
    let mut waiting: Vec<NewRecord> = Vec::new();
    let mut first_at = Instant::now();
    loop {
        links.heartbeat.beat();
        let received = if waiting.is_empty() {
            match records.recv_timeout(IDLE_BEAT) {
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
            let ready = store_crops(kept.crops.as_mut(), std::mem::take(&mut waiting), &links.stats);
            let Some(last_seq) = commit(&outbox, &ready, &links) else { return };
            if let Some(index) = kept.index.as_mut() {
                if !add_to_index(index, &ready, last_seq) {
                    // Catch up from the outbox before the next batch: the index's own mark has not
                    // moved past these records.
                    reindex_pending(&outbox, index, &links);
                }
            }
            links.wake.notify_one();
        }
        if closed {
            return;
        }
    }
}

/// Adds accepted records to the index before the syncer may remove them from the outbox. A
/// failure is logged; the records stay pending with a higher sequence number than the index
/// has, so the next start adds them again.
fn add_to_index(index: &mut Index, records: &[Record], last_seq: u64) -> bool {
    match index.add(records, last_seq) {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(event = "index_failed", error = %e, records = records.len(), "records not added to the local index");
            false
        }
    }
}

/// Adds the pending records the index has not seen (a crash between the outbox's commit and
/// the index's): accepted records are searchable after any restart.
fn reindex_pending(outbox: &Outbox, index: &mut Index, links: &WriterLinks) {
    let mut from = index.indexed_seq().map_or(0, |seq| seq + 1);
    loop {
        // A large backlog takes a while: it is progress, and a stop still stops it.
        links.heartbeat.beat();
        if links.shutdown.is_shutdown() {
            return;
        }
        let page = match outbox.scan(from, 1000) {
            Ok((page, _)) if !page.is_empty() => page,
            Ok(_) => return,
            Err(e) => return tracing::error!(error = %e, "cannot read the outbox to bring the index up to date"),
        };
        let last = page.last().map(|(seq, _)| *seq).unwrap_or(from);
        let records: Vec<Record> = page.into_iter().map(|(_, r)| r).collect();
        tracing::info!(event = "reindexed", records = records.len(), "pending records added to the local index after a restart");
        if !add_to_index(index, &records, last) {
            return; // tried again after the next batch
        }
        from = last + 1;
    }
}

/// Stores every record's crop first; a crop that cannot be stored is logged and counted, and
/// its record goes on without a `crop` key (vectors are never held back by crops).
fn store_crops(store: Option<&mut CropStore>, made: Vec<NewRecord>, stats: &Stats) -> Vec<Record> {
    let Some(store) = store else { return made.into_iter().map(|m| m.record).collect() };
    let (mut stored, mut failed) = (0, 0);
    let records = made
        .into_iter()
        .map(|NewRecord { mut record, crop_jpeg }| {
            if let (Some(key), Some(jpeg)) = (record.metadata.crop.clone(), crop_jpeg) {
                match store.put(&key, &jpeg) {
                    Ok(()) => {
                        stored += 1;
                        stats.crop_succeeded();
                    }
                    Err(e) => {
                        failed += 1;
                        stats.crop_failed(e.to_string());
                        tracing::error!(event = "crop_failed", record = %record.id, error = %e, "crop not stored; the record is kept without it");
                        record.metadata.crop = None;
                    }
                }
            }
            record
        })
        .collect();
    let evicted = store.enforce_retention();
    stats.crops_stored(stored, failed, evicted, store.bytes());
    records
}

/// Appends until the outbox takes the records: they are never dropped here. Returns the last
/// record's sequence number, or `None` only when the daemon stops while the outbox is full (`pause_ingest`): those records were
/// never accepted, and the log says how many.
fn commit(outbox: &Outbox, records: &[Record], links: &WriterLinks) -> Option<u64> {
    let stats = &links.stats;
    let mut delay = Duration::from_millis(100);
    let mut paused_since: Option<Instant> = None;
    loop {
        // Read before appending: the clock has already covered every record handed over.
        match outbox.append(records, links.ids.high_water()) {
            Ok(appended) => {
                if paused_since.is_some() {
                    tracing::info!("outbox has room again; ingest resumed");
                    stats.outbox_paused(false);
                }
                if appended.dropped > 0 {
                    stats.outbox_dropped(appended.dropped);
                }
                if appended.dropped > 0 || !stats.outbox_oldest_known() {
                    stats.outbox_oldest(outbox.oldest_ts().ok().flatten());
                }
                stats.outbox_accepted(records.len() as u64, outbox.backlog());
                return Some(appended.last_seq);
            }
            Err(OutboxError::Full { reason }) => {
                if paused_since.is_none() {
                    tracing::warn!(event = "outbox_paused", %reason, "outbox full: ingest paused until the syncer makes room");
                    stats.outbox_paused(true);
                    paused_since = Some(Instant::now());
                }
                if links.shutdown.is_shutdown() {
                    tracing::error!(records = records.len(), "stopping while the outbox is full: these records were not accepted");
                    return None;
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
