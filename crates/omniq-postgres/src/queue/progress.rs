//! Progress: stored on the running task, renewing its lease, in one statement.

use std::time::Duration;

use omniq_storage::{LeaseRef, LeaseStatus, StoreResult, lease_micros, progress_text};
use sqlx::AssertSqlSafe;

use super::PgTaskQueue;
use crate::error::store_error;
use crate::rows::to_json;

impl PgTaskQueue {
    /// Fenced by the lease like a heartbeat: a lease no longer held changes nothing.
    pub(super) async fn progress(
        &self,
        lease: LeaseRef,
        progress: serde_json::Value,
        extend: Duration,
    ) -> StoreResult<LeaseStatus> {
        progress_text(&progress)?;
        let now = self.backend.clock().now();
        let cancel_requested: Option<bool> = sqlx::query_scalar(AssertSqlSafe(format!(
            "UPDATE {tasks} SET progress = $1, \
             lease_expires_at = now() + $2::int8 * INTERVAL '1 microsecond', updated_at = $3 \
             WHERE id = $4 AND lease_token = $5 AND state = 'running' \
             RETURNING cancel_requested",
            tasks = self.backend.names().tasks
        )))
        .bind(to_json(&progress)?)
        .bind(lease_micros(extend))
        .bind(now)
        .bind(lease.task_id.as_uuid())
        .bind(lease.token.as_uuid())
        .fetch_optional(self.backend.pool())
        .await
        .map_err(store_error)?;
        Ok(lease_status(cancel_requested))
    }
}

/// What a fenced update of one lease found: no row (not held), or the cancel flag.
fn lease_status(cancel_requested: Option<bool>) -> LeaseStatus {
    match cancel_requested {
        None => LeaseStatus::Lost,
        Some(true) => LeaseStatus::CancelRequested,
        Some(false) => LeaseStatus::Held,
    }
}
