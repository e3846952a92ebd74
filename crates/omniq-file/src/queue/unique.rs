//! Unique keys: one object per unique key, naming the newest task that took it, changed
//! only from the version read.
//!
//! The key is not released when its task finishes: a claimant reads the holder's state
//! and takes the key over when the holder has finished and the dedupe window (if any) has
//! passed. A holder that is not stored (its enqueue was killed between taking the key and
//! writing the task) frees the key once [`HOLDER_GRACE`] has passed.

use std::collections::HashSet;

use bytes::Bytes;
use chrono::{DateTime, TimeDelta, Utc};
use omniq_models::{TaskId, TaskSpec};
use omniq_storage::{StoreError, StoreResult};
use serde::{Deserialize, Serialize};

use super::tasks::{self, CAS_ROUNDS};
use super::{FileTaskQueue, keys};
use crate::error::BACKEND;

/// How long a key whose holder is not stored yet stays taken: as long as a marker whose
/// task is not stored yet (a large batch over a slow bucket takes a while between its
/// keys and its tasks; clocks may be off by a minute).
const HOLDER_GRACE: TimeDelta = super::ORPHAN_AGE;

/// Who holds a unique key.
#[derive(Debug, Serialize, Deserialize)]
struct Holder {
    id: TaskId,
    taken_at: DateTime<Utc>,
}

/// Whether a claimant may take a key from its holder.
enum Verdict {
    Free,
    HeldBy(TaskId),
}

impl FileTaskQueue {
    /// Takes `spec`'s unique key for it, or names the task that holds it. `None`: taken
    /// (or `spec` has no key, or already holds it).
    pub(super) async fn take_unique(
        &self,
        spec: &TaskSpec,
        now: DateTime<Utc>,
        batch: &HashSet<TaskId>,
    ) -> StoreResult<Option<TaskId>> {
        let Some(key) = &spec.unique_key else {
            return Ok(None);
        };
        let window = spec
            .unique_for
            .and_then(|w| TimeDelta::from_std(w).ok())
            .unwrap_or(TimeDelta::zero());
        self.claim_key(key, spec.id, now, batch, |holder, holder_live| {
            if holder_live || holder.taken_at + window > now {
                Verdict::HeldBy(holder.id)
            } else {
                Verdict::Free
            }
        })
        .await
    }

    /// Takes `key` back for a re-driven task `id` unless another live task holds it.
    /// Returns the live holder, if any.
    pub(super) async fn retake_unique(
        &self,
        key: &str,
        id: TaskId,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<TaskId>> {
        self.claim_key(key, id, now, &HashSet::new(), |holder, holder_live| {
            if holder_live {
                Verdict::HeldBy(holder.id)
            } else {
                Verdict::Free
            }
        })
        .await
    }

    async fn claim_key<F>(
        &self,
        key: &str,
        id: TaskId,
        now: DateTime<Utc>,
        batch: &HashSet<TaskId>,
        verdict: F,
    ) -> StoreResult<Option<TaskId>>
    where
        F: Fn(&Holder, bool) -> Verdict,
    {
        let stored_key = keys::unique(key);
        let mine = serde_json::to_vec(&Holder { id, taken_at: now })
            .map(Bytes::from)
            .map_err(|e| StoreError::backend(BACKEND, e))?;
        for _ in 0..CAS_ROUNDS {
            let current = self
                .objects()
                .get(&stored_key)
                .await?
                // A tombstone is no holder.
                .filter(|stored| !stored.bytes.is_empty());
            let Some(current) = current else {
                match self.objects().create(&stored_key, mine.clone()).await? {
                    Some(_) => return Ok(None),
                    None => continue,
                }
            };
            if let Ok(holder) = serde_json::from_slice::<Holder>(&current.bytes) {
                if holder.id == id {
                    return Ok(None);
                }
                let live = match tasks::read(self.objects(), holder.id).await? {
                    Some(read) => !read.task.record.state.is_terminal(),
                    // Taken earlier in this very batch, stored after the keys.
                    None if batch.contains(&holder.id) => true,
                    // Its enqueue may still be storing it, or died before: a duplicate of
                    // a task that may never exist would lose this one. Retried.
                    None if now - holder.taken_at < HOLDER_GRACE => {
                        return Err(StoreError::unavailable(
                            BACKEND,
                            format!(
                                "unique key `{key}` is taken by task {}, not stored yet",
                                holder.id
                            ),
                        ));
                    }
                    None => false,
                };
                if let Verdict::HeldBy(holder) = verdict(&holder, live) {
                    return Ok(Some(holder));
                }
            } else {
                // An unreadable holder cannot hold the key.
                tracing::warn!(key, "a unique key's holder cannot be read; taken over");
            }
            if self
                .objects()
                .update(&stored_key, mine.clone(), &current.version)
                .await?
                .is_some()
            {
                return Ok(None);
            }
        }
        Err(StoreError::unavailable(
            BACKEND,
            format!("unique key `{key}` kept changing under {CAS_ROUNDS} writes"),
        ))
    }
}
