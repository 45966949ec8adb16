//! Keeping secrets out of logs, errors and MQTT payloads.

/// The URI with any password replaced by `***` (the user name is kept: it helps diagnosis).
pub fn redact_uri(uri: &str) -> String {
    let Some(scheme_end) = uri.find("://") else { return uri.to_owned() };
    let rest = &uri[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else { return uri.to_owned() };
    let userinfo = &authority[..at];
    let user = userinfo.split(':').next().unwrap_or_default();
    let masked = if userinfo.contains(':') { format!("{user}:***") } else { user.to_owned() };
    format!("{}{masked}{}", &uri[..scheme_end + 3], &rest[at..])
}

/// `text` with the URI's password removed wherever it appears (GStreamer errors can quote it).
pub fn redact_secrets(text: &str, uri: &str) -> String {
    let mut out = text.replace(uri, &redact_uri(uri));
    if let Some(password) = uri_password(uri) {
        if password.len() >= 3 {
            out = out.replace(password, "***");
        }
    }
    out
}

fn uri_password(uri: &str) -> Option<&str> {
    let rest = &uri[uri.find("://")? + 3..];
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let userinfo = &authority[..authority.rfind('@')?];
    userinfo.split_once(':').map(|(_, p)| p)
}

#[cfg(test)]
mod tests {
    use super::{redact_secrets, redact_uri};

    #[test]
    fn passwords_quoted_in_error_text_are_masked() {
        let uri = "rtsp://admin:s3cret@cam/live";
        let text = "Could not open rtsp://admin:s3cret@cam/live: auth s3cret rejected";
        assert_eq!(redact_secrets(text, uri), "Could not open rtsp://admin:***@cam/live: auth *** rejected");
    }

    #[test]
    fn passwords_in_uris_are_masked_and_everything_else_is_kept() {
        assert_eq!(redact_uri("rtsp://admin:s3cret@10.0.0.2:554/live"), "rtsp://admin:***@10.0.0.2:554/live");
        assert_eq!(redact_uri("rtsp://a:b:c@h/x?p=1@2"), "rtsp://a:***@h/x?p=1@2");
        assert_eq!(redact_uri("rtsp://cam/x"), "rtsp://cam/x");
        assert_eq!(redact_uri("file:///a/b.mp4"), "file:///a/b.mp4");
        assert_eq!(redact_uri("test:"), "test:");
    }
}
