//! Paused queues: a row each.

use omniq_storage::{StoreResult, validate_queue_name};
use sqlx::AssertSqlSafe;

use super::PgTaskQueue;
use crate::error::store_error;

impl PgTaskQueue {
    pub(super) async fn set_paused(&self, queue: String, paused: bool) -> StoreResult<bool> {
        validate_queue_name(&queue)?;
        let table = &self.backend.names().paused_queues;
        let sql = if paused {
            format!("INSERT INTO {table} (queue) VALUES ($1) ON CONFLICT (queue) DO NOTHING")
        } else {
            format!("DELETE FROM {table} WHERE queue = $1")
        };
        let done = sqlx::query(AssertSqlSafe(sql))
            .bind(&queue)
            .execute(self.backend.pool())
            .await
            .map_err(store_error)?;
        Ok(done.rows_affected() > 0)
    }

    pub(super) async fn paused_queue_names(&self) -> StoreResult<Vec<String>> {
        let mut names: Vec<String> = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT queue FROM {table}",
            table = self.backend.names().paused_queues
        )))
        .fetch_all(self.backend.pool())
        .await
        .map_err(store_error)?;
        // In byte order, whatever the database's collation.
        names.sort_unstable();
        Ok(names)
    }
}
