//! Progress: stored on the running task, renewing its lease, in one statement.

use std::time::Duration;

use chrono::Utc;
use omniq_storage::{LeaseRef, LeaseStatus, StoreResult, progress_text};

use super::SqliteTaskQueue;
use crate::error::store_error;
use crate::time::{deadline, to_micros};

impl SqliteTaskQueue {
    /// Fenced by the lease like a heartbeat: a lease no longer held changes nothing.
    pub(super) async fn progress(
        &self,
        lease: LeaseRef,
        progress: serde_json::Value,
        extend: Duration,
    ) -> StoreResult<LeaseStatus> {
        let text = progress_text(&progress)?;
        let now = self.backend.clock.now();
        let cancel_requested: Option<bool> = sqlx::query_scalar(
            "UPDATE omniq_tasks SET progress = ?, lease_expires_at = ?, updated_at = ? \
             WHERE id = ? AND lease_token = ? AND state = 'running' \
             RETURNING cancel_requested",
        )
        .bind(text)
        .bind(to_micros(deadline(Utc::now(), extend)))
        .bind(to_micros(now))
        .bind(lease.task_id.to_string())
        .bind(lease.token.to_string())
        .fetch_optional(&self.backend.pool)
        .await
        .map_err(store_error)?;
        Ok(match cancel_requested {
            None => LeaseStatus::Lost,
            Some(true) => LeaseStatus::CancelRequested,
            Some(false) => LeaseStatus::Held,
        })
    }
}
