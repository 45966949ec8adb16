//! `glimpse detect` and `glimpse embed` against the reference implementation: transformers'
//! DetrImageProcessor / CLIPImageProcessor with onnxruntime, on real photos, for the same model
//! files (outputs made by `models/export.py --golden`, committed in tests/media/golden.json);
//! and the real-time DETRs against RTDetrImageProcessor and its post-processing
//! (`--realtime-golden`, tests/media/rtdetr_golden.json, on photos stretched to their input).
//! Both engines are held to the same tolerances, so they agree with each other too.

use std::path::PathBuf;

use serde_json::Value;

use crate::harness::daemon::{glimpse, model, on_images, onnxruntime_section, repo};

const ENGINES: [&str; 2] = ["tract", "onnxruntime"];

/// A score's distance from onnxruntime's on the same file (pre-processing a rounding apart).
const SCORE_TOLERANCE: f64 = 1e-3;

/// An int8 file's score against its fp32 source: quantization moved the tiny DETR's class
/// probabilities by at most 2.4e-4 in Python's onnxruntime on AVX2 (models/golden_margins.py's
/// inputs), plus the pre-processing's share.
const INT8_SCORE_TOLERANCE: f64 = 2e-3;

fn golden() -> Value {
    golden_file("golden.json")
}

/// The real-time DETRs' reference (RTDetrImageProcessor, `models/export.py --realtime-golden`).
fn realtime_golden() -> Value {
    golden_file("rtdetr_golden.json")
}

fn golden_file(name: &str) -> Value {
    let text = std::fs::read_to_string(repo().join("tests/media").join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    serde_json::from_str(&text).expect("golden JSON")
}

/// The golden file's photos, in `tests/media/photos` or the folder under it that it names.
fn photos(golden: &Value) -> Vec<PathBuf> {
    let folder = repo().join("tests/media/photos").join(golden["photos"].as_str().unwrap_or(""));
    golden["images"].as_object().expect("images").keys().map(|name| folder.join(name)).collect()
}

/// A config for the golden file's detector `which` ("fixture", "random" or "random-int8") and
/// its embedder `embedder` ("fp32" or "int8"), on `engine` ("tract" or "onnxruntime"): exactly
/// those files (`form = "as-configured"`), not the fastest form beside them.
fn config_with(golden: &Value, which: &str, embedder: &str, engine: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("models.toml");
    let detector = &golden["detectors"][which.trim_end_matches("-qdq")];
    let inference = if engine == "onnxruntime" { onnxruntime_section("[\"cpu\"]") } else { String::new() };
    let text = format!(
        "{inference}[detector]\nmodel = \"{}\"\nthreshold = {}\nform = \"as-configured\"\n\n[embedder]\nmodel = \"{}\"\nform = \"as-configured\"\n",
        model(&file(detector["model"].as_str().expect("detector"), which)),
        detector["threshold"],
        model(&file(golden["embedders"][embedder.trim_end_matches("-qdq")].as_str().expect("embedder"), embedder)),
    );
    std::fs::write(&path, text).expect("write config");
    (dir, path.display().to_string())
}

/// `name`, or for a `-qdq` variant of an int8 file its onnxruntime form (models/quantize.py).
fn file(name: &str, variant: &str) -> String {
    match variant.ends_with("-qdq") {
        true => name.replace("-int8.onnx", "-int8-qdq.onnx"),
        false => name.to_owned(),
    }
}

fn config(golden: &Value, which: &str) -> (tempfile::TempDir, String) {
    config_with(golden, which, "fp32", "tract")
}

#[test]
fn detections_match_detr_image_processor_and_onnxruntime_within_a_pixel() {
    let golden = golden();
    // "random-int8": the int8 file models/quantize.py makes, each engine against onnxruntime on it.
    for engine in ENGINES {
        for which in ["fixture", "random", "random-int8"] {
            compare_detections(&golden, which, which, SCORE_TOLERANCE, engine);
        }
    }
}

#[test]
fn rt_detr_rt_detr_v2_and_d_fine_match_rtdetr_image_processor_and_onnxruntime_within_a_pixel() {
    // `family = "auto"` tells them from DETR by their query-selecting TopK; "-int8": each
    // engine against onnxruntime on the int8 file models/quantize.py makes.
    let golden = realtime_golden();
    for engine in ENGINES {
        for which in ["rtdetr", "rtdetrv2", "dfine", "rtdetr-int8", "dfine-int8"] {
            compare_detections(&golden, which, which, SCORE_TOLERANCE, engine);
        }
    }
}

#[test]
fn the_int8_detector_finds_the_same_detections_as_its_fp32_source() {
    // Boxes as fp32 in onnxruntime, scores within what quantization moves them.
    compare_detections(&golden(), "random-int8", "random", INT8_SCORE_TOLERANCE, "tract");
}

/// Whether the reference's label must come out: its probability leads the runner-up class's by
/// more than twice the error allowed on each (golden.json's `margin`, models/golden_margins.py).
/// Closer classes may swap within that error: int8 kernels round differently on AVX2 and on
/// AVX-512 VNNI, and the random tiny DETR's classes are all within 5e-4 of each other, so only
/// the fixture's labels (margin 1) are decided.
fn label_is_decided(reference: &Value, score_tolerance: f64) -> bool {
    let margin = reference["margin"].as_f64().expect("golden.json has each detection's margin (models/golden_margins.py)");
    margin > 2.0 * score_tolerance
}

/// `glimpse detect` with the golden file's detector `which`, against the reference detections
/// of `reference`: same count (above the photo's own threshold where the reference has one),
/// boxes within a pixel, scores within `score_tolerance`, and the labels that tolerance cannot
/// swap; in the reference's order, or matched by label and box where it is "unordered".
fn compare_detections(golden: &Value, which: &str, reference: &str, score_tolerance: f64, engine: &str) {
    let (_dir, config) = config_with(golden, which, "fp32", engine);
    let images = photos(golden);
    let lines = on_images("detect", &config, &images);
    assert_eq!(lines.len(), images.len(), "one line per image, in order");
    for (line, path) in lines.iter().zip(&images) {
        let name = path.file_name().and_then(|n| n.to_str()).expect("name");
        assert_eq!(line["image"].as_str(), Some(path.display().to_string().as_str()));
        let expected = golden["images"][name]["detections"][reference].as_array().expect("detections");
        // A photo's own threshold, where the reference has one, picks from what the floor let out.
        let threshold = golden["detectors"][reference]["thresholds"][name].as_f64().unwrap_or(f64::NEG_INFINITY);
        let found: Vec<&Value> = line["detections"]
            .as_array()
            .expect("detections")
            .iter()
            .filter(|f| f["score"].as_f64().is_some_and(|s| s > threshold))
            .collect();
        assert_eq!(found.len(), expected.len(), "{engine} {which} {name}: {line}");
        let what = format!("{engine} {which} {name}");
        if golden["detectors"][reference]["unordered"].as_bool() == Some(true) {
            match_unordered(found, expected, score_tolerance, &what);
            continue;
        }
        for (&f, e) in found.iter().zip(expected) {
            if label_is_decided(e, score_tolerance) {
                assert_eq!(f["label"], e["label"], "{what}: margin {}", e["margin"]);
            }
            assert!(close(f, e, "score", score_tolerance), "{what}: score {} vs {}", f["score"], e["score"]);
            for k in ["x", "y", "w", "h"] {
                assert!(close(f, e, k, 1.0), "{what}: {k} {} vs {}", f[k], e[k]);
            }
        }
    }
}

fn close(found: &Value, expected: &Value, key: &str, tolerance: f64) -> bool {
    (found[key].as_f64().unwrap_or(f64::NAN) - expected[key].as_f64().unwrap_or(f64::NAN)).abs() <= tolerance
}

/// For a reference whose detections' order is not decided (scores of different pairs closer
/// than the tolerance): each reference detection has its own among what Glimpse found, of the
/// same label and box, the closest in score, and within `score_tolerance`.
fn match_unordered(mut found: Vec<&Value>, expected: &[Value], score_tolerance: f64, what: &str) {
    let same_box = |f: &Value, e: &Value| ["x", "y", "w", "h"].iter().all(|k| close(f, e, k, 1.0));
    let gap = |f: &Value, e: &Value| (f["score"].as_f64().unwrap_or(f64::NAN) - e["score"].as_f64().unwrap_or(f64::NAN)).abs();
    for e in expected {
        let at = (0..found.len())
            .filter(|&i| found[i]["label"] == e["label"] && same_box(found[i], e))
            .min_by(|&a, &b| gap(found[a], e).total_cmp(&gap(found[b], e)));
        let f = found.remove(at.unwrap_or_else(|| panic!("{what}: nothing found like {e}")));
        assert!(close(f, e, "score", score_tolerance), "{what}: score {} vs {}", f["score"], e["score"]);
    }
}

#[test]
fn embeddings_match_clip_image_processor_and_onnxruntime() {
    let golden = golden();
    for engine in ENGINES {
        for embedder in ["fp32", "int8"] {
            for (name, cosine) in cosines(&golden, embedder, embedder, engine) {
                assert!(cosine >= 0.9999, "{engine} {embedder} {name}: cosine {cosine} against onnxruntime on the same file");
            }
        }
    }
}

#[test]
fn the_int8_embedder_stays_within_cosine_0_999_of_its_fp32_source() {
    let golden = golden();
    for (name, cosine) in cosines(&golden, "int8", "fp32", "tract") {
        assert!(cosine >= 0.999, "{name}: int8 in tract against fp32 in onnxruntime: cosine {cosine}");
    }
}

#[test]
fn onnxruntime_s_int8_files_stay_within_their_fp32_sources() {
    // The QDQ files models/quantize.py makes for onnxruntime, held to the tract form's bounds;
    // tract runs them too, only slower than its own form.
    let golden = golden();
    for engine in ENGINES {
        compare_detections(&golden, "random-int8-qdq", "random", INT8_SCORE_TOLERANCE, engine);
        for (name, cosine) in cosines(&golden, "int8-qdq", "fp32", engine) {
            assert!(cosine >= 0.999, "{engine} {name}: QDQ int8 against fp32: cosine {cosine}");
        }
    }
}

/// `glimpse embed` with the golden file's `embedder`, against the reference embeddings of
/// `reference`: (photo, cosine) for each photo.
fn cosines(golden: &Value, embedder: &str, reference: &str, engine: &str) -> Vec<(String, f64)> {
    let (_dir, config) = config_with(golden, "fixture", embedder, engine);
    let images = photos(golden);
    let lines = on_images("embed", &config, &images);
    assert_eq!(lines.len(), images.len());
    let floats = |v: &Value| -> Vec<f64> { v.as_array().expect("embedding").iter().filter_map(Value::as_f64).collect() };
    lines
        .iter()
        .zip(&images)
        .map(|(line, path)| {
            let name = path.file_name().and_then(|n| n.to_str()).expect("name").to_owned();
            let (ours, theirs) = (floats(&line["embedding"]), floats(&golden["images"][name.as_str()]["embeddings"][reference]));
            assert_eq!(ours.len(), theirs.len());
            let cosine = ours.iter().zip(&theirs).map(|(a, b)| a * b).sum();
            (name, cosine)
        })
        .collect()
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
