//! Dependents: SQLite's statements for the SQL layer's settling algorithm.

use chrono::{DateTime, Utc};
use omniq_models::{TaskId, TaskState};
use omniq_sql::{BlockedChild, Dependents, parent_state_from_row};
use omniq_storage::{StateChange, StoreResult};
use sqlx::{AssertSqlSafe, QueryBuilder, Sqlite, SqliteConnection};

use crate::rows::{CHANGE_COLUMNS, Lite, ROWS_PER_INSERT, change_from_row, store_error};
use crate::time::to_micros;

/// Settles the dependents of `finished` inside the caller's transaction (see
/// [`omniq_sql::settle_dependents`]). Writers hold SQLite's write lock (`BEGIN
/// IMMEDIATE`), so no two settles ever interleave and no row lock is needed.
pub(super) async fn settle_dependents(
    conn: &mut SqliteConnection,
    finished: Vec<TaskId>,
    now: DateTime<Utc>,
    changes: &mut Vec<StateChange>,
) -> StoreResult<()> {
    omniq_sql::settle_dependents(&mut SqliteDependents { conn }, finished, now, changes).await
}

struct SqliteDependents<'a> {
    conn: &'a mut SqliteConnection,
}

/// Pushes `(?, ?, …)` binding each id's text.
fn push_ids(sql: &mut QueryBuilder<Sqlite>, ids: &[TaskId]) {
    sql.push("(");
    let mut list = sql.separated(", ");
    for id in ids {
        list.push_bind(id.to_string());
    }
    sql.push(")");
}

impl SqliteDependents<'_> {
    /// Runs the statement `start` begins, followed by `(ids…)` and `tail`, once for each
    /// chunk of `ids` (SQLite bounds the bound variables).
    async fn rows_for(
        &mut self,
        start: impl Fn(&mut QueryBuilder<Sqlite>),
        ids: &[TaskId],
        tail: &str,
    ) -> StoreResult<Vec<sqlx::sqlite::SqliteRow>> {
        let mut rows = Vec::new();
        for chunk in ids.chunks(ROWS_PER_INSERT) {
            let mut sql = QueryBuilder::<Sqlite>::new("");
            start(&mut sql);
            push_ids(&mut sql, chunk);
            sql.push(tail);
            rows.extend(
                sql.build()
                    .fetch_all(&mut *self.conn)
                    .await
                    .map_err(store_error)?,
            );
        }
        Ok(rows)
    }
}

impl Dependents for SqliteDependents<'_> {
    async fn blocked_children(&mut self, parents: &[TaskId]) -> StoreResult<Vec<BlockedChild>> {
        let rows = self
            .rows_for(
                |sql| {
                    sql.push(
                        "SELECT d.parent_id, t.id, t.run_when FROM omniq_task_deps d \
                         JOIN omniq_tasks t ON t.id = d.child_id \
                         WHERE t.state = 'blocked' AND d.parent_id IN ",
                    );
                },
                parents,
                "",
            )
            .await?;
        rows.iter().map(BlockedChild::from_row::<Lite>).collect()
    }

    async fn parent_states(
        &mut self,
        children: &[TaskId],
    ) -> StoreResult<Vec<(TaskId, TaskState)>> {
        let rows = self
            .rows_for(
                |sql| {
                    sql.push(
                        "SELECT d.child_id, p.state FROM omniq_task_deps d \
                         JOIN omniq_tasks p ON p.id = d.parent_id WHERE d.child_id IN ",
                    );
                },
                children,
                "",
            )
            .await?;
        rows.iter().map(parent_state_from_row::<Lite>).collect()
    }

    async fn release(
        &mut self,
        children: &[TaskId],
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<StateChange>> {
        let rows = self
            .rows_for(
                |sql| {
                    sql.push("UPDATE omniq_tasks SET state = CASE WHEN run_at > ")
                        .push_bind(to_micros(now))
                        .push(" THEN 'scheduled' ELSE 'queued' END, updated_at = ")
                        .push_bind(to_micros(now))
                        .push(" WHERE state = 'blocked' AND id IN ");
                },
                children,
                &format!(" RETURNING {CHANGE_COLUMNS}"),
            )
            .await?;
        rows.iter().map(change_from_row).collect()
    }

    async fn cancel(
        &mut self,
        children: &[(TaskId, String)],
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<StateChange>> {
        // One statement per child: each has its own reason.
        let mut changes = Vec::with_capacity(children.len());
        for (child, reason) in children {
            let row = sqlx::query(AssertSqlSafe(format!(
                "UPDATE omniq_tasks SET state = 'cancelled', finished_at = ?1, \
                 updated_at = ?1, reason = ?3 WHERE id = ?2 AND state = 'blocked' \
                 RETURNING {CHANGE_COLUMNS}"
            )))
            .bind(to_micros(now))
            .bind(child.to_string())
            .bind(reason)
            .fetch_optional(&mut *self.conn)
            .await
            .map_err(store_error)?;
            if let Some(row) = row {
                changes.push(change_from_row(&row)?);
            }
        }
        Ok(changes)
    }
}
