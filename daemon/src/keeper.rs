//! The keeper: what happens to a record once inference made it, on one thread, in one order:
//!
//! 1. its crop is stored (synced) — a crop that cannot be stored costs the record its `crop`
//!    key, never the record;
//! 2. the record is made durable: appended and flushed in the outbox (group commit: at most
//!    `flush_ms` after the first of a batch arrived, or at `flush_records`) — it is *accepted*;
//! 3. it is added to the index on the device, whose mark then passes it;
//! 4. it is released: the syncer may send it (and remove it once Pinecone acknowledged it), or,
//!    without Pinecone, the keeper removes it from the outbox itself, the index being where it
//!    goes.
//!
//! A failing disk is retried, never skipped; with `pause_ingest` at a cap the keeper waits, and
//! the bounded channel in front of it pushes back on inference. An index that fails falls
//! behind: the mark stays, nothing after it is released, and the keeper catches up from the
//! outbox (on every batch and every idle tick) once it can. Retention of the crops and the
//! index runs here too, on a timer, whether or not records arrive.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::clock::IdClock;
use crate::crops::CropStore;
use crate::index::{Index, IndexError, SearchConfig};
use crate::outbox::{Outbox, OutboxError};
use crate::record::{NewRecord, Record};
use crate::shutdown::Shutdown;
use crate::stats::Stats;
use crate::systemd_notify::{Heartbeat, IDLE_BEAT};

/// How often retention runs while records arrive or not.
const RETENTION_EVERY: Duration = Duration::from_secs(60);

/// What the keeper keeps beside the outbox.
pub struct Kept {
    /// Records' crops, stored before the records are accepted.
    pub crops: Option<CropStore>,
    /// The index on the device, fed right after the outbox accepted the records.
    pub index: Option<Index>,
    /// The embedder's dimension: pending records of another (made before a model change) can
    /// never be indexed, and become dead letters instead of stopping the index.
    pub dimension: usize,
}

/// Who takes a record out of the outbox once the index on the device has it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Release {
    /// The syncer, once Pinecone acknowledged it.
    Syncer,
    /// The keeper itself: there is no Pinecone, the index is the destination.
    Here,
}

/// Where the keeper reports what it accepted, and what tells it the daemon is stopping.
pub struct KeeperLinks {
    pub stats: Arc<Stats>,
    pub heartbeat: Arc<Heartbeat>,
    /// Wakes the syncer after every commit.
    pub wake: Arc<Notify>,
    /// The id clock whose high-water mark is stored with each commit.
    pub ids: Arc<IdClock>,
    pub shutdown: Shutdown,
}

/// The free space the crop store and the index leave on `data_dir`'s filesystem
/// (`outbox.min_free_disk`; the outbox holds itself to it on every append).
#[derive(Clone, Debug)]
pub struct DiskGuard {
    pub dir: PathBuf,
    pub min_free: u64,
}

/// Group commit's two limits.
#[derive(Clone, Copy, Debug)]
pub struct Flush {
    pub after: Duration,
    pub records: usize,
}

/// Why the index on the device cannot serve this run.
#[derive(Debug, thiserror::Error)]
pub enum KeptError {
    #[error(
        "the index on the device in {} holds {index}-dimensional vectors but embedder.model gives {embedder}; \
         to start a new index move it aside (mv {0} {0}.{index}d) or delete it, or go back to the {index}-d model",
        dir.display()
    )]
    Dimension { dir: PathBuf, index: usize, embedder: usize },
}

/// Opens the index on the device for an embedder of `dimension`. One that cannot be opened
/// (damaged beyond a torn tail) is moved aside, said in a typed event and the stats, and a new
/// one is filled from the outbox's pending records: the cameras never stop for it. A change of
/// dimension is a start-up error: records of both could never be compared.
pub fn open_index(data_dir: &Path, config: &SearchConfig, dimension: usize, stats: &Stats) -> Result<Option<Index>, KeptError> {
    let index = match Index::open(data_dir, config) {
        Ok(index) => index,
        // A passing I/O error (EMFILE, EIO) is no reason to give up what the index holds.
        Err(e @ IndexError::Io { .. }) => {
            tracing::error!(event = "index_unusable", error = %e, "the index on the device cannot be opened; records are not searchable on the device until a restart opens it");
            stats.index_failed(e.to_string());
            return Ok(None);
        }
        Err(e) => match move_aside(data_dir).and_then(|aside| Ok((aside, Index::open(data_dir, config)?))) {
            Ok((aside, index)) => {
                tracing::error!(event = "index_moved_aside", error = %e, moved_to = %aside.display(),
                    "the index on the device could not be opened; it was moved aside and a new one is filled from the outbox");
                stats.index_moved_aside(aside.display().to_string());
                index
            }
            Err(again) => {
                tracing::error!(event = "index_unusable", error = %again, "the index on the device cannot be opened or replaced; records are not searchable on the device");
                stats.index_failed(again.to_string());
                return Ok(None);
            }
        },
    };
    match index.dimension() {
        Some(held) if held != dimension => Err(KeptError::Dimension { dir: index.dir().to_owned(), index: held, embedder: dimension }),
        _ => Ok(Some(index)),
    }
}

fn move_aside(data_dir: &Path) -> Result<PathBuf, IndexError> {
    let dir = data_dir.join("index");
    let aside = data_dir.join(format!("index.damaged-{}", crate::clock::unix_ms()));
    std::fs::rename(&dir, &aside).map_err(|source| IndexError::Io { path: dir, source })?;
    Ok(aside)
}

/// The keeper's loop, until inference is gone (or the daemon stops while the outbox is full).
pub fn run_keeper(
    outbox: Arc<Outbox>,
    records: Receiver<Vec<NewRecord>>,
    kept: Kept,
    release: Release,
    links: KeeperLinks,
    (flush, disk): (Flush, DiskGuard),
) {
    let mut keeper =
        Keeper { outbox, kept, release, links, disk, disk_full: false, behind: true, failing: false, retained_at: Instant::now() };
    match keeper.kept.index.as_ref().map(Index::mark) {
        // Nothing to wait for: Pinecone may have every record once it is durable.
        None => keeper.outbox.mark_all_indexed(),
        Some(Some(mark)) => keeper.continue_after(mark),
        Some(None) => {}
    }
    keeper.catch_up();
    keeper.release(); // what a run without Pinecone left pending and the index has
    let mut waiting: Vec<NewRecord> = Vec::new();
    let mut first_at = Instant::now();
    loop {
        keeper.links.heartbeat.beat();
        let received = if waiting.is_empty() {
            match records.recv_timeout(IDLE_BEAT) {
                Err(RecvTimeoutError::Timeout) => {
                    keeper.between_batches();
                    continue;
                }
                other => other,
            }
        } else {
            records.recv_timeout(flush.after.saturating_sub(first_at.elapsed()))
        };
        let closed = match received {
            Ok(batch) => {
                if waiting.is_empty() {
                    first_at = Instant::now();
                }
                waiting.extend(batch);
                if waiting.len() < flush.records && first_at.elapsed() < flush.after {
                    continue;
                }
                false
            }
            Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => true,
        };
        if !waiting.is_empty() && !keeper.keep(std::mem::take(&mut waiting)) {
            return;
        }
        if closed {
            keeper.finish();
            return;
        }
    }
}

struct Keeper {
    outbox: Arc<Outbox>,
    kept: Kept,
    release: Release,
    links: KeeperLinks,
    disk: DiskGuard,
    /// The disk is full (below `min_free_disk`, or out of space), as last said.
    disk_full: bool,
    /// The index may lack accepted records: catch up from the outbox.
    behind: bool,
    /// Adding to the index fails, as last said (said once per streak, not every retry).
    failing: bool,
    retained_at: Instant,
}

impl Keeper {
    /// Steps 1 to 4 for one batch; false when the daemon stopped before it was accepted.
    fn keep(&mut self, made: Vec<NewRecord>) -> bool {
        let low_disk = self.low_disk();
        let ready = match low_disk {
            // The record is what matters: on a full disk it goes without its crop (counted).
            true => without_crops(made, self.kept.crops.as_ref().map_or(0, CropStore::bytes), &self.links.stats),
            false => store_crops(self.kept.crops.as_mut(), made, &self.links.stats),
        };
        let Some(seqs) = self.commit(&ready) else { return false };
        // Read again: the commit may have waited long enough for room to come back.
        if self.low_disk() && self.kept.index.is_some() {
            // Added from the outbox once there is room again.
            self.behind = true;
            self.links.stats.index_failed("the data disk is below outbox.min_free_disk".into());
        } else if self.behind {
            self.catch_up();
        } else if let Some(index) = self.kept.index.as_mut() {
            let added = index.add(seqs.iter().copied().zip(&ready));
            self.behind = !record_indexed(&self.outbox, index, added, &self.links.stats, &mut self.failing);
        }
        self.release();
        self.links.wake.notify_one();
        true
    }

    /// Idle work: catching the index up, and retention on its timer.
    fn between_batches(&mut self) {
        // While no record comes, the disk's own word (appends say it otherwise).
        let low_disk = self.low_disk();
        self.set_disk_full(low_disk, "below outbox.min_free_disk");
        if self.behind && !low_disk {
            self.catch_up();
            self.release();
        }
        if self.retained_at.elapsed() >= RETENTION_EVERY {
            self.retained_at = Instant::now();
            self.enforce_retention();
        }
    }

    /// Adds the pending records after the index's mark, a page at a time (a crash between the
    /// outbox's commit and the index's, an index that failed, an index moved aside). Values
    /// that fail their check go to quarantine; records of another dimension become dead letters.
    fn catch_up(&mut self) {
        if self.kept.index.is_none() {
            self.behind = false;
            return;
        }
        if self.low_disk() {
            self.behind = true; // the index writes nothing on a full disk
            return;
        }
        loop {
            // A large backlog takes a while: it is progress, and a stop still stops it.
            self.links.heartbeat.beat();
            if self.links.shutdown.is_shutdown() {
                return;
            }
            let Some(index) = self.kept.index.as_mut() else { return };
            let from = index.mark().map_or(0, |seq| seq + 1);
            let (page, corrupt) = match self.outbox.scan(from, 1000) {
                Ok(scanned) => scanned,
                Err(e) => return tracing::error!(error = %e, "cannot read the outbox to bring the index up to date"),
            };
            if page.is_empty() && corrupt.is_empty() {
                self.behind = false;
                self.outbox.mark_indexed(index.mark());
                return;
            }
            let (fits, odd): (Vec<_>, Vec<_>) = page.into_iter().partition(|(_, r)| r.values.len() == self.kept.dimension);
            let added = index.add(fits.iter().map(|(seq, record)| (*seq, record)));
            if !record_indexed(&self.outbox, index, added, &self.links.stats, &mut self.failing) {
                return; // tried again on the next batch or idle tick
            }
            if !self.set_aside(corrupt, &odd) {
                return;
            }
            if !fits.is_empty() {
                tracing::info!(event = "reindexed", records = fits.len(), "pending records added to the index on the device");
            }
        }
    }

    /// Pending values the index can never take: corrupt ones to quarantine, records of another
    /// dimension (made before a model change) to the dead letters. False when that failed.
    fn set_aside(&self, corrupt: Vec<crate::outbox::Corrupt>, odd: &[(u64, Record)]) -> bool {
        let mut ok = self.outbox.quarantine(corrupt).map_err(|e| tracing::error!(error = %e, "cannot quarantine")).is_ok();
        if let Some((_, first)) = odd.first() {
            let reason = format!("a {}-dimensional embedding; the embedder now gives {}", first.values.len(), self.kept.dimension);
            tracing::error!(event = "records_of_another_dimension", records = odd.len(), %reason, "pending records from before a model change cannot be indexed; kept as dead letters");
            ok &= self.outbox.dead_letter(odd, &reason).map_err(|e| tracing::error!(error = %e, "cannot write dead letters")).is_ok();
        }
        ok
    }

    /// Inference is gone: the index is brought up to date before the keeper ends, so that what
    /// was accepted can be released (a stop ends the wait).
    fn finish(&mut self) {
        let mut delay = Duration::from_millis(100);
        while self.behind && !self.links.shutdown.is_shutdown() {
            self.catch_up();
            self.release();
            if self.behind {
                self.links.heartbeat.beat();
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }

    /// An index kept from an outbox since deleted or restored would take new records for ones
    /// it has: the outbox's numbers go on after the index's mark.
    fn continue_after(&self, mark: u64) {
        match self.outbox.continue_after(mark) {
            Ok(0) => {}
            Ok(skipped) => tracing::warn!(event = "outbox_sequence_continued", skipped, mark,
                "the outbox is younger than the index on the device (deleted or restored?): its sequence numbers now go on after the index's"),
            Err(e) => tracing::error!(error = %e, "cannot move the outbox's sequence numbers past the index's mark"),
        }
    }

    /// Without Pinecone: the records the index has leave the outbox, a page at a time.
    fn release(&self) {
        if self.release != Release::Here || self.kept.index.is_none() {
            return;
        }
        loop {
            match self.outbox.remove_indexed() {
                Ok(0) => return,
                Ok(removed) => {
                    self.links.stats.outbox_backlog(self.outbox.backlog());
                    self.links.heartbeat.beat(); // a large backlog goes in many pages
                    if removed < crate::outbox::REMOVE_PAGE {
                        return;
                    }
                }
                Err(e) => {
                    return tracing::error!(error = %e, "indexed records could not be removed from the outbox; tried again with the next batch")
                }
            }
        }
    }

    fn enforce_retention(&mut self) {
        if let Some(index) = self.kept.index.as_mut() {
            index.enforce_retention();
            self.links.stats.index_size(index.len(), index.bytes());
        }
        if let Some(store) = self.kept.crops.as_mut() {
            let evicted = store.enforce_retention();
            self.links.stats.crops_stored(0, 0, evicted, store.bytes());
        }
    }
}

impl Keeper {
    fn low_disk(&self) -> bool {
        crate::outbox::below_min_free(&self.disk.dir, self.disk.min_free)
    }

    /// Says (once per change) that the disk is full or has room again: a typed event, the stats
    /// and so MQTT and Home Assistant.
    fn set_disk_full(&mut self, full: bool, why: &str) {
        if full == self.disk_full {
            return;
        }
        self.disk_full = full;
        self.links.stats.outbox_disk_full(full);
        match full {
            true => tracing::error!(event = "disk_full", reason = %why, dir = %self.disk.dir.display(),
                "the data disk is full: ingest pauses or drops by outbox.policy, nothing accepted is lost; free space to resume"),
            false => tracing::info!(event = "disk_space_back", "the data disk has room again"),
        }
    }

    /// Appends until the outbox takes the records: they are never dropped here. Returns their
    /// sequence numbers, or `None` when the daemon stops before they could be accepted (a full
    /// outbox with `pause_ingest`, a full or failing disk): the log says how many were not.
    fn commit(&mut self, records: &[Record]) -> Option<Vec<u64>> {
        let mut delay = Duration::from_millis(100);
        let mut paused_since: Option<Instant> = None;
        loop {
            // Read before appending: the clock has already covered every record handed over.
            match self.outbox.append(records, self.links.ids.high_water()) {
                Ok(appended) => {
                    self.set_disk_full(appended.low_disk, "below outbox.min_free_disk");
                    if paused_since.is_some() {
                        tracing::info!(event = "outbox_resumed", "outbox has room again; ingest resumed");
                        self.links.stats.outbox_paused(false);
                        crate::systemd_notify::status("running");
                    }
                    self.accepted(records.len(), &appended);
                    return Some(appended.seqs);
                }
                Err(OutboxError::Full { reason, low_disk }) => {
                    self.set_disk_full(low_disk, &reason);
                    if paused_since.is_none() {
                        tracing::warn!(event = "outbox_paused", %reason, "outbox full: ingest paused until the syncer makes room");
                        self.links.stats.outbox_paused(true);
                        // Paused on purpose is healthy: every stage keeps beating, and systemd's
                        // status says why nothing is taken in.
                        crate::systemd_notify::status(&format!("paused: {reason}"));
                        paused_since = Some(Instant::now());
                    }
                    // Room comes from releasing: an index that fell behind must catch up first.
                    if !low_disk {
                        self.catch_up();
                        self.release();
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) if e.is_disk_full() => {
                    self.set_disk_full(true, &e.to_string());
                    std::thread::sleep(Duration::from_secs(1));
                }
                Err(e) => {
                    tracing::error!(error = %e, records = records.len(), "cannot write to the outbox; retrying");
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
            // Waiting for room, or retrying a disk, is not a wedge: the thread is alive.
            self.links.heartbeat.beat();
            if self.links.shutdown.is_shutdown() {
                tracing::error!(
                    event = "records_not_accepted",
                    records = records.len(),
                    "stopping before the outbox could take these records: they were not accepted"
                );
                return None;
            }
        }
    }

    fn accepted(&self, records: usize, appended: &crate::outbox::Appended) {
        let stats = &self.links.stats;
        if appended.dropped > 0 {
            stats.outbox_dropped(appended.dropped);
        }
        if appended.dropped > 0 || !stats.outbox_oldest_known() {
            stats.outbox_oldest(self.outbox.oldest_ts().ok().flatten());
        }
        stats.outbox_accepted(records as u64, self.outbox.backlog());
    }
}

/// Records made while the disk is full keep their vectors; their crops and snapshots are not
/// stored.
fn without_crops(made: Vec<NewRecord>, bytes_kept: u64, stats: &Stats) -> Vec<Record> {
    let dropped = made.iter().filter(|m| m.crop_jpeg.is_some()).count() as u64;
    if dropped > 0 {
        stats.crop_failed("the data disk is below outbox.min_free_disk".into());
        stats.crops_stored(0, dropped, 0, bytes_kept);
    }
    made.into_iter()
        .map(|NewRecord { mut record, .. }| {
            (record.metadata.crop, record.metadata.snapshot) = (None, None);
            record
        })
        .collect()
}

/// After an add to the index: on success the outbox may release what it has; a failure is
/// counted, logged once per streak (`failing`), and nothing is released past the mark.
fn record_indexed(outbox: &Outbox, index: &Index, added: Result<(), IndexError>, stats: &Stats, failing: &mut bool) -> bool {
    match added {
        Ok(()) => {
            if std::mem::take(failing) {
                tracing::info!(event = "index_recovered", "records are added to the index on the device again");
            }
            outbox.mark_indexed(index.mark());
            stats.index_size(index.len(), index.bytes());
            true
        }
        Err(e) => {
            if !std::mem::replace(failing, true) {
                tracing::error!(event = "index_failed", error = %e, "records not added to the index on the device yet; they stay in the outbox and are added again");
            }
            stats.index_failed(e.to_string());
            false
        }
    }
}

/// Stores every record's crop and its frame's snapshot first; one that cannot be stored is
/// logged and counted, and its records go on without that key (vectors are never held back by
/// pictures).
fn store_crops(store: Option<&mut CropStore>, made: Vec<NewRecord>, stats: &Stats) -> Vec<Record> {
    let Some(store) = store else { return made.into_iter().map(|m| m.record).collect() };
    let mut counts = PutCounts::default();
    // A snapshot is carried by its frame's first record; the others name it only.
    let mut unstored_snapshots = std::collections::HashSet::new();
    let records = made
        .into_iter()
        .map(|NewRecord { mut record, crop_jpeg, snapshot_jpeg }| {
            if let (Some(key), Some(jpeg)) = (record.metadata.crop.clone(), crop_jpeg) {
                match put_picture(store, &key, &jpeg, &record.id, stats, &mut counts) {
                    true => counts.stored += 1,
                    false => record.metadata.crop = None,
                }
            }
            if let (Some(key), Some(jpeg)) = (record.metadata.snapshot.clone(), snapshot_jpeg) {
                match put_picture(store, &key, &jpeg, &record.id, stats, &mut counts) {
                    true => counts.snapshots += 1,
                    false => {
                        unstored_snapshots.insert(key);
                    }
                }
            }
            if record.metadata.snapshot.as_ref().is_some_and(|key| unstored_snapshots.contains(key)) {
                record.metadata.snapshot = None;
            }
            record
        })
        .collect();
    let evicted = store.enforce_retention();
    stats.crops_stored(counts.stored, counts.failed, evicted, store.bytes());
    stats.snapshots_stored(counts.snapshots);
    records
}

#[derive(Default)]
struct PutCounts {
    stored: u64,
    failed: u64,
    snapshots: u64,
}

/// Stores one picture (a crop or a snapshot) of record `id`; whether it was stored (a failure
/// is counted here).
fn put_picture(store: &mut CropStore, key: &str, jpeg: &[u8], id: &str, stats: &Stats, counts: &mut PutCounts) -> bool {
    match store.put(key, jpeg) {
        Ok(()) => {
            stats.crop_succeeded();
            true
        }
        Err(e) => {
            counts.failed += 1;
            stats.crop_failed(e.to_string());
            tracing::error!(event = "crop_failed", record = %id, key, error = %e, "picture not stored; the record is kept without it");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_index_of_another_dimension_is_one_start_up_error_naming_both_and_the_way_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = SearchConfig::default();
        let mut index = Index::open(dir.path(), &config).expect("open");
        let record = crate::record::test_record("d:c:1:0", "c", crate::clock::unix_ms(), crate::index::random_unit(1, 512));
        index.add([(0, &record)]).expect("add");
        drop(index);
        let error = open_index(dir.path(), &config, 768, &Stats::new()).err().expect("another dimension is refused").to_string();
        assert!(error.contains("512-dimensional") && error.contains("gives 768") && error.contains("mv "), "{error}");
        assert!(open_index(dir.path(), &config, 512, &Stats::new()).is_ok_and(|i| i.is_some()));
    }

    #[test]
    fn without_pinecone_pending_records_are_indexed_and_released_and_older_dimensions_become_dead_letters() {
        let dir = tempfile::tempdir().expect("tempdir");
        let outbox = Arc::new(Outbox::open(dir.path(), &crate::outbox::OutboxConfig::default()).expect("open"));
        let record =
            |id: &str, dimension| crate::record::test_record(id, "c", crate::clock::unix_ms(), crate::index::random_unit(7, dimension));
        // Left by a run before a model change (4-d), then by the current model (2-d).
        outbox.append(&[record("old", 4), record("new-a", 2), record("new-b", 2)], 0).expect("append");
        let index = Index::open(dir.path(), &SearchConfig::default()).expect("index");
        let (_trigger, shutdown) = crate::shutdown::channel();
        let links = KeeperLinks {
            stats: Stats::new(),
            heartbeat: crate::systemd_notify::Heartbeats::default().register("keeper"),
            wake: Arc::new(Notify::new()),
            ids: Arc::new(IdClock::after(0)),
            shutdown,
        };
        let (sender, records) = std::sync::mpsc::sync_channel(1);
        drop(sender); // inference already gone: the keeper catches up, releases and ends
        let kept = Kept { crops: None, index: Some(index), dimension: 2 };
        let flush = Flush { after: Duration::from_millis(10), records: 10 };
        let disk = DiskGuard { dir: dir.path().to_owned(), min_free: 0 };
        run_keeper(outbox.clone(), records, kept, Release::Here, links, (flush, disk));
        assert_eq!((outbox.backlog().records, outbox.dead_len()), (0, 1));
        let index = Index::open(dir.path(), &SearchConfig::default()).expect("reopen");
        assert_eq!(index.records().map(|r| r.expect("row").id).collect::<Vec<_>>(), ["new-a", "new-b"]);
        // An outbox younger than the index (deleted, restored) goes on after the index's mark.
        let mark = index.mark().expect("a mark");
        drop(outbox);
        std::fs::remove_dir_all(dir.path().join("outbox")).expect("delete the outbox");
        let young = Outbox::open(dir.path(), &crate::outbox::OutboxConfig::default()).expect("a new outbox");
        assert!(young.continue_after(mark).expect("continue") > 0);
        assert!(young.append(&[record("next", 2)], 0).expect("append").seqs[0] > mark);
    }

    #[test]
    fn an_index_that_cannot_be_opened_is_moved_aside_and_a_new_one_takes_its_place() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("index")).expect("index dir");
        std::fs::write(dir.path().join("index/names.json"), b"{ not json").expect("damage");
        let stats = Stats::new();
        let index = open_index(dir.path(), &SearchConfig::default(), 512, &stats).expect("opens").expect("an index");
        assert!(index.is_empty());
        let report = stats.snapshot().report("d", &Default::default(), None);
        let aside = report["index"]["moved_aside"].as_str().expect("the stats say where it went").to_owned();
        assert!(std::path::Path::new(&aside).join("names.json").exists(), "{aside}");
    }
}
