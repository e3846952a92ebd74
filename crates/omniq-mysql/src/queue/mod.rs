//! The MySQL task queue.

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

use crate::MySqlBackend;

/// The task queue of a [`MySqlBackend`].
///
/// Claims take rows with `FOR UPDATE SKIP LOCKED`, so any number of workers in any number
/// of processes share a queue without blocking one another.
#[derive(Debug, Clone)]
pub struct MySqlTaskQueue {
    backend: MySqlBackend,
}

impl MySqlTaskQueue {
    pub(crate) fn new(backend: MySqlBackend) -> Self {
        Self { backend }
    }

    /// Wakes this process's waiters when some tasks became ready.
    fn wake_if(&self, ready: bool) {
        if ready {
            self.backend.wakeup().wake();
        }
    }
}

impl TaskQueue for MySqlTaskQueue {
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

    fn wait_for_tasks(&self, queues: &[String], timeout: Duration) -> BoxFuture<'_, ()> {
        let queues = queues.to_vec();
        Box::pin(async move {
            let wakeup = self.backend.wakeup();
            let deadline = tokio::time::Instant::now() + timeout;
            // Registered before the first look, so a wake-up from now on is not missed.
            let notified = wakeup.tasks.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            loop {
                let now = tokio::time::Instant::now();
                if now >= deadline {
                    return;
                }
                let pause = wakeup.pause().min(deadline - now);
                tokio::select! {
                    () = &mut notified => return,
                    () = tokio::time::sleep(pause) => {}
                }
                // Another process may have enqueued: look, cheaply. An error is left to
                // the caller's next dequeue to report.
                if let Ok(true) = self.any_ready(&queues).await {
                    wakeup.activity();
                    return;
                }
                wakeup.idle(timeout);
            }
        })
    }
}
