//! Fleet scope: what every device of the Pinecone namespace saw. A search goes to Pinecone
//! (`POST /query`, with the search's filters), a record this device does not have is looked up
//! there (`GET /vectors/fetch`), and its crop and snapshot are read from the bucket every device
//! of the fleet uploads to (the same `crops.store`: keys start with the device's id), through a
//! small cache. The browser only sees this box's URLs, never the bucket or its credentials.
//! Everything here is async network I/O: no file, no model, nothing blocking.

use std::collections::VecDeque;
use std::sync::Mutex;

use axum::body::Bytes;

use crate::crops::upload::{Remote, RemoteError};
use crate::index::{Hit, Query};
use crate::record::Metadata;
use crate::sync::{filter_for, PineconeClient, QueryBy, SyncError};

/// The most one cached picture may take: a crop or a 1280-pixel snapshot is far below.
const MAX_PICTURE_BYTES: u64 = 8 << 20;
/// The most the cached pictures take together; the oldest go first.
const CACHE_BYTES: usize = 32 << 20;

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("the fleet's index cannot be searched: {0}")]
    Pinecone(#[from] SyncError),
    #[error("no record {0:?} on this device or in Pinecone's namespace")]
    UnknownRecord(String),
    #[error("the fleet's bucket cannot be read: {0}")]
    Bucket(#[from] RemoteError),
}

pub struct Fleet {
    pinecone: PineconeClient,
    /// The bucket the fleet's crops are uploaded to; none: other devices' pictures are not shown.
    bucket: Option<Remote>,
    pictures: Mutex<Pictures>,
}

impl Fleet {
    pub fn new(pinecone: PineconeClient, bucket: Option<Remote>) -> Self {
        Self { pinecone, bucket, pictures: Mutex::new(Pictures::default()) }
    }

    /// The best matches near `by` across the namespace, with `query`'s filters (its vector is
    /// not used) and, when given, people's names (any of `user_labels`).
    pub async fn search(&self, by: QueryBy<'_>, query: &Query, user_labels: &[String]) -> Result<Vec<Hit>, FleetError> {
        let filter = filter_for(query, None, user_labels);
        let matches = match (self.pinecone.query(by, query.top_k, filter).await, by) {
            // Pinecone refuses an id it does not hold.
            (Err(SyncError::Status { status: 400 | 404, .. }), QueryBy::Id(id)) => return Err(FleetError::UnknownRecord(id.to_owned())),
            (matches, _) => matches?,
        };
        let hit = |m: crate::sync::Match| Metadata::from_stored(&m.metadata).map(|metadata| Hit { id: m.id, score: m.score, metadata });
        Ok(matches.into_iter().filter_map(hit).collect())
    }

    /// Record `id`'s metadata as Pinecone holds it.
    pub async fn record(&self, id: &str) -> Result<Metadata, FleetError> {
        let stored = self.pinecone.fetch_metadata(id).await?;
        stored.as_ref().and_then(Metadata::from_stored).ok_or_else(|| FleetError::UnknownRecord(id.to_owned()))
    }

    /// The picture stored under `key` in the fleet's bucket (`None`: no bucket, or not in it).
    pub async fn picture(&self, key: &str) -> Result<Option<Bytes>, FleetError> {
        let Some(bucket) = &self.bucket else { return Ok(None) };
        if let Some(cached) = self.lock().get(key) {
            return Ok(Some(cached));
        }
        let Some(bytes) = bucket.get(key, MAX_PICTURE_BYTES).await? else { return Ok(None) };
        let bytes = Bytes::from(bytes);
        self.lock().keep(key, bytes.clone());
        Ok(Some(bytes))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pictures> {
        // A poisoned cache only lost an insertion: what it holds is whole.
        self.pictures.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Pictures read from the bucket, oldest first, within [`CACHE_BYTES`].
#[derive(Default)]
struct Pictures {
    kept: VecDeque<(String, Bytes)>,
    bytes: usize,
}

impl Pictures {
    fn get(&self, key: &str) -> Option<Bytes> {
        self.kept.iter().find(|(k, _)| k == key).map(|(_, b)| b.clone())
    }

    fn keep(&mut self, key: &str, picture: Bytes) {
        if self.get(key).is_some() {
            return;
        }
        self.bytes += picture.len();
        self.kept.push_back((key.to_owned(), picture));
        while self.bytes > CACHE_BYTES {
            let Some((_, gone)) = self.kept.pop_front() else { break };
            self.bytes -= gone.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_keeps_the_newest_pictures_within_its_bytes() {
        let mut pictures = Pictures::default();
        let picture = Bytes::from(vec![0u8; CACHE_BYTES / 4]);
        for key in ["a", "b", "c", "d", "e"] {
            pictures.keep(key, picture.clone());
        }
        assert!(pictures.get("a").is_none(), "the oldest went");
        assert!(["b", "c", "d", "e"].iter().all(|k| pictures.get(k).is_some()));
        assert_eq!(pictures.bytes, CACHE_BYTES);
        pictures.keep("e", picture);
        assert_eq!(pictures.kept.len(), 4, "a picture is kept once");
    }
}
