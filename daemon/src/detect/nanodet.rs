//! NanoDet (RangiLyu/nanodet, the GFL head of NanoDet-m): the frame fitted into the model's fixed
//! input keeping its aspect ratio, centred on black (NanoDet's `keep_ratio` warp), BGR,
//! normalised on 0..255 with OpenCV-trained means; per stride, sigmoid class
//! scores and a distribution of 4 × (reg_max + 1) bins per side whose expectation is the
//! distance from the cell's centre; then per-class NMS, as `GFLHead.get_bboxes_single` does.

use std::sync::LazyLock;

use super::{labels, Detection};
use crate::model::{packed_chw, ChannelOrder, Input, Output, Resize, ResizeFilter};

/// NanoDet's `img_norm_cfg`, on 0..255 values, in R, G, B order (its config lists them B, G, R).
const MEAN: [f32; 3] = [123.675, 116.28, 103.53];
const STD: [f32; 3] = [58.395, 57.12, 57.375];
/// NanoDet's `multiclass_nms` settings.
const IOU_THRESHOLD: f32 = 0.6;
const MAX_DETECTIONS: usize = 100;
/// Cells of one stride considered before NMS (`nms_pre`).
const CELLS_PER_STRIDE: usize = 1000;
const STRIDES: [usize; 4] = [8, 16, 32, 64];

/// A NanoDet model's fixed input size.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NanoDet {
    pub width: u32,
    pub height: u32,
}

/// How a frame is placed in the input (Python's `letterbox` in models/nanodet.py).
struct Fit {
    ratio: f32,
    inner: (u32, u32),
    offset: (u32, u32),
}

/// One candidate box before NMS, in the model's input pixels.
#[derive(Clone, Copy, Debug)]
struct Candidate {
    class: usize,
    score: f32,
    corners: [f32; 4],
}

impl NanoDet {
    /// `frame` fitted into the input, centred on black, BGR, normalised.
    pub fn input(&self, frame: &image::RgbImage, resize: &mut Resize) -> Input {
        let fit = self.fit(frame.width(), frame.height());
        let inner = resize.to(frame, fit.inner.0, fit.inner.1, ResizeFilter::Bilinear);
        let mut canvas = image::RgbImage::new(self.width, self.height);
        image::imageops::replace(&mut canvas, &inner, i64::from(fit.offset.0), i64::from(fit.offset.1));
        static NORMALISED: LazyLock<[[f32; 256]; 3]> =
            LazyLock::new(|| std::array::from_fn(|c| std::array::from_fn(|v| (v as f32 - MEAN[c]) / STD[c])));
        packed_chw(&canvas, &NORMALISED, ChannelOrder::Bgr)
    }

    /// A blank frame of the input's size.
    pub fn blank(&self) -> image::RgbImage {
        image::RgbImage::new(self.width, self.height)
    }

    /// Where a `width`×`height` frame lies in the input: scaled by `ratio` to `inner`, at `offset`.
    /// In f64, rounding half to even, as Python's `round` does in the reference.
    fn fit(&self, width: u32, height: u32) -> Fit {
        let ratio = (f64::from(self.width) / f64::from(width)).min(f64::from(self.height) / f64::from(height));
        let side = |v: u32, most: u32| ((f64::from(v) * ratio).round_ties_even() as u32).clamp(1, most);
        let inner = (side(width, self.width), side(height, self.height));
        Fit { ratio: ratio as f32, inner, offset: ((self.width - inner.0) / 2, (self.height - inner.1) / 2) }
    }

    /// Score maps `[1, cells, 80]` and box distributions `[1, cells, 4 × bins]`, one pair per
    /// stride in any order → detections above `threshold` in a `width`×`height` frame.
    pub fn decode(&self, outputs: &[Output], width: u32, height: u32, threshold: f32) -> Result<Vec<Detection>, String> {
        let mut candidates = Vec::new();
        for (scores, boxes) in self.pairs(outputs)? {
            candidates.extend(self.level(scores, boxes, threshold)?);
        }
        let fit = self.fit(width, height);
        let frame = |v: f32, offset: u32, side: u32| ((v - offset as f32) / fit.ratio).clamp(0.0, side as f32);
        Ok(suppress(candidates)
            .into_iter()
            .map(|c| Detection {
                label: labels::coco80_label(c.class),
                score: c.score,
                x0: frame(c.corners[0], fit.offset.0, width),
                y0: frame(c.corners[1], fit.offset.1, height),
                x1: frame(c.corners[2], fit.offset.0, width),
                y1: frame(c.corners[3], fit.offset.1, height),
            })
            .collect())
    }

    /// The outputs paired by stride, finest first (the reference's order, which decides exact
    /// ties): the one with 80 channels is a score map, the other of the same cell count its boxes.
    fn pairs<'a>(&self, outputs: &'a [Output]) -> Result<Vec<(&'a Output, &'a Output)>, String> {
        let shapes = || outputs.iter().map(|o| format!("{:?}", o.shape)).collect::<Vec<_>>().join(", ");
        let cells = |o: &Output| (o.shape.len() == 3 && o.shape[0] == 1).then(|| o.shape[1]);
        let classes = labels::COCO80_CLASSES;
        let mut pairs: Vec<_> = outputs
            .iter()
            .filter(|o| cells(o).is_some() && o.shape[2] == classes)
            .filter_map(|scores| {
                let boxes = outputs
                    .iter()
                    .find(|b| cells(b) == cells(scores) && b.shape[2] != classes && b.shape[2] >= 8 && b.shape[2] % 4 == 0)?;
                Some((scores, boxes))
            })
            .collect();
        if pairs.is_empty() || pairs.len() * 2 != outputs.len() {
            return Err(format!(
                "NanoDet outputs must be pairs of [1, cells, {classes}] scores and [1, cells, 4 × bins] boxes (at least 2 bins), found {}",
                shapes()
            ));
        }
        pairs.sort_by_key(|(scores, _)| std::cmp::Reverse(scores.shape[1]));
        Ok(pairs)
    }

    /// The candidates of one stride: every class above `threshold` in the cells with the highest
    /// scores, each box the expected distance of its four sides.
    fn level(&self, scores: &Output, boxes: &Output, threshold: f32) -> Result<Vec<Candidate>, String> {
        let (cells, classes, bins) = (scores.shape[1], scores.shape[2], boxes.shape[2] / 4);
        let (stride, columns) =
            self.grid(cells).ok_or_else(|| format!("{cells} cells match no stride of a {}×{} input", self.width, self.height))?;
        let best = |cell: usize| scores.data[cell * classes..(cell + 1) * classes].iter().cloned().fold(f32::MIN, f32::max);
        let mut kept: Vec<usize> = (0..cells).filter(|&cell| best(cell) > threshold).collect();
        // The reference takes a stride's top cells whenever it has more than `nms_pre`, which
        // puts them in score order (stably): the order exact ties are broken in.
        if cells > CELLS_PER_STRIDE {
            kept.sort_by(|&a, &b| best(b).total_cmp(&best(a)));
            kept.truncate(CELLS_PER_STRIDE);
        }
        let s = stride as f32;
        let mut found = Vec::new();
        for cell in kept {
            let (cx, cy) = (((cell % columns) as f32 + 0.5) * s, ((cell / columns) as f32 + 0.5) * s);
            let row = &boxes.data[cell * 4 * bins..(cell + 1) * 4 * bins];
            let d: Vec<f32> = row.chunks_exact(bins).map(|side| expectation(side) * s).collect();
            let (w, h) = (self.width as f32, self.height as f32);
            let corners = [(cx - d[0]).clamp(0.0, w), (cy - d[1]).clamp(0.0, h), (cx + d[2]).clamp(0.0, w), (cy + d[3]).clamp(0.0, h)];
            for (class, &score) in scores.data[cell * classes..(cell + 1) * classes].iter().enumerate() {
                if score > threshold {
                    found.push(Candidate { class, score, corners });
                }
            }
        }
        Ok(found)
    }

    /// The stride whose grid over the input has `cells` cells, and the grid's width.
    fn grid(&self, cells: usize) -> Option<(usize, usize)> {
        STRIDES
            .iter()
            .map(|&s| (s, (self.width as usize).div_ceil(s), (self.height as usize).div_ceil(s)))
            .find_map(|(s, columns, rows)| (columns * rows == cells).then_some((s, columns)))
    }
}

/// Σ i · softmax(bins)ᵢ: the distance, in strides, that a side's distribution expects.
fn expectation(bins: &[f32]) -> f32 {
    let max = bins.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = bins.iter().map(|b| (b - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.iter().enumerate().map(|(i, e)| i as f32 * e).sum::<f32>() / sum
}

/// Greedy NMS within each class, highest score first, at most [`MAX_DETECTIONS`].
fn suppress(mut candidates: Vec<Candidate>) -> Vec<Candidate> {
    candidates.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept: Vec<Candidate> = Vec::new();
    for candidate in candidates {
        if kept.len() == MAX_DETECTIONS {
            break;
        }
        if !kept.iter().any(|k| k.class == candidate.class && iou(&k.corners, &candidate.corners) > IOU_THRESHOLD) {
            kept.push(candidate);
        }
    }
    kept
}

fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let area = |r: &[f32; 4]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    let overlap = [a[0].max(b[0]), a[1].max(b[1]), a[2].min(b[2]), a[3].min(b[3])];
    let inter = area(&overlap);
    let union = area(a) + area(b) - inter;
    if union > 0.0 {
        inter / union
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_distribution_expects_its_weighted_bin() {
        assert!((expectation(&[0.0, 0.0, 100.0, 0.0]) - 2.0).abs() < 1e-4);
        assert!((expectation(&[5.0, 5.0]) - 0.5).abs() < 1e-6);
    }

    #[test]
    fn overlapping_boxes_of_one_class_keep_the_best_and_other_classes_stay() {
        let c = |class, score, x0: f32| Candidate { class, score, corners: [x0, 0.0, x0 + 10.0, 10.0] };
        let kept = suppress(vec![c(0, 0.5, 1.0), c(0, 0.9, 0.0), c(1, 0.4, 0.0), c(0, 0.7, 50.0)]);
        let summary: Vec<(usize, f32)> = kept.iter().map(|k| (k.class, k.score)).collect();
        assert_eq!(summary, vec![(0, 0.9), (0, 0.7), (1, 0.4)]);
    }

    #[test]
    fn a_wide_frame_is_centred_between_black_bands() {
        let fit = NanoDet { width: 416, height: 416 }.fit(640, 272);
        assert_eq!((fit.inner, fit.offset), ((416, 177), (0, 119)));
    }

    #[test]
    fn a_side_at_exactly_half_a_pixel_rounds_to_even_as_the_reference_does() {
        // 416 / 832 = 0.5 exactly: 3 × 0.5 = 1.5 → 2 and 5 × 0.5 = 2.5 → 2 (Python's round).
        let model = NanoDet { width: 416, height: 416 };
        assert_eq!(model.fit(832, 3).inner, (416, 2));
        assert_eq!(model.fit(832, 5).inner, (416, 2));
    }

    #[test]
    fn exact_ties_across_strides_keep_the_finer_stride_first() {
        let model = NanoDet { width: 64, height: 64 };
        // The same score for class 0 in one cell of stride 32 (4 cells) and of stride 8 (64
        // cells), given coarse first: the stride-8 box is the one kept, as in the reference.
        let level = |cells: usize| {
            let scores = Output { shape: vec![1, cells, 80], data: (0..cells * 80).map(|i| if i == 0 { 0.8 } else { 0.0 }).collect() };
            let boxes = Output { shape: vec![1, cells, 8], data: vec![0.0; cells * 8] };
            [scores, boxes]
        };
        let outputs: Vec<Output> = level(4).into_iter().chain(level(64)).collect();
        let found = model.decode(&outputs, 64, 64, 0.5).expect("decoded");
        // Stride 8, cell 0: centre (4, 4), sides 0.5 × 8 = 4 → (0, 0)-(8, 8); it overlaps the
        // stride-32 box (0, 0)-(32, 32) too little to suppress it, so both stay, finer first.
        assert_eq!(found.len(), 2);
        assert_eq!([found[0].x1, found[1].x1], [8.0, 32.0]);
    }

    #[test]
    fn strides_follow_the_input_size() {
        let model = NanoDet { width: 416, height: 416 };
        assert_eq!(model.grid(2704), Some((8, 52)));
        assert_eq!(model.grid(169), Some((32, 13)));
        assert_eq!(model.grid(100), None);
    }

    #[test]
    fn a_cell_s_box_is_its_centre_plus_the_expected_distances_scaled_to_the_frame() {
        let model = NanoDet { width: 416, height: 416 };
        let scores = Output { shape: vec![1, 169, 80], data: (0..169 * 80).map(|i| if i == 80 * 14 + 1 { 0.8 } else { 0.0 }).collect() };
        // Cell 14 (column 1, row 1) at stride 32: centre (48, 48); every side 1 bin of 2 → 32 px.
        let boxes = Output { shape: vec![1, 169, 8], data: (0..169 * 8).map(|i| if i % 2 == 1 { 100.0 } else { 0.0 }).collect() };
        // An 832×832 frame fills the input at half size: input (16, 16)-(80, 80) is twice that.
        let found = model.decode(&[boxes, scores], 832, 832, 0.5).expect("decoded");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].label, "bicycle");
        let corners = [found[0].x0, found[0].y0, found[0].x1, found[0].y1];
        for (got, want) in corners.iter().zip([32.0, 32.0, 160.0, 160.0]) {
            assert!((got - want).abs() < 1e-3, "{corners:?}");
        }
    }
}
