//! Reading tasks back, and cancelling them.

use omniq_models::{TaskId, TaskRecord, TaskState};
use omniq_storage::{CancelOutcome, Cancellation, QueueStats, StoreError, StoreResult, TaskQuery};
use sqlx::{AssertSqlSafe, QueryBuilder, Sqlite};

use super::settle::settle_dependents;
use super::{BEGIN_WRITE, SqliteTaskQueue};
use crate::error::store_error;
use crate::rows::{Lite, TASK_COLUMNS, parse_state, record_from_row};
use crate::time::to_micros;

impl SqliteTaskQueue {
    pub(super) async fn fetch(&self, id: TaskId) -> StoreResult<Option<TaskRecord>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {TASK_COLUMNS} FROM omniq_tasks WHERE id = ?"
        )))
        .bind(id.to_string())
        .fetch_optional(&self.backend.reader)
        .await
        .map_err(store_error)?;
        row.as_ref().map(record_from_row).transpose()
    }

    pub(super) async fn list_tasks(&self, query: TaskQuery) -> StoreResult<Vec<TaskRecord>> {
        let mut sql = QueryBuilder::<Sqlite>::new(format!(
            "SELECT {TASK_COLUMNS} FROM omniq_tasks AS t WHERE 1 = 1"
        ));
        omniq_sql::push_task_listing(&mut sql, &query);
        let rows = sql
            .build()
            .fetch_all(&self.backend.reader)
            .await
            .map_err(store_error)?;
        rows.iter().map(record_from_row).collect()
    }

    /// Every queue holding tasks, sorted.
    pub(super) async fn names_of_queues(&self) -> StoreResult<Vec<String>> {
        sqlx::query_scalar("SELECT DISTINCT queue FROM omniq_tasks ORDER BY queue")
            .fetch_all(&self.backend.pool)
            .await
            .map_err(store_error)
    }

    pub(super) async fn queue_stats(&self, queue: String) -> StoreResult<QueueStats> {
        let rows = sqlx::query(
            "SELECT state, COUNT(*) AS n, MIN(CASE WHEN state = 'queued' THEN created_at END) \
             AS oldest FROM omniq_tasks WHERE queue = ? GROUP BY state",
        )
        .bind(&queue)
        .fetch_all(&self.backend.reader)
        .await
        .map_err(store_error)?;
        omniq_sql::queue_stats_from_rows::<Lite>(queue, &rows)
    }

    pub(super) async fn cancel_task(
        &self,
        id: TaskId,
        reason: String,
    ) -> StoreResult<Cancellation> {
        let now = self.backend.clock.now();
        let mut tx = self
            .backend
            .pool
            .begin_with(BEGIN_WRITE)
            .await
            .map_err(store_error)?;
        let state: Option<String> =
            sqlx::query_scalar("SELECT state FROM omniq_tasks WHERE id = ?")
                .bind(id.to_string())
                .fetch_optional(&mut *tx)
                .await
                .map_err(store_error)?;
        let state = parse_state(&state.ok_or(StoreError::TaskNotFound(id))?)?;
        let mut changes = Vec::new();
        let outcome = match state {
            TaskState::Queued | TaskState::Scheduled | TaskState::Blocked => {
                sqlx::query(
                    "UPDATE omniq_tasks SET state = 'cancelled', finished_at = ?1, \
                     updated_at = ?1, reason = ?2 WHERE id = ?3",
                )
                .bind(to_micros(now))
                .bind(&reason)
                .bind(id.to_string())
                .execute(&mut *tx)
                .await
                .map_err(store_error)?;
                settle_dependents(&mut tx, vec![id], now, &mut changes).await?;
                CancelOutcome::Cancelled
            }
            TaskState::Running => {
                // The worker learns it at its next heartbeat and stops the task.
                sqlx::query(
                    "UPDATE omniq_tasks SET cancel_requested = 1, reason = ?1, updated_at = ?2 \
                     WHERE id = ?3",
                )
                .bind(&reason)
                .bind(to_micros(now))
                .bind(id.to_string())
                .execute(&mut *tx)
                .await
                .map_err(store_error)?;
                CancelOutcome::Requested
            }
            finished => CancelOutcome::AlreadyFinished(finished),
        };
        tx.commit().await.map_err(store_error)?;
        if !changes.is_empty() {
            self.wake();
        }
        Ok(Cancellation::new(outcome, changes))
    }
}
