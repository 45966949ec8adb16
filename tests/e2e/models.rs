//! `glimpse models verify|fetch` against the committed manifest and a local HTTP server.

use crate::harness::daemon::{glimpse, repo};
use crate::harness::http::serve;

#[test]
fn the_committed_models_match_their_manifest() {
    let manifest = repo().join("models/manifest.toml").display().to_string();
    let out = glimpse(&["models", "verify", "--manifest", &manifest], &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    // Every committed file is listed: in tiny/, the three fp32 test models, two int8 versions for
    // each engine, the text tower and CLIP's tokenizer, the three real-time DETRs (RT-DETR,
    // RT-DETRv2, D-FINE) and two of them in int8; in coco/, the real NanoDet-m and SSD-MobileNet-v2.
    let committed = ["models/tiny", "models/coco"]
        .iter()
        .flat_map(|dir| std::fs::read_dir(repo().join(dir)).expect(dir))
        .filter(|e| e.as_ref().is_ok_and(|e| e.path().extension().is_some_and(|x| x == "onnx" || x == "json")))
        .count();
    assert_eq!(committed, 16);
    assert_eq!(String::from_utf8_lossy(&out.stdout).matches("ok: ").count(), committed);
}

#[test]
fn fetch_downloads_verifies_and_refuses_a_file_with_the_wrong_checksum() {
    let served = tempfile::tempdir().expect("tempdir");
    let model = repo().join("models/tiny/clip-tiny-random.onnx");
    std::fs::copy(&model, served.path().join("clip.onnx")).expect("copy");
    std::fs::write(served.path().join("tampered.onnx"), b"not the model").expect("write");
    let port = serve(served.path());
    let manifest = std::fs::read_to_string(repo().join("models/manifest.toml")).expect("manifest");
    let sha = manifest
        .split("clip-tiny-random.onnx")
        .nth(1)
        .and_then(|rest| rest.split("sha256 = \"").nth(1))
        .and_then(|r| r.split('"').next())
        .expect("clip sha256");
    let dest = tempfile::tempdir().expect("tempdir");
    let good = dest.path().join("good.toml");
    std::fs::write(
        &good,
        format!(
            "[[model]]\nfile = \"m/clip.onnx\"\nkind = \"embedder\"\nsha256 = \"{sha}\"\nurl = \"http://127.0.0.1:{port}/clip.onnx\"\n"
        ),
    )
    .expect("write");
    let out = glimpse(&["models", "fetch", "--manifest", &good.display().to_string()], &[]);
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read(dest.path().join("m/clip.onnx")).expect("fetched"), std::fs::read(&model).expect("model"));
    let again = glimpse(&["models", "fetch", "--manifest", &good.display().to_string()], &[]);
    assert!(String::from_utf8_lossy(&again.stdout).contains("already present and verified"));
    let verify = glimpse(&["models", "verify", "--manifest", &good.display().to_string()], &[]);
    assert!(verify.status.success());

    let bad = dest.path().join("bad.toml");
    std::fs::write(
        &bad,
        format!("[[model]]\nfile = \"m/other.onnx\"\nsha256 = \"{sha}\"\nurl = \"http://127.0.0.1:{port}/tampered.onnx\"\n"),
    )
    .expect("write");
    let out = glimpse(&["models", "fetch", "--manifest", &bad.display().to_string()], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing was replaced"));
    assert!(!dest.path().join("m/other.onnx").exists() && !dest.path().join("m/other.part").exists());
    let verify = glimpse(&["models", "verify", "--manifest", &bad.display().to_string()], &[]);
    assert_eq!(verify.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&verify.stdout).contains("cannot read it"));
}
