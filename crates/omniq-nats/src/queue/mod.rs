//! The task queue on JetStream.
//!
//! Each task is one key of the bucket `{prefix}_tasks`, changed only by compare-and-set
//! on its revision: that is what fences a stale worker's completion and makes each claim
//! exclusive. Two streams find tasks without reading them all:
//!
//! - `{prefix}_ready`, a work-queue stream with one subject per queue and priority. A claim
//!   fetches from a durable pull consumer per subject, highest priority first, so concurrent
//!   workers are handed different messages; each message names a task, which the claim
//!   takes by compare-and-set, then acknowledges (which removes the message).
//! - `{prefix}_index`: tasks due later, leases and expiries, each under a subject naming
//!   a time bucket, so that promotion, recovery and expiry read only the buckets that are
//!   due.
//!
//! An index message is always published before the change of the task it points to is
//! written: a process killed in between leaves a message pointing to a task that does not
//! need it (read and dropped), never a task that nothing points to (lost).

mod cas;
mod claim;
mod dependencies;
mod index;
mod inspect;
mod limiter;
mod maintenance;
mod pause;
mod stored;
mod unique;
pub(crate) use dependencies::BlockedSweep;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::pull;
use async_nats::jetstream::consumer::{AckPolicy, PullConsumer};
use bytes::Bytes;
use chrono::{DateTime, TimeDelta, Utc};
use futures_util::StreamExt;
use omniq_models::{TaskId, TaskRecord, TaskSpec, TaskState};
use omniq_storage::{
    BoxFuture, Cancellation, Capabilities, Capability, Clock, Completed, Completion,
    DequeueRequest, EnqueueOutcome, Lease, LeaseRef, LeaseStatus, PurgeRequest, QueueStats,
    RedriveTarget, StateChange, StoreError, StoreResult, TaskQuery, TaskQueue, validate_specs,
};

use crate::NatsBackend;
use crate::error::{BACKEND, nats_error};
pub(crate) use index::Subjects;

/// What the NATS task queue does: everything but enqueueing inside a database transaction.
pub const CAPABILITIES: Capabilities =
    Capabilities::all().without(Capability::TransactionalEnqueue);

/// How long the measured offset between this process's clock and the server's is trusted.
const CLOCK_PROBE_EVERY: Duration = Duration::from_secs(30);

/// The task queue of a [`NatsBackend`]. See the module docs for the layout.
#[derive(Debug, Clone)]
pub struct NatsTaskQueue {
    backend: NatsBackend,
    clock: Clock,
    /// The server's clock minus this process's, and when it was measured.
    offset: Arc<Mutex<Option<(Instant, TimeDelta)>>>,
}

impl NatsTaskQueue {
    pub(crate) fn new(backend: NatsBackend, clock: Clock) -> Self {
        Self {
            backend,
            clock,
            offset: Arc::new(Mutex::new(None)),
        }
    }

    fn tasks(&self) -> &async_nats::jetstream::kv::Store {
        &self.backend.inner.tasks
    }

    fn subjects(&self) -> &Subjects {
        &self.backend.inner.subjects
    }

    /// The time by the server's clock, the one every lease deadline is set and judged by,
    /// so that workers whose clocks disagree never take each other's live leases.
    async fn server_now(&self) -> StoreResult<DateTime<Utc>> {
        let cached = *self.offset.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((at, offset)) = cached
            && at.elapsed() < CLOCK_PROBE_EVERY
        {
            return Ok(self.clock.now() + offset);
        }
        // The server stamps every message it stores: write one and read its stamp.
        // The server stamps every message it stores: write one, read the newest stamp on
        // that subject (ours, or another process's probe stored meanwhile: either was
        // stamped between `before` and `after`).
        let before = self.clock.now();
        self.tasks()
            .put("c.clock", Bytes::new())
            .await
            .map_err(nats_error)?;
        let stored = self
            .tasks()
            .stream
            .get_last_raw_message_by_subject(&format!("{}c.clock", self.tasks().prefix))
            .await
            .map_err(nats_error)?;
        let after = self.clock.now();
        let server = crate::scan::from_server_time(stored.time);
        let offset = server - (before + (after - before) / 2);
        *self.offset.lock().unwrap_or_else(PoisonError::into_inner) =
            Some((Instant::now(), offset));
        Ok(self.clock.now() + offset)
    }

    /// Publishes `entry` on `subject` and waits for the stream to have it.
    async fn publish(&self, subject: String, entry: &index::Entry) -> StoreResult<()> {
        self.send(subject, entry).await?.await.map_err(nats_error)?;
        Ok(())
    }

    /// Files a task where claims will find it: the ready stream when it is queued, the
    /// delayed index when it is due later.
    /// `after`: the task's revision the change about to be written replaces (see
    /// [`index::Entry::after`]).
    async fn make_findable(&self, spec: &TaskSpec, queued: bool, after: u64) -> StoreResult<()> {
        let entry = index::Entry::task(spec.id, Some(after));
        let subject = if queued {
            self.subjects().ready(&spec.queue, spec.priority)
        } else {
            self.subjects().delayed(&spec.queue, spec.run_at)
        };
        self.publish(subject, &entry).await
    }

    /// Changes task `id` by `change` and writes it back by compare-and-set. When the
    /// changed task is queued or scheduled, its index entry is published first, with the
    /// revision about to be replaced, and again after every lost race: a reader that meets
    /// the entry before the write then knows the change is on its way (see the module docs).
    /// `change` returns what to report and whether it changed the task. `None`: no such
    /// task.
    async fn update_filed<T, F>(&self, id: TaskId, mut change: F) -> StoreResult<Option<T>>
    where
        F: FnMut(&mut stored::Stored) -> (T, bool),
    {
        for _ in 0..cas::CAS_ROUNDS {
            let Some(current) = cas::read(self.tasks(), id).await? else {
                return Ok(None);
            };
            let mut next = current.task.clone();
            let (report, changed) = change(&mut next);
            if !changed {
                return Ok(Some(report));
            }
            match next.record.state {
                TaskState::Queued => {
                    self.make_findable(&next.record.spec, true, current.revision)
                        .await?;
                }
                TaskState::Scheduled => {
                    self.make_findable(&next.record.spec, false, current.revision)
                        .await?;
                }
                _ => {}
            }
            if cas::write(self.tasks(), &next, current.revision)
                .await?
                .is_some()
            {
                return Ok(Some(report));
            }
        }
        Err(StoreError::unavailable(
            BACKEND,
            format!("task {id} kept changing under {} writes", cas::CAS_ROUNDS),
        ))
    }

    /// Forgets the cached consumer of a ready subject.
    fn forget_consumer(&self, subject: &str) {
        self.backend
            .inner
            .consumers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(subject);
    }

    /// The durable pull consumer of a ready subject, created on first use.
    async fn consumer(&self, subject: &str) -> StoreResult<PullConsumer> {
        let cached = self
            .backend
            .inner
            .consumers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(subject)
            .cloned();
        if let Some(consumer) = cached {
            return Ok(consumer);
        }
        let name = format!("ready-{:016x}", fnv1a(subject.as_bytes()));
        let consumer = self
            .backend
            .inner
            .ready
            .get_or_create_consumer(
                &name,
                pull::Config {
                    durable_name: Some(name.clone()),
                    description: Some(format!("OmniQ claims of {subject}")),
                    filter_subject: subject.to_owned(),
                    ack_policy: AckPolicy::Explicit,
                    // A claimer killed between fetch and acknowledgement: the message comes
                    // back after this long, and the task is claimed (or dropped) then.
                    ack_wait: Duration::from_secs(30),
                    max_deliver: -1,
                    max_ack_pending: -1,
                    ..Default::default()
                },
            )
            .await
            .map_err(nats_error)?;
        self.backend
            .inner
            .consumers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(subject.to_owned(), consumer.clone());
        Ok(consumer)
    }

    async fn enqueue_all(&self, specs: Vec<TaskSpec>) -> StoreResult<Vec<EnqueueOutcome>> {
        validate_specs(&specs)?;
        CAPABILITIES.check_specs(BACKEND, &specs)?;
        let now = self.clock.now();
        // Every parent is a task of the batch (before its child) or a stored task; else
        // the batch is refused, and nothing of it stored.
        let mut earlier = std::collections::HashSet::new();
        for spec in &specs {
            for parent in &spec.depends_on {
                if !earlier.contains(parent) && cas::read(self.tasks(), *parent).await?.is_none() {
                    return Err(StoreError::UnknownParent(*parent));
                }
            }
            earlier.insert(spec.id);
        }
        let mut specs = specs;
        let mut outcomes: Vec<Option<EnqueueOutcome>> = vec![None; specs.len()];
        // Unique keys first. Tasks sharing one go one after the other in the order given,
        // so the first is the one that takes it; different keys at once.
        let mut by_key: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, spec) in specs.iter().enumerate() {
            if let Some(key) = &spec.unique_key {
                by_key.entry(key).or_default().push(i);
            }
        }
        let specs_ref = &specs;
        let batch: std::collections::HashSet<TaskId> = specs.iter().map(|s| s.id).collect();
        let batch = &batch;
        let taken =
            futures_util::future::try_join_all(by_key.into_values().map(|indices| async move {
                let mut duplicates = Vec::new();
                for i in indices {
                    if let Some(existing) = self.take_unique(&specs_ref[i], now, batch).await? {
                        duplicates.push((i, EnqueueOutcome::Duplicate { existing }));
                    }
                }
                StoreResult::Ok(duplicates)
            }))
            .await?;
        let mut aliases = omniq_storage::BatchAliases::default();
        for (i, outcome) in taken.into_iter().flatten() {
            aliases.record(specs[i].id, &outcome);
            outcomes[i] = Some(outcome);
        }
        // A child of a parent deduplicated in its batch waits for the task stored instead.
        for spec in &mut specs {
            aliases.resolve(spec);
        }
        // The index entries of the rest, in the order given (one connection keeps the
        // order of its publishes: the ready stream keeps the tasks' order), before the
        // tasks themselves: see the module docs. A task with parents is filed as blocked.
        let mut acks = Vec::new();
        for (i, spec) in specs.iter().enumerate() {
            if outcomes[i].is_some() {
                continue;
            }
            let queued = stored::ready_state(spec.run_at, now) == TaskState::Queued;
            let subject = if !spec.depends_on.is_empty() {
                self.subjects().blocked()
            } else if queued {
                self.subjects().ready(&spec.queue, spec.priority)
            } else {
                self.subjects().delayed(&spec.queue, spec.run_at)
            };
            acks.push(
                self.send(subject, &index::Entry::task(spec.id, Some(0)))
                    .await?,
            );
            if let Some(at) = spec.expires_at {
                acks.push(
                    self.send(
                        self.subjects().expiry(at),
                        &index::Entry::task(spec.id, None),
                    )
                    .await?,
                );
            }
        }
        for ack in acks {
            ack.await.map_err(nats_error)?;
        }
        // Then the tasks without parents, all at once; a task whose id is taken was sent
        // before. Two of one id in the batch: the first is created.
        let mut seen = std::collections::HashSet::new();
        let mut with_parents = Vec::new();
        let mut independent = Vec::new();
        for (i, spec) in specs.into_iter().enumerate() {
            if outcomes[i].is_some() {
                continue;
            }
            if !seen.insert(spec.id) {
                outcomes[i] = Some(EnqueueOutcome::Duplicate { existing: spec.id });
            } else if spec.depends_on.is_empty() {
                independent.push((i, spec));
            } else {
                with_parents.push((i, spec));
            }
        }
        let created = futures_util::future::try_join_all(independent.into_iter().map(
            |(i, spec)| async move { Ok::<_, StoreError>((i, self.create(spec, now).await?)) },
        ))
        .await?;
        for (i, outcome) in created {
            outcomes[i] = Some(outcome);
        }
        // Then those with parents, in order (a parent of the batch is stored before its
        // child), each evaluated against its parents as soon as it is stored.
        for (i, spec) in with_parents {
            let id = spec.id;
            let outcome = match self.create(spec, now).await? {
                EnqueueOutcome::Created { .. } => {
                    let mut changes = Vec::new();
                    self.evaluate(id, now, &mut changes).await?;
                    let state = cas::read(self.tasks(), id)
                        .await?
                        .map_or(TaskState::Blocked, |r| r.task.record.state);
                    EnqueueOutcome::Created { id, state }
                }
                duplicate => duplicate,
            };
            outcomes[i] = Some(outcome);
        }
        Ok(outcomes.into_iter().flatten().collect())
    }

    /// Stores a new task: blocked when it has parents, else queued or scheduled.
    async fn create(&self, spec: TaskSpec, now: DateTime<Utc>) -> StoreResult<EnqueueOutcome> {
        let id = spec.id;
        let state = if spec.depends_on.is_empty() {
            stored::ready_state(spec.run_at, now)
        } else {
            TaskState::Blocked
        };
        let mut record = TaskRecord::new(spec, state);
        record.updated_at = now;
        Ok(
            match cas::write(self.tasks(), &stored::Stored::new(record), 0).await? {
                Some(_) => EnqueueOutcome::Created { id, state },
                None => EnqueueOutcome::Duplicate { existing: id },
            },
        )
    }

    /// Sends `entry` on `subject`; the returned future resolves once the stream has it.
    async fn send(
        &self,
        subject: String,
        entry: &index::Entry,
    ) -> StoreResult<async_nats::jetstream::context::PublishAckFuture> {
        let payload = serde_json::to_vec(entry).map_err(|e| StoreError::backend(BACKEND, e))?;
        self.backend
            .inner
            .jetstream
            .publish(subject, payload.into())
            .await
            .map_err(nats_error)
    }

    async fn renew(
        &self,
        leases: Vec<LeaseRef>,
        extend: Duration,
    ) -> StoreResult<Vec<LeaseStatus>> {
        self.renew_with(leases, extend, None).await
    }

    /// Extends held leases; with `progress`, stores it on each held lease's task in the
    /// same compare-and-set.
    async fn renew_with(
        &self,
        leases: Vec<LeaseRef>,
        extend: Duration,
        progress: Option<&serde_json::Value>,
    ) -> StoreResult<Vec<LeaseStatus>> {
        let now = self.server_now().await?;
        let deadline = now + TimeDelta::from_std(extend).unwrap_or(TimeDelta::MAX);
        futures_util::future::try_join_all(leases.into_iter().map(|lease| async move {
            // The new deadline's index entry first: see the module docs.
            let entry = index::Entry::lease(lease.task_id, lease.token);
            self.publish(self.subjects().lease(deadline), &entry)
                .await?;
            let status = cas::update(self.tasks(), lease.task_id, |task| {
                if !task.held_by(lease.token) {
                    return (LeaseStatus::Lost, false);
                }
                task.record.lease_expires_at = Some(deadline);
                if let Some(progress) = progress {
                    task.record.progress = Some(progress.clone());
                }
                let status = if task.record.cancel_requested {
                    LeaseStatus::CancelRequested
                } else {
                    LeaseStatus::Held
                };
                (status, true)
            })
            .await?;
            Ok(status.unwrap_or(LeaseStatus::Lost))
        }))
        .await
    }

    /// Fenced by the lease like a heartbeat, in the heartbeat's own compare-and-set.
    async fn progress(
        &self,
        lease: LeaseRef,
        progress: serde_json::Value,
        extend: Duration,
    ) -> StoreResult<LeaseStatus> {
        omniq_storage::progress_text(&progress)?;
        let status = self
            .renew_with(vec![lease], extend, Some(&progress))
            .await?;
        Ok(status.into_iter().next().unwrap_or(LeaseStatus::Lost))
    }

    async fn complete_all(&self, completions: Vec<Completion>) -> StoreResult<Completed> {
        let now = self.clock.now();
        // Completions of one task apply in the order given; different tasks at once.
        let mut by_task: HashMap<TaskId, Vec<usize>> = HashMap::new();
        for (i, completion) in completions.iter().enumerate() {
            by_task.entry(completion.lease.task_id).or_default().push(i);
        }
        let completions = &completions;
        let groups =
            futures_util::future::try_join_all(by_task.into_values().map(|indices| async move {
                let mut statuses = Vec::with_capacity(indices.len());
                let mut changes = Vec::new();
                for i in indices {
                    let status = self
                        .complete_one(&completions[i], now, &mut changes)
                        .await?;
                    statuses.push((i, status));
                }
                StoreResult::Ok((statuses, changes))
            }))
            .await?;
        let mut statuses = vec![omniq_storage::CompletionStatus::LeaseLost; completions.len()];
        let mut changes = Vec::new();
        for (group, group_changes) in groups {
            for (i, status) in group {
                statuses[i] = status;
            }
            changes.extend(group_changes);
        }
        Ok(Completed::new(statuses, changes))
    }

    async fn complete_one(
        &self,
        completion: &Completion,
        now: DateTime<Utc>,
        changes: &mut Vec<StateChange>,
    ) -> StoreResult<omniq_storage::CompletionStatus> {
        use omniq_storage::CompletionStatus;
        let id = completion.lease.task_id;
        let token = completion.lease.token;
        let applied = self
            .update_filed(id, |task| {
                let applied = task.complete(token, completion.outcome.clone(), now);
                let changed = applied == stored::Applied::Changed;
                ((applied, task.record.state), changed)
            })
            .await?;
        Ok(match applied {
            Some((stored::Applied::Changed, state)) => {
                if state.is_terminal() {
                    self.settle_after(id, now, changes).await;
                }
                CompletionStatus::Applied
            }
            Some((stored::Applied::Resent, _)) => CompletionStatus::Applied,
            _ => CompletionStatus::LeaseLost,
        })
    }

    async fn cancel_one(&self, id: TaskId, reason: String) -> StoreResult<Cancellation> {
        use omniq_models::TaskState;
        use omniq_storage::CancelOutcome;
        let now = self.clock.now();
        let outcome = cas::update(self.tasks(), id, |task| match task.record.state {
            TaskState::Queued | TaskState::Scheduled | TaskState::Blocked => {
                task.finish(TaskState::Cancelled, Some(reason.clone()), now);
                (CancelOutcome::Cancelled, true)
            }
            TaskState::Running => {
                task.record.cancel_requested = true;
                task.record.reason = Some(reason.clone());
                task.record.updated_at = now;
                (CancelOutcome::Requested, true)
            }
            finished => (CancelOutcome::AlreadyFinished(finished), false),
        })
        .await?
        .ok_or(StoreError::TaskNotFound(id))?;
        let mut changes = Vec::new();
        if outcome == CancelOutcome::Cancelled {
            self.settle_after(id, now, &mut changes).await;
        }
        Ok(Cancellation::new(outcome, changes))
    }

    async fn wait(&self, queues: Vec<String>, timeout: Duration) {
        // Every ready message also reaches core subscribers of its subject: an idle worker
        // sleeps on a subscription and wakes on the first enqueue, not on a timer.
        let client = &self.backend.inner.client;
        let mut subscriptions = Vec::with_capacity(queues.len());
        for queue in &queues {
            match client
                .subscribe(self.subjects().ready_of_queue(queue))
                .await
            {
                Ok(subscription) => subscriptions.push(subscription),
                Err(err) => {
                    tracing::debug!(%err, "cannot subscribe for wake-ups; waiting out the timeout");
                    tokio::time::sleep(timeout).await;
                    return;
                }
            }
        }
        // Registered on the server before the wait begins; failing that, the timeout bounds it.
        let _ = self.backend.round_trip().await;
        let woken = futures_util::stream::select_all(subscriptions);
        let _ = tokio::time::timeout(timeout, woken.into_future()).await;
    }
}

/// FNV-1a, 64 bits: a stable short name for a consumer of any subject.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

impl TaskQueue for NatsTaskQueue {
    fn capabilities(&self) -> Capabilities {
        CAPABILITIES
    }

    fn enqueue(&self, tasks: Vec<TaskSpec>) -> BoxFuture<'_, StoreResult<Vec<EnqueueOutcome>>> {
        Box::pin(self.enqueue_all(tasks))
    }

    fn dequeue(&self, request: DequeueRequest) -> BoxFuture<'_, StoreResult<Vec<Lease>>> {
        Box::pin(self.claim(request))
    }

    fn heartbeat(
        &self,
        leases: Vec<LeaseRef>,
        extend: Duration,
    ) -> BoxFuture<'_, StoreResult<Vec<LeaseStatus>>> {
        Box::pin(self.renew(leases, extend))
    }

    fn complete(&self, completions: Vec<Completion>) -> BoxFuture<'_, StoreResult<Completed>> {
        Box::pin(self.complete_all(completions))
    }

    fn recover_expired(&self, limit: usize) -> BoxFuture<'_, StoreResult<Vec<StateChange>>> {
        Box::pin(self.recover(limit))
    }

    fn expire_due(&self, limit: usize) -> BoxFuture<'_, StoreResult<Vec<StateChange>>> {
        Box::pin(self.expire(limit))
    }

    fn redrive(&self, target: RedriveTarget) -> BoxFuture<'_, StoreResult<Vec<TaskId>>> {
        Box::pin(self.redrive_failed(target))
    }

    fn purge(&self, request: PurgeRequest) -> BoxFuture<'_, StoreResult<u64>> {
        Box::pin(self.purge_finished(request))
    }

    fn get(&self, id: TaskId) -> BoxFuture<'_, StoreResult<Option<TaskRecord>>> {
        Box::pin(async move { Ok(cas::read(self.tasks(), id).await?.map(|r| r.task.record)) })
    }

    fn list(&self, query: TaskQuery) -> BoxFuture<'_, StoreResult<Vec<TaskRecord>>> {
        Box::pin(self.list_tasks(query))
    }

    fn stats(&self, queue: String) -> BoxFuture<'_, StoreResult<QueueStats>> {
        Box::pin(self.queue_stats(queue))
    }

    fn queue_names(&self) -> BoxFuture<'_, StoreResult<Vec<String>>> {
        Box::pin(self.names_of_queues())
    }

    fn cancel(&self, id: TaskId, reason: String) -> BoxFuture<'_, StoreResult<Cancellation>> {
        Box::pin(self.cancel_one(id, reason))
    }

    fn set_queue_paused(&self, queue: String, paused: bool) -> BoxFuture<'_, StoreResult<bool>> {
        Box::pin(self.set_paused(queue, paused))
    }

    fn paused_queues(&self) -> BoxFuture<'_, StoreResult<Vec<String>>> {
        Box::pin(self.paused_queue_names())
    }

    fn read_limiter(
        &self,
        key: String,
    ) -> BoxFuture<'_, StoreResult<Option<omniq_storage::LimiterState>>> {
        Box::pin(self.limiter_state(key))
    }

    fn write_limiter(
        &self,
        key: String,
        expected: Option<omniq_storage::LimiterVersion>,
        bytes: Vec<u8>,
    ) -> BoxFuture<'_, StoreResult<bool>> {
        Box::pin(self.replace_limiter(key, expected, bytes))
    }

    fn report_progress(
        &self,
        lease: LeaseRef,
        progress: serde_json::Value,
        extend: Duration,
    ) -> BoxFuture<'_, StoreResult<LeaseStatus>> {
        Box::pin(self.progress(lease, progress, extend))
    }

    fn wait_for_tasks(&self, queues: &[String], timeout: Duration) -> BoxFuture<'_, ()> {
        Box::pin(self.wait(queues.to_vec(), timeout))
    }
}
