//! Processes racing to open one new database. (The races between workers on one store are
//! conformance cases, which every backend runs.)

mod common;

use chrono::Utc;
use omniq_models::{TaskOptions, TaskSpec, TaskState};
use omniq_storage::TaskQueue;

fn spec(queue: &str, options: TaskOptions) -> TaskSpec {
    TaskSpec::new("race.task", vec![], options.queue(queue), Utc::now())
}

/// Processes started together (a producer and its workers) all open a database that has
/// no tables yet: migrating it happens once, under sqlx's GET_LOCK, and every open
/// succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_backends_opening_one_new_database_at_once_all_succeed() {
    const OPENS: usize = 10;
    let url = match common::fresh_database().await {
        Ok(url) => url,
        Err(err)
            if err.kind() == omniq_storage::StoreErrorKind::Unavailable
                && !omniq_storage::conformance::services_required() =>
        {
            eprintln!("SKIPPED: MySQL unavailable ({err})");
            return;
        }
        Err(err) => panic!("cannot create a database: {err}"),
    };
    let opens: Vec<_> = (0..OPENS)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let options = omniq_mysql::MySqlOptions::default()
                    .max_connections(1)
                    .acquire_timeout(std::time::Duration::from_secs(30));
                omniq_mysql::MySqlBackend::connect_with(&url, options).await
            })
        })
        .collect();
    let mut backends = Vec::new();
    for open in opens {
        backends.push(open.await.expect("open task").expect("open"));
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
    for backend in backends {
        backend.close().await;
    }
}
