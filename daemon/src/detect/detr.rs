//! DETR: DetrImageProcessor's pre-processing (shortest/longest-edge resize, ImageNet
//! normalisation) and `post_process_object_detection` (softmax without the no-object class,
//! threshold, centre boxes → pixel corners).

use tract_onnx::prelude::tract_ndarray::{s, Ix3};

use super::{labels, Detection};
use crate::model::{normalized_chw, Input, Output, Resize, ResizeFilter};

const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// DETR's resize rule, from `[detector] shortest_edge` and `longest_edge`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Detr {
    pub shortest_edge: u32,
    pub longest_edge: u32,
}

impl Detr {
    /// `frame` resized by DetrImageProcessor's rule and normalised.
    pub fn input(&self, frame: &image::RgbImage, resize: &mut Resize) -> Input {
        let (w, h) = frame.dimensions();
        let (rh, rw) = resize_size(h, w, self.shortest_edge, self.longest_edge);
        normalized_chw(&resize.to(frame, rw, rh, ResizeFilter::Bilinear), IMAGENET_MEAN, IMAGENET_STD)
    }

    /// A blank square frame at the short side: what the form check times.
    pub fn blank(&self) -> image::RgbImage {
        image::RgbImage::new(self.shortest_edge, self.shortest_edge)
    }

    /// `logits [1, Q, C+1]` and `pred_boxes [1, Q, 4]` (in either order) → detections above
    /// `threshold`, in pixels of a `width`×`height` frame. `Err` says what the shapes were.
    pub fn decode(outputs: &[Output], width: u32, height: u32, threshold: f32) -> Result<Vec<Detection>, String> {
        let [a, b, ..] = outputs else { return Err(format!("expected logits and pred_boxes, found {} outputs", outputs.len())) };
        let (logits, boxes) = match (a.view(), b.view()) {
            (a, b) if a.shape().last() == Some(&4) => (b, a),
            pair => pair,
        };
        let logits = logits.into_dimensionality::<Ix3>().map_err(|_| "logits must be [batch, queries, classes + 1]")?;
        let boxes = boxes.into_dimensionality::<Ix3>().map_err(|_| "pred_boxes must be [batch, queries, 4]")?;
        if boxes.shape()[2] != 4
            || boxes.shape()[1] != logits.shape()[1]
            || logits.shape()[2] < 2
            || logits.shape()[0] == 0
            || boxes.shape()[0] == 0
        {
            return Err("outputs must be logits [1, Q, C+1] and pred_boxes [1, Q, 4]".into());
        }
        let (w, h) = (width as f32, height as f32);
        let mut found = Vec::new();
        for q in 0..logits.shape()[1] {
            let row: Vec<f32> = logits.slice(s![0, q, ..]).to_vec();
            let Some((class, score)) = best_class(&row) else { continue };
            if score <= threshold {
                continue;
            }
            let (cx, cy, bw, bh) = (boxes[[0, q, 0]], boxes[[0, q, 1]], boxes[[0, q, 2]], boxes[[0, q, 3]]);
            found.push(Detection {
                label: labels::coco_label(class, row.len() - 1),
                score,
                x0: (cx - 0.5 * bw) * w,
                y0: (cy - 0.5 * bh) * h,
                x1: (cx + 0.5 * bw) * w,
                y1: (cy + 0.5 * bh) * h,
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
