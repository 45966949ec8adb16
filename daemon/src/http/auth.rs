//! Who may in: the access token as `Authorization: Bearer <token>`, or the session cookie a
//! browser gets at `/login` by giving the token once. Sessions live in memory (a restart signs
//! browsers out), are bounded in number and age, and are compared in constant time. A request
//! with only the cookie that changes something must come from the box's own pages.

use std::collections::HashMap;
use std::net::IpAddr;
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
/// Wrong tokens (sign-in or bearer) allowed per client address per window; then that address
/// gets 429 until the window is over, so guessing is slow and one client cannot lock out others.
const MAX_FAILED_SIGN_INS: u32 = 5;
const SIGN_IN_WINDOW: Duration = Duration::from_secs(60);
/// Addresses whose failures are remembered at most; beyond, new ones share one count.
const MAX_FAILING_CLIENTS: usize = 1024;

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
    /// Too many wrong tokens from this address lately (answer 429).
    Limited,
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
    /// Client address → wrong tokens in the window that started then.
    failures: HashMap<IpAddr, (u32, Instant)>,
}

impl SessionState {
    fn is_limited(&mut self, client: IpAddr) -> bool {
        let key = self.failure_key(client);
        self.failures.get(&key).is_some_and(|(n, _)| *n >= MAX_FAILED_SIGN_INS)
    }

    fn failed(&mut self, client: IpAddr) {
        let key = self.failure_key(client);
        self.failures.entry(key).or_insert((0, Instant::now())).0 += 1;
    }

    /// The address failures are counted under, with windows that ended forgotten.
    fn failure_key(&mut self, client: IpAddr) -> IpAddr {
        self.failures.retain(|_, (_, start)| start.elapsed() < SIGN_IN_WINDOW);
        match self.failures.len() < MAX_FAILING_CLIENTS || self.failures.contains_key(&client) {
            true => client,
            false => IpAddr::from([0, 0, 0, 0]),
        }
    }
}

impl Sessions {
    /// Decides what `headers` grant a request of `method` from `client`.
    pub fn access(&self, token: &Token, method: &Method, headers: &HeaderMap, client: IpAddr) -> Access {
        if let Some(given) = bearer(headers) {
            let mut state = self.lock();
            return match (state.is_limited(client), token.matches(given)) {
                (true, _) => Access::Limited,
                (false, true) => Access::Granted,
                (false, false) => {
                    state.failed(client);
                    Access::WrongToken
                }
            };
        }
        match session_cookie(headers) {
            Some(secret) if self.is_open(secret) => {
                if matches!(*method, Method::GET | Method::HEAD) || is_same_origin(headers) {
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

    /// Signs `client` in with `given`: a new session's secret, `Err(true)` for a wrong token,
    /// or `Err(false)` while this address gave too many wrong tokens lately (answer 429).
    pub fn sign_in(&self, token: &Token, given: &str, client: IpAddr) -> Result<String, bool> {
        let mut state = self.lock();
        let now = Instant::now();
        if state.is_limited(client) {
            return Err(false);
        }
        if !token.matches(given.trim()) {
            state.failed(client);
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

/// Whether a sign-in form may have come from the box's own page: browsers that say where a
/// request comes from must say this box (or the address bar), so another site cannot post it.
pub fn may_sign_in(headers: &HeaderMap) -> bool {
    match headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        Some(site) => site == "same-origin" || site == "none",
        None => true,
    }
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
pub fn cleared_cookie_header(secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOME: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

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
        assert_eq!(sessions.sign_in(&token, "wrong", HOME), Err(true));
        let secret = sessions.sign_in(&token, "0123456789abcdef", HOME).expect("signed in");
        let cookie = format!("other=1; {COOKIE}={secret}");
        let read = headers(&[("cookie", &cookie)]);
        assert_eq!(sessions.access(&token, &Method::GET, &read, HOME), Access::Granted);
        assert_eq!(sessions.access(&token, &Method::PUT, &read, HOME), Access::CrossSite);
        let own = headers(&[("cookie", &cookie), ("origin", "http://box:8080"), ("host", "box:8080")]);
        assert_eq!(sessions.access(&token, &Method::PUT, &own, HOME), Access::Granted);
        let foreign =
            headers(&[("cookie", &cookie), ("sec-fetch-site", "cross-site"), ("origin", "http://box:8080"), ("host", "box:8080")]);
        assert_eq!(sessions.access(&token, &Method::PUT, &foreign, HOME), Access::CrossSite);
        sessions.sign_out(&read);
        assert_eq!(sessions.access(&token, &Method::GET, &read, HOME), Access::None);
        let guessed = headers(&[("cookie", &format!("{COOKIE}=00"))]);
        assert_eq!(sessions.access(&token, &Method::GET, &guessed, HOME), Access::None);
    }

    #[test]
    fn the_bearer_header_decides_when_present() {
        let (token, sessions) = (Token::new("0123456789abcdef".into()), Sessions::default());
        assert_eq!(sessions.access(&token, &Method::PUT, &headers(&[("authorization", "bearer 0123456789abcdef")]), HOME), Access::Granted);
        assert_eq!(sessions.access(&token, &Method::GET, &headers(&[("authorization", "Bearer nope")]), HOME), Access::WrongToken);
        assert_eq!(sessions.access(&token, &Method::GET, &HeaderMap::new(), HOME), Access::None);
    }

    #[test]
    fn wrong_tokens_are_limited_per_address_and_bearer_guesses_count_too() {
        let (token, sessions) = (Token::new("0123456789abcdef".into()), Sessions::default());
        let other = IpAddr::from([192, 168, 1, 9]);
        for _ in 0..MAX_FAILED_SIGN_INS - 1 {
            assert_eq!(sessions.sign_in(&token, "guess", HOME), Err(true));
        }
        let guess = headers(&[("authorization", "Bearer guess")]);
        assert_eq!(sessions.access(&token, &Method::GET, &guess, HOME), Access::WrongToken);
        assert_eq!(sessions.sign_in(&token, "0123456789abcdef", HOME), Err(false), "this address waits out the window");
        let right = headers(&[("authorization", "Bearer 0123456789abcdef")]);
        assert_eq!(sessions.access(&token, &Method::GET, &right, HOME), Access::Limited);
        assert!(sessions.sign_in(&token, "0123456789abcdef", other).is_ok(), "another address is not locked out");
    }
}
