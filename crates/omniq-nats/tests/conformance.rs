//! The shared conformance suite and the scheduler suite against the NATS server, each
//! case under a prefix of its own.

mod support;

use std::sync::Arc;

use omniq_models::{TaskId, TaskResult};
use omniq_nats::NatsResultStore;
use omniq_storage::conformance::{Fixture, Reopen};
use omniq_storage::{BoxFuture, ResultStore, StoreResult, TaskQueue};
use support::{DeleteOnDrop, fresh_backend};

/// The result store, deleting its case's streams and buckets when the case drops it.
#[derive(Debug)]
struct Results {
    store: NatsResultStore,
    _cleanup: DeleteOnDrop,
}

impl ResultStore for Results {
    fn put(&self, results: Vec<TaskResult>) -> BoxFuture<'_, StoreResult<()>> {
        self.store.put(results)
    }

    fn get(&self, id: TaskId) -> BoxFuture<'_, StoreResult<Option<TaskResult>>> {
        self.store.get(id)
    }

    fn delete(&self, id: TaskId) -> BoxFuture<'_, StoreResult<bool>> {
        self.store.delete(id)
    }

    fn purge_expired(&self, limit: usize) -> BoxFuture<'_, StoreResult<u64>> {
        self.store.purge_expired(limit)
    }

    fn wait_for(
        &self,
        id: TaskId,
        timeout: std::time::Duration,
    ) -> BoxFuture<'_, StoreResult<Option<TaskResult>>> {
        self.store.wait_for(id, timeout)
    }
}

async fn stores() -> StoreResult<Fixture> {
    let backend = fresh_backend().await?;
    let queue: Arc<dyn TaskQueue> = Arc::new(backend.task_queue());
    let same = backend.clone();
    Ok(Fixture {
        queue,
        results: Arc::new(Results {
            store: backend.result_store(),
            _cleanup: DeleteOnDrop(backend.clone()),
        }),
        events: Arc::new(backend.event_store()),
        schedules: Arc::new(backend.schedule_store()),
        reopen: Reopen::new(move |clock| {
            let queue: Arc<dyn TaskQueue> = Arc::new(same.with_clock(clock).task_queue());
            async move { Ok(queue) }
        }),
        // Tasks are JSON values a compare-and-set replaces whole: an unreadable one cannot
        // be dead-lettered in place (there is nothing to keep of it), so the case is not run;
        // claims leave it out with a warning.
        corrupt: None,
    })
}

omniq_storage::conformance_suite!(stores);

omniq_scheduler::scheduler_suite!(stores);
