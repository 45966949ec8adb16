//! `glimpse detect` and `glimpse embed` against the reference implementation: transformers'
//! DetrImageProcessor / CLIPImageProcessor with onnxruntime, on real photos, for the same model
//! files (outputs made by `models/export.py --golden`, committed in tests/media/golden.json).

use std::path::PathBuf;

use serde_json::Value;

use crate::harness::daemon::{glimpse, model, repo};

fn golden() -> Value {
    serde_json::from_str(&std::fs::read_to_string(repo().join("tests/media/golden.json")).expect("golden.json")).expect("golden JSON")
}

fn photos(golden: &Value) -> Vec<PathBuf> {
    golden["images"].as_object().expect("images").keys().map(|name| repo().join("tests/media/photos").join(name)).collect()
}

/// A config for the golden file's detector `which` ("fixture" or "random") and its embedder.
fn config(golden: &Value, which: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("models.toml");
    let detector = &golden["detectors"][which];
    let text = format!(
        "[detector]\nmodel = \"{}\"\nthreshold = {}\n\n[embedder]\nmodel = \"{}\"\n",
        model(detector["model"].as_str().expect("detector")),
        detector["threshold"],
        model(golden["embedder"].as_str().expect("embedder")),
    );
    std::fs::write(&path, text).expect("write config");
    (dir, path.display().to_string())
}

fn run(command: &str, config: &str, images: &[PathBuf]) -> Vec<Value> {
    let mut args = vec![command.to_owned(), "--config".into(), config.to_owned()];
    args.extend(images.iter().map(|p| p.display().to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = glimpse(&args, &[]);
    assert!(out.status.success(), "glimpse {command}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect()
}

#[test]
fn detections_match_detr_image_processor_and_onnxruntime_within_a_pixel() {
    let golden = golden();
    for which in ["fixture", "random"] {
        compare_detections(&golden, which);
    }
}

fn compare_detections(golden: &Value, which: &str) {
    let (_dir, config) = config(golden, which);
    let images = photos(golden);
    let lines = run("detect", &config, &images);
    assert_eq!(lines.len(), images.len(), "one line per image, in order");
    for (line, path) in lines.iter().zip(&images) {
        let name = path.file_name().and_then(|n| n.to_str()).expect("name");
        assert_eq!(line["image"].as_str(), Some(path.display().to_string().as_str()));
        let expected = golden["images"][name]["detections"][which].as_array().expect("detections");
        let found = line["detections"].as_array().expect("detections");
        assert_eq!(found.len(), expected.len(), "{which} {name}: {line}");
        for (f, e) in found.iter().zip(expected) {
            assert_eq!(f["label"], e["label"], "{name}");
            let close = |k: &str, tol: f64| (f[k].as_f64().unwrap_or(f64::NAN) - e[k].as_f64().unwrap_or(f64::NAN)).abs() <= tol;
            assert!(close("score", 1e-3), "{name}: score {} vs {}", f["score"], e["score"]);
            for k in ["x", "y", "w", "h"] {
                assert!(close(k, 1.0), "{name}: {k} {} vs {}", f[k], e[k]);
            }
        }
    }
}

#[test]
fn embeddings_match_clip_image_processor_and_onnxruntime() {
    let golden = golden();
    let (_dir, config) = config(&golden, "fixture");
    let images = photos(&golden);
    let lines = run("embed", &config, &images);
    assert_eq!(lines.len(), images.len());
    for (line, path) in lines.iter().zip(&images) {
        let name = path.file_name().and_then(|n| n.to_str()).expect("name");
        let ours: Vec<f64> = line["embedding"].as_array().expect("embedding").iter().filter_map(Value::as_f64).collect();
        let theirs: Vec<f64> = golden["images"][name]["embedding"].as_array().expect("embedding").iter().filter_map(Value::as_f64).collect();
        assert_eq!(ours.len(), theirs.len());
        let cosine: f64 = ours.iter().zip(&theirs).map(|(a, b)| a * b).sum();
        assert!(cosine >= 0.9999, "{name}: cosine {cosine}");
    }
}

#[test]
fn unreadable_images_get_an_error_line_and_a_missing_section_stops_with_its_name() {
    let golden = golden();
    let (dir, config) = config(&golden, "fixture");
    let bogus = dir.path().join("not-an-image.png");
    std::fs::write(&bogus, b"plain text").expect("write");
    let photo = photos(&golden)[0].display().to_string();
    let out = glimpse(&["detect", "--config", &config, &bogus.display().to_string(), &photo], &[]);
    assert_eq!(out.status.code(), Some(1));
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).expect("JSON")).collect();
    assert!(lines[0]["error"].as_str().is_some_and(|e| e.contains("cannot read")), "{lines:?}");
    assert!(lines[1]["detections"].is_array());
    let only_detector = dir.path().join("detector-only.toml");
    std::fs::write(&only_detector, "[detector]\nmodel = \"/x.onnx\"\n").expect("write");
    let out = glimpse(&["embed", "--config", &only_detector.display().to_string(), &photo], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("the [embedder] section is missing"));
}
