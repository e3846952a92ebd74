//! The SQLite task queue.

mod claim;
mod complete;
mod enqueue;
mod inspect;
mod limiter;
mod maintenance;
mod pause;
mod progress;
mod settle;

use std::time::Duration;

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

omniq_sql::forward_task_queue!(
    SqliteTaskQueue,
    omniq_storage::Capabilities::all().without(omniq_storage::Capability::TransactionalEnqueue)
);

impl SqliteTaskQueue {
    /// Waits until this process enqueues or releases a task, or `timeout`.
    async fn wait_until_ready(&self, _queues: Vec<String>, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.backend.task_wakeup.notified()).await;
    }
}
