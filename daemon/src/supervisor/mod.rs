//! Wires the stages together, runs them, carries out reloads and commands, and stops them in
//! data order.
//!
//! ```text
//! camera threads ──Frame──▶ scheduler ──▶ analyzer thread ──Vec<Record>──▶ keeper ──(sled)──▶ syncer task
//!   (GStreamer)   (live: newest wins;      (gate, DETR,        (bounded; never   (crop, commit,  (tokio, HTTP)
//!                  files: wait)             track, CLIP)        dropped)          index, release)
//! ```
//! The tokio runtime runs only I/O: the syncer, MQTT status, signals and the watchdog. The main
//! thread waits for events — SIGTERM/SIGINT (stop), SIGHUP or an MQTT `reload` (one reload
//! path: re-read the config, apply camera changes without touching the other cameras), MQTT
//! commands — and carries them out. One [`shutdown::Trigger`] reaches every stage; the
//! supervisor then joins them in data order: sources, inference, keeper, syncer, and
//! last status, which says `offline`.

mod cameras;
mod triggers;

pub use triggers::ConfigLookups;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::mpsc::sync_channel;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context as _;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle as TaskHandle;

use crate::analyzer::{Analyzer, Broker, Settings};
use crate::camera_state::CameraStates;
use crate::clock::IdClock;
use crate::config::Config;
use crate::control::{Command, Request};
use crate::crops::{upload, CropStore};
use crate::detect::Detector;
use crate::embed::Embedder;
use crate::events;
use crate::history::{self, History};
use crate::http::{self, HttpConfig};
use crate::index::DurableMark;
use crate::keeper::{self, DiskGuard, Flush, KeeperLinks, Kept, Release};
use crate::labels::Labels;
use crate::model::EngineReport;
use crate::outbox::{self, Outbox};
use crate::record::NewRecord;
use crate::schedule::Scheduler;
use crate::shutdown::{self, Trigger};
use crate::source;
use crate::stats::{CropNumber, Stats};
use crate::status::{self, BrokerFeed, Reporter, TriggerEntity};
use crate::sync::{self, PineconeClient, SyncError, SyncOptions};
use crate::systemd_notify::{self, Heartbeats};
use crate::triggers::{Prepared, Source};
use cameras::{CameraLinksFactory, Cameras};

/// How `glimpse run` behaves beyond the config file.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Stop by itself once every camera has reached the end of its file and every record is
    /// flushed (and, with `[pinecone]`, acknowledged by the index).
    pub exit_when_done: bool,
    /// How long the syncer and MQTT get to finish once shutdown has begun.
    pub stop_timeout: Duration,
}

/// Records waiting between inference and the keeper: a few frames' worth.
const RECORD_QUEUE: usize = 16;
/// Commands waiting for the main thread.
const COMMAND_QUEUE: usize = 16;
/// How often `--exit-when-done` looks whether everything is delivered.
const DONE_POLL: Duration = Duration::from_millis(200);

pub fn run(config_path: &Path, config: Config, options: RunOptions) -> anyhow::Result<()> {
    source::init()?;
    let outbox = open_outbox(&config)?;
    let models = load_models(&config)?;
    let runtime = start_runtime()?;
    let pinecone = connect_pinecone(&runtime, &config, models.embedder.dimension())?;
    let mut daemon = Daemon::start(&config, runtime, outbox, models, pinecone)?;
    let result = daemon.serve(config_path, config, &options);
    daemon.stop(&options);
    result
}

fn open_outbox(config: &Config) -> anyhow::Result<Arc<Outbox>> {
    let data_dir = &config.device.data_dir;
    match outbox::preflight(data_dir, &config.outbox) {
        // Below min_free_disk the outbox holds its size instead of growing: it can still run.
        Err(e @ outbox::PreflightError::LowDisk { .. }) => tracing::warn!(error = %e, "low disk"),
        other => other?,
    }
    let outbox = Outbox::open(data_dir, &config.outbox)?;
    tracing::info!(pending = outbox.backlog().records, bytes = outbox.backlog().bytes, "outbox opened");
    Ok(Arc::new(outbox))
}

/// The models inference runs, and what the stats say of their engine.
struct Models {
    detector: Detector,
    embedder: Embedder,
    engine: EngineReport,
}

fn load_models(config: &Config) -> anyhow::Result<Models> {
    let engine = config.engine()?;
    let memory = config.form_memory();
    let detector = Detector::load(&config.detector, &engine, Some(&memory))?;
    let embedder = Embedder::load(&config.embedder, &engine, Some(&memory))?;
    let mut report = engine.report();
    report.providers = BTreeMap::from([("detector", detector.provider().to_owned()), ("embedder", embedder.provider().to_owned())]);
    report.form = BTreeMap::from([("detector", detector.form().clone()), ("embedder", embedder.form().clone())]);
    let (detector_form, embedder_form) = (&report.form["detector"], &report.form["embedder"]);
    tracing::info!(detector = %detector_form.file, embedder = %embedder_form.file, dimension = embedder.dimension(), engine = report.engine,
        providers = ?report.providers, detector_form = %detector_form.reason, embedder_form = %embedder_form.reason, "models loaded");
    Ok(Models { detector, embedder, engine: report })
}

/// What the HTTP server needs, opened before any stage starts: a bad token or a taken port
/// stops start-up.
struct OpenHttp {
    section: HttpConfig,
    credentials: http::Credentials,
    library: http::Library,
    fleet: Option<http::Fleet>,
    listener: std::net::TcpListener,
    /// The event history the library reads, for its writer.
    history: Arc<History>,
}

fn open_http(config: &Config, section: &HttpConfig, durable: &DurableMark, labels: &Arc<Labels>) -> anyhow::Result<OpenHttp> {
    let token = section.token().context("http.token_file")?;
    let credentials = http::Credentials { token, tls: section.tls()? };
    let data_dir = config.device.data_dir.clone();
    let crops = config.crops.dir(&data_dir);
    let towers = (config.embedder.clone(), config.engine()?, config.form_memory());
    let history = Arc::new(History::open(&data_dir, config.events.history)?);
    let library = http::Library::new(data_dir, durable.clone(), config.search.clone(), crops, towers, labels.clone(), history.clone());
    let fleet = open_fleet(config)?;
    Ok(OpenHttp { section: section.clone(), credentials, library, fleet, listener: http::bind(section)?, history })
}

/// Fleet scope for the pages and API, with `[pinecone]`: its client, and the bucket the
/// fleet's crops go to when `crops.store` names one.
fn open_fleet(config: &Config) -> anyhow::Result<Option<http::Fleet>> {
    let Some(pinecone) = &config.pinecone else { return Ok(None) };
    let client = PineconeClient::new(pinecone, &pinecone.api_key()?)?;
    Ok(Some(http::Fleet::new(client, upload::Remote::for_reading(&config.crops)?)))
}

fn start_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    let builder = tokio::runtime::Builder::new_multi_thread().worker_threads(2).thread_name("glimpse-io").enable_all().build();
    builder.context("cannot start the async runtime")
}

/// The Pinecone client, after checking the index's dimension (unless the network is not up yet).
fn connect_pinecone(
    runtime: &tokio::runtime::Runtime,
    config: &Config,
    dimension: usize,
) -> anyhow::Result<Option<(PineconeClient, SyncOptions)>> {
    let Some(p) = &config.pinecone else {
        tracing::warn!("no [pinecone] section: records stay in the local outbox");
        return Ok(None);
    };
    let client = PineconeClient::new(p, &p.api_key()?)?;
    match runtime.block_on(sync::check_dimension(&client, dimension)) {
        Ok(stats) => tracing::info!(dimension = ?stats.dimension, vectors = ?stats.total_vector_count, "Pinecone index reachable"),
        Err(e @ SyncError::Dimension { .. }) => return Err(e.into()),
        // The device may boot before the network: buffer now, sync when it comes.
        Err(e) => tracing::warn!(error = %e, "cannot check the Pinecone index at start-up; records are buffered and sync will retry"),
    }
    Ok(Some((client, SyncOptions { batch_size: p.batch_size, in_flight: p.in_flight })))
}

/// The crop store and the index on the device, as configured.
fn open_kept(config: &Config, dimension: usize, stats: &Stats, durable: DurableMark) -> anyhow::Result<Kept> {
    let crops = config
        .crops
        .enabled
        .then(|| CropStore::open(&config.crops, config.snapshots.max_bytes, &config.device.data_dir, config.outbox.policy));
    if let Some(store) = &crops {
        stats.crops_stored(0, 0, 0, store.bytes());
        tracing::info!(dir = %store.dir().display(), bytes = store.bytes(), "crop store opened");
    }
    let mut index = match config.search.enabled {
        true => keeper::open_index(&config.device.data_dir, &config.search, dimension, stats)?,
        false => None,
    };
    if let Some(index) = &mut index {
        index.publish_mark_to(durable);
        stats.index_size(index.len(), index.bytes());
        tracing::info!(records = index.len(), bytes = index.bytes(), mark = ?index.mark(), "local index opened");
    }
    Ok(Kept { crops, index, dimension })
}

/// The crop uploader, when crops go to a remote store.
fn start_uploader(
    runtime: &tokio::runtime::Runtime,
    config: &Config,
    stats: &Arc<Stats>,
    shutdown: &crate::shutdown::Shutdown,
) -> anyhow::Result<Option<(TaskHandle<()>, std::path::PathBuf)>> {
    let (Some(remote), Some(marks)) = (upload::Remote::from_config(&config.crops)?, config.crops.upload_marks(&config.device.data_dir))
    else {
        return Ok(None);
    };
    if !config.crops.enabled {
        return Ok(None);
    }
    tracing::info!(store = %remote.url(), "crops are uploaded to a remote store");
    let task = runtime.spawn(upload::run_uploader(remote, marks.clone(), stats.clone(), shutdown.clone()));
    Ok(Some((task, marks)))
}

/// The supervisor's end of the link from inference to the broker: new trigger sets go to the
/// inference thread, and their entities to the MQTT task.
struct BrokerLinks {
    triggers: std::sync::mpsc::Sender<Vec<Prepared>>,
    entities: watch::Sender<Vec<TriggerEntity>>,
}

impl BrokerLinks {
    /// Prepares `config`'s triggers and hands them to inference and to Home Assistant discovery.
    fn apply(&self, config: &Config) {
        let _ = self.triggers.send(triggers::prepare(config));
        self.entities.send_replace(trigger_entities(config));
    }
}

fn trigger_entities(config: &Config) -> Vec<TriggerEntity> {
    config.triggers.iter().filter(|t| t.enabled).map(|t| TriggerEntity { name: t.name.clone(), cooldown_s: t.cooldown_s }).collect()
}

/// The queue from inference to the broker, when `[mqtt]` is configured.
fn broker_links(
    config: &Config,
    stats: &Arc<Stats>,
) -> Option<(Broker, BrokerFeed, std::sync::mpsc::Receiver<Vec<Prepared>>, BrokerLinks)> {
    config.mqtt.as_ref()?;
    let (queue, messages) = events::queue(config.events.max_queued, stats.clone());
    let events = config.events_enabled().then(|| events::TrackFilter::new(&config.events));
    let (entities, entities_rx) = watch::channel(Vec::new());
    let (triggers, triggers_rx) = std::sync::mpsc::channel();
    let links = BrokerLinks { triggers, entities };
    links.apply(config);
    Some((Broker { queue, events }, BrokerFeed { messages, triggers: entities_rx }, triggers_rx, links))
}

/// Every running stage's handle.
struct Daemon {
    runtime: tokio::runtime::Runtime,
    trigger: Trigger,
    outbox: Arc<Outbox>,
    wake: Arc<Notify>,
    scheduler: Arc<Scheduler>,
    cameras: Cameras,
    analyzer: JoinHandle<()>,
    /// The event history's writer, when `[http]` is configured.
    history_writer: Option<JoinHandle<()>>,
    keeper: JoinHandle<()>,
    /// Records leave the outbox through the syncer, or (no Pinecone) once indexed.
    release: Release,
    syncer: Option<TaskHandle<()>>,
    /// Crop uploads to a remote store, and where their marks are.
    uploader: Option<(TaskHandle<()>, std::path::PathBuf)>,
    status: TaskHandle<()>,
    /// When `[http]` is configured.
    http: Option<TaskHandle<()>>,
    watchdog: TaskHandle<()>,
    commands: mpsc::Receiver<Request>,
    stats: Arc<Stats>,
    /// When `[mqtt]` is configured.
    broker: Option<BrokerLinks>,
}

impl Daemon {
    fn start(
        config: &Config,
        runtime: tokio::runtime::Runtime,
        outbox: Arc<Outbox>,
        models: Models,
        pinecone: Option<(PineconeClient, SyncOptions)>,
    ) -> anyhow::Result<Self> {
        let (trigger, shutdown) = shutdown::channel();
        // How far the keeper's index is durable, for the HTTP API's searches.
        let durable = DurableMark::default();
        let labels = Arc::new(Labels::open(&config.device.data_dir)?);
        let http = config.http.as_ref().map(|section| open_http(config, section, &durable, &labels)).transpose()?;
        let (stats, states, heartbeats) = (Stats::new(), Arc::new(CameraStates::default()), Arc::new(Heartbeats::default()));
        stats.engine_loaded(models.engine);
        stats.outbox_backlog(outbox.backlog());
        stats.outbox_oldest(outbox.oldest_ts()?);
        stats.outbox_quarantined(outbox.quarantined_len() as u64);
        let (wake, scheduler) = (Arc::new(Notify::new()), Scheduler::new());
        let ids = Arc::new(IdClock::after(outbox.id_clock()?));
        let (record_tx, record_rx) = sync_channel::<Vec<NewRecord>>(RECORD_QUEUE);
        let kept = open_kept(config, models.embedder.dimension(), &stats, durable)?;
        let release = if pinecone.is_some() { Release::Syncer } else { Release::Here };
        let links = KeeperLinks {
            stats: stats.clone(),
            heartbeat: heartbeats.register("keeper"),
            wake: wake.clone(),
            ids: ids.clone(),
            shutdown: shutdown.clone(),
        };
        let flush = Flush { after: Duration::from_millis(config.outbox.flush_ms), records: config.outbox.flush_records };
        let disk = DiskGuard { dir: config.device.data_dir.clone(), min_free: config.outbox.min_free_disk.0 };
        let keeper = spawn("keeper", {
            let outbox = outbox.clone();
            move || keeper::run_keeper(outbox, record_rx, kept, release, links, (flush, disk))
        })?;
        let crops = config.crops.enabled.then_some((config.crops.max_px, config.crops.quality));
        let (device, min_box_px, analysis) = (config.device.id.clone(), config.detector.min_box_px, config.analysis.clone());
        let snapshots = (config.crops.enabled && config.snapshots.enabled).then_some((config.snapshots.max_px, config.snapshots.quality));
        let settings = Settings { device, min_box_px, analysis, crops, snapshots };
        let mut analyzer = Analyzer::new(models.detector, models.embedder, settings, stats.clone(), ids);
        let history_writer = http.as_ref().map(|open| history::spawn_writer(open.history.clone())).transpose()?;
        let to_history = history_writer.as_ref().map(|(tx, _)| tx.clone());
        let (feed, broker) = match broker_links(config, &stats) {
            Some((mut to_broker, feed, triggers, links)) => {
                if let Some(tx) = to_history {
                    to_broker.queue = to_broker.queue.with_history(tx);
                }
                analyzer = analyzer.with_broker(to_broker, Some(triggers));
                (Some(feed), Some(links))
            }
            None => {
                if let Some(tx) = to_history {
                    let events = config.events_enabled().then(|| events::TrackFilter::new(&config.events));
                    analyzer =
                        analyzer.with_broker(Broker { queue: events::Queue::without_broker(stats.clone()).with_history(tx), events }, None);
                }
                (None, None)
            }
        };
        let history_writer = history_writer.map(|(_, thread)| thread);
        let analyzer = spawn("inference", {
            let (beat, frames) = (heartbeats.register("inference"), scheduler.clone());
            move || {
                analyzer.run(&frames, record_tx, &beat);
                frames.consumer_gone();
            }
        })?;
        let factory =
            CameraLinksFactory { stats: stats.clone(), states: states.clone(), heartbeats: heartbeats.clone(), shutdown: shutdown.clone() };
        let mut cameras = Cameras::new(scheduler.clone(), factory);
        for camera in &config.cameras {
            cameras.start(camera.clone())?;
        }
        let (command_tx, commands) = mpsc::channel::<Request>(COMMAND_QUEUE);
        let reporter = Reporter::new(config.device.id.clone(), stats.clone(), states);
        let http = http.map(|open| {
            let sources = http::Sources { stats: reporter.view(), library: open.library, fleet: open.fleet };
            runtime.spawn(http::serve(open.listener, open.section, open.credentials, sources, shutdown.clone()))
        });
        let public_base = config.http.as_ref().and_then(HttpConfig::public_base);
        let status = runtime.spawn(status::run_status(config.mqtt.clone(), reporter, command_tx, feed, public_base, shutdown.clone()));
        let uploader = start_uploader(&runtime, config, &stats, &shutdown)?;
        let syncer = pinecone.map(|(client, options)| {
            runtime.spawn(sync::run_label_sender(labels.clone(), client.clone(), shutdown.clone()));
            runtime.spawn(sync::run_syncer(outbox.clone(), client, options, Some(labels), stats.clone(), wake.clone(), shutdown.clone()))
        });
        let watchdog = runtime.spawn(systemd_notify::watchdog_pings(heartbeats, shutdown));
        Ok(Self {
            runtime,
            trigger,
            outbox,
            wake,
            scheduler,
            cameras,
            analyzer,
            history_writer,
            keeper,
            release,
            syncer,
            uploader,
            status,
            http,
            watchdog,
            commands,
            stats,
            broker,
        })
    }

    /// The event loop: until a stop signal, or with `--exit-when-done` until everything is delivered.
    fn serve(&mut self, config_path: &Path, mut current: Config, options: &RunOptions) -> anyhow::Result<()> {
        let mut signals = {
            let _entered = self.runtime.enter();
            Signals::new()?
        };
        systemd_notify::ready(&format!("running {} camera(s)", self.cameras.count()));
        tracing::info!(event = "running", cameras = self.cameras.count(), device = %current.device.id, "glimpse running");
        loop {
            if options.exit_when_done && self.cameras.all_finished() {
                // Every file is read: closing the frames lets inference, then the keeper, finish.
                self.cameras.close();
            }
            if options.exit_when_done && self.all_delivered() {
                tracing::info!(event = "stopping", reason = "all sources finished and every record is delivered", "stopping");
                return Ok(());
            }
            match self.runtime.block_on(next_event(&mut signals, &mut self.commands, options.exit_when_done)) {
                Event::Check => {}
                Event::Stop(why) => {
                    tracing::info!(event = "stopping", reason = why, "stopping");
                    return Ok(());
                }
                Event::Reload => {
                    if let Err(e) = self.reload(config_path, &mut current) {
                        tracing::error!(event = "config_reload_rejected", error = %e, "configuration reload rejected; the running configuration stays in force");
                    }
                }
                Event::Command(request) => {
                    let answer = self.command(&request.command, config_path, &mut current);
                    let _ = request.reply.send(answer);
                }
            }
        }
    }

    /// For `--exit-when-done`: every file is read (inference may then finish), inference and
    /// the keeper have drained, and (when syncing) nothing is pending. Without Pinecone the
    /// keeper has released what the index took before it finished.
    fn all_delivered(&self) -> bool {
        if !self.cameras.all_finished() {
            return false;
        }
        // The uploader's count first: the directory is walked only to confirm that none waits.
        let crops_uploaded = || {
            self.uploader
                .as_ref()
                .is_none_or(|(_, marks)| self.stats.crop_number(CropNumber::Pending) == 0 && upload::waiting(marks).is_empty())
        };
        self.analyzer.is_finished()
            && self.keeper.is_finished()
            && (self.release == Release::Here || self.outbox.backlog().records == 0)
            && crops_uploaded()
    }

    /// Carries out an operator command; the answer is what the result topic says.
    fn command(&mut self, command: &Command, config_path: &Path, current: &mut Config) -> Result<serde_json::Value, String> {
        let text = match command {
            Command::Reload { .. } => self.reload(config_path, current).map_err(|e| e.to_string()),
            Command::Pause { camera, .. } => self.cameras.pause(camera).map_err(|e| e.to_string()),
            Command::Resume { camera, .. } => self.cameras.resume(camera, &current.cameras).map_err(|e| e.to_string()),
            Command::Flush { .. } => {
                self.outbox.flush().map_err(|e| e.to_string())?;
                self.wake.notify_one();
                Ok(format!("outbox flushed; {} record(s) pending", self.outbox.backlog().records))
            }
            Command::Triggers { .. } => return Ok(self.trigger_list(current)),
        };
        text.map(serde_json::Value::String)
    }

    /// Every configured trigger, how it is set up, and what it matched.
    fn trigger_list(&self, current: &Config) -> serde_json::Value {
        let counted = self.stats.triggers();
        let list: Vec<serde_json::Value> = current
            .triggers
            .iter()
            .map(|t| {
                let source = match t.source() {
                    Some(Source::Text(text)) => serde_json::json!({ "text": text }),
                    Some(Source::Image(path)) => serde_json::json!({ "image": path }),
                    Some(Source::Record(id)) => serde_json::json!({ "record": id }),
                    None => serde_json::Value::Null,
                };
                let mut entry = serde_json::json!({
                    "name": t.name,
                    "enabled": t.enabled,
                    "source": source,
                    "threshold": t.threshold,
                    "cameras": t.cameras,
                    "labels": t.labels,
                    "cooldown_s": t.cooldown_s,
                });
                if let (Some(stats), Some(object)) = (counted.get(&t.name), entry.as_object_mut()) {
                    object.extend(stats.report().as_object().cloned().unwrap_or_default());
                }
                entry
            })
            .collect();
        serde_json::Value::Array(list)
    }

    /// The one reload path (SIGHUP and the `reload` command): re-reads the configuration file and
    /// applies what can change while running (the cameras).
    fn reload(&mut self, path: &Path, current: &mut Config) -> Result<String, ReloadError> {
        systemd_notify::reloading();
        let result = Config::load(path).map_err(ReloadError::Config).and_then(|new| {
            let plan = self.cameras.apply(&new.cameras).map_err(ReloadError::Cameras)?;
            let needs_restart = sections_needing_restart(current, &new);
            current.cameras = new.cameras.clone();
            let mut summary = plan.summary();
            if new.triggers != current.triggers {
                if let Some(broker) = &self.broker {
                    broker.apply(&new);
                }
                summary += &format!("; triggers: {}", trigger_changes(&current.triggers, &new.triggers));
                current.triggers = new.triggers;
            }
            Ok(match needs_restart.is_empty() {
                true => format!("configuration reloaded: {summary}"),
                false => format!("configuration reloaded: {summary}; changes to {} take effect after a restart", needs_restart.join(", ")),
            })
        });
        systemd_notify::ready(&format!("running {} camera(s)", self.cameras.count()));
        if let Ok(message) = &result {
            tracing::info!(event = "config_reloaded", path = %path.display(), summary = %message, "{message}");
        }
        result
    }

    /// Stops every stage in data order; each gets `options.stop_timeout` where it talks to the network.
    fn stop(mut self, options: &RunOptions) {
        systemd_notify::stopping();
        self.trigger.begin();
        self.cameras.stop_all();
        self.scheduler.close();
        join("inference", self.analyzer);
        if let Some(writer) = self.history_writer {
            join("history", writer); // it stops once inference, its only sender, is gone
        }
        join("keeper", self.keeper);
        if let Err(e) = self.outbox.flush() {
            tracing::error!(error = %e, "final outbox flush failed");
        }
        let (trigger, status, watchdog, syncer, uploader) = (self.trigger, self.status, self.watchdog, self.syncer, self.uploader);
        let http = self.http;
        self.runtime.block_on(async {
            if let Some(syncer) = syncer {
                if tokio::time::timeout(options.stop_timeout, syncer).await.is_err() {
                    tracing::warn!("syncer did not stop in time; its records stay in the outbox");
                }
            }
            if let Some((uploader, _)) = uploader {
                if tokio::time::timeout(options.stop_timeout, uploader).await.is_err() {
                    tracing::warn!("crop uploader did not stop in time; its crops wait for the next start");
                }
            }
            trigger.finish();
            if tokio::time::timeout(options.stop_timeout, status).await.is_err() {
                tracing::warn!("status publisher did not stop in time");
            }
            if let Some(http) = http {
                if tokio::time::timeout(options.stop_timeout, http).await.is_err() {
                    tracing::warn!("HTTP requests in flight did not finish in time");
                }
            }
            watchdog.abort();
        });
        self.runtime.shutdown_timeout(Duration::from_secs(1));
        tracing::info!(event = "stopped", pending = self.outbox.backlog().records, "stopped");
    }
}

#[derive(Debug, thiserror::Error)]
enum ReloadError {
    #[error("{0}")]
    Config(crate::config::ConfigError),
    #[error("{0}")]
    Cameras(cameras::CameraError),
}

/// The sections whose changes a reload cannot apply.
fn sections_needing_restart(current: &Config, new: &Config) -> Vec<&'static str> {
    let changed = [
        ("[device]", new.device != current.device),
        ("[detector]", new.detector != current.detector),
        ("[embedder]", new.embedder != current.embedder),
        ("[inference]", new.inference != current.inference),
        ("[pinecone]", new.pinecone != current.pinecone),
        ("[mqtt]", new.mqtt != current.mqtt),
        ("[outbox]", new.outbox != current.outbox),
        ("[analysis]", new.analysis != current.analysis),
        ("[crops]", new.crops != current.crops),
        ("[snapshots]", new.snapshots != current.snapshots),
        ("[search]", new.search != current.search),
        ("[events]", new.events != current.events),
        ("[http]", new.http != current.http),
    ];
    changed.into_iter().filter(|(_, changed)| *changed).map(|(name, _)| name).collect()
}

/// "1 added (a), 1 removed (b), 1 changed (c)" between two trigger lists.
fn trigger_changes<'a>(old: &'a [crate::triggers::TriggerConfig], new: &'a [crate::triggers::TriggerConfig]) -> String {
    let named = |list: &'a [crate::triggers::TriggerConfig], name: &str| list.iter().find(|t| t.name == name);
    let added: Vec<&str> = new.iter().filter(|t| named(old, &t.name).is_none()).map(|t| t.name.as_str()).collect();
    let removed: Vec<&str> = old.iter().filter(|t| named(new, &t.name).is_none()).map(|t| t.name.as_str()).collect();
    let changed: Vec<&str> = new.iter().filter(|t| named(old, &t.name).is_some_and(|o| o != *t)).map(|t| t.name.as_str()).collect();
    let part = |n: &[&str], what: &str| (!n.is_empty()).then(|| format!("{} {what} ({})", n.len(), n.join(", ")));
    let parts: Vec<String> = [part(&added, "added"), part(&removed, "removed"), part(&changed, "changed")].into_iter().flatten().collect();
    parts.join(", ")
}

fn spawn<F: FnOnce() + Send + 'static>(name: &str, f: F) -> anyhow::Result<JoinHandle<()>> {
    std::thread::Builder::new().name(name.to_owned()).spawn(f).with_context(|| format!("cannot start thread {name}"))
}

fn join(stage: &str, thread: JoinHandle<()>) {
    if thread.join().is_err() {
        tracing::error!(stage, "thread panicked");
    }
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
        match checking {
            true => tokio::time::sleep(DONE_POLL).await,
            false => std::future::pending::<()>().await,
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
