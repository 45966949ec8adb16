//! `glimpse check`: validate the config, load both models, open every source and, with
//! `[pinecone]`, ask the index for its dimension. Every problem is listed, not just the first.

use std::path::Path;
use std::time::Duration;

use crate::config::Config;
use crate::detect::Detector;
use crate::embed::Embedder;
use crate::redact::redact_uri;
use crate::source;
use crate::sync::{self, PineconeClient};

/// How long a source gets to deliver its first frame.
const SOURCE_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs every check; returns the problems found (empty when the deployment is healthy).
pub fn check(file: &Path) -> Vec<String> {
    let config = match Config::load(file) {
        Ok(c) => c,
        Err(e) => return e.problems.iter().map(|p| e.describe(p)).collect(),
    };
    let mut problems = Vec::new();
    let detector = Detector::load(&config.detector);
    if let Err(e) = &detector {
        problems.push(format!("detector.model: {e}"));
    }
    let dimension = match Embedder::load(&config.embedder) {
        Ok(embedder) => {
            println!("ok: embedder {} ({}-d)", config.embedder.model.display(), embedder.dimension());
            Some(embedder.dimension())
        }
        Err(e) => {
            problems.push(format!("embedder.model: {e}"));
            None
        }
    };
    if detector.is_ok() {
        println!("ok: detector {}", config.detector.model.display());
    }
    match source::init() {
        Ok(()) => {
            for camera in &config.cameras {
                match source::probe(camera, SOURCE_TIMEOUT) {
                    Ok((w, h)) => println!("ok: camera {} ({}) gives {w}x{h} frames", camera.name, redact_uri(&camera.uri)),
                    Err(e) => problems.push(format!("camera {} ({}): {e}", camera.name, redact_uri(&camera.uri))),
                }
            }
        }
        Err(e) => problems.push(format!("{e:#}")),
    }
    if let Some(p) = &config.pinecone {
        match p.api_key().map_err(|e| anyhow::anyhow!(e)).and_then(|key| Ok(PineconeClient::new(p, &key)?)) {
            Ok(client) => match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => match (dimension, rt.block_on(client.describe_index_stats())) {
                    (_, Err(e)) => problems.push(format!("pinecone: {e}")),
                    (Some(dim), Ok(stats)) if stats.dimension.is_some_and(|d| d as usize != dim) => problems.push(format!(
                        "pinecone: {}",
                        sync::SyncError::Dimension { index: stats.dimension.unwrap_or_default() as usize, embedder: dim }
                    )),
                    (_, Ok(stats)) => println!("ok: pinecone index reachable (dimension {:?})", stats.dimension),
                },
                Err(e) => problems.push(format!("cannot start the async runtime: {e}")),
            },
            Err(e) => problems.push(format!("pinecone: {e:#}")),
        }
    }
    problems
}
