//! Keeping secrets out of logs, errors and MQTT payloads.
//!
//! Users paste camera URIs as their cameras' apps show them, so a password may hold characters
//! a URI should escape (`#`, `?`, `/`, `@`), and some cameras take credentials as query
//! parameters (`?user=admin&password=…`). Both are masked, in every spelling an error message
//! may quote them (as written, or percent-decoded).

/// Query parameters whose values are credentials, matched anywhere in the name, in any case
/// (`password`, `passwd`, `api_key`, `X-Amz-Signature`, `access_token`, …).
const SECRET_PARAMETERS: [&str; 7] = ["pass", "pwd", "token", "key", "auth", "secret", "signature"];

/// Secrets shorter than this are masked inside the URI only: replacing one or two characters
/// throughout a message would garble it.
const MIN_SECRET_LEN: usize = 3;

/// The URI with its password and credential parameters replaced by `***` (the user name is
/// kept: it helps diagnosis).
pub fn redact_uri(uri: &str) -> String {
    let Some(parts) = UriParts::split(uri) else { return uri.to_owned() };
    let mut out = String::with_capacity(uri.len());
    out.push_str(parts.head);
    if let Some(user) = parts.user {
        out.push_str(user);
        if parts.password.is_some() {
            out.push_str(":***");
        }
        out.push('@');
    }
    out.push_str(&redact_query(parts.tail));
    out
}

/// `text` with the URI's secrets removed wherever they appear (GStreamer errors can quote the
/// URI, or only its password, percent-decoded or not).
pub fn redact_secrets(text: &str, uri: &str) -> String {
    let mut out = text.replace(uri, &redact_uri(uri));
    for secret in secrets_of(uri) {
        out = out.replace(&secret, "***");
    }
    out
}

/// Every secret the URI carries, as written, percent-decoded, and cut where a URI parser would
/// cut a password holding `#`, `?`, `/` or `@` (an error may quote either piece).
fn secrets_of(uri: &str) -> Vec<String> {
    let Some(parts) = UriParts::split(uri) else { return Vec::new() };
    let mut secrets: Vec<String> = parts.password.into_iter().map(str::to_owned).collect();
    secrets.extend(query_pairs(parts.tail).filter(|(name, _)| is_secret_parameter(name)).map(|(_, value)| value.to_owned()));
    let mut spellings: Vec<String> = Vec::new();
    for secret in secrets.iter().flat_map(|s| [s.clone(), percent_decoded(s)]) {
        let cuts = secret.match_indices(['#', '?', '/', '@']).map(|(i, _)| i);
        let pieces: Vec<String> = cuts.flat_map(|i| [secret[..i].to_owned(), secret[i + 1..].to_owned()]).collect();
        spellings.extend(pieces);
        spellings.push(secret);
    }
    spellings.retain(|s| s.len() >= MIN_SECRET_LEN);
    // Longest first, so that a secret containing another is masked whole.
    spellings.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    spellings.dedup();
    spellings
}

/// A URI cut around its credentials: `head` is the scheme and `://`, `tail` the host onwards.
struct UriParts<'a> {
    head: &'a str,
    user: Option<&'a str>,
    password: Option<&'a str>,
    tail: &'a str,
}

impl<'a> UriParts<'a> {
    fn split(uri: &'a str) -> Option<Self> {
        let start = uri.find("://")? + 3;
        let (head, rest) = uri.split_at(start);
        let Some(at) = userinfo_end(rest) else { return Some(Self { head, user: None, password: None, tail: rest }) };
        let userinfo = &rest[..at];
        let (user, password) = match userinfo.split_once(':') {
            Some((user, password)) => (user, Some(password)),
            None => (userinfo, None),
        };
        Some(Self { head, user: Some(user), password, tail: &rest[at + 1..] })
    }
}

/// Where the user information of `rest` (what follows `scheme://`) ends: the last `@` that is
/// followed by a plausible host (a name, an address or `[v6]`, an optional port, then the end,
/// `/`, `?` or `#`) and preceded by `user:` before any `/`, `?` or `#`. A password may then hold
/// `@`, `/`, `?` or `#` unescaped; where that is ambiguous (an `@` in a path) more is masked,
/// never less.
fn userinfo_end(rest: &str) -> Option<usize> {
    rest.match_indices('@').map(|(at, _)| at).rev().find(|&at| {
        let userinfo = &rest[..at];
        let colon = userinfo.find(':');
        let first_reserved = userinfo.find(['/', '?', '#']).unwrap_or(userinfo.len());
        colon.is_some_and(|c| c < first_reserved) && is_host_then_end(&rest[at + 1..])
    })
}

fn is_host_then_end(text: &str) -> bool {
    let end = text.find(['/', '?', '#']).unwrap_or(text.len());
    let authority = &text[..end];
    let host = match authority.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((address, port)) => return address.chars().all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.') && is_port(port),
            None => return false,
        },
        None => authority,
    };
    let (name, port) = host.split_once(':').map_or((host, ""), |(n, p)| (n, p));
    !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' || c == '%')
        && (port.is_empty() || port.chars().all(|c| c.is_ascii_digit()))
}

fn is_port(text: &str) -> bool {
    text.is_empty() || text.strip_prefix(':').is_some_and(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
}

/// `tail` (host onwards) with the values of credential parameters masked.
fn redact_query(tail: &str) -> String {
    let Some(question) = tail.find('?') else { return tail.to_owned() };
    let (before, query) = tail.split_at(question + 1);
    let (query, fragment) = query.split_at(query.find('#').unwrap_or(query.len()));
    let masked: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if is_secret_parameter(name) => format!("{name}=***"),
            _ => pair.to_owned(),
        })
        .collect();
    format!("{before}{}{fragment}", masked.join("&"))
}

fn query_pairs(tail: &str) -> impl Iterator<Item = (&str, &str)> {
    let query = tail.split_once('?').map_or("", |(_, q)| q);
    let query = query.split('#').next().unwrap_or_default();
    query.split('&').filter_map(|pair| pair.split_once('='))
}

fn is_secret_parameter(name: &str) -> bool {
    let name = percent_decoded(name).to_ascii_lowercase();
    SECRET_PARAMETERS.iter().any(|word| name.contains(word))
}

fn percent_decoded(text: &str) -> String {
    percent_encoding::percent_decode_str(text).decode_utf8_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::{redact_secrets, redact_uri};

    /// Hostile spellings: the URI, what must not survive redaction, and what must.
    pub const HOSTILE: [(&str, &[&str], &str); 11] = [
        ("rtsp://admin:s3cret@10.0.0.2:554/live", &["s3cret"], "rtsp://admin:***@10.0.0.2:554/live"),
        ("rtsp://admin:pa#ssw0rd@cam/x", &["pa#ssw0rd", "ssw0rd"], "rtsp://admin:***@cam/x"),
        ("rtsp://admin:pa?ss@cam/x", &["pa?ss"], "rtsp://admin:***@cam/x"),
        ("rtsp://admin:pa/ss@cam:8554/x", &["pa/ss"], "rtsp://admin:***@cam:8554/x"),
        ("rtsp://admin:p@ss@cam/x", &["p@ss"], "rtsp://admin:***@cam/x"),
        ("rtsp://admin:Summer@2024/x@cam/live", &["Summer@2024/x", "Summer", "2024/x"], "rtsp://admin:***@cam/live"),
        ("rtsp://admin:1234/5678@cam/x", &["1234/5678", "5678"], "rtsp://admin:***@cam/x"),
        ("rtsp://admin:p%40ss%23@[fe80::1]:554/x", &["p%40ss%23", "p@ss#"], "rtsp://admin:***@[fe80::1]:554/x"),
        ("rtsp://cam/stream?user=admin&password=hunter2", &["hunter2"], "rtsp://cam/stream?user=admin&password=***"),
        ("rtsp://cam/s?PWD=hunter2&channel=1&Token=t0ken#x", &["hunter2", "t0ken"], "rtsp://cam/s?PWD=***&channel=1&Token=***#x"),
        ("https://u:k3y@host/a.mp4?X-Amz-Signature=abcdef", &["k3y", "abcdef"], "https://u:***@host/a.mp4?X-Amz-Signature=***"),
    ];

    #[test]
    fn hostile_spellings_of_credentials_are_masked() {
        for (uri, secrets, redacted) in HOSTILE {
            assert_eq!(redact_uri(uri), redacted, "{uri}");
            let text = format!("Could not open {uri}: 401 for {}", secrets.join(" and "));
            let masked = redact_secrets(&text, uri);
            for secret in secrets {
                assert!(!masked.contains(secret), "{uri}: {secret} survives in {masked}");
            }
        }
    }

    #[test]
    fn passwords_quoted_in_error_text_are_masked() {
        let uri = "rtsp://admin:s3cret@cam/live";
        let text = "Could not open rtsp://admin:s3cret@cam/live: auth s3cret rejected";
        assert_eq!(redact_secrets(text, uri), "Could not open rtsp://admin:***@cam/live: auth *** rejected");
    }

    #[test]
    fn an_ambiguous_at_sign_masks_more_rather_than_less() {
        assert_eq!(redact_uri("rtsp://a:b:c@h/x?p=1@2"), "rtsp://a:***@2");
        assert_eq!(redact_uri("rtsp://cam:554/x@y?channel=1"), "rtsp://cam:***@y?channel=1");
        assert_eq!(redact_uri("rtsp://cam/s?password=hunter2&x=a@b"), "rtsp://cam/s?password=***&x=a@b");
    }

    #[test]
    fn what_is_not_a_credential_is_kept() {
        assert_eq!(redact_uri("rtsp://cam/x"), "rtsp://cam/x");
        assert_eq!(redact_uri("rtsp://admin@cam/x"), "rtsp://admin@cam/x");
        assert_eq!(redact_uri("file:///a/b@2x.mp4"), "file:///a/b@2x.mp4");
        assert_eq!(redact_uri("test:"), "test:");
    }
}
