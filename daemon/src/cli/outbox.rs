//! `glimpse outbox stats|export|purge`: the operator's view of the outbox. They open the
//! database themselves, so they refuse (with a clear error) while the daemon holds it.

use std::io::Write;

use serde::Serialize;

use crate::outbox::{Outbox, OutboxError};

#[derive(Debug, Serialize)]
pub struct OutboxReport {
    pub pending: u64,
    pub pending_bytes: u64,
    /// Capture time (unix ms) of the oldest pending record.
    pub oldest_pending_ts: Option<i64>,
    pub dead_letters: usize,
    pub quarantined: usize,
}

pub fn report(outbox: &Outbox) -> Result<OutboxReport, OutboxError> {
    let backlog = outbox.backlog();
    Ok(OutboxReport {
        pending: backlog.records,
        pending_bytes: backlog.bytes,
        oldest_pending_ts: outbox.oldest_ts()?,
        dead_letters: outbox.dead_len(),
        quarantined: outbox.quarantined_len(),
    })
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    #[error("cannot write the export: {0}")]
    Write(#[from] std::io::Error),
    #[error("cannot serialise a record: {0}")]
    Json(#[from] serde_json::Error),
}

/// What an export wrote, and what it found unreadable (and left where it was).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Exported {
    pub records: u64,
    pub corrupt: u64,
}

/// Writes every pending record as one JSON line `{seq, id, values, metadata}`. Reads only: a
/// record that fails its checksum is counted and logged, not moved (the daemon quarantines it).
pub fn export_pending(outbox: &Outbox, out: &mut impl Write) -> Result<Exported, ExportError> {
    const PAGE: usize = 1000;
    let mut cursor = 0;
    let mut exported = Exported::default();
    loop {
        let (page, corrupt) = outbox.scan(cursor, PAGE)?;
        for bad in &corrupt {
            tracing::warn!(seq = bad.seq, error = %bad.error, "pending record fails its check; not exported");
        }
        exported.corrupt += corrupt.len() as u64;
        for (seq, record) in &page {
            let line = serde_json::json!({ "seq": seq, "id": record.id, "values": record.values, "metadata": record.metadata });
            serde_json::to_writer(&mut *out, &line)?;
            out.write_all(b"\n")?;
            exported.records += 1;
        }
        let last_seen = page.last().map(|(seq, _)| *seq).into_iter().chain(corrupt.last().map(|c| c.seq)).max();
        match last_seen {
            Some(seq) if page.len() == PAGE => cursor = seq + 1,
            _ => return Ok(exported),
        }
    }
}

/// Writes every dead letter as one JSON line `{error, record}`; returns the count.
pub fn export_dead(outbox: &Outbox, out: &mut impl Write) -> Result<u64, ExportError> {
    let mut written = 0;
    for letter in outbox.dead_letters() {
        out.write_all(&letter?)?;
        out.write_all(b"\n")?;
        written += 1;
    }
    Ok(written)
}
