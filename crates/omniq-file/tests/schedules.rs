//! The shared conformance cases of schedule stores, and the scheduler's suite (racing
//! schedulers enqueue each fire once, pauses, misfires), on the object-store schedule store
//! over each store reachable here, beside the memory backend's queue.

#[path = "support/fixture.rs"]
mod stores;
mod support;

use std::sync::Arc;

use omniq_file::{FileScheduleStore, Objects};
use omniq_storage::conformance::Fixture;
use omniq_storage::{StoreError, StoreResult};

fn fixture(objects: Arc<dyn Objects>) -> Fixture {
    stores::fixture(stores::Replaced {
        schedules: Some(Arc::new(FileScheduleStore::new(objects))),
        ..Default::default()
    })
}

/// A fixture on the store `stores` makes; its guard (a temporary directory) is kept for
/// the rest of the process, since the fixture cannot hold it.
fn fixture_on<K: 'static>(stores: Option<(Arc<dyn Objects>, K)>) -> StoreResult<Fixture> {
    let Some((objects, keep)) = stores else {
        return Err(StoreError::unavailable(
            "file",
            "the test server is unreachable",
        ));
    };
    std::mem::forget(keep);
    Ok(fixture(objects))
}

/// The storage cases and the scheduler's suite, on one store.
macro_rules! schedule_cases {
    ($module:ident, $stores:expr) => {
        mod $module {
            use super::*;

            async fn stores() -> StoreResult<Fixture> {
                fixture_on($stores)
            }

            omniq_scheduler::scheduler_suite!(stores);

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn schedules_are_created_once_by_name_and_managed() {
                let Some(stores) = omniq_storage::conformance::prepare(
                    "schedules_are_created_once_by_name_and_managed",
                    stores,
                )
                .await
                else {
                    return;
                };
                omniq_storage::conformance::schedules_are_created_once_by_name_and_managed(stores)
                    .await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn schedule_advance_claims_a_fire_exactly_once() {
                let Some(stores) = omniq_storage::conformance::prepare(
                    "schedule_advance_claims_a_fire_exactly_once",
                    stores,
                )
                .await
                else {
                    return;
                };
                omniq_storage::conformance::schedule_advance_claims_a_fire_exactly_once(stores)
                    .await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn advance_never_undoes_a_pause_or_an_update() {
                let Some(stores) = omniq_storage::conformance::prepare(
                    "advance_never_undoes_a_pause_or_an_update",
                    stores,
                )
                .await
                else {
                    return;
                };
                omniq_storage::conformance::advance_never_undoes_a_pause_or_an_update(stores).await;
            }
        }
    };
}

schedule_cases!(on_a_directory, support::directory());
schedule_cases!(in_memory, support::memory());
schedule_cases!(on_s3, support::s3());
schedule_cases!(on_azure, support::azure());
