use crate::{Capabilities, StoreError};
use std::fmt::Debug;
use std::time::Duration;

use chrono::{DateTime, Utc};
use omniq_models::{
    LeaseToken, TaskError, TaskEvent, TaskEventKind, TaskId, TaskRecord, TaskSpec, TaskState,
    WorkerId,
};

use crate::{BoxFuture, StoreResult};

/// Why a task ends Cancelled when its attempt ended (retry, release, or an expired lease)
/// after its cancel was requested and before its worker stopped it.
pub const CANCELLED_WHILE_RUNNING: &str = "cancel requested while it ran";

/// The largest progress value [`TaskQueue::report_progress`] stores, encoded as JSON.
pub const MAX_PROGRESS_BYTES: usize = 16 * 1024;

/// The JSON text of a progress value, refused when larger than [`MAX_PROGRESS_BYTES`]:
/// what the stores that keep it as text write.
///
/// # Errors
/// [`StoreError::Invalid`](crate::StoreError::Invalid) when too large.
pub fn progress_text(progress: &serde_json::Value) -> StoreResult<String> {
    let text = progress.to_string();
    if text.len() > MAX_PROGRESS_BYTES {
        return Err(crate::StoreError::Invalid(format!(
            "a progress value of {} bytes is larger than the {MAX_PROGRESS_BYTES} bytes allowed",
            text.len()
        )));
    }
    Ok(text)
}

/// Default lease length when a request names none.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// What happened to one task handed to [`TaskQueue::enqueue`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnqueueOutcome {
    /// Stored as a new task in the given state.
    Created {
        /// The new task's id.
        id: TaskId,
        /// Queued, Scheduled or Blocked.
        state: TaskState,
    },
    /// A non-terminal task with the same unique key exists; nothing was stored.
    Duplicate {
        /// The existing task's id.
        existing: TaskId,
    },
}

impl EnqueueOutcome {
    /// The id the caller should track: the new one, or the existing duplicate's.
    pub fn id(&self) -> TaskId {
        match self {
            EnqueueOutcome::Created { id, .. } => *id,
            EnqueueOutcome::Duplicate { existing } => *existing,
        }
    }
}

/// A request to claim ready tasks.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DequeueRequest {
    /// Queues to take from, in strict order: a later queue is only used when the earlier
    /// ones have no ready task.
    pub queues: Vec<String>,
    /// Most leases to return.
    pub limit: usize,
    /// How long the leases last before they must be renewed.
    pub lease: Duration,
    /// The claiming worker.
    pub worker_id: WorkerId,
    /// The task names the claimer can run; `None` takes every name. A worker of an older
    /// release that lacks a new task's handler leaves that task to the workers that have
    /// it (rolling deploys).
    pub names: Option<Vec<String>>,
    /// With `names`: a task of another name is taken all the same once it has been due
    /// for this long, so that a task no worker can run ends up dead-lettered rather than
    /// waiting forever. `None`: never. Judged on the store's clock, like `run_at`.
    pub unknown_after: Option<Duration>,
}

impl DequeueRequest {
    /// A request for up to `limit` leases from `queues`, with the default lease.
    pub fn new<Q: Into<String>>(queues: impl IntoIterator<Item = Q>, limit: usize) -> Self {
        Self {
            queues: queues.into_iter().map(Into::into).collect(),
            limit,
            lease: DEFAULT_LEASE,
            worker_id: WorkerId::new("anonymous"),
            names: None,
            unknown_after: None,
        }
    }

    /// Takes only tasks named in `names`, and others once they have been due for
    /// `unknown_after` (`None`: never). See [`DequeueRequest::names`].
    pub fn only_names<N: Into<String>>(
        mut self,
        names: impl IntoIterator<Item = N>,
        unknown_after: Option<Duration>,
    ) -> Self {
        self.names = Some(names.into_iter().map(Into::into).collect());
        self.unknown_after = unknown_after;
        self
    }

    /// Whether a task of `name`, due at `run_at`, may be claimed at `now` under this
    /// request's name filter. For backends that filter in the client.
    pub fn takes(&self, name: &str, run_at: DateTime<Utc>, now: DateTime<Utc>) -> bool {
        let Some(names) = &self.names else {
            return true;
        };
        names.iter().any(|known| known == name)
            || self.unknown_due_by(now).is_some_and(|by| run_at <= by)
    }

    /// The latest `run_at` at which a task whose name is not in `names` is taken all the
    /// same, at `now`; `None` when such tasks are never taken.
    pub fn unknown_due_by(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let after = chrono::Duration::from_std(self.unknown_after?).ok()?;
        now.checked_sub_signed(after)
    }

    /// Sets the lease length.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// Sets the worker.
    pub fn worker(mut self, worker_id: WorkerId) -> Self {
        self.worker_id = worker_id;
        self
    }
}

/// A claimed task: the right to run it until `deadline` unless renewed.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Lease {
    /// The task.
    pub spec: TaskSpec,
    /// Proof of the claim, carried by heartbeats and completions.
    pub token: LeaseToken,
    /// This run's number (1-based, counted in the store).
    pub attempt: u32,
    /// When the lease runs out, on the store's clock (see [`Clock`](crate::Clock)).
    pub deadline: DateTime<Utc>,
}

impl Lease {
    /// A lease on `spec`'s task, held with `token` for its `attempt` until `deadline`.
    pub fn new(spec: TaskSpec, token: LeaseToken, attempt: u32, deadline: DateTime<Utc>) -> Self {
        Self {
            spec,
            token,
            attempt,
            deadline,
        }
    }

    /// The reference used to renew or complete this lease.
    pub fn reference(&self) -> LeaseRef {
        LeaseRef {
            task_id: self.spec.id,
            token: self.token,
        }
    }
}

/// Names a held lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct LeaseRef {
    /// The task.
    pub task_id: TaskId,
    /// The lease token.
    pub token: LeaseToken,
}

impl LeaseRef {
    /// The lease on `task_id` held with `token`.
    pub fn new(task_id: TaskId, token: LeaseToken) -> Self {
        Self { task_id, token }
    }
}

/// How an attempt ended, as told to the queue.
#[derive(Debug, Clone, PartialEq)]
pub enum CompletionOutcome {
    /// The task succeeded.
    Succeeded,
    /// The attempt failed; run again at `run_at`.
    Retry {
        /// The next attempt's earliest start.
        run_at: DateTime<Utc>,
        /// This attempt's error.
        error: TaskError,
    },
    /// The task failed for good; keep it as a dead letter.
    Failed {
        /// The final error.
        error: TaskError,
    },
    /// The attempt did not run (worker shutting down): queue the task again and give the
    /// attempt back.
    Release,
    /// The handler asked to run again later: give the attempt back and make the task due
    /// at `run_at` (scheduled if that is ahead). No error is recorded.
    Snooze {
        /// The next attempt's earliest start.
        run_at: DateTime<Utc>,
    },
    /// The task was stopped on request; it ends Cancelled.
    Cancelled {
        /// Why.
        reason: String,
    },
}

/// The end of one attempt, fenced by its lease.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Completion {
    /// The lease the attempt ran under.
    pub lease: LeaseRef,
    /// How it ended.
    pub outcome: CompletionOutcome,
}

impl Completion {
    /// How the attempt held by `lease` ended.
    pub fn new(lease: LeaseRef, outcome: CompletionOutcome) -> Self {
        Self { lease, outcome }
    }
}

/// Whether a completion was applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompletionStatus {
    /// Applied: now, or already by an earlier call with the same lease (a completion
    /// re-sent after its reply was lost is applied once and reported Applied again).
    Applied,
    /// Refused: the lease had expired or been taken by another worker, and nothing changed.
    LeaseLost,
}

/// A change of state the store made on its own, reported so that callers can log it:
/// a lease recovered, a task expired, a dependent unblocked or cancelled.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StateChange {
    /// The task.
    pub task_id: TaskId,
    /// Its handler name.
    pub task_name: String,
    /// Its queue.
    pub queue: String,
    /// Runs used so far.
    pub attempts: u32,
    /// The state it is in now.
    pub state: TaskState,
    /// Why, for cancellations and expiries.
    pub reason: Option<String>,
}

impl StateChange {
    /// A task's new `state` after its `attempts`, with the `reason` it ended for.
    pub fn new(
        task_id: TaskId,
        task_name: String,
        queue: String,
        attempts: u32,
        state: TaskState,
        reason: Option<String>,
    ) -> Self {
        Self {
            task_id,
            task_name,
            queue,
            attempts,
            state,
            reason,
        }
    }

    /// An event of `kind` about this change, carrying its reason as the message.
    pub fn event(&self, kind: TaskEventKind) -> TaskEvent {
        let mut event = TaskEvent::for_task(kind, self.task_id, &self.task_name, &self.queue)
            .attempt(self.attempts);
        event.message.clone_from(&self.reason);
        event
    }
}

/// Whether a lease is still held, as a heartbeat found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseStatus {
    /// Held, and extended.
    Held,
    /// Held and extended, but the task's cancellation was requested: stop it.
    CancelRequested,
    /// Not held any more: another worker owns the task, or it was finished.
    Lost,
}

/// What [`TaskQueue::complete`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Completed {
    /// One status per completion, in order.
    pub statuses: Vec<CompletionStatus>,
    /// Dependents that the finished tasks unblocked or cancelled.
    pub changes: Vec<StateChange>,
}

impl Completed {
    /// One status per completion, in order, and the state changes they caused.
    pub fn new(statuses: Vec<CompletionStatus>, changes: Vec<StateChange>) -> Self {
        Self { statuses, changes }
    }
}

/// What [`TaskQueue::cancel`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Cancellation {
    /// The outcome for the task itself.
    pub outcome: CancelOutcome,
    /// Dependents cancelled in turn.
    pub changes: Vec<StateChange>,
}

impl Cancellation {
    /// What a cancel did, and the state changes it caused.
    pub fn new(outcome: CancelOutcome, changes: Vec<StateChange>) -> Self {
        Self { outcome, changes }
    }
}

/// Which dead letters to send back to their queues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedriveTarget {
    /// These tasks (those not Failed are left alone).
    Tasks(Vec<TaskId>),
    /// Every Failed task of one queue.
    Queue(String),
    /// Every Failed task.
    All,
}

/// Which finished tasks to delete.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PurgeRequest {
    /// Terminal states to delete (empty = every terminal state). Non-terminal states are
    /// refused.
    pub states: Vec<TaskState>,
    /// Only this queue.
    pub queue: Option<String>,
    /// Only tasks finished before this time.
    pub finished_before: Option<DateTime<Utc>>,
    /// At most this many tasks per call (0 = [`DEFAULT_PURGE_LIMIT`]; larger than
    /// [`MAX_PURGE_LIMIT`] is clamped). The bound keeps one call short, so it never holds a
    /// writer lock or scans for long; callers loop until a call returns 0.
    pub limit: usize,
}

impl PurgeRequest {
    /// Every finished task, the default bound per call.
    pub fn new() -> Self {
        Self::default()
    }

    /// Only tasks in these terminal states.
    #[must_use]
    pub fn states(mut self, states: impl IntoIterator<Item = TaskState>) -> Self {
        self.states = states.into_iter().collect();
        self
    }

    /// Only this queue.
    #[must_use]
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }

    /// Only tasks finished before `before`.
    #[must_use]
    pub fn finished_before(mut self, before: DateTime<Utc>) -> Self {
        self.finished_before = Some(before);
        self
    }

    /// At most this many tasks per call (see [`effective_purge_limit`]).
    #[must_use]
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    /// The states this purge deletes: those it names, or every terminal state when it
    /// names none.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] when it names a state that is not finished: a purge never
    /// deletes live work.
    pub fn finished_states(&self) -> StoreResult<Vec<TaskState>> {
        if let Some(state) = self.states.iter().find(|s| !s.is_terminal()) {
            return Err(StoreError::Invalid(format!(
                "cannot purge {state} tasks: only finished tasks can be purged"
            )));
        }
        Ok(if self.states.is_empty() {
            TaskState::ALL
                .into_iter()
                .filter(|s| s.is_terminal())
                .collect()
        } else {
            self.states.clone()
        })
    }
}

/// The most rows one purge call deletes when its limit is 0.
pub const DEFAULT_PURGE_LIMIT: usize = 1_000;

/// The most rows one purge call deletes, whatever limit it asks for.
pub const MAX_PURGE_LIMIT: usize = 10_000;

/// The per-call bound a purge applies for a requested `limit`: 0 means
/// [`DEFAULT_PURGE_LIMIT`], anything above [`MAX_PURGE_LIMIT`] is clamped to it.
pub fn effective_purge_limit(limit: usize) -> usize {
    if limit == 0 {
        DEFAULT_PURGE_LIMIT
    } else {
        limit.min(MAX_PURGE_LIMIT)
    }
}

/// The default page of [`TaskQuery`] when its limit is 0.
pub const DEFAULT_LIST_LIMIT: usize = 100;

/// The largest page [`TaskQuery`] and [`EventQuery`](crate::EventQuery) return; larger
/// limits are clamped, so one listing call never reads an unbounded set.
pub const MAX_LIST_LIMIT: usize = 1_000;

/// The result of a cancel request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The task had not started and is now Cancelled.
    Cancelled,
    /// The task is running; the store marked it for cancellation and its worker will stop it.
    Requested,
    /// The task had already finished in the given state.
    AlreadyFinished(TaskState),
}

/// Filters for listing tasks.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct TaskQuery {
    /// Only this queue.
    pub queue: Option<String>,
    /// Only these states (empty = any).
    pub states: Vec<TaskState>,
    /// Skip this many (paging).
    pub offset: usize,
    /// At most this many (0 = [`DEFAULT_LIST_LIMIT`]; larger than [`MAX_LIST_LIMIT`] is
    /// clamped).
    pub limit: usize,
}

impl TaskQuery {
    /// Every task, newest first, the default page.
    pub fn new() -> Self {
        Self::default()
    }

    /// Only this queue.
    #[must_use]
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }

    /// Only tasks in these states.
    #[must_use]
    pub fn states(mut self, states: impl IntoIterator<Item = TaskState>) -> Self {
        self.states = states.into_iter().collect();
        self
    }

    /// Skips this many tasks.
    #[must_use]
    pub fn offset(mut self, offset: usize) -> Self {
        self.offset = offset;
        self
    }

    /// At most this many tasks (see [`TaskQuery::effective_limit`]).
    #[must_use]
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    /// The page size to apply: 0 means [`DEFAULT_LIST_LIMIT`], anything above
    /// [`MAX_LIST_LIMIT`] is clamped to it.
    pub fn effective_limit(&self) -> usize {
        if self.limit == 0 {
            DEFAULT_LIST_LIMIT
        } else {
            self.limit.min(MAX_LIST_LIMIT)
        }
    }
}

/// Counts of a queue's tasks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueStats {
    /// The queue.
    pub queue: String,
    /// Count per state; states with no task are left out.
    pub counts: Vec<(TaskState, u64)>,
    /// When the oldest ready task was enqueued.
    pub oldest_queued_at: Option<DateTime<Utc>>,
    /// Whether the queue is paused ([`TaskQueue::set_queue_paused`]). Stores fill only the
    /// counts; the client (`AsyncOmniQ::queue_stats`) sets this from
    /// [`TaskQueue::paused_queues`].
    pub paused: bool,
}

impl QueueStats {
    /// A queue's `counts` per state and its oldest queued task's creation time.
    pub fn new(
        queue: String,
        counts: Vec<(TaskState, u64)>,
        oldest_queued_at: Option<DateTime<Utc>>,
    ) -> Self {
        Self {
            queue,
            counts,
            oldest_queued_at,
            paused: false,
        }
    }

    /// The count for one state.
    pub fn count(&self, state: TaskState) -> u64 {
        self.counts
            .iter()
            .find(|(s, _)| *s == state)
            .map_or(0, |(_, n)| *n)
    }
}

/// The store of tasks: enqueue, claim with leases, complete, inspect.
///
/// # Contract
/// Every backend honours the lifecycle rules in `docs/lifecycle.md`, checked by the
/// conformance suite:
/// - Claims order by queue (strict, in the order requested), then priority (higher first),
///   then `run_at`, then enqueue order. Tasks whose `run_at` is in the future are not claimed.
/// - A claim counts an attempt in the store and mints a fresh [`LeaseToken`]. Heartbeats and
///   completions carrying any other token are refused: that is the fence that stops a
///   stalled worker from overwriting the work of the one that took over.
/// - A task never exists only in a worker's memory: until a completion is applied, it is
///   in the store as Running with a lease deadline, and [`TaskQueue::recover_expired`]
///   takes it back after the deadline.
pub trait TaskQueue: Send + Sync + Debug + 'static {
    /// What this queue supports beyond enqueue, claim, heartbeat, complete and recovery.
    /// A call that needs a capability the queue does not declare fails with
    /// [`StoreError::Unsupported`](crate::StoreError::Unsupported), never with a silent
    /// approximation; the conformance suite runs the cases of every declared capability
    /// and checks the refusal of every other.
    fn capabilities(&self) -> Capabilities;

    /// Stores new tasks, in one round trip where the backend allows.
    ///
    /// A task with parents is stored `Blocked` until its [`RunWhen`](omniq_models::RunWhen)
    /// condition settles (`Cancelled` at once if it already cannot hold); a parent may be
    /// an earlier task of the same batch.
    ///
    /// # Errors
    /// [`StoreError::UnknownParent`](crate::StoreError::UnknownParent) when a parent does
    /// not exist (nothing of the batch is stored), or a backend error.
    fn enqueue(&self, tasks: Vec<TaskSpec>) -> BoxFuture<'_, StoreResult<Vec<EnqueueOutcome>>>;

    /// Claims up to `request.limit` ready tasks. Returns an empty list when none is ready;
    /// it does not wait (see [`TaskQueue::wait_for_tasks`]).
    ///
    /// # Errors
    /// A backend error; no lease was granted in that case.
    ///
    /// # Cancel safety
    /// Not cancel safe: a dropped future may have claimed tasks whose leases are lost to
    /// the caller; they come back after their lease expires.
    fn dequeue(&self, request: DequeueRequest) -> BoxFuture<'_, StoreResult<Vec<Lease>>>;

    /// Extends held leases to now + `extend`, on the store's clock (see
    /// [`Clock`](crate::Clock)). Returns the status of each lease.
    ///
    /// # Errors
    /// A backend error.
    fn heartbeat(
        &self,
        leases: Vec<LeaseRef>,
        extend: Duration,
    ) -> BoxFuture<'_, StoreResult<Vec<LeaseStatus>>>;

    /// Applies completions, each fenced by its lease, and settles the dependents of the
    /// tasks that finished.
    ///
    /// Idempotent per lease: a completion sent again with the same lease after the first
    /// was applied (its reply lost to a timeout or a dropped connection) changes nothing
    /// and is reported [`CompletionStatus::Applied`]; the conformance case
    /// `a_completion_resent_with_the_same_token_is_applied_once` holds every backend to it.
    /// A lease recovered after its deadline, or taken over by a new claim, is refused.
    ///
    /// # Errors
    /// A backend error; none of the batch may have been applied.
    fn complete(&self, completions: Vec<Completion>) -> BoxFuture<'_, StoreResult<Completed>>;

    /// Takes back up to `limit` tasks whose lease expired: queued again, or Failed when
    /// their attempts are spent (cancelling their dependents).
    ///
    /// # Errors
    /// A backend error.
    fn recover_expired(&self, limit: usize) -> BoxFuture<'_, StoreResult<Vec<StateChange>>>;

    /// Expires up to `limit` tasks not started before their `expires_at` (cancelling their
    /// dependents). Claims never hand out an expired task, whether or not this ran.
    ///
    /// # Errors
    /// A backend error.
    fn expire_due(&self, limit: usize) -> BoxFuture<'_, StoreResult<Vec<StateChange>>>;

    /// Sends dead letters (Failed tasks) back to their queues as new: Queued, attempts
    /// reset, error history kept. Returns the ids re-driven. A task whose unique key is
    /// now held by another live task stays Failed.
    ///
    /// # Errors
    /// A backend error.
    fn redrive(&self, target: RedriveTarget) -> BoxFuture<'_, StoreResult<Vec<TaskId>>>;

    /// Deletes finished tasks, oldest finish first, at most
    /// [`effective_purge_limit`]`(request.limit)` of them. Returns how many; call again
    /// until it returns 0 to delete every match.
    ///
    /// # Errors
    /// [`StoreError::Invalid`](crate::StoreError::Invalid) for a non-terminal state, or a
    /// backend error.
    fn purge(&self, request: PurgeRequest) -> BoxFuture<'_, StoreResult<u64>>;

    /// Reads one task's record.
    ///
    /// # Errors
    /// A backend error.
    fn get(&self, id: TaskId) -> BoxFuture<'_, StoreResult<Option<TaskRecord>>>;

    /// Lists tasks, newest first, at most [`TaskQuery::effective_limit`] of them.
    ///
    /// # Errors
    /// A backend error.
    fn list(&self, query: TaskQuery) -> BoxFuture<'_, StoreResult<Vec<TaskRecord>>>;

    /// Counts one queue's tasks by state.
    ///
    /// # Errors
    /// A backend error.
    fn stats(&self, queue: String) -> BoxFuture<'_, StoreResult<QueueStats>>;

    /// The names of the queues that hold tasks, sorted. A backend may also list a queue
    /// whose tasks were all purged (Redis keeps the names it has seen).
    ///
    /// # Errors
    /// A backend error.
    fn queue_names(&self) -> BoxFuture<'_, StoreResult<Vec<String>>>;

    /// Every queue with its counts per state, sorted by name: [`queue_names`] and
    /// [`stats`] of each, which a backend may do in fewer calls.
    ///
    /// [`queue_names`]: TaskQueue::queue_names
    /// [`stats`]: TaskQueue::stats
    ///
    /// # Errors
    /// A backend error.
    fn queues(&self) -> BoxFuture<'_, StoreResult<Vec<QueueStats>>> {
        Box::pin(async move {
            let mut all = Vec::new();
            for name in self.queue_names().await? {
                all.push(self.stats(name).await?);
            }
            Ok(all)
        })
    }

    /// Cancels a task: at once if it has not started (cancelling its dependents too); a
    /// running task is marked, and its worker learns it at the next heartbeat.
    ///
    /// # Errors
    /// [`StoreError::TaskNotFound`](crate::StoreError::TaskNotFound), or a backend error.
    fn cancel(&self, id: TaskId, reason: String) -> BoxFuture<'_, StoreResult<Cancellation>>;

    /// Pauses (`paused`) or resumes a queue, and returns whether that changed its state
    /// (`false`: it was already so). The state is stored: it outlives the process that set
    /// it and every worker's restart.
    ///
    /// The store only keeps the state; workers read it ([`TaskQueue::paused_queues`]) at
    /// least once per heartbeat interval and claim nothing from a paused queue. Tasks can
    /// still be enqueued into a paused queue; running ones run to their end.
    ///
    /// # Errors
    /// [`StoreError::Unsupported`](crate::StoreError::Unsupported) without
    /// [`Capability::QueuePause`](crate::Capability::QueuePause);
    /// [`StoreError::Invalid`](crate::StoreError::Invalid) for an empty queue name; or a
    /// backend error.
    fn set_queue_paused(&self, queue: String, paused: bool) -> BoxFuture<'_, StoreResult<bool>> {
        let _ = (queue, paused);
        Box::pin(async {
            Err(crate::StoreError::Unsupported {
                backend: "this task queue",
                operation: crate::Capability::QueuePause.as_str(),
            })
        })
    }

    /// The paused queues, sorted.
    ///
    /// # Errors
    /// [`StoreError::Unsupported`](crate::StoreError::Unsupported) without
    /// [`Capability::QueuePause`](crate::Capability::QueuePause), or a backend error.
    fn paused_queues(&self) -> BoxFuture<'_, StoreResult<Vec<String>>> {
        Box::pin(async {
            Err(crate::StoreError::Unsupported {
                backend: "this task queue",
                operation: crate::Capability::QueuePause.as_str(),
            })
        })
    }

    /// Stores `progress` (a JSON value, at most [`MAX_PROGRESS_BYTES`] once encoded) on the
    /// running task `lease` holds, and extends the lease to now + `extend` as
    /// [`heartbeat`](TaskQueue::heartbeat) does: a handler that reports progress keeps its
    /// lease. Fenced by the lease like a heartbeat: a lease no longer held stores nothing
    /// and is reported [`LeaseStatus::Lost`].
    ///
    /// # Errors
    /// [`StoreError::Unsupported`](crate::StoreError::Unsupported) without
    /// [`Capability::Progress`](crate::Capability::Progress);
    /// [`StoreError::Invalid`](crate::StoreError::Invalid) for a value too large; or a
    /// backend error.
    fn report_progress(
        &self,
        lease: LeaseRef,
        progress: serde_json::Value,
        extend: Duration,
    ) -> BoxFuture<'_, StoreResult<LeaseStatus>> {
        let _ = (lease, progress, extend);
        Box::pin(async {
            Err(crate::StoreError::Unsupported {
                backend: "this task queue",
                operation: crate::Capability::Progress.as_str(),
            })
        })
    }

    /// The state stored under the limiter `key`, with the version to replace it from;
    /// `None` when nothing was ever written there.
    ///
    /// # Errors
    /// [`StoreError::Unsupported`](crate::StoreError::Unsupported) without
    /// [`Capability::Limits`](crate::Capability::Limits);
    /// [`StoreError::Invalid`](crate::StoreError::Invalid) for a bad key
    /// ([`validate_limiter_key`](crate::validate_limiter_key)); or a backend error.
    fn read_limiter(&self, key: String) -> BoxFuture<'_, StoreResult<Option<crate::LimiterState>>> {
        let _ = key;
        Box::pin(async {
            Err(crate::StoreError::Unsupported {
                backend: "this task queue",
                operation: crate::Capability::Limits.as_str(),
            })
        })
    }

    /// Replaces the state under the limiter `key` with `bytes` if it is still at
    /// `expected` (`None`: only if nothing was ever written there). Returns whether it was
    /// written; `false` means another writer came first and nothing changed.
    ///
    /// A reply lost after the write leaves the caller unsure; reading again tells, as the
    /// version then differs from `expected`.
    ///
    /// # Errors
    /// [`StoreError::Unsupported`](crate::StoreError::Unsupported) without
    /// [`Capability::Limits`](crate::Capability::Limits);
    /// [`StoreError::Invalid`](crate::StoreError::Invalid) for a bad key or a state too
    /// large ([`validate_limiter_write`](crate::validate_limiter_write)); or a backend
    /// error.
    fn write_limiter(
        &self,
        key: String,
        expected: Option<crate::LimiterVersion>,
        bytes: Vec<u8>,
    ) -> BoxFuture<'_, StoreResult<bool>> {
        let _ = (key, expected, bytes);
        Box::pin(async {
            Err(crate::StoreError::Unsupported {
                backend: "this task queue",
                operation: crate::Capability::Limits.as_str(),
            })
        })
    }

    /// Waits until a task may be ready in one of `queues`, or `timeout` passes.
    ///
    /// Backends with a wake-up channel return as soon as a task is enqueued; the default
    /// just sleeps for `timeout`, which makes it a polling interval. Either way, callers
    /// must dequeue to find out: a wake-up is a hint, not a promise.
    ///
    /// # Cancel safety
    /// Cancel safe.
    fn wait_for_tasks(&self, queues: &[String], timeout: Duration) -> BoxFuture<'_, ()> {
        let _ = queues;
        Box::pin(tokio::time::sleep(timeout))
    }

    /// Tells the queue that its caller (a worker shutting down) claims no more from
    /// `queues`. A store that pushes tasks ahead of claims (a broker's consumer with a
    /// prefetch) gives back the ones it holds unclaimed, so that closing the connection
    /// later does not count them as attempts lost with their worker. The default does
    /// nothing: stores that hand out tasks only when claimed hold none.
    ///
    /// # Errors
    /// A backend error; what could not be given back comes back when the connection
    /// closes, as after a crash.
    fn stop_claiming(&self, queues: &[String]) -> BoxFuture<'_, StoreResult<()>> {
        let _ = queues;
        Box::pin(async { Ok(()) })
    }
}
