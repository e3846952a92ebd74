use std::collections::BTreeMap;

use omniq_models::{TaskId, WorkerId};
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
    pub(crate) cancellation: CancellationToken,
}

impl TaskContext {
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
