//! The shared conformance cases of result stores, on the object-store result store over
//! each store reachable here. The task queue, events and schedules of the fixture are the
//! memory backend's: results on a store of their own is a supported pairing, and these
//! cases read and write results only.

#[path = "support/fixture.rs"]
mod stores;
mod support;

use std::sync::Arc;

use omniq_file::{FileResultStore, Objects};

fn fixture(objects: Arc<dyn Objects>) -> omniq_storage::conformance::Fixture {
    stores::fixture(stores::Replaced {
        results: Some(Arc::new(FileResultStore::new(objects))),
        ..Default::default()
    })
}

/// One test per result-store case and store.
macro_rules! result_cases {
    ($module:ident, $stores:expr) => {
        mod $module {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn results_are_stored_and_read_back() {
                let Some((objects, _keep)) = $stores else {
                    return;
                };
                omniq_storage::conformance::results_are_stored_and_read_back(fixture(objects))
                    .await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_result_from_an_earlier_attempt_never_replaces_a_later_one() {
                let Some((objects, _keep)) = $stores else {
                    return;
                };
                omniq_storage::conformance::a_result_from_an_earlier_attempt_never_replaces_a_later_one(
                    fixture(objects),
                )
                .await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn expired_results_are_not_returned() {
                let Some((objects, _keep)) = $stores else {
                    return;
                };
                omniq_storage::conformance::expired_results_are_not_returned(fixture(objects))
                    .await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn purge_expired_removes_expired_results_bounded_per_call() {
                let Some((objects, _keep)) = $stores else {
                    return;
                };
                omniq_storage::conformance::purge_expired_removes_expired_results_bounded_per_call(
                    fixture(objects),
                )
                .await;
            }
        }
    };
}

result_cases!(on_a_directory, support::directory());
result_cases!(in_memory, support::memory());
result_cases!(on_s3, support::s3());
result_cases!(on_azure, support::azure());

/// A marker whose result was never written (a crash between the two) is cleared by a
/// purge, which counts no result for it; a result replaced by one that lives longer is
/// kept, though the marker of the one it replaced has come due.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purges_follow_the_stored_result_not_the_markers() {
    use bytes::Bytes;
    use chrono::Utc;
    use omniq_models::{TaskId, TaskResult};
    use omniq_storage::ResultStore;

    let (objects, _dir) = support::directory().expect("a directory");
    let results = FileResultStore::new(Arc::clone(&objects));

    let orphan = TaskId::new();
    let past = Utc::now() - chrono::Duration::hours(1);
    objects
        .create(
            &format!("results-expiry/{:020}-{orphan}", past.timestamp_micros()),
            Bytes::new(),
        )
        .await
        .expect("create")
        .expect("a marker");

    let id = TaskId::new();
    let mut expired = TaskResult::success(id, "t", vec![1], 1, None);
    expired.expires_at = Some(past);
    results.put(vec![expired]).await.expect("put");
    let longer = TaskResult::success(
        id,
        "t",
        vec![2],
        2,
        Some(std::time::Duration::from_secs(3600)),
    );
    results.put(vec![longer.clone()]).await.expect("put");

    assert_eq!(results.purge_expired(100).await.expect("purge"), 0);
    assert_eq!(results.get(id).await.expect("get"), Some(longer));
    // Only the live result's marker is left.
    let markers = objects.list("results-expiry").await.expect("list");
    assert_eq!(markers.len(), 1, "{markers:?}");
    assert!(markers[0].ends_with(&id.to_string()), "{markers:?}");
}

/// A batch of results that expire together files one expiry marker, not one each; a purge
/// bounded below the batch's size takes it over several calls and removes every one.
mod expiry_groups {
    use std::time::Duration;

    use chrono::Utc;
    use omniq_models::{TaskId, TaskResult};
    use omniq_storage::ResultStore;

    use super::*;

    async fn one_marker_per_batch(objects: Arc<dyn Objects>) {
        let store = FileResultStore::new(Arc::clone(&objects));
        let expires = Utc::now() - chrono::Duration::minutes(5);
        let results: Vec<TaskResult> = (0..5)
            .map(|i| {
                let mut result = TaskResult::success(
                    TaskId::new(),
                    "t",
                    vec![i],
                    1,
                    Some(Duration::from_secs(60)),
                );
                result.expires_at = Some(expires + chrono::Duration::milliseconds(i.into()));
                result
            })
            .collect();
        store.put(results.clone()).await.expect("put");
        let markers = objects.list("results-expiry").await.expect("list");
        assert_eq!(markers.len(), 1, "one marker for the batch: {markers:?}");
        let mut purged = Vec::new();
        loop {
            let n = store.purge_expired(2).await.expect("purge");
            assert!(n <= 2);
            if n == 0 {
                break;
            }
            purged.push(n);
        }
        assert_eq!(purged, [2, 2, 1]);
        for result in &results {
            assert!(!store.delete(result.task_id).await.expect("delete"));
        }
        assert!(
            objects
                .list("results-expiry")
                .await
                .expect("list")
                .is_empty()
        );
    }

    #[tokio::test]
    async fn on_a_directory() {
        let (objects, _dir) = support::directory().expect("a directory");
        one_marker_per_batch(objects).await;
    }

    #[tokio::test]
    async fn in_memory() {
        let (objects, _keep) = support::memory().expect("memory");
        one_marker_per_batch(objects).await;
    }
}
