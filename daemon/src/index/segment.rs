//! One segment of the index: its three files, appending, and scanning (see `mod.rs`).

use std::collections::BinaryHeap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::{io, IndexError, Query};
use crate::record::{Metadata, Record};

/// Bytes of a row before its int8 vector: ts i64 (0..8), camera u32 (8..12), label u32
/// (12..16), scale f32 (16..20), dimension u32 (20..24), metadata length u32 (24..28), zero
/// (28..32), metadata offset u64 (32..40).
pub const HEAD: usize = 40;

/// A segment's complete part at one moment (see [`Segment::roll_back`]).
#[derive(Clone, Copy, Debug)]
pub struct Extent {
    rows: u64,
    meta_end: u64,
    newest_ts: Option<i64>,
}

pub struct Segment {
    paths: [PathBuf; 3],
    dimension: Option<usize>,
    /// Complete rows (a torn tail is not counted).
    rows: u64,
    /// Where the metadata file's complete part ends.
    meta_end: u64,
    newest_ts: Option<i64>,
    /// Open for appending, once the first append came.
    appending: Option<[File; 3]>,
    /// Bytes of the vector file that were not whole rows at open.
    cut: u64,
    /// The first rows, as an earlier copy counted them: their newest time is not read again.
    known: Option<Extent>,
}

impl Segment {
    fn paths(dir: &Path, number: u64) -> [PathBuf; 3] {
        ["vec", "f32", "meta"].map(|ext| dir.join(format!("{number:06}.{ext}")))
    }

    pub fn create(dir: &Path, number: u64, dimension: usize) -> Result<Self, IndexError> {
        let paths = Self::paths(dir, number);
        let segment =
            Self { paths, dimension: Some(dimension), rows: 0, meta_end: 0, newest_ts: None, appending: None, cut: 0, known: None };
        // The .vec file last: a segment exists (is found at open) only once all three do; and
        // their directory entries are durable before any row the index's mark may pass.
        for path in segment.paths.iter().rev() {
            File::create(path).map_err(io(path))?;
        }
        File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))?;
        Ok(segment)
    }

    /// Opens a segment and counts its complete rows; changes nothing on disk (the writer cuts
    /// what was not counted at its first append). What a power cut left incomplete, torn or
    /// zero-filled at the end (or a zero-filled first row) is not counted, and reported in
    /// [`Segment::cut`]: those rows were never synced, so the outbox still holds them.
    pub fn open(dir: &Path, number: u64) -> Result<Self, IndexError> {
        Self::open_after(dir, number, None)
    }

    /// [`Segment::open`] for a segment whose first rows `known` counted (an earlier copy of it,
    /// opened to search): only the rows past them are read for their times. Rows below the
    /// durable mark are never cut, so a segment at least as long still begins with them.
    pub fn open_after(dir: &Path, number: u64, known: Option<Extent>) -> Result<Self, IndexError> {
        let paths = Self::paths(dir, number);
        let len = |p: &PathBuf| std::fs::metadata(p).map(|m| m.len()).map_err(io(p));
        let (vec_len, f32_len, meta_len) = (len(&paths[0])?, len(&paths[1])?, len(&paths[2])?);
        let mut segment = Self { paths, dimension: None, rows: 0, meta_end: 0, newest_ts: None, appending: None, cut: 0, known: None };
        if vec_len == 0 {
            return Ok(segment);
        }
        let vec_map = segment.map(0)?;
        // An empty file cannot be mapped: no row's metadata is there.
        let meta_map = if meta_len == 0 { None } else { Some(segment.map(2)?) };
        let meta_map: &[u8] = meta_map.as_deref().unwrap_or_default();
        let dimension = if vec_map.len() < HEAD { 0 } else { u32::from_le_bytes(vec_map[20..24].try_into().expect("4 bytes")) as usize };
        if dimension == 0 {
            // Not even the first row is whole: nothing here was ever synced.
            segment.cut = vec_len;
            return Ok(segment);
        }
        let row = (HEAD + dimension) as u64;
        let mut rows = (vec_len / row).min(f32_len / (4 * dimension as u64));
        while rows > 0 && !row_is_complete(&vec_map, meta_map, rows - 1, dimension) {
            rows -= 1; // a torn or zero-filled tail
        }
        segment.cut = vec_len - rows * row;
        segment.dimension = Some(dimension);
        segment.rows = rows;
        segment.meta_end =
            if rows == 0 { 0 } else { meta_span(&vec_map, rows - 1, dimension).0 + meta_span(&vec_map, rows - 1, dimension).1 };
        segment.known = known.filter(|k| k.rows <= rows);
        segment.newest_ts = segment.newest_ts_until(&vec_map, rows);
        Ok(segment)
    }

    /// Counts only the rows whose sequence number is below `bound` (rows are in sequence order;
    /// rows written before sequence numbers were kept all count). Whether any row went.
    pub fn keep_rows_before(&mut self, bound: u64) -> bool {
        let Some(dimension) = self.dimension else { return false };
        let (Ok(vec_map), Ok(meta_map)) = (self.map(0), self.map(2)) else { return false };
        let seq = |row: u64| stored_meta(&vec_map, &meta_map, row, dimension).and_then(|s| s.seq);
        // The first row at or past the bound, by bisection.
        let (mut low, mut high) = (0, self.rows);
        while low < high {
            let middle = (low + high) / 2;
            match seq(middle) {
                Some(s) if s >= bound => high = middle,
                _ => low = middle + 1,
            }
        }
        if low == self.rows {
            return false;
        }
        self.rows = low;
        self.meta_end = if low == 0 { 0 } else { meta_span(&vec_map, low - 1, dimension).0 + meta_span(&vec_map, low - 1, dimension).1 };
        self.newest_ts = self.newest_ts_until(&vec_map, low);
        true
    }

    /// The newest time of rows `0..rows`, reading only those past the known first rows.
    fn newest_ts_until(&self, vec_map: &[u8], rows: u64) -> Option<i64> {
        let dimension = self.dimension?;
        let (from, before) = match self.known {
            Some(known) if known.rows <= rows => (known.rows, known.newest_ts),
            _ => (0, None),
        };
        (from..rows).map(|r| row_ts(vec_map, r, dimension)).max().max(before)
    }

    /// How far the segment's complete part goes.
    pub fn extent(&self) -> Extent {
        Extent { rows: self.rows, meta_end: self.meta_end, newest_ts: self.newest_ts }
    }

    /// Forgets the rows after `extent`; the next append cuts the files back to it.
    pub fn roll_back(&mut self, extent: Extent) {
        (self.rows, self.meta_end, self.newest_ts) = (extent.rows, extent.meta_end, extent.newest_ts);
        self.appending = None;
    }

    /// Bytes of the vector file past the complete rows, found at open (a power cut's damage).
    pub fn cut(&self) -> u64 {
        self.cut
    }

    /// The outbox sequence number of the last row (rows are added in sequence order); `None`
    /// for an empty segment or rows written before sequence numbers were kept.
    /// The segment as it stands, to search (never to append to).
    pub fn copy_to_search(&self) -> Self {
        let Self { paths, dimension, rows, meta_end, newest_ts, appending: _, cut, known } = self;
        Self {
            paths: paths.clone(),
            dimension: *dimension,
            rows: *rows,
            meta_end: *meta_end,
            newest_ts: *newest_ts,
            appending: None,
            cut: *cut,
            known: *known,
        }
    }

    pub fn last_seq(&self) -> Option<u64> {
        let last = self.rows.checked_sub(1)?;
        let (vec_map, meta_map) = (self.map(0).ok()?, self.map(2).ok()?);
        stored_meta(&vec_map, &meta_map, last, self.dimension?)?.seq
    }

    fn damaged(&self, reason: &str) -> IndexError {
        IndexError::Damaged { path: self.paths[0].clone(), reason: reason.into() }
    }

    fn map(&self, file: usize) -> Result<Mmap, IndexError> {
        let path = &self.paths[file];
        let handle = File::open(path).map_err(io(path))?;
        // SAFETY: the files are only ever appended to (by one writer), and only the complete
        // rows counted at open are read, so the mapped bytes never change under us.
        unsafe { Mmap::map(&handle) }.map_err(io(path))
    }

    pub fn len(&self) -> u64 {
        self.rows
    }

    pub fn dimension(&self) -> Option<usize> {
        self.dimension.filter(|_| self.rows > 0)
    }

    pub fn newest_ts(&self) -> Option<i64> {
        self.newest_ts
    }

    pub fn bytes(&self) -> u64 {
        self.paths.iter().filter_map(|p| std::fs::metadata(p).ok()).map(|m| m.len()).sum()
    }

    /// Appends one row to the three files (synced by [`Segment::sync`]); `seq` is the record's
    /// outbox sequence number.
    pub fn append(&mut self, seq: u64, record: &Record, camera: u32, label: u32) -> Result<(), IndexError> {
        let dimension = *self.dimension.get_or_insert(record.values.len());
        self.files()?;
        // "id" first (`find` looks for it there): serde_json's map keeps keys sorted.
        let meta = serde_json::json!({ "id": record.id, "metadata": record.metadata, "seq": seq });
        let meta = serde_json::to_vec(&meta).expect("metadata serialises");
        let (quantized, scale) = quantize_with_scale(&record.values);
        let mut row = Vec::with_capacity(HEAD + dimension);
        row.extend_from_slice(&record.metadata.ts.to_le_bytes());
        row.extend_from_slice(&camera.to_le_bytes());
        row.extend_from_slice(&label.to_le_bytes());
        row.extend_from_slice(&scale.to_le_bytes());
        row.extend_from_slice(&(dimension as u32).to_le_bytes());
        row.extend_from_slice(&(meta.len() as u32).to_le_bytes());
        row.extend_from_slice(&[0; 4]);
        row.extend_from_slice(&self.meta_end.to_le_bytes());
        row.extend(quantized.iter().map(|q| *q as u8));
        let exact: Vec<u8> = record.values.iter().flat_map(|v| v.to_le_bytes()).collect();
        // Metadata first, the row last: a row is counted only once everything it points to exists.
        let ([vec_file, f32_file, meta_file], paths) = (self.appending.as_mut().expect("opened above"), &self.paths);
        let written = meta_file
            .write_all(&meta)
            .map_err(io(&paths[2]))
            .and_then(|()| f32_file.write_all(&exact).map_err(io(&paths[1])))
            .and_then(|()| vec_file.write_all(&row).map_err(io(&paths[0])));
        if let Err(e) = written {
            // Part of the row may be on disk: the next append reopens the files and cuts them
            // back to the last complete row, so rows and their data stay aligned.
            self.appending = None;
            return Err(e);
        }
        self.meta_end += meta.len() as u64;
        self.rows += 1;
        self.newest_ts = self.newest_ts.max(Some(record.metadata.ts));
        Ok(())
    }

    /// The files, opened for appending at the end of their complete part (a torn tail is cut).
    fn files(&mut self) -> Result<(), IndexError> {
        if self.appending.is_none() {
            let dimension = self.dimension.unwrap_or_default() as u64;
            let ends = [self.rows * (HEAD as u64 + dimension), self.rows * 4 * dimension, self.meta_end];
            let mut files = Vec::with_capacity(3);
            for (path, end) in self.paths.iter().zip(ends) {
                let file = OpenOptions::new().append(true).open(path).map_err(io(path))?;
                file.set_len(end).map_err(io(path))?;
                files.push(file);
            }
            self.appending = Some(files.try_into().map_err(|_| self.damaged("cannot open its files"))?);
        }
        Ok(())
    }

    pub fn sync(&mut self) -> Result<(), IndexError> {
        if let Some(files) = &self.appending {
            for (file, path) in files.iter().zip(&self.paths) {
                file.sync_data().map_err(io(path))?;
            }
        }
        Ok(())
    }

    pub fn delete(self) {
        for path in &self.paths {
            let _ = std::fs::remove_file(path);
        }
    }

    /// The exact cosine similarity of row `row` to `query`.
    pub fn exact_score(&self, row: u64, query: &[f32]) -> f32 {
        self.vector(row).iter().zip(query).map(|(a, b)| a * b).sum()
    }

    /// Every row's exact dot product with `query`, in row order.
    pub fn exact_scores(&self, query: &[f32]) -> Vec<f32> {
        let dimension = self.dimension.unwrap_or_default();
        let Ok(map) = self.map(1) else { return Vec::new() };
        map.chunks_exact(4 * dimension.max(1))
            .take(self.rows as usize)
            .map(|v| v.chunks_exact(4).zip(query).map(|(b, q)| f32::from_le_bytes(b.try_into().expect("4 bytes")) * q).sum())
            .collect()
    }

    pub fn vector(&self, row: u64) -> Vec<f32> {
        let dimension = self.dimension.unwrap_or_default();
        let Ok(map) = self.map(1) else { return vec![0.0; dimension] };
        let start = row as usize * 4 * dimension;
        map[start..start + 4 * dimension].chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes"))).collect()
    }

    pub fn metadata(&self, row: u64) -> Result<(String, Metadata), IndexError> {
        let (vec_map, meta_map) = (self.map(0)?, self.map(2)?);
        let bytes = meta_bytes(&vec_map, &meta_map, row, self.dimension.unwrap_or_default())
            .ok_or_else(|| self.damaged(&format!("row {row}'s metadata is outside the file")))?;
        let stored: Stored = serde_json::from_slice(bytes).map_err(|e| self.damaged(&format!("row {row}'s metadata: {e}")))?;
        Ok((stored.id, stored.metadata))
    }

    /// Row `row` whole: its sequence number (when kept), id, exact vector and metadata.
    pub fn stored(&self, row: u64) -> Result<super::StoredRecord, IndexError> {
        let (vec_map, meta_map) = (self.map(0)?, self.map(2)?);
        let stored = stored_meta(&vec_map, &meta_map, row, self.dimension.unwrap_or_default())
            .ok_or_else(|| self.damaged(&format!("row {row}'s metadata does not read")))?;
        Ok(super::StoredRecord { seq: stored.seq, id: stored.id, values: self.vector(row), metadata: stored.metadata })
    }

    /// The row of record `id`, if this segment has it.
    pub fn find(&self, id: &str) -> Result<Option<u64>, IndexError> {
        if self.rows == 0 {
            return Ok(None);
        }
        let (vec_map, meta_map) = (self.map(0)?, self.map(2)?);
        let needle = format!("{{\"id\":{}", serde_json::to_string(id).expect("a string"));
        let Some(at) = memchr::memmem::find(&meta_map[..self.meta_end as usize], needle.as_bytes()) else { return Ok(None) };
        let dimension = self.dimension.unwrap_or_default();
        Ok((0..self.rows).find(|r| meta_span(&vec_map, *r, dimension).0 == at as u64))
    }
}

/// A row's metadata as stored: `{"id", "metadata", "seq"}` (`seq` since sequence numbers are kept).
#[derive(serde::Deserialize)]
struct Stored {
    id: String,
    metadata: Metadata,
    #[serde(default)]
    seq: Option<u64>,
}

/// Whether row `row` is whole: its own dimension is the segment's and its metadata is in the
/// file and reads (a zero-filled tail has neither).
fn row_is_complete(vec_map: &[u8], meta_map: &[u8], row: u64, dimension: usize) -> bool {
    let own_dimension = u32::from_le_bytes(row_at(vec_map, row, dimension)[20..24].try_into().expect("4 bytes")) as usize;
    own_dimension == dimension && stored_meta(vec_map, meta_map, row, dimension).is_some()
}

fn stored_meta(vec_map: &[u8], meta_map: &[u8], row: u64, dimension: usize) -> Option<Stored> {
    serde_json::from_slice(meta_bytes(vec_map, meta_map, row, dimension)?).ok()
}

fn meta_bytes<'m>(vec_map: &[u8], meta_map: &'m [u8], row: u64, dimension: usize) -> Option<&'m [u8]> {
    let (offset, length) = meta_span(vec_map, row, dimension);
    let start = usize::try_from(offset).ok()?;
    meta_map.get(start..start.checked_add(usize::try_from(length).ok()?)?)
}

fn row_at(map: &[u8], row: u64, dimension: usize) -> &[u8] {
    let size = HEAD + dimension;
    &map[row as usize * size..(row as usize + 1) * size]
}

fn row_ts(map: &[u8], row: u64, dimension: usize) -> i64 {
    i64::from_le_bytes(row_at(map, row, dimension)[0..8].try_into().expect("8 bytes"))
}

/// (offset, length) of a row's metadata.
fn meta_span(map: &[u8], row: u64, dimension: usize) -> (u64, u64) {
    let r = row_at(map, row, dimension);
    let length = u32::from_le_bytes(r[24..28].try_into().expect("4 bytes")) as u64;
    (u64::from_le_bytes(r[32..40].try_into().expect("8 bytes")), length)
}

/// A vector as int8 with its scale (`value ≈ q × scale`).
fn quantize_with_scale(values: &[f32]) -> (Vec<i8>, f32) {
    let max = values.iter().fold(0f32, |m, v| m.max(v.abs()));
    let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
    (values.iter().map(|v| (v / scale).round().clamp(-127.0, 127.0) as i8).collect(), scale)
}

/// The query, quantized like the rows.
pub struct Quantized {
    values: Vec<i8>,
    scale: f32,
}

pub fn quantize(values: &[f32]) -> Quantized {
    let (values, scale) = quantize_with_scale(values);
    Quantized { values, scale }
}

/// Which rows a query may match, as row numbers of names.
pub struct RowFilter {
    cameras: Option<Vec<u32>>,
    labels: Option<Vec<u32>>,
    since: i64,
    until: i64,
}

impl RowFilter {
    /// `not_before`: the retention cutoff (unix ms), whatever the query's own bounds.
    pub fn new(query: &Query, cameras: &[String], labels: &[String], not_before: i64) -> Self {
        let numbers = |wanted: &[String], names: &[String]| {
            (!wanted.is_empty()).then(|| names.iter().enumerate().filter(|(_, n)| wanted.contains(n)).map(|(i, _)| i as u32).collect())
        };
        Self {
            cameras: numbers(&query.cameras, cameras),
            labels: numbers(&query.labels, labels),
            since: query.since_ms.unwrap_or(i64::MIN).max(not_before),
            until: query.until_ms.unwrap_or(i64::MAX),
        }
    }

    fn accepts(&self, row: &[u8]) -> bool {
        let ts = i64::from_le_bytes(row[0..8].try_into().expect("8 bytes"));
        let camera = u32::from_le_bytes(row[8..12].try_into().expect("4 bytes"));
        let label = u32::from_le_bytes(row[12..16].try_into().expect("4 bytes"));
        (self.since..=self.until).contains(&ts)
            && self.cameras.as_ref().is_none_or(|c| c.contains(&camera))
            && self.labels.as_ref().is_none_or(|l| l.contains(&label))
    }
}

/// A candidate: approximate score, its segment and row. Ordered by score, lowest first in the
/// heap's reverse, so the heap keeps the best `wanted`.
struct Candidate<'a>(f32, &'a Segment, u64);

impl PartialEq for Candidate<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}
impl Eq for Candidate<'_> {}
impl PartialOrd for Candidate<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Candidate<'_> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other.0.total_cmp(&self.0)
    }
}

/// The best `wanted` rows of `segments` by their int8 score.
pub fn candidates<'a>(segments: &[&'a Segment], query: &Quantized, filter: &RowFilter, wanted: usize) -> Vec<(f32, &'a Segment, u64)> {
    let mut heap: BinaryHeap<Candidate<'a>> = BinaryHeap::with_capacity(wanted + 1);
    for segment in segments {
        let (Some(dimension), Ok(map)) = (segment.dimension(), segment.map(0)) else { continue };
        let size = HEAD + dimension;
        for (row, bytes) in map.chunks_exact(size).take(segment.rows as usize).enumerate() {
            if !filter.accepts(bytes) {
                continue;
            }
            let scale = f32::from_le_bytes(bytes[16..20].try_into().expect("4 bytes"));
            let score = dot_i8(&query.values, &bytes[HEAD..]) as f32 * scale * query.scale;
            if heap.len() < wanted {
                heap.push(Candidate(score, segment, row as u64));
            } else if heap.peek().is_some_and(|worst| score > worst.0) {
                heap.pop();
                heap.push(Candidate(score, segment, row as u64));
            }
        }
    }
    heap.into_iter().map(|Candidate(score, segment, row)| (score, segment, row)).collect()
}

/// The integer dot product of the query with a row's int8 vector (stored as bytes).
fn dot_i8(query: &[i8], row: &[u8]) -> i32 {
    query.iter().zip(row).map(|(q, r)| i32::from(*q) * i32::from(*r as i8)).sum()
}
