//! Draining the outbox into a Pinecone index over its REST data-plane API
//! (`../shared/pinecone/`): `POST /vectors/upsert` in batches, `POST /describe_index_stats` at
//! start-up, and people's labels ([`crate::labels`]) with `POST /vectors/update`. The only
//! module that speaks Pinecone's HTTP.
//!
//! Delivery rule: records leave the outbox only after a 200. Throttling (429), server errors
//! (5xx), timeouts and connection errors are retried with backoff, honouring `Retry-After`;
//! errors that say the configuration is wrong (401, 403, 404) are retried slowly and reported;
//! other 4xx reject the batch itself, which is moved to the dead-letter tree with the error.

mod client;

use std::future::Future;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::Notify;

pub use client::{filter_for, is_unknown_id, IndexStats, Match, PineconeClient, QueryBy, SyncError};

use crate::backoff::Backoff;
use crate::labels::Labels;
use crate::outbox::Outbox;
use crate::record::Record;
use crate::secrets::SecretError;
use crate::shutdown::Shutdown;
use crate::stats::Stats;
use crate::validate::{KeyPath, Problem};

/// API versions whose specs are in `../shared/pinecone/`.
pub const API_VERSIONS: [&str; 2] = ["2025-10", "2026-04"];
/// Pinecone's per-request limits (README of the spec folder).
pub const MAX_BATCH_VECTORS: usize = 1000;
pub const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

/// `[pinecone]`: the index to sync to. Absent: records stay in the outbox.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct PineconeConfig {
    /// The index host URL from the Pinecone console. Plain `http://` only to loopback.
    pub host: String,
    /// Namespace within the index. Default: the default namespace ("").
    #[serde(default)]
    pub namespace: String,
    /// Value of `X-Pinecone-Api-Version`. Default "2025-10".
    #[serde(default = "default_api_version")]
    pub api_version: String,
    /// File holding the API key. Otherwise env `PINECONE_API_KEY`, or the systemd credential
    /// `pinecone-api-key`.
    #[serde(default)]
    pub api_key_file: Option<PathBuf>,
    /// Vectors per upsert request (at most 1000; requests are also kept under 2 MB). Default 100.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Seconds before an HTTP request is abandoned and retried. Default 30.
    #[serde(default = "default_timeout_s")]
    pub timeout_s: f64,
    /// Upsert requests in flight at once. Default 2.
    #[serde(default = "default_in_flight")]
    pub in_flight: usize,
}

fn default_in_flight() -> usize {
    2
}

fn default_api_version() -> String {
    "2025-10".into()
}
fn default_batch_size() -> usize {
    100
}
fn default_timeout_s() -> f64 {
    30.0
}

impl PineconeConfig {
    pub fn validate(&self, at: &KeyPath, problems: &mut Vec<Problem>) {
        if let Err(message) = check_host(&self.host) {
            problems.push(Problem::new(at.key("host"), message));
        }
        if !API_VERSIONS.contains(&self.api_version.as_str()) {
            problems.push(Problem::new(
                at.key("api_version"),
                format!("{:?} is not a supported API version: use one of {}", self.api_version, API_VERSIONS.join(", ")),
            ));
        }
        if !(1..=MAX_BATCH_VECTORS).contains(&self.batch_size) {
            problems.push(Problem::new(at.key("batch_size"), format!("must be between 1 and {MAX_BATCH_VECTORS}")));
        }
        if !(1..=16).contains(&self.in_flight) {
            problems.push(Problem::new(at.key("in_flight"), "must be between 1 and 16"));
        }
        if !(self.timeout_s >= 1.0 && self.timeout_s <= 600.0) {
            problems.push(Problem::new(at.key("timeout_s"), "must be between 1 and 600 seconds"));
        }
    }

    /// The API key: env `PINECONE_API_KEY`, then `api_key_file`, then the systemd credential.
    pub fn api_key(&self) -> Result<ApiKey, SecretError> {
        const WHAT: &str = "Pinecone API key";
        if let Ok(key) = std::env::var("PINECONE_API_KEY") {
            if !key.trim().is_empty() {
                return Ok(ApiKey(key.trim().to_owned()));
            }
        }
        let hint = "set env PINECONE_API_KEY, pinecone.api_key_file, or the systemd credential \"pinecone-api-key\"";
        let file = crate::secrets::secret_file(self.api_key_file.as_deref(), "pinecone-api-key")
            .ok_or(SecretError::Missing { what: WHAT, hint })?;
        match crate::secrets::read_secret(&file, WHAT)? {
            key if key.is_empty() => Err(SecretError::Empty { what: WHAT, file }),
            key => Ok(ApiKey(key)),
        }
    }
}

/// The Pinecone API key; its `Debug` never shows it.
#[derive(Clone)]
pub struct ApiKey(String);

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

fn check_host(host: &str) -> Result<(), String> {
    let shown = crate::redact::redact_uri(host);
    let url = reqwest::Url::parse(host).map_err(|e| format!("{shown:?} is not a URL ({e}); copy the index host from the Pinecone console, e.g. \"https://my-index-abc123.svc.aped-1234.pinecone.io\""))?;
    match url.scheme() {
        "https" => Ok(()),
        "http" => {
            let loopback = url.host_str().is_some_and(crate::validate::is_loopback);
            if loopback {
                Ok(())
            } else {
                Err(format!("{shown:?}: plain http is allowed only to loopback; use https://"))
            }
        }
        other => Err(format!("{shown:?}: scheme {other:?} is not supported; use https://")),
    }
}

/// Checks at start-up that the index holds vectors of the embedder's size.
pub async fn check_dimension(client: &PineconeClient, dimension: usize) -> Result<IndexStats, SyncError> {
    let stats = client.describe_index_stats().await?;
    match stats.dimension {
        Some(d) if d as usize != dimension => Err(SyncError::Dimension { index: d as usize, embedder: dimension }),
        _ => Ok(stats),
    }
}

/// What the syncer needs of a remote vector store: how a batch is cut into requests, and one
/// request's upsert, answered with the count stored.
pub trait VectorStore: Clone + Send + Sync + 'static {
    fn split(&self, records: &[Record]) -> Vec<Range<usize>>;
    fn upsert(&self, records: &[Record]) -> impl Future<Output = Result<usize, SyncError>> + Send;
}

impl VectorStore for PineconeClient {
    fn split(&self, records: &[Record]) -> Vec<Range<usize>> {
        PineconeClient::split(self, records)
    }
    fn upsert(&self, records: &[Record]) -> impl Future<Output = Result<usize, SyncError>> + Send {
        PineconeClient::upsert(self, records)
    }
}

/// Drains the outbox until shutdown begins. `wake` is notified after every append.
///
/// Up to `in_flight` batches are sent at once. A cursor hands each pending record to exactly one
/// in-flight batch; a batch keeps its records until the index acknowledged or rejected them, so
/// nothing is sent twice concurrently and nothing pending is skipped.
pub async fn run_syncer<I: VectorStore>(
    outbox: Arc<Outbox>,
    client: I,
    options: SyncOptions,
    labels: Option<Arc<Labels>>,
    stats: Arc<Stats>,
    wake: Arc<Notify>,
    mut shutdown: Shutdown,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(options.in_flight));
    let mut tasks = tokio::task::JoinSet::new();
    let mut cursor = 0u64;
    loop {
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = shutdown.recv() => break,
        };
        while tasks.try_join_next().is_some() {}
        let reader = outbox.clone();
        let batch_size = options.batch_size;
        let batch = match tokio::task::spawn_blocking(move || reader.sendable(cursor, batch_size)).await {
            Ok(Ok(batch)) => batch,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot read the outbox; retrying");
                drop(permit);
                wait(Duration::from_secs(1), &mut shutdown).await;
                continue;
            }
            Err(e) => {
                tracing::error!(error = %e, "outbox reader task failed");
                break;
            }
        };
        let Some((last, _)) = batch.last() else {
            drop(permit);
            update_oldest(&outbox, &stats).await;
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.recv() => break,
            }
            continue;
        };
        cursor = last + 1;
        let (outbox, client, stats, shutdown) = (outbox.clone(), client.clone(), stats.clone(), shutdown.clone());
        let labels = labels.clone();
        tasks.spawn(async move {
            deliver(batch, &outbox, &client, labels, &stats, shutdown).await;
            update_oldest(&outbox, &stats).await;
            drop(permit);
        });
    }
    // In-flight requests finish (or give up at shutdown); their records stay pending if not acknowledged.
    while tasks.join_next().await.is_some() {}
}

/// How the syncer batches and paces its requests.
#[derive(Clone, Copy, Debug)]
pub struct SyncOptions {
    pub batch_size: usize,
    pub in_flight: usize,
}

/// Sends one batch, a request at a time, until each request is acknowledged or rejected, or
/// shutdown begins. Each request's records leave the outbox on their own answer: a rejected
/// request dead-letters only its records.
///
/// The records carry their labels as they are now; a label that changes before a request's
/// answer goes to Pinecone again after it ([`crate::labels`] says why).
async fn deliver<I: VectorStore>(
    batch: Vec<(u64, Record)>,
    outbox: &Arc<Outbox>,
    client: &I,
    labels: Option<Arc<Labels>>,
    stats: &Stats,
    shutdown: Shutdown,
) {
    let mut records: Vec<Record> = batch.iter().map(|(_, r)| r.clone()).collect();
    if let Some(labels) = &labels {
        records = with_labels(labels, records).await;
    }
    for range in client.split(&records) {
        let request = (&batch[range.clone()], &records[range]);
        if !deliver_request(request, outbox, client, labels.as_ref(), stats, shutdown.clone()).await {
            return;
        }
    }
}

/// After Pinecone acknowledged an upsert of `records`, and before the outbox lets them go: the
/// names given meanwhile go to Pinecone again. `false` if that could not be written: the
/// records then stay pending, to be upserted again (with the names as they are then).
async fn queue_changed_names(labels: Option<&Arc<Labels>>, records: &[Record]) -> bool {
    let Some(labels) = labels else { return true };
    let (labels, sent) = (labels.clone(), records.to_vec());
    match tokio::task::spawn_blocking(move || labels.resend_changed(&sent)).await {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "cannot queue the names given during an upsert; its records stay pending and go again after a restart");
            false
        }
        Err(e) => panic!("the labels writer panicked: {e}"),
    }
}

/// `records` with their labels as they are now (a failed read sends them without).
async fn with_labels(labels: &Arc<Labels>, records: Vec<Record>) -> Vec<Record> {
    let labels = labels.clone();
    let labelled = tokio::task::spawn_blocking(move || {
        let mut records = records;
        let result = labels.apply(&mut records);
        (records, result)
    });
    match labelled.await {
        Ok((records, Ok(()))) => records,
        Ok((records, Err(e))) => {
            tracing::error!(error = %e, "cannot read the labels; this upsert goes without them");
            records
        }
        Err(e) => panic!("the labels reader panicked: {e}"),
    }
}

/// Sends people's labels to Pinecone (`setMetadata` `user_label`) until each is acknowledged,
/// until shutdown begins. Retried like upserts; a label Pinecone rejects for good is logged and
/// dropped from the queue (it stays on the device).
pub async fn run_label_sender(labels: Arc<Labels>, client: PineconeClient, mut shutdown: Shutdown) {
    let mut backoff = Backoff::with_full_jitter(Duration::from_millis(250), Duration::from_secs(30));
    loop {
        let reader = labels.clone();
        let unsent = match tokio::task::spawn_blocking(move || reader.unsent(LABELS_PER_ROUND)).await {
            Ok(Ok(unsent)) => unsent,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot read the labels to send; retrying");
                wait(Duration::from_secs(5), &mut shutdown).await;
                continue;
            }
            Err(e) => panic!("the labels reader panicked: {e}"),
        };
        if unsent.is_empty() {
            tokio::select! {
                _ = labels.changed() => continue,
                _ = shutdown.recv() => return,
            }
        }
        for name in unsent {
            let sent = match client.set_metadata(&name.id, serde_json::json!({ "user_label": name.label })).await {
                Ok(()) => true,
                Err(e) if e.rejects_batch() => {
                    tracing::error!(event = "label_rejected", record = %name.id, error = %e, "Pinecone rejected a label; it stays on the device only");
                    true
                }
                Err(e) => {
                    let delay = e.retry_after().unwrap_or_else(|| backoff.next_delay());
                    tracing::warn!(event = "label_retry", error = %e, retry_in_ms = delay.as_millis() as u64, "a label could not be sent; will retry");
                    wait(delay, &mut shutdown).await;
                    false
                }
            };
            if !sent {
                break;
            }
            backoff.reset();
            let writer = labels.clone();
            if let Ok(Err(e)) = tokio::task::spawn_blocking(move || writer.mark_sent(&name)).await {
                tracing::error!(error = %e, "cannot mark a label sent; it will be sent again");
            }
        }
        if shutdown.is_shutdown() {
            return;
        }
    }
}

/// Labels read from the queue at a time.
const LABELS_PER_ROUND: usize = 32;

/// One request's records until acknowledged or rejected (true), or shutdown began (false).
async fn deliver_request<I: VectorStore>(
    (batch, records): (&[(u64, Record)], &[Record]),
    outbox: &Arc<Outbox>,
    client: &I,
    labels: Option<&Arc<Labels>>,
    stats: &Stats,
    mut shutdown: Shutdown,
) -> bool {
    let mut backoff = Backoff::with_full_jitter(Duration::from_millis(250), Duration::from_secs(30));
    let seqs: Vec<u64> = batch.iter().map(|(s, _)| *s).collect();
    loop {
        match client.upsert(records).await {
            Ok(count) => {
                if !queue_changed_names(labels, records).await {
                    return true;
                }
                let (writer, seqs) = (outbox.clone(), seqs.clone());
                match tokio::task::spawn_blocking(move || writer.remove(&seqs)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "acknowledged records could not be removed from the outbox; they will be upserted again under the same ids")
                    }
                    Err(e) => tracing::error!(error = %e, "outbox writer task failed"),
                }
                stats.outbox_backlog(outbox.backlog());
                stats.upserted(records.len());
                tracing::debug!(records = records.len(), upserted_count = count, "batch upserted");
                return true;
            }
            Err(e) if e.rejects_batch() => {
                tracing::error!(error = %e, records = records.len(), first_id = %records[0].id, "Pinecone rejected the batch; moved to dead letters");
                let (writer, reason, batch) = (outbox.clone(), e.to_string(), batch.to_vec());
                match tokio::task::spawn_blocking(move || writer.dead_letter(&batch, &reason)).await {
                    Ok(Ok(())) => {
                        stats.outbox_backlog(outbox.backlog());
                        stats.dead_lettered(records.len());
                    }
                    _ => tracing::error!("cannot write dead letters; the batch stays pending and is retried after a restart"),
                }
                return true;
            }
            Err(e) => {
                stats.sync_retried();
                let delay = match e.retry_after() {
                    Some(d) => d,
                    None if e.is_configuration() => backoff.cap(),
                    None => backoff.next_delay(),
                };
                if e.is_configuration() {
                    tracing::error!(error = %e, retry_in_ms = delay.as_millis() as u64, "Pinecone refuses this device's requests; check [pinecone] host and the API key");
                } else {
                    tracing::warn!(event = "upsert_retry", error = %e, retry_in_ms = delay.as_millis() as u64, "upsert failed; will retry");
                }
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.recv() => return false,
                }
            }
        }
    }
}

async fn update_oldest(outbox: &Arc<Outbox>, stats: &Arc<Stats>) {
    let reader = outbox.clone();
    if let Ok(Ok((ts, quarantined))) =
        tokio::task::spawn_blocking(move || reader.oldest_ts().map(|ts| (ts, reader.quarantined_len()))).await
    {
        stats.outbox_oldest(ts);
        stats.outbox_quarantined(quarantined as u64);
    }
}

async fn wait(delay: Duration, shutdown: &mut Shutdown) {
    tokio::select! {
        _ = tokio::time::sleep(delay) => {}
        _ = shutdown.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::outbox::OutboxConfig;

    #[test]
    fn a_search_s_filters_become_one_pinecone_filter() {
        let query = crate::index::Query { cameras: vec!["gate".into()], since_ms: Some(5), ..Default::default() };
        let filter = filter_for(&query, Some("lab-01"), &["our van".into()]).expect("a filter");
        let parts = [
            serde_json::json!({ "camera": { "$in": ["gate"] } }),
            serde_json::json!({ "user_label": { "$in": ["our van"] } }),
            serde_json::json!({ "device": { "$eq": "lab-01" } }),
            serde_json::json!({ "ts": { "$gte": 5 } }),
        ];
        assert_eq!(filter, serde_json::json!({ "$and": parts }));
        assert_eq!(filter_for(&Default::default(), None, &[]), None, "no filters: no filter at all");
    }

    #[test]
    fn plain_http_is_only_for_loopback() {
        assert!(check_host("https://idx-abc.svc.aped.pinecone.io").is_ok());
        assert!(check_host("http://127.0.0.1:5080").is_ok());
        assert!(check_host("http://localhost:5080").is_ok());
        assert!(check_host("http://[::1]:5080").is_ok());
        assert!(check_host("http://10.0.0.5:5080").is_err());
        assert!(check_host("idx.pinecone.io").is_err());
    }

    #[test]
    fn errors_are_classified_by_what_retrying_would_do() {
        let status = |status, retry_after| SyncError::Status { status, message: String::new(), retry_after };
        assert!(status(400, None).rejects_batch() && status(422, None).rejects_batch());
        assert!(SyncError::TooLarge("r1".into()).rejects_batch());
        assert!(status(401, None).is_configuration() && status(404, None).is_configuration() && !status(401, None).rejects_batch());
        let throttled = status(429, Some(Duration::from_secs(7)));
        assert!(!throttled.rejects_batch() && !throttled.is_configuration());
        assert_eq!(throttled.retry_after(), Some(Duration::from_secs(7)));
        assert!(!SyncError::Transport("reset".into()).rejects_batch());
    }

    /// An index that answers each upsert after `latency` with the next scripted answer (then
    /// success), recording every batch and how many were in flight at once.
    #[derive(Clone, Default)]
    struct FakeIndex(Arc<Mutex<Fake>>);

    #[derive(Default)]
    struct Fake {
        /// How the next batch is cut into requests.
        cuts: Vec<usize>,
        script: Vec<Result<(), SyncError>>,
        batches: Vec<Vec<String>>,
        in_flight: usize,
        max_in_flight: usize,
    }

    const LATENCY: Duration = Duration::from_secs(1);

    impl VectorStore for FakeIndex {
        /// Scripted cuts (record counts), else the whole batch in one request.
        fn split(&self, records: &[Record]) -> Vec<Range<usize>> {
            let cuts = std::mem::take(&mut self.0.lock().expect("fake").cuts);
            let mut start = 0;
            let mut ranges: Vec<Range<usize>> = cuts
                .into_iter()
                .map(|n| {
                    let r = start..start + n;
                    start += n;
                    r
                })
                .collect();
            if start < records.len() {
                ranges.push(start..records.len());
            }
            ranges
        }

        fn upsert(&self, records: &[Record]) -> impl Future<Output = Result<usize, SyncError>> + Send {
            let (fake, ids) = (self.0.clone(), records.iter().map(|r| r.id.clone()).collect::<Vec<_>>());
            async move {
                let answer = {
                    let mut f = fake.lock().expect("fake");
                    f.in_flight += 1;
                    f.max_in_flight = f.max_in_flight.max(f.in_flight);
                    f.batches.push(ids.clone());
                    if f.script.is_empty() {
                        Ok(())
                    } else {
                        f.script.remove(0)
                    }
                };
                tokio::time::sleep(LATENCY).await;
                fake.lock().expect("fake").in_flight -= 1;
                answer.map(|()| ids.len())
            }
        }
    }

    fn record(id: &str) -> Record {
        crate::record::test_record(id, "c", 1, vec![1.0])
    }

    /// What a drain leaves: the outbox (in its directory), the stats and the virtual time taken.
    struct Drained {
        _dir: tempfile::TempDir,
        outbox: Arc<Outbox>,
        stats: Arc<Stats>,
        took: Duration,
    }

    /// Runs the syncer over `ids` until the outbox is empty (or `limit` of virtual time passed).
    async fn drain(index: FakeIndex, ids: &[&str], in_flight: usize, limit: Duration) -> Drained {
        let dir = tempfile::tempdir().expect("tempdir");
        let outbox = Arc::new(Outbox::open(dir.path(), &OutboxConfig::default()).expect("open"));
        outbox.append(&ids.iter().map(|id| record(id)).collect::<Vec<_>>(), 0).expect("append");
        outbox.mark_all_indexed();
        let (trigger, shutdown) = crate::shutdown::channel();
        let (stats, wake) = (Stats::new(), Arc::new(Notify::new()));
        let options = SyncOptions { batch_size: 2, in_flight };
        let syncer = tokio::spawn(run_syncer(outbox.clone(), index, options, None, stats.clone(), wake, shutdown));
        let started = tokio::time::Instant::now();
        while outbox.backlog().records > 0 && started.elapsed() < limit {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let took = started.elapsed();
        trigger.begin();
        syncer.await.expect("the syncer stops");
        Drained { _dir: dir, outbox, stats, took }
    }

    #[tokio::test(start_paused = true)]
    async fn every_record_goes_in_exactly_one_batch_with_at_most_in_flight_at_once() {
        let index = FakeIndex::default();
        let Drained { outbox, stats, took, .. } =
            drain(index.clone(), &["a", "b", "c", "d", "e", "f", "g"], 2, Duration::from_secs(60)).await;
        let fake = index.0.lock().expect("fake");
        let mut sent: Vec<String> = fake.batches.concat();
        sent.sort();
        assert_eq!(sent, ["a", "b", "c", "d", "e", "f", "g"], "each once: {:?}", fake.batches);
        assert_eq!(fake.max_in_flight, 2);
        assert!(took < 3 * LATENCY, "four batches two at a time take two round trips, took {took:?}");
        assert_eq!(
            (outbox.backlog().records, stats.snapshot().report("d", &Default::default(), None)["sync"]["upserted"].as_u64()),
            (0, Some(7))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn throttling_is_retried_after_retry_after_and_a_bad_batch_becomes_dead_letters() {
        let throttled = SyncError::Status { status: 429, message: "slow down".into(), retry_after: Some(Duration::from_secs(20)) };
        let rejected = SyncError::Status { status: 400, message: "bad metadata".into(), retry_after: None };
        let index = FakeIndex(Arc::new(Mutex::new(Fake { script: vec![Err(throttled), Err(rejected)], ..Fake::default() })));
        let Drained { outbox, stats, took, .. } = drain(index.clone(), &["a", "b"], 1, Duration::from_secs(60)).await;
        assert_eq!(index.0.lock().expect("fake").batches.len(), 2, "one retry, then the rejection");
        assert!(took >= Duration::from_secs(20), "Retry-After was honoured: {took:?}");
        assert_eq!((outbox.backlog().records, outbox.dead_len()), (0, 2));
        let sync = &stats.snapshot().report("d", &Default::default(), None)["sync"];
        assert_eq!((sync["retried"].as_u64(), sync["dead_lettered"].as_u64(), sync["upserted"].as_u64()), (Some(1), Some(2), Some(0)));
    }

    #[tokio::test(start_paused = true)]
    async fn when_one_request_of_a_split_batch_is_rejected_only_its_records_become_dead_letters() {
        let rejected = SyncError::Status { status: 400, message: "bad metadata".into(), retry_after: None };
        let script = vec![Ok(()), Err(rejected)];
        let index = FakeIndex(Arc::new(Mutex::new(Fake { cuts: vec![1], script, ..Fake::default() })));
        let Drained { outbox, stats, .. } = drain(index.clone(), &["a", "b"], 1, Duration::from_secs(60)).await;
        assert_eq!(index.0.lock().expect("fake").batches, [vec!["a".to_owned()], vec!["b".to_owned()]]);
        assert_eq!((outbox.backlog().records, outbox.dead_len()), (0, 1));
        let letter = String::from_utf8(outbox.dead_letters().next().expect("one").expect("readable")).expect("utf-8");
        assert!(letter.contains("\"b\"") && !letter.contains("\"a\""), "{letter}");
        let sync = &stats.snapshot().report("d", &Default::default(), None)["sync"];
        assert_eq!((sync["upserted"].as_u64(), sync["dead_lettered"].as_u64()), (Some(1), Some(1)));
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_is_sent_before_the_index_on_the_device_has_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let outbox = Arc::new(Outbox::open(dir.path(), &OutboxConfig::default()).expect("open"));
        let seqs = outbox.append(&[record("a"), record("b")], 0).expect("append").seqs;
        let (trigger, shutdown) = crate::shutdown::channel();
        let (stats, wake, index) = (Stats::new(), Arc::new(Notify::new()), FakeIndex::default());
        let options = SyncOptions { batch_size: 10, in_flight: 1 };
        let syncer = tokio::spawn(run_syncer(outbox.clone(), index.clone(), options, None, stats, wake.clone(), shutdown));
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(index.0.lock().expect("fake").batches.is_empty(), "the index's mark has not passed them");
        outbox.mark_indexed(Some(seqs[0]));
        wake.notify_one();
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(index.0.lock().expect("fake").batches, [vec!["a".to_owned()]]);
        assert_eq!(outbox.backlog().records, 1, "b waits for the index");
        trigger.begin();
        syncer.await.expect("the syncer stops");
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_key_is_retried_slowly_and_nothing_leaves_the_outbox() {
        let refused = || SyncError::Status { status: 401, message: "bad key".into(), retry_after: None };
        let index = FakeIndex(Arc::new(Mutex::new(Fake { script: (0..10).map(|_| Err(refused())).collect(), ..Fake::default() })));
        let Drained { outbox, .. } = drain(index.clone(), &["a"], 1, Duration::from_secs(90)).await;
        let tries = index.0.lock().expect("fake").batches.len();
        assert!((2..=4).contains(&tries), "401 retried at the slowest pace (30 s): {tries} tries in 90 s");
        assert_eq!(outbox.backlog().records, 1);
    }
}
