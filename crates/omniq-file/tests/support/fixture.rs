//! A conformance fixture of the memory backend's stores with some of them replaced: the
//! object-store stores finished so far run the shared cases of their kind beside it
//! (results or events on a store of their own is a supported pairing).

use std::sync::Arc;

use omniq_memory::{MemoryEventStore, MemoryResultStore, MemoryScheduleStore, MemoryTaskQueue};
use omniq_storage::conformance::{Fixture, Reopen};
use omniq_storage::{EventStore, ResultStore, TaskQueue};

/// The memory backend's stores, with `results` and `events` where given.
pub(crate) fn fixture(
    results: Option<Arc<dyn ResultStore>>,
    events: Option<Arc<dyn EventStore>>,
) -> Fixture {
    let queue: Arc<dyn TaskQueue> = Arc::new(MemoryTaskQueue::new());
    let same = queue.clone();
    Fixture {
        queue,
        results: results.unwrap_or_else(|| Arc::new(MemoryResultStore::new())),
        events: events.unwrap_or_else(|| Arc::new(MemoryEventStore::new())),
        schedules: Arc::new(MemoryScheduleStore::new()),
        reopen: Reopen::new(move |_clock| {
            let queue = same.clone();
            async move { Ok(queue) }
        }),
        corrupt: None,
    }
}
