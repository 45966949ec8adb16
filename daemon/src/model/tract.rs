//! The tract engine: the ONNX file is parsed, then specialised ("planned") to each input shape,
//! which lets tract pick its best kernels (int8 ones included) for that shape.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tract_onnx::prelude::*;

use super::{Input, ModelError, Output, Shapes};

pub type Plan = Arc<TypedRunnableModel>;

/// Runs tract's matrix products on `threads` threads (process-wide; 1 keeps them on the calling
/// inference thread), before any model is loaded. Later calls (a reload, a command) keep the
/// first pool.
pub fn set_inference_threads(threads: usize) {
    use tract_linalg::multithread::{set_default_executor, Executor};
    static SET: std::sync::Once = std::sync::Once::new();
    SET.call_once(|| {
        if threads > 1 {
            set_default_executor(Executor::multithread_with_name(threads, "glimpse-tract"));
        }
    });
}

/// An ONNX file parsed by tract, not yet specialised to an input shape. `glimpse bench` uses it
/// directly to time plans the daemon does not make.
pub struct OnnxFile {
    pub path: PathBuf,
    model: InferenceModel,
}

impl OnnxFile {
    pub fn open(path: &Path) -> Result<Self, ModelError> {
        let model = tract_onnx::onnx().model_for_path(path);
        Self::checked(path, model)
    }

    /// The file parsed again from `source`, a handle opened on `path` at load: the same bytes
    /// even if the path has since been replaced or removed.
    fn parse_again(path: &Path, source: &mut std::fs::File) -> Result<Self, ModelError> {
        use std::io::{Seek, SeekFrom};
        let model = source.seek(SeekFrom::Start(0)).map_err(TractError::from).and_then(|_| tract_onnx::onnx().model_for_read(source));
        Self::checked(path, model)
    }

    fn checked(path: &Path, model: TractResult<InferenceModel>) -> Result<Self, ModelError> {
        let model = model.map_err(|e| ModelError::Invalid { path: path.to_owned(), reason: format!("{e:#}") })?;
        let inputs = model.input_outlets().map_err(|e| ModelError::Invalid { path: path.to_owned(), reason: e.to_string() })?.len();
        if inputs != 1 {
            return Err(ModelError::Shape {
                path: path.to_owned(),
                reason: format!("expected one input (pixel_values or input_ids), found {inputs}"),
            });
        }
        Ok(Self { path: path.to_owned(), model })
    }

    /// One plan for `[1, tokens]` ids of any length.
    pub fn plan_any_tokens(&self) -> Result<Plan, ModelError> {
        let tokens = TDim::from(self.model.symbols.sym("tokens"));
        let shape: TVec<TDim> = tvec![1.into(), tokens];
        self.plan_for(i64::fact(&shape).into(), &[1, 0])
    }

    /// Specialises the model to a `[batch, 3, height, width]` float input and optimises it.
    pub fn plan(&self, shape: [usize; 4]) -> Result<Plan, ModelError> {
        self.plan_for(f32::fact(shape).into(), &shape)
    }

    /// One plan for every batch size: `[batch, channels, height, width]` with a symbolic batch.
    pub fn plan_any_batch(&self, [channels, height, width]: [usize; 3]) -> Result<Plan, ModelError> {
        let batch = TDim::from(self.model.symbols.sym("batch"));
        let shape: TVec<TDim> = tvec![batch, channels.into(), height.into(), width.into()];
        self.plan_for(f32::fact(&shape).into(), &[0, channels, height, width])
    }

    fn plan_for(&self, fact: InferenceFact, shape: &[usize]) -> Result<Plan, ModelError> {
        self.model.clone().with_input_fact(0, fact).and_then(|m| m.into_optimized()).and_then(|m| m.into_runnable()).map_err(|e| {
            ModelError::Shape {
                path: self.path.clone(),
                reason: format!("cannot run on an input of shape {shape:?}, 0 for a symbol (pixel_values [batch, 3, height, width], or input_ids [batch, tokens ≤ 77] for a text model): {e:#}"),
            }
        })
    }

    pub fn run(&self, plan: &Plan, input: Tensor) -> Result<TVec<TValue>, ModelError> {
        plan.run(tvec!(input.into())).map_err(|e| ModelError::Run { path: self.path.clone(), reason: format!("{e:#}") })
    }
}

/// A model on tract: its plans by input shape, made on first use.
pub struct TractModel {
    /// The parsed file, held only until a plan is made: its weights are as large as the file and
    /// each plan holds its own copy. A model of varying size parses it again, from `source`,
    /// for a size it has no plan for (at the first frame after load, then only when a camera of
    /// a new size comes; making the plan costs more than the parse).
    file: Option<OnnxFile>,
    /// For a model of varying size (`Shapes::VaryingPixels`): the file as opened at load.
    source: Option<std::fs::File>,
    path: PathBuf,
    /// Plans by input shape, most recently used last; at most `max_plans`.
    plans: Vec<(Vec<usize>, Plan)>,
    max_plans: usize,
    /// The one plan for token ids of every length (`Shapes::AnyTokens`).
    any_length: Option<Plan>,
}

impl TractModel {
    pub fn open(path: &Path, shapes: Shapes) -> Result<Self, ModelError> {
        let file = OnnxFile::open(path)?;
        let mut model = Self { path: path.to_owned(), file: None, source: None, plans: Vec::new(), max_plans: 1, any_length: None };
        let fixed: Option<(Vec<usize>, InferenceFact)> = match shapes {
            Shapes::Pixels(shape) => Some((shape.to_vec(), f32::fact(shape).into())),
            Shapes::TokenIds(shape) => Some((shape.to_vec(), i64::fact(shape).into())),
            Shapes::AnyTokens => {
                model.any_length = Some(file.plan_any_tokens()?);
                return Ok(model);
            }
            Shapes::VaryingPixels { max_plans } => {
                model.max_plans = max_plans.max(1);
                let source =
                    std::fs::File::open(path).map_err(|e| ModelError::Unreadable { path: path.to_owned(), reason: e.to_string() })?;
                model.source = Some(source);
                None
            }
        };
        match fixed {
            Some((shape, fact)) => {
                let plan = file.plan_for(fact, &shape)?;
                model.plans.push((shape, plan));
            }
            None => model.file = Some(file),
        }
        Ok(model)
    }

    pub fn plans_held(&self) -> usize {
        self.plans.len() + usize::from(self.any_length.is_some())
    }

    /// Frees every plan of a model of varying input size (one of a fixed size keeps its own).
    pub fn release_plans(&mut self) {
        if self.source.is_some() {
            self.plans.clear();
        }
    }

    pub fn run(&mut self, input: Input) -> Result<Vec<Output>, ModelError> {
        let plan = self.plan(&input)?;
        let tensor = match input {
            Input::Pixels { shape, data } => Tensor::from_shape(&shape, &data),
            Input::TokenIds { shape, data } => Tensor::from_shape(&shape, &data),
        }
        .map_err(|e| self.run_error(e))?;
        let outputs = plan.run(tvec!(tensor.into())).map_err(|e| self.run_error(e))?;
        outputs
            .iter()
            .enumerate()
            .map(|(index, value)| {
                let view = value
                    .to_plain_array_view::<f32>()
                    .map_err(|e| ModelError::Shape { path: self.path.clone(), reason: format!("output {index} is not float: {e:#}") })?;
                Ok(Output { shape: view.shape().to_vec(), data: view.iter().copied().collect() })
            })
            .collect()
    }

    fn run_error(&self, e: impl std::fmt::Display) -> ModelError {
        ModelError::Run { path: self.path.clone(), reason: format!("{e:#}") }
    }

    /// The plan for `input`'s shape, from the cache or made (evicting the least recently used
    /// one when the cache is full).
    fn plan(&mut self, input: &Input) -> Result<Plan, ModelError> {
        if let Some(plan) = &self.any_length {
            return Ok(plan.clone());
        }
        let shape = input.shape();
        if let Some(at) = self.plans.iter().position(|(s, _)| *s == shape) {
            let entry = self.plans.remove(at);
            self.plans.push(entry);
        } else {
            let Some(source) = self.source.as_mut() else {
                return Err(ModelError::Shape {
                    path: self.path.clone(),
                    reason: format!("this model takes one input shape, prepared at load, not {shape:?}"),
                });
            };
            let file = match self.file.take() {
                Some(file) => file,
                None => OnnxFile::parse_again(&self.path, source)?,
            };
            let fact = match input {
                Input::Pixels { .. } => f32::fact(&shape).into(),
                Input::TokenIds { .. } => i64::fact(&shape).into(),
            };
            // Kept when planning fails, so that a size that cannot run does not cost a parse a frame.
            let plan = file.plan_for(fact, &shape).inspect_err(|_| self.file = Some(file))?;
            // Otherwise dropped before the plan runs: the parsed weights and the run's
            // activations are never held at once.
            if self.plans.len() == self.max_plans {
                self.plans.remove(0);
            }
            self.plans.push((shape, plan));
        }
        Ok(self.plans.last().map(|(_, plan)| plan.clone()).expect("a plan was just put last"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_cache_is_bounded_and_keeps_the_sizes_in_use() {
        let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../models/tiny/detr-tiny-random.onnx"));
        let mut model = TractModel::open(path, Shapes::VaryingPixels { max_plans: 3 }).expect("the tiny DETR loads");
        let pixels = |h, w| Input::Pixels { shape: [1, 3, h, w], data: vec![0.0; 3 * h * w] };
        for (h, w) in [(64, 64), (64, 96), (96, 64), (64, 128), (64, 96)] {
            model.run(pixels(h, w)).expect("runs");
            assert!(model.plans_held() <= 3, "{} plans held", model.plans_held());
            assert!(model.file.is_none(), "the parsed file is held beside the plans");
        }
        // The least recently used size (64x64) made way; 64x96, used again, is now the newest.
        let sizes: Vec<_> = model.plans.iter().map(|(s, _)| (s[2], s[3])).collect();
        assert_eq!(sizes, [(96, 64), (64, 128), (64, 96)]);
    }

    #[test]
    fn a_new_size_is_planned_from_the_file_as_opened_even_once_its_path_is_gone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("detr.onnx");
        std::fs::copy(concat!(env!("CARGO_MANIFEST_DIR"), "/../models/tiny/detr-tiny-random.onnx"), &path).expect("copy");
        let mut model = TractModel::open(&path, Shapes::VaryingPixels { max_plans: 3 }).expect("the tiny DETR loads");
        let pixels = |h, w| Input::Pixels { shape: [1, 3, h, w], data: vec![0.0; 3 * h * w] };
        model.run(pixels(64, 64)).expect("runs");
        std::fs::remove_file(&path).expect("remove");
        model.run(pixels(64, 96)).expect("a new size runs, parsed from the handle");
        assert_eq!(model.plans_held(), 2);
    }
}
