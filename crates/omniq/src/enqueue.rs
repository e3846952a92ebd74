use std::time::Duration;

use chrono::{DateTime, Utc};
use omniq_async::{Backoff, Result, RunWhen, TaskId, TaskOptions};

use crate::TaskHandle;
use crate::runtime::Driver;

/// Options for one enqueue; [`submit`](EnqueueBuilder::submit) enqueues.
#[must_use = "an enqueue does nothing until it is submitted"]
#[derive(Debug)]
pub struct EnqueueBuilder<R> {
    driver: Driver,
    inner: omniq_async::EnqueueBuilder<R>,
}

/// Forwards an option setter to the async builder underneath.
macro_rules! forward {
    ($($(#[$doc:meta])* $name:ident($($arg:ident: $ty:ty),*);)*) => {
        $(
            $(#[$doc])*
            pub fn $name(self, $($arg: $ty),*) -> Self {
                Self { driver: self.driver, inner: self.inner.$name($($arg),*) }
            }
        )*
    };
}

impl<R: Send + 'static> EnqueueBuilder<R> {
    pub(crate) fn new(driver: Driver, inner: omniq_async::EnqueueBuilder<R>) -> Self {
        Self { driver, inner }
    }

    forward! {
        /// Replaces all options at once.
        options(options: TaskOptions);
        /// Sets the queue.
        queue(queue: impl Into<String>);
        /// Sets the priority (higher runs first).
        priority(priority: i32);
        /// Runs no earlier than `delay` from now.
        delay(delay: Duration);
        /// Runs no earlier than `at`.
        run_at(at: DateTime<Utc>);
        /// Sets how many runs the task gets at most.
        max_attempts(max_attempts: u32);
        /// Sets the backoff between attempts.
        backoff(backoff: Backoff);
        /// Sets the per-attempt timeout.
        timeout(timeout: Duration);
        /// Expires the task if it has not started within `ttl`.
        ttl(ttl: Duration);
        /// Runs only after `parent` succeeds.
        depends_on(parent: TaskId);
        /// Runs on the parents' outcome given by `run_when` (callbacks).
        run_when(run_when: RunWhen);
        /// Deduplicates on `key` while a task holding it is unfinished.
        unique_key(key: impl Into<String>);
        /// Also dedupes against finished tasks with the key created within `window`.
        unique_for(window: Duration);
        /// Adds a metadata label.
        metadata(key: impl Into<String>, value: impl Into<String>);
        /// Sets the key a worker's per-key limits count the task under (a tenant id, an
        /// API host).
        limit_key(key: impl Into<String>);
        /// Sets the key whose tasks run one at a time, in enqueue order, where the task
        /// queue keeps such an order (an SQS FIFO queue); a label elsewhere.
        order_key(key: impl Into<String>);
    }

    /// The async builder underneath (a batch takes it as a member or a callback).
    pub(crate) fn into_async(self) -> omniq_async::EnqueueBuilder<R> {
        self.inner
    }

    /// Enqueues the task.
    ///
    /// # Errors
    /// A payload that cannot be encoded or exceeds the size limit, or a store error.
    pub fn submit(self) -> Result<TaskHandle<R>> {
        let handle = self.driver.call(async move { self.inner.await })?;
        Ok(TaskHandle::new(self.driver, handle))
    }
}
