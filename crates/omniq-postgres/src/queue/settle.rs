//! Dependents: settling blocked tasks when their parents finish.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use omniq_models::{DependencyVerdict, RunWhen, TaskState};
use omniq_storage::{StateChange, StoreResult};
use sqlx::{AssertSqlSafe, PgConnection};
use uuid::Uuid;

use crate::error::store_error;
use crate::names::Names;
use crate::rows::{CHANGE_COLUMNS, change_from_row, column, parse_run_when, parse_state};

/// Unblocks or cancels the blocked dependents of tasks that just finished, then the
/// dependents of those it cancelled, and so on: a few statements per generation, however
/// many tasks. Runs inside the caller's transaction, so a parent's end and its dependents'
/// new states commit together.
///
/// The blocked children are locked (`FOR UPDATE`) before their parents' states are read.
/// Two parents of one child finishing at once in two transactions thus take turns: the
/// second waits for the first to commit, then reads both parents finished. Reading
/// without the lock, each could see the other still running and leave the child blocked
/// for good.
pub(super) async fn settle_dependents(
    conn: &mut PgConnection,
    names: &Names,
    finished: Vec<Uuid>,
    now: DateTime<Utc>,
    changes: &mut Vec<StateChange>,
) -> StoreResult<()> {
    let mut finished = finished;
    while !finished.is_empty() {
        let children = blocked_children(conn, names, &finished).await?;
        if children.is_empty() {
            break;
        }
        let ids: Vec<Uuid> = children.keys().copied().collect();
        let parent_states = parent_states(conn, names, &ids).await?;
        let mut run = Vec::new();
        let mut cancel = Vec::new();
        let mut reasons = Vec::new();
        for (child, (run_when, parent)) in &children {
            let states = parent_states.get(child).map_or(&[][..], Vec::as_slice);
            match run_when.verdict(states) {
                DependencyVerdict::Wait => {}
                DependencyVerdict::Run => run.push(*child),
                DependencyVerdict::Cancel => {
                    cancel.push(*child);
                    reasons.push(format!("dependency {parent} did not settle as required"));
                }
            }
        }
        if !run.is_empty() {
            let rows = sqlx::query(AssertSqlSafe(format!(
                "UPDATE {tasks} AS t SET state = CASE WHEN t.run_at > $1 THEN 'scheduled' \
                 ELSE 'queued' END, updated_at = $1 WHERE t.id = ANY($2) \
                 RETURNING {CHANGE_COLUMNS}",
                tasks = names.tasks
            )))
            .bind(now)
            .bind(&run)
            .fetch_all(&mut *conn)
            .await
            .map_err(store_error)?;
            for row in &rows {
                changes.push(change_from_row(row)?);
            }
        }
        finished = Vec::with_capacity(cancel.len());
        if !cancel.is_empty() {
            let rows = sqlx::query(AssertSqlSafe(format!(
                "UPDATE {tasks} AS t SET state = 'cancelled', finished_at = $1, updated_at = $1, \
                 reason = c.reason FROM UNNEST($2::uuid[], $3::text[]) AS c(id, reason) \
                 WHERE t.id = c.id RETURNING {CHANGE_COLUMNS}",
                tasks = names.tasks
            )))
            .bind(now)
            .bind(&cancel)
            .bind(&reasons)
            .fetch_all(&mut *conn)
            .await
            .map_err(store_error)?;
            for row in &rows {
                let change = change_from_row(row)?;
                finished.push(*change.task_id.as_uuid());
                changes.push(change);
            }
        }
    }
    Ok(())
}

/// The blocked children of `parents`, locked, each with its condition and the first of
/// these parents it waits on (named in a cancellation's reason).
async fn blocked_children(
    conn: &mut PgConnection,
    names: &Names,
    parents: &[Uuid],
) -> StoreResult<HashMap<Uuid, (RunWhen, Uuid)>> {
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT d.parent_id, t.id, t.run_when FROM {deps} AS d \
         JOIN {tasks} AS t ON t.id = d.child_id \
         WHERE d.parent_id = ANY($1) AND t.state = 'blocked' \
         ORDER BY t.id FOR UPDATE OF t",
        deps = names.deps,
        tasks = names.tasks
    )))
    .bind(parents)
    .fetch_all(&mut *conn)
    .await
    .map_err(store_error)?;
    let mut children = HashMap::with_capacity(rows.len());
    for row in &rows {
        let child: Uuid = column(row, "id")?;
        let parent: Uuid = column(row, "parent_id")?;
        let run_when = parse_run_when(&column::<String>(row, "run_when")?)?;
        children.entry(child).or_insert((run_when, parent));
    }
    Ok(children)
}

/// Every parent's state, per child.
async fn parent_states(
    conn: &mut PgConnection,
    names: &Names,
    children: &[Uuid],
) -> StoreResult<HashMap<Uuid, Vec<TaskState>>> {
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT d.child_id, p.state FROM {deps} AS d JOIN {tasks} AS p ON p.id = d.parent_id \
         WHERE d.child_id = ANY($1)",
        deps = names.deps,
        tasks = names.tasks
    )))
    .bind(children)
    .fetch_all(&mut *conn)
    .await
    .map_err(store_error)?;
    let mut states: HashMap<Uuid, Vec<TaskState>> = HashMap::new();
    for row in &rows {
        let child: Uuid = column(row, "child_id")?;
        let state = parse_state(&column::<String>(row, "state")?)?;
        states.entry(child).or_default().push(state);
    }
    Ok(states)
}
