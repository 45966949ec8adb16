//! `glimpse detect` and `glimpse embed`: run one model on image files and print one JSON line
//! per image, in argument order. Operators use them to see what the device sees; tests use them
//! to check numerics against the reference implementation. Each needs only its own section of
//! the configuration file, and `[inference]` when it is there.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::config::{load_section, load_section_or};
use crate::detect::{Detector, DetectorConfig, ObjectDetector};
use crate::embed::{Embedder, EmbedderConfig};
use crate::model::{Engine, InferenceConfig};

/// What went wrong, for the exit code: setup failures stop everything, bad images do not.
pub enum Outcome {
    /// Every image was processed.
    AllDone,
    /// Some images could not be read; their lines carry `"error"`.
    SomeFailed(usize),
}

fn load_image(path: &Path) -> Result<image::RgbImage, String> {
    image::open(path).map(|i| i.to_rgb8()).map_err(|e| format!("cannot read {} as an image (JPEG or PNG): {e}", path.display()))
}

fn emit(out: &mut impl Write, line: serde_json::Value) -> anyhow::Result<()> {
    serde_json::to_writer(&mut *out, &line)?;
    out.write_all(b"\n")?;
    Ok(())
}

/// Runs `analyse` on each image in order, printing `{"image", <its fields>}` or
/// `{"image", "error"}` per line.
fn each_image(
    images: &[PathBuf],
    mut analyse: impl FnMut(&image::RgbImage) -> anyhow::Result<serde_json::Map<String, serde_json::Value>>,
) -> anyhow::Result<Outcome> {
    let mut out = std::io::stdout().lock();
    let mut failed = 0;
    for path in images {
        let mut line = serde_json::Map::new();
        line.insert("image".into(), json!(path));
        match load_image(path).map_err(anyhow::Error::msg).and_then(|img| analyse(&img)) {
            Ok(fields) => line.extend(fields),
            Err(e) => {
                failed += 1;
                line.insert("error".into(), json!(format!("{e:#}")));
            }
        }
        emit(&mut out, serde_json::Value::Object(line))?;
    }
    Ok(if failed == 0 { Outcome::AllDone } else { Outcome::SomeFailed(failed) })
}

/// The engine `[inference]` chooses (tract without the section), on one thread.
fn engine(config: &Path) -> anyhow::Result<Engine> {
    let section: InferenceConfig = load_section_or(config, "inference", Some(InferenceConfig::default()))?;
    Ok(Engine::start(&section, 1)?)
}

pub fn detect(config: &Path, images: &[PathBuf]) -> anyhow::Result<Outcome> {
    let section: DetectorConfig = load_section(config, "detector")?;
    let mut detector = Detector::load(&section, &engine(config)?, None)?;
    each_image(images, |img| {
        let detections: Vec<_> = detector
            .detect(img)?
            .iter()
            .map(|d| json!({ "label": d.label, "score": d.score, "x": d.x0, "y": d.y0, "w": d.x1 - d.x0, "h": d.y1 - d.y0 }))
            .collect();
        Ok(serde_json::Map::from_iter([("detections".to_owned(), json!(detections))]))
    })
}

pub fn embed(config: &Path, images: &[PathBuf]) -> anyhow::Result<Outcome> {
    let section: EmbedderConfig = load_section(config, "embedder")?;
    let mut embedder = Embedder::load(&section, &engine(config)?, None)?;
    each_image(images, |img| Ok(serde_json::Map::from_iter([("embedding".to_owned(), json!(embedder.embed(img)?))])))
}

/// `glimpse embed --text`: one JSON line `{"text", "embedding"}` per text, in argument order.
pub fn embed_texts(config: &Path, texts: &[String]) -> anyhow::Result<Outcome> {
    let section: EmbedderConfig = load_section(config, "embedder")?;
    let mut embedder = section
        .load_text(&engine(config)?)
        .ok_or_else(|| anyhow::anyhow!("--text needs CLIP's text tower: set embedder.text_model and embedder.tokenizer"))??;
    let mut out = std::io::stdout().lock();
    for text in texts {
        emit(&mut out, json!({ "text": text, "embedding": embedder.embed(text)? }))?;
    }
    Ok(Outcome::AllDone)
}
