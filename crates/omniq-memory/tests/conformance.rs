//! The shared conformance suite against the memory backend.

use std::sync::Arc;

use omniq_memory::{MemoryEventStore, MemoryResultStore, MemoryScheduleStore, MemoryTaskQueue};
use omniq_storage::StoreResult;
use omniq_storage::conformance::Stores;

async fn stores() -> StoreResult<Stores> {
    Ok(Stores {
        queue: Arc::new(MemoryTaskQueue::new()),
        results: Arc::new(MemoryResultStore::new()),
        events: Arc::new(MemoryEventStore::new()),
        schedules: Arc::new(MemoryScheduleStore::new()),
    })
}

omniq_storage::conformance_suite!(stores);

omniq_scheduler::scheduler_suite!(stores);
