//! Completions: fenced by the lease token, applied in one transaction per batch.

use omniq_storage::{
    Completed, Completion, CompletionOutcome, CompletionStatus, LeaseRef, StoreResult,
};
use std::collections::HashSet;

use omniq_models::TaskId;
use sqlx::{AssertSqlSafe, QueryBuilder, Sqlite, SqliteConnection};

use super::settle::settle_dependents;
use super::{BEGIN_WRITE, SqliteTaskQueue};
use crate::error::store_error;
use crate::rows::{ROWS_PER_INSERT, parse_id, to_json};
use crate::time::to_micros;

impl SqliteTaskQueue {
    pub(super) async fn complete_batch(
        &self,
        completions: Vec<Completion>,
    ) -> StoreResult<Completed> {
        let now = self.backend.clock.now();
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
        // Successes, the common case, go in one statement per chunk, and so do retries of
        // tasks nobody asked to cancel; the rest (and any of those that did not apply) one
        // by one.
        let succeeded = succeed_all(&mut tx, &completions, now_micros).await?;
        let retried = retry_all(&mut tx, &completions, now_micros, &now_json).await?;
        requeued |= !retried.is_empty();
        let mut finished = Vec::new();
        for completion in completions {
            let key = (completion.lease.task_id, completion.lease.token.to_string());
            if matches!(completion.outcome, CompletionOutcome::Retry { .. })
                && retried.contains(&key)
            {
                completed.statuses.push(CompletionStatus::Applied);
                continue;
            }
            if matches!(completion.outcome, CompletionOutcome::Succeeded) {
                let applied = succeeded.contains(&key);
                if applied {
                    finished.push(completion.lease.task_id);
                }
                let applied = applied || already_applied(&mut tx, &completion.lease).await?;
                completed.statuses.push(if applied {
                    CompletionStatus::Applied
                } else {
                    CompletionStatus::LeaseLost
                });
                continue;
            }
            // A retry, release or snooze of a task whose cancel was requested while it ran ends it
            // Cancelled instead: the request must not be lost with the attempt.
            let completion = if matches!(
                completion.outcome,
                CompletionOutcome::Retry { .. }
                    | CompletionOutcome::Release
                    | CompletionOutcome::Snooze { .. }
            ) && cancel_requested(&mut tx, &completion.lease).await?
            {
                Completion::new(
                    completion.lease,
                    CompletionOutcome::Cancelled {
                        reason: omniq_storage::CANCELLED_WHILE_RUNNING.to_owned(),
                    },
                )
            } else {
                completion
            };
            // Parameters: ?1 id, ?2 lease token, ?3 now, ?4 now as JSON, ?5 error or reason,
            // ?6 run_at.
            let (sql, finishes) = match &completion.outcome {
                CompletionOutcome::Succeeded => (
                    "UPDATE omniq_tasks SET state = 'succeeded', finished_at = ?3, \
                     updated_at = ?3, lease_expires_at = NULL, reason = NULL",
                    true,
                ),
                CompletionOutcome::Failed { .. } => (
                    "UPDATE omniq_tasks SET state = 'failed', finished_at = ?3, updated_at = ?3, \
                     lease_expires_at = NULL, reason = NULL, \
                     errors = json_insert(errors, '$[#]', \
                     json_object('attempt', attempts, 'at', json(?4), 'error', json(?5)))",
                    true,
                ),
                CompletionOutcome::Cancelled { .. } => (
                    // A reason given when the cancel was requested wins over the worker's.
                    "UPDATE omniq_tasks SET state = 'cancelled', finished_at = ?3, \
                     updated_at = ?3, lease_expires_at = NULL, \
                     reason = COALESCE(reason, ?5)",
                    true,
                ),
                CompletionOutcome::Retry { .. } => {
                    requeued = true;
                    (
                        "UPDATE omniq_tasks SET state = CASE WHEN ?6 > ?3 THEN 'scheduled' \
                         ELSE 'queued' END, run_at = ?6, updated_at = ?3, \
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
                         attempts = MAX(attempts - 1, 0), updated_at = ?3, \
                         lease_expires_at = NULL, cancel_requested = 0",
                        false,
                    )
                }
                CompletionOutcome::Snooze { .. } => {
                    requeued = true;
                    (
                        "UPDATE omniq_tasks SET state = CASE WHEN ?6 > ?3 THEN 'scheduled' \
                         ELSE 'queued' END, run_at = ?6, \
                         attempts = MAX(attempts - 1, 0), updated_at = ?3, \
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
                CompletionOutcome::Snooze { run_at } => (None, Some(to_micros(*run_at))),
                CompletionOutcome::Succeeded | CompletionOutcome::Release => (None, None),
            };
            let task_id = completion.lease.task_id.to_string();
            // The fence: a worker whose lease was taken over matches no row, changes nothing.
            // The token stays on the row so that a re-send is known (`already_applied`).
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
                finished.push(completion.lease.task_id);
            }
            let applied = applied || already_applied(&mut tx, &completion.lease).await?;
            completed.statuses.push(if applied {
                CompletionStatus::Applied
            } else {
                CompletionStatus::LeaseLost
            });
        }
        settle_dependents(&mut tx, finished, now, &mut completed.changes).await?;
        tx.commit().await.map_err(store_error)?;
        if requeued || !completed.changes.is_empty() {
            self.wake();
        }
        Ok(completed)
    }
}

/// Whether `lease` already completed its task: the task runs no more and still carries
/// the token, which only the lease's own completion leaves there (a claim replaces it,
/// lease recovery clears it). A re-send after a lost reply is reported Applied.
async fn already_applied(conn: &mut SqliteConnection, lease: &LeaseRef) -> StoreResult<bool> {
    let found: Option<i64> = sqlx::query_scalar(
        "SELECT 1 FROM omniq_tasks WHERE id = ? AND lease_token = ? AND state <> 'running'",
    )
    .bind(lease.task_id.to_string())
    .bind(lease.token.to_string())
    .fetch_optional(&mut *conn)
    .await
    .map_err(store_error)?;
    Ok(found.is_some())
}

/// Whether the task `lease` still holds had its cancel requested while it ran.
async fn cancel_requested(conn: &mut SqliteConnection, lease: &LeaseRef) -> StoreResult<bool> {
    let requested: Option<bool> = sqlx::query_scalar(
        "SELECT cancel_requested FROM omniq_tasks \
         WHERE id = ? AND lease_token = ? AND state = 'running'",
    )
    .bind(lease.task_id.to_string())
    .bind(lease.token.to_string())
    .fetch_optional(&mut *conn)
    .await
    .map_err(store_error)?;
    Ok(requested.unwrap_or(false))
}

/// Applies every Succeeded completion of the batch, fenced, in one statement per chunk.
/// Returns the (task, lease token) pairs whose lease still held: a stale lease's completion
/// in the same batch as the current one's is not taken for applied.
async fn succeed_all(
    conn: &mut SqliteConnection,
    completions: &[Completion],
    now: i64,
) -> StoreResult<HashSet<(TaskId, String)>> {
    let mut applied = HashSet::new();
    let successes: Vec<_> = completions
        .iter()
        .filter(|c| matches!(c.outcome, CompletionOutcome::Succeeded))
        .collect();
    for chunk in successes.chunks(ROWS_PER_INSERT) {
        let mut sql = QueryBuilder::<Sqlite>::new(
            "UPDATE omniq_tasks SET state = 'succeeded', finished_at = ",
        );
        sql.push_bind(now)
            .push(", updated_at = ")
            .push_bind(now)
            .push(
                ", lease_expires_at = NULL, reason = NULL \
                 WHERE state = 'running' AND (id, lease_token) IN (",
            );
        // The fence, row by row: a lease taken over matches no row.
        let mut pairs = sql.separated(", ");
        for completion in chunk {
            pairs
                .push("(")
                .push_bind_unseparated(completion.lease.task_id.to_string())
                .push_unseparated(", ")
                .push_bind_unseparated(completion.lease.token.to_string())
                .push_unseparated(")");
        }
        sql.push(") RETURNING id, lease_token");
        applied.extend(fenced(conn, &mut sql).await?);
    }
    Ok(applied)
}

/// Applies every Retry completion of the batch whose task had no cancel requested, fenced,
/// in one statement per chunk: the task waits again (Scheduled when its `run_at` is ahead)
/// with the attempt's error added to its history. Returns the (task, lease token) pairs
/// whose lease still held.
/// A retry of a task whose cancel was requested is left to the row-by-row path, which ends
/// it Cancelled.
async fn retry_all(
    conn: &mut SqliteConnection,
    completions: &[Completion],
    now: i64,
    now_json: &str,
) -> StoreResult<HashSet<(TaskId, String)>> {
    let mut applied = HashSet::new();
    let mut retries = Vec::new();
    for completion in completions {
        if let CompletionOutcome::Retry { run_at, error } = &completion.outcome {
            retries.push((completion, to_micros(*run_at), to_json(error)?));
        }
    }
    for chunk in retries.chunks(ROWS_PER_INSERT / 2) {
        let mut sql = QueryBuilder::<Sqlite>::new("WITH c(id, token, run_at, error) AS (VALUES ");
        let mut rows = sql.separated(", ");
        for (completion, run_at, error) in chunk {
            rows.push("(")
                .push_bind_unseparated(completion.lease.task_id.to_string())
                .push_unseparated(", ")
                .push_bind_unseparated(completion.lease.token.to_string())
                .push_unseparated(", ")
                .push_bind_unseparated(*run_at)
                .push_unseparated(", ")
                .push_bind_unseparated(error.as_str())
                .push_unseparated(")");
        }
        sql.push(") UPDATE omniq_tasks SET state = CASE WHEN c.run_at > ")
            .push_bind(now)
            .push(" THEN 'scheduled' ELSE 'queued' END, run_at = c.run_at, updated_at = ")
            .push_bind(now)
            .push(
                ", lease_expires_at = NULL, cancel_requested = 0, \
                 errors = json_insert(errors, '$[#]', json_object('attempt', attempts, \
                 'at', json(",
            )
            .push_bind(now_json)
            .push(
                "), 'error', json(c.error))) FROM c \
                 WHERE omniq_tasks.id = c.id AND omniq_tasks.lease_token = c.token \
                 AND omniq_tasks.state = 'running' AND omniq_tasks.cancel_requested = 0 \
                 RETURNING omniq_tasks.id, omniq_tasks.lease_token",
            );
        applied.extend(fenced(conn, &mut sql).await?);
    }
    Ok(applied)
}

/// Runs a fenced completion statement ending in `RETURNING id, lease_token`: the (task,
/// lease token) pairs it applied.
async fn fenced(
    conn: &mut SqliteConnection,
    sql: &mut QueryBuilder<Sqlite>,
) -> StoreResult<Vec<(TaskId, String)>> {
    let rows: Vec<(String, String)> = sql
        .build_query_as()
        .fetch_all(&mut *conn)
        .await
        .map_err(store_error)?;
    rows.into_iter()
        .map(|(id, token)| Ok((parse_id(&id)?, token)))
        .collect()
}
