use std::marker::PhantomData;
use std::time::Duration;

use omniq_models::{TaskId, TaskRecord, TaskResult};
use omniq_storage::CancelOutcome;
use serde::de::DeserializeOwned;

use crate::{AsyncOmniQ, Error, Result};

/// A typed handle on an enqueued task: wait for its result, inspect it, cancel it.
pub struct TaskHandle<R> {
    omniq: AsyncOmniQ,
    id: TaskId,
    deduplicated: bool,
    _output: PhantomData<fn() -> R>,
}

// Manual impls: derives would demand `R: Clone + Debug`, which the handle never needs.
impl<R> Clone for TaskHandle<R> {
    fn clone(&self) -> Self {
        Self::new(self.omniq.clone(), self.id, self.deduplicated)
    }
}

impl<R> std::fmt::Debug for TaskHandle<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskHandle")
            .field("id", &self.id)
            .field("deduplicated", &self.deduplicated)
            .finish()
    }
}

/// How often a waiter re-reads the task's state, to notice a task that ended without a
/// result (cancelled, expired) instead of waiting out the whole timeout.
const STATE_CHECK: Duration = Duration::from_millis(500);

impl<R> TaskHandle<R> {
    pub(crate) fn new(omniq: AsyncOmniQ, id: TaskId, deduplicated: bool) -> Self {
        Self {
            omniq,
            id,
            deduplicated,
            _output: PhantomData,
        }
    }

    /// The task's id.
    pub fn id(&self) -> TaskId {
        self.id
    }

    /// True when the enqueue found a live task with the same unique key, and this handle
    /// is on that task.
    pub fn was_deduplicated(&self) -> bool {
        self.deduplicated
    }

    /// The task's full record.
    ///
    /// # Errors
    /// [`Error::TaskNotFound`], or a store error.
    pub async fn record(&self) -> Result<TaskRecord> {
        self.omniq
            .task(self.id)
            .await?
            .ok_or(Error::TaskNotFound(self.id))
    }

    /// Cancels the task.
    ///
    /// # Errors
    /// As [`AsyncOmniQ::cancel`].
    pub async fn cancel(&self) -> Result<CancelOutcome> {
        self.omniq.cancel(self.id).await
    }
}

impl<R: DeserializeOwned> TaskHandle<R> {
    /// The result if the task has finished, without waiting.
    ///
    /// # Errors
    /// [`Error::TaskFailed`] when it failed for good, a decoding error, or a store error.
    pub async fn try_result(&self) -> Result<Option<R>> {
        match self.omniq.inner.stores.results.get(self.id).await? {
            Some(result) => self.decode(result).map(Some),
            None => Ok(None),
        }
    }

    /// Waits up to `timeout` for the task to finish and returns what it returned.
    ///
    /// A worker stores the result before it marks the task Succeeded (so a Succeeded task
    /// always has its result), which means the record may still say Running for a few
    /// milliseconds after this returns.
    ///
    /// # Errors
    /// [`Error::Timeout`] when it has not finished in time (it may still), [`Error::TaskFailed`]
    /// with its final error when it failed for good, [`Error::TaskEnded`] when it was
    /// cancelled or expired, a decoding error, or a store error.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn wait(&self, timeout: Duration) -> Result<R> {
        let results = &self.omniq.inner.stores.results;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let now = tokio::time::Instant::now();
            let slice = deadline.saturating_duration_since(now).min(STATE_CHECK);
            if let Some(result) = results.wait_for(self.id, slice).await? {
                return self.decode(result);
            }
            if let Some(record) = self.omniq.task(self.id).await?
                && record.state.is_terminal()
                && record.state != omniq_models::TaskState::Succeeded
                && record.state != omniq_models::TaskState::Failed
            {
                return Err(Error::TaskEnded {
                    task_id: self.id,
                    state: record.state,
                });
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Timeout {
                    task_id: self.id,
                    waited: timeout,
                });
            }
        }
    }

    fn decode(&self, result: TaskResult) -> Result<R> {
        match result.outcome {
            Ok(bytes) => self.omniq.inner.codec.decode(&bytes).map_err(|err| {
                // A result that does not decode: name the type the task returns, when
                // this process knows it, instead of a bare serde message.
                let registered = self
                    .omniq
                    .inner
                    .registry
                    .read(|registry| registry.output(&result.task_name));
                match registered {
                    Some(output) if output.name() != std::any::type_name::<R>() => {
                        Error::ResultType {
                            task: result.task_name.clone(),
                            registered: output.name(),
                            requested: std::any::type_name::<R>(),
                        }
                    }
                    _ => Error::from(err),
                }
            }),
            Err(error) => Err(Error::TaskFailed {
                task_id: self.id,
                error,
            }),
        }
    }
}
