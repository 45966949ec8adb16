//! SSD (TensorFlow's object detection API, as TFLite runs it: SSD-MobileNet-v2 for COCO): the
//! frame stretched to the model's fixed input, RGB on 0..255; raw box encodings and sigmoid class
//! scores per anchor, with the anchors as a third output; then what TFLite's
//! `TFLite_Detection_PostProcess` kernel does with the model's options (`use_regular_nms` off):
//! centre-size boxes decoded against the anchors, each anchor's best class, one NMS over all of
//! them. models/ssd.py cuts the kernel off the graph, because converters turn it into another
//! NMS. Labels are COCO's 91 ids, column 0 being the background.

use std::sync::LazyLock;

use super::{labels, Detection};
use crate::model::{packed_chw, ChannelOrder, Input, Output, Resize, ResizeFilter};

/// The box coder's scales (y, x, height, width): `y_scale`, `x_scale`, `h_scale` and `w_scale`
/// of the kernel, TensorFlow's `faster_rcnn_box_coder` defaults.
const SCALES: [f32; 4] = [10.0, 10.0, 5.0, 5.0];
/// The kernel's `nms_iou_threshold` and `max_detections`.
const IOU_THRESHOLD: f32 = 0.6;
const MAX_DETECTIONS: usize = 20;
/// Score columns: the background, then COCO's ids 1 to 90.
const COLUMNS: usize = labels::COCO91_COLUMNS;

/// An SSD model's fixed input size.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ssd {
    pub width: u32,
    pub height: u32,
}

impl Ssd {
    /// `frame` stretched to the input, on 0..255.
    pub fn input(&self, frame: &image::RgbImage, resize: &mut Resize) -> Input {
        static AS_IS: LazyLock<[[f32; 256]; 3]> = LazyLock::new(|| std::array::from_fn(|_| std::array::from_fn(|v| v as f32)));
        packed_chw(&resize.to(frame, self.width, self.height, ResizeFilter::Bilinear), &AS_IS, ChannelOrder::Rgb)
    }

    /// A blank frame of the input's size.
    pub fn blank(&self) -> image::RgbImage {
        image::RgbImage::new(self.width, self.height)
    }

    /// `box_encodings [1, A, 4]`, `scores [1, A, 91]` and `anchors [A, 4]` (in any order) →
    /// detections scoring at least `threshold` (the kernel's `>=`), best first, in pixels of a
    /// `width`×`height` frame.
    pub fn decode(outputs: &[Output], width: u32, height: u32, threshold: f32) -> Result<Vec<Detection>, String> {
        let (encodings, scores, anchors) = parts(outputs)?;
        let best: Vec<(usize, f32)> = scores.data.chunks_exact(COLUMNS).map(best_class).collect();
        let mut candidates: Vec<usize> = (0..best.len()).filter(|&a| best[a].1 >= threshold).collect();
        // Stably, so that equal scores (they are uint8 steps) keep the anchors' order, as TFLite.
        candidates.sort_by(|&a, &b| best[b].1.total_cmp(&best[a].1));
        let corners = |a: usize| decoded(&encodings.data[a * 4..a * 4 + 4], &anchors.data[a * 4..a * 4 + 4]);
        let (w, h) = (width as f32, height as f32);
        Ok(suppress(candidates, corners)
            .into_iter()
            .map(|(anchor, [y0, x0, y1, x1])| Detection {
                label: labels::coco_label(best[anchor].0, COLUMNS),
                score: best[anchor].1,
                x0: (x0 * w).clamp(0.0, w),
                y0: (y0 * h).clamp(0.0, h),
                x1: (x1 * w).clamp(0.0, w),
                y1: (y1 * h).clamp(0.0, h),
            })
            .collect())
    }
}

/// Greedy NMS over `candidates` (anchors, best first) whatever their classes: each kept unless
/// it overlaps a kept one by more than [`IOU_THRESHOLD`], at most [`MAX_DETECTIONS`].
fn suppress(candidates: Vec<usize>, corners: impl Fn(usize) -> [f32; 4]) -> Vec<(usize, [f32; 4])> {
    let mut kept: Vec<(usize, [f32; 4])> = Vec::new();
    for anchor in candidates {
        if kept.len() == MAX_DETECTIONS {
            break;
        }
        let box_ = corners(anchor);
        if kept.iter().all(|(_, k)| iou(k, &box_) <= IOU_THRESHOLD) {
            kept.push((anchor, box_));
        }
    }
    kept
}

/// The column and score of an anchor's best class, the background left out; the first of equals.
fn best_class(row: &[f32]) -> (usize, f32) {
    row.iter().enumerate().skip(1).fold((1, f32::MIN), |best, (column, &score)| if score > best.1 { (column, score) } else { best })
}

/// An encoding `(ty, tx, th, tw)` against its anchor `(y, x, h, w)` → `[ymin, xmin, ymax, xmax]`,
/// on 0..1 of the input.
fn decoded(encoding: &[f32], anchor: &[f32]) -> [f32; 4] {
    let [ty, tx, th, tw] = [0, 1, 2, 3].map(|i| encoding[i] / SCALES[i]);
    let (y, x) = (ty * anchor[2] + anchor[0], tx * anchor[3] + anchor[1]);
    let (half_h, half_w) = (0.5 * th.exp() * anchor[2], 0.5 * tw.exp() * anchor[3]);
    [y - half_h, x - half_w, y + half_h, x + half_w]
}

/// Intersection over union of two `[ymin, xmin, ymax, xmax]` boxes; 0 when either is empty.
fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let area = |r: &[f32; 4]| (r[2] - r[0]) * (r[3] - r[1]);
    if area(a) <= 0.0 || area(b) <= 0.0 {
        return 0.0;
    }
    let inter = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0) * (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    inter / (area(a) + area(b) - inter)
}

/// The encodings, scores and anchors, told apart by their shapes.
fn parts(outputs: &[Output]) -> Result<(&Output, &Output, &Output), String> {
    let found = || outputs.iter().map(|o| format!("{:?}", o.shape)).collect::<Vec<_>>().join(", ");
    let anchors = outputs.iter().find(|o| o.shape.len() == 2 && o.shape[1] == 4);
    let count = anchors.map(|a| a.shape[0]);
    let batched =
        |last: usize| outputs.iter().find(|o| o.shape.len() == 3 && o.shape[0] == 1 && Some(o.shape[1]) == count && o.shape[2] == last);
    match (batched(4), batched(COLUMNS), anchors) {
        (Some(encodings), Some(scores), Some(anchors)) if outputs.len() == 3 => {
            check_anchors(anchors)?;
            Ok((encodings, scores, anchors))
        }
        _ => Err(format!(
            "SSD outputs must be box_encodings [1, anchors, 4], scores [1, anchors, {COLUMNS}] (background and COCO's ids) and \
             anchors [anchors, 4], found {}",
            found()
        )),
    }
}

/// Anchors `(y, x, h, w)` whose sides are positive, as TFLite's kernel requires (it fails the
/// run otherwise): a box decoded from any other is inverted or empty.
fn check_anchors(anchors: &Output) -> Result<(), String> {
    match anchors.data.chunks_exact(4).position(|a| !(a[2] > 0.0 && a[3] > 0.0)) {
        Some(at) => Err(format!("SSD anchor {at} has a height or width that is not positive: {:?}", &anchors.data[at * 4..at * 4 + 4])),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Anchors of side 0.2 centred at `centres`, encodings of zero (the box is the anchor), and
    /// each anchor's (column, score).
    fn outputs(centres: &[(f32, f32)], classes: &[(usize, f32)]) -> Vec<Output> {
        let n = centres.len();
        let anchors = centres.iter().flat_map(|&(y, x)| [y, x, 0.2, 0.2]).collect();
        let mut scores = vec![0.0; n * COLUMNS];
        for (a, &(column, score)) in classes.iter().enumerate() {
            scores[a * COLUMNS + column] = score;
        }
        vec![
            Output { shape: vec![n, 4], data: anchors },
            Output { shape: vec![1, n, COLUMNS], data: scores },
            Output { shape: vec![1, n, 4], data: vec![0.0; n * 4] },
        ]
    }

    #[test]
    fn one_nms_over_every_class_keeps_the_best_of_overlapping_boxes_whatever_their_labels() {
        // Anchors 0 and 1 overlap (IoU 0.67): the person suppresses the bicycle. Anchor 2 is apart.
        let found =
            Ssd::decode(&outputs(&[(0.5, 0.5), (0.5, 0.54), (0.1, 0.1)], &[(2, 0.6), (1, 0.8), (3, 0.5)]), 100, 100, 0.5).expect("decoded");
        let summary: Vec<(&str, f32)> = found.iter().map(|d| (d.label, d.score)).collect();
        assert_eq!(summary, vec![("person", 0.8), ("car", 0.5)]);
        let person = [found[0].x0, found[0].y0, found[0].x1, found[0].y1];
        for (got, want) in person.iter().zip([44.0, 40.0, 64.0, 60.0]) {
            assert!((got - want).abs() < 1e-3, "{person:?}");
        }
    }

    #[test]
    fn an_encoding_moves_the_centre_by_a_tenth_and_scales_the_sides_by_exp_of_a_fifth() {
        let [y0, x0, y1, x1] = decoded(&[10.0, 0.0, 5.0 * 2f32.ln(), 0.0], &[0.5, 0.5, 0.1, 0.2]);
        // Centre y 0.5 + 1 × 0.1 = 0.6; height 2 × 0.1; width the anchor's 0.2.
        for (got, want) in [y0, x0, y1, x1].iter().zip([0.5, 0.4, 0.7, 0.6]) {
            assert!((got - want).abs() < 1e-6, "{:?}", [y0, x0, y1, x1]);
        }
    }

    #[test]
    fn the_background_column_is_never_a_label_and_the_threshold_is_inclusive() {
        let found = Ssd::decode(&outputs(&[(0.5, 0.5), (0.1, 0.1)], &[(0, 0.99), (1, 0.5)]), 10, 10, 0.5).expect("decoded");
        assert_eq!(found.iter().map(|d| d.label).collect::<Vec<_>>(), vec!["person"]);
    }

    /// The kernel's inputs in the rows of each photo that reach the golden file's threshold (no
    /// other row can become a detection), and TFLite's own detections at that threshold.
    #[test]
    fn tflite_s_own_tensors_decode_to_its_post_processing_kernel_s_detections() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/media/ssd_golden.json");
        let golden: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).expect("ssd_golden.json")).expect("JSON");
        for (photo, entry) in golden["images"].as_object().expect("photos") {
            let decode = &entry["decode"];
            let rows = |name: &str| -> Vec<f32> {
                let rows = decode["rows"][name].as_array().expect("rows");
                rows.iter().flat_map(|r| r.as_array().expect("a row").iter().map(|v| v.as_f64().expect("a number") as f32)).collect()
            };
            let n = decode["rows"]["anchors"].as_array().expect("anchors").len();
            let outputs = [
                Output { shape: vec![1, n, 4], data: rows("box_encodings") },
                Output { shape: vec![1, n, COLUMNS], data: rows("scores") },
                Output { shape: vec![n, 4], data: rows("anchors") },
            ];
            let threshold = decode["threshold"].as_f64().expect("threshold") as f32;
            let found = Ssd::decode(&outputs, 300, 300, threshold).expect("decoded");
            let wanted = decode["detections"].as_array().expect("detections");
            let labels: Vec<&str> = wanted.iter().map(|d| d["label"].as_str().expect("label")).collect();
            assert_eq!(found.iter().map(|d| d.label).collect::<Vec<_>>(), labels, "{photo}");
            for (f, w) in found.iter().zip(wanted) {
                let w = |k: &str| w[k].as_f64().expect("a number") as f32;
                assert_eq!(f.score, w("score"), "{photo}");
                // Glimpse keeps boxes inside the frame; the kernel does not.
                let inside = |v: f32| v.clamp(0.0, 300.0);
                let corners =
                    [(f.x0, w("x")), (f.y0, w("y")), (f.x1, w("x") + w("w")), (f.y1, w("y") + w("h"))].map(|(a, b)| (a, inside(b)));
                assert!(corners.iter().all(|(a, b)| (a - b).abs() < 1e-3), "{photo}: {corners:?}");
            }
        }
    }

    #[test]
    fn an_anchor_without_a_positive_side_is_refused() {
        let mut wrong = outputs(&[(0.5, 0.5), (0.1, 0.1)], &[(1, 0.9), (1, 0.9)]);
        wrong[0].data[7] = 0.0;
        let error = Ssd::decode(&wrong, 10, 10, 0.5).expect_err("a zero width");
        assert!(error.contains("anchor 1"), "{error}");
    }

    #[test]
    fn other_shapes_are_refused_naming_what_was_expected() {
        let mut wrong = outputs(&[(0.5, 0.5)], &[(1, 0.9)]);
        wrong[1] = Output { shape: vec![1, 1, 81], data: vec![0.0; 81] };
        let error = Ssd::decode(&wrong, 10, 10, 0.5).expect_err("81 columns");
        assert!(error.contains("scores [1, anchors, 91]") && error.contains("[1, 1, 81]"), "{error}");
    }
}
