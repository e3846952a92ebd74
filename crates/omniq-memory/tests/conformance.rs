//! The shared conformance suite against the memory backend.

use std::sync::Arc;

use omniq_memory::{MemoryEventStore, MemoryResultStore, MemoryScheduleStore, MemoryTaskQueue};
use omniq_storage::conformance::{Fixture, Reopen};
use omniq_storage::{StoreResult, TaskQueue};

async fn stores() -> StoreResult<Fixture> {
    let queue: Arc<dyn TaskQueue> = Arc::new(MemoryTaskQueue::new());
    let same = queue.clone();
    Ok(Fixture {
        queue,
        results: Arc::new(MemoryResultStore::new()),
        events: Arc::new(MemoryEventStore::new()),
        schedules: Arc::new(MemoryScheduleStore::new()),
        // A memory store lives in one process, so it has one clock: the machine's, which
        // it reads for everything. There is no client clock to skew, and the skewed-clock
        // cases run against the same handle.
        reopen: Reopen::new(move |_clock| {
            let queue = same.clone();
            async move { Ok(queue) }
        }),
        // Typed values in memory: nothing to corrupt.
        corrupt: None,
    })
}

omniq_storage::conformance_suite!(stores);

omniq_scheduler::scheduler_suite!(stores);
