//! Wires the stages together, runs them, and stops them in order.
//!
//! Threads and channels (data flows one way; every channel is bounded):
//!
//! ```text
//! camera threads ──Frame──▶ inference thread ──Vec<Record>──▶ outbox writer ──(sled)──▶ syncer task
//!   (GStreamer)   (live: drop when full;      (never dropped:        (append + flush,       (tokio, HTTP)
//!                  files: wait)                blocks instead)         then wake syncer)
//! ```
//! The tokio runtime runs only I/O: the syncer, MQTT status, signals and sd_notify. Inference
//! runs on its own thread. Shutdown follows the data: sources stop, frames in flight finish,
//! records are flushed, then the syncer and status tasks are told to stop (status says
//! `offline` last).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::{watch, Notify};

use crate::analyze::analyze;
use crate::config::Config;
use crate::detect::Detector;
use crate::embed::Embedder;
use crate::outbox::{self, Outbox, WriterLinks};
use crate::record::Record;
use crate::source::{self, Frame};
use crate::stats::Stats;
use crate::sync::{self, PineconeClient, SyncError, SyncOptions};
use crate::{status, systemd_notify};

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

pub fn run(config: Config, options: RunOptions) -> anyhow::Result<()> {
    source::init()?;
    let data_dir = &config.device.data_dir;
    std::fs::create_dir_all(data_dir).with_context(|| format!("cannot create data_dir {}", data_dir.display()))?;
    let outbox = Arc::new(Outbox::open(data_dir, &config.outbox)?);
    let detector = Detector::load(&config.detector)?;
    let embedder = Embedder::load(&config.embedder)?;
    tracing::info!(detector = %config.detector.model.display(), embedder = %config.embedder.model.display(), dimension = embedder.dimension(), "models loaded");

    let names: Vec<String> = config.cameras.iter().map(|c| c.name.clone()).collect();
    let stats = Stats::new(&names);
    stats.outbox_backlog(outbox.backlog());
    stats.outbox_oldest(outbox.oldest_ts()?);
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
    let stop_sources = Arc::new(AtomicBool::new(false));

    let (frame_tx, frame_rx) = sync_channel::<Frame>(config.cameras.len().max(1));
    let (record_tx, record_rx) = sync_channel::<Vec<Record>>(RECORD_QUEUE);
    let writer = spawn("outbox-writer", {
        let links = WriterLinks { stats: stats.clone(), wake: wake.clone(), stopping: stop_sources.clone() };
        let (outbox, flush_ms, flush_records) = (outbox.clone(), config.outbox.flush_ms, config.outbox.flush_records);
        move || outbox::run_writer(outbox, record_rx, links, flush_ms, flush_records)
    })?;
    let inference = spawn("inference", {
        let (config, stats) = (config.clone(), stats.clone());
        move || run_inference(frame_rx, record_tx, detector, embedder, config, stats)
    })?;
    let mut cameras = Vec::new();
    for (index, camera) in config.cameras.iter().enumerate() {
        let (camera, frames, stats, stop) = (camera.clone(), frame_tx.clone(), stats.clone(), stop_sources.clone());
        cameras.push(spawn(&format!("cam-{}", camera.name), move || source::run_camera(index, camera, frames, stats, stop))?);
    }
    drop(frame_tx);

    let status = runtime.spawn(status::run_status(config.mqtt.clone(), config.device.id.clone(), stats.clone(), stop_status_rx.clone()));
    let syncer = pinecone.map(|(client, options)| {
        runtime.spawn(sync::run_syncer(outbox.clone(), client, options, stats.clone(), wake.clone(), stop_sync_rx))
    });
    let watchdog = runtime.spawn(systemd_notify::watchdog_pings(stop_status_rx));
    systemd_notify::ready(config.cameras.len());
    tracing::info!(cameras = config.cameras.len(), device = %config.device.id, "glimpse running");

    let syncing = syncer.is_some();
    let done = || {
        cameras.iter().all(|c| c.is_finished())
            && inference.is_finished()
            && writer.is_finished()
            && (!syncing || outbox.backlog().records == 0)
    };
    let why = runtime.block_on(wait_for_stop(options.exit_when_done, done));
    tracing::info!(reason = why, "stopping");
    systemd_notify::stopping();

    stop_sources.store(true, Ordering::Relaxed);
    for (camera, handle) in config.cameras.iter().zip(cameras) {
        if handle.join().is_err() {
            tracing::error!(camera = %camera.name, "camera thread panicked");
        }
    }
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

/// Waits for SIGTERM or SIGINT, or (with `exit_when_done`) for `done()` to hold.
async fn wait_for_stop(exit_when_done: bool, done: impl Fn() -> bool) -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (mut term, mut int) = match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(t), Ok(i)) => (t, i),
        _ => {
            tracing::error!("cannot install signal handlers; stopping");
            return "no signal handlers";
        }
    };
    let mut poll = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            _ = term.recv() => return "SIGTERM",
            _ = int.recv() => return "SIGINT",
            _ = poll.tick() => if exit_when_done && done() { return "all sources finished and every record is delivered" },
        }
    }
}

/// The inference thread: one loaded copy of each model serves every camera.
fn run_inference(
    frames: Receiver<Frame>,
    records: SyncSender<Vec<Record>>,
    mut detector: Detector,
    embedder: Embedder,
    config: Config,
    stats: Arc<Stats>,
) {
    let min_box = config.detector.min_box_px;
    for frame in frames {
        let camera = &config.cameras[frame.camera].name;
        match analyze(&frame, &config.device.id, camera, &mut detector, &embedder, min_box) {
            Ok(analysis) => {
                stats.camera(frame.camera).frame_processed(analysis.detections, analysis.too_small, analysis.records.len());
                if !analysis.records.is_empty() && records.send(analysis.records).is_err() {
                    tracing::error!("outbox writer is gone; stopping inference");
                    return;
                }
            }
            Err(e) => tracing::error!(camera = %camera, error = %e, "inference failed on a frame"),
        }
    }
}
