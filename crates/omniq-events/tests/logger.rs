//! The event logger writes in batches, never blocks, and feeds live subscribers.

use std::sync::Arc;
use std::time::Duration;

use omniq_events::{EventLogger, EventLoggerOptions};
use omniq_memory::MemoryEventStore;
use omniq_models::{TaskEvent, TaskEventKind, TaskId};
use omniq_storage::{BoxFuture, EventQuery, EventStore, StoreResult};
use tokio::sync::Semaphore;

#[tokio::test]
async fn logged_events_are_written_in_order_and_flush_waits_for_them() {
    let store = Arc::new(MemoryEventStore::new());
    let logger = EventLogger::start(store.clone());
    let task = TaskId::new();
    for kind in [
        TaskEventKind::Enqueued,
        TaskEventKind::Started,
        TaskEventKind::Succeeded,
    ] {
        logger.log(TaskEvent::for_task(kind, task, "t", "default"));
    }
    logger.flush().await;
    let kinds: Vec<_> = store
        .query(EventQuery::task(task))
        .await
        .expect("query")
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds,
        vec![
            TaskEventKind::Enqueued,
            TaskEventKind::Started,
            TaskEventKind::Succeeded
        ]
    );
    assert_eq!(logger.dropped(), 0);
}

/// An event store that holds every write until the test lets it through.
#[derive(Debug)]
struct StalledStore {
    gate: Semaphore,
    inner: MemoryEventStore,
}

impl EventStore for StalledStore {
    fn append(&self, events: Vec<TaskEvent>) -> BoxFuture<'_, StoreResult<()>> {
        Box::pin(async move {
            let _permit = self.gate.acquire().await.expect("gate open");
            self.inner.append(events).await
        })
    }
    fn query(&self, query: EventQuery) -> BoxFuture<'_, StoreResult<Vec<TaskEvent>>> {
        self.inner.query(query)
    }
    fn purge_before(
        &self,
        before: chrono::DateTime<chrono::Utc>,
        limit: usize,
    ) -> BoxFuture<'_, StoreResult<u64>> {
        self.inner.purge_before(before, limit)
    }
}

#[tokio::test]
async fn a_stalled_store_drops_and_counts_events_instead_of_blocking() {
    let store = Arc::new(StalledStore {
        gate: Semaphore::new(0),
        inner: MemoryEventStore::new(),
    });
    let logger = EventLogger::with_options(
        store.clone(),
        EventLoggerOptions {
            capacity: 8,
            batch_size: 4,
            subscriber_capacity: 16,
        },
    );
    // log() returns at once even though nothing can be written.
    for _ in 0..100 {
        logger.log(TaskEvent::new(TaskEventKind::Started));
    }
    assert!(
        logger.dropped() >= 100 - 8 - 4,
        "dropped {}",
        logger.dropped()
    );
    store.gate.add_permits(1_000);
    logger.flush().await;
    let written = store
        .inner
        .query(EventQuery::default())
        .await
        .expect("query");
    assert_eq!(written.len() as u64 + logger.dropped(), 100);
}

#[tokio::test]
async fn subscribers_see_live_events_filtered_by_task() {
    let store = Arc::new(MemoryEventStore::new());
    let logger = EventLogger::start(store);
    let task = TaskId::new();
    let mut mine = logger.subscribe().task(task);
    logger.log(TaskEvent::for_task(
        TaskEventKind::Enqueued,
        TaskId::new(),
        "t",
        "q",
    ));
    logger.log(TaskEvent::for_task(TaskEventKind::Enqueued, task, "t", "q"));
    let event = tokio::time::timeout(Duration::from_secs(5), mine.next())
        .await
        .expect("event arrives")
        .expect("logger open");
    assert_eq!(event.task_id, Some(task));
}

#[tokio::test]
async fn a_subscription_is_a_stream_of_its_matching_events() {
    use futures_util::StreamExt;

    let store = Arc::new(MemoryEventStore::new());
    let logger = EventLogger::start(store);
    let task = TaskId::new();
    let stream = logger
        .subscribe()
        .task(task)
        .kinds([TaskEventKind::Started, TaskEventKind::Succeeded])
        .into_stream();
    for kind in [
        TaskEventKind::Enqueued,
        TaskEventKind::Started,
        TaskEventKind::Succeeded,
    ] {
        logger.log(TaskEvent::for_task(kind, task, "t", "q"));
        logger.log(TaskEvent::for_task(kind, TaskId::new(), "t", "q"));
    }
    let kinds: Vec<TaskEventKind> = tokio::time::timeout(
        Duration::from_secs(5),
        stream.take(2).map(|event| event.kind).collect(),
    )
    .await
    .expect("both events arrive");
    assert_eq!(kinds, [TaskEventKind::Started, TaskEventKind::Succeeded]);
}
