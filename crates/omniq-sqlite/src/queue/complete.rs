//! Completions: fenced by the lease token, applied in one transaction per batch.

use chrono::Utc;
use omniq_storage::{Completed, Completion, CompletionOutcome, CompletionStatus, StoreResult};
use sqlx::AssertSqlSafe;

use super::settle::settle_dependents;
use super::{BEGIN_WRITE, SqliteTaskQueue};
use crate::error::store_error;
use crate::rows::to_json;
use crate::time::to_micros;

impl SqliteTaskQueue {
    pub(super) async fn complete_batch(
        &self,
        completions: Vec<Completion>,
    ) -> StoreResult<Completed> {
        let now = Utc::now();
        let now_micros = to_micros(now);
        let now_json = to_json(&now)?;
        let mut tx = self
            .backend
            .pool
            .begin_with(BEGIN_WRITE)
            .await
            .map_err(store_error)?;
        let mut completed = Completed::default();
        let mut requeued = false;
        for completion in completions {
            // Parameters: ?1 id, ?2 lease token, ?3 now, ?4 now as JSON, ?5 error or reason,
            // ?6 run_at.
            let (sql, finishes) = match &completion.outcome {
                CompletionOutcome::Succeeded => (
                    "UPDATE omniq_tasks SET state = 'succeeded', finished_at = ?3, \
                     updated_at = ?3, lease_token = NULL, lease_expires_at = NULL, reason = NULL",
                    true,
                ),
                CompletionOutcome::Failed { .. } => (
                    "UPDATE omniq_tasks SET state = 'failed', finished_at = ?3, updated_at = ?3, \
                     lease_token = NULL, lease_expires_at = NULL, reason = NULL, \
                     errors = json_insert(errors, '$[#]', \
                     json_object('attempt', attempts, 'at', json(?4), 'error', json(?5)))",
                    true,
                ),
                CompletionOutcome::Cancelled { .. } => (
                    // A reason given when the cancel was requested wins over the worker's.
                    "UPDATE omniq_tasks SET state = 'cancelled', finished_at = ?3, \
                     updated_at = ?3, lease_token = NULL, lease_expires_at = NULL, \
                     reason = COALESCE(reason, ?5)",
                    true,
                ),
                CompletionOutcome::Retry { .. } => {
                    requeued = true;
                    (
                        "UPDATE omniq_tasks SET state = CASE WHEN ?6 > ?3 THEN 'scheduled' \
                         ELSE 'queued' END, run_at = ?6, updated_at = ?3, lease_token = NULL, \
                         lease_expires_at = NULL, cancel_requested = 0, \
                         errors = json_insert(errors, '$[#]', \
                         json_object('attempt', attempts, 'at', json(?4), 'error', json(?5)))",
                        false,
                    )
                }
                CompletionOutcome::Release => {
                    requeued = true;
                    (
                        "UPDATE omniq_tasks SET state = 'queued', \
                         attempts = MAX(attempts - 1, 0), updated_at = ?3, lease_token = NULL, \
                         lease_expires_at = NULL, cancel_requested = 0",
                        false,
                    )
                }
            };
            let (detail, run_at) = match &completion.outcome {
                CompletionOutcome::Failed { error } => (Some(to_json(error)?), None),
                CompletionOutcome::Retry { run_at, error } => {
                    (Some(to_json(error)?), Some(to_micros(*run_at)))
                }
                CompletionOutcome::Cancelled { reason } => (Some(reason.clone()), None),
                CompletionOutcome::Succeeded | CompletionOutcome::Release => (None, None),
            };
            let task_id = completion.lease.task_id.to_string();
            // The fence: a worker whose lease was taken over matches no row, changes nothing.
            let done = sqlx::query(AssertSqlSafe(format!(
                "{sql} WHERE id = ?1 AND lease_token = ?2 AND state = 'running'"
            )))
            .bind(&task_id)
            .bind(completion.lease.token.to_string())
            .bind(now_micros)
            .bind(&now_json)
            .bind(detail)
            .bind(run_at)
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
            let applied = done.rows_affected() == 1;
            if applied && finishes {
                settle_dependents(&mut tx, task_id, now, &mut completed.changes).await?;
            }
            completed.statuses.push(if applied {
                CompletionStatus::Applied
            } else {
                CompletionStatus::LeaseLost
            });
        }
        tx.commit().await.map_err(store_error)?;
        if requeued || !completed.changes.is_empty() {
            self.wake();
        }
        Ok(completed)
    }
}
