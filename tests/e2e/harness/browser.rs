//! A real browser for the pages' tests: Debian's chromium, headless, driven by its
//! chromedriver over W3C WebDriver on loopback. The protocol is a handful of JSON requests, so
//! they go through the reqwest already in the tree (a WebDriver crate pulled in ICU and doubled
//! the pages' share of the build). Console messages are kept (`goog:loggingPrefs`) so that a
//! test can require that nothing went wrong on a page.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

/// W3C WebDriver's key for an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    http: reqwest::Client,
    /// `http://127.0.0.1:{port}/session/{id}`
    session: String,
    runtime: tokio::runtime::Runtime,
    _driver: Driver,
    _profile: tempfile::TempDir,
}

/// chromedriver, stopped when dropped: also when a session never started.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
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
        let driver = Driver(driver);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let profile = tempfile::tempdir().expect("profile");
        let http = {
            let _inside = runtime.enter(); // reqwest's timer needs the runtime
            super::http_client()
        };
        let new_session = json!({ "capabilities": { "alwaysMatch": capabilities(profile.path()) } });
        let url = format!("http://127.0.0.1:{port}/session");
        let deadline = Instant::now() + Duration::from_secs(30);
        let id = runtime.block_on(async {
            loop {
                match command(&http, reqwest::Method::POST, &url, Some(&new_session)).await {
                    Ok(value) => break value["sessionId"].as_str().expect("a session id").to_owned(),
                    Err(e) if Instant::now() > deadline => panic!("chromedriver did not start a session: {e}"),
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        });
        Self { http, session: format!("{url}/{id}"), runtime, _driver: driver, _profile: profile }
    }

    /// Sends one command of this session: `path` is relative to the session's URL.
    fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/{path}", self.session);
        self.runtime.block_on(command(&self.http, method, &url, body.as_ref())).unwrap_or_else(|e| panic!("WebDriver {path}: {e}"))
    }

    fn post(&self, path: &str, body: Value) -> Value {
        self.send(reqwest::Method::POST, path, Some(body))
    }

    pub fn goto(&self, url: &str) {
        self.post("url", json!({ "url": url }));
    }

    /// chromedriver's name for the first element that matches the CSS `selector`.
    fn element(&self, selector: &str) -> String {
        let found = self.post("element", json!({ "using": "css selector", "value": selector }));
        found[ELEMENT].as_str().unwrap_or_else(|| panic!("no element id for {selector}: {found}")).to_owned()
    }

    /// Replaces the text of the field that matches `selector`.
    pub fn type_into(&self, selector: &str, text: &str) {
        let id = self.element(selector);
        self.post(&format!("element/{id}/clear"), json!({}));
        self.post(&format!("element/{id}/value"), json!({ "text": text }));
    }

    /// Chooses the file at `path` in the file field that matches `selector`.
    pub fn choose_file(&self, selector: &str, path: &std::path::Path) {
        let id = self.element(selector);
        self.post(&format!("element/{id}/value"), json!({ "text": path.display().to_string() }));
    }

    pub fn click(&self, selector: &str) {
        let id = self.element(selector);
        self.post(&format!("element/{id}/click"), json!({}));
    }

    /// Evaluates `script` (a function body that returns a value) in the page.
    pub fn eval(&self, script: &str) -> Value {
        self.post("execute/sync", json!({ "script": script, "args": [] }))
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
        let url = self.send(reqwest::Method::GET, "url", None);
        let url = url::Url::parse(url.as_str().expect("a URL")).expect("the current URL");
        format!("{}{}", url.path(), url.query().map(|q| format!("?{q}")).unwrap_or_default())
    }

    /// Saves a PNG of the page as `name`.png into `$GLIMPSE_TEST_SCREENSHOTS`, when set: for
    /// people to look at the pages a test went through.
    pub fn screenshot(&self, name: &str) {
        let Some(dir) = std::env::var_os("GLIMPSE_TEST_SCREENSHOTS") else { return };
        let png = self.send(reqwest::Method::GET, "screenshot", None);
        let png = base64::engine::general_purpose::STANDARD.decode(png.as_str().expect("base64")).expect("a PNG");
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

    /// The console messages since the last call: `(level, message)`. chromedriver's own
    /// command (`se/log`): W3C WebDriver leaves console logs out.
    pub fn console(&self) -> Vec<(String, String)> {
        let entries = self.post("se/log", json!({ "type": "browser" }));
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
        // Chromium goes with its session; chromedriver with `_driver`, after this.
        let _ = self.runtime.block_on(async { self.http.delete(&self.session).send().await });
    }
}

/// Chromium headless, in its own profile, kept off the network it cannot reach (updates,
/// sync, lookups), with every console message kept.
fn capabilities(profile: &std::path::Path) -> Value {
    let mut args: Vec<String> = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-quic",
        "--no-first-run",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    args.push(format!("--user-data-dir={}", profile.display()));
    json!({
        "goog:chromeOptions": { "binary": "/usr/bin/chromium", "args": args },
        "goog:loggingPrefs": { "browser": "ALL" },
    })
}

/// One WebDriver request: its `value`, or the error chromedriver named.
async fn command(http: &reqwest::Client, method: reqwest::Method, url: &str, body: Option<&Value>) -> Result<Value, String> {
    let mut request = http.request(method, url);
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.map_err(|e| e.to_string())?;
    let status = response.status();
    let mut reply: Value = response.json().await.map_err(|e| e.to_string())?;
    let value = reply["value"].take();
    match status.is_success() {
        true => Ok(value),
        false => Err(format!("{status}: {} ({})", value["error"], value["message"])),
    }
}
