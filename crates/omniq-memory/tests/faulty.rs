//! The fault-injecting wrappers of `omniq_storage::testing`, over the memory backend.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use omniq_memory::{MemoryResultStore, MemoryTaskQueue};
use omniq_models::{TaskId, TaskOptions, TaskSpec, TaskState, WorkerId};
use omniq_storage::testing::{
    Fault, Faults, FaultyQueue, FaultyResults, InjectedFault, Op, Window,
};
use omniq_storage::{
    Completion, CompletionOutcome, DequeueRequest, ResultStore, StoreError, StoreErrorKind,
    TaskQueue,
};

const WAIT: Duration = Duration::from_secs(10);

fn spec() -> TaskSpec {
    TaskSpec::new(
        "faulty.task",
        vec![1],
        TaskOptions::default().queue("q"),
        Utc::now(),
    )
}

fn request() -> DequeueRequest {
    DequeueRequest::new(["q"], 10)
        .lease(Duration::from_secs(30))
        .worker(WorkerId::new("faulty"))
}

fn faulty() -> (Arc<MemoryTaskQueue>, FaultyQueue, Faults) {
    let real = Arc::new(MemoryTaskQueue::new());
    let faults = Faults::new();
    let queue = FaultyQueue::new(real.clone(), faults.clone());
    (real, queue, faults)
}

fn injected(err: &StoreError) -> Option<&InjectedFault> {
    std::error::Error::source(err)?.downcast_ref::<InjectedFault>()
}

async fn enqueue_one(queue: &dyn TaskQueue) -> TaskId {
    queue.enqueue(vec![spec()]).await.expect("enqueue")[0].id()
}

#[tokio::test]
async fn passes_through_without_rules_and_counts_calls() {
    let (_real, queue, faults) = faulty();
    enqueue_one(&queue).await;
    assert_eq!(queue.dequeue(request()).await.expect("dequeue").len(), 1);
    assert_eq!(faults.calls(Op::Enqueue), 1);
    assert_eq!(faults.calls(Op::Dequeue), 1);
    assert_eq!(faults.faults(Op::Dequeue), 0);
}

#[tokio::test]
async fn fail_next_n_fails_without_reaching_the_store_then_passes() {
    let (real, queue, faults) = faulty();
    faults.set(Op::Enqueue, Fault::Fail, Window::Next(2));
    for _ in 0..2 {
        let err = queue.enqueue(vec![spec()]).await.expect_err("injected");
        assert_eq!(err.kind(), StoreErrorKind::Unavailable);
        assert_eq!(
            injected(&err),
            Some(&InjectedFault {
                op: Op::Enqueue,
                fault: Fault::Fail
            })
        );
    }
    assert_eq!(
        real.stats("q".into())
            .await
            .expect("stats")
            .count(TaskState::Queued),
        0
    );
    enqueue_one(&queue).await;
    assert_eq!(
        real.stats("q".into())
            .await
            .expect("stats")
            .count(TaskState::Queued),
        1
    );
    assert_eq!(faults.counts(Op::Enqueue).faults, 2);
    assert_eq!(faults.counts(Op::Enqueue).calls, 3);
}

#[tokio::test]
async fn lose_reply_applies_the_effect_and_reports_unavailable() {
    let (real, queue, faults) = faulty();
    enqueue_one(&queue).await;
    let lease = queue.dequeue(request()).await.expect("dequeue").remove(0);
    faults.set(Op::Complete, Fault::LoseReply, Window::Next(1));
    let err = queue
        .complete(vec![Completion::new(
            lease.reference(),
            CompletionOutcome::Succeeded,
        )])
        .await
        .expect_err("reply lost");
    assert_eq!(err.kind(), StoreErrorKind::Unavailable);
    let record = real.get(lease.spec.id).await.expect("get").expect("task");
    assert_eq!(record.state, TaskState::Succeeded, "the effect happened");
    faults
        .wait_for_faults(Op::Complete, 1, WAIT)
        .await
        .expect("counted");
}

#[tokio::test]
async fn outage_fails_every_store_sharing_the_controller_until_restored() {
    let (_real, queue, faults) = faulty();
    let results = FaultyResults::new(Arc::new(MemoryResultStore::new()), faults.clone());
    faults.outage();
    let err = queue.dequeue(request()).await.expect_err("down");
    assert_eq!(err.kind(), StoreErrorKind::Unavailable);
    let err = results.get(TaskId::new()).await.expect_err("down");
    assert_eq!(err.kind(), StoreErrorKind::Unavailable);
    faults.restore();
    assert!(queue.dequeue(request()).await.expect("up").is_empty());
    assert!(results.get(TaskId::new()).await.expect("up").is_none());
}

#[tokio::test(start_paused = true)]
async fn outage_for_a_duration_ends_by_itself() {
    let (_real, queue, faults) = faulty();
    faults.outage_for(Duration::from_secs(5));
    assert!(queue.dequeue(request()).await.is_err());
    tokio::time::advance(Duration::from_secs(5)).await;
    assert!(queue.dequeue(request()).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn delay_runs_the_call_after_the_delay() {
    let (_real, queue, faults) = faulty();
    faults.set(
        Op::Dequeue,
        Fault::Delay(Duration::from_secs(3)),
        Window::UntilCleared,
    );
    let started = tokio::time::Instant::now();
    queue.dequeue(request()).await.expect("delayed");
    assert!(started.elapsed() >= Duration::from_secs(3));
    faults.clear(Op::Dequeue);
    let started = tokio::time::Instant::now();
    queue.dequeue(request()).await.expect("direct");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn hang_holds_the_call_until_cleared_then_runs_it() {
    let (real, queue, faults) = faulty();
    faults.set(Op::Enqueue, Fault::Hang, Window::Next(1));
    let queue = Arc::new(queue);
    let hanging = tokio::spawn({
        let queue = queue.clone();
        async move { queue.enqueue(vec![spec()]).await }
    });
    faults
        .wait_for_faults(Op::Enqueue, 1, WAIT)
        .await
        .expect("the call is hanging");
    // The rule's one call is used up: later calls pass, the first still hangs.
    enqueue_one(queue.as_ref()).await;
    assert!(!hanging.is_finished());
    assert_eq!(
        real.stats("q".into())
            .await
            .expect("stats")
            .count(TaskState::Queued),
        1
    );
    faults.clear(Op::Enqueue);
    let outcome = tokio::time::timeout(WAIT, hanging)
        .await
        .expect("released")
        .expect("joined");
    outcome.expect("the real call ran");
    assert_eq!(
        real.stats("q".into())
            .await
            .expect("stats")
            .count(TaskState::Queued),
        2
    );
}

#[tokio::test(start_paused = true)]
async fn hang_for_a_duration_releases_when_the_window_ends() {
    let (_real, queue, faults) = faulty();
    faults.set(
        Op::Dequeue,
        Fault::Hang,
        Window::For(Duration::from_secs(4)),
    );
    let started = tokio::time::Instant::now();
    queue.dequeue(request()).await.expect("released");
    assert!(started.elapsed() >= Duration::from_secs(4));
}

#[tokio::test(start_paused = true)]
async fn wait_for_calls_times_out_with_what_it_saw() {
    let (_real, queue, faults) = faulty();
    queue.dequeue(request()).await.expect("dequeue");
    let err = faults
        .wait_for_calls(Op::Dequeue, 2, Duration::from_secs(1))
        .await
        .expect_err("only one call");
    assert_eq!(err.seen, 1);
    assert_eq!(err.wanted, 2);
}
