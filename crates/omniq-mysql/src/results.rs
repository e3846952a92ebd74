use chrono::Utc;
use omniq_models::{TaskId, TaskResult};
use omniq_storage::{StoreResult, effective_purge_limit, winning_results};
use sqlx::{MySql, QueryBuilder};

use sqlx::AssertSqlSafe;

use crate::MySqlBackend;
use crate::error::store_error;
use crate::rows::{My, to_json};
use crate::time::to_micros;
use omniq_sql::{RESULT_COLUMNS, result_from_row};

/// Rows per INSERT statement.
const ROWS_PER_INSERT: usize = 500;

/// The result store of a [`MySqlBackend`]. Waiters poll (1 ms, growing to 100 ms).
#[derive(Debug, Clone)]
pub struct MySqlResultStore {
    backend: MySqlBackend,
}

impl MySqlResultStore {
    pub(crate) fn new(backend: MySqlBackend) -> Self {
        Self { backend }
    }

    async fn put_all(&self, results: Vec<TaskResult>) -> StoreResult<()> {
        if results.is_empty() {
            return Ok(());
        }
        let results = winning_results(results);
        let mut rows = Vec::with_capacity(results.len());
        for result in results {
            let (output, error) = match &result.outcome {
                Ok(output) => (Some(output.clone()), None),
                Err(error) => (None, Some(to_json(error)?)),
            };
            rows.push((result, output, error));
        }
        let row_bytes =
            |(result, output, error): &(TaskResult, Option<Vec<u8>>, Option<String>)| {
                result.task_name.len()
                    + output.as_ref().map_or(0, Vec::len)
                    + error.as_ref().map_or(0, String::len)
            };
        for chunk in self.backend.statements(&rows, ROWS_PER_INSERT, row_bytes)? {
            let mut insert = QueryBuilder::<MySql>::new(
                "INSERT INTO omniq_results (task_id, task_name, output, error, attempts, \
                 finished_at, expires_at) ",
            );
            insert.push_values(chunk, |mut row, (result, output, error)| {
                row.push_bind(*result.task_id.as_uuid())
                    .push_bind(result.task_name.clone())
                    .push_bind(output.clone())
                    .push_bind(error.clone())
                    .push_bind(i64::from(result.attempts))
                    .push_bind(to_micros(result.finished_at))
                    .push_bind(result.expires_at.map(to_micros));
            });
            // The attempt fence (`result_supersedes`). Assignments run left to right and
            // see the columns already assigned, so `error` and `attempts`, which the test
            // reads, come last: when `error` was replaced, the test on `attempts` still
            // holds (equal attempts, or more).
            let supersedes = "(VALUES(attempts) > attempts OR (VALUES(attempts) = attempts \
                 AND (VALUES(error) IS NULL OR error IS NOT NULL)))";
            insert.push(format!(
                " ON DUPLICATE KEY UPDATE \
                 task_name = IF({supersedes}, VALUES(task_name), task_name), \
                 output = IF({supersedes}, VALUES(output), output), \
                 finished_at = IF({supersedes}, VALUES(finished_at), finished_at), \
                 expires_at = IF({supersedes}, VALUES(expires_at), expires_at), \
                 error = IF({supersedes}, VALUES(error), error), \
                 attempts = IF({supersedes}, VALUES(attempts), attempts)"
            ));
            insert
                .build()
                .execute(self.backend.pool())
                .await
                .map_err(store_error)?;
        }
        Ok(())
    }

    async fn read(&self, id: TaskId) -> StoreResult<Option<TaskResult>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {RESULT_COLUMNS} FROM omniq_results \
             WHERE task_id = ? AND (expires_at IS NULL OR expires_at > ?)"
        )))
        .bind(*id.as_uuid())
        .bind(to_micros(Utc::now()))
        .fetch_optional(self.backend.pool())
        .await
        .map_err(store_error)?;
        row.as_ref().map(result_from_row::<My>).transpose()
    }
}

omniq_sql::forward_result_store!(MySqlResultStore);

impl MySqlResultStore {
    async fn remove(&self, id: TaskId) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM omniq_results WHERE task_id = ?")
            .bind(*id.as_uuid())
            .execute(self.backend.pool())
            .await
            .map_err(store_error)?;
        Ok(done.rows_affected() > 0)
    }

    async fn purge_due(&self, limit: usize) -> StoreResult<u64> {
        // Bounded through the expiry index, so one call locks a short range only.
        let done = sqlx::query(
            "DELETE FROM omniq_results WHERE expires_at <= ? ORDER BY expires_at LIMIT ?",
        )
        .bind(to_micros(Utc::now()))
        .bind(i64::try_from(effective_purge_limit(limit)).unwrap_or(i64::MAX))
        .execute(self.backend.pool())
        .await
        .map_err(store_error)?;
        Ok(done.rows_affected())
    }
}
