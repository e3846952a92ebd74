//! The shared conformance cases of the result, event and schedule stores, and the scheduler
//! suite, against the NATS server, each case under a prefix of its own. The task queue of
//! these fixtures is the in-memory one: what is under test is the three NATS stores.

mod support;

use std::sync::Arc;

use omniq_memory::MemoryTaskQueue;
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
    let queue: Arc<dyn TaskQueue> = Arc::new(MemoryTaskQueue::new());
    let same = queue.clone();
    Ok(Fixture {
        queue,
        results: Arc::new(Results {
            store: backend.result_store(),
            _cleanup: DeleteOnDrop(backend.clone()),
        }),
        events: Arc::new(backend.event_store()),
        schedules: Arc::new(backend.schedule_store()),
        reopen: Reopen::new(move |_clock| {
            let queue = same.clone();
            async move { Ok(queue) }
        }),
        corrupt: None,
    })
}

omniq_storage::conformance_suite!(@cases stores;
    results_are_stored_and_read_back,
    a_result_from_an_earlier_attempt_never_replaces_a_later_one,
    expired_results_are_not_returned,
    purge_expired_removes_expired_results_bounded_per_call,
    events_are_recorded_and_queried_by_task_kind_and_time,
    purge_before_removes_old_events_bounded_per_call,
    odd_text_in_errors_reasons_and_events_never_fails_a_batch,
    listing_limits_are_clamped_to_the_maximum,
    schedules_are_created_once_by_name_and_managed,
    schedule_advance_claims_a_fire_exactly_once,
    advance_never_undoes_a_pause_or_an_update,
);

omniq_scheduler::scheduler_suite!(stores);
