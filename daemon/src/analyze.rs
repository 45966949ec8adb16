//! What happens to one sampled frame: detect → clamp and crop each box → embed → records.
//! Runs on the inference thread; no I/O, no waiting on anything but the models.

use crate::detect::Detector;
use crate::embed::{clamp_box, crop, Embedder};
use crate::model::ModelError;
use crate::record::{record_id, Metadata, Record};
use crate::source::Frame;

/// The result of analysing one frame.
pub struct Analysis {
    pub records: Vec<Record>,
    pub detections: usize,
    /// Detections skipped because their clamped box was smaller than `min_box_px`.
    pub too_small: usize,
}

pub fn analyze(
    frame: &Frame,
    device: &str,
    camera: &str,
    detector: &mut Detector,
    embedder: &mut Embedder,
    min_box_px: u32,
) -> Result<Analysis, ModelError> {
    let (frame_w, frame_h) = frame.image.dimensions();
    let detections = detector.detect(&frame.image)?;
    let boxes: Vec<_> = detections.iter().enumerate().filter_map(|(i, det)| clamp_box(det, frame_w, frame_h, min_box_px).map(|b| (i, det, b))).collect();
    let too_small = detections.len() - boxes.len();
    // All crops of a frame go through the embedder together (batched).
    let crops: Vec<_> = boxes.iter().map(|(_, _, b)| crop(&frame.image, *b)).collect();
    let embeddings = embedder.embed_batch(&crops)?;
    let mut records = Vec::with_capacity(boxes.len());
    for ((index, det, b), values) in boxes.into_iter().zip(embeddings) {
        records.push(Record {
            id: record_id(device, camera, frame.key_ms, index),
            values,
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
            },
        });
    }
    Ok(Analysis { records, detections: detections.len(), too_small })
}
