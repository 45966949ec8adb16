//! A camera URI, parsed once (when the configuration is read) into the kind of source it names;
//! the rest of the daemon matches on [`SourceKind`], never on the text.

use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;

use crate::redact::redact_uri;

/// What a camera URI names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceKind {
    /// `rtsp://` or `rtsps://`: a network camera.
    Rtsp,
    /// `file:///abs/path`.
    File(PathBuf),
    /// `http(s)://`: a progressive file over HTTP, read at its own pace like a file.
    Http,
    /// `v4l2:///dev/videoN`: a USB or other V4L2 camera.
    V4l2,
    /// `csi://N`: the board's camera connector (Jetson's Argus or the Pi's libcamera).
    Csi(u32),
    /// `test:`: GStreamer's test pattern, live.
    Test,
    /// Not a URI Glimpse can read; why, for the configuration check (which rejects it, so a
    /// running daemon never sees one).
    Unsupported(String),
}

/// A camera URI: its text (which GStreamer is given) and its kind.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(from = "String")]
pub struct CameraUri {
    text: String,
    kind: SourceKind,
}

const SCHEMES: [&str; 8] = ["rtsp://", "rtsps://", "file://", "http://", "https://", "v4l2://", "csi://", "test:"];

impl From<String> for CameraUri {
    fn from(text: String) -> Self {
        let kind = parse(&text).unwrap_or_else(SourceKind::Unsupported);
        Self { text, kind }
    }
}

/// The kind of source `text` names, or why it names none.
fn parse(text: &str) -> Result<SourceKind, String> {
    let kind = if text.starts_with("rtsp://") || text.starts_with("rtsps://") {
        SourceKind::Rtsp
    } else if let Some(path) = text.strip_prefix("file://") {
        if !path.starts_with('/') {
            return Err("file URIs need an absolute path: file:///abs/path.mp4".into());
        }
        SourceKind::File(PathBuf::from(path))
    } else if text.starts_with("http://") || text.starts_with("https://") {
        SourceKind::Http
    } else if text.starts_with("v4l2://") {
        SourceKind::V4l2
    } else if let Some(n) = text.strip_prefix("csi://") {
        SourceKind::Csi(n.trim_end_matches('/').parse().map_err(|_| "csi URIs name the camera by number: csi://0".to_owned())?)
    } else if text.starts_with("test:") {
        SourceKind::Test
    } else {
        return Err(format!("{:?} is not a supported camera URI: use one of {}", redact_uri(text), SCHEMES.join(", ")));
    };
    Ok(kind)
}

impl CameraUri {
    pub fn kind(&self) -> &SourceKind {
        &self.kind
    }

    /// The URI as configured, credentials included: for GStreamer only, never for logs.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The URI with any password replaced, for logs and status.
    pub fn redacted(&self) -> String {
        redact_uri(&self.text)
    }

    /// Whether the source is read at its own pace (a file: every sampled frame is processed)
    /// rather than in real time.
    pub fn is_file(&self) -> bool {
        matches!(self.kind, SourceKind::File(_) | SourceKind::Http)
    }
}

/// Never shows the password.
impl fmt::Debug for CameraUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(text: &str) -> Result<SourceKind, String> {
        match CameraUri::from(text.to_owned()).kind {
            SourceKind::Unsupported(why) => Err(why),
            kind => Ok(kind),
        }
    }

    #[test]
    fn each_scheme_becomes_its_kind_and_bad_ones_are_explained() {
        assert_eq!(kind("rtsps://u:p@cam/x"), Ok(SourceKind::Rtsp));
        assert_eq!(kind("file:///clips/a.mp4"), Ok(SourceKind::File("/clips/a.mp4".into())));
        assert_eq!(kind("csi://1"), Ok(SourceKind::Csi(1)));
        assert_eq!(kind("https://host/a.mp4"), Ok(SourceKind::Http));
        assert!(kind("file://clips/a.mp4").is_err_and(|e| e.contains("absolute path")));
        assert!(kind("csi://front").is_err_and(|e| e.contains("by number")));
        assert!(kind("ftp://user:secret@host/a").is_err_and(|e| e.contains("not a supported") && !e.contains("secret")));
    }

    #[test]
    fn debug_never_shows_the_password() {
        let uri = CameraUri::from("rtsp://admin:s3cret@cam/live".to_owned());
        assert!(!format!("{uri:?}").contains("s3cret"));
    }
}
