//! What FIFO queues add, against the SQS test server (moto): the tasks of one order key run
//! one at a time and in the order they were enqueued, a retry keeps its place in line, a
//! task due later waits in line without an attempt counted, and an enqueue sent twice is
//! kept once. The rest of the contract is the conformance suite (`conformance.rs`, `fifo`).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::Utc;
use omniq_models::{TaskError, TaskId, TaskOptions};
use omniq_sqs::{SqsBackend, SqsTaskQueue};
use omniq_storage::conformance::{
    claim_now, claim_until, complete, enqueue_one, spec, unique_queue,
};
use omniq_storage::{CompletionOutcome, CompletionStatus, Lease};
use support::DeleteOnDrop;

/// A FIFO backend under a prefix of the test's own, or `None` (said loudly) when the test
/// server is away and services are not required.
async fn backend(test: &str) -> Option<SqsBackend> {
    fifo_backend(test, &support::test_prefix()).await
}

/// As [`backend`], under `prefix`.
async fn fifo_backend(test: &str, prefix: &str) -> Option<SqsBackend> {
    support::backend_or_skip(test, |options| {
        let mut options = options.fifo(true);
        options.prefix = prefix.to_owned();
        options
    })
    .await
}

/// Completes `lease` with `outcome`, which must apply.
async fn complete_ok(queue: &SqsTaskQueue, lease: &Lease, outcome: CompletionOutcome) {
    assert_eq!(
        complete(queue, lease, outcome).await,
        CompletionStatus::Applied
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_of_one_order_key_run_one_at_a_time_in_enqueue_order() {
    let Some(backend) = backend("tasks_of_one_order_key_run_one_at_a_time").await else {
        return;
    };
    let _cleanup = DeleteOnDrop(backend.clone());
    let queue = backend.task_queue();
    let name = unique_queue("order");
    let mut key_of: BTreeMap<TaskId, &str> = BTreeMap::new();
    let mut enqueued: BTreeMap<&str, Vec<TaskId>> = BTreeMap::new();
    for _ in 0..4 {
        for key in ["a", "b"] {
            let task = spec(&name, TaskOptions::default().order_key(key));
            key_of.insert(task.id, key);
            enqueued.entry(key).or_default().push(task.id);
            enqueue_one(&queue, task).await;
        }
        // Tasks of no key are each in line alone.
        let loose = spec(&name, TaskOptions::default());
        key_of.insert(loose.id, "");
        enqueue_one(&queue, loose).await;
    }
    let mut ran: BTreeMap<&str, Vec<TaskId>> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while ran.values().map(Vec::len).sum::<usize>() < key_of.len() {
        assert!(tokio::time::Instant::now() < deadline, "ran only {ran:?}");
        // Claim all there is, twice: a key's next task is never handed out while one of
        // its tasks is held.
        let mut held = claim_now(&queue, &name, 20).await;
        held.extend(claim_now(&queue, &name, 20).await);
        let keys: Vec<&str> = held
            .iter()
            .map(|lease| key_of[&lease.spec.id])
            .filter(|key| !key.is_empty())
            .collect();
        let distinct: BTreeSet<&str> = keys.iter().copied().collect();
        assert_eq!(
            keys.len(),
            distinct.len(),
            "two tasks of one key held at once"
        );
        for lease in &held {
            ran.entry(key_of[&lease.spec.id])
                .or_default()
                .push(lease.spec.id);
            complete_ok(&queue, lease, CompletionOutcome::Succeeded).await;
        }
    }
    for key in ["a", "b"] {
        assert_eq!(ran[key], enqueued[key], "key {key} ran out of order");
    }
    assert_eq!(ran[""].len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_keeps_its_place_in_line_with_its_attempt_and_error() {
    let Some(backend) = backend("a_retry_keeps_its_place_in_line").await else {
        return;
    };
    let _cleanup = DeleteOnDrop(backend.clone());
    let queue = backend.task_queue();
    let name = unique_queue("retry");
    let first = spec(&name, TaskOptions::default().order_key("k"));
    let second = spec(&name, TaskOptions::default().order_key("k"));
    enqueue_one(&queue, first.clone()).await;
    enqueue_one(&queue, second.clone()).await;
    let lease = claim_until(&queue, &name, 1).await.remove(0);
    assert_eq!(lease.spec.id, first.id);
    let retry = CompletionOutcome::Retry {
        run_at: Utc::now() + chrono::Duration::seconds(5),
        error: TaskError::new("try again"),
    };
    complete_ok(&queue, &lease, retry).await;
    // The second waits behind the first, hidden for its backoff.
    assert!(claim_now(&queue, &name, 10).await.is_empty());
    let again = claim_until(&queue, &name, 1).await.remove(0);
    assert_eq!(again.spec.id, first.id);
    assert_eq!(again.attempt, 2);
    complete_ok(&queue, &again, CompletionOutcome::Succeeded).await;
    let next = claim_until(&queue, &name, 1).await.remove(0);
    assert_eq!(next.spec.id, second.id);
    assert_eq!(next.attempt, 1);
}

/// Attempts are counted from SQS's receive count where the handle that left a task in
/// line is not the one that receives it again: a retry counts, a wait for the due time
/// does not. (Each wait here is long enough for a slow test server to make its calls
/// before it ends.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_worker_counts_a_retry_but_not_a_wait_for_the_due_time() {
    let test = "another_worker_counts_a_retry";
    let prefix = support::test_prefix();
    let (Some(backend), Some(other), Some(third)) = (
        fifo_backend(test, &prefix).await,
        fifo_backend(test, &prefix).await,
        fifo_backend(test, &prefix).await,
    ) else {
        return;
    };
    let _cleanup = DeleteOnDrop(backend.clone());
    let (here, there) = (backend.task_queue(), other.task_queue());
    let name = unique_queue("elsewhere");
    // The queue made and warm first, so that the delayed task is received before its time
    // however slow the test server is to make a queue.
    enqueue_one(&here, spec(&name, TaskOptions::default())).await;
    let warm = claim_one(&here, &name).await;
    complete_ok(&here, &warm, CompletionOutcome::Succeeded).await;
    let delayed = spec(
        &name,
        TaskOptions::default()
            .order_key("d")
            .delay(Duration::from_secs(6)),
    );
    enqueue_one(&here, delayed.clone()).await;
    // Received before it is due: hidden where it is, no attempt.
    let early = claim_now(&here, &name, 1).await;
    assert!(
        early.is_empty(),
        "claimed before due: {early:?} now {}",
        Utc::now()
    );
    let lease = claim_one(&there, &name).await;
    assert_eq!(lease.spec.id, delayed.id);
    assert_eq!(lease.attempt, 1, "a wait for the due time is no attempt");
    let retry = CompletionOutcome::Retry {
        run_at: Utc::now() + chrono::Duration::seconds(1),
        error: TaskError::new("try again"),
    };
    complete_ok(&there, &lease, retry).await;
    // A third handle, which has seen none of it: the early receive is no attempt, the
    // retry is one.
    let again = claim_one(&third.task_queue(), &name).await;
    assert_eq!(again.spec.id, delayed.id);
    assert_eq!(again.attempt, 2, "the retry elsewhere is counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enqueue_sent_twice_is_kept_once() {
    let Some(backend) = backend("an_enqueue_sent_twice_is_kept_once").await else {
        return;
    };
    let _cleanup = DeleteOnDrop(backend.clone());
    let queue = backend.task_queue();
    let name = unique_queue("twice");
    let task = spec(&name, TaskOptions::default());
    enqueue_one(&queue, task.clone()).await;
    enqueue_one(&queue, task.clone()).await;
    let lease = claim_until(&queue, &name, 1).await.remove(0);
    assert_eq!(lease.spec.id, task.id);
    complete_ok(&queue, &lease, CompletionOutcome::Succeeded).await;
    assert!(claim_now(&queue, &name, 10).await.is_empty());
}

/// A task without an order key that goes back due now (a release) is sent again as it
/// is, so another worker process gets it with its attempt given back; a keyed one stays in
/// line, and the process that released it knows the attempt was given back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_gives_the_attempt_back_in_this_process_and_without_a_key_in_any() {
    let test = "a_release_gives_the_attempt_back";
    let prefix = support::test_prefix();
    let (Some(backend), Some(other)) = (
        fifo_backend(test, &prefix).await,
        fifo_backend(test, &prefix).await,
    ) else {
        return;
    };
    let _cleanup = DeleteOnDrop(backend.clone());
    let (here, there) = (backend.task_queue(), other.task_queue());
    let name = unique_queue("release");
    let loose = spec(&name, TaskOptions::default());
    enqueue_one(&here, loose.clone()).await;
    let lease = claim_one(&here, &name).await;
    complete_ok(&here, &lease, CompletionOutcome::Release).await;
    let again = claim_one(&there, &name).await;
    assert_eq!(again.spec.id, loose.id);
    assert_eq!(again.attempt, 1, "sent again with the attempt given back");
    complete_ok(&there, &again, CompletionOutcome::Succeeded).await;

    // Snoozed, it is sent again due later: a wait, no attempt, on any worker.
    let loose = spec(&name, TaskOptions::default());
    enqueue_one(&here, loose.clone()).await;
    let lease = claim_one(&here, &name).await;
    let snooze = CompletionOutcome::Snooze {
        run_at: Utc::now() + chrono::Duration::seconds(6),
    };
    complete_ok(&here, &lease, snooze).await;
    assert!(claim_now(&there, &name, 10).await.is_empty(), "snoozed");
    let again = claim_one(&there, &name).await;
    assert_eq!(again.spec.id, loose.id);
    assert_eq!(again.attempt, 1, "a snooze elsewhere is no attempt");
    complete_ok(&there, &again, CompletionOutcome::Succeeded).await;

    // A queue of its own, out of reach of the other handle's long polls.
    let name = unique_queue("release-keyed");
    let keyed = spec(&name, TaskOptions::default().order_key("k"));
    enqueue_one(&here, keyed.clone()).await;
    let lease = claim_one(&here, &name).await;
    complete_ok(&here, &lease, CompletionOutcome::Release).await;
    let again = claim_one(&here, &name).await;
    assert_eq!(again.spec.id, keyed.id);
    assert_eq!(
        again.attempt, 1,
        "this process knows the release gave it back"
    );
}

/// Claims one task of `name` by plain claims, for at most ten seconds: no long poll, which
/// would leave what it receives with this handle, out of the other's reach.
async fn claim_one(queue: &SqsTaskQueue, name: &str) -> Lease {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(lease) = claim_now(queue, name, 1).await.pop() {
            return lease;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing to claim within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
