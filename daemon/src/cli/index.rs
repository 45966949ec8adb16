//! `glimpse index export`: every record the index on the device holds, as JSON lines. It opens
//! the index read-only, so it runs beside the daemon.

use std::io::Write;

use crate::config::Config;
use crate::index::{Index, IndexError};

#[derive(Debug, thiserror::Error)]
pub enum IndexExportError {
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error("cannot write the export: {0}")]
    Write(#[from] std::io::Error),
}

/// Writes every record within retention as one JSON line `{seq, id, values, metadata}`, oldest
/// first; returns how many.
pub fn export(config: &Config, out: &mut impl Write) -> Result<u64, IndexExportError> {
    let index = Index::open_to_search(&config.device.data_dir, &config.search, None)?;
    let mut written = 0;
    for record in index.records() {
        serde_json::to_writer(&mut *out, &record?).map_err(std::io::Error::from)?;
        out.write_all(b"\n")?;
        written += 1;
    }
    Ok(written)
}
