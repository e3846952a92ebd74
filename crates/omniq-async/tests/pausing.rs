//! Paused queues on every backend: a paused queue's tasks wait while the other queues
//! run, the pause holds across a worker restart, a resume lets them run, and a worker
//! that cannot read the paused queues claims nothing.

mod support;

use omniq_async::{TaskEventKind, TaskState};
use omniq_storage::testing::{Fault, Op, Window};
use support::{Double, Harness, WAIT};

fn queue(label: &str) -> String {
    format!(
        "{label}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// The task is still waiting in its queue, never started.
async fn waiting(omniq: &omniq_async::AsyncOmniQ, id: omniq_async::TaskId) {
    let record = omniq.task(id).await.expect("get").expect("stored");
    assert_eq!(record.state, TaskState::Queued, "{record:?}");
    assert_eq!(record.attempts, 0, "{record:?}");
}

async fn a_paused_queue_waits_across_worker_restarts_until_resumed(h: Harness) {
    let omniq = h.omniq.clone().register::<Double>();
    let (paused, open) = (queue("paused"), queue("open"));
    let mut events = omniq.events().subscribe();

    assert!(omniq.pause_queue(&paused).await.expect("pause"));
    assert!(!omniq.pause_queue(&paused).await.expect("pause again"));
    let held = omniq
        .enqueue(Double(1))
        .queue(&paused)
        .await
        .expect("enqueue");
    let first = omniq
        .enqueue(Double(2))
        .queue(&open)
        .await
        .expect("enqueue");
    let stats = omniq.queue_stats(&paused).await.expect("stats");
    assert!(
        stats.paused && stats.count(TaskState::Queued) == 1,
        "{stats:?}"
    );
    assert!(!omniq.queue_stats(&open).await.expect("stats").paused);
    let listed = omniq.queues().await.expect("queues");
    assert!(
        listed.iter().any(|q| q.queue == paused && q.paused),
        "{listed:?}"
    );

    // The paused queue comes first in the worker's order: had the claim that took the
    // open queue's task been allowed to, it would have taken the paused one first.
    let worker = omniq
        .worker()
        .queues([paused.clone(), open.clone()])
        .start()
        .expect("start");
    assert_eq!(first.wait(WAIT).await.expect("open queue runs"), 4);
    waiting(&omniq, held.id()).await;
    worker.shutdown().await.expect("shutdown");

    // A new worker (a restart, a deploy) reads the pause before its first claim.
    let worker = omniq
        .worker()
        .queues([paused.clone(), open.clone()])
        .start()
        .expect("start again");
    let second = omniq
        .enqueue(Double(3))
        .queue(&open)
        .await
        .expect("enqueue");
    assert_eq!(second.wait(WAIT).await.expect("open queue runs"), 6);
    waiting(&omniq, held.id()).await;

    assert!(omniq.resume_queue(&paused).await.expect("resume"));
    assert!(!omniq.resume_queue(&paused).await.expect("resume again"));
    assert_eq!(held.wait(WAIT).await.expect("runs once resumed"), 2);
    worker.shutdown().await.expect("shutdown");
    assert!(!omniq.queue_stats(&paused).await.expect("stats").paused);
    let record = omniq.task(held.id()).await.expect("get").expect("stored");
    assert_eq!(record.attempts, 1, "{record:?}");

    let mut kinds = Vec::new();
    while kinds.len() < 2 {
        let event = tokio::time::timeout(WAIT, events.next())
            .await
            .expect("event")
            .expect("open");
        if event.queue.as_deref() == Some(paused.as_str())
            && matches!(
                event.kind,
                TaskEventKind::QueuePaused | TaskEventKind::QueueResumed
            )
        {
            kinds.push(event.kind);
        }
    }
    assert_eq!(
        kinds,
        [TaskEventKind::QueuePaused, TaskEventKind::QueueResumed]
    );
}

async fn a_worker_that_cannot_read_the_paused_queues_claims_nothing(h: Harness) {
    let (omniq, faults, _) = support::faults::faulty(&h.omniq);
    let omniq = omniq.register::<Double>();
    let open = queue("open");
    let task = omniq
        .enqueue(Double(5))
        .queue(&open)
        .await
        .expect("enqueue");
    faults.set(Op::PausedQueues, Fault::Fail, Window::UntilCleared);
    let worker = omniq
        .worker()
        .queues([open.clone()])
        .start()
        .expect("start");
    faults
        .wait_for_faults(Op::PausedQueues, 2, WAIT)
        .await
        .expect("the worker tries to read the paused queues");
    assert_eq!(
        faults.calls(Op::Dequeue),
        0,
        "no claim before the paused queues are known"
    );
    waiting(&omniq, task.id()).await;
    faults.clear(Op::PausedQueues);
    assert_eq!(task.wait(WAIT).await.expect("runs once readable"), 10);
    worker.shutdown().await.expect("shutdown");
}

on_each_backend! {
    restarts => a_paused_queue_waits_across_worker_restarts_until_resumed;
    unreadable => a_worker_that_cannot_read_the_paused_queues_claims_nothing;
}
