//! The shared conformance suite and the scheduler suite against the NATS server, each
//! case under a prefix of its own.

mod support;

use std::sync::Arc;

use omniq_models::{TaskId, TaskResult};
use omniq_nats::NatsResultStore;
use omniq_storage::conformance::{Corrupt, Fixture, Reopen};
use omniq_storage::{BoxFuture, ResultStore, StoreResult, TaskQueue};
use support::{DeleteOnDrop, edit_stored_task, fresh_backend};

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

/// Damages the stored task `id` as a buggy release or a hand edit would: its backoff made a
/// value no release ever wrote, the rest left as it was.
async fn corrupt_task(backend: &omniq_nats::NatsBackend, id: omniq_models::TaskId) {
    edit_stored_task(backend, id, |meta| {
        meta["record"]["spec"]["backoff"] = serde_json::Value::from("garbage");
    })
    .await;
}

async fn stores() -> StoreResult<Fixture> {
    let backend = fresh_backend().await?;
    let queue: Arc<dyn TaskQueue> = Arc::new(backend.task_queue());
    let same = backend.clone();
    let corrupting = backend.clone();
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
        corrupt: Some(Corrupt::new(move |id| {
            let backend = corrupting.clone();
            async move { corrupt_task(&backend, id).await }
        })),
    })
}

omniq_storage::conformance_suite!(stores);

omniq_scheduler::scheduler_suite!(stores);
