//! Paused queues on every backend: a paused queue's tasks wait while the other queues
//! run, the pause holds across a worker restart, a resume lets them run, and a worker
//! that cannot read the paused queues claims nothing.

mod support;

use std::sync::Arc;
use std::time::Duration;

use omniq_async::{Task, TaskContext, TaskError, TaskEventKind, TaskState};
use omniq_storage::testing::{Fault, Op, Window};
use serde::{Deserialize, Serialize};
use support::{Double, Harness, WAIT};

/// Holds its worker's only slot until the test lets it go.
#[derive(Debug, Serialize, Deserialize)]
struct Held;

/// What lets a [`Held`] task finish.
struct Gate(Arc<tokio::sync::Semaphore>);

impl Task for Held {
    const NAME: &'static str = "pausing.held";
    type Output = ();
    async fn run(self, ctx: TaskContext) -> Result<(), TaskError> {
        let gate = ctx.state::<Gate>()?;
        let _pass = gate
            .0
            .acquire()
            .await
            .map_err(|e| TaskError::new(e.to_string()))?;
        Ok(())
    }
}

/// Waits, within [`WAIT`], until task `id` is in `state`; returns its record.
async fn wait_for_state(
    omniq: &omniq_async::AsyncOmniQ,
    id: omniq_async::TaskId,
    state: TaskState,
) -> omniq_async::TaskRecord {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let record = omniq.task(id).await.expect("get").expect("stored");
        if record.state == state {
            return record;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "task {id} never reached {state:?}: {record:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

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

async fn a_busy_worker_gives_back_a_buffered_task_of_a_queue_paused_meanwhile(h: Harness) {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let (omniq, faults, _) = support::faults::faulty(&h.omniq);
    let omniq = omniq.state(Gate(Arc::clone(&gate))).register::<Held>();
    let name = queue("busy");
    let first = omniq.enqueue(Held).queue(&name).await.expect("enqueue");
    let second = omniq.enqueue(Held).queue(&name).await.expect("enqueue");
    // One slot, one buffered lease: both are claimed, either may take the slot.
    let worker = omniq
        .worker()
        .queues([name.clone()])
        .concurrency(1)
        .prefetch(1)
        .start()
        .expect("start");
    wait_for_state(&omniq, first.id(), TaskState::Running).await;
    wait_for_state(&omniq, second.id(), TaskState::Running).await;

    assert!(omniq.pause_queue(&name).await.expect("pause"));
    // The claim loop waits for the busy slot; the worker still reads the pause (the
    // second read from now began after the pause was stored).
    let reads = faults.calls(Op::PausedQueues);
    faults
        .wait_for_calls(Op::PausedQueues, reads + 2, WAIT)
        .await
        .expect("the busy worker reads the paused queues");
    // The running one finishes; the buffered one then gets the slot and must not start.
    gate.add_permits(1);
    let deadline = tokio::time::Instant::now() + WAIT;
    let given_back = loop {
        let mut records = Vec::new();
        for id in [first.id(), second.id()] {
            records.push(omniq.task(id).await.expect("get").expect("stored"));
        }
        let done = records.iter().any(|r| r.state == TaskState::Succeeded);
        if let Some(queued) = records.iter().find(|r| r.state == TaskState::Queued)
            && done
        {
            break queued.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "one task finishes and the other is given back: {records:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(given_back.attempts, 0, "given back unrun: {given_back:?}");

    assert!(omniq.resume_queue(&name).await.expect("resume"));
    gate.add_permits(1);
    let record = wait_for_state(&omniq, given_back.spec.id, TaskState::Succeeded).await;
    assert_eq!(record.attempts, 1, "{record:?}");
    worker.shutdown().await.expect("shutdown");
}

on_each_backend! {
    busy => a_busy_worker_gives_back_a_buffered_task_of_a_queue_paused_meanwhile;
    restarts => a_paused_queue_waits_across_worker_restarts_until_resumed;
    unreadable => a_worker_that_cannot_read_the_paused_queues_claims_nothing;
}
