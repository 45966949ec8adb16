//! Counters shared by every stage and read by `status/`. Each method here is a typed event: the
//! one place that moves a counter and, where the event deserves it, logs it.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::watch;

/// The state of one camera as operators see it on `{prefix}/{device}/cameras/{name}/status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CameraState {
    Online,
    Offline,
    Error,
}

impl CameraState {
    pub fn as_str(&self) -> &'static str {
        match self {
            CameraState::Online => "online",
            CameraState::Offline => "offline",
            CameraState::Error => "error",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CameraStatus {
    pub state: CameraState,
    /// Why the camera is not online, with credentials already redacted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Default)]
pub struct CameraCounters {
    pub frames_decoded: AtomicU64,
    pub frames_sampled: AtomicU64,
    pub frames_dropped: AtomicU64,
    pub frames_processed: AtomicU64,
    pub detections: AtomicU64,
    pub boxes_too_small: AtomicU64,
    pub embeddings: AtomicU64,
    /// Frames the motion gate kept from the detector.
    pub frames_gated: AtomicU64,
    /// Detections of tracked objects not embedded again (they looked the same).
    pub deduplicated: AtomicU64,
    /// How long the latest frame waited between capture and inference, milliseconds.
    pub lag_ms: AtomicU64,
    pub reconnects: AtomicU64,
    pub stalls: AtomicU64,
    pub deltas_skipped: AtomicU64,
}

pub struct CameraStats {
    pub name: String,
    pub counters: CameraCounters,
    /// The decoder element in use (e.g. `avdec_h264`, `nvv4l2decoder`), once known.
    pub decoder: Mutex<Option<String>>,
    /// Inference time of the most recent frames, milliseconds (for p50/p95).
    latencies_ms: Mutex<VecDeque<f32>>,
    /// Counters at the previous snapshot, for rates: (when, decoded, processed, detections).
    last_rates: Mutex<(Instant, u64, u64, u64)>,
}

/// How many recent frames the latency percentiles cover.
const LATENCY_WINDOW: usize = 256;

impl CameraStats {
    fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            counters: CameraCounters::default(),
            decoder: Mutex::default(),
            latencies_ms: Mutex::new(VecDeque::with_capacity(LATENCY_WINDOW)),
            last_rates: Mutex::new((Instant::now(), 0, 0, 0)),
        }
    }

    /// Inference (detection and embedding) of one frame took `latency`.
    pub fn inference_latency(&self, latency: std::time::Duration) {
        let mut window = self.latencies_ms.lock().unwrap_or_else(|p| p.into_inner());
        if window.len() == LATENCY_WINDOW {
            window.pop_front();
        }
        window.push_back(latency.as_secs_f32() * 1000.0);
    }

    /// (p50, p95) of the recent inference latencies, milliseconds.
    fn latency_percentiles(&self) -> (Option<f32>, Option<f32>) {
        let window = self.latencies_ms.lock().unwrap_or_else(|p| p.into_inner());
        let mut sorted: Vec<f32> = window.iter().copied().collect();
        sorted.sort_by(f32::total_cmp);
        let at = |q: f32| sorted.get(((sorted.len() as f32 - 1.0) * q).round() as usize).copied();
        (at(0.5), at(0.95))
    }

    /// Since the previous call: frames decoded and processed per second, detections per minute.
    fn rates(&self) -> (f64, f64, f64) {
        let mut last = self.last_rates.lock().unwrap_or_else(|p| p.into_inner());
        let k = &self.counters;
        let now = (k.frames_decoded.load(Relaxed), k.frames_processed.load(Relaxed), k.detections.load(Relaxed));
        let seconds = last.0.elapsed().as_secs_f64().max(1e-3);
        let per_second = |new: u64, old: u64| new.saturating_sub(old) as f64 / seconds;
        let rates = (per_second(now.0, last.1), per_second(now.1, last.2), 60.0 * per_second(now.2, last.3));
        *last = (Instant::now(), now.0, now.1, now.2);
        rates
    }

    /// Frames out of the decoder and delta units skipped before it, since the last call.
    pub fn decoded(&self, frames: u64, deltas_skipped: u64) {
        self.counters.frames_decoded.fetch_add(frames, Relaxed);
        self.counters.deltas_skipped.fetch_add(deltas_skipped, Relaxed);
    }

    pub fn set_decoder(&self, decoder: Option<String>) {
        *self.decoder.lock().unwrap_or_else(|p| p.into_inner()) = decoder;
    }

    pub fn stalled(&self) {
        self.counters.stalls.fetch_add(1, Relaxed);
    }
    pub fn frame_sampled(&self) {
        self.counters.frames_sampled.fetch_add(1, Relaxed);
    }
    /// A live frame the inference stage had no room for; the newer one wins.
    pub fn frame_dropped(&self) {
        let total = self.counters.frames_dropped.fetch_add(1, Relaxed) + 1;
        tracing::debug!(camera = %self.name, dropped_total = total, "inference busy: live frame dropped");
    }
    pub fn queue_lag(&self, ms: i64) {
        self.counters.lag_ms.store(ms.max(0) as u64, Relaxed);
    }
    /// A sampled frame where nothing moved: no detection ran.
    pub fn frame_gated(&self) {
        self.counters.frames_gated.fetch_add(1, Relaxed);
        self.counters.frames_processed.fetch_add(1, Relaxed);
    }
    pub fn frame_processed(&self, detections: usize, too_small: usize, embeddings: usize, deduplicated: usize) {
        self.counters.deduplicated.fetch_add(deduplicated as u64, Relaxed);
        self.counters.frames_processed.fetch_add(1, Relaxed);
        self.counters.detections.fetch_add(detections as u64, Relaxed);
        self.counters.boxes_too_small.fetch_add(too_small as u64, Relaxed);
        self.counters.embeddings.fetch_add(embeddings as u64, Relaxed);
    }
    pub fn reconnect(&self) {
        self.counters.reconnects.fetch_add(1, Relaxed);
    }
}

#[derive(Default)]
pub struct OutboxCounters {
    pub pending: AtomicU64,
    pub pending_bytes: AtomicU64,
    /// Unix ms of the oldest pending record's capture, 0 when nothing is pending.
    pub oldest_ts: AtomicU64,
    pub accepted: AtomicU64,
    pub dropped: AtomicU64,
    pub quarantined: AtomicU64,
    pub paused: std::sync::atomic::AtomicBool,
}

#[derive(Default)]
pub struct SyncCounters {
    pub upserted: AtomicU64,
    pub retried: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub last_sync_unix_ms: AtomicU64,
}

/// Everything the daemon counts, shared behind an `Arc`.
pub struct Stats {
    started: Instant,
    /// Cameras come and go with configuration reloads.
    cameras: RwLock<BTreeMap<String, Arc<CameraStats>>>,
    pub sync: SyncCounters,
    pub outbox: OutboxCounters,
    statuses: watch::Sender<BTreeMap<String, CameraStatus>>,
}

impl Stats {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            started: Instant::now(),
            cameras: RwLock::default(),
            sync: SyncCounters::default(),
            outbox: OutboxCounters::default(),
            statuses: watch::Sender::new(BTreeMap::new()),
        })
    }

    /// The counters of camera `name`, created (state offline, "starting") if new. A camera that
    /// is restarted by a reload keeps its counters.
    pub fn add_camera(&self, name: &str) -> Arc<CameraStats> {
        let mut cameras = self.cameras.write().unwrap_or_else(|p| p.into_inner());
        let stats = cameras.entry(name.to_owned()).or_insert_with(|| Arc::new(CameraStats::new(name))).clone();
        let starting = CameraStatus { state: CameraState::Offline, reason: Some("starting".into()) };
        self.statuses.send_if_modified(|all| {
            let new = !all.contains_key(name);
            all.entry(name.to_owned()).or_insert(starting);
            new
        });
        stats
    }

    /// Forgets a camera removed from the configuration.
    pub fn remove_camera(&self, name: &str) {
        self.cameras.write().unwrap_or_else(|p| p.into_inner()).remove(name);
        self.statuses.send_if_modified(|all| all.remove(name).is_some());
    }

    /// Records a camera's new state; logs and notifies `status/` only when it changed.
    pub fn set_camera_status(&self, camera: &str, state: CameraState, reason: Option<String>) {
        let status = CameraStatus { state, reason };
        self.statuses.send_if_modified(|all| match all.get_mut(camera) {
            Some(current) if *current != status => {
                tracing::info!(camera, state = status.state.as_str(), reason = status.reason.as_deref().unwrap_or(""), "camera status");
                *current = status;
                true
            }
            _ => false,
        });
    }

    pub fn camera_is(&self, camera: &str, state: CameraState) -> bool {
        self.statuses.borrow().get(camera).is_some_and(|s| s.state == state)
    }

    pub fn camera_statuses(&self) -> watch::Receiver<BTreeMap<String, CameraStatus>> {
        self.statuses.subscribe()
    }

    /// Records made durable; `backlog` is the outbox's pending count and size after them.
    pub fn outbox_accepted(&self, n: u64, backlog: crate::outbox::Backlog) {
        self.outbox.accepted.fetch_add(n, Relaxed);
        self.outbox_backlog(backlog);
    }

    pub fn outbox_backlog(&self, backlog: crate::outbox::Backlog) {
        self.outbox.pending.store(backlog.records, Relaxed);
        self.outbox.pending_bytes.store(backlog.bytes, Relaxed);
    }

    pub fn outbox_oldest(&self, ts: Option<i64>) {
        self.outbox.oldest_ts.store(ts.map_or(0, |t| t.max(0) as u64), Relaxed);
    }

    /// Oldest records deleted at a disk cap (policy `drop_oldest`): data lost, said out loud.
    pub fn outbox_dropped(&self, n: u64) {
        let total = self.outbox.dropped.fetch_add(n, Relaxed) + n;
        tracing::warn!(dropped = n, dropped_total = total, "outbox at its cap: oldest records dropped");
    }

    pub fn outbox_paused(&self, paused: bool) {
        self.outbox.paused.store(paused, Relaxed);
    }

    pub fn upserted(&self, n: usize) {
        self.sync.upserted.fetch_add(n as u64, Relaxed);
        self.sync.last_sync_unix_ms.store(unix_ms() as u64, Relaxed);
    }

    pub fn snapshot(&self, device: &str) -> Snapshot {
        let statuses = self.statuses.borrow().clone();
        let cameras: Vec<Arc<CameraStats>> = self.cameras.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect();
        let load = |a: &AtomicU64| a.load(Relaxed);
        Snapshot {
            device: device.to_owned(),
            ts: unix_ms(),
            uptime_s: self.started.elapsed().as_secs(),
            process: ProcessSnapshot::now(),
            cameras: cameras
                .iter()
                .map(|c| {
                    let k = &c.counters;
                    let status = statuses.get(&c.name);
                    let (fps_in, fps_out, detections_per_min) = c.rates();
                    let (p50, p95) = c.latency_percentiles();
                    (
                        c.name.clone(),
                        CameraSnapshot {
                            status: status.map_or("offline", |s| s.state.as_str()).to_owned(),
                            reason: status.and_then(|s| s.reason.clone()),
                            decoder: c.decoder.lock().ok().and_then(|d| d.clone()),
                            fps_in: round2(fps_in),
                            fps_out: round2(fps_out),
                            detections_per_min: round2(detections_per_min),
                            inference_ms_p50: p50.map(|v| round2(v as f64)),
                            inference_ms_p95: p95.map(|v| round2(v as f64)),
                            frames_decoded: load(&k.frames_decoded),
                            frames_sampled: load(&k.frames_sampled),
                            frames_dropped: load(&k.frames_dropped),
                            frames_processed: load(&k.frames_processed),
                            detections: load(&k.detections),
                            boxes_too_small: load(&k.boxes_too_small),
                            embeddings: load(&k.embeddings),
                            frames_gated: load(&k.frames_gated),
                            gated_share: round2(load(&k.frames_gated) as f64 / load(&k.frames_processed).max(1) as f64),
                            deduplicated: load(&k.deduplicated),
                            lag_ms: load(&k.lag_ms),
                            reconnects: load(&k.reconnects),
                            stalls: load(&k.stalls),
                            deltas_skipped: load(&k.deltas_skipped),
                        },
                    )
                })
                .collect(),
            outbox: OutboxSnapshot {
                pending: load(&self.outbox.pending),
                pending_bytes: load(&self.outbox.pending_bytes),
                oldest_pending_age_s: match load(&self.outbox.oldest_ts) {
                    0 => None,
                    ts => Some((unix_ms() as u64).saturating_sub(ts) / 1000),
                },
                accepted: load(&self.outbox.accepted),
                dropped: load(&self.outbox.dropped),
                quarantined: load(&self.outbox.quarantined),
                paused: self.outbox.paused.load(Relaxed),
            },
            sync: SyncSnapshot {
                upserted: load(&self.sync.upserted),
                retried: load(&self.sync.retried),
                dead_lettered: load(&self.sync.dead_lettered),
                last_sync_ts: match load(&self.sync.last_sync_unix_ms) {
                    0 => None,
                    ms => Some(ms),
                },
                last_sync_age_s: match load(&self.sync.last_sync_unix_ms) {
                    0 => None,
                    ms => Some((unix_ms() as u64).saturating_sub(ms) / 1000),
                },
            },
        }
    }
}

/// The JSON published on `{prefix}/{device}/stats` (documented in docs/mqtt.md).
#[derive(Clone, Debug, Serialize)]
pub struct Snapshot {
    pub device: String,
    pub ts: i64,
    pub uptime_s: u64,
    pub process: ProcessSnapshot,
    pub cameras: BTreeMap<String, CameraSnapshot>,
    pub outbox: OutboxSnapshot,
    pub sync: SyncSnapshot,
}

#[derive(Clone, Debug, Serialize)]
pub struct CameraSnapshot {
    pub status: String,
    /// Why the camera is not online (credentials redacted).
    pub reason: Option<String>,
    /// The decoder element in use, once the first frame arrived.
    pub decoder: Option<String>,
    /// Frames per second out of the decoder and through inference, since the previous stats.
    pub fps_in: f64,
    pub fps_out: f64,
    pub detections_per_min: f64,
    /// Inference time per frame over the last 256 frames, milliseconds.
    pub inference_ms_p50: Option<f64>,
    pub inference_ms_p95: Option<f64>,
    pub frames_decoded: u64,
    pub frames_sampled: u64,
    pub frames_dropped: u64,
    pub frames_processed: u64,
    pub detections: u64,
    pub boxes_too_small: u64,
    pub embeddings: u64,
    /// Frames the motion gate kept from the detector, and their share of frames processed.
    pub frames_gated: u64,
    pub gated_share: f64,
    /// Detections of tracked objects that were not embedded again.
    pub deduplicated: u64,
    /// Capture-to-inference wait of the latest frame, milliseconds: how far behind inference is.
    pub lag_ms: u64,
    pub reconnects: u64,
    pub stalls: u64,
    pub deltas_skipped: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct OutboxSnapshot {
    pub pending: u64,
    pub pending_bytes: u64,
    pub oldest_pending_age_s: Option<u64>,
    pub accepted: u64,
    pub dropped: u64,
    /// Records that failed their checksum, set aside and never sent.
    pub quarantined: u64,
    pub paused: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct SyncSnapshot {
    pub upserted: u64,
    pub retried: u64,
    pub dead_lettered: u64,
    pub last_sync_ts: Option<u64>,
    pub last_sync_age_s: Option<u64>,
}

/// The daemon process as the operating system sees it.
#[derive(Clone, Debug, Serialize)]
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
        Self { cpu_s: round2(cpu_s), rss_bytes: rss_pages * page }
    }
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

pub fn unix_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}
