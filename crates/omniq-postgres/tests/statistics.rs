//! After a burst of enqueues, the maintenance every worker runs refreshes the planner's
//! statistics of the tasks table, so claims keep reading the claim index in order instead
//! of sorting the whole queue (autovacuum may be off, or not round yet).

mod common;

use chrono::Utc;
use omniq_models::{TaskOptions, TaskSpec};
use omniq_storage::TaskQueue;

const SCHEMA: &str = "omniq_statistics";

async fn analysed_at(backend: &omniq_postgres::PgBackend) -> Option<chrono::DateTime<Utc>> {
    let pool = backend.pool();
    // `last_analyze`: an `ANALYZE` statement's, as the maintenance runs; autovacuum's
    // own are `last_autoanalyze`.
    let (last,): (Option<chrono::DateTime<Utc>>,) = sqlx::query_as(
        "SELECT last_analyze FROM pg_stat_user_tables \
         WHERE schemaname = $1 AND relname = 'omniq_tasks'",
    )
    .bind(SCHEMA)
    .fetch_one(pool)
    .await
    .expect("table statistics");
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_analyses_the_tasks_table_after_a_burst() {
    let test = "maintenance_analyses_the_tasks_table_after_a_burst";
    let Some(backend) = common::backend(test, SCHEMA).await else {
        return;
    };
    let queue = backend.task_queue();
    let before = analysed_at(&backend).await;
    let name = common::unique_queue("burst");
    let started = Utc::now();
    for _ in 0..3 {
        let burst: Vec<TaskSpec> = (0..5_000)
            .map(|_| {
                TaskSpec::new(
                    "burst.task",
                    vec![],
                    TaskOptions::default().queue(&name),
                    Utc::now(),
                )
            })
            .collect();
        queue.enqueue(burst).await.expect("enqueue");
    }
    // PostgreSQL reports a session's row counts to the statistics views within about a
    // second, not at commit: each round is a fresh process's maintenance (the check is
    // throttled per process), until the counts arrive and the table is analysed.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let (analysed_by, after) = loop {
        let Some(worker) = common::backend(test, SCHEMA).await else {
            return;
        };
        worker
            .task_queue()
            .expire_due(10)
            .await
            .expect("maintenance");
        let after = analysed_at(&backend).await;
        if after != before {
            break (worker, after);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the tasks table was not analysed within 30 s of 15,000 enqueues"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert!(after.is_some_and(|at| at >= started - chrono::Duration::seconds(1)));
    // The same process right after: throttled, it does not look again.
    analysed_by
        .task_queue()
        .expire_due(10)
        .await
        .expect("maintenance");
    assert_eq!(analysed_at(&backend).await, after);
    // The burst is never run: delete it, so that runs to come start from a small table.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DELETE FROM {SCHEMA}.omniq_tasks WHERE queue = $1"
    )))
    .bind(&name)
    .execute(backend.pool())
    .await
    .expect("delete the burst");
}
