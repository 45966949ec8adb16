//! The inference stage: one thread that takes frames from the [`Scheduler`] camera by camera and
//! turns each into records — motion gate → detect → clamp → track → crop and embed the boxes the
//! tracker chose → [`Record`]s with stable ids — then hands them to the outbox writer.
//!
//! It owns the detector, the embedder, each camera's attention (motion gate and tracker, made on
//! its first frame and forgotten when the camera departs) and the [`IdClock`] of live cameras'
//! record ids. It does no I/O and runs on its own thread, never on a tokio worker.
//!
//! Time: decisions use stream time — a file's position, or a live frame's monotonic capture
//! time — so reruns of a file decide alike and no wall-clock step moves a decision. Record ids
//! use a file's position, or a live frame's wall-clock capture time through the [`IdClock`].

use std::collections::HashMap;
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::clock::IdClock;
use crate::crops;
use crate::detect::{Detection, ObjectDetector};
use crate::embed::{clamp_box, crop, ImageEmbedder, PixelBox};
use crate::record::{record_id, Metadata, NewRecord, Record};
use crate::schedule::{RecvError, Scheduler};
use crate::source::Frame;
use crate::stats::{CameraStats, FrameOutcome, Stats};
use crate::systemd_notify::Heartbeat;
use crate::track::{AnalysisConfig, Attention};

/// How often an idle stage shows it is alive.
pub const IDLE_BEAT: Duration = Duration::from_millis(250);

/// What records are made of, beyond the frame.
pub struct Settings {
    pub device: String,
    /// Boxes narrower or lower than this (after clamping) are counted, not embedded.
    pub min_box_px: u32,
    pub analysis: AnalysisConfig,
    /// Keep each record's crop as a JPEG: its longest side and quality. `None`: no crops.
    pub crops: Option<(u32, u8)>,
}

/// One camera's state in the stage.
struct Camera {
    attention: Attention,
    stats: Arc<CameraStats>,
}

pub struct Analyzer<D, E> {
    detector: D,
    embedder: E,
    settings: Settings,
    stats: Arc<Stats>,
    ids: Arc<IdClock>,
    /// The origin of live cameras' stream time.
    epoch: Instant,
    cameras: HashMap<String, Camera>,
}

/// When a frame was taken, twice: for decisions and for ids.
#[derive(Clone, Copy)]
struct FrameTime {
    /// Stream time, ms: a file's position, a live frame's monotonic capture time.
    stream_ms: i64,
    /// The frame's part of its records' ids.
    key_ms: u64,
}

impl<D: ObjectDetector, E: ImageEmbedder> Analyzer<D, E> {
    pub fn new(detector: D, embedder: E, settings: Settings, stats: Arc<Stats>, ids: Arc<IdClock>) -> Self {
        Self { detector, embedder, settings, stats, ids, epoch: Instant::now(), cameras: HashMap::new() }
    }

    /// The thread's loop: until the scheduler says every camera has finished, or the writer is gone.
    pub fn run(mut self, frames: &Scheduler, records: SyncSender<Vec<NewRecord>>, beat: &Heartbeat) {
        loop {
            beat.beat();
            for camera in frames.take_departed() {
                self.cameras.remove(&camera);
            }
            let frame = match frames.recv_timeout(IDLE_BEAT) {
                Ok(frame) => frame,
                Err(RecvError::Timeout) => continue,
                Err(RecvError::Finished) => return,
            };
            test_hooks::maybe_wedge_inference();
            let made = self.analyze(&frame);
            tracing::debug!(event = "frame_analysed", camera = %frame.camera, records = made.len());
            if !made.is_empty() && records.send(made).is_err() {
                tracing::error!("outbox writer is gone; stopping inference");
                return;
            }
        }
    }

    /// One frame's records; everything that happened is counted on the camera's stats.
    pub fn analyze(&mut self, frame: &Frame) -> Vec<NewRecord> {
        let started = Instant::now();
        let time = self.frame_time(frame);
        let camera = self.camera(&frame.camera);
        camera.stats.frame_taken(frame.captured.elapsed());
        if !camera.attention.gate.check(&frame.image, time.stream_ms).detect() {
            camera.stats.frame_gated();
            return Vec::new();
        }
        let detections = match self.detector.detect(&frame.image) {
            Ok(detections) => detections,
            Err(e) => {
                tracing::error!(camera = %frame.camera, error = %e, "detection failed on a frame");
                return Vec::new();
            }
        };
        self.stats.detector_plans(self.detector.plans_held());
        let (records, outcome) = self.embed_chosen(frame, time, &detections);
        self.camera(&frame.camera).stats.frame_analysed(outcome, started.elapsed());
        records
    }

    /// Tracks the frame's boxes and embeds those the tracker chose. A failed embedding costs
    /// its own record only; the tracker learns of an embedding once it succeeded, so the object
    /// is tried again on its next frame.
    fn embed_chosen(&mut self, frame: &Frame, time: FrameTime, detections: &[Detection]) -> (Vec<NewRecord>, FrameOutcome) {
        let (frame_w, frame_h) = frame.image.dimensions();
        let min_box = self.settings.min_box_px;
        let boxes: Vec<(usize, &Detection, PixelBox)> =
            detections.iter().enumerate().filter_map(|(i, det)| clamp_box(det, frame_w, frame_h, min_box).map(|b| (i, det, b))).collect();
        let tracked: Vec<_> = boxes.iter().map(|(_, det, b)| (det.label, *b)).collect();
        let camera = self.cameras.get_mut(&*frame.camera).expect("the camera was made by analyze");
        let assignments = camera.attention.tracker.assign(&frame.image, &tracked, time.stream_ms, time.key_ms);
        let mut outcome =
            FrameOutcome { detections: detections.len(), too_small: detections.len() - boxes.len(), ..FrameOutcome::default() };
        let mut records = Vec::new();
        for ((index, det, b), assignment) in boxes.into_iter().zip(assignments) {
            if !assignment.embed {
                outcome.deduplicated += 1;
                continue;
            }
            let id = record_id(&self.settings.device, &frame.camera, time.key_ms, index);
            let pixels = crop(&frame.image, b);
            match self.embedder.embed(&pixels) {
                Ok(values) => {
                    camera.attention.tracker.embedded(&assignment.track_id, time.stream_ms);
                    let mut metadata = metadata(&self.settings.device, frame, det, b, assignment.track_id);
                    let crop_jpeg = self.settings.crops.and_then(|(max_px, quality)| encode_crop(&pixels, max_px, quality, &id));
                    if crop_jpeg.is_some() {
                        metadata.crop = Some(crops::key(&self.settings.device, &frame.camera, frame.ts, &id));
                    }
                    records.push(NewRecord { record: Record { id, values, metadata }, crop_jpeg });
                }
                Err(e) => {
                    outcome.embedding_failures += 1;
                    tracing::error!(camera = %frame.camera, record = %id, error = %e, "embedding failed; this record is lost, the frame's others are kept");
                }
            }
        }
        outcome.embedded = records.len();
        (records, outcome)
    }

    fn frame_time(&self, frame: &Frame) -> FrameTime {
        if frame.live {
            let stream_ms = frame.captured.saturating_duration_since(self.epoch).as_millis() as i64;
            FrameTime { stream_ms, key_ms: self.ids.next(frame.ts.max(0) as u64) }
        } else {
            FrameTime { stream_ms: frame.pts_ms as i64, key_ms: frame.pts_ms }
        }
    }

    fn camera(&mut self, name: &str) -> &mut Camera {
        let (analysis, stats) = (&self.settings.analysis, &self.stats);
        self.cameras
            .entry(name.to_owned())
            .or_insert_with(|| Camera { attention: Attention::new(analysis, name), stats: stats.existing_camera(name) })
    }
}

/// The crop as a JPEG; a failure is logged and costs only the crop.
fn encode_crop(pixels: &image::RgbImage, max_px: u32, quality: u8, id: &str) -> Option<Vec<u8>> {
    crops::encode(pixels, max_px, quality).map_err(|e| tracing::error!(record = %id, error = %e, "cannot encode the crop")).ok()
}

fn metadata(device: &str, frame: &Frame, det: &Detection, b: PixelBox, track_id: String) -> Metadata {
    let (frame_w, frame_h) = frame.image.dimensions();
    Metadata {
        device: device.to_owned(),
        camera: frame.camera.to_string(),
        ts: frame.ts,
        pts_ms: frame.pts_ms,
        label: det.label.to_owned(),
        score: det.score,
        x: b.x,
        y: b.y,
        w: b.w,
        h: b.h,
        frame_w,
        frame_h,
        track_id: Some(track_id),
        crop: None,
    }
}

/// Faults that only `test-hooks` builds can be told to inject, for tests of the watchdog.
mod test_hooks {
    /// With `GLIMPSE_TEST_WEDGE_INFERENCE=1`, inference hangs on its first frame, as a wedged
    /// model would.
    pub fn maybe_wedge_inference() {
        #[cfg(feature = "test-hooks")]
        if std::env::var_os("GLIMPSE_TEST_WEDGE_INFERENCE").is_some() {
            tracing::warn!("GLIMPSE_TEST_WEDGE_INFERENCE: inference hangs now");
            loop {
                std::thread::sleep(std::time::Duration::from_secs(3600));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ModelError;
    use crate::stats::CameraNumber;

    /// Sees the same two people in every frame.
    struct TwoPeople;

    impl ObjectDetector for TwoPeople {
        fn detect(&mut self, _: &image::RgbImage) -> Result<Vec<Detection>, ModelError> {
            let person = |x0: f32| Detection { label: "person", score: 0.95, x0, y0: 10.0, x1: x0 + 40.0, y1: 90.0 };
            Ok(vec![person(10.0), person(100.0)])
        }
    }

    /// Fails on the crops whose call number is in `failing` (0-based).
    struct FlakyEmbedder {
        calls: usize,
        failing: Vec<usize>,
    }

    impl ImageEmbedder for FlakyEmbedder {
        fn embed(&mut self, _: &image::RgbImage) -> Result<Vec<f32>, ModelError> {
            self.calls += 1;
            match self.failing.contains(&(self.calls - 1)) {
                true => Err(ModelError::Run { path: "clip.onnx".into(), reason: "injected".into() }),
                false => Ok(vec![1.0, 0.0]),
            }
        }
    }

    fn analyzer(failing: Vec<usize>) -> (Analyzer<TwoPeople, FlakyEmbedder>, Arc<Stats>) {
        let stats = Stats::new();
        stats.camera("door"); // configured, as the supervisor does
        let settings = Settings {
            device: "dev".into(),
            min_box_px: 8,
            analysis: AnalysisConfig { motion_gate: false, ..AnalysisConfig::default() },
            crops: Some((64, 85)),
        };
        let analyzer = Analyzer::new(TwoPeople, FlakyEmbedder { calls: 0, failing }, settings, stats.clone(), Arc::new(IdClock::default()));
        (analyzer, stats)
    }

    fn file_frame(pts_ms: u64) -> Frame {
        let image = image::RgbImage::from_fn(200, 100, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 7]));
        Frame { camera: "door".into(), live: false, captured: Instant::now(), pts_ms, ts: 1, image }
    }

    #[test]
    fn a_failed_embedding_costs_its_own_record_and_is_tried_again_next_frame() {
        let (mut analyzer, stats) = analyzer(vec![1]);
        let first = analyzer.analyze(&file_frame(0));
        assert_eq!(first.iter().map(|r| r.record.id.as_str()).collect::<Vec<_>>(), ["dev:door:0:0"], "the other box's record is kept");
        // The person whose embedding failed is embedded on the next frame; the other is deduplicated.
        let second = analyzer.analyze(&file_frame(1000));
        assert_eq!(second.iter().map(|r| r.record.id.as_str()).collect::<Vec<_>>(), ["dev:door:1000:1"]);
        let crop = first[0].record.metadata.crop.as_deref();
        assert_eq!(crop, Some("dev/door/1970/01/01/dev_door_0_0.jpg"), "each record names its crop");
        assert!(first[0].crop_jpeg.as_ref().is_some_and(|j| j.starts_with(&[0xff, 0xd8])), "and carries it as a JPEG");
        let door = stats.snapshot().cameras["door"].clone();
        assert_eq!(
            [CameraNumber::Embeddings, CameraNumber::EmbeddingFailures, CameraNumber::Deduplicated, CameraNumber::FramesProcessed]
                .map(|n| door.get(n)),
            [2, 1, 1, 2]
        );
    }

    #[test]
    fn live_ids_stay_unique_when_the_wall_clock_steps_back() {
        let (mut analyzer, _) = analyzer(vec![]);
        analyzer.settings.analysis.dedupe = false;
        let live = |ts| Frame { live: true, ts, ..file_frame(0) };
        let mut ids: Vec<String> =
            [5_000, 6_000, 1_000, 5_000].into_iter().flat_map(|ts| analyzer.analyze(&live(ts))).map(|r| r.record.id).collect();
        let all = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!((all, ids.len()), (8, 8), "{ids:?}");
    }
}
