//! Finding what the cameras saw: every record's crop is kept, named in its metadata.

use std::time::Duration;

use crate::harness::daemon::{clip, exported_records, glimpse, pending_records, Daemon};
use crate::harness::ConfigBuilder;

#[test]
fn every_record_keeps_its_crop_as_a_jpeg_named_in_its_metadata() {
    let bikes = format!("file://{}", clip("bikes.mp4").display());
    let config = ConfigBuilder::new("kept", "detr-tiny-fixture.onnx").camera("street", &bikes, 1.0).raw("[crops]\nmax_px = 64").write();
    let mut daemon = Daemon::start(&config, &["--exit-when-done"], &[]);
    assert!(daemon.wait(Duration::from_secs(120)).success(), "{}", daemon.logs());
    let records = exported_records(&config);
    assert_eq!(records.len(), 50, "10 frames, 5 objects each");
    let crops = config.dir.path().join("data/crops");
    for record in &records {
        let key = record["metadata"]["crop"].as_str().expect("every record names its crop");
        assert!(key.starts_with("kept/street/") && key.ends_with(".jpg"), "{key}");
        let image = image::open(crops.join(key)).unwrap_or_else(|e| panic!("crop {key}: {e}"));
        assert!(image.width().max(image.height()) <= 64, "{key} is {}x{}", image.width(), image.height());
        let snapshot = record["metadata"]["snapshot"].as_str().expect("every record names its frame's snapshot");
        assert!(snapshot.starts_with("kept/street/") && snapshot.ends_with("_frame.jpg"), "{snapshot}");
        let frame = image::open(crops.join(snapshot)).unwrap_or_else(|e| panic!("snapshot {snapshot}: {e}"));
        assert_eq!(frame.width(), 640, "the whole frame (bikes.mp4 is 640 wide, under snapshots.max_px)");
    }
    let frames: std::collections::BTreeSet<_> = records.iter().map(|r| r["metadata"]["snapshot"].as_str().expect("a key")).collect();
    assert_eq!(frames.len(), 10, "one snapshot per frame, shared by its records");
    let stats = daemon.last_stats();
    assert_eq!((&stats["crops"]["stored"], &stats["crops"]["snapshots"]), (&50.into(), &10.into()), "{stats}");
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
    let records = exported_records(&config);
    assert_eq!(records.len(), 25, "every record is accepted");
    assert!(records.iter().all(|r| r["metadata"].get("crop").is_none()), "no record names a crop that was not stored");
    assert!(records.iter().all(|r| r["metadata"].get("snapshot").is_none()), "nor a snapshot");
    let stats = daemon.last_stats();
    assert_eq!(stats["crops"]["failures"], 30, "25 crops and 5 frames' snapshots");
    assert!(stats["crops"]["last_error"].as_str().is_some_and(|e| e.contains("cannot write crop /dev/null/crops")), "{stats}");
    assert_eq!(daemon.count("crop_store_unusable", &[]), 1);
    let check = glimpse(&["check", "--config", &config.display().to_string()], &[]);
    assert!(String::from_utf8_lossy(&check.stdout).contains("crops.store: cannot write crop /dev/null/crops"));
}

/// A file indexed with crops, ready to search: its config.
fn indexed_street() -> crate::harness::TestConfig {
    let bikes = format!("file://{}", clip("bikes.mp4").display());
    let config = ConfigBuilder::new("find", "detr-tiny-fixture.onnx").camera("street", &bikes, 1.0).write();
    let mut daemon = Daemon::start(&config, &["--exit-when-done"], &[]);
    assert!(daemon.wait(Duration::from_secs(120)).success(), "{}", daemon.logs());
    config
}

/// Whether `id` is among the hits that score 1 (the tiny fixture DETR gives several identical
/// boxes a frame, so a record can tie with its neighbours).
fn same_as(hits: &[serde_json::Value], id: &str) -> bool {
    let best = |h: &serde_json::Value| (h["score"].as_f64().unwrap_or(0.0) - 1.0).abs() < 1e-4;
    best(&hits[0]) && hits.iter().take_while(|h| best(h)).any(|h| h["id"] == id)
}

fn search(config: &std::path::Path, args: &[&str]) -> std::process::Output {
    let mut all = vec!["search", "--config", config.to_str().expect("utf-8 path")];
    all.extend_from_slice(args);
    glimpse(&all, &[])
}

#[test]
fn search_by_example_and_by_picture_finds_indexed_records_with_their_crops() {
    let config = indexed_street();
    let first = exported_records(&config)[0]["id"].as_str().expect("an id").to_owned();
    let out = search(&config, &["--like", &first, "--json", "--top-k", "5"]);
    // (with five identical boxes a frame, the first five may all score 1)
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let hits: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).expect("JSON")).collect();
    assert_eq!(hits.len(), 5);
    assert!(same_as(&hits, &first), "a record is most like itself: {hits:?}");
    for key in ["id", "score", "device", "camera", "ts", "label", "x", "y", "w", "h", "track_id", "crop"] {
        assert!(hits[0].get(key).is_some(), "{key} missing in {}", hits[0]);
    }
    let crop = config.dir.path().join("data/crops").join(hits[0]["crop"].as_str().expect("crop"));
    let by_picture = search(&config, &["--image", crop.to_str().expect("path"), "--json", "--camera", "street", "--since", "3650d"]);
    assert!(by_picture.status.success(), "{}", String::from_utf8_lossy(&by_picture.stderr));
    assert_eq!(String::from_utf8_lossy(&by_picture.stdout).lines().count(), 10);
    let nowhere = search(&config, &["--image", crop.to_str().expect("path"), "--json", "--camera", "garden"]);
    assert!(nowhere.status.success() && nowhere.stdout.is_empty(), "a camera filter that matches nothing finds nothing");
}

#[test]
fn bad_searches_say_why_in_one_line_and_exit_2() {
    let config = indexed_street();
    for (args, expected) in [
        (vec!["--like", "find:street:0:99"], "no record \"find:street:0:99\" in the local index"),
        (vec!["--image", "/nonexistent.jpg"], "cannot read the image /nonexistent.jpg"),
        (vec!["--like", "x", "--since", "soon"], "--since \"soon\" is not a time"),
        // A timestamp where an age goes: not 54,000 years ago.
        (vec!["--like", "x", "--since", "1700000000000"], "an age such as 2h"),
    ] {
        let out = search(&config, &args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expected) && stderr.lines().count() == 1, "{args:?}: {stderr}");
    }
    let too_many = search(&config, &["--like", "x", "--top-k", "1001"]);
    assert_eq!(too_many.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&too_many.stderr).contains("from 1 to 1000"), "{}", String::from_utf8_lossy(&too_many.stderr));
}

#[test]
fn the_html_page_shows_every_thumbnail_in_a_real_browser() {
    let config = indexed_street();
    let first = exported_records(&config)[0]["id"].as_str().expect("an id").to_owned();
    let page = config.dir.path().join("results.html");
    let out = search(&config, &["--like", &first, "--top-k", "8", "--html", page.to_str().expect("path")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // The page itself stays as written; a copy adds the check, run by headless Chromium.
    let probe = config.dir.path().join("probe.html");
    let check = "<script>addEventListener('load',()=>{const ok=[...document.images].filter(i=>i.complete&&i.naturalWidth>0).length;\
                 document.body.setAttribute('data-rendered',ok+'/'+document.images.length)})</script>";
    std::fs::write(&probe, std::fs::read_to_string(&page).expect("page").replace("</body>", &format!("{check}</body>"))).expect("probe");
    let profile = tempfile::tempdir().expect("profile");
    let dom = std::process::Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--no-first-run",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", probe.display()))
        .output()
        .expect("chromium must be installed (scripts/deps.sh installs it)");
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(dom.contains("data-rendered=\"8/8\""), "not every thumbnail rendered:\n{}", &dom[..dom.len().min(2000)]);
}

#[test]
fn with_pinecone_configured_search_queries_the_index_with_filters_and_local_stays_available() {
    use crate::harness::pinecone::Emulator;
    let emulator = Emulator::start("pk-search", 512);
    let bikes = format!("file://{}", clip("bikes.mp4").display());
    let config =
        ConfigBuilder::new("fleet", "detr-tiny-fixture.onnx").camera("street", &bikes, 1.0).pinecone(&emulator.url, "fleet").write();
    let env = [("PINECONE_API_KEY", "pk-search")];
    let mut daemon = Daemon::start(&config, &["--exit-when-done"], &env);
    assert!(daemon.wait(Duration::from_secs(120)).success(), "{}", daemon.logs());
    assert_eq!(emulator.count("fleet"), 50);
    let first = emulator.ids("fleet").into_iter().next().expect("an id");
    let run = |args: &[&str]| {
        let mut all = vec!["search", "--config", config.to_str().expect("utf-8 path")];
        all.extend_from_slice(args);
        glimpse(&all, &env)
    };
    let lines = |out: &std::process::Output| -> Vec<serde_json::Value> {
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).expect("JSON")).collect()
    };
    let remote = lines(&run(&["--like", &first, "--json", "--top-k", "3", "--camera", "street", "--since", "3650d", "--label", "person"]));
    assert_eq!(remote.len(), 3);
    assert!(same_as(&remote, &first), "{remote:?}");
    assert_eq!(remote[0]["camera"], "street");
    assert!(remote[0]["crop"].as_str().is_some_and(|c| c.ends_with(".jpg")), "{}", remote[0]);
    assert!(lines(&run(&["--like", &first, "--json", "--camera", "garden"])).is_empty(), "the filter reached Pinecone");
    assert!(emulator.rejected().is_empty(), "every query followed the spec: {:?}", emulator.rejected());
    let unknown = run(&["--like", "fleet:nowhere:0:0", "--json"]);
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert_eq!(unknown.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("in the local index or in Pinecone's namespace") && stderr.lines().count() == 1, "{stderr}");
    let local = lines(&run(&["--like", &first, "--json", "--top-k", "10", "--local"]));
    assert!(same_as(&local, &first), "the device's own index finds the record too: {local:?}");
    drop(emulator);
    let unreachable = run(&["--like", &first, "--json"]);
    let stderr = String::from_utf8_lossy(&unreachable.stderr);
    assert_eq!(unreachable.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("pinecone: cannot reach the Pinecone index") && stderr.lines().count() == 1, "{stderr}");
}

#[test]
fn search_by_words_uses_the_text_tower_and_embed_prints_text_embeddings() {
    let config = indexed_street();
    let out = search(&config, &["--text", "a person on a bicycle", "--json", "--top-k", "4"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let hits: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).expect("JSON")).collect();
    assert_eq!(hits.len(), 4, "random weights rank nothing in particular, but the machinery answers");
    let embed = glimpse(&["embed", "--config", config.to_str().expect("path"), "--text", "a red van", "--text", "東京の夜"], &[]);
    assert!(embed.status.success(), "{}", String::from_utf8_lossy(&embed.stderr));
    let lines: Vec<serde_json::Value> =
        String::from_utf8_lossy(&embed.stdout).lines().map(|l| serde_json::from_str(l).expect("JSON")).collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1]["text"], "東京の夜");
    let v: Vec<f64> = lines[0]["embedding"].as_array().expect("embedding").iter().map(|x| x.as_f64().expect("number")).collect();
    assert_eq!(v.len(), 512);
    assert!((v.iter().map(|x| x * x).sum::<f64>() - 1.0).abs() < 1e-4, "L2-normalised");
    // Without a text tower: one clear line, exit 2.
    let text = std::fs::read_to_string(&*config).expect("config");
    let without: String =
        text.lines().filter(|l| !l.starts_with("text_model") && !l.starts_with("tokenizer")).map(|l| format!("{l}\n")).collect();
    std::fs::write(&*config, without).expect("rewrite");
    let out = search(&config, &["--text", "a red van"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("text search needs CLIP's text tower") && stderr.lines().count() == 1, "{stderr}");
}

/// A config whose crops go to bucket `crops` on `server` (credentials in files).
fn s3_config(server_endpoint: &str, fps: f64) -> crate::harness::TestConfig {
    use crate::harness::s3::{ACCESS_KEY, SECRET_KEY};
    let bikes = format!("file://{}", clip("bikes.mp4").display());
    let builder = ConfigBuilder::new("bucket", "detr-tiny-fixture.onnx").camera("street", &bikes, fps);
    let (key, secret) = (builder.dir.path().join("s3-key"), builder.dir.path().join("s3-secret"));
    std::fs::write(&key, ACCESS_KEY).expect("key");
    std::fs::write(&secret, SECRET_KEY).expect("secret");
    builder
        .raw(&format!(
            "[crops]\nstore = \"s3://crops/site-a\"\nendpoint = \"{server_endpoint}\"\nallow_http = true\naccess_key_id_file = \"{}\"\nsecret_access_key_file = \"{}\"",
            key.display(),
            secret.display()
        ))
        .write()
}

#[test]
fn crops_reach_an_s3_bucket_after_an_outage_and_exit_when_done_waits_for_them() {
    use crate::harness::s3::S3Server;
    let root = tempfile::tempdir().expect("bucket root");
    // A port that is free now: the server comes up on it only later (the outage).
    let port = {
        let probe = S3Server::start(root.path(), "crops", 0);
        probe.port
    };
    let config = s3_config(&format!("http://127.0.0.1:{port}"), 0.5);
    let mut daemon = Daemon::start(&config, &["--exit-when-done"], &[]);
    daemon.wait_for("crop_upload_retry", &[], 1, Duration::from_secs(60));
    assert!(daemon.is_running(), "the daemon waits for its crops' uploads");
    let _server = S3Server::start(root.path(), "crops", port);
    assert!(daemon.wait(Duration::from_secs(120)).success(), "{}", daemon.logs());
    let records = exported_records(&config);
    assert_eq!(records.len(), 25);
    let objects = S3Server::objects(root.path(), "crops");
    for record in &records {
        let key = format!("site-a/{}", record["metadata"]["crop"].as_str().expect("crop"));
        assert!(objects.contains(&key), "{key} not in the bucket: {objects:?}");
        let snapshot = format!("site-a/{}", record["metadata"]["snapshot"].as_str().expect("snapshot"));
        assert!(objects.contains(&snapshot), "{snapshot} not in the bucket: {objects:?}");
    }
    let stats = daemon.last_stats();
    let (uploaded, pending) = (stats["crops"]["uploaded"].as_u64(), stats["crops"]["pending"].as_u64());
    assert_eq!((uploaded, pending), (Some(30), Some(0)), "25 crops and 5 snapshots: {stats}");
    assert!(stats["crops"]["upload_failures"].as_u64() > Some(0), "{stats}");
    assert_eq!(stats["crops"]["last_error"], serde_json::Value::Null, "the outage is over: {stats}");
}

#[test]
fn wrong_s3_credentials_or_an_absent_server_are_named_by_check_without_the_secret() {
    use crate::harness::s3::{S3Server, SECRET_KEY};
    let root = tempfile::tempdir().expect("bucket root");
    let server = S3Server::start(root.path(), "crops", 0);
    let config = s3_config(&server.endpoint(), 0.5);
    let check = |config: &std::path::Path| {
        let out = glimpse(&["check", "--config", config.to_str().expect("path")], &[]);
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let (code, out) = check(&config);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("ok: crop store s3://crops/site-a writable"), "{out}");
    std::fs::write(config.dir.path().join("s3-secret"), "not-the-secret").expect("wrong secret");
    let (code, out) = check(&config);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("crops.store: crop store s3://crops/site-a"), "{out}");
    assert!(!out.contains("not-the-secret") && !out.contains(SECRET_KEY), "{out}");
    // A server that is not there (s3s-fs makes missing buckets, so that case is not testable here).
    std::fs::write(config.dir.path().join("s3-secret"), SECRET_KEY).expect("right secret");
    drop(server);
    let (code, out) = check(&config);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("crops.store: crop store s3://crops/site-a"), "{out}");
}

#[test]
fn a_bucket_killed_mid_run_and_restarted_gets_every_crop_and_nothing_accepted_is_lost() {
    use crate::harness::s3::{S3Server, ACCESS_KEY, SECRET_KEY};
    let root = tempfile::tempdir().expect("bucket root");
    let server = S3Server::start(root.path(), "crops", 0);
    let port = server.port;
    let builder = ConfigBuilder::new("killed", "detr-tiny-fixture.onnx").camera("live", "test:", 1.0);
    let (key, secret) = (builder.dir.path().join("s3-key"), builder.dir.path().join("s3-secret"));
    std::fs::write(&key, ACCESS_KEY).expect("key");
    std::fs::write(&secret, SECRET_KEY).expect("secret");
    let config = builder
        .raw(&format!(
            "[crops]\nstore = \"s3://crops/live\"\nendpoint = \"{}\"\nallow_http = true\naccess_key_id_file = \"{}\"\nsecret_access_key_file = \"{}\"",
            server.endpoint(),
            key.display(),
            secret.display()
        ))
        .write();
    let mut daemon = Daemon::start(&config, &[], &[]);
    daemon.wait_for("crops_uploaded", &[], 1, Duration::from_secs(60));
    drop(server); // the bucket's server dies mid-run
    daemon.wait_for("crop_upload_retry", &[], 1, Duration::from_secs(60));
    let before = daemon.count("crops_uploaded", &[]);
    let _server = S3Server::start(root.path(), "crops", port);
    daemon.wait_for("crops_uploaded", &[], before + 2, Duration::from_secs(60));
    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(daemon.wait(Duration::from_secs(30)).success(), "{}", daemon.logs());
    let objects = S3Server::objects(root.path(), "crops");
    let waiting = config.dir.path().join("data/crops-upload");
    let records = exported_records(&config);
    assert!(records.len() >= 10, "{} records", records.len());
    for record in &records {
        let key = record["metadata"]["crop"].as_str().expect("crop");
        let uploaded = objects.contains(&format!("live/{key}"));
        assert!(uploaded || waiting.join(key).exists(), "{key}: neither in the bucket nor waiting for upload");
    }
    assert!(objects.len() >= 10, "crops were uploaded before and after the restart: {}", objects.len());
}

#[test]
fn pending_records_the_index_missed_are_added_at_the_next_start() {
    // The first run keeps records out of the index, as a crash between the outbox's commit and
    // the index's would; the second start must add every pending one.
    let bikes = format!("file://{}", clip("bikes.mp4").display());
    let first =
        ConfigBuilder::new("catchup", "detr-tiny-fixture.onnx").camera("street", &bikes, 0.5).raw("[search]\nenabled = false").write();
    let mut daemon = Daemon::start(&first, &["--exit-when-done"], &[]);
    assert!(daemon.wait(Duration::from_secs(120)).success(), "{}", daemon.logs());
    let pending = pending_records(&first);
    assert_eq!(pending.len(), 25);
    let second = ConfigBuilder::sharing_data_dir(&first, "catchup", "detr-tiny-fixture.onnx").camera("street", &bikes, 0.5).write();
    let mut daemon = Daemon::start(&second, &["--exit-when-done"], &[]);
    assert!(daemon.wait(Duration::from_secs(120)).success(), "{}", daemon.logs());
    assert_eq!(daemon.count("reindexed", &[("records", "25")]), 1, "{}", daemon.logs());
    let id = pending[0]["id"].as_str().expect("id");
    let out = search(&second, &["--like", id, "--json", "--top-k", "30"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 25, "every record once (the rerun's ids are the same)");
}
