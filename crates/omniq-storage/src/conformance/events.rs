//! Event store cases.

use chrono::Utc;
use omniq_models::{TaskEvent, TaskEventKind, TaskId};

use super::Stores;
use super::support::unique_queue;
use crate::EventQuery;

/// Every transition's event can be read back by task, by kind, by queue and by time.
pub async fn events_are_recorded_and_queried_by_task_kind_and_time(stores: Stores) {
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
        .query(EventQuery {
            queue: Some(queue.clone()),
            kinds: vec![TaskEventKind::Started],
            ..EventQuery::default()
        })
        .await
        .expect("query");
    assert_eq!(started.len(), 2);

    let in_queue = stores
        .events
        .query(EventQuery {
            queue: Some(queue.clone()),
            since: Some(before),
            ..EventQuery::default()
        })
        .await
        .expect("query");
    assert_eq!(in_queue.len(), 6);
    let none_later = stores
        .events
        .query(EventQuery {
            queue: Some(queue.clone()),
            since: Some(Utc::now() + chrono::Duration::seconds(60)),
            ..EventQuery::default()
        })
        .await
        .expect("query");
    assert!(none_later.is_empty());
    let limited = stores
        .events
        .query(EventQuery {
            queue: Some(queue.clone()),
            limit: 2,
            ..EventQuery::default()
        })
        .await
        .expect("query");
    assert_eq!(limited.len(), 2);
}
