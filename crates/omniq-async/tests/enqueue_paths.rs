//! Every path that enqueues records the enqueue the same way: an enqueue through the
//! facade and a scheduler's fire give their task the same event and count it on the same
//! metric. (This binary installs a metrics recorder for the whole process, so it holds this
//! one test.)

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
}
