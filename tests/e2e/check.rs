//! `glimpse check`: one report of everything wrong with a deployment, each item placed.

use crate::harness::daemon::{clip, glimpse};
use crate::harness::ConfigBuilder;

fn check(config: &std::path::Path) -> (Option<i32>, String) {
    let out = glimpse(&["check", "--config", &config.display().to_string()], &[]);
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn a_healthy_deployment_passes_every_check() {
    let config =
        ConfigBuilder::new("chk", "detr-tiny-random.onnx").camera("bikes", &format!("file://{}", clip("bikes.mp4").display()), 1.0).write();
    let (code, out) = check(&config);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("camera bikes (file://") && out.contains("640x272"), "{out}");
    assert!(out.contains("all checks passed"), "{out}");
}

#[test]
fn every_bad_key_is_reported_with_its_line_and_column() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("broken.toml");
    std::fs::write(
        &path,
        r#"[device]
id = "Lab 01"
data_dir = "/tmp/x"

[[cameras]]
name = "street"
uri = "ftp://cam/stream"
sample_fps = "fast"
fps = 3

[detector]
model = "/m/detr.onnx"
threshold = 1.5

[embedder]
model = "/m/clip.onnx"

[mqtt]
host = "127.0.0.1"
port = 99999
"#,
    )
    .expect("write config");
    let (code, out) = check(&path);
    assert_eq!(code, Some(2), "{out}");
    let file = path.display().to_string();
    for expected in [
        format!("{file}:2:6: device.id: \"Lab 01\" is not a valid name"),
        format!("{file}:7:7: cameras[0].uri: \"ftp://cam/stream\" is not a supported camera URI"),
        format!("{file}:8:14: cameras[0].sample_fps: invalid type: string \"fast\""),
        format!("{file}:9:1: cameras[0].fps: unknown key"),
        format!("{file}:13:13: detector.threshold: must be between 0 and 1"),
        format!("{file}:20:8: mqtt.port: invalid value"),
    ] {
        assert!(out.contains(&expected), "missing {expected:?} in:\n{out}");
    }
    assert!(out.contains("6 problem(s) found"), "{out}");
}

#[test]
fn missing_and_corrupt_models_and_missing_media_are_all_named() {
    let cfg = ConfigBuilder::new("chk", "detr-tiny-random.onnx").camera("gone", "file:///nonexistent/clip.mp4", 1.0);
    let path = cfg.write();
    let corrupt = path.dir.path().join("truncated.onnx");
    let full = std::fs::read(crate::harness::daemon::model("clip-tiny-random.onnx")).expect("read model");
    std::fs::write(&corrupt, &full[..full.len() / 3]).expect("write truncated model");
    let text = std::fs::read_to_string(&*path)
        .expect("read config")
        .replace(&crate::harness::daemon::model("detr-tiny-random.onnx"), "/nonexistent/detr.onnx")
        .replace(&crate::harness::daemon::model("clip-tiny-random.onnx"), &corrupt.display().to_string());
    std::fs::write(&*path, text).expect("rewrite config");
    let (code, out) = check(&path);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("detector.model: model file /nonexistent/detr.onnx cannot be read"), "{out}");
    assert!(out.contains("embedder.model: model file") && out.contains("truncated.onnx is not a usable ONNX model"), "{out}");
    assert!(out.contains("camera gone (file:///nonexistent/clip.mp4):"), "{out}");
    assert!(out.contains("3 problem(s) found"), "{out}");
}

#[test]
fn a_data_dir_that_cannot_be_made_or_lacks_free_space_is_named() {
    let bikes = format!("file://{}", clip("bikes.mp4").display());
    let config = ConfigBuilder::new("chk", "detr-tiny-random.onnx").camera("bikes", &bikes, 1.0).write();
    let text = std::fs::read_to_string(&*config).expect("read config");
    let data_dir = config.dir.path().join("data").display().to_string();
    std::fs::write(&*config, text.replace(&data_dir, "/dev/null/glimpse")).expect("rewrite config");
    let (code, out) = check(&config);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("device.data_dir: data_dir /dev/null/glimpse cannot be created"), "{out}");

    let roomy = ConfigBuilder::new("chk", "detr-tiny-random.onnx")
        .camera("bikes", &bikes, 1.0)
        .raw("[outbox]\nmin_free_disk = \"1000000 GiB\"")
        .write();
    let (code, out) = check(&roomy);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("less than outbox.min_free_disk"), "{out}");
}

#[test]
fn a_stop_timeout_that_is_not_a_number_of_seconds_is_refused_without_a_panic() {
    let config = ConfigBuilder::new("chk", "detr-tiny-random.onnx").camera("t", "test:", 1.0).write();
    let out = glimpse(&["run", "--config", &config.display().to_string(), "--stop-timeout-s", "nan"], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("\"nan\" is not a number of seconds from 0 to 3600") && !stderr.contains("panicked"), "{stderr}");
}
