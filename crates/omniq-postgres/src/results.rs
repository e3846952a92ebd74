use std::time::Duration;

use chrono::{DateTime, Utc};
use omniq_models::{TaskError, TaskId, TaskResult};
use omniq_storage::{BoxFuture, ResultStore, StoreResult, effective_purge_limit, winning_results};
use sqlx::AssertSqlSafe;
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use uuid::Uuid;

use crate::PgBackend;
use crate::error::store_error;
use crate::rows::{column, to_json, to_u32};
use crate::wakeup::result_payload;

/// The result store of a [`PgBackend`]. A write notifies the waiters of its results, in
/// this process and others (LISTEN/NOTIFY); waiters also poll, in case the listener is
/// down.
#[derive(Debug, Clone)]
pub struct PgResultStore {
    backend: PgBackend,
}

/// The longest pause between two looks of a waiter that hears nothing.
const POLL: Duration = Duration::from_millis(100);

impl PgResultStore {
    pub(crate) fn new(backend: PgBackend) -> Self {
        Self { backend }
    }

    async fn put_all(&self, results: Vec<TaskResult>) -> StoreResult<()> {
        if results.is_empty() {
            return Ok(());
        }
        // One row per task: an upsert may not touch a row twice in one statement.
        let results = winning_results(results);
        let mut outputs = Vec::with_capacity(results.len());
        let mut errors = Vec::with_capacity(results.len());
        for result in &results {
            match &result.outcome {
                Ok(output) => {
                    outputs.push(Some(output.as_slice()));
                    errors.push(None);
                }
                Err(error) => {
                    outputs.push(None);
                    errors.push(Some(to_json(error)?));
                }
            }
        }
        let ids: Vec<String> = results.iter().map(|r| r.task_id.to_string()).collect();
        let names = self.backend.names();
        // The NOTIFY rides in the same statement: it is delivered when the rows commit.
        let sql = format!(
            "WITH put AS (INSERT INTO {results} (task_id, task_name, output, error, attempts, \
               finished_at, expires_at) \
             SELECT r.task_id, r.task_name, r.output, r.error::jsonb, r.attempts, \
               r.finished_at, r.expires_at \
             FROM UNNEST($1::uuid[], $2::text[], $3::bytea[], $4::text[], $5::int8[], \
               $6::timestamptz[], $7::timestamptz[]) \
               AS r(task_id, task_name, output, error, attempts, finished_at, expires_at) \
             ON CONFLICT (task_id) DO UPDATE SET task_name = excluded.task_name, \
               output = excluded.output, error = excluded.error, \
               attempts = excluded.attempts, finished_at = excluded.finished_at, \
               expires_at = excluded.expires_at \
             WHERE excluded.attempts > {results}.attempts \
               OR (excluded.attempts = {results}.attempts \
                 AND (excluded.error IS NULL OR {results}.error IS NOT NULL)) \
             RETURNING 1) \
             SELECT pg_notify($8, $9) FROM (SELECT COUNT(*) FROM put) AS done",
            results = names.results
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(
                results
                    .iter()
                    .map(|r| *r.task_id.as_uuid())
                    .collect::<Vec<_>>(),
            )
            .bind(
                results
                    .iter()
                    .map(|r| r.task_name.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(outputs)
            .bind(errors)
            .bind(
                results
                    .iter()
                    .map(|r| i64::from(r.attempts))
                    .collect::<Vec<_>>(),
            )
            .bind(results.iter().map(|r| r.finished_at).collect::<Vec<_>>())
            .bind(results.iter().map(|r| r.expires_at).collect::<Vec<_>>())
            .bind(&names.result_channel)
            .bind(result_payload(&ids))
            .execute(self.backend.pool())
            .await
            .map_err(store_error)?;
        for id in &ids {
            self.backend.shared.listener.results.wake(id);
        }
        Ok(())
    }

    async fn read(&self, id: TaskId) -> StoreResult<Option<TaskResult>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT task_id, task_name, output, error, attempts, finished_at, expires_at \
             FROM {results} WHERE task_id = $1 AND (expires_at IS NULL OR expires_at > $2)",
            results = self.backend.names().results
        )))
        .bind(id.as_uuid())
        .bind(Utc::now())
        .fetch_optional(self.backend.pool())
        .await
        .map_err(store_error)?;
        row.as_ref().map(result_from_row).transpose()
    }
}

fn result_from_row(row: &PgRow) -> StoreResult<TaskResult> {
    let output: Option<Vec<u8>> = column(row, "output")?;
    let error: Option<Json<TaskError>> = column(row, "error")?;
    let outcome = match (output, error) {
        (_, Some(Json(error))) => Err(error),
        (output, None) => Ok(output.unwrap_or_default()),
    };
    Ok(TaskResult {
        task_id: TaskId::from_uuid(column::<Uuid>(row, "task_id")?),
        task_name: column(row, "task_name")?,
        outcome,
        attempts: to_u32(column(row, "attempts")?),
        finished_at: column::<DateTime<Utc>>(row, "finished_at")?,
        expires_at: column(row, "expires_at")?,
    })
}

impl ResultStore for PgResultStore {
    fn put(&self, results: Vec<TaskResult>) -> BoxFuture<'_, StoreResult<()>> {
        Box::pin(self.put_all(results))
    }

    fn get(&self, id: TaskId) -> BoxFuture<'_, StoreResult<Option<TaskResult>>> {
        Box::pin(self.read(id))
    }

    fn delete(&self, id: TaskId) -> BoxFuture<'_, StoreResult<bool>> {
        Box::pin(async move {
            let done = sqlx::query(AssertSqlSafe(format!(
                "DELETE FROM {results} WHERE task_id = $1",
                results = self.backend.names().results
            )))
            .bind(id.as_uuid())
            .execute(self.backend.pool())
            .await
            .map_err(store_error)?;
            Ok(done.rows_affected() > 0)
        })
    }

    fn purge_expired(&self, limit: usize) -> BoxFuture<'_, StoreResult<u64>> {
        Box::pin(async move {
            // Bounded through the expiry index; rows another purge holds are skipped.
            let done = sqlx::query(AssertSqlSafe(format!(
                "DELETE FROM {results} WHERE task_id IN (SELECT task_id FROM {results} \
                 WHERE expires_at <= $1 ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED)",
                results = self.backend.names().results
            )))
            .bind(Utc::now())
            .bind(i64::try_from(effective_purge_limit(limit)).unwrap_or(i64::MAX))
            .execute(self.backend.pool())
            .await
            .map_err(store_error)?;
            Ok(done.rows_affected())
        })
    }

    fn wait_for(
        &self,
        id: TaskId,
        timeout: Duration,
    ) -> BoxFuture<'_, StoreResult<Option<TaskResult>>> {
        Box::pin(async move {
            let key = [id.to_string()];
            let listener = &self.backend.shared.listener;
            let deadline = tokio::time::Instant::now() + timeout;
            let mut pause = Duration::from_millis(5);
            loop {
                // Subscribe before looking, so a result stored in between is not missed.
                let subscription = listener.results.subscribe(&key);
                if let Some(result) = self.read(id).await? {
                    return Ok(Some(result));
                }
                let now = tokio::time::Instant::now();
                if now >= deadline {
                    return Ok(None);
                }
                listener.ensure_started();
                subscription.wait(pause.min(deadline - now)).await;
                pause = (pause * 2).min(POLL);
            }
        })
    }
}
