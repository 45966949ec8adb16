//! The box's HTTP API (`[http]`): nothing without the access token; with it, the stats JSON that
//! MQTT publishes (and as Prometheus metrics) and each camera's state; errors as JSON; a bad
//! section stops start-up.

use std::time::Duration;

use serde_json::Value;

use crate::harness::daemon::{glimpse, wait_until, Daemon};
use crate::harness::pinecone::Emulator;
use crate::harness::{free_port, http_client, ConfigBuilder};

const API_KEY: &str = "pc-http-key";

pub(crate) const TOKEN: &str = "e2e-token-0123456789abcdef";

pub(crate) struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

/// One request to the daemon's API, made by `build` from a client and the URL; `None` while
/// nothing answers.
fn send(port: u16, path: &str, build: impl FnOnce(reqwest::Client, String) -> reqwest::RequestBuilder) -> Option<Answer> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let request = build(http_client(), format!("http://127.0.0.1:{port}{path}"));
        let response = request.timeout(Duration::from_secs(10)).send().await.ok()?;
        let (status, headers) = (response.status().as_u16(), response.headers().clone());
        Some(Answer { status, headers, body: response.json().await.unwrap_or(Value::Null) })
    })
}

/// `method path` with an empty body, with `token` as the bearer token when given.
fn call(port: u16, method: reqwest::Method, path: &str, token: Option<&str>) -> Option<Answer> {
    send(port, path, |client, url| {
        let request = client.request(method, url);
        match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    })
}

pub(crate) fn get(port: u16, path: &str, token: Option<&str>) -> Option<Answer> {
    call(port, reqwest::Method::GET, path, token)
}

pub(crate) fn http_section(port: u16, token_file: &std::path::Path) -> String {
    format!("[http]\nlisten = \"127.0.0.1:{port}\"\ntoken_file = \"{}\"\n", token_file.display())
}

#[test]
fn the_api_answers_only_with_the_token_and_serves_the_stats_and_the_cameras() {
    let (port, dir) = (free_port(), tempfile::tempdir().expect("tempdir"));
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("write token");
    let config =
        ConfigBuilder::new("web", "detr-tiny-fixture.onnx").camera("street", "test:", 1.0).raw(&http_section(port, &token_file)).write();
    let mut daemon = Daemon::start(&config, &[], &[]);
    daemon.wait_for_state("street", "online", 1, Duration::from_secs(60));
    wait_until("the API to answer", Duration::from_secs(30), || get(port, "/api/stats", Some(TOKEN)).is_some_and(|a| a.status == 200));

    let stats = get(port, "/api/stats", Some(TOKEN)).expect("stats");
    assert_eq!(stats.body["device"], "web", "{}", stats.body);
    assert_eq!(stats.body["inference"]["engine"], "tract", "the MQTT stats JSON: {}", stats.body);
    assert!(stats.body["cameras"]["street"].is_object(), "{}", stats.body);
    let header = |a: &Answer, name: &str| a.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    assert!(header(&stats, "content-security-policy").contains("frame-ancestors 'none'"), "{:?}", stats.headers);
    assert_eq!(header(&stats, "x-content-type-options"), "nosniff");
    assert_eq!(header(&stats, "referrer-policy"), "no-referrer");

    let cameras = get(port, "/api/cameras", Some(TOKEN)).expect("cameras");
    assert_eq!((cameras.status, &cameras.body["street"]["state"]), (200, &Value::from("online")), "{}", cameras.body);
    assert!(cameras.body["street"]["frames_decoded"].is_u64(), "each camera's stats beside its state: {}", cameras.body);

    let triggers = get(port, "/api/triggers", Some(TOKEN)).expect("triggers");
    assert_eq!((triggers.status, &triggers.body), (200, &serde_json::json!({})), "no triggers configured");

    let (status, kind, text) = bytes(port, "/metrics");
    let text = String::from_utf8(text).expect("text");
    assert_eq!((status, kind.as_str()), (200, "text/plain; version=0.0.4; charset=utf-8"));
    assert!(text.lines().any(|l| l.starts_with("glimpse_camera_frames_decoded_total{camera=\"street\"} ")), "{text}");
    assert!(text.contains("# TYPE glimpse_outbox_pending gauge") && text.contains("glimpse_camera_online{camera=\"street\"} 1"), "{text}");
    assert_eq!(get(port, "/metrics", None).map(|a| a.status), Some(401), "the metrics need the token too");

    let anonymous = get(port, "/api/stats", None).expect("answer");
    assert_eq!(anonymous.status, 401);
    assert!(anonymous.body["error"].as_str().is_some_and(|e| e.contains("Authorization: Bearer")), "{}", anonymous.body);
    assert_eq!(header(&anonymous, "www-authenticate"), "Bearer");
    let wrong = get(port, "/api/stats", Some("e2e-token-0123456789abcdeX")).expect("answer");
    assert_eq!((wrong.status, wrong.body["error"].as_str()), (401, Some("the access token is wrong")));
    let unknown = get(port, "/api/nothing-here", Some(TOKEN)).expect("answer");
    assert_eq!(unknown.status, 404);
    assert!(unknown.body["error"].is_string(), "errors are JSON: {}", unknown.body);
    for answer in [&anonymous, &wrong, &unknown] {
        assert_eq!(header(answer, "x-content-type-options"), "nosniff", "errors carry the headers too: {:?}", answer.headers);
        assert!(header(answer, "content-security-policy").contains("frame-ancestors 'none'"));
    }
    let posted = call(port, reqwest::Method::POST, "/api/stats", Some(TOKEN)).expect("answer");
    assert_eq!(posted.status, 405);
    assert!(posted.body["error"].as_str().is_some_and(|e| e.contains("method")), "{}", posted.body);
    assert!(get(port, "/api/nothing-here", None).is_some_and(|a| a.status == 401), "no route is told to a stranger");
    assert!(!daemon.logs().contains(TOKEN), "the token never reaches the log");
}

/// `glimpse check` names a bad token too (not the port: the running daemon may hold it).
#[test]
fn a_missing_or_short_token_or_a_taken_port_stops_start_up_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let short = dir.path().join("short");
    std::fs::write(&short, "hunter2").expect("write");
    let good = dir.path().join("good");
    std::fs::write(&good, TOKEN).expect("write");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken_port = taken.local_addr().expect("address").port();
    for (section, expected) in [
        (http_section(free_port(), &dir.path().join("missing")), "http.token_file"),
        (http_section(free_port(), &short), "too short"),
        (http_section(taken_port, &good), "http.listen: cannot listen on"),
    ] {
        let config = ConfigBuilder::new("web", "detr-tiny-fixture.onnx").camera("street", "test:", 1.0).raw(&section).write();
        if expected != "http.listen: cannot listen on" {
            let out = glimpse(&["check", "--config", &config.path.display().to_string()], &[]);
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.code() == Some(2) && text.contains("http.token_file:") && text.contains(expected), "{text}");
        }
        let mut daemon = Daemon::start(&config, &[], &[]);
        let status = daemon.wait(Duration::from_secs(60));
        assert_eq!(status.code(), Some(2), "{}", daemon.logs());
        assert!(daemon.logs().contains(expected), "missing {expected:?} in:\n{}", daemon.logs());
        assert!(!daemon.logs().contains("hunter2"), "a secret, even a bad one, never reaches the log");
    }
}

/// The HTTPS client a user of a box with its own CA would have.
fn https_client(ca: &std::path::Path) -> reqwest::Client {
    glimpse::tls::use_ring();
    let ca = reqwest::Certificate::from_pem(&std::fs::read(ca).expect("read the CA")).expect("a PEM CA");
    let builder = reqwest::Client::builder().add_root_certificate(ca).redirect(reqwest::redirect::Policy::none());
    builder.timeout(Duration::from_secs(10)).build().expect("an HTTPS client")
}

#[test]
fn with_a_certificate_the_box_speaks_only_https_and_its_session_cookie_is_secure() {
    let (port, dir) = (free_port(), tempfile::tempdir().expect("tempdir"));
    let ca = crate::harness::mosquitto::make_certificates(dir.path());
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, TOKEN).expect("write token");
    let (cert, key) = (dir.path().join("server.pem"), dir.path().join("server.key"));
    let section = format!("{}cert_file = \"{}\"\nkey_file = \"{}\"\n", http_section(port, &token_file), cert.display(), key.display());
    let config = ConfigBuilder::new("secure", "detr-tiny-fixture.onnx").camera("street", "test:", 1.0).raw(&section).write();
    let out = glimpse(&["check", "--config", &config.path.display().to_string()], &[]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok: HTTPS"), "{}", String::from_utf8_lossy(&out.stdout));
    let daemon = Daemon::start(&config, &[], &[]);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let client = https_client(&ca);
    let base = format!("https://127.0.0.1:{port}");
    let answer = |request: reqwest::RequestBuilder| runtime.block_on(async { request.send().await.ok() });
    wait_until("the API to answer over HTTPS", Duration::from_secs(60), || answer(client.get(format!("{base}/healthz"))).is_some());

    let stats = answer(client.get(format!("{base}/api/stats")).bearer_auth(TOKEN)).expect("stats over HTTPS");
    assert_eq!(stats.status(), 200);
    let form = format!("token={TOKEN}&next=%2F");
    let sign_in = client.post(format!("{base}/login")).header("sec-fetch-site", "same-origin");
    let sign_in = sign_in.header("content-type", "application/x-www-form-urlencoded").body(form);
    let signed_in = answer(sign_in).expect("sign-in");
    let cookie = signed_in.headers().get("set-cookie").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    assert_eq!(signed_in.status(), 303, "{cookie}");
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict") && cookie.contains("; Secure"), "{cookie}");

    let plain = get(port, "/healthz", None);
    assert!(plain.is_none_or(|a| a.status != 200), "plain HTTP on the HTTPS port is not served");
    assert!(answer(client.get(format!("{base}/healthz"))).is_some_and(|a| a.status() == 200), "and the server goes on");
    assert!(!daemon.logs().contains(TOKEN), "the token never reaches the log");
}

#[test]
fn a_certificate_without_its_key_or_unreadable_stops_start_up_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, TOKEN).expect("write token");
    let cert = dir.path().join("cert.pem");
    std::fs::write(&cert, "not a certificate").expect("write");
    let http = http_section(free_port(), &token_file);
    for (extra, expected) in [
        (format!("cert_file = \"{}\"\n", cert.display()), "http.key_file"),
        (format!("cert_file = \"{0}\"\nkey_file = \"{0}\"\n", cert.display()), "http.cert_file: no certificate could be read"),
    ] {
        let config =
            ConfigBuilder::new("secure", "detr-tiny-fixture.onnx").camera("street", "test:", 1.0).raw(&(http.clone() + &extra)).write();
        let out = glimpse(&["check", "--config", &config.path.display().to_string()], &[]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.code() == Some(2) && text.contains(expected), "{text}");
        let mut daemon = Daemon::start(&config, &[], &[]);
        assert_eq!(daemon.wait(Duration::from_secs(60)).code(), Some(2), "{}", daemon.logs());
        assert!(daemon.logs().contains(expected), "missing {expected:?} in:\n{}", daemon.logs());
    }
}

/// A daemon indexing bikes.mp4 (10 frames, 5 objects each) with the HTTP API on, its config
/// and its port, once all 50 records are searchable by words.
pub(crate) fn indexing_bikes(device: &str, dir: &std::path::Path) -> (Daemon, crate::harness::TestConfig, u16) {
    indexing_bikes_into(device, dir, None)
}

/// [`indexing_bikes`], syncing to `pinecone` when given.
fn indexing_bikes_into(device: &str, dir: &std::path::Path, pinecone: Option<&Emulator>) -> (Daemon, crate::harness::TestConfig, u16) {
    let (port, token_file) = (free_port(), dir.join("token"));
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("write token");
    let bikes = format!("file://{}", crate::harness::daemon::clip("bikes.mp4").display());
    let mut config =
        ConfigBuilder::new(device, "detr-tiny-fixture.onnx").camera("street", &bikes, 1.0).raw(&http_section(port, &token_file));
    if let Some(emulator) = pinecone {
        config = config.pinecone(&emulator.url, device);
    }
    let config = config.write();
    let daemon = Daemon::start(&config, &[], &[("PINECONE_API_KEY", API_KEY)]);
    wait_until("all 50 records to be searchable", Duration::from_secs(120), || {
        get(port, "/api/search?text=a+person&top_k=100", Some(TOKEN))
            .is_some_and(|a| a.status == 200 && a.body["matches"].as_array().is_some_and(|m| m.len() == 50))
    });
    (daemon, config, port)
}

/// Record `id`'s crop JPEG, through the API.
pub(crate) fn crop_of(port: u16, id: &str) -> Vec<u8> {
    let (status, _, jpeg) = bytes(port, &format!("/api/records/{id}/crop.jpg"));
    assert_eq!(status, 200, "the crop of {id}");
    jpeg
}

pub(crate) fn bytes(port: u16, path: &str) -> (u16, String, Vec<u8>) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let response = http_client().get(format!("http://127.0.0.1:{port}{path}")).bearer_auth(TOKEN).send().await.expect("an answer");
        let kind = response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        (response.status().as_u16(), kind, response.bytes().await.expect("body").to_vec())
    })
}

#[test]
fn search_by_words_or_by_example_finds_records_whose_metadata_and_crops_the_api_serves() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_daemon, _config, port) = indexing_bikes("api", dir.path());

    let found = get(port, "/api/search?text=a+person&camera=street&label=person&top_k=7", Some(TOKEN)).expect("search");
    let matches = found.body["matches"].as_array().expect("matches");
    assert_eq!(matches.len(), 7, "{}", found.body);
    let first = &matches[0];
    for field in ["id", "score", "device", "camera", "ts", "label", "x", "y", "w", "h", "crop_url", "snapshot_url", "record_url"] {
        assert!(!first[field].is_null(), "every match has {field}: {first}");
    }
    assert_eq!(
        (&first["device"], &first["camera"], &first["label"]),
        (&Value::from("api"), &Value::from("street"), &Value::from("person"))
    );
    let id = first["id"].as_str().expect("an id");
    assert_eq!(first["record_url"], format!("/records/{id}"));

    let record = get(port, &format!("/api/records/{id}"), Some(TOKEN)).expect("record");
    assert_eq!((record.status, &record.body["id"], &record.body["ts"]), (200, &first["id"], &first["ts"]), "{}", record.body);
    let (status, kind, jpeg) = bytes(port, first["crop_url"].as_str().expect("a crop"));
    assert_eq!((status, kind.as_str()), (200, "image/jpeg"));
    let crop = image::load_from_memory(&jpeg).expect("the crop is a JPEG");
    assert!(crop.width() > 0 && crop.height() > 0);

    let (status, kind, plain) = bytes(port, first["snapshot_url"].as_str().expect("a snapshot"));
    assert_eq!((status, kind.as_str()), (200, "image/jpeg"));
    let frame = image::load_from_memory(&plain).expect("the snapshot is a JPEG").to_rgb8();
    assert_eq!(frame.dimensions(), (640, 272), "the whole frame");
    let (_, _, boxed) = bytes(port, &format!("{}?box=1", first["snapshot_url"].as_str().expect("a snapshot")));
    let boxed = image::load_from_memory(&boxed).expect("a JPEG").to_rgb8();
    let (x, y) = (first["x"].as_u64().expect("x") as u32 + 1, first["y"].as_u64().expect("y") as u32 + 1);
    let yellow = |p: &image::Rgb<u8>| p.0[0] > 200 && p.0[1] > 170 && p.0[2] < 90;
    assert!(yellow(boxed.get_pixel(x, y)), "?box=1 outlines the record's box: {:?} at {x},{y}", boxed.get_pixel(x, y));
    assert_eq!(bytes(port, &format!("/api/records/{id}/snapshot.jpg?box=yes")).0, 400);
    let by_picture = post_picture(port, "/api/search?top_k=50&camera=street", "image/jpeg", jpeg.clone());
    let pictured = by_picture.body["matches"].as_array().expect("matches");
    let itself = pictured.iter().find(|m| m["id"] == id).unwrap_or_else(|| panic!("the crop finds its record: {}", by_picture.body));
    assert!(itself["score"].as_f64().is_some_and(|s| s > 0.9), "its own crop, re-encoded, is near it: {itself}");
    assert_eq!(post_picture(port, "/api/search", "text/plain", jpeg.clone()).status, 415);
    assert_eq!(post_picture(port, "/pictures", "text/plain", jpeg.clone()).status, 415, "the page's upload too");
    let garbage = post_picture(port, "/api/search", "image/png", b"not a png".to_vec());
    assert!(garbage.status == 400 && garbage.body["error"].as_str().is_some_and(|e| e.starts_with("body:")), "{}", garbage.body);
    assert_eq!(post_picture(port, "/api/search?text=a", "image/jpeg", jpeg.clone()).status, 400, "a picture or words, not both");
    let photo = noisy_png(1000, 1000);
    assert!(photo.len() > 2 << 20, "a phone photo's size, over axum's own default limit: {} bytes", photo.len());
    assert_eq!(post_picture(port, "/api/search?top_k=1", "image/png", photo).status, 200, "max_upload_bytes is the one limit");
    let like = get(port, &format!("/api/search?like={id}&top_k=3"), Some(TOKEN)).expect("like");
    let alike = like.body["matches"].as_array().expect("matches");
    assert!((alike[0]["score"].as_f64().expect("a score") - 1.0).abs() < 1e-4, "a record is most like itself: {}", like.body);
    let none = get(port, "/api/search?text=a+person&camera=elsewhere", Some(TOKEN)).expect("search");
    assert_eq!(none.body["matches"], Value::Array(vec![]), "filters apply: {}", none.body);

    let events = get(port, "/api/events?camera=street&label=person&limit=2", Some(TOKEN)).expect("events");
    let tracked = events.body["events"].as_array().expect("events");
    assert!(!tracked.is_empty(), "the tracks the camera saw: {}", events.body);
    for event in tracked {
        assert_eq!((&event["camera"], &event["label"]), (&Value::from("street"), &Value::from("person")), "{event}");
        assert!(event["start_ts"].is_i64() && event["record_url"].as_str().is_some_and(|u| u.starts_with("/records/")), "{event}");
    }
    if let [newer, older] = tracked.as_slice() {
        assert!(newer["start_ts"].as_i64() >= older["start_ts"].as_i64(), "newest first: {}", events.body);
        let cursor = format!(
            "{}:{}:{}",
            older["start_ts"],
            older["camera"].as_str().unwrap_or_default(),
            older["track_id"].as_str().unwrap_or_default()
        );
        assert_eq!(events.body["next_before"], cursor, "the next page starts after the last shown");
        let next = get(port, &format!("/api/events?camera=street&limit=2&before={cursor}"), Some(TOKEN)).expect("the next page");
        let next = next.body["events"].as_array().expect("events");
        assert!(next.iter().all(|e| e["track_id"] != newer["track_id"] && e["track_id"] != older["track_id"]), "no track twice");
    }
    let elsewhere = get(port, "/api/events?camera=elsewhere", Some(TOKEN)).expect("events");
    assert_eq!(elsewhere.body["events"], Value::Array(vec![]), "{}", elsewhere.body);
}

#[test]
fn hostile_or_wrong_requests_get_the_right_status_and_leave_the_daemon_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut daemon, _config, port) = indexing_bikes("hostile", dir.path());
    let health = bytes(port, "/healthz");
    assert_eq!((health.0, health.2.as_slice()), (200, b"ok".as_slice()));
    for (path, status, names) in [
        ("/api/search", 400, "text:"),
        ("/api/search?text=a&top_k=0", 400, "top_k:"),
        ("/api/search?text=a&since=yesterday", 400, "since:"),
        ("/api/search?text=a&colour=red", 400, "colour:"),
        ("/api/search?like=..%2F..%2Fetc%2Fpasswd", 400, "id:"),
        ("/api/records/..%2F..%2Fetc%2Fpasswd", 400, "id:"),
        ("/api/records/..%2F..%2Fetc%2Fpasswd/crop.jpg", 400, "id:"),
        ("/api/records/nobody:here:1:0", 404, "no record"),
        ("/api/search?like=nobody:here:1:0", 404, "no record"),
        ("/api/events?limit=0", 400, "limit:"),
        ("/api/events?before=yesterday", 400, "before:"),
    ] {
        let answer = get(port, path, Some(TOKEN)).expect("an answer");
        let error = answer.body["error"].as_str().unwrap_or_default();
        assert!(answer.status == status && error.contains(names), "{path}: {} {}", answer.status, answer.body);
    }
    assert_eq!(get(port, "/api/search?text=a", None).map(|a| a.status), Some(401), "searching needs the token");
    assert_eq!(get(port, "/api/records/x:y:1:0/crop.jpg", Some("wrong-token-0123456789")).map(|a| a.status), Some(401));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let oversized = runtime.block_on(async {
        let body = vec![0u8; 9 << 20];
        let url = format!("http://127.0.0.1:{port}/login");
        http_client()
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    assert!(matches!(oversized, Ok(413) | Err(_)), "a body over max_upload_bytes is refused: {oversized:?}");
    assert!(daemon.is_running(), "{}", daemon.logs());
    assert_eq!(get(port, "/api/search?text=a+person&top_k=2", Some(TOKEN)).map(|a| a.status), Some(200), "still serving");
}

/// `PUT path` with a JSON body and the token.
fn put(port: u16, path: &str, body: Value) -> Answer {
    send(port, path, |client, url| client.put(url).bearer_auth(TOKEN).json(&body)).expect("an answer")
}

#[test]
fn a_name_given_on_the_box_is_kept_searchable_and_reaches_pinecone_through_an_outage() {
    let dir = tempfile::tempdir().expect("tempdir");
    let emulator = Emulator::start(API_KEY, 512);
    let (mut daemon, config, port) = indexing_bikes_into("named", dir.path(), Some(&emulator));
    wait_until("all 50 records in Pinecone", Duration::from_secs(60), || emulator.count("named") == 50);
    let found = get(port, "/api/search?text=a+person&top_k=2", Some(TOKEN)).expect("search");
    let (van, other) = (found.body["matches"][0]["id"].as_str().expect("an id"), found.body["matches"][1]["id"].as_str().expect("an id"));

    emulator.fail_for(503, Duration::from_secs(2));
    let named = put(port, &format!("/api/records/{van}/label"), serde_json::json!({ "label": "  our red van " }));
    assert_eq!((named.status, &named.body["user_label"]), (200, &Value::from("our red van")), "{}", named.body);
    let hostile = "<img src=x onerror=alert(1)>";
    assert_eq!(put(port, &format!("/api/records/{other}/label"), serde_json::json!({ "label": hostile })).status, 200);
    let record = get(port, &format!("/api/records/{van}"), Some(TOKEN)).expect("record");
    assert_eq!(record.body["user_label"], "our red van", "{}", record.body);
    let by_name = get(port, "/api/search?text=a+person&user_label=our+red+van", Some(TOKEN)).expect("search");
    let ids: Vec<&str> = by_name.body["matches"].as_array().expect("matches").iter().filter_map(|m| m["id"].as_str()).collect();
    assert_eq!(ids, [van], "only the named record: {}", by_name.body);
    assert_eq!(by_name.body["matches"][0]["user_label"], "our red van");

    let in_pinecone = |id: &str| emulator.vectors("named").get(id).and_then(|v| v.metadata.get("user_label").cloned());
    wait_until("both names in Pinecone after the outage", Duration::from_secs(60), || {
        in_pinecone(van) == Some(Value::from("our red van")) && in_pinecone(other) == Some(Value::from(hostile))
    });
    assert!(emulator.refused() > 0, "the outage refused the first try");
    assert!(daemon.logs().contains("label_retry"), "the refused update was retried");

    for (path, body, status, names) in [
        (format!("/api/records/{van}/label"), serde_json::json!({ "label": "x".repeat(101) }), 400, "label:"),
        (format!("/api/records/{van}/label"), serde_json::json!({ "name": "x" }), 400, "label:"),
        (format!("/api/records/{van}/label"), serde_json::json!({ "label": "a\nb" }), 400, "label:"),
        ("/api/records/nobody:here:1:0/label".to_owned(), serde_json::json!({ "label": "x" }), 404, "no record"),
        ("/api/records/..%2Fetc/label".to_owned(), serde_json::json!({ "label": "x" }), 400, "id:"),
    ] {
        let answer = put(port, &path, body);
        let error = answer.body["error"].as_str().unwrap_or_default();
        assert!(answer.status == status && error.contains(names), "{path}: {} {}", answer.status, answer.body);
    }
    assert_eq!(call(port, reqwest::Method::PUT, &format!("/api/records/{van}/label"), None).map(|a| a.status), Some(401));

    // The name outlives a restart on the device.
    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(daemon.wait(Duration::from_secs(30)).code(), Some(0), "{}", daemon.logs());
    let daemon = Daemon::start(&config.path, &[], &[("PINECONE_API_KEY", API_KEY)]);
    wait_until("the API after a restart", Duration::from_secs(60), || {
        get(port, &format!("/api/records/{van}"), Some(TOKEN)).is_some_and(|a| a.body["user_label"] == "our red van")
    });
    assert!(!daemon.logs().contains(API_KEY) && !daemon.logs().contains(TOKEN), "no secret in the log");
}

/// A PNG of noise, which does not compress: `w` × `h` pixels make about 3 `w` `h` bytes.
fn noisy_png(w: u32, h: u32) -> Vec<u8> {
    let mut state = 0x2545_f491_u32;
    let picture = image::RgbImage::from_fn(w, h, |_, _| {
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        };
        image::Rgb([next(), next(), next()])
    });
    let mut png = Vec::new();
    picture.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png).expect("encode a PNG");
    png
}

/// `POST path` with `body` as `kind` and the token.
fn post_picture(port: u16, path: &str, kind: &str, body: Vec<u8>) -> Answer {
    send(port, path, |client, url| client.post(url).bearer_auth(TOKEN).header("content-type", kind).body(body)).expect("an answer")
}
