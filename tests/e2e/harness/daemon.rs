//! Runs the real `glimpse` binary as a subprocess, with its logs captured to a file.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

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
        command.args(["run", "--config"]).arg(config).args(extra_args).env("GLIMPSE_LOG", "info,glimpse=debug");
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

    /// Waits until the log has at least `count` lines containing every one of `parts`.
    pub fn wait_for_log(&mut self, parts: &[&str], count: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.count_in_log(parts) < count {
            if Instant::now() > deadline || !matches!(self.child.try_wait(), Ok(None)) {
                panic!("log never had {count} line(s) with {parts:?} within {timeout:?}; log:\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn count_in_log(&self, parts: &[&str]) -> usize {
        self.logs().lines().filter(|l| parts.iter().all(|p| l.contains(p))).count()
    }

    /// The last stats JSON the daemon logged (without MQTT it logs them, and always at exit).
    pub fn last_stats(&self) -> serde_json::Value {
        let logs = self.logs();
        let line = logs.lines().filter(|l| l.contains(" stats stats=")).next_back().expect("stats logged");
        let json = line.split(" stats stats=").nth(1).expect("stats JSON");
        serde_json::from_str(json).expect("stats are JSON")
    }
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

/// Polls `cond` every 100 ms until it holds; panics with `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
