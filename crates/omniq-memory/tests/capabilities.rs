//! The conformance suite over queues that declare less than everything: every case a queue
//! declares must pass, every other must be skipped, and every missing capability must be
//! refused with a typed `Unsupported` error. The memory queue stands in for a backend
//! that lacks them (a broker), behind `Restricted`.

use std::sync::Arc;

use omniq_memory::{MemoryEventStore, MemoryResultStore, MemoryScheduleStore, MemoryTaskQueue};
use omniq_storage::conformance::{Fixture, Reopen};
use omniq_storage::testing::Restricted;
use omniq_storage::{Capabilities, Capability, StoreResult, TaskQueue};

fn stores_declaring(capabilities: Capabilities) -> Fixture {
    let queue: Arc<dyn TaskQueue> = Arc::new(Restricted::new(
        Arc::new(MemoryTaskQueue::new()),
        capabilities,
    ));
    let same = queue.clone();
    Fixture {
        queue,
        results: Arc::new(MemoryResultStore::new()),
        events: Arc::new(MemoryEventStore::new()),
        schedules: Arc::new(MemoryScheduleStore::new()),
        reopen: Reopen::new(move |_clock| {
            let queue = same.clone();
            async move { Ok(queue) }
        }),
        corrupt: None,
    }
}

/// Only the core: enqueue, claim, heartbeat, complete, recovery.
async fn core_only() -> StoreResult<Fixture> {
    Ok(stores_declaring(Capabilities::none()))
}

/// What a message broker typically holds: delays and priorities, no reading back.
async fn broker_like() -> StoreResult<Fixture> {
    Ok(stores_declaring(
        Capabilities::none()
            .with(Capability::Delays)
            .with(Capability::Priorities)
            .with(Capability::Expiry),
    ))
}

mod core_only {
    omniq_storage::conformance_suite!(super::core_only);
}

mod broker_like {
    omniq_storage::conformance_suite!(super::broker_like);
}

#[tokio::test]
async fn the_restricted_queue_declares_no_more_than_it_wraps() {
    let wrapped = Restricted::new(Arc::new(MemoryTaskQueue::new()), Capabilities::all());
    // The memory queue cannot enqueue inside a SQL transaction; wrapping does not add it.
    assert!(
        !wrapped
            .capabilities()
            .supports(Capability::TransactionalEnqueue)
    );
    assert!(wrapped.capabilities().supports(Capability::Dependencies));
}
