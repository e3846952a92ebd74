use std::ffi::OsString;
use std::time::Duration;

use omniq_async::{Limit, Result, WorkerConfig, WorkerId, WorkerKind, WorkerReport};

use crate::runtime::Driver;

/// Configures a worker; defaults come from the settings.
#[derive(Debug)]
#[must_use = "a worker does nothing until started"]
pub struct WorkerBuilder {
    driver: Driver,
    inner: omniq_async::WorkerBuilder,
}

/// Forwards a setter to the async builder underneath.
macro_rules! forward {
    ($($(#[$doc:meta])* $name:ident($($arg:ident: $ty:ty),*);)*) => {
        $(
            $(#[$doc])*
            pub fn $name(self, $($arg: $ty),*) -> Self {
                self.map(|w| w.$name($($arg),*))
            }
        )*
    };
}

impl WorkerBuilder {
    pub(crate) fn new(driver: Driver, inner: omniq_async::WorkerBuilder) -> Self {
        Self { driver, inner }
    }

    fn map(
        self,
        change: impl FnOnce(omniq_async::WorkerBuilder) -> omniq_async::WorkerBuilder,
    ) -> Self {
        Self {
            driver: self.driver,
            inner: change(self.inner),
        }
    }

    forward! {
        /// Sets how many tasks run at once.
        concurrency(concurrency: usize);
        /// Sets how many leases are claimed ahead of free slots (default: as many as the
        /// concurrency; 0 for long tasks shared by many workers).
        prefetch(prefetch: usize);
        /// Sets how the worker runs handlers: async, thread, local or process (see
        /// [`WorkerKind`] for the trade-offs).
        kind(kind: WorkerKind);
        /// Sets the lease length (and a heartbeat of a third of it).
        lease(lease: Duration);
        /// Sets the polling fallback interval.
        poll_interval(interval: Duration);
        /// Sets the shutdown grace period.
        shutdown_grace(grace: Duration);
        /// Sets how long a running task whose cancellation was requested may take to stop.
        cancel_grace(grace: Duration);
        /// Runs the scheduler in this worker, or not (default: the `scheduler` setting).
        scheduler(run: bool);
        /// Sets how long finished tasks are kept before the worker deletes them.
        retention(retention: Option<Duration>);
        /// Sets how long events are kept before the worker deletes them.
        event_retention(retention: Option<Duration>);
        /// Sets how long a due task of a name this worker has no handler for is left to
        /// other workers before this one dead-letters it (`None`: never).
        unknown_task_grace(grace: Option<Duration>);
        /// Sets how long the results of the tasks this worker runs are kept.
        result_ttl(ttl: Option<Duration>);
        /// Sets how long one store call may take before the worker counts it as an outage.
        store_timeout(timeout: Duration);
        /// Process workers: replace a child after `max` tasks (`None`: never).
        max_tasks_per_child(max: Option<u32>);
        /// Replaces the whole configuration.
        config(config: WorkerConfig);
    }

    /// Limits the tasks of `queue` together, across every worker sharing the store (see
    /// [`omniq_async::WorkerBuilder::limit_queue`]).
    pub fn limit_queue(self, queue: impl Into<String>, limit: Limit) -> Self {
        self.map(|w| w.limit_queue(queue, limit))
    }

    /// Limits the tasks of `queue` key by key, across every worker sharing the store (see
    /// [`omniq_async::WorkerBuilder::limit_each_key`]).
    pub fn limit_each_key(self, queue: impl Into<String>, limit: Limit) -> Self {
        self.map(|w| w.limit_each_key(queue, limit))
    }

    /// Sets the queues, in strict priority order.
    pub fn queues<Q: Into<String>>(self, queues: impl IntoIterator<Item = Q>) -> Self {
        self.map(|w| w.queues(queues))
    }

    /// Runs blocking handlers on the worker's own threads (the same as
    /// `.kind(WorkerKind::Thread)`).
    pub fn threads(self) -> Self {
        self.kind(WorkerKind::Thread)
    }

    /// Registers an application value for tasks to reach by type, as
    /// [`OmniQ::state`](crate::OmniQ::state) does.
    pub fn state<T: Send + Sync + 'static>(self, value: T) -> Self {
        self.map(|w| w.state(value))
    }

    /// Process workers: start children with this program and arguments (default: this
    /// program with its own arguments).
    pub fn child_command<S: Into<OsString>>(self, command: impl IntoIterator<Item = S>) -> Self {
        self.map(|w| w.child_command(command))
    }

    /// Starts the worker on the facade's runtime; it runs in the background until
    /// [`WorkerHandle::shutdown`].
    ///
    /// # Errors
    /// As [`omniq_async::WorkerBuilder::start`].
    pub fn start(self) -> Result<WorkerHandle> {
        let inner = self.inner;
        let handle = self.driver.call(async move { inner.start() })?;
        Ok(WorkerHandle {
            driver: self.driver,
            handle,
        })
    }
}

/// A running worker.
#[derive(Debug)]
pub struct WorkerHandle {
    driver: Driver,
    handle: omniq_async::WorkerHandle,
}

impl WorkerHandle {
    /// The worker's id.
    pub fn id(&self) -> &WorkerId {
        self.handle.id()
    }

    /// Stops gracefully (see [`omniq_async::WorkerHandle::shutdown`]) and blocks until done.
    ///
    /// # Errors
    /// As [`omniq_async::WorkerHandle::shutdown`].
    pub fn shutdown(self) -> Result<WorkerReport> {
        let handle = self.handle;
        self.driver
            .call(async move { handle.shutdown().await.map_err(Into::into) })
    }

    /// Blocks until SIGINT or SIGTERM, then shuts down gracefully.
    ///
    /// # Errors
    /// As [`omniq_async::WorkerHandle::shutdown`].
    pub fn run_until_signal(self) -> Result<WorkerReport> {
        let handle = self.handle;
        self.driver
            .call(async move { handle.run_until_signal().await.map_err(Into::into) })
    }
}
