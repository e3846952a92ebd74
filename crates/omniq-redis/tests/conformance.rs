//! The shared conformance suite against Redis, each case under a key prefix of its own.

#[path = "support/corrupt.rs"]
mod corrupt;
mod support;

use std::sync::Arc;
use std::time::Duration;

use omniq_models::{TaskId, TaskRecord, TaskSpec};
use omniq_redis::{RedisBackend, RedisOptions, RedisTaskQueue};
use omniq_storage::conformance::{Fixture, Reopen};
use omniq_storage::{
    BoxFuture, Cancellation, Completed, Completion, DequeueRequest, EnqueueOutcome, Lease,
    LeaseRef, LeaseStatus, LimiterState, LimiterVersion, PurgeRequest, QueueStats, RedriveTarget,
    StateChange, StoreResult, TaskQuery, TaskQueue,
};
use support::{delete_prefix, redis_url, test_prefix};

/// The task queue, deleting every key of its case (all four stores share the prefix) when
/// the case drops it, pass or fail.
#[derive(Debug)]
struct CleanupOnDrop {
    queue: RedisTaskQueue,
    url: String,
    prefix: String,
}

impl Drop for CleanupOnDrop {
    fn drop(&mut self) {
        delete_prefix(&self.url, &self.prefix);
    }
}

impl TaskQueue for CleanupOnDrop {
    fn capabilities(&self) -> omniq_storage::Capabilities {
        self.queue.capabilities()
    }

    fn enqueue(&self, tasks: Vec<TaskSpec>) -> BoxFuture<'_, StoreResult<Vec<EnqueueOutcome>>> {
        self.queue.enqueue(tasks)
    }

    fn dequeue(&self, request: DequeueRequest) -> BoxFuture<'_, StoreResult<Vec<Lease>>> {
        self.queue.dequeue(request)
    }

    fn heartbeat(
        &self,
        leases: Vec<LeaseRef>,
        extend: Duration,
    ) -> BoxFuture<'_, StoreResult<Vec<LeaseStatus>>> {
        self.queue.heartbeat(leases, extend)
    }

    fn complete(&self, completions: Vec<Completion>) -> BoxFuture<'_, StoreResult<Completed>> {
        self.queue.complete(completions)
    }

    fn recover_expired(&self, limit: usize) -> BoxFuture<'_, StoreResult<Vec<StateChange>>> {
        self.queue.recover_expired(limit)
    }

    fn expire_due(&self, limit: usize) -> BoxFuture<'_, StoreResult<Vec<StateChange>>> {
        self.queue.expire_due(limit)
    }

    fn redrive(&self, target: RedriveTarget) -> BoxFuture<'_, StoreResult<Vec<TaskId>>> {
        self.queue.redrive(target)
    }

    fn purge(&self, request: PurgeRequest) -> BoxFuture<'_, StoreResult<u64>> {
        self.queue.purge(request)
    }

    fn get(&self, id: TaskId) -> BoxFuture<'_, StoreResult<Option<TaskRecord>>> {
        self.queue.get(id)
    }

    fn list(&self, query: TaskQuery) -> BoxFuture<'_, StoreResult<Vec<TaskRecord>>> {
        self.queue.list(query)
    }

    fn stats(&self, queue: String) -> BoxFuture<'_, StoreResult<QueueStats>> {
        self.queue.stats(queue)
    }

    fn queue_names(&self) -> BoxFuture<'_, StoreResult<Vec<String>>> {
        self.queue.queue_names()
    }

    fn cancel(&self, id: TaskId, reason: String) -> BoxFuture<'_, StoreResult<Cancellation>> {
        self.queue.cancel(id, reason)
    }

    fn set_queue_paused(&self, queue: String, paused: bool) -> BoxFuture<'_, StoreResult<bool>> {
        self.queue.set_queue_paused(queue, paused)
    }

    fn paused_queues(&self) -> BoxFuture<'_, StoreResult<Vec<String>>> {
        self.queue.paused_queues()
    }

    fn report_progress(
        &self,
        lease: LeaseRef,
        progress: serde_json::Value,
        extend: Duration,
    ) -> BoxFuture<'_, StoreResult<LeaseStatus>> {
        self.queue.report_progress(lease, progress, extend)
    }

    fn read_limiter(&self, key: String) -> BoxFuture<'_, StoreResult<Option<LimiterState>>> {
        self.queue.read_limiter(key)
    }

    fn write_limiter(
        &self,
        key: String,
        expected: Option<LimiterVersion>,
        bytes: Vec<u8>,
    ) -> BoxFuture<'_, StoreResult<bool>> {
        self.queue.write_limiter(key, expected, bytes)
    }

    fn wait_for_tasks(&self, queues: &[String], timeout: Duration) -> BoxFuture<'_, ()> {
        self.queue.wait_for_tasks(queues, timeout)
    }
}

async fn stores() -> StoreResult<Fixture> {
    let url = redis_url();
    // Schedules (`due`, `list`) and `RedriveTarget::All` are store-wide: a prefix per case
    // keeps the cases apart.
    let prefix = test_prefix();
    let backend = RedisBackend::connect_with(&url, RedisOptions::prefix(&prefix)).await?;
    let skewable = backend.clone();
    let damaged = backend.clone();
    let damaged_prefix = prefix.clone();
    Ok(Fixture {
        queue: Arc::new(CleanupOnDrop {
            queue: backend.task_queue(),
            url,
            prefix,
        }),
        results: Arc::new(backend.result_store()),
        events: Arc::new(backend.event_store()),
        schedules: Arc::new(backend.schedule_store()),
        // The case's keys go when `queue` drops; this handle shares them.
        reopen: Reopen::new(move |clock| {
            let queue: Arc<dyn TaskQueue> = Arc::new(skewable.with_clock(clock).task_queue());
            async move { Ok(queue) }
        }),
        corrupt: Some(corrupt::corrupt(damaged, damaged_prefix)),
    })
}

omniq_storage::conformance_suite!(stores);
omniq_scheduler::scheduler_suite!(stores);
