use std::time::Duration;

use omniq_async::{CancelOutcome, Result, TaskId, TaskRecord};
use serde::de::DeserializeOwned;

use crate::runtime::Driver;

/// A typed handle on an enqueued task: wait for its result, inspect it, cancel it.
#[derive(Debug)]
pub struct TaskHandle<R> {
    driver: Driver,
    inner: omniq_async::TaskHandle<R>,
}

// Manual: a derive would demand `R: Clone`, which the handle never needs.
impl<R> Clone for TaskHandle<R> {
    fn clone(&self) -> Self {
        Self {
            driver: self.driver.clone(),
            inner: self.inner.clone(),
        }
    }
}

impl<R: Send + 'static> TaskHandle<R> {
    pub(crate) fn new(driver: Driver, inner: omniq_async::TaskHandle<R>) -> Self {
        Self { driver, inner }
    }

    /// The task's id.
    pub fn id(&self) -> TaskId {
        self.inner.id()
    }

    /// True when the enqueue found a live task with the same unique key.
    pub fn was_deduplicated(&self) -> bool {
        self.inner.was_deduplicated()
    }

    /// The task's full record.
    ///
    /// # Errors
    /// As [`omniq_async::TaskHandle::record`].
    pub fn record(&self) -> Result<TaskRecord> {
        let inner = self.inner.clone();
        self.driver.call(async move { inner.record().await })
    }

    /// Cancels the task.
    ///
    /// # Errors
    /// As [`omniq_async::TaskHandle::cancel`].
    pub fn cancel(&self) -> Result<CancelOutcome> {
        let inner = self.inner.clone();
        self.driver.call(async move { inner.cancel().await })
    }
}

impl<R: DeserializeOwned + Send + 'static> TaskHandle<R> {
    /// Blocks up to `timeout` for the task's result.
    ///
    /// # Errors
    /// As [`omniq_async::TaskHandle::wait`].
    pub fn wait(&self, timeout: Duration) -> Result<R> {
        let inner = self.inner.clone();
        self.driver.call(async move { inner.wait(timeout).await })
    }

    /// The result if the task has finished, without waiting.
    ///
    /// # Errors
    /// As [`omniq_async::TaskHandle::try_result`].
    pub fn try_result(&self) -> Result<Option<R>> {
        let inner = self.inner.clone();
        self.driver.call(async move { inner.try_result().await })
    }
}
