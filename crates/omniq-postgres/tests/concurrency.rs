//! Processes racing to open one new schema. (The races between workers on one store are
//! conformance cases, which every backend runs.)

mod common;

use chrono::Utc;
use omniq_models::{TaskOptions, TaskSpec, TaskState};
use omniq_storage::TaskQueue;

fn spec(queue: &str, options: TaskOptions) -> TaskSpec {
    TaskSpec::new("race.task", vec![], options.queue(queue), Utc::now())
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
                let options = omniq_postgres::PgOptions::default().schema(schema).pool(
                    omniq_postgres::PoolSettings::default()
                        .max_connections(1)
                        .acquire_timeout(std::time::Duration::from_secs(30)),
                );
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
