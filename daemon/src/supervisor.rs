//! Wires the stages together, runs them, applies reloads and commands, and stops them in order.
//!
//! Threads and channels (data flows one way; every channel is bounded):
//!
//! ```text
//! camera threads ──Frame──▶ inference thread ──Vec<Record>──▶ outbox writer ──(sled)──▶ syncer task
//!   (GStreamer)   (live: drop when full;      (never dropped:        (group commit,        (tokio, HTTP)
//!                  files: wait)                blocks instead)         then wake syncer)
//! ```
//! The tokio runtime runs only I/O: the syncer, MQTT status, signals and sd_notify. Inference
//! runs on its own thread. The main thread waits for events — SIGTERM/SIGINT (stop), SIGHUP or
//! an MQTT `reload` (re-read the config and apply camera changes without touching the other
//! cameras), MQTT commands — and carries them out. Shutdown follows the data: sources stop,
//! frames in flight finish, records are flushed, the syncer stops, then status says `offline`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::{mpsc, watch, Notify};

use crate::analyze::analyze;
use crate::config::Config;
use crate::control::{Command, Request};
use crate::detect::Detector;
use crate::embed::Embedder;
use crate::outbox::{self, Outbox, WriterLinks};
use crate::record::Record;
use crate::schedule::{RecvError, Scheduler};
use crate::source::{self, CameraConfig};
use crate::stats::{CameraState, Stats};
use crate::status;
use crate::sync::{self, PineconeClient, SyncError, SyncOptions};
use crate::systemd_notify::{self, Heartbeat, Heartbeats};
use crate::track::{AnalysisConfig, Attention};

/// How `glimpse run` behaves beyond the config file.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Stop by itself once every camera has reached the end of its file and every record is
    /// flushed (and, with `[pinecone]`, acknowledged by the index).
    pub exit_when_done: bool,
    /// How long the syncer and MQTT get to finish once shutdown has begun.
    pub stop_timeout: Duration,
}

/// Records waiting between inference and the outbox writer: a few frames' worth.
const RECORD_QUEUE: usize = 16;
/// Commands waiting for the main thread.
const COMMAND_QUEUE: usize = 16;
/// How often an idle stage shows it is alive.
pub const IDLE_BEAT: Duration = Duration::from_millis(250);

pub fn run(config_path: &Path, config: Config, options: RunOptions) -> anyhow::Result<()> {
    source::init()?;
    let data_dir = &config.device.data_dir;
    std::fs::create_dir_all(data_dir).with_context(|| format!("cannot create data_dir {}", data_dir.display()))?;
    let outbox = Arc::new(Outbox::open(data_dir, &config.outbox)?);
    crate::model::set_inference_threads(config.device.inference_threads);
    let detector = Detector::load(&config.detector)?;
    let embedder = Embedder::load(&config.embedder)?;
    tracing::info!(detector = %config.detector.model.display(), embedder = %config.embedder.model.display(), dimension = embedder.dimension(), "models loaded");

    let stats = Stats::new();
    stats.outbox_backlog(outbox.backlog());
    stats.outbox_oldest(outbox.oldest_ts()?);
    stats.outbox.quarantined.store(outbox.quarantined_len() as u64, Ordering::Relaxed);
    tracing::info!(pending = outbox.backlog().records, bytes = outbox.backlog().bytes, "outbox opened");

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("glimpse-io")
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;

    let pinecone = match &config.pinecone {
        Some(p) => {
            let key = p.api_key().map_err(|e| anyhow::anyhow!(e))?;
            let client = PineconeClient::new(p, &key)?;
            runtime.block_on(check_index(&client, embedder.dimension()))?;
            Some((client, SyncOptions { batch_size: p.batch_size, in_flight: p.in_flight }))
        }
        None => {
            tracing::warn!("no [pinecone] section: records stay in the local outbox");
            None
        }
    };

    // Two stop signals, because status must report the syncer's final figures: the syncer
    // stops first, status (and its `offline`) last.
    let (stop_sync_tx, stop_sync_rx) = watch::channel(false);
    let (stop_status_tx, stop_status_rx) = watch::channel(false);
    let wake = Arc::new(Notify::new());
    let stopping = Arc::new(AtomicBool::new(false));
    let heartbeats = Arc::new(Heartbeats::default());

    let scheduler = Scheduler::new();
    let (record_tx, record_rx) = sync_channel::<Vec<Record>>(RECORD_QUEUE);
    let writer = spawn("outbox-writer", {
        let links = WriterLinks {
            stats: stats.clone(),
            wake: wake.clone(),
            stopping: stopping.clone(),
            heartbeat: heartbeats.register("outbox writer"),
        };
        let (outbox, flush_ms, flush_records) = (outbox.clone(), config.outbox.flush_ms, config.outbox.flush_records);
        move || outbox::run_writer(outbox, record_rx, links, flush_ms, flush_records)
    })?;
    let inference = spawn("inference", {
        let models = Models {
            detector,
            embedder,
            device: config.device.id.clone(),
            min_box: config.detector.min_box_px,
            analysis: config.analysis.clone(),
        };
        let (beat, frames) = (heartbeats.register("inference"), scheduler.clone());
        move || {
            run_inference(&frames, record_tx, models, &beat);
            frames.consumer_gone();
        }
    })?;
    let mut cameras = Cameras {
        running: BTreeMap::new(),
        paused: BTreeSet::new(),
        frames: Some(scheduler.clone()),
        stats: stats.clone(),
        heartbeats: heartbeats.clone(),
    };
    for camera in &config.cameras {
        cameras.start(camera.clone())?;
    }

    let (command_tx, mut command_rx) = mpsc::channel::<Request>(COMMAND_QUEUE);
    let status =
        runtime.spawn(status::run_status(config.mqtt.clone(), config.device.id.clone(), stats.clone(), command_tx, stop_status_rx.clone()));
    let syncer = pinecone.map(|(client, options)| {
        runtime.spawn(sync::run_syncer(outbox.clone(), client, options, stats.clone(), wake.clone(), stop_sync_rx))
    });
    let watchdog = runtime.spawn(systemd_notify::watchdog_pings(heartbeats.clone(), stop_status_rx));
    let mut signals = {
        let _entered = runtime.enter();
        Signals::new()?
    };
    systemd_notify::ready(&format!("running {} camera(s)", cameras.running.len()));
    tracing::info!(cameras = cameras.running.len(), device = %config.device.id, "glimpse running");

    let mut current = config;
    let syncing = syncer.is_some();
    loop {
        if options.exit_when_done && cameras.all_finished() {
            // Every file is read: let inference and the writer drain and finish.
            if let Some(frames) = cameras.frames.take() {
                frames.close();
            }
            if inference.is_finished() && writer.is_finished() && (!syncing || outbox.backlog().records == 0) {
                tracing::info!(reason = "all sources finished and every record is delivered", "stopping");
                break;
            }
        }
        match runtime.block_on(next_event(&mut signals, &mut command_rx, options.exit_when_done)) {
            Event::Check => {}
            Event::Stop(why) => {
                tracing::info!(reason = why, "stopping");
                break;
            }
            Event::Reload => {
                systemd_notify::reloading();
                let result = reload(config_path, &mut current, &mut cameras);
                systemd_notify::ready(&format!("running {} camera(s)", cameras.running.len()));
                if let Err(e) = result {
                    tracing::error!(error = %e, "configuration reload rejected; the running configuration stays in force");
                }
            }
            Event::Command(request) => {
                let result = match &request.command {
                    Command::Reload { .. } => {
                        systemd_notify::reloading();
                        let r = reload(config_path, &mut current, &mut cameras);
                        systemd_notify::ready(&format!("running {} camera(s)", cameras.running.len()));
                        r
                    }
                    Command::Pause { camera, .. } => cameras.pause(camera),
                    Command::Resume { camera, .. } => cameras.resume(camera, &current),
                    Command::Flush { .. } => outbox
                        .flush()
                        .map(|()| {
                            wake.notify_one();
                            format!("outbox flushed; {} record(s) pending", outbox.backlog().records)
                        })
                        .map_err(|e| e.to_string()),
                };
                let _ = request.reply.send(result);
            }
        }
    }
    systemd_notify::stopping();

    stopping.store(true, Ordering::Relaxed);
    cameras.stop_all();
    drop(cameras);
    scheduler.close();
    if inference.join().is_err() {
        tracing::error!("inference thread panicked");
    }
    if writer.join().is_err() {
        tracing::error!("outbox writer thread panicked");
    }
    if let Err(e) = outbox.flush() {
        tracing::error!(error = %e, "final outbox flush failed");
    }
    let _ = stop_sync_tx.send(true);
    runtime.block_on(async {
        if let Some(syncer) = syncer {
            if tokio::time::timeout(options.stop_timeout, syncer).await.is_err() {
                tracing::warn!("syncer did not stop in time; its records stay in the outbox");
            }
        }
        let _ = stop_status_tx.send(true);
        if tokio::time::timeout(options.stop_timeout, status).await.is_err() {
            tracing::warn!("status publisher did not stop in time");
        }
        watchdog.abort();
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
    tracing::info!(pending = outbox.backlog().records, "stopped");
    Ok(())
}

fn spawn<F: FnOnce() + Send + 'static>(name: &str, f: F) -> anyhow::Result<JoinHandle<()>> {
    std::thread::Builder::new().name(name.to_owned()).spawn(f).with_context(|| format!("cannot start thread {name}"))
}

async fn check_index(client: &PineconeClient, dimension: usize) -> anyhow::Result<()> {
    match sync::check_dimension(client, dimension).await {
        Ok(stats) => {
            tracing::info!(dimension = ?stats.dimension, vectors = ?stats.total_vector_count, "Pinecone index reachable");
            Ok(())
        }
        Err(e @ SyncError::Dimension { .. }) => Err(e.into()),
        // The device may boot before the network: buffer now, sync when it comes.
        Err(e) => {
            tracing::warn!(error = %e, "cannot check the Pinecone index at start-up; records are buffered and sync will retry");
            Ok(())
        }
    }
}

/// The running camera threads, by name.
struct Cameras {
    running: BTreeMap<String, RunningCamera>,
    /// Cameras an operator paused; they stay stopped across reloads until resumed.
    paused: BTreeSet<String>,
    /// Where new camera threads send frames; `None` once `--exit-when-done` saw every file end.
    frames: Option<Arc<Scheduler>>,
    stats: Arc<Stats>,
    heartbeats: Arc<Heartbeats>,
}

struct RunningCamera {
    config: CameraConfig,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl Cameras {
    fn start(&mut self, camera: CameraConfig) -> anyhow::Result<()> {
        let name = camera.name.clone();
        if self.paused.contains(&name) {
            self.stats.add_camera(&name);
            self.stats.set_camera_status(&name, CameraState::Offline, Some("paused".into()));
            return Ok(());
        }
        let frames = self.frames.as_ref().context("the daemon is finishing; no camera can start")?.sender(&name);
        let cam = self.stats.add_camera(&name);
        let stop = Arc::new(AtomicBool::new(false));
        let beat = self.heartbeats.register(&format!("camera {name}"));
        let (config, stats, flag) = (camera.clone(), self.stats.clone(), stop.clone());
        let thread = spawn(&format!("cam-{name}"), move || source::run_camera(config, cam, frames, stats, flag, beat))?;
        self.running.insert(name, RunningCamera { config: camera, stop, thread });
        Ok(())
    }

    fn stop(&mut self, name: &str) {
        if let Some(camera) = self.running.remove(name) {
            camera.stop.store(true, Ordering::Relaxed);
            if camera.thread.join().is_err() {
                tracing::error!(camera = name, "camera thread panicked");
            }
        }
        self.heartbeats.unregister(&format!("camera {name}"));
    }

    fn stop_all(&mut self) {
        for camera in self.running.values() {
            camera.stop.store(true, Ordering::Relaxed);
        }
        let names: Vec<String> = self.running.keys().cloned().collect();
        for name in names {
            self.stop(&name);
        }
    }

    fn all_finished(&self) -> bool {
        self.running.values().all(|c| c.thread.is_finished())
    }

    /// Applies a new camera list: removed cameras stop, new ones start, changed ones restart,
    /// the rest are not touched.
    fn apply(&mut self, wanted: &[CameraConfig]) -> anyhow::Result<String> {
        let wanted_names: BTreeSet<&str> = wanted.iter().map(|c| c.name.as_str()).collect();
        let removed: Vec<String> = self.configured().into_iter().filter(|n| !wanted_names.contains(n.as_str())).collect();
        for name in &removed {
            self.stop(name);
            self.paused.remove(name);
            self.stats.remove_camera(name);
        }
        let (mut added, mut changed, mut unchanged) = (0, 0, 0);
        for camera in wanted {
            match self.running.get(&camera.name) {
                Some(running) if running.config == *camera => unchanged += 1,
                Some(_) => {
                    self.stop(&camera.name);
                    self.start(camera.clone())?;
                    changed += 1;
                }
                None if self.paused.contains(&camera.name) => unchanged += 1,
                None => {
                    self.start(camera.clone())?;
                    added += 1;
                }
            }
        }
        Ok(format!("{added} camera(s) added, {} removed, {changed} restarted with new settings, {unchanged} untouched", removed.len()))
    }

    fn configured(&self) -> Vec<String> {
        self.running.keys().chain(self.paused.iter()).cloned().collect()
    }

    fn pause(&mut self, name: &str) -> Result<String, String> {
        if self.paused.contains(name) {
            return Ok(format!("camera {name} was already paused"));
        }
        if !self.running.contains_key(name) {
            return Err(format!("no camera named {name:?}; cameras: {}", self.configured().join(", ")));
        }
        self.stop(name);
        self.paused.insert(name.to_owned());
        self.stats.set_camera_status(name, CameraState::Offline, Some("paused".into()));
        Ok(format!("camera {name} paused"))
    }

    fn resume(&mut self, name: &str, config: &Config) -> Result<String, String> {
        if !self.paused.remove(name) {
            return match self.running.contains_key(name) {
                true => Ok(format!("camera {name} was not paused")),
                false => Err(format!("no camera named {name:?}; cameras: {}", self.configured().join(", "))),
            };
        }
        let camera =
            config.cameras.iter().find(|c| c.name == name).cloned().ok_or_else(|| format!("camera {name} is no longer configured"))?;
        self.start(camera).map_err(|e| format!("{e:#}"))?;
        Ok(format!("camera {name} resumed"))
    }
}

/// Re-reads the configuration file and applies what can change while running (the cameras).
fn reload(path: &Path, current: &mut Config, cameras: &mut Cameras) -> Result<String, String> {
    let new = Config::load(path).map_err(|e| e.to_string())?;
    let mut needs_restart = Vec::new();
    if new.device != current.device {
        needs_restart.push("[device]");
    }
    if new.detector != current.detector {
        needs_restart.push("[detector]");
    }
    if new.embedder != current.embedder {
        needs_restart.push("[embedder]");
    }
    if new.pinecone != current.pinecone {
        needs_restart.push("[pinecone]");
    }
    if new.mqtt != current.mqtt {
        needs_restart.push("[mqtt]");
    }
    if new.outbox != current.outbox {
        needs_restart.push("[outbox]");
    }
    if new.analysis != current.analysis {
        needs_restart.push("[analysis]");
    }
    let summary = cameras.apply(&new.cameras).map_err(|e| format!("{e:#}"))?;
    current.cameras = new.cameras;
    let message = if needs_restart.is_empty() {
        format!("configuration reloaded: {summary}")
    } else {
        format!("configuration reloaded: {summary}; changes to {} take effect after a restart", needs_restart.join(", "))
    };
    tracing::info!(path = %path.display(), "{message}");
    Ok(message)
}

enum Event {
    /// Time to look at whether `--exit-when-done` is satisfied.
    Check,
    Stop(&'static str),
    Reload,
    Command(Request),
}

struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Self> {
        let install = |kind| signal(kind).context("cannot install signal handlers");
        Ok(Self { term: install(SignalKind::terminate())?, int: install(SignalKind::interrupt())?, hup: install(SignalKind::hangup())? })
    }
}

async fn next_event(signals: &mut Signals, commands: &mut mpsc::Receiver<Request>, checking: bool) -> Event {
    let poll = async {
        if checking {
            tokio::time::sleep(Duration::from_millis(200)).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        _ = signals.term.recv() => Event::Stop("SIGTERM"),
        _ = signals.int.recv() => Event::Stop("SIGINT"),
        _ = signals.hup.recv() => Event::Reload,
        Some(request) = commands.recv() => Event::Command(request),
        _ = poll => Event::Check,
    }
}

/// What the inference thread owns: one loaded copy of each model, serving every camera.
struct Models {
    detector: Detector,
    embedder: Embedder,
    device: String,
    min_box: u32,
    analysis: AnalysisConfig,
}

/// The inference thread. Each camera gets its own motion gate and tracker, made on its first frame.
fn run_inference(frames: &Scheduler, records: SyncSender<Vec<Record>>, mut models: Models, beat: &Heartbeat) {
    let mut attention: HashMap<String, Attention> = HashMap::new();
    loop {
        beat.beat();
        let frame = match frames.recv_timeout(IDLE_BEAT) {
            Ok(frame) => frame,
            Err(RecvError::Timeout) => continue,
            Err(RecvError::Finished) => return,
        };
        test_hooks::maybe_wedge_inference();
        let started = Instant::now();
        let camera = &frame.camera;
        camera.queue_lag(crate::stats::unix_ms().saturating_sub(frame.ts));
        let attention = attention.entry(camera.name.clone()).or_insert_with(|| Attention::new(&models.analysis, &camera.name));
        match analyze(&frame, &models.device, &camera.name, &mut models.detector, &mut models.embedder, models.min_box, attention) {
            Ok(analysis) => {
                if analysis.gated {
                    camera.frame_gated();
                    continue;
                }
                camera.inference_latency(started.elapsed());
                camera.frame_processed(analysis.detections, analysis.too_small, analysis.records.len(), analysis.deduplicated);
                if !analysis.records.is_empty() && records.send(analysis.records).is_err() {
                    tracing::error!("outbox writer is gone; stopping inference");
                    return;
                }
            }
            Err(e) => tracing::error!(camera = %camera.name, error = %e, "inference failed on a frame"),
        }
    }
}

/// Faults that only debug builds can be told to inject, for tests of the watchdog.
mod test_hooks {
    /// With `GLIMPSE_TEST_WEDGE_INFERENCE=1` (debug builds only), inference hangs on its first
    /// frame, as a wedged model would.
    pub fn maybe_wedge_inference() {
        #[cfg(debug_assertions)]
        if std::env::var_os("GLIMPSE_TEST_WEDGE_INFERENCE").is_some() {
            tracing::warn!("GLIMPSE_TEST_WEDGE_INFERENCE: inference hangs now");
            loop {
                std::thread::sleep(std::time::Duration::from_secs(3600));
            }
        }
    }
}
