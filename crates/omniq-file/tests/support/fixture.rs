//! A conformance fixture of the memory backend's stores with some of them replaced: the
//! object-store stores finished so far run the shared cases of their kind beside it
//! (results or events on a store of their own is a supported pairing).

use std::sync::Arc;

use omniq_memory::{MemoryEventStore, MemoryResultStore, MemoryScheduleStore, MemoryTaskQueue};
use omniq_storage::conformance::{Fixture, Reopen};
use omniq_storage::{EventStore, ResultStore, ScheduleStore, TaskQueue};

/// The object-store stores a fixture takes in place of the memory backend's.
#[derive(Default)]
pub(crate) struct Replaced {
    pub(crate) results: Option<Arc<dyn ResultStore>>,
    pub(crate) events: Option<Arc<dyn EventStore>>,
    pub(crate) schedules: Option<Arc<dyn ScheduleStore>>,
}

/// The memory backend's stores, with those of `replaced` in their place.
pub(crate) fn fixture(replaced: Replaced) -> Fixture {
    let Replaced {
        results,
        events,
        schedules,
    } = replaced;
    let queue: Arc<dyn TaskQueue> = Arc::new(MemoryTaskQueue::new());
    let same = queue.clone();
    Fixture {
        queue,
        results: results.unwrap_or_else(|| Arc::new(MemoryResultStore::new())),
        events: events.unwrap_or_else(|| Arc::new(MemoryEventStore::new())),
        schedules: schedules.unwrap_or_else(|| Arc::new(MemoryScheduleStore::new())),
        reopen: Reopen::new(move |_clock| {
            let queue = same.clone();
            async move { Ok(queue) }
        }),
        corrupt: None,
    }
}
