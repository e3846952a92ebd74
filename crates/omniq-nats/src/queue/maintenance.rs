//! Work any worker does for all: recover lapsed leases, expire stale tasks; and what an
//! operator asks for: re-drive dead letters, purge finished tasks.

use std::collections::HashMap;
use std::ops::ControlFlow;

use async_nats::jetstream::consumer::DeliverPolicy;
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use omniq_models::{TaskId, TaskState};
use omniq_storage::{PurgeRequest, RedriveTarget, StateChange, StoreResult, effective_purge_limit};

use super::NatsTaskQueue;
use super::cas;
use super::index::{self, Entry};
use super::stored::expiry_reason;
use crate::error::nats_error;
use crate::scan::scan;

/// An index message, read.
struct Indexed {
    seq: u64,
    entry: Option<Entry>,
}

/// Lease entries judged at once in a recovery.
const JUDGED_AT_ONCE: usize = 32;

/// What to do with an index message after its task was looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Keep {
    /// Done with: delete it.
    Drop,
    /// Not yet due (its bucket is, the task's time within it is not): keep it.
    Keep,
}

impl NatsTaskQueue {
    /// The index subjects matching `filter` whose time bucket has begun by `now`, oldest
    /// first.
    async fn due_buckets(
        &self,
        filter: String,
        lease: bool,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<String>> {
        let mut info = self
            .backend
            .inner
            .index
            .info_with_subjects(filter)
            .await
            .map_err(nats_error)?;
        let mut due = Vec::new();
        while let Some(subject) = info.next().await {
            let (subject, count) = subject.map_err(nats_error)?;
            if let Some(start) = index::bucket_start(&subject, lease)
                && count > 0
                && start <= now
            {
                due.push((start, subject));
            }
        }
        due.sort();
        Ok(due.into_iter().map(|(_, subject)| subject).collect())
    }

    async fn read_bucket(&self, subject: String) -> StoreResult<Vec<Indexed>> {
        let mut read = Vec::new();
        scan(
            &self.backend.inner.client,
            &self.backend.inner.index,
            subject,
            DeliverPolicy::All,
            false,
            |message| {
                read.push(Indexed {
                    seq: message.seq,
                    entry: serde_json::from_slice(&message.payload).ok(),
                });
                ControlFlow::Continue(())
            },
        )
        .await?;
        Ok(read)
    }

    /// Removes the entries of an index bucket that are done with: the subject up to the
    /// last entry read, in one request, when every entry read is done with and the bucket
    /// was read to its end; else each one by one. A bucket holds the leases of every task
    /// claimed in its second: one request instead of thousands.
    pub(super) async fn finish_bucket(
        &self,
        subject: &str,
        verdicts: &[(u64, Keep)],
        read_to_end: bool,
    ) -> StoreResult<()> {
        let index = &self.backend.inner.index;
        let Some(last) = verdicts.iter().map(|(seq, _)| *seq).max() else {
            return Ok(());
        };
        if read_to_end && verdicts.iter().all(|(_, keep)| *keep == Keep::Drop) {
            // Up to the last one read: an entry published since stays.
            index
                .purge()
                .filter(subject)
                .sequence(last + 1)
                .await
                .map_err(nats_error)?;
            return Ok(());
        }
        let done: Vec<u64> = verdicts
            .iter()
            .filter(|(_, keep)| *keep == Keep::Drop)
            .map(|(seq, _)| *seq)
            .collect();
        futures_util::stream::iter(done)
            .map(|seq| async move { index.delete_message(seq).await.map_err(nats_error) })
            .buffer_unordered(32)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<StoreResult<Vec<bool>>>()?;
        Ok(())
    }

    pub(super) async fn recover(&self, limit: usize) -> StoreResult<Vec<StateChange>> {
        let now = self.server_now().await?;
        let mut changes = Vec::new();
        for subject in self
            .due_buckets(self.subjects().leases(), true, now)
            .await?
        {
            let entries = self.read_bucket(subject.clone()).await?;
            let mut verdicts = Vec::with_capacity(entries.len());
            let mut read_to_end = true;
            // A chunk of entries at a time, each judged at once.
            for chunk in entries.chunks(JUDGED_AT_ONCE) {
                if changes.len() >= limit {
                    read_to_end = false;
                    break;
                }
                let judged = futures_util::future::join_all(chunk.iter().map(|indexed| {
                    let subject = &subject;
                    async move {
                        let mut found = Vec::new();
                        let keep = match &indexed.entry {
                            Some(entry) => self.recover_one(entry, subject, now, &mut found).await,
                            None => Ok(Keep::Drop),
                        };
                        (indexed.seq, keep, found)
                    }
                }))
                .await;
                let mut failure = None;
                for (seq, keep, found) in judged {
                    changes.extend(found);
                    match keep {
                        Ok(keep) => verdicts.push((seq, keep)),
                        Err(err) => {
                            read_to_end = false;
                            failure = Some(err);
                        }
                    }
                }
                if let Some(err) = failure {
                    self.finish_bucket(&subject, &verdicts, false).await?;
                    return if changes.is_empty() {
                        Err(err)
                    } else {
                        Ok(changes)
                    };
                }
            }
            self.finish_bucket(&subject, &verdicts, read_to_end).await?;
            if changes.len() >= limit {
                break;
            }
        }
        // What a process killed mid-way left blocked, after the leases: a sweep that is slow
        // or failing must never hold up lease recovery. It is tried again next time.
        if let Err(err) = self.sweep_blocked(&mut changes).await {
            tracing::warn!(%err, "cannot sweep the blocked tasks yet");
        }
        Ok(changes)
    }

    async fn recover_one(
        &self,
        entry: &Entry,
        subject: &str,
        now: DateTime<Utc>,
        changes: &mut Vec<StateChange>,
    ) -> StoreResult<Keep> {
        let Some(token) = entry.token else {
            return Ok(Keep::Drop);
        };
        let Some(current) = cas::read(self.tasks(), entry.id).await? else {
            return Ok(Keep::Drop);
        };
        let task = &current.task;
        if !task.held_by(token) {
            return Ok(Keep::Drop);
        }
        match task.record.lease_expires_at {
            Some(deadline) if deadline > now => {
                // Renewed: the entry of its new deadline finds it; this one is done with,
                // unless that deadline falls in this very bucket.
                let own = self.subjects().lease(deadline);
                return Ok(if own == subject {
                    Keep::Keep
                } else {
                    Keep::Drop
                });
            }
            _ => {}
        }
        let recovered = self
            .update_filed(entry.id, |task| {
                let lapsed =
                    task.held_by(token) && task.record.lease_expires_at.is_none_or(|at| at <= now);
                if !lapsed {
                    return (None, false);
                }
                task.recover(now);
                (Some(task.change()), true)
            })
            .await?;
        if let Some(change) = recovered.flatten() {
            let ended = change.state.is_terminal();
            changes.push(change);
            if ended {
                self.settle_after(entry.id, self.clock.now(), changes).await;
            }
        }
        Ok(Keep::Drop)
    }

    pub(super) async fn expire(&self, limit: usize) -> StoreResult<Vec<StateChange>> {
        let now = self.clock.now();
        let mut changes = Vec::new();
        for subject in self
            .due_buckets(self.subjects().expiries(), false, now)
            .await?
        {
            let mut verdicts = Vec::new();
            let mut read_to_end = true;
            for indexed in self.read_bucket(subject.clone()).await? {
                if changes.len() >= limit {
                    read_to_end = false;
                    break;
                }
                let Some(entry) = indexed.entry else {
                    verdicts.push((indexed.seq, Keep::Drop));
                    continue;
                };
                let expired = cas::update(self.tasks(), entry.id, |task| {
                    let waiting = matches!(
                        task.record.state,
                        TaskState::Queued | TaskState::Scheduled | TaskState::Blocked
                    );
                    match task.record.spec.expires_at {
                        Some(at) if waiting && at <= now => {
                            task.finish(TaskState::Expired, Some(expiry_reason()), now);
                            ((Some(task.change()), Keep::Drop), true)
                        }
                        // Not due yet; or running, and back in the queue if its attempt
                        // fails: the entry is still needed.
                        Some(_) if waiting || task.record.state == TaskState::Running => {
                            ((None, Keep::Keep), false)
                        }
                        _ => ((None, Keep::Drop), false),
                    }
                })
                .await?;
                let (change, keep) = expired.unwrap_or((None, Keep::Drop));
                if let Some(change) = change {
                    changes.push(change);
                    self.settle_after(entry.id, now, &mut changes).await;
                }
                verdicts.push((indexed.seq, keep));
            }
            self.finish_bucket(&subject, &verdicts, read_to_end).await?;
        }
        Ok(changes)
    }

    pub(super) async fn redrive_failed(&self, target: RedriveTarget) -> StoreResult<Vec<TaskId>> {
        let candidates: Vec<TaskId> = match target {
            RedriveTarget::Tasks(ids) => ids,
            RedriveTarget::Queue(queue) => self.failed_ids(Some(&queue)).await?,
            RedriveTarget::All => self.failed_ids(None).await?,
        };
        let now = self.clock.now();
        let mut redriven = Vec::new();
        for id in candidates {
            let Some(current) = cas::read(self.tasks(), id).await? else {
                continue;
            };
            if current.task.record.state != TaskState::Failed {
                continue;
            }
            // Its unique key back, unless another live task holds it now.
            if let Some(key) = &current.task.record.spec.unique_key
                && self.retake_unique(key, id, now).await?.is_some()
            {
                continue;
            }
            let done = self
                .update_filed(id, |task| {
                    if task.record.state != TaskState::Failed {
                        return (false, false);
                    }
                    task.redrive(now);
                    (true, true)
                })
                .await?;
            if done == Some(true) {
                redriven.push(id);
            }
        }
        redriven.sort();
        Ok(redriven)
    }

    /// The dead letters (of `queue`, or of every queue), read from their summaries.
    async fn failed_ids(&self, queue: Option<&str>) -> StoreResult<Vec<TaskId>> {
        let mut failed: HashMap<String, TaskId> = HashMap::new();
        self.visit_summaries(|key, summary| match summary {
            Some(summary)
                if summary.state() == TaskState::Failed
                    && queue.is_none_or(|q| summary.queue() == q) =>
            {
                failed.insert(key, summary.id());
            }
            _ => {
                failed.remove(&key);
            }
        })
        .await?;
        Ok(failed.into_values().collect())
    }

    pub(super) async fn purge_finished(&self, request: PurgeRequest) -> StoreResult<u64> {
        let states = request.finished_states()?;
        // The matching tasks only, by key (see `visit_summaries`).
        let mut matching: HashMap<String, (Option<DateTime<Utc>>, TaskId)> = HashMap::new();
        self.visit_summaries(|key, summary| {
            let wanted = summary.filter(|summary| {
                states.contains(&summary.state())
                    && request
                        .queue
                        .as_deref()
                        .is_none_or(|q| summary.queue() == q)
                    && request
                        .finished_before
                        .is_none_or(|before| summary.finished_at().is_some_and(|at| at < before))
            });
            match wanted {
                Some(summary) => {
                    matching.insert(key, (summary.finished_at(), summary.id()));
                }
                None => {
                    matching.remove(&key);
                }
            }
        })
        .await?;
        let mut doomed: Vec<(Option<DateTime<Utc>>, TaskId)> = matching.into_values().collect();
        // Oldest finish first, like the stores that purge through an index on it.
        doomed.sort_unstable();
        doomed.truncate(effective_purge_limit(request.limit));
        let mut purged = 0;
        for (_, id) in doomed {
            let Some(current) = cas::read(self.tasks(), id).await? else {
                continue;
            };
            // Still as it matched: a task re-driven and finished again since stays.
            let record = &current.task.record;
            let still = states.contains(&record.state)
                && request
                    .finished_before
                    .is_none_or(|before| record.finished_at.is_some_and(|at| at < before));
            if !still {
                continue;
            }
            // Up to the revision read: a task changed since (re-driven) stays.
            self.tasks()
                .stream
                .purge()
                .filter(format!("{}{}", self.tasks().prefix, cas::task_key(id)))
                .sequence(current.revision + 1)
                .await
                .map_err(nats_error)?;
            purged += 1;
        }
        Ok(purged)
    }
}
