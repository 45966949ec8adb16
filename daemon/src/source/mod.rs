//! Video ingest: one GStreamer pipeline per camera, sampled to `sample_fps` RGB frames.
//!
//! Pipeline: `uridecodebin` (or `videotestsrc` for `test:`) → `videorate drop-only` at the
//! sampling rate → `videoconvert` to RGB → `appsink`. The appsink holds at most one buffer. A
//! dedicated thread per camera pulls samples, copies them out and hands them to inference:
//! live sources drop (and count) a frame when inference is busy, so they never fall behind; file
//! sources wait, so every sampled frame of a file is processed.
//!
//! This module knows nothing of models, the outbox or MQTT: it produces [`Frame`]s and moves the
//! camera's counters and status in [`crate::stats`].

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;
use gstreamer_video::prelude::*;
use serde::Deserialize;

use crate::backoff::Backoff;
use crate::config::{check_name, KeyPath, Problem};
use crate::redact::redact_uri;
use crate::stats::{unix_ms, CameraState, Stats};

/// `[[cameras]]`: one video source.
#[derive(Clone, Debug, Deserialize)]
pub struct CameraConfig {
    /// `[a-z0-9_-]{1,64}`; appears in MQTT topics and vector ids.
    pub name: String,
    /// `rtsp://`, `rtsps://`, `file:///abs/path`, `http(s)://`, `v4l2:///dev/videoN` or `test:`.
    pub uri: String,
    /// Frames per second handed to detection. Default 1.
    #[serde(default = "default_sample_fps")]
    pub sample_fps: f64,
    /// Seconds without a decoded frame after which a live source is restarted. Default 10.
    #[serde(default = "default_stall_timeout_s")]
    pub stall_timeout_s: f64,
}

fn default_sample_fps() -> f64 {
    1.0
}
fn default_stall_timeout_s() -> f64 {
    10.0
}

const SCHEMES: [&str; 7] = ["rtsp://", "rtsps://", "file://", "http://", "https://", "v4l2://", "test:"];

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
        }
        if !(self.sample_fps > 0.0 && self.sample_fps <= 60.0) {
            problems.push(Problem::new(at.key("sample_fps"), format!("must be above 0 and at most 60 (got {})", self.sample_fps)));
        }
        if !(self.stall_timeout_s >= 1.0 && self.stall_timeout_s.is_finite()) {
            problems.push(Problem::new(at.key("stall_timeout_s"), "must be at least 1 second"));
        }
    }

    /// Files are processed completely at their own pace; everything else runs in real time.
    pub fn is_live(&self) -> bool {
        !["file://", "http://", "https://"].iter().any(|s| self.uri.starts_with(s))
    }
}

/// One sampled frame, copied out of GStreamer.
pub struct Frame {
    pub camera: usize,
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
    Failed(String),
    ShutDown,
}

pub fn init() -> anyhow::Result<()> {
    gst::init().context("GStreamer failed to initialise; is libgstreamer1.0 installed?")
}

/// `sample_fps` as the fraction GStreamer caps want.
fn fps_fraction(fps: f64) -> gst::Fraction {
    let den = 1000;
    let num = (fps * den as f64).round().max(1.0) as i32;
    let g = gcd(num, den);
    gst::Fraction::new(num / g, den / g)
}

fn gcd(a: i32, b: i32) -> i32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Builds the camera's pipeline; `decoded` counts frames leaving the decoder (before sampling).
fn build_pipeline(camera: &CameraConfig, decoded: Arc<AtomicU64>) -> anyhow::Result<(gst::Pipeline, gst_app::AppSink)> {
    let fps = fps_fraction(camera.sample_fps);
    let drop = if camera.is_live() { "true" } else { "false" };
    let tail = format!(
        "videorate name=rate drop-only=true ! video/x-raw,framerate={}/{} ! videoconvert ! video/x-raw,format=RGB ! \
         appsink name=sink max-buffers=1 drop={drop} sync=false",
        fps.numer(),
        fps.denom()
    );
    let description = if camera.uri.starts_with("test:") {
        format!("videotestsrc is-live=true pattern=ball ! video/x-raw,width=640,height=480,framerate=15/1 ! {tail}")
    } else {
        tail
    };
    let pipeline = gst::parse::launch(&description)
        .context("building the pipeline")?
        .downcast::<gst::Pipeline>()
        .map_err(|_| anyhow::anyhow!("the pipeline description did not produce a pipeline"))?;
    let rate = pipeline.by_name("rate").context("videorate element missing")?;
    let rate_sink = rate.static_pad("sink").context("videorate has no sink pad")?;
    rate_sink.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
        decoded.fetch_add(1, Ordering::Relaxed);
        gst::PadProbeReturn::Ok
    });
    if !camera.uri.starts_with("test:") {
        let src = gst::ElementFactory::make("uridecodebin")
            .name("src")
            .property("uri", camera.uri.as_str())
            .build()
            .context("creating uridecodebin (is gstreamer1.0-plugins-base installed?)")?;
        pipeline.add(&src).context("adding uridecodebin")?;
        let target = rate_sink.clone();
        src.connect_pad_added(move |_, pad| {
            let is_video = pad
                .current_caps()
                .and_then(|caps| caps.structure(0).map(|s| s.name().starts_with("video/")))
                .unwrap_or(false);
            if is_video && !target.is_linked() {
                if let Err(e) = pad.link(&target) {
                    tracing::warn!(error = ?e, "could not link the decoded video pad");
                }
            }
        });
    }
    let sink = pipeline
        .by_name("sink")
        .context("appsink missing")?
        .downcast::<gst_app::AppSink>()
        .map_err(|_| anyhow::anyhow!("element 'sink' is not an appsink"))?;
    Ok((pipeline, sink))
}

fn copy_frame(sample: &gst::Sample) -> anyhow::Result<(image::RgbImage, u64)> {
    let buffer = sample.buffer().context("sample without a buffer")?;
    let caps = sample.caps().context("sample without caps")?;
    let info = gst_video::VideoInfo::from_caps(caps).context("unreadable video caps")?;
    let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, &info)
        .map_err(|_| anyhow::anyhow!("cannot map the video buffer"))?;
    let (w, h) = (info.width() as usize, info.height() as usize);
    let stride = frame.plane_stride()[0] as usize;
    let data = frame.plane_data(0).context("video frame without a plane")?;
    let mut rgb = Vec::with_capacity(w * h * 3);
    for row in 0..h {
        let start = row * stride;
        rgb.extend_from_slice(data.get(start..start + w * 3).context("video frame shorter than its caps")?);
    }
    let image = image::RgbImage::from_raw(w as u32, h as u32, rgb).context("frame size mismatch")?;
    let pts_ms = buffer.pts().map_or(0, |t| t.mseconds());
    Ok((image, pts_ms))
}

/// The message of an ERROR on the bus, naming the element that raised it.
fn bus_error(msg: &gst::message::Error) -> String {
    let element = msg.src().map(|s| s.name().to_string()).unwrap_or_else(|| "pipeline".into());
    format!("{element}: {}", msg.error())
}

/// Runs one camera until shutdown: connects, streams, and reconnects with capped exponential
/// backoff and jitter after errors, stalls and (for live sources) end of stream.
pub fn run_camera(
    index: usize,
    camera: CameraConfig,
    frames: SyncSender<Frame>,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
) {
    let redacted = redact_uri(&camera.uri);
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
    loop {
        tracing::info!(camera = %camera.name, uri = %redacted, "starting source");
        let ended = stream_once(index, &camera, &frames, &stats, &stop);
        match &ended {
            Ended::ShutDown => break,
            Ended::Eos if !camera.is_live() => {
                tracing::info!(camera = %camera.name, "end of file: every sampled frame was handed to inference");
                stats.set_camera_status(&camera.name, CameraState::Offline, Some("end of file".into()));
                break;
            }
            Ended::Eos => stats.set_camera_status(&camera.name, CameraState::Offline, Some("end of stream".into())),
            Ended::Stalled => stats.set_camera_status(&camera.name, CameraState::Offline, Some("stalled: no frames".into())),
            Ended::Failed(reason) => stats.set_camera_status(&camera.name, CameraState::Error, Some(redact_secrets(reason, &camera.uri))),
        }
        let delay = backoff.next_delay();
        tracing::warn!(camera = %camera.name, reason = ?ended, retry_in_ms = delay.as_millis() as u64, "source stopped; reconnecting");
        stats.camera(index).reconnect();
        if sleep_unless_stopped(delay, &stop) {
            break;
        }
    }
    stats.set_camera_status(&camera.name, CameraState::Offline, Some("stopped".into()));
}

/// GStreamer error texts can quote the URI; never let its password out.
fn redact_secrets(text: &str, uri: &str) -> String {
    let redacted = redact_uri(uri);
    if redacted == uri { text.to_owned() } else { text.replace(uri, &redacted) }
}

fn stream_once(index: usize, camera: &CameraConfig, frames: &SyncSender<Frame>, stats: &Stats, stop: &AtomicBool) -> Ended {
    let decoded = Arc::new(AtomicU64::new(0));
    let (pipeline, sink) = match build_pipeline(camera, decoded.clone()) {
        Ok(p) => p,
        Err(e) => return Ended::Failed(format!("{e:#}")),
    };
    let ended = pump(index, camera, &pipeline, &sink, &decoded, frames, stats, stop);
    // Always back to Null on the way out, or GStreamer threads and sockets leak.
    let _ = pipeline.set_state(gst::State::Null);
    ended
}

#[allow(clippy::too_many_arguments)]
fn pump(
    index: usize,
    camera: &CameraConfig,
    pipeline: &gst::Pipeline,
    sink: &gst_app::AppSink,
    decoded: &AtomicU64,
    frames: &SyncSender<Frame>,
    stats: &Stats,
    stop: &AtomicBool,
) -> Ended {
    if let Err(e) = pipeline.set_state(gst::State::Playing) {
        let detail = pipeline.bus().and_then(|b| first_error(&b)).unwrap_or_else(|| e.to_string());
        return Ended::Failed(detail);
    }
    let Some(bus) = pipeline.bus() else { return Ended::Failed("pipeline has no bus".into()) };
    let cam = stats.camera(index);
    let stall_after = Duration::from_secs_f64(camera.stall_timeout_s);
    let mut last_progress = Instant::now();
    let mut last_decoded = 0;
    let mut online = false;
    loop {
        if stop.load(Ordering::Relaxed) {
            return Ended::ShutDown;
        }
        while let Some(msg) = bus.pop_filtered(&[gst::MessageType::Error, gst::MessageType::Eos]) {
            match msg.view() {
                gst::MessageView::Error(err) => return Ended::Failed(bus_error(&err)),
                gst::MessageView::Eos(_) => {
                    // A file's last frames may still sit in the appsink: drain them first.
                    if camera.is_live() {
                        return Ended::Eos;
                    }
                    while let Some(sample) = sink.try_pull_sample(gst::ClockTime::ZERO) {
                        if !deliver(index, camera, &sample, frames, stats) {
                            return Ended::ShutDown;
                        }
                    }
                    return Ended::Eos;
                }
                _ => {}
            }
        }
        let now_decoded = decoded.load(Ordering::Relaxed);
        if now_decoded != last_decoded {
            for _ in last_decoded..now_decoded {
                cam.frame_decoded();
            }
            last_decoded = now_decoded;
            last_progress = Instant::now();
        } else if camera.is_live() && last_progress.elapsed() > stall_after {
            return Ended::Stalled;
        }
        let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_mseconds(100)) else { continue };
        if !online {
            stats.set_camera_status(&camera.name, CameraState::Online, None);
            online = true;
        }
        if !deliver(index, camera, &sample, frames, stats) {
            return Ended::ShutDown;
        }
    }
}

/// Hands one sample to inference; false when inference has gone away.
fn deliver(index: usize, camera: &CameraConfig, sample: &gst::Sample, frames: &SyncSender<Frame>, stats: &Stats) -> bool {
    let cam = stats.camera(index);
    let (image, pts_ms) = match copy_frame(sample) {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(camera = %camera.name, error = %format!("{e:#}"), "unreadable frame skipped");
            return true;
        }
    };
    cam.frame_sampled();
    let ts = unix_ms();
    let key_ms = if camera.is_live() { ts as u64 } else { pts_ms };
    let frame = Frame { camera: index, key_ms, pts_ms, ts, image };
    if camera.is_live() {
        match frames.try_send(frame) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                cam.frame_dropped();
                true
            }
            Err(TrySendError::Disconnected(_)) => false,
        }
    } else {
        frames.send(frame).is_ok()
    }
}

fn first_error(bus: &gst::Bus) -> Option<String> {
    while let Some(msg) = bus.pop_filtered(&[gst::MessageType::Error]) {
        if let gst::MessageView::Error(err) = msg.view() {
            return Some(bus_error(&err));
        }
    }
    None
}

/// Sleeps up to `delay`, waking early for shutdown; true when shutdown was asked for.
fn sleep_unless_stopped(delay: Duration, stop: &AtomicBool) -> bool {
    let until = Instant::now() + delay;
    while Instant::now() < until {
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
    let (pipeline, sink) = build_pipeline(camera, Arc::new(AtomicU64::new(0))).map_err(|e| redact(format!("{e:#}")))?;
    let result = (|| {
        pipeline.set_state(gst::State::Playing).map_err(|e| {
            pipeline.bus().and_then(|b| first_error(&b)).unwrap_or_else(|| e.to_string())
        })?;
        let bus = pipeline.bus().ok_or("pipeline has no bus")?;
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(msg) = bus.pop_filtered(&[gst::MessageType::Error, gst::MessageType::Eos]) {
                return Err(match msg.view() {
                    gst::MessageView::Error(err) => bus_error(&err),
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
    fn sample_rates_become_reduced_fractions() {
        assert_eq!(fps_fraction(1.0), gst::Fraction::new(1, 1));
        assert_eq!(fps_fraction(0.5), gst::Fraction::new(1, 2));
        assert_eq!(fps_fraction(2.5), gst::Fraction::new(5, 2));
    }
}
