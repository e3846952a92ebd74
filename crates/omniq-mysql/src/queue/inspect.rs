//! Reading tasks back, and cancelling them.

use chrono::Utc;
use omniq_models::{TaskId, TaskRecord, TaskState};
use omniq_storage::{CancelOutcome, Cancellation, QueueStats, StoreError, StoreResult, TaskQuery};
use sqlx::{MySql, QueryBuilder};

use super::MySqlTaskQueue;
use super::settle::{ready_in, settle_dependents};
use crate::error::{retry_deadlocks, store_error};
use crate::rows::{My, TASK_COLUMNS, parse_state, record_from_row};
use crate::time::to_micros;
use crate::tx::Tx;

impl MySqlTaskQueue {
    pub(super) async fn fetch(&self, id: TaskId) -> StoreResult<Option<TaskRecord>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {TASK_COLUMNS} FROM omniq_tasks AS t WHERE t.id = ?"
        )))
        .bind(*id.as_uuid())
        .fetch_optional(self.backend.pool())
        .await
        .map_err(store_error)?;
        row.as_ref().map(record_from_row).transpose()
    }

    pub(super) async fn list_tasks(&self, query: TaskQuery) -> StoreResult<Vec<TaskRecord>> {
        let mut sql = QueryBuilder::<MySql>::new(format!(
            "SELECT {TASK_COLUMNS} FROM omniq_tasks AS t WHERE TRUE"
        ));
        omniq_sql::push_task_listing(&mut sql, &query);
        let rows = sql
            .build()
            .fetch_all(self.backend.pool())
            .await
            .map_err(store_error)?;
        rows.iter().map(record_from_row).collect()
    }

    /// Every queue holding tasks, sorted.
    pub(super) async fn names_of_queues(&self) -> StoreResult<Vec<String>> {
        sqlx::query_scalar("SELECT DISTINCT queue FROM omniq_tasks ORDER BY queue")
            .fetch_all(self.backend.pool())
            .await
            .map_err(store_error)
    }

    pub(super) async fn queue_stats(&self, queue: String) -> StoreResult<QueueStats> {
        let rows = sqlx::query(
            "SELECT state, COUNT(*) AS n, \
             MIN(CASE WHEN state = 'queued' THEN created_at END) AS oldest \
             FROM omniq_tasks WHERE queue = ? GROUP BY state",
        )
        .bind(&queue)
        .fetch_all(self.backend.pool())
        .await
        .map_err(store_error)?;
        omniq_sql::queue_stats_from_rows::<My>(queue, &rows)
    }

    pub(super) async fn cancel_task(
        &self,
        id: TaskId,
        reason: String,
    ) -> StoreResult<Cancellation> {
        let cancellation = retry_deadlocks(|| self.cancel_once(id, &reason)).await?;
        self.wake_if(ready_in(&cancellation.changes));
        Ok(cancellation)
    }

    async fn cancel_once(&self, id: TaskId, reason: &str) -> StoreResult<Cancellation> {
        let now = Utc::now();
        let mut tx = Tx::begin(self.backend.pool()).await?;
        let state: Option<String> =
            sqlx::query_scalar("SELECT state FROM omniq_tasks WHERE id = ? FOR UPDATE")
                .bind(*id.as_uuid())
                .fetch_optional(&mut *tx)
                .await
                .map_err(store_error)?;
        let state = parse_state(&state.ok_or(StoreError::TaskNotFound(id))?)?;
        let mut changes = Vec::new();
        let outcome = match state {
            TaskState::Queued | TaskState::Scheduled | TaskState::Blocked => {
                sqlx::query(
                    "UPDATE omniq_tasks SET state = 'cancelled', finished_at = ?, \
                     updated_at = ?, reason = ? WHERE id = ?",
                )
                .bind(to_micros(now))
                .bind(to_micros(now))
                .bind(reason)
                .bind(*id.as_uuid())
                .execute(&mut *tx)
                .await
                .map_err(store_error)?;
                settle_dependents(&mut tx, vec![*id.as_uuid()], now, &mut changes).await?;
                CancelOutcome::Cancelled
            }
            TaskState::Running => {
                // The worker learns it at its next heartbeat and stops the task.
                sqlx::query(
                    "UPDATE omniq_tasks SET cancel_requested = TRUE, reason = ?, \
                     updated_at = ? WHERE id = ?",
                )
                .bind(reason)
                .bind(to_micros(now))
                .bind(*id.as_uuid())
                .execute(&mut *tx)
                .await
                .map_err(store_error)?;
                CancelOutcome::Requested
            }
            finished => CancelOutcome::AlreadyFinished(finished),
        };
        tx.commit().await?;
        Ok(Cancellation::new(outcome, changes))
    }
}
