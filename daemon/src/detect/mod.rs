//! Object detection (on the configured engine) by detector family, each with its own
//! pre-processing, decoding and label map: DETR (`detr.rs`: DetrImageProcessor and
//! `post_process_object_detection`), the real-time DETRs (`rtdetr.rs`: RT-DETR, RT-DETRv2 and
//! D-FINE, RTDetrImageProcessor's), NanoDet (`nanodet.rs`: its letterbox, GFL head and NMS)
//! and SSD (`ssd.rs`: TFLite's detection post-processing). `family = "auto"` tells them apart
//! by the model's outputs and operators, read without loading it.
//!
//! Pure computation: no I/O beyond loading the model, no knowledge of cameras or the outbox.

mod detr;
mod labels;
mod nanodet;
mod rtdetr;
mod ssd;

pub use detr::{resize_size, Detr};
pub use labels::is_label;
pub use nanodet::NanoDet;
pub use rtdetr::RtDetr;
pub use ssd::Ssd;

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::model::{form, signature, Engine, FormMemory, FormPolicy, FormReport, Input, Model, ModelError, Output, Resize, Shapes};
use crate::validate::{KeyPath, Problem};

/// `[detector]`
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct DetectorConfig {
    /// Path of the ONNX file.
    pub model: PathBuf,
    /// `auto` (default): told by the model's outputs and operators; `detr`, `rt-detr`, `nanodet` or `ssd`.
    #[serde(default)]
    pub family: Family,
    /// Minimum class probability for a detection. Default: the family's ([`Head::default_threshold`]).
    #[serde(default)]
    pub threshold: Option<f32>,
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
        if let Some(threshold) = self.threshold.filter(|t| !(*t > 0.0 && *t < 1.0)) {
            problems.push(Problem::new(at.key("threshold"), format!("must be between 0 and 1 exclusive (got {threshold})")));
        }
        if !(32..=4096).contains(&self.shortest_edge) {
            problems.push(Problem::new(at.key("shortest_edge"), "must be between 32 and 4096 pixels"));
        }
        if self.longest_edge < self.shortest_edge || self.longest_edge > 8192 {
            problems.push(Problem::new(at.key("longest_edge"), "must be at least shortest_edge and at most 8192"));
        }
    }
}

/// `[detector] family`: which pre-processing, decoding and labels the model needs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    #[default]
    Auto,
    /// DETR (facebook/detr-resnet-50 and its exports): outputs `logits` and `pred_boxes`.
    Detr,
    /// RT-DETR, RT-DETRv2 and D-FINE: `logits [1, Q, 80]` and `pred_boxes`, and a `TopK` that
    /// selects the queries.
    #[serde(rename = "rt-detr")]
    RtDetr,
    /// NanoDet-m: per stride, `[1, cells, 80]` scores and `[1, cells, 4 × bins]` boxes.
    Nanodet,
    /// SSD-MobileNet (TensorFlow's, cut before TFLite's post-processing): `box_encodings
    /// [1, A, 4]`, `scores [1, A, 91]` and `anchors [A, 4]`.
    Ssd,
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
    head: Head,
    threshold: f32,
    resize: Resize,
    form: FormReport,
}

/// A family with what it read from the model.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Head {
    Detr(Detr),
    RtDetr(RtDetr),
    NanoDet(NanoDet),
    Ssd(Ssd),
}

impl std::fmt::Display for Head {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Head::Detr(d) => write!(f, "detr (resized to shortest_edge {}, longest_edge {})", d.shortest_edge, d.longest_edge),
            Head::RtDetr(r) => write!(f, "rt-detr (input {}×{}, COCO's 80 labels)", r.width, r.height),
            Head::NanoDet(n) => write!(f, "nanodet (input {}×{}, COCO's 80 labels)", n.width, n.height),
            Head::Ssd(s) => write!(f, "ssd (input {}×{}, COCO's 91 ids)", s.width, s.height),
        }
    }
}

/// The input sides a fixed-size detector may have: below, no stride fits; above, one frame's
/// tensor is gigabytes.
const MIN_INPUT_SIDE: u32 = 32;
const MAX_INPUT_SIDE: u32 = 4096;

fn input_side(dim: usize) -> Option<u32> {
    u32::try_from(dim).ok().filter(|side| (MIN_INPUT_SIDE..=MAX_INPUT_SIDE).contains(side))
}

/// A real-time DETR's input: the file's fixed size, or RTDetrImageProcessor's 640×640 when
/// height and width are symbols.
fn rt_detr(input: &signature::Value) -> Result<RtDetr, String> {
    match input.dims[..] {
        [_, Some(3) | None, None, None] => Ok(RtDetr { width: rtdetr::DEFAULT_SIDE, height: rtdetr::DEFAULT_SIDE }),
        [_, Some(3) | None, Some(height), Some(width)] => match (input_side(height), input_side(width)) {
            (Some(height), Some(width)) => Ok(RtDetr { width, height }),
            _ => Err(format!("an RT-DETR input of {width}×{height} is outside {MIN_INPUT_SIDE}..={MAX_INPUT_SIDE} pixels a side")),
        },
        ref dims => Err(format!(
            "an RT-DETR model needs an input [batch, 3, height, width], its height and width both fixed or both symbolic; found {dims:?}"
        )),
    }
}

/// The fixed input `(width, height)` of a `family` model (NanoDet, SSD).
fn fixed_input(input: &signature::Value, family: &str) -> Result<(u32, u32), String> {
    match input.dims[..] {
        [_, Some(3), Some(height), Some(width)] => match (input_side(height), input_side(width)) {
            (Some(height), Some(width)) => Ok((width, height)),
            _ => Err(format!("a {family} input of {width}×{height} is outside {MIN_INPUT_SIDE}..={MAX_INPUT_SIDE} pixels a side")),
        },
        ref dims => Err(format!("a {family} model needs a fixed input [1, 3, height, width], found {dims:?}")),
    }
}

fn nanodet(input: &signature::Value) -> Result<NanoDet, String> {
    fixed_input(input, "NanoDet").map(|(width, height)| NanoDet { width, height })
}

fn ssd(input: &signature::Value) -> Result<Ssd, String> {
    fixed_input(input, "SSD").map(|(width, height)| Ssd { width, height })
}

/// SSD's outputs: `box_encodings [1, A, 4]`, `scores [1, A, 91]` and `anchors [A, 4]`, in any
/// order (a model with NMS built in, `boxes [N, 4]` beside its scores and labels, is not one).
fn ssd_outputs(outputs: &[signature::Value]) -> bool {
    let anchors = outputs.iter().find_map(|o| match o.dims[..] {
        [Some(count), Some(4)] => Some(count),
        _ => None,
    });
    let has = |last: usize| outputs.iter().any(|o| matches!(o.dims[..], [_, Some(a), Some(l)] if Some(a) == anchors && l == last));
    outputs.len() == 3 && anchors.is_some() && has(4) && has(labels::COCO91_COLUMNS)
}

/// DETR's logits for COCO: 91 ids and no-object.
const DETR_COCO_LOGITS: usize = 92;

/// The logits of DETR-shaped outputs: named `logits` and `pred_boxes` (transformers' exports),
/// or two outputs `[batch, Q, 92]` and `[batch, Q, 4]` (a shape alone, with other class counts,
/// could be any detector's).
fn detr_logits(outputs: &[signature::Value]) -> Option<&signature::Value> {
    let named = |name: &str| outputs.iter().find(|o| o.name == name);
    if let (Some(logits), Some(_)) = (named("logits"), named("pred_boxes")) {
        return Some(logits);
    }
    match outputs {
        [a, b] if a.dims.len() == 3 && b.dims.len() == 3 => {
            let (logits, boxes) = if a.dims[2] == Some(4) { (b, a) } else { (a, b) };
            let fits = boxes.dims[2] == Some(4) && logits.dims[1] == boxes.dims[1] && logits.dims[2] == Some(DETR_COCO_LOGITS);
            fits.then_some(logits)
        }
        _ => None,
    }
}

/// `family = "auto"`: the family the model's outputs and operators show. The real-time DETRs'
/// outputs look like DETR's; the encoder's query selection (a TopK, which DETR has none of)
/// tells them apart.
fn auto(signature: &signature::Signature, detr: Detr) -> Result<Head, String> {
    let outputs = || signature.outputs.iter().map(|o| format!("{} {:?}", o.name, o.dims)).collect::<Vec<_>>().join(", ");
    match detr_logits(&signature.outputs) {
        Some(_) if signature.operators.contains("TopK") => rt_detr(&signature.inputs[0]).map(Head::RtDetr),
        Some(logits) if logits.dims.get(2) == Some(&Some(labels::COCO80_CLASSES)) => Err(format!(
            "outputs {} have 80 classes and the graph no TopK: a real-time DETR whose query selection is hidden, or a DETR \
             without a no-object class; set [detector] family to \"rt-detr\" or \"detr\"",
            outputs()
        )),
        Some(_) => Ok(Head::Detr(detr)),
        None if ssd_outputs(&signature.outputs) => ssd(&signature.inputs[0]).map(Head::Ssd),
        None if signature.outputs.len().is_multiple_of(2) && signature.outputs.iter().all(|o| o.dims.len() == 3) => {
            nanodet(&signature.inputs[0]).map(Head::NanoDet)
        }
        None => Err(format!(
            "cannot tell the detector family from its outputs ({}); set [detector] family to \"detr\", \"rt-detr\", \"nanodet\" or \"ssd\"",
            outputs()
        )),
    }
}

impl Head {
    /// The family `config` names, or for `auto` the one `path`'s outputs and operators show.
    pub fn of(config: &DetectorConfig, path: &Path) -> Result<Self, ModelError> {
        let detr = Detr { shortest_edge: config.shortest_edge, longest_edge: config.longest_edge };
        if config.family == Family::Detr {
            return Ok(Head::Detr(detr));
        }
        let signature = signature::read(path)?;
        let head = match config.family {
            Family::RtDetr => rt_detr(&signature.inputs[0]).map(Head::RtDetr),
            Family::Nanodet => nanodet(&signature.inputs[0]).map(Head::NanoDet),
            Family::Ssd => ssd(&signature.inputs[0]).map(Head::Ssd),
            Family::Auto | Family::Detr => auto(&signature, detr),
        };
        head.map_err(|reason| ModelError::Shape { path: path.to_owned(), reason })
    }

    /// The threshold a family's scores are read against when `threshold` is not set: DETR's
    /// softmax probabilities run high; NanoDet's quality scores sit near 0.5 for real objects;
    /// SSD's 0.5 is Frigate's `min_score`.
    pub fn default_threshold(&self) -> f32 {
        match self {
            Head::Detr(_) => 0.9,
            Head::RtDetr(_) => 0.5,
            Head::NanoDet(_) => 0.4,
            Head::Ssd(_) => 0.5,
        }
    }

    fn input(&self, frame: &image::RgbImage, resize: &mut Resize) -> Input {
        match self {
            Head::Detr(detr) => detr.input(frame, resize),
            Head::RtDetr(rt) => rt.input(frame, resize),
            Head::NanoDet(nanodet) => nanodet.input(frame, resize),
            Head::Ssd(ssd) => ssd.input(frame, resize),
        }
    }

    /// A blank frame the family's input is made from at load: the form check and the first run.
    fn blank(&self) -> image::RgbImage {
        match self {
            Head::Detr(detr) => detr.blank(),
            Head::RtDetr(rt) => rt.blank(),
            Head::NanoDet(nanodet) => nanodet.blank(),
            Head::Ssd(ssd) => ssd.blank(),
        }
    }

    fn shapes(&self) -> Shapes {
        match self {
            Head::Detr(_) => Shapes::VaryingPixels { max_plans: MAX_PLANS },
            Head::RtDetr(r) => Shapes::Pixels([1, 3, r.height as usize, r.width as usize]),
            Head::NanoDet(n) => Shapes::Pixels([1, 3, n.height as usize, n.width as usize]),
            Head::Ssd(s) => Shapes::Pixels([1, 3, s.height as usize, s.width as usize]),
        }
    }

    fn decode(&self, outputs: &[Output], width: u32, height: u32, threshold: f32) -> Result<Vec<Detection>, String> {
        match self {
            Head::Detr(_) => Detr::decode(outputs, width, height, threshold),
            Head::RtDetr(_) => RtDetr::decode(outputs, width, height, threshold),
            Head::NanoDet(nanodet) => nanodet.decode(outputs, width, height, threshold),
            Head::Ssd(_) => Ssd::decode(outputs, width, height, threshold),
        }
    }
}

impl Detector {
    /// Loads the model and runs it once on a blank frame, so that a file that parses but cannot
    /// run is reported at start-up rather than on the first frame.
    pub fn load(config: &DetectorConfig, engine: &Engine, memory: Option<&FormMemory>) -> Result<Self, ModelError> {
        let head = Head::of(config, &config.model)?;
        let blank = head.blank();
        let sample = || head.input(&blank, &mut Resize::default());
        let (model, form) = form::open_fastest(engine, &config.model, head.shapes(), config.form, &sample, memory)?;
        let threshold = config.threshold.unwrap_or(head.default_threshold());
        let mut detector = Self { model, head, threshold, resize: Resize::default(), form };
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

    /// The family running, and what it read from the model.
    pub fn head(&self) -> Head {
        self.head
    }

    /// The score a detection must pass: the configured one, else the family's default.
    pub fn threshold(&self) -> f32 {
        self.threshold
    }
}

impl ObjectDetector for Detector {
    fn plans_held(&self) -> usize {
        self.model.plans_held()
    }

    fn detect(&mut self, frame: &image::RgbImage) -> Result<Vec<Detection>, ModelError> {
        let (w, h) = frame.dimensions();
        let input = self.head.input(frame, &mut self.resize);
        let outputs = self.model.run(input)?;
        self.head.decode(&outputs, w, h, self.threshold).map_err(|reason| ModelError::Shape { path: self.model.path().to_owned(), reason })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(name: &str, dims: &[Option<usize>]) -> signature::Value {
        signature::Value { name: name.into(), dims: dims.to_vec() }
    }

    #[test]
    fn detr_is_told_by_its_output_names_or_by_its_shapes() {
        let named = [value("logits", &[None, None, None]), value("pred_boxes", &[None, None, None])];
        let shaped = [value("out_1", &[Some(1), Some(100), Some(4)]), value("out_0", &[Some(1), Some(100), Some(92)])];
        assert!(detr_logits(&named).is_some() && detr_logits(&shaped).is_some());
    }

    #[test]
    fn a_single_stride_nanodet_is_not_taken_for_detr() {
        let nanodet = [value("scores", &[Some(1), Some(2704), Some(80)]), value("boxes", &[Some(1), Some(2704), Some(44)])];
        let queries_differ = [value("a", &[Some(1), Some(100), Some(92)]), value("b", &[Some(1), Some(50), Some(4)])];
        let other_classes = [value("a", &[Some(1), Some(100), Some(80)]), value("b", &[Some(1), Some(100), Some(4)])];
        assert!(detr_logits(&nanodet).is_none() && detr_logits(&queries_differ).is_none() && detr_logits(&other_classes).is_none());
    }

    #[test]
    fn a_real_time_detr_is_named_rt_detr_or_told_by_its_top_k() {
        let tiny = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/tiny/rtdetr-tiny-random.onnx");
        let named: DetectorConfig = toml::from_str(&format!("model = {:?}\nfamily = \"rt-detr\"", tiny)).expect("config");
        assert_eq!(named.family, Family::RtDetr);
        let auto = DetectorConfig { family: Family::Auto, ..named.clone() };
        for config in [named, auto] {
            assert_eq!(Head::of(&config, &tiny).expect("a head"), Head::RtDetr(RtDetr { width: 320, height: 320 }));
        }
    }

    #[test]
    fn ssd_is_told_by_its_anchors_beside_encodings_and_scores_for_as_many_anchors() {
        let ssd = [
            value("box_encodings", &[Some(1), Some(1917), Some(4)]),
            value("scores", &[Some(1), Some(1917), Some(91)]),
            value("anchors", &[Some(1917), Some(4)]),
        ];
        assert!(ssd_outputs(&ssd));
        let nms_built_in = [value("boxes", &[Some(100), Some(4)]), value("scores", &[Some(100)]), value("labels", &[Some(100)])];
        let other_count =
            [value("a", &[Some(1), Some(1917), Some(4)]), value("b", &[Some(1), Some(1917), Some(91)]), value("c", &[Some(100), Some(4)])];
        assert!(!ssd_outputs(&nms_built_in) && !ssd_outputs(&other_count));
        let tiny_detr = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/tiny/detr-tiny-random.onnx");
        assert!(!ssd_outputs(&signature::read(&tiny_detr).expect("a signature").outputs));
    }

    #[test]
    fn a_fixed_input_side_must_be_one_a_frame_can_be_fitted_into() {
        assert_eq!(input_side(416), Some(416));
        assert_eq!(input_side(8), None);
        assert_eq!(input_side(1 << 33), None);
    }
}
