//! Text embeddings with CLIP's text tower (with its projection) in tract, and CLIP's tokenizer
//! (`tokenizers`' tokenizer.json): start token, tokens, end token, truncated to the 77-token
//! context with the end token kept, padded with the end token. Outputs are L2-normalised, in the
//! same space as the image embeddings of the same checkpoint.

use std::path::{Path, PathBuf};

use tract_onnx::prelude::*;

use crate::model::{ModelError, OnnxFile, Plan};

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
    file: OnnxFile,
    plan: Plan,
    dimension: usize,
}

impl TextEmbedder {
    /// Loads the tokenizer and the model, and embeds an empty text once (which also measures
    /// the output dimension).
    pub fn load(model: &Path, tokenizer: &Path) -> Result<Self, TextError> {
        let tokenizer_path = tokenizer.to_owned();
        let tokenizer = tokenizers::Tokenizer::from_file(tokenizer)
            .map_err(|e| TextError::Tokenizer { path: tokenizer_path.clone(), reason: e.to_string() })?;
        let mut file = OnnxFile::open(model)?;
        let plan = file.plan_token_ids([1, CONTEXT])?;
        file.release_model();
        let mut embedder = Self { tokenizer, tokenizer_path, file, plan, dimension: 0 };
        embedder.dimension = embedder.embed("")?.len();
        Ok(embedder)
    }

    pub fn dimension(&self) -> usize {
        self.dimension
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
        let ids: Vec<i64> = self.token_ids(text)?.into_iter().map(i64::from).collect();
        let input = tract_ndarray::Array2::from_shape_vec((1, CONTEXT), ids).expect("CONTEXT ids").into_tensor();
        let outputs = self.file.run(&self.plan, input)?;
        let out = self.file.output(&outputs, 0)?;
        if out.ndim() != 2 || out.shape()[0] != 1 || out.shape()[1] == 0 {
            return Err(ModelError::Shape {
                path: self.file.path.clone(),
                reason: format!("output must be text_embeds [batch, dimension], found {:?}", out.shape()),
            }
            .into());
        }
        let mut v: Vec<f32> = out.iter().copied().collect();
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

    fn embedder() -> TextEmbedder {
        TextEmbedder::load(&repo("models/tiny/clip-text-tiny-random.onnx"), &repo("models/tiny/clip-tokenizer.json")).expect("loads")
    }

    fn golden() -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(repo("tests/media/text_golden.json")).expect("golden")).expect("JSON")
    }

    #[test]
    fn token_ids_equal_transformers_clip_tokenizer_on_every_golden_string() {
        let embedder = embedder();
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
    fn embeddings_equal_onnxruntime_s() {
        let mut embedder = embedder();
        for entry in golden()["embeddings"].as_array().expect("embeddings") {
            let text = entry["text"].as_str().expect("text");
            let expected: Vec<f32> =
                entry["embedding"].as_array().expect("embedding").iter().map(|v| v.as_f64().expect("number") as f32).collect();
            let got = embedder.embed(text).expect("embeds");
            let cosine: f32 = got.iter().zip(&expected).map(|(a, b)| a * b).sum();
            assert!(cosine >= 0.9999, "{text:?}: cosine {cosine}");
        }
    }

    #[test]
    fn a_missing_or_foreign_tokenizer_is_named() {
        let model = repo("models/tiny/clip-text-tiny-random.onnx");
        let missing = TextEmbedder::load(&model, Path::new("/nonexistent/tokenizer.json")).err().expect("fails");
        assert!(missing.to_string().contains("/nonexistent/tokenizer.json"), "{missing}");
        let foreign = TextEmbedder::load(&model, &repo("models/manifest.toml")).err().expect("fails");
        assert!(foreign.to_string().contains("CLIP's tokenizer.json"), "{foreign}");
    }
}
