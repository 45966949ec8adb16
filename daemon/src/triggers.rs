//! Semantic triggers: "tell me when something like this appears". Each `[[triggers]]` entry is a
//! text, an image or an existing record, embedded once into CLIP's space; every new record is
//! compared with every active trigger on the inference thread, and a match goes to the broker
//! on `{prefix}/{device}/triggers/{name}` (docs/mqtt.md).
//!
//! Three steps, each where it belongs: [`TriggerConfig`] is checked with the configuration;
//! [`prepare`] (supervisor, at start and on reload) reads images and looks records up, and
//! embeds texts with the text tower; [`Triggers::activate`] (inference thread, which owns the
//! image tower) embeds the images. [`Triggers::check`] then costs one dot product per trigger.
//!
//! Decisions use stream time: one match per track per trigger, then `cooldown_s` per trigger and
//! camera.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::embed::ImageEmbedder;
use crate::events::TriggerMatch;
use crate::record::Record;
use crate::validate::{check_name, KeyPath, Problem};

/// `[[triggers]]`: one semantic trigger.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct TriggerConfig {
    /// `[a-z0-9_-]{1,64}`, unique; in the trigger's topic.
    pub name: String,
    /// What to look for, in words (needs `embedder.text_model`).
    #[serde(default)]
    pub text: Option<String>,
    /// What to look for, as a picture (a JPEG or PNG file).
    #[serde(default)]
    pub image: Option<PathBuf>,
    /// What to look for, as a record already in the local index (`glimpse search` shows ids).
    #[serde(default)]
    pub record: Option<String>,
    /// Cosine similarity at which a record matches, in (-1, 1].
    pub threshold: f32,
    /// Only these cameras. Default: every camera.
    #[serde(default)]
    pub cameras: Option<Vec<String>>,
    /// Only these labels. Default: every label.
    #[serde(default)]
    pub labels: Option<Vec<String>>,
    /// After a match, the trigger is quiet on that camera for this long, seconds. Default 60.
    #[serde(default = "default_cooldown_s")]
    pub cooldown_s: f64,
    /// Default true; false keeps the trigger configured but never compared.
    #[serde(default = "default_enabled")]
    pub enabled: bool,
}

fn default_cooldown_s() -> f64 {
    60.0
}

fn default_enabled() -> bool {
    true
}

/// Where a trigger's embedding comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum Source {
    Text(String),
    Image(PathBuf),
    Record(String),
}

impl TriggerConfig {
    pub fn source(&self) -> Option<Source> {
        match (&self.text, &self.image, &self.record) {
            (Some(t), None, None) => Some(Source::Text(t.clone())),
            (None, Some(i), None) => Some(Source::Image(i.clone())),
            (None, None, Some(r)) => Some(Source::Record(r.clone())),
            _ => None,
        }
    }

    /// What the configuration alone can tell; `cameras` are the configured camera names.
    pub fn validate(&self, at: &KeyPath, cameras: &[&str], has_text_tower: bool, problems: &mut Vec<Problem>) {
        check_name(&self.name, &at.key("name"), problems);
        match self.source() {
            None => problems.push(Problem::new(at.clone(), "give exactly one of text, image (a picture file) or record (a record id)")),
            Some(Source::Text(text)) if text.trim().is_empty() => problems.push(Problem::new(at.key("text"), "is empty")),
            Some(Source::Text(_)) if !has_text_tower => problems.push(Problem::new(
                at.key("text"),
                "needs CLIP's text tower: set embedder.text_model and embedder.tokenizer (models/export.py writes both)",
            )),
            Some(Source::Image(path)) if !path.is_absolute() => {
                problems.push(Problem::new(at.key("image"), "must be an absolute path to a JPEG or PNG file"))
            }
            _ => {}
        }
        if !(self.threshold > -1.0 && self.threshold <= 1.0) {
            problems.push(Problem::new(at.key("threshold"), "must be a cosine similarity above -1 and at most 1, e.g. 0.25"));
        }
        if !(self.cooldown_s.is_finite() && self.cooldown_s >= 0.0) {
            problems.push(Problem::new(at.key("cooldown_s"), "must be 0 or more seconds, e.g. 60"));
        }
        for (i, camera) in self.cameras.iter().flatten().enumerate() {
            if !cameras.contains(&camera.as_str()) {
                problems.push(Problem::new(at.key("cameras").index(i), format!("no camera is named {camera:?}")));
            }
        }
        for (i, label) in self.labels.iter().flatten().enumerate() {
            if !crate::detect::is_label(label) {
                let message = format!("{label:?} is not a label the detector knows (COCO names such as \"person\", \"car\")");
                problems.push(Problem::new(at.key("labels").index(i), message));
            }
        }
    }
}

/// A trigger with its embedding on the way: vectors for texts and records, pixels for images.
pub struct Prepared {
    config: TriggerConfig,
    what: Result<Pending, String>,
}

enum Pending {
    Vector(Vec<f32>),
    Image(image::RgbImage),
}

/// The text tower and the local index, for [`prepare`]; either may be absent.
pub trait Lookups {
    fn embed_text(&mut self, text: &str) -> Result<Vec<f32>, String>;
    fn record_vector(&mut self, id: &str) -> Result<Vec<f32>, String>;
}

/// Reads, looks up and embeds what the inference thread cannot (I/O, the text tower). A trigger
/// that cannot be prepared stays configured with its reason, and never fires.
pub fn prepare(configs: &[TriggerConfig], lookups: &mut dyn Lookups) -> Vec<Prepared> {
    let mut prepared = Vec::new();
    for config in configs.iter().filter(|c| c.enabled) {
        let what = match config.source() {
            Some(Source::Text(text)) => lookups.embed_text(&text).map(Pending::Vector),
            Some(Source::Image(path)) => read_image(&path).map(Pending::Image),
            Some(Source::Record(id)) => lookups.record_vector(&id).map(Pending::Vector),
            None => Err("give exactly one of text, image or record".to_owned()),
        };
        prepared.push(Prepared { config: config.clone(), what });
    }
    prepared
}

/// A trigger's picture as RGB pixels; the error names the file and what is wrong.
pub fn read_image(path: &Path) -> Result<image::RgbImage, String> {
    image::open(path).map(|i| i.to_rgb8()).map_err(|e| format!("cannot read the image {}: {e}", path.display()))
}

/// One active trigger.
struct Trigger {
    name: String,
    vector: Vec<f32>,
    threshold: f32,
    cameras: Option<Vec<String>>,
    labels: Option<Vec<String>>,
    cooldown_ms: i64,
}

impl Trigger {
    fn watches(&self, camera: &str, label: &str) -> bool {
        self.cameras.as_ref().is_none_or(|c| c.iter().any(|x| x == camera))
            && self.labels.as_ref().is_none_or(|l| l.iter().any(|x| x == label))
    }
}

/// The triggers the inference thread compares records with, and what they already fired on.
#[derive(Default)]
pub struct Triggers {
    active: Vec<Trigger>,
    /// (camera, track id, trigger): one match per track per trigger.
    fired_on_track: HashSet<(String, String, String)>,
    /// (trigger, camera) → stream time of its last match, for the cooldown.
    last_match_ms: HashMap<(String, String), i64>,
}

impl Triggers {
    /// Embeds the prepared images with the image tower and replaces the active set, keeping what
    /// unchanged triggers already fired on. Returns each trigger's name and, if it cannot fire,
    /// why.
    pub fn activate(&mut self, prepared: Vec<Prepared>, embedder: &mut impl ImageEmbedder) -> Vec<(String, Option<String>)> {
        let mut active = Vec::new();
        let mut report = Vec::new();
        for Prepared { config, what } in prepared {
            let vector = what.and_then(|pending| match pending {
                Pending::Vector(v) => Ok(v),
                Pending::Image(pixels) => embedder.embed(&pixels).map_err(|e| format!("cannot embed the image: {e}")),
            });
            // Records of the image tower could never be compared with it: said, not skipped.
            let vector = vector.and_then(|v| match v.len() == embedder.dimension() {
                true => Ok(v),
                false => Err(format!(
                    "its vector has {} dimensions but embedder.model gives {}; use the text tower (or records) of the same checkpoint",
                    v.len(),
                    embedder.dimension()
                )),
            });
            match vector {
                Ok(vector) => {
                    report.push((config.name.clone(), None));
                    active.push(Trigger {
                        name: config.name,
                        vector,
                        threshold: config.threshold,
                        cameras: config.cameras,
                        labels: config.labels,
                        cooldown_ms: (config.cooldown_s * 1000.0) as i64,
                    });
                }
                Err(reason) => {
                    tracing::error!(trigger = %config.name, error = %reason, "trigger inactive");
                    report.push((config.name, Some(reason)));
                }
            }
        }
        let names: HashSet<&str> = active.iter().map(|t| t.name.as_str()).collect();
        self.fired_on_track.retain(|(_, _, t)| names.contains(t.as_str()));
        self.last_match_ms.retain(|(t, _), _| names.contains(t.as_str()));
        self.active = active;
        report
    }

    pub fn is_empty(&self) -> bool {
        self.active.is_empty()
    }

    /// The matches of a new record made at stream time `now_ms`. Embeddings are unit vectors, so
    /// the dot product is the cosine similarity.
    pub fn check(&mut self, record: &Record, now_ms: i64) -> Vec<TriggerMatch> {
        let m = &record.metadata;
        let mut matches = Vec::new();
        for trigger in &self.active {
            if !trigger.watches(&m.camera, &m.label) || trigger.vector.len() != record.values.len() {
                continue;
            }
            let similarity = dot(&trigger.vector, &record.values);
            if similarity < trigger.threshold {
                continue;
            }
            let track = (m.camera.clone(), m.track_id.clone().unwrap_or_else(|| record.id.clone()), trigger.name.clone());
            if self.fired_on_track.contains(&track) {
                continue;
            }
            let camera_key = (trigger.name.clone(), m.camera.clone());
            if self.last_match_ms.get(&camera_key).is_some_and(|&last| now_ms - last < trigger.cooldown_ms) {
                continue;
            }
            self.fired_on_track.insert(track);
            self.last_match_ms.insert(camera_key, now_ms);
            matches.push(TriggerMatch {
                trigger: trigger.name.clone(),
                record_id: record.id.clone(),
                track_id: m.track_id.clone(),
                camera: m.camera.clone(),
                ts: m.ts,
                label: m.label.clone(),
                similarity: (similarity * 1e4).round() / 1e4,
                crop: m.crop.clone(),
            });
        }
        matches
    }

    /// Tracks of `camera` that `follows` no longer follows have ended: their once-per-track
    /// memory goes (with or without object events).
    pub fn forget_ended_tracks(&mut self, camera: &str, follows: impl Fn(&str) -> bool) {
        self.fired_on_track.retain(|(c, t, _)| c != camera || follows(t));
    }

    /// A camera departed: everything it fired on goes.
    pub fn camera_departed(&mut self, camera: &str) {
        self.fired_on_track.retain(|(c, _, _)| c != camera);
        self.last_match_ms.retain(|(_, c), _| c != camera);
    }
}

/// The dot product, in eight lanes so that the compiler can vectorise it (a single running sum
/// is a chain of dependent additions).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a8.remainder().iter().zip(b8.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in a8.zip(b8) {
        for i in 0..8 {
            lanes[i] += x[i] * y[i];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::random_unit;
    use crate::model::ModelError;

    struct Fixed(Vec<f32>);
    impl ImageEmbedder for Fixed {
        fn embed(&mut self, _: &image::RgbImage) -> Result<Vec<f32>, ModelError> {
            Ok(self.0.clone())
        }
        fn dimension(&self) -> usize {
            self.0.len()
        }
    }

    struct NoLookups;
    impl Lookups for NoLookups {
        fn embed_text(&mut self, text: &str) -> Result<Vec<f32>, String> {
            Ok(random_unit(text.len() as u64, 8))
        }
        fn record_vector(&mut self, id: &str) -> Result<Vec<f32>, String> {
            Err(format!("no record {id:?} in the local index"))
        }
    }

    fn config(name: &str, text: &str, threshold: f32, cooldown_s: f64) -> TriggerConfig {
        TriggerConfig {
            name: name.into(),
            text: Some(text.into()),
            image: None,
            record: None,
            threshold,
            cameras: None,
            labels: None,
            cooldown_s,
            enabled: true,
        }
    }

    fn record(id: &str, camera: &str, track: &str, values: Vec<f32>) -> Record {
        let mut r = crate::record::test_record(id, camera, 0, values);
        r.metadata.track_id = Some(track.into());
        r.metadata.label = "car".into();
        r
    }

    fn triggers(configs: &[TriggerConfig]) -> (Triggers, Vec<(String, Option<String>)>) {
        let mut t = Triggers::default();
        let report = t.activate(prepare(configs, &mut NoLookups), &mut Fixed(random_unit(9, 8)));
        (t, report)
    }

    #[test]
    fn a_trigger_fires_once_per_track_and_then_waits_out_its_cooldown_per_camera() {
        let (mut t, _) = triggers(&[config("van", "a red van", 0.99, 60.0)]);
        let like = random_unit("a red van".len() as u64, 8);
        assert_eq!(t.check(&record("r1", "gate", "t1", like.clone()), 0).len(), 1);
        assert!(t.check(&record("r2", "gate", "t1", like.clone()), 100_000).is_empty(), "same track again");
        assert!(t.check(&record("r3", "gate", "t2", like.clone()), 30_000).is_empty(), "cooldown on this camera");
        assert_eq!(t.check(&record("r4", "yard", "t3", like.clone()), 30_000).len(), 1, "another camera has its own cooldown");
        let fired = t.check(&record("r5", "gate", "t4", like.clone()), 61_000);
        assert_eq!((fired.len(), fired[0].similarity), (1, 1.0));
        // The analyzer's tracker follows t4 on the gate, t3 in the yard: t1 has ended.
        t.forget_ended_tracks("gate", |id| id == "t4");
        assert_eq!(t.fired_on_track.len(), 2, "only the followed tracks are remembered");
        assert_eq!(t.check(&record("r6", "gate", "t1", like.clone()), 200_000).len(), 1, "a new track may reuse the id after the end");
        assert!(t.check(&record("r7", "yard", "t3", like), 300_000).is_empty(), "another camera's tracks are untouched");
    }

    #[test]
    fn the_lane_wise_dot_product_equals_the_plain_one() {
        for n in [0, 3, 8, 13, 512] {
            let (a, b) = (random_unit(1, n.max(1))[..n].to_vec(), random_unit(2, n.max(1))[..n].to_vec());
            let plain: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((dot(&a, &b) - plain).abs() < 1e-5, "{n}");
        }
    }

    #[test]
    fn records_below_the_threshold_or_outside_the_filters_do_not_fire() {
        let mut narrow = config("van", "a red van", 0.5, 0.0);
        narrow.cameras = Some(vec!["gate".into()]);
        narrow.labels = Some(vec!["truck".into()]);
        let (mut t, _) = triggers(&[narrow, config("other", "something else", 0.99, 0.0)]);
        let like = random_unit("a red van".len() as u64, 8);
        assert!(t.check(&record("r1", "gate", "t1", like), 0).is_empty());
    }

    #[test]
    fn a_trigger_that_cannot_be_embedded_is_reported_and_never_fires() {
        let mut by_record = config("old", "", 0.5, 0.0);
        (by_record.text, by_record.record) = (None, Some("gone".into()));
        let mut by_image = config("pic", "", 0.5, 0.0);
        (by_image.text, by_image.image) = (None, Some("/nonexistent/van.jpg".into()));
        let (t, report) = triggers(&[by_record, by_image, config("ok", "x", 0.5, 0.0)]);
        assert!(report[0].1.as_deref().is_some_and(|e| e.contains("no record \"gone\"")), "{report:?}");
        assert!(report[1].1.as_deref().is_some_and(|e| e.contains("/nonexistent/van.jpg")), "{report:?}");
        assert_eq!(report[2], ("ok".to_owned(), None));
        assert_eq!(t.active.len(), 1);
    }

    #[test]
    fn a_trigger_of_another_dimension_than_the_image_tower_s_is_reported_not_silently_skipped() {
        let mut t = Triggers::default();
        // The text tower gives 8 dimensions (NoLookups), the image tower 16.
        let report = t.activate(prepare(&[config("van", "a red van", 0.5, 0.0)], &mut NoLookups), &mut Fixed(random_unit(9, 16)));
        let error = report[0].1.as_deref().expect("inactive, with the reason");
        assert!(error.contains("8 dimensions but embedder.model gives 16"), "{error}");
        assert!(t.is_empty());
    }
}
