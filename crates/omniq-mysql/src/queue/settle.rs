//! Dependents: settling blocked tasks when their parents finish.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use omniq_models::{DependencyVerdict, RunWhen, TaskState};
use omniq_storage::{StateChange, StoreResult};
use sqlx::{MySql, MySqlConnection, QueryBuilder};
use uuid::Uuid;

use crate::error::store_error;
use crate::rows::{CHANGE_COLUMNS, change_from_row, column, parse_run_when, parse_state, push_ids};
use crate::time::to_micros;

/// Whether a change made a task ready to claim.
pub(super) fn ready_in(changes: &[StateChange]) -> bool {
    changes.iter().any(|c| c.state == TaskState::Queued)
}

/// Unblocks or cancels the blocked dependents of tasks that just finished, then the
/// dependents of those it cancelled, and so on: a few statements per generation. Runs
/// inside the caller's transaction, so a parent's end and its dependents' new states
/// commit together.
///
/// The blocked children are locked (`FOR UPDATE`) before their parents' states are read.
/// Two parents of one child finishing at once in two transactions thus take turns: the
/// second waits for the first to commit, then (connections read committed data) reads both
/// parents finished. Reading without the lock, each could see the other still running and
/// leave the child blocked for good.
pub(super) async fn settle_dependents(
    conn: &mut MySqlConnection,
    finished: Vec<Uuid>,
    now: DateTime<Utc>,
    changes: &mut Vec<StateChange>,
) -> StoreResult<()> {
    let mut finished = finished;
    while !finished.is_empty() {
        let children = blocked_children(conn, &finished).await?;
        if children.is_empty() {
            break;
        }
        let ids: Vec<Uuid> = children.keys().copied().collect();
        let parent_states = parent_states(conn, &ids).await?;
        let mut run = Vec::new();
        let mut cancel = Vec::new();
        for (child, (run_when, parent)) in &children {
            let states = parent_states.get(child).map_or(&[][..], Vec::as_slice);
            match run_when.verdict(states) {
                DependencyVerdict::Wait => {}
                DependencyVerdict::Run => run.push(*child),
                DependencyVerdict::Cancel => cancel.push((
                    *child,
                    format!("dependency {parent} did not settle as required"),
                )),
            }
        }
        if !run.is_empty() {
            let mut update =
                QueryBuilder::<MySql>::new("UPDATE omniq_tasks SET state = CASE WHEN run_at > ");
            update
                .push_bind(to_micros(now))
                .push(" THEN 'scheduled' ELSE 'queued' END, updated_at = ")
                .push_bind(to_micros(now))
                .push(" WHERE state = 'blocked' AND id IN ");
            push_ids(&mut update, &run);
            update
                .build()
                .execute(&mut *conn)
                .await
                .map_err(store_error)?;
            changes.extend(read_changes(conn, &run).await?);
        }
        finished = Vec::with_capacity(cancel.len());
        for (child, reason) in &cancel {
            sqlx::query(
                "UPDATE omniq_tasks SET state = 'cancelled', finished_at = ?, updated_at = ?, \
                 reason = ? WHERE id = ? AND state = 'blocked'",
            )
            .bind(to_micros(now))
            .bind(to_micros(now))
            .bind(reason)
            .bind(*child)
            .execute(&mut *conn)
            .await
            .map_err(store_error)?;
            finished.push(*child);
        }
        if !finished.is_empty() {
            changes.extend(read_changes(conn, &finished).await?);
        }
    }
    Ok(())
}

/// The state changes of `ids`, as they now are.
pub(super) async fn read_changes(
    conn: &mut MySqlConnection,
    ids: &[Uuid],
) -> StoreResult<Vec<StateChange>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut select = QueryBuilder::<MySql>::new(format!(
        "SELECT {CHANGE_COLUMNS} FROM omniq_tasks AS t WHERE t.id IN "
    ));
    push_ids(&mut select, ids);
    select.push(" ORDER BY t.seq");
    let rows = select
        .build()
        .fetch_all(&mut *conn)
        .await
        .map_err(store_error)?;
    rows.iter().map(change_from_row).collect()
}

/// The blocked children of `parents`, locked, each with its condition and the first of
/// these parents it waits on (named in a cancellation's reason).
async fn blocked_children(
    conn: &mut MySqlConnection,
    parents: &[Uuid],
) -> StoreResult<HashMap<Uuid, (RunWhen, Uuid)>> {
    let mut select = QueryBuilder::<MySql>::new(
        "SELECT d.parent_id, t.id, t.run_when FROM omniq_task_deps AS d \
         JOIN omniq_tasks AS t ON t.id = d.child_id \
         WHERE t.state = 'blocked' AND d.parent_id IN ",
    );
    push_ids(&mut select, parents);
    select.push(" ORDER BY t.id FOR UPDATE");
    let rows = select
        .build()
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

/// Every parent's state, per child, as last committed (or changed by this transaction).
async fn parent_states(
    conn: &mut MySqlConnection,
    children: &[Uuid],
) -> StoreResult<HashMap<Uuid, Vec<TaskState>>> {
    let mut select = QueryBuilder::<MySql>::new(
        "SELECT d.child_id, p.state FROM omniq_task_deps AS d \
         JOIN omniq_tasks AS p ON p.id = d.parent_id WHERE d.child_id IN ",
    );
    push_ids(&mut select, children);
    let rows = select
        .build()
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
