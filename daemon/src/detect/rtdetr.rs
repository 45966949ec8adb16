//! The real-time DETRs: RT-DETR, RT-DETRv2 and D-FINE (transformers' `RTDetrForObjectDetection`,
//! `RTDetrV2ForObjectDetection`, `DFineForObjectDetection`). All three use RTDetrImageProcessor:
//! the frame stretched to the input size (bilinear), rescaled to 0..1, no normalisation, RGB; and
//! its `post_process_object_detection` with focal loss: sigmoid scores, the Q best
//! (query, class) pairs over all of them, centre boxes → pixel corners. Labels are COCO's 80.

use std::sync::LazyLock;

use super::{labels, Detection};
use crate::model::{packed_chw, ChannelOrder, Input, Output, Resize, ResizeFilter};

/// RTDetrImageProcessor's `size`, for a model whose input is not fixed.
pub const DEFAULT_SIDE: u32 = 640;

/// A real-time DETR's input size.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RtDetr {
    pub width: u32,
    pub height: u32,
}

impl RtDetr {
    /// `frame` stretched to the input, on 0..1.
    pub fn input(&self, frame: &image::RgbImage, resize: &mut Resize) -> Input {
        static ON_0_TO_1: LazyLock<[[f32; 256]; 3]> = LazyLock::new(|| std::array::from_fn(|_| std::array::from_fn(|v| v as f32 / 255.0)));
        packed_chw(&resize.to(frame, self.width, self.height, ResizeFilter::Bilinear), &ON_0_TO_1, ChannelOrder::Rgb)
    }

    /// A blank frame of the input's size.
    pub fn blank(&self) -> image::RgbImage {
        image::RgbImage::new(self.width, self.height)
    }

    /// `logits [1, Q, 80]` and `pred_boxes [1, Q, 4]` (in either order) → detections above
    /// `threshold`, best first, in pixels of a `width`×`height` frame.
    pub fn decode(outputs: &[Output], width: u32, height: u32, threshold: f32) -> Result<Vec<Detection>, String> {
        let (logits, boxes) = pair(outputs)?;
        let (queries, classes) = (logits.shape[1], logits.shape[2]);
        // topk(sigmoid(logits), Q) then `score > threshold`: the pairs above the threshold, best
        // first (stably, so exact ties keep query-then-class order), at most Q of them.
        let mut best: Vec<(usize, f32)> =
            logits.data[..queries * classes].iter().map(|&l| sigmoid(l)).enumerate().filter(|&(_, s)| s > threshold).collect();
        // Best first, exact ties in index order: what a stable sort gives, on the Q best only.
        let order = |a: &(usize, f32), b: &(usize, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        if best.len() > queries {
            best.select_nth_unstable_by(queries, order);
            best.truncate(queries);
        }
        best.sort_unstable_by(order);
        let (w, h) = (width as f32, height as f32);
        Ok(best
            .into_iter()
            .map(|(at, score)| {
                let b = &boxes.data[(at / classes) * 4..(at / classes) * 4 + 4];
                let (cx, cy, bw, bh) = (b[0], b[1], b[2], b[3]);
                Detection {
                    label: labels::coco80_label(at % classes),
                    score,
                    x0: (cx - bw / 2.0) * w,
                    y0: (cy - bh / 2.0) * h,
                    x1: (cx + bw / 2.0) * w,
                    y1: (cy + bh / 2.0) * h,
                }
            })
            .collect())
    }
}

/// The class scores and the boxes, told apart by the boxes' 4 channels.
fn pair(outputs: &[Output]) -> Result<(&Output, &Output), String> {
    let wanted = || format!("logits [1, Q, {}] and pred_boxes [1, Q, 4]", labels::COCO80_CLASSES);
    let [a, b] = outputs else { return Err(format!("expected {}, found {} outputs", wanted(), outputs.len())) };
    let (logits, boxes) = if a.shape.last() == Some(&4) { (b, a) } else { (a, b) };
    let fits = logits.shape.len() == 3
        && boxes.shape.len() == 3
        && logits.shape[0] >= 1
        && boxes.shape[0] >= 1
        && logits.shape[1] == boxes.shape[1]
        && logits.shape[2] == labels::COCO80_CLASSES
        && boxes.shape[2] == 4;
    if fits {
        Ok((logits, boxes))
    } else {
        Err(format!("expected {} (real-time DETRs for COCO's 80 classes), found {:?} and {:?}", wanted(), a.shape, b.shape))
    }
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outputs(queries: usize, hits: &[(usize, usize, f32)]) -> Vec<Output> {
        let mut logits = vec![-10.0; queries * 80];
        for &(q, c, l) in hits {
            logits[q * 80 + c] = l;
        }
        let boxes = (0..queries).flat_map(|q| [0.5, 0.5, 0.1 * (q + 1) as f32, 0.2]).collect();
        vec![Output { shape: vec![1, queries, 4], data: boxes }, Output { shape: vec![1, queries, 80], data: logits }]
    }

    #[test]
    fn a_query_may_give_several_classes_best_first_each_with_its_own_box() {
        // Query 1 is a person and a bicycle; query 0 a car. sigmoid(2) = 0.88, sigmoid(1) = 0.73.
        let found = RtDetr::decode(&outputs(3, &[(1, 0, 2.0), (1, 1, 0.5), (0, 2, 1.0)]), 200, 100, 0.6).expect("decoded");
        let summary: Vec<(&str, f32)> = found.iter().map(|d| (d.label, (d.score * 100.0).round() / 100.0)).collect();
        assert_eq!(summary, vec![("person", 0.88), ("car", 0.73), ("bicycle", 0.62)]);
        // Query 1's box: centre (0.5, 0.5), 0.2 × 0.2 of a 200 × 100 frame.
        let corners = [found[0].x0, found[0].y0, found[0].x1, found[0].y1];
        for (got, want) in corners.iter().zip([80.0, 40.0, 120.0, 60.0]) {
            assert!((got - want).abs() < 1e-3, "{corners:?}");
        }
    }

    #[test]
    fn no_more_pairs_than_queries_come_out() {
        let hits: Vec<_> = (0..6).map(|c| (0, c, 3.0 - c as f32 * 0.1)).collect();
        let found = RtDetr::decode(&outputs(2, &hits), 10, 10, 0.5).expect("decoded");
        assert_eq!(found.len(), 2);
        assert_eq!([found[0].label, found[1].label], ["person", "bicycle"]);
    }

    #[test]
    fn other_label_counts_are_refused_by_shape() {
        let wrong = vec![Output { shape: vec![1, 5, 92], data: vec![0.0; 460] }, Output { shape: vec![1, 5, 4], data: vec![0.0; 20] }];
        let error = RtDetr::decode(&wrong, 10, 10, 0.5).expect_err("92 classes is DETR's");
        assert!(error.contains("[1, Q, 80]"), "{error}");
    }
}
