//! Who may in: the access token as `Authorization: Bearer <token>`, or the session cookie a
//! browser gets at `/login` by giving the token once. Sessions live in memory (a restart signs
//! browsers out), are bounded in number and age, and are compared in constant time. A request
//! with only the cookie that changes something must come from the box's own pages.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap, Method};

/// The secret every request must carry; never logged or shown.
pub struct Token(String);

impl Token {
    pub fn new(secret: String) -> Self {
        Self(secret)
    }

    /// Compares in time independent of where the strings differ.
    pub fn matches(&self, given: &str) -> bool {
        same_bytes(self.0.as_bytes(), given.as_bytes())
    }
}

fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The session cookie's name.
pub const COOKIE: &str = "glimpse_session";
/// How long a browser stays signed in.
pub const SESSION_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// Sessions kept at most; signing in beyond them ends the oldest.
const MAX_SESSIONS: usize = 64;
/// Failed sign-ins allowed per window, over all clients, before sign-in answers 429.
const MAX_FAILED_SIGN_INS: u32 = 5;
const SIGN_IN_WINDOW: Duration = Duration::from_secs(60);

/// What a request showed of itself.
#[derive(Debug, PartialEq)]
pub enum Access {
    /// The bearer token, or a session cookie on a request that changes nothing or comes from
    /// the box's own pages.
    Granted,
    /// A bearer header with the wrong token.
    WrongToken,
    /// A session cookie on a request that changes something, from another site.
    CrossSite,
    /// Nothing, or an unknown or expired session.
    None,
}

#[derive(Default)]
pub struct Sessions {
    state: Mutex<SessionState>,
}

#[derive(Default)]
struct SessionState {
    /// Session secret → when it was made (monotonic).
    open: HashMap<String, Instant>,
    failures: u32,
    window_start: Option<Instant>,
}

impl Sessions {
    /// Decides what `headers` grant for a request of `method`.
    pub fn access(&self, token: &Token, method: &Method, headers: &HeaderMap) -> Access {
        if let Some(given) = bearer(headers) {
            return if token.matches(given) { Access::Granted } else { Access::WrongToken };
        }
        match session_cookie(headers) {
            Some(secret) if self.is_open(secret) => {
                if method.is_safe() || is_same_origin(headers) {
                    Access::Granted
                } else {
                    Access::CrossSite
                }
            }
            _ => Access::None,
        }
    }

    fn is_open(&self, secret: &str) -> bool {
        let mut state = self.lock();
        state.open.retain(|_, made| made.elapsed() < SESSION_AGE);
        // Every open session is compared, so the time taken does not tell which one is near.
        state.open.keys().fold(false, |found, open| found | same_bytes(open.as_bytes(), secret.as_bytes()))
    }

    /// Signs in with `given`: a new session's secret, `Err(true)` for a wrong token, or
    /// `Err(false)` while too many wrong tokens were given lately (answer 429).
    pub fn sign_in(&self, token: &Token, given: &str) -> Result<String, bool> {
        let mut state = self.lock();
        let now = Instant::now();
        if state.window_start.is_none_or(|start| now.duration_since(start) >= SIGN_IN_WINDOW) {
            (state.window_start, state.failures) = (Some(now), 0);
        }
        if state.failures >= MAX_FAILED_SIGN_INS {
            return Err(false);
        }
        if !token.matches(given.trim()) {
            state.failures += 1;
            return Err(true);
        }
        if state.open.len() >= MAX_SESSIONS {
            if let Some(oldest) = state.open.iter().min_by_key(|(_, made)| **made).map(|(s, _)| s.clone()) {
                state.open.remove(&oldest);
            }
        }
        let secret: String = (0..32).map(|_| format!("{:02x}", rand::random::<u8>())).collect();
        state.open.insert(secret.clone(), now);
        Ok(secret)
    }

    pub fn sign_out(&self, headers: &HeaderMap) {
        if let Some(secret) = session_cookie(headers) {
            self.lock().open.retain(|open, _| !same_bytes(open.as_bytes(), secret.as_bytes()));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SessionState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The bearer token of `Authorization`, the scheme matched in any case.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let (scheme, token) = headers.get(header::AUTHORIZATION)?.to_str().ok()?.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token.trim())
}

fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find_map(|(name, value)| (name == COOKIE).then_some(value))
}

/// Whether the browser says the request comes from a page of this box: `Sec-Fetch-Site`, or
/// else an `Origin` whose host is the `Host` asked for.
fn is_same_origin(headers: &HeaderMap) -> bool {
    let text = |name| headers.get(name).and_then(|v: &header::HeaderValue| v.to_str().ok());
    if let Some(site) = text(header::HeaderName::from_static("sec-fetch-site")) {
        return site == "same-origin";
    }
    match (text(header::ORIGIN), text(header::HOST)) {
        (Some(origin), Some(host)) => origin.split_once("://").is_some_and(|(_, rest)| rest == host),
        _ => false,
    }
}

/// The `Set-Cookie` value for a new session (`secure` under TLS).
pub fn session_cookie_header(secret: &str, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{COOKIE}={secret}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}", SESSION_AGE.as_secs())
}

/// The `Set-Cookie` value that ends the session in the browser.
pub fn cleared_cookie_header() -> String {
    format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn only_the_whole_token_matches() {
        let token = Token::new("0123456789abcdef".into());
        assert!(token.matches("0123456789abcdef"));
        assert!(!token.matches("0123456789abcdeF"));
        assert!(!token.matches("0123456789abcde"));
        assert!(!token.matches(""));
    }

    #[test]
    fn a_session_grants_reads_and_same_origin_changes_only() {
        let (token, sessions) = (Token::new("0123456789abcdef".into()), Sessions::default());
        assert_eq!(sessions.sign_in(&token, "wrong"), Err(true));
        let secret = sessions.sign_in(&token, "0123456789abcdef").expect("signed in");
        let cookie = format!("other=1; {COOKIE}={secret}");
        let read = headers(&[("cookie", &cookie)]);
        assert_eq!(sessions.access(&token, &Method::GET, &read), Access::Granted);
        assert_eq!(sessions.access(&token, &Method::PUT, &read), Access::CrossSite);
        let own = headers(&[("cookie", &cookie), ("origin", "http://box:8080"), ("host", "box:8080")]);
        assert_eq!(sessions.access(&token, &Method::PUT, &own), Access::Granted);
        let foreign =
            headers(&[("cookie", &cookie), ("sec-fetch-site", "cross-site"), ("origin", "http://box:8080"), ("host", "box:8080")]);
        assert_eq!(sessions.access(&token, &Method::PUT, &foreign), Access::CrossSite);
        sessions.sign_out(&read);
        assert_eq!(sessions.access(&token, &Method::GET, &read), Access::None);
        let guessed = headers(&[("cookie", &format!("{COOKIE}=00"))]);
        assert_eq!(sessions.access(&token, &Method::GET, &guessed), Access::None);
    }

    #[test]
    fn the_bearer_header_decides_when_present() {
        let (token, sessions) = (Token::new("0123456789abcdef".into()), Sessions::default());
        assert_eq!(sessions.access(&token, &Method::PUT, &headers(&[("authorization", "bearer 0123456789abcdef")])), Access::Granted);
        assert_eq!(sessions.access(&token, &Method::GET, &headers(&[("authorization", "Bearer nope")])), Access::WrongToken);
        assert_eq!(sessions.access(&token, &Method::GET, &HeaderMap::new()), Access::None);
    }

    #[test]
    fn wrong_tokens_are_limited_and_the_right_one_then_waits_too() {
        let (token, sessions) = (Token::new("0123456789abcdef".into()), Sessions::default());
        for _ in 0..MAX_FAILED_SIGN_INS {
            assert_eq!(sessions.sign_in(&token, "guess"), Err(true));
        }
        assert_eq!(sessions.sign_in(&token, "0123456789abcdef"), Err(false), "limited for the rest of the window");
    }
}
