//! The inference engines: ONNX Runtime (loaded at run time, with execution providers) indexes
//! what tract indexes, falls back from a provider its library lacks, and a bad `[inference]`
//! is one clear error with exit code 2.

use std::time::Duration;

use crate::harness::daemon::{clip, exported_ids, glimpse, onnxruntime_section, Daemon};
use crate::harness::ConfigBuilder;

fn index_the_clip(inference: &str) -> (crate::harness::TestConfig, Daemon) {
    index_the_clip_with("clip-tiny-random.onnx", inference)
}

fn index_the_clip_with(embedder: &str, inference: &str) -> (crate::harness::TestConfig, Daemon) {
    let bikes = format!("file://{}", clip("bikes.mp4").display());
    let config =
        ConfigBuilder::new("engines", "detr-tiny-fixture.onnx").embedder(embedder).camera("street", &bikes, 1.0).raw(inference).write();
    let mut daemon = Daemon::start(&config, &["--exit-when-done"], &[]);
    assert!(daemon.wait(Duration::from_secs(120)).success(), "{}", daemon.logs());
    (config, daemon)
}

#[test]
fn onnxruntime_indexes_the_clip_into_the_same_records_as_tract() {
    let (tract_config, tract) = index_the_clip("");
    let (ort_config, ort) = index_the_clip(&onnxruntime_section("[\"cpu\"]"));
    let (ids, ort_ids) = (exported_ids(&tract_config), exported_ids(&ort_config));
    assert_eq!(ids.len(), 50, "10 frames, 5 objects each");
    assert_eq!(ids, ort_ids, "the same records, by id");
    let (engine, ort_engine) = (&tract.last_stats()["inference"], &ort.last_stats()["inference"]);
    assert_eq!((engine["engine"].as_str(), engine["providers"]["detector"].as_str()), (Some("tract"), Some("tract")), "{engine}");
    assert_eq!(ort_engine["engine"], "onnxruntime", "{ort_engine}");
    assert!(ort_engine["version"].as_str().is_some_and(|v| v.starts_with("1.")), "{ort_engine}");
    assert_eq!(ort_engine["providers"]["embedder"], "CPUExecutionProvider", "{ort_engine}");
}

/// An int8 file competes with the other forms beside it (models/tiny has all three of the
/// tiny CLIP); the fastest runs on either engine, the stats and `check` say which and why, and
/// the choice is remembered in the data directory for the next start.
#[test]
fn an_int8_model_runs_in_its_fastest_form_and_says_which() {
    for inference in [String::new(), onnxruntime_section("[\"cpu\"]")] {
        let (config, daemon) = index_the_clip_with("clip-tiny-random-int8.onnx", &inference);
        let form = &daemon.last_stats()["inference"]["form"];
        let embedder = &form["embedder"];
        let timed: Vec<&str> = embedder["ms"].as_object().expect("ms per form").keys().map(String::as_str).collect();
        assert_eq!(timed, ["fp32", "int8", "int8-qdq"], "{form}");
        let chosen = embedder["form"].as_str().expect("form");
        let fastest = embedder["ms"].as_object().unwrap().iter().min_by(|a, b| a.1.as_f64().partial_cmp(&b.1.as_f64()).unwrap()).unwrap();
        assert_eq!(chosen, fastest.0, "the fastest form runs: {form}");
        let suffix = if chosen == "fp32" { String::new() } else { format!("-{chosen}") };
        assert!(embedder["file"].as_str().is_some_and(|f| f.ends_with(&format!("clip-tiny-random{suffix}.onnx"))), "{form}");
        assert!(embedder["reason"].as_str().is_some_and(|r| r.contains("ms per call")), "{form}");
        assert_eq!(form["detector"]["form"], "fp32", "the fixture detector has no other form: {form}");
        assert_eq!(form["detector"]["reason"], "no other form of this file is present", "{form}");

        let out = glimpse(&["check", "--config", &config.path.display().to_string()], &[]);
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text.lines().find(|l| l.starts_with("ok: embedder form ")).unwrap_or_else(|| panic!("no form line in:\n{text}"));
        assert!(line.contains(&format!("form {chosen} (")), "check runs what the daemon chose: {line}");
        assert!(line.contains("timed before with the same files"), "the daemon's choice is remembered, not timed again: {line}");
    }
}

#[test]
fn a_cpu_only_library_asked_for_cuda_runs_on_the_cpu_and_says_why() {
    let (_config, daemon) = index_the_clip(&onnxruntime_section("[\"cuda\", \"cpu\"]"));
    let told: Vec<_> = daemon.events().into_iter().filter(|e| e["fields"]["event"] == "provider_unavailable").collect();
    assert_eq!(told.len(), 1, "logged once, not once per model: {told:?}");
    assert_eq!(told[0]["fields"]["provider"], "CUDAExecutionProvider");
    assert!(told[0]["fields"]["reason"].as_str().is_some_and(|r| r.contains("not in this ONNX Runtime library")), "{told:?}");
    let engine = &daemon.last_stats()["inference"];
    assert_eq!(engine["providers"]["detector"], "CPUExecutionProvider", "{engine}");
}

#[test]
fn only_cuda_on_a_cpu_only_library_is_an_error_naming_the_model_and_the_reason() {
    let config = ConfigBuilder::new("cuda-only", "detr-tiny-fixture.onnx")
        .camera("test", "test:", 1.0)
        .raw(&onnxruntime_section("[\"cuda\"]"))
        .write();
    let out = glimpse(&["check", "--config", &config.path.display().to_string()], &[]);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("detr-tiny-fixture.onnx") && text.contains("CUDAExecutionProvider: not in this ONNX Runtime library"), "{text}");
    assert!(text.contains("add \"cpu\""), "{text}");
}

#[test]
fn a_bad_inference_section_is_one_clear_error_and_exit_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let not_a_library = dir.path().join("libonnxruntime.so");
    std::fs::write(&not_a_library, b"not an ELF file").expect("write");
    let cases = [
        ("[inference]\nengine = \"onnxruntim\"\n".to_owned(), "inference.engine"),
        (
            "[inference]\nengine = \"onnxruntime\"\nonnxruntime_library = \"/nonexistent/libonnxruntime.so\"\n".to_owned(),
            "/nonexistent/libonnxruntime.so",
        ),
        (format!("[inference]\nengine = \"onnxruntime\"\nonnxruntime_library = \"{}\"\n", not_a_library.display()), "libonnxruntime.so"),
        ("[inference]\nengine = \"onnxruntime\"\nproviders = [\"cdua\"]\n".to_owned(), "inference.providers"),
        ("[inference]\nproviders = [\"cuda\"]\n".to_owned(), "only applies to engine = \"onnxruntime\""),
    ];
    for (section, named) in cases {
        let config = ConfigBuilder::new("bad-engine", "detr-tiny-fixture.onnx").camera("test", "test:", 1.0).raw(&section).write();
        for command in ["check", "run"] {
            let out = glimpse(&[command, "--config", &config.path.display().to_string()], &[]);
            let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            assert_eq!(out.status.code(), Some(2), "{command} with {section:?}: {text}");
            assert!(text.contains(named), "{command} with {section:?} should name {named}: {text}");
            assert!(!text.contains("panicked"), "{text}");
        }
    }
}
