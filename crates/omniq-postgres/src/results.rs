use std::time::Duration;

use chrono::Utc;
use omniq_models::{TaskId, TaskResult};
use omniq_storage::{StoreResult, effective_purge_limit, winning_results};
use sqlx::AssertSqlSafe;

use crate::PgBackend;
use crate::error::store_error;
use crate::rows::{Pg, to_json};
use crate::wakeup::result_payload;
use omniq_sql::{RESULT_COLUMNS, result_from_row};

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
            "SELECT {RESULT_COLUMNS} FROM {results} WHERE task_id = $1 AND (expires_at IS NULL OR expires_at > $2)",
            results = self.backend.names().results
        )))
        .bind(id.as_uuid())
        .bind(Utc::now())
        .fetch_optional(self.backend.pool())
        .await
        .map_err(store_error)?;
        row.as_ref().map(result_from_row::<Pg>).transpose()
    }
}

omniq_sql::forward_result_store!(PgResultStore, wait_for);

impl PgResultStore {
    async fn remove(&self, id: TaskId) -> StoreResult<bool> {
        let done = sqlx::query(AssertSqlSafe(format!(
            "DELETE FROM {results} WHERE task_id = $1",
            results = self.backend.names().results
        )))
        .bind(id.as_uuid())
        .execute(self.backend.pool())
        .await
        .map_err(store_error)?;
        Ok(done.rows_affected() > 0)
    }

    async fn purge_due(&self, limit: usize) -> StoreResult<u64> {
        // Bounded through the expiry index; rows another purge holds are skipped.
        let done = sqlx::query(AssertSqlSafe(format!(
            "DELETE FROM {results} WHERE task_id = ANY(ARRAY(SELECT task_id FROM {results} \
             WHERE expires_at <= $1 ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED))",
            results = self.backend.names().results
        )))
        .bind(Utc::now())
        .bind(i64::try_from(effective_purge_limit(limit)).unwrap_or(i64::MAX))
        .execute(self.backend.pool())
        .await
        .map_err(store_error)?;
        Ok(done.rows_affected())
    }

    async fn wait_for_result(
        &self,
        id: TaskId,
        timeout: Duration,
    ) -> StoreResult<Option<TaskResult>> {
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
    }
}
