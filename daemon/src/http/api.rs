//! The JSON API under `/api`: the stats and cameras, search, and each record with its crop.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::fleet::FleetError;
use super::library::{is_plain_key, By, LibraryError, RecordId, Scope, Search};
use super::{ApiError, App};
use crate::history::{EventQuery, Track};
use crate::index::{Hit, Query, MAX_TOP_K};
use crate::record::Metadata;
use crate::sync::QueryBy;

/// Matches a search returns unless `top_k` says otherwise.
pub const DEFAULT_TOP_K: usize = 20;

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/api/stats", get(stats))
        .route("/metrics", get(metrics))
        .route("/api/cameras", get(cameras))
        .route("/api/triggers", get(triggers))
        .route("/api/search", get(search).post(search_by_picture))
        .route("/api/events", get(events))
        .route("/api/records/{id}", get(record))
        .route("/api/records/{id}/label", put(set_label))
        .route("/api/records/{id}/crop.jpg", get(crop))
        .route("/api/records/{id}/snapshot.jpg", get(snapshot))
}

async fn stats(State(app): State<Arc<App>>) -> Json<Value> {
    Json(app.stats.current())
}

/// The stats in Prometheus' text format (`metrics.rs`).
async fn metrics(State(app): State<Arc<App>>) -> Response {
    let text = super::metrics::render(&app.stats.current());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}

/// Each trigger by name: its matches, last match (with the record and crop) and error, as in
/// the stats (triggers run with `[mqtt]`, where their matches go).
async fn triggers(State(app): State<Arc<App>>) -> Json<Value> {
    Json(app.stats.current()["triggers"].take())
}

async fn cameras(State(app): State<Arc<App>>) -> Json<Value> {
    Json(app.stats.cameras())
}

async fn search(State(app): State<Arc<App>>, RawQuery(query): RawQuery) -> Result<Json<Value>, ApiError> {
    let search = parse_search(query.as_deref().unwrap_or_default())?;
    Ok(matches_json(&find(app, search).await?))
}

/// The matches of `search`: in the index on the device, or across the fleet through Pinecone.
pub(super) async fn find(app: Arc<App>, search: Search) -> Result<Vec<Hit>, ApiError> {
    if search.scope == Scope::Device {
        return read(app, move |app| app.library.search(&search)).await;
    }
    let Some(fleet) = app.fleet.clone() else {
        return Err(ApiError::bad("scope", "fleet needs [pinecone], where every device's records are: this box searches only its own"));
    };
    let (search, vector) = read(app, move |app| app.library.vector_for(&search.by).map(|v| (search, v))).await?;
    // A record this device does not have: Pinecone finds its neighbours by its id.
    let by = match (&vector, search.by.like()) {
        (Some(vector), _) => QueryBy::Vector(vector),
        (None, id) => QueryBy::Id(id.unwrap_or_default()),
    };
    fleet.search(by, &search.filter, &search.user_labels).await.map_err(fleet_error)
}

/// `POST /api/search`: the body is a picture (`image/jpeg` or `image/png`), the query string
/// the same filters as a search by words.
async fn search_by_picture(
    State(app): State<Arc<App>>,
    RawQuery(query): RawQuery,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    require_picture(&headers)?;
    let search = parse_search_by(query.as_deref().unwrap_or_default(), Some(body.to_vec()))?;
    Ok(matches_json(&find(app, search).await?))
}

/// A body that says it is a picture Glimpse reads: `image/jpeg` or `image/png`, else 415.
pub(super) fn require_picture(headers: &axum::http::HeaderMap) -> Result<(), ApiError> {
    let kind = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    match kind.split(';').next().map(str::trim) {
        Some("image/jpeg" | "image/png") => Ok(()),
        _ => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "content-type: send the picture as the body, with Content-Type image/jpeg or image/png",
        )),
    }
}

async fn events(State(app): State<Arc<App>>, RawQuery(query): RawQuery) -> Result<Json<Value>, ApiError> {
    let query = parse_events(query.as_deref().unwrap_or_default())?;
    let tracks = read(app, {
        let query = query.clone();
        move |app| Ok(app.library.events(&query))
    })
    .await?;
    let next = next_page(&tracks, query.limit).map(|c| c.to_string());
    Ok(Json(json!({ "events": tracks.iter().map(event_json).collect::<Vec<_>>(), "next_before": next })))
}

/// Where the next page starts: after the last track of a full page.
pub(super) fn next_page(tracks: &[Track], limit: usize) -> Option<crate::history::Cursor> {
    tracks.last().filter(|_| tracks.len() == limit).map(Track::cursor)
}

/// Events a page asks for unless `limit` says otherwise, and at most.
pub const DEFAULT_EVENTS: usize = 50;
pub const MAX_EVENTS: usize = 500;

/// The events a query string asks for: `camera=` and `label=` (repeatable), `since=`,
/// `before=` (the `next_before` of the page before: its last track) and `limit=`.
pub(super) fn parse_events(query: &str) -> Result<EventQuery, ApiError> {
    let mut wanted = EventQuery { limit: DEFAULT_EVENTS, ..EventQuery::default() };
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        let value = value.trim();
        match &*name {
            "camera" | "label" | "since" | "before" | "limit" if value.is_empty() => {}
            "camera" => wanted.cameras.push(value.to_owned()),
            "label" => wanted.labels.push(value.to_owned()),
            "since" => {
                wanted.since_ms = Some(
                    crate::clock::parse_instant(value)
                        .ok_or_else(|| ApiError::bad("since", "use RFC 3339 (2026-12-01T08:00:00Z) or an age such as 2h or 3d"))?,
                )
            }
            "before" => {
                let cursor = crate::history::Cursor::parse(value);
                wanted.after = Some(cursor.ok_or_else(|| ApiError::bad("before", "the next_before of the page before, as it gave it"))?)
            }
            "limit" => {
                wanted.limit = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_EVENTS).contains(n))
                    .ok_or_else(|| ApiError::bad("limit", format!("a number from 1 to {MAX_EVENTS}")))?
            }
            other => return Err(ApiError::bad(other, "is not an events parameter (camera, label, since, before, limit)")),
        }
    }
    Ok(wanted)
}

/// One tracked object in the documented shape.
pub(super) fn event_json(t: &Track) -> Value {
    let record = t.record_id.as_deref();
    json!({
        "camera": t.camera, "track_id": t.track_id, "label": t.label, "top_score": t.top_score,
        "start_ts": t.start_ts, "end_ts": t.end_ts, "record_id": record, "crop": t.crop,
        "crop_url": record.filter(|_| t.crop.is_some()).map(|id| format!("/api/records/{id}/crop.jpg")),
        "record_url": record.map(record_url),
    })
}

async fn record(State(app): State<Arc<App>>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let id = record_id(&id)?;
    let (metadata, _) = find_record(&app, &id).await?;
    Ok(Json(record_json(id.as_str(), &metadata)))
}

/// Where a record was found.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Origin {
    /// In the index on this device.
    Here,
    /// In Pinecone, with fleet scope: another device's, or one this device no longer keeps.
    Fleet,
}

/// Record `id`'s metadata: from the index on the device, else (fleet scope) from Pinecone.
pub(super) async fn find_record(app: &Arc<App>, id: &RecordId) -> Result<(Metadata, Origin), ApiError> {
    let local = read(app.clone(), {
        let id = id.clone();
        move |app| app.library.find(&id)
    });
    match (local.await?, &app.fleet) {
        (Some(metadata), _) => Ok((metadata, Origin::Here)),
        (None, Some(fleet)) => fleet.record(id).await.map(|m| (m, Origin::Fleet)).map_err(fleet_error),
        (None, None) => Err(library_error(LibraryError::UnknownRecord(id.as_str().to_owned()))),
    }
}

/// The picture stored under `key`: in the crop store on the device, else (fleet scope) in the
/// fleet's bucket; `None` when neither has it.
pub(super) async fn picture(app: &Arc<App>, key: Option<&str>) -> Result<Option<axum::body::Bytes>, ApiError> {
    let Some(key) = key.filter(|key| is_plain_key(key)).map(str::to_owned) else { return Ok(None) };
    let local = read(app.clone(), {
        let key = key.clone();
        move |app| Ok(app.library.stored(&key))
    });
    match (local.await?, &app.fleet) {
        (Some(jpeg), _) => Ok(Some(jpeg.into())),
        (None, Some(fleet)) => fleet.picture(&key).await.map_err(fleet_error),
        (None, None) => Ok(None),
    }
}

/// Whether each picture `keys` names can be shown: on the device, else (fleet scope) fetched
/// from the fleet's bucket now, all at once, which keeps them cached for the page's requests.
pub(super) async fn can_show(app: &Arc<App>, keys: Vec<Option<String>>) -> Vec<bool> {
    let local = read(app.clone(), {
        let keys = keys.clone();
        move |app| Ok(keys.iter().map(|key| app.library.is_stored(key.as_deref())).collect::<Vec<_>>())
    });
    let mut shown = local.await.unwrap_or_else(|_| vec![false; keys.len()]);
    let Some(fleet) = app.fleet.clone() else { return shown };
    let mut lookups = tokio::task::JoinSet::new();
    for (i, key) in keys.into_iter().enumerate().filter(|(i, _)| !shown[*i]) {
        let Some(key) = key.filter(|key| is_plain_key(key)) else { continue };
        let fleet = fleet.clone();
        lookups.spawn(async move { (i, fleet.picture(&key).await.is_ok_and(|p| p.is_some())) });
    }
    for (i, found) in lookups.join_all().await {
        shown[i] = found;
    }
    shown
}

fn fleet_error(error: FleetError) -> ApiError {
    let message = error.to_string();
    match error {
        FleetError::UnknownRecord(_) => ApiError::new(StatusCode::NOT_FOUND, message),
        // The network or the bucket may be back soon; this box's own records still answer.
        FleetError::Pinecone(_) | FleetError::Bucket => ApiError::new(StatusCode::BAD_GATEWAY, message),
    }
}

/// `PUT /api/records/{id}/label` with `{"label": "our red van"}` (empty takes it away).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewLabel {
    label: String,
}

async fn set_label(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    body: Result<Json<NewLabel>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let id = record_id(&id)?;
    let Json(new) = body.map_err(|e| ApiError::bad("label", format!("send JSON {{\"label\": \"...\"}}: {}", e.body_text())))?;
    let metadata = label_record(app, id.clone(), &new.label).await?;
    Ok(Json(record_json(id.as_str(), &metadata)))
}

/// Names record `id` `label` (checked first), for the API and the record page.
pub(super) async fn label_record(app: Arc<App>, id: RecordId, label: &str) -> Result<Metadata, ApiError> {
    let label = crate::labels::check(label).map_err(|e| ApiError::bad("label", e))?;
    read(app, move |app| app.library.set_label(&id, &label)).await
}

async fn crop(State(app): State<Arc<App>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = record_id(&id)?;
    let (metadata, _) = find_record(&app, &id).await?;
    let missing = || library_error(LibraryError::NoCrop(id.as_str().to_owned()));
    let jpeg = picture(&app, metadata.crop.as_deref()).await?.ok_or_else(missing)?;
    // A record's crop never changes: browsers may keep it.
    Ok(([(header::CONTENT_TYPE, "image/jpeg"), (header::CACHE_CONTROL, "private, max-age=86400")], jpeg).into_response())
}

/// `?box=1` draws the record's box on its frame.
#[derive(serde::Deserialize)]
struct SnapshotQuery {
    #[serde(default, rename = "box")]
    with_box: Option<String>,
}

async fn snapshot(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    query: axum::extract::Query<SnapshotQuery>,
) -> Result<Response, ApiError> {
    let id = record_id(&id)?;
    let with_box = match query.with_box.as_deref() {
        None | Some("0") => false,
        Some("1") => true,
        Some(_) => return Err(ApiError::bad("box", "1 draws the record's box, 0 (or nothing) does not")),
    };
    let (metadata, _) = find_record(&app, &id).await?;
    let missing = || LibraryError::NoSnapshot(id.as_str().to_owned());
    let jpeg = picture(&app, metadata.snapshot.as_deref()).await?.ok_or_else(|| library_error(missing()))?;
    let jpeg = match with_box {
        // A snapshot that cannot be drawn on is as good as none.
        true => {
            let missing = missing();
            read(app, move |_| super::library::with_box(&jpeg, &metadata).map_err(|_| missing)).await?.into()
        }
        false => jpeg,
    };
    Ok(([(header::CONTENT_TYPE, "image/jpeg"), (header::CACHE_CONTROL, "private, max-age=86400")], jpeg).into_response())
}

/// Runs a blocking read of the library off the tokio workers, on the API's own reader threads
/// (`readers.rs`: below inference's priority, at most [`super::MAX_BLOCKING_READS`] at once).
pub(super) async fn read<T: Send + 'static>(
    app: Arc<App>,
    work: impl FnOnce(&App) -> Result<T, LibraryError> + Send + 'static,
) -> Result<T, ApiError> {
    let readers = app.clone();
    match readers.readers.run(move || work(&app)).await {
        Some(result) => result.map_err(library_error),
        None => Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "the read failed (the server is stopping, or see the log)")),
    }
}

pub(super) fn library_error(error: LibraryError) -> ApiError {
    let message = error.to_string();
    match error {
        LibraryError::UnknownRecord(_) | LibraryError::NoCrop(_) | LibraryError::NoSnapshot(_) => {
            ApiError::new(StatusCode::NOT_FOUND, message)
        }
        LibraryError::NoTextTower => ApiError::bad("text", message),
        LibraryError::Picture(_) => ApiError::bad("body", message),
        LibraryError::Text(_) | LibraryError::Image(_) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message),
        // The keeper may be moving a damaged index aside at start: worth another try soon.
        LibraryError::Index(_) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message).retry_after(5),
        LibraryError::Labels(e) if e.is_disk_full() => {
            ApiError::new(StatusCode::INSUFFICIENT_STORAGE, format!("the disk is full, so the label was not kept: {e}"))
        }
        LibraryError::Labels(_) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message),
    }
}

pub(super) fn record_id(text: &str) -> Result<RecordId, ApiError> {
    RecordId::parse(text).ok_or_else(|| ApiError::bad("id", "a record id is {device}:{camera}:{frame_ms}:{box}, as a search returns it"))
}

/// The search a query string asks for: `text=` or `like=`, with `camera=`, `label=` and
/// `user_label=` (repeatable), `since=`, `until=`, `top_k=` and `scope=` (`device` or `fleet`).
pub(super) fn parse_search(query: &str) -> Result<Search, ApiError> {
    parse_search_by(query, None)
}

/// [`parse_search`], or with `picture` (an uploaded body) as what to search by.
pub(super) fn parse_search_by(query: &str, picture: Option<Vec<u8>>) -> Result<Search, ApiError> {
    let (mut text, mut like, mut cameras, mut labels, mut user_labels) = (None, None, Vec::new(), Vec::new(), Vec::new());
    let (mut since_ms, mut until_ms, mut top_k, mut scope) = (None, None, DEFAULT_TOP_K, Scope::Device);
    let time = |name: &str, value: &str| {
        crate::clock::parse_instant(value)
            .ok_or_else(|| ApiError::bad(name, "use RFC 3339 (2026-12-01T08:00:00Z) or an age such as 2h or 3d"))
    };
    const NAMES: [&str; 9] = ["text", "like", "camera", "label", "user_label", "since", "until", "top_k", "scope"];
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        let value = value.trim();
        match &*name {
            known if value.is_empty() && NAMES.contains(&known) => {} // an empty field of the page's form
            "text" | "like" if text.is_some() || like.is_some() => {
                return Err(ApiError::bad(&name, "give exactly one of text= or like=, once"))
            }
            "text" => text = Some(value.to_owned()),
            "like" => like = Some(record_id(value)?),
            "camera" => cameras.push(value.to_owned()),
            "label" => labels.push(value.to_owned()),
            "user_label" => user_labels.push(value.to_owned()),
            "since" => since_ms = Some(time("since", value)?),
            "until" => until_ms = Some(time("until", value)?),
            "top_k" => {
                top_k = value
                    .parse()
                    .ok()
                    .filter(|k| (1..=MAX_TOP_K).contains(k))
                    .ok_or_else(|| ApiError::bad("top_k", format!("a number from 1 to {MAX_TOP_K}")))?
            }
            "scope" if value == "device" => scope = Scope::Device,
            "scope" if value == "fleet" => scope = Scope::Fleet,
            "scope" => return Err(ApiError::bad("scope", "device (this box's records) or fleet (every device's, through Pinecone)")),
            other => {
                return Err(ApiError::bad(
                    other,
                    "is not a search parameter (text, like, camera, label, user_label, since, until, top_k, scope)",
                ))
            }
        }
    }
    if since_ms.zip(until_ms).is_some_and(|(since, until)| since > until) {
        return Err(ApiError::bad("since", "is later than until"));
    }
    let by = match (text, like, picture) {
        (Some(text), None, None) => By::Text(text),
        (None, Some(id), None) => By::Like(id),
        (None, None, Some(picture)) => By::Picture(picture),
        (_, _, Some(_)) => return Err(ApiError::bad("text", "a search by picture takes no text= or like=")),
        _ => return Err(ApiError::bad("text", "give exactly one of text= or like=")),
    };
    let filter = Query { vector: Vec::new(), top_k, cameras, labels, since_ms, until_ms };
    Ok(Search { by, filter, user_labels, scope })
}

/// Where a record's page and crop are, relative to the box.
pub(super) fn record_url(id: &str) -> String {
    format!("/records/{id}")
}

pub(super) fn crop_url(id: &str, metadata: &Metadata) -> Option<String> {
    metadata.crop.as_ref().map(|_| format!("/api/records/{id}/crop.jpg"))
}

pub(super) fn snapshot_url(id: &str, metadata: &Metadata) -> Option<String> {
    metadata.snapshot.as_ref().map(|_| format!("/api/records/{id}/snapshot.jpg"))
}

/// `{"matches": [...]}`, best first.
fn matches_json(hits: &[Hit]) -> Json<Value> {
    Json(json!({ "matches": hits.iter().map(match_json).collect::<Vec<_>>() }))
}

/// One match in the documented shape.
fn match_json(hit: &Hit) -> Value {
    let mut value = record_json(&hit.id, &hit.metadata);
    value["score"] = json!(hit.score);
    value
}

fn record_json(id: &str, m: &Metadata) -> Value {
    json!({
        "id": id, "device": m.device, "camera": m.camera, "ts": m.ts, "pts_ms": m.pts_ms, "label": m.label,
        "user_label": m.user_label, "detector_score": m.score, "x": m.x, "y": m.y, "w": m.w, "h": m.h, "frame_w": m.frame_w, "frame_h": m.frame_h,
        "track_id": m.track_id, "crop": m.crop, "crop_url": crop_url(id, m), "snapshot": m.snapshot,
        "snapshot_url": snapshot_url(id, m), "record_url": record_url(id),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_search_takes_one_query_and_names_any_bad_parameter() {
        let search = parse_search("text=red+van&camera=gate&camera=yard&label=car&user_label=our+van&top_k=5&since=2h&scope=device")
            .expect("a search");
        assert_eq!(search.user_labels, ["our van"]);
        assert!(matches!(search.by, By::Text(ref t) if t == "red van"));
        let filter = &search.filter;
        assert_eq!((filter.cameras.len(), filter.labels.len(), filter.top_k), (2, 1, 5));
        assert!(filter.since_ms.is_some());
        assert_eq!(search.scope, Scope::Device);
        assert_eq!(parse_search("like=d:c:1:0&scope=fleet").expect("a fleet search").scope, Scope::Fleet);
        for (query, parameter) in [
            ("", "text"),
            ("like=../../etc", "id"),
            ("text=a&top_k=0", "top_k"),
            ("text=a&top_k=1001", "top_k"),
            ("text=a&since=yesterday", "since"),
            ("text=a&scope=world", "scope"),
            ("text=a&colour=red", "colour"),
            ("text=a&colour=", "colour"),
            ("text=a&text=b", "text"),
            ("text=a&like=d:c:1:0", "like"),
            ("text=a&since=1h&until=2h", "since"),
        ] {
            let error = parse_search(query).expect_err(query);
            assert_eq!(error.status, StatusCode::BAD_REQUEST, "{query}");
            assert!(error.message.starts_with(&format!("{parameter}:")), "{query}: {}", error.message);
        }
    }

    #[test]
    fn an_events_query_takes_filters_a_page_and_a_limit_and_names_any_bad_parameter() {
        let query = parse_events("camera=gate&label=person&label=car&since=2h&before=1764750000000:gate:80.0&limit=10").expect("a query");
        assert_eq!((query.cameras.len(), query.labels.len(), query.limit), (1, 2, 10));
        assert_eq!(query.after.map(|c| (c.start_ts, c.camera, c.track_id)), Some((1764750000000, "gate".into(), "80.0".into())));
        assert_eq!(parse_events("").expect("no parameters").limit, DEFAULT_EVENTS);
        for (query, parameter) in [
            ("limit=0", "limit"),
            ("limit=501", "limit"),
            ("before=yesterday", "before"),
            ("since=soon", "since"),
            ("colour=red", "colour"),
        ] {
            let error = parse_events(query).expect_err(query);
            assert_eq!(error.status, StatusCode::BAD_REQUEST, "{query}");
            assert!(error.message.starts_with(&format!("{parameter}:")), "{query}: {}", error.message);
        }
    }
}
