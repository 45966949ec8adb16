//! Fleet scope: what every device of the Pinecone namespace saw. A search goes to Pinecone
//! (`POST /query`, with the search's filters), a record this device does not have is looked up
//! there (`GET /vectors/fetch`), and its crop and snapshot are read from the bucket every device
//! of the fleet uploads to (the same `crops.store`), through small caches. The browser only sees
//! this box's URLs; bucket errors are logged here and answered without the bucket's address.
//! Everything here is async network I/O: no file, no model, nothing blocking.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use axum::body::Bytes;

use super::library::RecordId;
use crate::crops::upload::Remote;
use crate::index::{Hit, Query};
use crate::record::Metadata;
use crate::sync::{filter_for, PineconeClient, QueryBy, SyncError};

/// The most one picture from the bucket may take: a crop or a 1280-pixel snapshot is far below.
const MAX_PICTURE_BYTES: u64 = 8 << 20;
/// The most the cached pictures take together; the oldest go first.
const PICTURE_CACHE_BYTES: usize = 32 << 20;
/// Records of other devices kept from searches and lookups, so that their pictures' requests
/// need no Pinecone call of their own.
const RECORD_CACHE: usize = 4096;
/// Bucket reads at once, over every request; more wait their turn.
const BUCKET_READS: usize = 8;
/// A picture the bucket has not given by then counts as out of reach (for now).
const BUCKET_READ_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("the fleet's index cannot be searched: {0}")]
    Pinecone(#[from] SyncError),
    #[error("no record {0:?} on this device or in Pinecone's namespace")]
    UnknownRecord(String),
    /// The details are in the log: they name the bucket.
    #[error("the fleet's bucket cannot be read just now (the box's log says why)")]
    Bucket,
}

pub struct Fleet {
    pinecone: PineconeClient,
    /// The bucket the fleet's crops are uploaded to; none: other devices' pictures are not shown.
    bucket: Option<Remote>,
    reads: tokio::sync::Semaphore,
    pictures: Mutex<Recent<Bytes>>,
    records: Mutex<Recent<Metadata>>,
}

impl Fleet {
    pub fn new(pinecone: PineconeClient, bucket: Option<Remote>) -> Self {
        Self {
            pinecone,
            bucket,
            reads: tokio::sync::Semaphore::new(BUCKET_READS),
            pictures: Mutex::new(Recent::new(PICTURE_CACHE_BYTES)),
            records: Mutex::new(Recent::new(RECORD_CACHE)),
        }
    }

    /// The best matches near `by` across the namespace, with `query`'s filters (its vector is
    /// not used) and, when given, people's names (any of `user_labels`).
    pub async fn search(&self, by: QueryBy<'_>, query: &Query, user_labels: &[String]) -> Result<Vec<Hit>, FleetError> {
        let filter = filter_for(query, None, user_labels);
        let filtered = filter.is_some();
        let answer = self.pinecone.query(by, query.top_k, filter).await;
        if let QueryBy::Id(id) = by {
            if crate::sync::is_unknown_id(&answer, filtered) {
                return Err(FleetError::UnknownRecord(id.to_owned()));
            }
        }
        // Only ids Glimpse makes: they go into the pages' links.
        let hits: Vec<Hit> = answer?.into_iter().filter_map(|m| m.into_hit()).filter(|h| RecordId::parse(&h.id).is_some()).collect();
        let mut records = lock(&self.records);
        for hit in &hits {
            records.keep(&hit.id, hit.metadata.clone(), 1);
        }
        Ok(hits)
    }

    /// Record `id`'s metadata as Pinecone holds it (or held it at a recent search).
    pub async fn record(&self, id: &RecordId) -> Result<Metadata, FleetError> {
        if let Some(known) = lock(&self.records).get(id.as_str()) {
            return Ok(known);
        }
        let stored = self.pinecone.fetch_metadata(id.as_str()).await?;
        let metadata = stored.as_ref().and_then(Metadata::from_stored).ok_or_else(|| FleetError::UnknownRecord(id.as_str().into()))?;
        lock(&self.records).keep(id.as_str(), metadata.clone(), 1);
        Ok(metadata)
    }

    /// The picture stored under `key` in the fleet's bucket (`None`: no bucket, a key not in the
    /// crop store's layout, or not in the bucket).
    pub async fn picture(&self, key: &str) -> Result<Option<Bytes>, FleetError> {
        let Some(bucket) = self.bucket.as_ref().filter(|_| crate::crops::is_store_key(key)) else { return Ok(None) };
        if let Some(cached) = lock(&self.pictures).get(key) {
            return Ok(Some(cached));
        }
        let Ok(_turn) = self.reads.acquire().await else { return Err(FleetError::Bucket) };
        let read = match tokio::time::timeout(BUCKET_READ_TIMEOUT, bucket.get(key, MAX_PICTURE_BYTES)).await {
            Ok(Ok(read)) => read,
            Ok(Err(e)) => {
                tracing::warn!(event = "fleet_picture_failed", key, error = %e, "a picture of the fleet cannot be read from the bucket");
                return Err(FleetError::Bucket);
            }
            Err(_) => {
                tracing::warn!(event = "fleet_picture_failed", key, timeout_s = BUCKET_READ_TIMEOUT.as_secs(), "the bucket took too long");
                return Err(FleetError::Bucket);
            }
        };
        let Some(bytes) = read.map(Bytes::from) else { return Ok(None) };
        lock(&self.pictures).keep(key, bytes.clone(), bytes.len());
        Ok(Some(bytes))
    }
}

fn lock<T>(cache: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned cache only lost an insertion: what it holds is whole.
    cache.lock().unwrap_or_else(|p| p.into_inner())
}

/// The values last kept, by key, within a total weight; the oldest go first.
struct Recent<V> {
    values: HashMap<String, (V, usize)>,
    order: VecDeque<String>,
    weight: usize,
    max_weight: usize,
}

impl<V: Clone> Recent<V> {
    fn new(max_weight: usize) -> Self {
        Self { values: HashMap::new(), order: VecDeque::new(), weight: 0, max_weight }
    }

    fn get(&self, key: &str) -> Option<V> {
        self.values.get(key).map(|(v, _)| v.clone())
    }

    fn keep(&mut self, key: &str, value: V, weight: usize) {
        if let Some(before) = self.values.insert(key.to_owned(), (value, weight)) {
            self.weight -= before.1;
        } else {
            self.order.push_back(key.to_owned());
        }
        self.weight += weight;
        while self.weight > self.max_weight {
            let Some(oldest) = self.order.pop_front() else { break };
            if let Some((_, gone)) = self.values.remove(&oldest) {
                self.weight -= gone;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_caches_keep_the_newest_values_within_their_weight() {
        let mut pictures = Recent::new(100);
        for key in ["a", "b", "c", "d", "e"] {
            pictures.keep(key, key.to_owned(), 25);
        }
        assert!(pictures.get("a").is_none(), "the oldest went");
        assert!(["b", "c", "d", "e"].iter().all(|k| pictures.get(k).is_some()));
        pictures.keep("e", "e again".to_owned(), 25);
        assert_eq!((pictures.values.len(), pictures.order.len(), pictures.weight), (4, 4, 100), "a key is kept once");
        assert_eq!(pictures.get("e").as_deref(), Some("e again"));
        pictures.keep("huge", "h".to_owned(), 1000);
        assert_eq!((pictures.values.len(), pictures.weight), (0, 0), "nothing stays above the weight");
    }
}
