//! What the daemon counts. Stages move numbers only through the typed events here (one method
//! per event, the one place that also logs it when worth it); fields are private. A
//! [`Snapshot`] copies the numbers without changing anything, and [`Snapshot::report`] turns it
//! into the stats JSON, computing rates against the previous snapshot its caller kept.
//!
//! Every number and every derived field is listed once, with its meaning, in the tables below;
//! the JSON is built from them and docs/mqtt.md's tables must equal them (a test checks).

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use crate::camera_state::CameraStatus;
use crate::clock::unix_ms;
use crate::model::EngineReport;

/// Declares a list of numbers: an enum, each variant's JSON key and meaning, and `ALL`.
macro_rules! numbers {
    ($(#[$meta:meta])* pub enum $name:ident { $($variant:ident => $key:literal, $doc:literal;)* }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum $name { $($variant),* }
        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),*];
            pub const FIELDS: &'static [(&'static str, &'static str)] = &[$(($key, $doc)),*];
            pub fn key(self) -> &'static str {
                Self::FIELDS[self as usize].0
            }
        }
    };
}

numbers! {
    /// One camera's counters and gauges.
    pub enum CameraNumber {
        FramesDecoded => "frames_decoded", "frames out of the decoder";
        FramesSampled => "frames_sampled", "frames after sampling to `sample_fps`";
        FramesDropped => "frames_dropped", "live frames dropped because inference was busy (the newer frame wins)";
        FramesProcessed => "frames_processed", "frames that reached inference";
        FramesGated => "frames_gated", "of those, frames the motion gate kept from the detector (nothing moved)";
        Detections => "detections", "boxes above the detector's threshold";
        BoxesTooSmall => "boxes_too_small", "of those, boxes under `detector.min_box_px` (not embedded)";
        Deduplicated => "deduplicated", "detections of tracked objects that looked as at their last embedding (not embedded again, `[analysis] dedupe`)";
        Embeddings => "embeddings", "records made and handed to the outbox";
        EmbeddingFailures => "embedding_failures", "crops whose embedding failed: that record is lost, the frame's others are kept";
        LagMs => "lag_ms", "how long the latest frame waited between capture and inference, ms";
        Reconnects => "reconnects", "pipeline restarts";
        Stalls => "stalls", "of those, restarts because no data came for `stall_timeout_s`";
        DeltasSkipped => "deltas_skipped", "compressed frames not decoded in keyframe mode";
    }
}

/// A camera's fields that are not plain numbers.
pub const CAMERA_DERIVED: &[(&str, &str)] = &[
    ("status", "`online`, `offline` or `error`, as on the camera's status topic"),
    ("reason", "why the camera is not online (credentials redacted), or null"),
    ("decoder", "the decoder element in use, once the first frame arrived"),
    ("fps_in", "decoded frames per second since the previous stats message"),
    ("fps_out", "processed frames per second since the previous stats message"),
    ("detections_per_min", "detections per minute since the previous stats message"),
    ("inference_ms_p50", "median detection plus embedding time per frame over the last 256 frames, ms"),
    ("inference_ms_p95", "95th percentile of the same"),
    ("gated_share", "`frames_gated` / `frames_processed`"),
];

numbers! {
    /// The outbox's numbers.
    pub enum OutboxNumber {
        Pending => "pending", "records not yet acknowledged by the index";
        PendingBytes => "pending_bytes", "their encoded size, bytes";
        Accepted => "accepted", "records made durable since start";
        Dropped => "dropped", "records deleted at a disk cap (policy `drop_oldest`)";
        Quarantined => "quarantined", "stored records that failed their checksum (set aside, never sent)";
    }
}

pub const OUTBOX_DERIVED: &[(&str, &str)] = &[
    ("oldest_pending_age_s", "age of the oldest pending record, seconds, or null when none"),
    ("paused", "ingest is paused at a cap (policy `pause_ingest`)"),
    ("disk_full", "the data disk is below `outbox.min_free_disk` or out of space: ingest pauses or drops by `outbox.policy`, nothing accepted is lost, and it clears by itself once there is room"),
];

numbers! {
    /// The syncer's numbers.
    pub enum SyncNumber {
        Upserted => "upserted", "records acknowledged by Pinecone since start";
        Retried => "retried", "failed requests that will be retried";
        DeadLettered => "dead_lettered", "records Pinecone rejected for good (kept in the outbox's `dead` tree)";
    }
}

pub const SYNC_DERIVED: &[(&str, &str)] =
    &[("last_sync_ts", "unix ms of the last acknowledged upsert, or null"), ("last_sync_age_s", "seconds since then, or null")];

numbers! {
    /// The crop store's numbers.
    pub enum CropNumber {
        Stored => "stored", "crops written to the store since start";
        Bytes => "bytes", "total size of the crops kept, bytes";
        Evicted => "evicted", "crops deleted by retention (`[crops] max_bytes`, `max_age`) since start";
        Failures => "failures", "crops that could not be stored (their records are kept, without `crop`)";
        Uploaded => "uploaded", "crops uploaded to a remote store (`s3://`) since start";
        Pending => "pending", "crops waiting for their upload";
        UploadFailures => "upload_failures", "failed uploads (retried until they succeed)";
        Snapshots => "snapshots", "frame snapshots written to the store since start (`[snapshots]`; `bytes`, `evicted`, `failures`, `uploaded` and `pending` count them with the crops)";
    }
}

/// The crop store's fields that are not plain numbers.
pub const CROPS_DERIVED: &[(&str, &str)] =
    &[("last_error", "why the latest crop could not be stored or uploaded (cleared by the next success), or null")];

numbers! {
    /// The index on the device's numbers.
    pub enum IndexNumber {
        Records => "records", "records searchable on the device";
        Bytes => "bytes", "the index's size on disk, bytes";
    }
}

/// The index's fields that are not plain numbers.
pub const INDEX_DERIVED: &[(&str, &str)] = &[
    (
        "last_error",
        "why the latest records could not be added (they stay in the outbox and are added again), cleared by the next success, or null",
    ),
    ("moved_aside", "where an index that could not be opened was moved at start (a new one was filled from the outbox), or null"),
];

numbers! {
    /// The inference stage's numbers.
    pub enum InferenceNumber {
        DetectorPlans => "detector_plans", "optimised detector plans held (one per input size, a bounded cache)";
    }
}

numbers! {
    /// Object events and trigger matches on their way to the broker.
    pub enum EventNumber {
        Published => "published", "object events, trigger matches and snapshots handed to the MQTT client";
        Dropped => "dropped", "of those made, messages dropped because a queue was full: the broker's (it was away) or the event history's (its disk was slow)";
    }
}

numbers! {
    /// One semantic trigger's numbers.
    pub enum TriggerNumber {
        Matches => "matches", "records that matched since start";
    }
}

/// A trigger's fields that are not plain numbers.
pub const TRIGGER_DERIVED: &[(&str, &str)] = &[
    ("last_match", "the latest match as published on the trigger's topic, or null"),
    ("error", "why the trigger is not active (its text, image or record could not be embedded), or null"),
];

/// The inference section's fields that describe the engine rather than count.
pub const INFERENCE_DERIVED: &[(&str, &str)] = &[
    ("engine", "`tract` or `onnxruntime` (`[inference] engine`)"),
    ("library", "the ONNX Runtime library loaded, or null with tract"),
    ("version", "that library's version, or null with tract"),
    ("providers", "where each model runs: `detector` and `embedder`, each `tract` or an ONNX Runtime execution provider such as `CPUExecutionProvider`"),
    ("form", "which form of each model runs (`detector`, `embedder`): `form` (`fp32`, `int8`, `int8-qdq`), `file`, `reason`, and `ms`, each form's time for one call when they were timed (`form = \"fastest\"`)"),
];

/// The stats JSON's sections: each key (`{name}`: one per camera or trigger), its numbers and
/// its derived fields.
pub type Fields = &'static [(&'static str, &'static str)];
pub const SECTIONS: &[(&str, Fields, Fields)] = &[
    ("cameras.{name}", CameraNumber::FIELDS, CAMERA_DERIVED),
    ("outbox", OutboxNumber::FIELDS, OUTBOX_DERIVED),
    ("sync", SyncNumber::FIELDS, SYNC_DERIVED),
    ("inference", InferenceNumber::FIELDS, INFERENCE_DERIVED),
    ("crops", CropNumber::FIELDS, CROPS_DERIVED),
    ("index", IndexNumber::FIELDS, INDEX_DERIVED),
    ("events", EventNumber::FIELDS, &[]),
    ("triggers.{name}", TriggerNumber::FIELDS, TRIGGER_DERIVED),
];

/// The numbers that go down as well as up (a section's key, the number's); every other number
/// only counts up from the start.
pub const GAUGES: &[(&str, &str)] = &[
    ("cameras.{name}", "lag_ms"),
    ("outbox", "pending"),
    ("outbox", "pending_bytes"),
    ("outbox", "quarantined"),
    ("crops", "bytes"),
    ("crops", "pending"),
    ("index", "records"),
    ("index", "bytes"),
    ("inference", "detector_plans"),
];

/// A list of atomics indexed by one of the enums above.
struct Numbers(Vec<AtomicU64>);

impl Numbers {
    fn new(len: usize) -> Self {
        Self((0..len).map(|_| AtomicU64::new(0)).collect())
    }
    fn add(&self, at: usize, n: u64) -> u64 {
        self.0[at].fetch_add(n, Relaxed) + n
    }
    fn set(&self, at: usize, n: u64) {
        self.0[at].store(n, Relaxed);
    }
    fn get(&self, at: usize) -> u64 {
        self.0[at].load(Relaxed)
    }
    fn values(&self) -> Vec<u64> {
        self.0.iter().map(|a| a.load(Relaxed)).collect()
    }
}

/// How many recent frames the latency percentiles cover.
const LATENCY_WINDOW: usize = 256;

/// One camera's numbers. Its stage holds the handle and reports events on it.
pub struct CameraStats {
    name: String,
    since: Instant,
    numbers: Numbers,
    decoder: Mutex<Option<String>>,
    latencies_ms: Mutex<VecDeque<f32>>,
}

/// What inference made of one frame that reached the detector.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameOutcome {
    pub detections: usize,
    pub too_small: usize,
    pub deduplicated: usize,
    pub embedded: usize,
    pub embedding_failures: usize,
}

impl CameraStats {
    fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            since: Instant::now(),
            numbers: Numbers::new(CameraNumber::ALL.len()),
            decoder: Mutex::default(),
            latencies_ms: Mutex::new(VecDeque::with_capacity(LATENCY_WINDOW)),
        }
    }

    fn add(&self, n: CameraNumber, by: u64) -> u64 {
        self.numbers.add(n as usize, by)
    }

    /// Frames out of the decoder and delta units skipped before it, since the last call.
    pub fn decoded(&self, frames: u64, deltas_skipped: u64) {
        self.add(CameraNumber::FramesDecoded, frames);
        self.add(CameraNumber::DeltasSkipped, deltas_skipped);
    }

    pub fn decoder_chosen(&self, decoder: Option<String>) {
        *self.decoder.lock().unwrap_or_else(|p| p.into_inner()) = decoder;
    }

    /// The source restarted; `stalled` when because no data came.
    pub fn reconnected(&self, stalled: bool) {
        self.add(CameraNumber::Reconnects, 1);
        if stalled {
            self.add(CameraNumber::Stalls, 1);
        }
    }

    pub fn frame_sampled(&self) {
        self.add(CameraNumber::FramesSampled, 1);
    }

    /// A live frame the inference stage had no room for; the newer one wins.
    pub fn frame_dropped(&self) {
        let total = self.add(CameraNumber::FramesDropped, 1);
        tracing::debug!(camera = %self.name, dropped_total = total, "inference busy: live frame dropped");
    }

    /// A frame reached inference after waiting `lag` since capture.
    pub fn frame_taken(&self, lag: Duration) {
        self.numbers.set(CameraNumber::LagMs as usize, lag.as_millis() as u64);
        self.add(CameraNumber::FramesProcessed, 1);
    }

    /// A frame where nothing moved: no detection ran.
    pub fn frame_gated(&self) {
        self.add(CameraNumber::FramesGated, 1);
    }

    /// A frame went through the detector (and the embedder), taking `latency`.
    pub fn frame_analysed(&self, outcome: FrameOutcome, latency: Duration) {
        self.add(CameraNumber::Detections, outcome.detections as u64);
        self.add(CameraNumber::BoxesTooSmall, outcome.too_small as u64);
        self.add(CameraNumber::Deduplicated, outcome.deduplicated as u64);
        self.add(CameraNumber::Embeddings, outcome.embedded as u64);
        self.add(CameraNumber::EmbeddingFailures, outcome.embedding_failures as u64);
        let mut window = self.latencies_ms.lock().unwrap_or_else(|p| p.into_inner());
        if window.len() == LATENCY_WINDOW {
            window.pop_front();
        }
        window.push_back(latency.as_secs_f32() * 1000.0);
    }

    fn snapshot(&self) -> CameraSnapshot {
        let window = self.latencies_ms.lock().unwrap_or_else(|p| p.into_inner());
        let mut sorted: Vec<f32> = window.iter().copied().collect();
        drop(window);
        sorted.sort_by(f32::total_cmp);
        let at = |q: f32| sorted.get(((sorted.len() as f32 - 1.0) * q).round() as usize).copied();
        CameraSnapshot {
            since: self.since,
            numbers: self.numbers.values(),
            decoder: self.decoder.lock().ok().and_then(|d| d.clone()),
            latency_p50_ms: at(0.5),
            latency_p95_ms: at(0.95),
        }
    }
}

/// Everything the daemon counts, shared behind an `Arc`.
pub struct Stats {
    started: Instant,
    /// Cameras come and go with configuration reloads.
    cameras: RwLock<BTreeMap<String, Arc<CameraStats>>>,
    outbox: Numbers,
    outbox_paused: AtomicBool,
    outbox_disk_full: AtomicBool,
    /// Unix ms of the oldest pending record's capture, 0 when nothing is pending.
    outbox_oldest_ts: AtomicU64,
    sync: Numbers,
    last_sync_unix_ms: AtomicU64,
    inference: Numbers,
    crops: Numbers,
    /// Why the latest crop failed (storing or uploading); `None` after a success.
    crops_error: Mutex<Option<String>>,
    index: Numbers,
    /// Why the latest add to the index failed; `None` after a success.
    index_error: Mutex<Option<String>>,
    /// Where an unusable index was moved at start.
    index_moved_aside: Mutex<Option<String>>,
    events: Numbers,
    /// Triggers come and go with configuration reloads.
    triggers: RwLock<BTreeMap<String, TriggerSnapshot>>,
    engine: RwLock<EngineReport>,
}

/// One trigger's numbers at one moment (kept as a snapshot: matches are rare).
#[derive(Clone, Debug, Default)]
pub struct TriggerSnapshot {
    matches: u64,
    last_match: Option<Value>,
    error: Option<String>,
}

impl Stats {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            started: Instant::now(),
            cameras: RwLock::default(),
            outbox: Numbers::new(OutboxNumber::ALL.len()),
            outbox_paused: AtomicBool::new(false),
            outbox_disk_full: AtomicBool::new(false),
            outbox_oldest_ts: AtomicU64::new(0),
            sync: Numbers::new(SyncNumber::ALL.len()),
            last_sync_unix_ms: AtomicU64::new(0),
            inference: Numbers::new(InferenceNumber::ALL.len()),
            crops: Numbers::new(CropNumber::ALL.len()),
            crops_error: Mutex::new(None),
            index: Numbers::new(IndexNumber::ALL.len()),
            index_error: Mutex::new(None),
            index_moved_aside: Mutex::new(None),
            events: Numbers::new(EventNumber::ALL.len()),
            triggers: RwLock::default(),
            engine: RwLock::default(),
        })
    }

    /// The numbers of camera `name`, made if new. A camera restarted by a reload keeps them.
    pub fn camera(&self, name: &str) -> Arc<CameraStats> {
        let mut cameras = self.cameras.write().unwrap_or_else(|p| p.into_inner());
        cameras.entry(name.to_owned()).or_insert_with(|| Arc::new(CameraStats::new(name))).clone()
    }

    /// The numbers of camera `name` if it is configured; else numbers that count nowhere (a
    /// removed camera's last frame must not bring it back into the stats).
    pub fn existing_camera(&self, name: &str) -> Arc<CameraStats> {
        let cameras = self.cameras.read().unwrap_or_else(|p| p.into_inner());
        cameras.get(name).cloned().unwrap_or_else(|| Arc::new(CameraStats::new(name)))
    }

    /// Forgets a camera removed from the configuration.
    pub fn remove_camera(&self, name: &str) {
        self.cameras.write().unwrap_or_else(|p| p.into_inner()).remove(name);
    }

    /// The outbox's pending count and size, as it stores them.
    pub fn outbox_backlog(&self, backlog: crate::outbox::Backlog) {
        self.outbox.set(OutboxNumber::Pending as usize, backlog.records);
        self.outbox.set(OutboxNumber::PendingBytes as usize, backlog.bytes);
    }

    /// Records made durable; `backlog` is the outbox's pending count and size after them.
    pub fn outbox_accepted(&self, n: u64, backlog: crate::outbox::Backlog) {
        self.outbox.add(OutboxNumber::Accepted as usize, n);
        self.outbox_backlog(backlog);
    }

    pub fn outbox_oldest(&self, ts: Option<i64>) {
        self.outbox_oldest_ts.store(ts.map_or(0, |t| t.max(0) as u64), Relaxed);
    }

    /// Whether the oldest pending record's time is known (else the keeper looks it up).
    pub fn outbox_oldest_known(&self) -> bool {
        self.outbox_oldest_ts.load(Relaxed) != 0
    }

    /// Oldest records deleted at a disk cap (policy `drop_oldest`): data lost, said out loud.
    pub fn outbox_dropped(&self, n: u64) {
        let total = self.outbox.add(OutboxNumber::Dropped as usize, n);
        tracing::warn!(event = "outbox_dropped", dropped = n, dropped_total = total, "outbox at its cap: oldest records dropped");
    }

    pub fn outbox_quarantined(&self, total: u64) {
        self.outbox.set(OutboxNumber::Quarantined as usize, total);
    }

    /// The data disk is full, or has room again.
    pub fn outbox_disk_full(&self, full: bool) {
        self.outbox_disk_full.store(full, Relaxed);
    }

    pub fn outbox_paused(&self, paused: bool) {
        self.outbox_paused.store(paused, Relaxed);
    }

    pub fn upserted(&self, n: usize) {
        self.sync.add(SyncNumber::Upserted as usize, n as u64);
        self.last_sync_unix_ms.store(unix_ms() as u64, Relaxed);
    }

    /// A request failed and will be tried again.
    pub fn sync_retried(&self) {
        self.sync.add(SyncNumber::Retried as usize, 1);
    }

    pub fn dead_lettered(&self, n: usize) {
        self.sync.add(SyncNumber::DeadLettered as usize, n as u64);
    }

    /// Crops stored by one commit, those that failed, and what retention then removed.
    pub fn crops_stored(&self, stored: u64, failed: u64, evicted: u64, bytes_kept: u64) {
        self.crops.add(CropNumber::Stored as usize, stored);
        self.crops.add(CropNumber::Failures as usize, failed);
        self.crops.add(CropNumber::Evicted as usize, evicted);
        self.crops.set(CropNumber::Bytes as usize, bytes_kept);
    }

    /// Frame snapshots stored by one commit.
    pub fn snapshots_stored(&self, stored: u64) {
        self.crops.add(CropNumber::Snapshots as usize, stored);
    }

    /// A crop could not be stored or uploaded, for this reason (no secret in it).
    pub fn crop_failed(&self, reason: String) {
        *self.crops_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason);
    }

    /// A crop was stored or uploaded: the last error no longer holds.
    pub fn crop_succeeded(&self) {
        *self.crops_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Crops waiting for their upload, as the uploader last counted them.
    pub fn crops_pending(&self, n: u64) {
        self.crops.set(CropNumber::Pending as usize, n);
    }

    pub fn crops_uploaded(&self, uploaded: u64, failed: u64) {
        self.crops.add(CropNumber::Uploaded as usize, uploaded);
        self.crops.add(CropNumber::UploadFailures as usize, failed);
        let pending = self.crops.get(CropNumber::Pending as usize);
        self.crops.set(CropNumber::Pending as usize, pending.saturating_sub(uploaded));
    }

    /// The index took a batch: its size now; the last error no longer holds.
    pub fn index_size(&self, records: u64, bytes: u64) {
        self.index.set(IndexNumber::Records as usize, records);
        self.index.set(IndexNumber::Bytes as usize, bytes);
        *self.index_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Records could not be added to the index, for this reason.
    pub fn index_failed(&self, reason: String) {
        *self.index_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason);
    }

    /// The index could not be opened and was moved to `path`.
    pub fn index_moved_aside(&self, path: String) {
        *self.index_moved_aside.lock().unwrap_or_else(|p| p.into_inner()) = Some(path);
    }

    pub fn crop_number(&self, n: CropNumber) -> u64 {
        self.crops.get(n as usize)
    }

    /// The models are loaded: on which engine, from which library, on which providers.
    pub fn engine_loaded(&self, report: EngineReport) {
        *self.engine.write().unwrap_or_else(|p| p.into_inner()) = report;
    }

    pub fn detector_plans(&self, held: usize) {
        self.inference.set(InferenceNumber::DetectorPlans as usize, held as u64);
    }

    /// A message the queue to the broker had no room for.
    pub fn event_dropped(&self) {
        let total = self.events.add(EventNumber::Dropped as usize, 1);
        if total.is_power_of_two() {
            tracing::warn!(event = "events_dropped", dropped_total = total, "queue to the broker full: object events dropped");
        }
    }

    pub fn event_published(&self) {
        self.events.add(EventNumber::Published as usize, 1);
    }

    pub fn event_number(&self, n: EventNumber) -> u64 {
        self.events.get(n as usize)
    }

    /// The triggers now configured, with why each inactive one is (keeps the others' counts).
    pub fn triggers_configured(&self, triggers: &[(String, Option<String>)]) {
        let mut map = self.triggers.write().unwrap_or_else(|p| p.into_inner());
        map.retain(|name, _| triggers.iter().any(|(n, _)| n == name));
        for (name, error) in triggers {
            map.entry(name.clone()).or_default().error = error.clone();
        }
    }

    /// A trigger fired; `matched` is the message published for it.
    pub fn trigger_matched(&self, name: &str, matched: Value) {
        let mut map = self.triggers.write().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = map.get_mut(name) {
            t.matches += 1;
            t.last_match = Some(matched);
        }
    }

    /// Every trigger's numbers, as the trigger section of [`Stats::snapshot`] has them.
    pub fn triggers(&self) -> BTreeMap<String, TriggerSnapshot> {
        self.triggers.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// A copy of every number; changes nothing.
    pub fn snapshot(&self) -> Snapshot {
        let cameras = self.cameras.read().unwrap_or_else(|p| p.into_inner());
        let nonzero = |ms: u64| (ms != 0).then_some(ms as i64);
        Snapshot {
            at: Instant::now(),
            ts: unix_ms(),
            uptime_s: self.started.elapsed().as_secs(),
            process: ProcessSnapshot::now(),
            cameras: cameras.iter().map(|(name, c)| (name.clone(), c.snapshot())).collect(),
            outbox: self.outbox.values(),
            outbox_paused: self.outbox_paused.load(Relaxed),
            outbox_disk_full: self.outbox_disk_full.load(Relaxed),
            outbox_oldest_ts: nonzero(self.outbox_oldest_ts.load(Relaxed)),
            sync: self.sync.values(),
            last_sync_ts: nonzero(self.last_sync_unix_ms.load(Relaxed)),
            inference: self.inference.values(),
            crops: self.crops.values(),
            crops_error: self.crops_error.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            index: self.index.values(),
            index_error: self.index_error.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            index_moved_aside: self.index_moved_aside.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            events: self.events.values(),
            triggers: self.triggers(),
            engine: self.engine.read().unwrap_or_else(|p| p.into_inner()).clone(),
        }
    }

    /// One outbox number, for the stages and tests that need a single value.
    pub fn outbox_number(&self, n: OutboxNumber) -> u64 {
        self.outbox.get(n as usize)
    }
}

/// The numbers at one moment.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// When it was taken (monotonic), for rates.
    pub at: Instant,
    pub ts: i64,
    pub uptime_s: u64,
    pub process: ProcessSnapshot,
    pub cameras: BTreeMap<String, CameraSnapshot>,
    outbox: Vec<u64>,
    outbox_paused: bool,
    outbox_disk_full: bool,
    outbox_oldest_ts: Option<i64>,
    sync: Vec<u64>,
    last_sync_ts: Option<i64>,
    inference: Vec<u64>,
    crops: Vec<u64>,
    crops_error: Option<String>,
    index: Vec<u64>,
    index_error: Option<String>,
    index_moved_aside: Option<String>,
    events: Vec<u64>,
    pub triggers: BTreeMap<String, TriggerSnapshot>,
    engine: EngineReport,
}

#[derive(Clone, Debug)]
pub struct CameraSnapshot {
    since: Instant,
    numbers: Vec<u64>,
    decoder: Option<String>,
    latency_p50_ms: Option<f32>,
    latency_p95_ms: Option<f32>,
}

impl CameraSnapshot {
    pub fn get(&self, n: CameraNumber) -> u64 {
        self.numbers[n as usize]
    }
}

impl Snapshot {
    /// The stats JSON published on `{prefix}/{device}/stats` (docs/mqtt.md). Rates cover the
    /// time since `previous` (the last snapshot reported), or since the camera appeared.
    pub fn report(&self, device: &str, statuses: &BTreeMap<String, CameraStatus>, previous: Option<&Snapshot>) -> Value {
        let cameras: Map<String, Value> = self
            .cameras
            .iter()
            .map(|(name, camera)| {
                let before = previous.and_then(|p| p.cameras.get(name).map(|c| (p.at, c)));
                (name.clone(), camera_report(camera, statuses.get(name), before, self.at))
            })
            .collect();
        let age_s = |ts: Option<i64>| ts.map(|t| (self.ts - t).max(0) / 1000);
        let mut outbox = numbers_json(OutboxNumber::FIELDS, &self.outbox);
        outbox.insert("oldest_pending_age_s".into(), json!(age_s(self.outbox_oldest_ts)));
        outbox.insert("paused".into(), json!(self.outbox_paused));
        outbox.insert("disk_full".into(), json!(self.outbox_disk_full));
        let mut crops = numbers_json(CropNumber::FIELDS, &self.crops);
        crops.insert("last_error".into(), json!(self.crops_error));
        let mut index = numbers_json(IndexNumber::FIELDS, &self.index);
        index.insert("last_error".into(), json!(self.index_error));
        index.insert("moved_aside".into(), json!(self.index_moved_aside));
        let mut sync = numbers_json(SyncNumber::FIELDS, &self.sync);
        sync.insert("last_sync_ts".into(), json!(self.last_sync_ts));
        sync.insert("last_sync_age_s".into(), json!(age_s(self.last_sync_ts)));
        json!({
            "device": device,
            "ts": self.ts,
            "uptime_s": self.uptime_s,
            "process": { "cpu_s": round2(self.process.cpu_s), "rss_bytes": self.process.rss_bytes },
            "cameras": cameras,
            "outbox": outbox,
            "sync": sync,
            "inference": self.inference_report(),
            "crops": crops,
            "index": index,
            "events": numbers_json(EventNumber::FIELDS, &self.events),
            "triggers": self.triggers.iter().map(|(name, t)| (name.clone(), t.report())).collect::<Map<String, Value>>(),
        })
    }
}

impl Snapshot {
    fn inference_report(&self) -> Value {
        let mut report = numbers_json(InferenceNumber::FIELDS, &self.inference);
        if let Ok(Value::Object(engine)) = serde_json::to_value(&self.engine) {
            report.extend(engine);
        }
        Value::Object(report)
    }
}

impl TriggerSnapshot {
    pub fn report(&self) -> Value {
        let mut report = numbers_json(TriggerNumber::FIELDS, &[self.matches]);
        report.insert("last_match".into(), json!(self.last_match));
        report.insert("error".into(), json!(self.error));
        Value::Object(report)
    }
}

fn numbers_json(fields: &[(&str, &str)], values: &[u64]) -> Map<String, Value> {
    fields.iter().zip(values).map(|((key, _), v)| (key.to_string(), json!(v))).collect()
}

/// `before`: the camera in the previous snapshot, and when that was taken.
fn camera_report(
    camera: &CameraSnapshot,
    status: Option<&CameraStatus>,
    before: Option<(Instant, &CameraSnapshot)>,
    now: Instant,
) -> Value {
    let (from, since) = match before {
        Some((at, b)) => (Some(b), at),
        None => (None, camera.since),
    };
    let seconds = now.duration_since(since).as_secs_f64().max(1e-3);
    let rate = |n: CameraNumber| camera.get(n).saturating_sub(from.map_or(0, |b| b.get(n))) as f64 / seconds;
    let mut report = numbers_json(CameraNumber::FIELDS, &camera.numbers);
    let processed = camera.get(CameraNumber::FramesProcessed).max(1) as f64;
    let derived = [
        ("status", json!(status.map_or("offline", |s| s.state.as_str()))),
        ("reason", json!(status.and_then(|s| s.reason.clone()))),
        ("decoder", json!(camera.decoder)),
        ("fps_in", json!(round2(rate(CameraNumber::FramesDecoded)))),
        ("fps_out", json!(round2(rate(CameraNumber::FramesProcessed)))),
        ("detections_per_min", json!(round2(60.0 * rate(CameraNumber::Detections)))),
        ("inference_ms_p50", json!(camera.latency_p50_ms.map(|v| round2(v as f64)))),
        ("inference_ms_p95", json!(camera.latency_p95_ms.map(|v| round2(v as f64)))),
        ("gated_share", json!(round2(camera.get(CameraNumber::FramesGated) as f64 / processed))),
    ];
    report.extend(derived.into_iter().map(|(k, v)| (k.to_owned(), v)));
    Value::Object(report)
}

/// The daemon process as the operating system sees it.
#[derive(Clone, Debug)]
pub struct ProcessSnapshot {
    /// User + system CPU seconds since start.
    pub cpu_s: f64,
    /// Resident memory, bytes.
    pub rss_bytes: u64,
}

impl ProcessSnapshot {
    fn now() -> Self {
        let cpu_s = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF).map_or(0.0, |u| {
            let s = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
            s(u.user_time()) + s(u.system_time())
        });
        // statm's second field is resident pages.
        let rss_pages = std::fs::read_to_string("/proc/self/statm")
            .ok()
            .and_then(|s| s.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()))
            .unwrap_or(0);
        let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE).ok().flatten().unwrap_or(4096) as u64;
        Self { cpu_s, rss_bytes: rss_pages * page }
    }
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each section of the stats JSON with the fields documented for it.
    fn sections() -> Vec<(&'static str, Vec<(&'static str, &'static str)>)> {
        SECTIONS.iter().map(|(section, numbers, derived)| (*section, numbers.iter().chain(derived.iter()).copied().collect())).collect()
    }

    /// docs/mqtt.md's tables, as this list makes them.
    fn tables() -> String {
        let mut text = String::new();
        for (section, fields) in sections() {
            text += &format!("\n`{section}`:\n\n| field | meaning |\n|---|---|\n");
            for (key, doc) in fields {
                text += &format!("| `{key}` | {doc} |\n");
            }
        }
        text
    }

    #[test]
    fn the_json_has_exactly_the_listed_fields() {
        let stats = Stats::new();
        stats.camera("door").frame_sampled();
        stats.triggers_configured(&[("van".into(), None)]);
        let report = stats.snapshot().report("dev", &BTreeMap::new(), None);
        let keys = |v: &Value| v.as_object().expect("an object").keys().cloned().collect::<std::collections::BTreeSet<_>>();
        for (section, fields) in sections() {
            let value = match section {
                "cameras.{name}" => &report["cameras"]["door"],
                "triggers.{name}" => &report["triggers"]["van"],
                other => &report[other],
            };
            let listed = fields.iter().map(|(k, _)| k.to_string()).collect();
            assert_eq!(keys(value), listed, "section {section}");
        }
    }

    #[test]
    fn docs_mqtt_md_lists_every_field_with_its_meaning() {
        let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/mqtt.md")).expect("docs/mqtt.md");
        assert!(docs.contains(&tables()), "docs/mqtt.md's stats tables differ from stats.rs; they should read:\n{}", tables());
    }

    #[test]
    fn rates_come_from_consecutive_snapshots_and_taking_one_changes_nothing() {
        let stats = Stats::new();
        let door = stats.camera("door");
        door.decoded(10, 0);
        let first = stats.snapshot();
        let again = stats.snapshot();
        assert_eq!(first.cameras["door"].get(CameraNumber::FramesDecoded), again.cameras["door"].get(CameraNumber::FramesDecoded));
        door.decoded(30, 0);
        let mut later = stats.snapshot();
        later.at = first.at + Duration::from_secs(10);
        let report = later.report("dev", &BTreeMap::new(), Some(&first));
        assert_eq!(report["cameras"]["door"]["fps_in"], 3.0, "30 frames in the 10 s since the previous snapshot");
    }
}
