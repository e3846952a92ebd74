//! What PostgreSQL's locking must guarantee when workers race: a task is claimed once, and
//! a dependent whose parents finish at the same moment is never left blocked.

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use chrono::Utc;
use omniq_models::{TaskOptions, TaskSpec, TaskState};
use omniq_storage::{Completion, CompletionOutcome, DequeueRequest, TaskQueue};

const SCHEMA: &str = "omniq_concurrency";

fn spec(queue: &str, options: TaskOptions) -> TaskSpec {
    TaskSpec::new("race.task", vec![], options.queue(queue), Utc::now())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_claimers_take_each_task_exactly_once() {
    let Some(backend) = common::backend("racing_claimers", SCHEMA).await else {
        return;
    };
    let queue: Arc<dyn TaskQueue> = Arc::new(backend.task_queue());
    let name = common::unique_queue("race");
    let tasks: Vec<_> = (0..300)
        .map(|_| spec(&name, TaskOptions::default()))
        .collect();
    queue.enqueue(tasks).await.expect("enqueue");

    let claimers: Vec<_> = (0..6)
        .map(|_| {
            let queue = queue.clone();
            let name = name.clone();
            tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let leases = queue
                        .dequeue(DequeueRequest::new([name.as_str()], 7))
                        .await
                        .expect("dequeue");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parents_finishing_at_once_never_leave_their_child_blocked() {
    let Some(backend) = common::backend("parents_finishing_at_once", SCHEMA).await else {
        return;
    };
    let queue: Arc<dyn TaskQueue> = Arc::new(backend.task_queue());
    for round in 0..20 {
        let name = common::unique_queue("fan-in");
        let a = spec(&name, TaskOptions::default());
        let b = spec(&name, TaskOptions::default());
        let child = spec(
            &name,
            TaskOptions::default().depends_on(a.id).depends_on(b.id),
        );
        queue
            .enqueue(vec![a, b, child.clone()])
            .await
            .expect("enqueue");
        let leases = queue
            .dequeue(DequeueRequest::new([name.as_str()], 10))
            .await
            .expect("dequeue");
        assert_eq!(leases.len(), 2);
        let done = |i: usize| Completion {
            lease: leases[i].reference(),
            outcome: CompletionOutcome::Succeeded,
        };
        // Two completions in two transactions at once.
        let (first, second) =
            tokio::join!(queue.complete(vec![done(0)]), queue.complete(vec![done(1)]));
        first.expect("complete");
        second.expect("complete");
        let state = queue
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_enqueued_while_its_parent_finishes_is_settled() {
    let Some(backend) = common::backend("child_while_parent_finishes", SCHEMA).await else {
        return;
    };
    let queue: Arc<dyn TaskQueue> = Arc::new(backend.task_queue());
    for round in 0..20 {
        let name = common::unique_queue("late-child");
        let parent = spec(&name, TaskOptions::default());
        queue.enqueue(vec![parent.clone()]).await.expect("enqueue");
        let lease = queue
            .dequeue(DequeueRequest::new([name.as_str()], 1))
            .await
            .expect("dequeue")
            .remove(0);
        let child = spec(&name, TaskOptions::default().depends_on(parent.id));
        let (completed, enqueued) = tokio::join!(
            queue.complete(vec![Completion {
                lease: lease.reference(),
                outcome: CompletionOutcome::Succeeded,
            }]),
            queue.enqueue(vec![child.clone()])
        );
        completed.expect("complete");
        enqueued.expect("enqueue");
        let state = queue
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

/// Processes started together (a producer and its workers) all open a schema that does not
/// exist yet: creating and migrating it happens once, under sqlx's advisory lock, and every
/// open succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_backends_opening_one_new_schema_at_once_all_succeed() {
    const OPENS: usize = 10;
    let schema = format!(
        "omniq_open_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let opens: Vec<_> = (0..OPENS)
        .map(|_| {
            let schema = schema.clone();
            tokio::spawn(async move {
                let options = omniq_postgres::PgOptions::default()
                    .schema(schema)
                    .max_connections(1)
                    .acquire_timeout(std::time::Duration::from_secs(30));
                omniq_postgres::PgBackend::connect_with(&common::url(), options).await
            })
        })
        .collect();
    let mut backends = Vec::new();
    for open in opens {
        match open.await.expect("open task") {
            Ok(backend) => backends.push(backend),
            Err(err)
                if err.kind() == omniq_storage::StoreErrorKind::Unavailable
                    && !omniq_storage::conformance::services_required() =>
            {
                eprintln!("SKIPPED: PostgreSQL unavailable ({err})");
                return;
            }
            Err(err) => panic!("an open failed: {err}"),
        }
    }
    let name = common::unique_queue("open");
    for backend in &backends {
        backend
            .task_queue()
            .enqueue(vec![spec(&name, TaskOptions::default())])
            .await
            .expect("enqueue");
    }
    let stats = backends[0].task_queue().stats(name).await.expect("stats");
    assert_eq!(stats.count(TaskState::Queued), OPENS as u64);
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA \"{schema}\" CASCADE"
    )))
    .execute(backends[0].pool())
    .await
    .expect("drop the schema");
    for backend in backends {
        backend.close().await;
    }
}
