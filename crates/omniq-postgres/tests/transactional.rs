//! `PgTaskQueue::enqueue_in`: a task exists if and only if the caller's transaction commits.

mod common;

use chrono::Utc;
use omniq_models::{TaskId, TaskOptions, TaskSpec};
use omniq_storage::{DequeueRequest, EnqueueOutcome, StoreErrorKind, TaskQueue};
use sqlx::{Connection, PgConnection};

const SCHEMA: &str = "omniq_transactional";

fn spec(queue: &str, options: TaskOptions) -> TaskSpec {
    TaskSpec::new("tx.task", vec![7], options.queue(queue), Utc::now())
}

async fn claim(queue: &dyn TaskQueue, name: &str) -> Vec<TaskId> {
    queue
        .dequeue(DequeueRequest::new([name], 10))
        .await
        .expect("dequeue")
        .into_iter()
        .map(|lease| lease.spec.id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolled_back_transaction_leaves_no_task() {
    let Some(backend) = common::backend("a_rolled_back_transaction_leaves_no_task", SCHEMA).await
    else {
        return;
    };
    let queue = backend.task_queue();
    let name = common::unique_queue("tx-rollback");
    let task = spec(&name, TaskOptions::default());

    let mut tx = backend.pool().begin().await.expect("begin");
    let outcomes = queue
        .enqueue_in(&mut tx, vec![task.clone()])
        .await
        .expect("enqueue_in");
    assert!(matches!(outcomes[..], [EnqueueOutcome::Created { id, .. }] if id == task.id));
    assert!(
        queue.get(task.id).await.expect("get").is_none(),
        "invisible to others before the commit"
    );
    tx.rollback().await.expect("rollback");

    assert!(queue.get(task.id).await.expect("get").is_none());
    assert!(claim(&queue, &name).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committed_transaction_makes_the_task_claimable_with_the_callers_data() {
    let Some(backend) = common::backend("a_committed_transaction", SCHEMA).await else {
        return;
    };
    sqlx::query("CREATE TABLE IF NOT EXISTS tx_orders (id UUID PRIMARY KEY)")
        .execute(backend.pool())
        .await
        .expect("create table");
    let queue = backend.task_queue();
    let name = common::unique_queue("tx-commit");
    let task = spec(&name, TaskOptions::default());
    let order = uuid::Uuid::new_v4();

    let mut tx = backend.pool().begin().await.expect("begin");
    sqlx::query("INSERT INTO tx_orders (id) VALUES ($1)")
        .bind(order)
        .execute(&mut *tx)
        .await
        .expect("insert order");
    queue
        .enqueue_in(&mut tx, vec![task.clone()])
        .await
        .expect("enqueue_in");
    assert!(
        claim(&queue, &name).await.is_empty(),
        "not claimable before the commit"
    );
    tx.commit().await.expect("commit");

    assert_eq!(claim(&queue, &name).await, vec![task.id]);
    let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tx_orders WHERE id = $1")
        .bind(order)
        .fetch_one(backend.pool())
        .await
        .expect("count");
    assert_eq!(stored, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_batch_leaves_the_callers_transaction_usable() {
    let Some(backend) = common::backend("a_failed_batch", SCHEMA).await else {
        return;
    };
    let queue = backend.task_queue();
    let name = common::unique_queue("tx-savepoint");
    let kept = spec(&name, TaskOptions::default());
    let fine = spec(&name, TaskOptions::default());
    let orphan = spec(&name, TaskOptions::default().depends_on(TaskId::new()));

    let mut tx = backend.pool().begin().await.expect("begin");
    queue
        .enqueue_in(&mut tx, vec![kept.clone()])
        .await
        .expect("enqueue_in");
    let err = queue
        .enqueue_in(&mut tx, vec![fine.clone(), orphan])
        .await
        .expect_err("unknown parent");
    assert_eq!(err.kind(), StoreErrorKind::Invalid);
    tx.commit().await.expect("the transaction is still usable");

    assert!(queue.get(kept.id).await.expect("get").is_some());
    assert!(
        queue.get(fine.id).await.expect("get").is_none(),
        "nothing of the failed batch"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_in_works_on_a_connection_from_another_pool() {
    let Some(backend) = common::backend("enqueue_in_other_pool", SCHEMA).await else {
        return;
    };
    let queue = backend.task_queue();
    let name = common::unique_queue("tx-foreign");
    let task = spec(&name, TaskOptions::default());
    // The application's own connection: default search_path, not the backend's schema.
    let mut conn = PgConnection::connect(&common::url())
        .await
        .expect("connect");
    let mut tx = conn.begin().await.expect("begin");
    queue
        .enqueue_in(&mut tx, vec![task.clone()])
        .await
        .expect("enqueue_in");
    tx.commit().await.expect("commit");
    conn.close().await.expect("close");
    assert_eq!(claim(&queue, &name).await, vec![task.id]);
}
