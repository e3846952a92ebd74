use std::ops::ControlFlow;
use std::time::Duration;

use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::kv::Operation;
use bytes::Bytes;
use chrono::Utc;
use futures_util::StreamExt;
use omniq_models::{TaskId, TaskResult};
use omniq_storage::{
    BoxFuture, ResultStore, StoreError, StoreResult, decode_result, effective_purge_limit,
    encode_result, result_supersedes, winning_results,
};

use crate::NatsBackend;
use crate::error::{BACKEND, nats_error};
use crate::scan::scan;

/// Header holding a result's expiry (microseconds since the epoch), so that
/// [`ResultStore::purge_expired`] finds expired results reading headers only.
const EXPIRES_HEADER: &str = "Omniq-Expires-At";

/// How often a write that lost a compare-and-set race is tried again before giving up.
const CAS_ROUNDS: usize = 32;

/// The result store of a [`NatsBackend`]: one key per task in the bucket
/// `{prefix}_results`, written by compare-and-set on the key's revision so that a stale
/// worker's late result never replaces the one of the attempt that took over.
///
/// nats-server 2.9 has no per-key TTL: an expired result is never returned, and
/// [`ResultStore::purge_expired`] removes expired ones (it reads every key's headers, so
/// its cost grows with the bucket). Setting
/// [`NatsOptions::result_retention`](crate::NatsOptions::result_retention) lets the server
/// drop old results by itself.
#[derive(Debug, Clone)]
pub struct NatsResultStore {
    backend: NatsBackend,
}

impl NatsResultStore {
    pub(crate) fn new(backend: NatsBackend) -> Self {
        Self { backend }
    }

    fn kv(&self) -> &async_nats::jetstream::kv::Store {
        &self.backend.inner.results
    }

    async fn put_all(&self, results: Vec<TaskResult>) -> StoreResult<()> {
        // One key each: all in flight at once on the connection.
        futures_util::future::try_join_all(
            winning_results(results)
                .into_iter()
                .map(|result| self.put_one(result)),
        )
        .await?;
        Ok(())
    }

    async fn put_one(&self, result: TaskResult) -> StoreResult<()> {
        let key = result.task_id.to_string();
        let bytes = Bytes::from(encode_result(&result, BACKEND)?);
        let mut headers = async_nats::HeaderMap::new();
        if let Some(at) = result.expires_at {
            headers.insert(EXPIRES_HEADER, at.timestamp_micros().to_string().as_str());
        }
        let subject = format!("{}{key}", self.kv().prefix);
        for _ in 0..CAS_ROUNDS {
            let revision = match self.kv().entry(key.clone()).await.map_err(nats_error)? {
                Some(entry) if entry.operation == Operation::Put => {
                    // A stored value that cannot be read is replaced by a readable one.
                    if let Ok(current) = decode_result(&entry.value, BACKEND)
                        && !result_supersedes(&result, &current)
                    {
                        return Ok(());
                    }
                    entry.revision
                }
                Some(entry) => entry.revision,
                None => 0,
            };
            match self
                .publish_expecting(&subject, &headers, &bytes, revision)
                .await
            {
                Ok(()) => return Ok(()),
                Err(RacedOr::Raced) => {}
                Err(RacedOr::Failed(err)) => return Err(err),
            }
        }
        Err(StoreError::unavailable(
            BACKEND,
            format!("the result of task {key} kept changing under {CAS_ROUNDS} writes"),
        ))
    }

    /// Publishes `bytes` on `subject` if the subject's last revision is still `revision`
    /// (0: no message).
    async fn publish_expecting(
        &self,
        subject: &str,
        headers: &async_nats::HeaderMap,
        bytes: &Bytes,
        revision: u64,
    ) -> Result<(), RacedOr> {
        let mut headers = headers.clone();
        headers.insert(
            "Nats-Expected-Last-Subject-Sequence",
            revision.to_string().as_str(),
        );
        let ack = self
            .backend
            .inner
            .jetstream
            .publish_with_headers(subject.to_owned(), headers, bytes.clone())
            .await
            .map_err(|err| RacedOr::Failed(nats_error(err)))?;
        match ack.await {
            Ok(_) => Ok(()),
            Err(err) if err.kind() == PublishErrorKind::WrongLastSequence => Err(RacedOr::Raced),
            Err(err) => Err(RacedOr::Failed(nats_error(err))),
        }
    }

    async fn read(&self, id: TaskId) -> StoreResult<Option<TaskResult>> {
        let entry = self.kv().entry(id.to_string()).await.map_err(nats_error)?;
        let Some(entry) = entry.filter(|e| e.operation == Operation::Put) else {
            return Ok(None);
        };
        let result = decode_result(&entry.value, BACKEND)?;
        Ok((!result.is_expired(Utc::now())).then_some(result))
    }

    async fn remove(&self, id: TaskId) -> StoreResult<bool> {
        let key = id.to_string();
        let entry = self.kv().entry(key.clone()).await.map_err(nats_error)?;
        let Some(entry) = entry.filter(|e| e.operation == Operation::Put) else {
            return Ok(false);
        };
        self.purge_up_to(&key, entry.revision).await?;
        Ok(true)
    }

    /// Removes a key's messages up to `revision`, markers included: a newer write (a later
    /// attempt's result landing meanwhile) stays.
    async fn purge_up_to(&self, key: &str, revision: u64) -> StoreResult<()> {
        self.kv()
            .stream
            .purge()
            .filter(format!("{}{key}", self.kv().prefix))
            .sequence(revision + 1)
            .await
            .map_err(nats_error)?;
        Ok(())
    }

    async fn purge_expired_results(&self, limit: usize) -> StoreResult<u64> {
        let limit = effective_purge_limit(limit);
        let now = Utc::now().timestamp_micros();
        let prefix = self.kv().prefix.clone();
        let mut expired: Vec<(String, u64)> = Vec::new();
        scan(
            &self.backend.inner.client,
            &self.kv().stream,
            format!("{prefix}>"),
            DeliverPolicy::LastPerSubject,
            true,
            |message| {
                let at = message
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(EXPIRES_HEADER))
                    .and_then(|v| v.as_str().parse::<i64>().ok());
                if at.is_some_and(|at| at <= now)
                    && let Some(key) = message.subject.strip_prefix(&prefix)
                {
                    expired.push((key.to_owned(), message.seq));
                }
                if expired.len() >= limit {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            },
        )
        .await?;
        let count = expired.len();
        futures_util::stream::iter(expired)
            .map(|(key, seq)| async move { self.purge_up_to(&key, seq).await })
            .buffer_unordered(32)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<StoreResult<Vec<()>>>()?;
        Ok(u64::try_from(count).unwrap_or(u64::MAX))
    }

    async fn wait(&self, id: TaskId, timeout: Duration) -> StoreResult<Option<TaskResult>> {
        // Watch first, then read: a result landing between the two is seen by the watch.
        let mut watch = self.kv().watch(id.to_string()).await.map_err(nats_error)?;
        if let Some(result) = self.read(id).await? {
            return Ok(Some(result));
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let Ok(next) = tokio::time::timeout_at(deadline, watch.next()).await else {
                return Ok(None);
            };
            match next {
                Some(Ok(entry)) if entry.operation == Operation::Put => {
                    if let Some(result) = self.read(id).await? {
                        return Ok(Some(result));
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(err)) => return Err(nats_error(err)),
                None => {
                    return Err(StoreError::unavailable(
                        BACKEND,
                        "the watch of a result ended",
                    ));
                }
            }
        }
    }
}

/// A compare-and-set publish that lost, or another failure.
enum RacedOr {
    Raced,
    Failed(StoreError),
}

impl ResultStore for NatsResultStore {
    fn put(&self, results: Vec<TaskResult>) -> BoxFuture<'_, StoreResult<()>> {
        Box::pin(self.put_all(results))
    }

    fn get(&self, id: TaskId) -> BoxFuture<'_, StoreResult<Option<TaskResult>>> {
        Box::pin(self.read(id))
    }

    fn delete(&self, id: TaskId) -> BoxFuture<'_, StoreResult<bool>> {
        Box::pin(self.remove(id))
    }

    fn purge_expired(&self, limit: usize) -> BoxFuture<'_, StoreResult<u64>> {
        Box::pin(self.purge_expired_results(limit))
    }

    /// Watches the result's key: woken by the write, not by polling.
    fn wait_for(
        &self,
        id: TaskId,
        timeout: Duration,
    ) -> BoxFuture<'_, StoreResult<Option<TaskResult>>> {
        Box::pin(self.wait(id, timeout))
    }
}
