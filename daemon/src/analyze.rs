//! What happens to one sampled frame: motion gate → detect → clamp each box → track → crop and
//! embed the boxes the tracker asks for → records.
//! Runs on the inference thread; no I/O, no waiting on anything but the models.

use crate::detect::Detector;
use crate::embed::{clamp_box, crop, Embedder};
use crate::model::ModelError;
use crate::record::{record_id, Metadata, Record};
use crate::source::Frame;
use crate::track::Attention;

/// The result of analysing one frame.
#[derive(Default)]
pub struct Analysis {
    pub records: Vec<Record>,
    /// The motion gate kept the frame from the detector (nothing moved).
    pub gated: bool,
    pub detections: usize,
    /// Detections skipped because their clamped box was smaller than `min_box_px`.
    pub too_small: usize,
    /// Detections of already-embedded tracked objects that looked the same: not embedded again.
    pub deduplicated: usize,
}

pub fn analyze(
    frame: &Frame,
    device: &str,
    camera: &str,
    detector: &mut Detector,
    embedder: &mut Embedder,
    min_box_px: u32,
    attention: &mut Attention,
) -> Result<Analysis, ModelError> {
    let now_ms = frame.key_ms as i64;
    if !attention.gate.check(&frame.image, now_ms).detect() {
        return Ok(Analysis { gated: true, ..Analysis::default() });
    }
    let (frame_w, frame_h) = frame.image.dimensions();
    let detections = detector.detect(&frame.image)?;
    let boxes: Vec<_> =
        detections.iter().enumerate().filter_map(|(i, det)| clamp_box(det, frame_w, frame_h, min_box_px).map(|b| (i, det, b))).collect();
    let too_small = detections.len() - boxes.len();
    let tracked: Vec<_> = boxes.iter().map(|(_, det, b)| (det.label, *b)).collect();
    let assignments = attention.tracker.assign(&frame.image, &tracked, now_ms);
    let chosen: Vec<_> = boxes.into_iter().zip(assignments).filter(|(_, a)| a.embed).collect();
    let deduplicated = tracked.len() - chosen.len();
    let mut records = Vec::with_capacity(chosen.len());
    for ((index, det, b), assignment) in chosen {
        records.push(Record {
            id: record_id(device, camera, frame.key_ms, index),
            values: embedder.embed(&crop(&frame.image, b))?,
            metadata: Metadata {
                device: device.to_owned(),
                camera: camera.to_owned(),
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
                track_id: Some(assignment.track_id),
            },
        });
    }
    Ok(Analysis { records, gated: false, detections: detections.len(), too_small, deduplicated })
}
