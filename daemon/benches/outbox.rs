//! Outbox and sync benchmarks (issue "Outbox and Pinecone sync"), each reported as a ratio to a
//! reference measured in the same run:
//!
//! - durable appends per second of 512-d records through `Outbox::append` (group commits of
//!   1000), against raw sled: the same encoded bytes in one batch and one flush per 1000;
//! - drain rate: the syncer draining a backlog to the Pinecone emulator on loopback, against a
//!   bare HTTP loop posting the same batches (no outbox reads or deletes);
//! - start-up: `Outbox::open` with N pending records, against `sled::open` of the same files.
//!
//! `cargo bench -p glimpse --bench outbox` (N defaults to 1,000,000; `GLIMPSE_BENCH_RECORDS=N`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use glimpse::outbox::{codec, Outbox, OutboxConfig};
use glimpse::record::{Metadata, Record};
use glimpse::stats::Stats;
use glimpse::sync::{run_syncer, PineconeClient, PineconeConfig, SyncOptions};

const DIM: usize = 512;
const GROUP: usize = 1000;

fn record(i: usize) -> Record {
    Record {
        id: format!("bench:cam:{i}:0"),
        values: (0..DIM).map(|d| ((i * 31 + d) as f32 * 0.001).sin() + 1.5).collect(),
        metadata: Metadata {
            device: "bench".into(),
            camera: "cam".into(),
            ts: 1_795_670_518_406 + i as i64,
            pts_ms: i as u64,
            label: "person".into(),
            score: 0.97,
            x: 10,
            y: 20,
            w: 30,
            h: 40,
            frame_w: 640,
            frame_h: 272,
            track_id: None,
            crop: None,
            snapshot: None,
            user_label: None,
        },
    }
}

fn unlimited() -> OutboxConfig {
    OutboxConfig {
        max_bytes: glimpse::validate::ByteSize(u64::MAX / 2),
        min_free_disk: glimpse::validate::ByteSize(0),
        ..OutboxConfig::default()
    }
}

fn main() {
    let n: usize = std::env::var("GLIMPSE_BENCH_RECORDS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let dir = tempfile::tempdir_in(std::env::var("GLIMPSE_BENCH_DIR").unwrap_or_else(|_| ".".into())).expect("tempdir");
    println!("outbox benchmarks: {n} records of {DIM}-d, group commits of {GROUP}");

    // Reference: raw sled, same bytes, one batch + flush per group.
    let raw_dir = dir.path().join("raw");
    let sled_rate = {
        let db = sled::open(&raw_dir).expect("sled");
        let tree = db.open_tree("t").expect("tree");
        let start = Instant::now();
        let mut seq = 0u64;
        for chunk in (0..n).collect::<Vec<_>>().chunks(GROUP) {
            let mut batch = sled::Batch::default();
            for &i in chunk {
                batch.insert(&seq.to_be_bytes(), codec::encode(&record(i)).expect("encode"));
                seq += 1;
            }
            tree.apply_batch(batch).expect("batch");
            db.flush().expect("flush");
        }
        n as f64 / start.elapsed().as_secs_f64()
    };

    let outbox_dir = dir.path().join("glimpse");
    let append_rate = {
        let outbox = Outbox::open(&outbox_dir, &unlimited()).expect("outbox");
        let start = Instant::now();
        for chunk in (0..n).collect::<Vec<_>>().chunks(GROUP) {
            let records: Vec<Record> = chunk.iter().map(|&i| record(i)).collect();
            outbox.append(&records, 0).expect("append");
        }
        n as f64 / start.elapsed().as_secs_f64()
    };
    println!("append: glimpse {append_rate:.0} records/s, raw sled {sled_rate:.0} records/s, ratio {:.2}", append_rate / sled_rate);

    let open_sled = {
        let start = Instant::now();
        let db = sled::open(&raw_dir).expect("sled");
        let _ = db.open_tree("t").expect("tree");
        start.elapsed()
    };
    let (open_glimpse, pending) = {
        let start = Instant::now();
        let outbox = Outbox::open(&outbox_dir, &unlimited()).expect("outbox");
        let pending = outbox.backlog().records;
        (start.elapsed(), pending)
    };
    println!(
        "start-up with {pending} pending: glimpse {:.3} s, sled::open {:.3} s, ratio {:.2}",
        open_glimpse.as_secs_f64(),
        open_sled.as_secs_f64(),
        open_glimpse.as_secs_f64() / open_sled.as_secs_f64().max(1e-6)
    );

    drain(&outbox_dir, n.min(200_000));
}

/// Drains `n` records through the syncer, and posts the same batches with a bare client.
fn drain(outbox_dir: &std::path::Path, n: usize) {
    let emulator = pinecone_emulator::Emulator::start("bench-key", DIM);
    std::env::set_var("PINECONE_API_KEY", "bench-key");
    let config: PineconeConfig =
        toml::from_str(&format!("host = \"{}\"\nnamespace = \"bench\"\nbatch_size = 1000", emulator.url)).expect("config");
    let key = config.api_key().expect("key");
    let client = PineconeClient::new(&config, &key).expect("client");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");

    // Reference: the same batches straight from memory.
    let records: Vec<Record> = (0..n).map(record).collect();
    let start = Instant::now();
    rt.block_on(async {
        for chunk in records.chunks(1000) {
            client.upsert(chunk).await.expect("upsert");
        }
    });
    let bare = n as f64 / start.elapsed().as_secs_f64();

    let outbox = Arc::new(Outbox::open(outbox_dir, &unlimited()).expect("outbox"));
    let before = outbox.backlog().records;
    let stats = Stats::new();
    let wake = Arc::new(tokio::sync::Notify::new());
    let (stop, shutdown) = glimpse::shutdown::channel();
    let start = Instant::now();
    let target = before.saturating_sub(n as u64);
    rt.block_on(async {
        let syncer =
            tokio::spawn(run_syncer(outbox.clone(), client, SyncOptions { batch_size: 1000, in_flight: 2 }, None, stats, wake, shutdown));
        while outbox.backlog().records > target {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.begin();
        let _ = syncer.await;
    });
    let drained = (before - outbox.backlog().records) as f64;
    let rate = drained / start.elapsed().as_secs_f64();
    println!("drain to the emulator: glimpse {rate:.0} vectors/s, bare HTTP loop {bare:.0} vectors/s, ratio {:.2}", rate / bare);
}
