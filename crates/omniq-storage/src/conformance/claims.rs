//! Cases checked by claiming alone, without reading tasks back: they hold every store to
//! the contract, and are the whole check for a broker, which cannot read a task by id.

use std::time::Duration;

use chrono::Utc;
use omniq_models::{LeaseToken, TaskError, TaskOptions};

use super::Fixture;
use super::support::{enqueue_one, eventually_some, request, spec, unique_queue};
use crate::{
    Clock, Completion, CompletionOutcome, CompletionStatus, Lease, LeaseRef, LeaseStatus,
    RedriveTarget, TaskQueue,
};

/// Claims from `queue` until `count` leases are in, for at most ten seconds: for tasks
/// due later or handed back, whose return has no signal to wait on.
///
/// # Panics
/// When they are not in by then, or a claim fails.
pub async fn claim_until(queue: &dyn TaskQueue, name: &str, count: usize) -> Vec<Lease> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut leases = Vec::new();
    while leases.len() < count {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {count} tasks could be claimed within 10 s",
            leases.len()
        );
        leases.extend(
            queue
                .dequeue(request(&[name], count - leases.len()))
                .await
                .expect("dequeue"),
        );
        if leases.len() < count {
            queue
                .wait_for_tasks(&[name.to_owned()], Duration::from_millis(50))
                .await;
        }
    }
    leases
}

/// One claim of up to `limit` tasks from `name`, with a 30 s lease.
///
/// # Panics
/// When the claim fails.
pub async fn claim_now(queue: &dyn TaskQueue, name: &str, limit: usize) -> Vec<Lease> {
    queue
        .dequeue(request(&[name], limit))
        .await
        .expect("dequeue")
}

/// Completes `lease` with `outcome`, and returns what became of it.
///
/// # Panics
/// When the call fails.
pub async fn complete(
    queue: &dyn TaskQueue,
    lease: &Lease,
    outcome: CompletionOutcome,
) -> CompletionStatus {
    queue
        .complete(vec![Completion::new(lease.reference(), outcome)])
        .await
        .expect("complete")
        .statuses[0]
}

/// A claimed task completes once: a foreign token is refused, a re-sent completion is
/// reported applied, the lease is then lost, and nothing is left to claim.
pub async fn a_task_completes_once_and_a_resent_completion_is_applied_once(stores: Fixture) {
    let queue = &*stores.queue;
    let name = unique_queue("once");
    let task = spec(&name, TaskOptions::default());
    enqueue_one(queue, task.clone()).await;
    let lease = claim_until(queue, &name, 1).await.remove(0);
    assert_eq!(lease.spec.id, task.id);
    assert_eq!(lease.spec.payload, task.payload);
    assert_eq!(lease.attempt, 1);
    let beat = queue
        .heartbeat(vec![lease.reference()], Duration::from_secs(30))
        .await
        .expect("heartbeat");
    assert_eq!(beat, vec![LeaseStatus::Held]);
    let stranger = LeaseRef::new(task.id, LeaseToken::new());
    let refused = queue
        .complete(vec![Completion::new(
            stranger,
            CompletionOutcome::Succeeded,
        )])
        .await
        .expect("complete");
    assert_eq!(refused.statuses, vec![CompletionStatus::LeaseLost]);
    for _ in 0..2 {
        assert_eq!(
            complete(queue, &lease, CompletionOutcome::Succeeded).await,
            CompletionStatus::Applied
        );
    }
    let beat = queue
        .heartbeat(vec![lease.reference()], Duration::from_secs(30))
        .await
        .expect("heartbeat");
    assert_eq!(beat, vec![LeaseStatus::Lost]);
    assert!(claim_now(queue, &name, 10).await.is_empty());
}

/// A retried task is not claimed before its backoff, then comes back with the attempt
/// counted.
pub async fn a_retry_comes_back_after_its_backoff_with_the_attempt_counted(stores: Fixture) {
    let queue = &*stores.queue;
    let name = unique_queue("backoff");
    enqueue_one(queue, spec(&name, TaskOptions::default().max_attempts(3))).await;
    let first = claim_until(queue, &name, 1).await.remove(0);
    let backoff = Duration::from_millis(1_200);
    let failed_at = tokio::time::Instant::now();
    let retry = CompletionOutcome::Retry {
        run_at: Utc::now() + chrono::Duration::from_std(backoff).expect("backoff"),
        error: TaskError::new("flaky"),
    };
    assert_eq!(
        complete(queue, &first, retry).await,
        CompletionStatus::Applied
    );
    assert!(
        claim_now(queue, &name, 1).await.is_empty(),
        "not before its backoff"
    );
    let second = claim_until(queue, &name, 1).await.remove(0);
    assert!(failed_at.elapsed() >= backoff - Duration::from_millis(100));
    assert_eq!(second.spec.id, first.spec.id);
    assert_eq!(second.attempt, 2);
}

/// A task delayed at enqueue is claimed once due, not before.
pub async fn a_delayed_task_is_claimed_once_due(stores: Fixture) {
    let queue = &*stores.queue;
    let name = unique_queue("due");
    let delay = Duration::from_millis(1_500);
    let enqueued_at = tokio::time::Instant::now();
    enqueue_one(queue, spec(&name, TaskOptions::default().delay(delay))).await;
    assert!(claim_now(queue, &name, 1).await.is_empty());
    let lease = claim_until(queue, &name, 1).await.remove(0);
    assert!(enqueued_at.elapsed() >= delay - Duration::from_millis(100));
    assert_eq!(lease.attempt, 1);
}

/// A released task is claimed again at once, and a snoozed one once its time comes; both
/// with the attempt given back.
pub async fn release_and_snooze_give_the_attempt_back_when_claimed_again(stores: Fixture) {
    let queue = &*stores.queue;
    let name = unique_queue("give-back");
    enqueue_one(queue, spec(&name, TaskOptions::default())).await;
    let first = claim_until(queue, &name, 1).await.remove(0);
    assert_eq!(
        complete(queue, &first, CompletionOutcome::Release).await,
        CompletionStatus::Applied
    );
    let second = claim_until(queue, &name, 1).await.remove(0);
    assert_eq!(second.attempt, 1, "a release gives the attempt back");
    let snooze = CompletionOutcome::Snooze {
        run_at: Utc::now() + chrono::Duration::milliseconds(1_200),
    };
    assert_eq!(
        complete(queue, &second, snooze).await,
        CompletionStatus::Applied
    );
    assert!(claim_now(queue, &name, 1).await.is_empty(), "snoozed");
    let third = claim_until(queue, &name, 1).await.remove(0);
    assert_eq!(third.attempt, 1, "a snooze gives the attempt back");
}

/// A task that failed for good is claimed no more, until a re-drive of its queue sends it
/// back with its attempts reset; a re-drive naming another task leaves it.
pub async fn a_dead_letter_is_claimed_again_only_once_redriven(stores: Fixture) {
    let queue = &*stores.queue;
    let name = unique_queue("dead");
    let task = spec(&name, TaskOptions::default());
    enqueue_one(queue, task.clone()).await;
    let lease = claim_until(queue, &name, 1).await.remove(0);
    let failed = CompletionOutcome::Failed {
        error: TaskError::new("broken"),
    };
    assert_eq!(
        complete(queue, &lease, failed).await,
        CompletionStatus::Applied
    );
    assert!(claim_now(queue, &name, 1).await.is_empty());
    let other = queue
        .redrive(RedriveTarget::Tasks(vec![omniq_models::TaskId::new()]))
        .await
        .expect("redrive");
    assert!(other.is_empty());
    assert!(claim_now(queue, &name, 1).await.is_empty());
    let redriven = queue
        .redrive(RedriveTarget::Queue(name.clone()))
        .await
        .expect("redrive");
    assert_eq!(redriven, vec![task.id]);
    let again = claim_until(queue, &name, 1).await.remove(0);
    assert_eq!(again.spec.id, task.id);
    assert_eq!(again.attempt, 1, "attempts reset");
}

/// A lease that runs out unrenewed is taken back: the task is claimed again with the
/// attempt counted, and the old lease's completion is refused.
pub async fn a_lapsed_lease_is_claimed_again_with_its_attempt_counted(stores: Fixture) {
    let queue = &*stores.queue;
    let name = unique_queue("lapse");
    enqueue_one(queue, spec(&name, TaskOptions::default().max_attempts(3))).await;
    let short = request(&[&name], 1).lease(Duration::from_millis(200));
    let lost = queue.dequeue(short).await.expect("dequeue").remove(0);
    let again = eventually_some("the lapsed task taken back", || async {
        queue.recover_expired(100).await.expect("recover");
        claim_now(queue, &name, 1).await.pop()
    })
    .await;
    assert_eq!(again.spec.id, lost.spec.id);
    assert_eq!(again.attempt, 2);
    assert_eq!(
        complete(queue, &lost, CompletionOutcome::Succeeded).await,
        CompletionStatus::LeaseLost
    );
    assert_eq!(
        complete(queue, &again, CompletionOutcome::Succeeded).await,
        CompletionStatus::Applied
    );
}

/// A claim by names leaves a task of another name to a worker that runs it, which gets it
/// on its first attempt.
pub async fn a_task_of_another_name_is_left_to_a_worker_that_runs_it(stores: Fixture) {
    let queue = &*stores.queue;
    let name = unique_queue("names");
    let mut other = spec(&name, TaskOptions::default());
    other.name = "conformance.other".into();
    enqueue_one(queue, other.clone()).await;
    let mine = request(&[&name], 1).only_names(["conformance.task"], None);
    assert!(queue.dequeue(mine).await.expect("dequeue").is_empty());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let theirs = request(&[&name], 1).only_names(["conformance.other"], None);
        if let Some(lease) = queue.dequeue(theirs).await.expect("dequeue").pop() {
            assert_eq!(lease.spec.id, other.id);
            assert_eq!(lease.attempt, 1);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never offered again"
        );
        queue
            .wait_for_tasks(std::slice::from_ref(&name), Duration::from_millis(50))
            .await;
    }
}

/// A completion whose caller stopped waiting (its timeout fired) is applied at most once:
/// sent again, it is applied, and the task comes back once.
pub async fn a_completion_cut_off_by_its_caller_is_applied_once_when_sent_again(stores: Fixture) {
    let queue = &*stores.queue;
    let name = unique_queue("cut-off");
    enqueue_one(queue, spec(&name, TaskOptions::default().max_attempts(3))).await;
    let lease = claim_until(queue, &name, 1).await.remove(0);
    let retry = CompletionOutcome::Retry {
        run_at: Utc::now(),
        error: TaskError::new("again"),
    };
    let _ = tokio::time::timeout(
        Duration::from_micros(1),
        queue.complete(vec![Completion::new(lease.reference(), retry.clone())]),
    )
    .await;
    assert_eq!(
        complete(queue, &lease, retry).await,
        CompletionStatus::Applied
    );
    let again = claim_until(queue, &name, 1).await.remove(0);
    assert_eq!(again.spec.id, lease.spec.id);
    assert_eq!(again.attempt, 2);
    assert!(
        claim_now(queue, &name, 10).await.is_empty(),
        "one copy only"
    );
}

/// A task due at once is claimed at once by a worker whose clock is 30 s behind. Not in
/// [`conformance_suite!`](crate::conformance_suite): stores that judge due times on the
/// client's clock (in-process, object stores) hold such a task back; the brokers, which
/// judge only tasks enqueued as due later, run it (their test files call this case).
pub async fn a_task_due_at_once_is_claimed_by_a_worker_whose_clock_is_behind(stores: Fixture) {
    let name = unique_queue("behind");
    enqueue_one(&*stores.queue, spec(&name, TaskOptions::default())).await;
    let behind = stores
        .reopen
        .queue(Clock::skewed(chrono::Duration::seconds(-30)))
        .await
        .expect("reopen");
    let leases = claim_until(&*behind, &name, 1).await;
    assert_eq!(leases.len(), 1);
}

/// A worker that stops claiming gives back what its store pushed to it ahead of claims:
/// another worker claims those on their first attempt.
pub async fn tasks_pushed_ahead_of_claims_are_given_back_when_claiming_stops(stores: Fixture) {
    let queue = &*stores.queue;
    let name = unique_queue("pushed");
    let tasks: Vec<_> = (0..5)
        .map(|_| spec(&name, TaskOptions::default()))
        .collect();
    queue.enqueue(tasks).await.expect("enqueue");
    // A store that pushes (a broker's consumer, a long poll) does so while a worker waits.
    queue
        .wait_for_tasks(std::slice::from_ref(&name), Duration::from_secs(2))
        .await;
    let claimed = claim_until(queue, &name, 2).await;
    queue
        .stop_claiming(std::slice::from_ref(&name))
        .await
        .expect("stop claiming");
    let other = stores.reopen.queue(Clock::system()).await.expect("reopen");
    let rest = claim_until(&*other, &name, 3).await;
    assert!(rest.iter().all(|l| l.attempt == 1), "{rest:?}");
    let all: std::collections::HashSet<_> =
        claimed.iter().chain(&rest).map(|l| l.spec.id).collect();
    assert_eq!(all.len(), 5);
}
