//! Prepares the configured triggers for the inference thread, at start and on every reload: texts
//! through the text tower (loaded for the occasion, then dropped), records from the local index,
//! pictures read from disk. Runs on the supervisor's thread, never on a tokio worker.

use crate::config::Config;
use crate::embed::text::TextEmbedder;
use crate::index::Index;
use crate::triggers::{self, Lookups, Prepared};

/// The text tower and the local index, each opened when a trigger first needs it.
pub struct ConfigLookups<'a> {
    config: &'a Config,
    text: Option<Result<TextEmbedder, String>>,
    index: Option<Result<Index, String>>,
}

impl<'a> ConfigLookups<'a> {
    pub fn new(config: &'a Config) -> Self {
        Self { config, text: None, index: None }
    }
}

impl Lookups for ConfigLookups<'_> {
    fn embed_text(&mut self, text: &str) -> Result<Vec<f32>, String> {
        let config = self.config;
        let embedder = self.text.get_or_insert_with(|| {
            let engine = config.engine().map_err(|e| e.to_string())?;
            match config.embedder.load_text(&engine) {
                Some(loaded) => loaded.map_err(|e| e.to_string()),
                None => Err("no text tower: set embedder.text_model and embedder.tokenizer".to_owned()),
            }
        });
        let embedder = embedder.as_mut().map_err(|e| e.clone())?;
        embedder.embed(text).map_err(|e| format!("cannot embed the text: {e}"))
    }

    fn record_vector(&mut self, id: &str) -> Result<Vec<f32>, String> {
        let (data_dir, search) = (&self.config.device.data_dir, &self.config.search);
        let index = self.index.get_or_insert_with(|| match search.enabled {
            true => Index::open_to_search(data_dir, search, None).map_err(|e| e.to_string()),
            false => Err("record triggers look records up in the local index, and [search] enabled is false".to_owned()),
        });
        let index = index.as_ref().map_err(|e| e.clone())?;
        match index.vector_of(id) {
            Ok(Some(vector)) => Ok(vector),
            Ok(None) => Err(format!("no record {id:?} in the local index (it keeps [search] retain_days of records)")),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// The configured triggers, prepared.
pub fn prepare(config: &Config) -> Vec<Prepared> {
    if config.triggers.is_empty() {
        return Vec::new();
    }
    let prepared = triggers::prepare(&config.triggers, &mut ConfigLookups::new(config));
    tracing::info!(triggers = prepared.len(), "triggers prepared");
    prepared
}
