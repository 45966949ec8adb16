//! Loading ONNX files into tract, shared by `detect/` and `embed/`. Every failure a user can cause
//! (missing, truncated or foreign files, wrong shapes) becomes a [`ModelError`] naming the file.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tract_onnx::prelude::*;

pub type Plan = Arc<TypedRunnableModel>;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("model file {path} cannot be read: {reason}; check the path in the config and the file's permissions")]
    Unreadable { path: PathBuf, reason: String },
    #[error("model file {path} is not a usable ONNX model: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("model file {path}: {reason}")]
    Shape { path: PathBuf, reason: String },
    #[error("inference with {path} failed: {reason}")]
    Run { path: PathBuf, reason: String },
}

/// Runs tract's matrix products on `threads` threads (process-wide; 1 keeps them on the calling
/// inference thread). Called once, before any model is loaded.
pub fn set_inference_threads(threads: usize) {
    use tract_linalg::multithread::{set_default_executor, Executor};
    if threads > 1 {
        set_default_executor(Executor::multithread_with_name(threads, "glimpse-tract"));
    }
}

/// An ONNX file parsed by tract, not yet specialised to an input shape.
#[derive(Clone)]
pub struct OnnxFile {
    pub path: PathBuf,
    /// The parsed model, kept to make plans for new input sizes; `None` once released (its
    /// weights are as large as the file, and every plan holds its own prepared copy).
    model: Option<InferenceModel>,
}

impl OnnxFile {
    pub fn open(path: &Path) -> Result<Self, ModelError> {
        let meta = std::fs::metadata(path).map_err(|e| ModelError::Unreadable { path: path.to_owned(), reason: e.to_string() })?;
        if !meta.is_file() {
            return Err(ModelError::Unreadable { path: path.to_owned(), reason: "not a regular file".into() });
        }
        let model =
            tract_onnx::onnx().model_for_path(path).map_err(|e| ModelError::Invalid { path: path.to_owned(), reason: format!("{e:#}") })?;
        let inputs = model.input_outlets().map_err(|e| invalid(path, e))?.len();
        if inputs != 1 {
            return Err(ModelError::Shape {
                path: path.to_owned(),
                reason: format!("expected one input (pixel_values or input_ids), found {inputs}"),
            });
        }
        Ok(Self { path: path.to_owned(), model: Some(model) })
    }

    /// Frees the parsed model once every plan needed is made.
    pub fn release_model(&mut self) {
        self.model = None;
    }

    /// Specialises the model to a `[batch, 3, height, width]` float input and optimises it.
    pub fn plan(&self, shape: [usize; 4]) -> Result<Plan, ModelError> {
        self.plan_for(f32::fact(shape).into(), &format!("{shape:?}"))
    }

    /// Specialises the model to a `[batch, length]` input of token ids (int64) and optimises it.
    pub fn plan_token_ids(&self, shape: [usize; 2]) -> Result<Plan, ModelError> {
        self.plan_for(i64::fact(shape).into(), &format!("{shape:?}"))
    }

    /// One plan for every batch size: `[batch, channels, height, width]` with a symbolic batch.
    pub fn plan_any_batch(&self, [channels, height, width]: [usize; 3]) -> Result<Plan, ModelError> {
        let model = self.parsed()?;
        let batch = TDim::from(model.symbols.sym("batch"));
        let shape: TVec<TDim> = tvec![batch, channels.into(), height.into(), width.into()];
        self.plan_for(f32::fact(&shape).into(), &format!("[batch, {channels}, {height}, {width}]"))
    }

    fn parsed(&self) -> Result<&InferenceModel, ModelError> {
        self.model.as_ref().ok_or_else(|| ModelError::Shape {
            path: self.path.clone(),
            reason: "no plan for this input size was made while loading".into(),
        })
    }

    fn plan_for(&self, fact: InferenceFact, shape: &str) -> Result<Plan, ModelError> {
        self.parsed()?.clone().with_input_fact(0, fact).and_then(|m| m.into_optimized()).and_then(|m| m.into_runnable()).map_err(|e| {
            ModelError::Shape {
                path: self.path.clone(),
                reason: format!("cannot run on an input of shape {shape} (pixel_values [batch, 3, height, width], or input_ids [batch, 77] for a text model): {e:#}"),
            }
        })
    }

    pub fn run(&self, plan: &Plan, input: Tensor) -> Result<TVec<TValue>, ModelError> {
        plan.run(tvec!(input.into())).map_err(|e| ModelError::Run { path: self.path.clone(), reason: format!("{e:#}") })
    }

    pub fn output<'a>(&self, outputs: &'a [TValue], index: usize) -> Result<tract_ndarray::ArrayViewD<'a, f32>, ModelError> {
        let value = outputs.get(index).ok_or_else(|| ModelError::Shape {
            path: self.path.clone(),
            reason: format!("expected at least {} outputs, found {}", index + 1, outputs.len()),
        })?;
        value
            .to_plain_array_view::<f32>()
            .map_err(|e| ModelError::Shape { path: self.path.clone(), reason: format!("output {index} is not float: {e:#}") })
    }
}

fn invalid(path: &Path, e: impl std::fmt::Display) -> ModelError {
    ModelError::Invalid { path: path.to_owned(), reason: e.to_string() }
}

/// Packs an RGB image into a `[1, 3, h, w]` tensor: scaled to 0..1, then `(x - mean) / std`.
pub fn normalized_chw(image: &image::RgbImage, mean: [f32; 3], std: [f32; 3]) -> Tensor {
    let (w, h) = (image.width() as usize, image.height() as usize);
    let array = tract_ndarray::Array4::from_shape_fn((1, 3, h, w), |(_, c, y, x)| {
        let v = image.get_pixel(x as u32, y as u32)[c] as f32 / 255.0;
        (v - mean[c]) / std[c]
    });
    array.into()
}
