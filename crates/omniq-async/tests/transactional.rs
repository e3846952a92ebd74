//! Enqueueing through the facade inside the caller's own transaction: the task exists if
//! and only if the transaction commits; a backend without transactions says so.

mod support;

use omniq_async::{AsyncOmniQ, Capability, ErrorKind};
use support::{Double, WAIT};

/// Enqueues in a transaction rolled back (no task) and in one committed (the task runs).
#[cfg(any(feature = "postgres", feature = "mysql"))]
async fn only_committed_tasks_exist<DB>(omniq: &AsyncOmniQ, pool: &sqlx::Pool<DB>)
where
    DB: sqlx::Database,
    DB::Connection: std::any::Any + Send,
{
    assert!(
        omniq
            .capabilities()
            .supports(Capability::TransactionalEnqueue)
    );
    let mut rolled_back = pool.begin().await.expect("begin");
    let gone = omniq
        .enqueue(Double(1))
        .in_transaction(&mut *rolled_back)
        .await
        .expect("enqueue");
    rolled_back.rollback().await.expect("rollback");
    assert!(omniq.task(gone.id()).await.expect("get").is_none());

    let mut committed = pool.begin().await.expect("begin");
    let kept = omniq
        .enqueue(Double(2))
        .in_transaction(&mut *committed)
        .await
        .expect("enqueue");
    committed.commit().await.expect("commit");
    let worker = omniq.worker().start().expect("start");
    assert_eq!(kept.wait(WAIT).await.expect("result"), 4);
    worker.shutdown().await.expect("shutdown");
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_enqueued_in_a_transaction_exists_only_if_it_commits() {
    let Some(harness) = support::postgres(|_| {}).await else {
        return;
    };
    let omniq = harness.omniq.clone().register::<Double>();
    let url = std::env::var("OMNIQ_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let pool = sqlx::PgPool::connect(&url).await.expect("pool");

    only_committed_tasks_exist(&omniq, &pool).await;

    // Another database's connection type is refused, not misused.
    let mut wrong = String::from("not a connection");
    let err = omniq
        .enqueue(Double(3))
        .in_transaction(&mut wrong)
        .await
        .expect_err("not a PostgreSQL connection");
    assert_eq!(err.kind(), ErrorKind::Invalid, "{err}");
}

#[tokio::test]
async fn a_backend_without_transactions_refuses_a_transactional_enqueue() {
    let harness = support::sqlite(|_| {}).await;
    let mut conn = ();
    let err = harness
        .omniq
        .enqueue(Double(1))
        .in_transaction(&mut conn)
        .await
        .expect_err("SQLite's task queue has no transactional enqueue");
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
    assert!(
        !harness
            .omniq
            .capabilities()
            .supports(Capability::TransactionalEnqueue)
    );
    assert!(err.to_string().contains("transaction"), "{err}");
}

#[cfg(feature = "mysql")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_enqueued_in_a_mysql_transaction_exists_only_if_it_commits() {
    let Some(harness) = support::mysql(|_| {}).await else {
        return;
    };
    let omniq = harness.omniq.clone().register::<Double>();
    // The harness's own database: MySQL's tables are those of the connection's database.
    let url = omniq
        .settings()
        .store_url(omniq_async::StoreKind::TaskQueue)
        .as_str()
        .to_owned();
    let pool = sqlx::MySqlPool::connect(&url).await.expect("pool");

    only_committed_tasks_exist(&omniq, &pool).await;
}
