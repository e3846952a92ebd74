use std::time::Duration;

use omniq_async::{Result, WorkerConfig, WorkerId, WorkerReport};

use crate::runtime::Driver;

/// Configures a worker; defaults come from the settings.
#[derive(Debug)]
#[must_use = "a worker does nothing until started"]
pub struct WorkerBuilder {
    driver: Driver,
    inner: omniq_async::WorkerBuilder,
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

    /// Sets how many tasks run at once.
    pub fn concurrency(self, concurrency: usize) -> Self {
        self.map(|w| w.concurrency(concurrency))
    }

    /// Sets how many leases are claimed ahead of free slots (default: as many as the
    /// concurrency; 0 for long tasks shared by many workers).
    pub fn prefetch(self, prefetch: usize) -> Self {
        self.map(|w| w.prefetch(prefetch))
    }

    /// Sets the queues, in strict priority order.
    pub fn queues<Q: Into<String>>(self, queues: impl IntoIterator<Item = Q>) -> Self {
        self.map(|w| w.queues(queues))
    }

    /// Runs blocking handlers on the worker's own threads.
    pub fn threads(self) -> Self {
        self.map(omniq_async::WorkerBuilder::threads)
    }

    /// Sets how the worker runs handlers: async, thread, local or process (see
    /// [`WorkerKind`](crate::WorkerKind) for the trade-offs).
    pub fn kind(self, kind: crate::WorkerKind) -> Self {
        self.map(|w| w.kind(kind))
    }

    /// Sets the lease length.
    pub fn lease(self, lease: Duration) -> Self {
        self.map(|w| w.lease(lease))
    }

    /// Sets the shutdown grace period.
    pub fn shutdown_grace(self, grace: Duration) -> Self {
        self.map(|w| w.shutdown_grace(grace))
    }

    /// Replaces the whole configuration.
    pub fn config(self, config: WorkerConfig) -> Self {
        self.map(|w| w.config(config))
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
