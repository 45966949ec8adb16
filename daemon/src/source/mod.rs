//! Video ingest: one GStreamer pipeline and one thread per camera, sampled to `sample_fps` RGB
//! frames (see `pipeline.rs` for the pipeline and `decoder.rs` for the decoder choice).
//!
//! Each camera's thread is its supervisor: it (re)starts the pipeline, pulls samples, copies
//! them out and hands them to inference, and reconnects with capped exponential backoff and
//! jitter after an ERROR, after end of stream on a live source, and when nothing arrived for
//! `stall_timeout_s` (files included: a wedged file pipeline is restarted from the start, which
//! gives the same record ids again). Authentication failures and missing streams are retried slowly.
//! Live sources never wait for inference: a frame that finds the queue full is dropped and
//! counted. File sources wait, so every sampled frame of a file is processed.
//!
//! This module knows nothing of models, the outbox or MQTT: it produces [`Frame`]s, reports
//! the camera's events to its [`CameraStats`] and its state to [`CameraStates`].

pub mod decoder;
pub(crate) mod pipeline;
pub mod uri;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use serde::Deserialize;

pub use decoder::DecoderMode;
pub use pipeline::KeyframeGate;
use pipeline::{bus_error, copy_frame, first_error, Probes, PULL_TIMEOUT};
pub use uri::{CameraUri, SourceKind};

use crate::backoff::Backoff;
use crate::camera_state::{CameraState, CameraStates};
use crate::clock::unix_ms;
use crate::redact::redact_secrets;
use crate::schedule::{FrameSender, PutError};
use crate::shutdown::Shutdown;
use crate::stats::CameraStats;
use crate::systemd_notify::Heartbeat;
use crate::validate::{check_name, KeyPath, Problem};

/// `[[cameras]]`: one video source.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct CameraConfig {
    /// `[a-z0-9_-]{1,64}`; appears in MQTT topics and vector ids.
    pub name: String,
    /// `rtsp://`, `rtsps://`, `file:///abs/path`, `http(s)://`, `v4l2:///dev/videoN`, `csi://N`
    /// or `test:`; parsed once into its [`SourceKind`].
    pub uri: CameraUri,
    /// Frames per second handed to detection. Default 1.
    #[serde(default = "default_sample_fps")]
    pub sample_fps: f64,
    /// Seconds without data after which a source is restarted (files: not counting waits for
    /// inference). Default 10.
    #[serde(default = "default_stall_timeout_s")]
    pub stall_timeout_s: f64,
    /// `auto` (hardware decoder when installed, else software), `software`, or an element name.
    #[serde(default)]
    pub decoder: DecoderMode,
    /// Decode keyframes only: `auto` (when keyframes come at least as often as samples),
    /// `always` or `never`. Default `auto`.
    #[serde(default)]
    pub keyframes: KeyframeMode,
    /// RTSP transport: `tcp` (default) or `udp`.
    #[serde(default)]
    pub transport: Transport,
    /// `file://` only: start again at the end, in real time, like a camera. Default false.
    #[serde(default)]
    pub r#loop: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyframeMode {
    #[default]
    Auto,
    Always,
    Never,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    #[default]
    Tcp,
    Udp,
}

fn default_sample_fps() -> f64 {
    1.0
}
fn default_stall_timeout_s() -> f64 {
    10.0
}

/// How long a file source waits for its slot before it beats and checks for a stop.
const BACKPRESSURE_POLL: Duration = Duration::from_millis(20);

impl CameraConfig {
    pub fn validate(&self, at: &KeyPath, problems: &mut Vec<Problem>) {
        check_name(&self.name, &at.key("name"), problems);
        if let SourceKind::Unsupported(why) = self.uri.kind() {
            problems.push(Problem::new(at.key("uri"), why.clone()));
        }
        if !(self.sample_fps > 0.0 && self.sample_fps <= 60.0) {
            problems.push(Problem::new(at.key("sample_fps"), format!("must be above 0 and at most 60 (got {})", self.sample_fps)));
        }
        if !(self.stall_timeout_s >= 1.0 && self.stall_timeout_s <= 3600.0) {
            problems.push(Problem::new(at.key("stall_timeout_s"), "must be between 1 and 3600 seconds"));
        }
        if self.r#loop && !matches!(self.uri.kind(), SourceKind::File(_)) {
            problems.push(Problem::new(at.key("loop"), "only file:// cameras can loop"));
        }
        if self.transport == Transport::Udp && *self.uri.kind() != SourceKind::Rtsp {
            problems.push(Problem::new(at.key("transport"), "only rtsp:// cameras have a transport"));
        }
    }

    /// Files are processed completely at their own pace; everything else (and a looping file)
    /// runs in real time.
    pub fn is_live(&self) -> bool {
        self.r#loop || !self.uri.is_file()
    }
}

/// A camera's name as frames carry it: cheap to clone.
pub type CameraId = Arc<str>;

/// One sampled frame, copied out of GStreamer.
pub struct Frame {
    pub camera: CameraId,
    /// A live source (decisions use capture time) or a file (decisions use stream position).
    pub live: bool,
    /// When it was captured, monotonic.
    pub captured: Instant,
    /// Position of the frame in its stream, milliseconds (files: from the start of the file).
    pub pts_ms: u64,
    /// Capture time, unix milliseconds: for people, never for decisions.
    pub ts: i64,
    pub image: image::RgbImage,
}

/// Why a pipeline stopped.
#[derive(Debug)]
enum Ended {
    /// End of stream: final for files, a reason to reconnect for live sources.
    Eos,
    Stalled,
    Failed(Failure),
    ShutDown,
}

/// A pipeline failure, classified by GStreamer's error code: some will not clear up by retrying
/// quickly.
#[derive(Debug)]
pub(crate) struct Failure {
    kind: FailureKind,
    detail: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FailureKind {
    /// The camera refuses our credentials (RTSP/HTTP 401).
    NotAuthorized,
    /// The stream or file does not exist (404, no such file).
    NotFound,
    Other,
}

impl Failure {
    /// A failure with a GStreamer resource error code, when the error has one.
    pub(crate) fn classified(code: Option<gst::ResourceError>, detail: String) -> Self {
        let kind = match code {
            Some(gst::ResourceError::NotAuthorized) => FailureKind::NotAuthorized,
            Some(gst::ResourceError::NotFound) => FailureKind::NotFound,
            _ => FailureKind::Other,
        };
        Self { kind, detail }
    }

    fn other(detail: String) -> Self {
        Self { kind: FailureKind::Other, detail }
    }

    /// What the operator reads: the cause first when it is known.
    fn reason(&self) -> String {
        match self.kind {
            FailureKind::NotAuthorized => format!("authentication failed (401): check the user and password in the URI; {}", self.detail),
            FailureKind::NotFound => format!("stream not found: check the URI's path; {}", self.detail),
            FailureKind::Other => self.detail.clone(),
        }
    }

    /// Retry at the slowest pace: these do not clear up by themselves within seconds.
    fn slow(&self) -> bool {
        self.kind != FailureKind::Other
    }
}

#[derive(Debug, thiserror::Error)]
#[error("GStreamer failed to initialise ({0}); is libgstreamer1.0 installed?")]
pub struct InitError(#[from] gst::glib::Error);

pub fn init() -> Result<(), InitError> {
    Ok(gst::init()?)
}

/// What a camera thread reports to: its own numbers and every camera's state.
pub struct CameraLinks {
    pub stats: Arc<CameraStats>,
    pub states: Arc<CameraStates>,
    pub frames: FrameSender,
    pub heartbeat: Arc<Heartbeat>,
    /// The daemon's shutdown, or this camera's own stop (a reload removed it).
    pub stop: Shutdown,
}

/// Runs one camera until it is stopped: connects, streams, and reconnects as the module
/// documentation says.
pub fn run_camera(camera: CameraConfig, links: CameraLinks) {
    let name = &camera.name;
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
    let mut hardware_failed = false;
    loop {
        tracing::info!(event = "source_starting", camera = %name, uri = %camera.uri.redacted(), "starting source");
        let probes = Arc::new(Probes::default());
        let (ended, delivered) = stream_once(&camera, &links, &probes, hardware_failed);
        if delivered > 0 {
            backoff.reset();
        }
        let (state, reason, delay) = match &ended {
            Ended::ShutDown => break,
            Ended::Eos if camera.r#loop => {
                tracing::debug!(event = "file_looped", camera = %name, "end of file: looping");
                continue;
            }
            Ended::Eos if !camera.is_live() => {
                tracing::info!(camera = %name, "end of file: every sampled frame was handed to inference");
                links.states.set(name, CameraState::Offline, Some("end of file".into()));
                // Finished, not stuck: the watchdog must not wait for this thread any more.
                links.heartbeat.retire();
                return;
            }
            Ended::Eos => (CameraState::Offline, "end of stream; reconnecting".to_owned(), backoff.next_delay()),
            Ended::Stalled => {
                (CameraState::Offline, format!("no data for {} s; reconnecting", camera.stall_timeout_s), backoff.next_delay())
            }
            Ended::Failed(failure) => {
                if delivered == 0 && probes.hardware_decoder.load(Ordering::Relaxed) && camera.decoder == DecoderMode::Auto {
                    tracing::warn!(camera = %name, "the hardware decoder failed before the first frame; using software from now on");
                    hardware_failed = true;
                }
                let delay = if failure.slow() { backoff.cap() } else { backoff.next_delay() };
                (CameraState::Error, redact_secrets(&failure.reason(), camera.uri.as_str()), delay)
            }
        };
        links.states.set(name, state, Some(reason.clone()));
        tracing::warn!(camera = %name, %reason, retry_in_ms = delay.as_millis() as u64, "source stopped; reconnecting");
        links.stats.reconnected(matches!(ended, Ended::Stalled));
        if sleep_unless_stopped(delay, &links.stop, &links.heartbeat) {
            break;
        }
    }
    // A camera that was failing keeps its error (and reason) in the final figures.
    if !links.states.is(name, CameraState::Error) {
        links.states.set(name, CameraState::Offline, Some("stopped".into()));
    }
}

/// One pipeline's life; returns why it ended and how many frames it delivered.
fn stream_once(camera: &CameraConfig, links: &CameraLinks, probes: &Arc<Probes>, hardware_failed: bool) -> (Ended, u64) {
    let built = match pipeline::build(camera, probes.clone(), hardware_failed) {
        Ok(p) => p,
        Err(e) => return (Ended::Failed(Failure::other(format!("{e:#}"))), 0),
    };
    let mut pump = Pump { camera, id: Arc::from(camera.name.as_str()), links, probes, delivered: 0 };
    let ended = pump.run(&built.pipeline, &built.sink);
    tear_down(built.pipeline, &camera.name, &links.heartbeat);
    (ended, pump.delivered)
}

/// How long a pipeline gets to reach Null before the camera goes on without it.
const TEARDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Always back to Null on the way out, or GStreamer threads and sockets leak; but in a thread of
/// its own, waited for a bounded time: rtspsrc's teardown after its server vanished was seen to
/// block for longer than the e2e tests' 30 s, and the camera must report and reconnect meanwhile.
fn tear_down(pipeline: gst::Pipeline, camera: &str, beat: &Heartbeat) {
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new().name(format!("stop-{camera}")).spawn(move || {
        let _ = pipeline.set_state(gst::State::Null);
        let _ = done_tx.send(());
    });
    if spawned.is_err() {
        tracing::warn!(camera, "cannot start a thread to stop the pipeline; it is abandoned");
        return;
    }
    let deadline = Instant::now() + TEARDOWN_TIMEOUT;
    while done_rx.recv_timeout(Duration::from_millis(250)).is_err() {
        beat.beat();
        if Instant::now() > deadline {
            tracing::warn!(event = "teardown_slow", camera, "the pipeline did not stop within 5 s; it finishes in the background");
            return;
        }
    }
}

struct Pump<'a> {
    camera: &'a CameraConfig,
    id: CameraId,
    links: &'a CameraLinks,
    probes: &'a Probes,
    delivered: u64,
}

impl Pump<'_> {
    fn run(&mut self, pipeline: &gst::Pipeline, sink: &gstreamer_app::AppSink) -> Ended {
        if let Err(e) = pipeline.set_state(gst::State::Playing) {
            let failure = pipeline.bus().and_then(|b| first_error(&b)).unwrap_or_else(|| Failure::other(e.to_string()));
            return Ended::Failed(failure);
        }
        let Some(bus) = pipeline.bus() else { return Ended::Failed(Failure::other("pipeline has no bus".into())) };
        let stall_after = Duration::from_secs_f64(self.camera.stall_timeout_s);
        let mut last_progress = Instant::now();
        let mut seen = (0, 0, 0);
        let mut online = false;
        loop {
            self.links.heartbeat.beat();
            if self.links.stop.is_shutdown() {
                return Ended::ShutDown;
            }
            while let Some(msg) = bus.pop_filtered(&[gst::MessageType::Error, gst::MessageType::Eos]) {
                match msg.view() {
                    gst::MessageView::Error(err) => return Ended::Failed(bus_error(err)),
                    gst::MessageView::Eos(_) => return self.drain(sink),
                    _ => {}
                }
            }
            let p = self.probes;
            let now = (p.decoded.load(Ordering::Relaxed), p.buffers_in.load(Ordering::Relaxed), p.deltas_skipped.load(Ordering::Relaxed));
            if now != seen {
                self.links.stats.decoded(now.0 - seen.0, now.2 - seen.2);
                seen = now;
                last_progress = Instant::now();
            } else if last_progress.elapsed() > stall_after {
                // Files too: a file pipeline can wedge before its first buffer (seen once in the
                // e2e suite under load, with a truncated MP4), and nothing else would notice.
                return Ended::Stalled;
            }
            let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_mseconds(PULL_TIMEOUT.as_millis() as u64)) else { continue };
            if !online {
                self.links.stats.decoder_chosen(self.probes.decoder.lock().ok().and_then(|d| d.clone()));
                self.links.states.set(&self.camera.name, CameraState::Online, None);
                online = true;
            }
            if !self.deliver(&sample) {
                return Ended::ShutDown;
            }
            // Time a file spent waiting for inference (backpressure) is not a stall.
            last_progress = Instant::now();
        }
    }

    /// At end of stream a file's last frames may still sit in the appsink: deliver them first.
    fn drain(&mut self, sink: &gstreamer_app::AppSink) -> Ended {
        while let Some(sample) = sink.try_pull_sample(gst::ClockTime::ZERO) {
            if !self.deliver(&sample) {
                return Ended::ShutDown;
            }
        }
        Ended::Eos
    }

    /// Hands one sample to inference; false when inference has gone away or we are stopping.
    fn deliver(&mut self, sample: &gst::Sample) -> bool {
        let (image, pts_ms) = match copy_frame(sample) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(camera = %self.camera.name, error = %format!("{e:#}"), "unreadable frame skipped");
                return true;
            }
        };
        self.links.stats.frame_sampled();
        self.delivered += 1;
        let live = self.camera.is_live();
        let frame = Frame { camera: self.id.clone(), live, captured: Instant::now(), pts_ms, ts: unix_ms(), image };
        if live {
            // The latest frame wins: the one still waiting for inference is dropped and counted.
            match self.links.frames.put_latest(frame) {
                Ok(None) => true,
                Ok(Some(_older)) => {
                    self.links.stats.frame_dropped();
                    true
                }
                Err(_) => false,
            }
        } else {
            self.wait_to_put(frame)
        }
    }

    /// A file waits for inference however slow the model is, but keeps its heartbeat (a slow
    /// model is not a wedged camera) and still notices a stop.
    fn wait_to_put(&self, mut frame: Frame) -> bool {
        loop {
            match self.links.frames.try_put(frame, BACKPRESSURE_POLL) {
                Ok(()) => return true,
                Err(PutError::Full(back)) => frame = back,
                Err(PutError::Closed) => return false,
            }
            self.links.heartbeat.beat();
            if self.links.stop.is_shutdown() {
                return false;
            }
        }
    }
}

/// Sleeps up to `delay`, waking early for a stop; true when a stop was asked for.
fn sleep_unless_stopped(delay: Duration, stop: &Shutdown, beat: &Heartbeat) -> bool {
    let until = Instant::now() + delay;
    while Instant::now() < until {
        beat.beat();
        if stop.is_shutdown() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50).min(until.saturating_duration_since(Instant::now())));
    }
    stop.is_shutdown()
}

/// Opens the source and waits for its first frame: what `glimpse check` means by "opening" it.
/// The error is the reason an operator reads, credentials redacted.
pub fn probe(camera: &CameraConfig, timeout: Duration) -> Result<(u32, u32), String> {
    let redact = |s: String| redact_secrets(&s, camera.uri.as_str());
    let built = pipeline::build(camera, Arc::new(Probes::default()), false).map_err(|e| redact(format!("{e:#}")))?;
    let (pipeline, sink) = (&built.pipeline, &built.sink);
    let result = (|| {
        pipeline
            .set_state(gst::State::Playing)
            .map_err(|e| pipeline.bus().and_then(|b| first_error(&b)).map_or(e.to_string(), |f| f.reason()))?;
        let bus = pipeline.bus().ok_or("pipeline has no bus")?;
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(msg) = bus.pop_filtered(&[gst::MessageType::Error, gst::MessageType::Eos]) {
                return Err(match msg.view() {
                    gst::MessageView::Error(err) => bus_error(err).reason(),
                    _ => "end of stream before the first frame".to_owned(),
                });
            }
            if let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_mseconds(100)) {
                let (image, _) = copy_frame(&sample).map_err(|e| format!("{e:#}"))?;
                return Ok(image.dimensions());
            }
        }
        Err(format!("no frame within {} s", timeout.as_secs()))
    })();
    let _ = pipeline.set_state(gst::State::Null);
    result.map_err(redact)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_and_missing_streams_are_classified_by_error_code_and_retried_slowly() {
        let auth = Failure::classified(Some(gst::ResourceError::NotAuthorized), "src: Unauthorized".into());
        assert!(auth.slow() && auth.reason().starts_with("authentication failed (401)"));
        let missing = Failure::classified(Some(gst::ResourceError::NotFound), "src: whatever the text says".into());
        assert!(missing.slow() && missing.reason().starts_with("stream not found"));
        // The text does not matter: a 401 in a message of another kind is not an auth failure.
        let other = Failure::classified(Some(gst::ResourceError::Read), "decoder: 401 not found".into());
        assert!(!other.slow() && other.reason() == "decoder: 401 not found");
    }
}
