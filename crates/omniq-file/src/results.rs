//! Results as objects: one per task, replaced only by a result that supersedes it.
//!
//! - `results/<task id>`: the result, in the layout every store shares
//!   ([`encode_result`](omniq_storage::encode_result)). A write reads the stored one, and creates
//!   or replaces it from the version read only when the new one
//!   [supersedes](omniq_storage::result_supersedes) it; a lost race reads again.
//! - `results-expiry/<expires at, µs, 20 digits>-<task id>`: an empty marker per result
//!   with a TTL, written before the result, so a crash between the two leaves a marker
//!   without a result (cleared by the next purge), never a result no purge finds. Keys sort
//!   by expiry: a purge reads the oldest and stops at the first still live.

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use omniq_models::{TaskId, TaskResult};
use omniq_storage::{
    BoxFuture, ResultStore, StoreError, StoreResult, decode_result, effective_purge_limit,
    encode_result, result_supersedes, winning_results,
};

use crate::Objects;
use crate::error::BACKEND;

/// How often a write that lost a race reads and tries again before it gives up.
const WRITE_ROUNDS: usize = 64;
const RESULTS: &str = "results";
const EXPIRY: &str = "results-expiry";

/// The result store on [`Objects`].
#[derive(Debug, Clone)]
pub struct FileResultStore {
    objects: Arc<dyn Objects>,
}

fn result_key(id: TaskId) -> String {
    format!("{RESULTS}/{id}")
}

fn expiry_key(at: DateTime<Utc>, id: TaskId) -> String {
    // Rounded up: a marker must never come due before its result has expired.
    let nanos_left = at.timestamp_subsec_nanos() % 1_000;
    let micros = at.timestamp_micros() + i64::from(nanos_left > 0);
    let micros = u64::try_from(micros).unwrap_or(0);
    format!("{EXPIRY}/{micros:020}-{id}")
}

/// A stored result, or `None` for a tombstone (an empty object: see
/// [`Objects::delete_if`]).
fn decode(bytes: &[u8]) -> StoreResult<Option<TaskResult>> {
    if bytes.is_empty() {
        return Ok(None);
    }
    decode_result(bytes, BACKEND).map(Some)
}

impl FileResultStore {
    /// Results in `objects`.
    pub fn new(objects: Arc<dyn Objects>) -> Self {
        Self { objects }
    }

    async fn read(&self, id: TaskId) -> StoreResult<Option<TaskResult>> {
        match self.objects.get(&result_key(id)).await? {
            Some(stored) => decode(&stored.bytes),
            None => Ok(None),
        }
    }

    async fn put_one(&self, result: TaskResult) -> StoreResult<()> {
        let key = result_key(result.task_id);
        let bytes = Bytes::from(encode_result(&result, BACKEND)?);
        if let Some(at) = result.expires_at {
            // Already there for the same expiry and task: fine.
            let _ = self
                .objects
                .create(&expiry_key(at, result.task_id), Bytes::new())
                .await?;
        }
        for _ in 0..WRITE_ROUNDS {
            let written = match self.objects.get(&key).await? {
                None => self.objects.create(&key, bytes.clone()).await?,
                Some(stored) => {
                    // A tombstone counts as no result; a stored result that cannot be read
                    // is replaced by one that can.
                    let superseded = decode(&stored.bytes).map_or(true, |current| {
                        current.is_none_or(|current| result_supersedes(&result, &current))
                    });
                    if !superseded {
                        return Ok(());
                    }
                    self.objects
                        .update(&key, bytes.clone(), &stored.version)
                        .await?
                }
            };
            if written.is_some() {
                return Ok(());
            }
        }
        Err(StoreError::unavailable(
            BACKEND,
            format!(
                "the result of task {} kept changing under {WRITE_ROUNDS} writes",
                result.task_id
            ),
        ))
    }

    async fn purge(&self, limit: usize) -> StoreResult<u64> {
        let now = Utc::now();
        let limit = effective_purge_limit(limit);
        let mut purged = 0u64;
        for marker in self.objects.list(EXPIRY).await? {
            if usize::try_from(purged).unwrap_or(usize::MAX) >= limit {
                break;
            }
            let Some((micros, id)) = marker
                .strip_prefix(&format!("{EXPIRY}/"))
                .and_then(|name| name.split_once('-'))
            else {
                continue;
            };
            let (Ok(micros), Ok(id)) = (micros.parse::<i64>(), id.parse::<TaskId>()) else {
                // Not a marker of ours: left alone.
                continue;
            };
            if DateTime::<Utc>::from_timestamp_micros(micros).is_none_or(|at| at > now) {
                // Sorted by expiry: every marker after this one is live too.
                break;
            }
            // The result may have been replaced by one that lives longer (it wrote a
            // marker of its own) or never written (a crash after the marker). Deleted only
            // as read: a result written since stays.
            let key = result_key(id);
            if let Some(stored) = self.objects.get(&key).await? {
                let expired = match decode(&stored.bytes) {
                    Ok(result) => result.is_none_or(|r| r.expires_at.is_some_and(|at| at <= now)),
                    // Unreadable past its marker's time: it must not stop every purge.
                    Err(err) => {
                        tracing::warn!(%err, task = %id, "an expired result cannot be read; deleted");
                        true
                    }
                };
                if expired && self.objects.delete_if(&key, &stored.version).await? {
                    purged += 1;
                }
            }
            self.objects.delete(&marker).await?;
        }
        Ok(purged)
    }
}

impl ResultStore for FileResultStore {
    fn put(&self, results: Vec<TaskResult>) -> BoxFuture<'_, StoreResult<()>> {
        Box::pin(async move {
            for result in winning_results(results) {
                self.put_one(result).await?;
            }
            Ok(())
        })
    }

    fn get(&self, id: TaskId) -> BoxFuture<'_, StoreResult<Option<TaskResult>>> {
        Box::pin(async move {
            let now = Utc::now();
            Ok(self
                .read(id)
                .await?
                .filter(|result| result.expires_at.is_none_or(|at| at > now)))
        })
    }

    fn delete(&self, id: TaskId) -> BoxFuture<'_, StoreResult<bool>> {
        Box::pin(async move {
            // A tombstone is no result; it goes all the same.
            let existed = self.read(id).await?.is_some();
            self.objects.delete(&result_key(id)).await?;
            Ok(existed)
        })
    }

    fn purge_expired(&self, limit: usize) -> BoxFuture<'_, StoreResult<u64>> {
        Box::pin(self.purge(limit))
    }
}
