//! Event batches are committed without waiting for the WAL flush; nothing else is. The
//! relaxed setting is local to the event insert's own transaction, so the pooled
//! connection that wrote events still commits tasks, results and completions durably.

mod common;

use std::time::Duration;

use omniq_models::{TaskEvent, TaskEventKind, TaskId};
use omniq_postgres::{PgBackend, PgOptions, PoolSettings};
use omniq_storage::conformance::services_required;
use omniq_storage::{EventQuery, EventStore, StoreErrorKind};

const SCHEMA: &str = "omniq_durability";

#[tokio::test]
async fn an_event_batch_leaves_its_connection_committing_synchronously() {
    let test = "an_event_batch_leaves_its_connection_committing_synchronously";
    // One connection, so the check below runs on the very connection that wrote the events.
    let options = PgOptions::default().schema(SCHEMA).pool(
        PoolSettings::default()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(10)),
    );
    let backend = match PgBackend::connect_with(&common::url(), options).await {
        Ok(backend) => backend,
        Err(err) if err.kind() == StoreErrorKind::Unavailable && !services_required() => {
            eprintln!("SKIPPED `{test}`: PostgreSQL unavailable ({err})");
            return;
        }
        Err(err) => panic!("`{test}`: cannot connect to PostgreSQL: {err}"),
    };
    let events = backend.event_store();
    let task = TaskId::new();
    let queue = common::unique_queue("durability");
    let batch: Vec<TaskEvent> = [TaskEventKind::Started, TaskEventKind::Succeeded]
        .into_iter()
        .map(|kind| TaskEvent::for_task(kind, task, "durability.task", &queue))
        .collect();
    events.append(batch).await.expect("append");

    let stored = events.query(EventQuery::task(task)).await.expect("query");
    assert_eq!(stored.len(), 2, "both events are stored");
    let (setting,): (String,) = sqlx::query_as("SHOW synchronous_commit")
        .fetch_one(backend.pool())
        .await
        .expect("show");
    assert_eq!(
        setting, "on",
        "the event insert relaxed the connection's commits beyond its own transaction"
    );
}
