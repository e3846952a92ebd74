use std::collections::BTreeMap;
use std::ffi::OsString;
use std::time::Duration;

pub use omniq_models::WorkerKind;
use omniq_models::{DEFAULT_QUEUE, WorkerId};

use crate::limits::{Limit, QueueLimits};

/// The default of [`WorkerConfig::unknown_task_grace`]: an hour, longer than a rolling
/// deploy takes.
pub const DEFAULT_UNKNOWN_TASK_GRACE: Duration = Duration::from_secs(3600);

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The worker's id (generated when `None`).
    pub id: Option<WorkerId>,
    /// Queues to consume, in strict priority order.
    pub queues: Vec<String>,
    /// Most tasks running at once.
    pub concurrency: usize,
    /// Leases claimed ahead of free slots, so the next tasks are at hand while finished ones
    /// are being completed (default: as many as `concurrency`). A worker holds at most
    /// `concurrency + prefetch` leases: running, waiting in its buffer, or being completed;
    /// a crash re-runs at most that many. Use 0 for long tasks shared by many workers, so no
    /// task waits in one worker's buffer while another worker is idle.
    pub prefetch: usize,
    /// Where blocking handlers run.
    pub kind: WorkerKind,
    /// Lease length; a lease not renewed in this time is taken back by any worker.
    pub lease: Duration,
    /// How often leases are renewed and expired leases recovered. Shorter than `lease`.
    pub heartbeat: Duration,
    /// Longest an idle worker waits before looking again when no wake-up arrives.
    pub poll_interval: Duration,
    /// How long running tasks may finish during shutdown before they are released.
    pub shutdown_grace: Duration,
    /// How long a running task whose cancellation was requested may take to stop on its
    /// own before it is dropped.
    pub cancel_grace: Duration,
    /// Timeout for tasks that set none.
    pub default_timeout: Option<Duration>,
    /// How long results are kept.
    pub result_ttl: Option<Duration>,
    /// Finished tasks (succeeded, cancelled, expired) older than this are deleted from the
    /// task queue by the worker, every few minutes; dead letters stay until purged. `None`
    /// keeps everything.
    pub retention: Option<Duration>,
    /// Events older than this are deleted from the event store by the worker, a bounded
    /// batch at a time. `None` keeps everything.
    pub event_retention: Option<Duration>,
    /// Longest a store call may take before the worker treats it as an outage and tries
    /// again (completions) or skips the round (maintenance). Heartbeats are bounded by half
    /// the lease at most, so a hung renewal is tried again in time.
    pub store_timeout: Duration,
    /// How long a due task whose name this worker has no handler for is left to other
    /// workers before this one takes it and dead-letters it as `unknown_task`. During a
    /// rolling deploy, a worker of the old release leaves the new release's tasks to the
    /// workers that run them; a task no worker runs (a typo, a handler removed) ends up
    /// dead-lettered after this. `None`: such tasks are never taken by this worker.
    pub unknown_task_grace: Option<Duration>,
    /// How often the worker runs the scheduler (`None`: it does not). Needs a schedule
    /// store ([`Worker::schedules`](crate::Worker::schedules)).
    pub scheduler_tick: Option<Duration>,
    /// Process workers: the program and arguments children are started with (default:
    /// this program with its own arguments). Whatever it runs must start a process worker
    /// with the same tasks registered: that is where a child serves its parent.
    pub child_command: Option<Vec<OsString>>,
    /// Process workers: a child is replaced after this many tasks (`None`: never), to
    /// bound what a leaking handler can hold.
    pub max_tasks_per_child: Option<u32>,
    /// Rate and concurrency limits by queue, held across every worker sharing the store
    /// (see [`limits`](crate::limits)). Workers of one fleet should set the same limits:
    /// each applies its own to the shared state.
    pub limits: BTreeMap<String, QueueLimits>,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            id: None,
            queues: vec![DEFAULT_QUEUE.to_owned()],
            concurrency: 16,
            prefetch: 16,
            kind: WorkerKind::Async,
            lease: Duration::from_secs(30),
            heartbeat: Duration::from_secs(10),
            poll_interval: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(30),
            cancel_grace: Duration::from_secs(5),
            default_timeout: None,
            result_ttl: Some(Duration::from_secs(7 * 24 * 3600)),
            scheduler_tick: Some(Duration::from_secs(1)),
            retention: Some(Duration::from_secs(7 * 24 * 3600)),
            event_retention: Some(Duration::from_secs(7 * 24 * 3600)),
            store_timeout: Duration::from_secs(10),
            unknown_task_grace: Some(DEFAULT_UNKNOWN_TASK_GRACE),
            child_command: None,
            max_tasks_per_child: None,
            limits: BTreeMap::new(),
        }
    }
}

impl WorkerConfig {
    /// Sets the queues, in strict priority order.
    pub fn queues<Q: Into<String>>(mut self, queues: impl IntoIterator<Item = Q>) -> Self {
        self.queues = queues.into_iter().map(Into::into).collect();
        self
    }

    /// Sets how many tasks run at once, and a prefetch of as many.
    pub fn concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency;
        self.prefetch = concurrency;
        self
    }

    /// Sets how many leases are claimed ahead of free slots (see [`WorkerConfig::prefetch`]).
    pub fn prefetch(mut self, prefetch: usize) -> Self {
        self.prefetch = prefetch;
        self
    }

    /// Most leases the worker holds at once: running, buffered or being completed.
    pub(crate) fn max_leases(&self) -> usize {
        self.concurrency.saturating_add(self.prefetch)
    }

    /// Sets where blocking handlers run.
    pub fn kind(mut self, kind: WorkerKind) -> Self {
        self.kind = kind;
        self
    }

    /// Sets the lease length and a heartbeat of a third of it.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self.heartbeat = lease / 3;
        self
    }

    /// Sets the heartbeat interval.
    pub fn heartbeat(mut self, heartbeat: Duration) -> Self {
        self.heartbeat = heartbeat;
        self
    }

    /// Sets the polling fallback interval.
    pub fn poll_interval(mut self, poll_interval: Duration) -> Self {
        self.poll_interval = poll_interval;
        self
    }

    /// Sets the shutdown grace period.
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }

    /// Sets the grace period of a running task whose cancellation was requested.
    pub fn cancel_grace(mut self, grace: Duration) -> Self {
        self.cancel_grace = grace;
        self
    }

    /// Sets the worker id.
    pub fn id(mut self, id: WorkerId) -> Self {
        self.id = Some(id);
        self
    }

    /// Sets the timeout for tasks that set none.
    pub fn default_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.default_timeout = timeout;
        self
    }

    /// Sets how long results are kept.
    pub fn result_ttl(mut self, ttl: Option<Duration>) -> Self {
        self.result_ttl = ttl;
        self
    }

    /// Sets how long finished tasks are kept (`None`: forever).
    pub fn retention(mut self, retention: Option<Duration>) -> Self {
        self.retention = retention;
        self
    }

    /// Sets how long events are kept (`None`: forever).
    pub fn event_retention(mut self, retention: Option<Duration>) -> Self {
        self.event_retention = retention;
        self
    }

    /// Sets how long one store call may take before it counts as an outage.
    pub fn store_timeout(mut self, timeout: Duration) -> Self {
        self.store_timeout = timeout;
        self
    }

    /// Sets how long a due task of a name this worker cannot run is left to other workers
    /// (see [`WorkerConfig::unknown_task_grace`]).
    pub fn unknown_task_grace(mut self, grace: Option<Duration>) -> Self {
        self.unknown_task_grace = grace;
        self
    }

    /// Runs the scheduler every `tick`, or not at all with `None`.
    pub fn scheduler_tick(mut self, tick: Option<Duration>) -> Self {
        self.scheduler_tick = tick;
        self
    }

    /// Sets the command process workers start their children with (program, then
    /// arguments).
    pub fn child_command<S: Into<OsString>>(
        mut self,
        command: impl IntoIterator<Item = S>,
    ) -> Self {
        self.child_command = Some(command.into_iter().map(Into::into).collect());
        self
    }

    /// Sets after how many tasks a process worker replaces a child.
    pub fn max_tasks_per_child(mut self, max: Option<u32>) -> Self {
        self.max_tasks_per_child = max;
        self
    }

    /// Limits the tasks of `queue` together: how many run at once, how many start per
    /// window, across every worker sharing the store.
    pub fn limit_queue(mut self, queue: impl Into<String>, limit: Limit) -> Self {
        self.limits.entry(queue.into()).or_default().queue = Some(limit);
        self
    }

    /// Limits the tasks of `queue` key by key (their
    /// [`limit_key`](omniq_models::TaskOptions::limit_key)): how many of one key run at
    /// once, how many start per window, across every worker sharing the store.
    pub fn limit_each_key(mut self, queue: impl Into<String>, limit: Limit) -> Self {
        self.limits.entry(queue.into()).or_default().each_key = Some(limit);
        self
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        for (queue, limits) in &self.limits {
            for limit in limits.queue.iter().chain(&limits.each_key) {
                limit
                    .validate()
                    .map_err(|err| format!("the limit on queue `{queue}`: {err}"))?;
            }
        }
        if self.queues.is_empty() {
            return Err("a worker needs at least one queue".to_owned());
        }
        if self.concurrency == 0 {
            return Err("concurrency must be at least 1".to_owned());
        }
        if self.heartbeat.is_zero() || self.heartbeat >= self.lease {
            return Err(format!(
                "heartbeat ({:?}) must be non-zero and shorter than the lease ({:?})",
                self.heartbeat, self.lease
            ));
        }
        if self.store_timeout.is_zero() {
            return Err("store_timeout must be non-zero".to_owned());
        }
        if self.poll_interval.is_zero() {
            return Err("poll_interval must be non-zero".to_owned());
        }
        Ok(())
    }
}
