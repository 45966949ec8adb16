//! Runs the real `glimpse` binary as a subprocess, its logs captured to a file as JSON lines
//! (`--log-format json`). Tests read the logs' machine-readable fields — the `event` name of
//! typed events and their fields — never the sentences, so rewording a message breaks nothing.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

/// The binary under test: the one cargo built, or `GLIMPSE_BIN` (scripts/aarch64.sh points it at
/// the aarch64 build, run through qemu).
pub fn bin() -> String {
    std::env::var("GLIMPSE_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_glimpse").to_owned())
}

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn model(name: &str) -> String {
    repo().join("models/tiny").join(name).display().to_string()
}

/// ONNX Runtime's library for the onnxruntime engine: `ORT_DYLIB_PATH`, else where
/// `scripts/onnxruntime.sh` (which scripts/test.sh runs) puts it.
pub fn onnxruntime_library() -> String {
    let library = std::env::var_os("ORT_DYLIB_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(format!("target/onnxruntime/1.31.1/{}/libonnxruntime.so.1.31.1", std::env::consts::ARCH)));
    assert!(library.exists(), "{} is missing: run scripts/onnxruntime.sh", library.display());
    library.display().to_string()
}

/// An `[inference]` section for ONNX Runtime with `providers`.
pub fn onnxruntime_section(providers: &str) -> String {
    format!("[inference]\nengine = \"onnxruntime\"\nonnxruntime_library = \"{}\"\nproviders = {providers}\n", onnxruntime_library())
}

pub fn clip(name: &str) -> PathBuf {
    repo().join("tests/media").join(name)
}

pub struct Daemon {
    child: Child,
    pub log: PathBuf,
}

impl Daemon {
    pub fn start(config: &Path, extra_args: &[&str], env: &[(&str, &str)]) -> Self {
        let log = config.with_extension("log");
        let file = std::fs::File::create(&log).expect("create log file");
        let mut command = Command::new(bin());
        command.args(["--log-format", "json", "run", "--config"]).arg(config).args(extra_args).env("GLIMPSE_LOG", "info,glimpse=debug");
        command.env_remove("PINECONE_API_KEY").env_remove("NOTIFY_SOCKET");
        for (k, v) in env {
            command.env(k, v);
        }
        let child = command.stdout(Stdio::null()).stderr(file).spawn().expect("start glimpse");
        Self { child, log }
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).expect("signal glimpse");
    }

    /// Waits for the process to exit; panics with its log after `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for glimpse") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("glimpse did not exit within {timeout:?}; log:\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Every JSON log line so far (lines that are not JSON, e.g. from GStreamer, are skipped).
    pub fn events(&self) -> Vec<Value> {
        self.logs().lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }

    /// How many typed events named `event` have every one of `fields` (name, value as text).
    pub fn count(&self, event: &str, fields: &[(&str, &str)]) -> usize {
        self.events().iter().filter(|e| is_event(e, event, fields)).count()
    }

    /// Waits until at least `count` events match (as [`Daemon::count`]); panics with the log
    /// after `timeout` or if the daemon exits first.
    pub fn wait_for(&mut self, event: &str, fields: &[(&str, &str)], count: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.count(event, fields) < count {
            if Instant::now() > deadline || !matches!(self.child.try_wait(), Ok(None)) {
                panic!("never {count} {event} event(s) with {fields:?} within {timeout:?}; log:\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until camera `camera` has reported `state` at least `count` times.
    pub fn wait_for_state(&mut self, camera: &str, state: &str, count: usize, timeout: Duration) {
        self.wait_for("camera_status", &[("camera", camera), ("state", state)], count, timeout);
    }

    /// The fields of the last event named `event`.
    pub fn last(&self, event: &str) -> Option<Value> {
        self.events().into_iter().rfind(|e| is_event(e, event, &[])).map(|e| e["fields"].clone())
    }

    /// The last stats JSON the daemon logged (without MQTT it logs them, and always at exit).
    pub fn last_stats(&self) -> Value {
        let stats = self.last("stats").expect("stats logged");
        serde_json::from_str(stats["stats"].as_str().expect("stats as text")).expect("stats are JSON")
    }
}

/// Whether a log line is the typed event `event` with every one of `fields`.
pub fn is_event(line: &Value, event: &str, fields: &[(&str, &str)]) -> bool {
    let f = &line["fields"];
    let text = |v: &Value| v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string());
    f["event"] == event && fields.iter().all(|(k, v)| text(&f[*k]) == *v)
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `glimpse ARGS...` to completion.
pub fn glimpse(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(bin());
    command.args(args).env_remove("PINECONE_API_KEY");
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().expect("run glimpse")
}

/// `glimpse outbox stats` for `config`, parsed.
pub fn outbox_report(config: &Path) -> serde_json::Value {
    let out = glimpse(&["outbox", "stats", "--config", &config.display().to_string()], &[]);
    assert!(out.status.success(), "outbox stats failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("outbox stats JSON")
}

/// `glimpse index export` for `config`: every record the box kept (the index on the device,
/// where records without Pinecone go), one JSON value each, oldest first.
pub fn exported_records(config: &Path) -> Vec<serde_json::Value> {
    json_lines(&["index", "export", "--config", &config.display().to_string()])
}

/// `glimpse outbox export` for `config`: every record still pending in the outbox.
pub fn pending_records(config: &Path) -> Vec<serde_json::Value> {
    json_lines(&["outbox", "export", "--config", &config.display().to_string()])
}

/// `glimpse COMMAND --config CONFIG IMAGE...` (`detect`, `embed`): one JSON value per image, in order.
pub fn on_images(command: &str, config: &str, images: &[PathBuf]) -> Vec<serde_json::Value> {
    let mut args = vec![command.to_owned(), "--config".into(), config.to_owned()];
    args.extend(images.iter().map(|p| p.display().to_string()));
    json_lines(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

fn json_lines(args: &[&str]) -> Vec<serde_json::Value> {
    let out = glimpse(args, &[]);
    assert!(out.status.success(), "glimpse {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect()
}

/// The ids of [`exported_records`], oldest first.
pub fn exported_ids(config: &Path) -> Vec<String> {
    exported_records(config).iter().map(|r| r["id"].as_str().expect("every record has an id").to_owned()).collect()
}

/// Polls `cond` every 100 ms until it holds; panics with `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
