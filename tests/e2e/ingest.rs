//! Video ingest an appliance can trust: streams that heal themselves, failures that are named,
//! cameras that do not hold each other up, and decoding only what sampling keeps.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::harness::daemon::{clip, Daemon};
use crate::harness::http::serve;
use crate::harness::media::h264_clip;
use crate::harness::rtsp::{Options, RtspServer};
use crate::harness::ConfigBuilder;

fn stop(mut daemon: Daemon) -> serde_json::Value {
    daemon.signal(Signal::SIGTERM);
    let status = daemon.wait(Duration::from_secs(30));
    assert!(status.success(), "exit {status:?}; log:\n{}", daemon.logs());
    daemon.last_stats()
}

#[test]
fn a_camera_comes_back_within_15_seconds_of_its_rtsp_server_restarting() {
    let server = RtspServer::serve_mp4(&clip("bikes.mp4"), "cam");
    let port = server.port;
    let config = ConfigBuilder::new("heal", "detr-tiny-fixture.onnx").camera("door", &format!("rtsp://127.0.0.1:{port}/cam"), 2.0).write();
    let mut daemon = Daemon::start(&config, &[], &[]);
    daemon.wait_for_state("door", "online", 1, Duration::from_secs(60));
    drop(server); // the camera reboots: its sessions end and its port closes
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "the RTSP server still listens");
    daemon.wait_for_state("door", "offline", 1, Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(2)); // the camera stays down a while
    let _server = RtspServer::start(&clip("bikes.mp4"), "cam", Options { port, ..Options::default() });
    let back = Instant::now();
    daemon.wait_for_state("door", "online", 2, Duration::from_secs(15));
    assert!(back.elapsed() <= Duration::from_secs(15));
    let stats = stop(daemon);
    assert!(stats["cameras"]["door"]["reconnects"].as_u64() >= Some(1), "{stats}");
}

#[test]
fn a_frozen_stream_is_detected_as_stalled_and_reconnected() {
    let server = RtspServer::serve_mp4(&clip("bikes.mp4"), "cam");
    let config = ConfigBuilder::new("stall", "detr-tiny-fixture.onnx")
        .camera("gate", &format!("rtsp://127.0.0.1:{}/cam", server.port), 2.0)
        .raw("stall_timeout_s = 3")
        .write();
    let mut daemon = Daemon::start(&config, &[], &[]);
    daemon.wait_for_state("gate", "online", 1, Duration::from_secs(60));
    server.freeze();
    let frozen = Instant::now();
    daemon.wait_for("camera_status", &[("camera", "gate"), ("reason", "no data for 3 s; reconnecting")], 1, Duration::from_secs(10));
    assert!(frozen.elapsed() < Duration::from_secs(8), "stall took {:?}", frozen.elapsed());
    // The reconnect gets a fresh (unfrozen) session from the server.
    daemon.wait_for_state("gate", "online", 2, Duration::from_secs(20));
    let stats = stop(daemon);
    assert!(stats["cameras"]["gate"]["stalls"].as_u64() >= Some(1), "{stats}");
}

#[test]
fn wrong_credentials_give_an_error_with_the_reason_and_slow_retries() {
    let options = Options { credentials: Some(("viewer".into(), "right-pass".into())), ..Options::default() };
    let server = RtspServer::start(&clip("bikes.mp4"), "cam", options);
    let config = ConfigBuilder::new("auth", "detr-tiny-fixture.onnx")
        .camera("locked", &format!("rtsp://viewer:wrong-pass-42@127.0.0.1:{}/cam", server.port), 1.0)
        .write();
    let mut daemon = Daemon::start(&config, &[], &[]);
    daemon.wait_for_state("locked", "error", 1, Duration::from_secs(60));
    let reason = daemon.last("camera_status").expect("a status")["reason"].as_str().unwrap_or_default().to_owned();
    assert!(reason.starts_with("authentication failed (401)"), "{reason}");
    // A window of time is what is measured here: how often the camera is retried in it.
    std::thread::sleep(Duration::from_secs(8));
    let attempts = daemon.count("source_starting", &[("camera", "locked")]);
    assert!(attempts <= 2, "retried {attempts} times in 8 s: no retry storm wanted");
    let logs = daemon.logs();
    let stats = stop(daemon);
    assert_eq!(stats["cameras"]["locked"]["status"], "error", "{stats}");
    assert!(stats["cameras"]["locked"]["reason"].as_str().is_some_and(|r| r.contains("401")), "{stats}");
    assert!(!logs.contains("wrong-pass-42") && !stats.to_string().contains("wrong-pass-42"), "password leaked");
}

#[test]
fn missing_corrupt_and_truncated_files_fail_cleanly_without_stopping_the_daemon() {
    let dir = tempfile::tempdir().expect("tempdir");
    let corrupt = dir.path().join("corrupt.mp4");
    std::fs::write(&corrupt, (0..200_000u32).map(|i| (i * 7919 % 251) as u8).collect::<Vec<_>>()).expect("write");
    let truncated = dir.path().join("truncated.mp4");
    let full = std::fs::read(clip("bikes.mp4")).expect("read clip");
    std::fs::write(&truncated, &full[..full.len() / 2]).expect("write");
    let config = ConfigBuilder::new("badfiles", "detr-tiny-fixture.onnx")
        .camera("missing", "file:///nonexistent/clip.mp4", 1.0)
        .camera("corrupt", &format!("file://{}", corrupt.display()), 1.0)
        .camera("truncated", &format!("file://{}", truncated.display()), 1.0)
        .write();
    let mut daemon = Daemon::start(&config, &[], &[]);
    daemon.wait_for_state("missing", "error", 1, Duration::from_secs(60));
    daemon.wait_for_state("corrupt", "error", 1, Duration::from_secs(60));
    // bikes.mp4 keeps its index (moov) at the end: its first half cannot be demuxed at all.
    daemon.wait_for_state("truncated", "error", 1, Duration::from_secs(60));
    let stats = stop(daemon);
    assert!(stats["cameras"]["missing"]["reason"].as_str().is_some_and(|r| r.contains("not found")), "{stats}");
    for camera in ["missing", "corrupt", "truncated"] {
        assert_eq!(stats["cameras"][camera]["status"], "error", "{stats}");
        assert_eq!(stats["cameras"][camera]["frames_processed"], 0, "{stats}");
    }
}

#[test]
fn one_failing_camera_does_not_hold_up_another() {
    let config = ConfigBuilder::new("isolation", "detr-tiny-fixture.onnx")
        .camera("dead", "rtsp://127.0.0.1:9/nothing-listens-here", 1.0)
        .camera("bikes", &format!("file://{}", clip("bikes.mp4").display()), 2.0)
        .write();
    let mut daemon = Daemon::start(&config, &[], &[]);
    daemon.wait_for("camera_status", &[("camera", "bikes"), ("reason", "end of file")], 1, Duration::from_secs(120));
    let stats = stop(daemon);
    assert_eq!(stats["cameras"]["bikes"]["frames_processed"], 20, "{stats}");
    assert_eq!(stats["cameras"]["dead"]["status"], "error", "{stats}");
}

#[test]
fn keyframe_only_decoding_yields_one_frame_per_keyframe() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gop1s = dir.path().join("gop1s.mp4");
    h264_clip(&gop1s, 10, 25, 25, 320, 240); // 250 frames, a keyframe every second
    let uri = format!("file://{}", gop1s.display());
    let run = |keyframes: &str| {
        let config = ConfigBuilder::new("keyframes", "detr-tiny-fixture.onnx")
            .camera("k", &uri, 5.0)
            .raw(&format!("keyframes = \"{keyframes}\""))
            .write();
        let mut daemon = Daemon::start(&config, &["--exit-when-done"], &[]);
        assert!(daemon.wait(Duration::from_secs(120)).success(), "{}", daemon.logs());
        daemon.last_stats()["cameras"]["k"].clone()
    };
    let always = run("always");
    assert_eq!(always["frames_decoded"], 10, "{always}");
    assert_eq!(always["frames_sampled"], 10, "{always}");
    assert_eq!(always["deltas_skipped"], 240, "{always}");
    assert_eq!(always["decoder"], "avdec_h264", "{always}");
    let never = run("never");
    assert_eq!(never["frames_decoded"], 250, "{never}");
    assert_eq!(never["frames_sampled"], 50, "{never}");
}

#[test]
fn a_looping_file_keeps_producing_frames_like_a_camera() {
    let dir = tempfile::tempdir().expect("tempdir");
    let short = dir.path().join("short.mp4");
    h264_clip(&short, 2, 10, 10, 320, 240);
    let config = ConfigBuilder::new("loop", "detr-tiny-fixture.onnx")
        .camera("looped", &format!("file://{}", short.display()), 2.0)
        .raw("loop = true")
        .write();
    let mut daemon = Daemon::start(&config, &[], &[]);
    daemon.wait_for("file_looped", &[("camera", "looped")], 2, Duration::from_secs(60));
    let stats = stop(daemon);
    // 2 s of video at 2 fps is 4 frames a pass; after about 6 s of looping there are more.
    assert!(stats["cameras"]["looped"]["frames_sampled"].as_u64() >= Some(8), "{stats}");
}

#[test]
fn rtsp_over_udp_works_when_asked_for() {
    let server = RtspServer::serve_mp4(&clip("bikes.mp4"), "cam");
    let config = ConfigBuilder::new("udp", "detr-tiny-fixture.onnx")
        .camera("udp", &format!("rtsp://127.0.0.1:{}/cam", server.port), 2.0)
        .raw("transport = \"udp\"")
        .write();
    let mut daemon = Daemon::start(&config, &[], &[]);
    daemon.wait_for_state("udp", "online", 1, Duration::from_secs(60));
    daemon.wait_for("frame_analysed", &[("camera", "udp")], 2, Duration::from_secs(30));
    let stats = stop(daemon);
    assert!(stats["cameras"]["udp"]["frames_processed"].as_u64() >= Some(2), "{stats}");
}

#[test]
fn a_progressive_http_file_is_indexed_like_a_local_one() {
    let port = serve(clip("bikes.mp4").parent().expect("media directory"));
    let config =
        ConfigBuilder::new("http", "detr-tiny-fixture.onnx").camera("web", &format!("http://127.0.0.1:{port}/bikes.mp4"), 2.0).write();
    let mut daemon = Daemon::start(&config, &["--exit-when-done"], &[]);
    assert!(daemon.wait(Duration::from_secs(120)).success(), "{}", daemon.logs());
    // Not live: every sampled frame is processed, as for file:// (10 s at 2 fps).
    let stats = &daemon.last_stats()["cameras"]["web"];
    assert_eq!(stats["frames_processed"], 20, "{stats}");
    assert_eq!(stats["embeddings"], 100);
}
