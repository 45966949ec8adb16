//! An emulator of Pinecone's data plane (`../shared/pinecone/`, API 2025-10 and 2026-04) on
//! loopback, as strict as the real service about every documented limit, with fault injection.
//!
//! Implemented: `POST /vectors/upsert`, `POST /vectors/update` (by id or by metadata filter;
//! values and `setMetadata`), `POST /describe_index_stats`, `GET /vectors/fetch`, `POST /query`
//! (vector or id, `topK`, metadata filters; `query.rs`). Injected faults and outages meet the
//! writes: upserts and updates.
//! Every request needs `Api-Key` and a supported `X-Pinecone-Api-Version`; bodies need
//! `Content-Type: application/json`. Errors are `{"code", "message", "details"}` (rpcStatus).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Map, Value};

pub const API_VERSIONS: [&str; 2] = ["2025-10", "2026-04"];
const MAX_VECTORS: usize = 1000;
const MAX_BODY: usize = 2 * 1024 * 1024;
const MAX_METADATA: usize = 40 * 1024;
const MAX_ID: usize = 512;
// gRPC status codes used in rpcStatus bodies.
const INVALID_ARGUMENT: u16 = 3;
const UNAUTHENTICATED: u16 = 16;
const UNAVAILABLE: u16 = 14;
const RESOURCE_EXHAUSTED: u16 = 8;

/// What the next upsert requests meet instead of (or before) normal handling.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Answer with this HTTP status (and `Retry-After` seconds, if given) without storing.
    Status(u16, Option<u64>),
    /// Wait this long, then handle the request normally.
    Delay(Duration),
    /// Close the connection without answering (the request is not stored).
    Drop,
}

#[derive(Clone, Debug)]
pub struct Stored {
    pub values: Vec<f32>,
    pub metadata: Map<String, Value>,
}

#[derive(Default)]
struct Index {
    api_key: String,
    dimension: usize,
    namespaces: HashMap<String, BTreeMap<String, Stored>>,
    faults: VecDeque<Fault>,
    /// An outage: every upsert fails with this status until then.
    down_until: Option<(std::time::Instant, u16)>,
    upsert_requests: usize,
    update_requests: usize,
    refused: usize,
    largest_batch: usize,
    largest_body: usize,
    rejected: Vec<String>,
}

type Shared = Arc<Mutex<Index>>;

pub struct Emulator {
    pub url: String,
    index: Shared,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Emulator {
    pub fn start(api_key: &str, dimension: usize) -> Self {
        Self::start_on(0, api_key, dimension)
    }

    /// Like [`Emulator::start`], on a given loopback port (0: any free one).
    pub fn start_on(port: u16, api_key: &str, dimension: usize) -> Self {
        let index: Shared = Arc::new(Mutex::new(Index { api_key: api_key.into(), dimension, ..Default::default() }));
        let app = Router::new()
            .route("/vectors/upsert", post(upsert))
            .route("/describe_index_stats", post(describe_index_stats))
            .route("/vectors/fetch", get(fetch))
            .route("/vectors/update", post(update))
            .route("/query", post(query))
            .layer(DefaultBodyLimit::max(64 * 1024 * 1024))
            .with_state(index.clone());
        let (addr_tx, addr_rx) = std::sync::mpsc::channel::<SocketAddr>();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("emulator runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("bind emulator");
                addr_tx.send(listener.local_addr().expect("emulator address")).expect("report address");
                axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stop_rx.await;
                    })
                    .await
                    .expect("emulator serves");
            });
        });
        let addr = addr_rx.recv_timeout(Duration::from_secs(10)).expect("emulator started");
        Self { url: format!("http://{addr}"), index, stop: Some(stop_tx), thread: Some(thread) }
    }

    /// Fails every upsert with `status` for `duration` from now (an outage).
    pub fn fail_for(&self, status: u16, duration: Duration) {
        self.index.lock().expect("emulator lock").down_until = Some((std::time::Instant::now() + duration, status));
    }

    /// Upsert requests refused since start (faults and outages included).
    pub fn refused(&self) -> usize {
        self.index.lock().expect("emulator lock").refused
    }

    pub fn inject(&self, faults: impl IntoIterator<Item = Fault>) {
        self.index.lock().expect("emulator lock").faults.extend(faults);
    }

    pub fn vectors(&self, namespace: &str) -> BTreeMap<String, Stored> {
        self.index.lock().expect("emulator lock").namespaces.get(namespace).cloned().unwrap_or_default()
    }

    pub fn count(&self, namespace: &str) -> usize {
        self.index.lock().expect("emulator lock").namespaces.get(namespace).map_or(0, |n| n.len())
    }

    pub fn upsert_requests(&self) -> usize {
        self.index.lock().expect("emulator lock").upsert_requests
    }

    /// Update requests that were applied.
    pub fn update_requests(&self) -> usize {
        self.index.lock().expect("emulator lock").update_requests
    }

    pub fn largest_batch(&self) -> (usize, usize) {
        let i = self.index.lock().expect("emulator lock");
        (i.largest_batch, i.largest_body)
    }

    /// Every id stored in `namespace`.
    pub fn ids(&self, namespace: &str) -> std::collections::BTreeSet<String> {
        self.index.lock().expect("emulator lock").namespaces.get(namespace).map(|n| n.keys().cloned().collect()).unwrap_or_default()
    }

    pub fn rejected(&self) -> Vec<String> {
        self.index.lock().expect("emulator lock").rejected.clone()
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn error(status: StatusCode, code: u16, message: impl Into<String>) -> Response {
    (status, Json(json!({ "code": code, "message": message.into(), "details": [] }))).into_response()
}

/// Header checks shared by every endpoint; `Err` is the response to send instead (large, but
/// built only on the rejection path).
#[allow(clippy::result_large_err)]
fn authorize(index: &Index, headers: &HeaderMap, has_body: bool) -> Result<(), Response> {
    let key = headers.get("api-key").and_then(|v| v.to_str().ok());
    if key != Some(index.api_key.as_str()) {
        return Err(error(StatusCode::UNAUTHORIZED, UNAUTHENTICATED, "Invalid API Key"));
    }
    let version = headers.get("x-pinecone-api-version").and_then(|v| v.to_str().ok());
    if !version.is_some_and(|v| API_VERSIONS.contains(&v)) {
        return Err(error(
            StatusCode::BAD_REQUEST,
            INVALID_ARGUMENT,
            format!("unsupported or missing X-Pinecone-Api-Version: {version:?}"),
        ));
    }
    let json_body = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next().is_some_and(|t| t.trim() == "application/json"));
    if has_body && !json_body {
        return Err(error(StatusCode::UNSUPPORTED_MEDIA_TYPE, INVALID_ARGUMENT, "Content-Type must be application/json"));
    }
    Ok(())
}

/// Header checks, then the injected fault or outage a write meets; `Err` is the answer to send.
async fn meet_faults(index: &Shared, headers: &HeaderMap) -> Result<(), Response> {
    let fault = {
        let mut i = index.lock().expect("emulator lock");
        authorize(&i, headers, true)?;
        match i.down_until {
            Some((until, status)) if std::time::Instant::now() < until => Some(Fault::Status(status, None)),
            _ => i.faults.pop_front(),
        }
    };
    if matches!(fault, Some(Fault::Status(..)) | Some(Fault::Drop)) {
        index.lock().expect("emulator lock").refused += 1;
    }
    match fault {
        Some(Fault::Status(status, retry_after)) => {
            let code = match status {
                429 => RESOURCE_EXHAUSTED,
                _ => UNAVAILABLE,
            };
            let mut response = error(StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE), code, "injected fault");
            if let Some(s) = retry_after {
                response.headers_mut().insert("retry-after", s.into());
            }
            return Err(response);
        }
        Some(Fault::Delay(d)) => tokio::time::sleep(d).await,
        // Unwinding out of a handler makes hyper close the connection with no response;
        // resume_unwind skips the panic hook, so nothing is printed.
        Some(Fault::Drop) => std::panic::resume_unwind(Box::new("injected dropped connection")),
        None => {}
    }
    Ok(())
}

async fn upsert(State(index): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(response) = meet_faults(&index, &headers).await {
        return response;
    }
    let mut i = index.lock().expect("emulator lock");
    match validate_upsert(&body, i.dimension) {
        Ok((namespace, vectors)) => {
            i.upsert_requests += 1;
            i.largest_batch = i.largest_batch.max(vectors.len());
            i.largest_body = i.largest_body.max(body.len());
            let n = vectors.len();
            let ns = i.namespaces.entry(namespace).or_default();
            for (id, stored) in vectors {
                ns.insert(id, stored);
            }
            Json(json!({ "upsertedCount": n })).into_response()
        }
        Err(message) => {
            i.rejected.push(message.clone());
            error(StatusCode::BAD_REQUEST, INVALID_ARGUMENT, message)
        }
    }
}

/// Checks an upsert body against every limit in `../shared/pinecone/README.md`.
pub fn validate_upsert(body: &[u8], dimension: usize) -> Result<(String, Vec<(String, Stored)>), String> {
    if body.len() > MAX_BODY {
        return Err(format!("request size {} exceeds the 2 MB limit", body.len()));
    }
    let request: Value = serde_json::from_slice(body).map_err(|e| format!("body is not valid JSON: {e}"))?;
    let request = request.as_object().ok_or("body must be a JSON object")?;
    let namespace = match request.get("namespace") {
        None => String::new(),
        Some(Value::String(s)) if s == "__default__" => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err("namespace must be a string".into()),
    };
    let vectors = request.get("vectors").and_then(Value::as_array).ok_or("vectors is required and must be an array")?;
    if vectors.is_empty() || vectors.len() > MAX_VECTORS {
        return Err(format!("vectors must hold 1 to {MAX_VECTORS} items, got {}", vectors.len()));
    }
    let mut out: Vec<(String, Stored)> = Vec::with_capacity(vectors.len());
    for v in vectors {
        let v = v.as_object().ok_or("each vector must be an object")?;
        let id = v.get("id").and_then(Value::as_str).ok_or("vector id is required and must be a string")?;
        if id.is_empty() || id.chars().count() > MAX_ID {
            return Err(format!("vector id must be 1 to {MAX_ID} characters"));
        }
        if out.iter().any(|(seen, _)| seen == id) {
            return Err(format!("duplicate vector id {id:?} in one request"));
        }
        let values = v.get("values").and_then(Value::as_array).ok_or_else(|| format!("vector {id}: values is required"))?;
        let values: Vec<f32> = values
            .iter()
            .map(|x| x.as_f64().map(|f| f as f32).filter(|f| f.is_finite()))
            .collect::<Option<_>>()
            .ok_or_else(|| format!("vector {id}: values must be finite numbers"))?;
        if values.len() != dimension {
            return Err(format!("Vector dimension {} does not match the dimension of the index {dimension}", values.len()));
        }
        if values.iter().all(|x| *x == 0.0) {
            return Err(format!("vector {id}: dense vectors must contain at least one non-zero value"));
        }
        let metadata = match v.get("metadata") {
            None => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(_) => return Err(format!("vector {id}: metadata must be an object")),
        };
        check_metadata(id, &metadata)?;
        out.push((id.to_owned(), Stored { values, metadata }));
    }
    Ok((namespace, out))
}

async fn update(State(index): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(response) = meet_faults(&index, &headers).await {
        return response;
    }
    let mut i = index.lock().expect("emulator lock");
    let dimension = i.dimension;
    let outcome = serde_json::from_slice::<Value>(&body)
        .map_err(|e| format!("body is not valid JSON: {e}"))
        .and_then(|request| apply_update(&mut i.namespaces, &request, dimension));
    match outcome {
        Ok(answer) => {
            i.update_requests += 1;
            Json(answer).into_response()
        }
        Err(message) => {
            i.rejected.push(message.clone());
            error(StatusCode::BAD_REQUEST, INVALID_ARGUMENT, message)
        }
    }
}

/// `UpdateRequest`: one record by `id`, or every record that matches `filter` (`dryRun` only
/// counts them); `values` replace the vector, `setMetadata` adds or replaces fields. An id that
/// is not stored changes nothing. The answer is `UpdateResponse`: `matchedRecords` for a filter.
pub fn apply_update(
    namespaces: &mut HashMap<String, BTreeMap<String, Stored>>,
    request: &Value,
    dimension: usize,
) -> Result<Value, String> {
    const KEYS: [&str; 7] = ["id", "values", "sparseValues", "setMetadata", "namespace", "filter", "dryRun"];
    let request = request.as_object().ok_or("body must be a JSON object")?;
    if let Some(unknown) = request.keys().find(|k| !KEYS.contains(&k.as_str())) {
        return Err(format!("unknown field {unknown:?} in an update request"));
    }
    if request.contains_key("sparseValues") {
        return Err("sparseValues: this index is dense".into());
    }
    let namespace = match request.get("namespace") {
        None => "",
        Some(Value::String(s)) if s == "__default__" => "",
        Some(Value::String(s)) => s,
        Some(_) => return Err("namespace must be a string".into()),
    };
    let values = match request.get("values") {
        None => None,
        Some(v) => {
            let values: Option<Vec<f32>> =
                v.as_array().and_then(|a| a.iter().map(|x| x.as_f64().map(|f| f as f32).filter(|f| f.is_finite())).collect());
            let values = values.ok_or("values must be an array of finite numbers")?;
            if values.len() != dimension {
                return Err(format!("Vector dimension {} does not match the dimension of the index {dimension}", values.len()));
            }
            if values.iter().all(|x| *x == 0.0) {
                return Err("dense vectors must contain at least one non-zero value".into());
            }
            Some(values)
        }
    };
    let set = match request.get("setMetadata") {
        None => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => return Err("setMetadata must be an object".into()),
    };
    let empty = BTreeMap::new();
    let ns = namespaces.get(namespace).unwrap_or(&empty);
    let targets: Vec<String> = match (request.get("id"), request.get("filter")) {
        (Some(Value::String(id)), None) if !id.is_empty() && id.chars().count() <= MAX_ID => {
            ns.contains_key(id).then(|| id.clone()).into_iter().collect()
        }
        (Some(_), None) => return Err(format!("id must be a string of 1 to {MAX_ID} characters")),
        (None, Some(Value::Object(filter))) => {
            let mut matched = Vec::new();
            for (id, stored) in ns.iter() {
                if query::matches(filter, &stored.metadata)? {
                    matched.push(id.clone());
                }
            }
            matched
        }
        (None, Some(_)) => return Err("filter must be an object".into()),
        _ => return Err("give exactly one of id or filter".into()),
    };
    if request.get("filter").is_some() && values.is_some() {
        return Err("values can only be updated by id".into());
    }
    let dry_run = match request.get("dryRun") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err("dryRun must be a boolean".into()),
    };
    // Every target's new metadata is checked before any is changed: a rejected update changes nothing.
    let mut updated = Vec::with_capacity(targets.len());
    for id in &targets {
        let mut metadata = ns[id].metadata.clone();
        metadata.extend(set.clone());
        check_metadata(id, &metadata)?;
        updated.push((id, metadata));
    }
    for (id, metadata) in updated.into_iter().filter(|_| !dry_run) {
        let stored = namespaces.get_mut(namespace).and_then(|ns| ns.get_mut(id)).expect("a target is stored");
        stored.metadata = metadata;
        if let Some(values) = &values {
            stored.values = values.clone();
        }
    }
    Ok(match request.contains_key("filter") {
        true => json!({ "matchedRecords": targets.len() }),
        false => json!({}),
    })
}

/// Pinecone's rules for metadata: at most 40 KB, flat, strings, numbers, booleans or lists of
/// strings.
fn check_metadata(id: &str, metadata: &Map<String, Value>) -> Result<(), String> {
    let size = serde_json::to_vec(metadata).map_or(usize::MAX, |b| b.len());
    if size > MAX_METADATA {
        return Err(format!("vector {id}: metadata size {size} exceeds the limit of {MAX_METADATA} bytes"));
    }
    for (key, value) in metadata {
        let ok = match value {
            Value::String(_) | Value::Number(_) | Value::Bool(_) => true,
            Value::Array(items) => items.iter().all(Value::is_string),
            _ => false,
        };
        if !ok {
            return Err(format!("vector {id}: metadata value of {key:?} must be a string, number, boolean or list of strings"));
        }
    }
    Ok(())
}

async fn describe_index_stats(State(index): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let i = index.lock().expect("emulator lock");
    if let Err(r) = authorize(&i, &headers, true) {
        return r;
    }
    if serde_json::from_slice::<Map<String, Value>>(&body).is_err() {
        return error(StatusCode::BAD_REQUEST, INVALID_ARGUMENT, "body must be a JSON object");
    }
    let namespaces: Map<String, Value> = i.namespaces.iter().map(|(k, v)| (k.clone(), json!({ "vectorCount": v.len() }))).collect();
    let total: usize = i.namespaces.values().map(BTreeMap::len).sum();
    Json(json!({
        "namespaces": namespaces,
        "dimension": i.dimension,
        "indexFullness": 0.0,
        "totalVectorCount": total,
        "metric": "cosine",
        "vectorType": "dense",
    }))
    .into_response()
}

async fn fetch(State(index): State<Shared>, headers: HeaderMap, RawQuery(query): RawQuery) -> Response {
    let i = index.lock().expect("emulator lock");
    if let Err(r) = authorize(&i, &headers, false) {
        return r;
    }
    let mut ids = Vec::new();
    let mut namespace = String::new();
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match &*k {
            "ids" => ids.push(v.into_owned()),
            "namespace" => namespace = v.into_owned(),
            _ => {}
        }
    }
    if ids.is_empty() {
        return error(StatusCode::BAD_REQUEST, INVALID_ARGUMENT, "ids is required");
    }
    let empty = BTreeMap::new();
    let ns = i.namespaces.get(&namespace).unwrap_or(&empty);
    let vectors: Map<String, Value> = ids
        .iter()
        .filter_map(|id| ns.get(id).map(|s| (id.clone(), json!({ "id": id, "values": s.values, "metadata": s.metadata }))))
        .collect();
    Json(json!({ "vectors": vectors, "namespace": namespace, "usage": { "readUnits": 1 } })).into_response()
}

async fn query(State(index): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let mut i = index.lock().expect("emulator lock");
    if let Err(r) = authorize(&i, &headers, true) {
        return r;
    }
    match query::query(&body, i.dimension, &i.namespaces) {
        Ok(answer) => Json(answer).into_response(),
        Err(message) => {
            i.rejected.push(message.clone());
            error(StatusCode::BAD_REQUEST, INVALID_ARGUMENT, message)
        }
    }
}

mod query;

#[cfg(test)]
mod strictness_tests;
