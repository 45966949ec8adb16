//! `[outbox]`: durability and disk caps.

use std::fmt;

use serde::Deserialize;

use crate::config::{KeyPath, Problem};

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

/// A size in bytes, written as an integer or a string such as `"512 MiB"` or `"2GB"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number of bytes or a string such as \"512 MiB\"")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v).map(ByteSize).map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ByteSize, E> {
                parse_size(v)
                    .map(ByteSize)
                    .ok_or_else(|| E::custom(format!("{v:?} is not a size; write e.g. 1073741824, \"1 GiB\" or \"500MB\"")))
            }
        }
        d.deserialize_any(Visitor)
    }
}

fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => return None,
    };
    let bytes = number * factor as f64;
    (bytes.is_finite() && bytes >= 0.0).then_some(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_read_with_decimal_and_binary_units() {
        assert_eq!(parse_size("1 GiB"), Some(1 << 30));
        assert_eq!(parse_size("500MB"), Some(500_000_000));
        assert_eq!(parse_size("1.5 KiB"), Some(1536));
        assert_eq!(parse_size("42"), Some(42));
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_size("5 parsecs"), None);
    }
}
