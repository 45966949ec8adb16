//! Where secrets come from: a file named in the config, else a systemd credential
//! (`LoadCredential=`, read from `$CREDENTIALS_DIRECTORY`). Never from the config text itself.

use std::path::{Path, PathBuf};

/// Why a secret could not be had; names the file and what it holds, never the contents.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read the {what} from {}: {source}", file.display())]
    Unreadable { what: &'static str, file: PathBuf, source: std::io::Error },
    #[error("the {what} file {} is empty", file.display())]
    Empty { what: &'static str, file: PathBuf },
    #[error("the {what} in {} is too short: use at least {min} characters, e.g. from `openssl rand -hex 32`", file.display())]
    TooShort { what: &'static str, file: PathBuf, min: usize },
    #[error("the {what} in {} must be printable ASCII without spaces (what an HTTP header carries)", file.display())]
    NotPrintable { what: &'static str, file: PathBuf },
    #[error("no {what}: {hint}")]
    Missing { what: &'static str, hint: &'static str },
}

/// The file holding a secret: `configured` if set, else the systemd credential `credential`
/// when the service manager provided it; `None` when neither exists.
pub fn secret_file(configured: Option<&Path>, credential: &str) -> Option<PathBuf> {
    if let Some(file) = configured {
        return Some(file.to_owned());
    }
    let from_systemd = PathBuf::from(std::env::var_os("CREDENTIALS_DIRECTORY")?).join(credential);
    from_systemd.exists().then_some(from_systemd)
}

/// The trimmed contents of a secret file.
pub fn read_secret(file: &Path, what: &'static str) -> Result<String, SecretError> {
    std::fs::read_to_string(file).map(|s| s.trim().to_owned()).map_err(|source| SecretError::Unreadable {
        what,
        file: file.to_owned(),
        source,
    })
}
