//! The shared conformance suite against RabbitMQ, each case under a prefix of its own:
//! the cases of the capabilities the broker declares run, the rest are listed as skipped
//! with the capability they need, and their refusal is checked. Results, events and
//! schedules live in memory, as they would in another store.

mod support;

use omniq_storage::StoreResult;
use omniq_storage::conformance::Fixture;
use support::{DeleteOnDrop, fresh_backend};

async fn stores() -> StoreResult<Fixture> {
    let backend = fresh_backend().await?;
    // What the case declared is deleted when its fixture drops.
    let cleanup = DeleteOnDrop(vec![backend.clone()]);
    Ok(omniq_testkit::broker::fixture(
        move |clock| backend.with_clock(clock),
        cleanup,
    ))
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
