//! Text embeddings with CLIP's text tower (with its projection) on the configured engine, and CLIP's tokenizer
//! (`tokenizers`' tokenizer.json): start token, tokens, end token, truncated to the 77-token
//! context with the end token kept, padded with the end token. Outputs are L2-normalised, in the
//! same space as the image embeddings of the same checkpoint.

use std::path::{Path, PathBuf};

use crate::model::{signature, Engine, Input, Model, ModelError, Shapes};

/// CLIP's context length, tokens.
pub const CONTEXT: usize = 77;
const END_OF_TEXT: u32 = 49_407;

#[derive(Debug, thiserror::Error)]
pub enum TextError {
    #[error("tokenizer {}: {reason}; it must be CLIP's tokenizer.json (models/export.py writes one)", path.display())]
    Tokenizer { path: PathBuf, reason: String },
    #[error(transparent)]
    Model(#[from] ModelError),
}

pub struct TextEmbedder {
    tokenizer: tokenizers::Tokenizer,
    tokenizer_path: PathBuf,
    model: Model,
    dimension: usize,
    /// Whether the model takes ids of any length. Then only the ids up to the first end token
    /// run: CLIP's text tower is causal and pools at that token, so the padding after it
    /// changes nothing, and a short query costs a fraction of 77 tokens.
    trims: bool,
}

impl TextEmbedder {
    /// Loads the tokenizer and the model, and embeds an empty text once (which also measures
    /// the output dimension). A model of any length runs only a query's own ids once a sample
    /// shows that the padding changes nothing.
    pub fn load(model: &Path, tokenizer: &Path, engine: &Engine) -> Result<Self, TextError> {
        let tokenizer_path = tokenizer.to_owned();
        let tokenizer = tokenizers::Tokenizer::from_file(tokenizer)
            .map_err(|e| TextError::Tokenizer { path: tokenizer_path.clone(), reason: e.to_string() })?;
        let any_length = matches!(signature::read(model)?.inputs[0].dims[..], [_, None]);
        let shapes = if any_length { Shapes::AnyTokens } else { Shapes::TokenIds([1, CONTEXT]) };
        let model = Model::open(engine, model, shapes)?;
        let mut embedder = Self { tokenizer, tokenizer_path, model, dimension: 0, trims: false };
        embedder.dimension = embedder.embed("")?.len();
        if any_length {
            embedder.trims = embedder.trimming_changes_nothing()?;
        }
        Ok(embedder)
    }

    /// Whether a sample query's embedding is the same on its own ids as on all 77: true for
    /// CLIP's causal tower, which pools at the first end token; a tower that pools otherwise
    /// keeps running every query padded.
    fn trimming_changes_nothing(&mut self) -> Result<bool, TextError> {
        const SAMPLE: &str = "a red bicycle by the gate";
        let padded = self.embed(SAMPLE)?;
        self.trims = true;
        let trimmed = self.embed(SAMPLE)?;
        self.trims = false;
        let apart = padded.iter().zip(&trimmed).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        if apart > 1e-5 {
            tracing::warn!(
                model = %self.model.path().display(), apart,
                "the text tower's embedding of a short query changes with its padding (it does not pool at the first end token): every query runs all 77 tokens"
            );
        }
        Ok(apart <= 1e-5)
    }

    pub fn dimension(&self) -> usize {
        self.dimension
    }

    /// Where the model runs: `tract`, or an ONNX Runtime execution provider.
    pub fn provider(&self) -> &str {
        self.model.provider()
    }

    /// The model's input for `text`: exactly [`CONTEXT`] ids.
    pub fn token_ids(&self, text: &str) -> Result<Vec<u32>, TextError> {
        let encoding = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| TextError::Tokenizer { path: self.tokenizer_path.clone(), reason: e.to_string() })?;
        let mut ids = encoding.get_ids().to_vec();
        if ids.len() > CONTEXT {
            ids.truncate(CONTEXT - 1);
            ids.push(END_OF_TEXT);
        }
        ids.resize(CONTEXT, END_OF_TEXT);
        Ok(ids)
    }

    /// The L2-normalised embedding of `text`.
    pub fn embed(&mut self, text: &str) -> Result<Vec<f32>, TextError> {
        let mut ids: Vec<i64> = self.token_ids(text)?.into_iter().map(i64::from).collect();
        if self.trims {
            let end = ids.iter().position(|&id| id == i64::from(END_OF_TEXT)).map_or(ids.len(), |at| at + 1);
            ids.truncate(end);
        }
        let outputs = self.model.run(Input::TokenIds { shape: [1, ids.len()], data: ids })?;
        let mut v = self.model.embedding(outputs, "text_embeds")?;
        super::l2_normalise(&mut v);
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(path: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
    }

    fn embedder(engine: &Engine) -> TextEmbedder {
        TextEmbedder::load(&repo("models/tiny/clip-text-tiny-random.onnx"), &repo("models/tiny/clip-tokenizer.json"), engine)
            .expect("loads")
    }

    fn golden() -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(repo("tests/media/text_golden.json")).expect("golden")).expect("JSON")
    }

    #[test]
    fn token_ids_equal_transformers_clip_tokenizer_on_every_golden_string() {
        let embedder = embedder(&Engine::Tract);
        let tokens = golden()["tokens"].as_array().expect("tokens").clone();
        assert!(tokens.len() >= 500);
        let mut differ = Vec::new();
        for entry in &tokens {
            let text = entry["text"].as_str().expect("text");
            let expected: Vec<u32> = entry["ids"].as_array().expect("ids").iter().map(|v| v.as_u64().expect("id") as u32).collect();
            let ids = embedder.token_ids(text).expect("tokenizes");
            if ids[..expected.len()] != expected[..] || ids[expected.len()..].iter().any(|id| *id != END_OF_TEXT) {
                differ.push(text.to_owned());
            }
        }
        assert!(
            differ.is_empty(),
            "{} of {} strings tokenize differently, e.g. {:?}",
            differ.len(),
            tokens.len(),
            &differ[..differ.len().min(5)]
        );
    }

    #[test]
    fn a_tower_of_any_length_runs_only_the_query_s_own_tokens() {
        // The committed tower's length is symbolic (models/export.py --symbolic-tokens); the
        // golden embeddings were made on all 77 padded ids, and the next test holds both paths
        // to them.
        for engine in crate::model::test_engines() {
            let embedder = embedder(&engine);
            assert!(embedder.trims, "{}", embedder.model.provider());
        }
    }

    #[test]
    fn a_tower_of_fixed_length_gets_all_77_ids_and_the_same_embeddings() {
        let path = repo("models/tiny/clip-text-tiny-random.onnx");
        let mut fixed = embedder(&Engine::Tract);
        fixed.model = Model::open(&Engine::Tract, &path, Shapes::TokenIds([1, CONTEXT])).expect("a fixed-length plan");
        fixed.trims = false;
        let mut trimmed = embedder(&Engine::Tract);
        for entry in golden()["embeddings"].as_array().expect("embeddings") {
            let text = entry["text"].as_str().expect("text");
            let (a, b) = (fixed.embed(text).expect("embeds"), trimmed.embed(text).expect("embeds"));
            let apart = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
            assert!(apart < 1e-5, "{text:?}: {apart}");
        }
    }

    #[test]
    fn embeddings_on_both_engines_equal_python_onnxruntime_s() {
        for engine in crate::model::test_engines() {
            let mut embedder = embedder(&engine);
            for entry in golden()["embeddings"].as_array().expect("embeddings") {
                let text = entry["text"].as_str().expect("text");
                let expected: Vec<f32> =
                    entry["embedding"].as_array().expect("embedding").iter().map(|v| v.as_f64().expect("number") as f32).collect();
                let got = embedder.embed(text).expect("embeds");
                let cosine: f32 = got.iter().zip(&expected).map(|(a, b)| a * b).sum();
                assert!(cosine >= 0.9999, "{} {text:?}: cosine {cosine}", embedder.model.provider());
            }
        }
    }

    #[test]
    fn a_missing_or_foreign_tokenizer_is_named() {
        let model = repo("models/tiny/clip-text-tiny-random.onnx");
        let missing = TextEmbedder::load(&model, Path::new("/nonexistent/tokenizer.json"), &Engine::Tract).err().expect("fails");
        assert!(missing.to_string().contains("/nonexistent/tokenizer.json"), "{missing}");
        let foreign = TextEmbedder::load(&model, &repo("models/manifest.toml"), &Engine::Tract).err().expect("fails");
        assert!(foreign.to_string().contains("CLIP's tokenizer.json"), "{foreign}");
    }
}
