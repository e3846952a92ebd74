//! Event store cases.

use chrono::Utc;
use omniq_models::{TaskEvent, TaskEventKind, TaskId};

use super::Fixture;
use super::support::unique_queue;
use crate::EventQuery;

/// Every transition's event can be read back by task, by kind, by queue and by time.
pub async fn events_are_recorded_and_queried_by_task_kind_and_time(stores: Fixture) {
    let queue = unique_queue("events");
    let task = TaskId::new();
    let other = TaskId::new();
    let kinds = [
        TaskEventKind::Enqueued,
        TaskEventKind::Started,
        TaskEventKind::Retrying,
        TaskEventKind::Started,
        TaskEventKind::Succeeded,
    ];
    let events: Vec<_> = kinds
        .iter()
        .enumerate()
        .map(|(i, kind)| {
            TaskEvent::for_task(*kind, task, "t", &queue).attempt(u32::try_from(i).unwrap_or(0))
        })
        .collect();
    let before = Utc::now() - chrono::Duration::seconds(1);
    stores.events.append(events.clone()).await.expect("append");
    stores
        .events
        .append(vec![TaskEvent::for_task(
            TaskEventKind::Enqueued,
            other,
            "t",
            &queue,
        )])
        .await
        .expect("append");

    let mine = stores
        .events
        .query(EventQuery::task(task))
        .await
        .expect("query");
    assert_eq!(
        mine.iter().map(|e| e.kind).collect::<Vec<_>>(),
        kinds.to_vec()
    );
    assert_eq!(mine[0], events[0], "events round-trip every field");

    let started = stores
        .events
        .query(
            EventQuery::new()
                .queue(queue.clone())
                .kinds(vec![TaskEventKind::Started]),
        )
        .await
        .expect("query");
    assert_eq!(started.len(), 2);

    let in_queue = stores
        .events
        .query(EventQuery::new().queue(queue.clone()).since(before))
        .await
        .expect("query");
    assert_eq!(in_queue.len(), 6);
    let none_later = stores
        .events
        .query(
            EventQuery::new()
                .queue(queue.clone())
                .since(Utc::now() + chrono::Duration::seconds(60)),
        )
        .await
        .expect("query");
    assert!(none_later.is_empty());
    let limited = stores
        .events
        .query(EventQuery::new().queue(queue.clone()).limit(2))
        .await
        .expect("query");
    assert_eq!(limited.len(), 2);
}

/// `purge_before` removes events older than its cutoff, at most its limit per call, and
/// keeps the newer ones.
pub async fn purge_before_removes_old_events_bounded_per_call(stores: Fixture) {
    let queue = unique_queue("events-purge");
    let task = TaskId::new();
    // In whole seconds (every backend stores that precision), and a few minutes back:
    // no other case appends events that old, and a stream-backed store (Redis) may find
    // events by append time give or take its clock-skew allowance.
    let base =
        chrono::DateTime::from_timestamp(Utc::now().timestamp() - 120, 0).expect("a valid time");
    // Leftovers of earlier runs are older still: clear them first.
    while stores.events.purge_before(base, 0).await.expect("purge") > 0 {}
    let events: Vec<_> = (0..6)
        .map(|i| {
            let mut event = TaskEvent::for_task(TaskEventKind::Enqueued, task, "t", &queue);
            event.at = base + chrono::Duration::seconds(i);
            event
        })
        .collect();
    stores.events.append(events).await.expect("append");
    let cutoff = base + chrono::Duration::seconds(5);
    let mut counts = Vec::new();
    for _ in 0..4 {
        counts.push(stores.events.purge_before(cutoff, 2).await.expect("purge"));
    }
    assert_eq!(counts, [2, 2, 1, 0]);
    let left = stores
        .events
        .query(EventQuery::task(task))
        .await
        .expect("query");
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].at, cutoff);
}

/// A listing asked for more than the maximum page returns the maximum, for tasks and events.
pub async fn listing_limits_are_clamped_to_the_maximum(stores: Fixture) {
    let queue = unique_queue("list-max");
    let over = crate::MAX_LIST_LIMIT + 5;
    let tasks: Vec<_> = (0..over)
        .map(|_| super::support::spec(&queue, omniq_models::TaskOptions::default()))
        .collect();
    stores.queue.enqueue(tasks).await.expect("enqueue");
    let listed = stores
        .queue
        .list(
            crate::TaskQuery::new()
                .queue(queue.clone())
                .limit(over * 10),
        )
        .await
        .expect("list");
    assert_eq!(listed.len(), crate::MAX_LIST_LIMIT);

    let task = TaskId::new();
    let events: Vec<_> = (0..over)
        .map(|_| TaskEvent::for_task(TaskEventKind::Enqueued, task, "t", &queue))
        .collect();
    stores.events.append(events).await.expect("append");
    let read = stores
        .events
        .query(EventQuery::new().task_id(task).limit(over * 10))
        .await
        .expect("query");
    assert_eq!(read.len(), crate::MAX_LIST_LIMIT);
}
