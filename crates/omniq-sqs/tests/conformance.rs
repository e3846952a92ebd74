//! The shared conformance suite against an SQS-compatible server (moto), each case under a
//! prefix of its own, on standard queues and (in `fifo`) on FIFO queues: the cases of the
//! capabilities each declares run, the rest are listed as skipped with the capability
//! they need, and their refusal is checked. Results, events and schedules live in memory,
//! as they would in another store.

mod support;

use omniq_sqs::SqsBackend;
use omniq_storage::StoreResult;
use omniq_storage::conformance::Fixture;
use support::{DeleteOnDrop, fresh_backend};

/// The stores of one case, the task queue on `backend`; the queues the case made are
/// deleted when its fixture drops.
fn fixture(backend: SqsBackend) -> Fixture {
    let cleanup = DeleteOnDrop(backend.clone());
    omniq_testkit::broker::fixture(move |clock| backend.with_clock(clock), cleanup)
}

async fn stores() -> StoreResult<Fixture> {
    Ok(fixture(fresh_backend().await?))
}

omniq_storage::conformance_suite!(stores);

/// A broker judges due times only for tasks enqueued as due later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_due_at_once_is_claimed_by_a_worker_whose_clock_is_behind() {
    let case = "a_task_due_at_once_is_claimed_by_a_worker_whose_clock_is_behind";
    let Some(stores) = omniq_storage::conformance::prepare(case, stores).await else {
        return;
    };
    omniq_storage::conformance::a_task_due_at_once_is_claimed_by_a_worker_whose_clock_is_behind(
        stores,
    )
    .await;
}

/// The suite on FIFO queues.
mod fifo {
    use super::*;

    async fn stores() -> StoreResult<Fixture> {
        Ok(fixture(support::fresh_fifo_backend().await?))
    }

    omniq_storage::conformance_suite!(stores);
}
