//! Race cases: what the store's locking must guarantee when workers act at the same moment.

use std::collections::HashSet;

use omniq_models::{TaskOptions, TaskState};

use super::Fixture;
use super::support::{request, spec, unique_queue};
use crate::{Completion, CompletionOutcome};

/// Six claimers racing over 300 tasks take each exactly once.
pub async fn racing_claimers_take_each_task_exactly_once(stores: Fixture) {
    let name = unique_queue("race");
    let tasks: Vec<_> = (0..300)
        .map(|_| spec(&name, TaskOptions::default()))
        .collect();
    stores.queue.enqueue(tasks).await.expect("enqueue");

    let claimers: Vec<_> = (0..6)
        .map(|_| {
            let queue = stores.queue.clone();
            let name = name.clone();
            tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let leases = queue.dequeue(request(&[&name], 7)).await.expect("dequeue");
                    if leases.is_empty() {
                        return mine;
                    }
                    mine.extend(leases.into_iter().map(|l| l.spec.id));
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    for claimer in claimers {
        all.extend(claimer.await.expect("claimer"));
    }
    let distinct: HashSet<_> = all.iter().collect();
    assert_eq!(all.len(), 300, "every task claimed");
    assert_eq!(distinct.len(), 300, "no task claimed twice");
}

/// Two parents completed at the same moment, in two calls, never leave their dependent
/// blocked.
pub async fn parents_finishing_at_once_never_leave_their_child_blocked(stores: Fixture) {
    for round in 0..20 {
        let name = unique_queue("fan-in");
        let a = spec(&name, TaskOptions::default());
        let b = spec(&name, TaskOptions::default());
        let child = spec(
            &name,
            TaskOptions::default().depends_on(a.id).depends_on(b.id),
        );
        stores
            .queue
            .enqueue(vec![a, b, child.clone()])
            .await
            .expect("enqueue");
        let leases = stores
            .queue
            .dequeue(request(&[&name], 10))
            .await
            .expect("dequeue");
        assert_eq!(leases.len(), 2);
        let done = |i: usize| Completion::new(leases[i].reference(), CompletionOutcome::Succeeded);
        let (first, second) = tokio::join!(
            stores.queue.complete(vec![done(0)]),
            stores.queue.complete(vec![done(1)])
        );
        first.expect("complete");
        second.expect("complete");
        let state = stores
            .queue
            .get(child.id)
            .await
            .expect("get")
            .expect("exists")
            .state;
        assert_eq!(
            state,
            TaskState::Queued,
            "round {round}: the child is stuck"
        );
    }
}

/// A dependent enqueued while its parent's completion is applied is settled either way:
/// never left blocked behind a finished parent.
pub async fn a_child_enqueued_while_its_parent_finishes_is_settled(stores: Fixture) {
    for round in 0..20 {
        let name = unique_queue("late-child");
        let parent = spec(&name, TaskOptions::default());
        stores
            .queue
            .enqueue(vec![parent.clone()])
            .await
            .expect("enqueue");
        let lease = stores
            .queue
            .dequeue(request(&[&name], 1))
            .await
            .expect("dequeue")
            .remove(0);
        let child = spec(&name, TaskOptions::default().depends_on(parent.id));
        let (completed, enqueued) = tokio::join!(
            stores.queue.complete(vec![Completion::new(
                lease.reference(),
                CompletionOutcome::Succeeded
            )]),
            stores.queue.enqueue(vec![child.clone()])
        );
        completed.expect("complete");
        enqueued.expect("enqueue");
        let state = stores
            .queue
            .get(child.id)
            .await
            .expect("get")
            .expect("exists")
            .state;
        assert_eq!(
            state,
            TaskState::Queued,
            "round {round}: the child is stuck"
        );
    }
}
