//! Recovery of lapsed leases, expiry, dead-letter re-drive and purges.

use chrono::{DateTime, Utc};
use omniq_models::{TaskId, TaskState};
use omniq_storage::kv_task::expiry_reason;
use omniq_storage::{PurgeRequest, RedriveTarget, StateChange, StoreResult, effective_purge_limit};

use super::keys::{self, LeaseMarker};
use super::tasks::Found;
use super::{FileTaskQueue, tasks};

/// Expiry markers listed at once.
const EXPIRY_PAGE: usize = 256;

/// Markers judged at once.
const JUDGED_AT_ONCE: usize = 32;

impl FileTaskQueue {
    pub(super) async fn recover(&self, limit: usize) -> StoreResult<Vec<StateChange>> {
        let now = self.clock.now();
        let store_now = self.objects().now().await?;
        let markers: Vec<LeaseMarker> = self
            .objects()
            .list(keys::LEASES)
            .await?
            .iter()
            .filter_map(|key| LeaseMarker::parse(key))
            .collect();
        let mut changes = Vec::new();
        for chunk in markers.chunks(JUDGED_AT_ONCE) {
            if changes.len() >= limit {
                break;
            }
            let judged = futures_util::future::join_all(
                chunk
                    .iter()
                    .map(|marker| self.judge_lease(marker, now, store_now)),
            )
            .await;
            for found in judged {
                changes.extend(found?);
            }
        }
        self.sweep_blocked(&mut changes).await?;
        Ok(changes)
    }

    /// Recovers the task of one lease marker if its lease lapsed, and drops the marker
    /// once it files nothing.
    async fn judge_lease(
        &self,
        marker: &LeaseMarker,
        now: DateTime<Utc>,
        store_now: DateTime<Utc>,
    ) -> StoreResult<Vec<StateChange>> {
        let mut changes = Vec::new();
        let Some(body) = self.objects().get(&marker.key).await? else {
            return Ok(changes);
        };
        let write = keys::read_lease_body(&body.bytes, marker.token).map_or(0, |(write, _)| write);
        let read = match tasks::find(self.objects(), marker.id).await? {
            Found::Task(read) => *read,
            // Left for the release that can read it.
            Found::Unreadable => return Ok(changes),
            // Claims take stored tasks only, and purges finished ones: a lease of a task
            // that is gone files nothing.
            Found::Absent => {
                self.objects().delete(&marker.key).await?;
                return Ok(changes);
            }
        };
        let task = &read.task;
        if task.held_by(marker.token) {
            if task
                .record
                .lease_expires_at
                .is_some_and(|deadline| deadline < store_now)
            {
                let token = marker.token;
                let recovered = self
                    .update_filed(marker.id, |task| {
                        let lapsed = task.held_by(token)
                            && task
                                .record
                                .lease_expires_at
                                .is_some_and(|deadline| deadline < store_now);
                        if lapsed {
                            task.recover(now);
                        }
                        (lapsed, lapsed)
                    })
                    .await?;
                if let Some((true, task)) = recovered {
                    self.objects().delete(&marker.key).await?;
                    changes.push(task.change());
                    if task.record.state.is_terminal() {
                        self.settle_after(marker.id, now, &mut changes).await;
                    }
                }
            }
        } else if task.writes < write {
            self.file_again_if_queued(task).await?;
            // The claim that wrote it may still be on its way.
            let token = marker.token;
            self.drop_if_orphan(&marker.key, marker.id, |task| {
                task.is_some_and(|t| t.writes < write && !t.held_by(token))
            })
            .await?;
        } else {
            self.file_again_if_queued(task).await?;
            self.objects().delete(&marker.key).await?;
        }
        Ok(changes)
    }

    /// Files `task` again (a ready marker for its current write) if it is queued, before
    /// a lease marker that does not hold it is dropped. A claim's write is not synced
    /// (see `claim`): a crash of the machine can take it back and keep the deletion of
    /// the ready marker that came after it, and the task's lease marker, synced before
    /// the claim, is then all that finds it. A marker there already stays as it is.
    async fn file_again_if_queued(&self, task: &omniq_storage::kv_task::KvTask) -> StoreResult<()> {
        if matches!(task.record.state, TaskState::Queued | TaskState::Scheduled) {
            let key = keys::ready_of_task(task, task.writes);
            self.objects().create(&key, keys::stamp(Utc::now())).await?;
        }
        Ok(())
    }

    pub(super) async fn expire(&self, limit: usize) -> StoreResult<Vec<StateChange>> {
        let now = self.clock.now();
        // Markers sort by expiry: the due ones come first.
        let mut due: Vec<(String, TaskId)> = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self
                .objects()
                .list_page(keys::EXPIRY, after.as_deref(), EXPIRY_PAGE)
                .await?;
            let full = page.len() == EXPIRY_PAGE;
            after = page.last().cloned();
            let mut reached_later = false;
            for key in page {
                let Some((at, id)) = keys::parse_expiry(&key) else {
                    continue;
                };
                if !keys::expiry_due_by(at, now) {
                    reached_later = true;
                    break;
                }
                due.push((key, id));
            }
            // Enough for this call (some may have started meanwhile): the rest next time.
            if reached_later || !full || due.len() >= limit.saturating_mul(2) {
                break;
            }
        }
        let mut changes = Vec::new();
        for chunk in due.chunks(JUDGED_AT_ONCE) {
            if changes.len() >= limit {
                break;
            }
            let judged = futures_util::future::join_all(
                chunk
                    .iter()
                    .map(|(key, id)| self.judge_expiry(key, *id, now)),
            )
            .await;
            for found in judged {
                changes.extend(found?);
            }
        }
        Ok(changes)
    }

    /// Expires the task of one due expiry marker if it has not started.
    async fn judge_expiry(
        &self,
        key: &str,
        id: TaskId,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<StateChange>> {
        let mut changes = Vec::new();
        let read = match tasks::find(self.objects(), id).await? {
            Found::Task(read) => *read,
            Found::Unreadable => return Ok(changes),
            Found::Absent => {
                // Its enqueue may still be writing it.
                self.drop_if_orphan(key, id, |t| t.is_none()).await?;
                return Ok(changes);
            }
        };
        let files_this_expiry = read
            .task
            .record
            .spec
            .expires_at
            .is_some_and(|at| keys::expiry(at, id) == keys::expiry_key_of(key));
        if !files_this_expiry {
            // A duplicate enqueue's, naming another expiry: not this task's.
            self.objects().delete(key).await?;
            return Ok(changes);
        }
        match read.task.record.state {
            // Running: a retry may queue it again, still past its TTL.
            TaskState::Running => {}
            state if state.is_terminal() => self.objects().delete(key).await?,
            _ => {
                let expired = self
                    .update_filed(id, |task| {
                        let unstarted = matches!(
                            task.record.state,
                            TaskState::Queued | TaskState::Scheduled | TaskState::Blocked
                        );
                        let expired =
                            unstarted && task.record.spec.expires_at.is_some_and(|at| at <= now);
                        if expired {
                            task.finish(TaskState::Expired, Some(expiry_reason()), now);
                        }
                        (expired, expired)
                    })
                    .await?;
                if let Some((true, task)) = expired {
                    self.objects().delete(key).await?;
                    changes.push(task.change());
                    self.settle_after(id, now, &mut changes).await;
                }
            }
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
            let Some(current) = tasks::read(self.objects(), id).await? else {
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
            if matches!(done, Some((true, _))) {
                redriven.push(id);
            }
        }
        redriven.sort();
        Ok(redriven)
    }

    /// The dead letters (of `queue`, or of every queue).
    async fn failed_ids(&self, queue: Option<&str>) -> StoreResult<Vec<TaskId>> {
        Ok(self
            .scan_tasks()
            .await?
            .into_iter()
            .filter(|read| {
                let record = &read.task.record;
                record.state == TaskState::Failed && queue.is_none_or(|q| record.spec.queue == q)
            })
            .map(|read| read.task.record.spec.id)
            .collect())
    }

    pub(super) async fn purge_finished(&self, request: PurgeRequest) -> StoreResult<u64> {
        let states = request.finished_states()?;
        let matches = |record: &omniq_models::TaskRecord| {
            states.contains(&record.state)
                && request
                    .queue
                    .as_deref()
                    .is_none_or(|q| record.spec.queue == q)
                && request
                    .finished_before
                    .is_none_or(|before| record.finished_at.is_some_and(|at| at < before))
        };
        let mut doomed: Vec<tasks::Read> = self
            .scan_tasks()
            .await?
            .into_iter()
            .filter(|read| matches(&read.task.record))
            .collect();
        // Oldest finish first, like the stores that purge through an index on it.
        doomed
            .sort_unstable_by_key(|read| (read.task.record.finished_at, read.task.record.spec.id));
        doomed.truncate(effective_purge_limit(request.limit));
        let deleted = futures_util::future::try_join_all(doomed.iter().map(|read| async move {
            // Only as read: a task re-driven since stays.
            self.objects()
                .delete_if(&keys::task(read.task.record.spec.id), &read.version)
                .await
        }))
        .await?;
        Ok(deleted.into_iter().filter(|deleted| *deleted).count() as u64)
    }

    /// Every stored task that can be read, with its version.
    pub(super) async fn scan_tasks(&self) -> StoreResult<Vec<tasks::Read>> {
        let keys = self.objects().list(keys::TASKS).await?;
        let mut all = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(256) {
            let read = futures_util::future::try_join_all(chunk.iter().filter_map(|key| {
                let id = keys::task_id_of(key)?;
                Some(async move { tasks::read(self.objects(), id).await })
            }))
            .await?;
            all.extend(read.into_iter().flatten());
        }
        Ok(all)
    }
}
