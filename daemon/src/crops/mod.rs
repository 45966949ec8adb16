//! Every record's crop, kept as a JPEG so that people can see what was found.
//!
//! The inference thread encodes the crop from the frame already in memory ([`encode`]); the
//! outbox writer stores it ([`CropStore::put`], the only I/O here) before it accepts the
//! record, so a record's `crop` key always names a file that was written and synced. A crop
//! that cannot be stored costs the record its `crop` key, never the record.
//!
//! Layout: `{dir}/{device}/{camera}/{yyyy}/{mm}/{dd}/{record id, ':' → '_'}.jpg` (UTC date of
//! the capture); the key is the path below `dir`. Retention: at most `max_bytes`, and with
//! `max_age` nothing older, oldest first.

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::Deserialize;

use crate::outbox::CapPolicy;
use crate::validate::{Age, ByteSize};
use crate::validate::{KeyPath, Problem};

pub mod upload;

/// `[crops]`: the crops kept for every record. Absent: on, with these defaults.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default)]
pub struct CropsConfig {
    /// Keep crops at all. Default true.
    pub enabled: bool,
    /// Longest side of a stored crop, pixels (larger crops are scaled down). Default 256.
    pub max_px: u32,
    /// JPEG quality, 1–100. Default 85.
    pub quality: u8,
    /// Where crops go: `file:///abs/dir`; absent: `{data_dir}/crops`. Default absent.
    pub store: Option<String>,
    /// Cap on the crops' total size; the oldest go first. Default 2 GiB.
    pub max_bytes: ByteSize,
    /// Crops older than this are deleted: `"30d"`, `"12h"`, `"90m"` or seconds. Default none.
    pub max_age: Option<Age>,
    /// `s3://` stores: the S3-compatible server (MinIO, Garage, Ceph RGW, R2, …); absent: AWS.
    pub endpoint: Option<String>,
    /// `s3://` stores: the region. Default "us-east-1".
    pub region: String,
    /// `s3://` stores: files holding the access key id and secret; else the systemd credentials
    /// `s3-access-key-id` and `s3-secret-access-key`, else AWS_ACCESS_KEY_ID and
    /// AWS_SECRET_ACCESS_KEY.
    pub access_key_id_file: Option<PathBuf>,
    pub secret_access_key_file: Option<PathBuf>,
    /// `s3://` stores: allow a plain `http://` endpoint (loopback only). Default false.
    pub allow_http: bool,
}

/// `[snapshots]`: one JPEG of the whole frame for every analysed frame that made records, kept
/// in the crop store beside the crops (same upload, caps and retention). Absent: on.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default)]
pub struct SnapshotsConfig {
    /// Keep snapshots (needs `[crops] enabled`). Default true.
    pub enabled: bool,
    /// Longest side of a snapshot, pixels (larger frames are scaled down). Default 1280.
    pub max_px: u32,
    /// JPEG quality, 1–100. Default 80.
    pub quality: u8,
    /// Cap on the snapshots' own total size, within `[crops] max_bytes`; the oldest snapshots go
    /// first. Default none: snapshots and crops share `[crops] max_bytes` alone.
    pub max_bytes: Option<ByteSize>,
}

impl Default for SnapshotsConfig {
    fn default() -> Self {
        Self { enabled: true, max_px: 1280, quality: 80, max_bytes: None }
    }
}

impl SnapshotsConfig {
    pub fn validate(&self, at: &KeyPath, problems: &mut Vec<Problem>) {
        check_picture(at, (self.max_px, 64), self.quality, problems);
        if self.max_bytes.is_some_and(|b| b.0 < 1 << 20) {
            problems.push(Problem::new(at.key("max_bytes"), "must be at least 1 MiB"));
        }
    }
}

/// A kept picture's `max_px` (from `min_px` to 4096) and JPEG `quality`.
fn check_picture(at: &KeyPath, (max_px, min_px): (u32, u32), quality: u8, problems: &mut Vec<Problem>) {
    if !(min_px..=4096).contains(&max_px) {
        problems.push(Problem::new(at.key("max_px"), format!("must be between {min_px} and 4096 pixels")));
    }
    if !(1..=100).contains(&quality) {
        problems.push(Problem::new(at.key("quality"), "must be a JPEG quality from 1 to 100"));
    }
}

/// Where crops go, parsed from `store`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreUri {
    Local(PathBuf),
    S3 { bucket: String, prefix: String },
}

impl Default for CropsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_px: 256,
            quality: 85,
            store: None,
            max_bytes: ByteSize(2 << 30),
            max_age: None,
            endpoint: None,
            region: "us-east-1".into(),
            access_key_id_file: None,
            secret_access_key_file: None,
            allow_http: false,
        }
    }
}

impl CropsConfig {
    pub fn validate(&self, at: &KeyPath, problems: &mut Vec<Problem>) {
        check_picture(at, (self.max_px, 16), self.quality, problems);
        if let Err(message) = self.store_uri() {
            problems.push(Problem::new(at.key("store"), message));
        }
        if let Some(endpoint) = &self.endpoint {
            if let Err(message) = check_endpoint(endpoint, self.allow_http) {
                problems.push(Problem::new(at.key("endpoint"), message));
            }
        }
        if self.access_key_id_file.is_some() != self.secret_access_key_file.is_some() {
            problems.push(Problem::new(at.key("access_key_id_file"), "set both access_key_id_file and secret_access_key_file"));
        }
        if self.max_bytes.0 < 1 << 20 {
            problems.push(Problem::new(at.key("max_bytes"), "must be at least 1 MiB"));
        }
    }

    /// The store, parsed; `None` when absent (`{data_dir}/crops`).
    pub fn store_uri(&self) -> Result<Option<StoreUri>, String> {
        let Some(store) = &self.store else { return Ok(None) };
        if let Some(path) = store.strip_prefix("file://") {
            return match path.starts_with('/') {
                true => Ok(Some(StoreUri::Local(PathBuf::from(path)))),
                false => Err("file stores need an absolute path: file:///var/lib/glimpse/crops".into()),
            };
        }
        match store.strip_prefix("s3://").map(|rest| rest.split_once('/').unwrap_or((rest, ""))) {
            Some((bucket, prefix)) if !bucket.is_empty() => {
                Ok(Some(StoreUri::S3 { bucket: bucket.to_owned(), prefix: prefix.trim_matches('/').to_owned() }))
            }
            _ => Err(format!("{store:?} is not a crop store: use file:///abs/dir or s3://bucket/prefix")),
        }
    }

    /// The directory crops are written to first (for a remote store, before their upload).
    pub fn dir(&self, data_dir: &Path) -> PathBuf {
        match self.store_uri() {
            Ok(Some(StoreUri::Local(dir))) => dir,
            _ => data_dir.join("crops"),
        }
    }

    /// Where crops waiting for upload are marked, when the store is remote.
    pub fn upload_marks(&self, data_dir: &Path) -> Option<PathBuf> {
        matches!(self.store_uri(), Ok(Some(StoreUri::S3 { .. }))).then(|| data_dir.join("crops-upload"))
    }
}

/// An S3 endpoint: https, or http to loopback with `allow_http`.
fn check_endpoint(endpoint: &str, allow_http: bool) -> Result<(), String> {
    let url = url::Url::parse(endpoint).map_err(|e| format!("{:?} is not a URL ({e})", crate::redact::redact_uri(endpoint)))?;
    let loopback = url.host_str().is_some_and(crate::validate::is_loopback);
    match (url.scheme(), allow_http, loopback) {
        ("https", _, _) | ("http", true, true) => Ok(()),
        ("http", false, _) => Err("plain http needs crops.allow_http = true (and is allowed to loopback only)".into()),
        ("http", true, false) => Err("plain http is allowed only to loopback; use https://".into()),
        (other, _, _) => Err(format!("scheme {other:?} is not supported; use https://")),
    }
}

/// A crop, scaled so its longest side is at most `max_px`, as a JPEG.
pub fn encode(crop: &image::RgbImage, max_px: u32, quality: u8) -> Result<Vec<u8>, image::ImageError> {
    let (w, h) = crop.dimensions();
    let scale = max_px as f32 / w.max(h) as f32;
    let mut jpeg = Vec::with_capacity(16 * 1024);
    let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, quality);
    if scale < 1.0 {
        let (nw, nh) = (((w as f32 * scale).round() as u32).max(1), ((h as f32 * scale).round() as u32).max(1));
        // The SIMD resizer the models use: a whole frame scaled with the image crate's took
        // most of a snapshot's time (docs/benchmarks.md).
        crate::model::Resize::default().to(crop, nw, nh, crate::model::ResizeFilter::Bilinear).write_with_encoder(encoder)?;
    } else {
        crop.write_with_encoder(encoder)?;
    }
    Ok(jpeg)
}

/// Where the crop of record `id` (captured at unix ms `ts`) is kept, below the store's root.
pub fn key(device: &str, camera: &str, ts: i64, id: &str) -> String {
    let (y, m, d) = civil_date(ts.div_euclid(86_400_000));
    let safe: String = id.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '_' }).collect();
    format!("{device}/{camera}/{y:04}/{m:02}/{d:02}/{safe}.jpg")
}

/// Where the snapshot of the frame keyed `frame_ms` (captured at unix ms `ts`) is kept: beside
/// its records' crops, named after the frame.
pub fn snapshot_key(device: &str, camera: &str, ts: i64, frame_ms: u64) -> String {
    key(device, camera, ts, &format!("{device}:{camera}:{frame_ms}:frame"))
}

/// Whether `key` is in the crop store's layout ([`key`]): `{device}/{camera}/{yyyy}/{mm}/{dd}/{name}.jpg`,
/// plain names only, so that a key from another writer reaches nothing else.
pub fn is_store_key(key: &str) -> bool {
    let parts: Vec<&str> = key.split('/').collect();
    let plain = |p: &&str| !p.is_empty() && *p != "." && *p != ".." && !p.contains('\\');
    parts.len() == 6 && parts.iter().all(plain) && parts[5].len() > 4 && parts[5].ends_with(".jpg")
}

/// Whether `key` is a snapshot's ([`snapshot_key`]) rather than a crop's (a box number).
pub fn is_snapshot_key(key: &str) -> bool {
    key.ends_with(SNAPSHOT_SUFFIX)
}

const SNAPSHOT_SUFFIX: &str = "_frame.jpg";

/// The UTC calendar date of a day count since 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_date(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

#[derive(Debug, thiserror::Error)]
pub enum CropError {
    #[error("the crop store is full ({max_bytes} bytes of {what} waiting for upload) and the policy is pause_ingest")]
    Full { what: &'static str, max_bytes: u64 },
    #[error("cannot write crop {}: {source}; check that the crop store's directory is writable and has room", path.display())]
    Write { path: PathBuf, source: std::io::Error },
}

/// Whether crops can be written in `dir` (made if missing): what `glimpse check` asks.
pub fn check_writable(dir: &Path) -> Result<(), CropError> {
    let fail = |source| CropError::Write { path: dir.to_owned(), source };
    std::fs::create_dir_all(dir).map_err(fail)?;
    let probe = dir.join(".glimpse-write-test");
    std::fs::write(&probe, b"ok").map_err(fail)?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

/// A stored picture: (modification time, key, size).
type Kept = (SystemTime, String, u64);

/// The crops on disk: writing, and the retention rule. Used by the outbox writer's thread only.
pub struct CropStore {
    dir: PathBuf,
    max_bytes: u64,
    max_age: Option<Duration>,
    /// Every stored crop and snapshot, oldest first: (modification time, key, size).
    kept: BTreeSet<Kept>,
    /// The snapshots among them, and their cap (`[snapshots] max_bytes`).
    snapshots: BTreeSet<Kept>,
    snapshot_bytes: u64,
    snapshot_max: Option<u64>,
    /// Each key's entry in `kept`: a key written again (a file camera run again, a stall
    /// restart) replaces its entry, so retention never deletes the file a live record names.
    by_key: HashMap<String, (SystemTime, u64)>,
    bytes: u64,
    /// With a remote store: where each new crop is also linked until its upload succeeded.
    upload_marks: Option<PathBuf>,
    /// At `max_bytes` with only waiting crops left (a long bucket outage): drop the oldest
    /// waiting crop, or store no new crop until uploads make room (`[outbox] policy`).
    policy: CapPolicy,
}

impl CropStore {
    /// Opens the store and takes stock of what it holds. A directory that cannot be made is not
    /// fatal: every `put` tries again (and fails, counted) until it can, and ingest goes on.
    pub fn open(config: &CropsConfig, snapshot_max: Option<ByteSize>, data_dir: &Path, policy: CapPolicy) -> Self {
        let dir = config.dir(data_dir);
        if let Err(e) = check_writable(&dir) {
            tracing::error!(event = "crop_store_unusable", error = %e, "crops cannot be stored until this is fixed; records are kept without them");
        }
        let upload_marks = config.upload_marks(data_dir);
        let (max_bytes, max_age) = (config.max_bytes.0, config.max_age.map(|a| a.0));
        let (kept, snapshots, by_key) = (BTreeSet::new(), BTreeSet::new(), HashMap::new());
        let snapshot_max = snapshot_max.map(|b| b.0);
        let mut store =
            Self { dir, max_bytes, max_age, kept, snapshots, snapshot_bytes: 0, snapshot_max, by_key, bytes: 0, upload_marks, policy };
        store.take_stock(&store.dir.clone());
        store
    }

    fn take_stock(&mut self, dir: &Path) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for entry in entries.flatten() {
            let path = entry.path();
            match entry.metadata() {
                Ok(m) if m.is_dir() => self.take_stock(&path),
                Ok(m) if path.extension().is_some_and(|e| e == "jpg") => {
                    let key = path.strip_prefix(&self.dir).map(|k| k.to_string_lossy().into_owned()).unwrap_or_default();
                    self.remember(key, m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len());
                }
                _ => {}
            }
        }
    }

    /// Total size of the stored crops, bytes.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Writes a crop durably (temporary file, sync, rename, sync of the directory).
    pub fn put(&mut self, key: &str, jpeg: &[u8]) -> Result<(), CropError> {
        if self.policy == CapPolicy::PauseIngest && self.refusal(key, jpeg.len() as u64).is_some() {
            self.enforce_retention();
            if let Some(full) = self.refusal(key, jpeg.len() as u64) {
                return Err(full);
            }
        }
        let path = self.dir.join(key);
        let fail = |source| CropError::Write { path: path.clone(), source };
        let parent = path.parent().unwrap_or(&self.dir);
        std::fs::create_dir_all(parent).map_err(fail)?;
        let temporary = path.with_extension("jpg.part");
        let mut file = std::fs::File::create(&temporary).map_err(fail)?;
        file.write_all(jpeg).and_then(|()| file.sync_data()).map_err(fail)?;
        std::fs::rename(&temporary, &path).map_err(fail)?;
        std::fs::File::open(parent).and_then(|d| d.sync_all()).map_err(fail)?;
        if let Some(marks) = &self.upload_marks {
            let mark = marks.join(key);
            let mark_dir = mark.parent().unwrap_or(marks);
            let mark_fail = |source| CropError::Write { path: mark.clone(), source };
            std::fs::create_dir_all(mark_dir).map_err(mark_fail)?;
            std::fs::hard_link(&path, &mark)
                .or_else(|e| if e.kind() == std::io::ErrorKind::AlreadyExists { Ok(()) } else { Err(e) })
                .map_err(mark_fail)?;
            std::fs::File::open(mark_dir).and_then(|d| d.sync_all()).map_err(mark_fail)?;
        }
        self.remember(key.to_owned(), SystemTime::now(), jpeg.len() as u64);
        Ok(())
    }

    /// Why `len` more bytes under `key` would go over a cap, if they would.
    fn refusal(&self, key: &str, len: u64) -> Option<CropError> {
        if self.bytes + len > self.max_bytes {
            return Some(CropError::Full { what: "crops and snapshots", max_bytes: self.max_bytes });
        }
        let max = self.snapshot_max.filter(|max| is_snapshot_key(key) && self.snapshot_bytes + len > *max)?;
        Some(CropError::Full { what: "snapshots", max_bytes: max })
    }

    /// Counts a stored crop, replacing what an earlier write of the same key counted.
    fn remember(&mut self, key: String, modified: SystemTime, len: u64) {
        if let Some((before, before_len)) = self.by_key.get(&key).copied() {
            self.forget(&(before, key.clone(), before_len));
        }
        self.by_key.insert(key.clone(), (modified, len));
        if is_snapshot_key(&key) {
            self.snapshots.insert((modified, key.clone(), len));
            self.snapshot_bytes += len;
        }
        self.kept.insert((modified, key, len));
        self.bytes += len;
    }

    /// No longer counts `entry` (its file is another matter).
    fn forget(&mut self, entry: &Kept) {
        self.kept.remove(entry);
        self.by_key.remove(&entry.1);
        self.bytes = self.bytes.saturating_sub(entry.2);
        if self.snapshots.remove(entry) {
            self.snapshot_bytes = self.snapshot_bytes.saturating_sub(entry.2);
        }
    }

    /// Deletes the oldest snapshots while over `[snapshots] max_bytes`, then the oldest crops and
    /// snapshots while over `max_bytes` or older than `max_age`. One still waiting for its upload
    /// (its mark is a second link to it) goes only over a cap with policy `drop_oldest` (said
    /// out loud); returns how many went.
    pub fn enforce_retention(&mut self) -> u64 {
        let too_old = |t: &SystemTime, max_age: Option<Duration>| max_age.is_some_and(|age| t.elapsed().is_ok_and(|e| e > age));
        let mut removed = 0;
        while let Some(oldest) = self.snapshots.first().cloned().filter(|_| self.snapshot_max.is_some_and(|m| self.snapshot_bytes > m)) {
            if !self.remove(&oldest, true) {
                break; // it still waits for its upload: keep it, and what is newer
            }
            removed += 1;
        }
        while let Some(oldest) = self.kept.first().cloned() {
            let over = self.bytes > self.max_bytes;
            if !over && !too_old(&oldest.0, self.max_age) || !self.remove(&oldest, over) {
                break;
            }
            removed += 1;
        }
        removed
    }

    /// Deletes `entry`, unless it still waits for its upload and is not `over` a cap with policy
    /// `drop_oldest`; whether it went.
    fn remove(&mut self, entry: &Kept, over: bool) -> bool {
        use std::os::unix::fs::MetadataExt;
        if std::fs::metadata(self.dir.join(&entry.1)).is_ok_and(|m| m.nlink() > 1) {
            if !over || self.policy == CapPolicy::PauseIngest {
                return false;
            }
            tracing::warn!(event = "crop_dropped_before_upload", key = %entry.1, "crop store full while the bucket is unreachable: oldest waiting crop dropped");
            if let Some(marks) = &self.upload_marks {
                let _ = std::fs::remove_file(marks.join(&entry.1));
            }
        }
        self.forget(entry);
        if let Err(e) = std::fs::remove_file(self.dir.join(&entry.1)) {
            tracing::warn!(key = %entry.1, error = %e, "cannot delete an old crop");
        }
        true
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_documented_layout_and_are_path_safe() {
        // 2026-12-01T14:33:45Z
        assert_eq!(
            key("lab-01", "gate", 1_796_135_625_000, "lab-01:gate:1796135625000:3"),
            "lab-01/gate/2026/12/01/lab-01_gate_1796135625000_3.jpg"
        );
        assert_eq!(key("d", "c", 0, "x/../y"), "d/c/1970/01/01/x_.._y.jpg");
        assert!(is_store_key(&key("lab-01", "gate", 1_796_135_625_000, "lab-01:gate:1:3")));
        assert!(is_store_key(&snapshot_key("lab-01", "gate", 0, 7)));
        for foreign in ["secrets.txt", "d/c/2026/01/01/x.png", "d/c/../01/01/x.jpg", "d/c/2026/01/01/a/x.jpg", "/c/2026/01/01/x.jpg"] {
            assert!(!is_store_key(foreign), "{foreign}");
        }
        assert_eq!(civil_date(-1), (1969, 12, 31));
        assert_eq!(civil_date(11_016), (2000, 2, 29));
    }

    #[test]
    fn a_crop_is_a_jpeg_no_larger_than_max_px() {
        let big = image::RgbImage::from_fn(640, 320, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 40]));
        let jpeg = encode(&big, 256, 85).expect("encodes");
        let back = image::load_from_memory_with_format(&jpeg, image::ImageFormat::Jpeg).expect("a JPEG");
        assert_eq!((back.width(), back.height()), (256, 128));
        let small = image::RgbImage::new(40, 30);
        let back = image::load_from_memory(&encode(&small, 256, 85).expect("encodes")).expect("a JPEG");
        assert_eq!((back.width(), back.height()), (40, 30), "small crops keep their size");
    }

    #[test]
    fn ages_are_written_with_a_unit_and_bad_ones_are_explained() {
        let age = |v: toml::Value| Age::try_from(v).map(|a| a.0.as_secs());
        assert_eq!(age("30d".into()), Ok(30 * 86_400));
        assert_eq!(age("12h".into()), Ok(12 * 3600));
        assert_eq!(age(toml::Value::Integer(90)), Ok(90));
        assert!(age("soon".into()).is_err_and(|e| e.contains("not an age")));
        assert!(age("0d".into()).is_err());
    }

    #[test]
    fn the_oldest_crops_go_first_once_over_max_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = CropsConfig { max_bytes: ByteSize(25), ..CropsConfig::default() };
        let mut store = CropStore::open(&config, None, dir.path(), CapPolicy::DropOldest);
        for (i, key) in ["d/c/2026/01/01/a.jpg", "d/c/2026/01/01/b.jpg", "d/c/2026/01/02/c.jpg"].iter().enumerate() {
            store.put(key, &[i as u8; 10]).expect("put");
            std::thread::sleep(Duration::from_millis(5)); // distinct modification times
        }
        assert_eq!(store.enforce_retention(), 1);
        assert!(!dir.path().join("crops/d/c/2026/01/01/a.jpg").exists());
        assert!(dir.path().join("crops/d/c/2026/01/02/c.jpg").exists());
        let reopened = CropStore::open(&config, None, dir.path(), CapPolicy::DropOldest);
        assert_eq!(reopened.bytes(), 20, "what is on disk is counted again at start");
    }

    #[test]
    fn a_key_written_again_is_counted_once_and_retention_keeps_the_newer_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = CropsConfig { max_bytes: ByteSize(20), ..CropsConfig::default() };
        let mut store = CropStore::open(&config, None, dir.path(), CapPolicy::DropOldest);
        store.put("d/c/a.jpg", &[1; 10]).expect("put");
        std::thread::sleep(Duration::from_millis(5));
        store.put("d/c/b.jpg", &[2; 10]).expect("put");
        std::thread::sleep(Duration::from_millis(5));
        // A file camera run again: the same record id, so the same key.
        store.put("d/c/a.jpg", &[3; 6]).expect("put again");
        assert_eq!(store.bytes(), 16, "the first write of a is no longer counted");
        store.put("d/c/c.jpg", &[4; 10]).expect("put");
        assert_eq!(store.enforce_retention(), 1);
        assert!(!dir.path().join("crops/d/c/b.jpg").exists(), "b is now the oldest");
        assert_eq!(std::fs::read(dir.path().join("crops/d/c/a.jpg")).expect("a is kept"), [3; 6]);
        assert_eq!(store.bytes(), 16);
    }

    #[test]
    fn snapshots_over_their_own_cap_go_oldest_first_and_crops_stay() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = CropsConfig { max_bytes: ByteSize(1000), ..CropsConfig::default() };
        let mut store = CropStore::open(&config, Some(ByteSize(25)), dir.path(), CapPolicy::DropOldest);
        let snapshot = |n: u64| snapshot_key("d", "c", 0, n);
        store.put(&snapshot(1), &[1; 10]).expect("put");
        std::thread::sleep(Duration::from_millis(5));
        store.put("d/c/1970/01/01/d_c_1_0.jpg", &[2; 10]).expect("put a crop");
        for n in 2..4 {
            std::thread::sleep(Duration::from_millis(5));
            store.put(&snapshot(n), &[n as u8; 10]).expect("put");
        }
        assert_eq!(store.enforce_retention(), 1, "30 bytes of snapshots over a cap of 25");
        assert!(!dir.path().join("crops").join(snapshot(1)).exists(), "the oldest snapshot went");
        assert!(dir.path().join("crops/d/c/1970/01/01/d_c_1_0.jpg").exists(), "the older crop stays");
        assert_eq!((store.snapshot_bytes, store.bytes()), (20, 30));
        let reopened = CropStore::open(&config, Some(ByteSize(25)), dir.path(), CapPolicy::DropOldest);
        assert_eq!(reopened.snapshot_bytes, 20, "snapshots are told apart on disk at start");
        let mut paused = CropStore::open(&config, Some(ByteSize(25)), &dir.path().join("p"), CapPolicy::PauseIngest);
        let remote = CropsConfig { store: Some("s3://b/p".into()), ..config.clone() };
        paused.upload_marks = remote.upload_marks(&dir.path().join("p"));
        paused.put(&snapshot(1), &[1; 20]).expect("put");
        let refused = paused.put(&snapshot(2), &[2; 10]).expect_err("over the snapshots' cap while waiting");
        assert!(refused.to_string().contains("of snapshots waiting"), "{refused}");
        paused.put("d/c/x.jpg", &[3; 10]).expect("crops are not held by the snapshots' cap");
    }

    #[test]
    fn waiting_crops_are_kept_until_the_cap_then_the_policy_decides() {
        let dir = tempfile::tempdir().expect("tempdir");
        let remote = CropsConfig { max_bytes: ByteSize(25), store: Some("s3://b/p".into()), ..CropsConfig::default() };
        for (policy, kept, refused) in [(CapPolicy::DropOldest, 2, false), (CapPolicy::PauseIngest, 2, true)] {
            let data = dir.path().join(format!("{policy:?}"));
            let mut store = CropStore::open(&remote, None, &data, policy);
            store.put("d/c/a.jpg", &[1; 10]).expect("put");
            store.put("d/c/b.jpg", &[2; 10]).expect("put");
            assert_eq!(store.enforce_retention(), 0, "under the cap nothing waiting goes");
            let third = store.put("d/c/c.jpg", &[3; 10]);
            assert_eq!(third.is_err(), refused, "{policy:?}");
            store.enforce_retention();
            let marks = std::fs::read_dir(data.join("crops-upload/d/c")).expect("marks").count();
            assert_eq!(marks, kept, "{policy:?}: waiting crops kept");
        }
    }
}
