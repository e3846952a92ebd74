//! Dependents: settling blocked tasks when a parent finishes.

use chrono::{DateTime, Utc};
use omniq_models::{DependencyVerdict, TaskState};
use omniq_storage::{StateChange, StoreResult};
use sqlx::{Row, SqliteConnection};

use crate::error::store_error;
use crate::rows::{column, parse_id, parse_run_when, parse_state};
use crate::time::to_micros;

/// Columns a [`StateChange`] is built from, for `RETURNING` clauses.
pub(super) const CHANGE_COLUMNS: &str = "id, name, queue, attempts, state, reason";

pub(super) fn change_from_row(row: &sqlx::sqlite::SqliteRow) -> StoreResult<StateChange> {
    Ok(StateChange {
        task_id: parse_id(&column::<String>(row, "id")?)?,
        task_name: column(row, "name")?,
        queue: column(row, "queue")?,
        attempts: column::<i64>(row, "attempts")?
            .try_into()
            .unwrap_or(u32::MAX),
        state: parse_state(&column::<String>(row, "state")?)?,
        reason: column(row, "reason")?,
    })
}

/// Unblocks or cancels the blocked dependents of a task that just finished, and in turn
/// the dependents of those it cancels. Runs inside the caller's transaction, so a parent's
/// end and its dependents' new states commit together.
pub(super) async fn settle_dependents(
    conn: &mut SqliteConnection,
    parent: String,
    now: DateTime<Utc>,
    changes: &mut Vec<StateChange>,
) -> StoreResult<()> {
    let now = to_micros(now);
    let mut finished = vec![parent];
    while let Some(parent) = finished.pop() {
        let children = sqlx::query(
            "SELECT t.id, t.run_when FROM omniq_task_deps d \
             JOIN omniq_tasks t ON t.id = d.child_id \
             WHERE d.parent_id = ? AND t.state = 'blocked'",
        )
        .bind(&parent)
        .fetch_all(&mut *conn)
        .await
        .map_err(store_error)?;
        for child in children {
            let child_id: String = child.try_get("id").map_err(store_error)?;
            let run_when = parse_run_when(&column::<String>(&child, "run_when")?)?;
            let states: Vec<String> = sqlx::query_scalar(
                "SELECT p.state FROM omniq_task_deps d JOIN omniq_tasks p ON p.id = d.parent_id \
                 WHERE d.child_id = ?",
            )
            .bind(&child_id)
            .fetch_all(&mut *conn)
            .await
            .map_err(store_error)?;
            let states = states
                .iter()
                .map(|s| parse_state(s))
                .collect::<StoreResult<Vec<TaskState>>>()?;
            let sql = match run_when.verdict(&states) {
                DependencyVerdict::Wait => continue,
                DependencyVerdict::Run => format!(
                    "UPDATE omniq_tasks SET state = CASE WHEN run_at > ?1 THEN 'scheduled' \
                     ELSE 'queued' END, updated_at = ?1 WHERE id = ?2 RETURNING {CHANGE_COLUMNS}"
                ),
                DependencyVerdict::Cancel => format!(
                    "UPDATE omniq_tasks SET state = 'cancelled', finished_at = ?1, \
                     updated_at = ?1, reason = ?3 WHERE id = ?2 RETURNING {CHANGE_COLUMNS}"
                ),
            };
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(now)
                .bind(&child_id)
                .bind(format!("dependency {parent} did not settle as required"))
                .fetch_one(&mut *conn)
                .await
                .map_err(store_error)?;
            let change = change_from_row(&row)?;
            if change.state == TaskState::Cancelled {
                finished.push(child_id);
            }
            changes.push(change);
        }
    }
    Ok(())
}
