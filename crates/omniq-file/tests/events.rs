//! The shared conformance cases of event stores, on the object-store event store over each
//! store reachable here, beside the memory backend's queue (as in `results.rs`).

#[path = "support/fixture.rs"]
mod stores;
mod support;

use std::sync::Arc;

use omniq_file::{FileEventStore, Objects};

fn fixture(objects: Arc<dyn Objects>) -> omniq_storage::conformance::Fixture {
    stores::fixture(stores::Replaced {
        events: Some(Arc::new(FileEventStore::new(objects))),
        ..Default::default()
    })
}

/// One test per event-store case and store.
macro_rules! event_cases {
    ($module:ident, $stores:expr) => {
        mod $module {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn events_are_recorded_and_queried_by_task_kind_and_time() {
                let Some((objects, _keep)) = $stores else {
                    return;
                };
                omniq_storage::conformance::events_are_recorded_and_queried_by_task_kind_and_time(
                    fixture(objects),
                )
                .await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn purge_before_removes_old_events_bounded_per_call() {
                let Some((objects, _keep)) = $stores else {
                    return;
                };
                omniq_storage::conformance::purge_before_removes_old_events_bounded_per_call(
                    fixture(objects),
                )
                .await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn listing_limits_are_clamped_to_the_maximum() {
                let Some((objects, _keep)) = $stores else {
                    return;
                };
                omniq_storage::conformance::listing_limits_are_clamped_to_the_maximum(fixture(
                    objects,
                ))
                .await;
            }
        }
    };
}

event_cases!(on_a_directory, support::directory());
event_cases!(in_memory, support::memory());
event_cases!(on_s3, support::s3());
event_cases!(on_azure, support::azure());
