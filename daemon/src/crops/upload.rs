//! Crops to a remote store (`store = "s3://bucket/prefix"`): every crop is first kept locally,
//! with a hard link in `{data_dir}/crops-upload/` marking it as waiting; this drain uploads the
//! waiting crops with `object_store` (SigV4; its retries honour 503 SlowDown and Retry-After)
//! and removes each mark once the store acknowledged the object. It runs beside the Pinecone
//! syncer and shares nothing with it: a bucket outage never holds vectors back, nor the reverse.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt, PutPayload};

use super::{CropsConfig, StoreUri};
use crate::backoff::Backoff;
use crate::secrets::{read_secret, secret_file, SecretError};
use crate::shutdown::Shutdown;
use crate::stats::Stats;

/// Uploads at once.
const IN_FLIGHT: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("crops.store: {0}")]
    Setup(String),
    #[error("crops.store: {0}")]
    Secret(#[from] SecretError),
    #[error("crop store {url}: {source}")]
    Store { url: String, source: object_store::Error },
    #[error("{key} in {url} is {bytes} bytes, more than a picture Glimpse keeps")]
    TooLarge { url: String, key: String, bytes: u64 },
    #[error("crop waiting for upload {}: {source}", path.display())]
    Local { path: PathBuf, source: std::io::Error },
}

/// A remote crop store and where its objects go.
#[derive(Clone)]
pub struct Remote {
    store: Arc<AmazonS3>,
    prefix: String,
    url: String,
}

impl Remote {
    /// The store `config` names, when it is a remote one. Credentials: `access_key_id_file` and
    /// `secret_access_key_file`, else the systemd credentials `s3-access-key-id` and
    /// `s3-secret-access-key`, else the standard AWS environment variables.
    pub fn from_config(config: &CropsConfig) -> Result<Option<Self>, RemoteError> {
        Self::build(config, AmazonS3Builder::from_env())
    }

    /// [`Remote::from_config`] for reads that someone waits on (the pages' pictures): one retry
    /// within 3 s, where the upload drain's writes retry for minutes.
    pub fn for_reading(config: &CropsConfig) -> Result<Option<Self>, RemoteError> {
        let retry = object_store::RetryConfig { max_retries: 1, retry_timeout: Duration::from_secs(3), ..Default::default() };
        Self::build(config, AmazonS3Builder::from_env().with_retry(retry))
    }

    fn build(config: &CropsConfig, builder: AmazonS3Builder) -> Result<Option<Self>, RemoteError> {
        let Some(StoreUri::S3 { bucket, prefix }) = config.store_uri().map_err(RemoteError::Setup)? else { return Ok(None) };
        crate::tls::use_ring();
        let mut builder = builder.with_bucket_name(&bucket).with_region(&config.region);
        if let Some(endpoint) = &config.endpoint {
            builder = builder.with_endpoint(endpoint).with_allow_http(config.allow_http);
        }
        let key_file = secret_file(config.access_key_id_file.as_deref(), "s3-access-key-id");
        let secret_file_path = secret_file(config.secret_access_key_file.as_deref(), "s3-secret-access-key");
        if let (Some(key), Some(secret)) = (key_file, secret_file_path) {
            builder = builder
                .with_access_key_id(read_secret(&key, "S3 access key id")?)
                .with_secret_access_key(read_secret(&secret, "S3 secret access key")?);
        }
        let url = format!("s3://{bucket}/{prefix}");
        let store = builder.build().map_err(|e| RemoteError::Setup(format!("{url}: {e}")))?;
        Ok(Some(Self { store: Arc::new(store), prefix, url }))
    }

    fn location(&self, key: &str) -> ObjectPath {
        ObjectPath::from(if self.prefix.is_empty() { key.to_owned() } else { format!("{}/{key}", self.prefix) })
    }

    /// Writes and deletes a probe object: what `glimpse check` asks of the bucket.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub async fn probe(&self) -> Result<(), RemoteError> {
        let location = self.location(".glimpse-check");
        let fail = |source| RemoteError::Store { url: self.url.clone(), source };
        self.store.put(&location, PutPayload::from_static(b"ok")).await.map_err(fail)?;
        self.store.delete(&location).await.map_err(fail)
    }

    /// Object `key`, when the store has it (at most `max_bytes`).
    pub async fn get(&self, key: &str, max_bytes: u64) -> Result<Option<Vec<u8>>, RemoteError> {
        let fail = |source| RemoteError::Store { url: self.url.clone(), source };
        let found = match self.store.get(&self.location(key)).await {
            Ok(found) => found,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(fail(e)),
        };
        if found.meta.size > max_bytes {
            return Err(RemoteError::TooLarge { url: self.url.clone(), key: key.to_owned(), bytes: found.meta.size });
        }
        Ok(Some(found.bytes().await.map_err(fail)?.into()))
    }

    async fn upload(&self, key: &str, bytes: Vec<u8>) -> Result<(), RemoteError> {
        let fail = |source| RemoteError::Store { url: self.url.clone(), source };
        self.store.put(&self.location(key), PutPayload::from(bytes)).await.map(|_| ()).map_err(fail)
    }
}

/// The crops waiting for upload, oldest first, as keys below `marks`.
pub fn waiting(marks: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut dirs = vec![marks.to_owned()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            match entry.metadata() {
                Ok(m) if m.is_dir() => dirs.push(path),
                Ok(m) if path.extension().is_some_and(|e| e == "jpg") => {
                    let key = path.strip_prefix(marks).map(|k| k.to_string_lossy().into_owned()).unwrap_or_default();
                    found.push((m.modified().ok(), key));
                }
                _ => {}
            }
        }
    }
    found.sort();
    found.into_iter().map(|(_, key)| key).collect()
}

/// Drains the waiting crops until shutdown, looking for new ones every second when idle.
pub async fn run_uploader(remote: Remote, marks: PathBuf, stats: Arc<Stats>, mut shutdown: Shutdown) {
    let mut backoff = Backoff::with_full_jitter(Duration::from_millis(500), Duration::from_secs(30));
    loop {
        let scan = marks.clone();
        let keys = tokio::task::spawn_blocking(move || waiting(&scan)).await.unwrap_or_default();
        stats.crops_pending(keys.len() as u64);
        let delay = match upload_all(&remote, &marks, &keys, &stats, &shutdown).await {
            _ if keys.is_empty() => Duration::from_secs(1),
            Ok(()) => {
                stats.crop_succeeded();
                backoff.reset();
                continue;
            }
            Err(e) => {
                stats.crop_failed(e.to_string());
                let delay = backoff.next_delay();
                tracing::warn!(event = "crop_upload_retry", error = %e, retry_in_ms = delay.as_millis() as u64, "crop upload failed; will retry");
                delay
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.recv() => return,
        }
    }
}

/// Uploads every crop one scan found, `IN_FLIGHT` at a time, until the first failure or a stop:
/// a backlog costs one directory scan, not one per batch.
async fn upload_all(remote: &Remote, marks: &Path, keys: &[String], stats: &Stats, shutdown: &Shutdown) -> Result<(), RemoteError> {
    for chunk in keys.chunks(IN_FLIGHT) {
        if shutdown.is_shutdown() {
            return Ok(());
        }
        let mut uploads = tokio::task::JoinSet::new();
        for key in chunk {
            let (remote, marks, key) = (remote.clone(), marks.to_owned(), key.clone());
            uploads.spawn(async move { upload_one(&remote, &marks, &key).await });
        }
        let results = uploads.join_all().await;
        let failed = results.iter().filter(|r| r.is_err()).count() as u64;
        stats.crops_uploaded(results.len() as u64 - failed, failed);
        tracing::debug!(event = "crops_uploaded", uploaded = results.len() as u64 - failed, failed);
        if let Some(e) = results.into_iter().find_map(Result::err) {
            return Err(e);
        }
    }
    Ok(())
}

async fn upload_one(remote: &Remote, marks: &Path, key: &str) -> Result<(), RemoteError> {
    let mark = marks.join(key);
    let read = mark.clone();
    let bytes = match tokio::task::spawn_blocking(move || std::fs::read(read)).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()), // gone meanwhile
        Ok(Err(e)) => return Err(RemoteError::Local { path: mark, source: e }),
        Err(e) => return Err(RemoteError::Setup(format!("reader task failed: {e}"))),
    };
    remote.upload(key, bytes).await?;
    let removed = mark.clone();
    match tokio::task::spawn_blocking(move || std::fs::remove_file(removed)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Ok(Err(e)) => Err(RemoteError::Local { path: mark, source: e }),
        Err(e) => Err(RemoteError::Setup(format!("remover task failed: {e}"))),
    }
}
