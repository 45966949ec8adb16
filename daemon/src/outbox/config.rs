//! `[outbox]`: durability and disk caps.

use serde::Deserialize;

use crate::validate::{ByteSize, KeyPath, Problem};

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default)]
pub struct OutboxConfig {
    /// Group commit: records are flushed to disk at most this many milliseconds after they
    /// were produced... Default 50.
    pub flush_ms: u64,
    /// ...or as soon as this many are waiting, whichever comes first. Default 1000.
    pub flush_records: usize,
    /// Cap on the pending records' encoded size. Default 1 GiB.
    pub max_bytes: ByteSize,
    /// Keep at least this much free on the data_dir filesystem. Default 256 MiB.
    pub min_free_disk: ByteSize,
    /// What to do at a cap. Default `drop_oldest`.
    pub policy: CapPolicy,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self {
            flush_ms: 50,
            flush_records: 1000,
            max_bytes: ByteSize(1 << 30),
            min_free_disk: ByteSize(256 << 20),
            policy: CapPolicy::DropOldest,
        }
    }
}

impl OutboxConfig {
    pub fn validate(&self, at: &KeyPath, problems: &mut Vec<Problem>) {
        if !(1..=10_000).contains(&self.flush_ms) {
            problems.push(Problem::new(at.key("flush_ms"), "must be between 1 and 10000 milliseconds"));
        }
        if !(1..=100_000).contains(&self.flush_records) {
            problems.push(Problem::new(at.key("flush_records"), "must be between 1 and 100000"));
        }
        if self.max_bytes.0 < 1 << 20 {
            problems.push(Problem::new(at.key("max_bytes"), "must be at least 1 MiB"));
        }
    }
}

/// What the outbox does when a cap is reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CapPolicy {
    /// Delete the oldest pending records to make room; each one is counted and reported.
    DropOldest,
    /// Stop accepting records until the syncer makes room: live cameras drop frames (counted),
    /// file cameras wait.
    PauseIngest,
}
