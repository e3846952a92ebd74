//! Progress: stored on the running task, renewing its lease.

use std::time::Duration;

use omniq_storage::{LeaseRef, LeaseStatus, StoreResult, progress_text};
use sqlx::AssertSqlSafe;

use super::PgTaskQueue;
use crate::error::store_error;
use crate::rows::to_json;

impl PgTaskQueue {
    /// Renews the lease first (what keeps the attempt alive), then stores the value under
    /// the same fence: a lease lost in between stores nothing.
    pub(super) async fn progress(
        &self,
        lease: LeaseRef,
        progress: serde_json::Value,
        extend: Duration,
    ) -> StoreResult<LeaseStatus> {
        progress_text(&progress)?;
        let status = self
            .renew(vec![lease], extend)
            .await?
            .pop()
            .unwrap_or(LeaseStatus::Lost);
        if status == LeaseStatus::Lost {
            return Ok(status);
        }
        sqlx::query(AssertSqlSafe(format!(
            "UPDATE {tasks} SET progress = $1 \
             WHERE id = $2 AND lease_token = $3 AND state = 'running'",
            tasks = self.backend.names().tasks
        )))
        .bind(to_json(&progress)?)
        .bind(lease.task_id.as_uuid())
        .bind(lease.token.as_uuid())
        .execute(self.backend.pool())
        .await
        .map_err(store_error)?;
        Ok(status)
    }
}
