//! Finding what the cameras saw: every record's crop is kept, named in its metadata.

use std::time::Duration;

use crate::harness::daemon::{clip, glimpse, Daemon};
use crate::harness::ConfigBuilder;

/// Every pending record, as `glimpse outbox export` gives them.
fn exported(config: &std::path::Path) -> Vec<serde_json::Value> {
    let out = glimpse(&["outbox", "export", "--config", &config.display().to_string()], &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect()
}

#[test]
fn every_record_keeps_its_crop_as_a_jpeg_named_in_its_metadata() {
    let bikes = format!("file://{}", clip("bikes.mp4").display());
    let config = ConfigBuilder::new("kept", "detr-tiny-fixture.onnx").camera("street", &bikes, 1.0).raw("[crops]\nmax_px = 64").write();
    let mut daemon = Daemon::start(&config, &["--exit-when-done"], &[]);
    assert!(daemon.wait(Duration::from_secs(120)).success(), "{}", daemon.logs());
    let records = exported(&config);
    assert_eq!(records.len(), 50, "10 frames, 5 objects each");
    let crops = config.dir.path().join("data/crops");
    for record in &records {
        let key = record["metadata"]["crop"].as_str().expect("every record names its crop");
        assert!(key.starts_with("kept/street/") && key.ends_with(".jpg"), "{key}");
        let image = image::open(crops.join(key)).unwrap_or_else(|e| panic!("crop {key}: {e}"));
        assert!(image.width().max(image.height()) <= 64, "{key} is {}x{}", image.width(), image.height());
    }
    let stats = daemon.last_stats();
    assert_eq!(stats["crops"]["stored"], 50, "{stats}");
    assert_eq!(stats["crops"]["failures"], 0, "{stats}");
}

#[test]
fn an_unwritable_crop_store_costs_the_crops_not_the_records() {
    let bikes = format!("file://{}", clip("bikes.mp4").display());
    let config = ConfigBuilder::new("nocrops", "detr-tiny-fixture.onnx")
        .camera("street", &bikes, 0.5)
        .raw("[crops]\nstore = \"file:///dev/null/crops\"")
        .write();
    let mut daemon = Daemon::start(&config, &["--exit-when-done"], &[]);
    assert!(daemon.wait(Duration::from_secs(120)).success(), "{}", daemon.logs());
    let records = exported(&config);
    assert_eq!(records.len(), 25, "every record is accepted");
    assert!(records.iter().all(|r| r["metadata"].get("crop").is_none()), "no record names a crop that was not stored");
    assert_eq!(daemon.last_stats()["crops"]["failures"], 25);
    assert_eq!(daemon.count("crop_store_unusable", &[]), 1);
    let check = glimpse(&["check", "--config", &config.display().to_string()], &[]);
    assert!(String::from_utf8_lossy(&check.stdout).contains("crops.store: cannot write crop /dev/null/crops"));
}
