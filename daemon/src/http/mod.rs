//! The box's own HTTP API (`[http]`, off without the section): axum on the daemon's tokio
//! runtime. The only module that serves HTTP. Every route needs the access token
//! (`Authorization: Bearer <token>`); the handlers only read what the daemon already keeps
//! (the stats and camera states through [`StatsView`]), so no request waits on inference and
//! none blocks a tokio worker. docs/http.md lists the routes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::set_header::SetResponseHeaderLayer;

use crate::secrets::{read_secret, secret_file, SecretError};
use crate::shutdown::Shutdown;
use crate::status::StatsView;
use crate::validate::{ByteSize, KeyPath, Problem};

/// `[http]`
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct HttpConfig {
    /// Address and port to listen on, e.g. "0.0.0.0:8080".
    pub listen: SocketAddr,
    /// File holding the access token. Default: the systemd credential `http-token`.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Largest request body accepted. Default 8 MiB.
    #[serde(default = "default_max_upload_bytes")]
    pub max_upload_bytes: ByteSize,
}

fn default_max_upload_bytes() -> ByteSize {
    ByteSize(8 << 20)
}

/// Requests that take longer (waiting for a turn included) are answered 408.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Requests served at once, over all routes; more wait their turn.
const MAX_CONCURRENT_REQUESTS: usize = 32;
/// A token shorter than this is refused: it would be guessable.
const MIN_TOKEN_CHARS: usize = 16;

impl HttpConfig {
    pub fn validate(&self, at: &KeyPath, problems: &mut Vec<Problem>) {
        if !(64 << 10..=64 << 20).contains(&self.max_upload_bytes.0) {
            problems.push(Problem::new(at.key("max_upload_bytes"), "must be between 64 KiB (a picture to search by) and 64 MiB"));
        }
    }

    /// The access token, from `token_file` or the systemd credential `http-token`.
    pub fn token(&self) -> Result<Token, SecretError> {
        let hint = "set http.token_file, or give the service the credential http-token (docs/http.md)";
        let file = secret_file(self.token_file.as_deref(), "http-token").ok_or(SecretError::Missing { what: "HTTP access token", hint })?;
        let token = read_secret(&file, "HTTP access token")?;
        match token.len() {
            0 => Err(SecretError::Empty { what: "HTTP access token", file }),
            // Header values carry ASCII only, so any other character could never match.
            _ if !token.bytes().all(|b| b.is_ascii_graphic()) => Err(SecretError::NotPrintable { what: "HTTP access token", file }),
            n if n < MIN_TOKEN_CHARS => Err(SecretError::TooShort { what: "HTTP access token", file, min: MIN_TOKEN_CHARS }),
            _ => Ok(Token(token)),
        }
    }
}

/// The secret every request must carry; never logged or shown.
pub struct Token(String);

impl Token {
    /// Compares in time independent of where the strings differ.
    fn matches(&self, given: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), given.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

struct App {
    token: Token,
    stats: StatsView,
}

/// Binds the listening socket now, so that a taken port is a start-up error naming the key.
pub fn bind(config: &HttpConfig) -> anyhow::Result<std::net::TcpListener> {
    let listener =
        std::net::TcpListener::bind(config.listen).map_err(|e| anyhow::anyhow!("http.listen: cannot listen on {}: {e}", config.listen))?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Serves until shutdown; requests in flight finish first.
pub async fn serve(listener: std::net::TcpListener, config: HttpConfig, token: Token, stats: StatsView, mut shutdown: Shutdown) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(e) => return tracing::error!(error = %e, "the HTTP API cannot start"),
    };
    tracing::info!(listen = %config.listen, "HTTP API listening");
    let app = router(Arc::new(App { token, stats }), &config);
    let served = axum::serve(listener, app).with_graceful_shutdown(async move { shutdown.recv_stopped().await }).await;
    if let Err(e) = served {
        tracing::error!(error = %e, "the HTTP API stopped");
    }
}

fn router(app: Arc<App>, config: &HttpConfig) -> Router {
    let header = |name, value| SetResponseHeaderLayer::overriding(name, HeaderValue::from_static(value));
    Router::new()
        .route("/api/stats", get(stats))
        .route("/api/cameras", get(cameras))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(app.clone(), require_token))
        .layer(RequestBodyLimitLayer::new(usize::try_from(config.max_upload_bytes.0).unwrap_or(usize::MAX)))
        // Router::layer wraps each route apart: a global limit shares one semaphore among them.
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(MAX_CONCURRENT_REQUESTS))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, REQUEST_TIMEOUT))
        .layer(middleware::map_response(json_errors))
        .layer(header(header::CONTENT_SECURITY_POLICY, "default-src 'self'; frame-ancestors 'none'"))
        .layer(header(header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .layer(header(header::REFERRER_POLICY, "no-referrer"))
        .with_state(app)
}

async fn require_token(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .and_then(|(scheme, token)| scheme.eq_ignore_ascii_case("bearer").then_some(token.trim()));
    match given {
        Some(token) if app.token.matches(token) => next.run(request).await,
        Some(_) => ApiError::Unauthorized("the access token is wrong").into_response(),
        None => ApiError::Unauthorized("send the access token as Authorization: Bearer <token>").into_response(),
    }
}

async fn stats(State(app): State<Arc<App>>) -> Json<serde_json::Value> {
    Json(app.stats.current())
}

async fn cameras(State(app): State<Arc<App>>) -> Json<serde_json::Value> {
    Json(app.stats.cameras())
}

async fn not_found() -> ApiError {
    ApiError::NotFound
}

/// The layers' own answers (wrong method, timeout, body too large) as JSON errors too.
async fn json_errors(response: Response) -> Response {
    let is_json = response.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    let message = match response.status() {
        _ if is_json => return response,
        StatusCode::METHOD_NOT_ALLOWED => "this route does not take that method",
        StatusCode::REQUEST_TIMEOUT => "the request took longer than 30 s",
        StatusCode::PAYLOAD_TOO_LARGE => "the request body is larger than http.max_upload_bytes",
        _ => return response,
    };
    ApiError::Other(response.status(), message).into_response()
}

/// An error answer: `{"error": "..."}` with its status.
enum ApiError {
    Unauthorized(&'static str),
    NotFound,
    Other(StatusCode, &'static str),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            ApiError::Unauthorized(why) => (StatusCode::UNAUTHORIZED, why),
            ApiError::NotFound => (StatusCode::NOT_FOUND, "no such route (docs/http.md lists them)"),
            ApiError::Other(status, message) => (status, message),
        };
        let mut response = (status, Json(serde_json::json!({ "error": message }))).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_whole_token_matches() {
        let token = Token("0123456789abcdef".into());
        assert!(token.matches("0123456789abcdef"));
        assert!(!token.matches("0123456789abcdeF"));
        assert!(!token.matches("0123456789abcde"));
        assert!(!token.matches(""));
    }

    #[test]
    fn a_missing_empty_or_short_token_is_an_error_naming_the_file_not_the_contents() {
        let dir = tempfile::tempdir().unwrap();
        let config = |file: &str| HttpConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            token_file: Some(dir.path().join(file)),
            max_upload_bytes: default_max_upload_bytes(),
        };
        std::fs::write(dir.path().join("empty"), "\n").unwrap();
        std::fs::write(dir.path().join("short"), "hunter2\n").unwrap();
        std::fs::write(dir.path().join("accented"), "pâté-pâté-pâté-pâté\n").unwrap();
        assert!(config("accented").token().err().unwrap().to_string().contains("printable ASCII"));
        assert!(config("missing").token().err().unwrap().to_string().contains("cannot read the HTTP access token"));
        assert!(config("empty").token().err().unwrap().to_string().contains("is empty"));
        let short = config("short").token().err().unwrap().to_string();
        assert!(short.contains("at least 16") && !short.contains("hunter2"), "{short}");
    }
}
