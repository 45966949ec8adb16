//! The ONNX Runtime engine, through `ort` with its library loaded at run time: building Glimpse
//! needs no native library, and a box without one runs tract. One library and one environment
//! per process; each model gets its own session on the first requested execution provider that
//! can run it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ort::ep::{self, ExecutionProvider};
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ort::session::Session;
use serde::Deserialize;

use super::{InferenceConfig, Input, ModelError, Output, Shapes};

/// The oldest library ort 2.0.0-rc.15 can use: it needs ONNX Runtime's 1.31 C API.
const MINIMUM_MINOR: u32 = ort::MINOR_VERSION;
const DEFAULT_LIBRARY: &str = "libonnxruntime.so";

/// An execution provider, by its word in `inference.providers`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Cpu,
    Cuda,
    Tensorrt,
    Openvino,
    Xnnpack,
    Acl,
    Rknpu,
}

impl Provider {
    /// ONNX Runtime's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Provider::Cpu => ep::CPU::NAME,
            Provider::Cuda => ep::CUDA::NAME,
            Provider::Tensorrt => ep::TensorRT::NAME,
            Provider::Openvino => ep::OpenVINO::NAME,
            Provider::Xnnpack => ep::XNNPACK::NAME,
            Provider::Acl => ep::ACL::NAME,
            Provider::Rknpu => ep::RKNPU::NAME,
        }
    }

    fn register(self, builder: &mut SessionBuilder) -> ort::Result<()> {
        match self {
            // ONNX Runtime's own CPU defaults (its memory arena on), as every other user gets them.
            Provider::Cpu => Ok(()),
            Provider::Cuda => ep::CUDA::default().register(builder),
            Provider::Tensorrt => ep::TensorRT::default().register(builder),
            Provider::Openvino => ep::OpenVINO::default().register(builder),
            Provider::Xnnpack => ep::XNNPACK::default().register(builder),
            Provider::Acl => ep::ACL::default().register(builder),
            Provider::Rknpu => ep::RKNPU::default().register(builder),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("inference.onnxruntime_library: cannot load {path}: {reason}; set it to ONNX Runtime's libonnxruntime.so (1.{MINIMUM_MINOR} or newer; scripts/onnxruntime.sh fetches one, docs/inference.md)")]
    Load { path: PathBuf, reason: String },
    #[error("inference.onnxruntime_library: {path} is not ONNX Runtime's library (it has no OrtGetApiBase)")]
    NotOnnxRuntime { path: PathBuf },
    #[error(
        "inference.onnxruntime_library: {path} is ONNX Runtime {version}; Glimpse needs 1.{MINIMUM_MINOR} or newer (docs/inference.md)"
    )]
    TooOld { path: PathBuf, version: String },
    #[error("inference.onnxruntime_library: ONNX Runtime is already loaded from {loaded}; using {wanted} instead takes a restart")]
    AlreadyLoaded { loaded: PathBuf, wanted: PathBuf },
    #[error("ONNX Runtime {path} cannot start: {reason}")]
    Environment { path: PathBuf, reason: String },
}

/// The loaded library and its environment, shared by every session of the process.
pub struct OnnxRuntime {
    library: PathBuf,
    version: String,
    environment: ort::environment::Environment,
    providers: Vec<Provider>,
    threads: usize,
    /// Providers whose failure was already logged: once per process, across reloads.
    told: Arc<Mutex<BTreeSet<Provider>>>,
}

/// ort allows one library and one environment per process: a reload reuses them.
static LOADED: Mutex<Option<Arc<OnnxRuntime>>> = Mutex::new(None);

impl OnnxRuntime {
    pub fn start(config: &InferenceConfig, threads: usize) -> Result<Arc<Self>, RuntimeError> {
        let library = library_path(config);
        let mut loaded = LOADED.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(runtime) = loaded.as_ref() {
            if runtime.library != library {
                library_version(&library)?; // a bad path is reported as such first
                return Err(RuntimeError::AlreadyLoaded { loaded: runtime.library.clone(), wanted: library });
            }
            let (version, environment, told) = (runtime.version.clone(), runtime.environment.clone(), runtime.told.clone());
            return Ok(Arc::new(Self { library, version, environment, providers: config.providers.clone(), threads, told }));
        }
        let version = library_version(&library)?;
        let environment = ort::init_from(&library)
            .map_err(|e| RuntimeError::Load { path: library.clone(), reason: e.to_string() })?
            .with_name("glimpse")
            .build()
            .map_err(|e| RuntimeError::Environment { path: library.clone(), reason: e.to_string() })?;
        let providers = config.providers.clone();
        let runtime = Arc::new(Self { library, version, environment, providers, threads, told: Arc::default() });
        tracing::info!(event = "onnxruntime_loaded", library = %runtime.library.display(), version = %runtime.version, "ONNX Runtime loaded");
        *loaded = Some(runtime.clone());
        Ok(runtime)
    }

    pub fn library(&self) -> &Path {
        &self.library
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    /// A session for `path` on the first provider that can run it; the ones that cannot are
    /// logged (once each) and named in the error when none can.
    pub fn open(&self, path: &Path, shapes: Shapes) -> Result<OrtModel, ModelError> {
        // The memory pattern pre-plans one block for a run's activations and keeps it. With
        // inputs of varying size (DETR) it costs memory and saves nothing: on DETR-R50 at
        // 1333×750 it raised the peak by 202 MB (819 against 617) for the same time
        // (docs/benchmarks.md, "SSD-MobileNet-v2, and the memory levers"). Fixed sizes keep
        // ONNX Runtime's default.
        let memory_pattern = !matches!(shapes, Shapes::VaryingPixels { .. });
        let mut reasons = Vec::new();
        for &provider in &self.providers {
            match self.session(path, provider, memory_pattern) {
                Ok(session) => return Ok(OrtModel { path: path.to_owned(), session, provider }),
                // The CPU provider is always there: when it fails, the file is at fault.
                Err(reason) if provider == Provider::Cpu => return Err(ModelError::Invalid { path: path.to_owned(), reason }),
                Err(reason) => {
                    self.tell(provider, &reason);
                    reasons.push(format!("{}: {reason}", provider.name()));
                }
            }
        }
        Err(ModelError::Providers {
            path: path.to_owned(),
            reason: format!(
                "none of inference.providers can run it ({}); add \"cpu\" to the list to fall back to the CPU",
                reasons.join("; ")
            ),
        })
    }

    fn session(&self, path: &Path, provider: Provider, memory_pattern: bool) -> Result<Session, String> {
        if !available(provider)? {
            return Err("not in this ONNX Runtime library (it was built without it)".to_owned());
        }
        let mut builder = Session::builder(&self.environment)
            .and_then(|b| b.with_optimization_level(GraphOptimizationLevel::All).map_err(Into::into))
            .and_then(|b| b.with_intra_threads(self.threads).map_err(Into::into))
            .and_then(|b| b.with_inter_threads(1).map_err(Into::into))
            // Spinning threads would take the cores decoding and sync share with inference.
            .and_then(|b| b.with_intra_op_spinning(false).map_err(Into::into))
            .and_then(|b| b.with_memory_pattern(memory_pattern).map_err(Into::into))
            .map_err(|e: ort::Error| e.to_string())?;
        provider.register(&mut builder).map_err(|e| e.to_string())?;
        builder.commit_from_file(path).map_err(|e| e.to_string())
    }

    fn tell(&self, provider: Provider, reason: &str) {
        if self.told.lock().unwrap_or_else(|p| p.into_inner()).insert(provider) {
            tracing::warn!(
                event = "provider_unavailable",
                provider = provider.name(),
                reason,
                "execution provider cannot run the model; the next in inference.providers is tried"
            );
        }
    }
}

fn available(provider: Provider) -> Result<bool, String> {
    let found = match provider {
        Provider::Cpu => return Ok(true),
        Provider::Cuda => ep::CUDA::is_available(),
        Provider::Tensorrt => ep::TensorRT::is_available(),
        Provider::Openvino => ep::OpenVINO::is_available(),
        Provider::Xnnpack => ep::XNNPACK::is_available(),
        Provider::Acl => ep::ACL::is_available(),
        Provider::Rknpu => ep::RKNPU::is_available(),
    };
    found.map_err(|e| e.to_string())
}

/// `inference.onnxruntime_library`, else `ORT_DYLIB_PATH`, else the system's library path.
fn library_path(config: &InferenceConfig) -> PathBuf {
    config
        .onnxruntime_library
        .clone()
        .or_else(|| std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_LIBRARY))
}

/// The library's own version string, read before ort loads it, so that a foreign or too old
/// file is told apart from a missing one.
fn library_version(path: &Path) -> Result<String, RuntimeError> {
    // SAFETY: loading a shared library runs its initialisers; this is the library the user chose
    // to run models with, and ort loads the same file right after.
    let library = unsafe { libloading::Library::new(path) }.map_err(|e| {
        let reason = match std::error::Error::source(&e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        };
        RuntimeError::Load { path: path.to_owned(), reason }
    })?;
    type GetApiBase = unsafe extern "C" fn() -> *const ort::sys::OrtApiBase;
    // SAFETY: OrtGetApiBase has this signature in every ONNX Runtime release.
    let get_base: libloading::Symbol<GetApiBase> =
        unsafe { library.get(b"OrtGetApiBase") }.map_err(|_| RuntimeError::NotOnnxRuntime { path: path.to_owned() })?;
    // SAFETY: the base is a static table in the library, with a function returning a static string.
    let version = unsafe {
        let base = get_base();
        if base.is_null() {
            return Err(RuntimeError::NotOnnxRuntime { path: path.to_owned() });
        }
        std::ffi::CStr::from_ptr(((*base).GetVersionString)()).to_string_lossy().into_owned()
    };
    let minor = version.split('.').nth(1).and_then(|m| m.parse::<u32>().ok()).unwrap_or(0);
    if !version.starts_with("1.") || minor < MINIMUM_MINOR {
        return Err(RuntimeError::TooOld { path: path.to_owned(), version });
    }
    Ok(version)
}

/// One model's session.
pub struct OrtModel {
    path: PathBuf,
    session: Session,
    provider: Provider,
}

impl OrtModel {
    pub fn provider(&self) -> &'static str {
        self.provider.name()
    }

    pub fn run(&mut self, input: Input) -> Result<Vec<Output>, ModelError> {
        let path = self.path.clone();
        let run_error = |e: ort::Error| ModelError::Run { path: path.clone(), reason: e.to_string() };
        let value: ort::value::DynValue = match input {
            Input::Pixels { shape, data } => ort::value::Tensor::from_array((shape, data)).map_err(run_error)?.into_dyn(),
            Input::TokenIds { shape, data } => ort::value::Tensor::from_array((shape, data)).map_err(run_error)?.into_dyn(),
        };
        let outputs = self.session.run(ort::inputs![value]).map_err(run_error)?;
        outputs
            .values()
            .enumerate()
            .map(|(index, value)| {
                let (shape, data) = value
                    .try_extract_tensor::<f32>()
                    .map_err(|e| ModelError::Shape { path: path.clone(), reason: format!("output {index} is not float: {e}") })?;
                Ok(Output { shape: shape.iter().map(|&d| d.max(0) as usize).collect(), data: data.to_vec() })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libraries_are_told_apart_by_what_they_are_not() {
        let missing = library_version(Path::new("/nonexistent/libonnxruntime.so")).expect_err("no file");
        assert!(matches!(missing, RuntimeError::Load { .. }), "{missing}");
        let foreign = library_version(Path::new("libm.so.6")).expect_err("not ONNX Runtime");
        assert!(matches!(foreign, RuntimeError::NotOnnxRuntime { .. }), "{foreign}");
        let super::super::Engine::OnnxRuntime(runtime) = super::super::test_onnxruntime(vec![Provider::Cpu]) else { unreachable!() };
        assert_eq!(library_version(runtime.library()).expect("ONNX Runtime"), runtime.version());
        assert!(runtime.version().starts_with(&format!("1.{MINIMUM_MINOR}.")), "{}", runtime.version());
    }

    #[test]
    fn a_provider_the_library_lacks_is_skipped_with_its_reason() {
        let super::super::Engine::OnnxRuntime(runtime) = super::super::test_onnxruntime(vec![Provider::Cuda, Provider::Cpu]) else {
            unreachable!()
        };
        let model = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../models/tiny/clip-tiny-random.onnx"));
        assert_eq!(
            runtime.open(model, Shapes::VaryingPixels { max_plans: 1 }).expect("runs on the CPU").provider(),
            "CPUExecutionProvider"
        );
        let super::super::Engine::OnnxRuntime(cuda_only) = super::super::test_onnxruntime(vec![Provider::Cuda]) else { unreachable!() };
        let error = cuda_only.open(model, Shapes::VaryingPixels { max_plans: 1 }).err().expect("nothing can run it");
        assert!(matches!(error, ModelError::Providers { .. }), "{error}");
        assert!(error.to_string().contains("CUDAExecutionProvider: not in this ONNX Runtime library"), "{error}");
    }
}
