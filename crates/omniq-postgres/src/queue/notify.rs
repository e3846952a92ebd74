//! NOTIFY: telling waiting workers, in this process and others, that tasks are ready.

use std::collections::BTreeSet;

use omniq_models::TaskState;
use omniq_storage::{StateChange, StoreResult};
use sqlx::PgConnection;

use crate::error::store_error;

/// Queues that got a task ready to claim, to be notified once each.
pub(super) type ReadyQueues = BTreeSet<String>;

/// Adds the queues of changes that made a task ready.
pub(super) fn ready_from(changes: &[StateChange], ready: &mut ReadyQueues) {
    for change in changes {
        if change.state == TaskState::Queued {
            ready.insert(change.queue.clone());
        }
    }
}

/// Sends one notification per queue on `channel`. Inside a transaction, PostgreSQL holds
/// them until the commit (and drops them on a rollback), so a woken worker finds the tasks.
pub(super) async fn notify(
    conn: &mut PgConnection,
    channel: &str,
    queues: &ReadyQueues,
) -> StoreResult<()> {
    if queues.is_empty() {
        return Ok(());
    }
    let queues: Vec<&str> = queues.iter().map(String::as_str).collect();
    sqlx::query("SELECT pg_notify($1, q) FROM UNNEST($2::text[]) AS q")
        .bind(channel)
        .bind(queues)
        .execute(conn)
        .await
        .map_err(store_error)?;
    Ok(())
}
