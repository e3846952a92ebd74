//! Dependents: settling blocked tasks when their parents finish.

use chrono::{DateTime, Utc};
use omniq_models::{TaskId, TaskState};
use omniq_sql::{BlockedChild, Dependents, parent_state_from_row};
use omniq_storage::{StateChange, StoreResult};
use sqlx::{MySql, MySqlConnection, QueryBuilder};
use uuid::Uuid;

use crate::rows::{CHANGE_COLUMNS, My, change_from_row, push_ids, store_error};
use crate::time::to_micros;

/// Whether a change made a task ready to claim.
pub(super) fn ready_in(changes: &[StateChange]) -> bool {
    changes.iter().any(|c| c.state == TaskState::Queued)
}

/// Settles the dependents of `finished` inside the caller's transaction (see
/// [`omniq_sql::settle_dependents`]). Connections read committed data, so a parent's state
/// read after its child's lock is the committed one.
pub(super) async fn settle_dependents(
    conn: &mut MySqlConnection,
    finished: Vec<Uuid>,
    now: DateTime<Utc>,
    changes: &mut Vec<StateChange>,
) -> StoreResult<()> {
    let finished = finished.into_iter().map(TaskId::from_uuid).collect();
    omniq_sql::settle_dependents(&mut MySqlDependents { conn }, finished, now, changes).await
}

struct MySqlDependents<'a> {
    conn: &'a mut MySqlConnection,
}

fn uuids(ids: &[TaskId]) -> Vec<Uuid> {
    ids.iter().map(|id| *id.as_uuid()).collect()
}

impl Dependents for MySqlDependents<'_> {
    async fn blocked_children(&mut self, parents: &[TaskId]) -> StoreResult<Vec<BlockedChild>> {
        let mut select = QueryBuilder::<MySql>::new(
            "SELECT d.parent_id, t.id, t.run_when FROM omniq_task_deps AS d \
             JOIN omniq_tasks AS t ON t.id = d.child_id \
             WHERE t.state = 'blocked' AND d.parent_id IN ",
        );
        push_ids(&mut select, &uuids(parents));
        select.push(" ORDER BY t.id FOR UPDATE");
        let rows = select
            .build()
            .fetch_all(&mut *self.conn)
            .await
            .map_err(store_error)?;
        rows.iter().map(BlockedChild::from_row::<My>).collect()
    }

    async fn parent_states(
        &mut self,
        children: &[TaskId],
    ) -> StoreResult<Vec<(TaskId, TaskState)>> {
        let mut select = QueryBuilder::<MySql>::new(
            "SELECT d.child_id, p.state FROM omniq_task_deps AS d \
             JOIN omniq_tasks AS p ON p.id = d.parent_id WHERE d.child_id IN ",
        );
        push_ids(&mut select, &uuids(children));
        let rows = select
            .build()
            .fetch_all(&mut *self.conn)
            .await
            .map_err(store_error)?;
        rows.iter().map(parent_state_from_row::<My>).collect()
    }

    async fn release(
        &mut self,
        children: &[TaskId],
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<StateChange>> {
        let ids = uuids(children);
        let mut update =
            QueryBuilder::<MySql>::new("UPDATE omniq_tasks SET state = CASE WHEN run_at > ");
        update
            .push_bind(to_micros(now))
            .push(" THEN 'scheduled' ELSE 'queued' END, updated_at = ")
            .push_bind(to_micros(now))
            .push(" WHERE state = 'blocked' AND id IN ");
        push_ids(&mut update, &ids);
        update
            .build()
            .execute(&mut *self.conn)
            .await
            .map_err(store_error)?;
        read_changes(self.conn, &ids).await
    }

    async fn cancel(
        &mut self,
        children: &[(TaskId, String)],
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<StateChange>> {
        // One statement per child: each has its own reason, and MySQL has no UPDATE … FROM
        // a list of values.
        for (child, reason) in children {
            sqlx::query(
                "UPDATE omniq_tasks SET state = 'cancelled', finished_at = ?, updated_at = ?, \
                 reason = ? WHERE id = ? AND state = 'blocked'",
            )
            .bind(to_micros(now))
            .bind(to_micros(now))
            .bind(reason)
            .bind(*child.as_uuid())
            .execute(&mut *self.conn)
            .await
            .map_err(store_error)?;
        }
        let ids: Vec<TaskId> = children.iter().map(|(id, _)| *id).collect();
        read_changes(self.conn, &uuids(&ids)).await
    }
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
