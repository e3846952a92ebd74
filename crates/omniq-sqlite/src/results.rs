use std::time::Duration;

use chrono::Utc;
use omniq_models::{TaskId, TaskResult};
use omniq_storage::{StoreResult, effective_purge_limit, winning_results};
use sqlx::{QueryBuilder, Sqlite};

use crate::SqliteBackend;
use crate::error::{corrupt, store_error};
use crate::rows::ROWS_PER_INSERT;
use crate::rows::to_json;
use crate::time::to_micros;

/// The result store of a [`SqliteBackend`]. Waiters in the same process wake as soon as a
/// result is stored; others poll.
#[derive(Debug, Clone)]
pub struct SqliteResultStore {
    backend: SqliteBackend,
}

impl SqliteResultStore {
    pub(crate) fn new(backend: SqliteBackend) -> Self {
        Self { backend }
    }

    async fn put_all(&self, results: Vec<TaskResult>) -> StoreResult<()> {
        if results.is_empty() {
            return Ok(());
        }
        let results = winning_results(results);
        let mut tx = self.backend.pool.begin().await.map_err(store_error)?;
        for chunk in results.chunks(ROWS_PER_INSERT) {
            let mut sql = QueryBuilder::<Sqlite>::new(
                "INSERT INTO omniq_results (task_id, body, expires_at) ",
            );
            let mut rows = Vec::with_capacity(chunk.len());
            for result in chunk {
                rows.push((result, to_json(result)?));
            }
            sql.push_values(rows, |mut row, (result, body)| {
                row.push_bind(result.task_id.to_string())
                    .push_bind(body)
                    .push_bind(result.expires_at.map(to_micros));
            });
            // The attempt fence (`result_supersedes`), on the stored body's fields.
            sql.push(
                " ON CONFLICT (task_id) DO UPDATE SET body = excluded.body, \
                 expires_at = excluded.expires_at \
                 WHERE json_extract(excluded.body, '$.attempts') \
                   > json_extract(omniq_results.body, '$.attempts') \
                 OR (json_extract(excluded.body, '$.attempts') \
                   = json_extract(omniq_results.body, '$.attempts') \
                   AND (json_type(excluded.body, '$.outcome.Ok') IS NOT NULL \
                     OR json_type(omniq_results.body, '$.outcome.Err') IS NOT NULL))",
            );
            sql.build().execute(&mut *tx).await.map_err(store_error)?;
        }
        tx.commit().await.map_err(store_error)?;
        self.backend
            .result_version
            .send_modify(|v| *v = v.wrapping_add(1));
        Ok(())
    }

    async fn read(&self, id: TaskId) -> StoreResult<Option<TaskResult>> {
        let body: Option<String> = sqlx::query_scalar(
            "SELECT body FROM omniq_results WHERE task_id = ? \
             AND (expires_at IS NULL OR expires_at > ?)",
        )
        .bind(id.to_string())
        .bind(to_micros(Utc::now()))
        .fetch_optional(&self.backend.reader)
        .await
        .map_err(store_error)?;
        body.map(|b| serde_json::from_str(&b).map_err(|e| corrupt("result", e)))
            .transpose()
    }
}

omniq_sql::forward_result_store!(SqliteResultStore, wait_for);

impl SqliteResultStore {
    async fn remove(&self, id: TaskId) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM omniq_results WHERE task_id = ?")
            .bind(id.to_string())
            .execute(&self.backend.pool)
            .await
            .map_err(store_error)?;
        Ok(done.rows_affected() > 0)
    }

    async fn purge_due(&self, limit: usize) -> StoreResult<u64> {
        // Bounded through the expiry index, so one call holds the writer briefly.
        let done = sqlx::query(
            "DELETE FROM omniq_results WHERE task_id IN (SELECT task_id FROM omniq_results \
             WHERE expires_at <= ?1 ORDER BY expires_at LIMIT ?2)",
        )
        .bind(to_micros(Utc::now()))
        .bind(i64::try_from(effective_purge_limit(limit)).unwrap_or(i64::MAX))
        .execute(&self.backend.pool)
        .await
        .map_err(store_error)?;
        Ok(done.rows_affected())
    }

    async fn wait_for_result(
        &self,
        id: TaskId,
        timeout: Duration,
    ) -> StoreResult<Option<TaskResult>> {
        // Subscribe before looking, so a result stored in between is not missed.
        let mut changes = self.backend.result_version.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        // Results written by other processes raise no signal here: poll for them too.
        let poll = Duration::from_millis(100);
        loop {
            if let Some(result) = self.read(id).await? {
                return Ok(Some(result));
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let _ = tokio::time::timeout(poll.min(deadline - now), changes.changed()).await;
        }
    }
}
