//! Dependents: PostgreSQL's statements for the SQL layer's settling algorithm.

use chrono::{DateTime, Utc};
use omniq_models::{TaskId, TaskState};
use omniq_sql::{BlockedChild, Dependents, parent_state_from_row};
use omniq_storage::{StateChange, StoreResult};
use sqlx::{AssertSqlSafe, PgConnection};
use uuid::Uuid;

use crate::names::Names;
use crate::rows::{CHANGE_COLUMNS, Pg, change_from_row, store_error};

/// Settles the dependents of `finished` inside the caller's transaction (see
/// [`omniq_sql::settle_dependents`]).
pub(super) async fn settle_dependents(
    conn: &mut PgConnection,
    names: &Names,
    finished: Vec<Uuid>,
    now: DateTime<Utc>,
    changes: &mut Vec<StateChange>,
) -> StoreResult<()> {
    let finished = finished.into_iter().map(TaskId::from_uuid).collect();
    omniq_sql::settle_dependents(&mut PgDependents { conn, names }, finished, now, changes).await
}

struct PgDependents<'a> {
    conn: &'a mut PgConnection,
    names: &'a Names,
}

fn uuids(ids: &[TaskId]) -> Vec<Uuid> {
    ids.iter().map(|id| *id.as_uuid()).collect()
}

impl Dependents for PgDependents<'_> {
    async fn blocked_children(&mut self, parents: &[TaskId]) -> StoreResult<Vec<BlockedChild>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT d.parent_id, t.id, t.run_when FROM {deps} AS d \
             JOIN {tasks} AS t ON t.id = d.child_id \
             WHERE d.parent_id = ANY($1) AND t.state = 'blocked' \
             ORDER BY t.id FOR UPDATE OF t",
            deps = self.names.deps,
            tasks = self.names.tasks
        )))
        .bind(uuids(parents))
        .fetch_all(&mut *self.conn)
        .await
        .map_err(store_error)?;
        rows.iter().map(BlockedChild::from_row::<Pg>).collect()
    }

    async fn parent_states(
        &mut self,
        children: &[TaskId],
    ) -> StoreResult<Vec<(TaskId, TaskState)>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT d.child_id, p.state FROM {deps} AS d JOIN {tasks} AS p ON p.id = d.parent_id \
             WHERE d.child_id = ANY($1)",
            deps = self.names.deps,
            tasks = self.names.tasks
        )))
        .bind(uuids(children))
        .fetch_all(&mut *self.conn)
        .await
        .map_err(store_error)?;
        rows.iter().map(parent_state_from_row::<Pg>).collect()
    }

    async fn release(
        &mut self,
        children: &[TaskId],
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<StateChange>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "UPDATE {tasks} AS t SET state = CASE WHEN t.run_at > $1 THEN 'scheduled' \
             ELSE 'queued' END, updated_at = $1 WHERE t.id = ANY($2) AND t.state = 'blocked' \
             RETURNING {CHANGE_COLUMNS}",
            tasks = self.names.tasks
        )))
        .bind(now)
        .bind(uuids(children))
        .fetch_all(&mut *self.conn)
        .await
        .map_err(store_error)?;
        rows.iter().map(change_from_row).collect()
    }

    async fn cancel(
        &mut self,
        children: &[(TaskId, String)],
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<StateChange>> {
        let (ids, reasons): (Vec<Uuid>, Vec<&str>) = children
            .iter()
            .map(|(id, reason)| (*id.as_uuid(), reason.as_str()))
            .unzip();
        let rows = sqlx::query(AssertSqlSafe(format!(
            "UPDATE {tasks} AS t SET state = 'cancelled', finished_at = $1, updated_at = $1, \
             reason = c.reason FROM UNNEST($2::uuid[], $3::text[]) AS c(id, reason) \
             WHERE t.id = c.id AND t.state = 'blocked' RETURNING {CHANGE_COLUMNS}",
            tasks = self.names.tasks
        )))
        .bind(now)
        .bind(&ids)
        .bind(&reasons)
        .fetch_all(&mut *self.conn)
        .await
        .map_err(store_error)?;
        rows.iter().map(change_from_row).collect()
    }
}
