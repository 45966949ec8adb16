//! A small client for the Pinecone data plane, following `db_data_2025-10.oas.yaml`.

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};

use super::{ApiKey, PineconeConfig, MAX_BODY_BYTES};
use crate::index::Query;
use crate::record::Record;

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("cannot reach the Pinecone index: {0}")]
    Transport(String),
    #[error("Pinecone answered {status}: {message}")]
    Status { status: u16, message: String, retry_after: Option<Duration> },
    #[error("Pinecone's answer could not be read: {0}")]
    Decode(String),
    #[error("the Pinecone index holds {index}-dimensional vectors but the embedder produces {embedder}; use an index of dimension {embedder} or the matching embedder model")]
    Dimension { index: usize, embedder: usize },
    #[error("one record alone is larger than Pinecone's 2 MB request limit: {0}")]
    TooLarge(String),
    #[error("invalid Pinecone settings: {0}")]
    Setup(String),
}

impl SyncError {
    /// A 4xx that condemns the batch's content: retrying it would fail the same way.
    pub fn rejects_batch(&self) -> bool {
        match self {
            SyncError::Status { status, .. } => matches!(status, 400 | 413 | 422),
            SyncError::TooLarge(_) => true,
            _ => false,
        }
    }

    /// An answer that says the device is misconfigured (key, host) rather than the batch bad.
    pub fn is_configuration(&self) -> bool {
        matches!(self, SyncError::Status { status: 401 | 403 | 404, .. })
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            SyncError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// The parts of `describe_index_stats`' answer (`IndexDescription`) that Glimpse reads.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IndexStats {
    pub dimension: Option<i64>,
    #[serde(default)]
    pub total_vector_count: Option<i64>,
}

#[derive(Serialize)]
struct UpsertRequest<'a> {
    vectors: Vec<Vector<'a>>,
    namespace: &'a str,
}

#[derive(Serialize)]
struct Vector<'a> {
    id: &'a str,
    values: &'a [f32],
    metadata: &'a crate::record::Metadata,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UpsertResponse {
    upserted_count: Option<i64>,
}

/// What a query is near.
#[derive(Clone, Copy, Debug)]
pub enum QueryBy<'a> {
    Vector(&'a [f32]),
    Id(&'a str),
}

/// One match of `POST /query` (`ScoredVector`).
#[derive(Clone, Debug, Deserialize)]
pub struct Match {
    pub id: String,
    #[serde(default)]
    pub score: f32,
    /// The stored metadata (Pinecone may give numbers back as floats: `Metadata::from_stored`).
    #[serde(default, deserialize_with = "null_as_empty")]
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

impl Match {
    /// The match as a search hit; `None` for a vector whose metadata Glimpse did not write.
    pub fn into_hit(self) -> Option<crate::index::Hit> {
        let metadata = crate::record::Metadata::from_stored(&self.metadata)?;
        Some(crate::index::Hit { id: self.id, score: self.score, metadata })
    }
}

/// `"metadata": null` as no metadata.
fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<serde_json::Map<String, serde_json::Value>, D::Error> {
    Ok(Option::deserialize(d)?.unwrap_or_default())
}

/// Whether the answer to a query by id says Pinecone holds no vector with that id: a 400 or 404
/// for it, or no match at all without a filter (the vector itself would match).
pub fn is_unknown_id(answer: &Result<Vec<Match>, SyncError>, filtered: bool) -> bool {
    match answer {
        Ok(matches) => matches.is_empty() && !filtered,
        Err(e) => matches!(e, SyncError::Status { status: 400 | 404, .. }),
    }
}

#[derive(Deserialize)]
struct QueryResponse {
    #[serde(default)]
    matches: Vec<Match>,
}

/// `GET /vectors/fetch`'s answer (`FetchResponse`): the vectors found, by id.
#[derive(Deserialize)]
struct FetchResponse {
    #[serde(default)]
    vectors: std::collections::HashMap<String, Match>,
}

#[derive(Deserialize)]
struct RpcStatus {
    message: Option<String>,
}

#[derive(Clone)]
pub struct PineconeClient {
    http: reqwest::Client,
    base: String,
    namespace: String,
}

impl PineconeClient {
    pub fn new(config: &PineconeConfig, key: &ApiKey) -> Result<Self, SyncError> {
        let mut headers = HeaderMap::new();
        let mut key_header = HeaderValue::from_str(&key.0)
            .map_err(|_| SyncError::Setup("the API key contains characters not allowed in an HTTP header".into()))?;
        key_header.set_sensitive(true);
        headers.insert("Api-Key", key_header);
        let version =
            HeaderValue::from_str(&config.api_version).map_err(|_| SyncError::Setup("api_version is not a valid header value".into()))?;
        headers.insert("X-Pinecone-Api-Version", version);
        crate::tls::use_ring();
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(Duration::from_secs_f64(config.timeout_s))
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("glimpse/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| SyncError::Setup(e.to_string()))?;
        Ok(Self { http, base: config.host.trim_end_matches('/').to_owned(), namespace: config.namespace.clone() })
    }

    pub async fn describe_index_stats(&self) -> Result<IndexStats, SyncError> {
        let body = self.post("/describe_index_stats", b"{}".to_vec()).await?;
        serde_json::from_slice(&body).map_err(|e| SyncError::Decode(e.to_string()))
    }

    /// The `top_k` nearest vectors to `by` (a vector, or a stored vector's id), with their
    /// metadata, filtered by a Pinecone metadata `filter` (`POST /query`).
    pub async fn query(&self, by: QueryBy<'_>, top_k: usize, filter: Option<serde_json::Value>) -> Result<Vec<Match>, SyncError> {
        let mut request = serde_json::json!({ "topK": top_k, "namespace": self.namespace, "includeMetadata": true });
        match by {
            QueryBy::Vector(values) => request["vector"] = serde_json::json!(values),
            QueryBy::Id(id) => request["id"] = serde_json::json!(id),
        }
        if let Some(filter) = filter {
            request["filter"] = filter;
        }
        let answer = self.post("/query", request.to_string().into_bytes()).await?;
        let parsed: QueryResponse = serde_json::from_slice(&answer).map_err(|e| SyncError::Decode(e.to_string()))?;
        Ok(parsed.matches)
    }

    /// The metadata of the stored vector `id` (`GET /vectors/fetch`); `None` if none is stored.
    pub async fn fetch_metadata(&self, id: &str) -> Result<Option<serde_json::Map<String, serde_json::Value>>, SyncError> {
        let query =
            url::form_urlencoded::Serializer::new(String::new()).append_pair("ids", id).append_pair("namespace", &self.namespace).finish();
        let answer = self.send(self.http.get(format!("{}/vectors/fetch?{query}", self.base))).await?;
        let mut parsed: FetchResponse = serde_json::from_slice(&answer).map_err(|e| SyncError::Decode(e.to_string()))?;
        Ok(parsed.vectors.remove(id).map(|found| found.metadata))
    }

    /// Sets metadata fields of the stored vector `id` (`POST /vectors/update` with
    /// `setMetadata`; other fields stay). An id that is not stored changes nothing.
    pub async fn set_metadata(&self, id: &str, fields: serde_json::Value) -> Result<(), SyncError> {
        let request = serde_json::json!({ "id": id, "setMetadata": fields, "namespace": self.namespace });
        self.post("/vectors/update", request.to_string().into_bytes()).await?;
        Ok(())
    }

    /// Upserts `records` in one request (see [`PineconeClient::split`]); returns Pinecone's
    /// `upsertedCount`.
    pub async fn upsert(&self, records: &[Record]) -> Result<usize, SyncError> {
        let body = self.upsert_body(records)?;
        if body.len() > MAX_BODY_BYTES {
            return Err(SyncError::TooLarge(records.first().map(|r| r.id.clone()).unwrap_or_default()));
        }
        let answer = self.post("/vectors/upsert", body).await?;
        let parsed: UpsertResponse = serde_json::from_slice(&answer).map_err(|e| SyncError::Decode(e.to_string()))?;
        Ok(parsed.upserted_count.unwrap_or(0).max(0) as usize)
    }

    /// `records` cut into requests under Pinecone's 2 MB limit ([`MAX_BODY_BYTES`]), by halving,
    /// as ranges in record order. A record too large alone is a range of its own, which
    /// [`PineconeClient::upsert`] refuses (a dead letter, never a retry).
    pub fn split(&self, records: &[Record]) -> Vec<std::ops::Range<usize>> {
        // A bound first, so that the common batch is encoded once (by the upsert), not twice.
        let fits = |chunk: &[Record]| {
            body_bound(chunk, &self.namespace) <= MAX_BODY_BYTES || self.upsert_body(chunk).is_ok_and(|body| body.len() <= MAX_BODY_BYTES)
        };
        let mut ranges = Vec::new();
        let mut todo: Vec<std::ops::Range<usize>> = Vec::new();
        todo.push(0..records.len());
        while let Some(range) = todo.pop() {
            if range.len() <= 1 || fits(&records[range.clone()]) {
                ranges.push(range);
            } else {
                let middle = range.start + range.len() / 2;
                todo.push(middle..range.end);
                todo.push(range.start..middle);
            }
        }
        ranges
    }

    fn upsert_body(&self, records: &[Record]) -> Result<Vec<u8>, SyncError> {
        let request = UpsertRequest {
            vectors: records.iter().map(|r| Vector { id: &r.id, values: &r.values, metadata: &r.metadata }).collect(),
            namespace: &self.namespace,
        };
        serde_json::to_vec(&request).map_err(|e| SyncError::Setup(e.to_string()))
    }

    async fn post(&self, path: &str, body: Vec<u8>) -> Result<Vec<u8>, SyncError> {
        self.send(self.http.post(format!("{}{path}", self.base)).header(CONTENT_TYPE, "application/json").body(body)).await
    }

    /// The body of a 200 answer to `request`; any other answer as [`SyncError::Status`].
    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Vec<u8>, SyncError> {
        let response = request.send().await.map_err(|e| SyncError::Transport(describe_transport(&e)))?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|s| Duration::from_secs(s.min(300)));
        let bytes = response.bytes().await.map_err(|e| SyncError::Transport(describe_transport(&e)))?;
        if status == StatusCode::OK {
            return Ok(bytes.to_vec());
        }
        let message = serde_json::from_slice::<RpcStatus>(&bytes)
            .ok()
            .and_then(|s| s.message)
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).into_owned());
        Err(SyncError::Status { status: status.as_u16(), message, retry_after })
    }
}

/// The Pinecone metadata filter for an index query's filters, one `device` and people's names
/// (any of `user_labels`): `$in`, `$eq`, `$gte`, `$lte`, `$and`. The vector and `top_k` are
/// not filters.
pub fn filter_for(query: &Query, device: Option<&str>, user_labels: &[String]) -> Option<serde_json::Value> {
    use serde_json::json;
    let mut parts = Vec::new();
    if !query.cameras.is_empty() {
        parts.push(json!({ "camera": { "$in": query.cameras } }));
    }
    if !query.labels.is_empty() {
        parts.push(json!({ "label": { "$in": query.labels } }));
    }
    if !user_labels.is_empty() {
        parts.push(json!({ "user_label": { "$in": user_labels } }));
    }
    if let Some(device) = device {
        parts.push(json!({ "device": { "$eq": device } }));
    }
    if let Some(since) = query.since_ms {
        parts.push(json!({ "ts": { "$gte": since } }));
    }
    if let Some(until) = query.until_ms {
        parts.push(json!({ "ts": { "$lte": until } }));
    }
    match parts.len() {
        0 => None,
        1 => parts.pop(),
        _ => Some(json!({ "$and": parts })),
    }
}

/// At least the size of `records`' upsert body: an f32 is at most 16 characters in JSON (ryu's
/// shortest form, e.g. `-1.1754944e-38`) and a comma; an id or the namespace grows at most 6x
/// when escaped (`\u00XX`); metadata is written as it encodes alone; the rest is well inside 64
/// bytes a record and 1 KiB a body.
fn body_bound(records: &[Record], namespace: &str) -> usize {
    let metadata = |r: &Record| serde_json::to_vec(&r.metadata).map_or(usize::MAX / 2, |m| m.len());
    let base = 1024 + 6 * namespace.len();
    records.iter().map(|r| r.values.len() * 17 + 6 * r.id.len() + metadata(r) + 64).fold(base, usize::saturating_add)
}

/// reqwest's error text without the URL's query (never holds secrets here, but stays short).
fn describe_transport(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    let mut source = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}: {detail}")
    }
}
