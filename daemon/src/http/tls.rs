//! HTTPS for the pages and API (`[http] cert_file` and `key_file`): rustls with ring's crypto,
//! the PEM files read once at start-up. Errors name the key and the file, never what it holds.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("http.cert_file: no certificate could be read from {}: {reason} (give the PEM chain, the server's certificate first)", file.display())]
    Certificates { file: PathBuf, reason: String },
    #[error("http.key_file: no private key could be read from {}: {reason} (give a PEM key: PKCS#8, PKCS#1 or SEC1)", file.display())]
    Key { file: PathBuf, reason: String },
    #[error("http.cert_file and http.key_file do not make a server identity: {0}")]
    Identity(String),
}

/// The server's TLS setup from a PEM certificate chain and its private key.
pub fn server_config(cert_file: &Path, key_file: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    crate::tls::use_ring();
    let certificates = |reason: String| TlsError::Certificates { file: cert_file.to_owned(), reason };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .map_err(|e| certificates(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| certificates(e.to_string()))?;
    if chain.is_empty() {
        return Err(certificates("the file holds no CERTIFICATE block".into()));
    }
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| TlsError::Key { file: key_file.to_owned(), reason: e.to_string() })?;
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Identity(e.to_string()))?;
    // The server speaks HTTP/1.1 only.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreadable_or_empty_pem_files_are_errors_naming_the_key_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        let missing = server_config(&cert, &key).unwrap_err().to_string();
        assert!(missing.starts_with("http.cert_file") && missing.contains("cert.pem"), "{missing}");
        std::fs::write(&cert, "not a certificate\n").unwrap();
        assert!(server_config(&cert, &key).unwrap_err().to_string().contains("no CERTIFICATE block"));
        // A real-looking block with a key file that holds none: the key's error, without its text.
        std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n").unwrap();
        std::fs::write(&key, "secret-looking text\n").unwrap();
        let no_key = server_config(&cert, &key).unwrap_err().to_string();
        assert!(no_key.starts_with("http.key_file") && !no_key.contains("secret-looking"), "{no_key}");
    }
}
