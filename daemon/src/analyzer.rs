//! The inference stage: one thread that takes frames from the [`Scheduler`] camera by camera and
//! turns each into records — motion gate → detect → clamp → track → crop and embed the boxes the
//! tracker chose → [`Record`]s with stable ids — then hands them to the keeper.
//!
//! It owns the detector, the embedder, each camera's attention (motion gate and tracker, made on
//! its first frame and forgotten when the camera departs), the [`IdClock`] of live cameras'
//! record ids, each camera's [`TrackLog`] and the active [`Triggers`]: object events and trigger
//! matches leave through a bounded queue to the MQTT task that never makes this thread wait. It
//! does no I/O and runs on its own thread, never on a tokio worker.
//!
//! Time: decisions use stream time — a file's position, or a live frame's monotonic capture
//! time — so reruns of a file decide alike and no wall-clock step moves a decision. Record ids
//! use a file's position, or a live frame's wall-clock capture time through the [`IdClock`].

use std::collections::HashMap;
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Arc;
use std::time::Instant;

use crate::clock::IdClock;
use crate::crops;
use crate::detect::{Detection, ObjectDetector};
use crate::embed::{clamp_box, crop, ImageEmbedder, PixelBox};
use crate::events::{self, Message, Sighting, TrackEvent, TrackLog};
use crate::record::{record_id, Metadata, NewRecord, Record};
use crate::schedule::{RecvError, Scheduler};
use crate::source::Frame;
use crate::stats::{CameraStats, FrameOutcome, Stats};
use crate::systemd_notify::{Heartbeat, IDLE_BEAT};
use crate::track::{AnalysisConfig, Attention};
use crate::triggers::{Prepared, Triggers};

/// What records are made of, beyond the frame.
pub struct Settings {
    pub device: String,
    /// Boxes narrower or lower than this (after clamping) are counted, not embedded.
    pub min_box_px: u32,
    pub analysis: AnalysisConfig,
    /// Keep each record's crop as a JPEG: its longest side and quality. `None`: no crops.
    pub crops: Option<(u32, u8)>,
    /// Keep one snapshot of each frame that made records: its longest side and quality.
    pub snapshots: Option<(u32, u8)>,
}

/// One camera's state in the stage.
struct Camera {
    attention: Attention,
    stats: Arc<CameraStats>,
    /// The tracks the broker has heard of (when events are on).
    log: Option<TrackLog>,
}

/// Where object events and trigger matches go, and which tracks make events.
pub struct Broker {
    pub queue: events::Queue,
    /// `None`: only trigger matches are published, no object events.
    pub events: Option<events::TrackFilter>,
}

/// A tracked object in one frame: its track, detection and box, and the record made of it.
struct Seen {
    track_id: String,
    label: &'static str,
    score: f32,
    bbox: PixelBox,
    record: Option<usize>,
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
    broker: Option<Broker>,
    triggers: Triggers,
    /// New trigger sets from the supervisor (start-up and reloads).
    trigger_updates: Option<Receiver<Vec<Prepared>>>,
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
        let cameras = HashMap::new();
        let (broker, triggers, trigger_updates) = (None, Triggers::default(), None);
        Self { detector, embedder, settings, stats, ids, epoch: Instant::now(), cameras, broker, triggers, trigger_updates }
    }

    /// Object events and trigger matches go to `broker`; trigger sets arrive on `triggers`
    /// (none without MQTT, which is where matches go).
    pub fn with_broker(mut self, broker: Broker, triggers: Option<Receiver<Vec<Prepared>>>) -> Self {
        self.broker = Some(broker);
        self.trigger_updates = triggers;
        self
    }

    /// The thread's loop: until the scheduler says every camera has finished, or the keeper is gone.
    pub fn run(mut self, frames: &Scheduler, records: SyncSender<Vec<NewRecord>>, beat: &Heartbeat) {
        loop {
            beat.beat();
            self.take_trigger_updates();
            for camera in frames.take_departed() {
                self.camera_departed(&camera);
            }
            let frame = match frames.recv_timeout(IDLE_BEAT) {
                Ok(frame) => frame,
                Err(RecvError::Timeout) => continue,
                Err(RecvError::Finished) => break,
            };
            test_hooks::maybe_wedge_inference();
            let made = self.analyze(&frame);
            tracing::debug!(event = "frame_analysed", camera = %frame.camera, records = made.len());
            if !made.is_empty() && hand_over(&records, made, beat).is_err() {
                tracing::error!("the keeper is gone; stopping inference");
                break;
            }
        }
        // Stopping: every track the broker heard of ends, before the daemon says offline.
        let cameras: Vec<String> = self.cameras.keys().cloned().collect();
        for camera in cameras {
            self.camera_departed(&camera);
        }
    }

    fn take_trigger_updates(&mut self) {
        let Some(updates) = &self.trigger_updates else { return };
        let mut latest = None;
        while let Ok(prepared) = updates.try_recv() {
            latest = Some(prepared);
        }
        if let Some(prepared) = latest {
            let report = self.triggers.activate(prepared, &mut self.embedder);
            self.stats.triggers_configured(&report);
        }
    }

    fn camera_departed(&mut self, name: &str) {
        if let Some(mut log) = self.cameras.remove(name).and_then(|c| c.log) {
            let mut ended = Vec::new();
            log.end_all(&mut ended);
            self.send_events(ended);
        }
        self.triggers.camera_departed(name);
    }

    fn send_events(&self, events: Vec<TrackEvent>) {
        if let Some(broker) = &self.broker {
            for event in events {
                broker.queue.send(Message::Track(event));
            }
        }
    }

    /// One frame's records; everything that happened is counted on the camera's stats.
    pub fn analyze(&mut self, frame: &Frame) -> Vec<NewRecord> {
        let started = Instant::now();
        let time = self.frame_time(frame);
        let camera = self.camera(&frame.camera);
        camera.stats.frame_taken(frame.captured.elapsed());
        camera.attention.tracker.expire(time.stream_ms);
        self.end_lost_tracks(&frame.camera);
        let camera = self.camera(&frame.camera);
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
        let (mut records, outcome, seen) = self.embed_chosen(frame, time, &detections);
        self.attach_snapshot(frame, time.key_ms, &mut records);
        self.camera(&frame.camera).stats.frame_analysed(outcome, started.elapsed());
        self.tell_broker(frame, time, &seen, &records);
        records
    }

    /// Forgets what tracks the tracker stopped following fired (events or not), and ends their
    /// events.
    fn end_lost_tracks(&mut self, name: &str) {
        let Some(camera) = self.cameras.get_mut(name) else { return };
        let tracker = &camera.attention.tracker;
        self.triggers.forget_ended_tracks(name, |id| tracker.follows(id));
        let Some(log) = camera.log.as_mut() else { return };
        let mut ended = Vec::new();
        log.end_unless(|id| tracker.follows(id), &mut ended);
        self.send_events(ended);
    }

    /// Object events for what the frame showed, and the matches of its new records.
    fn tell_broker(&mut self, frame: &Frame, time: FrameTime, seen: &[Seen], records: &[NewRecord]) {
        let Some(broker) = &self.broker else { return };
        let (frame_w, frame_h) = frame.image.dimensions();
        let mut out = Vec::new();
        if let Some(log) = self.cameras.get_mut(&*frame.camera).and_then(|c| c.log.as_mut()) {
            for s in seen {
                let record = s.record.map(|i| &records[i].record).map(|r| (r.id.as_str(), r.metadata.crop.as_deref()));
                let sighting = Sighting {
                    track_id: &s.track_id,
                    label: s.label,
                    score: s.score,
                    bbox: s.bbox,
                    frame_w,
                    frame_h,
                    ts: frame.ts,
                    stream_ms: time.stream_ms,
                    record,
                };
                log.saw(&frame.camera, sighting, &mut out);
            }
        }
        for event in out {
            // A new track's crop, for the retained snapshot topics (no file is read to send it).
            let crop = match (event.kind, event.record_id.as_deref()) {
                (events::EventType::New, Some(id)) => records.iter().find(|r| r.record.id == id).and_then(|r| r.crop_jpeg.clone()),
                _ => None,
            };
            let (camera, label) = (event.camera.clone(), event.label.clone());
            let picture = crop.map(|jpeg| events::Picture { camera, label, trigger: None, jpeg: Arc::new(jpeg) });
            broker.queue.send(Message::Track(event));
            if let Some(picture) = picture {
                broker.queue.send(Message::Picture(picture));
            }
        }
        if self.triggers.is_empty() {
            return;
        }
        for new in records {
            for matched in self.triggers.check(&new.record, time.stream_ms) {
                tracing::info!(event = "trigger_matched", trigger = %matched.trigger, record = %matched.record_id, similarity = matched.similarity);
                self.stats.trigger_matched(&matched.trigger, serde_json::to_value(&matched).unwrap_or_default());
                let picture = new.crop_jpeg.clone().map(|jpeg| events::Picture {
                    camera: matched.camera.clone(),
                    label: matched.label.clone(),
                    trigger: Some(matched.trigger.clone()),
                    jpeg: Arc::new(jpeg),
                });
                broker.queue.send(Message::Match(matched));
                if let Some(picture) = picture {
                    broker.queue.send(Message::Picture(picture));
                }
            }
        }
    }

    /// Tracks the frame's boxes and embeds those the tracker chose. A failed embedding costs
    /// its own record only; the tracker learns of an embedding once it succeeded, so the object
    /// is tried again on its next frame.
    fn embed_chosen(&mut self, frame: &Frame, time: FrameTime, detections: &[Detection]) -> (Vec<NewRecord>, FrameOutcome, Vec<Seen>) {
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
        let mut seen = Vec::with_capacity(boxes.len());
        for ((index, det, b), assignment) in boxes.into_iter().zip(assignments) {
            seen.push(Seen { track_id: assignment.track_id.clone(), label: det.label, score: det.score, bbox: b, record: None });
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
                    seen.last_mut().expect("pushed above").record = Some(records.len());
                    records.push(NewRecord { record: Record { id, values, metadata }, crop_jpeg, snapshot_jpeg: None });
                }
                Err(e) => {
                    outcome.embedding_failures += 1;
                    tracing::error!(camera = %frame.camera, record = %id, error = %e, "embedding failed; this record is lost, the frame's others are kept");
                }
            }
        }
        outcome.embedded = records.len();
        (records, outcome, seen)
    }

    /// One JPEG of the whole frame for all its records, encoded here where the frame already
    /// is; a failure is logged and costs only the snapshot.
    fn attach_snapshot(&self, frame: &Frame, key_ms: u64, records: &mut [NewRecord]) {
        let (Some((max_px, quality)), false) = (self.settings.snapshots, records.is_empty()) else { return };
        let jpeg = match crops::encode(&frame.image, max_px, quality) {
            Ok(jpeg) => jpeg,
            Err(e) => return tracing::error!(camera = %frame.camera, error = %e, "cannot encode the frame's snapshot"),
        };
        let key = crops::snapshot_key(&self.settings.device, &frame.camera, frame.ts, key_ms);
        for new in records.iter_mut() {
            new.record.metadata.snapshot = Some(key.clone());
        }
        records[0].snapshot_jpeg = Some(jpeg);
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
        let filter = self.broker.as_ref().and_then(|b| b.events.clone());
        self.cameras.entry(name.to_owned()).or_insert_with(|| Camera {
            attention: Attention::new(analysis, name),
            stats: stats.existing_camera(name),
            log: filter.map(TrackLog::new),
        })
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
        snapshot: None,
        user_label: None,
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

/// Hands a frame's records to the keeper, waiting while its queue is full (the outbox paused at
/// a cap, or a slow disk): that wait is legitimate idleness, so it beats; only a keeper stuck
/// in one piece of work stops its own heartbeat. `Err` when the keeper is gone.
fn hand_over(records: &SyncSender<Vec<NewRecord>>, made: Vec<NewRecord>, beat: &Heartbeat) -> Result<(), ()> {
    let mut made = made;
    loop {
        match records.try_send(made) {
            Ok(()) => return Ok(()),
            Err(std::sync::mpsc::TrySendError::Full(back)) => {
                made = back;
                beat.beat();
                std::thread::sleep(IDLE_BEAT / 5);
            }
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => return Err(()),
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
        fn dimension(&self) -> usize {
            2
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
            snapshots: Some((128, 80)),
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
        let snapshot = first[0].record.metadata.snapshot.as_deref();
        assert_eq!(snapshot, Some("dev/door/1970/01/01/dev_door_0_frame.jpg"), "the frame's records name its snapshot");
        assert!(first[0].snapshot_jpeg.as_ref().is_some_and(|j| j.starts_with(&[0xff, 0xd8])), "the first carries it");
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

    /// The analyzer with its queue to the broker, and that queue's far end.
    fn with_broker(
        analyzer: Analyzer<TwoPeople, FlakyEmbedder>,
        stats: &Arc<Stats>,
    ) -> (Analyzer<TwoPeople, FlakyEmbedder>, events::Receiver) {
        let (queue, rx) = events::queue(100, stats.clone());
        let filter = events::TrackFilter::new(&events::EventsConfig::default());
        let (_updates, updates_rx) = std::sync::mpsc::channel();
        (analyzer.with_broker(Broker { queue, events: Some(filter) }, Some(updates_rx)), rx)
    }

    fn received(rx: &mut events::Receiver) -> Vec<(events::EventType, String)> {
        std::iter::from_fn(|| rx.try_recv().ok())
            .filter_map(|m| match m {
                Message::Track(e) => Some((e.kind, e.track_id)),
                Message::Picture(_) => None,
                Message::Match(m) => panic!("no trigger is configured: {m:?}"),
            })
            .collect()
    }

    #[test]
    fn frames_the_motion_gate_keeps_from_the_detector_make_no_events_but_tracks_still_end_on_time() {
        let (analyzer, stats) = analyzer(vec![]);
        let (mut analyzer, mut rx) = with_broker(analyzer, &stats);
        analyzer.settings.analysis = AnalysisConfig { motion_gate: true, refresh_s: 3600.0, ..AnalysisConfig::default() };
        analyzer.analyze(&file_frame(0));
        use events::EventType::{End, New};
        assert_eq!(received(&mut rx), [(New, "0.0".to_owned()), (New, "0.1".to_owned())]);
        // The same picture: nothing moved, no detection, no event.
        for pts in [1_000, 2_000, 3_000] {
            analyzer.analyze(&file_frame(pts));
        }
        assert!(received(&mut rx).is_empty());
        assert_eq!(stats.snapshot().cameras["door"].get(CameraNumber::FramesGated), 3);
        // Past track_timeout_s (5 s) without a sighting, on a gated frame: both tracks end.
        analyzer.analyze(&file_frame(6_000));
        assert_eq!(received(&mut rx), [(End, "0.0".to_owned()), (End, "0.1".to_owned())]);
    }

    #[test]
    fn a_departed_camera_ends_its_open_tracks() {
        let (analyzer, stats) = analyzer(vec![]);
        let (mut analyzer, mut rx) = with_broker(analyzer, &stats);
        analyzer.analyze(&file_frame(0));
        received(&mut rx);
        analyzer.camera_departed("door");
        let ends = received(&mut rx);
        assert_eq!(ends.len(), 2, "{ends:?}");
        assert!(ends.iter().all(|(kind, _)| *kind == events::EventType::End), "{ends:?}");
    }
}
