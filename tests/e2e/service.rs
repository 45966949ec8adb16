//! Behaving as a systemd service: the sd_notify protocol through a test NOTIFY_SOCKET.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::harness::daemon::{clip, Daemon};
use crate::harness::ConfigBuilder;

/// Collects datagrams from the socket until `until` matches one or `timeout` passes.
fn collect(socket: &UnixDatagram, timeout: Duration, until: &str, into: &mut Vec<String>) {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(n) = socket.recv(&mut buf) {
            let message = String::from_utf8_lossy(&buf[..n]).into_owned();
            let done = message.lines().any(|l| l == until);
            into.push(message);
            if done {
                return;
            }
        }
    }
}

#[test]
fn the_daemon_tells_systemd_when_it_is_ready_and_when_it_is_stopping() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).expect("bind notify socket");
    socket.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
    let config = ConfigBuilder::new("e2e-notify", "detr-tiny-fixture.onnx")
        .camera("bikes", &format!("file://{}", clip("bikes.mp4").display()), 1.0)
        .write();
    let socket_path = path.display().to_string();
    let mut daemon = Daemon::start(&config, &[], &[("NOTIFY_SOCKET", &socket_path), ("WATCHDOG_USEC", "400000")]);
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
