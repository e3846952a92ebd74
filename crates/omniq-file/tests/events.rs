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

/// Segments written side by side overlap in time: a query merges them oldest first, finds
/// one task's events in segments of many tasks, stops at its limit without losing an
/// earlier event of a later segment, and a purge that cuts a segment keeps the rest of it.
mod segments {
    use bytes::Bytes;
    use chrono::{DateTime, Duration, Utc};
    use omniq_models::{TaskEvent, TaskEventKind, TaskId};
    use omniq_storage::{EventQuery, EventStore};

    use super::*;

    fn at(base: DateTime<Utc>, task: TaskId, seconds: i64) -> TaskEvent {
        let mut event = TaskEvent::for_task(TaskEventKind::Started, task, "t", "segments");
        event.at = base + Duration::seconds(seconds);
        event
    }

    async fn merge_and_cut(objects: Arc<dyn Objects>) {
        let store = FileEventStore::new(Arc::clone(&objects));
        let (a, b) = (TaskId::new(), TaskId::new());
        let base = DateTime::from_timestamp(Utc::now().timestamp() - 600, 0).expect("a time");
        let at = |task, seconds| at(base, task, seconds);
        // Two batches, each of two tasks, their times interleaved.
        store
            .append(vec![at(a, 0), at(b, 2), at(a, 4)])
            .await
            .expect("append");
        store
            .append(vec![at(b, 1), at(a, 3), at(b, 5)])
            .await
            .expect("append");
        assert_eq!(objects.list("events").await.expect("list").len(), 2);
        let seconds = |events: &[TaskEvent]| -> Vec<i64> {
            events.iter().map(|e| (e.at - base).num_seconds()).collect()
        };
        let all = store.query(EventQuery::new()).await.expect("query");
        assert_eq!(seconds(&all), [0, 1, 2, 3, 4, 5]);
        let of_a = store.query(EventQuery::task(a)).await.expect("query");
        assert_eq!(seconds(&of_a), [0, 3, 4]);
        let first_two = store
            .query(EventQuery::new().limit(2))
            .await
            .expect("query");
        assert_eq!(seconds(&first_two), [0, 1]);
        let since = store
            .query(EventQuery::new().since(at(a, 3).at))
            .await
            .expect("query");
        assert_eq!(seconds(&since), [3, 4, 5]);

        // Before second 3, one at a time: each cut keeps the rest of its segment.
        let cutoff = at(a, 3).at;
        let mut counts = Vec::new();
        for _ in 0..5 {
            counts.push(store.purge_before(cutoff, 1).await.expect("purge"));
        }
        assert_eq!(counts, [1, 1, 1, 0, 0]);
        let left = store.query(EventQuery::new()).await.expect("query");
        assert_eq!(seconds(&left), [3, 4, 5]);
    }

    /// What a purge or a crash leaves behind: an empty segment (a delete's tombstone) and
    /// a garbage one go at the next purge; a line of a newer release survives a cut; an
    /// event left in two segments is shown once.
    async fn leftovers(objects: Arc<dyn Objects>) {
        let store = FileEventStore::new(Arc::clone(&objects));
        let task = TaskId::new();
        let base = DateTime::from_timestamp(Utc::now().timestamp() - 600, 0).expect("a time");
        let at = |seconds| at(base, task, seconds);
        let micros = |event: &TaskEvent| event.at.timestamp_micros();
        let key = |first: i64, last: i64| {
            format!("events/{first:020}-{}-{last:020}-{task}", TaskId::new())
        };
        let (old, new) = (at(0), at(10));
        let empty = key(micros(&old), micros(&old));
        objects.create(&empty, Bytes::new()).await.expect("write");
        let garbage = key(micros(&old), micros(&old));
        objects
            .create(&garbage, Bytes::from_static(b"{not json\n"))
            .await
            .expect("write");
        let newer_release = r#"{"kind":"teleported"}"#;
        let mixed = format!(
            "{}\n{}\n{newer_release}\n",
            serde_json::to_string(&old).expect("json"),
            serde_json::to_string(&new).expect("json")
        );
        objects
            .create(&key(micros(&old), micros(&new)), Bytes::from(mixed))
            .await
            .expect("write");
        // The newer event again, as a purge cut short leaves it.
        store.append(vec![new.clone()]).await.expect("append");

        assert_eq!(store.purge_before(at(5).at, 0).await.expect("purge"), 1);
        let keys = objects.list("events").await.expect("list");
        assert!(
            !keys.contains(&empty) && !keys.contains(&garbage),
            "{keys:?}"
        );
        assert_eq!(keys.len(), 2, "the remainder and the copy: {keys:?}");
        let mut kept_newer_line = false;
        for key in &keys {
            let stored = objects.get(key).await.expect("get").expect("stored");
            kept_newer_line |= String::from_utf8_lossy(&stored.bytes).contains(newer_release);
        }
        assert!(kept_newer_line, "the newer release's line was dropped");
        let left = store.query(EventQuery::task(task)).await.expect("query");
        assert_eq!(left, vec![new], "each event once");
    }

    #[tokio::test]
    async fn leftovers_on_a_directory() {
        let (objects, _dir) = support::directory().expect("a directory");
        leftovers(objects).await;
    }

    #[tokio::test]
    async fn leftovers_in_memory() {
        let (objects, _keep) = support::memory().expect("memory");
        leftovers(objects).await;
    }

    #[tokio::test]
    async fn on_a_directory() {
        let (objects, _dir) = support::directory().expect("a directory");
        merge_and_cut(objects).await;
    }

    #[tokio::test]
    async fn in_memory() {
        let (objects, _keep) = support::memory().expect("memory");
        merge_and_cut(objects).await;
    }
}
