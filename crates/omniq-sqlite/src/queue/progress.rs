//! Progress: stored on the running task, renewing its lease.

use std::time::Duration;

use omniq_storage::{LeaseRef, LeaseStatus, StoreResult, progress_text};

use super::SqliteTaskQueue;
use crate::error::store_error;

impl SqliteTaskQueue {
    /// Renews the lease first (what keeps the attempt alive), then stores the value under
    /// the same fence: a lease lost in between stores nothing.
    pub(super) async fn progress(
        &self,
        lease: LeaseRef,
        progress: serde_json::Value,
        extend: Duration,
    ) -> StoreResult<LeaseStatus> {
        let text = progress_text(&progress)?;
        let status = self
            .renew(vec![lease], extend)
            .await?
            .pop()
            .unwrap_or(LeaseStatus::Lost);
        if status == LeaseStatus::Lost {
            return Ok(status);
        }
        sqlx::query(
            "UPDATE omniq_tasks SET progress = ? \
             WHERE id = ? AND lease_token = ? AND state = 'running'",
        )
        .bind(text)
        .bind(lease.task_id.to_string())
        .bind(lease.token.to_string())
        .execute(&self.backend.pool)
        .await
        .map_err(store_error)?;
        Ok(status)
    }
}
