//! Reading tasks back, and cancelling them.

use chrono::Utc;
use omniq_models::{TaskId, TaskRecord, TaskState};
use omniq_storage::{CancelOutcome, Cancellation, QueueStats, StoreError, StoreResult, TaskQuery};
use sqlx::{AssertSqlSafe, Postgres, QueryBuilder};

use super::PgTaskQueue;
use super::notify::{ReadyQueues, notify, ready_from};
use super::settle::settle_dependents;
use crate::error::store_error;
use crate::rows::{Pg, TASK_COLUMNS, parse_state, pg_text, record_from_row};

impl PgTaskQueue {
    pub(super) async fn fetch(&self, id: TaskId) -> StoreResult<Option<TaskRecord>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {TASK_COLUMNS} FROM {tasks} AS t WHERE t.id = $1",
            tasks = self.backend.names().tasks
        )))
        .bind(id.as_uuid())
        .fetch_optional(self.backend.pool())
        .await
        .map_err(store_error)?;
        row.as_ref().map(record_from_row).transpose()
    }

    pub(super) async fn list_tasks(&self, query: TaskQuery) -> StoreResult<Vec<TaskRecord>> {
        let mut sql = QueryBuilder::<Postgres>::new(format!(
            "SELECT {TASK_COLUMNS} FROM {tasks} AS t WHERE TRUE",
            tasks = self.backend.names().tasks
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
        sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT DISTINCT queue FROM {tasks} ORDER BY queue",
            tasks = self.backend.names().tasks
        )))
        .fetch_all(self.backend.pool())
        .await
        .map_err(store_error)
    }

    pub(super) async fn queue_stats(&self, queue: String) -> StoreResult<QueueStats> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT state, COUNT(*) AS n, MIN(created_at) FILTER (WHERE state = 'queued') \
             AS oldest FROM {tasks} WHERE queue = $1 GROUP BY state",
            tasks = self.backend.names().tasks
        )))
        .bind(&queue)
        .fetch_all(self.backend.pool())
        .await
        .map_err(store_error)?;
        omniq_sql::queue_stats_from_rows::<Pg>(queue, &rows)
    }

    pub(super) async fn cancel_task(
        &self,
        id: TaskId,
        reason: String,
    ) -> StoreResult<Cancellation> {
        let now = Utc::now();
        let names = self.backend.names();
        let mut tx = self.backend.pool().begin().await.map_err(store_error)?;
        let state: Option<String> = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT state FROM {tasks} WHERE id = $1 FOR UPDATE",
            tasks = names.tasks
        )))
        .bind(id.as_uuid())
        .fetch_optional(&mut *tx)
        .await
        .map_err(store_error)?;
        let state = parse_state(&state.ok_or(StoreError::TaskNotFound(id))?)?;
        let mut changes = Vec::new();
        let outcome = match state {
            TaskState::Queued | TaskState::Scheduled | TaskState::Blocked => {
                sqlx::query(AssertSqlSafe(format!(
                    "UPDATE {tasks} SET state = 'cancelled', finished_at = $1, updated_at = $1, \
                     reason = $2 WHERE id = $3",
                    tasks = names.tasks
                )))
                .bind(now)
                .bind(pg_text(&reason))
                .bind(id.as_uuid())
                .execute(&mut *tx)
                .await
                .map_err(store_error)?;
                settle_dependents(&mut tx, names, vec![*id.as_uuid()], now, &mut changes).await?;
                CancelOutcome::Cancelled
            }
            TaskState::Running => {
                // The worker learns it at its next heartbeat and stops the task.
                sqlx::query(AssertSqlSafe(format!(
                    "UPDATE {tasks} SET cancel_requested = TRUE, reason = $1, updated_at = $2 \
                     WHERE id = $3",
                    tasks = names.tasks
                )))
                .bind(pg_text(&reason))
                .bind(now)
                .bind(id.as_uuid())
                .execute(&mut *tx)
                .await
                .map_err(store_error)?;
                CancelOutcome::Requested
            }
            finished => CancelOutcome::AlreadyFinished(finished),
        };
        let mut ready = ReadyQueues::new();
        ready_from(&changes, &mut ready);
        notify(&mut tx, &names.task_channel, &ready).await?;
        tx.commit().await.map_err(store_error)?;
        self.backend.wake_queues(&ready);
        Ok(Cancellation::new(outcome, changes))
    }
}
