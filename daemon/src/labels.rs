//! People's names for objects (`PUT /api/records/{id}/label`): kept on the device, and sent to
//! Pinecone as metadata `user_label` until it acknowledges them.
//!
//! Owns its own sled database (`labels/` in the data dir), apart from the outbox: a label is not
//! a record, and the outbox's rules (caps, release, replay) do not apply to it. Two trees:
//! `names` (record id → label) and `unsent` (record id → the label Pinecone still has to get;
//! empty for a label taken away). Both change in one transaction and are flushed before a
//! change is acknowledged, so a power cut loses no label and no pending update.
//!
//! How a label reaches Pinecone whatever the order of events ([`crate::sync`]):
//! - an upsert carries the record's label as it is when the request is built ([`Labels::apply`]);
//! - a label set after that is sent with `POST /vectors/update` from `unsent`, and leaves it
//!   only when acknowledged and still the same ([`Labels::mark_sent`]);
//! - an upsert acknowledged after a label changed (it was built before) puts the label back
//!   into `unsent` ([`Labels::resend_changed`]), because the upsert replaced the metadata.

use std::path::{Path, PathBuf};

use sled::Transactional;

use crate::record::Record;

/// Longest label, in characters.
pub const MAX_CHARS: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum LabelsError {
    #[error("cannot open the labels database in {path}: {source}; check that data_dir exists and is writable")]
    Open { path: PathBuf, source: sled::Error },
    #[error("the labels database failed: {0}")]
    Storage(#[from] sled::Error),
}

impl LabelsError {
    pub fn is_disk_full(&self) -> bool {
        match self {
            LabelsError::Storage(sled::Error::Io(e)) | LabelsError::Open { source: sled::Error::Io(e), .. } => {
                crate::outbox::is_out_of_space(e)
            }
            _ => false,
        }
    }
}

/// A label as people may give it: trimmed, at most [`MAX_CHARS`] characters, no control
/// characters. Empty takes the label away.
pub fn check(text: &str) -> Result<String, String> {
    let text = text.trim();
    if text.chars().count() > MAX_CHARS {
        return Err(format!("at most {MAX_CHARS} characters"));
    }
    if text.chars().any(char::is_control) {
        return Err("no control characters (tabs, line breaks)".into());
    }
    Ok(text.to_owned())
}

pub struct Labels {
    db: sled::Db,
    names: sled::Tree,
    unsent: sled::Tree,
    /// Wakes the sender when a label changes.
    changed: tokio::sync::Notify,
}

impl Labels {
    pub fn open(data_dir: &Path) -> Result<Self, LabelsError> {
        let path = data_dir.join("labels");
        let open_err = |source| LabelsError::Open { path: path.clone(), source };
        // Labels are few and small: sled's cache needs little.
        let db = sled::Config::new().path(&path).cache_capacity(1 << 20).open().map_err(open_err)?;
        let names = db.open_tree("names").map_err(open_err)?;
        let unsent = db.open_tree("unsent").map_err(open_err)?;
        Ok(Self { db, names, unsent, changed: tokio::sync::Notify::new() })
    }

    /// Names record `id` `label` (checked by [`check`]; empty takes the name away), durably.
    pub fn set(&self, id: &str, label: &str) -> Result<(), LabelsError> {
        let result: Result<(), sled::transaction::TransactionError<()>> = (&self.names, &self.unsent).transaction(|(names, unsent)| {
            match label.is_empty() {
                true => names.remove(id.as_bytes())?,
                false => names.insert(id.as_bytes(), label.as_bytes())?,
            };
            unsent.insert(id.as_bytes(), label.as_bytes())?;
            Ok(())
        });
        result.map_err(|e| match e {
            sled::transaction::TransactionError::Storage(e) => LabelsError::Storage(e),
            sled::transaction::TransactionError::Abort(()) => unreachable!("the transaction never aborts"),
        })?;
        self.db.flush()?;
        self.changed.notify_one();
        Ok(())
    }

    /// Record `id`'s label, if someone named it.
    pub fn get(&self, id: &str) -> Result<Option<String>, LabelsError> {
        Ok(self.names.get(id.as_bytes())?.map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Every record named `label` (exactly).
    pub fn named(&self, label: &str) -> Result<Vec<String>, LabelsError> {
        let mut ids = Vec::new();
        for entry in self.names.iter() {
            let (id, name) = entry?;
            if *name == *label.as_bytes() {
                ids.push(String::from_utf8_lossy(&id).into_owned());
            }
        }
        Ok(ids)
    }

    /// Sets each record's `user_label` to its label now, for an upsert about to be built.
    pub fn apply(&self, records: &mut [Record]) -> Result<(), LabelsError> {
        for record in records {
            record.metadata.user_label = self.get(&record.id)?;
        }
        Ok(())
    }

    /// After an upsert of `records` (built by [`Labels::apply`]) was acknowledged: a label that
    /// changed since goes to Pinecone again, since the upsert replaced its metadata.
    pub fn resend_changed(&self, records: &[Record]) -> Result<(), LabelsError> {
        let mut changed = false;
        for record in records {
            let now = self.get(&record.id)?;
            if now != record.metadata.user_label {
                self.unsent.insert(record.id.as_bytes(), now.unwrap_or_default().as_bytes())?;
                changed = true;
            }
        }
        if changed {
            self.db.flush()?;
            self.changed.notify_one();
        }
        Ok(())
    }

    /// Up to `max` labels Pinecone has still to get: `(record id, label)`.
    pub fn unsent(&self, max: usize) -> Result<Vec<(String, String)>, LabelsError> {
        let mut out = Vec::new();
        for entry in self.unsent.iter().take(max) {
            let (id, label) = entry?;
            out.push((String::from_utf8_lossy(&id).into_owned(), String::from_utf8_lossy(&label).into_owned()));
        }
        Ok(out)
    }

    /// Labels Pinecone has still to get.
    pub fn unsent_count(&self) -> usize {
        self.unsent.len()
    }

    /// Pinecone acknowledged `label` for record `id`: it leaves `unsent`, unless it changed
    /// meanwhile (the new one is still to send).
    pub fn mark_sent(&self, id: &str, label: &str) -> Result<(), LabelsError> {
        // Err(CompareAndSwapError) only says the label changed: it stays.
        let _ = self.unsent.compare_and_swap(id.as_bytes(), Some(label.as_bytes()), None::<&[u8]>)?;
        self.db.flush()?;
        Ok(())
    }

    /// Waits until a label changes.
    pub async fn changed(&self) {
        self.changed.notified().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> Record {
        crate::record::test_record(id, "gate", 0, vec![1.0])
    }

    #[test]
    fn a_label_is_kept_and_waits_for_pinecone_until_acknowledged_unchanged() {
        let dir = tempfile::tempdir().expect("tempdir");
        let labels = Labels::open(dir.path()).expect("open");
        labels.set("d:c:1:0", "our red van").expect("set");
        assert_eq!(labels.get("d:c:1:0").expect("get").as_deref(), Some("our red van"));
        assert_eq!(labels.named("our red van").expect("named"), ["d:c:1:0"]);
        let unsent = labels.unsent(10).expect("unsent");
        assert_eq!(unsent, [("d:c:1:0".to_owned(), "our red van".to_owned())]);

        labels.set("d:c:1:0", "the neighbour's van").expect("renamed while the first was on its way");
        labels.mark_sent("d:c:1:0", "our red van").expect("the first acknowledged");
        assert_eq!(labels.unsent_count(), 1, "the new name is still to send");
        labels.mark_sent("d:c:1:0", "the neighbour's van").expect("acknowledged");
        assert_eq!(labels.unsent_count(), 0);

        drop(labels);
        let labels = Labels::open(dir.path()).expect("reopen");
        assert_eq!(labels.get("d:c:1:0").expect("get").as_deref(), Some("the neighbour's van"), "kept across a restart");
        labels.set("d:c:1:0", "").expect("taken away");
        assert_eq!(labels.get("d:c:1:0").expect("get"), None);
        assert_eq!(labels.unsent(10).expect("unsent"), [("d:c:1:0".to_owned(), String::new())], "Pinecone's is cleared too");
    }

    #[test]
    fn an_upsert_built_before_a_label_sends_the_label_again_once_acknowledged() {
        let dir = tempfile::tempdir().expect("tempdir");
        let labels = Labels::open(dir.path()).expect("open");
        let mut batch = vec![record("d:c:1:0"), record("d:c:1:1")];
        labels.set("d:c:1:1", "a bicycle").expect("set");
        labels.apply(&mut batch).expect("apply");
        assert_eq!(batch[1].metadata.user_label.as_deref(), Some("a bicycle"), "the upsert carries it");
        labels.mark_sent("d:c:1:1", "a bicycle").expect("sent");

        labels.set("d:c:1:0", "our red van").expect("named while the upsert was on its way");
        labels.mark_sent("d:c:1:0", "our red van").expect("the update reached Pinecone before the upsert");
        labels.resend_changed(&batch).expect("the upsert acknowledged");
        assert_eq!(labels.unsent(10).expect("unsent"), [("d:c:1:0".to_owned(), "our red van".to_owned())]);
    }

    #[test]
    fn labels_are_short_printable_text() {
        assert_eq!(check("  our red van ").as_deref(), Ok("our red van"));
        assert_eq!(check("<img src=x onerror=alert(1)>").as_deref(), Ok("<img src=x onerror=alert(1)>"), "text, escaped where shown");
        assert!(check(&"x".repeat(MAX_CHARS + 1)).is_err());
        assert!(check("a\nb").is_err());
    }
}
