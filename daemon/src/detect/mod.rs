//! Object detection with a DETR ONNX model (on the configured engine), with DetrImageProcessor's pre-processing
//! (shortest/longest-edge resize, ImageNet normalisation) and `post_process_object_detection`
//! (softmax without the no-object class, threshold, centre boxes → pixel corners).
//!
//! Pure computation: no I/O beyond loading the model, no knowledge of cameras or the outbox.

mod labels;

pub use labels::is_label;

use std::path::PathBuf;

use serde::Deserialize;

use crate::model::{form, normalized_chw, Engine, FormMemory, FormPolicy, FormReport, Model, ModelError, Resize, ResizeFilter, Shapes};
use crate::validate::{KeyPath, Problem};

const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// `[detector]`
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct DetectorConfig {
    /// Path of the DETR ONNX file (input `pixel_values`, outputs `logits` and `pred_boxes`).
    pub model: PathBuf,
    /// Minimum class probability for a detection. Default 0.9.
    #[serde(default = "default_threshold")]
    pub threshold: f32,
    /// Resize rule of DetrImageProcessor: the short side becomes this... Default 800.
    #[serde(default = "default_shortest_edge")]
    pub shortest_edge: u32,
    /// ...unless the long side would exceed this. Default 1333.
    #[serde(default = "default_longest_edge")]
    pub longest_edge: u32,
    /// Detections whose box is narrower or lower than this many pixels are not embedded. Default 8.
    #[serde(default = "default_min_box_px")]
    pub min_box_px: u32,
    /// `fastest` (default): an int8 file competes with its other forms beside it (docs/inference.md);
    /// `as-configured`: exactly this file.
    #[serde(default)]
    pub form: FormPolicy,
}

fn default_threshold() -> f32 {
    0.9
}
fn default_shortest_edge() -> u32 {
    800
}
fn default_longest_edge() -> u32 {
    1333
}
fn default_min_box_px() -> u32 {
    8
}

impl DetectorConfig {
    pub fn validate(&self, at: &KeyPath, problems: &mut Vec<Problem>) {
        if !(self.threshold > 0.0 && self.threshold < 1.0) {
            problems.push(Problem::new(at.key("threshold"), format!("must be between 0 and 1 exclusive (got {})", self.threshold)));
        }
        if !(32..=4096).contains(&self.shortest_edge) {
            problems.push(Problem::new(at.key("shortest_edge"), "must be between 32 and 4096 pixels"));
        }
        if self.longest_edge < self.shortest_edge || self.longest_edge > 8192 {
            problems.push(Problem::new(at.key("longest_edge"), "must be at least shortest_edge and at most 8192"));
        }
    }
}

/// One object found in a frame, in pixels of the original frame.
#[derive(Clone, Debug, PartialEq)]
pub struct Detection {
    pub label: &'static str,
    pub score: f32,
    pub x0: f32,
    pub y0: f32,
    pub x1: f32,
    pub y1: f32,
}

/// What inference needs of a detector: one frame in, the objects in it out.
pub trait ObjectDetector {
    fn detect(&mut self, frame: &image::RgbImage) -> Result<Vec<Detection>, ModelError>;
    /// Optimised plans held in memory (each holds a prepared copy of the weights).
    fn plans_held(&self) -> usize {
        0
    }
}

/// How many optimised plans (one per model input size) tract keeps for the detector. Each holds
/// a prepared copy of the weights, so the cache is bounded: cameras of more sizes than this share
/// it, the least recently used plan making way (and being rebuilt when its size comes back).
/// (One plan with symbolic height and width would serve every size, but tract 0.23 cannot infer
/// DETR's Flatten with symbolic spatial dimensions.)
pub const MAX_PLANS: usize = 3;

pub struct Detector {
    model: Model,
    config: DetectorConfig,
    resize: Resize,
    form: FormReport,
}

impl Detector {
    /// Loads the model and runs it once on a blank frame, so that a file that parses but cannot
    /// run is reported at start-up rather than on the first frame.
    pub fn load(config: &DetectorConfig, engine: &Engine, memory: Option<&FormMemory>) -> Result<Self, ModelError> {
        let side = config.shortest_edge;
        let blank = image::RgbImage::new(side, side);
        let sample = || normalized_chw(&blank, IMAGENET_MEAN, IMAGENET_STD);
        let shapes = Shapes::VaryingPixels { max_plans: MAX_PLANS };
        let (model, form) = form::open_fastest(engine, &config.model, shapes, config.form, &sample, memory)?;
        let mut detector = Self { model, config: config.clone(), resize: Resize::default(), form };
        detector.detect(&blank)?;
        // Cameras rarely have square frames: the check's plan would only hold memory.
        detector.model.release_plans();
        Ok(detector)
    }

    /// Where the model runs: `tract`, or an ONNX Runtime execution provider.
    pub fn provider(&self) -> &str {
        self.model.provider()
    }

    /// Which of the model's forms runs, and why.
    pub fn form(&self) -> &FormReport {
        &self.form
    }
}

impl ObjectDetector for Detector {
    fn plans_held(&self) -> usize {
        self.model.plans_held()
    }

    fn detect(&mut self, frame: &image::RgbImage) -> Result<Vec<Detection>, ModelError> {
        let (w, h) = frame.dimensions();
        let (rh, rw) = resize_size(h, w, self.config.shortest_edge, self.config.longest_edge);
        let resized = self.resize.to(frame, rw, rh, ResizeFilter::Bilinear);
        let input = normalized_chw(&resized, IMAGENET_MEAN, IMAGENET_STD);
        let outputs = self.model.run(input)?;
        let (logits, boxes) = match (self.model.output(&outputs, 0)?.view(), self.model.output(&outputs, 1)?.view()) {
            (a, b) if a.shape().last() == Some(&4) => (b, a),
            pair => pair,
        };
        let shape_error = |what: &str| ModelError::Shape { path: self.model.path().to_owned(), reason: what.to_owned() };
        let logits = logits
            .into_dimensionality::<tract_onnx::prelude::tract_ndarray::Ix3>()
            .map_err(|_| shape_error("logits must be [batch, queries, classes + 1]"))?;
        let boxes = boxes
            .into_dimensionality::<tract_onnx::prelude::tract_ndarray::Ix3>()
            .map_err(|_| shape_error("pred_boxes must be [batch, queries, 4]"))?;
        if boxes.shape()[2] != 4 || boxes.shape()[1] != logits.shape()[1] || logits.shape()[2] < 2 {
            return Err(shape_error("outputs must be logits [1, Q, C+1] and pred_boxes [1, Q, 4]"));
        }
        let mut found = Vec::new();
        for q in 0..logits.shape()[1] {
            let row: Vec<f32> = logits.slice(tract_onnx::prelude::tract_ndarray::s![0, q, ..]).to_vec();
            let Some((class, score)) = best_class(&row) else { continue };
            if score <= self.config.threshold {
                continue;
            }
            let (cx, cy, bw, bh) = (boxes[[0, q, 0]], boxes[[0, q, 1]], boxes[[0, q, 2]], boxes[[0, q, 3]]);
            found.push(Detection {
                label: labels::coco_label(class, row.len() - 1),
                score,
                x0: (cx - 0.5 * bw) * w as f32,
                y0: (cy - 0.5 * bh) * h as f32,
                x1: (cx + 0.5 * bw) * w as f32,
                y1: (cy + 0.5 * bh) * h as f32,
            });
        }
        Ok(found)
    }
}

/// Softmax over all classes, then the best class that is not the last ("no object") one.
fn best_class(logits: &[f32]) -> Option<(usize, f32)> {
    let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits.iter().map(|l| (l - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps[..exps.len() - 1].iter().enumerate().map(|(i, e)| (i, e / sum)).max_by(|a, b| a.1.total_cmp(&b.1))
}

/// DetrImageProcessor's output size, `(height, width)`, for `shortest_edge`/`longest_edge`
/// (transformers' `get_size_with_aspect_ratio`, including its rounding).
pub fn resize_size(height: u32, width: u32, shortest_edge: u32, longest_edge: u32) -> (u32, u32) {
    let (h, w) = (height as f64, width as f64);
    let mut size = shortest_edge as f64;
    let mut raw_size = None;
    let (min_side, max_side) = (h.min(w), h.max(w));
    if max_side / min_side * size > longest_edge as f64 {
        let raw = longest_edge as f64 * min_side / max_side;
        raw_size = Some(raw);
        size = raw.round();
    }
    if (h <= w && h == size) || (w <= h && w == size) {
        return (height, width);
    }
    let scaled = |long: f64, short: f64| match raw_size {
        Some(raw) => (raw * long / short) as u32,
        None => (size * long / short) as u32,
    };
    if w < h {
        (scaled(h, w), size as u32)
    } else {
        (size as u32, scaled(w, h))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_follows_detr_image_processor() {
        // Values computed with transformers' get_size_with_aspect_ratio.
        assert_eq!(resize_size(480, 640, 800, 1333), (800, 1066));
        assert_eq!(resize_size(272, 640, 800, 1333), (567, 1333));
        assert_eq!(resize_size(1080, 1920, 800, 1333), (750, 1333));
        assert_eq!(resize_size(800, 600, 800, 1333), (1066, 800));
        assert_eq!(resize_size(800, 1000, 800, 1333), (800, 1000));
    }

    #[test]
    fn the_no_object_class_never_wins() {
        let (class, score) = best_class(&[0.0, 1.0, 10.0]).expect("two real classes");
        assert_eq!(class, 1);
        assert!(score < 0.01);
    }
}
