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

#[cfg(test)]
mod tests {
    use super::redact_uri;

    #[test]
    fn passwords_in_uris_are_masked_and_everything_else_is_kept() {
        assert_eq!(redact_uri("rtsp://admin:s3cret@10.0.0.2:554/live"), "rtsp://admin:***@10.0.0.2:554/live");
        assert_eq!(redact_uri("rtsp://a:b:c@h/x?p=1@2"), "rtsp://a:***@h/x?p=1@2");
        assert_eq!(redact_uri("rtsp://cam/x"), "rtsp://cam/x");
        assert_eq!(redact_uri("file:///a/b.mp4"), "file:///a/b.mp4");
        assert_eq!(redact_uri("test:"), "test:");
    }
}
