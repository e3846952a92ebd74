use std::collections::BTreeMap;

use std::sync::Arc;

use omniq_models::{LeaseToken, TaskError, TaskErrorKind, TaskId, WorkerId};
use omniq_serialization::PayloadCodec;
use omniq_storage::{Lease, ResultStore};

use crate::AppState;
use crate::progress::{ProgressError, ProgressSink};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// What a handler knows about the attempt it is running.
#[derive(Debug, Clone)]
pub struct TaskContext {
    pub(crate) task_id: TaskId,
    pub(crate) task_name: String,
    pub(crate) queue: String,
    pub(crate) attempt: u32,
    pub(crate) max_attempts: u32,
    pub(crate) worker_id: WorkerId,
    pub(crate) metadata: BTreeMap<String, String>,
    pub(crate) parents: Vec<TaskId>,
    pub(crate) cancellation: CancellationToken,
    pub(crate) results: Arc<dyn ResultStore>,
    pub(crate) codec: PayloadCodec,
    pub(crate) state: AppState,
    /// Where progress goes; `None` outside a worker (a detached context).
    pub(crate) progress: Option<ProgressSink>,
}

/// Who an attempt is: the part of its context that crosses to a process worker's child.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct AttemptHeader {
    pub(crate) task_id: TaskId,
    /// The attempt's lease: what tells one attempt's progress messages from another's of
    /// the same task (a snooze does not count an attempt).
    pub(crate) token: LeaseToken,
    pub(crate) task_name: String,
    pub(crate) queue: String,
    pub(crate) attempt: u32,
    pub(crate) max_attempts: u32,
    pub(crate) worker_id: WorkerId,
    pub(crate) metadata: BTreeMap<String, String>,
    pub(crate) parents: Vec<TaskId>,
}

impl AttemptHeader {
    /// The attempt `lease` grants, run by `worker_id`.
    pub(crate) fn of(lease: &Lease, worker_id: &WorkerId) -> Self {
        let spec = &lease.spec;
        Self {
            task_id: spec.id,
            token: lease.token,
            task_name: spec.name.clone(),
            queue: spec.queue.clone(),
            attempt: lease.attempt,
            max_attempts: spec.max_attempts,
            worker_id: worker_id.clone(),
            metadata: spec.metadata.clone(),
            parents: spec.depends_on.clone(),
        }
    }

    /// The attempt's context.
    pub(crate) fn into_context(
        self,
        cancellation: CancellationToken,
        results: Arc<dyn ResultStore>,
        codec: PayloadCodec,
        state: AppState,
        progress: Option<ProgressSink>,
    ) -> TaskContext {
        TaskContext {
            task_id: self.task_id,
            task_name: self.task_name,
            queue: self.queue,
            attempt: self.attempt,
            max_attempts: self.max_attempts,
            worker_id: self.worker_id,
            metadata: self.metadata,
            parents: self.parents,
            cancellation,
            results,
            codec,
            state,
            progress,
        }
    }
}

impl TaskContext {
    /// A context for running a task outside a worker (tests, scripts): attempt 1 of
    /// `max_attempts`, on `queue`, with `state` and parent results read from `results`.
    /// It is never cancelled.
    pub fn detached(
        task_name: impl Into<String>,
        queue: impl Into<String>,
        max_attempts: u32,
        results: Arc<dyn ResultStore>,
        state: AppState,
    ) -> Self {
        AttemptHeader {
            task_id: TaskId::new(),
            token: LeaseToken::new(),
            task_name: task_name.into(),
            queue: queue.into(),
            attempt: 1,
            max_attempts: max_attempts.max(1),
            worker_id: WorkerId::new("detached"),
            metadata: BTreeMap::new(),
            parents: Vec::new(),
        }
        .into_context(
            CancellationToken::new(),
            results,
            PayloadCodec::default(),
            state,
            None,
        )
    }

    /// The same context as attempt `attempt` (to test a task's behaviour on its last
    /// attempt, say).
    #[must_use]
    pub fn with_attempt(mut self, attempt: u32) -> Self {
        self.attempt = attempt;
        self
    }

    /// The same context with metadata labels.
    #[must_use]
    pub fn with_metadata(mut self, metadata: BTreeMap<String, String>) -> Self {
        self.metadata = metadata;
        self
    }

    /// The same context with parents.
    #[must_use]
    pub fn with_parents(mut self, parents: Vec<TaskId>) -> Self {
        self.parents = parents;
        self
    }

    /// The application value of type `T` registered with the facade's `state` (or
    /// [`Registry::provide`](crate::Registry::provide)): a pool, a client, a configuration.
    ///
    /// ```
    /// # use omniq_workers::{Task, TaskContext};
    /// # use omniq_models::TaskError;
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct Lookup(u64);
    /// struct Catalogue(Vec<&'static str>);
    ///
    /// impl Task for Lookup {
    ///     const NAME: &'static str = "catalogue.lookup";
    ///     type Output = String;
    ///     async fn run(self, ctx: TaskContext) -> Result<String, TaskError> {
    ///         let catalogue = ctx.state::<Catalogue>()?;
    ///         Ok(catalogue.0.get(self.0 as usize).copied().unwrap_or("none").to_owned())
    ///     }
    /// }
    /// ```
    ///
    /// # Errors
    /// A retryable [`TaskError`] naming `T` and what is registered, when no value of type
    /// `T` was registered on this worker (another worker, configured right, may run it).
    pub fn state<T: Send + Sync + 'static>(&self) -> Result<&T, TaskError> {
        self.state
            .get::<T>()
            .ok_or_else(|| self.missing_state::<T>())
    }

    /// The application value of type `T` as a shared handle, to keep past the borrow of
    /// the context (into a spawned task, say).
    ///
    /// # Errors
    /// As [`TaskContext::state`].
    pub fn state_shared<T: Send + Sync + 'static>(&self) -> Result<Arc<T>, TaskError> {
        self.state
            .get_shared::<T>()
            .ok_or_else(|| self.missing_state::<T>())
    }

    fn missing_state<T>(&self) -> TaskError {
        TaskError::new(format!(
            "no application state of type `{}` is registered on this worker \
             (registered: {:?}); register it with `omniq.state(value)`",
            std::any::type_name::<T>(),
            self.state.type_names()
        ))
    }

    /// The task's id.
    pub fn task_id(&self) -> TaskId {
        self.task_id
    }

    /// The task's registered name.
    pub fn task_name(&self) -> &str {
        &self.task_name
    }

    /// The queue it came from.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// This attempt's number, from 1.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Runs allowed in all.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// True on the last allowed attempt.
    pub fn is_last_attempt(&self) -> bool {
        self.attempt >= self.max_attempts
    }

    /// The worker running it.
    pub fn worker_id(&self) -> &WorkerId {
        &self.worker_id
    }

    /// The task's metadata labels.
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// The tasks this one depends on.
    pub fn parents(&self) -> &[TaskId] {
        &self.parents
    }

    /// What a parent returned.
    ///
    /// # Errors
    /// A [`TaskError`] (retryable where a retry may help) when the parent has no stored
    /// result, failed (its error, for on-failure callbacks), or returned something that does
    /// not decode as `T`.
    pub async fn parent_result<T: DeserializeOwned>(&self, parent: TaskId) -> Result<T, TaskError> {
        let stored = self.results.get(parent).await.map_err(|e| {
            TaskError::new(format!("cannot read the result of parent {parent}: {e}"))
        })?;
        let Some(result) = stored else {
            return Err(TaskError::permanent(format!(
                "parent {parent} has no result"
            )));
        };
        match result.outcome {
            Ok(bytes) => self.codec.decode(&bytes).map_err(|e| {
                TaskError::with_kind(
                    TaskErrorKind::Decode,
                    format!("the result of parent {parent} does not decode: {e}"),
                    false,
                )
            }),
            Err(error) => Err(error),
        }
    }

    /// What every parent returned, or how it failed, in [`parents`](Self::parents)
    /// order: what a batch's callback reads. A parent that did not succeed has an error:
    /// its final error, or one saying it has no result (cancelled or expired before it
    /// ran, failed by a lost lease, its error not yet written, or its result expired).
    pub async fn parent_results<T: DeserializeOwned>(&self) -> Vec<(TaskId, Result<T, TaskError>)> {
        use futures_util::StreamExt;
        // A few reads at once, in order: a callback of thousands of members reads them
        // in a fraction of the time, without a burst on the result store.
        futures_util::stream::iter(self.parents.iter().copied())
            .map(|parent| async move { (parent, self.parent_result(parent).await) })
            .buffered(16)
            .collect()
            .await
    }

    /// Reports progress: `value` (any serde value, at most 16 KiB as JSON) is stored on
    /// the task (`TaskRecord::progress`, shown by the CLI and the dashboard), logged as a
    /// `progress` event (live to event subscribers), and renews the attempt's lease like a
    /// heartbeat: a long task that reports progress keeps its lease even when heartbeats
    /// fail to get through. Each call is one store round trip; report every second or so,
    /// not per item of a tight loop.
    ///
    /// ```
    /// # use omniq_workers::TaskContext;
    /// # async fn resize(ctx: TaskContext, images: Vec<String>) {
    /// for (done, _image) in images.iter().enumerate() {
    ///     // ... resize it ...
    ///     // A report not stored is no reason to stop; a lost lease stops the attempt anyway.
    ///     let _ = ctx.progress(&serde_json::json!({ "done": done + 1, "of": images.len() })).await;
    /// }
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`ProgressError::Unsupported`] outside a worker (a detached context) or on a backend
    /// without progress; [`ProgressError::Invalid`] for a
    /// value that is not JSON or too large; [`ProgressError::LeaseLost`] when another worker
    /// holds the task now; [`ProgressError::Store`] when the store did not answer.
    ///
    /// # Cancel safety
    /// Cancel safe: a dropped call may or may not have stored the value.
    pub async fn progress<T: serde::Serialize + ?Sized>(
        &self,
        value: &T,
    ) -> Result<(), ProgressError> {
        let (sink, value) = self.progress_of(value)?;
        sink.report(value).await
    }

    /// [`progress`](Self::progress) for a blocking handler (`BlockingTask`, a blocking
    /// closure): waits on this thread for the store's answer. Never call it from async
    /// code: it would block a runtime thread.
    ///
    /// # Errors
    /// As [`progress`](Self::progress).
    pub fn progress_blocking<T: serde::Serialize + ?Sized>(
        &self,
        value: &T,
    ) -> Result<(), ProgressError> {
        let (sink, value) = self.progress_of(value)?;
        sink.report_blocking(value)
    }

    /// True once the worker wants this attempt to stop: the task was cancelled, its lease
    /// was lost, or the worker is shutting down. Long handlers should check it (or await
    /// [`TaskContext::cancelled`]) and return early.
    pub fn is_cancelled(&self) -> bool {
        self.cancellation.is_cancelled()
    }

    /// Completes when the attempt should stop; see [`TaskContext::is_cancelled`].
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn cancelled(&self) {
        self.cancellation.cancelled().await;
    }
}

impl TaskContext {
    /// Where this attempt's progress goes, and `value` as JSON.
    fn progress_of<T: serde::Serialize + ?Sized>(
        &self,
        value: &T,
    ) -> Result<(&ProgressSink, serde_json::Value), ProgressError> {
        let Some(sink) = &self.progress else {
            return Err(ProgressError::Unsupported(
                "this context is not a worker's attempt".to_owned(),
            ));
        };
        let value =
            serde_json::to_value(value).map_err(|e| ProgressError::Invalid(e.to_string()))?;
        Ok((sink, value))
    }
}
