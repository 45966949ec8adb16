//! The box's pages, rendered here with maud (which escapes every value it shows: labels and
//! names are text, never markup) and styled by one stylesheet of the box's own. One small script
//! (the picture upload), no build step, nothing from elsewhere: the box is often offline.

use std::sync::Arc;

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use maud::{html, Markup, DOCTYPE};
use serde::Deserialize;

use super::api::{
    can_show, crop_url, find, find_record, label_record, next_page, parse_events, parse_search, parse_search_by, read, record_id,
    record_url, require_picture, snapshot_url, Origin,
};
use super::library::By;
use super::ApiError;
use super::{auth, App};
use crate::clock::local_time;
use crate::history::Track;
use crate::index::Hit;
use crate::record::Metadata;

const STYLESHEET: &str = include_str!("glimpse.css");
/// The pages' one script: the search page's picture upload.
const SCRIPT: &str = include_str!("glimpse.js");
/// The tab's icon: served, so that the browser's own request for one finds it.
const ICON: &str = "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 16 16\"><circle cx=\"8\" cy=\"8\" r=\"6\" fill=\"#1f6feb\"/><circle cx=\"8\" cy=\"8\" r=\"2.5\" fill=\"#fff\"/></svg>";

/// Routes that need the token or a session.
pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/", get(search_page))
        .route("/events", get(events_page))
        .route("/cameras", get(cameras_page))
        .route("/records/{id}", get(record_page))
        .route("/records/{id}/label", post(name_record))
        .route("/pictures", post(upload_picture))
        .route("/logout", post(sign_out))
}

/// Routes open to anyone: signing in and its stylesheet.
pub fn open_routes() -> Router<Arc<App>> {
    Router::new()
        .route("/login", get(sign_in_page).post(sign_in))
        .route("/static/glimpse.css", get(stylesheet))
        .route("/static/glimpse.js", get(script))
        .route("/static/icon.svg", get(icon))
}

/// Whether `path` is a page, so that a browser without a session is sent to sign in.
pub fn is_page(path: &str) -> bool {
    matches!(path, "/" | "/events" | "/cameras") || path.starts_with("/records/")
}

/// To `/login`, coming back to `uri` afterwards.
pub fn to_sign_in(uri: &Uri) -> Response {
    let back = uri.path_and_query().map_or("/", |p| p.as_str());
    let next: String = url::form_urlencoded::byte_serialize(back.as_bytes()).collect();
    Redirect::to(&format!("/login?next={next}")).into_response()
}

async fn stylesheet() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8"), (header::CACHE_CONTROL, "max-age=3600")], STYLESHEET)
}

async fn script() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8"), (header::CACHE_CONTROL, "max-age=3600")], SCRIPT)
}

async fn icon() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "image/svg+xml"), (header::CACHE_CONTROL, "max-age=86400")], ICON)
}

/// The frame every page shares.
fn page(title: &str, signed_in: bool, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "Glimpse · " (title) }
                link rel="stylesheet" href="/static/glimpse.css";
                link rel="icon" href="/static/icon.svg" type="image/svg+xml";
                script src="/static/glimpse.js" defer {}
            }
            body {
                header {
                    a.brand href="/" { "Glimpse" }
                    @if signed_in {
                        nav { a href="/" { "Search" } " " a href="/events" { "Events" } " " a href="/cameras" { "Cameras" } }
                        form.signout method="post" action="/logout" { button type="submit" { "Sign out" } }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// Where to go after signing in: a path of this box only, never another site.
fn safe_next(next: Option<&str>) -> &str {
    // Printable ASCII only: browsers drop tabs and newlines from URLs, so "/\t/evil" is "//evil".
    let plain = |n: &&str| n.bytes().all(|b| b.is_ascii_graphic() && b != b'\\');
    next.filter(plain).filter(|n| n.starts_with('/') && !n.starts_with("//")).unwrap_or("/")
}

async fn sign_in_page(RawQuery(query): RawQuery) -> Markup {
    let next = query.as_deref().and_then(next_of);
    sign_in_form(safe_next(next.as_deref()), None)
}

fn next_of(query: &str) -> Option<String> {
    url::form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "next").map(|(_, v)| v.into_owned())
}

fn sign_in_form(next: &str, problem: Option<&str>) -> Markup {
    page(
        "sign in",
        false,
        html! {
            h1 { "Sign in" }
            @if let Some(problem) = problem { p.error role="alert" { (problem) } }
            form.signin method="post" action="/login" {
                // Password managers (and the browser's checks) expect a user name beside the secret.
                input type="text" name="user" value="glimpse" autocomplete="username" hidden;
                label for="token" { "Access token" }
                input #token type="password" name="token" autocomplete="current-password" required autofocus;
                input type="hidden" name="next" value=(next);
                button type="submit" { "Sign in" }
            }
            p.hint { "The token is in the file http.token_file names, or the service's credential http-token." }
        },
    )
}

#[derive(Deserialize)]
struct SignIn {
    token: String,
    #[serde(default, rename = "user")]
    _user: Option<String>,
    #[serde(default)]
    next: Option<String>,
}

async fn sign_in(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<SignIn>,
) -> Response {
    let next = safe_next(form.next.as_deref()).to_owned();
    if !auth::may_sign_in(&headers) {
        return (StatusCode::FORBIDDEN, sign_in_form(&next, Some("Sign in from this box's own page."))).into_response();
    }
    match app.sessions.sign_in(&app.token, &form.token, peer.ip()) {
        Ok(secret) => {
            let cookie = auth::session_cookie_header(&secret, app.secure);
            ([(header::SET_COOKIE, cookie)], Redirect::to(&next)).into_response()
        }
        Err(true) => (StatusCode::UNAUTHORIZED, sign_in_form(&next, Some("That is not the access token."))).into_response(),
        Err(false) => {
            let wait = "Too many wrong tokens: wait a minute and try again.";
            (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, "60")], sign_in_form(&next, Some(wait))).into_response()
        }
    }
}

async fn sign_out(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    app.sessions.sign_out(&headers);
    ([(header::SET_COOKIE, auth::cleared_cookie_header(app.secure))], Redirect::to("/login")).into_response()
}

/// The search a page's query asks for: as the API's, or by an uploaded picture (`picture=ID`).
fn page_search(app: &App, query: &str) -> Result<super::library::Search, ApiError> {
    let pairs = url::form_urlencoded::parse(query.as_bytes());
    let Some(id) = pairs.clone().find(|(k, _)| k == "picture").map(|(_, v)| v.into_owned()) else { return parse_search(query) };
    let picture = app.uploads.get(&id).ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, "picture: this search by picture has expired (pictures are kept an hour): choose it again")
    })?;
    let rest: String = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs.filter(|(k, _)| k != "picture")).finish();
    parse_search_by(&rest, Some(picture.to_vec()))
}

/// `POST /pictures`: keeps the picture in the body and answers the search that uses it.
async fn upload_picture(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    require_picture(&headers)?;
    super::library::looks_like_picture(&body).map_err(super::api::library_error)?;
    let id = app.uploads.keep(body.to_vec());
    Ok(axum::Json(serde_json::json!({ "search": format!("/?picture={id}") })))
}

/// A search result as a page shows it: the match and whether its crop can be shown.
struct Shown {
    hit: Hit,
    picture: bool,
}

/// What the results are like, over the grid.
enum Heading {
    Words,
    Like(String),
    Picture,
}

/// `search`'s matches, each with whether its crop can be shown (fetched from the fleet's
/// bucket now when it is not on the device), so a crop out of reach shows "no picture", not a
/// broken image.
async fn shown_matches(app: &Arc<App>, search: super::library::Search) -> Result<(Heading, Vec<Shown>), ApiError> {
    let heading = match &search.by {
        By::Like(id) => Heading::Like(id.as_str().to_owned()),
        By::Picture(_) => Heading::Picture,
        By::Text(_) => Heading::Words,
    };
    let hits = find(app.clone(), search).await?;
    let pictures = can_show(app, hits.iter().map(|h| h.metadata.crop.clone()).collect()).await;
    Ok((heading, hits.into_iter().zip(pictures).map(|(hit, picture)| Shown { hit, picture }).collect()))
}

async fn search_page(State(app): State<Arc<App>>, RawQuery(query): RawQuery) -> Response {
    let query = query.unwrap_or_default();
    let cameras: Vec<String> = app.stats.cameras().as_object().map(|c| c.keys().cloned().collect()).unwrap_or_default();
    let asked =
        url::form_urlencoded::parse(query.as_bytes()).any(|(k, v)| matches!(&*k, "text" | "like" | "picture") && !v.trim().is_empty());
    let outcome = match asked.then(|| page_search(&app, &query)) {
        None => Ok(None),
        Some(Err(e)) => Err(e),
        Some(Ok(search)) => shown_matches(&app, search).await.map(Some),
    };
    let field = |name: &str| {
        url::form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned()).unwrap_or_default()
    };
    let (text, camera, label, since) = (field("text"), field("camera"), field("label"), field("since"));
    let (user_label, scope) = (field("user_label"), field("scope"));
    let results = match &outcome {
        Ok(None) => html! { p.hint { "Describe what you are looking for: “a red car”, “someone with a bicycle”." } },
        Ok(Some((heading, shown))) => html! {
            @match heading {
                Heading::Like(id) => p.like { "More like " a href=(record_url(id)) { (id) } },
                Heading::Picture => p.like { "Like your picture" },
                Heading::Words => {},
            }
            p.count { (shown.len()) " match" @if shown.len() != 1 { "es" } }
            section.grid { @for s in shown { (card(s)) } }
        },
        Err(e) => html! { p.error role="alert" { (e.message) } },
    };
    let status = outcome.as_ref().err().map_or(StatusCode::OK, |e| e.status);
    let body = html! {
        form.search method="get" action="/" {
            input type="search" name="text" value=(text) placeholder="a person with a red umbrella" aria-label="Search by words";
            select name="camera" aria-label="Camera" {
                option value="" { "all cameras" }
                @for c in &cameras { option value=(c) selected[*c == camera] { (c) } }
            }
            input type="text" name="label" value=(label) placeholder="label, e.g. person" aria-label="Label";
            input type="text" name="user_label" value=(user_label) placeholder="named, e.g. our van" aria-label="Named";
            select name="since" aria-label="Since" {
                @for (value, shown) in [("", "any time"), ("1h", "last hour"), ("24h", "last day"), ("7d", "last week")] {
                    option value=(value) selected[value == since] { (shown) }
                }
            }
            @if app.fleet.is_some() {
                select name="scope" aria-label="Whose records" {
                    option value="device" { "this box" }
                    option value="fleet" selected[scope == "fleet"] { "the fleet" }
                }
            }
            button type="submit" { "Search" }
            label.picture { "or by a picture " input.picture type="file" accept="image/jpeg,image/png" aria-label="Search by picture"; }
        }
        p.upload.error role="alert" hidden {}
        (results)
    };
    (status, page("search", true, body)).into_response()
}

/// What happened, newest first: each tracked object with its crop, filtered by camera and
/// label, a page at a time.
async fn events_page(State(app): State<Arc<App>>, RawQuery(query): RawQuery) -> Response {
    let query = query.unwrap_or_default();
    let wanted = match parse_events(&query) {
        Ok(wanted) => wanted,
        Err(e) => return (e.status, page("events", true, html! { p.error role="alert" { (e.message) } })).into_response(),
    };
    let limit = wanted.limit;
    let found = read(app, {
        let wanted = wanted.clone();
        move |app| {
            let tracks = app.library.events(&wanted);
            Ok(tracks.into_iter().map(|t| (app.library.is_stored(t.crop.as_deref()), t)).collect::<Vec<_>>())
        }
    })
    .await;
    let shown = match found {
        Ok(shown) => shown,
        Err(e) => return (e.status, page("events", true, html! { p.error role="alert" { (e.message) } })).into_response(),
    };
    let field = |name: &str| url::form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned());
    let (camera, label) = (field("camera").unwrap_or_default(), field("label").unwrap_or_default());
    let tracks: Vec<Track> = shown.iter().map(|(_, t)| t.clone()).collect();
    // The same filters, after the last track shown.
    let older = next_page(&tracks, limit).map(|cursor| {
        let kept = url::form_urlencoded::parse(query.as_bytes()).filter(|(k, _)| k != "before");
        let mut next = url::form_urlencoded::Serializer::new(String::new());
        next.extend_pairs(kept).append_pair("before", &cursor.to_string());
        format!("/events?{}", next.finish())
    });
    let body = html! {
        h1 { "Events" }
        form.search method="get" action="/events" {
            input type="text" name="camera" value=(camera) placeholder="camera" aria-label="Camera";
            input type="text" name="label" value=(label) placeholder="label, e.g. person" aria-label="Label";
            button type="submit" { "Filter" }
        }
        @if shown.is_empty() { p.hint { "Nothing tracked yet: object events appear here as the cameras see them." } }
        ol.events { @for (picture, t) in &shown { (event_row(t, *picture)) } }
        @if let Some(older) = older { p { a.older href=(older) { "Older" } } }
    };
    page("events", true, body).into_response()
}

/// Each camera's state, rates and last error, then each trigger's last match, as the stats have
/// them now.
async fn cameras_page(State(app): State<Arc<App>>) -> Markup {
    let stats = app.stats.current();
    let empty = serde_json::Map::new();
    let (cameras, triggers) = (stats["cameras"].as_object().unwrap_or(&empty), stats["triggers"].as_object().unwrap_or(&empty));
    // Which last matches' crops are on the device ("no picture" otherwise, not a broken image).
    let crops: Vec<Option<String>> = triggers.values().map(|t| t["last_match"]["crop"].as_str().map(str::to_owned)).collect();
    let stored = can_show(&app, crops).await;
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::Null => "—".to_owned(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let body = html! {
        h1 { "Cameras" }
        div.scroll { table.cameras {
            thead { tr { th { "Camera" } th { "State" } th { "Frames in/s" } th { "Analysed/s" } th { "Lag, ms" } th { "Decoder" } th { "Problem" } } }
            tbody {
                @for (name, c) in cameras {
                    tr data-camera=(name) {
                        td { (name) } td.state { (text(&c["status"])) } td { (text(&c["fps_in"])) } td { (text(&c["fps_out"])) }
                        td { (text(&c["lag_ms"])) } td { (text(&c["decoder"])) } td.reason { (text(&c["reason"])) }
                    }
                }
            }
        } }
        h2 { "Triggers" }
        @if triggers.is_empty() { p.hint { "No triggers: [[triggers]] in the configuration, with [mqtt], where their matches go." } }
        ol.events {
            @for ((name, t), picture) in triggers.iter().zip(&stored) {
                li.event data-trigger=(name) {
                    @let last = &t["last_match"];
                    @match (last["record_id"].as_str(), *picture) {
                        (Some(id), true) => img src={ "/api/records/" (id) "/crop.jpg" } alt=(name) loading="lazy";,
                        (Some(_), false) => div.missing { "no picture" },
                        (None, _) => div.missing { "no match yet" },
                    }
                    div {
                        strong { (name) } " · " (text(&t["matches"])) " matches" br;
                        @if let Some(id) = last["record_id"].as_str() {
                            (text(&last["label"])) " on " (text(&last["camera"])) " · similarity " (text(&last["similarity"])) " · " a href=(record_url(id)) { "the moment" }
                        }
                        @if !t["error"].is_null() { br; span.error { (text(&t["error"])) } }
                    }
                }
            }
        }
    };
    page("cameras", true, body)
}

fn event_row(t: &Track, picture: bool) -> Markup {
    let thumbnail = t.record_id.as_deref().filter(|_| picture).map(|id| format!("/api/records/{id}/crop.jpg"));
    html! {
        li.event data-track=(t.track_id) {
            @match &thumbnail {
                Some(src) => img src=(src) alt=(t.label) loading="lazy";,
                None => div.missing { "no picture" },
            }
            div {
                strong.label { (t.label) } " on " span.camera { (t.camera) } br;
                time { (local_time(t.start_ts)) }
                @match t.end_ts {
                    Some(end) => { " for " (format!("{:.0}", (end - t.start_ts).max(0) as f64 / 1000.0)) " s" },
                    None => { " · " span.live { "still in view" } },
                }
                " · top score " (format!("{:.2}", t.top_score))
                @if let Some(id) = &t.record_id { br; a href=(record_url(id)) { "the moment" } }
            }
        }
    }
}

fn card(shown: &Shown) -> Markup {
    let (id, m) = (&shown.hit.id, &shown.hit.metadata);
    html! {
        figure.card data-id=(id) {
            a href=(record_url(id)) {
                @match crop_url(id, m).filter(|_| shown.picture) {
                    Some(src) => img src=(src) alt=(m.label) loading="lazy";,
                    None => div.missing { "no picture" },
                }
            }
            figcaption {
                span.camera { (m.camera) } " · " time { (local_time(m.ts)) } br;
                span.label { (m.label) } " · " span.score { (format!("{:.3}", shown.hit.score)) }
                @if let Some(name) = &m.user_label { br; span.named { (name) } }
            }
        }
    }
}

async fn record_page(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    let id = match record_id(&id) {
        Ok(id) => id,
        Err(e) => return (e.status, page("no such record", true, html! { p.error { (e.message) } })).into_response(),
    };
    let found = match find_record(&app, &id).await {
        Ok((m, origin)) => {
            let shown = can_show(&app, vec![m.crop.clone(), m.snapshot.clone()]).await;
            Ok((Pictures { crop: shown[0], snapshot: shown[1], own: origin == Origin::Here }, m))
        }
        Err(e) => Err(e),
    };
    match found {
        Ok((pictures, metadata)) => page(&metadata.label, true, record_body(id.as_str(), &metadata, pictures)).into_response(),
        Err(e) => (e.status, page("no such record", true, html! { p.error role="alert" { (e.message) } })).into_response(),
    }
}

/// Which of a record's pictures can be shown, and whether the record is this device's own
/// (others' are named on their own box).
struct Pictures {
    crop: bool,
    snapshot: bool,
    own: bool,
}

/// The record page's form that names the object: `label=`.
#[derive(Deserialize)]
struct Naming {
    label: String,
}

async fn name_record(State(app): State<Arc<App>>, Path(id): Path<String>, Form(form): Form<Naming>) -> Response {
    let named = match record_id(&id) {
        Ok(id) => label_record(app, id, &form.label).await,
        Err(e) => Err(e),
    };
    match named {
        Ok(_) => Redirect::to(&record_url(&id)).into_response(),
        Err(e) => (e.status, page("not named", true, html! { p.error role="alert" { (e.message) } })).into_response(),
    }
}

fn record_body(id: &str, m: &Metadata, pictures: Pictures) -> Markup {
    html! {
        h1 { @if let Some(name) = &m.user_label { (name) " · " } (m.label) " on " (m.camera) }
        @if let Some(src) = snapshot_url(id, m).filter(|_| pictures.snapshot) {
            a.snapshot href=(src) { img.snapshot src={ (src) "?box=1" } alt={ "the frame, with the " (m.label) " outlined" }; }
        }
        div.record {
            @match crop_url(id, m).filter(|_| pictures.crop) {
                Some(src) => img.crop src=(src) alt=(m.label);,
                None => div.missing { "no picture" },
            }
            dl {
                dt { "Seen" } dd { time { (local_time(m.ts)) } }
                dt { "Camera" } dd { (m.camera) " on " (m.device) }
                dt { "Label" } dd { (m.label) " (detector score " (format!("{:.2}", m.score)) ")" }
                dt { "Box" } dd { (m.w) "×" (m.h) " at " (m.x) "," (m.y) " in " (m.frame_w) "×" (m.frame_h) }
                @if let Some(track) = &m.track_id { dt { "Track" } dd { (track) } }
                dt { "Record" } dd { code { (id) } }
            }
        }
        @if pictures.own {
            form.name method="post" action={ (record_url(id)) "/label" } {
                label for="name" { "Name this object" }
                input #name type="text" name="label" value=(m.user_label.as_deref().unwrap_or_default()) maxlength=(crate::labels::MAX_CHARS)
                    placeholder="our red van";
                button type="submit" { "Save" }
            }
        } @else {
            p.hint { "Found in the fleet's index (seen by " (m.device) "): it is named on the pages of the box that keeps it." }
        }
        p.actions {
            a.more href={ "/?like=" (id) @if !pictures.own { "&scope=fleet" } } { "More like this" }
            " · "
            a href={ "/api/records/" (id) } { "as JSON" }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_signing_in_only_a_path_of_this_box_is_followed() {
        assert_eq!(safe_next(Some("/records/a:b:1:0")), "/records/a:b:1:0");
        for foreign in ["//evil.example/", "https://evil.example/", "/\\evil.example", "records", "/\t/evil.example", "/\n/x"] {
            assert_eq!(safe_next(Some(foreign)), "/", "{foreign}");
        }
    }

    #[test]
    fn labels_are_shown_as_text_never_markup() {
        let mut metadata = crate::record::test_record("d:c:1:0", "c", 0, vec![]).metadata;
        metadata.label = "<img src=x onerror=alert(1)>".into();
        metadata.user_label = Some("<script>alert(2)</script>".into());
        metadata.crop = Some("d/c/x.jpg".into());
        let html = record_body("d:c:1:0", &metadata, Pictures { crop: true, snapshot: false, own: true }).into_string();
        assert!(!html.contains("<img src=x"), "{html}");
        assert!(html.contains("&lt;img src=x onerror=alert(1)&gt;"), "{html}");
        assert!(!html.contains("<script>") && html.contains("&lt;script&gt;alert(2)"), "{html}");
    }
}
