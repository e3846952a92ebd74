//! `MySqlTaskQueue::enqueue_in`: a task exists if and only if the caller's transaction
//! commits.

mod common;

use chrono::Utc;
use omniq_models::{TaskId, TaskOptions, TaskSpec};
use omniq_storage::{DequeueRequest, EnqueueOutcome, TaskQueue};

fn spec(queue: &str) -> TaskSpec {
    TaskSpec::new(
        "tx.task",
        vec![7],
        TaskOptions::default().queue(queue),
        Utc::now(),
    )
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
    let Some(backend) = common::backend("a_rolled_back_transaction_leaves_no_task").await else {
        return;
    };
    let queue = backend.task_queue();
    let name = common::unique_queue("tx-rollback");
    let task = spec(&name);

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
    let Some(backend) = common::backend("a_committed_transaction").await else {
        return;
    };
    sqlx::query("CREATE TABLE IF NOT EXISTS tx_orders (id BIGINT PRIMARY KEY)")
        .execute(backend.pool())
        .await
        .expect("create table");
    let queue = backend.task_queue();
    let name = common::unique_queue("tx-commit");
    let task = spec(&name);
    let order = i64::from(rand_suffix());

    let mut tx = backend.pool().begin().await.expect("begin");
    sqlx::query("INSERT INTO tx_orders (id) VALUES (?)")
        .bind(order)
        .execute(&mut *tx)
        .await
        .expect("the caller's own write");
    queue
        .enqueue_in(&mut tx, vec![task.clone()])
        .await
        .expect("enqueue_in");
    tx.commit().await.expect("commit");

    let stored: Option<i64> = sqlx::query_scalar("SELECT id FROM tx_orders WHERE id = ?")
        .bind(order)
        .fetch_optional(backend.pool())
        .await
        .expect("read the order");
    assert_eq!(stored, Some(order));
    assert_eq!(claim(&queue, &name).await, vec![task.id]);
}

fn rand_suffix() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let bits = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    (bits & 0x7fff_ffff) as u32
}
