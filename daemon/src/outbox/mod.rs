//! The durable buffer between inference and the index, in sled.
//!
//! Invariants:
//! - A record is *accepted* once [`Outbox::append`] has returned: it is written and flushed to
//!   disk. Nothing upstream of the outbox is told "done" before that.
//! - A record leaves `pending` only once it is released: the index on the device has it (its
//!   mark, [`Outbox::mark_indexed`], passed it; [`Outbox::sendable`] hands out nothing beyond),
//!   and then Pinecone acknowledged it with a 200 ([`Outbox::remove`]), or rejected it for good
//!   ([`Outbox::dead_letter`], kept in `dead`), or, without Pinecone, the index is where it
//!   goes ([`Outbox::remove_indexed`]). Otherwise only the disk cap's `drop_oldest` policy
//!   deletes one (counted and reported, never silent).
//! - Records keep their id forever, so replaying after a crash overwrites rather than duplicates.
//! - The pending count and byte total are stored beside the records and updated in the same
//!   atomic batch, so they are right after a crash and start-up never scans the records.
//!
//! - The high-water mark of live cameras' record-id keys ([`crate::clock::IdClock`]) is stored
//!   in the same batch as the records it covers, so ids stay unique across restarts even when
//!   the wall clock starts earlier than before (boards without a real-time clock).
//! - Reading never changes anything: [`Outbox::scan`] reports corrupt values; only the syncer's
//!   [`Outbox::sendable`] moves them to quarantine.
//! - One process at a time: a `flock` on `outbox.lock` beside the database.
//!
//! Key layout in tree `pending`: records under their 8-byte big-endian sequence number (from
//! sled's monotonic `generate_id`, so key order is arrival order); the counters under
//! `~count` and `~bytes`, and the id clock under `~idclock`, which sort after every record key. Tree `dead` holds rejected records
//! as JSON `{error, record}`; tree `quarantine` holds values that failed their checksum.
//! Values are encoded by [`codec`] (versioned, CRC32-checked, raw f32 embeddings).

pub mod codec;
mod config;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

pub use config::{CapPolicy, OutboxConfig};

use crate::record::Record;

const COUNT_KEY: &[u8] = b"~count";
const BYTES_KEY: &[u8] = b"~bytes";
const ID_CLOCK_KEY: &[u8] = b"~idclock";
/// Record keys are 8 bytes that start below `~`; counters start with `~`.
const RECORDS_END: &[u8] = b"~";
/// Records [`Outbox::remove_indexed`] forgets at most per call (one flush each).
pub const REMOVE_PAGE: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("the outbox in {path} is in use by another process (a running glimpse?); stop it first")]
    Locked { path: PathBuf },
    #[error("cannot lock the outbox in {path}: {source}; check that data_dir exists and is writable")]
    Lock { path: PathBuf, source: nix::Error },
    #[error("cannot open the outbox database in {path}: {source}; check that data_dir exists and is writable")]
    Open { path: PathBuf, source: sled::Error },
    #[error("outbox storage failed: {0}")]
    Storage(#[from] sled::Error),
    #[error("cannot encode record {id}: {source}")]
    Encode { id: String, source: codec::EncodeError },
    #[error("the outbox is full ({reason}) and the policy is pause_ingest")]
    Full { reason: String, low_disk: bool },
}

impl OutboxError {
    /// The filesystem under `data_dir` has no room (below `min_free_disk`, or out of space):
    /// a state that passes once space comes back, not a fault.
    pub fn is_disk_full(&self) -> bool {
        match self {
            OutboxError::Full { low_disk, .. } => *low_disk,
            OutboxError::Storage(sled::Error::Io(e)) | OutboxError::Open { source: sled::Error::Io(e), .. } => is_out_of_space(e),
            _ => false,
        }
    }
}

/// ENOSPC or EDQUOT, however the I/O error carries it.
pub fn is_out_of_space(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::StorageFull || e.kind() == std::io::ErrorKind::QuotaExceeded || e.raw_os_error() == Some(28)
}

/// Why `data_dir` cannot hold the outbox, found before anything is opened.
#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    #[error("data_dir {} cannot be created: {source}; choose a directory the daemon may create, e.g. /var/lib/glimpse", dir.display())]
    Create { dir: PathBuf, source: std::io::Error },
    #[error("data_dir {} is not writable: {source}; check its permissions and that its filesystem is not read-only", dir.display())]
    NotWritable { dir: PathBuf, source: std::io::Error },
    #[error("data_dir {} has {free} bytes free, less than outbox.min_free_disk ({min}); free space or lower min_free_disk", dir.display())]
    LowDisk { dir: PathBuf, free: u64, min: u64 },
}

/// Checks that `data_dir` exists (creating it), takes a file, and has `min_free_disk` free.
pub fn preflight(data_dir: &Path, config: &OutboxConfig) -> Result<(), PreflightError> {
    let dir = data_dir.to_owned();
    std::fs::create_dir_all(data_dir).map_err(|source| PreflightError::Create { dir: dir.clone(), source })?;
    let probe = data_dir.join(".glimpse-write-test");
    std::fs::write(&probe, b"ok").map_err(|source| PreflightError::NotWritable { dir: dir.clone(), source })?;
    let _ = std::fs::remove_file(&probe);
    match free_disk(data_dir) {
        Some(free) if free < config.min_free_disk.0 => Err(PreflightError::LowDisk { dir, free, min: config.min_free_disk.0 }),
        _ => Ok(()),
    }
}

/// What one append did besides storing the records.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Appended {
    /// Oldest records dropped to make room (policy `drop_oldest`).
    pub dropped: u64,
    /// The records' sequence numbers, in order.
    pub seqs: Vec<u64>,
    /// The disk was below `min_free_disk`: `drop_oldest` held the backlog's size.
    pub low_disk: bool,
}

/// Pending records and their encoded size, as stored beside them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Backlog {
    pub records: u64,
    pub bytes: u64,
}

pub struct Outbox {
    db: sled::Db,
    dir: PathBuf,
    pending: sled::Tree,
    dead: sled::Tree,
    quarantine: sled::Tree,
    config: OutboxConfig,
    /// Serialises every change to `pending`, so the stored counters stay exact; held across
    /// the flush, so readers use `published` instead.
    backlog: Mutex<Backlog>,
    /// The backlog as of the last completed change, for readers that must not wait (tokio tasks).
    published: PublishedBacklog,
    /// One past the last sequence number the index on the device has (0: none yet): what
    /// [`Outbox::sendable`] may hand out. In memory: the keeper sets it again at every start.
    indexed_below: AtomicU64,
    /// Held for the outbox's life: the `flock` that keeps a second process out.
    _lock: nix::fcntl::Flock<std::fs::File>,
}

/// A backlog readable without a lock.
#[derive(Default)]
struct PublishedBacklog {
    records: AtomicU64,
    bytes: AtomicU64,
}

/// What [`Outbox::scan`] found: readable records with their sequence numbers, and corrupt values.
pub type Scanned = (Vec<(u64, Record)>, Vec<Corrupt>);

/// A pending value that failed its checksum, as [`Outbox::scan`] reports it.
#[derive(Debug)]
pub struct Corrupt {
    pub seq: u64,
    pub error: codec::DecodeError,
}

impl Outbox {
    pub fn open(data_dir: &Path, config: &OutboxConfig) -> Result<Self, OutboxError> {
        let path = data_dir.join("outbox");
        let lock = lock_exclusively(data_dir, &path)?;
        let open_err = |source: sled::Error| OutboxError::Open { path: path.clone(), source };
        let db = open_sled(&path).map_err(open_err)?;
        let pending = db.open_tree("pending").map_err(open_err)?;
        let dead = db.open_tree("dead").map_err(open_err)?;
        let quarantine = db.open_tree("quarantine").map_err(open_err)?;
        let read = |key: &[u8]| -> Result<u64, OutboxError> {
            Ok(pending.get(key)?.and_then(|v| v.as_ref().try_into().ok()).map_or(0, u64::from_le_bytes))
        };
        let backlog = Backlog { records: read(COUNT_KEY)?, bytes: read(BYTES_KEY)? };
        let published = PublishedBacklog::default();
        published.set(backlog);
        let config = config.clone();
        let indexed_below = AtomicU64::new(0);
        Ok(Self { db, dir: path, pending, dead, quarantine, config, backlog: Mutex::new(backlog), published, indexed_below, _lock: lock })
    }

    /// Pending records and bytes as of the last completed change; never waits.
    pub fn backlog(&self) -> Backlog {
        self.published.get()
    }

    /// The greatest record-id key stored by [`Outbox::append`] (0 when none).
    pub fn id_clock(&self) -> Result<u64, OutboxError> {
        Ok(self.pending.get(ID_CLOCK_KEY)?.and_then(|v| v.as_ref().try_into().ok()).map_or(0, u64::from_le_bytes))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Backlog> {
        // A panic while holding the lock cannot leave the counters half-written (they are
        // written in the same atomic batch as the records), so a poisoned lock is still usable.
        self.backlog.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Writes `records` and flushes them to disk; when this returns Ok they are accepted.
    /// `id_clock` (the id clock's high-water mark, covering these records) is stored with them.
    /// At a cap, `drop_oldest` makes room (the count is returned) and `pause_ingest` refuses.
    pub fn append(&self, records: &[Record], id_clock: u64) -> Result<Appended, OutboxError> {
        let mut encoded = Vec::with_capacity(records.len());
        for record in records {
            let value = codec::encode(record).map_err(|source| OutboxError::Encode { id: record.id.clone(), source })?;
            encoded.push(value);
        }
        let new_bytes: u64 = encoded.iter().map(|v| v.len() as u64).sum();
        let mut backlog = self.lock();
        let mut next = *backlog;
        let mut batch = sled::Batch::default();
        let mut appended = Appended::default();
        if let Some(excess) = self.excess(&backlog, new_bytes) {
            match self.config.policy {
                CapPolicy::PauseIngest => return Err(OutboxError::Full { reason: excess.reason, low_disk: excess.low_disk }),
                CapPolicy::DropOldest => {
                    appended.low_disk = excess.low_disk;
                    let mut freed = 0;
                    for entry in self.pending.range(..RECORDS_END) {
                        if freed >= excess.bytes {
                            break;
                        }
                        let (key, value) = entry?;
                        batch.remove(key);
                        freed += value.len() as u64;
                        next.records -= 1;
                        next.bytes -= value.len() as u64;
                        appended.dropped += 1;
                    }
                }
            }
        }
        for value in encoded {
            let seq = self.db.generate_id()?;
            batch.insert(&seq.to_be_bytes(), value);
            appended.seqs.push(seq);
        }
        next.records += records.len() as u64;
        next.bytes += new_bytes;
        write_counters(&mut batch, next);
        batch.insert(ID_CLOCK_KEY, &id_clock.to_le_bytes());
        self.pending.apply_batch(batch)?;
        self.db.flush()?;
        *backlog = next;
        self.published.set(next);
        Ok(appended)
    }

    /// How far over a cap adding `new_bytes` would go, and why; `None` when within both caps.
    fn excess(&self, backlog: &Backlog, new_bytes: u64) -> Option<Excess> {
        let total = backlog.bytes + new_bytes;
        let max = self.config.max_bytes.0;
        if total > max {
            return Some(Excess {
                bytes: total - max,
                reason: format!("backlog would reach {total} bytes, max_bytes is {max}"),
                low_disk: false,
            });
        }
        let min_free = self.config.min_free_disk.0;
        match free_disk(&self.dir) {
            Some(free) if free < min_free + new_bytes => Some(Excess {
                // Sled frees disk space lazily, so hold the backlog's size instead of growing it.
                bytes: new_bytes,
                reason: format!("{free} bytes free on disk, min_free_disk is {min_free}"),
                low_disk: true,
            }),
            _ => None,
        }
    }

    /// Up to `max` of the oldest pending records with a sequence number of at least `from`,
    /// and the values among them that fail their check. Changes nothing.
    pub fn scan(&self, from: u64, max: usize) -> Result<Scanned, OutboxError> {
        let mut out = Vec::with_capacity(max.min(1024));
        let mut bad = Vec::new();
        for entry in self.pending.range(from.to_be_bytes().as_slice()..RECORDS_END) {
            if out.len() == max {
                break;
            }
            let (key, value) = entry?;
            match codec::decode(&value) {
                Ok(record) => out.push((key_seq(&key), record)),
                Err(error) => bad.push(Corrupt { seq: key_seq(&key), error }),
            }
        }
        Ok((out, bad))
    }

    /// The index on the device has every record up to `seq` (`None`: none yet): they may be
    /// handed to the syncer. Never moves back.
    pub fn mark_indexed(&self, seq: Option<u64>) {
        if let Some(seq) = seq {
            self.indexed_below.fetch_max(seq.saturating_add(1), Ordering::AcqRel);
        }
    }

    /// There is no index on the device (`[search] enabled = false`): every record may go.
    pub fn mark_all_indexed(&self) {
        self.indexed_below.store(u64::MAX, Ordering::Release);
    }

    /// For the syncer: up to `max` records from `from` on that the index on the device already
    /// has. Values that fail their check are moved to quarantine (never sent) and skipped: this
    /// read changes the outbox.
    pub fn sendable(&self, from: u64, max: usize) -> Result<Vec<(u64, Record)>, OutboxError> {
        let below = self.indexed_below.load(Ordering::Acquire);
        let (mut out, bad) = self.scan(from, max)?;
        out.retain(|(seq, _)| *seq < below);
        self.quarantine(bad.into_iter().filter(|c| c.seq < below).collect())?;
        Ok(out)
    }

    /// Moves values that failed their check to quarantine (never sent, never indexed), saying so.
    pub fn quarantine(&self, bad: Vec<Corrupt>) -> Result<(), OutboxError> {
        for Corrupt { seq, error } in bad {
            tracing::error!(seq, %error, "outbox record fails its check; quarantined, never sent");
            if let Some(value) = self.pending.get(seq.to_be_bytes())? {
                self.quarantine.insert(seq.to_be_bytes(), value)?;
            }
            self.forget(&[seq], None)?;
        }
        Ok(())
    }

    /// Forgets records the index has acknowledged.
    pub fn remove(&self, seqs: &[u64]) -> Result<(), OutboxError> {
        self.forget(seqs, None)
    }

    /// Without Pinecone the index on the device is the records' destination: forgets up to
    /// [`REMOVE_PAGE`] of the oldest pending records it has (up to its mark). Returns how many:
    /// [`REMOVE_PAGE`] means there may be more.
    pub fn remove_indexed(&self) -> Result<usize, OutboxError> {
        let below = self.indexed_below.load(Ordering::Acquire);
        let mut seqs = Vec::with_capacity(REMOVE_PAGE);
        for key in self.pending.range(..RECORDS_END).keys() {
            let seq = key_seq(&key?);
            if seq >= below || seqs.len() == REMOVE_PAGE {
                break;
            }
            seqs.push(seq);
        }
        if !seqs.is_empty() {
            self.forget(&seqs, None)?;
        }
        Ok(seqs.len())
    }

    /// Makes every sequence number handed out from now on greater than `seq`: an index kept
    /// from an outbox since deleted or restored from a backup would otherwise take new records
    /// for ones it already has. Returns how many numbers were skipped (0 almost always).
    pub fn continue_after(&self, seq: u64) -> Result<u64, OutboxError> {
        let mut skipped = 0;
        while self.db.generate_id()? <= seq {
            skipped += 1;
        }
        Ok(skipped)
    }

    /// Sets aside records the index rejected permanently, with the reason.
    pub fn dead_letter(&self, records: &[(u64, Record)], reason: &str) -> Result<(), OutboxError> {
        let mut dead = sled::Batch::default();
        for (seq, record) in records {
            let entry = serde_json::json!({ "error": reason, "record": record });
            dead.insert(&seq.to_be_bytes(), entry.to_string().into_bytes());
        }
        let seqs: Vec<u64> = records.iter().map(|(s, _)| *s).collect();
        self.forget(&seqs, Some(dead))
    }

    /// Removes `seqs` from `pending` (those still there), updating the counters in the same
    /// batch; `dead` entries are written first, so a crash in between keeps both copies rather
    /// than none.
    fn forget(&self, seqs: &[u64], dead: Option<sled::Batch>) -> Result<(), OutboxError> {
        if let Some(dead) = dead {
            self.dead.apply_batch(dead)?;
        }
        let mut backlog = self.lock();
        let mut next = *backlog;
        let mut batch = sled::Batch::default();
        for seq in seqs {
            let key = seq.to_be_bytes();
            if let Some(value) = self.pending.get(key)? {
                batch.remove(&key);
                next.records = next.records.saturating_sub(1);
                next.bytes = next.bytes.saturating_sub(value.len() as u64);
            }
        }
        write_counters(&mut batch, next);
        self.pending.apply_batch(batch)?;
        self.db.flush()?;
        *backlog = next;
        self.published.set(next);
        Ok(())
    }

    /// Capture time (unix ms) of the oldest pending record.
    pub fn oldest_ts(&self) -> Result<Option<i64>, OutboxError> {
        match self.pending.range(..RECORDS_END).next() {
            Some(entry) => Ok(codec::decode(&entry?.1).ok().map(|r| r.metadata.ts)),
            None => Ok(None),
        }
    }

    pub fn dead_len(&self) -> usize {
        self.dead.len()
    }

    pub fn quarantined_len(&self) -> usize {
        self.quarantine.len()
    }

    /// Every dead letter as stored: JSON `{error, record}`.
    pub fn dead_letters(&self) -> impl Iterator<Item = Result<Vec<u8>, OutboxError>> + '_ {
        self.dead.iter().values().map(|v| v.map(|v| v.to_vec()).map_err(OutboxError::from))
    }

    /// Deletes every pending record (the operator's `glimpse outbox purge`); returns how many.
    /// The id clock stays: a box without a real-time clock must not hand out old ids again.
    pub fn purge_pending(&self) -> Result<u64, OutboxError> {
        let mut backlog = self.lock();
        let n = backlog.records;
        let mut batch = sled::Batch::default();
        for key in self.pending.range(..RECORDS_END).keys() {
            batch.remove(key?);
        }
        write_counters(&mut batch, Backlog::default());
        self.pending.apply_batch(batch)?;
        self.db.flush()?;
        *backlog = Backlog::default();
        self.published.set(Backlog::default());
        Ok(n)
    }

    /// Deletes every dead letter; returns how many.
    pub fn purge_dead(&self) -> Result<usize, OutboxError> {
        let n = self.dead.len();
        self.dead.clear()?;
        self.db.flush()?;
        Ok(n)
    }

    pub fn flush(&self) -> Result<(), OutboxError> {
        self.db.flush()?;
        Ok(())
    }
}

impl PublishedBacklog {
    fn set(&self, backlog: Backlog) {
        self.records.store(backlog.records, Ordering::Release);
        self.bytes.store(backlog.bytes, Ordering::Release);
    }
    fn get(&self) -> Backlog {
        Backlog { records: self.records.load(Ordering::Acquire), bytes: self.bytes.load(Ordering::Acquire) }
    }
}

/// Takes the outbox's exclusive lock (a `flock` on `outbox.lock` in `data_dir`), or says that
/// another process holds it.
fn lock_exclusively(data_dir: &Path, outbox: &Path) -> Result<nix::fcntl::Flock<std::fs::File>, OutboxError> {
    use nix::fcntl::{Flock, FlockArg};
    let lock_path = data_dir.join("outbox.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| OutboxError::Lock { path: outbox.to_owned(), source: nix::Error::from_raw(e.raw_os_error().unwrap_or(0)) })?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(locked) => Ok(locked),
        Err((_, nix::Error::EWOULDBLOCK)) => Err(OutboxError::Locked { path: outbox.to_owned() }),
        Err((_, source)) => Err(OutboxError::Lock { path: outbox.to_owned(), source }),
    }
}

struct Excess {
    bytes: u64,
    reason: String,
    /// The cap is the disk's free space, not `max_bytes`.
    low_disk: bool,
}

fn write_counters(batch: &mut sled::Batch, backlog: Backlog) {
    batch.insert(COUNT_KEY, &backlog.records.to_le_bytes());
    batch.insert(BYTES_KEY, &backlog.bytes.to_le_bytes());
}

fn key_seq(key: &[u8]) -> u64 {
    key.try_into().map_or(u64::MAX, u64::from_be_bytes)
}

/// Whether the filesystem holding `dir` has less than `min_free` available: what the crop store
/// and the index are held to before the keeper writes them (the outbox checks on every append).
pub fn below_min_free(dir: &Path, min_free: u64) -> bool {
    free_disk(dir).is_some_and(|free| free < min_free)
}

/// Opens sled's database at `path`. Our own exclusive lock is held by then, so a busy sled lock
/// can only be this process's previous database, whose flusher thread is still letting go of
/// its file after the drop: that takes moments, so the open is tried again for up to 2 s.
fn open_sled(path: &Path) -> sled::Result<sled::Db> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        match sled::Config::new().path(path).open() {
            Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            opened => return opened,
        }
    }
}

/// Bytes available to unprivileged users on the filesystem holding `dir`.
fn free_disk(dir: &Path) -> Option<u64> {
    let stat = nix::sys::statvfs::statvfs(dir).ok()?;
    Some(stat.blocks_available() as u64 * stat.fragment_size() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::ByteSize;

    fn record(id: &str) -> Record {
        crate::record::test_record(id, "c", 1, vec![0.6, 0.8])
    }

    /// An outbox whose records may all be sent (as without an index on the device).
    fn opened(dir: &Path, config: &OutboxConfig) -> Outbox {
        let outbox = Outbox::open(dir, config).expect("open");
        outbox.mark_all_indexed();
        outbox
    }

    fn ids(outbox: &Outbox) -> Vec<String> {
        outbox.sendable(0, 100).expect("read").into_iter().map(|(_, r)| r.id).collect()
    }

    #[test]
    fn records_survive_reopening_in_arrival_order_with_their_counters() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = OutboxConfig::default();
        let before = {
            let outbox = opened(dir.path(), &config);
            outbox.append(&[record("a"), record("b")], 0).expect("append");
            outbox.append(&[record("c")], 0).expect("append");
            outbox.backlog()
        };
        let outbox = opened(dir.path(), &config);
        assert_eq!(ids(&outbox), ["a", "b", "c"]);
        assert_eq!(outbox.backlog(), before);
        assert_eq!(before.records, 3);
        let first_two: Vec<u64> = outbox.sendable(0, 2).expect("read").into_iter().map(|(s, _)| s).collect();
        outbox.remove(&first_two).expect("remove");
        outbox.remove(&first_two).expect("removing twice is harmless");
        assert_eq!(outbox.backlog().records, 1);
        let rest = outbox.sendable(first_two[1] + 1, 10).expect("read");
        assert_eq!(rest.len(), 1);
    }

    #[test]
    fn a_record_failing_its_checksum_is_quarantined_not_returned() {
        let dir = tempfile::tempdir().expect("tempdir");
        let outbox = opened(dir.path(), &OutboxConfig::default());
        outbox.append(&[record("bad"), record("ok")], 0).expect("append");
        let (seq, _) = outbox.sendable(0, 1).expect("read")[0].clone();
        let mut value = outbox.pending.get(seq.to_be_bytes()).expect("get").expect("present").to_vec();
        let last = value.len() - 1;
        value[last] ^= 0xff;
        outbox.pending.insert(seq.to_be_bytes(), value).expect("corrupt");
        assert_eq!(ids(&outbox), ["ok"]);
        assert_eq!((outbox.quarantined_len(), outbox.backlog().records), (1, 1));
    }

    #[test]
    fn dead_letters_leave_pending_but_are_kept_with_their_reason() {
        let dir = tempfile::tempdir().expect("tempdir");
        let outbox = opened(dir.path(), &OutboxConfig::default());
        outbox.append(&[record("x")], 0).expect("append");
        let batch = outbox.sendable(0, 10).expect("read");
        outbox.dead_letter(&batch, "400: bad metadata").expect("dead letter");
        assert_eq!((outbox.backlog().records, outbox.dead_len()), (0, 1));
        let letter = outbox.dead_letters().next().expect("one").expect("readable");
        assert!(String::from_utf8_lossy(&letter).contains("400: bad metadata"));
    }

    #[test]
    fn at_max_bytes_drop_oldest_makes_room_and_counts_what_it_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let size = codec::encode(&record("a")).expect("encode").len() as u64;
        let config = OutboxConfig { max_bytes: ByteSize(size * 3), ..OutboxConfig::default() };
        let outbox = opened(dir.path(), &config);
        outbox.append(&[record("a"), record("b"), record("c")], 0).expect("append");
        let result = outbox.append(&[record("d"), record("e")], 0).expect("append");
        assert_eq!(result.dropped, 2);
        assert_eq!(ids(&outbox), ["c", "d", "e"]);
        assert_eq!(outbox.backlog(), Backlog { records: 3, bytes: size * 3 });
    }

    #[test]
    fn at_max_bytes_pause_ingest_refuses_until_there_is_room() {
        let dir = tempfile::tempdir().expect("tempdir");
        let size = codec::encode(&record("a")).expect("encode").len() as u64;
        let config = OutboxConfig { max_bytes: ByteSize(size * 2), policy: CapPolicy::PauseIngest, ..OutboxConfig::default() };
        let outbox = opened(dir.path(), &config);
        outbox.append(&[record("a"), record("b")], 0).expect("append");
        assert!(matches!(outbox.append(&[record("c")], 0), Err(OutboxError::Full { .. })));
        let first: Vec<u64> = outbox.sendable(0, 1).expect("read").into_iter().map(|(s, _)| s).collect();
        outbox.remove(&first).expect("remove");
        outbox.append(&[record("c")], 0).expect("room again");
        assert_eq!(ids(&outbox), ["b", "c"]);
    }

    #[test]
    fn scanning_reports_a_corrupt_record_without_moving_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let outbox = opened(dir.path(), &OutboxConfig::default());
        outbox.append(&[record("bad"), record("ok")], 0).expect("append");
        let (seq, _) = outbox.scan(0, 1).expect("scan").0[0].clone();
        let mut value = outbox.pending.get(seq.to_be_bytes()).expect("get").expect("present").to_vec();
        let last = value.len() - 1;
        value[last] ^= 0xff;
        outbox.pending.insert(seq.to_be_bytes(), value).expect("corrupt");
        for _ in 0..2 {
            let (good, bad) = outbox.scan(0, 10).expect("scan");
            assert_eq!((good.len(), bad.len(), bad[0].seq), (1, 1, seq));
            assert_eq!((outbox.quarantined_len(), outbox.backlog().records), (0, 2), "scanning changed nothing");
        }
    }

    #[test]
    fn the_id_clock_is_stored_with_the_records_it_covers() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let outbox = opened(dir.path(), &OutboxConfig::default());
            assert_eq!(outbox.id_clock().expect("read"), 0);
            outbox.append(&[record("a")], 1_700_000_000_123).expect("append");
        }
        let outbox = opened(dir.path(), &OutboxConfig::default());
        assert_eq!(outbox.id_clock().expect("read"), 1_700_000_000_123);
        assert_eq!(ids(&outbox), ["a"], "the clock is not a record");
    }

    #[test]
    fn purging_the_pending_records_keeps_the_id_clock() {
        let dir = tempfile::tempdir().expect("tempdir");
        let outbox = opened(dir.path(), &OutboxConfig::default());
        outbox.append(&[record("a"), record("b")], 1_700_000_000_123).expect("append");
        assert_eq!(outbox.purge_pending().expect("purge"), 2);
        assert_eq!((ids(&outbox).len(), outbox.backlog()), (0, Backlog::default()));
        drop(outbox);
        let outbox = opened(dir.path(), &OutboxConfig::default());
        assert_eq!(outbox.id_clock().expect("read"), 1_700_000_000_123);
    }

    #[test]
    fn only_records_the_index_has_are_sendable_and_without_pinecone_they_leave_once_indexed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let outbox = Outbox::open(dir.path(), &OutboxConfig::default()).expect("open");
        let seqs = outbox.append(&[record("a"), record("b"), record("c")], 0).expect("append").seqs;
        assert!(outbox.sendable(0, 10).expect("read").is_empty(), "nothing before the index has it");
        outbox.mark_indexed(Some(seqs[1]));
        outbox.mark_indexed(Some(seqs[0]));
        assert_eq!(ids(&outbox), ["a", "b"], "the mark never moves back");
        assert_eq!(outbox.remove_indexed().expect("remove"), 2);
        assert_eq!(outbox.backlog().records, 1);
        assert_eq!(outbox.scan(0, 10).expect("scan").0.len(), 1, "c waits for the index");
    }

    #[test]
    fn a_second_opener_is_told_the_outbox_is_in_use() {
        let dir = tempfile::tempdir().expect("tempdir");
        let _first = opened(dir.path(), &OutboxConfig::default());
        assert!(matches!(Outbox::open(dir.path(), &OutboxConfig::default()), Err(OutboxError::Locked { .. })));
    }
}
