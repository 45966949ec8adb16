//! The durable buffer between inference and the index, in sled.
//!
//! Invariants:
//! - A record is *accepted* once [`Outbox::append`] has returned: it is written and flushed to
//!   disk before anything else happens to it.
//! - A record leaves `pending` only through [`Outbox::remove`] after the index acknowledged it
//!   with a 2xx, or through [`Outbox::dead_letter`] after a permanent rejection (kept, not lost).
//! - Records keep their id forever, so replaying after a crash overwrites rather than duplicates.
//!
//! Key layout: tree `pending` and tree `dead`, keyed by the record's sequence number (`u64`,
//! big-endian, from sled's monotonic `generate_id`, so iteration order is arrival order).
//! Value: one format byte (`1`) then the record as JSON. A value that does not decode is moved
//! to tree `quarantine` and counted, never sent.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::config::{KeyPath, Problem};
use crate::record::Record;

const FORMAT_V1: u8 = 1;

/// `[outbox]`: reserved for caps and flush policy; the defaults need no keys.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct OutboxConfig {}

impl OutboxConfig {
    pub fn validate(&self, _at: &KeyPath, _problems: &mut Vec<Problem>) {}
}

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("cannot open the outbox database in {path}: {source}; check that data_dir exists and is writable")]
    Open { path: PathBuf, source: sled::Error },
    #[error("outbox storage failed: {0}")]
    Storage(#[from] sled::Error),
    #[error("cannot encode record {id}: {source}")]
    Encode { id: String, source: serde_json::Error },
}

#[derive(Clone)]
pub struct Outbox {
    db: sled::Db,
    pending: sled::Tree,
    dead: sled::Tree,
    quarantine: sled::Tree,
}

impl Outbox {
    pub fn open(data_dir: &Path) -> Result<Self, OutboxError> {
        let path = data_dir.join("outbox");
        let open_err = |source| OutboxError::Open { path: path.clone(), source };
        let db = sled::Config::new().path(&path).open().map_err(open_err)?;
        let pending = db.open_tree("pending").map_err(open_err)?;
        let dead = db.open_tree("dead").map_err(open_err)?;
        let quarantine = db.open_tree("quarantine").map_err(open_err)?;
        Ok(Self { db, pending, dead, quarantine })
    }

    /// Writes `records` and flushes them to disk; when this returns Ok they are accepted.
    pub fn append(&self, records: &[Record]) -> Result<(), OutboxError> {
        let mut batch = sled::Batch::default();
        for record in records {
            let seq = self.db.generate_id()?;
            batch.insert(&seq.to_be_bytes(), encode(record)?);
        }
        self.pending.apply_batch(batch)?;
        self.db.flush()?;
        Ok(())
    }

    /// Up to `max` of the oldest pending records, with their sequence numbers.
    pub fn oldest(&self, max: usize) -> Result<Vec<(u64, Record)>, OutboxError> {
        let mut out = Vec::with_capacity(max);
        for entry in self.pending.iter() {
            if out.len() == max {
                break;
            }
            let (key, value) = entry?;
            let seq = key_seq(&key);
            match decode(&value) {
                Some(record) => out.push((seq, record)),
                None => {
                    tracing::error!(seq, "outbox record does not decode; moved to quarantine, not sent");
                    self.quarantine.insert(&key, value)?;
                    self.pending.remove(&key)?;
                }
            }
        }
        Ok(out)
    }

    /// Forgets records the index has acknowledged.
    pub fn remove(&self, seqs: &[u64]) -> Result<(), OutboxError> {
        let mut batch = sled::Batch::default();
        for seq in seqs {
            batch.remove(&seq.to_be_bytes());
        }
        self.pending.apply_batch(batch)?;
        self.db.flush()?;
        Ok(())
    }

    /// Sets aside records the index rejected permanently, with the reason.
    pub fn dead_letter(&self, records: &[(u64, Record)], reason: &str) -> Result<(), OutboxError> {
        for (seq, record) in records {
            let entry = serde_json::json!({ "error": reason, "record": record });
            self.dead.insert(seq.to_be_bytes(), serde_json::to_vec(&entry).map_err(|source| OutboxError::Encode { id: record.id.clone(), source })?)?;
            self.pending.remove(seq.to_be_bytes())?;
        }
        self.db.flush()?;
        Ok(())
    }

    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    pub fn dead_len(&self) -> usize {
        self.dead.len()
    }

    pub fn flush(&self) -> Result<(), OutboxError> {
        self.db.flush()?;
        Ok(())
    }
}

fn key_seq(key: &[u8]) -> u64 {
    let mut bytes = [0u8; 8];
    let n = key.len().min(8);
    bytes[8 - n..].copy_from_slice(&key[key.len() - n..]);
    u64::from_be_bytes(bytes)
}

fn encode(record: &Record) -> Result<Vec<u8>, OutboxError> {
    let mut out = vec![FORMAT_V1];
    serde_json::to_writer(&mut out, record).map_err(|source| OutboxError::Encode { id: record.id.clone(), source })?;
    Ok(out)
}

fn decode(value: &[u8]) -> Option<Record> {
    match value.split_first() {
        Some((&FORMAT_V1, json)) => serde_json::from_slice(json).ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Metadata;

    fn record(id: &str) -> Record {
        Record {
            id: id.into(),
            values: vec![0.6, 0.8],
            metadata: Metadata {
                device: "d".into(), camera: "c".into(), ts: 1, pts_ms: 0, label: "person".into(), score: 0.9,
                x: 1, y: 2, w: 3, h: 4, frame_w: 10, frame_h: 10,
            },
        }
    }

    #[test]
    fn records_survive_reopening_in_arrival_order_until_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let outbox = Outbox::open(dir.path()).expect("open");
            outbox.append(&[record("a"), record("b")]).expect("append");
            outbox.append(&[record("c")]).expect("append");
        }
        let outbox = Outbox::open(dir.path()).expect("reopen");
        let ids: Vec<_> = outbox.oldest(10).expect("read").into_iter().map(|(_, r)| r.id).collect();
        assert_eq!(ids, ["a", "b", "c"]);
        let first_two: Vec<u64> = outbox.oldest(2).expect("read").into_iter().map(|(s, _)| s).collect();
        outbox.remove(&first_two).expect("remove");
        assert_eq!(outbox.pending_len(), 1);
    }

    #[test]
    fn undecodable_values_are_quarantined_not_returned() {
        let dir = tempfile::tempdir().expect("tempdir");
        let outbox = Outbox::open(dir.path()).expect("open");
        outbox.pending.insert(7u64.to_be_bytes(), b"garbage".to_vec()).expect("insert");
        outbox.append(&[record("ok")]).expect("append");
        let got = outbox.oldest(10).expect("read");
        assert_eq!(got.len(), 1);
        assert_eq!(outbox.quarantine.len(), 1);
    }

    #[test]
    fn dead_letters_leave_pending_but_are_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let outbox = Outbox::open(dir.path()).expect("open");
        outbox.append(&[record("x")]).expect("append");
        let batch = outbox.oldest(10).expect("read");
        outbox.dead_letter(&batch, "400: bad metadata").expect("dead letter");
        assert_eq!((outbox.pending_len(), outbox.dead_len()), (0, 1));
    }
}
