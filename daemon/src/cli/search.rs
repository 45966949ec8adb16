//! `glimpse search`: find what the cameras saw in the index on the device, by a picture or by
//! example, and show it as a table, JSON lines or one self-contained HTML page.

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine as _;

use crate::config::Config;
use crate::embed::Embedder;
use crate::index::{Hit, Index, Query};

/// What to search for, and how to show it.
pub struct Search {
    pub config: PathBuf,
    pub text: Option<String>,
    pub image: Option<PathBuf>,
    pub like: Option<String>,
    pub cameras: Vec<String>,
    pub labels: Vec<String>,
    pub device: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    pub top_k: usize,
    /// Query the index on this device even when `[pinecone]` is configured.
    pub local: bool,
    pub json: bool,
    pub html: Option<PathBuf>,
}

/// Why a search could not run: one line for the operator.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("give exactly one of --text, --image or --like")]
    NoQuery,
    #[error("text search needs CLIP's text tower: set embedder.text_model and embedder.tokenizer (models/export.py exports both)")]
    NoTextTower,
    #[error("{0}")]
    Text(#[from] crate::embed::text::TextError),
    #[error("cannot read the image {}: {reason}", path.display())]
    Image { path: PathBuf, reason: String },
    #[error("{0}")]
    Model(#[from] crate::model::ModelError),
    #[error("{0}")]
    Engine(#[from] crate::model::RuntimeError),
    #[error("no record {0:?} in the local index (it keeps [search] retain_days of records)")]
    UnknownRecord(String),
    #[error("no record {0:?} in the local index or in Pinecone's namespace; copy an id from a search's results")]
    UnknownAnywhere(String),
    #[error("{0}")]
    Index(#[from] crate::index::IndexError),
    #[error("{what} {text:?} is not a time: use RFC 3339 (2026-12-01T08:00:00Z) or an age such as 2h or 3d")]
    Time { what: &'static str, text: String },
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
    #[error("pinecone: {0}")]
    Secret(#[from] crate::secrets::SecretError),
    #[error("pinecone: {0}")]
    Pinecone(#[from] crate::sync::SyncError),
    #[error("cannot start the async runtime: {0}")]
    Runtime(String),
}

pub use crate::index::MAX_TOP_K;

/// `--top-k`: a number of matches from 1 to [`MAX_TOP_K`].
pub fn parse_top_k(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(k) if (1..=MAX_TOP_K).contains(&k) => Ok(k),
        _ => Err(format!("must be a number of matches from 1 to {MAX_TOP_K} (Pinecone returns at most {MAX_TOP_K} with metadata)")),
    }
}

pub fn run(search: &Search) -> Result<(), SearchError> {
    let config = Config::load(&search.config)?;
    let since_ms = search.since.as_deref().map(|t| parse_time("--since", t)).transpose()?;
    let until_ms = search.until.as_deref().map(|t| parse_time("--until", t)).transpose()?;
    let vector = query_vector(search, &config)?;
    let index = Index::open_to_search(&config.device.data_dir, &config.search, None)?;
    let (cameras, labels) = (search.cameras.clone(), search.labels.clone());
    let query = Query { vector, top_k: search.top_k, cameras, labels, since_ms, until_ms };
    let mut hits = match (&config.pinecone, search.local) {
        (Some(pinecone), false) => query_pinecone(pinecone, search, &query)?,
        _ => index.search(&query)?,
    };
    if let Some(device) = &search.device {
        hits.retain(|h| &h.metadata.device == device);
    }
    let crops = config.crops.dir(&config.device.data_dir);
    match (&search.html, search.json) {
        (Some(path), _) => std::fs::write(path, html(&hits, &crops, &describe(search)))
            .map_err(|source| SearchError::Write { path: path.clone(), source })?,
        (None, true) => print_json(&hits),
        (None, false) => print_table(&hits),
    }
    Ok(())
}

/// Queries Pinecone (`POST /query`) with the same filter semantics as the local index.
fn query_pinecone(config: &crate::sync::PineconeConfig, search: &Search, query: &Query) -> Result<Vec<Hit>, SearchError> {
    use crate::sync::{PineconeClient, QueryBy};
    let client = PineconeClient::new(config, &config.api_key()?)?;
    // A record the index on the device still has is looked for by its vector; else Pinecone
    // looks the id up itself, and an id query that finds nothing (not even the record) names it.
    let by = match &search.like {
        Some(id) if query.vector.is_empty() => QueryBy::Id(id),
        _ => QueryBy::Vector(&query.vector),
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| SearchError::Runtime(e.to_string()))?;
    let filter = crate::sync::filter_for(query, search.device.as_deref(), &[]);
    let filtered = filter.is_some();
    let answer = runtime.block_on(client.query(by, query.top_k, filter));
    if matches!(by, QueryBy::Id(_)) && crate::sync::is_unknown_id(&answer, filtered) {
        return Err(SearchError::UnknownAnywhere(search.like.clone().unwrap_or_default()));
    }
    Ok(answer?.into_iter().filter_map(crate::sync::Match::into_hit).collect())
}

/// The embedding to search with: of an image file, or of a record already in the index.
fn query_vector(search: &Search, config: &Config) -> Result<Vec<f32>, SearchError> {
    match (&search.text, &search.image, &search.like) {
        (Some(text), None, None) => {
            let mut embedder = config.embedder.load_text(&config.engine()?).ok_or(SearchError::NoTextTower)??;
            Ok(embedder.embed(text)?)
        }
        (None, Some(path), None) => {
            let image = image::open(path).map_err(|e| SearchError::Image { path: path.clone(), reason: e.to_string() })?;
            Ok(Embedder::load(&config.embedder, &config.engine()?, Some(&config.form_memory()))?.embed(&image.to_rgb8())?)
        }
        // Pinecone looks up a record the index on the device no longer has (`id` in the query).
        (None, None, Some(id)) if config.pinecone.is_some() && !search.local => {
            let index = Index::open_to_search(&config.device.data_dir, &config.search, None)?;
            Ok(index.vector_of(id)?.unwrap_or_default())
        }
        (None, None, Some(id)) => {
            let index = Index::open_to_search(&config.device.data_dir, &config.search, None)?;
            index.vector_of(id)?.ok_or_else(|| SearchError::UnknownRecord(id.clone()))
        }
        _ => Err(SearchError::NoQuery),
    }
}

/// `--since`/`--until`: see [`crate::clock::parse_instant`].
pub fn parse_time(what: &'static str, text: &str) -> Result<i64, SearchError> {
    crate::clock::parse_instant(text).ok_or_else(|| SearchError::Time { what, text: text.to_owned() })
}

fn describe(search: &Search) -> String {
    match (&search.text, &search.image, &search.like) {
        (Some(text), _, _) => format!("text {text:?}"),
        (_, Some(path), _) => format!("image {}", path.display()),
        (_, _, Some(id)) => format!("like {id}"),
        _ => String::new(),
    }
}

/// One JSON line per match, in the documented shape.
fn json_line(hit: &Hit) -> serde_json::Value {
    let m = &hit.metadata;
    serde_json::json!({
        "id": hit.id, "score": hit.score, "device": m.device, "camera": m.camera, "ts": m.ts, "label": m.label,
        "x": m.x, "y": m.y, "w": m.w, "h": m.h, "track_id": m.track_id, "crop": m.crop,
    })
}

fn print_json(hits: &[Hit]) {
    let mut out = std::io::stdout().lock();
    for hit in hits {
        let _ = writeln!(out, "{}", json_line(hit));
    }
}

fn print_table(hits: &[Hit]) {
    if hits.is_empty() {
        println!("no matches");
        return;
    }
    println!("{:>6}  {:<12} {:<19}  {:<12} {:<20} crop", "score", "camera", "time", "label", "box");
    for hit in hits {
        let m = &hit.metadata;
        let b = format!("{}x{}+{}+{}", m.w, m.h, m.x, m.y);
        println!(
            "{:>6.3}  {:<12} {:<19}  {:<12} {:<20} {}",
            hit.score,
            m.camera,
            crate::clock::local_time(m.ts),
            m.label,
            b,
            m.crop.as_deref().unwrap_or("-")
        );
    }
}

/// One page that opens anywhere: every thumbnail inlined, each with its caption.
fn html(hits: &[Hit], crops: &Path, query: &str) -> String {
    let escape = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;");
    let mut cards = String::new();
    for hit in hits {
        let m = &hit.metadata;
        // A key comes from the index or from Pinecone, which other devices write: only a
        // relative path without `..` is read, so no other file ends up in the page.
        let safe = |key: &&str| Path::new(key).components().all(|c| matches!(c, std::path::Component::Normal(_)));
        let image = match m.crop.as_deref().filter(safe).map(|key| std::fs::read(crops.join(key))) {
            Some(Ok(jpeg)) => format!(
                "<img alt=\"{}\" src=\"data:image/jpeg;base64,{}\">",
                escape(&m.label),
                base64::engine::general_purpose::STANDARD.encode(jpeg)
            ),
            _ => "<div class=\"missing\">no crop</div>".to_owned(),
        };
        let caption = format!("{} · {} · {} · {:.3}", escape(&m.camera), crate::clock::local_time(m.ts), escape(&m.label), hit.score);
        cards += &format!("<figure data-id=\"{}\">{image}<figcaption>{caption}</figcaption></figure>\n", escape(&hit.id));
    }
    format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Glimpse: {q}</title><style>\
         body{{font-family:sans-serif;margin:1em}}main{{display:flex;flex-wrap:wrap;gap:12px}}\
         figure{{margin:0;width:200px}}img{{max-width:200px;max-height:200px;display:block}}\
         figcaption{{font-size:12px;color:#333}}.missing{{width:200px;height:120px;background:#eee}}\
         </style></head><body><h1>{n} match(es) for {q}</h1><main>\n{cards}</main></body></html>\n",
        q = escape(query),
        n = hits.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc_3339_or_an_age() {
        assert_eq!(parse_time("--since", "1970-01-02T00:00:00Z").ok(), Some(86_400_000));
        assert_eq!(parse_time("--since", "2026-12-01T14:33:45.5+01:00").ok(), Some(1_796_132_025_500));
        let two_hours_ago = parse_time("--since", "2h").expect("an age");
        assert!((crate::clock::unix_ms() - two_hours_ago - 7_200_000).abs() < 1000);
        assert!(parse_time("--until", "yesterday").is_err_and(|e| e.to_string().contains("--until \"yesterday\" is not a time")));
        assert!(parse_time("--since", "2026-13-01T00:00:00Z").is_err());
    }

    #[test]
    fn a_bare_number_or_an_age_before_1970_is_refused_with_the_accepted_forms() {
        for text in ["1700000000000", "3600", "99999999999999d", "18446744073709551615h"] {
            let error = parse_time("--since", text).expect_err(text).to_string();
            assert!(error.contains("an age such as 2h"), "{text}: {error}");
        }
    }

    #[test]
    fn the_page_reads_crops_only_below_the_crop_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("secret.txt"), "do not embed").expect("write");
        let crops = dir.path().join("crops");
        let mut hit = Hit { id: "a".into(), score: 1.0, metadata: crate::record::test_record("a", "c", 0, vec![]).metadata };
        hit.metadata.crop = Some("../secret.txt".into());
        let page = html(&[hit], &crops, "like a");
        assert!(page.contains("no crop") && !page.contains("data:image"), "{page}");
    }
}
