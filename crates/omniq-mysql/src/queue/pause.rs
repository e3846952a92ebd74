//! Paused queues: a row each.

use omniq_storage::{StoreResult, validate_queue_name};

use super::MySqlTaskQueue;
use crate::error::store_error;

impl MySqlTaskQueue {
    pub(super) async fn set_paused(&self, queue: String, paused: bool) -> StoreResult<bool> {
        validate_queue_name(&queue)?;
        let sql = if paused {
            "INSERT IGNORE INTO omniq_paused_queues (queue) VALUES (?)"
        } else {
            "DELETE FROM omniq_paused_queues WHERE queue = ?"
        };
        let done = sqlx::query(sql)
            .bind(&queue)
            .execute(self.backend.pool())
            .await
            .map_err(store_error)?;
        Ok(done.rows_affected() > 0)
    }

    pub(super) async fn paused_queue_names(&self) -> StoreResult<Vec<String>> {
        let mut names: Vec<String> = sqlx::query_scalar("SELECT queue FROM omniq_paused_queues")
            .fetch_all(self.backend.pool())
            .await
            .map_err(store_error)?;
        // In byte order, whatever the database's collation.
        names.sort_unstable();
        Ok(names)
    }
}
