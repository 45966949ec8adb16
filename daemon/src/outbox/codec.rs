//! The on-disk encoding of one outbox record, versioned and checksummed.
//!
//! Format 2 (all integers little-endian):
//! `[2u8][crc32 of everything after it: u32][id length: u16][id][metadata length: u32]
//! [metadata as JSON][dimension: u32][dimension × f32]`
//!
//! Embeddings are raw `f32`s (2 KiB for 512-d) rather than JSON text (about 5 KiB). A value that
//! fails its checksum or any length check decodes to an error and is quarantined by the caller.

use crate::record::{Metadata, Record};

const FORMAT: u8 = 2;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DecodeError {
    #[error("unknown record format {0}")]
    Format(u8),
    #[error("checksum mismatch")]
    Checksum,
    #[error("record truncated or malformed")]
    Malformed,
    #[error("metadata does not decode: {0}")]
    Metadata(String),
}

#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("record id longer than 65535 bytes")]
    IdTooLong,
    #[error("metadata does not encode: {0}")]
    Metadata(#[from] serde_json::Error),
}

pub fn encode(record: &Record) -> Result<Vec<u8>, EncodeError> {
    let id = record.id.as_bytes();
    let id_len = u16::try_from(id.len()).map_err(|_| EncodeError::IdTooLong)?;
    let metadata = serde_json::to_vec(&record.metadata)?;
    let mut out = Vec::with_capacity(1 + 4 + 2 + id.len() + 4 + metadata.len() + 4 + 4 * record.values.len());
    out.push(FORMAT);
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&id_len.to_le_bytes());
    out.extend_from_slice(id);
    out.extend_from_slice(&(metadata.len() as u32).to_le_bytes());
    out.extend_from_slice(&metadata);
    out.extend_from_slice(&(record.values.len() as u32).to_le_bytes());
    for v in &record.values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    let crc = crc32fast::hash(&out[5..]);
    out[1..5].copy_from_slice(&crc.to_le_bytes());
    Ok(out)
}

pub fn decode(bytes: &[u8]) -> Result<Record, DecodeError> {
    let (&format, rest) = bytes.split_first().ok_or(DecodeError::Malformed)?;
    if format != FORMAT {
        return Err(DecodeError::Format(format));
    }
    let mut r = Reader(rest);
    let crc = u32::from_le_bytes(r.take_array()?);
    if crc32fast::hash(r.0) != crc {
        return Err(DecodeError::Checksum);
    }
    let id_len = u16::from_le_bytes(r.take_array()?) as usize;
    let id = std::str::from_utf8(r.take(id_len)?).map_err(|_| DecodeError::Malformed)?.to_owned();
    let meta_len = u32::from_le_bytes(r.take_array()?) as usize;
    let metadata: Metadata = serde_json::from_slice(r.take(meta_len)?).map_err(|e| DecodeError::Metadata(e.to_string()))?;
    let dim = u32::from_le_bytes(r.take_array()?) as usize;
    let raw = r.take(dim.checked_mul(4).ok_or(DecodeError::Malformed)?)?;
    if !r.0.is_empty() {
        return Err(DecodeError::Malformed);
    }
    let values = raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    Ok(Record { id, values, metadata })
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError::Malformed);
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn take_array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample(id: &str) -> Record {
        Record {
            id: id.into(),
            values: (0..512).map(|i| (i as f32 * 0.37).sin()).collect(),
            metadata: Metadata {
                device: "lab-01".into(),
                camera: "street".into(),
                ts: 1_795_670_518_406,
                pts_ms: 1500,
                label: "person".into(),
                score: 0.97,
                x: 10,
                y: 20,
                w: 30,
                h: 40,
                frame_w: 640,
                frame_h: 272,
                track_id: None,
                crop: None,
                snapshot: None,
                user_label: None,
            },
        }
    }

    #[test]
    fn records_round_trip_exactly() {
        let record = sample("lab-01:street:1:0");
        let bytes = encode(&record).expect("encodes");
        assert_eq!(decode(&bytes), Ok(record));
        assert!(bytes.len() < 2048 + 300, "compact: {} bytes", bytes.len());
    }

    #[test]
    fn any_flipped_bit_or_truncation_is_detected() {
        let bytes = encode(&sample("x")).expect("encodes");
        for i in [1, 6, 10, 100, bytes.len() - 1] {
            let mut corrupt = bytes.clone();
            corrupt[i] ^= 0x10;
            assert!(decode(&corrupt).is_err(), "flip at {i} not detected");
        }
        assert!(decode(&bytes[..bytes.len() - 3]).is_err());
        assert_eq!(decode(&[9, 0, 0]), Err(DecodeError::Format(9)));
        assert_eq!(decode(&[]), Err(DecodeError::Malformed));
    }
}
