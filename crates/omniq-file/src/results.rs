//! Results as objects: one per task, replaced only by a result that supersedes it.
//!
//! - `results/<task id>`: the result, in the layout every store shares
//!   ([`encode_result`](omniq_storage::encode_result)). A write reads the stored one, and creates
//!   or replaces it from the version read only when the new one
//!   [supersedes](omniq_storage::result_supersedes) it; a lost race reads again.
//! - `results-expiry/<expires at, µs, 20 digits>-<task id>`: an empty marker for a result
//!   with a TTL, or `results-expiry/<expires at>-<UUIDv7>.ids` listing the task ids of
//!   several results written together that expire within one second (one marker per
//!   batch, not per result). Written before the results, so a crash between the two leaves
//!   a marker without a result (cleared by the next purge), never a result no purge finds.
//!   Keys sort by expiry: a purge reads the oldest and stops at the first still live.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures_util::{StreamExt, TryStreamExt};
use omniq_models::{TaskId, TaskResult};
use omniq_storage::{
    BoxFuture, ResultStore, StoreError, StoreResult, decode_result, effective_purge_limit,
    encode_result, result_supersedes, winning_results,
};

use crate::Objects;
use crate::error::BACKEND;
use crate::objects::IN_FLIGHT;

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

/// An expiry time in µs, rounded up: a marker must never come due before its result has
/// expired.
fn expiry_micros(at: DateTime<Utc>) -> u64 {
    let nanos_left = at.timestamp_subsec_nanos() % 1_000;
    u64::try_from(at.timestamp_micros() + i64::from(nanos_left > 0)).unwrap_or(0)
}

/// The marker of one result: `results-expiry/<at>-<task id>`, empty.
fn expiry_key(at: DateTime<Utc>, id: TaskId) -> String {
    format!("{EXPIRY}/{:020}-{id}", expiry_micros(at))
}

/// The marker of several results that expire within one second, at the last of their
/// times: `results-expiry/<at>-<UUIDv7>.ids`, their task ids one per line.
fn expiry_group_key(at: DateTime<Utc>) -> String {
    format!(
        "{EXPIRY}/{:020}-{}{GROUP}",
        expiry_micros(at),
        TaskId::new()
    )
}

/// The suffix of a marker that lists its results.
const GROUP: &str = ".ids";

/// Expiry markers for `results`: one per second their expiry times fall in (a batch of
/// results finished together, with one TTL, shares one), so a batch costs one marker, not
/// one per result. Each names the latest expiry of its results: none is purged early, and
/// none lingers more than a second past its time.
fn expiry_markers(results: &[TaskResult]) -> Vec<(String, Bytes)> {
    let mut groups: BTreeMap<i64, (DateTime<Utc>, Vec<TaskId>)> = BTreeMap::new();
    for result in results {
        if let Some(at) = result.expires_at {
            let group = groups.entry(at.timestamp()).or_insert((at, Vec::new()));
            group.0 = group.0.max(at);
            group.1.push(result.task_id);
        }
    }
    groups
        .into_values()
        .map(|(at, ids)| match ids.as_slice() {
            [id] => (expiry_key(at, *id), Bytes::new()),
            _ => {
                let body = ids.iter().map(|id| format!("{id}\n")).collect::<String>();
                (expiry_group_key(at), Bytes::from(body))
            }
        })
        .collect()
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
        // A task's first result, as most are, is created without a read before it; one
        // there already (a retry, a re-run, a tombstone) is read and compared below.
        if self.objects.create(&key, bytes.clone()).await?.is_some() {
            return Ok(());
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
        let mut purged = 0usize;
        for marker in self.objects.list(EXPIRY).await? {
            if purged >= limit {
                break;
            }
            let Some((micros, name)) = marker
                .strip_prefix(&format!("{EXPIRY}/"))
                .and_then(|name| name.split_once('-'))
            else {
                continue;
            };
            let Ok(micros) = micros.parse::<i64>() else {
                // Not a marker of ours: left alone.
                continue;
            };
            if DateTime::<Utc>::from_timestamp_micros(micros).is_none_or(|at| at > now) {
                // Sorted by expiry: every marker after this one is live too.
                break;
            }
            let ids: Vec<TaskId> = if name.ends_with(GROUP) {
                match self.objects.get(&marker).await? {
                    Some(stored) => String::from_utf8_lossy(&stored.bytes)
                        .lines()
                        .filter_map(|line| line.parse().ok())
                        .collect(),
                    None => continue,
                }
            } else if let Ok(id) = name.parse() {
                vec![id]
            } else {
                continue;
            };
            let mut rest = ids.as_slice();
            while let Some((id, after)) = rest.split_first() {
                if purged >= limit {
                    break;
                }
                if self.purge_if_expired(*id, now).await? {
                    purged += 1;
                }
                rest = after;
            }
            if !rest.is_empty() {
                // The rest at the next call, under a marker of its own at the same time:
                // the ids done are not read again. Written before the old one goes: a
                // crash in between leaves ids twice, never a result no marker names.
                let body = rest.iter().map(|id| format!("{id}\n")).collect::<String>();
                let key = format!("{EXPIRY}/{micros:020}-{}{GROUP}", TaskId::new());
                self.objects.create(&key, Bytes::from(body)).await?;
            }
            self.objects.delete(&marker).await?;
        }
        Ok(u64::try_from(purged).unwrap_or(u64::MAX))
    }

    /// Deletes the result of `id` if it has expired by `now`; returns whether it did.
    async fn purge_if_expired(&self, id: TaskId, now: DateTime<Utc>) -> StoreResult<bool> {
        // The result may have been replaced by one that lives longer (it wrote a marker of
        // its own) or never written (a crash after the marker). Deleted only as read: a
        // result written since stays.
        let key = result_key(id);
        let Some(stored) = self.objects.get(&key).await? else {
            return Ok(false);
        };
        let expired = match decode(&stored.bytes) {
            Ok(result) => result.is_none_or(|r| r.expires_at.is_some_and(|at| at <= now)),
            // Unreadable past its marker's time: it must not stop every purge.
            Err(err) => {
                tracing::warn!(%err, task = %id, "an expired result cannot be read; deleted");
                true
            }
        };
        Ok(expired && self.objects.delete_if(&key, &stored.version).await?)
    }
}

impl ResultStore for FileResultStore {
    fn put(&self, results: Vec<TaskResult>) -> BoxFuture<'_, StoreResult<()>> {
        Box::pin(async move {
            let results = winning_results(results);
            // The markers first: no result without one, whatever stops this call.
            futures_util::stream::iter(expiry_markers(&results))
                .map(|(key, bytes)| async move {
                    // Already there (a retried call): fine.
                    self.objects.create(&key, bytes).await.map(drop)
                })
                .buffer_unordered(IN_FLIGHT)
                .try_collect::<()>()
                .await?;
            // Side by side: each write waits on its own syncs, and the directory store
            // shares a sync among the writes that wait at once. One per task id, so no two
            // writes of a call race for one key.
            futures_util::stream::iter(results.into_iter().map(|result| self.put_one(result)))
                .buffer_unordered(IN_FLIGHT)
                .try_collect::<()>()
                .await
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
