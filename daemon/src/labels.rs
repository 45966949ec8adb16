//! People's names for objects (`PUT /api/records/{id}/label`): kept on the device, and sent to
//! Pinecone as metadata `user_label` until it acknowledges them.
//!
//! Owns its own sled database (`labels/` in the data dir), apart from the outbox: a label is not
//! a record, and the outbox's rules (caps, release, replay) do not apply to it. Two trees:
//! `names` (record id → label) and `unsent` (record id → a generation number and the label
//! Pinecone still has to get; empty for a label taken away). Both change in one transaction and
//! are flushed before a change is acknowledged, so a power cut loses no label and no pending
//! update.
//!
//! How a label reaches Pinecone whatever the order of events ([`crate::sync`]):
//! - an upsert carries the record's label as it is when the request is built ([`Labels::apply`]);
//! - a label set after that is sent with `POST /vectors/update` from `unsent`, and leaves it
//!   only when acknowledged and still the very entry that was sent, generation included
//!   ([`Labels::mark_sent`]): a late answer to an older send never clears a newer one;
//! - an upsert acknowledged after a label changed (it was built before) puts the label back
//!   into `unsent` under a new generation ([`Labels::resend_changed`], before the outbox lets
//!   the records go), because the upsert replaced the metadata.

use std::path::{Path, PathBuf};

use sled::Transactional;

use crate::record::Record;

/// Longest label, in characters.
pub const MAX_CHARS: usize = 100;

/// A label Pinecone has still to get, as `unsent` holds it.
#[derive(Clone, Debug, PartialEq)]
pub struct Unsent {
    pub id: String,
    pub label: String,
    /// The stored entry, generation and label: what [`Labels::mark_sent`] must still find.
    entry: Vec<u8>,
}

/// An `unsent` entry: a generation number unique to this change, then the label.
fn unsent_entry(generation: u64, label: &str) -> Vec<u8> {
    let mut entry = generation.to_be_bytes().to_vec();
    entry.extend_from_slice(label.as_bytes());
    entry
}

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
        let entry = unsent_entry(self.db.generate_id()?, label);
        let result: Result<(), sled::transaction::TransactionError<()>> = (&self.names, &self.unsent).transaction(|(names, unsent)| {
            match label.is_empty() {
                true => names.remove(id.as_bytes())?,
                false => names.insert(id.as_bytes(), label.as_bytes())?,
            };
            unsent.insert(id.as_bytes(), entry.as_slice())?;
            Ok(())
        });
        result.map_err(storage_error)?;
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
    /// Read and written in one transaction, so that a name given meanwhile is never replaced by
    /// the one read here.
    pub fn resend_changed(&self, records: &[Record]) -> Result<(), LabelsError> {
        let generation = self.db.generate_id()?;
        let result: Result<bool, sled::transaction::TransactionError<()>> = (&self.names, &self.unsent).transaction(|(names, unsent)| {
            let mut changed = false;
            for record in records {
                let now = names.get(record.id.as_bytes())?.map(|v| String::from_utf8_lossy(&v).into_owned());
                if now != record.metadata.user_label {
                    unsent.insert(record.id.as_bytes(), unsent_entry(generation, &now.unwrap_or_default()))?;
                    changed = true;
                }
            }
            Ok(changed)
        });
        if result.map_err(storage_error)? {
            self.db.flush()?;
            self.changed.notify_one();
        }
        Ok(())
    }

    /// Up to `max` labels Pinecone has still to get.
    pub fn unsent(&self, max: usize) -> Result<Vec<Unsent>, LabelsError> {
        let mut out = Vec::new();
        for entry in self.unsent.iter().take(max) {
            let (id, entry) = entry?;
            let label = String::from_utf8_lossy(entry.get(8..).unwrap_or_default()).into_owned();
            out.push(Unsent { id: String::from_utf8_lossy(&id).into_owned(), label, entry: entry.to_vec() });
        }
        Ok(out)
    }

    /// Labels Pinecone has still to get.
    pub fn unsent_count(&self) -> usize {
        self.unsent.len()
    }

    /// Pinecone acknowledged `sent`: it leaves `unsent`, unless the entry changed meanwhile (a
    /// newer name, or the same one to send again: it stays).
    pub fn mark_sent(&self, sent: &Unsent) -> Result<(), LabelsError> {
        // Err(CompareAndSwapError) only says the entry changed: it stays.
        let _ = self.unsent.compare_and_swap(sent.id.as_bytes(), Some(sent.entry.as_slice()), None::<&[u8]>)?;
        self.db.flush()?;
        Ok(())
    }

    /// Waits until a label changes.
    pub async fn changed(&self) {
        self.changed.notified().await
    }
}

fn storage_error(e: sled::transaction::TransactionError<()>) -> LabelsError {
    match e {
        sled::transaction::TransactionError::Storage(e) => LabelsError::Storage(e),
        sled::transaction::TransactionError::Abort(()) => unreachable!("the transactions never abort"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> Record {
        crate::record::test_record(id, "gate", 0, vec![1.0])
    }

    /// The labels still to send, as (record id, label).
    fn pending(labels: &Labels) -> Vec<(String, String)> {
        labels.unsent(10).expect("unsent").into_iter().map(|u| (u.id, u.label)).collect()
    }

    fn only(labels: &Labels) -> Unsent {
        let mut unsent = labels.unsent(10).expect("unsent");
        assert_eq!(unsent.len(), 1, "{unsent:?}");
        unsent.remove(0)
    }

    #[test]
    fn a_label_is_kept_and_waits_for_pinecone_until_acknowledged_unchanged() {
        let dir = tempfile::tempdir().expect("tempdir");
        let labels = Labels::open(dir.path()).expect("open");
        labels.set("d:c:1:0", "our red van").expect("set");
        assert_eq!(labels.get("d:c:1:0").expect("get").as_deref(), Some("our red van"));
        assert_eq!(labels.named("our red van").expect("named"), ["d:c:1:0"]);
        let first = only(&labels);
        assert_eq!((first.id.as_str(), first.label.as_str()), ("d:c:1:0", "our red van"));

        labels.set("d:c:1:0", "the neighbour's van").expect("renamed while the first was on its way");
        labels.mark_sent(&first).expect("the first acknowledged");
        let second = only(&labels);
        assert_eq!(second.label, "the neighbour's van", "the new name is still to send");
        labels.mark_sent(&second).expect("acknowledged");
        assert_eq!(labels.unsent_count(), 0);

        drop(labels);
        let labels = Labels::open(dir.path()).expect("reopen");
        assert_eq!(labels.get("d:c:1:0").expect("get").as_deref(), Some("the neighbour's van"), "kept across a restart");
        labels.set("d:c:1:0", "").expect("taken away");
        assert_eq!(labels.get("d:c:1:0").expect("get"), None);
        assert_eq!(pending(&labels), [("d:c:1:0".to_owned(), String::new())], "Pinecone's is cleared too");
    }

    #[test]
    fn an_upsert_built_before_a_label_sends_the_label_again_once_acknowledged() {
        let dir = tempfile::tempdir().expect("tempdir");
        let labels = Labels::open(dir.path()).expect("open");
        let mut batch = vec![record("d:c:1:0"), record("d:c:1:1")];
        labels.set("d:c:1:1", "a bicycle").expect("set");
        labels.apply(&mut batch).expect("apply");
        assert_eq!(batch[1].metadata.user_label.as_deref(), Some("a bicycle"), "the upsert carries it");
        labels.mark_sent(&only(&labels)).expect("sent");

        labels.set("d:c:1:0", "our red van").expect("named while the upsert was on its way");
        labels.mark_sent(&only(&labels)).expect("the update reached Pinecone before the upsert");
        labels.resend_changed(&batch).expect("the upsert acknowledged");
        assert_eq!(pending(&labels), [("d:c:1:0".to_owned(), "our red van".to_owned())]);
    }

    /// An update sent, then overwritten at Pinecone by an upsert built before it; the upsert's
    /// answer queues the name again before the update's late answer arrives.
    #[test]
    fn a_late_answer_to_an_older_send_never_clears_the_name_queued_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let labels = Labels::open(dir.path()).expect("open");
        let mut batch = vec![record("d:c:1:0")];
        labels.apply(&mut batch).expect("the upsert is built, without a name");
        labels.set("d:c:1:0", "our red van").expect("named");
        let in_flight = only(&labels);
        labels.resend_changed(&batch).expect("the upsert acknowledged first");
        labels.mark_sent(&in_flight).expect("the update's answer, late");
        assert_eq!(pending(&labels), [("d:c:1:0".to_owned(), "our red van".to_owned())], "sent again");
    }

    #[test]
    fn labels_are_short_printable_text() {
        assert_eq!(check("  our red van ").as_deref(), Ok("our red van"));
        assert_eq!(check("<img src=x onerror=alert(1)>").as_deref(), Ok("<img src=x onerror=alert(1)>"), "text, escaped where shown");
        assert!(check(&"x".repeat(MAX_CHARS + 1)).is_err());
        assert!(check("a\nb").is_err());
    }
}
