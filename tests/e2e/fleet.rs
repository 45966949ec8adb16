//! Fleet scope: boxes that share a Pinecone namespace and a bucket find each other's records,
//! and each serves the others' crops and snapshots through itself.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::harness::daemon::{clip, wait_until, Daemon};
use crate::harness::pinecone::Emulator;
use crate::harness::s3::{S3Server, ACCESS_KEY, SECRET_KEY};
use crate::harness::{free_port, ConfigBuilder};
use crate::http::{bytes, crop_of, get, http_section, TOKEN};

const API_KEY: &str = "pc-fleet-key";

/// One box of the fleet: bikes.mp4 (10 frames, 5 objects each) indexed into Pinecone's
/// namespace `fleet` and bucket `crops/fleet`, with its pages and API on; its port, once its
/// 50 records are searchable on the box.
fn fleet_box(device: &str, pinecone: &Emulator, bucket: &S3Server) -> (Daemon, crate::harness::TestConfig, u16) {
    let bikes = format!("file://{}", clip("bikes.mp4").display());
    let builder = ConfigBuilder::new(device, "detr-tiny-fixture.onnx").camera("street", &bikes, 1.0).pinecone(&pinecone.url, "fleet");
    let dir = builder.dir.path().to_owned();
    let (token, key, secret) = (dir.join("token"), dir.join("s3-key"), dir.join("s3-secret"));
    for (file, text) in [(&token, TOKEN), (&key, ACCESS_KEY), (&secret, SECRET_KEY)] {
        std::fs::write(file, text).expect("write a secret");
    }
    let port = free_port();
    let crops = format!(
        "[crops]\nstore = \"s3://crops/fleet\"\nendpoint = \"{}\"\nallow_http = true\naccess_key_id_file = \"{}\"\nsecret_access_key_file = \"{}\"\n",
        bucket.endpoint(),
        key.display(),
        secret.display()
    );
    let config = builder.raw(&http_section(port, &token)).raw(&crops).write();
    let daemon = Daemon::start(&config, &[], &[("PINECONE_API_KEY", API_KEY)]);
    wait_until("the box's 50 records to be searchable", Duration::from_secs(120), || {
        get(port, "/api/search?text=a+person&top_k=100", Some(TOKEN))
            .is_some_and(|a| a.status == 200 && a.body["matches"].as_array().is_some_and(|m| m.len() == 50))
    });
    (daemon, config, port)
}

fn matches(port: u16, query: &str) -> Vec<Value> {
    let answer = get(port, &format!("/api/search?{query}"), Some(TOKEN)).expect("an answer");
    assert_eq!(answer.status, 200, "{query}: {}", answer.body);
    answer.body["matches"].as_array().cloned().unwrap_or_default()
}

fn devices(found: &[Value]) -> BTreeSet<String> {
    found.iter().filter_map(|m| m["device"].as_str().map(str::to_owned)).collect()
}

fn objects_of(root: &Path, device: &str) -> usize {
    S3Server::objects(root, "crops").iter().filter(|k| k.starts_with(&format!("fleet/{device}/"))).count()
}

#[test]
fn a_fleet_search_on_one_box_finds_another_s_records_and_serves_their_crops_through_itself() {
    let emulator = Emulator::start(API_KEY, 512);
    let root = tempfile::tempdir().expect("bucket root");
    let bucket = S3Server::start(root.path(), "crops", 0);
    let (north, _north_config, north_port) = fleet_box("north", &emulator, &bucket);
    let (_south, _south_config, south_port) = fleet_box("south", &emulator, &bucket);
    wait_until("both boxes' records to reach Pinecone", Duration::from_secs(120), || emulator.count("fleet") == 100);
    // 50 crops and 10 snapshots of the south box.
    wait_until("the south box's pictures to reach the bucket", Duration::from_secs(120), || objects_of(root.path(), "south") == 60);

    let own = matches(north_port, "text=a+person&top_k=100");
    assert_eq!(devices(&own), BTreeSet::from(["north".to_owned()]), "scope=device keeps to the box's own records");
    let fleet = matches(north_port, "text=a+person&top_k=100&scope=fleet");
    assert_eq!(fleet.len(), 100, "every record of both boxes");
    assert_eq!(devices(&fleet), BTreeSet::from(["north".to_owned(), "south".to_owned()]));
    let south = fleet.iter().find(|m| m["device"] == "south").expect("a record of the south box");
    let id = south["id"].as_str().expect("an id");
    assert_eq!(south["crop_url"], format!("/api/records/{id}/crop.jpg"), "the crop is served by this box: {south}");
    let filtered = matches(north_port, "text=a+person&top_k=100&scope=fleet&camera=street&label=nothing-like-this");
    assert!(filtered.is_empty(), "the filters hold across the fleet too");

    // "More like this" of a record the north box does not have: Pinecone looks it up by id.
    // Both boxes indexed the same clip, so the record ties with its twins: it scores as the best.
    let like = matches(north_port, &format!("like={id}&scope=fleet&top_k=100"));
    let itself = like.iter().find(|m| m["id"] == id).and_then(|m| m["score"].as_f64());
    assert!(itself.is_some_and(|s| s > 0.9999 && s >= like[0]["score"].as_f64().unwrap_or(1.0) - 1e-6), "{itself:?}: {like:?}");
    let record = get(north_port, &format!("/api/records/{id}"), Some(TOKEN)).expect("the record");
    assert_eq!((record.status, &record.body["device"]), (200, &Value::from("south")), "{}", record.body);
    let through_north = crop_of(north_port, id);
    assert_eq!(through_north, crop_of(south_port, id), "the crop the south box keeps, from the bucket");
    let (status, kind, boxed) = bytes(north_port, &format!("/api/records/{id}/snapshot.jpg?box=1"));
    assert_eq!((status, kind.as_str()), (200, "image/jpeg"));
    assert!(image::load_from_memory(&boxed).is_ok(), "the snapshot with its box is a JPEG");

    // The pages show the other box's records with their crops, served through this box.
    let (status, _, page) = bytes(north_port, "/?text=a+person&top_k=100&scope=fleet");
    let page = String::from_utf8_lossy(&page).into_owned();
    assert_eq!(status, 200);
    assert!(page.contains(&format!("src=\"/api/records/{id}/crop.jpg\"")), "the south box's crop in the grid: {page}");
    let (status, _, page) = bytes(north_port, &format!("/records/{id}"));
    let page = String::from_utf8_lossy(&page).into_owned();
    assert!(status == 200 && page.contains("Found in the fleet's index") && page.contains("scope=fleet"), "{page}");

    // Pictures once fetched are kept a while: a bucket outage does not break a page just shown.
    drop(bucket);
    assert_eq!(crop_of(north_port, id), through_north, "from the cache");
    let (status, _, _) = bytes(north_port, "/api/records/south:street:999:0/crop.jpg");
    assert_eq!(status, 404, "a record no box has");
    assert!(!north.logs().contains(SECRET_KEY) && !north.logs().contains(API_KEY), "no secret reaches the log");
}
