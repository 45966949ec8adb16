//! A full disk is a state, not a crash, on a real file system the test mounts (a size-limited
//! tmpfs as `data_dir`); and a power cut's damage to the index is cut off, not fatal.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::Value;

use crate::harness::daemon::{clip, exported_ids, pending_records, Daemon};
use crate::harness::mosquitto::Mosquitto;
use crate::harness::mqtt::Observer;
use crate::harness::pinecone::Emulator;
use crate::harness::{ConfigBuilder, TestConfig};

const API_KEY: &str = "pk-disk";

/// A tmpfs of `size` mounted at a directory for the test's life.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Self {
        std::fs::create_dir_all(at).expect("mount point");
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .expect("run mount");
        assert!(out.status.success(), "mounting a tmpfs needs root (CI runs as root): {}", String::from_utf8_lossy(&out.stderr));
        Self(at.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn free_bytes(dir: &Path) -> u64 {
    let stat = nix::sys::statvfs::statvfs(dir).expect("statvfs");
    stat.blocks_available() as u64 * stat.fragment_size() as u64
}

/// Fills `dir`'s file system until about `leave` bytes are free; the filler file's path.
fn fill(dir: &Path, leave: u64) -> PathBuf {
    use std::io::Write as _;
    let filler = dir.join("filler");
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&filler).expect("filler");
    let chunk = vec![0u8; 256 << 10];
    while free_bytes(dir) > leave + chunk.len() as u64 {
        file.write_all(&chunk).expect("fill");
    }
    file.sync_all().expect("sync filler");
    filler
}

/// The first stats message after the first `after` ones that satisfies `what`.
fn stats_where(observer: &Observer, after: usize, what: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let found = observer.messages().into_iter().skip(after).find_map(|m| serde_json::from_str::<Value>(&m.payload).ok().filter(&what));
        if let Some(stats) = found {
            return stats;
        }
        assert!(Instant::now() < deadline, "no such stats message within 60 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn accepted(stats: &Value) -> u64 {
    stats["outbox"]["accepted"].as_u64().unwrap_or_default()
}

/// Every record the device holds: in the index on the device, still pending, or in Pinecone.
fn everything_accepted(config: &TestConfig, emulator: &Emulator, namespace: &str) -> BTreeSet<String> {
    let mut ids: BTreeSet<String> = exported_ids(config).into_iter().collect();
    ids.extend(pending_records(config).iter().filter_map(|r| r["id"].as_str().map(str::to_owned)));
    ids.extend(emulator.ids(namespace));
    ids
}

/// One clean run with a short file camera, until every record is delivered; the run (its log)
/// and its config (whose directory holds the log).
fn drain(config: &TestConfig, emulator: &Emulator, namespace: &str, extra: &str) -> (Daemon, TestConfig) {
    let drain = ConfigBuilder::sharing_data_dir(config, "disk-full", "detr-tiny-fixture.onnx")
        .camera("drain", &format!("file://{}", clip("bikes.mp4").display()), 0.5)
        .pinecone(&emulator.url, namespace)
        .raw(extra)
        .write();
    let mut daemon = Daemon::start(&drain, &["--exit-when-done"], &[("PINECONE_API_KEY", API_KEY)]);
    assert!(daemon.wait(Duration::from_secs(180)).success(), "drain run failed; log:\n{}", daemon.logs());
    (daemon, drain)
}

#[test]
fn a_full_disk_pauses_ingest_says_so_and_everything_accepted_arrives_once_there_is_room() {
    let emulator = Emulator::start(API_KEY, 512);
    let broker = Mosquitto::start();
    let observer = Observer::subscribe(broker.port, "glimpse/disk-full/stats");
    let builder = ConfigBuilder::new("disk-full", "detr-tiny-fixture.onnx");
    let data = builder.dir.path().join("data");
    let _disk = Tmpfs::mount(&data, "64m");
    let small_disk = "[outbox]\nmin_free_disk = \"8 MiB\"\npolicy = \"pause_ingest\"";
    let config = builder.camera("live", "test:", 5.0).pinecone(&emulator.url, "disk").mqtt(broker.port, 1.0).raw(small_disk).write();
    let mut daemon = Daemon::start(&config, &[], &[("PINECONE_API_KEY", API_KEY)]);
    stats_where(&observer, 0, |s| accepted(s) > 20);

    let filler = fill(&data, 2 << 20);
    let full = stats_where(&observer, 0, |s| s["outbox"]["disk_full"] == true);
    daemon.wait_for("disk_full", &[], 1, Duration::from_secs(10));
    assert!(daemon.is_running(), "a full disk is no crash:\n{}", daemon.logs());

    std::fs::remove_file(&filler).expect("free the space");
    let back = stats_where(&observer, 0, |s| s["outbox"]["disk_full"] == false && accepted(s) > accepted(&full) + 10);
    assert!(back["index"]["records"].as_u64() > full["index"]["records"].as_u64(), "the index takes records again: {back}");

    // Stopping while the disk is full still stops, in time.
    let before = observer.messages().len();
    let filler = fill(&data, 2 << 20);
    stats_where(&observer, before, |s| s["outbox"]["disk_full"] == true);
    let stopping = Instant::now();
    daemon.signal(Signal::SIGTERM);
    assert!(daemon.wait(Duration::from_secs(30)).success(), "{}", daemon.logs());
    assert!(stopping.elapsed() < Duration::from_secs(30));
    std::fs::remove_file(&filler).expect("free the space");

    let accepted_ids = everything_accepted(&config, &emulator, "disk");
    assert!(accepted_ids.len() > 30, "too few records to prove anything: {}", accepted_ids.len());
    drain(&config, &emulator, "disk", "[outbox]\nmin_free_disk = \"8 MiB\"");
    let (in_pinecone, on_device): (BTreeSet<String>, BTreeSet<String>) =
        (emulator.ids("disk"), exported_ids(&config).into_iter().collect());
    let missing: Vec<&String> = accepted_ids.iter().filter(|id| !in_pinecone.contains(*id) || !on_device.contains(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} accepted records missing from Pinecone or the index, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
}

#[test]
fn after_a_power_cut_that_tore_the_index_every_accepted_record_is_searchable_once() {
    // Pinecone out of reach: every accepted record is still pending when the power goes.
    let config = ConfigBuilder::new("disk-full", "detr-tiny-fixture.onnx")
        .camera("live", "test:", 5.0)
        .pinecone("http://127.0.0.1:9", "cut")
        .raw("[outbox]\nflush_ms = 20")
        .write();
    let mut daemon = Daemon::start(&config, &[], &[("PINECONE_API_KEY", API_KEY)]);
    daemon.wait_for("camera_status", &[("camera", "live"), ("state", "online")], 1, Duration::from_secs(60));
    crate::harness::daemon::wait_until("some records indexed", Duration::from_secs(60), || {
        std::fs::metadata(config.dir.path().join("data/index/000000.vec")).is_ok_and(|m| m.len() > 40 * 600)
    });
    daemon.signal(Signal::SIGKILL);
    daemon.wait(Duration::from_secs(10));
    let accepted_ids: BTreeSet<String> = pending_records(&config).iter().filter_map(|r| r["id"].as_str().map(str::to_owned)).collect();

    // What a power cut leaves of data that was not synced: the last rows and metadata zeroed
    // in place, and the old mark file emptied.
    let index = config.dir.path().join("data/index");
    for (file, zeroed) in [("000000.vec", 3 * 600), ("000000.meta", 700)] {
        let path = index.join(file);
        let mut bytes = std::fs::read(&path).expect("read segment");
        let from = bytes.len().saturating_sub(zeroed);
        bytes[from..].fill(0);
        std::fs::write(&path, bytes).expect("damage");
    }
    std::fs::write(index.join("indexed-seq"), b"").expect("empty the mark");

    let emulator = Emulator::start(API_KEY, 512);
    let (after, _drain) = drain(&config, &emulator, "cut", "");
    assert_eq!(after.count("index_tail_cut", &[]), 1, "the torn tail is reported:\n{}", after.logs());
    assert_eq!(after.count("index_moved_aside", &[]), 0, "and never makes the index unusable:\n{}", after.logs());
    let ids = exported_ids(&config);
    let unique: BTreeSet<String> = ids.iter().cloned().collect();
    assert_eq!(ids.len(), unique.len(), "no record twice in the index on the device");
    let missing: Vec<&String> = accepted_ids.difference(&unique).collect();
    assert!(
        missing.is_empty(),
        "{} accepted records not in the index after the cut, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert!(accepted_ids.len() > 20, "too few records to prove anything: {}", accepted_ids.len());
}
