use std::time::Duration;

use omniq_workers::{Limit, Worker, WorkerConfig, WorkerHandle, WorkerKind};

use crate::{AsyncOmniQ, Result};

/// Configures a worker; defaults come from the settings.
#[derive(Debug)]
#[must_use = "a worker does nothing until started"]
pub struct WorkerBuilder {
    omniq: AsyncOmniQ,
    config: WorkerConfig,
}

impl WorkerBuilder {
    pub(crate) fn new(omniq: AsyncOmniQ) -> Self {
        let settings = omniq.settings();
        let config = WorkerConfig {
            id: None,
            queues: settings.queues.clone(),
            concurrency: settings.concurrency,
            prefetch: settings.prefetch.unwrap_or(settings.concurrency),
            kind: settings.default_worker,
            lease: settings.lease,
            heartbeat: settings.heartbeat,
            poll_interval: settings.poll_interval,
            shutdown_grace: settings.shutdown_grace,
            cancel_grace: WorkerConfig::default().cancel_grace,
            default_timeout: settings.timeout,
            result_ttl: settings.result_ttl,
            retention: settings.task_retention,
            event_retention: settings.event_retention,
            store_timeout: WorkerConfig::default().store_timeout,
            unknown_task_grace: settings.unknown_task_grace,
            scheduler_tick: settings
                .scheduler
                .then_some(WorkerConfig::default().scheduler_tick)
                .flatten(),
            child_command: (!settings.child_command.is_empty())
                .then(|| settings.child_command.iter().map(Into::into).collect()),
            max_tasks_per_child: settings.max_tasks_per_child,
            limits: Default::default(),
        };
        Self { omniq, config }
    }

    /// Sets how many tasks run at once.
    pub fn concurrency(mut self, concurrency: usize) -> Self {
        self.config = self.config.concurrency(concurrency);
        self
    }

    /// Sets how many leases are claimed ahead of free slots (default: as many as the
    /// concurrency; 0 for long tasks shared by many workers).
    pub fn prefetch(mut self, prefetch: usize) -> Self {
        self.config = self.config.prefetch(prefetch);
        self
    }

    /// Sets the queues, in strict priority order.
    pub fn queues<Q: Into<String>>(mut self, queues: impl IntoIterator<Item = Q>) -> Self {
        self.config = self.config.queues(queues);
        self
    }

    /// Runs blocking handlers on the worker's own threads (the same as
    /// `.kind(WorkerKind::Thread)`).
    pub fn threads(self) -> Self {
        self.kind(WorkerKind::Thread)
    }

    /// Sets how the worker runs handlers: async, thread, local or process (see
    /// [`WorkerKind`] for the trade-offs); the default is the `default_worker` setting.
    pub fn kind(mut self, kind: WorkerKind) -> Self {
        self.config = self.config.kind(kind);
        self
    }

    /// Process workers: replace a child after `max` tasks (`None`: never).
    pub fn max_tasks_per_child(mut self, max: Option<u32>) -> Self {
        self.config = self.config.max_tasks_per_child(max);
        self
    }

    /// Process workers: start children with this program and arguments (default: this
    /// program with its own arguments).
    pub fn child_command<S: Into<std::ffi::OsString>>(
        mut self,
        command: impl IntoIterator<Item = S>,
    ) -> Self {
        self.config = self.config.child_command(command);
        self
    }

    /// Sets the lease length (and a heartbeat of a third of it).
    pub fn lease(mut self, lease: Duration) -> Self {
        self.config = self.config.lease(lease);
        self
    }

    /// Sets the polling fallback interval.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.config = self.config.poll_interval(interval);
        self
    }

    /// Sets the shutdown grace period.
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.config = self.config.shutdown_grace(grace);
        self
    }

    /// Sets how long a running task whose cancellation was requested may take to stop.
    pub fn cancel_grace(mut self, grace: Duration) -> Self {
        self.config = self.config.cancel_grace(grace);
        self
    }

    /// Runs the scheduler in this worker, or not (default: the `scheduler` setting).
    pub fn scheduler(mut self, run: bool) -> Self {
        let tick = WorkerConfig::default().scheduler_tick;
        self.config = self.config.scheduler_tick(if run { tick } else { None });
        self
    }

    /// Sets how long finished tasks are kept before the worker deletes them.
    pub fn retention(mut self, retention: Option<Duration>) -> Self {
        self.config = self.config.retention(retention);
        self
    }

    /// Sets how long events are kept before the worker deletes them.
    pub fn event_retention(mut self, retention: Option<Duration>) -> Self {
        self.config = self.config.event_retention(retention);
        self
    }

    /// Sets how long a due task of a name this worker has no handler for is left to other
    /// workers before this one dead-letters it (`None`: never); see
    /// [`WorkerConfig::unknown_task_grace`].
    pub fn unknown_task_grace(mut self, grace: Option<Duration>) -> Self {
        self.config = self.config.unknown_task_grace(grace);
        self
    }

    /// Sets how long the results of the tasks this worker runs are kept.
    pub fn result_ttl(mut self, ttl: Option<Duration>) -> Self {
        self.config = self.config.result_ttl(ttl);
        self
    }

    /// Sets how long one store call may take before the worker counts it as an outage.
    pub fn store_timeout(mut self, timeout: Duration) -> Self {
        self.config = self.config.store_timeout(timeout);
        self
    }

    /// Registers an application value for tasks to reach by type, as
    /// [`AsyncOmniQ::state`] does (the registry is the application's: every worker of this
    /// `AsyncOmniQ` sees it).
    pub fn state<T: Send + Sync + 'static>(self, value: T) -> Self {
        self.omniq.inner.registry.update(|registry| {
            registry.provide(value);
        });
        self
    }

    /// Limits the tasks of `queue` together, across every worker sharing the store: how
    /// many run at once, how many start per window. A task that may not start yet waits in
    /// its queue without using an attempt.
    ///
    /// ```no_run
    /// # async fn demo(omniq: omniq_async::AsyncOmniQ) -> omniq_async::Result<()> {
    /// use std::time::Duration;
    /// use omniq_async::Limit;
    ///
    /// let worker = omniq
    ///     .worker()
    ///     .queues(["emails"])
    ///     .limit_queue("emails", Limit::new().rate(100, Duration::from_secs(60)))
    ///     .start()?;
    /// # Ok(()) }
    /// ```
    pub fn limit_queue(mut self, queue: impl Into<String>, limit: Limit) -> Self {
        self.config = self.config.limit_queue(queue, limit);
        self
    }

    /// Limits the tasks of `queue` key by key ([`EnqueueBuilder::limit_key`]), across every
    /// worker sharing the store: at most so many of one key run at once or start per
    /// window, while other keys' tasks go on. Tasks without a key are not counted by it.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> omniq_async::Result<()> {
    /// use std::time::Duration;
    /// use omniq_async::{AsyncOmniQ, Limit, Settings, Task, TaskContext, TaskError};
    /// use serde::{Deserialize, Serialize};
    ///
    /// #[derive(Serialize, Deserialize)]
    /// struct Import {
    ///     tenant: u32,
    /// }
    ///
    /// impl Task for Import {
    ///     const NAME: &'static str = "import";
    ///     type Output = u32;
    ///     async fn run(self, _ctx: TaskContext) -> Result<u32, TaskError> {
    ///         Ok(self.tenant)
    ///     }
    /// }
    ///
    /// let omniq = AsyncOmniQ::from_settings(Settings::memory()).await?.register::<Import>();
    /// // At most 2 imports of one tenant at once, and 10 a second per tenant (bursts of
    /// // 20), with at most 500 a minute for the whole queue.
    /// let worker = omniq
    ///     .worker()
    ///     .queues(["imports"])
    ///     .limit_each_key(
    ///         "imports",
    ///         Limit::new()
    ///             .concurrency(2)
    ///             .rate_with_burst(10, Duration::from_secs(1), 20),
    ///     )
    ///     .limit_queue("imports", Limit::new().rate(500, Duration::from_secs(60)))
    ///     .start()?;
    /// let import = omniq
    ///     .enqueue(Import { tenant: 7 })
    ///     .queue("imports")
    ///     .limit_key("tenant-7")
    ///     .await?;
    /// assert_eq!(import.wait(Duration::from_secs(10)).await?, 7);
    /// worker.shutdown().await?;
    /// # Ok(()) }
    /// ```
    ///
    /// [`EnqueueBuilder::limit_key`]: crate::EnqueueBuilder::limit_key
    pub fn limit_each_key(mut self, queue: impl Into<String>, limit: Limit) -> Self {
        self.config = self.config.limit_each_key(queue, limit);
        self
    }

    /// Replaces the whole configuration.
    pub fn config(mut self, config: WorkerConfig) -> Self {
        self.config = config;
        self
    }

    /// Starts the worker with the tasks registered so far.
    ///
    /// # Errors
    /// An unusable configuration, or threads that cannot be created.
    ///
    /// # Panics
    /// When called outside a tokio runtime.
    pub fn start(self) -> Result<WorkerHandle> {
        let inner = &self.omniq.inner;
        let worker = Worker::new(
            inner.stores.queue.clone(),
            inner.stores.results.clone(),
            inner.events.clone(),
            inner.registry.clone(),
        )
        .codec(inner.codec)
        .schedules(inner.stores.schedules.clone())
        .config(self.config);
        Ok(worker.start()?)
    }
}
