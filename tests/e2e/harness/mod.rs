//! Real components for end-to-end tests: mosquitto, gst-rtsp-server, a strict Pinecone
//! emulator, and the `glimpse` binary itself.

pub mod browser;
pub mod daemon;
pub mod http;
pub mod media;
pub mod mosquitto;
pub mod mqtt;
pub use pinecone_emulator as pinecone;
pub mod rtsp;
pub mod s3;

/// An HTTP client for talking to the daemon and Chromium's driver; a request that hangs fails
/// the test within a minute instead of holding it for ever.
pub fn http_client() -> reqwest::Client {
    glimpse::tls::use_ring();
    reqwest::Client::builder().timeout(std::time::Duration::from_secs(60)).build().expect("an HTTP client")
}

/// A loopback TCP port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// A config file for one camera, with the tiny test models; `extra` is appended verbatim.
pub struct ConfigBuilder {
    pub dir: tempfile::TempDir,
    text: String,
    /// The `[analysis]` section's body. Tests index every detection of every frame unless they
    /// ask for the motion gate and de-duplication, so record counts stay exact.
    analysis: String,
}

/// `[analysis]` for tests that count records: no motion gate, no de-duplication.
const EVERY_DETECTION: &str = "motion_gate = false\ndedupe = false\n";

impl ConfigBuilder {
    pub fn new(device: &str, detector: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let data_dir = dir.path().join("data");
        Self::with_data_dir(dir, &data_dir, device, detector)
    }

    /// A second config for the same device state: it uses `other`'s data_dir.
    pub fn sharing_data_dir(other: &TestConfig, device: &str, detector: &str) -> Self {
        Self::with_data_dir(tempfile::tempdir().expect("tempdir"), &other.dir.path().join("data"), device, detector)
    }

    fn with_data_dir(dir: tempfile::TempDir, data_dir: &std::path::Path, device: &str, detector: &str) -> Self {
        let text = format!(
            "[device]\nid = \"{device}\"\ndata_dir = \"{}\"\n\n[detector]\nmodel = \"{}\"\nthreshold = 0.9\nshortest_edge = 256\nlongest_edge = 512\n\n[embedder]\nmodel = \"{}\"\ntext_model = \"{}\"\ntokenizer = \"{}\"\n\n",
            data_dir.display(),
            daemon::model(detector),
            daemon::model("clip-tiny-random.onnx"),
            daemon::model("clip-text-tiny-random.onnx"),
            daemon::model("clip-tokenizer.json"),
        );
        Self { dir, text, analysis: EVERY_DETECTION.to_owned() }
    }

    /// The detector's threshold left to its family's default (not the tiny DETRs' 0.9).
    pub fn family_threshold(mut self) -> Self {
        self.text = self.text.replace("threshold = 0.9\n", "");
        self
    }

    /// Another image embedder from models/tiny than `clip-tiny-random.onnx`.
    pub fn embedder(mut self, file: &str) -> Self {
        self.text = self.text.replace(&daemon::model("clip-tiny-random.onnx"), &daemon::model(file));
        self
    }

    pub fn camera(mut self, name: &str, uri: &str, sample_fps: f64) -> Self {
        self.text += &format!("[[cameras]]\nname = \"{name}\"\nuri = \"{uri}\"\nsample_fps = {sample_fps}\n\n");
        self
    }

    pub fn pinecone(mut self, url: &str, namespace: &str) -> Self {
        self.text += &format!("[pinecone]\nhost = \"{url}\"\nnamespace = \"{namespace}\"\napi_version = \"2025-10\"\n\n");
        self
    }

    /// Appends TOML text as it is (extra sections such as `[outbox]`).
    pub fn raw(mut self, toml: &str) -> Self {
        self.text += toml;
        self.text += "\n";
        self
    }

    /// Replaces the `[analysis]` section's body (motion gate and de-duplication settings).
    pub fn analysis(mut self, body: &str) -> Self {
        self.analysis = body.to_owned();
        self
    }

    pub fn mqtt(mut self, port: u16, stats_interval_s: f64) -> Self {
        self.text +=
            &format!("[mqtt]\nhost = \"127.0.0.1\"\nport = {port}\ntopic_prefix = \"glimpse\"\nstats_interval_s = {stats_interval_s}\n\n");
        self
    }

    /// Writes the file; it lives (in its temporary directory) as long as the returned value.
    pub fn write(self) -> TestConfig {
        let path = self.dir.path().join("glimpse.toml");
        std::fs::write(&path, format!("{}[analysis]\n{}", self.text, self.analysis)).expect("write config");
        TestConfig { path, dir: self.dir }
    }
}

pub struct TestConfig {
    pub path: std::path::PathBuf,
    pub dir: tempfile::TempDir,
}

impl std::ops::Deref for TestConfig {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.path
    }
}
