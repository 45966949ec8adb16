//! Image embeddings with a CLIP vision ONNX model (vision tower + projection) on the configured
//! engine, with
//! CLIPImageProcessor's pre-processing: short side to 224 (bicubic), centre crop, CLIP mean/std.
//! Outputs are L2-normalised, so cosine similarity in the index is a dot product.
//!
//! Also owns cropping detections out of frames. Pure computation, like `detect/`.

pub mod text;

use std::path::PathBuf;

use serde::Deserialize;

use crate::detect::Detection;
use crate::model::{form, normalized_chw, Engine, FormMemory, FormPolicy, FormReport, Model, ModelError, Resize, ResizeFilter, Shapes};
use crate::validate::{KeyPath, Problem};

const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_6, 0.275_777_1];
const INPUT_SIDE: u32 = 224;

/// `[embedder]`
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct EmbedderConfig {
    /// Path of the CLIP vision ONNX file (input `pixel_values` [B,3,224,224], output `image_embeds`).
    pub model: PathBuf,
    /// CLIP's text tower of the same checkpoint (input `input_ids` [B,77], output
    /// `text_embeds`), for search by words. Default none.
    #[serde(default)]
    pub text_model: Option<PathBuf>,
    /// CLIP's tokenizer.json, needed with `text_model`. Default none.
    #[serde(default)]
    pub tokenizer: Option<PathBuf>,
    /// `fastest` (default): an int8 file competes with its other forms beside it (docs/inference.md);
    /// `as-configured`: exactly this file.
    #[serde(default)]
    pub form: FormPolicy,
}

impl EmbedderConfig {
    pub fn validate(&self, at: &KeyPath, problems: &mut Vec<Problem>) {
        if self.model.as_os_str().is_empty() {
            problems.push(Problem::new(at.key("model"), "must name the CLIP vision ONNX file"));
        }
        match (&self.text_model, &self.tokenizer) {
            (Some(_), None) => {
                problems.push(Problem::new(at.key("text_model"), "a text model needs its tokenizer: set embedder.tokenizer too"))
            }
            (None, Some(_)) => {
                problems.push(Problem::new(at.key("tokenizer"), "a tokenizer needs its text model: set embedder.text_model too"))
            }
            _ => {}
        }
    }

    /// The text tower, when configured.
    pub fn load_text(&self, engine: &Engine) -> Option<Result<text::TextEmbedder, text::TextError>> {
        match (&self.text_model, &self.tokenizer) {
            (Some(model), Some(tokenizer)) => Some(text::TextEmbedder::load(model, tokenizer, engine)),
            _ => None,
        }
    }
}

/// What inference needs of an image embedder: one crop in, its L2-normalised embedding out.
pub trait ImageEmbedder {
    fn embed(&mut self, crop: &image::RgbImage) -> Result<Vec<f32>, ModelError>;
    /// The embeddings' dimension.
    fn dimension(&self) -> usize;
}

pub struct Embedder {
    /// Prepared for a single crop: with a symbolic batch axis tract picks much slower int8
    /// kernels, and a second, batched plan would hold a second prepared copy of the weights
    /// for a small gain (measured in docs/benchmarks.md).
    model: Model,
    dimension: usize,
    resize: Resize,
    form: FormReport,
}

impl Embedder {
    /// Loads the model and embeds a blank crop once, which also measures the output dimension.
    pub fn load(config: &EmbedderConfig, engine: &Engine, memory: Option<&FormMemory>) -> Result<Self, ModelError> {
        let side = INPUT_SIDE as usize;
        let blank = image::RgbImage::new(INPUT_SIDE, INPUT_SIDE);
        let sample = || normalized_chw(&blank, CLIP_MEAN, CLIP_STD);
        let (model, form) = form::open_fastest(engine, &config.model, Shapes::Pixels([1, 3, side, side]), config.form, &sample, memory)?;
        let mut embedder = Self { model, dimension: 0, resize: Resize::default(), form };
        embedder.dimension = embedder.run(&blank)?.len();
        Ok(embedder)
    }

    /// Where the model runs: `tract`, or an ONNX Runtime execution provider.
    pub fn provider(&self) -> &str {
        self.model.provider()
    }

    /// Which of the model's forms runs, and why.
    pub fn form(&self) -> &FormReport {
        &self.form
    }

    /// The length of every embedding; must equal the Pinecone index's dimension.
    pub fn dimension(&self) -> usize {
        self.dimension
    }

    /// The L2-normalised embedding of one crop.
    pub fn embed(&mut self, crop: &image::RgbImage) -> Result<Vec<f32>, ModelError> {
        let mut v = self.run(crop)?;
        l2_normalise(&mut v);
        Ok(v)
    }
}

impl ImageEmbedder for Embedder {
    fn embed(&mut self, crop: &image::RgbImage) -> Result<Vec<f32>, ModelError> {
        Embedder::embed(self, crop)
    }
    fn dimension(&self) -> usize {
        Embedder::dimension(self)
    }
}

impl Embedder {
    fn run(&mut self, crop: &image::RgbImage) -> Result<Vec<f32>, ModelError> {
        let input = normalized_chw(&clip_preprocess(crop, &mut self.resize), CLIP_MEAN, CLIP_STD);
        let outputs = self.model.run(input)?;
        self.model.embedding(outputs, "image_embeds")
    }
}

/// Scales `v` to unit length (a zero or non-finite vector stays as it is), so that cosine
/// similarity is a dot product.
pub fn l2_normalise(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 && norm.is_finite() {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

/// Resizes the short side to 224 with bicubic filtering, then cuts the centre 224×224.
fn clip_preprocess(crop: &image::RgbImage, resize: &mut Resize) -> image::RgbImage {
    let (w, h) = crop.dimensions();
    let (nw, nh) = if w <= h {
        (INPUT_SIDE, ((INPUT_SIDE as u64 * h as u64) / w.max(1) as u64) as u32)
    } else {
        (((INPUT_SIDE as u64 * w as u64) / h.max(1) as u64) as u32, INPUT_SIDE)
    };
    let resized = resize.to(crop, nw.max(INPUT_SIDE), nh.max(INPUT_SIDE), ResizeFilter::Bicubic);
    let left = (resized.width() - INPUT_SIDE) / 2;
    let top = (resized.height() - INPUT_SIDE) / 2;
    image::imageops::crop_imm(&resized, left, top, INPUT_SIDE, INPUT_SIDE).to_image()
}

/// A detection's box clamped to the frame, in whole pixels: left, top, width, height.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PixelBox {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
}

/// The box of `det` inside a `frame_w`×`frame_h` frame, or `None` when what is left after
/// clamping is narrower or lower than `min_px` (too small to embed meaningfully).
pub fn clamp_box(det: &Detection, frame_w: u32, frame_h: u32, min_px: u32) -> Option<PixelBox> {
    let clamp = |v: f32, max: u32| v.round().clamp(0.0, max as f32) as u32;
    let (x0, y0) = (clamp(det.x0, frame_w), clamp(det.y0, frame_h));
    let (x1, y1) = (clamp(det.x1, frame_w), clamp(det.y1, frame_h));
    let (w, h) = (x1.saturating_sub(x0), y1.saturating_sub(y0));
    (w >= min_px.max(1) && h >= min_px.max(1)).then_some(PixelBox { x: x0, y: y0, w, h })
}

pub fn crop(frame: &image::RgbImage, b: PixelBox) -> image::RgbImage {
    image::imageops::crop_imm(frame, b.x, b.y, b.w, b.h).to_image()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(x0: f32, y0: f32, x1: f32, y1: f32) -> Detection {
        Detection { label: "person", score: 0.95, x0, y0, x1, y1 }
    }

    #[test]
    fn boxes_are_clamped_to_the_frame() {
        assert_eq!(clamp_box(&det(-10.0, 5.2, 50.0, 300.0), 640, 272, 8), Some(PixelBox { x: 0, y: 5, w: 50, h: 267 }));
    }

    #[test]
    fn tiny_and_outside_boxes_are_skipped() {
        assert_eq!(clamp_box(&det(10.0, 10.0, 15.0, 100.0), 640, 272, 8), None);
        assert_eq!(clamp_box(&det(700.0, 10.0, 800.0, 100.0), 640, 272, 8), None);
    }

    #[test]
    fn clip_preprocessing_gives_a_centred_square() {
        let resize = &mut Resize::default();
        let wide = image::RgbImage::new(448, 100);
        assert_eq!(clip_preprocess(&wide, resize).dimensions(), (224, 224));
        let tall = image::RgbImage::new(9, 300);
        assert_eq!(clip_preprocess(&tall, resize).dimensions(), (224, 224));
    }
}
