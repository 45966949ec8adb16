//! The box's own pages and HTTP API (`[http]`, off without the section): axum on the daemon's
//! tokio runtime, through hyper's HTTP/1 connection. The only module that serves HTTP. Every
//! route but `/healthz` and `/login` needs the access token or a session (`auth.rs`). The
//! handlers read what the daemon already keeps: the stats and camera states through
//! [`StatsView`], and the index, crops, event history and CLIP towers of their own (text and
//! image, apart from inference's) through [`Library`], whose blocking work runs on reader
//! threads of the API's own, below inference's priority (`readers.rs`); the one thing they
//! write is a name, through [`crate::labels`]. So no request waits on inference, none blocks a
//! tokio worker, and none slows the cameras. docs/http.md lists the routes.

mod api;
mod auth;
mod fleet;
pub mod library;
mod metrics;
mod pages;
mod readers;
mod tls;
mod uploads;

use std::borrow::Cow;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
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
pub use auth::Token;
pub use fleet::Fleet;
pub use library::Library;
pub use tls::TlsError;

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
    /// The address people open the box at, e.g. "http://gate-01.local:8080": MQTT's events and
    /// trigger matches then carry `record_url`. Default: none.
    #[serde(default)]
    pub public_url: Option<String>,
    /// HTTPS: the PEM certificate chain and its private key (both or neither). Default: plain
    /// HTTP, for loopback or a trusted network.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

fn default_max_upload_bytes() -> ByteSize {
    ByteSize(8 << 20)
}

/// An address people open: http or https, a host, no credentials, query or fragment.
fn check_public_url(text: &str) -> Result<(), String> {
    let example = "e.g. \"http://gate-01.local:8080\"";
    let url = url::Url::parse(text).map_err(|e| format!("is not a URL ({e}): give the address people open the box at, {example}"))?;
    match () {
        _ if !matches!(url.scheme(), "http" | "https") => Err(format!("must start with http:// or https://, {example}")),
        _ if !url.username().is_empty() || url.password().is_some() => Err("must not hold credentials: it goes into MQTT payloads".into()),
        _ if url.query().is_some() || url.fragment().is_some() || url.host_str().is_none() => {
            Err(format!("must be a plain address with a host and no query, {example}"))
        }
        _ => Ok(()),
    }
}

/// Requests that take longer (waiting for a turn included) are answered 408.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Requests served at once, over all routes; more wait their turn.
const MAX_CONCURRENT_REQUESTS: usize = 32;
/// Blocking reads of the index, crops and text tower at once; more wait their turn.
const MAX_BLOCKING_READS: usize = 4;
/// Connections open at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 64;
/// A connection whose request headers take longer is closed.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A token shorter than this is refused: it would be guessable.
const MIN_TOKEN_CHARS: usize = 16;

impl HttpConfig {
    pub fn validate(&self, at: &KeyPath, problems: &mut Vec<Problem>) {
        if !(64 << 10..=64 << 20).contains(&self.max_upload_bytes.0) {
            problems.push(Problem::new(at.key("max_upload_bytes"), "must be between 64 KiB (a picture to search by) and 64 MiB"));
        }
        if let Some(Err(message)) = self.public_url.as_deref().map(check_public_url) {
            problems.push(Problem::new(at.key("public_url"), message));
        }
        match (&self.cert_file, &self.key_file) {
            (Some(_), None) => problems.push(Problem::new(at.key("key_file"), "is needed with cert_file: HTTPS takes both")),
            (None, Some(_)) => problems.push(Problem::new(at.key("cert_file"), "is needed with key_file: HTTPS takes both")),
            _ => {}
        }
    }

    /// The TLS setup `cert_file` and `key_file` give; `None` serves plain HTTP.
    pub fn tls(&self) -> Result<Option<Arc<rustls::ServerConfig>>, TlsError> {
        match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => tls::server_config(cert, key).map(Some),
            _ => Ok(None),
        }
    }

    /// [`HttpConfig::public_url`] without a trailing `/`, to put paths after.
    pub fn public_base(&self) -> Option<String> {
        self.public_url.as_deref().map(|u| u.trim_end_matches('/').to_owned())
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
            _ => Ok(Token::new(token)),
        }
    }
}

/// What the server proves and asks for: its TLS identity (none: plain HTTP) and the token.
pub struct Credentials {
    pub token: Token,
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// What the handlers read: the stats, what this device keeps, and (fleet scope) what every
/// device of the Pinecone namespace keeps.
pub struct Sources {
    pub stats: StatsView,
    pub library: Library,
    pub fleet: Option<Fleet>,
}

/// What the handlers share.
struct App {
    token: Token,
    /// Whether the server speaks HTTPS: session cookies are then `Secure`.
    secure: bool,
    sessions: auth::Sessions,
    stats: StatsView,
    library: Library,
    fleet: Option<Arc<Fleet>>,
    /// The threads blocking reads of the library run on.
    readers: readers::Readers,
    /// Pictures uploaded on the search page, for `/?picture=ID`.
    uploads: uploads::Uploads,
}

/// Binds the listening socket now, so that a taken port is a start-up error naming the key.
pub fn bind(config: &HttpConfig) -> anyhow::Result<std::net::TcpListener> {
    let listener =
        std::net::TcpListener::bind(config.listen).map_err(|e| anyhow::anyhow!("http.listen: cannot listen on {}: {e}", config.listen))?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Serves until shutdown; requests in flight finish first.
pub async fn serve(
    listener: std::net::TcpListener,
    config: HttpConfig,
    credentials: Credentials,
    sources: Sources,
    mut shutdown: Shutdown,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(e) => return tracing::error!(error = %e, "the HTTP API cannot start"),
    };
    let Credentials { token, tls } = credentials;
    tracing::info!(listen = %config.listen, https = tls.is_some(), "HTTP API listening");
    let Sources { stats, library, fleet } = sources;
    let readers = match readers::Readers::start(MAX_BLOCKING_READS) {
        Ok(readers) => readers,
        Err(e) => return tracing::error!(error = %e, "the HTTP API cannot start its reader threads"),
    };
    let (sessions, fleet, uploads) = (auth::Sessions::default(), fleet.map(Arc::new), uploads::Uploads::default());
    let app = App { token, secure: tls.is_some(), sessions, stats, library, fleet, readers, uploads };
    let app = router(Arc::new(app), &config);
    let tls = tls.map(tokio_rustls::TlsAcceptor::from);
    let mut http1 = hyper::server::conn::http1::Builder::new();
    // A client that never finishes its headers is cut off: it would hold a connection forever.
    http1.timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
    let open = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        // At the cap, new connections wait in the kernel's backlog until one closes.
        let accepted = tokio::select! {
            _ = shutdown.recv_stopped() => break,
            permit = open.clone().acquire_owned() => match permit {
                Ok(permit) => tokio::select! {
                    _ = shutdown.recv_stopped() => break,
                    accepted = listener.accept() => accepted.map(|(stream, peer)| (stream, peer, permit)),
                },
                Err(_) => break,
            },
        };
        let (stream, peer, permit) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: wait a little rather than spin.
                tracing::warn!(error = %e, "the HTTP API cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // The client's address, for counting its wrong tokens (`auth.rs`).
        let with_peer = tower::ServiceExt::map_request(app.clone(), move |mut request: Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            request
        });
        let service = hyper_util::service::TowerToHyperService::new(with_peer);
        let (http1, watcher, tls) = (http1.clone(), graceful.watcher(), tls.clone());
        tokio::spawn(async move {
            let Some(stream) = secure_stream(stream, tls.as_ref()).await else { return };
            let _ = watcher.watch(http1.serve_connection(hyper_util::rt::TokioIo::new(stream), service)).await;
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// A connection's byte stream: the TCP stream itself, or TLS over it.
trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stream for S {}

/// The stream to serve on `stream`: as it is, or after a TLS handshake that must end within
/// [`HEADER_READ_TIMEOUT`]; `None` when the handshake fails (logged at debug: scanners do).
async fn secure_stream(stream: tokio::net::TcpStream, tls: Option<&tokio_rustls::TlsAcceptor>) -> Option<Box<dyn Stream>> {
    let Some(acceptor) = tls else { return Some(Box::new(stream)) };
    match tokio::time::timeout(HEADER_READ_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => Some(Box::new(stream)),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "a TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!("a TLS handshake took too long");
            None
        }
    }
}

fn router(app: Arc<App>, config: &HttpConfig) -> Router {
    let header = |name, value| SetResponseHeaderLayer::overriding(name, HeaderValue::from_static(value));
    let guarded = Router::new()
        .merge(api::routes())
        .merge(pages::routes())
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(app.clone(), require_access));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .merge(pages::open_routes())
        .merge(guarded)
        .layer(RequestBodyLimitLayer::new(usize::try_from(config.max_upload_bytes.0).unwrap_or(usize::MAX)))
        // axum's extractors would cap bodies at their own 2 MiB: max_upload_bytes is the one limit.
        .layer(axum::extract::DefaultBodyLimit::disable())
        // Router::layer wraps each route apart: a global limit shares one semaphore among them.
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(MAX_CONCURRENT_REQUESTS))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, REQUEST_TIMEOUT))
        .layer(middleware::map_response(json_errors))
        .layer(header(header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
        .layer(header(header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .layer(header(header::REFERRER_POLICY, "no-referrer"))
        .with_state(app)
}

/// Only the box's own files: no inline script or style, no frames, forms post only here.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'";

/// Lets through what the token or a session grants; sends a browser without either to the
/// sign-in page, and answers anything else 401 (or 403 for a cross-site change).
async fn require_access(State(app): State<Arc<App>>, ConnectInfo(peer): ConnectInfo<SocketAddr>, request: Request, next: Next) -> Response {
    match app.sessions.access(&app.token, request.method(), request.headers(), peer.ip()) {
        auth::Access::Granted => next.run(request).await,
        auth::Access::WrongToken => ApiError::new(StatusCode::UNAUTHORIZED, "the access token is wrong").into_response(),
        auth::Access::Limited => too_many_wrong_tokens(),
        auth::Access::CrossSite => {
            ApiError::new(StatusCode::FORBIDDEN, "a change signed by the session cookie must come from this box's pages").into_response()
        }
        auth::Access::None if request.method() == Method::GET && pages::is_page(request.uri().path()) => pages::to_sign_in(request.uri()),
        auth::Access::None => {
            ApiError::new(StatusCode::UNAUTHORIZED, "send the access token as Authorization: Bearer <token>, or sign in at /login")
                .into_response()
        }
    }
}

/// 429 for an address that gave too many wrong tokens lately.
fn too_many_wrong_tokens() -> Response {
    ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too many wrong access tokens from this address: wait a minute")
        .retry_after(60)
        .into_response()
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such route (docs/http.md lists them)")
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
    ApiError::new(response.status(), message).into_response()
}

/// An error answer: `{"error": "..."}` with its status (and `Retry-After` when it says so).
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    message: Cow<'static, str>,
    retry_after_s: Option<u32>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<Cow<'static, str>>) -> Self {
        Self { status, message: message.into(), retry_after_s: None }
    }

    /// 400, naming the parameter and what it takes.
    fn bad(parameter: &str, what: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::BAD_REQUEST, format!("{parameter}: {what}"))
    }

    /// With `Retry-After: seconds`.
    fn retry_after(self, seconds: u32) -> Self {
        Self { retry_after_s: Some(seconds), ..self }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(serde_json::json!({ "error": self.message }))).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(seconds) = self.retry_after_s {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_empty_or_short_token_is_an_error_naming_the_file_not_the_contents() {
        let dir = tempfile::tempdir().unwrap();
        let config = |file: &str| HttpConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            token_file: Some(dir.path().join(file)),
            max_upload_bytes: default_max_upload_bytes(),
            public_url: None,
            cert_file: None,
            key_file: None,
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

    #[test]
    fn a_public_url_is_a_plain_http_address_without_credentials() {
        assert_eq!(check_public_url("http://gate-01.local:8080/"), Ok(()));
        assert_eq!(check_public_url("https://box.example"), Ok(()));
        for bad in ["gate-01.local:8080", "ftp://box", "http://user:pw@box", "http://box/?a=1", "nonsense"] {
            let problem = check_public_url(bad).expect_err(bad);
            assert!(!problem.contains("pw@"), "{problem}");
        }
    }
}
