//! Camera → detection → embedding → outbox → Pinecone, with MQTT status, end to end.

use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::Value;

use crate::harness::daemon::{clip, exported_ids, glimpse, wait_until, Daemon};
use crate::harness::mosquitto::Mosquitto;
use crate::harness::mqtt::Observer;
use crate::harness::pinecone::{Emulator, Fault, Stored};
use crate::harness::rtsp::RtspServer;
use crate::harness::ConfigBuilder;

/// The fixture detector finds exactly this many objects in every frame.
const BOXES_PER_FRAME: u64 = 5;
/// bikes.mp4: 10 s at 25 fps, 640x272; sampled at 2 fps that is 20 frames.
const BIKES_FRAMES_AT_2FPS: usize = 20;
const API_KEY: &str = "pk-e2e-7c1f9a-SECRET";

fn assert_valid_record(id: &str, stored: &Stored, device: &str, camera: &str) {
    assert!(id.starts_with(&format!("{device}:{camera}:")), "id {id}");
    let m = &stored.metadata;
    for key in ["device", "camera", "label"] {
        assert!(m.get(key).is_some_and(Value::is_string), "{id}: metadata {key} missing: {m:?}");
    }
    for key in ["ts", "score", "x", "y", "w", "h", "frame_w", "frame_h"] {
        assert!(m.get(key).is_some_and(Value::is_number), "{id}: metadata {key} missing: {m:?}");
    }
    let n = |k: &str| m[k].as_f64().unwrap_or(-1.0);
    assert_eq!((m["device"].as_str(), m["camera"].as_str(), m["label"].as_str()), (Some(device), Some(camera), Some("person")));
    assert_eq!((n("frame_w"), n("frame_h")), (640.0, 272.0));
    assert!(n("score") > 0.9 && n("score") <= 1.0);
    assert!(n("x") + n("w") <= 640.0 && n("y") + n("h") <= 272.0 && n("w") >= 8.0 && n("h") >= 8.0, "{m:?}");
    assert!(n("ts") > 1.7e12, "ts is unix milliseconds: {m:?}");
    assert_eq!(stored.values.len(), 512);
    let norm: f32 = stored.values.iter().map(|v| v * v).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-3, "embeddings are L2-normalised, norm {norm}");
}

#[test]
fn an_rtsp_camera_is_indexed_in_pinecone_reported_over_mqtt_and_stops_cleanly_on_sigterm() {
    let emulator = Emulator::start(API_KEY, 512);
    let broker = Mosquitto::start();
    let camera = RtspServer::serve_mp4(&clip("bikes.mp4"), "bikes");
    let observer = Observer::subscribe(broker.port, "glimpse/#");
    let rtsp_password = "cam-pass-9d2e";
    let config = ConfigBuilder::new("e2e-rtsp", "detr-tiny-fixture.onnx")
        .camera("street", &format!("rtsp://viewer:{rtsp_password}@127.0.0.1:{}/bikes", camera.port), 2.0)
        .pinecone(&emulator.url, "e2e")
        .mqtt(broker.port, 1.0)
        .write();
    let mut daemon = Daemon::start(&config, &[], &[("PINECONE_API_KEY", API_KEY)]);

    observer.wait_for("glimpse/e2e-rtsp/availability", Duration::from_secs(60), |m| m.payload == "online");
    observer.wait_for("glimpse/e2e-rtsp/cameras/street/status", Duration::from_secs(60), |m| m.payload == "online");
    wait_until("15 records in the index", Duration::from_secs(120), || emulator.count("e2e") >= 15);
    let stats = observer.wait_for("glimpse/e2e-rtsp/stats", Duration::from_secs(10), |m| m.payload.contains("\"embeddings\":"));
    assert!(serde_json::from_str::<Value>(&stats.payload).is_ok());
    let late = Observer::subscribe(broker.port, "glimpse/e2e-rtsp/availability");
    let retained = late.wait_for("glimpse/e2e-rtsp/availability", Duration::from_secs(10), |_| true);
    assert_eq!((retained.payload.as_str(), retained.retain), ("online", true));

    daemon.signal(Signal::SIGTERM);
    let status = daemon.wait(Duration::from_secs(60));
    assert!(status.success(), "exit {status:?}; log:\n{}", daemon.logs());

    // The last stats message accounts for every embedding: upserted or still pending, none lost.
    let last = observer.on("glimpse/e2e-rtsp/stats").pop().expect("stats published");
    let stats: Value = serde_json::from_str(&last.payload).expect("stats are JSON");
    let street = &stats["cameras"]["street"];
    let processed = street["frames_processed"].as_u64().expect("frames_processed");
    let embeddings = street["embeddings"].as_u64().expect("embeddings");
    assert!(street["frames_decoded"].as_u64() >= Some(processed) && street["frames_sampled"].as_u64() >= Some(processed));
    assert_eq!(street["detections"].as_u64(), Some(processed * BOXES_PER_FRAME), "{stats}");
    assert_eq!(embeddings, processed * BOXES_PER_FRAME, "{stats}");
    let upserted = stats["sync"]["upserted"].as_u64().expect("upserted");
    let pending = stats["outbox"]["pending"].as_u64().expect("pending");
    assert_eq!(upserted as usize, emulator.count("e2e"), "{stats}");
    assert_eq!(upserted + pending, embeddings, "{stats}");

    let vectors = emulator.vectors("e2e");
    for (id, stored) in &vectors {
        assert_valid_record(id, stored, "e2e-rtsp", "street");
    }

    // Clean shutdown ends in `offline`, retained for whoever looks next.
    assert_eq!(observer.on("glimpse/e2e-rtsp/availability").last().map(|m| m.payload.clone()), Some("offline".into()));
    assert_eq!(observer.on("glimpse/e2e-rtsp/cameras/street/status").last().map(|m| m.payload.clone()), Some("offline".into()));
    let after = Observer::subscribe(broker.port, "glimpse/e2e-rtsp/#");
    let retained = after.wait_for("glimpse/e2e-rtsp/availability", Duration::from_secs(10), |_| true);
    assert_eq!((retained.payload.as_str(), retained.retain), ("offline", true));

    // Secrets never reach logs or MQTT.
    let logs = daemon.logs();
    let payloads: String = observer.messages().iter().map(|m| m.payload.clone()).collect();
    for secret in [API_KEY, rtsp_password] {
        assert!(!logs.contains(secret), "secret {secret} in logs");
        assert!(!payloads.contains(secret), "secret {secret} in MQTT");
    }
}

#[test]
fn a_file_is_indexed_completely_and_indexing_it_again_adds_no_duplicates() {
    let emulator = Emulator::start(API_KEY, 512);
    let uri = format!("file://{}", clip("bikes.mp4").display());
    let expected = BIKES_FRAMES_AT_2FPS * BOXES_PER_FRAME as usize;
    for run in 0..2 {
        let config =
            ConfigBuilder::new("e2e-file", "detr-tiny-fixture.onnx").camera("bikes", &uri, 2.0).pinecone(&emulator.url, "files").write();
        let mut daemon = Daemon::start(&config, &["--exit-when-done"], &[("PINECONE_API_KEY", API_KEY)]);
        let status = daemon.wait(Duration::from_secs(180));
        assert!(status.success(), "run {run}: exit {status:?}; log:\n{}", daemon.logs());
        assert_eq!(emulator.count("files"), expected, "run {run}");
    }
    for (id, stored) in emulator.vectors("files") {
        assert_valid_record(&id, &stored, "e2e-file", "bikes");
    }
    assert!(emulator.upsert_requests() >= 2);
    let (largest_batch, largest_body) = emulator.largest_batch();
    assert!(largest_batch <= 1000 && largest_body <= 2 * 1024 * 1024);
}

#[test]
fn the_syncer_retries_through_outages_and_throttling_until_every_record_is_acknowledged() {
    let emulator = Emulator::start(API_KEY, 512);
    emulator.inject([
        Fault::Status(503, None),
        Fault::Status(503, None),
        Fault::Status(429, Some(1)),
        Fault::Status(500, None),
        Fault::Delay(Duration::from_secs(1)),
    ]);
    let config = ConfigBuilder::new("e2e-faults", "detr-tiny-fixture.onnx")
        .camera("bikes", &format!("file://{}", clip("bikes.mp4").display()), 1.0)
        .pinecone(&emulator.url, "faults")
        .write();
    let mut daemon = Daemon::start(&config, &["--exit-when-done"], &[("PINECONE_API_KEY", API_KEY)]);
    let status = daemon.wait(Duration::from_secs(180));
    assert!(status.success(), "exit {status:?}; log:\n{}", daemon.logs());
    assert_eq!(emulator.count("faults"), 10 * BOXES_PER_FRAME as usize);
    assert!(emulator.rejected().is_empty(), "{:?}", emulator.rejected());
    assert!(daemon.count("upsert_retry", &[]) > 0, "no retry was needed: the faults were not injected");
}

#[test]
fn a_long_outage_is_ridden_out_and_the_backlog_drains_completely_after_it() {
    let emulator = Emulator::start(API_KEY, 512);
    emulator.fail_for(503, Duration::from_secs(20));
    let config = ConfigBuilder::new("e2e-outage", "detr-tiny-fixture.onnx")
        .camera("bikes", &format!("file://{}", clip("bikes.mp4").display()), 1.0)
        .pinecone(&emulator.url, "outage")
        .write();
    let started = std::time::Instant::now();
    let mut daemon = Daemon::start(&config, &["--exit-when-done"], &[("PINECONE_API_KEY", API_KEY)]);
    let status = daemon.wait(Duration::from_secs(180));
    assert!(status.success(), "exit {status:?}; log:\n{}", daemon.logs());
    assert!(started.elapsed() >= Duration::from_secs(20));
    assert!(emulator.refused() >= 3, "the outage was not exercised: {} refusals", emulator.refused());
    assert_eq!(emulator.count("outage"), 10 * BOXES_PER_FRAME as usize);
    assert!(emulator.rejected().is_empty());
}

#[test]
fn a_pinecone_index_of_the_wrong_dimension_stops_start_up_with_a_clear_error() {
    let emulator = Emulator::start(API_KEY, 768);
    let config = ConfigBuilder::new("e2e-dim", "detr-tiny-fixture.onnx")
        .camera("bikes", &format!("file://{}", clip("bikes.mp4").display()), 1.0)
        .pinecone(&emulator.url, "dim")
        .write();
    let out = glimpse(&["run", "--config", &config.display().to_string()], &[("PINECONE_API_KEY", API_KEY)]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("768-dimensional") && stderr.contains("produces 512"), "{stderr}");
    assert_eq!(emulator.count("dim"), 0);
}

#[test]
fn the_quick_start_without_pinecone_runs_past_several_times_its_outbox_cap_and_loses_nothing() {
    // scripts/install.sh's configuration (no Pinecone, no MQTT), with a 1 MiB outbox and every
    // detection of every frame embedded, so that far more than the cap is accepted.
    let config = ConfigBuilder::new("quickstart", "detr-tiny-fixture.onnx")
        .camera("bikes", &format!("file://{}", clip("bikes.mp4").display()), 25.0)
        .raw("[outbox]\nmax_bytes = \"1 MiB\"")
        .write();
    let mut daemon = Daemon::start(&config, &["--exit-when-done"], &[]);
    let status = daemon.wait(Duration::from_secs(300));
    assert!(status.success(), "log:\n{}", daemon.logs());
    let outbox = &daemon.last_stats()["outbox"];
    let accepted = outbox["accepted"].as_u64().expect("accepted");
    // An encoded record is over 2 KiB (512 floats): the run accepted more than twice the cap.
    assert!(accepted * 2048 > 2 << 20, "only {accepted} records accepted: {outbox}");
    assert_eq!((outbox["dropped"].as_u64(), outbox["pending"].as_u64()), (Some(0), Some(0)), "records leave once indexed: {outbox}");
    let kept = exported_ids(&config);
    assert_eq!(kept.len() as u64, accepted, "every accepted record is in the index on the device");
    let first = glimpse(&["search", "--config", &config.display().to_string(), "--like", &kept[0], "--json", "--top-k", "5"], &[]);
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    assert!(String::from_utf8_lossy(&first.stdout).contains(&kept[0]), "the first record is still searchable");
}
