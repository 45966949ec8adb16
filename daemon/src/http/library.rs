//! What the HTTP API reads of what the cameras saw: the index on the device (opened to search,
//! beside the keeper that appends to it), the crop store's files, CLIP's text tower, the event
//! history and people's labels (the only thing it writes). Every function here blocks (files, models):
//! handlers call them through `api::read`, on the API's reader threads.

use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::embed::text::TextEmbedder;
use crate::embed::{Embedder, EmbedderConfig};
use crate::history::{EventQuery, History, Track};
use crate::index::{DurableMark, Hit, Index, Query, SearchConfig};
use crate::labels::{Labels, LabelsError};
use crate::model::{Engine, FormMemory};
use crate::record::Metadata;

/// A record id as the API takes it: `{device}:{camera}:{frame_ms}:{box}`, so only the characters
/// of names and numbers. Anything else (a `/`, a `.`) is refused before it reaches a file.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordId(String);

impl RecordId {
    pub fn parse(text: &str) -> Option<Self> {
        let allowed = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b':');
        ((1..=200).contains(&text.len()) && text.bytes().all(allowed)).then(|| Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What to search by.
#[derive(Clone, Debug)]
pub enum By {
    Text(String),
    Like(RecordId),
    /// A JPEG or PNG file, as uploaded.
    Picture(Vec<u8>),
}

impl By {
    /// The record a "more like this" search starts from.
    pub fn like(&self) -> Option<&str> {
        match self {
            By::Like(id) => Some(id.as_str()),
            _ => None,
        }
    }
}

/// Whose records a search looks through.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum Scope {
    /// This device's, in the index on the device.
    #[default]
    Device,
    /// Every device's of the Pinecone namespace ([`super::fleet`]).
    Fleet,
}

/// A search, as the API's parameters gave it: what to search by, the index's query without
/// its vector (made from `by` when the search runs), people's labels to keep to (any of
/// them; none: every record), and whose records.
#[derive(Clone, Debug)]
pub struct Search {
    pub by: By,
    pub filter: Query,
    pub user_labels: Vec<String>,
    pub scope: Scope,
}

/// Why a read failed; the API maps each to its status.
#[derive(Debug, thiserror::Error)]
pub enum LibraryError {
    #[error("no record {0:?} on this device (the index keeps [search] retain_days of records)")]
    UnknownRecord(String),
    #[error("record {0:?} has no crop on this device (crops off, removed by retention, or only in the bucket)")]
    NoCrop(String),
    #[error("record {0:?} has no snapshot on this device (snapshots off, removed by retention, or only in the bucket)")]
    NoSnapshot(String),
    #[error("text search needs CLIP's text tower: set embedder.text_model and embedder.tokenizer")]
    NoTextTower,
    #[error("the text tower cannot run: {0}")]
    Text(String),
    #[error("the body is not a picture Glimpse can read (JPEG or PNG, at most {MAX_PICTURE_PX} pixels a side): {0}")]
    Picture(String),
    #[error("the image tower cannot run: {0}")]
    Image(String),
    #[error("the index on the device cannot be read: {0}")]
    Index(#[from] crate::index::IndexError),
    #[error("{0}")]
    Labels(#[from] LabelsError),
}

/// CLIP's towers for the API's own use, apart from the inference thread's: each loaded at the
/// first search that needs it (by words, by picture) and kept.
struct Towers {
    config: EmbedderConfig,
    engine: Engine,
    /// Which form of the image tower is fastest here, as inference measured it.
    forms: FormMemory,
    text: Mutex<Option<TextEmbedder>>,
    image: Mutex<Option<Embedder>>,
}

/// The longest side of a picture to search by.
pub const MAX_PICTURE_PX: u32 = 8192;
/// What decoding one picture may allocate: a 40-megapixel photo, not a crafted 8192 × 8192.
const MAX_PICTURE_BYTES: u64 = 128 << 20;

/// A JPEG or PNG's pixels, within [`MAX_PICTURE_PX`] and [`MAX_PICTURE_BYTES`].
fn decode_picture(bytes: &[u8]) -> Result<image::DynamicImage, LibraryError> {
    let reader = image::ImageReader::new(std::io::Cursor::new(bytes)).with_guessed_format();
    let mut reader = reader.map_err(|e| LibraryError::Picture(e.to_string()))?;
    let mut limits = image::Limits::default();
    (limits.max_image_width, limits.max_image_height, limits.max_alloc) =
        (Some(MAX_PICTURE_PX), Some(MAX_PICTURE_PX), Some(MAX_PICTURE_BYTES));
    reader.limits(limits);
    reader.decode().map_err(|e| LibraryError::Picture(e.to_string()))
}

/// Whether `bytes` start as a JPEG or PNG of at most [`MAX_PICTURE_PX`] a side (its header only).
pub fn looks_like_picture(bytes: &[u8]) -> Result<(), LibraryError> {
    let reader = image::ImageReader::new(std::io::Cursor::new(bytes)).with_guessed_format();
    let (w, h) =
        reader.and_then(|r| r.into_dimensions().map_err(std::io::Error::other)).map_err(|e| LibraryError::Picture(e.to_string()))?;
    match w.max(h) <= MAX_PICTURE_PX {
        true => Ok(()),
        false => Err(LibraryError::Picture(format!("{w} × {h} pixels"))),
    }
}

/// How long the index open to search is kept at most, new rows or not.
const REOPEN_AFTER: Duration = Duration::from_secs(10);

/// The index as it was opened to search, at the keeper's durable mark `bound`.
struct OpenIndex {
    index: Arc<Index>,
    bound: Option<u64>,
    opened: Instant,
}

pub struct Library {
    data_dir: PathBuf,
    /// The index open to search, kept between requests ([`Library::with_index`]).
    index: Mutex<Option<OpenIndex>>,
    /// The keeper's durable mark: rows after it are not read (a failed batch may cut them).
    durable: DurableMark,
    search: SearchConfig,
    crops: PathBuf,
    towers: Towers,
    labels: Arc<Labels>,
    history: Arc<History>,
}

impl Library {
    pub fn new(
        data_dir: PathBuf,
        durable: DurableMark,
        search: SearchConfig,
        crops: PathBuf,
        towers: (EmbedderConfig, Engine, FormMemory),
        labels: Arc<Labels>,
        history: Arc<History>,
    ) -> Self {
        let (config, engine, forms) = towers;
        let towers = Towers { config, engine, forms, text: Mutex::new(None), image: Mutex::new(None) };
        Self { data_dir, index: Mutex::new(None), durable, search, crops, towers, labels, history }
    }

    /// The newest tracked objects `query` admits, from the event history on the device.
    pub fn events(&self, query: &EventQuery) -> Vec<Track> {
        self.history.newest(query)
    }

    /// `work` on the index opened to search. Opening reads every row's time (tens of ms at 100k
    /// records), so the index stays open while the keeper's durable mark stays where it was (no
    /// new rows, no retention) and at most [`REOPEN_AFTER`], and is then reopened reading only
    /// the segments that changed; one that fails (a segment retention removed meanwhile) is
    /// opened afresh and `work` tried once more.
    fn with_index<T>(&self, work: impl Fn(&Index) -> Result<T, LibraryError>) -> Result<T, LibraryError> {
        let (index, fresh) = self.open_index()?;
        match work(&index) {
            Err(LibraryError::Index(e)) if !fresh => {
                tracing::debug!(error = %e, "the index open to search was out of date: opened again");
                *self.lock_index() = None;
                work(&self.open_index()?.0)
            }
            other => other,
        }
    }

    /// The index open to search, and whether it was opened just now.
    fn open_index(&self) -> Result<(Arc<Index>, bool), LibraryError> {
        let bound = self.durable.bound();
        let mut open = self.lock_index();
        let index = match open.as_ref() {
            Some(kept) if kept.bound == bound && kept.opened.elapsed() < REOPEN_AFTER => return Ok((kept.index.clone(), false)),
            // Only the segments that changed are read again.
            Some(kept) => kept.index.reopen_to_search(&self.durable)?,
            None => Index::open_to_search(&self.data_dir, &self.search, Some(&self.durable))?,
        };
        let index = Arc::new(index);
        *open = Some(OpenIndex { index: index.clone(), bound, opened: Instant::now() });
        Ok((index, true))
    }

    fn lock_index(&self) -> std::sync::MutexGuard<'_, Option<OpenIndex>> {
        // A poisoned lock only means a search panicked: the index it holds is whole.
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The best matches, best first, with the same filters and semantics as `glimpse search`.
    pub fn search(&self, search: &Search) -> Result<Vec<Hit>, LibraryError> {
        let vector = self.vector_for(&search.by)?;
        let vector = vector.ok_or_else(|| LibraryError::UnknownRecord(search.by.like().unwrap_or_default().to_owned()))?;
        let query = Query { vector, ..search.filter.clone() };
        let mut hits = self.with_index(|index| match search.user_labels.is_empty() {
            true => Ok(index.search(&query)?),
            false => self.search_named(index, &query, &search.user_labels),
        })?;
        for hit in &mut hits {
            hit.metadata.user_label = self.labels.get(&hit.id)?;
        }
        Ok(hits)
    }

    /// The vector to search near: of the words, of the picture, or of the record as the index
    /// on the device has it (`None`: a record this device does not have).
    pub fn vector_for(&self, by: &By) -> Result<Option<Vec<f32>>, LibraryError> {
        match by {
            By::Like(id) => self.with_index(|index| Ok(index.vector_of(id.as_str())?)),
            By::Text(text) => self.embed_text(text).map(Some),
            By::Picture(bytes) => self.embed_picture(bytes).map(Some),
        }
    }

    /// The best of the records people named one of `names`: few, so each is scored exactly.
    fn search_named(&self, index: &Index, query: &Query, names: &[String]) -> Result<Vec<Hit>, LibraryError> {
        let mut hits = Vec::new();
        for name in names {
            for id in self.labels.named(name)? {
                let (Some(metadata), Some(vector)) = (index.metadata_of(&id)?, index.vector_of(&id)?) else { continue };
                if query.admits(&metadata) && !hits.iter().any(|h: &Hit| h.id == id) {
                    let score = vector.iter().zip(&query.vector).map(|(a, b)| a * b).sum();
                    hits.push(Hit { id, score, metadata });
                }
            }
        }
        hits.sort_by(|a, b| b.score.total_cmp(&a.score));
        hits.truncate(query.top_k);
        Ok(hits)
    }

    /// Names record `id` (a label [`crate::labels::check`] passed; empty takes the name
    /// away), and returns its metadata with the name.
    pub fn set_label(&self, id: &RecordId, label: &str) -> Result<Metadata, LibraryError> {
        let mut metadata = self.record(id)?;
        self.labels.set(id.as_str(), label)?;
        metadata.user_label = Some(label.to_owned()).filter(|l| !l.is_empty());
        Ok(metadata)
    }

    fn embed_text(&self, text: &str) -> Result<Vec<f32>, LibraryError> {
        // A poisoned lock only means an earlier search panicked: the tower itself is whole.
        let mut loaded = self.towers.text.lock().unwrap_or_else(|p| p.into_inner());
        if loaded.is_none() {
            let tower = self.towers.config.load_text(&self.towers.engine).ok_or(LibraryError::NoTextTower)?;
            *loaded = Some(tower.map_err(|e| LibraryError::Text(e.to_string()))?);
        }
        let tower = loaded.as_mut().expect("loaded above");
        tower.embed(text).map_err(|e| LibraryError::Text(e.to_string()))
    }

    /// The embedding of a JPEG or PNG picture, as inference embeds a crop.
    fn embed_picture(&self, bytes: &[u8]) -> Result<Vec<f32>, LibraryError> {
        // One picture at a time, decoding included: each may take MAX_PICTURE_BYTES twice.
        let mut loaded = self.towers.image.lock().unwrap_or_else(|p| p.into_inner());
        let picture = decode_picture(bytes)?.into_rgb8();
        if loaded.is_none() {
            let tower = Embedder::load(&self.towers.config, &self.towers.engine, Some(&self.towers.forms));
            *loaded = Some(tower.map_err(|e| LibraryError::Image(e.to_string()))?);
        }
        let tower = loaded.as_mut().expect("loaded above");
        tower.embed(&picture).map_err(|e| LibraryError::Image(e.to_string()))
    }

    /// Record `id`'s metadata.
    pub fn record(&self, id: &RecordId) -> Result<Metadata, LibraryError> {
        self.find(id)?.ok_or_else(|| LibraryError::UnknownRecord(id.0.clone()))
    }

    /// Record `id`'s metadata, if the index on the device has it.
    pub fn find(&self, id: &RecordId) -> Result<Option<Metadata>, LibraryError> {
        let Some(mut metadata) = self.with_index(|index| Ok(index.metadata_of(id.as_str())?))? else { return Ok(None) };
        metadata.user_label = self.labels.get(id.as_str())?;
        Ok(Some(metadata))
    }

    /// Whether the crop store holds `key` on the device.
    pub fn is_stored(&self, key: Option<&str>) -> bool {
        key.is_some_and(|key| is_plain_key(key) && self.crops.join(key).is_file())
    }

    /// The picture the crop store on the device holds under `key`, if any.
    pub fn stored(&self, key: &str) -> Option<Vec<u8>> {
        is_plain_key(key).then(|| std::fs::read(self.crops.join(key)).ok()).flatten()
    }
}

/// A frame's snapshot JPEG with record `metadata`'s box drawn on it.
pub fn with_box(jpeg: &[u8], metadata: &Metadata) -> Result<Vec<u8>, LibraryError> {
    let mut frame = decode_picture(jpeg)?.into_rgb8();
    draw_box(&mut frame, metadata);
    let mut out = Vec::with_capacity(jpeg.len() + jpeg.len() / 4);
    let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, BOXED_QUALITY);
    frame.write_with_encoder(encoder).map_err(|e| LibraryError::Image(format!("the snapshot cannot be drawn on: {e}")))?;
    Ok(out)
}

/// JPEG quality of a snapshot with its box drawn.
const BOXED_QUALITY: u8 = 85;

/// Draws the record's box (in the frame's pixels) on its snapshot (scaled from the frame) as a
/// bright outline about 0.4 % of the longer side thick.
fn draw_box(snapshot: &mut image::RgbImage, m: &Metadata) {
    let (w, h) = snapshot.dimensions();
    if m.frame_w == 0 || m.frame_h == 0 || w == 0 || h == 0 {
        return;
    }
    let (sx, sy) = (w as f32 / m.frame_w as f32, h as f32 / m.frame_h as f32);
    let scale = |v: u32, s: f32, max: u32| ((v as f32 * s).round() as u32).min(max - 1);
    let (left, top) = (scale(m.x, sx, w), scale(m.y, sy, h));
    let (right, bottom) = (scale(m.x + m.w, sx, w), scale(m.y + m.h, sy, h));
    let thick = (w.max(h) / 250).max(2);
    let colour = image::Rgb([255, 214, 0]);
    for y in top..=bottom {
        let whole_row = y < top + thick || y + thick > bottom;
        let spans = match whole_row {
            true => [left..right + 1, 0..0],
            false => [left..(left + thick).min(right + 1), right.saturating_sub(thick - 1).max(left)..right + 1],
        };
        for x in spans.into_iter().flatten() {
            snapshot.put_pixel(x, y, colour);
        }
    }
}

/// A key below the store's root: only plain names, no `..`, no root, so no other file is read.
pub fn is_plain_key(key: &str) -> bool {
    !key.is_empty() && Path::new(key).components().all(|c| matches!(c, Component::Normal(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_ids_are_names_and_numbers_only() {
        assert!(RecordId::parse("gate-01:street:1764750000000:3").is_some());
        for bad in ["", "../../etc/passwd", "a/b", "a.b", "A:b", "a b", "a%2Fb", &"a".repeat(201)] {
            assert!(RecordId::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn the_box_is_drawn_where_the_record_says_scaled_to_the_snapshot() {
        let mut metadata = crate::record::test_record("d:c:1:0", "c", 0, vec![]).metadata;
        (metadata.x, metadata.y, metadata.w, metadata.h, metadata.frame_w, metadata.frame_h) = (100, 50, 200, 100, 1000, 500);
        let mut snapshot = image::RgbImage::new(500, 250); // the frame at half size
        draw_box(&mut snapshot, &metadata);
        assert_eq!(snapshot.get_pixel(50, 25).0, [255, 214, 0], "top-left corner");
        assert_eq!(snapshot.get_pixel(150, 75).0, [255, 214, 0], "bottom-right corner");
        assert_eq!(snapshot.get_pixel(100, 50).0, [0, 0, 0], "inside stays as it was");
        assert_eq!(snapshot.get_pixel(20, 20).0, [0, 0, 0], "outside too");
    }

    #[test]
    fn only_keys_below_the_store_are_read() {
        assert!(is_plain_key("dev/cam/2026/12/03/x.jpg"));
        for bad in ["", "../secret", "/etc/passwd", "a/../../b"] {
            assert!(!is_plain_key(bad), "{bad:?}");
        }
    }
}
