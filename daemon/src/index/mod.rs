//! The index on the device: every accepted record's embedding and metadata, searchable whether
//! or not Pinecone is configured or reachable. The outbox writer feeds it right after the
//! outbox accepted the records (and before the syncer may remove them); `glimpse search` reads
//! it. This module alone owns `{data_dir}/index/`.
//!
//! Layout: segments of at most [`SEGMENT_RECORDS`] records (fewer for a small `max_bytes`: see
//! [`Index::segment_rows`]), each three append-only files:
//! - `NNNNNN.vec`: fixed-size rows `[ts i64][camera u32][label u32][scale f32][meta length u32]
//!   [meta offset u64][dim × i8]`: what a scan reads (vectors quantized to int8, one scale each);
//! - `NNNNNN.f32`: the exact vectors, read only to re-rank a scan's best candidates;
//! - `NNNNNN.meta`: `{"id", "metadata"}` JSON, read only for the results.
//!
//! `names.json` maps camera and label names to the numbers in the rows. Each row's metadata
//! carries its record's outbox sequence number; rows are added in sequence order, so the last
//! complete row says how far the index goes ([`Index::mark`]). (`indexed-seq`, which said so
//! before rows carried it, is still read for an index whose rows do not.)
//!
//! Invariants:
//! - A batch is synced to disk before [`Index::add`] returns, and only then does the mark pass
//!   it; the keeper re-adds pending outbox records after the mark and releases none before it,
//!   so a record accepted before a crash is in the index after the restart.
//! - Adding is idempotent: a record at or before the mark is skipped, so a stale mark or a
//!   re-read page of the outbox never makes a second row.
//! - A torn or zero-filled tail (a power cut mid-append) is cut off at open and reported: a row
//!   counts only when its vector and its metadata are complete. It never makes the index
//!   unusable: those rows were not synced, so the mark never passed them.
//! - Searching maps the files and allocates only the candidates: the index is never loaded
//!   into the heap. Results equal an exact f32 scan's: the int8 scan keeps many candidates and
//!   they are re-ranked exactly.
//! - Retention drops whole segments, oldest first: `retain_days`, then `max_bytes`.

mod segment;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::record::{Metadata, Record};
use crate::validate::ByteSize;
use crate::validate::{KeyPath, Problem};
use segment::Segment;

/// The most matches a search returns: Pinecone's limit for queries that include metadata, kept
/// for the index on the device too so that both answer the same options.
pub const MAX_TOP_K: usize = 1000;

/// Rows per segment at most: retention frees space a segment at a time.
pub const SEGMENT_RECORDS: u64 = 65_536;

/// Rows per segment at least (a file per few minutes of a busy camera, not per record).
const MIN_SEGMENT_RECORDS: u64 = 256;

/// Retention keeps the index within this share of `max_bytes` over it: a segment is at most a
/// tenth of the cap.
const SEGMENTS_PER_CAP: u64 = 10;

/// The smallest `max_bytes` that ten of the smallest segments of 512-d records fit in.
const MIN_MAX_BYTES: u64 = 16 << 20;

/// Metadata JSON of a row, about (for sizing segments).
const META_BYTES: u64 = 400;

/// `[search]`: the index on the device. Absent: on, with these defaults.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default)]
pub struct SearchConfig {
    /// Keep records searchable on the device. Default true.
    pub enabled: bool,
    /// Records older than this many days leave the index (a segment at a time). Default 30.
    pub retain_days: f64,
    /// Cap on the index's size on disk; the oldest segments go first. Default 1 GiB.
    pub max_bytes: ByteSize,
}

impl Default for SearchConfig {
    fn default() -> Self {
        Self { enabled: true, retain_days: 30.0, max_bytes: ByteSize(1 << 30) }
    }
}

impl SearchConfig {
    pub fn validate(&self, at: &KeyPath, problems: &mut Vec<Problem>) {
        if !(self.retain_days.is_finite() && self.retain_days > 0.0) {
            problems.push(Problem::new(at.key("retain_days"), "must be a positive number of days, e.g. 30"));
        }
        if self.max_bytes.0 < MIN_MAX_BYTES {
            problems.push(Problem::new(
                at.key("max_bytes"),
                "must be at least 16 MiB: the index retires a segment at a time, and keeps within 10 % of its cap only with ten or more",
            ));
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("index file {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("index file {} is damaged: {reason}", path.display())]
    Damaged { path: PathBuf, reason: String },
    #[error("the query has {query} dimensions but the index holds {index}-dimensional vectors")]
    Dimension { query: usize, index: usize },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> IndexError + '_ {
    move |source| IndexError::Io { path: path.to_owned(), source }
}

/// Camera and label names, numbered in the rows.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Names {
    cameras: Vec<String>,
    labels: Vec<String>,
}

impl Names {
    fn number(list: &mut Vec<String>, name: &str) -> (u32, bool) {
        match list.iter().position(|n| n == name) {
            Some(i) => (i as u32, false),
            None => {
                list.push(name.to_owned());
                (list.len() as u32 - 1, true)
            }
        }
    }
}

/// What a search looks for.
#[derive(Clone, Debug, Default)]
pub struct Query {
    /// L2-normalised query vector.
    pub vector: Vec<f32>,
    pub top_k: usize,
    /// Only these cameras / labels (empty: all).
    pub cameras: Vec<String>,
    pub labels: Vec<String>,
    /// Capture time bounds, unix ms, inclusive.
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
}

impl Query {
    /// Whether a record passes the query's filters (cameras, labels, time bounds), as a
    /// search's rows do.
    pub fn admits(&self, m: &Metadata) -> bool {
        (self.since_ms.unwrap_or(i64::MIN)..=self.until_ms.unwrap_or(i64::MAX)).contains(&m.ts)
            && (self.cameras.is_empty() || self.cameras.contains(&m.camera))
            && (self.labels.is_empty() || self.labels.contains(&m.label))
    }
}

/// One match.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Hit {
    pub id: String,
    pub score: f32,
    pub metadata: Metadata,
}

/// One record as the index holds it (`glimpse index export`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StoredRecord {
    /// Its outbox sequence number; `None` for rows written before they were kept.
    pub seq: Option<u64>,
    pub id: String,
    pub values: Vec<f32>,
    pub metadata: Metadata,
}

/// How far the keeper's index is durable, for searches in the same process. Rows after it may
/// still be rolled back, and their files cut (a failed batch), so a search that mapped them
/// could fault: a search opened with it counts none of them.
#[derive(Clone, Debug)]
pub struct DurableMark(Arc<AtomicU64>);

/// [`DurableMark`] before the keeper opened the index: nothing is readable yet.
const UNPUBLISHED: u64 = u64::MAX;

impl Default for DurableMark {
    fn default() -> Self {
        Self(Arc::new(AtomicU64::new(UNPUBLISHED)))
    }
}

impl DurableMark {
    fn publish(&self, mark: Option<u64>) {
        self.0.store(mark.map_or(0, |m| m + 1), Ordering::Release);
    }

    /// Rows with a sequence number below this are durable; `None` before the keeper opened.
    pub fn bound(&self) -> Option<u64> {
        Some(self.0.load(Ordering::Acquire)).filter(|&b| b != UNPUBLISHED)
    }
}

/// What a reopen already knows of a segment.
enum Known {
    /// Wholly durable and followed by another: taken as it was.
    Whole(Segment),
    /// The newest: its first rows as counted before.
    Prefix(segment::Extent),
}

/// The index, open for appending (the keeper) or searching (`glimpse search`).
pub struct Index {
    dir: PathBuf,
    config: SearchConfig,
    names: Names,
    segments: BTreeMap<u64, Segment>,
    dimension: Option<usize>,
    /// See [`Index::mark`].
    mark: Option<u64>,
    /// The keeper's: where its mark is published to searches in the process.
    published: Option<DurableMark>,
    /// Opened to search in the keeper's process: the durable bound its rows were kept below.
    bound: Option<u64>,
}

impl Index {
    /// The directory the index lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Opens the index for the keeper, which appends to it: what a power cut left incomplete at
    /// the end of a segment is reported (and cut at the next append).
    pub fn open(data_dir: &Path, config: &SearchConfig) -> Result<Self, IndexError> {
        Self::open_with(data_dir, config, true, &|_| None)
    }

    /// Opens the index to search it while the keeper may be appending: a row being written is
    /// not counted, and not reported as damage. In the keeper's process, `durable` (its
    /// published mark) leaves out rows a failed batch may still cut.
    pub fn open_to_search(data_dir: &Path, config: &SearchConfig, durable: Option<&DurableMark>) -> Result<Self, IndexError> {
        Self::search_with(data_dir, config, durable, &|_| None)
    }

    /// [`Index::open_to_search`] again, after the keeper moved on: each segment that was already
    /// followed by another and wholly durable when `self` was opened is taken as it was (only the
    /// newest segment grows), so that only newer rows are read (opening reads every row's time).
    /// Segments retention removed meanwhile are gone.
    pub fn reopen_to_search(&self, durable: &DurableMark) -> Result<Self, IndexError> {
        let newest = self.segments.keys().next_back().copied();
        let reuse = |number: u64| {
            let old = self.segments.get(&number)?;
            if Some(number) == newest {
                // It grew: only its new rows are read (`self` counted the first ones, durable).
                return self.bound.is_some().then(|| Known::Prefix(old.extent()));
            }
            let durable = self.bound.is_some_and(|bound| old.last_seq().is_some_and(|seq| seq < bound));
            durable.then(|| Known::Whole(old.copy_to_search()))
        };
        let data_dir = self.dir.parent().unwrap_or(&self.dir);
        Self::search_with(data_dir, &self.config, Some(durable), &reuse)
    }

    fn search_with(
        data_dir: &Path,
        config: &SearchConfig,
        durable: Option<&DurableMark>,
        reuse: &dyn Fn(u64) -> Option<Known>,
    ) -> Result<Self, IndexError> {
        let mut index = Self::open_with(data_dir, config, false, reuse)?;
        if let Some(durable) = durable {
            let bound = durable.bound().unwrap_or(0);
            for segment in index.segments.values_mut().rev() {
                if !segment.keep_rows_before(bound) {
                    break; // older segments are wholly before the bound
                }
            }
            index.mark = index.stored_mark();
            index.bound = Some(bound);
        }
        Ok(index)
    }

    /// From now on, publishes the mark to `durable` whenever it moves (the keeper's index).
    pub fn publish_mark_to(&mut self, durable: DurableMark) {
        durable.publish(self.mark);
        self.published = Some(durable);
    }

    /// The index in `data_dir`, each segment read from its files unless `reuse` knows it.
    fn open_with(
        data_dir: &Path,
        config: &SearchConfig,
        report_cut: bool,
        reuse: &dyn Fn(u64) -> Option<Known>,
    ) -> Result<Self, IndexError> {
        let dir = data_dir.join("index");
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let names_path = dir.join("names.json");
        let names = match std::fs::read(&names_path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|e| IndexError::Damaged { path: names_path.clone(), reason: e.to_string() })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Names::default(),
            Err(e) => return Err(io(&names_path)(e)),
        };
        let mut segments = BTreeMap::new();
        for entry in std::fs::read_dir(&dir).map_err(io(&dir))?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(number) = name.strip_suffix(".vec").and_then(|n| n.parse::<u64>().ok()) {
                let segment = match reuse(number) {
                    Some(Known::Whole(segment)) => segment,
                    Some(Known::Prefix(extent)) => Segment::open_after(&dir, number, Some(extent))?,
                    None => Segment::open(&dir, number)?,
                };
                if report_cut && segment.cut() > 0 {
                    tracing::warn!(
                        event = "index_tail_cut",
                        segment = number,
                        bytes = segment.cut(),
                        rows = segment.len(),
                        "the index's last rows were incomplete (a power cut); they are cut off and added again from the outbox"
                    );
                }
                segments.insert(number, segment);
            }
        }
        let dimension = segments.values().find_map(Segment::dimension);
        let mut index = Self { dir, config: config.clone(), names, segments, dimension, mark: None, published: None, bound: None };
        index.mark = index.stored_mark();
        Ok(index)
    }

    /// The mark as the files say: the newest row's sequence number, else (rows written before
    /// rows carried it) the `indexed-seq` file of that time.
    fn stored_mark(&self) -> Option<u64> {
        let newest = self.segments.values().rev().find(|s| s.len() > 0)?;
        newest.last_seq().or_else(|| std::fs::read_to_string(self.dir.join("indexed-seq")).ok().and_then(|s| s.trim().parse().ok()))
    }

    /// The embeddings' dimension, once the index holds a record.
    pub fn dimension(&self) -> Option<usize> {
        self.dimension
    }

    /// Records in the index.
    pub fn len(&self) -> u64 {
        self.segments.values().map(Segment::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes on disk.
    pub fn bytes(&self) -> u64 {
        self.segments.values().map(Segment::bytes).sum()
    }

    /// The outbox sequence number of the last record the index holds: every accepted record
    /// up to it is in the index. `None` before the first (sled's first is 0).
    pub fn mark(&self) -> Option<u64> {
        self.mark
    }

    /// Appends the records after the mark, each with its outbox sequence number (ascending),
    /// syncs them, and moves the mark past them. Records at or before the mark are skipped.
    pub fn add<'r>(&mut self, records: impl IntoIterator<Item = (u64, &'r Record)>) -> Result<(), IndexError> {
        let records: Vec<(u64, &Record)> = records.into_iter().filter(|(seq, _)| self.mark.is_none_or(|mark| *seq > mark)).collect();
        let Some(&(last_seq, _)) = records.last() else { return Ok(()) };
        let mut numbered = Vec::with_capacity(records.len());
        let mut names_changed = false;
        for (_, record) in &records {
            let (camera, new_camera) = Names::number(&mut self.names.cameras, &record.metadata.camera);
            let (label, new_label) = Names::number(&mut self.names.labels, &record.metadata.label);
            names_changed |= new_camera || new_label;
            numbered.push((camera, label));
        }
        if names_changed {
            self.save_names()?;
        }
        let dimension = self.dimension.unwrap_or(records[0].1.values.len());
        if let Some((_, odd)) = records.iter().find(|(_, r)| r.values.len() != dimension) {
            return Err(IndexError::Dimension { query: odd.values.len(), index: dimension });
        }
        // All or nothing: rows written before a failure would be written again by the retry.
        let before = self.checkpoint();
        if let Err(e) = self.append_all(&records, numbered, dimension) {
            self.roll_back(before);
            return Err(e);
        }
        self.dimension = Some(dimension);
        self.mark = Some(last_seq);
        if let Some(durable) = &self.published {
            durable.publish(self.mark);
        }
        self.enforce_retention();
        Ok(())
    }

    fn append_all(&mut self, records: &[(u64, &Record)], numbered: Vec<(u32, u32)>, dimension: usize) -> Result<(), IndexError> {
        for ((seq, record), (camera, label)) in records.iter().zip(numbered) {
            self.writable_segment(dimension)?.append(*seq, record, camera, label)?;
        }
        self.segments.values_mut().try_for_each(Segment::sync)
    }

    /// The segments that exist and the newest one's extent, before a batch.
    fn checkpoint(&self) -> (Vec<u64>, Option<(u64, segment::Extent)>) {
        let numbers: Vec<u64> = self.segments.keys().copied().collect();
        let newest = self.segments.iter().next_back().map(|(n, s)| (*n, s.extent()));
        (numbers, newest)
    }

    /// Back to a checkpoint: segments made since are deleted, the newest is cut back to its
    /// rows of then (at its next append).
    fn roll_back(&mut self, (numbers, newest): (Vec<u64>, Option<(u64, segment::Extent)>)) {
        let made: Vec<u64> = self.segments.keys().filter(|n| !numbers.contains(n)).copied().collect();
        for number in made {
            if let Some(segment) = self.segments.remove(&number) {
                segment.delete();
            }
        }
        if let Some((number, extent)) = newest {
            if let Some(segment) = self.segments.get_mut(&number) {
                segment.roll_back(extent);
            }
        }
    }

    /// Rows per new segment: at most a tenth of `max_bytes` (so that retention, a segment at a
    /// time, keeps the index within about 10 % of its cap), between 256 and [`SEGMENT_RECORDS`].
    pub fn segment_rows(&self, dimension: usize) -> u64 {
        let row_bytes = segment::HEAD as u64 + 5 * dimension as u64 + META_BYTES;
        (self.config.max_bytes.0 / SEGMENTS_PER_CAP / row_bytes).clamp(MIN_SEGMENT_RECORDS, SEGMENT_RECORDS)
    }

    fn writable_segment(&mut self, dimension: usize) -> Result<&mut Segment, IndexError> {
        let last = self.segments.keys().next_back().copied();
        let rows = self.segment_rows(dimension);
        let number = match last {
            Some(n) if self.segments[&n].len() < rows => n,
            Some(n) => n + 1,
            None => 0,
        };
        if !self.segments.contains_key(&number) {
            self.segments.insert(number, Segment::create(&self.dir, number, dimension)?);
        }
        Ok(self.segments.get_mut(&number).expect("just made"))
    }

    /// Writes the names durably (temporary file, sync, rename, directory sync): rows that number
    /// a name must never outlive it.
    fn save_names(&self) -> Result<(), IndexError> {
        use std::io::Write as _;
        let path = self.dir.join("names.json");
        let temporary = path.with_extension("json.part");
        let bytes = serde_json::to_vec(&self.names).expect("names serialise");
        let write = || -> std::io::Result<()> {
            let mut file = std::fs::File::create(&temporary)?;
            file.write_all(&bytes)?;
            file.sync_data()?;
            std::fs::rename(&temporary, &path)?;
            std::fs::File::open(&self.dir)?.sync_all()
        };
        write().map_err(io(&path))
    }

    /// Capture times before this (unix ms) are past `retain_days`: never shown, and their
    /// segment goes once every row in it is.
    fn retention_cutoff(&self) -> i64 {
        crate::clock::unix_ms() - (self.config.retain_days * 86_400_000.0) as i64
    }

    /// Drops whole segments, oldest first, past `retain_days` or `max_bytes` (never the one
    /// being written). The keeper calls it after each batch and on a timer.
    pub fn enforce_retention(&mut self) {
        let cutoff = self.retention_cutoff();
        while self.segments.len() > 1 {
            let (&oldest, segment) = self.segments.iter().next().expect("segments");
            let expired = segment.newest_ts().is_some_and(|ts| ts < cutoff);
            if !expired && self.bytes() <= self.config.max_bytes.0 {
                break;
            }
            if let Some(segment) = self.segments.remove(&oldest) {
                tracing::info!(segment = oldest, records = segment.len(), "index segment retired");
                segment.delete();
            }
        }
    }

    /// Every record within retention, oldest first (a record indexed twice, once each).
    pub fn records(&self) -> impl Iterator<Item = Result<StoredRecord, IndexError>> + '_ {
        let cutoff = self.retention_cutoff();
        let rows = self.segments.values().flat_map(|segment| (0..segment.len()).map(move |row| segment.stored(row)));
        rows.filter(move |stored| stored.as_ref().map_or(true, |s| s.metadata.ts >= cutoff))
    }

    /// The `top_k` records most similar to the query, best first (cosine similarity).
    pub fn search(&self, query: &Query) -> Result<Vec<Hit>, IndexError> {
        let Some(dimension) = self.dimension else { return Ok(Vec::new()) };
        if query.vector.len() != dimension {
            return Err(IndexError::Dimension { query: query.vector.len(), index: dimension });
        }
        // Rows past retention wait for their segment to go; search never shows them.
        let filter = segment::RowFilter::new(query, &self.names.cameras, &self.names.labels, self.retention_cutoff());
        let wanted = (query.top_k * 10).max(200);
        let quantized = segment::quantize(&query.vector);
        let segments: Vec<&Segment> = self.segments.values().collect();
        let halves = segments.split_at(segments.len() / 2);
        let (a, b) = std::thread::scope(|s| {
            let other = s.spawn(|| segment::candidates(halves.1, &quantized, &filter, wanted));
            (segment::candidates(halves.0, &quantized, &filter, wanted), other.join().unwrap_or_default())
        });
        let mut exact: Vec<(f32, &Segment, u64)> =
            a.into_iter().chain(b).map(|(_, seg, row)| (seg.exact_score(row, &query.vector), seg, row)).collect();
        exact.sort_by(|x, y| y.0.total_cmp(&x.0));
        let mut hits: Vec<Hit> = Vec::with_capacity(query.top_k);
        for (score, seg, row) in exact {
            if hits.len() == query.top_k {
                break;
            }
            let (id, metadata) = seg.metadata(row)?;
            // A record indexed twice (re-added after a crash) is one result.
            if !hits.iter().any(|h| h.id == id) {
                hits.push(Hit { id, score, metadata });
            }
        }
        Ok(hits)
    }

    /// The reference for the tests and the benchmark: every exact vector scored, no shortcut
    /// (ignores filters). Row identities as (segment number, row), best first.
    pub fn exact_top(&self, vector: &[f32], top_k: usize) -> Vec<(f32, u64, u64)> {
        let mut scored = Vec::new();
        for (&number, segment) in &self.segments {
            scored.extend(segment.exact_scores(vector).into_iter().enumerate().map(|(row, score)| (score, number, row as u64)));
        }
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        scored.truncate(top_k);
        scored
    }

    /// The id of a row, for comparing with [`Index::exact_top`].
    pub fn id_of(&self, segment: u64, row: u64) -> Result<String, IndexError> {
        let segment =
            self.segments.get(&segment).ok_or_else(|| IndexError::Damaged { path: self.dir.clone(), reason: "no such segment".into() })?;
        Ok(segment.metadata(row)?.0)
    }

    /// Record `id`'s metadata, newest copy first (a record re-added after a crash has two);
    /// `None` past `retain_days`, as for search.
    pub fn metadata_of(&self, id: &str) -> Result<Option<Metadata>, IndexError> {
        for segment in self.segments.values().rev() {
            if let Some(row) = segment.find(id)? {
                let metadata = segment.metadata(row)?.1;
                return Ok(Some(metadata).filter(|m| m.ts >= self.retention_cutoff()));
            }
        }
        Ok(None)
    }

    /// The stored vector of record `id`, for `glimpse search --like`; `None` past
    /// `retain_days`, as for search.
    pub fn vector_of(&self, id: &str) -> Result<Option<Vec<f32>>, IndexError> {
        for segment in self.segments.values().rev() {
            if let Some(row) = segment.find(id)? {
                let kept = segment.metadata(row)?.1.ts >= self.retention_cutoff();
                return Ok(kept.then(|| segment.vector(row)));
            }
        }
        Ok(None)
    }
}

/// A pseudo-random unit vector (xorshift), the same for the same seed: test and benchmark data.
pub fn random_unit(seed: u64, dimension: usize) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v: Vec<f32> = (0..dimension)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % 2001) as f32 / 1000.0 - 1.0
        })
        .collect();
    crate::embed::l2_normalise(&mut v);
    v
}

#[cfg(test)]
mod tests;
