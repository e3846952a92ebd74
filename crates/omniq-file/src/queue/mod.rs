//! The task queue on [`Objects`]: one object per task, changed only by a conditional
//! replace from the version read, which fences a stale worker's completion and makes each
//! claim exclusive; and markers, empty objects whose keys say what a reader needs, so that
//! a claim lists the ready tasks of a queue in claim order without reading any task, and
//! recovery lists the running ones. See [`keys`] for the layout and the rule that keeps
//! every task findable.

mod claim;
mod dependencies;
mod inspect;
pub(crate) mod keys;
mod lease_markers;
mod limiter;
mod maintenance;
mod pause;
mod ready_pages;
mod tasks;
mod unique;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, TimeDelta, Utc};
use omniq_models::{LeaseToken, TaskId, TaskRecord, TaskSpec, TaskState};
use omniq_storage::kv_task::{KvTask, ready_state};
use omniq_storage::{
    BatchAliases, BoxFuture, CancelOutcome, Cancellation, Capabilities, Capability, Clock,
    Completed, Completion, DequeueRequest, EnqueueOutcome, Lease, LeaseRef, LeaseStatus,
    PurgeRequest, QueueStats, RedriveTarget, StateChange, StoreError, StoreResult, TaskQuery,
    TaskQueue, validate_specs,
};

use crate::error::BACKEND;
use crate::objects::Objects;
pub(crate) use dependencies::BlockedSweep;

/// What the object-store task queue does: everything but enqueueing inside a database
/// transaction.
pub const CAPABILITIES: Capabilities =
    Capabilities::all().without(Capability::TransactionalEnqueue);

/// A marker whose task is not (yet) at the write it names is left alone this long, then
/// deleted: the process that wrote it died before writing the task.
const ORPHAN_AGE: TimeDelta = TimeDelta::minutes(10);

/// A writer whose marker and task write lie further apart than this writes the marker
/// again after the task, in case a reader took it for an orphan meanwhile: well under
/// [`ORPHAN_AGE`], so that clocks off by a minute do not matter.
const STALLED: Duration = Duration::from_secs(120);

/// A marker written, and what a stalled writer needs to write it again.
#[derive(Debug)]
struct Filing {
    key: String,
    body: Bytes,
    started: Instant,
}

/// Tasks written at once by one enqueue.
const WRITTEN_AT_ONCE: usize = 64;

/// The task queue on an [`Objects`] store. Cheap to clone; clones share the store.
#[derive(Debug, Clone)]
pub struct FileTaskQueue {
    objects: Arc<dyn Objects>,
    clock: Clock,
    sweep: Arc<Mutex<BlockedSweep>>,
    /// Wakes this process's idle workers when it enqueues; workers of other processes
    /// find new tasks at their next poll.
    enqueued: Arc<tokio::sync::Notify>,
    /// The first pages of ready markers its claims listed last.
    ready_pages: Arc<ready_pages::ReadyPages>,
    /// The lease markers its claims are writing together.
    lease_markers: Arc<lease_markers::LeaseMarkers>,
    /// Tasks as this process's claims wrote them: the task's next change (most often
    /// its completion) replaces it from that version without reading it first, and reads
    /// it only when the replace is refused (another writer, a heartbeat, got in between).
    claimed: Arc<Mutex<HashMap<TaskId, tasks::Read>>>,
}

/// Claimed tasks remembered at most: past this, they are forgotten (a lease lost leaves
/// its task's entry until then), and read again when next changed.
const CLAIMED_REMEMBERED: usize = 4_096;

impl FileTaskQueue {
    /// The queue on `objects`, reading due times and TTLs on the system clock.
    pub fn new(objects: Arc<dyn Objects>) -> Self {
        Self::with_clock(objects, Clock::system())
    }

    /// The queue on `objects`, reading due times and TTLs on `clock` (lease deadlines are
    /// always on the store's clock, see [`Objects::now`]).
    pub fn with_clock(objects: Arc<dyn Objects>, clock: Clock) -> Self {
        Self {
            objects,
            clock,
            sweep: Arc::default(),
            enqueued: Arc::default(),
            ready_pages: Arc::default(),
            lease_markers: Arc::default(),
            claimed: Arc::default(),
        }
    }

    fn objects(&self) -> &dyn Objects {
        self.objects.as_ref()
    }

    /// Remembers `task` as a claim of this process wrote it, at `version`.
    fn remember_claimed(&self, task: &KvTask, version: crate::objects::Version) {
        let mut claimed = self.claimed.lock().unwrap_or_else(PoisonError::into_inner);
        if claimed.len() >= CLAIMED_REMEMBERED {
            claimed.clear();
        }
        claimed.insert(
            task.record.spec.id,
            tasks::Read {
                task: task.clone(),
                version,
            },
        );
    }

    /// Task `id` as this process's claim wrote it, forgotten from now on.
    fn take_claimed(&self, id: TaskId) -> Option<tasks::Read> {
        self.claimed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id)
    }

    /// Writes the marker that files `task` (as it will be once written) where claims or
    /// the blocked sweep find it; `None` when its state needs none.
    async fn file(&self, task: &KvTask) -> StoreResult<Option<Filing>> {
        let spec = &task.record.spec;
        let key = match task.record.state {
            TaskState::Queued | TaskState::Scheduled => {
                keys::ready_of_task(task, task.writes.saturating_add(1))
            }
            TaskState::Blocked => keys::blocked(spec.id),
            _ => return Ok(None),
        };
        self.write_marker(key, keys::stamp(Utc::now()))
            .await
            .map(Some)
    }

    /// Writes a marker (created, or there already: either way it is in place), before the
    /// change it files.
    async fn write_marker(&self, key: String, body: Bytes) -> StoreResult<Filing> {
        let started = Instant::now();
        self.objects().create(&key, body.clone()).await?;
        Ok(Filing { key, body, started })
    }

    /// [`write_marker`](Self::write_marker) for the lease marker of task `id` claimed
    /// with `token` by its write `write`, written together with the other takes' (see
    /// [`lease_markers`]).
    async fn write_lease_marker(
        &self,
        id: TaskId,
        token: LeaseToken,
        write: u64,
    ) -> StoreResult<Filing> {
        let started = Instant::now();
        let (key, body) = self
            .lease_markers
            .write(&self.objects, id, token, write)
            .await?;
        Ok(Filing { key, body, started })
    }

    /// After the change a marker files was written, longer than [`STALLED`] after the
    /// marker: the marker again, under a key of its own (a reader may be deleting the
    /// first as an orphan).
    async fn refile_if_stalled(&self, filing: Option<Filing>) {
        let Some(filing) = filing else {
            return;
        };
        // Its task is written: this process's claims may take it from a remembered page
        // (before the write, one would have passed it over).
        if let Some(base) = keys::ready_base_of(&filing.key) {
            self.ready_pages.filed(base, &filing.key);
        }
        if filing.started.elapsed() < STALLED {
            return;
        }
        let key = keys::with_nonce(&filing.key);
        let body = if filing.key.starts_with(keys::LEASES) {
            filing.body
        } else {
            keys::stamp(Utc::now())
        };
        if let Err(err) = self.objects().create(&key, body).await {
            tracing::warn!(%err, key, "a stalled write's marker could not be written again");
        }
    }

    /// Deletes the marker at `key` when, [`ORPHAN_AGE`] after it was written, its task `id`
    /// still has not had the change it files (`pending` says, of the task or its absence):
    /// its writer died in between. The marker is read before the task, so that a writer
    /// landing in between is seen; an unreadable task's markers are left alone.
    async fn drop_if_orphan(
        &self,
        key: &str,
        id: TaskId,
        pending: impl Fn(Option<&KvTask>) -> bool,
    ) -> StoreResult<()> {
        let Some(marker) = self.objects().get(key).await? else {
            return Ok(());
        };
        let written = keys::read_stamp(&marker.bytes);
        if written.is_some_and(|at| Utc::now() - at < ORPHAN_AGE) {
            return Ok(());
        }
        let still = match tasks::find(self.objects(), id).await? {
            tasks::Found::Absent => pending(None),
            tasks::Found::Unreadable => false,
            tasks::Found::Task(read) => pending(Some(&read.task)),
        };
        if still {
            self.objects().delete_if(key, &marker.version).await?;
        }
        Ok(())
    }

    /// Changes task `id` by `change` and writes it back from the version read, filing it
    /// first when the change makes it ready (see [`keys`]). `change` returns what to
    /// report and whether it changed the task. `None`: no such task.
    async fn update_filed<T, F>(
        &self,
        id: TaskId,
        mut change: F,
    ) -> StoreResult<Option<(T, KvTask)>>
    where
        F: FnMut(&mut KvTask) -> (T, bool),
    {
        let mut claimed = self.take_claimed(id);
        for _ in 0..tasks::CAS_ROUNDS {
            let (current, remembered) = match claimed.take() {
                Some(claimed) => (claimed, true),
                None => match tasks::read(self.objects(), id).await? {
                    Some(current) => (current, false),
                    None => return Ok(None),
                },
            };
            let mut next = current.task.clone();
            let (report, changed) = change(&mut next);
            if !changed {
                if remembered {
                    // Nothing written to check the remembered task against: judged on
                    // the task as stored instead.
                    continue;
                }
                return Ok(Some((report, next)));
            }
            let filing = self.file(&next).await?;
            let mut expiry = None;
            if current.task.record.state.is_terminal()
                && !next.record.state.is_terminal()
                && let Some(at) = next.record.spec.expires_at
            {
                // Its expiry marker went when it finished; a key of its own, since the
                // old one may be being deleted.
                let key = keys::with_nonce(&keys::expiry(at, id));
                expiry = Some(self.write_marker(key, keys::stamp(Utc::now())).await?);
            }
            if tasks::write(self.objects(), &mut next, &current.version)
                .await?
                .is_some()
            {
                self.refile_if_stalled(filing).await;
                self.refile_if_stalled(expiry).await;
                return Ok(Some((report, next)));
            }
        }
        Err(tasks::kept_changing(id))
    }

    async fn enqueue_all(&self, specs: Vec<TaskSpec>) -> StoreResult<Vec<EnqueueOutcome>> {
        validate_specs(&specs)?;
        CAPABILITIES.check_specs(BACKEND, &specs)?;
        let now = self.clock.now();
        // Every parent is a task of the batch (before its child) or a stored task; else the
        // batch is refused, and nothing of it stored.
        let mut earlier = HashSet::new();
        for spec in &specs {
            for parent in &spec.depends_on {
                if !earlier.contains(parent)
                    && tasks::read(self.objects(), *parent).await?.is_none()
                {
                    return Err(StoreError::UnknownParent(*parent));
                }
            }
            earlier.insert(spec.id);
        }
        let mut specs = specs;
        let mut outcomes: Vec<Option<EnqueueOutcome>> = vec![None; specs.len()];
        // Unique keys first, one task after the other per key in the order given (the
        // first takes it), different keys at once.
        let mut by_key: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, spec) in specs.iter().enumerate() {
            if let Some(key) = &spec.unique_key {
                by_key.entry(key).or_default().push(i);
            }
        }
        let batch: HashSet<TaskId> = specs.iter().map(|s| s.id).collect();
        let (specs_ref, batch_ref) = (&specs, &batch);
        let taken =
            futures_util::future::try_join_all(by_key.into_values().map(|indices| async move {
                let mut duplicates = Vec::new();
                for i in indices {
                    if let Some(existing) = self.take_unique(&specs_ref[i], now, batch_ref).await? {
                        duplicates.push((i, EnqueueOutcome::Duplicate { existing }));
                    }
                }
                StoreResult::Ok(duplicates)
            }))
            .await?;
        let mut aliases = BatchAliases::default();
        for (i, outcome) in taken.into_iter().flatten() {
            aliases.record(specs[i].id, &outcome);
            outcomes[i] = Some(outcome);
        }
        for spec in &mut specs {
            aliases.resolve(spec);
        }
        // Two of one id in the batch: the first is created.
        let mut seen = HashSet::new();
        let mut independent = Vec::new();
        let mut with_parents = Vec::new();
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
        for chunk in independent.chunks(WRITTEN_AT_ONCE) {
            let created =
                futures_util::future::try_join_all(chunk.iter().map(|(i, spec)| async move {
                    Ok::<_, StoreError>((*i, self.create(spec.clone(), now).await?))
                }))
                .await?;
            for (i, outcome) in created {
                outcomes[i] = Some(outcome);
            }
        }
        // Then those with parents, in order (a parent of the batch is stored before its
        // child), each evaluated against its parents as soon as it is stored.
        for (i, spec) in with_parents {
            let id = spec.id;
            let outcome = match self.create(spec, now).await? {
                EnqueueOutcome::Created { .. } => {
                    let mut changes = Vec::new();
                    self.evaluate(id, now, &mut changes).await?;
                    let state = tasks::read(self.objects(), id)
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

    /// Stores a new task (blocked when it has parents, else queued or scheduled), its
    /// markers first.
    async fn create(&self, spec: TaskSpec, now: DateTime<Utc>) -> StoreResult<EnqueueOutcome> {
        let id = spec.id;
        let state = if spec.depends_on.is_empty() {
            ready_state(spec.run_at, now)
        } else {
            TaskState::Blocked
        };
        let expires_at = spec.expires_at;
        let mut record = TaskRecord::new(spec, state);
        record.updated_at = now;
        let mut task = KvTask::new(record);
        let filing = self.file(&task).await?;
        let mut expiry = None;
        if let Some(at) = expires_at {
            expiry = Some(
                self.write_marker(keys::expiry(at, id), keys::stamp(Utc::now()))
                    .await?,
            );
        }
        Ok(match tasks::create(self.objects(), &mut task).await? {
            Some(_) => {
                self.refile_if_stalled(filing).await;
                self.refile_if_stalled(expiry).await;
                EnqueueOutcome::Created { id, state }
            }
            None => EnqueueOutcome::Duplicate { existing: id },
        })
    }

    async fn cancel_one(&self, id: TaskId, reason: String) -> StoreResult<Cancellation> {
        let now = self.clock.now();
        let (outcome, _) = self
            .update_filed(id, |task| match task.record.state {
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
}

impl TaskQueue for FileTaskQueue {
    fn capabilities(&self) -> Capabilities {
        CAPABILITIES
    }

    fn enqueue(&self, tasks: Vec<TaskSpec>) -> BoxFuture<'_, StoreResult<Vec<EnqueueOutcome>>> {
        Box::pin(async move {
            let outcomes = self.enqueue_all(tasks).await;
            self.enqueued.notify_waiters();
            outcomes
        })
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
        Box::pin(async move {
            Ok(tasks::read(self.objects(), id)
                .await?
                .map(|read| read.task.record))
        })
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

    fn queues(&self) -> BoxFuture<'_, StoreResult<Vec<QueueStats>>> {
        Box::pin(self.all_queue_stats())
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

    fn wait_for_tasks(&self, _queues: &[String], timeout: Duration) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let _ = tokio::time::timeout(timeout, self.enqueued.notified()).await;
        })
    }
}
