//! The conformance fixture of a broker (RabbitMQ, SQS), which holds tasks only.

use std::sync::Arc;

use omniq_memory::{MemoryEventStore, MemoryResultStore, MemoryScheduleStore};
use omniq_storage::conformance::{Fixture, Reopen};
use omniq_storage::{Clock, TaskQueue};

/// The stores of one conformance case on a broker: the task queue `open` gives on a client
/// clock, and results, events and schedules in memory, as they would be in another store.
/// `keep` lives as long as the fixture: a guard that deletes what the case made on the
/// broker when it drops.
pub fn fixture<Q, F, K>(open: F, keep: K) -> Fixture
where
    Q: TaskQueue + 'static,
    F: Fn(Clock) -> Q + Send + Sync + 'static,
    K: Send + Sync + 'static,
{
    let queue: Arc<dyn TaskQueue> = Arc::new(open(Clock::system()));
    let keep = Arc::new(keep);
    Fixture {
        queue,
        results: Arc::new(MemoryResultStore::new()),
        events: Arc::new(MemoryEventStore::new()),
        schedules: Arc::new(MemoryScheduleStore::new()),
        reopen: Reopen::new(move |clock| {
            let _ = &keep;
            let queue: Arc<dyn TaskQueue> = Arc::new(open(clock));
            async move { Ok(queue) }
        }),
        corrupt: None,
    }
}
