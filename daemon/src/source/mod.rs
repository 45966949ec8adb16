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
//! This module knows nothing of models, the outbox or MQTT: it produces [`Frame`]s and moves
//! the camera's counters and state in [`crate::stats`].

pub mod decoder;
pub(crate) mod pipeline;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use gstreamer as gst;
use gstreamer::prelude::*;
use serde::Deserialize;

pub use decoder::DecoderMode;
pub use pipeline::KeyframeGate;
use pipeline::{bus_error, copy_frame, first_error, Probes, PULL_TIMEOUT};

use crate::backoff::Backoff;
use crate::config::{check_name, KeyPath, Problem};
use crate::redact::{redact_secrets, redact_uri};
use crate::schedule::{FrameSender, PutError};
use crate::stats::{unix_ms, CameraState, CameraStats, Stats};
use crate::systemd_notify::Heartbeat;

/// `[[cameras]]`: one video source.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct CameraConfig {
    /// `[a-z0-9_-]{1,64}`; appears in MQTT topics and vector ids.
    pub name: String,
    /// `rtsp://`, `rtsps://`, `file:///abs/path`, `http(s)://`, `v4l2:///dev/videoN`, `csi://N`
    /// or `test:`.
    pub uri: String,
    /// Frames per second handed to detection. Default 1.
    #[serde(default = "default_sample_fps")]
    pub sample_fps: f64,
    /// Seconds without data after which a live source is restarted. Default 10.
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

const SCHEMES: [&str; 8] = ["rtsp://", "rtsps://", "file://", "http://", "https://", "v4l2://", "csi://", "test:"];

impl CameraConfig {
    pub fn validate(&self, at: &KeyPath, problems: &mut Vec<Problem>) {
        check_name(&self.name, &at.key("name"), problems);
        if !SCHEMES.iter().any(|s| self.uri.starts_with(s)) {
            problems.push(Problem::new(
                at.key("uri"),
                format!("{:?} is not a supported camera URI: use one of {}", redact_uri(&self.uri), SCHEMES.join(", ")),
            ));
        } else if let Some(path) = self.uri.strip_prefix("file://") {
            if !path.starts_with('/') {
                problems.push(Problem::new(at.key("uri"), "file URIs need an absolute path: file:///abs/path.mp4"));
            }
        } else if let Some(n) = self.uri.strip_prefix("csi://") {
            if n.trim_end_matches('/').parse::<u32>().is_err() {
                problems.push(Problem::new(at.key("uri"), "csi URIs name the camera by number: csi://0"));
            }
        }
        if !(self.sample_fps > 0.0 && self.sample_fps <= 60.0) {
            problems.push(Problem::new(at.key("sample_fps"), format!("must be above 0 and at most 60 (got {})", self.sample_fps)));
        }
        if !(self.stall_timeout_s >= 1.0 && self.stall_timeout_s <= 3600.0) {
            problems.push(Problem::new(at.key("stall_timeout_s"), "must be between 1 and 3600 seconds"));
        }
        if self.r#loop && !self.uri.starts_with("file://") {
            problems.push(Problem::new(at.key("loop"), "only file:// cameras can loop"));
        }
        if self.transport == Transport::Udp && !self.uri.starts_with("rtsp") {
            problems.push(Problem::new(at.key("transport"), "only rtsp:// cameras have a transport"));
        }
    }

    /// Files are processed completely at their own pace; everything else (and a looping file)
    /// runs in real time.
    pub fn is_live(&self) -> bool {
        self.r#loop || !["file://", "http://", "https://"].iter().any(|s| self.uri.starts_with(s))
    }
}

/// One sampled frame, copied out of GStreamer.
pub struct Frame {
    /// The camera's counters (and name).
    pub camera: Arc<CameraStats>,
    /// The frame's identity within its camera: stream position for files (so two runs over the
    /// same file give the same ids), capture wall-clock time for live sources.
    pub key_ms: u64,
    pub pts_ms: u64,
    /// Capture time, unix milliseconds.
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

/// A pipeline error, classified: some errors will not clear up by retrying quickly.
#[derive(Debug)]
struct Failure {
    reason: String,
    /// Retry at the slowest pace: the camera refuses us (401) or the stream does not exist.
    slow: bool,
}

impl Failure {
    fn new(text: String) -> Self {
        let lower = text.to_lowercase();
        let (reason, slow) = if lower.contains("401") || lower.contains("unauthorized") {
            (format!("authentication failed (401): check the user and password in the URI; {text}"), true)
        } else if lower.contains("404") || lower.contains("not found") || lower.contains("no such file") {
            (format!("stream not found: check the URI's path; {text}"), true)
        } else {
            (text, false)
        };
        Self { reason, slow }
    }
}

pub fn init() -> anyhow::Result<()> {
    gst::init().context("GStreamer failed to initialise; is libgstreamer1.0 installed?")
}

/// Runs one camera until `stop` is set: connects, streams, and reconnects as the module
/// documentation says.
pub fn run_camera(
    camera: CameraConfig,
    cam: Arc<CameraStats>,
    frames: FrameSender,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
    beat: Arc<Heartbeat>,
) {
    let redacted = redact_uri(&camera.uri);
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
    let mut hardware_failed = false;
    loop {
        tracing::info!(camera = %camera.name, uri = %redacted, "starting source");
        let probes = Arc::new(Probes::default());
        let (ended, delivered) = stream_once(&camera, &cam, &frames, &stats, &stop, &probes, hardware_failed, &beat);
        if delivered > 0 {
            backoff.reset();
        }
        let delay = match &ended {
            Ended::ShutDown => break,
            Ended::Eos if camera.r#loop => {
                tracing::debug!(camera = %camera.name, "end of file: looping");
                continue;
            }
            Ended::Eos if !camera.is_live() => {
                tracing::info!(camera = %camera.name, "end of file: every sampled frame was handed to inference");
                stats.set_camera_status(&camera.name, CameraState::Offline, Some("end of file".into()));
                return;
            }
            Ended::Eos => {
                stats.set_camera_status(&camera.name, CameraState::Offline, Some("end of stream; reconnecting".into()));
                backoff.next_delay()
            }
            Ended::Stalled => {
                cam.stalled();
                stats.set_camera_status(
                    &camera.name,
                    CameraState::Offline,
                    Some(format!("no data for {} s; reconnecting", camera.stall_timeout_s)),
                );
                backoff.next_delay()
            }
            Ended::Failed(failure) => {
                if delivered == 0 && probes.hardware_decoder.load(Ordering::Relaxed) && camera.decoder == DecoderMode::Auto {
                    tracing::warn!(camera = %camera.name, "the hardware decoder failed before the first frame; using software from now on");
                    hardware_failed = true;
                }
                let reason = redact_secrets(&failure.reason, &camera.uri);
                stats.set_camera_status(&camera.name, CameraState::Error, Some(reason));
                if failure.slow {
                    backoff.cap()
                } else {
                    backoff.next_delay()
                }
            }
        };
        tracing::warn!(camera = %camera.name, reason = %redact_secrets(&format!("{ended:?}"), &camera.uri), retry_in_ms = delay.as_millis() as u64, "source stopped; reconnecting");
        cam.reconnect();
        if sleep_unless_stopped(delay, &stop, &beat) {
            break;
        }
    }
    // A camera that was failing keeps its error (and reason) in the final figures.
    if !stats.camera_is(&camera.name, CameraState::Error) {
        stats.set_camera_status(&camera.name, CameraState::Offline, Some("stopped".into()));
    }
}

/// One pipeline's life; returns why it ended and how many frames it delivered.
fn stream_once(
    camera: &CameraConfig,
    cam: &Arc<CameraStats>,
    frames: &FrameSender,
    stats: &Stats,
    stop: &AtomicBool,
    probes: &Arc<Probes>,
    hardware_failed: bool,
    beat: &Heartbeat,
) -> (Ended, u64) {
    let built = match pipeline::build(camera, probes.clone(), hardware_failed) {
        Ok(p) => p,
        Err(e) => return (Ended::Failed(Failure::new(format!("{e:#}"))), 0),
    };
    let mut pump = Pump { camera, cam, frames, stats, probes, delivered: 0 };
    let ended = pump.run(&built.pipeline, &built.sink, stop, beat);
    // Always back to Null on the way out, or GStreamer threads and sockets leak.
    let _ = built.pipeline.set_state(gst::State::Null);
    (ended, pump.delivered)
}

struct Pump<'a> {
    camera: &'a CameraConfig,
    cam: &'a Arc<CameraStats>,
    frames: &'a FrameSender,
    stats: &'a Stats,
    probes: &'a Probes,
    delivered: u64,
}

impl Pump<'_> {
    fn run(&mut self, pipeline: &gst::Pipeline, sink: &gstreamer_app::AppSink, stop: &AtomicBool, beat: &Heartbeat) -> Ended {
        if let Err(e) = pipeline.set_state(gst::State::Playing) {
            let detail = pipeline.bus().and_then(|b| first_error(&b)).unwrap_or_else(|| e.to_string());
            return Ended::Failed(Failure::new(detail));
        }
        let Some(bus) = pipeline.bus() else { return Ended::Failed(Failure::new("pipeline has no bus".into())) };
        let stall_after = Duration::from_secs_f64(self.camera.stall_timeout_s);
        let mut last_progress = Instant::now();
        let mut seen = (0, 0, 0);
        let mut online = false;
        loop {
            beat.beat();
            if stop.load(Ordering::Relaxed) {
                return Ended::ShutDown;
            }
            while let Some(msg) = bus.pop_filtered(&[gst::MessageType::Error, gst::MessageType::Eos]) {
                match msg.view() {
                    gst::MessageView::Error(err) => return Ended::Failed(Failure::new(bus_error(&err))),
                    gst::MessageView::Eos(_) => {
                        // A file's last frames may still sit in the appsink: drain them first.
                        while let Some(sample) = sink.try_pull_sample(gst::ClockTime::ZERO) {
                            if !self.deliver(&sample, stop, beat) {
                                return Ended::ShutDown;
                            }
                        }
                        return Ended::Eos;
                    }
                    _ => {}
                }
            }
            let p = self.probes;
            let now = (p.decoded.load(Ordering::Relaxed), p.buffers_in.load(Ordering::Relaxed), p.deltas_skipped.load(Ordering::Relaxed));
            if now != seen {
                self.cam.decoded(now.0 - seen.0, now.2 - seen.2);
                seen = now;
                last_progress = Instant::now();
            } else if last_progress.elapsed() > stall_after {
                // Files too: a file pipeline can wedge before its first buffer (seen once in the
                // e2e suite under load, with a truncated MP4), and nothing else would notice.
                return Ended::Stalled;
            }
            let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_mseconds(PULL_TIMEOUT.as_millis() as u64)) else { continue };
            if !online {
                let decoder = self.probes.decoder.lock().ok().and_then(|d| d.clone());
                self.cam.set_decoder(decoder);
                self.stats.set_camera_status(&self.camera.name, CameraState::Online, None);
                online = true;
            }
            if !self.deliver(&sample, stop, beat) {
                return Ended::ShutDown;
            }
            // Time a file spent waiting for inference (backpressure) is not a stall.
            last_progress = Instant::now();
        }
    }

    /// Hands one sample to inference; false when inference has gone away or we are stopping.
    fn deliver(&mut self, sample: &gst::Sample, stop: &AtomicBool, beat: &Heartbeat) -> bool {
        let cam = self.cam;
        let (image, pts_ms) = match copy_frame(sample) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(camera = %self.camera.name, error = %format!("{e:#}"), "unreadable frame skipped");
                return true;
            }
        };
        cam.frame_sampled();
        self.delivered += 1;
        let ts = unix_ms();
        let key_ms = if self.camera.is_live() { ts as u64 } else { pts_ms };
        let frame = Frame { camera: cam.clone(), key_ms, pts_ms, ts, image };
        if self.camera.is_live() {
            // The latest frame wins: the one still waiting for inference is dropped and counted.
            match self.frames.put_latest(frame) {
                Ok(None) => true,
                Ok(Some(_older)) => {
                    cam.frame_dropped();
                    true
                }
                Err(_) => false,
            }
        } else {
            // A file waits for inference however slow the model is, but keeps its heartbeat
            // (a slow model is not a wedged camera) and still notices a stop.
            let mut frame = frame;
            loop {
                match self.frames.try_put(frame, BACKPRESSURE_POLL) {
                    Ok(()) => return true,
                    Err(PutError::Full(back)) => frame = back,
                    Err(PutError::Closed) => return false,
                }
                beat.beat();
                if stop.load(Ordering::Relaxed) {
                    return false;
                }
            }
        }
    }
}

/// Sleeps up to `delay`, waking early for shutdown; true when shutdown was asked for.
fn sleep_unless_stopped(delay: Duration, stop: &AtomicBool, beat: &Heartbeat) -> bool {
    let until = Instant::now() + delay;
    while Instant::now() < until {
        beat.beat();
        if stop.load(Ordering::Relaxed) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50).min(until.saturating_duration_since(Instant::now())));
    }
    stop.load(Ordering::Relaxed)
}

/// Opens the source and waits for its first frame: what `glimpse check` means by "opening" it.
pub fn probe(camera: &CameraConfig, timeout: Duration) -> Result<(u32, u32), String> {
    let redact = |s: String| redact_secrets(&s, &camera.uri);
    let built = pipeline::build(camera, Arc::new(Probes::default()), false).map_err(|e| redact(format!("{e:#}")))?;
    let (pipeline, sink) = (&built.pipeline, &built.sink);
    let result = (|| {
        pipeline
            .set_state(gst::State::Playing)
            .map_err(|e| pipeline.bus().and_then(|b| first_error(&b)).unwrap_or_else(|| e.to_string()))?;
        let bus = pipeline.bus().ok_or("pipeline has no bus")?;
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(msg) = bus.pop_filtered(&[gst::MessageType::Error, gst::MessageType::Eos]) {
                return Err(match msg.view() {
                    gst::MessageView::Error(err) => Failure::new(bus_error(&err)).reason,
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
    use super::Failure;

    #[test]
    fn refusals_and_missing_streams_are_named_and_retried_slowly() {
        let auth = Failure::new("src: Unauthorized (rtspsrc ... 401)".into());
        assert!(auth.slow && auth.reason.starts_with("authentication failed (401)"));
        let missing = Failure::new("src: Not Found".into());
        assert!(missing.slow && missing.reason.starts_with("stream not found"));
        let other = Failure::new("decoder: could not decode stream".into());
        assert!(!other.slow);
    }
}
