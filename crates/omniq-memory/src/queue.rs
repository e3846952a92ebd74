use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use omniq_models::{
    AttemptError, DependencyVerdict, LeaseToken, TaskError, TaskErrorKind, TaskId, TaskRecord,
    TaskSpec, TaskState,
};
use omniq_storage::CANCELLED_WHILE_RUNNING;
use omniq_storage::{
    BatchAliases, BoxFuture, CancelOutcome, Cancellation, Completed, Completion, CompletionOutcome,
    CompletionStatus, DequeueRequest, EnqueueOutcome, Lease, LeaseRef, LeaseStatus, PurgeRequest,
    QueueStats, RedriveTarget, StateChange, StoreError, StoreResult, TaskQuery, TaskQueue,
    effective_purge_limit,
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
    /// Boxed: the map's slots stay small, so its growth by doubling costs pointers, not
    /// whole records.
    tasks: HashMap<TaskId, Box<Entry>>,
    ready: HashMap<String, BTreeSet<ReadyKey>>,
    delayed: BTreeSet<(DateTime<Utc>, u64, TaskId)>,
    leases: BTreeSet<(DateTime<Utc>, TaskId)>,
    /// Not-yet-started tasks with a TTL, by expiry; entries go stale when a task starts.
    expiries: BTreeSet<(DateTime<Utc>, TaskId)>,
    /// Dependents of each parent.
    children: HashMap<TaskId, Vec<TaskId>>,
    /// Unique keys of live tasks.
    unique: HashMap<String, TaskId>,
    /// The newest task of each unique key, live or not, for dedupe windows.
    unique_history: HashMap<String, (TaskId, DateTime<Utc>)>,
    /// Changes made inside claims (expiries) that the next `expire_due` reports.
    backlog: Vec<StateChange>,
    next_seq: u64,
    /// Paused queues.
    paused: std::collections::BTreeSet<String>,
    /// Limiter states by key, with the version each was written at.
    limiters: HashMap<String, (u64, Vec<u8>)>,
}

#[derive(Debug)]
struct Entry {
    record: TaskRecord,
    seq: u64,
    token: Option<LeaseToken>,
    /// The lease whose completion was applied last: a re-send of it is known as such.
    completed: Option<LeaseToken>,
}

impl Entry {
    fn ready_key(&self) -> ReadyKey {
        let spec = &self.record.spec;
        (Reverse(spec.priority), spec.run_at, self.seq, spec.id)
    }

    fn change(&self) -> StateChange {
        StateChange::new(
            self.record.spec.id,
            self.record.spec.name.clone(),
            self.record.spec.queue.clone(),
            self.record.attempts,
            self.record.state,
            self.record.reason.clone(),
        )
    }
}

fn ready_state(run_at: DateTime<Utc>, now: DateTime<Utc>) -> TaskState {
    if run_at > now {
        TaskState::Scheduled
    } else {
        TaskState::Queued
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
    fn duplicate_of(&self, spec: &TaskSpec, now: DateTime<Utc>) -> Option<TaskId> {
        // The same spec sent again.
        if self.tasks.contains_key(&spec.id) {
            return Some(spec.id);
        }
        let key = spec.unique_key.as_ref()?;
        if let Some(live) = self.unique.get(key) {
            return Some(*live);
        }
        let window = chrono::Duration::from_std(spec.unique_for?).ok()?;
        let (id, created) = self.unique_history.get(key)?;
        (*created + window > now).then_some(*id)
    }

    fn enqueue(
        &mut self,
        tasks: Vec<TaskSpec>,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<EnqueueOutcome>> {
        // Check every parent before storing anything: a batch is all or nothing.
        let mut batch_ids = HashSet::new();
        for spec in &tasks {
            for parent in &spec.depends_on {
                if !self.tasks.contains_key(parent) && !batch_ids.contains(parent) {
                    return Err(StoreError::UnknownParent(*parent));
                }
            }
            batch_ids.insert(spec.id);
        }
        let mut aliases = BatchAliases::default();
        Ok(tasks
            .into_iter()
            .map(|mut spec| {
                aliases.resolve(&mut spec);
                let id = spec.id;
                let outcome = self.insert(spec, now);
                aliases.record(id, &outcome);
                outcome
            })
            .collect())
    }

    fn insert(&mut self, spec: TaskSpec, now: DateTime<Utc>) -> EnqueueOutcome {
        if let Some(existing) = self.duplicate_of(&spec, now) {
            return EnqueueOutcome::Duplicate { existing };
        }
        if let Some(key) = &spec.unique_key {
            self.unique.insert(key.clone(), spec.id);
            self.unique_history.insert(key.clone(), (spec.id, now));
        }
        let id = spec.id;
        let parents: Vec<TaskState> = spec
            .depends_on
            .iter()
            .filter_map(|p| self.tasks.get(p).map(|e| e.record.state))
            .collect();
        let verdict = if spec.depends_on.is_empty() {
            DependencyVerdict::Run
        } else {
            spec.run_when.verdict(&parents)
        };
        for parent in &spec.depends_on {
            self.children.entry(*parent).or_default().push(id);
        }
        let (state, reason) = match verdict {
            DependencyVerdict::Run => (ready_state(spec.run_at, now), None),
            DependencyVerdict::Wait => (TaskState::Blocked, None),
            DependencyVerdict::Cancel => (
                TaskState::Cancelled,
                Some("its parents had already settled against it".to_owned()),
            ),
        };
        if let Some(expires) = spec.expires_at {
            self.expiries.insert((expires, id));
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let entry = Box::new(Entry {
            record: {
                let mut record = TaskRecord::new(spec, state);
                record.finished_at = state.is_terminal().then_some(now);
                record.reason = reason;
                record.updated_at = now;
                record
            },
            seq,
            token: None,
            completed: None,
        });
        self.make_available(&entry);
        self.tasks.insert(id, entry);
        if state.is_terminal() {
            self.release_unique(id);
        }
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

    /// Takes an entry out of the ready or delayed set.
    fn make_unavailable(&mut self, id: TaskId) {
        let Some(entry) = self.tasks.get(&id) else {
            return;
        };
        match entry.record.state {
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

    fn release_unique(&mut self, id: TaskId) {
        let Some(entry) = self.tasks.get(&id) else {
            return;
        };
        if let Some(key) = &entry.record.spec.unique_key
            && self.unique.get(key) == Some(&id)
        {
            self.unique.remove(key);
        }
    }

    /// Ends a task in a terminal state and settles its dependents, recording every change
    /// made to a dependent in `changes`.
    fn finish(
        &mut self,
        id: TaskId,
        state: TaskState,
        reason: Option<String>,
        now: DateTime<Utc>,
        changes: &mut Vec<StateChange>,
    ) {
        if let Some(entry) = self.tasks.get_mut(&id) {
            let record = &mut entry.record;
            record.state = state;
            record.finished_at = Some(now);
            record.updated_at = now;
            record.lease_expires_at = None;
            // A reason given when the cancel was requested wins over the worker's.
            record.reason = match state {
                TaskState::Cancelled | TaskState::Expired => record.reason.take().or(reason),
                _ => None,
            };
            entry.token = None;
        }
        self.release_unique(id);
        self.settle_dependents(id, now, changes);
    }

    /// Unblocks or cancels the blocked dependents of a task that just finished, and in
    /// turn the dependents of those it cancels.
    fn settle_dependents(
        &mut self,
        parent: TaskId,
        now: DateTime<Utc>,
        changes: &mut Vec<StateChange>,
    ) {
        let mut finished = vec![parent];
        while let Some(parent) = finished.pop() {
            let children = self.children.get(&parent).cloned().unwrap_or_default();
            for child in children {
                let Some(entry) = self.tasks.get(&child) else {
                    continue;
                };
                if entry.record.state != TaskState::Blocked {
                    continue;
                }
                let parents: Vec<TaskState> = entry
                    .record
                    .spec
                    .depends_on
                    .iter()
                    .filter_map(|p| self.tasks.get(p).map(|e| e.record.state))
                    .collect();
                match entry.record.spec.run_when.verdict(&parents) {
                    DependencyVerdict::Wait => {}
                    DependencyVerdict::Run => {
                        let Some(entry) = self.tasks.get_mut(&child) else {
                            continue;
                        };
                        entry.record.state = ready_state(entry.record.spec.run_at, now);
                        entry.record.updated_at = now;
                        let change = entry.change();
                        let entry = self.tasks.remove(&child);
                        if let Some(entry) = entry {
                            self.make_available(&entry);
                            self.tasks.insert(child, entry);
                        }
                        changes.push(change);
                    }
                    DependencyVerdict::Cancel => {
                        let reason = format!("dependency {parent} did not settle as required");
                        if let Some(entry) = self.tasks.get_mut(&child) {
                            let record = &mut entry.record;
                            record.state = TaskState::Cancelled;
                            record.finished_at = Some(now);
                            record.updated_at = now;
                            record.reason = Some(reason);
                            changes.push(entry.change());
                        }
                        self.release_unique(child);
                        finished.push(child);
                    }
                }
            }
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
                let Some(key) = self.take_ready(queue, request, now) else {
                    break;
                };
                let id = key.3;
                let expired = self
                    .tasks
                    .get(&id)
                    .and_then(|e| e.record.spec.expires_at)
                    .is_some_and(|at| at <= now);
                if expired {
                    let mut changes = Vec::new();
                    self.finish(
                        id,
                        TaskState::Expired,
                        Some(expiry_reason()),
                        now,
                        &mut changes,
                    );
                    if let Some(entry) = self.tasks.get(&id) {
                        self.backlog.push(entry.change());
                    }
                    self.backlog.extend(changes);
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
                leases.push(Lease::new(
                    record.spec.clone(),
                    token,
                    record.attempts,
                    deadline,
                ));
                self.leases.insert((deadline, id));
            }
        }
        leases
    }

    /// The first ready task of `queue` the request takes (by its name filter; an expired
    /// one always, to be marked), removed from the ready set.
    fn take_ready(
        &mut self,
        queue: &str,
        request: &DequeueRequest,
        now: DateTime<Utc>,
    ) -> Option<ReadyKey> {
        let ready = self.ready.get_mut(queue)?;
        if request.names.is_none() {
            return ready.pop_first();
        }
        let tasks = &self.tasks;
        let key = *ready.iter().find(|key| {
            tasks.get(&key.3).is_none_or(|entry| {
                let spec = &entry.record.spec;
                spec.expires_at.is_some_and(|at| at <= now)
                    || request.takes(&spec.name, spec.run_at, now)
            })
        })?;
        ready.remove(&key);
        Some(key)
    }

    /// Extends a held lease to `deadline`, storing `progress` on its task when given, in
    /// one step: a lease not held changes nothing.
    fn renew(
        &mut self,
        lease: &LeaseRef,
        deadline: DateTime<Utc>,
        now: DateTime<Utc>,
        progress: Option<serde_json::Value>,
    ) -> LeaseStatus {
        let Some(entry) = self.held(lease) else {
            return LeaseStatus::Lost;
        };
        let old = entry.record.lease_expires_at.replace(deadline);
        entry.record.updated_at = now;
        if progress.is_some() {
            entry.record.progress = progress;
        }
        let status = if entry.record.cancel_requested {
            LeaseStatus::CancelRequested
        } else {
            LeaseStatus::Held
        };
        if let Some(old) = old {
            self.leases.remove(&(old, lease.task_id));
        }
        self.leases.insert((deadline, lease.task_id));
        status
    }

    /// The entry if `lease` still holds it.
    fn held(&mut self, lease: &LeaseRef) -> Option<&mut Entry> {
        self.tasks
            .get_mut(&lease.task_id)
            .filter(|e| e.record.state == TaskState::Running && e.token == Some(lease.token))
            .map(|e| &mut **e)
    }

    fn complete(
        &mut self,
        completion: Completion,
        now: DateTime<Utc>,
        changes: &mut Vec<StateChange>,
    ) -> CompletionStatus {
        let id = completion.lease.task_id;
        let Some(entry) = self.held(&completion.lease) else {
            // This lease's completion is in already (a re-send after a lost reply): applied,
            // nothing changes.
            let resent = self.tasks.get(&id).is_some_and(|e| {
                e.record.state != TaskState::Running && e.completed == Some(completion.lease.token)
            });
            return if resent {
                CompletionStatus::Applied
            } else {
                CompletionStatus::LeaseLost
            };
        };
        entry.completed = Some(completion.lease.token);
        if let Some(deadline) = entry.record.lease_expires_at.take() {
            self.leases.remove(&(deadline, id));
        }
        let Some(entry) = self.tasks.get_mut(&id) else {
            return CompletionStatus::LeaseLost;
        };
        let attempt = entry.record.attempts;
        // A retry, release or snooze of a task whose cancel was requested while it ran ends it
        // Cancelled instead: the request must not be lost with the attempt.
        let outcome = match completion.outcome {
            CompletionOutcome::Retry { .. }
            | CompletionOutcome::Release
            | CompletionOutcome::Snooze { .. }
                if entry.record.cancel_requested =>
            {
                CompletionOutcome::Cancelled {
                    reason: CANCELLED_WHILE_RUNNING.to_owned(),
                }
            }
            other => other,
        };
        let push_error = |entry: &mut Entry, error: TaskError| {
            entry
                .record
                .errors
                .push(AttemptError::new(attempt, now, error));
        };
        match outcome {
            CompletionOutcome::Succeeded => {
                self.finish(id, TaskState::Succeeded, None, now, changes);
            }
            CompletionOutcome::Failed { error } => {
                push_error(entry, error);
                self.finish(id, TaskState::Failed, None, now, changes);
            }
            CompletionOutcome::Cancelled { reason } => {
                self.finish(id, TaskState::Cancelled, Some(reason), now, changes);
            }
            CompletionOutcome::Retry { run_at, error } => {
                push_error(entry, error);
                entry.record.spec.run_at = run_at;
                entry.record.state = ready_state(run_at, now);
                self.requeue(id, now);
            }
            CompletionOutcome::Release => {
                entry.record.attempts = entry.record.attempts.saturating_sub(1);
                entry.record.state = TaskState::Queued;
                self.requeue(id, now);
            }
            CompletionOutcome::Snooze { run_at } => {
                entry.record.attempts = entry.record.attempts.saturating_sub(1);
                entry.record.spec.run_at = run_at;
                entry.record.state = ready_state(run_at, now);
                self.requeue(id, now);
            }
        }
        CompletionStatus::Applied
    }

    fn requeue(&mut self, id: TaskId, now: DateTime<Utc>) {
        let Some(mut entry) = self.tasks.remove(&id) else {
            return;
        };
        entry.token = None;
        entry.record.lease_expires_at = None;
        entry.record.cancel_requested = false;
        entry.record.updated_at = now;
        self.make_available(&entry);
        self.tasks.insert(id, entry);
    }

    fn recover(&mut self, limit: usize, now: DateTime<Utc>) -> Vec<StateChange> {
        let mut changes = Vec::new();
        let mut recovered = 0;
        while recovered < limit {
            let Some(&(deadline, id)) = self.leases.first() else {
                break;
            };
            if deadline > now {
                break;
            }
            self.leases.pop_first();
            recovered += 1;
            let Some(entry) = self.tasks.get_mut(&id) else {
                continue;
            };
            let record = &mut entry.record;
            record.lease_expires_at = None;
            record.errors.push(AttemptError::new(
                record.attempts,
                now,
                TaskError::with_kind(
                    TaskErrorKind::LeaseLost,
                    "lease expired: the worker stopped renewing it",
                    true,
                ),
            ));
            // A task whose cancel was requested while it ran ends Cancelled: recovering it
            // must not run it again.
            if record.cancel_requested {
                let mut dependents = Vec::new();
                let reason = Some(CANCELLED_WHILE_RUNNING.to_owned());
                self.finish(id, TaskState::Cancelled, reason, now, &mut dependents);
                changes.extend(self.tasks.get(&id).map(|e| e.change()));
                changes.extend(dependents);
            } else if record.attempts >= record.spec.max_attempts {
                let mut dependents = Vec::new();
                self.finish(id, TaskState::Failed, None, now, &mut dependents);
                changes.extend(self.tasks.get(&id).map(|e| e.change()));
                changes.extend(dependents);
            } else {
                record.state = TaskState::Queued;
                changes.push(entry.change());
                self.requeue(id, now);
            }
        }
        changes
    }

    fn expire_due(&mut self, limit: usize, now: DateTime<Utc>) -> Vec<StateChange> {
        let mut changes = std::mem::take(&mut self.backlog);
        let mut expired = 0;
        while expired < limit {
            let Some(&(at, id)) = self.expiries.first() else {
                break;
            };
            if at > now {
                break;
            }
            self.expiries.pop_first();
            let waiting = self.tasks.get(&id).is_some_and(|e| {
                matches!(
                    e.record.state,
                    TaskState::Queued | TaskState::Scheduled | TaskState::Blocked
                )
            });
            if !waiting {
                continue;
            }
            expired += 1;
            self.make_unavailable(id);
            let mut dependents = Vec::new();
            self.finish(
                id,
                TaskState::Expired,
                Some(expiry_reason()),
                now,
                &mut dependents,
            );
            changes.extend(self.tasks.get(&id).map(|e| e.change()));
            changes.extend(dependents);
        }
        changes
    }

    fn cancel(
        &mut self,
        id: TaskId,
        reason: String,
        now: DateTime<Utc>,
    ) -> StoreResult<Cancellation> {
        let entry = self
            .tasks
            .get_mut(&id)
            .ok_or(StoreError::TaskNotFound(id))?;
        let outcome = match entry.record.state {
            TaskState::Queued | TaskState::Scheduled | TaskState::Blocked => {
                CancelOutcome::Cancelled
            }
            TaskState::Running => {
                entry.record.cancel_requested = true;
                entry.record.reason = Some(reason.clone());
                entry.record.updated_at = now;
                CancelOutcome::Requested
            }
            finished => CancelOutcome::AlreadyFinished(finished),
        };
        let mut changes = Vec::new();
        if outcome == CancelOutcome::Cancelled {
            self.make_unavailable(id);
            self.finish(id, TaskState::Cancelled, Some(reason), now, &mut changes);
        }
        Ok(Cancellation::new(outcome, changes))
    }

    fn redrive(&mut self, target: RedriveTarget, now: DateTime<Utc>) -> Vec<TaskId> {
        let candidates: Vec<TaskId> = match &target {
            RedriveTarget::Tasks(ids) => ids.clone(),
            RedriveTarget::Queue(queue) => self
                .tasks
                .values()
                .filter(|e| &e.record.spec.queue == queue)
                .map(|e| e.record.spec.id)
                .collect(),
            RedriveTarget::All => self.tasks.keys().copied().collect(),
        };
        let mut redriven = Vec::new();
        for id in candidates {
            let Some(entry) = self.tasks.get(&id) else {
                continue;
            };
            if entry.record.state != TaskState::Failed {
                continue;
            }
            if let Some(key) = &entry.record.spec.unique_key {
                if self.unique.contains_key(key) {
                    continue;
                }
                self.unique.insert(key.clone(), id);
            }
            let Some(entry) = self.tasks.get_mut(&id) else {
                continue;
            };
            let record = &mut entry.record;
            record.state = TaskState::Queued;
            record.attempts = 0;
            record.finished_at = None;
            record.spec.run_at = now;
            record.updated_at = now;
            self.requeue(id, now);
            redriven.push(id);
        }
        redriven.sort();
        redriven
    }

    fn purge(&mut self, request: &PurgeRequest) -> u64 {
        let mut doomed: Vec<(Option<DateTime<Utc>>, TaskId)> = self
            .tasks
            .values()
            .filter(|e| {
                let record = &e.record;
                record.state.is_terminal()
                    && (request.states.is_empty() || request.states.contains(&record.state))
                    && request
                        .queue
                        .as_ref()
                        .is_none_or(|q| &record.spec.queue == q)
                    && request
                        .finished_before
                        .is_none_or(|before| record.finished_at.is_some_and(|at| at < before))
            })
            .map(|e| (e.record.finished_at, e.record.spec.id))
            .collect();
        // Oldest finish first, like the stores that purge through an index on it.
        doomed.sort_unstable();
        doomed.truncate(effective_purge_limit(request.limit));
        for (_, id) in &doomed {
            self.tasks.remove(id);
            self.children.remove(id);
        }
        doomed.len() as u64
    }
}

fn expiry_reason() -> String {
    "not started before its expiry (ttl)".to_owned()
}

/// Now + `extend`, saturating.
fn lease_deadline(now: DateTime<Utc>, extend: Duration) -> DateTime<Utc> {
    let extend = chrono::Duration::from_std(extend).unwrap_or(chrono::Duration::MAX);
    now.checked_add_signed(extend)
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

fn validate_purge(request: &PurgeRequest) -> StoreResult<()> {
    request.finished_states().map(drop)
}

impl TaskQueue for MemoryTaskQueue {
    fn capabilities(&self) -> omniq_storage::Capabilities {
        // Everything but enqueueing inside a caller's SQL transaction.
        omniq_storage::Capabilities::all().without(omniq_storage::Capability::TransactionalEnqueue)
    }

    fn enqueue(&self, tasks: Vec<TaskSpec>) -> BoxFuture<'_, StoreResult<Vec<EnqueueOutcome>>> {
        if let Err(err) = omniq_storage::validate_specs(&tasks) {
            return Box::pin(async move { Err(err) });
        }
        let outcomes = lock(&self.state).enqueue(tasks, Utc::now());
        if outcomes.as_ref().is_ok_and(|o| !o.is_empty()) {
            self.wake();
        }
        Box::pin(async move { outcomes })
    }

    fn dequeue(&self, request: DequeueRequest) -> BoxFuture<'_, StoreResult<Vec<Lease>>> {
        let leases = lock(&self.state).claim(&request, Utc::now());
        Box::pin(async move { Ok(leases) })
    }

    fn heartbeat(
        &self,
        leases: Vec<LeaseRef>,
        extend: Duration,
    ) -> BoxFuture<'_, StoreResult<Vec<LeaseStatus>>> {
        let now = Utc::now();
        let deadline = lease_deadline(now, extend);
        let mut state = lock(&self.state);
        let statuses = leases
            .iter()
            .map(|lease| state.renew(lease, deadline, now, None))
            .collect();
        Box::pin(async move { Ok(statuses) })
    }

    fn complete(&self, completions: Vec<Completion>) -> BoxFuture<'_, StoreResult<Completed>> {
        let now = Utc::now();
        let completed = {
            let mut state = lock(&self.state);
            let mut changes = Vec::new();
            let statuses = completions
                .into_iter()
                .map(|completion| state.complete(completion, now, &mut changes))
                .collect();
            Completed::new(statuses, changes)
        };
        // Retries, releases and unblocked dependents may have made work ready.
        self.wake();
        Box::pin(async move { Ok(completed) })
    }

    fn recover_expired(&self, limit: usize) -> BoxFuture<'_, StoreResult<Vec<StateChange>>> {
        let changes = lock(&self.state).recover(limit, Utc::now());
        if !changes.is_empty() {
            self.wake();
        }
        Box::pin(async move { Ok(changes) })
    }

    fn expire_due(&self, limit: usize) -> BoxFuture<'_, StoreResult<Vec<StateChange>>> {
        let changes = lock(&self.state).expire_due(limit, Utc::now());
        Box::pin(async move { Ok(changes) })
    }

    fn redrive(&self, target: RedriveTarget) -> BoxFuture<'_, StoreResult<Vec<TaskId>>> {
        let redriven = lock(&self.state).redrive(target, Utc::now());
        if !redriven.is_empty() {
            self.wake();
        }
        Box::pin(async move { Ok(redriven) })
    }

    fn purge(&self, request: PurgeRequest) -> BoxFuture<'_, StoreResult<u64>> {
        let purged = validate_purge(&request).map(|()| lock(&self.state).purge(&request));
        Box::pin(async move { purged })
    }

    fn get(&self, id: TaskId) -> BoxFuture<'_, StoreResult<Option<TaskRecord>>> {
        let record = lock(&self.state).tasks.get(&id).map(|e| e.record.clone());
        Box::pin(async move { Ok(record) })
    }

    fn list(&self, query: TaskQuery) -> BoxFuture<'_, StoreResult<Vec<TaskRecord>>> {
        let limit = query.effective_limit();
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
            .map(|e| &**e)
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

    fn queue_names(&self) -> BoxFuture<'_, StoreResult<Vec<String>>> {
        let names: std::collections::BTreeSet<String> = lock(&self.state)
            .tasks
            .values()
            .map(|entry| entry.record.spec.queue.clone())
            .collect();
        Box::pin(async move { Ok(names.into_iter().collect()) })
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
        let stats = QueueStats::new(queue, counts, oldest);
        Box::pin(async move { Ok(stats) })
    }

    fn cancel(&self, id: TaskId, reason: String) -> BoxFuture<'_, StoreResult<Cancellation>> {
        let outcome = lock(&self.state).cancel(id, reason, Utc::now());
        if outcome.as_ref().is_ok_and(|c| !c.changes.is_empty()) {
            self.wake();
        }
        Box::pin(async move { outcome })
    }

    fn set_queue_paused(&self, queue: String, paused: bool) -> BoxFuture<'_, StoreResult<bool>> {
        let changed = omniq_storage::validate_queue_name(&queue).map(|()| {
            let mut state = lock(&self.state);
            if paused {
                state.paused.insert(queue)
            } else {
                state.paused.remove(&queue)
            }
        });
        Box::pin(async move { changed })
    }

    fn paused_queues(&self) -> BoxFuture<'_, StoreResult<Vec<String>>> {
        let paused = lock(&self.state).paused.iter().cloned().collect();
        Box::pin(async move { Ok(paused) })
    }

    fn report_progress(
        &self,
        lease: LeaseRef,
        progress: serde_json::Value,
        extend: Duration,
    ) -> BoxFuture<'_, StoreResult<LeaseStatus>> {
        let status = omniq_storage::progress_text(&progress).map(|_| {
            let now = Utc::now();
            lock(&self.state).renew(&lease, lease_deadline(now, extend), now, Some(progress))
        });
        Box::pin(async move { status })
    }

    fn read_limiter(
        &self,
        key: String,
    ) -> BoxFuture<'_, StoreResult<Option<omniq_storage::LimiterState>>> {
        let read = omniq_storage::validate_limiter_key(&key).map(|()| {
            lock(&self.state)
                .limiters
                .get(&key)
                .map(|(version, bytes)| {
                    omniq_storage::LimiterState::new(
                        bytes.clone(),
                        omniq_storage::LimiterVersion::new(version.to_string()),
                    )
                })
        });
        Box::pin(async move { read })
    }

    fn write_limiter(
        &self,
        key: String,
        expected: Option<omniq_storage::LimiterVersion>,
        bytes: Vec<u8>,
    ) -> BoxFuture<'_, StoreResult<bool>> {
        let written = omniq_storage::validate_limiter_write(&key, &bytes).map(|()| {
            let mut state = lock(&self.state);
            let current = state.limiters.get(&key).map(|(version, _)| *version);
            let matches = match (&expected, current) {
                (None, None) => true,
                (Some(expected), Some(current)) => expected.as_str() == current.to_string(),
                _ => false,
            };
            if matches {
                let next = current.map_or(1, |version| version + 1);
                state.limiters.insert(key, (next, bytes));
            }
            matches
        });
        Box::pin(async move { written })
    }

    fn wait_for_tasks(&self, _queues: &[String], timeout: Duration) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let _ = tokio::time::timeout(timeout, self.wakeup.notified()).await;
        })
    }
}
