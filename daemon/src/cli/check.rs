//! `glimpse check`: validate the config, check `data_dir`, load both models, open every source
//! and, with `[pinecone]`, ask the index for its dimension; embed each trigger's text, picture or
//! record. Every problem is listed, not just the first; what is fine is printed as `ok: …`.

use std::path::Path;
use std::time::Duration;

use crate::config::Config;
use crate::crops;
use crate::detect::Detector;
use crate::embed::Embedder;
use crate::model::Engine;
use crate::outbox;
use crate::source;
use crate::sync::{self, PineconeClient};
use crate::triggers::{self, Lookups as _, Source};
use crate::validate::{KeyPath, Problem};

/// How long a source gets to deliver its first frame.
const SOURCE_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs every check; returns the problems found (empty when the deployment is healthy).
pub fn check(file: &Path) -> Vec<String> {
    let config = match Config::load(file) {
        Ok(c) => c,
        Err(e) => return e.problems.iter().map(|p| e.describe(p)).collect(),
    };
    let mut problems = Vec::new();
    println!("ok: device.id {}", config.device.id);
    check_data_dir(&config, &mut problems);
    let dimension = check_models(&config, &mut problems);
    check_index(&config, dimension, &mut problems);
    check_cameras(&config, &mut problems);
    check_pinecone(&config, dimension, &mut problems);
    if let Some(warning) = config.mqtt.as_ref().and_then(|m| m.cleartext_password_warning()) {
        println!("warning: {warning}");
    }
    check_triggers(file, &config, &mut problems);
    check_http(&config, &mut problems);
    problems
}

/// The HTTP API's token can be read (the port is not tried: the running daemon may hold it).
fn check_http(config: &Config, problems: &mut Vec<String>) {
    let Some(http) = &config.http else { return };
    match http.token() {
        Ok(_) => println!("ok: HTTP API on {} with an access token", http.listen),
        Err(e) => problems.push(format!("http.token_file: {e}")),
    }
    match http.tls() {
        Ok(Some(_)) => println!("ok: HTTPS with http.cert_file and http.key_file"),
        Ok(None) => {}
        Err(e) => problems.push(e.to_string()),
    }
}

/// Each trigger's picture decodes, its record is in the local index, its text embeds.
fn check_triggers(file: &Path, config: &Config, problems: &mut Vec<String>) {
    let mut lookups = crate::supervisor::ConfigLookups::new(config);
    let mut found = Vec::new();
    for (i, trigger) in config.triggers.iter().enumerate() {
        let at = KeyPath::root().key("triggers").index(i);
        let result = match trigger.source() {
            Some(Source::Text(text)) => lookups.embed_text(&text).map(drop).map_err(|e| (at.key("text"), e)),
            Some(Source::Image(path)) => triggers::read_image(&path).map(drop).map_err(|e| (at.key("image"), e)),
            Some(Source::Record(id)) => lookups.record_vector(&id).map(drop).map_err(|e| (at.key("record"), e)),
            None => Ok(()),
        };
        match result {
            Ok(()) => println!("ok: trigger {}", trigger.name),
            Err((path, message)) => found.push(Problem::new(path, message)),
        }
    }
    problems.extend(crate::config::describe_found(file, found));
}

fn check_data_dir(config: &Config, problems: &mut Vec<String>) {
    match outbox::preflight(&config.device.data_dir, &config.outbox) {
        Ok(()) => println!("ok: data_dir {}", config.device.data_dir.display()),
        Err(e) => problems.push(format!("device.data_dir: {e}")),
    }
    if config.crops.enabled {
        let dir = config.crops.dir(&config.device.data_dir);
        match crops::check_writable(&dir) {
            Ok(()) => println!("ok: crops in {}", dir.display()),
            Err(e) => problems.push(format!("crops.store: {e}")),
        }
        check_remote_crops(config, problems);
    }
}

/// With an `s3://` store: writes and deletes a probe object (bucket, credentials, endpoint).
fn check_remote_crops(config: &Config, problems: &mut Vec<String>) {
    let remote = match crops::upload::Remote::from_config(&config.crops) {
        Ok(Some(remote)) => remote,
        Ok(None) => return,
        Err(e) => return problems.push(e.to_string()),
    };
    let probed = tokio::runtime::Builder::new_current_thread().enable_all().build().map(|rt| rt.block_on(remote.probe()));
    match probed {
        Ok(Ok(())) => println!("ok: crop store {} writable", remote.url()),
        Ok(Err(e)) => problems.push(format!("crops.store: {e}")),
        Err(e) => problems.push(format!("cannot start the async runtime: {e}")),
    }
}

/// Starts the engine and loads the models; the embedder's dimension when it loaded.
fn check_models(config: &Config, problems: &mut Vec<String>) -> Option<usize> {
    let engine = match config.engine() {
        Ok(engine) => engine,
        Err(e) => {
            problems.push(e.to_string());
            return None;
        }
    };
    let report = engine.report();
    match (&report.library, &report.version) {
        (Some(library), Some(version)) => println!("ok: engine {} {version} ({library})", report.engine),
        _ => println!("ok: engine {}", report.engine),
    }
    let memory = config.form_memory();
    match Detector::load(&config.detector, &engine, Some(&memory)) {
        Ok(detector) => {
            println!("ok: detector {} on {}", detector.form().file, detector.provider());
            println!("ok: detector form {} ({})", detector.form().form.name(), detector.form().reason);
            println!("ok: detector family {}, threshold {}", detector.head(), detector.threshold());
        }
        Err(e) => problems.push(format!("detector.model: {e}")),
    }
    let dimension = match Embedder::load(&config.embedder, &engine, Some(&memory)) {
        Ok(embedder) => {
            println!("ok: embedder {} ({}-d) on {}", embedder.form().file, embedder.dimension(), embedder.provider());
            println!("ok: embedder form {} ({})", embedder.form().form.name(), embedder.form().reason);
            Some(embedder.dimension())
        }
        Err(e) => {
            problems.push(format!("embedder.model: {e}"));
            None
        }
    };
    check_text_tower(config, &engine, dimension, problems);
    dimension
}

fn check_text_tower(config: &Config, engine: &Engine, dimension: Option<usize>, problems: &mut Vec<String>) {
    match config.embedder.load_text(engine) {
        None => {}
        Some(Ok(text)) if dimension.is_some_and(|d| d != text.dimension()) => problems.push(format!(
            "embedder.text_model: gives {}-d embeddings but the image model {}-d; use the text tower of the same checkpoint",
            text.dimension(),
            dimension.unwrap_or_default()
        )),
        Some(Ok(text)) => println!("ok: text embedder ({}-d) on {}", text.dimension(), text.provider()),
        Some(Err(e)) => problems.push(format!("embedder.text_model: {e}")),
    }
}

/// The index on the device holds the embedder's dimension (an index that cannot be opened is
/// not a problem here: the daemon moves it aside and fills a new one).
fn check_index(config: &Config, dimension: Option<usize>, problems: &mut Vec<String>) {
    let (Some(embedder), true) = (dimension, config.search.enabled) else { return };
    let Ok(index) = crate::index::Index::open_to_search(&config.device.data_dir, &config.search, None) else { return };
    match index.dimension() {
        Some(held) if held != embedder => {
            problems.push(format!("search: {}", crate::keeper::KeptError::Dimension { dir: index.dir().to_owned(), index: held, embedder }))
        }
        _ => println!("ok: index on the device ({} records)", index.len()),
    }
}

fn check_cameras(config: &Config, problems: &mut Vec<String>) {
    if let Err(e) = source::init() {
        problems.push(e.to_string());
        return;
    }
    for camera in &config.cameras {
        match source::probe(camera, SOURCE_TIMEOUT) {
            Ok((w, h)) => println!("ok: camera {} ({}) gives {w}x{h} frames", camera.name, camera.uri.redacted()),
            Err(e) => problems.push(format!("camera {} ({}): {e}", camera.name, camera.uri.redacted())),
        }
    }
}

fn check_pinecone(config: &Config, dimension: Option<usize>, problems: &mut Vec<String>) {
    let Some(p) = &config.pinecone else { return };
    let client = match p.api_key().map_err(anyhow::Error::from).and_then(|key| Ok(PineconeClient::new(p, &key)?)) {
        Ok(client) => client,
        Err(e) => return problems.push(format!("pinecone: {e:#}")),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return problems.push(format!("cannot start the async runtime: {e}")),
    };
    match (dimension, runtime.block_on(client.describe_index_stats())) {
        (_, Err(e)) => problems.push(format!("pinecone: {e}")),
        (Some(embedder), Ok(stats)) if stats.dimension.is_some_and(|d| d as usize != embedder) => {
            let index = stats.dimension.unwrap_or_default() as usize;
            problems.push(format!("pinecone: {}", sync::SyncError::Dimension { index, embedder }))
        }
        (_, Ok(stats)) => println!("ok: pinecone index reachable (dimension {:?})", stats.dimension),
    }
}
