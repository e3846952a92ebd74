//! What a task queue on a message broker (RabbitMQ, SQS) decides about each message a
//! claim receives, written once for every broker: hand it out, count the attempts its
//! earlier holders lost, or send it on because it is not due yet or not for this worker.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use omniq_models::{LeaseToken, TaskState};

use crate::kv_task::KvTask;
use crate::{Capabilities, Capability, DequeueRequest, StoreError, StoreResult};

/// A task due within this much of now is due: sending it on would cost more than waiting.
pub const DUE_SLACK: Duration = Duration::from_millis(50);

/// How long a task of a name the claimer does not run waits before it is offered again.
pub const OTHER_NAME_WAIT: Duration = Duration::from_secs(1);

/// What to do with a message a claim received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Hand it out under a new lease.
    Claim,
    /// Earlier holders took it and never finished it: their attempts were counted on the
    /// task (see [`count_lost_attempts`]); send the task on as it now is (queued again, or
    /// a dead letter when its attempts are spent) and drop this copy.
    AttemptsLost,
    /// Not for now: send the task on, unchanged, to be due at this time, and drop this
    /// copy.
    SendOn(DateTime<Utc>),
}

/// Decides about `task`, received by `request` at `now` after `lost` earlier deliveries
/// that were never finished (a broker's redelivery flag or receive count).
///
/// Only a task stored as due later (`Scheduled`) is held to its time: a task enqueued as
/// due at once runs at once, whatever the claiming worker's clock says of its producer's.
pub fn judge(
    task: &mut KvTask,
    lost: u32,
    request: &DequeueRequest,
    now: DateTime<Utc>,
) -> Verdict {
    if lost > 0 {
        count_lost_attempts(task, lost, now);
        return Verdict::AttemptsLost;
    }
    let spec = &task.record.spec;
    let remaining = (spec.run_at - now).to_std().unwrap_or_default();
    if task.record.state == TaskState::Scheduled && remaining > DUE_SLACK {
        return Verdict::SendOn(spec.run_at);
    }
    if !request.takes(&spec.name, spec.run_at, now) {
        // Another worker may run it; if none does, it is taken once it has been due for
        // the request's `unknown_after`.
        let wait = chrono::Duration::from_std(OTHER_NAME_WAIT).unwrap_or_default();
        return Verdict::SendOn(now + wait);
    }
    Verdict::Claim
}

/// Counts `lost` attempts that ended without a completion (their workers died or lost
/// their connections), as a store counts a lapsed lease: each with a `lease lost` error,
/// and the task failed when its attempts are spent.
pub fn count_lost_attempts(task: &mut KvTask, lost: u32, now: DateTime<Utc>) {
    for _ in 0..lost {
        if task.record.state.is_terminal() {
            break;
        }
        task.record.state = TaskState::Running;
        task.record.attempts = task.record.attempts.saturating_add(1);
        task.recover(now);
    }
}

/// What a broker says when it refuses `capability`: the capability, why a broker cannot
/// have it, and the stores that do.
pub fn refusal(capability: Capability) -> &'static str {
    match capability {
        Capability::Inspection => {
            "inspection (a broker cannot read a task back: keep tasks in PostgreSQL, Redis, \
             NATS or SQLite to look at them)"
        }
        Capability::QueueListing => "queue listing (use PostgreSQL, Redis, NATS or SQLite)",
        Capability::Dependencies => {
            "dependencies (a broker cannot hold a task until others finish: use PostgreSQL \
             or Redis)"
        }
        Capability::UniqueKeys => {
            "unique keys (a broker cannot find a task by its key: use PostgreSQL or Redis)"
        }
        Capability::Expiry => "expiry (use PostgreSQL or Redis)",
        Capability::Cancellation => {
            "cancellation (a broker cannot take a task out of its queue: use PostgreSQL or \
             Redis)"
        }
        Capability::Purge => {
            "purge (a broker keeps no finished task; results and events are purged in their \
             own store)"
        }
        Capability::QueuePause => "queue pause (use PostgreSQL or Redis)",
        Capability::Progress => "progress (use PostgreSQL or Redis)",
        Capability::Limits => "rate and concurrency limits (use PostgreSQL or Redis)",
        Capability::Priorities => "priorities (use RabbitMQ, PostgreSQL or Redis)",
        other => other.as_str(),
    }
}

/// A call refused for `capability`, with the [`refusal`] that says where to go instead.
pub fn refuse<T: Send + 'static>(
    backend: &'static str,
    capability: Capability,
) -> crate::BoxFuture<'static, StoreResult<T>> {
    Box::pin(async move {
        Err(StoreError::Unsupported {
            backend,
            operation: refusal(capability),
        })
    })
}

/// [`Capabilities::check_specs`], its refusals saying where to go instead.
///
/// # Errors
/// As [`Capabilities::check_specs`].
pub fn check_specs(
    capabilities: Capabilities,
    backend: &'static str,
    specs: &[omniq_models::TaskSpec],
) -> StoreResult<()> {
    capabilities
        .check_specs(backend, specs)
        .map_err(|err| match err {
            StoreError::Unsupported { backend, operation } => StoreError::Unsupported {
                backend,
                operation: Capability::ALL
                    .into_iter()
                    .find(|c| c.as_str() == operation)
                    .map_or(operation, refusal),
            },
            other => other,
        })
}

/// How many completed leases a [`Ledger`] remembers.
const REMEMBERED_COMPLETIONS: usize = 16_384;

/// The completions a broker-backed queue applied and is applying, so that one sent again
/// after its reply was lost (or while the first is still on its way) is applied once and
/// reported applied: a broker cannot tell, once a message is acknowledged.
#[derive(Debug, Default)]
pub struct Ledger {
    applied: std::sync::Mutex<(HashSet<LeaseToken>, VecDeque<LeaseToken>)>,
    applying: std::sync::Mutex<HashSet<LeaseToken>>,
    settled: tokio::sync::Notify,
}

impl Ledger {
    /// Records `token`'s completion as applied (the last 16,384 are remembered).
    pub fn applied(&self, token: LeaseToken) {
        let mut applied = lock(&self.applied);
        if applied.0.insert(token) {
            applied.1.push_back(token);
        }
        while applied.1.len() > REMEMBERED_COMPLETIONS {
            if let Some(old) = applied.1.pop_front() {
                applied.0.remove(&old);
            }
        }
    }

    /// Whether `token`'s completion was applied.
    pub fn was_applied(&self, token: LeaseToken) -> bool {
        lock(&self.applied).0.contains(&token)
    }

    /// Marks `token`'s completion as being applied.
    pub fn start(&self, token: LeaseToken) {
        lock(&self.applying).insert(token);
    }

    /// Marks `token`'s completion as no longer being applied (applied, or given up).
    pub fn stop(&self, token: LeaseToken) {
        lock(&self.applying).remove(&token);
        self.settled.notify_waiters();
    }

    /// Waits (at most `bound`) until no completion of `tokens` is being applied.
    pub async fn settled(&self, tokens: &[LeaseToken], bound: Duration) {
        let until = tokio::time::Instant::now() + bound;
        loop {
            let notified = self.settled.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if !tokens.iter().any(|t| lock(&self.applying).contains(t)) {
                return;
            }
            if tokio::time::timeout_at(until, notified).await.is_err() {
                return;
            }
        }
    }
}

/// Messages a broker pushed (or a long poll received) ahead of claims, per OmniQ queue,
/// each tagged with the connection it came on, until a claim takes them.
#[derive(Debug)]
pub struct Pushed<T> {
    waiting: std::sync::Mutex<HashMap<String, VecDeque<(u64, T)>>>,
    arrived: tokio::sync::Notify,
}

impl<T> Default for Pushed<T> {
    fn default() -> Self {
        Self {
            waiting: std::sync::Mutex::new(HashMap::new()),
            arrived: tokio::sync::Notify::new(),
        }
    }
}

impl<T> Pushed<T> {
    /// Adds a message of `queue` that came on connection `link`, and wakes the waiters.
    pub fn push(&self, queue: &str, link: u64, message: T) {
        lock(&self.waiting)
            .entry(queue.to_owned())
            .or_default()
            .push_back((link, message));
        self.arrived.notify_waiters();
    }

    /// Puts back, first in line, messages a claim took but did not deal with.
    pub fn give_back(&self, queue: &str, link: u64, messages: Vec<T>) {
        if messages.is_empty() {
            return;
        }
        let mut all = lock(&self.waiting);
        let waiting = all.entry(queue.to_owned()).or_default();
        for message in messages.into_iter().rev() {
            waiting.push_front((link, message));
        }
    }

    /// Up to `limit` messages of `queue` that came on connection `link`; those of another
    /// connection are dropped (the broker took them back when it closed).
    pub fn take(&self, queue: &str, link: u64, limit: usize) -> Vec<T> {
        let mut all = lock(&self.waiting);
        let Some(waiting) = all.get_mut(queue) else {
            return Vec::new();
        };
        waiting.retain(|(l, _)| *l == link);
        let n = limit.min(waiting.len());
        waiting.drain(..n).map(|(_, m)| m).collect()
    }

    /// Whether a message of one of `queues` that came on connection `link` waits.
    pub fn any(&self, queues: &[String], link: u64) -> bool {
        let all = lock(&self.waiting);
        queues.iter().any(|q| {
            all.get(q)
                .is_some_and(|waiting| waiting.iter().any(|(l, _)| *l == link))
        })
    }

    /// Waits until a message of one of `queues` from connection `link` waits, or `until`.
    pub async fn wait(&self, queues: &[String], link: u64, until: tokio::time::Instant) {
        let notified = self.arrived.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if self.any(queues, link) {
            return;
        }
        let _ = tokio::time::timeout_at(until, notified).await;
    }
}

/// Runs `work` to its end on a task of its own, whatever becomes of the caller: a broker
/// call cut off by the caller's timeout must not leave a message taken but not dealt
/// with, or a changed task published but its old copy not acknowledged.
///
/// # Errors
/// `work`'s error, or a backend error of `backend` when it panicked.
pub async fn to_the_end<T: Send + 'static>(
    backend: &'static str,
    work: impl Future<Output = StoreResult<T>> + Send + 'static,
) -> StoreResult<T> {
    tokio::spawn(work)
        .await
        .map_err(|err| StoreError::backend(backend, format!("a broker call failed: {err}")))?
}

fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The [`TaskQueue`](crate::TaskQueue) methods a broker refuses, each with the
/// [`refusal`] that says where to go instead, and `expire_due`, which finds nothing (expiry
/// is refused at enqueue). Invoked inside `impl TaskQueue for …`, with the backend's name.
#[macro_export]
macro_rules! broker_refusals {
    ($backend:expr) => {
        fn expire_due(
            &self,
            limit: usize,
        ) -> $crate::BoxFuture<'_, $crate::StoreResult<Vec<$crate::StateChange>>> {
            let _ = limit;
            Box::pin(async { Ok(Vec::new()) })
        }

        fn purge(
            &self,
            request: $crate::PurgeRequest,
        ) -> $crate::BoxFuture<'_, $crate::StoreResult<u64>> {
            let _ = request;
            $crate::broker::refuse($backend, $crate::Capability::Purge)
        }

        fn get(
            &self,
            id: $crate::__private::omniq_models::TaskId,
        ) -> $crate::BoxFuture<
            '_,
            $crate::StoreResult<Option<$crate::__private::omniq_models::TaskRecord>>,
        > {
            let _ = id;
            $crate::broker::refuse($backend, $crate::Capability::Inspection)
        }

        fn list(
            &self,
            query: $crate::TaskQuery,
        ) -> $crate::BoxFuture<
            '_,
            $crate::StoreResult<Vec<$crate::__private::omniq_models::TaskRecord>>,
        > {
            let _ = query;
            $crate::broker::refuse($backend, $crate::Capability::Inspection)
        }

        fn stats(
            &self,
            queue: String,
        ) -> $crate::BoxFuture<'_, $crate::StoreResult<$crate::QueueStats>> {
            let _ = queue;
            $crate::broker::refuse($backend, $crate::Capability::Inspection)
        }

        fn queue_names(&self) -> $crate::BoxFuture<'_, $crate::StoreResult<Vec<String>>> {
            $crate::broker::refuse($backend, $crate::Capability::QueueListing)
        }

        fn cancel(
            &self,
            id: $crate::__private::omniq_models::TaskId,
            reason: String,
        ) -> $crate::BoxFuture<'_, $crate::StoreResult<$crate::Cancellation>> {
            let _ = (id, reason);
            $crate::broker::refuse($backend, $crate::Capability::Cancellation)
        }

        fn set_queue_paused(
            &self,
            queue: String,
            paused: bool,
        ) -> $crate::BoxFuture<'_, $crate::StoreResult<bool>> {
            let _ = (queue, paused);
            $crate::broker::refuse($backend, $crate::Capability::QueuePause)
        }

        fn paused_queues(&self) -> $crate::BoxFuture<'_, $crate::StoreResult<Vec<String>>> {
            $crate::broker::refuse($backend, $crate::Capability::QueuePause)
        }

        fn report_progress(
            &self,
            lease: $crate::LeaseRef,
            progress: $crate::__private::serde_json::Value,
            extend: ::std::time::Duration,
        ) -> $crate::BoxFuture<'_, $crate::StoreResult<$crate::LeaseStatus>> {
            let _ = (lease, progress, extend);
            $crate::broker::refuse($backend, $crate::Capability::Progress)
        }

        fn read_limiter(
            &self,
            key: String,
        ) -> $crate::BoxFuture<'_, $crate::StoreResult<Option<$crate::LimiterState>>> {
            let _ = key;
            $crate::broker::refuse($backend, $crate::Capability::Limits)
        }

        fn write_limiter(
            &self,
            key: String,
            expected: Option<$crate::LimiterVersion>,
            bytes: Vec<u8>,
        ) -> $crate::BoxFuture<'_, $crate::StoreResult<bool>> {
            let _ = (key, expected, bytes);
            $crate::broker::refuse($backend, $crate::Capability::Limits)
        }
    };
}

/// Implements [`StoreBackend`](crate::StoreBackend) for a broker's backend type, which has
/// an inherent `task_queue(&self)`: its task queue, and an [`AbsentStore`](crate::AbsentStore)
/// naming the backend for results, events and schedules.
#[macro_export]
macro_rules! impl_broker_backend {
    ($backend_type:ty, $backend:expr) => {
        impl $crate::StoreBackend for $backend_type {
            fn task_queue(&self) -> ::std::sync::Arc<dyn $crate::TaskQueue> {
                ::std::sync::Arc::new(<$backend_type>::task_queue(self))
            }

            fn result_store(&self) -> ::std::sync::Arc<dyn $crate::ResultStore> {
                ::std::sync::Arc::new($crate::AbsentStore::new($backend))
            }

            fn event_store(&self) -> ::std::sync::Arc<dyn $crate::EventStore> {
                ::std::sync::Arc::new($crate::AbsentStore::new($backend))
            }

            fn schedule_store(&self) -> ::std::sync::Arc<dyn $crate::ScheduleStore> {
                ::std::sync::Arc::new($crate::AbsentStore::new($backend))
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use omniq_models::{TaskOptions, TaskRecord, TaskSpec};

    fn task(options: TaskOptions, now: DateTime<Utc>) -> KvTask {
        let spec = TaskSpec::new("t", Vec::new(), options, now);
        let state = crate::kv_task::ready_state(spec.run_at, now);
        KvTask::new(TaskRecord::new(spec, state))
    }

    #[test]
    fn a_due_task_is_claimed_and_a_later_one_sent_on() {
        let now = Utc::now();
        let request = DequeueRequest::new(["default"], 1);
        assert_eq!(
            judge(&mut task(TaskOptions::default(), now), 0, &request, now),
            Verdict::Claim
        );
        let mut later = task(TaskOptions::default().delay(Duration::from_secs(60)), now);
        let due = later.record.spec.run_at;
        assert_eq!(judge(&mut later, 0, &request, now), Verdict::SendOn(due));
        // A worker whose clock is behind still runs a task enqueued as due at once.
        let behind = now - chrono::Duration::seconds(30);
        assert_eq!(
            judge(&mut task(TaskOptions::default(), now), 0, &request, behind),
            Verdict::Claim
        );
    }

    #[test]
    fn lost_attempts_are_counted_and_spend_the_task() {
        let now = Utc::now();
        let request = DequeueRequest::new(["default"], 1);
        let mut one = task(TaskOptions::default().max_attempts(3), now);
        assert_eq!(judge(&mut one, 1, &request, now), Verdict::AttemptsLost);
        assert_eq!(one.record.attempts, 1);
        assert_eq!(one.record.state, TaskState::Queued);
        let mut spent = task(TaskOptions::default().max_attempts(2), now);
        assert_eq!(judge(&mut spent, 5, &request, now), Verdict::AttemptsLost);
        assert_eq!(spent.record.attempts, 2);
        assert_eq!(spent.record.state, TaskState::Failed);
        assert_eq!(spent.record.errors.len(), 2);
    }

    #[test]
    fn a_refusal_says_where_to_go_instead() {
        let now = Utc::now();
        let parent = omniq_models::TaskId::new();
        let spec = TaskSpec::new(
            "t",
            Vec::new(),
            TaskOptions::default().depends_on(parent),
            now,
        );
        let broker = Capabilities::none().with(Capability::Delays);
        let err = check_specs(broker, "a broker", &[spec]).expect_err("no dependencies");
        assert_eq!(err.kind(), crate::StoreErrorKind::Unsupported);
        assert!(err.to_string().contains("use PostgreSQL or Redis"), "{err}");
    }

    #[test]
    fn a_task_of_another_name_waits_for_a_worker_that_runs_it() {
        let now = Utc::now();
        let request = DequeueRequest::new(["default"], 1).only_names(["other"], None);
        let verdict = judge(&mut task(TaskOptions::default(), now), 0, &request, now);
        assert_eq!(verdict, Verdict::SendOn(now + chrono::Duration::seconds(1)));
    }
}
