//! Nothing accepted is lost: through SIGKILL at random moments, and at the disk cap.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use rand::Rng;

use crate::harness::daemon::{clip, glimpse, outbox_report, Daemon};
use crate::harness::pinecone::{Emulator, Fault};
use crate::harness::ConfigBuilder;

const API_KEY: &str = "pk-durability";
/// Kill-and-restart cycles; `tests/soak/crash-loop.sh` raises it to 500.
fn crash_cycles() -> usize {
    std::env::var("GLIMPSE_CRASH_CYCLES").ok().and_then(|v| v.parse().ok()).unwrap_or(20)
}

/// The ids pending in the outbox, as `glimpse outbox export` reads them (the daemon stopped).
fn pending_ids(config: &std::path::Path) -> Vec<String> {
    let out = glimpse(&["outbox", "export", "--config", &config.display().to_string()], &[]);
    assert!(out.status.success(), "the outbox does not open: {}", String::from_utf8_lossy(&out.stderr));
    let lines = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("JSON line"))
        .collect::<Vec<_>>();
    lines.iter().map(|r| r["id"].as_str().expect("id").to_owned()).collect()
}

#[test]
fn every_record_accepted_before_a_sigkill_reaches_the_index_after_restart() {
    let emulator = Emulator::start(API_KEY, 512);
    let config = ConfigBuilder::new("crash", "detr-tiny-fixture.onnx")
        .camera("live", "test:", 5.0)
        .pinecone(&emulator.url, "crash")
        .raw("[outbox]\nflush_ms = 20")
        .write();
    let mut rng = rand::rng();
    let mut accepted = BTreeSet::new();
    let env = [("PINECONE_API_KEY", API_KEY)];
    for cycle in 0..crash_cycles() {
        // Slow and failing responses keep a backlog in the outbox at the moment of the kill.
        emulator.inject([Fault::Delay(Duration::from_millis(300)), Fault::Status(503, None), Fault::Drop]);
        let mut daemon = Daemon::start(&config, &[], &env);
        let started = Instant::now();
        let kill_after = Duration::from_millis(rng.random_range(300..3000));
        while started.elapsed() < kill_after {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(daemon.is_running(), "cycle {cycle}: glimpse exited before the kill; log:\n{}", daemon.logs());
        daemon.signal(Signal::SIGKILL);
        daemon.wait(Duration::from_secs(10));
        // Accepted = durable in the outbox, or already acknowledged by the index.
        accepted.extend(pending_ids(&config));
        accepted.extend(emulator.ids("crash"));
    }
    assert!(accepted.len() > 50, "too few records accepted to prove anything: {}", accepted.len());

    // One clean run drains the backlog (a short file camera, so it can finish by itself).
    let drain = ConfigBuilder::sharing_data_dir(&config, "crash", "detr-tiny-fixture.onnx")
        .camera("drain", &format!("file://{}", clip("bikes.mp4").display()), 0.5)
        .pinecone(&emulator.url, "crash")
        .write();
    let mut daemon = Daemon::start(&drain, &["--exit-when-done"], &env);
    let status = daemon.wait(Duration::from_secs(180));
    assert!(status.success(), "drain run failed; log:\n{}", daemon.logs());
    let in_index = emulator.ids("crash");
    let lost: Vec<_> = accepted.difference(&in_index).collect();
    assert!(lost.is_empty(), "{} accepted records never reached the index, e.g. {:?}", lost.len(), &lost[..lost.len().min(5)]);

    let report = outbox_report(&drain);
    assert_eq!(report["pending"], 0, "{report}");
    assert_eq!(report["quarantined"], 0, "{report}");
}

/// Neither Pinecone nor an index on the device: the outbox is the records' only copy, which is
/// what fills it (with either, records leave it once delivered).
const OUTBOX_ONLY: &str = "[search]\nenabled = false";

#[test]
fn at_the_disk_cap_drop_oldest_keeps_the_backlog_under_max_bytes_and_counts_the_drops() {
    let config = ConfigBuilder::new("cap-drop", "detr-tiny-fixture.onnx")
        .camera("bikes", &format!("file://{}", clip("bikes.mp4").display()), 10.0)
        .raw(OUTBOX_ONLY)
        .raw("[outbox]\nmax_bytes = \"1 MiB\"\npolicy = \"drop_oldest\"")
        .write();
    let mut daemon = Daemon::start(&config, &["--exit-when-done"], &[]);
    assert!(daemon.wait(Duration::from_secs(180)).success(), "{}", daemon.logs());
    assert!(daemon.count("outbox_dropped", &[]) > 0, "{}", daemon.logs());
    let report = outbox_report(&config);
    let bytes = report["pending_bytes"].as_u64().expect("pending_bytes");
    assert!(bytes <= 1 << 20 && bytes > (1 << 20) - 10_000, "{report}");
    let stats = daemon.last_stats();
    assert!(stats["outbox"]["dropped"].as_u64() > Some(0), "{stats}");
}

#[test]
fn at_the_disk_cap_pause_ingest_drops_nothing_and_still_stops_on_sigterm() {
    let config = ConfigBuilder::new("cap-pause", "detr-tiny-fixture.onnx")
        .camera("bikes", &format!("file://{}", clip("bikes.mp4").display()), 10.0)
        .raw(OUTBOX_ONLY)
        .raw("[outbox]\nmax_bytes = \"1 MiB\"\npolicy = \"pause_ingest\"")
        .write();
    let mut daemon = Daemon::start(&config, &[], &[]);
    daemon.wait_for("outbox_paused", &[], 1, Duration::from_secs(120));
    daemon.signal(Signal::SIGTERM);
    assert!(daemon.wait(Duration::from_secs(30)).success(), "{}", daemon.logs());
    assert_eq!(daemon.count("outbox_dropped", &[]), 0, "{}", daemon.logs());
    let report = outbox_report(&config);
    assert!(report["pending_bytes"].as_u64() <= Some(1 << 20), "{report}");
}

#[test]
fn outbox_commands_export_and_purge_only_with_yes() {
    let config = ConfigBuilder::new("admin", "detr-tiny-fixture.onnx")
        .camera("bikes", &format!("file://{}", clip("bikes.mp4").display()), 1.0)
        .raw(OUTBOX_ONLY)
        .write();
    let mut daemon = Daemon::start(&config, &["--exit-when-done"], &[]);
    assert!(daemon.wait(Duration::from_secs(120)).success(), "{}", daemon.logs());
    let path = config.display().to_string();
    let export = glimpse(&["outbox", "export", "--config", &path], &[]);
    assert!(export.status.success());
    let lines: Vec<serde_json::Value> =
        String::from_utf8_lossy(&export.stdout).lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect();
    assert_eq!(lines.len(), 50);
    assert!(lines.iter().all(|l| l["values"].as_array().is_some_and(|v| v.len() == 512) && l["metadata"]["camera"] == "bikes"));
    let refused = glimpse(&["outbox", "purge", "--config", &path], &[]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("would delete 50 pending record(s)"));
    let purged = glimpse(&["outbox", "purge", "--config", &path, "--yes"], &[]);
    assert!(String::from_utf8_lossy(&purged.stdout).contains("deleted 50 pending record(s)"));
    let report = outbox_report(&config);
    assert_eq!(report["pending"], 0);
}
