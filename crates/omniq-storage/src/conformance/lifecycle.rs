//! Lifecycle cases: dependencies, TTL, cancellation of running tasks, dead letters,
//! dedupe windows.

use std::time::Duration;

use chrono::Utc;
use omniq_models::{RunWhen, TaskError, TaskId, TaskOptions, TaskSpec, TaskState};

use super::Fixture;
use super::support::{claim, enqueue_one, eventually_some, spec, unique_queue};
use crate::{
    CancelOutcome, Completion, CompletionOutcome, CompletionStatus, EnqueueOutcome, Lease,
    LeaseStatus, PurgeRequest, RedriveTarget, StoreErrorKind, TaskQueue,
};

async fn state_of(queue: &dyn TaskQueue, id: TaskId) -> TaskState {
    queue.get(id).await.expect("get").expect("exists").state
}

async fn finish(
    queue: &dyn TaskQueue,
    lease: &Lease,
    outcome: CompletionOutcome,
) -> crate::Completed {
    let completed = queue
        .complete(vec![Completion::new(lease.reference(), outcome)])
        .await
        .expect("complete");
    assert_eq!(completed.statuses, vec![CompletionStatus::Applied]);
    completed
}

fn failed() -> CompletionOutcome {
    CompletionOutcome::Failed {
        error: TaskError::permanent("parent failed"),
    }
}

/// Enqueueing with a parent that does not exist is an error, and stores nothing of the batch.
pub async fn enqueue_with_an_unknown_parent_fails_and_stores_nothing(stores: Fixture) {
    let queue = unique_queue("unknown-parent");
    let fine = spec(&queue, TaskOptions::default());
    let orphan = spec(&queue, TaskOptions::default().depends_on(TaskId::new()));
    let err = stores
        .queue
        .enqueue(vec![fine.clone(), orphan])
        .await
        .expect_err("unknown parent");
    assert_eq!(err.kind(), StoreErrorKind::Invalid);
    assert!(err.to_string().contains("unknown parent"), "{err}");
    assert!(
        stores.queue.get(fine.id).await.expect("get").is_none(),
        "all or nothing"
    );
}

/// A dependent is Blocked until every parent succeeds, then runs; a parent may be enqueued
/// earlier in the same batch.
pub async fn a_dependent_waits_blocked_until_its_parents_succeed(stores: Fixture) {
    let queue = unique_queue("deps");
    let a = spec(&queue, TaskOptions::default());
    let b = spec(&queue, TaskOptions::default());
    let child = spec(
        &queue,
        TaskOptions::default().depends_on(a.id).depends_on(b.id),
    );
    let outcomes = stores
        .queue
        .enqueue(vec![a.clone(), b.clone(), child.clone()])
        .await
        .expect("enqueue");
    assert_eq!(
        outcomes[2],
        EnqueueOutcome::Created {
            id: child.id,
            state: TaskState::Blocked
        }
    );
    let leases = claim(&*stores.queue, &[&queue], 10).await;
    assert_eq!(leases.len(), 2, "the blocked child is not claimable");
    let completed = finish(&*stores.queue, &leases[0], CompletionOutcome::Succeeded).await;
    assert!(completed.changes.is_empty(), "one parent is not enough");
    assert_eq!(state_of(&*stores.queue, child.id).await, TaskState::Blocked);
    let completed = finish(&*stores.queue, &leases[1], CompletionOutcome::Succeeded).await;
    assert_eq!(completed.changes.len(), 1);
    assert_eq!(completed.changes[0].task_id, child.id);
    assert_eq!(completed.changes[0].state, TaskState::Queued);
    let next = claim(&*stores.queue, &[&queue], 10).await;
    assert_eq!(
        next.iter().map(|l| l.spec.id).collect::<Vec<_>>(),
        vec![child.id]
    );
}

/// A parent that fails cancels its dependents, and theirs, with the reason.
pub async fn a_failed_parent_cancels_its_dependents_transitively(stores: Fixture) {
    let queue = unique_queue("cascade");
    let parent = spec(&queue, TaskOptions::default());
    let child = spec(&queue, TaskOptions::default().depends_on(parent.id));
    let grandchild = spec(&queue, TaskOptions::default().depends_on(child.id));
    stores
        .queue
        .enqueue(vec![parent.clone(), child.clone(), grandchild.clone()])
        .await
        .expect("enqueue");
    let lease = claim(&*stores.queue, &[&queue], 10).await.remove(0);
    let completed = finish(&*stores.queue, &lease, failed()).await;
    let mut cancelled: Vec<_> = completed
        .changes
        .iter()
        .filter(|c| c.state == TaskState::Cancelled)
        .map(|c| c.task_id)
        .collect();
    cancelled.sort();
    let mut expected = vec![child.id, grandchild.id];
    expected.sort();
    assert_eq!(cancelled, expected);
    let record = stores
        .queue
        .get(grandchild.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(record.state, TaskState::Cancelled);
    assert!(record.reason.is_some_and(|r| r.contains("dependency")));
    assert!(claim(&*stores.queue, &[&queue], 10).await.is_empty());
}

/// Callbacks: an on-failure dependent runs when a parent fails and is cancelled when all
/// succeed; an always dependent runs either way.
pub async fn callbacks_run_on_the_parents_outcome(stores: Fixture) {
    let queue = unique_queue("callbacks");
    let failing = spec(&queue, TaskOptions::default());
    let passing = spec(&queue, TaskOptions::default());
    let on_failure = |p: TaskId| {
        spec(
            &queue,
            TaskOptions::default()
                .depends_on(p)
                .run_when(RunWhen::ParentFailed),
        )
    };
    let always = |p: TaskId| {
        spec(
            &queue,
            TaskOptions::default()
                .depends_on(p)
                .run_when(RunWhen::ParentsFinished),
        )
    };
    let (fail_cb, pass_cb) = (on_failure(failing.id), on_failure(passing.id));
    let (fail_always, pass_always) = (always(failing.id), always(passing.id));
    stores
        .queue
        .enqueue(vec![
            failing.clone(),
            passing.clone(),
            fail_cb.clone(),
            pass_cb.clone(),
            fail_always.clone(),
            pass_always.clone(),
        ])
        .await
        .expect("enqueue");
    let leases = claim(&*stores.queue, &[&queue], 2).await;
    let lease_of = |id| leases.iter().find(|l| l.spec.id == id).expect("claimed");
    finish(&*stores.queue, lease_of(failing.id), failed()).await;
    finish(
        &*stores.queue,
        lease_of(passing.id),
        CompletionOutcome::Succeeded,
    )
    .await;
    assert_eq!(
        state_of(&*stores.queue, fail_cb.id).await,
        TaskState::Queued
    );
    assert_eq!(
        state_of(&*stores.queue, pass_cb.id).await,
        TaskState::Cancelled
    );
    assert_eq!(
        state_of(&*stores.queue, fail_always.id).await,
        TaskState::Queued
    );
    assert_eq!(
        state_of(&*stores.queue, pass_always.id).await,
        TaskState::Queued
    );
}

/// A dependent of a parent that has already failed is cancelled on arrival.
pub async fn a_dependent_of_an_already_failed_parent_is_cancelled_at_once(stores: Fixture) {
    let queue = unique_queue("late-child");
    let parent = spec(&queue, TaskOptions::default());
    enqueue_one(&*stores.queue, parent.clone()).await;
    let lease = claim(&*stores.queue, &[&queue], 1).await.remove(0);
    finish(&*stores.queue, &lease, failed()).await;
    let child = spec(&queue, TaskOptions::default().depends_on(parent.id));
    let outcome = enqueue_one(&*stores.queue, child.clone()).await;
    assert_eq!(
        outcome,
        EnqueueOutcome::Created {
            id: child.id,
            state: TaskState::Cancelled
        }
    );
    let succeeded_parent = spec(&queue, TaskOptions::default());
    enqueue_one(&*stores.queue, succeeded_parent.clone()).await;
    let lease = claim(&*stores.queue, &[&queue], 1).await.remove(0);
    finish(&*stores.queue, &lease, CompletionOutcome::Succeeded).await;
    let runnable = spec(
        &queue,
        TaskOptions::default().depends_on(succeeded_parent.id),
    );
    let outcome = enqueue_one(&*stores.queue, runnable.clone()).await;
    assert_eq!(
        outcome,
        EnqueueOutcome::Created {
            id: runnable.id,
            state: TaskState::Queued
        }
    );
}

/// Cancelling a waiting parent cancels its dependents at once.
pub async fn cancelling_a_parent_cancels_its_dependents(stores: Fixture) {
    let queue = unique_queue("cancel-cascade");
    let parent = spec(
        &queue,
        TaskOptions::default().delay(Duration::from_secs(3600)),
    );
    let child = spec(&queue, TaskOptions::default().depends_on(parent.id));
    stores
        .queue
        .enqueue(vec![parent.clone(), child.clone()])
        .await
        .expect("enqueue");
    let cancellation = stores
        .queue
        .cancel(parent.id, "not needed".into())
        .await
        .expect("cancel");
    assert_eq!(cancellation.outcome, CancelOutcome::Cancelled);
    assert_eq!(cancellation.changes.len(), 1);
    assert_eq!(cancellation.changes[0].task_id, child.id);
    assert_eq!(
        state_of(&*stores.queue, child.id).await,
        TaskState::Cancelled
    );
}

/// A task not started before its TTL expires, is never claimed, and its dependents are
/// cancelled.
pub async fn a_task_past_its_ttl_expires_and_never_runs(stores: Fixture) {
    let queue = unique_queue("ttl");
    let short = spec(
        &queue,
        TaskOptions::default()
            .ttl(Duration::from_millis(100))
            .delay(Duration::from_millis(50)),
    );
    let long = spec(
        &queue,
        TaskOptions::default().ttl(Duration::from_secs(3600)),
    );
    let child = spec(&queue, TaskOptions::default().depends_on(short.id));
    stores
        .queue
        .enqueue(vec![short.clone(), long.clone(), child.clone()])
        .await
        .expect("enqueue");
    // Other cases may share the store: look only at this case's tasks.
    let mine = [short.id, long.id, child.id];
    let changes = eventually_some("the short task to expire", || {
        let store = stores.queue.clone();
        async move {
            let changes: Vec<_> = store
                .expire_due(100)
                .await
                .expect("expire")
                .into_iter()
                .filter(|c| mine.contains(&c.task_id))
                .collect();
            (!changes.is_empty()).then_some(changes)
        }
    })
    .await;
    let expired: Vec<_> = changes
        .iter()
        .filter(|c| c.state == TaskState::Expired)
        .collect();
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].task_id, short.id);
    assert!(
        changes
            .iter()
            .any(|c| c.task_id == child.id && c.state == TaskState::Cancelled)
    );
    let record = stores
        .queue
        .get(short.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(record.state, TaskState::Expired);
    assert_eq!(record.attempts, 0);
    let claimed: Vec<_> = claim(&*stores.queue, &[&queue], 10)
        .await
        .into_iter()
        .map(|l| l.spec.id)
        .collect();
    assert_eq!(claimed, vec![long.id]);
}

/// An expired task is never handed out, even before `expire_due` has run.
pub async fn claims_skip_expired_tasks(stores: Fixture) {
    let queue = unique_queue("ttl-claim");
    let task = spec(
        &queue,
        TaskOptions::default().ttl(Duration::from_millis(50)),
    );
    enqueue_one(&*stores.queue, task.clone()).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(claim(&*stores.queue, &[&queue], 10).await.is_empty());
    let changes = stores.queue.expire_due(100).await.expect("expire");
    assert!(
        changes
            .iter()
            .any(|c| c.task_id == task.id && c.state == TaskState::Expired)
    );
}

/// Cancelling a running task is a request its worker sees at the next heartbeat; the
/// worker's Cancelled completion ends it with the requested reason.
pub async fn cancelling_a_running_task_is_requested_through_the_heartbeat(stores: Fixture) {
    let queue = unique_queue("cancel-running");
    let task = spec(&queue, TaskOptions::default());
    enqueue_one(&*stores.queue, task.clone()).await;
    let lease = claim(&*stores.queue, &[&queue], 1).await.remove(0);
    let beat = stores
        .queue
        .heartbeat(vec![lease.reference()], Duration::from_secs(30))
        .await
        .expect("heartbeat");
    assert_eq!(beat, vec![LeaseStatus::Held]);
    let cancellation = stores
        .queue
        .cancel(task.id, "user asked".into())
        .await
        .expect("cancel");
    assert_eq!(cancellation.outcome, CancelOutcome::Requested);
    assert_eq!(state_of(&*stores.queue, task.id).await, TaskState::Running);
    let beat = stores
        .queue
        .heartbeat(vec![lease.reference()], Duration::from_secs(30))
        .await
        .expect("heartbeat");
    assert_eq!(beat, vec![LeaseStatus::CancelRequested]);
    finish(
        &*stores.queue,
        &lease,
        CompletionOutcome::Cancelled {
            reason: "stopped by its worker".into(),
        },
    )
    .await;
    let record = stores
        .queue
        .get(task.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(record.state, TaskState::Cancelled);
    assert_eq!(record.reason.as_deref(), Some("user asked"));
}

/// Dead letters go back to their queue with attempts reset and history kept: one by id,
/// a whole queue, or all.
pub async fn redrive_sends_dead_letters_back_with_attempts_reset(stores: Fixture) {
    let queue = unique_queue("redrive");
    let tasks: Vec<TaskSpec> = (0..3)
        .map(|_| spec(&queue, TaskOptions::default().max_attempts(1)))
        .collect();
    stores.queue.enqueue(tasks.clone()).await.expect("enqueue");
    for lease in claim(&*stores.queue, &[&queue], 10).await {
        finish(&*stores.queue, &lease, failed()).await;
    }
    let one = stores
        .queue
        .redrive(RedriveTarget::Tasks(vec![tasks[0].id, TaskId::new()]))
        .await
        .expect("redrive");
    assert_eq!(one, vec![tasks[0].id]);
    let record = stores
        .queue
        .get(tasks[0].id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(record.state, TaskState::Queued);
    assert_eq!(record.attempts, 0);
    assert_eq!(record.errors.len(), 1, "the error history is kept");
    assert!(record.finished_at.is_none());

    let rest = stores
        .queue
        .redrive(RedriveTarget::Queue(queue.clone()))
        .await
        .expect("redrive");
    let mut expected = vec![tasks[1].id, tasks[2].id];
    expected.sort();
    assert_eq!(rest, expected);
    assert_eq!(claim(&*stores.queue, &[&queue], 10).await.len(), 3);
    let none = stores
        .queue
        .redrive(RedriveTarget::Queue(queue.clone()))
        .await
        .expect("redrive");
    assert!(none.is_empty(), "only Failed tasks are re-driven");
}

/// A dead letter whose unique key another live task now holds stays Failed.
pub async fn redrive_leaves_a_task_whose_unique_key_is_taken(stores: Fixture) {
    let queue = unique_queue("redrive-unique");
    let key = format!("{queue}-key");
    let first = spec(
        &queue,
        TaskOptions::default().unique_key(&key).max_attempts(1),
    );
    enqueue_one(&*stores.queue, first.clone()).await;
    let lease = claim(&*stores.queue, &[&queue], 1).await.remove(0);
    finish(&*stores.queue, &lease, failed()).await;
    let second = spec(&queue, TaskOptions::default().unique_key(&key));
    let outcome = enqueue_one(&*stores.queue, second.clone()).await;
    assert_eq!(outcome.id(), second.id, "a failed task frees its key");
    let redriven = stores
        .queue
        .redrive(RedriveTarget::Tasks(vec![first.id]))
        .await
        .expect("redrive");
    assert!(redriven.is_empty());
    assert_eq!(state_of(&*stores.queue, first.id).await, TaskState::Failed);
}

/// Purging deletes finished tasks only, filtered by state and queue.
pub async fn purge_deletes_finished_tasks_only(stores: Fixture) {
    let queue = unique_queue("purge");
    let tasks: Vec<TaskSpec> = (0..4)
        .map(|_| spec(&queue, TaskOptions::default().max_attempts(1)))
        .collect();
    stores.queue.enqueue(tasks.clone()).await.expect("enqueue");
    let leases = claim(&*stores.queue, &[&queue], 3).await;
    finish(&*stores.queue, &leases[0], failed()).await;
    finish(&*stores.queue, &leases[1], CompletionOutcome::Succeeded).await;
    let refused = stores
        .queue
        .purge(PurgeRequest::new().states(vec![TaskState::Queued]))
        .await;
    assert_eq!(refused.map_err(|e| e.kind()), Err(StoreErrorKind::Invalid));
    let purged = stores
        .queue
        .purge(
            PurgeRequest::new()
                .states(vec![TaskState::Failed])
                .queue(queue.clone())
                .finished_before(Utc::now() + chrono::Duration::seconds(1))
                .limit(0),
        )
        .await
        .expect("purge");
    assert_eq!(purged, 1);
    assert!(
        stores
            .queue
            .get(leases[0].spec.id)
            .await
            .expect("get")
            .is_none()
    );
    let purged = stores
        .queue
        .purge(PurgeRequest::new().queue(queue.clone()))
        .await
        .expect("purge");
    assert_eq!(purged, 1, "the succeeded one; running and queued stay");
    let stats = stores.queue.stats(queue).await.expect("stats");
    assert_eq!(stats.count(TaskState::Running), 1);
    assert_eq!(stats.count(TaskState::Queued), 1);
}

/// A purge deletes at most its limit per call, the rest on the next calls, then nothing.
pub async fn purge_is_bounded_per_call(stores: Fixture) {
    let queue = unique_queue("purge-bounded");
    let tasks: Vec<TaskSpec> = (0..5)
        .map(|_| spec(&queue, TaskOptions::default()))
        .collect();
    stores.queue.enqueue(tasks).await.expect("enqueue");
    let leases = claim(&*stores.queue, &[&queue], 5).await;
    assert_eq!(leases.len(), 5);
    for lease in &leases {
        finish(&*stores.queue, lease, CompletionOutcome::Succeeded).await;
    }
    let request = PurgeRequest::new().queue(queue.clone()).limit(2);
    let mut counts = Vec::new();
    for _ in 0..4 {
        counts.push(stores.queue.purge(request.clone()).await.expect("purge"));
    }
    assert_eq!(counts, [2, 2, 1, 0]);
    for lease in &leases {
        assert!(
            stores
                .queue
                .get(lease.spec.id)
                .await
                .expect("get")
                .is_none()
        );
    }
}

/// With a dedupe window, a key stays taken after its task finished, until the window ends.
pub async fn a_unique_window_dedupes_against_finished_tasks(stores: Fixture) {
    let queue = unique_queue("unique-window");
    let key = format!("{queue}-daily");
    let windowed = |window| {
        spec(
            &queue,
            TaskOptions::default().unique_key(&key).unique_for(window),
        )
    };
    let first = windowed(Duration::from_secs(3600));
    enqueue_one(&*stores.queue, first.clone()).await;
    let lease = claim(&*stores.queue, &[&queue], 1).await.remove(0);
    finish(&*stores.queue, &lease, CompletionOutcome::Succeeded).await;
    let again = enqueue_one(&*stores.queue, windowed(Duration::from_secs(3600))).await;
    assert_eq!(again, EnqueueOutcome::Duplicate { existing: first.id });
    // A tiny window has passed already: a new task is created.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let fresh = windowed(Duration::from_millis(10));
    let outcome = enqueue_one(&*stores.queue, fresh.clone()).await;
    assert_eq!(outcome.id(), fresh.id);
}

/// A parent that turns out a duplicate (its unique key is held by a live task) is not
/// stored; a dependent of it in the same batch depends on the task it deduplicated to, and
/// waits for that one, instead of running at once or failing the batch.
pub async fn a_dependent_of_a_parent_deduplicated_in_its_batch_waits_for_the_existing_task(
    stores: Fixture,
) {
    let queue = unique_queue("dedup-parent");
    let key = format!("{queue}-key");
    let holder = spec(&queue, TaskOptions::default().unique_key(&key));
    enqueue_one(&*stores.queue, holder.clone()).await;
    let parent = spec(&queue, TaskOptions::default().unique_key(&key));
    let child = spec(&queue, TaskOptions::default().depends_on(parent.id));
    let outcomes = stores
        .queue
        .enqueue(vec![parent.clone(), child.clone()])
        .await
        .expect("enqueue");
    assert_eq!(
        outcomes,
        vec![
            EnqueueOutcome::Duplicate {
                existing: holder.id
            },
            EnqueueOutcome::Created {
                id: child.id,
                state: TaskState::Blocked
            },
        ]
    );
    let record = stores
        .queue
        .get(child.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(
        record.spec.depends_on,
        vec![holder.id],
        "depends on the holder"
    );

    let leases = claim(&*stores.queue, &[&queue], 10).await;
    assert_eq!(
        leases.iter().map(|l| l.spec.id).collect::<Vec<_>>(),
        vec![holder.id],
        "the dependent waits for the holder"
    );
    let completed = finish(&*stores.queue, &leases[0], CompletionOutcome::Succeeded).await;
    assert_eq!(
        completed
            .changes
            .iter()
            .map(|c| (c.task_id, c.state))
            .collect::<Vec<_>>(),
        vec![(child.id, TaskState::Queued)]
    );
    let next = claim(&*stores.queue, &[&queue], 10).await;
    assert_eq!(
        next.iter().map(|l| l.spec.id).collect::<Vec<_>>(),
        vec![child.id]
    );
}

/// A running task whose cancel was requested ends Cancelled, with its dependents, whether
/// its attempt then asks for a retry, is released, or its lease expires and is recovered:
/// the request is never lost and the task never runs again.
pub async fn a_cancel_requested_while_running_survives_retry_release_and_recovery(stores: Fixture) {
    for ending in ["retry", "release", "snooze", "recovery"] {
        let queue = unique_queue("cancel-survives");
        let parent = spec(&queue, TaskOptions::default().max_attempts(5));
        let child = spec(&queue, TaskOptions::default().depends_on(parent.id));
        stores
            .queue
            .enqueue(vec![parent.clone(), child.clone()])
            .await
            .expect("enqueue");
        let lease_length = if ending == "recovery" {
            Duration::from_millis(100)
        } else {
            Duration::from_secs(30)
        };
        let lease = stores
            .queue
            .dequeue(super::support::request(&[&queue], 1).lease(lease_length))
            .await
            .expect("dequeue")
            .remove(0);
        let cancellation = stores
            .queue
            .cancel(parent.id, "user asked".into())
            .await
            .expect("cancel");
        assert_eq!(cancellation.outcome, CancelOutcome::Requested, "{ending}");
        match ending {
            "retry" => {
                let completed = finish(
                    &*stores.queue,
                    &lease,
                    CompletionOutcome::Retry {
                        run_at: Utc::now(),
                        error: TaskError::new("failed before it heard of the cancel"),
                    },
                )
                .await;
                assert_eq!(completed.statuses, vec![CompletionStatus::Applied]);
            }
            "release" => {
                let completed = finish(&*stores.queue, &lease, CompletionOutcome::Release).await;
                assert_eq!(completed.statuses, vec![CompletionStatus::Applied]);
            }
            "snooze" => {
                let run_at = Utc::now() + chrono::Duration::hours(1);
                let snooze = CompletionOutcome::Snooze { run_at };
                let completed = finish(&*stores.queue, &lease, snooze).await;
                assert_eq!(completed.statuses, vec![CompletionStatus::Applied]);
            }
            _ => {
                eventually_some("the lease to expire and be recovered", || {
                    let store = stores.queue.clone();
                    async move {
                        let recovered = store.recover_expired(100).await.expect("recover");
                        recovered
                            .iter()
                            .any(|c| c.task_id == parent.id)
                            .then_some(())
                    }
                })
                .await;
            }
        }
        let record = stores
            .queue
            .get(parent.id)
            .await
            .expect("get")
            .expect("exists");
        assert_eq!(record.state, TaskState::Cancelled, "{ending}");
        assert!(record.reason.is_some(), "{ending}: the reason is kept");
        assert_eq!(
            state_of(&*stores.queue, child.id).await,
            TaskState::Cancelled,
            "{ending}: its dependents are cancelled as for any cancel"
        );
        assert!(
            claim(&*stores.queue, &[&queue], 10).await.is_empty(),
            "{ending}: it never runs again"
        );
    }
}

/// Text no store can refuse: errors and reasons holding a NUL character or any other odd
/// Unicode are applied with the rest of their batch (a NUL may be kept as U+FFFD), and an
/// event carrying one is stored with its batch.
pub async fn odd_text_in_errors_reasons_and_events_never_fails_a_batch(stores: Fixture) {
    let queue = unique_queue("odd-text");
    let odd = "nul:\0 emoji:🦀 rtl:\u{202e} zw:\u{200b} quote:' backslash:\\u0000 end";
    let tasks: Vec<_> = (0..4)
        .map(|_| spec(&queue, TaskOptions::default().max_attempts(3)))
        .collect();
    stores.queue.enqueue(tasks.clone()).await.expect("enqueue");
    let leases = claim(&*stores.queue, &[&queue], 4).await;
    assert_eq!(leases.len(), 4);
    let outcomes = [
        CompletionOutcome::Failed {
            error: TaskError::permanent(odd),
        },
        CompletionOutcome::Retry {
            run_at: Utc::now() + chrono::Duration::minutes(10),
            error: TaskError::new(odd),
        },
        CompletionOutcome::Cancelled {
            reason: odd.to_owned(),
        },
        CompletionOutcome::Succeeded,
    ];
    let completions = leases
        .iter()
        .zip(outcomes)
        .map(|(lease, outcome)| Completion::new(lease.reference(), outcome))
        .collect();
    let completed = stores.queue.complete(completions).await.expect("complete");
    assert_eq!(completed.statuses, vec![CompletionStatus::Applied; 4]);
    let readable = |text: &str| text.contains("emoji:🦀") && text.ends_with("end");
    let failed = stores
        .queue
        .get(leases[0].spec.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(failed.state, TaskState::Failed);
    let error = failed.last_error().expect("its error");
    assert!(readable(&error.message), "{:?}", error.message);
    let cancelled = stores
        .queue
        .get(leases[2].spec.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(cancelled.state, TaskState::Cancelled);
    assert!(cancelled.reason.as_deref().is_some_and(readable));

    // A cancel reason given by a user, and an event, with the same text.
    let waiting = spec(&queue, TaskOptions::default());
    enqueue_one(&*stores.queue, waiting.clone()).await;
    let cancellation = stores
        .queue
        .cancel(waiting.id, odd.to_owned())
        .await
        .expect("cancel");
    assert_eq!(cancellation.outcome, CancelOutcome::Cancelled);
    let event = omniq_models::TaskEvent::for_task(
        omniq_models::TaskEventKind::Failed,
        waiting.id,
        "conformance.task",
        &queue,
    )
    .message(odd);
    stores.events.append(vec![event]).await.expect("append");
    let stored = stores
        .events
        .query(crate::EventQuery::new().task_id(waiting.id))
        .await
        .expect("query");
    assert!(
        stored
            .iter()
            .any(|e| e.message.as_deref().is_some_and(readable)),
        "{stored:?}"
    );
}
