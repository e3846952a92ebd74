//! Every path that enqueues records the enqueue the same way: an enqueue through the
//! facade, a scheduler's fire and a transactional enqueue (PostgreSQL) give their task the
//! same events and count it on the same metric. (This binary installs a metrics recorder
//! for the whole process, so it holds this one test.)

mod support;

use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use omniq_async::{ScheduleTrigger, TaskEvent, TaskEventKind, TaskId};
use support::WAIT;

const TASK: &str = "paths.echo";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_facade_enqueue_and_a_scheduler_fire_record_the_same_events_and_metrics() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("the only recorder in this binary");
    let omniq = support::memory(|_| {})
        .await
        .omniq
        .clone()
        .register_fn(TASK, |n: u32| async move { Ok(n) });
    let mut feed = omniq.events().subscribe();

    let enqueued = omniq
        .enqueue_by_name::<u32>(TASK, 1)
        .queue("by-facade")
        .await
        .expect("enqueue");
    omniq
        .schedule_by_name(
            "paths",
            ScheduleTrigger::every(Duration::from_millis(100)),
            TASK,
            2,
        )
        .queue("by-schedule")
        .max_runs(1)
        .await
        .expect("schedule");
    let worker = omniq
        .worker()
        .queues(["by-facade", "by-schedule"])
        .start()
        .expect("start");
    assert_eq!(enqueued.wait(WAIT).await.expect("result"), 1);

    // The fired task, and every event of both until each succeeded.
    let mut events: Vec<TaskEvent> = Vec::new();
    let fired = tokio::time::timeout(WAIT, async {
        let mut fired: Option<TaskId> = None;
        loop {
            let event = feed.next().await.expect("the feed is live");
            if event.kind == TaskEventKind::ScheduleFired {
                fired = event.task_id;
            }
            events.push(event);
            let done = |id: Option<TaskId>| {
                events
                    .iter()
                    .any(|e| e.task_id == id && e.kind == TaskEventKind::Succeeded)
            };
            if fired.is_some() && done(fired) && done(Some(enqueued.id())) {
                return fired;
            }
        }
    })
    .await
    .expect("both tasks ran")
    .expect("a fire");
    worker.shutdown().await.expect("shutdown");
    let in_transaction = transactional(&mut events).await;

    let kinds = |id: TaskId| -> Vec<TaskEventKind> {
        events
            .iter()
            .filter(|e| e.task_id == Some(id))
            .map(|e| e.kind)
            .filter(|kind| *kind != TaskEventKind::ScheduleFired)
            .collect()
    };
    let expected = vec![
        TaskEventKind::Enqueued,
        TaskEventKind::Started,
        TaskEventKind::Succeeded,
    ];
    assert_eq!(kinds(enqueued.id()), expected, "through the facade");
    assert_eq!(kinds(fired), expected, "fired by the scheduler");
    if let Some(id) = in_transaction {
        assert_eq!(kinds(id), expected, "enqueued in a transaction");
    }

    // One snapshot: reading takes the counts (they start again from 0).
    let snapshot = snapshotter.snapshot().into_vec();
    let enqueued_total = |queue: &str| -> u64 {
        snapshot
            .iter()
            .filter(|(key, ..)| {
                let key = key.key();
                key.name() == "omniq_tasks_enqueued_total"
                    && key
                        .labels()
                        .any(|l| l.key() == "queue" && l.value() == queue)
                    && key.labels().any(|l| l.key() == "task" && l.value() == TASK)
            })
            .map(|(.., value)| match value {
                DebugValue::Counter(n) => *n,
                _ => 0,
            })
            .sum()
    };
    assert_eq!(enqueued_total("by-facade"), 1, "through the facade");
    assert_eq!(enqueued_total("by-schedule"), 1, "fired by the scheduler");
    if in_transaction.is_some() {
        assert_eq!(
            enqueued_total("in-transaction"),
            1,
            "enqueued in a transaction"
        );
    }
}

/// A task enqueued in a committed PostgreSQL transaction and run; its events are appended
/// to `events`. `None` when PostgreSQL is unreachable and services are not required.
#[cfg(feature = "postgres")]
async fn transactional(events: &mut Vec<TaskEvent>) -> Option<TaskId> {
    let harness = support::postgres(|_| {}).await?;
    let omniq = harness
        .omniq
        .clone()
        .register_fn(TASK, |n: u32| async move { Ok(n) });
    let mut feed = omniq.events().subscribe();
    let url = std::env::var("OMNIQ_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let pool = sqlx::PgPool::connect(&url).await.expect("pool");
    let mut tx = pool.begin().await.expect("begin");
    let handle = omniq
        .enqueue_by_name::<u32>(TASK, 3)
        .queue("in-transaction")
        .in_transaction(&mut *tx)
        .await
        .expect("enqueue in the transaction");
    tx.commit().await.expect("commit");
    let worker = omniq
        .worker()
        .queues(["in-transaction"])
        .start()
        .expect("start");
    assert_eq!(handle.wait(WAIT).await.expect("result"), 3);
    tokio::time::timeout(WAIT, async {
        while let Some(event) = feed.next().await {
            let succeeded =
                event.task_id == Some(handle.id()) && event.kind == TaskEventKind::Succeeded;
            events.push(event);
            if succeeded {
                return;
            }
        }
    })
    .await
    .expect("its events");
    worker.shutdown().await.expect("shutdown");
    Some(handle.id())
}

#[cfg(not(feature = "postgres"))]
async fn transactional(_events: &mut Vec<TaskEvent>) -> Option<TaskId> {
    None
}
