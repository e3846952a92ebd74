//! Live events cross instances through a store that publishes them: a subscriber on one
//! OmniQ sees the lifecycle of a task that another OmniQ (another process, in production)
//! enqueued and ran, and its own events exactly once.

#![cfg(feature = "redis")]

mod support;

use std::time::Duration;

use omniq_async::{AsyncOmniQ, EventSubscription, TaskEvent, TaskEventKind, TaskId};
use support::WAIT;

/// The next event of `task` within `limit`, skipping others.
async fn next_of(feed: &mut EventSubscription, task: TaskId, limit: Duration) -> Option<TaskEvent> {
    tokio::time::timeout(limit, async {
        loop {
            match feed.next().await {
                Some(event) if event.task_id == Some(task) => return Some(event),
                Some(_) => {}
                None => return None,
            }
        }
    })
    .await
    .ok()
    .flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_sees_events_of_a_task_run_by_another_instance() {
    let Some(watcher) = support::redis(|_| {}).await else {
        return;
    };
    // A second instance on the same Redis and prefix: its own connections, its own
    // event logger, exactly what another process would have.
    let runner = AsyncOmniQ::from_settings(watcher.settings().clone())
        .await
        .expect("second instance")
        .register_fn("remote.echo", |n: u32| async move { Ok(n) });

    let mut feed = watcher.events().subscribe();
    // The follower connects in the background: wait until an event of the other
    // instance comes through before the measured run.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let probe = runner
            .enqueue_by_name::<u32>("remote.echo", 0)
            .queue("probes")
            .await
            .expect("enqueue");
        if next_of(&mut feed, probe.id(), Duration::from_millis(200))
            .await
            .is_some()
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the follower never connected"
        );
    }

    let handle = runner
        .enqueue_by_name::<u32>("remote.echo", 7)
        .await
        .expect("enqueue");
    let worker = runner.worker().start().expect("start");
    assert_eq!(handle.wait(WAIT).await.expect("result"), 7);
    let mut kinds = Vec::new();
    while !kinds.contains(&TaskEventKind::Succeeded) {
        let event = next_of(&mut feed, handle.id(), WAIT)
            .await
            .expect("the other instance's events arrive");
        kinds.push(event.kind);
    }
    assert_eq!(
        kinds,
        vec![
            TaskEventKind::Enqueued,
            TaskEventKind::Started,
            TaskEventKind::Succeeded
        ]
    );
    worker.shutdown().await.expect("shutdown");
    runner.close().await;

    // This instance's own events arrive once: locally, not again as an echo.
    let own = watcher
        .enqueue_by_name::<u32>("remote.echo", 1)
        .queue("own")
        .await
        .expect("enqueue");
    let first = next_of(&mut feed, own.id(), WAIT).await.expect("own event");
    assert_eq!(first.kind, TaskEventKind::Enqueued);
    watcher.events().flush().await;
    let echo = next_of(&mut feed, own.id(), Duration::from_millis(500)).await;
    assert!(echo.is_none(), "an own event came back twice: {echo:?}");
}
