//! A real browser for the pages' tests: Debian's chromium, headless, driven by its
//! chromedriver over W3C WebDriver (fantoccini), on loopback. Console messages are kept
//! (`goog:loggingPrefs`) so that a test can require that nothing went wrong on a page.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder};
use serde_json::{json, Value};

pub struct Browser {
    pub client: Client,
    runtime: tokio::runtime::Runtime,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    pub fn start() -> Self {
        let port = super::free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver must be installed (scripts/deps.sh installs chromium-driver)");
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let profile = tempfile::tempdir().expect("profile");
        // The flags keep Chromium off the network it cannot reach (updates, sync, lookups).
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-quic",
            "--no-first-run",
        ];
        let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        let capabilities = json!({
            "goog:chromeOptions": { "binary": "/usr/bin/chromium", "args": args },
            "goog:loggingPrefs": { "browser": "ALL" },
        });
        let capabilities = capabilities.as_object().expect("an object").clone();
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = runtime.block_on(async {
            loop {
                let connector = hyper_util::client::legacy::connect::HttpConnector::new();
                match ClientBuilder::new(connector).capabilities(capabilities.clone()).connect(&url).await {
                    Ok(client) => break client,
                    Err(e) if Instant::now() > deadline => panic!("chromedriver did not start a session: {e}"),
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        });
        Self { client, runtime, driver, _profile: profile }
    }

    /// Runs one step of the test against the browser.
    pub fn run<T>(&self, step: impl std::future::Future<Output = T>) -> T {
        self.runtime.block_on(step)
    }

    /// Evaluates `script` (a function body that returns a value) in the page.
    pub fn eval(&self, script: &str) -> Value {
        self.run(self.client.execute(script, vec![])).unwrap_or_else(|e| panic!("script {script:?}: {e}"))
    }

    /// Waits until `script` returns true in the page.
    pub fn wait_for(&self, what: &str, script: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.eval(script) != Value::Bool(true) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The page's path and query, as the browser shows it.
    pub fn location(&self) -> String {
        let url = self.run(self.client.current_url()).expect("the current URL");
        format!("{}{}", url.path(), url.query().map(|q| format!("?{q}")).unwrap_or_default())
    }

    /// Saves a PNG of the page as `name`.png into `$GLIMPSE_TEST_SCREENSHOTS`, when set: for
    /// people to look at the pages a test went through.
    pub fn screenshot(&self, name: &str) {
        let Some(dir) = std::env::var_os("GLIMPSE_TEST_SCREENSHOTS") else { return };
        let png = self.run(self.client.screenshot()).expect("a screenshot");
        std::fs::write(std::path::Path::new(&dir).join(format!("{name}.png")), png).expect("write the screenshot");
    }

    /// Waits until the browser is at a location that starts with `prefix` (a click that
    /// navigates returns before the next page arrives), and returns it.
    pub fn wait_until_at(&self, prefix: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let here = self.location();
            if here.starts_with(prefix) && self.eval("return document.readyState") == "complete" {
                return here;
            }
            assert!(Instant::now() < deadline, "timed out waiting to reach {prefix}, still at {here}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The console messages since the last call: `(level, message)`.
    pub fn console(&self) -> Vec<(String, String)> {
        let entries = self.run(self.client.issue_cmd(BrowserLog)).expect("chromedriver's browser log");
        entries
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| (e["level"].as_str().unwrap_or_default().to_owned(), e["message"].as_str().unwrap_or_default().to_owned()))
            .collect()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let client = self.client.clone();
        let _ = self.runtime.block_on(client.close());
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// chromedriver's console log (`POST /session/{id}/se/log`), which W3C WebDriver leaves out.
#[derive(Debug)]
struct BrowserLog;

impl WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(&self, base: &url::Url, session: Option<&str>) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/se/log", session.unwrap_or_default()))
    }

    fn method_and_body(&self, _url: &url::Url) -> (reqwest::Method, Option<String>) {
        (reqwest::Method::POST, Some(r#"{"type":"browser"}"#.to_owned()))
    }
}
