//! Running ONNX models, shared by `detect/` and `embed/`: a [`Model`] is one file on the
//! [`Engine`] the configuration chooses, tract (pure Rust, the default) or ONNX Runtime (a
//! library loaded at run time, with execution providers such as CUDA). Callers hand it a plain
//! input and get plain float outputs; what each engine needs to run well stays in its module.
//! Every failure a user can cause (missing, truncated or foreign files, wrong shapes, a missing
//! or too old library) becomes an error naming the file or key.

pub mod form;
mod onnxruntime;
pub mod signature;
pub mod tract;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use self::form::{Form, FormMemory, FormPolicy, FormReport};
pub use self::onnxruntime::{OnnxRuntime, Provider, RuntimeError};
pub use self::tract::set_inference_threads;
use crate::validate::{KeyPath, Problem};

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
    #[error("model file {path}: {reason}")]
    Providers { path: PathBuf, reason: String },
}

/// `[inference]`: which engine runs the models, and where.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct InferenceConfig {
    /// `tract` (default) or `onnxruntime`.
    #[serde(default)]
    pub engine: EngineKind,
    /// ONNX Runtime's C library (`libonnxruntime.so.1.31.1` or newer). Default: `ORT_DYLIB_PATH`,
    /// else `libonnxruntime.so` on the system's library path.
    #[serde(default)]
    pub onnxruntime_library: Option<PathBuf>,
    /// ONNX Runtime's execution providers in order of preference; one that cannot run is logged
    /// with its reason and the next is tried. Default `["cpu"]`.
    #[serde(default = "default_providers")]
    pub providers: Vec<Provider>,
}

impl Default for InferenceConfig {
    fn default() -> Self {
        Self { engine: EngineKind::default(), onnxruntime_library: None, providers: default_providers() }
    }
}

fn default_providers() -> Vec<Provider> {
    vec![Provider::Cpu]
}

impl InferenceConfig {
    pub fn validate(&self, at: &KeyPath, problems: &mut Vec<Problem>) {
        if self.providers.is_empty() {
            problems.push(Problem::new(at.key("providers"), "must name at least one provider, e.g. [\"cpu\"]"));
        }
        if self.engine == EngineKind::Tract && (self.onnxruntime_library.is_some() || self.providers != default_providers()) {
            let key = if self.onnxruntime_library.is_some() { "onnxruntime_library" } else { "providers" };
            problems.push(Problem::new(at.key(key), "only applies to engine = \"onnxruntime\"; set the engine or remove the key"));
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    #[default]
    Tract,
    Onnxruntime,
}

/// The engine every model of this process runs on.
#[derive(Clone)]
pub enum Engine {
    /// tract's matrix products use `threads` threads (set process-wide at start).
    Tract,
    OnnxRuntime(Arc<OnnxRuntime>),
}

impl Engine {
    /// Starts the configured engine; ONNX Runtime's library is loaded here, once per process.
    pub fn start(config: &InferenceConfig, threads: usize) -> Result<Self, RuntimeError> {
        match config.engine {
            EngineKind::Tract => {
                set_inference_threads(threads);
                Ok(Engine::Tract)
            }
            EngineKind::Onnxruntime => Ok(Engine::OnnxRuntime(OnnxRuntime::start(config, threads)?)),
        }
    }

    /// What `glimpse check` and the stats say of the engine; callers add the providers.
    pub fn report(&self) -> EngineReport {
        let (engine, library, version) = match self {
            Engine::Tract => ("tract", None, None),
            Engine::OnnxRuntime(runtime) => {
                ("onnxruntime", Some(runtime.library().display().to_string()), Some(runtime.version().to_owned()))
            }
        };
        EngineReport { engine, library, version, providers: BTreeMap::new(), form: BTreeMap::new() }
    }
}

/// The engine, its library and where each model runs, for `glimpse check` and the stats.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct EngineReport {
    pub engine: &'static str,
    pub library: Option<String>,
    pub version: Option<String>,
    /// Model ("detector", "embedder") → `tract` or the ONNX Runtime execution provider.
    pub providers: BTreeMap<&'static str, String>,
    /// Model → which of its forms runs, and why (`form = "fastest"` times them).
    pub form: BTreeMap<&'static str, FormReport>,
}

/// A model's input: pixels `[batch, 3, height, width]` or CLIP token ids `[batch, length]`.
#[derive(Clone)]
pub enum Input {
    Pixels { shape: [usize; 4], data: Vec<f32> },
    TokenIds { shape: [usize; 2], data: Vec<i64> },
}

impl Input {
    fn shape(&self) -> Vec<usize> {
        match self {
            Input::Pixels { shape, .. } => shape.to_vec(),
            Input::TokenIds { shape, .. } => shape.to_vec(),
        }
    }
}

/// One float output of a model, in standard (row-major) layout.
pub struct Output {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl Output {
    pub fn view(&self) -> tract_onnx::prelude::tract_ndarray::ArrayViewD<'_, f32> {
        tract_onnx::prelude::tract_ndarray::ArrayViewD::from_shape(self.shape.as_slice(), &self.data)
            .expect("an output's data fills its shape")
    }
}

/// The input shapes a model will see, which decides what the engine prepares at load.
#[derive(Clone, Copy)]
pub enum Shapes {
    /// Always these pixels (a CLIP image tower): prepared once, at load.
    Pixels([usize; 4]),
    /// Always these token ids (a CLIP text tower of fixed length): prepared once, at load.
    TokenIds([usize; 2]),
    /// `[1, n]` token ids of any length `n` (a CLIP text tower exported with a symbolic
    /// length): one plan for every length, prepared at load.
    AnyTokens,
    /// Pixels of varying size (DETR): tract keeps at most `max_plans` prepared sizes.
    VaryingPixels { max_plans: usize },
}

/// One ONNX file on one engine.
pub struct Model {
    path: PathBuf,
    inner: Inner,
}

enum Inner {
    Tract(tract::TractModel),
    OnnxRuntime(onnxruntime::OrtModel),
}

impl Model {
    pub fn open(engine: &Engine, path: &Path, shapes: Shapes) -> Result<Self, ModelError> {
        let meta = std::fs::metadata(path).map_err(|e| ModelError::Unreadable { path: path.to_owned(), reason: e.to_string() })?;
        if !meta.is_file() {
            return Err(ModelError::Unreadable { path: path.to_owned(), reason: "not a regular file".into() });
        }
        let inner = match engine {
            Engine::Tract => Inner::Tract(tract::TractModel::open(path, shapes)?),
            Engine::OnnxRuntime(runtime) => Inner::OnnxRuntime(runtime.open(path, shapes)?),
        };
        Ok(Self { path: path.to_owned(), inner })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the model runs: `tract`, or the ONNX Runtime execution provider that took it.
    pub fn provider(&self) -> &str {
        match &self.inner {
            Inner::Tract(_) => "tract",
            Inner::OnnxRuntime(model) => model.provider(),
        }
    }

    /// Prepared copies of the model held in memory (tract: one per input size).
    pub fn plans_held(&self) -> usize {
        match &self.inner {
            Inner::Tract(model) => model.plans_held(),
            Inner::OnnxRuntime(_) => 1,
        }
    }

    /// Frees what tract prepared for the input sizes seen so far (they are made again on use).
    pub fn release_plans(&mut self) {
        if let Inner::Tract(model) = &mut self.inner {
            model.release_plans();
        }
    }

    /// Runs the model on `input`; every output must be float.
    pub fn run(&mut self, input: Input) -> Result<Vec<Output>, ModelError> {
        match &mut self.inner {
            Inner::Tract(model) => model.run(input),
            Inner::OnnxRuntime(model) => model.run(input),
        }
    }

    /// The one embedding a CLIP tower gives for one input: its first output, `[1, dimension]`
    /// (`name` says which output it should be, for the error).
    pub fn embedding(&self, mut outputs: Vec<Output>, name: &str) -> Result<Vec<f32>, ModelError> {
        let shape = self.output(&outputs, 0)?.shape.clone();
        if shape.len() != 2 || shape[0] != 1 || shape[1] == 0 {
            return Err(ModelError::Shape {
                path: self.path.clone(),
                reason: format!("output must be {name} [batch, dimension], found {shape:?} for one input"),
            });
        }
        Ok(outputs.swap_remove(0).data)
    }

    /// Output `index` of `outputs`, or an error naming the model.
    pub fn output<'a>(&self, outputs: &'a [Output], index: usize) -> Result<&'a Output, ModelError> {
        outputs.get(index).ok_or_else(|| ModelError::Shape {
            path: self.path.clone(),
            reason: format!("expected at least {} outputs, found {}", index + 1, outputs.len()),
        })
    }
}

/// Resizes RGB images with SIMD (`fast_image_resize`: Pillow's separable convolution, the one
/// transformers' image processors use for the reference), reusing its buffers between calls.
#[derive(Default)]
pub struct Resize(fast_image_resize::Resizer);

#[derive(Clone, Copy, Debug)]
pub enum ResizeFilter {
    /// DetrImageProcessor's.
    Bilinear,
    /// CLIPImageProcessor's (Catmull-Rom).
    Bicubic,
}

impl Resize {
    /// `image` at `width`×`height`.
    pub fn to(&mut self, image: &image::RgbImage, width: u32, height: u32, filter: ResizeFilter) -> image::RgbImage {
        use fast_image_resize::{FilterType, ResizeAlg, ResizeOptions};
        if image.dimensions() == (width, height) {
            return image.clone();
        }
        let kernel = match filter {
            ResizeFilter::Bilinear => FilterType::Bilinear,
            ResizeFilter::Bicubic => FilterType::CatmullRom,
        };
        let mut out = image::RgbImage::new(width, height);
        let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(kernel));
        match self.0.resize(image, &mut out, &options) {
            Ok(()) => out,
            // Only an empty image can fail; the image crate handles that without SIMD.
            Err(_) => image::imageops::resize(image, width, height, image::imageops::FilterType::Triangle),
        }
    }
}

/// Packs an RGB image into a `[1, 3, h, w]` input: scaled to 0..1, then `(x - mean) / std`.
pub fn normalized_chw(image: &image::RgbImage, mean: [f32; 3], std: [f32; 3]) -> Input {
    // A table per channel: the same values as computing each pixel, a lookup instead of two divisions.
    let table: [[f32; 256]; 3] = std::array::from_fn(|c| std::array::from_fn(|v| (v as f32 / 255.0 - mean[c]) / std[c]));
    packed_chw(image, &table, ChannelOrder::Rgb)
}

/// The order of a model's colour planes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ChannelOrder {
    Rgb,
    /// OpenCV's order, for models trained on `cv2.imread` (NanoDet).
    Bgr,
}

/// Packs an RGB image into a `[1, 3, h, w]` input, each of its red, green and blue values `v`
/// becoming `table[channel][v]`, the planes in `order`.
pub fn packed_chw(image: &image::RgbImage, table: &[[f32; 256]; 3], order: ChannelOrder) -> Input {
    let (w, h) = (image.width() as usize, image.height() as usize);
    let mut data = vec![0.0; 3 * h * w];
    let (first, rest) = data.split_at_mut(h * w);
    let (green, last) = rest.split_at_mut(h * w);
    let (red, blue) = match order {
        ChannelOrder::Rgb => (first, last),
        ChannelOrder::Bgr => (last, first),
    };
    for (i, pixel) in image.as_raw().chunks_exact(3).enumerate() {
        red[i] = table[0][pixel[0] as usize];
        green[i] = table[1][pixel[1] as usize];
        blue[i] = table[2][pixel[2] as usize];
    }
    Input::Pixels { shape: [1, 3, h, w], data }
}

/// Both engines, for tests that must hold on each: ONNX Runtime from `ORT_DYLIB_PATH`, else
/// where `scripts/onnxruntime.sh` puts it.
#[cfg(test)]
pub fn test_engines() -> Vec<Engine> {
    vec![Engine::Tract, test_onnxruntime(vec![Provider::Cpu])]
}

#[cfg(test)]
pub fn test_onnxruntime(providers: Vec<Provider>) -> Engine {
    let library = std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from).unwrap_or_else(|| {
        let arch = std::env::consts::ARCH;
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../target/onnxruntime/1.31.1/{arch}/libonnxruntime.so.1.31.1"))
    });
    assert!(library.exists(), "{} is missing: run scripts/onnxruntime.sh (scripts/test.sh does)", library.display());
    let config = InferenceConfig { engine: EngineKind::Onnxruntime, onnxruntime_library: Some(library), providers };
    Engine::start(&config, 1).unwrap_or_else(|e| panic!("{e}"))
}
