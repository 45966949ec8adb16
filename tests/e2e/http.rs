//! The box's HTTP API (`[http]`): nothing without the access token; with it, the stats JSON that
//! MQTT publishes and each camera's state; errors as JSON; a bad section stops start-up.

use std::time::Duration;

use serde_json::Value;

use crate::harness::daemon::{glimpse, wait_until, Daemon};
use crate::harness::{free_port, ConfigBuilder};

const TOKEN: &str = "e2e-token-0123456789abcdef";

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

/// `method path` with an empty body on the daemon's API, with `token` as the bearer token when
/// given; `None` while nothing answers.
fn call(port: u16, method: reqwest::Method, path: &str, token: Option<&str>) -> Option<Answer> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let url = format!("http://127.0.0.1:{port}{path}");
        let mut request = reqwest::Client::new().request(method, url).timeout(Duration::from_secs(10));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.ok()?;
        let (status, headers) = (response.status().as_u16(), response.headers().clone());
        Some(Answer { status, headers, body: response.json().await.unwrap_or(Value::Null) })
    })
}

fn get(port: u16, path: &str, token: Option<&str>) -> Option<Answer> {
    call(port, reqwest::Method::GET, path, token)
}

fn http_section(port: u16, token_file: &std::path::Path) -> String {
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
