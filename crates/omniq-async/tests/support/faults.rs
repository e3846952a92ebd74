//! An OmniQ whose task queue and result store sit behind fault switches of their own
//! (`omniq_storage::testing`), for the worker's fault tests.

use std::sync::Arc;

use omniq_async::{AsyncOmniQ, Stores};
use omniq_storage::testing::{Faults, FaultyQueue, FaultyResults};

/// An OmniQ over the harness's stores, with the queue and the result store behind fault
/// switches of their own: `(omniq, queue faults, result faults)`.
pub fn faulty(omniq: &AsyncOmniQ) -> (AsyncOmniQ, Faults, Faults) {
    let stores = omniq.stores().clone();
    let queue_faults = Faults::new();
    let result_faults = Faults::new();
    let wrapped = Stores {
        queue: Arc::new(FaultyQueue::new(stores.queue, queue_faults.clone())),
        results: Arc::new(FaultyResults::new(stores.results, result_faults.clone())),
        events: stores.events,
        schedules: stores.schedules,
    };
    let faulty = AsyncOmniQ::with_stores(omniq.settings().clone(), wrapped);
    (faulty, queue_faults, result_faults)
}
