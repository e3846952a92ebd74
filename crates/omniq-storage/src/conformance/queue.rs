//! Task queue cases: enqueue, claims and their order, leases, completions, inspection.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use omniq_models::{TaskError, TaskOptions, TaskSpec, TaskState};

use super::Fixture;
use super::support::{
    claim, enqueue_one, eventually, eventually_some, request, spec, unique_queue,
};
use crate::{
    CancelOutcome, Clock, Completion, CompletionOutcome, CompletionStatus, EnqueueOutcome,
    LeaseRef, LeaseStatus, TaskQuery, TaskQueue,
};

fn succeeded(lease: LeaseRef) -> Completion {
    Completion::new(lease, CompletionOutcome::Succeeded)
}

/// A task goes in, comes out as a lease with its payload, and ends Succeeded.
pub async fn enqueue_dequeue_complete_round_trip(stores: Fixture) {
    let queue = unique_queue("round-trip");
    let task = spec(&queue, TaskOptions::default());
    let id = task.id;
    let outcome = enqueue_one(&*stores.queue, task.clone()).await;
    assert_eq!(
        outcome,
        EnqueueOutcome::Created {
            id,
            state: TaskState::Queued
        }
    );

    let leases = claim(&*stores.queue, &[&queue], 10).await;
    assert_eq!(leases.len(), 1);
    let lease = &leases[0];
    assert_eq!(lease.spec.id, id);
    assert_eq!(lease.spec.name, task.name);
    assert_eq!(lease.spec.payload, task.payload);
    assert_eq!(lease.attempt, 1);

    let statuses = stores
        .queue
        .complete(vec![succeeded(lease.reference())])
        .await
        .expect("complete")
        .statuses;
    assert_eq!(statuses, vec![CompletionStatus::Applied]);

    let record = stores.queue.get(id).await.expect("get").expect("exists");
    assert_eq!(record.state, TaskState::Succeeded);
    assert_eq!(record.attempts, 1);
    assert!(record.finished_at.is_some());
    assert!(claim(&*stores.queue, &[&queue], 10).await.is_empty());
}

/// A batch enqueue answers one outcome per task, in the order given.
pub async fn enqueue_many_returns_one_outcome_per_task_in_order(stores: Fixture) {
    let queue = unique_queue("batch");
    let tasks: Vec<_> = (0..50)
        .map(|_| spec(&queue, TaskOptions::default()))
        .collect();
    let ids: Vec<_> = tasks.iter().map(|t| t.id).collect();
    let outcomes = stores.queue.enqueue(tasks).await.expect("enqueue");
    let outcome_ids: Vec<_> = outcomes.iter().map(EnqueueOutcome::id).collect();
    assert_eq!(outcome_ids, ids);
    assert_eq!(
        stores.queue.enqueue(Vec::new()).await.expect("empty batch"),
        vec![]
    );
}

/// A spec sent again (a producer retrying after a lost reply) is a duplicate of itself,
/// in a later batch or twice in one, and never a second task.
pub async fn a_task_sent_twice_is_stored_once(stores: Fixture) {
    let queue = unique_queue("resend");
    let first = spec(&queue, TaskOptions::default());
    let other = spec(&queue, TaskOptions::default());
    let outcomes = stores
        .queue
        .enqueue(vec![first.clone(), other.clone(), first.clone()])
        .await
        .expect("enqueue");
    assert_eq!(
        outcomes,
        vec![
            EnqueueOutcome::Created {
                id: first.id,
                state: TaskState::Queued
            },
            EnqueueOutcome::Created {
                id: other.id,
                state: TaskState::Queued
            },
            EnqueueOutcome::Duplicate { existing: first.id },
        ]
    );
    let again = enqueue_one(&*stores.queue, first.clone()).await;
    assert_eq!(again, EnqueueOutcome::Duplicate { existing: first.id });
    assert_eq!(claim(&*stores.queue, &[&queue], 10).await.len(), 2);
}

/// A claim never returns more leases than asked for, and never the same task twice.
pub async fn dequeue_is_bounded_by_the_limit(stores: Fixture) {
    let queue = unique_queue("bounded");
    let tasks: Vec<_> = (0..25)
        .map(|_| spec(&queue, TaskOptions::default()))
        .collect();
    stores.queue.enqueue(tasks).await.expect("enqueue");

    let first = claim(&*stores.queue, &[&queue], 10).await;
    let second = claim(&*stores.queue, &[&queue], 10).await;
    let third = claim(&*stores.queue, &[&queue], 10).await;
    assert_eq!((first.len(), second.len(), third.len()), (10, 10, 5));
    let mut ids: Vec<_> = first
        .iter()
        .chain(&second)
        .chain(&third)
        .map(|l| l.spec.id)
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 25, "no task handed out twice");
    assert!(claim(&*stores.queue, &[&queue], 0).await.is_empty());
}

/// Higher priority first; equal priorities in enqueue order.
pub async fn dequeue_orders_by_priority_then_enqueue_order(stores: Fixture) {
    let queue = unique_queue("priority");
    // Within the store's levels (a broker has few): the order is then the same.
    let levels = stores.queue.capabilities().priorities();
    let priorities = [0, 5, -3, 5, 10, 0].map(|p: i32| p.clamp(*levels.start(), *levels.end()));
    let mut expected: Vec<usize> = (0..priorities.len()).collect();
    expected.sort_by_key(|i| std::cmp::Reverse(priorities[*i]));
    let tasks: Vec<_> = priorities
        .iter()
        .map(|p| spec(&queue, TaskOptions::default().priority(*p)))
        .collect();
    let ids: Vec<_> = tasks.iter().map(|t| t.id).collect();
    for task in tasks {
        // One at a time so that enqueue order is unambiguous on every backend.
        enqueue_one(&*stores.queue, task).await;
    }
    let order: Vec<_> = claim(&*stores.queue, &[&queue], 10)
        .await
        .iter()
        .map(|l| l.spec.id)
        .collect();
    assert_eq!(order, expected.iter().map(|i| ids[*i]).collect::<Vec<_>>());
}

/// Tasks of equal priority come out first in, first out, across several claims.
pub async fn dequeue_is_fifo_at_equal_priority(stores: Fixture) {
    let queue = unique_queue("fifo");
    let mut ids = Vec::new();
    for _ in 0..3 {
        let batch: Vec<_> = (0..10)
            .map(|_| spec(&queue, TaskOptions::default()))
            .collect();
        ids.extend(batch.iter().map(|t| t.id));
        stores.queue.enqueue(batch).await.expect("enqueue");
    }
    let mut order = Vec::new();
    loop {
        let leases = claim(&*stores.queue, &[&queue], 7).await;
        if leases.is_empty() {
            break;
        }
        order.extend(leases.iter().map(|l| l.spec.id));
    }
    assert_eq!(order, ids);
}

/// A later queue is only served when the earlier ones have nothing ready.
pub async fn dequeue_takes_named_queues_in_strict_order(stores: Fixture) {
    let high = unique_queue("high");
    let low = unique_queue("low");
    let low_tasks: Vec<_> = (0..3)
        .map(|_| {
            let levels = stores.queue.capabilities().priorities();
            spec(
                &low,
                TaskOptions::default().priority(100.min(*levels.end())),
            )
        })
        .collect();
    stores.queue.enqueue(low_tasks).await.expect("enqueue low");
    let high_tasks: Vec<_> = (0..3)
        .map(|_| spec(&high, TaskOptions::default()))
        .collect();
    stores
        .queue
        .enqueue(high_tasks)
        .await
        .expect("enqueue high");

    let leases = claim(&*stores.queue, &[&high, &low], 4).await;
    let queues: Vec<_> = leases.iter().map(|l| l.spec.queue.as_str()).collect();
    assert_eq!(queues, vec![high.as_str(), &high, &high, &low]);
}

/// A task delayed into the future is Scheduled and not claimed until its time.
pub async fn dequeue_skips_tasks_whose_run_at_is_in_the_future(stores: Fixture) {
    let queue = unique_queue("delayed");
    let later = spec(
        &queue,
        TaskOptions::default().delay(Duration::from_secs(3600)),
    );
    let soon = spec(
        &queue,
        TaskOptions::default().delay(Duration::from_millis(200)),
    );
    let now = spec(&queue, TaskOptions::default());
    let later_outcome = enqueue_one(&*stores.queue, later.clone()).await;
    assert_eq!(
        later_outcome,
        EnqueueOutcome::Created {
            id: later.id,
            state: TaskState::Scheduled
        }
    );
    enqueue_one(&*stores.queue, soon.clone()).await;
    enqueue_one(&*stores.queue, now.clone()).await;

    let first = claim(&*stores.queue, &[&queue], 10).await;
    assert_eq!(
        first.iter().map(|l| l.spec.id).collect::<Vec<_>>(),
        vec![now.id]
    );

    let claimed = eventually_some("the delayed task to become claimable", || {
        let queue_store = stores.queue.clone();
        let queue = queue.clone();
        async move {
            let leases = queue_store
                .dequeue(request(&[&queue], 10))
                .await
                .expect("dequeue");
            let ids: Vec<_> = leases.into_iter().map(|l| l.spec.id).collect();
            (!ids.is_empty()).then_some(ids)
        }
    })
    .await;
    assert_eq!(claimed, vec![soon.id]);
    let record = stores
        .queue
        .get(later.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(record.state, TaskState::Scheduled);
}

/// Claiming from an empty or unknown queue is not an error.
pub async fn dequeue_from_an_empty_queue_returns_nothing(stores: Fixture) {
    let queue = unique_queue("empty");
    assert!(claim(&*stores.queue, &[&queue], 10).await.is_empty());
    assert!(claim(&*stores.queue, &[], 10).await.is_empty());
}

/// The store, not the worker, counts attempts and records who holds the lease.
pub async fn claimed_tasks_are_running_with_an_attempt_counted(stores: Fixture) {
    let queue = unique_queue("running");
    let task = spec(&queue, TaskOptions::default());
    enqueue_one(&*stores.queue, task.clone()).await;
    let before = Utc::now();
    let lease = claim(&*stores.queue, &[&queue], 1).await.remove(0);
    assert!(lease.deadline > before + chrono::Duration::seconds(20));
    let record = stores
        .queue
        .get(task.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(record.state, TaskState::Running);
    assert_eq!(record.attempts, 1);
    assert_eq!(
        record.worker_id.as_ref().map(|w| w.as_str()),
        Some("conformance")
    );
    assert!(record.started_at.is_some());
    assert!(record.lease_expires_at.is_some());
}

/// When a worker dies, its lease runs out and recovery queues the task again.
pub async fn expired_lease_makes_the_task_available_again(stores: Fixture) {
    let queue = unique_queue("expiry");
    let task = spec(&queue, TaskOptions::default().max_attempts(3));
    enqueue_one(&*stores.queue, task.clone()).await;
    let lost = stores
        .queue
        .dequeue(request(&[&queue], 1).lease(Duration::from_millis(100)))
        .await
        .expect("dequeue")
        .remove(0);

    let recovered = eventually_some("the lease to expire and be recovered", || {
        let store = stores.queue.clone();
        async move {
            let recovered: Vec<_> = store
                .recover_expired(100)
                .await
                .expect("recover")
                .into_iter()
                .filter(|r| r.task_id == task.id)
                .collect();
            (!recovered.is_empty()).then_some(recovered)
        }
    })
    .await;
    assert_eq!(recovered[0].state, TaskState::Queued);
    assert_eq!(recovered[0].attempts, 1);

    let again = claim(&*stores.queue, &[&queue], 1).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].spec.id, task.id);
    assert_eq!(again[0].attempt, 2);
    assert_ne!(again[0].token, lost.token);
}

/// A lease that runs out on the last allowed attempt dead-letters the task.
pub async fn expired_lease_with_attempts_spent_fails_the_task(stores: Fixture) {
    let queue = unique_queue("expiry-spent");
    let task = spec(&queue, TaskOptions::default().max_attempts(1));
    enqueue_one(&*stores.queue, task.clone()).await;
    stores
        .queue
        .dequeue(request(&[&queue], 1).lease(Duration::from_millis(50)))
        .await
        .expect("dequeue");
    eventually("the spent task to be failed", || {
        let store = stores.queue.clone();
        async move {
            store.recover_expired(100).await.expect("recover");
            let record = store.get(task.id).await.expect("get").expect("exists");
            record.state == TaskState::Failed
        }
    })
    .await;
    let record = stores
        .queue
        .get(task.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(
        record.last_error().map(|e| e.kind),
        Some(omniq_models::TaskErrorKind::LeaseLost)
    );
    assert!(claim(&*stores.queue, &[&queue], 1).await.is_empty());
}

/// The fence: once a lease is lost and the task re-claimed, the old holder's completion is
/// refused and cannot overwrite the new holder's work.
pub async fn completion_with_a_stale_lease_is_refused(stores: Fixture) {
    let queue = unique_queue("fencing");
    let task = spec(&queue, TaskOptions::default());
    enqueue_one(&*stores.queue, task.clone()).await;
    let stale = stores
        .queue
        .dequeue(request(&[&queue], 1).lease(Duration::from_millis(50)))
        .await
        .expect("dequeue")
        .remove(0);
    let current = eventually_some("the task to be re-claimed", || {
        let store = stores.queue.clone();
        let queue = queue.clone();
        async move {
            store.recover_expired(100).await.expect("recover");
            let mut leases = store.dequeue(request(&[&queue], 1)).await.expect("dequeue");
            leases.pop()
        }
    })
    .await;

    let refused = stores
        .queue
        .complete(vec![Completion::new(
            stale.reference(),
            CompletionOutcome::Failed {
                error: TaskError::permanent("stale worker"),
            },
        )])
        .await
        .expect("complete")
        .statuses;
    assert_eq!(refused, vec![CompletionStatus::LeaseLost]);
    let record = stores
        .queue
        .get(task.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(
        record.state,
        TaskState::Running,
        "stale completion changed nothing"
    );

    // In one batch with the current lease's, the stale one's is still refused (a store
    // that matched completions by task alone would take both for applied).
    let retry = |lease: LeaseRef| {
        Completion::new(
            lease,
            CompletionOutcome::Retry {
                run_at: Utc::now(),
                error: TaskError::new("try again"),
            },
        )
    };
    let statuses = stores
        .queue
        .complete(vec![retry(stale.reference()), retry(current.reference())])
        .await
        .expect("complete")
        .statuses;
    assert_eq!(
        statuses,
        vec![CompletionStatus::LeaseLost, CompletionStatus::Applied]
    );
    let current = eventually_some("the retried task to be claimed", || {
        let store = stores.queue.clone();
        let queue = queue.clone();
        async move {
            let mut leases = store.dequeue(request(&[&queue], 1)).await.expect("dequeue");
            leases.pop()
        }
    })
    .await;
    let statuses = stores
        .queue
        .complete(vec![
            succeeded(stale.reference()),
            succeeded(current.reference()),
        ])
        .await
        .expect("complete")
        .statuses;
    assert_eq!(
        statuses,
        vec![CompletionStatus::LeaseLost, CompletionStatus::Applied]
    );
    // The stale lease stays refused once the task has finished under the current one.
    let still = stores
        .queue
        .complete(vec![succeeded(stale.reference())])
        .await
        .expect("complete")
        .statuses;
    assert_eq!(still, vec![CompletionStatus::LeaseLost]);
    let record = stores
        .queue
        .get(task.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(record.state, TaskState::Succeeded);
}

/// A completion whose reply was lost is sent again with the same lease and outcome; the
/// store reports it Applied (its lease's one completion is in) and changes nothing, so the
/// worker runs its hooks and stores its result instead of calling it a lost lease. A lease
/// recovered after it expired is not the last one any more: its completion is refused.
pub async fn a_completion_resent_with_the_same_token_is_applied_once(stores: Fixture) {
    let queue = unique_queue("resent");
    let outcomes = [
        CompletionOutcome::Succeeded,
        CompletionOutcome::Failed {
            error: TaskError::permanent("for good"),
        },
        CompletionOutcome::Retry {
            run_at: Utc::now() + chrono::Duration::hours(1),
            error: TaskError::new("again later"),
        },
        CompletionOutcome::Release,
        CompletionOutcome::Snooze {
            run_at: Utc::now() + chrono::Duration::hours(1),
        },
        CompletionOutcome::Cancelled {
            reason: "stopped".to_owned(),
        },
    ];
    for outcome in outcomes {
        let task = spec(&queue, TaskOptions::default().max_attempts(3));
        enqueue_one(&*stores.queue, task.clone()).await;
        let lease = stores
            .queue
            .dequeue(request(&[&queue], 1))
            .await
            .expect("dequeue")
            .remove(0);
        assert_eq!(lease.spec.id, task.id);
        let completion = Completion::new(lease.reference(), outcome.clone());
        let first = stores
            .queue
            .complete(vec![completion.clone()])
            .await
            .expect("complete")
            .statuses;
        assert_eq!(first, vec![CompletionStatus::Applied], "{outcome:?}");
        let after_first = stores
            .queue
            .get(task.id)
            .await
            .expect("get")
            .expect("exists");
        // The same completion twice in one batch, then once more: all applied, once.
        let again = stores
            .queue
            .complete(vec![completion.clone(), completion.clone()])
            .await
            .expect("complete")
            .statuses;
        assert_eq!(
            again,
            vec![CompletionStatus::Applied, CompletionStatus::Applied],
            "a re-sent {outcome:?}"
        );
        let after_again = stores
            .queue
            .get(task.id)
            .await
            .expect("get")
            .expect("exists");
        assert_eq!(after_again.state, after_first.state, "{outcome:?}");
        assert_eq!(after_again.attempts, after_first.attempts, "{outcome:?}");
        assert_eq!(
            after_again.errors.len(),
            after_first.errors.len(),
            "a re-sent {outcome:?} recorded its error twice"
        );
        if !after_first.state.is_terminal() {
            // Out of the way of the next round.
            stores
                .queue
                .cancel(task.id, "out of the way".to_owned())
                .await
                .expect("cancel");
        }
    }

    // A lease recovered after its deadline: the late completion is refused, even though
    // no other worker has claimed the task since.
    let task = spec(&queue, TaskOptions::default().max_attempts(3));
    enqueue_one(&*stores.queue, task.clone()).await;
    let lapsed = stores
        .queue
        .dequeue(request(&[&queue], 1).lease(Duration::from_millis(50)))
        .await
        .expect("dequeue")
        .remove(0);
    eventually("the lapsed lease to be recovered", || {
        let store = stores.queue.clone();
        async move {
            store.recover_expired(100).await.expect("recover");
            store
                .get(task.id)
                .await
                .expect("get")
                .expect("exists")
                .state
                == TaskState::Queued
        }
    })
    .await;
    let late = stores
        .queue
        .complete(vec![succeeded(lapsed.reference())])
        .await
        .expect("complete")
        .statuses;
    assert_eq!(late, vec![CompletionStatus::LeaseLost]);
}

/// A claim that names the tasks it can run (a worker of an older release, during a
/// rolling deploy) leaves tasks of other names in place for the workers that run them,
/// even at the head of the queue, and takes them only once they have been due for its
/// grace, so that a task nobody can run is dead-lettered in the end.
pub async fn a_claim_by_names_leaves_other_tasks_to_workers_that_run_them(stores: Fixture) {
    let queue = unique_queue("names");
    let named = |name: &str, options: TaskOptions| {
        let mut task = spec(&queue, options);
        task.name = name.to_owned();
        task
    };
    // The new release's tasks first and ahead by priority: the old worker passes them.
    let mut new_tasks = Vec::new();
    for _ in 0..3 {
        let task = named("release.new", TaskOptions::default().priority(5));
        enqueue_one(&*stores.queue, task.clone()).await;
        new_tasks.push(task.id);
    }
    let old = named("release.old", TaskOptions::default());
    enqueue_one(&*stores.queue, old.clone()).await;
    let grace = Some(Duration::from_secs(3600));

    let taken = stores
        .queue
        .dequeue(request(&[&queue], 10).only_names(["release.old", "other"], grace))
        .await
        .expect("dequeue");
    let ids: Vec<_> = taken.iter().map(|l| l.spec.id).collect();
    assert_eq!(
        ids,
        vec![old.id],
        "the old worker takes only the names it runs"
    );
    // Nothing left it may take: an empty claim, not the new tasks.
    let none = stores
        .queue
        .dequeue(request(&[&queue], 10).only_names(["release.old"], grace))
        .await
        .expect("dequeue");
    assert!(none.is_empty(), "{none:?}");
    let none = stores
        .queue
        .dequeue(request(&[&queue], 10).only_names(Vec::<String>::new(), None))
        .await
        .expect("dequeue");
    assert!(none.is_empty(), "{none:?}");

    // The new worker gets them, all of them, untouched (no attempt counted).
    let taken = stores
        .queue
        .dequeue(request(&[&queue], 10).only_names(["release.new", "release.old"], grace))
        .await
        .expect("dequeue");
    let mut ids: Vec<_> = taken.iter().map(|l| l.spec.id).collect();
    ids.sort();
    new_tasks.sort();
    assert_eq!(ids, new_tasks);
    assert!(taken.iter().all(|l| l.attempt == 1), "{taken:?}");

    // A task due for longer than the grace is taken by a worker that cannot run it (which
    // dead-letters it); one due for less is not.
    let mut overdue = named("release.gone", TaskOptions::default());
    overdue.run_at = Utc::now() - chrono::Duration::hours(2);
    enqueue_one(&*stores.queue, overdue.clone()).await;
    let recent = named("release.gone", TaskOptions::default());
    enqueue_one(&*stores.queue, recent.clone()).await;
    let taken = stores
        .queue
        .dequeue(request(&[&queue], 10).only_names(["release.old"], grace))
        .await
        .expect("dequeue");
    let ids: Vec<_> = taken.iter().map(|l| l.spec.id).collect();
    assert_eq!(ids, vec![overdue.id]);
    let everything = claim(&*stores.queue, &[&queue], 10).await;
    let ids: Vec<_> = everything.iter().map(|l| l.spec.id).collect();
    assert_eq!(
        ids,
        vec![recent.id],
        "a claim without names takes every name"
    );
}

/// A claimed task whose stored row cannot be read is dead-lettered with the reason, and
/// the rest of the claim is returned: one bad row never stalls a queue, nor burns the
/// attempts of the tasks claimed with it. (The memory store holds typed values: it has no
/// unreadable rows, and passes by construction.)
pub async fn an_unreadable_task_is_dead_lettered_and_the_rest_of_its_claim_returned(
    stores: Fixture,
) {
    let Some(corrupt) = stores.corrupt.clone() else {
        return;
    };
    let queue = unique_queue("unreadable");
    let tasks: Vec<TaskSpec> = (0..3)
        .map(|_| spec(&queue, TaskOptions::default()))
        .collect();
    for task in &tasks {
        enqueue_one(&*stores.queue, task.clone()).await;
    }
    corrupt.task(tasks[1].id).await;

    let leases = claim(&*stores.queue, &[&queue], 10).await;
    let ids: Vec<_> = leases.iter().map(|l| l.spec.id).collect();
    assert_eq!(
        ids,
        vec![tasks[0].id, tasks[2].id],
        "the readable ones, in order"
    );
    let stats = stores.queue.stats(queue.clone()).await.expect("stats");
    assert_eq!(stats.count(TaskState::Running), 2, "{stats:?}");
    assert_eq!(
        stats.count(TaskState::Failed),
        1,
        "the unreadable task is a dead letter: {stats:?}"
    );
    // It is not claimed again, and the others complete as usual.
    assert!(claim(&*stores.queue, &[&queue], 10).await.is_empty());
    let completed = stores
        .queue
        .complete(leases.iter().map(|l| succeeded(l.reference())).collect())
        .await
        .expect("complete")
        .statuses;
    assert_eq!(completed, vec![CompletionStatus::Applied; 2]);
}

/// Queues are listed by name with their counts (for operators' tools: a CLI, a
/// dashboard).
pub async fn queues_are_listed_with_their_counts(stores: Fixture) {
    let first = unique_queue("listed-a");
    let second = unique_queue("listed-b");
    for queue in [&first, &first, &second] {
        enqueue_one(&*stores.queue, spec(queue, TaskOptions::default())).await;
    }
    let names = stores.queue.queue_names().await.expect("queue names");
    assert!(
        names.contains(&first) && names.contains(&second),
        "{names:?}"
    );
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "sorted by name");
    let queues = stores.queue.queues().await.expect("queues");
    let count = |queue: &str| {
        queues
            .iter()
            .find(|stats| stats.queue == queue)
            .map(|stats| stats.count(TaskState::Queued))
    };
    assert_eq!(count(&first), Some(2));
    assert_eq!(count(&second), Some(1));
}

/// Heartbeats push the deadline out for held leases and report the ones that are gone.
pub async fn heartbeat_extends_held_leases_and_reports_lost_ones(stores: Fixture) {
    let queue = unique_queue("heartbeat");
    let task = spec(&queue, TaskOptions::default());
    enqueue_one(&*stores.queue, task.clone()).await;
    let lease = stores
        .queue
        .dequeue(request(&[&queue], 1).lease(Duration::from_secs(1)))
        .await
        .expect("dequeue")
        .remove(0);
    let forged = LeaseRef::new(task.id, omniq_models::LeaseToken::new());
    let unknown = LeaseRef::new(omniq_models::TaskId::new(), omniq_models::LeaseToken::new());
    let held = stores
        .queue
        .heartbeat(
            vec![lease.reference(), forged, unknown],
            Duration::from_secs(60),
        )
        .await
        .expect("heartbeat");
    assert_eq!(
        held,
        vec![LeaseStatus::Held, LeaseStatus::Lost, LeaseStatus::Lost]
    );
    let record = stores
        .queue
        .get(task.id)
        .await
        .expect("get")
        .expect("exists");
    let expires = record.lease_expires_at.expect("running task has a lease");
    assert!(expires > Utc::now() + chrono::Duration::seconds(30));
    // Other cases may share the store and have expired leases: only ours matters.
    let recovered = stores.queue.recover_expired(100).await.expect("recover");
    assert!(
        recovered.iter().all(|r| r.task_id != task.id),
        "a renewed lease was recovered"
    );
}

/// A retry puts the task back as Scheduled at the given time and records the error.
pub async fn retry_reschedules_the_task_and_keeps_the_error(stores: Fixture) {
    let queue = unique_queue("retry");
    let task = spec(&queue, TaskOptions::default().max_attempts(3));
    enqueue_one(&*stores.queue, task.clone()).await;
    let lease = claim(&*stores.queue, &[&queue], 1).await.remove(0);
    let run_at = Utc::now() + chrono::Duration::hours(1);
    let statuses = stores
        .queue
        .complete(vec![Completion::new(
            lease.reference(),
            CompletionOutcome::Retry {
                run_at,
                error: TaskError::new("flaky"),
            },
        )])
        .await
        .expect("complete")
        .statuses;
    assert_eq!(statuses, vec![CompletionStatus::Applied]);
    let record = stores
        .queue
        .get(task.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(record.state, TaskState::Scheduled);
    assert_eq!(record.attempts, 1);
    assert_eq!(record.errors.len(), 1);
    assert_eq!(record.errors[0].attempt, 1);
    assert_eq!(record.errors[0].error.message, "flaky");
    assert!(record.lease_expires_at.is_none());
    assert!(
        claim(&*stores.queue, &[&queue], 1).await.is_empty(),
        "not before run_at"
    );

    // A retry due now is claimable at once, as attempt 2.
    let task2 = spec(&queue, TaskOptions::default().max_attempts(3));
    enqueue_one(&*stores.queue, task2.clone()).await;
    let lease = claim(&*stores.queue, &[&queue], 1).await.remove(0);
    stores
        .queue
        .complete(vec![Completion::new(
            lease.reference(),
            CompletionOutcome::Retry {
                run_at: Utc::now(),
                error: TaskError::new("again"),
            },
        )])
        .await
        .expect("complete");
    let again = claim(&*stores.queue, &[&queue], 1).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].spec.id, task2.id);
    assert_eq!(again[0].attempt, 2);
}

/// A failed task stays in the store as a dead letter, with every attempt's error.
pub async fn failure_keeps_the_task_as_a_dead_letter_with_every_error(stores: Fixture) {
    let queue = unique_queue("dead");
    let task = spec(&queue, TaskOptions::default().max_attempts(2));
    enqueue_one(&*stores.queue, task.clone()).await;
    let first = claim(&*stores.queue, &[&queue], 1).await.remove(0);
    stores
        .queue
        .complete(vec![Completion::new(
            first.reference(),
            CompletionOutcome::Retry {
                run_at: Utc::now(),
                error: TaskError::new("first"),
            },
        )])
        .await
        .expect("complete");
    let second = claim(&*stores.queue, &[&queue], 1).await.remove(0);
    stores
        .queue
        .complete(vec![Completion::new(
            second.reference(),
            CompletionOutcome::Failed {
                error: TaskError::new("second"),
            },
        )])
        .await
        .expect("complete");
    let record = stores
        .queue
        .get(task.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(record.state, TaskState::Failed);
    assert_eq!(record.attempts, 2);
    let messages: Vec<_> = record
        .errors
        .iter()
        .map(|e| e.error.message.as_str())
        .collect();
    assert_eq!(messages, vec!["first", "second"]);
    assert_eq!(record.errors[1].attempt, 2);
    assert!(record.finished_at.is_some());
    let dead = stores
        .queue
        .list(
            TaskQuery::new()
                .queue(queue.clone())
                .states(vec![TaskState::Failed]),
        )
        .await
        .expect("list");
    assert_eq!(dead.len(), 1);
}

/// Releasing a lease (worker shutting down) queues the task again without using an attempt.
pub async fn release_gives_the_attempt_back(stores: Fixture) {
    let queue = unique_queue("release");
    let task = spec(&queue, TaskOptions::default().max_attempts(1));
    enqueue_one(&*stores.queue, task.clone()).await;
    let lease = claim(&*stores.queue, &[&queue], 1).await.remove(0);
    let statuses = stores
        .queue
        .complete(vec![Completion::new(
            lease.reference(),
            CompletionOutcome::Release,
        )])
        .await
        .expect("complete")
        .statuses;
    assert_eq!(statuses, vec![CompletionStatus::Applied]);
    let record = stores
        .queue
        .get(task.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(record.state, TaskState::Queued);
    assert_eq!(record.attempts, 0);
    let again = claim(&*stores.queue, &[&queue], 1).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempt, 1);
}

/// A snooze gives the attempt back and makes the task due at the time asked for, with no
/// error recorded: scheduled while that time is ahead, claimable once it has come.
pub async fn snooze_gives_the_attempt_back_and_runs_later(stores: Fixture) {
    let queue = unique_queue("snooze");
    let later = spec(&queue, TaskOptions::default().max_attempts(1));
    let soon = spec(&queue, TaskOptions::default().max_attempts(1));
    for (task, run_at, state) in [
        (
            &later,
            Utc::now() + chrono::Duration::hours(1),
            TaskState::Scheduled,
        ),
        (
            &soon,
            Utc::now() - chrono::Duration::seconds(1),
            TaskState::Queued,
        ),
    ] {
        enqueue_one(&*stores.queue, task.clone()).await;
        let lease = claim(&*stores.queue, &[&queue], 1).await.remove(0);
        assert_eq!(lease.spec.id, task.id);
        let statuses = stores
            .queue
            .complete(vec![Completion::new(
                lease.reference(),
                CompletionOutcome::Snooze { run_at },
            )])
            .await
            .expect("complete")
            .statuses;
        assert_eq!(statuses, vec![CompletionStatus::Applied]);
        let record = stores
            .queue
            .get(task.id)
            .await
            .expect("get")
            .expect("exists");
        assert_eq!(record.state, state);
        assert_eq!(record.attempts, 0, "a snooze is not an attempt");
        assert!(record.errors.is_empty(), "a snooze is not a failure");
        assert_eq!(
            record.spec.run_at.timestamp_millis(),
            run_at.timestamp_millis()
        );
    }
    // Only the task whose time has come is claimed, and as its first attempt again.
    let again = claim(&*stores.queue, &[&queue], 10).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].spec.id, soon.id);
    assert_eq!(again[0].attempt, 1);
}

/// A second task with the key of a live task is not stored; the caller gets the live id.
/// Once the first is finished, the key is free again.
pub async fn unique_key_returns_the_existing_task_while_it_is_not_terminal(stores: Fixture) {
    let queue = unique_queue("unique");
    let key = format!("{queue}-report");
    let first = spec(&queue, TaskOptions::default().unique_key(&key));
    let second = spec(&queue, TaskOptions::default().unique_key(&key));
    enqueue_one(&*stores.queue, first.clone()).await;
    let outcome = enqueue_one(&*stores.queue, second.clone()).await;
    assert_eq!(outcome, EnqueueOutcome::Duplicate { existing: first.id });
    assert!(stores.queue.get(second.id).await.expect("get").is_none());

    // Within one batch, too.
    let a = spec(
        &queue,
        TaskOptions::default().unique_key(format!("{key}-b")),
    );
    let b = spec(
        &queue,
        TaskOptions::default().unique_key(format!("{key}-b")),
    );
    let outcomes = stores
        .queue
        .enqueue(vec![a.clone(), b])
        .await
        .expect("enqueue");
    assert_eq!(outcomes[1], EnqueueOutcome::Duplicate { existing: a.id });

    let lease = claim(&*stores.queue, &[&queue], 1).await.remove(0);
    assert_eq!(lease.spec.id, first.id);
    stores
        .queue
        .complete(vec![succeeded(lease.reference())])
        .await
        .expect("complete");
    let third = spec(&queue, TaskOptions::default().unique_key(&key));
    let outcome = enqueue_one(&*stores.queue, third.clone()).await;
    assert_eq!(outcome.id(), third.id, "a finished task frees its key");
}

/// Cancelling a task that has not started ends it at once; it is never claimed.
pub async fn cancel_stops_a_queued_task_from_running(stores: Fixture) {
    let queue = unique_queue("cancel");
    let task = spec(&queue, TaskOptions::default());
    enqueue_one(&*stores.queue, task.clone()).await;
    assert_eq!(
        stores
            .queue
            .cancel(task.id, "test".into())
            .await
            .expect("cancel")
            .outcome,
        CancelOutcome::Cancelled
    );
    assert!(claim(&*stores.queue, &[&queue], 1).await.is_empty());
    let record = stores
        .queue
        .get(task.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(record.state, TaskState::Cancelled);
    assert_eq!(record.reason.as_deref(), Some("test"));
    assert_eq!(
        stores
            .queue
            .cancel(task.id, "again".into())
            .await
            .expect("cancel")
            .outcome,
        CancelOutcome::AlreadyFinished(TaskState::Cancelled)
    );
    let missing = stores
        .queue
        .cancel(omniq_models::TaskId::new(), "x".into())
        .await;
    assert!(matches!(
        missing.map_err(|e| e.kind()),
        Err(crate::StoreErrorKind::NotFound)
    ));
}

/// Reading a task that does not exist is `None`, not an error.
pub async fn get_unknown_task_returns_none(stores: Fixture) {
    assert!(
        stores
            .queue
            .get(omniq_models::TaskId::new())
            .await
            .expect("get")
            .is_none()
    );
}

/// Listing filters by queue and state and pages with offset and limit.
pub async fn list_pages_by_queue_and_state(stores: Fixture) {
    let queue = unique_queue("list");
    let tasks: Vec<_> = (0..7)
        .map(|_| spec(&queue, TaskOptions::default()))
        .collect();
    stores.queue.enqueue(tasks).await.expect("enqueue");
    claim(&*stores.queue, &[&queue], 2).await;

    let query = |states: Vec<TaskState>, offset, limit| {
        TaskQuery::new()
            .queue(queue.clone())
            .states(states)
            .offset(offset)
            .limit(limit)
    };
    let all = stores
        .queue
        .list(query(vec![], 0, 100))
        .await
        .expect("list");
    assert_eq!(all.len(), 7);
    let running = stores
        .queue
        .list(query(vec![TaskState::Running], 0, 100))
        .await
        .expect("list");
    assert_eq!(running.len(), 2);
    let page1 = stores
        .queue
        .list(query(vec![TaskState::Queued], 0, 3))
        .await
        .expect("list");
    let page2 = stores
        .queue
        .list(query(vec![TaskState::Queued], 3, 3))
        .await
        .expect("list");
    assert_eq!((page1.len(), page2.len()), (3, 2));
    assert!(
        page1
            .iter()
            .all(|r| page2.iter().all(|s| s.spec.id != r.spec.id))
    );
}

/// Stats count a queue's tasks per state.
pub async fn stats_count_tasks_per_state(stores: Fixture) {
    let queue = unique_queue("stats");
    let tasks: Vec<_> = (0..5)
        .map(|_| spec(&queue, TaskOptions::default()))
        .collect();
    stores.queue.enqueue(tasks).await.expect("enqueue");
    let delayed = spec(
        &queue,
        TaskOptions::default().delay(Duration::from_secs(3600)),
    );
    enqueue_one(&*stores.queue, delayed).await;
    let leases = claim(&*stores.queue, &[&queue], 2).await;
    stores
        .queue
        .complete(vec![succeeded(leases[0].reference())])
        .await
        .expect("complete");

    let stats = stores.queue.stats(queue.clone()).await.expect("stats");
    assert_eq!(stats.queue, queue);
    assert_eq!(stats.count(TaskState::Queued), 3);
    assert_eq!(stats.count(TaskState::Scheduled), 1);
    assert_eq!(stats.count(TaskState::Running), 1);
    assert_eq!(stats.count(TaskState::Succeeded), 1);
    assert!(stats.oldest_queued_at.is_some());
    let empty = stores
        .queue
        .stats(unique_queue("none"))
        .await
        .expect("stats");
    assert_eq!(empty.count(TaskState::Queued), 0);
    assert!(empty.oldest_queued_at.is_none());
}

/// Lease deadlines are set and judged on the store's clock, never a worker's: a worker whose
/// clock runs 25 s ahead cannot recover (steal) the live 30 s leases of others, one whose
/// clock runs 25 s behind does not lose its own early, and every lease's deadline is store
/// time, whoever claimed it.
pub async fn skewed_client_clocks_neither_steal_nor_lose_live_leases(stores: Fixture) {
    const LEASE: Duration = Duration::from_secs(30);
    let skew = chrono::TimeDelta::seconds(25);
    let ahead = stores
        .reopen
        .queue(Clock::skewed(skew))
        .await
        .expect("reopen, clock ahead");
    let behind = stores
        .reopen
        .queue(Clock::skewed(-skew))
        .await
        .expect("reopen, clock behind");
    let honest = stores.queue.clone();
    let queue = unique_queue("skew");
    // Due a minute ago: whether a task is due is judged on the claimer's clock, and the
    // worker whose clock runs behind must find these due.
    let due = Utc::now() - chrono::TimeDelta::seconds(60);
    let tasks: Vec<_> = (0..3)
        .map(|_| {
            TaskSpec::new(
                "conformance.task",
                vec![1],
                TaskOptions::default().queue(&queue),
                due,
            )
        })
        .collect();
    honest.enqueue(tasks).await.expect("enqueue");

    let holders = [behind.clone(), honest.clone(), ahead.clone()];
    let mut leases = Vec::new();
    for holder in &holders {
        let mut claimed = holder
            .dequeue(request(&[&queue], 1).lease(LEASE))
            .await
            .expect("dequeue");
        leases.push(claimed.pop().expect("a lease"));
    }
    let ids: Vec<_> = leases.iter().map(|l| l.spec.id).collect();
    let near_store_deadline = |deadline: DateTime<Utc>| {
        let expected = Utc::now() + chrono::TimeDelta::seconds(30);
        (deadline - expected).abs() < chrono::TimeDelta::seconds(10)
    };
    for lease in &leases {
        assert!(
            near_store_deadline(lease.deadline),
            "the lease's deadline {} is not store time + 30 s",
            lease.deadline
        );
    }

    let stolen = |by: Arc<dyn TaskQueue>| {
        let ids = ids.clone();
        async move {
            by.recover_expired(100)
                .await
                .expect("recover")
                .into_iter()
                .filter(|c| ids.contains(&c.task_id))
                .map(|c| c.task_id)
                .collect::<Vec<_>>()
        }
    };
    for recoverer in [&ahead, &honest, &behind] {
        assert_eq!(
            stolen(recoverer.clone()).await,
            vec![],
            "a live lease was recovered"
        );
    }
    // Renewals by the skewed workers set store-time deadlines too.
    for (holder, lease) in holders.iter().zip(&leases) {
        let statuses = holder
            .heartbeat(vec![lease.reference()], LEASE)
            .await
            .expect("heartbeat");
        assert_eq!(statuses, vec![LeaseStatus::Held]);
        let record = honest
            .get(lease.spec.id)
            .await
            .expect("get")
            .expect("exists");
        let deadline = record.lease_expires_at.expect("a lease deadline");
        assert!(
            near_store_deadline(deadline),
            "the renewed deadline {deadline} is not store time + 30 s"
        );
    }
    assert_eq!(
        stolen(ahead.clone()).await,
        vec![],
        "a renewed lease was recovered"
    );

    for (holder, lease) in holders.iter().zip(&leases) {
        let statuses = holder
            .complete(vec![succeeded(lease.reference())])
            .await
            .expect("complete")
            .statuses;
        assert_eq!(statuses, vec![CompletionStatus::Applied]);
    }
}

/// A spec whose values could not be read back (a NaN jitter is stored as JSON `null`) or
/// make no sense is refused at enqueue with the whole batch, before anything is stored.
pub async fn invalid_options_are_refused_at_enqueue_and_nothing_is_stored(stores: Fixture) {
    use omniq_models::Backoff;
    let queue = unique_queue("invalid");
    let backoff = |jitter: f64| Backoff::Exponential {
        base: std::time::Duration::from_secs(1),
        max: std::time::Duration::from_secs(60),
        jitter,
    };
    let invalid: Vec<(&str, TaskOptions)> = vec![
        (
            "NaN jitter",
            TaskOptions::default().backoff(backoff(f64::NAN)),
        ),
        (
            "infinite jitter",
            TaskOptions::default().backoff(backoff(f64::INFINITY)),
        ),
        (
            "jitter above 1",
            TaskOptions::default().backoff(backoff(1.5)),
        ),
        (
            "negative jitter",
            TaskOptions::default().backoff(backoff(-0.1)),
        ),
        (
            "zero base",
            TaskOptions::default().backoff(Backoff::Exponential {
                base: std::time::Duration::ZERO,
                max: std::time::Duration::from_secs(60),
                jitter: 0.1,
            }),
        ),
        (
            "cap below base",
            TaskOptions::default().backoff(Backoff::Exponential {
                base: std::time::Duration::from_secs(60),
                max: std::time::Duration::from_secs(1),
                jitter: 0.1,
            }),
        ),
        (
            "zero timeout",
            TaskOptions::default().timeout(std::time::Duration::ZERO),
        ),
        ("no attempts", TaskOptions::default()),
        ("NUL in the name", TaskOptions::default()),
        (
            "NUL in the unique key",
            TaskOptions::default().unique_key("a\0b"),
        ),
    ];
    for (what, options) in invalid {
        let good = spec(&queue, TaskOptions::default());
        let mut bad = spec(&queue, options);
        // Built by hand: the options' builder never resolves to these.
        if what == "no attempts" {
            bad.max_attempts = 0;
        }
        if what == "NUL in the name" {
            bad.name = "conformance\0task".to_owned();
        }
        let err = stores
            .queue
            .enqueue(vec![good.clone(), bad.clone()])
            .await
            .expect_err(what);
        assert_eq!(err.kind(), crate::StoreErrorKind::Invalid, "{what}: {err}");
        for id in [good.id, bad.id] {
            assert!(
                stores.queue.get(id).await.expect("get").is_none(),
                "{what}: nothing of the batch is stored"
            );
        }
    }
}
