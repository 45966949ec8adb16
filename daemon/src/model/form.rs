//! Which form of a model runs: its fp32 file or one of its int8 files, which
//! `models/quantize.py` puts beside it as `<stem>.onnx`, `<stem>-int8.onnx` (MatMulInteger, for
//! tract) and `<stem>-int8-qdq.onnx` (QDQ, for ONNX Runtime). An int8 file is only faster where
//! the engine has a fast int8 kernel for this CPU (tract's AVX2 one is slower than its fp32
//! FMA kernel; docs/benchmarks.md), so when an int8 file is configured the loader times the
//! forms present and runs the fastest. An fp32 file runs as configured: it is the precise one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::{Engine, Input, Model, ModelError, Shapes};

/// `form` of `[detector]` and `[embedder]`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FormPolicy {
    /// An int8 file competes with its fp32 source and its other int8 form; the fastest runs.
    #[default]
    Fastest,
    /// Exactly the configured file, untimed.
    AsConfigured,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Form {
    Fp32,
    Int8,
    Int8Qdq,
}

impl Form {
    /// File-name suffixes, longest first so that `-int8-qdq` is not read as `-int8`.
    const SUFFIXES: [(Form, &'static str); 3] = [(Form::Int8Qdq, "-int8-qdq"), (Form::Int8, "-int8"), (Form::Fp32, "")];

    pub fn name(self) -> &'static str {
        match self {
            Form::Fp32 => "fp32",
            Form::Int8 => "int8",
            Form::Int8Qdq => "int8-qdq",
        }
    }

    /// The form a file's name says, and the name's stem without the form's suffix.
    fn of(path: &Path) -> (Form, String) {
        let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        Self::SUFFIXES
            .iter()
            .find_map(|(form, suffix)| stem.strip_suffix(suffix).filter(|s| !s.is_empty()).map(|s| (*form, s.to_owned())))
            .unwrap_or((Form::Fp32, stem))
    }
}

/// The files that compete with `configured` under `policy`: its other forms that exist beside
/// it (none for an fp32 file or `as-configured`).
pub fn rivals(configured: &Path, policy: FormPolicy) -> Vec<(Form, PathBuf)> {
    let (form, stem) = Form::of(configured);
    if policy == FormPolicy::AsConfigured || form == Form::Fp32 {
        return Vec::new();
    }
    let extension = configured.extension().map(|e| format!(".{}", e.to_string_lossy())).unwrap_or_default();
    Form::SUFFIXES
        .iter()
        .filter(|(other, _)| *other != form)
        .map(|(other, suffix)| (*other, configured.with_file_name(format!("{stem}{suffix}{extension}"))))
        .filter(|(_, path)| path.is_file())
        .collect()
}

/// The form to run among those timed (milliseconds per call; the configured one first): the
/// fastest, so an int8 form runs only where it is no slower than fp32. Equal times keep the
/// earlier entry, the configured form first.
pub fn choose(timings: &[(Form, f64)]) -> Option<(Form, String)> {
    let (configured, _) = *timings.first()?;
    let (fastest, ms) = timings.iter().copied().fold(timings[0], |best, t| if t.1 < best.1 { t } else { best });
    let others = timings.iter().filter(|(f, _)| *f != fastest).map(|(f, t)| format!("{} {t:.1} ms", f.name())).collect::<Vec<_>>();
    let reason = match (others.is_empty(), fastest == configured) {
        (true, _) => "the only form present".to_owned(),
        (false, true) => format!("the configured form is the fastest here: {ms:.1} ms per call against {}", others.join(", ")),
        (false, false) => {
            format!("faster here than the configured {}: {ms:.1} ms per call against {}", configured.name(), others.join(", "))
        }
    };
    Some((fastest, reason))
}

/// What `glimpse check` and the stats (`inference.form`) say of the choice.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FormReport {
    pub form: Form,
    pub file: String,
    pub reason: String,
    /// Each form's time for one call, when they were timed.
    pub ms: BTreeMap<Form, f64>,
}

impl FormReport {
    fn untimed(path: &Path, policy: FormPolicy) -> Self {
        let reason = match policy {
            FormPolicy::AsConfigured => "form = \"as-configured\"",
            FormPolicy::Fastest => "no other form of this file is present",
        };
        Self { form: Form::of(path).0, file: path.display().to_string(), reason: reason.into(), ms: BTreeMap::new() }
    }
}

/// Choices made at earlier starts, so that a restart with the same files, engine settings and
/// CPU does not time the forms again (DETR-R50 takes seconds per call on a small board):
/// `<data_dir>/model-forms.json`, one entry per configured file, holding the fingerprint of
/// what the timing depended on.
pub struct FormMemory {
    path: PathBuf,
    context: String,
}

/// One configured file's choice and what it was made with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Remembered {
    fingerprint: String,
    choice: FormReport,
}

impl FormMemory {
    /// `engine` describes what the timings depend on besides the files, the CPU and this build
    /// (the engine, its library and providers, the thread count).
    pub fn new(data_dir: &Path, engine: String) -> Self {
        let context = format!("glimpse {}; {engine}; cpu {}", env!("CARGO_PKG_VERSION"), cpu_signature());
        Self { path: data_dir.join("model-forms.json"), context }
    }

    /// What a choice for `configured` depends on: the context and each competing file's size and
    /// modification time.
    fn fingerprint(&self, configured: &Path, rivals: &[(Form, PathBuf)]) -> String {
        let identity = |path: &Path| {
            let meta = std::fs::metadata(path).ok();
            let modified = meta.as_ref().and_then(|m| m.modified().ok()).and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
            let (len, nanos) = (meta.map_or(0, |m| m.len()), modified.map_or(0, |d| d.as_nanos()));
            format!("{} {len} {nanos}", path.display())
        };
        let files: Vec<String> = std::iter::once(configured).chain(rivals.iter().map(|(_, p)| p.as_path())).map(identity).collect();
        format!("{}; {}", self.context, files.join("; "))
    }

    fn entries(&self) -> BTreeMap<String, Remembered> {
        std::fs::read(&self.path).ok().and_then(|bytes| serde_json::from_slice(&bytes).ok()).unwrap_or_default()
    }

    /// The choice made for `configured` with the same fingerprint, if it names one of its files.
    fn recall(&self, configured: &Path, rivals: &[(Form, PathBuf)]) -> Option<FormReport> {
        let fingerprint = self.fingerprint(configured, rivals);
        let entry = self.entries().remove(&configured.display().to_string())?;
        let known = |file: &str| Path::new(file) == configured || rivals.iter().any(|(_, p)| p.as_path() == Path::new(file));
        (entry.fingerprint == fingerprint && known(&entry.choice.file)).then_some(entry.choice)
    }

    /// Best effort: a memory that cannot be written only means timing again at the next start.
    fn remember(&self, configured: &Path, rivals: &[(Form, PathBuf)], choice: &FormReport) {
        let mut entries = self.entries();
        let entry = Remembered { fingerprint: self.fingerprint(configured, rivals), choice: choice.clone() };
        entries.insert(configured.display().to_string(), entry);
        let temporary = self.path.with_extension(format!("json.{}.tmp", std::process::id()));
        let written = serde_json::to_vec_pretty(&entries)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&temporary, bytes))
            .and_then(|()| std::fs::rename(&temporary, &self.path));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&temporary);
            tracing::warn!(file = %self.path.display(), error = %e, "cannot remember the model form chosen; it is timed again at the next start");
        }
    }
}

/// The CPU's model and feature flags, as a digest: a data directory moved to another box times
/// the forms again.
fn cpu_signature() -> String {
    use sha2::{Digest, Sha256};
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let wanted = |l: &&str| ["model name", "flags", "Features", "CPU part"].iter().any(|k| l.starts_with(k));
    let mut lines: Vec<&str> = info.lines().filter(wanted).collect();
    lines.sort_unstable();
    lines.dedup();
    let digest = Sha256::digest(lines.join("\n"));
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Opens the configured model, or the fastest of its forms (see [`rivals`]): each is warmed up
/// on `sample` (the input of the check call the loader makes next) and timed on one more call,
/// unless `memory` holds the choice for these files on this CPU. At most two forms are held at
/// once.
pub fn open_fastest(
    engine: &Engine,
    configured: &Path,
    shapes: Shapes,
    policy: FormPolicy,
    sample: &dyn Fn() -> Input,
    memory: Option<&FormMemory>,
) -> Result<(Model, FormReport), ModelError> {
    let rivals = rivals(configured, policy);
    if rivals.is_empty() {
        return Ok((Model::open(engine, configured, shapes)?, FormReport::untimed(configured, policy)));
    }
    if let Some(mut report) = memory.and_then(|m| m.recall(configured, &rivals)) {
        let model = Model::open(engine, Path::new(&report.file), shapes)?;
        report.reason = format!("{} (timed before with the same files, engine and CPU)", report.reason);
        return Ok((model, report));
    }
    let (model, report) = time_forms(engine, configured, &rivals, shapes, sample)?;
    if let Some(memory) = memory {
        memory.remember(configured, &rivals, &report);
    }
    Ok((model, report))
}

/// Times the configured file and each rival on `sample`, keeping the fastest so far.
fn time_forms(
    engine: &Engine,
    configured: &Path,
    rivals: &[(Form, PathBuf)],
    shapes: Shapes,
    sample: &dyn Fn() -> Input,
) -> Result<(Model, FormReport), ModelError> {
    let mut chosen = Model::open(engine, configured, shapes)?;
    let mut timings = vec![(Form::of(configured).0, warm_then_time(&mut chosen, sample)?)];
    let mut file = configured.to_owned();
    for (form, path) in rivals.iter().cloned() {
        let timed = Model::open(engine, &path, shapes).and_then(|mut m| Ok((warm_then_time(&mut m, sample)?, m)));
        match timed {
            Ok((ms, model)) => {
                timings.push((form, ms));
                if choose(&timings).is_some_and(|(best, _)| best == form) {
                    (chosen, file) = (model, path);
                }
            }
            Err(e) => tracing::warn!(file = %path.display(), error = %e, "another form of the model cannot run; it is left out"),
        }
    }
    let (form, reason) = choose(&timings).expect("the configured form was timed");
    Ok((chosen, FormReport { form, file: file.display().to_string(), reason, ms: timings.into_iter().collect() }))
}

/// Milliseconds of the second call on `sample` (the first prepares plans and caches).
fn warm_then_time(model: &mut Model, sample: &dyn Fn() -> Input) -> Result<f64, ModelError> {
    model.run(sample())?;
    let input = sample();
    let start = Instant::now();
    model.run(input)?;
    Ok(start.elapsed().as_secs_f64() * 1e3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_s_form_is_read_from_its_name() {
        assert_eq!(Form::of(Path::new("/m/clip-b32-int8-qdq.onnx")), (Form::Int8Qdq, "clip-b32".into()));
        assert_eq!(Form::of(Path::new("/m/clip-b32-int8.onnx")), (Form::Int8, "clip-b32".into()));
        assert_eq!(Form::of(Path::new("/m/clip-b32.onnx")), (Form::Fp32, "clip-b32".into()));
        assert_eq!(Form::of(Path::new("/m/-int8.onnx")), (Form::Fp32, "-int8".into()));
    }

    #[test]
    fn an_int8_form_slower_than_fp32_gives_way_to_it() {
        // tract on AVX2 without VNNI: its int8 kernel loses to its fp32 FMA kernel.
        let (form, reason) = choose(&[(Form::Int8, 310.0), (Form::Fp32, 270.0), (Form::Int8Qdq, 480.0)]).unwrap();
        assert_eq!(form, Form::Fp32);
        assert!(reason.contains("faster here than the configured int8") && reason.contains("int8 310.0 ms"), "{reason}");
    }

    #[test]
    fn the_configured_int8_form_runs_where_it_is_the_fastest() {
        // onnxruntime's QDQ file, or tract with AVX-512 VNNI.
        let (form, reason) = choose(&[(Form::Int8Qdq, 35.0), (Form::Fp32, 107.0)]).unwrap();
        assert_eq!(form, Form::Int8Qdq);
        assert!(reason.starts_with("the configured form is the fastest"), "{reason}");
        assert_eq!(choose(&[(Form::Int8, 50.0), (Form::Fp32, 50.0)]).unwrap().0, Form::Int8, "a tie keeps the configured form");
    }

    #[test]
    fn the_other_int8_form_can_win() {
        assert_eq!(choose(&[(Form::Int8, 300.0), (Form::Fp32, 270.0), (Form::Int8Qdq, 90.0)]).unwrap().0, Form::Int8Qdq);
        assert_eq!(choose(&[]), None);
    }

    #[test]
    fn a_choice_is_remembered_for_the_same_files_and_forgotten_when_one_changes() {
        let dir = tempfile::tempdir().unwrap();
        let (configured, fp32) = (dir.path().join("clip-int8.onnx"), dir.path().join("clip.onnx"));
        std::fs::write(&configured, b"int8").unwrap();
        std::fs::write(&fp32, b"fp32").unwrap();
        let rivals = rivals(&configured, FormPolicy::Fastest);
        let report = FormReport { form: Form::Fp32, file: fp32.display().to_string(), reason: "faster".into(), ms: BTreeMap::new() };

        let memory = FormMemory::new(dir.path(), "tract".into());
        assert_eq!(memory.recall(&configured, &rivals), None);
        memory.remember(&configured, &rivals, &report);
        memory.remember(&configured, &rivals, &report);
        assert_eq!(memory.recall(&configured, &rivals), Some(report.clone()));
        assert_eq!(memory.entries().len(), 1, "one entry per configured file");

        let other_engine = FormMemory::new(dir.path(), "onnxruntime".into());
        assert_eq!(other_engine.recall(&configured, &rivals), None, "another engine times again");
        std::fs::write(&fp32, b"a new fp32 export").unwrap();
        assert_eq!(memory.recall(&configured, &rivals), None, "a changed file is timed again");

        let foreign = FormReport { file: "/etc/passwd".into(), ..report };
        memory.remember(&configured, &rivals, &foreign);
        assert_eq!(memory.recall(&configured, &rivals), None, "only a file of this model is ever opened");
    }

    #[test]
    fn only_an_int8_file_under_fastest_has_rivals() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["clip.onnx", "clip-int8.onnx", "clip-int8-qdq.onnx", "detr-int8.onnx"] {
            std::fs::write(dir.path().join(name), b"").unwrap();
        }
        let forms = |name: &str, policy| rivals(&dir.path().join(name), policy).into_iter().map(|(f, _)| f).collect::<Vec<_>>();
        assert_eq!(forms("clip-int8.onnx", FormPolicy::Fastest), [Form::Int8Qdq, Form::Fp32]);
        assert_eq!(forms("clip-int8-qdq.onnx", FormPolicy::Fastest), [Form::Int8, Form::Fp32]);
        assert_eq!(forms("clip.onnx", FormPolicy::Fastest), []);
        assert_eq!(forms("clip-int8.onnx", FormPolicy::AsConfigured), []);
        assert_eq!(forms("detr-int8.onnx", FormPolicy::Fastest), [], "no other form beside it");
    }
}
