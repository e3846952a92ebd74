//! Progress: stored on the running task, renewing its lease, in one transaction.

use std::time::Duration;

use omniq_storage::{LeaseRef, LeaseStatus, StoreResult, lease_micros, progress_text};
use uuid::Uuid;

use super::MySqlTaskQueue;
use crate::error::{retry_deadlocks, store_error};
use crate::time::{SERVER_NOW_MICROS, to_micros};
use crate::tx::Tx;

impl MySqlTaskQueue {
    /// Fenced by the lease like a heartbeat: a lease no longer held changes nothing. The
    /// row is read under its lock first: MySQL counts changed rows, not matched ones, so
    /// an update's count cannot say whether the lease is held.
    pub(super) async fn progress(
        &self,
        lease: LeaseRef,
        progress: serde_json::Value,
        extend: Duration,
    ) -> StoreResult<LeaseStatus> {
        let text = progress_text(&progress)?;
        retry_deadlocks(|| self.progress_once(lease, &text, extend)).await
    }

    async fn progress_once(
        &self,
        lease: LeaseRef,
        text: &str,
        extend: Duration,
    ) -> StoreResult<LeaseStatus> {
        let now = self.backend.clock().now();
        let mut tx = Tx::begin(self.backend.pool()).await?;
        let held: Option<(Option<Uuid>, String, bool)> = sqlx::query_as(
            "SELECT lease_token, state, cancel_requested FROM omniq_tasks WHERE id = ? FOR UPDATE",
        )
        .bind(*lease.task_id.as_uuid())
        .fetch_optional(&mut *tx)
        .await
        .map_err(store_error)?;
        let cancel_requested = match held {
            Some((Some(token), state, cancel))
                if token == *lease.token.as_uuid() && state == "running" =>
            {
                cancel
            }
            _ => {
                // Ends the transaction (and its row lock) here rather than by dropping it,
                // which would close the connection.
                tx.commit().await?;
                return Ok(LeaseStatus::Lost);
            }
        };
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE omniq_tasks SET progress = ?, lease_expires_at = {SERVER_NOW_MICROS} + ?, \
             updated_at = ? WHERE id = ?"
        )))
        .bind(text)
        .bind(lease_micros(extend))
        .bind(to_micros(now))
        .bind(*lease.task_id.as_uuid())
        .execute(&mut *tx)
        .await
        .map_err(store_error)?;
        tx.commit().await?;
        Ok(if cancel_requested {
            LeaseStatus::CancelRequested
        } else {
            LeaseStatus::Held
        })
    }
}
