//! The shared conformance suite against RabbitMQ, each case under a prefix of its own:
//! the cases of the capabilities the broker declares run, the rest are listed as skipped
//! with the capability they need, and their refusal is checked. Results, events and
//! schedules live in memory, as they would in another store.

mod support;

use std::sync::{Arc, Mutex};

use omniq_memory::{MemoryEventStore, MemoryResultStore, MemoryScheduleStore};
use omniq_storage::conformance::{Fixture, Reopen};
use omniq_storage::{BoxFuture, StoreResult, TaskQueue};
use support::{DeleteOnDrop, fresh_backend};

/// The case's queue, deleting what every handle of the case declared when it drops.
#[derive(Debug)]
struct Queue {
    queue: omniq_amqp::AmqpTaskQueue,
    _cleanup: Arc<Mutex<DeleteOnDrop>>,
}

impl TaskQueue for Queue {
    fn capabilities(&self) -> omniq_storage::Capabilities {
        self.queue.capabilities()
    }
    fn enqueue(
        &self,
        tasks: Vec<omniq_models::TaskSpec>,
    ) -> BoxFuture<'_, StoreResult<Vec<omniq_storage::EnqueueOutcome>>> {
        self.queue.enqueue(tasks)
    }
    fn dequeue(
        &self,
        request: omniq_storage::DequeueRequest,
    ) -> BoxFuture<'_, StoreResult<Vec<omniq_storage::Lease>>> {
        self.queue.dequeue(request)
    }
    fn heartbeat(
        &self,
        leases: Vec<omniq_storage::LeaseRef>,
        extend: std::time::Duration,
    ) -> BoxFuture<'_, StoreResult<Vec<omniq_storage::LeaseStatus>>> {
        self.queue.heartbeat(leases, extend)
    }
    fn complete(
        &self,
        completions: Vec<omniq_storage::Completion>,
    ) -> BoxFuture<'_, StoreResult<omniq_storage::Completed>> {
        self.queue.complete(completions)
    }
    fn recover_expired(
        &self,
        limit: usize,
    ) -> BoxFuture<'_, StoreResult<Vec<omniq_storage::StateChange>>> {
        self.queue.recover_expired(limit)
    }
    fn expire_due(
        &self,
        limit: usize,
    ) -> BoxFuture<'_, StoreResult<Vec<omniq_storage::StateChange>>> {
        self.queue.expire_due(limit)
    }
    fn redrive(
        &self,
        target: omniq_storage::RedriveTarget,
    ) -> BoxFuture<'_, StoreResult<Vec<omniq_models::TaskId>>> {
        self.queue.redrive(target)
    }
    fn purge(&self, request: omniq_storage::PurgeRequest) -> BoxFuture<'_, StoreResult<u64>> {
        self.queue.purge(request)
    }
    fn get(
        &self,
        id: omniq_models::TaskId,
    ) -> BoxFuture<'_, StoreResult<Option<omniq_models::TaskRecord>>> {
        self.queue.get(id)
    }
    fn list(
        &self,
        query: omniq_storage::TaskQuery,
    ) -> BoxFuture<'_, StoreResult<Vec<omniq_models::TaskRecord>>> {
        self.queue.list(query)
    }
    fn stats(&self, queue: String) -> BoxFuture<'_, StoreResult<omniq_storage::QueueStats>> {
        self.queue.stats(queue)
    }
    fn queue_names(&self) -> BoxFuture<'_, StoreResult<Vec<String>>> {
        self.queue.queue_names()
    }
    fn cancel(
        &self,
        id: omniq_models::TaskId,
        reason: String,
    ) -> BoxFuture<'_, StoreResult<omniq_storage::Cancellation>> {
        self.queue.cancel(id, reason)
    }
    fn wait_for_tasks(&self, queues: &[String], timeout: std::time::Duration) -> BoxFuture<'_, ()> {
        self.queue.wait_for_tasks(queues, timeout)
    }
    fn stop_claiming(&self, queues: &[String]) -> BoxFuture<'_, StoreResult<()>> {
        self.queue.stop_claiming(queues)
    }
}

async fn stores() -> StoreResult<Fixture> {
    let backend = fresh_backend().await?;
    let cleanup = Arc::new(Mutex::new(DeleteOnDrop(vec![backend.clone()])));
    let queue: Arc<dyn TaskQueue> = Arc::new(Queue {
        queue: backend.task_queue(),
        _cleanup: Arc::clone(&cleanup),
    });
    let same = backend.clone();
    Ok(Fixture {
        queue,
        results: Arc::new(MemoryResultStore::new()),
        events: Arc::new(MemoryEventStore::new()),
        schedules: Arc::new(MemoryScheduleStore::new()),
        reopen: Reopen::new(move |clock| {
            let queue: Arc<dyn TaskQueue> = Arc::new(Queue {
                queue: same.with_clock(clock),
                _cleanup: Arc::clone(&cleanup),
            });
            async move { Ok(queue) }
        }),
        corrupt: None,
    })
}

omniq_storage::conformance_suite!(stores);
