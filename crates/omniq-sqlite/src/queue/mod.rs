//! The SQLite task queue.

mod claim;
mod complete;
mod enqueue;
mod inspect;
mod maintenance;
mod settle;

use std::time::Duration;

use omniq_models::{TaskId, TaskRecord, TaskSpec};
use omniq_storage::{
    BoxFuture, Cancellation, Completed, Completion, DequeueRequest, EnqueueOutcome, Lease,
    LeaseRef, LeaseStatus, PurgeRequest, QueueStats, RedriveTarget, StateChange, StoreResult,
    TaskQuery, TaskQueue,
};

use crate::SqliteBackend;

/// The task queue of a [`SqliteBackend`].
#[derive(Debug, Clone)]
pub struct SqliteTaskQueue {
    backend: SqliteBackend,
}

// Writers take the write lock up front: a deferred transaction that reads and then writes
// can fail with SQLITE_BUSY instead of waiting when another process writes in between.
const BEGIN_WRITE: &str = "BEGIN IMMEDIATE";

impl SqliteTaskQueue {
    pub(crate) fn new(backend: SqliteBackend) -> Self {
        Self { backend }
    }

    fn wake(&self) {
        // notify_waiters wakes idle workers now; notify_one leaves a permit for a worker
        // that is between an empty dequeue and its wait.
        self.backend.task_wakeup.notify_waiters();
        self.backend.task_wakeup.notify_one();
    }
}

impl TaskQueue for SqliteTaskQueue {
    fn enqueue(&self, tasks: Vec<TaskSpec>) -> BoxFuture<'_, StoreResult<Vec<EnqueueOutcome>>> {
        Box::pin(self.enqueue_batch(tasks))
    }

    fn dequeue(&self, request: DequeueRequest) -> BoxFuture<'_, StoreResult<Vec<Lease>>> {
        Box::pin(self.claim(request))
    }

    fn heartbeat(
        &self,
        leases: Vec<LeaseRef>,
        extend: Duration,
    ) -> BoxFuture<'_, StoreResult<Vec<LeaseStatus>>> {
        Box::pin(self.renew(leases, extend))
    }

    fn complete(&self, completions: Vec<Completion>) -> BoxFuture<'_, StoreResult<Completed>> {
        Box::pin(self.complete_batch(completions))
    }

    fn recover_expired(&self, limit: usize) -> BoxFuture<'_, StoreResult<Vec<StateChange>>> {
        Box::pin(self.recover(limit))
    }

    fn expire_due(&self, limit: usize) -> BoxFuture<'_, StoreResult<Vec<StateChange>>> {
        Box::pin(self.expire(limit))
    }

    fn redrive(&self, target: RedriveTarget) -> BoxFuture<'_, StoreResult<Vec<TaskId>>> {
        Box::pin(self.redrive_failed(target))
    }

    fn purge(&self, request: PurgeRequest) -> BoxFuture<'_, StoreResult<u64>> {
        Box::pin(self.purge_finished(request))
    }

    fn get(&self, id: TaskId) -> BoxFuture<'_, StoreResult<Option<TaskRecord>>> {
        Box::pin(self.fetch(id))
    }

    fn list(&self, query: TaskQuery) -> BoxFuture<'_, StoreResult<Vec<TaskRecord>>> {
        Box::pin(self.list_tasks(query))
    }

    fn stats(&self, queue: String) -> BoxFuture<'_, StoreResult<QueueStats>> {
        Box::pin(self.queue_stats(queue))
    }

    fn queue_names(&self) -> BoxFuture<'_, StoreResult<Vec<String>>> {
        Box::pin(self.names_of_queues())
    }

    fn cancel(&self, id: TaskId, reason: String) -> BoxFuture<'_, StoreResult<Cancellation>> {
        Box::pin(self.cancel_task(id, reason))
    }

    fn wait_for_tasks(&self, _queues: &[String], timeout: Duration) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let _ = tokio::time::timeout(timeout, self.backend.task_wakeup.notified()).await;
        })
    }
}
