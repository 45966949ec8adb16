//! Behaving as a systemd service: the sd_notify protocol through a test NOTIFY_SOCKET.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::harness::daemon::{clip, glimpse, Daemon};
use crate::harness::mosquitto::{BrokerOptions, Mosquitto};
use crate::harness::mqtt::Observer;
use crate::harness::pinecone::Emulator;
use crate::harness::rtsp::{Options, RtspServer};
use crate::harness::ConfigBuilder;

/// Collects datagrams from the socket until `until` matches one or `timeout` passes.
fn collect(socket: &UnixDatagram, timeout: Duration, until: &str, into: &mut Vec<String>) {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(n) = socket.recv(&mut buf) {
            let message = String::from_utf8_lossy(&buf[..n]).into_owned();
            let done = message.lines().any(|l| l.starts_with(until));
            into.push(message);
            if done {
                return;
            }
        }
    }
}

/// A datagram socket standing in for systemd's NOTIFY_SOCKET; keep the directory alive with it.
fn notify_socket() -> (tempfile::TempDir, UnixDatagram, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).expect("bind notify socket");
    socket.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
    (dir, socket, path.display().to_string())
}

#[test]
fn the_daemon_tells_systemd_when_it_is_ready_and_when_it_is_stopping() {
    let (_dir, socket, socket_path) = notify_socket();
    let config = ConfigBuilder::new("e2e-notify", "detr-tiny-fixture.onnx")
        .camera("bikes", &format!("file://{}", clip("bikes.mp4").display()), 1.0)
        .write();
    let mut daemon = Daemon::start(&config, &[], &[("NOTIFY_SOCKET", &socket_path), ("WATCHDOG_USEC", "2000000")]);
    let mut messages = Vec::new();
    collect(&socket, Duration::from_secs(60), "READY=1", &mut messages);
    assert!(messages.iter().any(|m| m.contains("READY=1") && m.contains("STATUS=")), "{messages:?}");
    collect(&socket, Duration::from_secs(5), "WATCHDOG=1", &mut messages);
    assert!(messages.iter().any(|m| m.contains("WATCHDOG=1")), "{messages:?}");
    daemon.signal(Signal::SIGTERM);
    collect(&socket, Duration::from_secs(30), "STOPPING=1", &mut messages);
    assert!(messages.iter().any(|m| m.contains("STOPPING=1")), "{messages:?}");
    assert!(daemon.wait(Duration::from_secs(30)).success(), "{}", daemon.logs());
}

#[test]
#[cfg_attr(not(feature = "test-hooks"), ignore = "needs the test-hooks feature (scripts/test.sh turns it on)")]
fn the_watchdog_is_no_longer_fed_once_inference_is_wedged() {
    let (_dir, socket, socket_path) = notify_socket();
    let config = ConfigBuilder::new("e2e-wedge", "detr-tiny-fixture.onnx").camera("live", "test:", 2.0).write();
    let env = [("NOTIFY_SOCKET", socket_path.as_str()), ("WATCHDOG_USEC", "2000000"), ("GLIMPSE_TEST_WEDGE_INFERENCE", "1")];
    let mut daemon = Daemon::start(&config, &[], &env);
    let mut messages = Vec::new();
    collect(&socket, Duration::from_secs(60), "STATUS=stuck: inference", &mut messages);
    assert!(messages.iter().any(|m| m.contains("stuck: inference")), "{messages:?}");
    // From now on, no more pings: systemd would restart the service.
    let mut after = Vec::new();
    collect(&socket, Duration::from_secs(3), "never", &mut after);
    assert!(!after.iter().any(|m| m.contains("WATCHDOG=1")), "pinged while wedged: {after:?}");
    daemon.signal(Signal::SIGKILL);
    daemon.wait(Duration::from_secs(10));
}

#[test]
fn a_daemon_paused_at_its_outbox_cap_keeps_feeding_the_watchdog_and_says_it_is_paused() {
    let (_dir, socket, socket_path) = notify_socket();
    // No index and no Pinecone: the outbox is the only copy, and fills.
    let config = ConfigBuilder::new("e2e-paused", "detr-tiny-fixture.onnx")
        .camera("bikes", &format!("file://{}", clip("bikes.mp4").display()), 10.0)
        .raw("[search]\nenabled = false\n[outbox]\nmax_bytes = \"1 MiB\"\npolicy = \"pause_ingest\"")
        .write();
    let mut daemon = Daemon::start(&config, &[], &[("NOTIFY_SOCKET", &socket_path), ("WATCHDOG_USEC", "2000000")]);
    let mut messages = Vec::new();
    collect(&socket, Duration::from_secs(120), "STATUS=paused", &mut messages);
    assert!(messages.iter().any(|m| m.contains("STATUS=paused: backlog would reach")), "{messages:?}");
    // Three watchdog intervals while paused: pinged all along, never stuck.
    let mut paused = Vec::new();
    collect(&socket, Duration::from_secs(6), "never", &mut paused);
    let pings = paused.iter().filter(|m| m.contains("WATCHDOG=1")).count();
    assert!(pings >= 6, "{pings} pings in 6 s while paused: {paused:?}");
    assert!(!paused.iter().any(|m| m.contains("stuck")), "{paused:?}");
    daemon.signal(Signal::SIGTERM);
    assert!(daemon.wait(Duration::from_secs(30)).success(), "{}", daemon.logs());
}

fn camera_starts(daemon: &Daemon, camera: &str) -> usize {
    daemon.count("source_starting", &[("camera", camera)])
}

#[test]
fn sighup_applies_camera_changes_without_touching_the_others_and_rejects_a_bad_config() {
    let first =
        ConfigBuilder::new("e2e-reload", "detr-tiny-fixture.onnx").camera("keep", "test:", 1.0).camera("drop", "test:", 1.0).write();
    let mut daemon = Daemon::start(&first, &[], &[]);
    daemon.wait_for_state("keep", "online", 1, Duration::from_secs(60));
    daemon.wait_for_state("drop", "online", 1, Duration::from_secs(60));

    let second = ConfigBuilder::sharing_data_dir(&first, "e2e-reload", "detr-tiny-fixture.onnx")
        .camera("keep", "test:", 1.0)
        .camera("new", "test:", 1.0)
        .write();
    std::fs::copy(&second.path, &first.path).expect("replace config");
    daemon.signal(Signal::SIGHUP);
    let summary = "1 camera(s) added, 1 removed, 0 restarted with new settings, 1 untouched";
    daemon.wait_for("config_reloaded", &[("summary", &format!("configuration reloaded: {summary}"))], 1, Duration::from_secs(30));
    daemon.wait_for_state("new", "online", 1, Duration::from_secs(60));
    assert_eq!(camera_starts(&daemon, "keep"), 1, "the unchanged camera was restarted");

    std::fs::write(&first.path, "[device]\nid = \"e2e-reload\"\nbogus = 1\n").expect("write broken config");
    daemon.signal(Signal::SIGHUP);
    daemon.wait_for("config_reload_rejected", &[], 1, Duration::from_secs(30));
    let error = daemon.last("config_reload_rejected").expect("rejected")["error"].as_str().unwrap_or_default().to_owned();
    assert!(error.contains("device.bogus: unknown key"), "{error}");
    assert!(daemon.is_running());
    assert_eq!((camera_starts(&daemon, "keep"), camera_starts(&daemon, "new")), (1, 1));

    daemon.signal(Signal::SIGTERM);
    let status = daemon.wait(Duration::from_secs(30));
    assert!(status.success(), "{}", daemon.logs());
    let stats = daemon.last_stats();
    assert!(stats["cameras"].get("drop").is_none() && stats["cameras"].get("new").is_some(), "{stats}");
}

#[test]
fn mqtt_commands_pause_and_resume_cameras_and_bad_commands_get_an_error() {
    let broker = Mosquitto::start();
    let observer = Observer::subscribe(broker.port, "glimpse/#");
    let config = ConfigBuilder::new("e2e-cmd", "detr-tiny-fixture.onnx")
        .camera("yard", "test:", 1.0)
        .mqtt(broker.port, 1.0)
        .raw("commands = true")
        .write();
    let mut daemon = Daemon::start(&config, &[], &[]);
    observer.wait_for("glimpse/e2e-cmd/cameras/yard/status", Duration::from_secs(60), |m| m.payload == "online");
    let result = "glimpse/e2e-cmd/cmd/result";

    observer.publish("glimpse/e2e-cmd/cmd", r#"{"command": "pause", "camera": "yard", "id": "p1"}"#);
    let answer = observer.wait_for(result, Duration::from_secs(10), |m| m.payload.contains("\"p1\""));
    assert!(answer.payload.contains("\"ok\":true") && answer.payload.contains("camera yard paused"), "{}", answer.payload);
    observer.wait_for("glimpse/e2e-cmd/cameras/yard/reason", Duration::from_secs(10), |m| m.payload == "paused");

    observer.publish("glimpse/e2e-cmd/cmd", r#"{"command": "resume", "camera": "yard", "id": "r1"}"#);
    observer.wait_for(result, Duration::from_secs(10), |m| m.payload.contains("\"r1\"") && m.payload.contains("\"ok\":true"));
    observer.wait_for("glimpse/e2e-cmd/cameras/yard/status", Duration::from_secs(30), |m| m.payload == "online");

    observer.publish("glimpse/e2e-cmd/cmd", r#"{"command": "pause", "camera": "nope", "id": "n1"}"#);
    let unknown = observer.wait_for(result, Duration::from_secs(10), |m| m.payload.contains("\"n1\""));
    assert!(unknown.payload.contains("\"ok\":false") && unknown.payload.contains("no camera named"), "{}", unknown.payload);
    observer.publish("glimpse/e2e-cmd/cmd", "this is not json");
    let garbage = observer.wait_for(result, Duration::from_secs(10), |m| m.payload.contains("not a command"));
    assert!(garbage.payload.contains("\"ok\":false"));
    observer.publish("glimpse/e2e-cmd/cmd", r#"{"command": "flush", "id": "f1"}"#);
    observer.wait_for(result, Duration::from_secs(10), |m| m.payload.contains("\"f1\"") && m.payload.contains("outbox flushed"));

    assert!(daemon.is_running());
    daemon.signal(Signal::SIGTERM);
    assert!(daemon.wait(Duration::from_secs(30)).success(), "{}", daemon.logs());
}

#[test]
fn status_is_back_within_5_seconds_of_the_broker_restarting() {
    let broker = Mosquitto::start();
    let port = broker.port;
    let config = ConfigBuilder::new("e2e-broker", "detr-tiny-fixture.onnx").camera("yard", "test:", 1.0).mqtt(port, 1.0).write();
    let mut daemon = Daemon::start(&config, &[], &[]);
    daemon.wait_for("mqtt_connected", &[], 1, Duration::from_secs(60));
    drop(broker);
    std::thread::sleep(Duration::from_secs(3));
    let _broker = Mosquitto::start_on(port);
    let back = Instant::now();
    // The restarted broker has no retained messages: glimpse must publish them again.
    let observer = Observer::subscribe(port, "glimpse/e2e-broker/#");
    observer.wait_for("glimpse/e2e-broker/availability", Duration::from_secs(5), |m| m.payload == "online");
    observer.wait_for("glimpse/e2e-broker/cameras/yard/status", Duration::from_secs(5), |m| m.payload == "online");
    assert!(back.elapsed() <= Duration::from_secs(6), "took {:?}", back.elapsed());
    daemon.signal(Signal::SIGTERM);
    assert!(daemon.wait(Duration::from_secs(30)).success());
}

#[test]
fn mqtt_over_tls_with_a_test_ca_and_home_assistant_discovery() {
    let broker = Mosquitto::start_with(BrokerOptions { tls: true, ..BrokerOptions::default() });
    let (tls_port, ca) = (broker.tls_port.expect("TLS listener"), broker.ca_file.clone().expect("CA"));
    let observer = Observer::subscribe(broker.port, "#");
    let config = ConfigBuilder::new("e2e-tls", "detr-tiny-fixture.onnx")
        .camera("porch", "test:", 1.0)
        .mqtt(tls_port, 1.0)
        .raw(&format!("tls = true\nca_file = \"{}\"\nha_discovery = true", ca.display()))
        .write();
    let mut daemon = Daemon::start(&config, &[], &[]);
    observer.wait_for("glimpse/e2e-tls/availability", Duration::from_secs(60), |m| m.payload == "online");
    assert_eq!(daemon.count("mqtt_connected", &[("tls", "true")]), 1);
    let sensor = "homeassistant/sensor/glimpse_e2e-tls_porch_status/config";
    let announced = observer.wait_for(sensor, Duration::from_secs(10), |_| true);
    let config_json: serde_json::Value = serde_json::from_str(&announced.payload).expect("discovery JSON");
    assert_eq!(config_json["state_topic"], "glimpse/e2e-tls/cameras/porch/status");
    assert_eq!(config_json["availability_topic"], "glimpse/e2e-tls/availability");
    observer.wait_for("homeassistant/sensor/glimpse_e2e-tls_outbox_pending/config", Duration::from_secs(10), |_| true);
    let camera = observer.wait_for("homeassistant/camera/glimpse_e2e-tls_porch_snapshot/config", Duration::from_secs(10), |_| true);
    let camera: serde_json::Value = serde_json::from_str(&camera.payload).expect("discovery JSON");
    assert_eq!(camera["topic"], "glimpse/e2e-tls/cameras/porch/snapshot", "a camera entity showing the latest object");
    let before = observer.on(sensor).len();
    observer.publish("homeassistant/status", "online");
    crate::harness::daemon::wait_until("re-announcement", Duration::from_secs(10), || observer.on(sensor).len() > before);
    daemon.signal(Signal::SIGTERM);
    assert!(daemon.wait(Duration::from_secs(30)).success(), "{}", daemon.logs());
}

/// Camera URIs as users paste them, each with a credential the daemon must never repeat (the
/// `{port}` is the test camera's): reserved characters in the password, percent-escapes,
/// credentials as query parameters.
const HOSTILE_URIS: [(&str, &str); 7] = [
    ("plain", "rtsp://viewer:rtsp-SECRET-99x@127.0.0.1:{port}/cam"),
    ("hash", "rtsp://admin:pa#ss-SECRET-a1@127.0.0.1:{port}/cam"),
    ("at", "rtsp://admin:p@ss-SECRET-b2@127.0.0.1:{port}/cam"),
    ("slash", "rtsp://admin:pa/ss-SECRET-c3@127.0.0.1:{port}/cam"),
    ("escaped", "rtsp://admin:p%40ss%3FSECRET-d4@127.0.0.1:{port}/cam"),
    ("query", "rtsp://127.0.0.1:{port}/cam?user=admin&password=SECRET-e5"),
    ("token", "rtsp://127.0.0.1:{port}/cam?channel=1&Token=SECRET-f6"),
];

#[test]
fn no_secret_appears_in_logs_mqtt_payloads_or_command_output() {
    let (api_key, mqtt_password) = ("pk-SECRET-4f7a1c", "mqtt-SECRET-31q");
    let emulator = Emulator::start(api_key, 512);
    let broker =
        Mosquitto::start_with(BrokerOptions { credentials: Some(("glimpse".into(), mqtt_password.into())), ..BrokerOptions::default() });
    let observer = Observer::subscribe_as(broker.port, "#", Some(("glimpse", mqtt_password)));
    let camera = RtspServer::start(
        &clip("bikes.mp4"),
        "cam",
        Options { credentials: Some(("viewer".into(), "another-pass".into())), ..Options::default() },
    );
    let mut cfg = ConfigBuilder::new("e2e-secrets", "detr-tiny-fixture.onnx");
    for (name, uri) in HOSTILE_URIS {
        cfg = cfg.camera(name, &uri.replace("{port}", &camera.port.to_string()), 1.0);
    }
    let cfg = cfg.pinecone(&emulator.url, "secrets");
    let key_file = cfg.dir.path().join("pinecone-key");
    let mqtt_file = cfg.dir.path().join("mqtt-password");
    std::fs::write(&key_file, api_key).expect("key file");
    std::fs::write(&mqtt_file, mqtt_password).expect("password file");
    let config = cfg
        .raw(&format!("api_key_file = \"{}\"", key_file.display()))
        .mqtt(broker.port, 1.0)
        .raw(&format!("username = \"glimpse\"\npassword_file = \"{}\"\ncommands = true", mqtt_file.display()))
        .write();
    let mut daemon = Daemon::start(&config, &[], &[("GLIMPSE_LOG", "debug")]);
    observer.wait_for("glimpse/e2e-secrets/availability", Duration::from_secs(60), |m| m.payload == "online");
    // The camera refuses every (wrong) password: the error path quotes URIs and server answers.
    for (name, _) in HOSTILE_URIS {
        daemon.wait_for_state(name, "error", 1, Duration::from_secs(60));
    }
    observer.publish("glimpse/e2e-secrets/cmd", r#"{"command": "reload"}"#);
    observer.wait_for("glimpse/e2e-secrets/cmd/result", Duration::from_secs(10), |_| true);
    observer.wait_for("glimpse/e2e-secrets/stats", Duration::from_secs(10), |m| m.payload.contains("\"reason\""));
    daemon.signal(Signal::SIGTERM);
    assert!(daemon.wait(Duration::from_secs(30)).success(), "{}", daemon.logs());
    let check = glimpse(&["check", "--config", &config.display().to_string()], &[]);
    let help = glimpse(&["run", "--help"], &[]);
    let everything = format!(
        "{}{}{}{}{}",
        daemon.logs(),
        observer.messages().iter().map(|m| m.payload.clone()).collect::<String>(),
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr),
        String::from_utf8_lossy(&help.stdout)
    );
    assert!(everything.contains("rtsp://admin:***@127.0.0.1"), "the URIs are still shown, masked");
    // The API key, the broker password and every URI's credential carry "SECRET".
    assert!(!everything.contains("SECRET"), "a secret leaked: {}", leaked_lines(&everything, "SECRET"));
}

fn leaked_lines(text: &str, secret: &str) -> String {
    text.lines().filter(|l| l.contains(secret)).take(5).collect::<Vec<_>>().join("\n")
}

/// The unit with `/usr/bin/glimpse` pointing at the binary under test, in a temporary directory.
fn unit_under_test(dir: &std::path::Path) -> std::path::PathBuf {
    let unit = std::fs::read_to_string(crate::harness::daemon::repo().join("systemd/glimpse.service")).expect("read unit");
    let path = dir.join("glimpse.service");
    std::fs::write(&path, unit.replace("/usr/bin/glimpse", &crate::harness::daemon::bin())).expect("write unit");
    path
}

#[test]
fn the_systemd_unit_verifies_cleanly_and_is_sandboxed_to_an_exposure_of_at_most_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let unit = unit_under_test(dir.path());
    // systemd-analyze verify exits 0 even on unknown keys: its output must be empty.
    let verify =
        std::process::Command::new("systemd-analyze").arg("verify").arg(&unit).output().expect("systemd-analyze (package systemd)");
    let said = format!("{}{}", String::from_utf8_lossy(&verify.stdout), String::from_utf8_lossy(&verify.stderr));
    assert!(verify.status.success() && said.trim().is_empty(), "systemd-analyze verify: {said}");
    let security = std::process::Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&unit)
        .output()
        .expect("systemd-analyze");
    let report = String::from_utf8_lossy(&security.stdout);
    let exposure: f64 = report
        .lines()
        .find_map(|l| l.split("Overall exposure level for glimpse.service: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure in: {report}"));
    assert!(exposure <= 2.0, "exposure {exposure}:\n{report}");
}
