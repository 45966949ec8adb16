//! The motion gate and the tracker end to end: a still scene costs a detection per refresh and
//! one embedding per object; a moving one is detected on every frame; change inside a motion
//! mask does not count as motion.

use std::time::Duration;

use serde_json::Value;

use crate::harness::daemon::{exported_records, Daemon};
use crate::harness::media::h264_pattern_clip;
use crate::harness::ConfigBuilder;

/// Indexes `clip` at 2 fps with `analysis` and returns (final camera stats, exported records).
fn index(name: &str, clip: &std::path::Path, analysis: &str) -> (Value, Vec<Value>) {
    let config = ConfigBuilder::new(name, "detr-tiny-fixture.onnx")
        .camera("yard", &format!("file://{}", clip.display()), 2.0)
        .analysis(analysis)
        .write();
    let mut daemon = Daemon::start(&config, &["--exit-when-done"], &[]);
    assert!(daemon.wait(Duration::from_secs(180)).success(), "{}", daemon.logs());
    (daemon.last_stats()["cameras"]["yard"].clone(), exported_records(&config))
}

#[test]
fn a_still_scene_is_detected_once_per_refresh_and_each_object_embedded_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let still = dir.path().join("still.mp4");
    h264_pattern_clip(&still, "smpte100", 20, 10, 10, 320, 240);
    let (stats, records) = index("still", &still, "refresh_s = 5.0\ntrack_timeout_s = 30.0\n");
    // 40 sampled frames; the detector runs on the first and at 5, 10 and 15 s.
    assert_eq!(stats["frames_processed"], 40, "{stats}");
    assert_eq!(stats["frames_gated"], 36, "{stats}");
    assert_eq!(stats["gated_share"], 0.9);
    // The fixture finds the same 5 objects each time: embedded once, recognised three times more.
    assert_eq!(stats["detections"], 20);
    assert_eq!(stats["deduplicated"], 15);
    assert_eq!(records.len(), 5);
    let mut tracks: Vec<&str> = records.iter().filter_map(|r| r["metadata"]["track_id"].as_str()).collect();
    tracks.sort();
    tracks.dedup();
    assert_eq!(tracks.len(), 5, "every record carries its own track id: {records:?}");
}

#[test]
fn a_moving_scene_passes_the_gate_and_dedupe_off_indexes_every_detection() {
    let dir = tempfile::tempdir().expect("tempdir");
    let moving = dir.path().join("ball.mp4");
    h264_pattern_clip(&moving, "ball", 10, 10, 10, 320, 240);
    let (stats, records) = index("moving", &moving, "dedupe = false\n");
    assert_eq!(stats["frames_processed"], 20, "{stats}");
    assert_eq!(stats["frames_gated"], 0, "the ball moves in every sampled frame: {stats}");
    assert_eq!(records.len(), 20 * 5, "dedupe = false: every detection of every frame");
    assert!(records.iter().all(|r| r["metadata"]["track_id"].is_string()));
}

#[test]
fn noise_inside_a_motion_mask_does_not_wake_the_detector() {
    // videotestsrc's SMPTE bars carry changing snow in their bottom-right sixteenth
    // (x 240-319, y 180-239 of 320x240): motion on every frame unless masked.
    let dir = tempfile::tempdir().expect("tempdir");
    let bars = dir.path().join("bars.mp4");
    h264_pattern_clip(&bars, "smpte", 10, 10, 10, 320, 240);
    let (unmasked, _) = index("unmasked", &bars, "refresh_s = 5.0\n");
    assert_eq!(unmasked["frames_gated"], 0, "the snow is motion: {unmasked}");
    let (masked, _) = index("masked", &bars, "refresh_s = 5.0\n[analysis.motion_masks]\nyard = [[0.74, 0.74, 1.0, 1.0]]\n");
    assert_eq!(masked["frames_processed"], 20, "{masked}");
    assert_eq!(masked["frames_gated"], 18, "detected on the first frame and the refresh at 5 s only: {masked}");
}
