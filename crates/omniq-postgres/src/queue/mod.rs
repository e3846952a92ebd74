//! The PostgreSQL task queue.

mod claim;
mod complete;
mod enqueue;
mod inspect;
mod maintenance;
mod notify;
mod settle;

use std::time::Duration;

use omniq_models::{TaskId, TaskRecord, TaskSpec};
use omniq_storage::{
    BoxFuture, Cancellation, Completed, Completion, DequeueRequest, EnqueueOutcome, Lease,
    LeaseRef, LeaseStatus, PurgeRequest, QueueStats, RedriveTarget, StateChange, StoreResult,
    TaskQuery, TaskQueue,
};

use crate::PgBackend;

/// The task queue of a [`PgBackend`].
///
/// Claims take rows with `FOR UPDATE SKIP LOCKED`, so any number of workers in any number
/// of processes share a queue without blocking one another; enqueues, retries and
/// unblocked dependents `NOTIFY` waiting workers.
#[derive(Debug, Clone)]
pub struct PgTaskQueue {
    backend: PgBackend,
}

impl PgTaskQueue {
    pub(crate) fn new(backend: PgBackend) -> Self {
        Self { backend }
    }
}

impl TaskQueue for PgTaskQueue {
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
            let listener = &self.backend.shared.listener;
            // Subscribe first: a wake-up sent while the listener starts is kept.
            let subscription = listener.tasks.subscribe(&queues);
            listener.ensure_started();
            subscription.wait(timeout).await;
        })
    }
}
