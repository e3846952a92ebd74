//! Fault injection for tests (feature `testing`): store wrappers that fail, hang, delay or
//! lose the reply of any call, under the control of a shared [`Faults`] handle.
//!
//! Each wrapper ([`FaultyQueue`], [`FaultyResults`], [`FaultyEvents`], [`FaultySchedules`])
//! holds a real store and implements the same trait, so a worker or a facade built over the
//! wrappers cannot tell them from the real thing. One [`Faults`] (cheap to clone) drives all
//! the wrappers built with it, so `faults.outage()` takes every store down at once, the way a
//! shared server would go down.
//!
//! Every call is counted per [`Op`], and the counters are observable: tests wait on
//! [`Faults::wait_for_calls`] / [`Faults::wait_for_faults`] ("until 3 completes failed")
//! instead of sleeping.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use omniq_storage::testing::{Fault, FaultyQueue, Faults, Op, Window};
//! # fn wrap(real: Arc<dyn omniq_storage::TaskQueue>) {
//! let faults = Faults::new();
//! let queue = Arc::new(FaultyQueue::new(real, faults.clone()));
//! // The next two completions are applied, but their replies are lost.
//! faults.set(Op::Complete, Fault::LoseReply, Window::Next(2));
//! // Every call fails for 6 s.
//! faults.outage_for(Duration::from_secs(6));
//! # }
//! ```

mod restricted;

pub use restricted::Restricted;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use omniq_models::{Schedule, TaskEvent, TaskId, TaskRecord, TaskResult, TaskSpec};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::{
    BoxFuture, Cancellation, Completed, Completion, DequeueRequest, EnqueueOutcome, EventQuery,
    EventStore, Lease, LeaseRef, LeaseStatus, LimiterState, LimiterVersion, PurgeRequest,
    QueueStats, RedriveTarget, ResultStore, ScheduleStore, StateChange, StoreError, StoreResult,
    TaskQuery, TaskQueue,
};

/// The backend name injected errors report.
const BACKEND: &str = "faulty";

/// One store operation a fault can target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Op {
    /// [`TaskQueue::enqueue`].
    Enqueue,
    /// [`TaskQueue::dequeue`].
    Dequeue,
    /// [`TaskQueue::heartbeat`].
    Heartbeat,
    /// [`TaskQueue::complete`].
    Complete,
    /// [`TaskQueue::recover_expired`].
    RecoverExpired,
    /// [`TaskQueue::expire_due`].
    ExpireDue,
    /// [`TaskQueue::redrive`].
    Redrive,
    /// [`TaskQueue::purge`].
    Purge,
    /// [`TaskQueue::get`].
    GetTask,
    /// [`TaskQueue::list`].
    ListTasks,
    /// [`TaskQueue::stats`].
    Stats,
    /// [`TaskQueue::queue_names`].
    QueueNames,
    /// [`TaskQueue::cancel`].
    Cancel,
    /// [`TaskQueue::set_queue_paused`].
    SetQueuePaused,
    /// [`TaskQueue::paused_queues`].
    PausedQueues,
    /// [`TaskQueue::report_progress`].
    ReportProgress,
    /// [`TaskQueue::read_limiter`].
    ReadLimiter,
    /// [`TaskQueue::write_limiter`].
    WriteLimiter,
    /// [`ResultStore::put`].
    PutResults,
    /// [`ResultStore::get`].
    GetResult,
    /// [`ResultStore::delete`].
    DeleteResult,
    /// [`ResultStore::purge_expired`].
    PurgeResults,
    /// [`EventStore::append`].
    AppendEvents,
    /// [`EventStore::query`].
    QueryEvents,
    /// [`EventStore::purge_before`].
    PurgeEvents,
    /// [`EventStore::follow`].
    FollowEvents,
    /// [`ScheduleStore::create`].
    CreateSchedule,
    /// [`ScheduleStore::update`].
    UpdateSchedule,
    /// [`ScheduleStore::get`].
    GetSchedule,
    /// [`ScheduleStore::list`].
    ListSchedules,
    /// [`ScheduleStore::delete`].
    DeleteSchedule,
    /// [`ScheduleStore::due`].
    DueSchedules,
    /// [`ScheduleStore::advance`].
    AdvanceSchedule,
}

/// What happens to a call a rule applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// Fail at once with an [`Unavailable`](crate::StoreErrorKind::Unavailable) error; the
    /// real store is not called.
    Fail,
    /// Wait until the rule ends (cleared, replaced, or its [`Window::For`] runs out), then
    /// run the real call. Under [`Window::Next`] or [`Window::UntilCleared`] that is until
    /// cleared, so the caller's own timeout is what bounds it.
    Hang,
    /// Wait this long, then run the real call.
    Delay(Duration),
    /// Run the real call (its effect happens), then return an
    /// [`Unavailable`](crate::StoreErrorKind::Unavailable) error instead of its reply: a
    /// connection that dropped after the server committed.
    LoseReply,
}

/// How long a rule applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Window {
    /// The next `n` calls it targets; then the rule removes itself.
    Next(u64),
    /// Until [`Faults::clear`] or [`Faults::restore`].
    UntilCleared,
    /// For this long from when the rule is set.
    For(Duration),
}

/// The error an injected fault returns, as the source of a [`StoreError::Unavailable`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("injected fault {fault:?} on {op:?}")]
pub struct InjectedFault {
    /// The operation hit.
    pub op: Op,
    /// The fault.
    pub fault: Fault,
}

/// [`Faults::wait_for_calls`] or [`Faults::wait_for_faults`] ran out of time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("waited {timeout:?} for {wanted} {what} of {op:?}, saw {seen}")]
pub struct WaitTimedOut {
    /// The operation waited on.
    pub op: Op,
    /// `calls` or `faults`.
    pub what: &'static str,
    /// The count waited for.
    pub wanted: u64,
    /// The count when time ran out.
    pub seen: u64,
    /// How long it waited.
    pub timeout: Duration,
}

/// Per-operation counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Calls made, faulty or not, counted when the call starts.
    pub calls: u64,
    /// Calls a fault hit, counted when the fault takes effect: at once for `Fail`, `Hang`
    /// and `Delay`; after the real call returned for `LoseReply`.
    pub faults: u64,
}

#[derive(Debug, Clone, Copy)]
struct Rule {
    /// Identifies this rule so a hanging call notices it was cleared or replaced.
    id: u64,
    fault: Fault,
    remaining: Option<u64>,
    until: Option<Instant>,
}

impl Rule {
    fn expired(&self, now: Instant) -> bool {
        self.remaining == Some(0) || self.until.is_some_and(|until| now >= until)
    }

    /// Whether calls this rule made hang are still held.
    fn holds_hangs(&self, now: Instant) -> bool {
        self.fault == Fault::Hang && self.until.is_none_or(|until| now < until)
    }
}

#[derive(Debug, Default)]
struct State {
    next_id: u64,
    /// A rule for every operation (an outage); checked before the per-operation rules.
    all: Option<Rule>,
    rules: HashMap<Op, Rule>,
    counts: HashMap<Op, Counts>,
}

#[derive(Debug)]
struct Inner {
    state: Mutex<State>,
    /// Bumped on every change of rules or counters, so waiters wake without polling.
    changed: watch::Sender<u64>,
}

/// The shared controller of the faulty wrappers. Clones share the same rules and counters.
#[derive(Debug, Clone)]
pub struct Faults {
    inner: Arc<Inner>,
}

impl Default for Faults {
    fn default() -> Self {
        Self::new()
    }
}

enum Decision {
    Pass,
    Fail,
    Hang { id: u64, all: bool },
    Delay(Duration),
    LoseReply,
}

impl Faults {
    /// A controller with no rules: every call passes through.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                changed: watch::channel(0).0,
            }),
        }
    }

    fn with_state<T>(&self, change: impl FnOnce(&mut State) -> T) -> T {
        // A panic elsewhere while holding the lock leaves plain counters behind: still usable.
        let mut state = self
            .inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let out = change(&mut state);
        drop(state);
        self.inner.changed.send_modify(|version| *version += 1);
        out
    }

    fn rule(state: &mut State, fault: Fault, window: Window) -> Rule {
        state.next_id += 1;
        let (remaining, until) = match window {
            Window::Next(n) => (Some(n), None),
            Window::UntilCleared => (None, None),
            Window::For(duration) => (None, Some(Instant::now() + duration)),
        };
        Rule {
            id: state.next_id,
            fault,
            remaining,
            until,
        }
    }

    /// Applies `fault` to calls of `op` for `window`, replacing any earlier rule for `op`.
    pub fn set(&self, op: Op, fault: Fault, window: Window) {
        self.with_state(|state| {
            let rule = Self::rule(state, fault, window);
            state.rules.insert(op, rule);
        });
    }

    /// Applies `fault` to calls of every operation for `window` (a [`Window::Next`] count is
    /// shared by all operations). Takes precedence over per-operation rules.
    pub fn set_all(&self, fault: Fault, window: Window) {
        self.with_state(|state| {
            state.all = Some(Self::rule(state, fault, window));
        });
    }

    /// Removes the rule for `op`, waking calls it holds hanging.
    pub fn clear(&self, op: Op) {
        self.with_state(|state| {
            state.rules.remove(&op);
        });
    }

    /// Every call fails ([`Fault::Fail`]) until [`Faults::restore`].
    pub fn outage(&self) {
        self.set_all(Fault::Fail, Window::UntilCleared);
    }

    /// Every call fails ([`Fault::Fail`]) for `duration`.
    pub fn outage_for(&self, duration: Duration) {
        self.set_all(Fault::Fail, Window::For(duration));
    }

    /// Removes every rule (the outage and the per-operation ones), waking hanging calls.
    /// Counters are kept.
    pub fn restore(&self) {
        self.with_state(|state| {
            state.all = None;
            state.rules.clear();
        });
    }

    /// The counters of `op`.
    pub fn counts(&self, op: Op) -> Counts {
        let state = self
            .inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        state.counts.get(&op).copied().unwrap_or_default()
    }

    /// Calls of `op` so far.
    pub fn calls(&self, op: Op) -> u64 {
        self.counts(op).calls
    }

    /// Calls of `op` a fault hit so far.
    pub fn faults(&self, op: Op) -> u64 {
        self.counts(op).faults
    }

    /// Waits until `op` has been called at least `n` times in all.
    ///
    /// # Errors
    /// [`WaitTimedOut`] when `timeout` passes first.
    pub async fn wait_for_calls(
        &self,
        op: Op,
        n: u64,
        timeout: Duration,
    ) -> Result<(), WaitTimedOut> {
        self.wait_for(op, "calls", n, timeout, |faults| faults.counts(op).calls)
            .await
    }

    /// Waits until faults have hit at least `n` calls of `op` in all.
    ///
    /// # Errors
    /// [`WaitTimedOut`] when `timeout` passes first.
    pub async fn wait_for_faults(
        &self,
        op: Op,
        n: u64,
        timeout: Duration,
    ) -> Result<(), WaitTimedOut> {
        self.wait_for(op, "faults", n, timeout, |faults| faults.counts(op).faults)
            .await
    }

    /// Waits until faults have hit at least `n` calls of `ops` together: a fault that may
    /// land on one step or the next, depending on how fast the store is.
    ///
    /// # Errors
    /// [`WaitTimedOut`] (naming the first of `ops`) when `timeout` passes first.
    pub async fn wait_for_faults_in(
        &self,
        ops: &[Op],
        n: u64,
        timeout: Duration,
    ) -> Result<(), WaitTimedOut> {
        let first = ops.first().copied().unwrap_or(Op::Enqueue);
        self.wait_for(first, "faults", n, timeout, |faults| {
            ops.iter().map(|op| faults.counts(*op).faults).sum()
        })
        .await
    }

    async fn wait_for(
        &self,
        op: Op,
        what: &'static str,
        wanted: u64,
        timeout: Duration,
        read: impl Fn(&Self) -> u64,
    ) -> Result<(), WaitTimedOut> {
        // Subscribe before reading, so a change between the read and the wait is not missed.
        let mut changed = self.inner.changed.subscribe();
        let deadline = Instant::now() + timeout;
        loop {
            let seen = read(self);
            if seen >= wanted {
                return Ok(());
            }
            let timed_out = WaitTimedOut {
                op,
                what,
                wanted,
                seen,
                timeout,
            };
            match tokio::time::timeout_at(deadline, changed.changed()).await {
                Ok(Ok(())) => {}
                // The sender lives in `self`, so it cannot be gone; treat it as a timeout.
                Ok(Err(_)) | Err(_) => return Err(timed_out),
            }
        }
    }

    fn decide(&self, op: Op) -> Decision {
        self.with_state(|state| {
            state.counts.entry(op).or_default().calls += 1;
            let now = Instant::now();
            // A spent `Next(n)` hang rule stays (inactive) so the calls it holds keep
            // hanging until it is cleared; any other finished rule goes.
            if state
                .all
                .is_some_and(|rule| rule.expired(now) && !rule.holds_hangs(now))
            {
                state.all = None;
            }
            if state
                .rules
                .get(&op)
                .is_some_and(|rule| rule.expired(now) && !rule.holds_hangs(now))
            {
                state.rules.remove(&op);
            }
            let all = state.all.as_mut().filter(|rule| !rule.expired(now));
            let (rule, all) = match all {
                Some(rule) => (rule, true),
                None => match state.rules.get_mut(&op).filter(|rule| !rule.expired(now)) {
                    Some(rule) => (rule, false),
                    None => return Decision::Pass,
                },
            };
            if let Some(remaining) = rule.remaining.as_mut() {
                *remaining -= 1;
            }
            let decision = match rule.fault {
                Fault::Fail => Decision::Fail,
                Fault::Hang => Decision::Hang { id: rule.id, all },
                Fault::Delay(duration) => Decision::Delay(duration),
                Fault::LoseReply => Decision::LoseReply,
            };
            if !matches!(decision, Decision::LoseReply) {
                state.counts.entry(op).or_default().faults += 1;
            }
            decision
        })
    }

    /// Whether the hang rule `id` still holds, and until when at most.
    fn hang_holds(&self, op: Op, id: u64, all: bool) -> (bool, Option<Instant>) {
        let state = self
            .inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let rule = if all {
            state.all
        } else {
            state.rules.get(&op).copied()
        };
        match rule {
            Some(rule) if rule.id == id => {
                // A `Next(n)` rule that has used up its count still holds the calls it hit.
                (rule.holds_hangs(Instant::now()), rule.until)
            }
            _ => (false, None),
        }
    }

    async fn hang(&self, op: Op, id: u64, all: bool) {
        let mut changed = self.inner.changed.subscribe();
        loop {
            let (holds, until) = self.hang_holds(op, id, all);
            if !holds {
                return;
            }
            let woke = match until {
                Some(until) => tokio::time::timeout_at(until, changed.changed())
                    .await
                    .unwrap_or(Ok(())),
                None => changed.changed().await,
            };
            if woke.is_err() {
                return;
            }
        }
    }

    fn count_fault(&self, op: Op) {
        self.with_state(|state| state.counts.entry(op).or_default().faults += 1);
    }

    /// Runs one call of `op` under the current rules. `call` is only invoked when the rule
    /// lets the real store be reached: a backend may do its work when the method is called,
    /// before its future is polled.
    async fn apply<T, F>(&self, op: Op, call: impl FnOnce() -> F) -> StoreResult<T>
    where
        F: Future<Output = StoreResult<T>>,
    {
        match self.decide(op) {
            Decision::Pass => call().await,
            Decision::Fail => Err(injected(op, Fault::Fail)),
            Decision::Delay(duration) => {
                tokio::time::sleep(duration).await;
                call().await
            }
            Decision::Hang { id, all } => {
                self.hang(op, id, all).await;
                call().await
            }
            Decision::LoseReply => {
                // The effect happens (or fails for real); either way the caller hears nothing.
                let _lost = call().await;
                self.count_fault(op);
                Err(injected(op, Fault::LoseReply))
            }
        }
    }
}

fn injected(op: Op, fault: Fault) -> StoreError {
    StoreError::unavailable(BACKEND, InjectedFault { op, fault })
}

/// A [`TaskQueue`] whose calls go through a [`Faults`] controller.
#[derive(Debug, Clone)]
pub struct FaultyQueue {
    inner: Arc<dyn TaskQueue>,
    faults: Faults,
}

impl FaultyQueue {
    /// Wraps `inner`, under `faults`.
    pub fn new(inner: Arc<dyn TaskQueue>, faults: Faults) -> Self {
        Self { inner, faults }
    }
}

impl TaskQueue for FaultyQueue {
    fn capabilities(&self) -> crate::Capabilities {
        self.inner.capabilities()
    }

    fn enqueue(&self, tasks: Vec<TaskSpec>) -> BoxFuture<'_, StoreResult<Vec<EnqueueOutcome>>> {
        Box::pin(
            self.faults
                .apply(Op::Enqueue, move || self.inner.enqueue(tasks)),
        )
    }

    fn dequeue(&self, request: DequeueRequest) -> BoxFuture<'_, StoreResult<Vec<Lease>>> {
        Box::pin(
            self.faults
                .apply(Op::Dequeue, move || self.inner.dequeue(request)),
        )
    }

    fn heartbeat(
        &self,
        leases: Vec<LeaseRef>,
        extend: Duration,
    ) -> BoxFuture<'_, StoreResult<Vec<LeaseStatus>>> {
        Box::pin(
            self.faults
                .apply(Op::Heartbeat, move || self.inner.heartbeat(leases, extend)),
        )
    }

    fn complete(&self, completions: Vec<Completion>) -> BoxFuture<'_, StoreResult<Completed>> {
        Box::pin(
            self.faults
                .apply(Op::Complete, move || self.inner.complete(completions)),
        )
    }

    fn recover_expired(&self, limit: usize) -> BoxFuture<'_, StoreResult<Vec<StateChange>>> {
        Box::pin(self.faults.apply(Op::RecoverExpired, move || {
            self.inner.recover_expired(limit)
        }))
    }

    fn expire_due(&self, limit: usize) -> BoxFuture<'_, StoreResult<Vec<StateChange>>> {
        Box::pin(
            self.faults
                .apply(Op::ExpireDue, move || self.inner.expire_due(limit)),
        )
    }

    fn redrive(&self, target: RedriveTarget) -> BoxFuture<'_, StoreResult<Vec<TaskId>>> {
        Box::pin(
            self.faults
                .apply(Op::Redrive, move || self.inner.redrive(target)),
        )
    }

    fn purge(&self, request: PurgeRequest) -> BoxFuture<'_, StoreResult<u64>> {
        Box::pin(
            self.faults
                .apply(Op::Purge, move || self.inner.purge(request)),
        )
    }

    fn get(&self, id: TaskId) -> BoxFuture<'_, StoreResult<Option<TaskRecord>>> {
        Box::pin(self.faults.apply(Op::GetTask, move || self.inner.get(id)))
    }

    fn list(&self, query: TaskQuery) -> BoxFuture<'_, StoreResult<Vec<TaskRecord>>> {
        Box::pin(
            self.faults
                .apply(Op::ListTasks, move || self.inner.list(query)),
        )
    }

    fn stats(&self, queue: String) -> BoxFuture<'_, StoreResult<QueueStats>> {
        Box::pin(
            self.faults
                .apply(Op::Stats, move || self.inner.stats(queue)),
        )
    }

    fn queue_names(&self) -> BoxFuture<'_, StoreResult<Vec<String>>> {
        Box::pin(
            self.faults
                .apply(Op::QueueNames, move || self.inner.queue_names()),
        )
    }

    fn cancel(&self, id: TaskId, reason: String) -> BoxFuture<'_, StoreResult<Cancellation>> {
        Box::pin(
            self.faults
                .apply(Op::Cancel, move || self.inner.cancel(id, reason)),
        )
    }

    fn set_queue_paused(&self, queue: String, paused: bool) -> BoxFuture<'_, StoreResult<bool>> {
        Box::pin(self.faults.apply(Op::SetQueuePaused, move || {
            self.inner.set_queue_paused(queue, paused)
        }))
    }

    fn paused_queues(&self) -> BoxFuture<'_, StoreResult<Vec<String>>> {
        Box::pin(
            self.faults
                .apply(Op::PausedQueues, move || self.inner.paused_queues()),
        )
    }

    fn report_progress(
        &self,
        lease: LeaseRef,
        progress: serde_json::Value,
        extend: Duration,
    ) -> BoxFuture<'_, StoreResult<LeaseStatus>> {
        Box::pin(self.faults.apply(Op::ReportProgress, move || {
            self.inner.report_progress(lease, progress, extend)
        }))
    }

    fn read_limiter(&self, key: String) -> BoxFuture<'_, StoreResult<Option<LimiterState>>> {
        Box::pin(
            self.faults
                .apply(Op::ReadLimiter, move || self.inner.read_limiter(key)),
        )
    }

    fn write_limiter(
        &self,
        key: String,
        expected: Option<LimiterVersion>,
        bytes: Vec<u8>,
    ) -> BoxFuture<'_, StoreResult<bool>> {
        Box::pin(self.faults.apply(Op::WriteLimiter, move || {
            self.inner.write_limiter(key, expected, bytes)
        }))
    }

    // A wake-up is only a hint; faults target the calls that carry data.
    fn wait_for_tasks(&self, queues: &[String], timeout: Duration) -> BoxFuture<'_, ()> {
        self.inner.wait_for_tasks(queues, timeout)
    }

    fn stop_claiming(&self, queues: &[String]) -> BoxFuture<'_, StoreResult<()>> {
        self.inner.stop_claiming(queues)
    }
}

/// A [`ResultStore`] whose calls go through a [`Faults`] controller.
#[derive(Debug, Clone)]
pub struct FaultyResults {
    inner: Arc<dyn ResultStore>,
    faults: Faults,
}

impl FaultyResults {
    /// Wraps `inner`, under `faults`.
    pub fn new(inner: Arc<dyn ResultStore>, faults: Faults) -> Self {
        Self { inner, faults }
    }
}

impl ResultStore for FaultyResults {
    fn put(&self, results: Vec<TaskResult>) -> BoxFuture<'_, StoreResult<()>> {
        Box::pin(
            self.faults
                .apply(Op::PutResults, move || self.inner.put(results)),
        )
    }

    fn get(&self, id: TaskId) -> BoxFuture<'_, StoreResult<Option<TaskResult>>> {
        Box::pin(self.faults.apply(Op::GetResult, move || self.inner.get(id)))
    }

    fn delete(&self, id: TaskId) -> BoxFuture<'_, StoreResult<bool>> {
        Box::pin(
            self.faults
                .apply(Op::DeleteResult, move || self.inner.delete(id)),
        )
    }

    fn purge_expired(&self, limit: usize) -> BoxFuture<'_, StoreResult<u64>> {
        Box::pin(
            self.faults
                .apply(Op::PurgeResults, move || self.inner.purge_expired(limit)),
        )
    }
}

/// An [`EventStore`] whose calls go through a [`Faults`] controller.
#[derive(Debug, Clone)]
pub struct FaultyEvents {
    inner: Arc<dyn EventStore>,
    faults: Faults,
}

impl FaultyEvents {
    /// Wraps `inner`, under `faults`.
    pub fn new(inner: Arc<dyn EventStore>, faults: Faults) -> Self {
        Self { inner, faults }
    }
}

impl EventStore for FaultyEvents {
    fn append(&self, events: Vec<TaskEvent>) -> BoxFuture<'_, StoreResult<()>> {
        Box::pin(
            self.faults
                .apply(Op::AppendEvents, move || self.inner.append(events)),
        )
    }

    fn query(&self, query: EventQuery) -> BoxFuture<'_, StoreResult<Vec<TaskEvent>>> {
        Box::pin(
            self.faults
                .apply(Op::QueryEvents, move || self.inner.query(query)),
        )
    }

    fn purge_before(&self, before: DateTime<Utc>, limit: usize) -> BoxFuture<'_, StoreResult<u64>> {
        Box::pin(self.faults.apply(Op::PurgeEvents, move || {
            self.inner.purge_before(before, limit)
        }))
    }

    fn follow(&self) -> BoxFuture<'_, StoreResult<Option<tokio::sync::mpsc::Receiver<TaskEvent>>>> {
        Box::pin(
            self.faults
                .apply(Op::FollowEvents, move || self.inner.follow()),
        )
    }
}

/// A [`ScheduleStore`] whose calls go through a [`Faults`] controller.
#[derive(Debug, Clone)]
pub struct FaultySchedules {
    inner: Arc<dyn ScheduleStore>,
    faults: Faults,
}

impl FaultySchedules {
    /// Wraps `inner`, under `faults`.
    pub fn new(inner: Arc<dyn ScheduleStore>, faults: Faults) -> Self {
        Self { inner, faults }
    }
}

impl ScheduleStore for FaultySchedules {
    fn create(&self, schedule: Schedule) -> BoxFuture<'_, StoreResult<(Schedule, bool)>> {
        Box::pin(
            self.faults
                .apply(Op::CreateSchedule, move || self.inner.create(schedule)),
        )
    }

    fn update(&self, schedule: Schedule) -> BoxFuture<'_, StoreResult<()>> {
        Box::pin(
            self.faults
                .apply(Op::UpdateSchedule, move || self.inner.update(schedule)),
        )
    }

    fn get(&self, name: String) -> BoxFuture<'_, StoreResult<Option<Schedule>>> {
        Box::pin(
            self.faults
                .apply(Op::GetSchedule, move || self.inner.get(name)),
        )
    }

    fn list(&self) -> BoxFuture<'_, StoreResult<Vec<Schedule>>> {
        Box::pin(
            self.faults
                .apply(Op::ListSchedules, move || self.inner.list()),
        )
    }

    fn delete(&self, name: String) -> BoxFuture<'_, StoreResult<bool>> {
        Box::pin(
            self.faults
                .apply(Op::DeleteSchedule, move || self.inner.delete(name)),
        )
    }

    fn due(&self, now: DateTime<Utc>, limit: usize) -> BoxFuture<'_, StoreResult<Vec<Schedule>>> {
        Box::pin(
            self.faults
                .apply(Op::DueSchedules, move || self.inner.due(now, limit)),
        )
    }

    fn advance(
        &self,
        schedule: Schedule,
        expected: Option<DateTime<Utc>>,
    ) -> BoxFuture<'_, StoreResult<bool>> {
        Box::pin(self.faults.apply(Op::AdvanceSchedule, move || {
            self.inner.advance(schedule, expected)
        }))
    }
}
