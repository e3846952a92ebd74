use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use omniq_models::{
    AttemptError, LeaseToken, TaskError, TaskErrorKind, TaskId, TaskRecord, TaskSpec, TaskState,
};
use omniq_storage::{
    BoxFuture, CancelOutcome, Completion, CompletionOutcome, CompletionStatus, DequeueRequest,
    EnqueueOutcome, Lease, LeaseRef, QueueStats, Recovered, StoreError, StoreResult, TaskQuery,
    TaskQueue,
};
use tokio::sync::Notify;

use crate::lock::lock;

/// Claim order within a queue: priority (higher first), then run_at, then enqueue order.
type ReadyKey = (Reverse<i32>, DateTime<Utc>, u64, TaskId);

/// A task queue in memory.
#[derive(Debug, Default)]
pub struct MemoryTaskQueue {
    state: Mutex<State>,
    wakeup: Notify,
}

#[derive(Debug, Default)]
struct State {
    tasks: HashMap<TaskId, Entry>,
    ready: HashMap<String, BTreeSet<ReadyKey>>,
    delayed: BTreeSet<(DateTime<Utc>, u64, TaskId)>,
    leases: BTreeSet<(DateTime<Utc>, TaskId)>,
    unique: HashMap<String, TaskId>,
    next_seq: u64,
}

#[derive(Debug)]
struct Entry {
    record: TaskRecord,
    seq: u64,
    token: Option<LeaseToken>,
}

impl Entry {
    fn ready_key(&self) -> ReadyKey {
        let spec = &self.record.spec;
        (Reverse(spec.priority), spec.run_at, self.seq, spec.id)
    }
}

impl MemoryTaskQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    fn wake(&self) {
        // notify_waiters wakes every idle worker; notify_one leaves a permit for a worker
        // that is between an empty dequeue and its wait, so no wake-up is missed.
        self.wakeup.notify_waiters();
        self.wakeup.notify_one();
    }
}

impl State {
    fn insert(&mut self, spec: TaskSpec, now: DateTime<Utc>) -> EnqueueOutcome {
        if let Some(key) = &spec.unique_key {
            if let Some(existing) = self.unique.get(key) {
                return EnqueueOutcome::Duplicate {
                    existing: *existing,
                };
            }
            self.unique.insert(key.clone(), spec.id);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let id = spec.id;
        let state = if spec.run_at > now {
            TaskState::Scheduled
        } else {
            TaskState::Queued
        };
        let entry = Entry {
            record: TaskRecord {
                spec,
                state,
                attempts: 0,
                started_at: None,
                finished_at: None,
                lease_expires_at: None,
                worker_id: None,
                errors: Vec::new(),
                updated_at: now,
            },
            seq,
            token: None,
        };
        self.make_available(&entry);
        self.tasks.insert(id, entry);
        EnqueueOutcome::Created { id, state }
    }

    /// Files a Queued or Scheduled entry where claims will find it.
    fn make_available(&mut self, entry: &Entry) {
        let spec = &entry.record.spec;
        match entry.record.state {
            TaskState::Queued => {
                self.ready
                    .entry(spec.queue.clone())
                    .or_default()
                    .insert(entry.ready_key());
            }
            TaskState::Scheduled => {
                self.delayed.insert((spec.run_at, entry.seq, spec.id));
            }
            _ => {}
        }
    }

    fn promote_due(&mut self, now: DateTime<Utc>) {
        while let Some(&(run_at, _, id)) = self.delayed.first() {
            if run_at > now {
                break;
            }
            self.delayed.pop_first();
            if let Some(entry) = self.tasks.get_mut(&id) {
                entry.record.state = TaskState::Queued;
                let key = entry.ready_key();
                let queue = entry.record.spec.queue.clone();
                self.ready.entry(queue).or_default().insert(key);
            }
        }
    }

    fn finish(&mut self, id: TaskId, state: TaskState, now: DateTime<Utc>) {
        let Some(entry) = self.tasks.get_mut(&id) else {
            return;
        };
        entry.record.state = state;
        entry.record.finished_at = Some(now);
        entry.record.updated_at = now;
        entry.record.lease_expires_at = None;
        entry.token = None;
        if let Some(key) = &entry.record.spec.unique_key
            && self.unique.get(key) == Some(&id)
        {
            self.unique.remove(key);
        }
    }

    fn claim(&mut self, request: &DequeueRequest, now: DateTime<Utc>) -> Vec<Lease> {
        self.promote_due(now);
        let lease_for = chrono::Duration::from_std(request.lease).unwrap_or(chrono::Duration::MAX);
        let deadline = now
            .checked_add_signed(lease_for)
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        let mut leases = Vec::new();
        for queue in &request.queues {
            while leases.len() < request.limit {
                let Some(key) = self.ready.get_mut(queue).and_then(BTreeSet::pop_first) else {
                    break;
                };
                let id = key.3;
                let expired = self
                    .tasks
                    .get(&id)
                    .and_then(|e| e.record.spec.expires_at)
                    .is_some_and(|at| at <= now);
                if expired {
                    self.finish(id, TaskState::Expired, now);
                    continue;
                }
                let Some(entry) = self.tasks.get_mut(&id) else {
                    continue;
                };
                let token = LeaseToken::new();
                let record = &mut entry.record;
                record.state = TaskState::Running;
                record.attempts += 1;
                record.started_at = Some(now);
                record.lease_expires_at = Some(deadline);
                record.worker_id = Some(request.worker_id.clone());
                record.updated_at = now;
                entry.token = Some(token);
                leases.push(Lease {
                    spec: record.spec.clone(),
                    token,
                    attempt: record.attempts,
                    deadline,
                });
                self.leases.insert((deadline, id));
            }
        }
        leases
    }

    /// The entry if `lease` still holds it.
    fn held(&mut self, lease: &LeaseRef) -> Option<&mut Entry> {
        self.tasks
            .get_mut(&lease.task_id)
            .filter(|e| e.record.state == TaskState::Running && e.token == Some(lease.token))
    }

    fn complete(&mut self, completion: Completion, now: DateTime<Utc>) -> CompletionStatus {
        let id = completion.lease.task_id;
        let Some(entry) = self.held(&completion.lease) else {
            return CompletionStatus::LeaseLost;
        };
        if let Some(deadline) = entry.record.lease_expires_at.take() {
            self.leases.remove(&(deadline, id));
        }
        let Some(entry) = self.tasks.get_mut(&id) else {
            return CompletionStatus::LeaseLost;
        };
        let attempt = entry.record.attempts;
        match completion.outcome {
            CompletionOutcome::Succeeded => self.finish(id, TaskState::Succeeded, now),
            CompletionOutcome::Failed { error } => {
                entry.record.errors.push(AttemptError {
                    attempt,
                    at: now,
                    error,
                });
                self.finish(id, TaskState::Failed, now);
            }
            CompletionOutcome::Retry { run_at, error } => {
                entry.record.errors.push(AttemptError {
                    attempt,
                    at: now,
                    error,
                });
                entry.record.spec.run_at = run_at;
                entry.record.state = if run_at > now {
                    TaskState::Scheduled
                } else {
                    TaskState::Queued
                };
                self.requeue(id, now);
            }
            CompletionOutcome::Release => {
                entry.record.attempts = entry.record.attempts.saturating_sub(1);
                entry.record.state = TaskState::Queued;
                self.requeue(id, now);
            }
        }
        CompletionStatus::Applied
    }

    fn requeue(&mut self, id: TaskId, now: DateTime<Utc>) {
        let Some(entry) = self.tasks.remove(&id) else {
            return;
        };
        let mut entry = entry;
        entry.token = None;
        entry.record.lease_expires_at = None;
        entry.record.updated_at = now;
        self.make_available(&entry);
        self.tasks.insert(id, entry);
    }

    fn recover(&mut self, limit: usize, now: DateTime<Utc>) -> Vec<Recovered> {
        let mut recovered = Vec::new();
        while recovered.len() < limit {
            let Some(&(deadline, id)) = self.leases.first() else {
                break;
            };
            if deadline > now {
                break;
            }
            self.leases.pop_first();
            let Some(entry) = self.tasks.get_mut(&id) else {
                continue;
            };
            let record = &mut entry.record;
            record.lease_expires_at = None;
            record.errors.push(AttemptError {
                attempt: record.attempts,
                at: now,
                error: TaskError::with_kind(
                    TaskErrorKind::LeaseLost,
                    "lease expired: the worker stopped renewing it",
                    true,
                ),
            });
            let spent = record.attempts >= record.spec.max_attempts;
            let item = Recovered {
                task_id: id,
                task_name: record.spec.name.clone(),
                queue: record.spec.queue.clone(),
                attempts: record.attempts,
                state: if spent {
                    TaskState::Failed
                } else {
                    TaskState::Queued
                },
            };
            if spent {
                self.finish(id, TaskState::Failed, now);
            } else {
                record.state = TaskState::Queued;
                self.requeue(id, now);
            }
            recovered.push(item);
        }
        recovered
    }

    fn cancel(&mut self, id: TaskId, now: DateTime<Utc>) -> StoreResult<CancelOutcome> {
        let entry = self.tasks.get(&id).ok_or(StoreError::TaskNotFound(id))?;
        let state = entry.record.state;
        match state {
            TaskState::Queued => {
                let key = entry.ready_key();
                if let Some(ready) = self.ready.get_mut(&entry.record.spec.queue) {
                    ready.remove(&key);
                }
            }
            TaskState::Scheduled => {
                let key = (entry.record.spec.run_at, entry.seq, id);
                self.delayed.remove(&key);
            }
            TaskState::Blocked => {}
            TaskState::Running => return Ok(CancelOutcome::Requested),
            finished => return Ok(CancelOutcome::AlreadyFinished(finished)),
        }
        self.finish(id, TaskState::Cancelled, now);
        Ok(CancelOutcome::Cancelled)
    }
}

impl TaskQueue for MemoryTaskQueue {
    fn enqueue(&self, tasks: Vec<TaskSpec>) -> BoxFuture<'_, StoreResult<Vec<EnqueueOutcome>>> {
        let now = Utc::now();
        let outcomes: Vec<_> = {
            let mut state = lock(&self.state);
            tasks
                .into_iter()
                .map(|spec| state.insert(spec, now))
                .collect()
        };
        if !outcomes.is_empty() {
            self.wake();
        }
        Box::pin(async move { Ok(outcomes) })
    }

    fn dequeue(&self, request: DequeueRequest) -> BoxFuture<'_, StoreResult<Vec<Lease>>> {
        let leases = lock(&self.state).claim(&request, Utc::now());
        Box::pin(async move { Ok(leases) })
    }

    fn heartbeat(
        &self,
        leases: Vec<LeaseRef>,
        extend: Duration,
    ) -> BoxFuture<'_, StoreResult<Vec<bool>>> {
        let now = Utc::now();
        let extend = chrono::Duration::from_std(extend).unwrap_or(chrono::Duration::MAX);
        let deadline = now
            .checked_add_signed(extend)
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        let mut state = lock(&self.state);
        let held = leases
            .iter()
            .map(|lease| {
                let Some(entry) = state.held(lease) else {
                    return false;
                };
                let old = entry.record.lease_expires_at.replace(deadline);
                entry.record.updated_at = now;
                if let Some(old) = old {
                    state.leases.remove(&(old, lease.task_id));
                }
                state.leases.insert((deadline, lease.task_id));
                true
            })
            .collect();
        Box::pin(async move { Ok(held) })
    }

    fn complete(
        &self,
        completions: Vec<Completion>,
    ) -> BoxFuture<'_, StoreResult<Vec<CompletionStatus>>> {
        let now = Utc::now();
        let statuses: Vec<_> = {
            let mut state = lock(&self.state);
            completions
                .into_iter()
                .map(|completion| state.complete(completion, now))
                .collect()
        };
        // Retries and releases may have made work ready.
        self.wake();
        Box::pin(async move { Ok(statuses) })
    }

    fn recover_expired(&self, limit: usize) -> BoxFuture<'_, StoreResult<Vec<Recovered>>> {
        let recovered = lock(&self.state).recover(limit, Utc::now());
        if !recovered.is_empty() {
            self.wake();
        }
        Box::pin(async move { Ok(recovered) })
    }

    fn get(&self, id: TaskId) -> BoxFuture<'_, StoreResult<Option<TaskRecord>>> {
        let record = lock(&self.state).tasks.get(&id).map(|e| e.record.clone());
        Box::pin(async move { Ok(record) })
    }

    fn list(&self, query: TaskQuery) -> BoxFuture<'_, StoreResult<Vec<TaskRecord>>> {
        let limit = if query.limit == 0 { 100 } else { query.limit };
        let state = lock(&self.state);
        let mut matching: Vec<&Entry> = state
            .tasks
            .values()
            .filter(|e| {
                query
                    .queue
                    .as_ref()
                    .is_none_or(|q| &e.record.spec.queue == q)
            })
            .filter(|e| query.states.is_empty() || query.states.contains(&e.record.state))
            .collect();
        matching.sort_by_key(|e| Reverse(e.seq));
        let page = matching
            .into_iter()
            .skip(query.offset)
            .take(limit)
            .map(|e| e.record.clone())
            .collect();
        Box::pin(async move { Ok(page) })
    }

    fn stats(&self, queue: String) -> BoxFuture<'_, StoreResult<QueueStats>> {
        let state = lock(&self.state);
        let mut counts: HashMap<TaskState, u64> = HashMap::new();
        let mut oldest: Option<DateTime<Utc>> = None;
        for entry in state
            .tasks
            .values()
            .filter(|e| e.record.spec.queue == queue)
        {
            *counts.entry(entry.record.state).or_default() += 1;
            if entry.record.state == TaskState::Queued {
                let created = entry.record.spec.created_at;
                oldest = Some(oldest.map_or(created, |o| o.min(created)));
            }
        }
        let counts = TaskState::ALL
            .into_iter()
            .filter_map(|s| counts.get(&s).map(|n| (s, *n)))
            .collect();
        let stats = QueueStats {
            queue,
            counts,
            oldest_queued_at: oldest,
        };
        Box::pin(async move { Ok(stats) })
    }

    fn cancel(&self, id: TaskId) -> BoxFuture<'_, StoreResult<CancelOutcome>> {
        let outcome = lock(&self.state).cancel(id, Utc::now());
        Box::pin(async move { outcome })
    }

    fn wait_for_tasks(&self, _queues: &[String], timeout: Duration) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let _ = tokio::time::timeout(timeout, self.wakeup.notified()).await;
        })
    }
}
