//! The configuration file: one typed section per stage, gathered here, validated at start-up.
//!
//! Each stage owns its section's struct (with documented defaults) in its own module; this module
//! only reads the file, collects *every* problem — syntax, unknown keys, wrong types and invalid
//! values — and names each one with its key path and its line and column.

#[cfg(test)]
mod documented;
mod locate;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use crate::validate::{check_name, KeyPath, Position, Problem};
use locate::{Seg, SpanIndex};

use crate::crops::{CropsConfig, SnapshotsConfig};
use crate::detect::DetectorConfig;
use crate::embed::EmbedderConfig;
use crate::events::EventsConfig;
use crate::http::HttpConfig;
use crate::index::SearchConfig;
use crate::model::{Engine, FormMemory, InferenceConfig, RuntimeError};
use crate::outbox::OutboxConfig;
use crate::source::CameraConfig;
use crate::status::MqttConfig;
use crate::sync::PineconeConfig;
use crate::track::AnalysisConfig;
use crate::triggers::TriggerConfig;

/// The whole configuration file.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct Config {
    pub device: DeviceConfig,
    #[serde(default)]
    pub cameras: Vec<CameraConfig>,
    pub detector: DetectorConfig,
    pub embedder: EmbedderConfig,
    #[serde(default)]
    pub inference: InferenceConfig,
    /// Absent: embeddings stay in the local outbox.
    #[serde(default)]
    pub pinecone: Option<PineconeConfig>,
    /// Absent: status goes to the log only.
    #[serde(default)]
    pub mqtt: Option<MqttConfig>,
    #[serde(default)]
    pub outbox: OutboxConfig,
    #[serde(default)]
    pub analysis: AnalysisConfig,
    #[serde(default)]
    pub crops: CropsConfig,
    #[serde(default)]
    pub snapshots: SnapshotsConfig,
    #[serde(default)]
    pub search: SearchConfig,
    #[serde(default)]
    pub events: EventsConfig,
    #[serde(default)]
    pub triggers: Vec<TriggerConfig>,
    /// Absent: no HTTP API.
    #[serde(default)]
    pub http: Option<HttpConfig>,
}

/// `[device]`: who this box is and where it keeps its state.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct DeviceConfig {
    /// `[a-z0-9_-]{1,64}`; appears in MQTT topics and in every vector id. Absent: derived from
    /// the machine id, so that every device flashed from one image has its own.
    #[serde(default = "machine_device_id")]
    pub id: String,
    /// Directory for the sled outbox and other state.
    pub data_dir: PathBuf,
    /// Threads tract's matrix products use for detection and embedding (1: the inference
    /// thread alone, leaving the other cores to decoding and sync).
    #[serde(default = "default_inference_threads")]
    pub inference_threads: usize,
}

fn default_inference_threads() -> usize {
    1
}

/// Glimpse's application id for systemd's app-specific machine id: the derived device id is
/// stable for a machine, while the machine id itself never leaves the box.
const DEVICE_APP_ID: &str = "74a20344e6e34c14acb0eb6ef5710538";

/// `glimpse-` and the first 12 hex digits of this machine's id for Glimpse, the same as
/// `systemd-id128 machine-id --app-specific=74a20344e6e34c14acb0eb6ef5710538`; empty when the
/// machine has no id (validation then asks for `device.id`).
fn machine_device_id() -> String {
    let app = systemd::id128::Id128::from_cstr(DEVICE_APP_ID).expect("DEVICE_APP_ID is a valid id");
    match systemd::id128::Id128::from_machine_app_specific(&app) {
        Ok(id) => format!("glimpse-{}", &id.to_string()[..12]),
        Err(_) => String::new(),
    }
}

impl DeviceConfig {
    fn validate(&self, at: &KeyPath, problems: &mut Vec<Problem>) {
        if self.id.is_empty() {
            problems
                .push(Problem::new(at.key("id"), "is not set and this machine has no /etc/machine-id to derive it from; set device.id"));
        } else {
            check_name(&self.id, &at.key("id"), problems);
        }
        if self.data_dir.as_os_str().is_empty() {
            problems.push(Problem::new(at.key("data_dir"), "must not be empty; set a directory such as \"/var/lib/glimpse\""));
        }
        if !(1..=64).contains(&self.inference_threads) {
            problems.push(Problem::new(at.key("inference_threads"), "must be between 1 and 64 (at most the number of cores is useful)"));
        }
    }
}

/// Every problem found in one configuration file.
#[derive(Debug)]
pub struct ConfigError {
    pub file: PathBuf,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(f, "{} has {n} problem{}:", self.file.display(), if n == 1 { "" } else { "s" })?;
        for p in &self.problems {
            write!(f, "\n  {}", self.describe(p))?;
        }
        Ok(())
    }
}

impl ConfigError {
    /// `file:line:column: key: message`, the shape editors and people both read.
    pub fn describe(&self, p: &Problem) -> String {
        match p.position {
            Some(pos) => format!("{}:{pos}: {}: {}", self.file.display(), p.path, p.message),
            None => format!("{}: {}: {}", self.file.display(), p.path, p.message),
        }
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// The inference engine this configuration chooses (ONNX Runtime's library is loaded once
    /// per process).
    pub fn engine(&self) -> Result<Engine, RuntimeError> {
        Engine::start(&self.inference, self.device.inference_threads)
    }

    /// Where the model forms chosen at earlier starts are kept.
    pub fn form_memory(&self) -> FormMemory {
        let engine = &self.inference;
        let library = engine.onnxruntime_library.as_ref().map(|p| p.display().to_string()).or_else(|| std::env::var("ORT_DYLIB_PATH").ok());
        let settings = format!("{:?} {library:?} {:?}; {} threads", engine.engine, engine.providers, self.device.inference_threads);
        FormMemory::new(&self.device.data_dir, settings)
    }

    /// Reads and validates a configuration file.
    pub fn load(file: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|e| ConfigError {
            file: file.to_owned(),
            problems: vec![Problem::new(KeyPath::root(), format!("cannot read the file: {e}"))],
        })?;
        Self::parse(&text, file)
    }

    /// Parses and validates configuration text; `file` only names it in errors.
    pub fn parse(text: &str, file: &Path) -> Result<Self, ConfigError> {
        let fail = |problems| ConfigError { file: file.to_owned(), problems };
        let (index, table) = read_toml(text).map_err(fail)?;
        let (config, mut problems) = deserialize_collecting::<Config>(table);
        if let Some(config) = &config {
            config.validate(&mut problems);
        }
        finish(config, problems, &index).map_err(fail)
    }

    fn validate(&self, problems: &mut Vec<Problem>) {
        let root = KeyPath::root();
        self.device.validate(&root.key("device"), problems);
        if self.cameras.is_empty() {
            problems.push(Problem::new(root.key("cameras"), "no camera configured: add at least one [[cameras]] table"));
        }
        for (i, camera) in self.cameras.iter().enumerate() {
            camera.validate(&root.key("cameras").index(i), problems);
            if self.cameras[..i].iter().any(|other| other.name == camera.name) {
                problems.push(Problem::new(
                    root.key("cameras").index(i).key("name"),
                    format!("camera name {:?} is used twice; names must be unique", camera.name),
                ));
            }
        }
        self.detector.validate(&root.key("detector"), problems);
        self.embedder.validate(&root.key("embedder"), problems);
        self.inference.validate(&root.key("inference"), problems);
        if let Some(p) = &self.pinecone {
            p.validate(&root.key("pinecone"), problems);
        }
        if let Some(m) = &self.mqtt {
            m.validate(&root.key("mqtt"), problems);
        }
        self.outbox.validate(&root.key("outbox"), problems);
        self.analysis.validate(&root.key("analysis"), problems);
        self.crops.validate(&root.key("crops"), problems);
        self.snapshots.validate(&root.key("snapshots"), problems);
        self.search.validate(&root.key("search"), problems);
        self.events.validate(&root.key("events"), problems);
        if let Some(h) = &self.http {
            h.validate(&root.key("http"), problems);
        }
        self.validate_triggers(&root.key("triggers"), problems);
        for camera in self.analysis.motion_masks.keys().filter(|name| !self.cameras.iter().any(|c| &&c.name == name)) {
            problems.push(Problem::new(
                root.key("analysis").key("motion_masks").key(camera),
                format!("no camera is named {camera:?}; motion masks are keyed by camera name"),
            ));
        }
    }
}

impl Config {
    fn validate_triggers(&self, at: &KeyPath, problems: &mut Vec<Problem>) {
        let cameras: Vec<&str> = self.cameras.iter().map(|c| c.name.as_str()).collect();
        let has_text_tower = self.embedder.text_model.is_some();
        if !self.triggers.is_empty() && self.mqtt.is_none() {
            problems.push(Problem::new(at.clone(), "triggers publish their matches over MQTT: add an [mqtt] section"));
        }
        for (i, trigger) in self.triggers.iter().enumerate() {
            trigger.validate(&at.index(i), &cameras, has_text_tower, problems);
            if self.triggers[..i].iter().any(|other| other.name == trigger.name) {
                problems.push(Problem::new(
                    at.index(i).key("name"),
                    format!("trigger name {:?} is used twice; names must be unique", trigger.name),
                ));
            }
        }
    }

    /// Whether object events and trigger matches go to the broker.
    pub fn events_enabled(&self) -> bool {
        self.events.is_enabled(self.mqtt.is_some() || self.http.is_some())
    }
}

/// The document's spans and its values; a syntax error as the single problem.
fn read_toml(text: &str) -> Result<(SpanIndex, toml::Table), Vec<Problem>> {
    let doc = toml_edit::Document::parse(text.to_owned()).map_err(|e| {
        let position = e.span().map(|s| locate::position(text, s.start));
        let message = format!("not valid TOML: {}", e.message().trim());
        vec![Problem { position, ..Problem::new(KeyPath::root(), message) }]
    })?;
    let table: toml::Table =
        text.parse().map_err(|e: toml::de::Error| vec![Problem::new(KeyPath::root(), format!("not valid TOML: {}", e.message()))])?;
    Ok((SpanIndex::new(text, &doc), table))
}

/// Places and orders the problems; the value only when there are none.
fn finish<T>(value: Option<T>, mut problems: Vec<Problem>, index: &SpanIndex) -> Result<T, Vec<Problem>> {
    for p in &mut problems {
        p.position = index.locate(&p.path, p.at_key);
    }
    problems.sort_by_key(|p| p.position.map(|pos| (pos.line, pos.column)));
    problems.dedup();
    match value {
        Some(value) if problems.is_empty() => Ok(value),
        _ => Err(problems),
    }
}

/// Problems found after loading (by `glimpse check`, which opens files the configuration names),
/// described as load-time problems are: `file:line:column: key: message`.
pub fn describe_found(file: &Path, problems: Vec<Problem>) -> Vec<String> {
    let index = std::fs::read_to_string(file)
        .ok()
        .and_then(|text| toml_edit::Document::parse(text.clone()).ok().map(|doc| SpanIndex::new(&text, &doc)));
    let mut error = ConfigError { file: file.to_owned(), problems };
    if let Some(index) = index {
        for p in &mut error.problems {
            p.position = index.locate(&p.path, p.at_key);
        }
    }
    error.problems.iter().map(|p| error.describe(p)).collect()
}

/// A section that can be read on its own (`glimpse detect` needs only `[detector]`).
pub trait Section: serde::de::DeserializeOwned {
    fn validate(&self, at: &KeyPath, problems: &mut Vec<Problem>);
}

impl Section for DetectorConfig {
    fn validate(&self, at: &KeyPath, problems: &mut Vec<Problem>) {
        DetectorConfig::validate(self, at, problems)
    }
}

impl Section for InferenceConfig {
    fn validate(&self, at: &KeyPath, problems: &mut Vec<Problem>) {
        InferenceConfig::validate(self, at, problems)
    }
}

impl Section for EmbedderConfig {
    fn validate(&self, at: &KeyPath, problems: &mut Vec<Problem>) {
        EmbedderConfig::validate(self, at, problems)
    }
}

/// Reads only section `[key]` of a configuration file, with the same checks and positions as
/// [`Config::load`]; the rest of the file is not looked at.
pub fn load_section<T: Section>(file: &Path, key: &str) -> Result<T, ConfigError> {
    load_section_or(file, key, None)
}

/// [`load_section`] of an optional section: `absent` when the file has no `[key]`.
pub fn load_section_or<T: Section>(file: &Path, key: &str, absent: Option<T>) -> Result<T, ConfigError> {
    let fail = |problems| ConfigError { file: file.to_owned(), problems };
    let text =
        std::fs::read_to_string(file).map_err(|e| fail(vec![Problem::new(KeyPath::root(), format!("cannot read the file: {e}"))]))?;
    let (index, table) = read_toml(&text).map_err(fail)?;
    let at = KeyPath::root().key(key);
    let Some(toml::Value::Table(section)) = table.get(key).cloned() else {
        return absent.ok_or_else(|| fail(vec![Problem::new(at, format!("the [{key}] section is missing"))]));
    };
    let (value, mut problems) = deserialize_collecting::<T>(section);
    for p in &mut problems {
        p.path = KeyPath(at.0.iter().chain(p.path.0.iter()).cloned().collect());
    }
    if let Some(v) = &value {
        v.validate(&at, &mut problems);
    }
    finish(value, problems, &index).map_err(fail)
}

/// Deserializes the typed config, reporting every unknown key and, by removing each wrongly typed
/// key and trying again, every type error rather than only the first.
fn deserialize_collecting<T: serde::de::DeserializeOwned>(mut table: toml::Table) -> (Option<T>, Vec<Problem>) {
    const MAX_PASSES: usize = 64;
    let mut problems = Vec::new();
    let mut removed: Vec<KeyPath> = Vec::new();
    for _ in 0..MAX_PASSES {
        let mut unknown = Vec::new();
        let mut collect = |p: serde_ignored::Path<'_>| unknown.push(KeyPath::from_serde_ignored(&p));
        let de = serde_ignored::Deserializer::new(table.clone(), &mut collect);
        let result: Result<T, _> = serde_path_to_error::deserialize(de);
        problems.extend(unknown.into_iter().map(Problem::unknown_key));
        match result {
            Ok(config) => return (Some(config), problems),
            Err(e) => {
                let path = KeyPath::from_serde_path(e.path());
                let message = e.inner().message().trim().to_owned();
                let missing = missing_field(&message).map(|field| path.key(field));
                if let Some(field) = &missing {
                    if removed.contains(field) {
                        // Already reported as a wrong type; it cannot be told apart further.
                        return (None, problems);
                    }
                    problems.push(Problem::new(field.clone(), format!("required key is missing ({message})")));
                    return (None, problems);
                }
                problems.push(Problem::new(path.clone(), message));
                if !remove(&mut table, &path) {
                    return (None, problems);
                }
                removed.push(path);
            }
        }
    }
    (None, problems)
}

fn missing_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("missing field `")?;
    rest.split('`').next()
}

/// Removes the value at `path` from `table`; false when there is nothing there to remove.
fn remove(table: &mut toml::Table, path: &KeyPath) -> bool {
    let Some((last, parents)) = path.0.split_last() else { return false };
    let mut value: &mut toml::Value = match parents.first() {
        Some(Seg::Key(k)) => match table.get_mut(k) {
            Some(v) => v,
            None => return false,
        },
        Some(Seg::Index(_)) => return false,
        None => {
            return match last {
                Seg::Key(k) => table.remove(k).is_some(),
                Seg::Index(_) => false,
            }
        }
    };
    for seg in &parents[1..] {
        let next = match (seg, value) {
            (Seg::Key(k), toml::Value::Table(t)) => t.get_mut(k),
            (Seg::Index(i), toml::Value::Array(a)) => a.get_mut(*i),
            _ => None,
        };
        match next {
            Some(v) => value = v,
            None => return false,
        }
    }
    match (last, value) {
        (Seg::Key(k), toml::Value::Table(t)) => t.remove(k).is_some(),
        (Seg::Index(i), toml::Value::Array(a)) if *i < a.len() => {
            a.remove(*i);
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = r#"
[device]
id = "lab-01"
data_dir = "/tmp/glimpse"

[[cameras]]
name = "street"
uri = "test:"
sample_fps = 1

[detector]
model = "/m/detr.onnx"
threshold = 0.9

[embedder]
model = "/m/clip.onnx"
"#;

    fn problems(text: &str) -> Vec<String> {
        match Config::parse(text, Path::new("g.toml")) {
            Ok(_) => Vec::new(),
            Err(e) => e.problems.iter().map(|p| e.describe(p)).collect(),
        }
    }

    #[test]
    fn a_minimal_config_is_valid_and_optional_sections_stay_absent() {
        let config = Config::parse(VALID, Path::new("g.toml")).expect("valid");
        assert_eq!(config.cameras[0].sample_fps, 1.0);
        assert!(config.pinecone.is_none() && config.mqtt.is_none());
    }

    #[test]
    fn every_unknown_key_and_wrong_type_is_reported_with_its_position() {
        let text = VALID
            .replace("sample_fps = 1", "sample_fps = \"fast\"\ncolour = 3")
            .replace("threshold = 0.9", "threshold = [1]\nthreshhold = 0.5");
        let found = problems(&text);
        assert_eq!(found.len(), 4, "{found:#?}");
        assert!(found[0].starts_with("g.toml:9:14: cameras[0].sample_fps: invalid type"), "{found:#?}");
        assert!(found[1].starts_with("g.toml:10:1: cameras[0].colour: unknown key"), "{found:#?}");
        assert!(found[2].starts_with("g.toml:14:13: detector.threshold: invalid type"), "{found:#?}");
        assert!(found[3].starts_with("g.toml:15:1: detector.threshhold: unknown key"), "{found:#?}");
    }

    #[test]
    fn invalid_values_are_all_reported() {
        let text = VALID.replace("lab-01", "Lab 01").replace("sample_fps = 1", "sample_fps = -2").replace("0.9", "1.5");
        let found = problems(&text);
        assert_eq!(found.len(), 3, "{found:#?}");
        assert!(found[0].starts_with("g.toml:3:6: device.id: \"Lab 01\" is not a valid name"), "{found:#?}");
        assert!(found[1].starts_with("g.toml:9:14: cameras[0].sample_fps: must be above 0"), "{found:#?}");
        assert!(found[2].starts_with("g.toml:13:13: detector.threshold: must be between 0 and 1"), "{found:#?}");
    }

    #[test]
    fn an_index_cap_too_small_to_keep_within_10_percent_is_refused_by_its_key() {
        let found = problems(&format!("{VALID}\n[search]\nmax_bytes = \"4 MiB\"\n"));
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(found[0].contains("search.max_bytes: must be at least 16 MiB"), "{found:#?}");
    }

    #[test]
    fn without_device_id_each_machine_gets_its_own_from_its_machine_id() {
        let config = Config::parse(&VALID.replace("id = \"lab-01\"\n", ""), Path::new("g.toml")).expect("valid without an id");
        let expected = std::process::Command::new("systemd-id128")
            .args(["machine-id", &format!("--app-specific={DEVICE_APP_ID}")])
            .output()
            .expect("systemd-id128 (package systemd)");
        let expected = String::from_utf8_lossy(&expected.stdout);
        assert_eq!(config.device.id, format!("glimpse-{}", &expected.trim()[..12]));
    }

    #[test]
    fn each_malformed_trigger_is_named_with_its_position() {
        let triggers = r#"
[mqtt]
host = "127.0.0.1"

[[triggers]]
name = "van"
text = "a red van"
threshold = 1.5

[[triggers]]
name = "van"
image = "/t/van.jpg"
record = "r1"
threshold = 0.5
cameras = ["yard"]
labels = ["dragon"]
"#;
        let found = problems(&format!("{VALID}{triggers}"));
        let expect = [
            "g.toml:23:8: triggers[0].text: needs CLIP's text tower",
            "g.toml:24:13: triggers[0].threshold: must be a cosine similarity above -1 and at most 1",
            "g.toml:26:1: triggers[1]: give exactly one of text, image (a picture file) or record (a record id)",
            "g.toml:27:8: triggers[1].name: trigger name \"van\" is used twice",
            "g.toml:31:12: triggers[1].cameras[0]: no camera is named \"yard\"",
            "g.toml:32:11: triggers[1].labels[0]: \"dragon\" is not a label the detector knows",
        ];
        for e in expect {
            assert!(found.iter().any(|f| f.starts_with(e)), "missing {e:?} in {found:#?}");
        }
        assert_eq!(found.len(), expect.len(), "{found:#?}");
    }

    #[test]
    fn triggers_need_mqtt() {
        let found = problems(&format!("{VALID}\n[[triggers]]\nname = \"v\"\nrecord = \"r\"\nthreshold = 0.5\n"));
        assert!(
            found.iter().any(|f| f.contains("triggers: triggers publish their matches over MQTT: add an [mqtt] section")),
            "{found:#?}"
        );
    }

    #[test]
    fn motion_masks_must_name_a_camera() {
        let text = format!("{VALID}\n[analysis.motion_masks]\nstreet = [[0.0, 0.0, 1.0, 0.1]]\nyard = [[0.0, 0.0, 0.5, 0.5]]\n");
        let found = problems(&text);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(found[0].contains("analysis.motion_masks.yard: no camera is named \"yard\""), "{found:#?}");
    }

    #[test]
    fn a_missing_required_key_is_named() {
        let found = problems(&VALID.replace("[embedder]\nmodel = \"/m/clip.onnx\"\n", ""));
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(found[0].contains("embedder: required key is missing"), "{found:#?}");
    }

    #[test]
    fn one_section_can_be_read_alone_with_positions_relative_to_the_whole_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("g.toml");
        std::fs::write(&path, "[detector]\nmodel = \"/m/d.onnx\"\nthreshold = 2\n").expect("write");
        let err = load_section::<DetectorConfig>(&path, "detector").expect_err("threshold out of range");
        assert_eq!(err.describe(&err.problems[0]).split(": ").nth(1), Some("detector.threshold"));
        assert!(err.describe(&err.problems[0]).contains("g.toml:3:13"));
        std::fs::write(&path, "[detector]\nmodel = \"/m/d.onnx\"\n").expect("write");
        assert!(load_section::<DetectorConfig>(&path, "detector").is_ok());
        assert!(load_section::<EmbedderConfig>(&path, "embedder").is_err());
    }

    #[test]
    fn syntax_errors_carry_a_position() {
        let found = problems("[device]\nid = \n");
        assert_eq!(found.len(), 1);
        assert!(found[0].starts_with("g.toml:2:"), "{found:#?}");
    }

    #[test]
    fn every_example_config_in_the_repository_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).expect("config/ exists") {
            let path = entry.expect("readable dir entry").path();
            if path.extension().is_some_and(|e| e == "toml") {
                if let Err(e) = Config::load(&path) {
                    panic!("{e}");
                }
                seen += 1;
            }
        }
        assert!(seen > 0);
    }
}
