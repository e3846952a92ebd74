//! Completions: fenced by the lease token, the whole batch in one transaction, its
//! dependents settled in the same transaction.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use omniq_models::{AttemptError, TaskState};
use omniq_storage::{Completed, Completion, CompletionOutcome, CompletionStatus, StoreResult};
use sqlx::{MySql, MySqlConnection, QueryBuilder};
use uuid::Uuid;

use super::MySqlTaskQueue;
use super::settle::{ready_in, settle_dependents};
use crate::error::{retry_deadlocks, store_error};
use crate::rows::{column, from_json, parse_state, push_ids, to_json};
use crate::time::to_micros;
use crate::tx::Tx;

/// A task's row as a completion needs it, locked.
struct Held {
    token: Option<Uuid>,
    state: TaskState,
    attempts: i64,
    reason: Option<String>,
    errors: String,
    cancel_requested: bool,
}

impl MySqlTaskQueue {
    pub(super) async fn complete_batch(
        &self,
        completions: Vec<Completion>,
    ) -> StoreResult<Completed> {
        if completions.is_empty() {
            return Ok(Completed::default());
        }
        let (applied, completed, ready) =
            retry_deadlocks(|| self.complete_once(&completions)).await?;
        self.wake_if(ready);
        let mut completed = completed;
        completed.statuses = completions
            .iter()
            .map(|c| {
                let key = (*c.lease.task_id.as_uuid(), *c.lease.token.as_uuid());
                if applied.contains(&key) {
                    CompletionStatus::Applied
                } else {
                    CompletionStatus::LeaseLost
                }
            })
            .collect();
        Ok(completed)
    }

    /// One try: returns the applied (task, token) pairs, the dependents' changes, and
    /// whether a task became ready to claim.
    async fn complete_once(
        &self,
        completions: &[Completion],
    ) -> StoreResult<(HashSet<(Uuid, Uuid)>, Completed, bool)> {
        let now = self.backend.clock().now();
        let mut ids: Vec<Uuid> = completions
            .iter()
            .map(|c| *c.lease.task_id.as_uuid())
            .collect();
        ids.sort();
        ids.dedup();
        let mut tx = Tx::begin(self.backend.pool()).await?;
        let mut held = lock_rows(&mut tx, &ids).await?;
        let mut applied = HashSet::new();
        let mut succeeded = Vec::new();
        let mut finished = Vec::new();
        let mut ready = false;
        for completion in completions {
            let id = *completion.lease.task_id.as_uuid();
            let token = *completion.lease.token.as_uuid();
            // The fence: a worker whose lease was taken over finds another token, or none
            // (lease recovery clears it), and changes nothing.
            let Some(row) = held.get_mut(&id) else {
                continue;
            };
            if row.token != Some(token) {
                continue;
            }
            applied.insert((id, token));
            // The token stays on the row after the lease's completion, so that a re-send
            // (a lost reply, or the same lease twice in the batch) is known: applied
            // already, nothing changes.
            if row.state != TaskState::Running {
                continue;
            }
            if completion.outcome == CompletionOutcome::Succeeded {
                row.state = TaskState::Succeeded;
                succeeded.push(id);
                finished.push(id);
                continue;
            }
            let change = apply_one(&mut tx, id, row, &completion.outcome, now).await?;
            if change == TaskState::Queued {
                ready = true;
            } else if change.is_terminal() {
                finished.push(id);
            }
        }
        if !succeeded.is_empty() {
            let mut update = QueryBuilder::<MySql>::new(
                "UPDATE omniq_tasks SET state = 'succeeded', finished_at = ",
            );
            update
                .push_bind(to_micros(now))
                .push(", updated_at = ")
                .push_bind(to_micros(now))
                .push(
                    ", lease_expires_at = NULL, reason = NULL \
                     WHERE id IN ",
                );
            push_ids(&mut update, &succeeded);
            update
                .build()
                .execute(&mut *tx)
                .await
                .map_err(store_error)?;
        }
        let mut completed = Completed::default();
        settle_dependents(&mut tx, finished, now, &mut completed.changes).await?;
        ready |= ready_in(&completed.changes);
        tx.commit().await?;
        Ok((applied, completed, ready))
    }
}

/// Locks the tasks of the batch, in id order (so two batches lock in the same order).
async fn lock_rows(conn: &mut MySqlConnection, ids: &[Uuid]) -> StoreResult<HashMap<Uuid, Held>> {
    let mut select = QueryBuilder::<MySql>::new(
        "SELECT id, lease_token, state, attempts, reason, errors, cancel_requested \
         FROM omniq_tasks \
         WHERE id IN ",
    );
    push_ids(&mut select, ids);
    select.push(" ORDER BY id FOR UPDATE");
    let rows = select
        .build()
        .fetch_all(&mut *conn)
        .await
        .map_err(store_error)?;
    let mut held = HashMap::with_capacity(rows.len());
    for row in &rows {
        held.insert(
            column::<Uuid>(row, "id")?,
            Held {
                token: column(row, "lease_token")?,
                state: parse_state(&column::<String>(row, "state")?)?,
                attempts: column(row, "attempts")?,
                reason: column(row, "reason")?,
                errors: column(row, "errors")?,
                cancel_requested: column(row, "cancel_requested")?,
            },
        );
    }
    Ok(held)
}

/// Applies an outcome other than success to one locked row. Returns the new state.
///
/// - failed and cancelled finish the task; retry and release queue it again (retry at its
///   run_at, scheduled if that is ahead); release gives the attempt back;
/// - failed and retry append the attempt's error to the history;
/// - a reason given when the cancel was requested wins over the worker's.
async fn apply_one(
    conn: &mut MySqlConnection,
    id: Uuid,
    row: &mut Held,
    outcome: &CompletionOutcome,
    now: DateTime<Utc>,
) -> StoreResult<TaskState> {
    let mut run_at = None;
    let mut error = None;
    let mut finished_at = None;
    let mut reason = row.reason.clone();
    let mut cancel_requested = None;
    let mut attempts = row.attempts;
    // A retry, release or snooze of a task whose cancel was requested while it ran ends it
    // Cancelled instead: the request must not be lost with the attempt.
    let cancelled_instead = CompletionOutcome::Cancelled {
        reason: omniq_storage::CANCELLED_WHILE_RUNNING.to_owned(),
    };
    let outcome = match outcome {
        CompletionOutcome::Retry { .. }
        | CompletionOutcome::Release
        | CompletionOutcome::Snooze { .. }
            if row.cancel_requested =>
        {
            &cancelled_instead
        }
        other => other,
    };
    let state = match outcome {
        CompletionOutcome::Succeeded => {
            finished_at = Some(now);
            reason = None;
            TaskState::Succeeded
        }
        CompletionOutcome::Failed { error: e } => {
            error = Some(e);
            finished_at = Some(now);
            reason = None;
            TaskState::Failed
        }
        CompletionOutcome::Cancelled { reason: given } => {
            finished_at = Some(now);
            reason = Some(row.reason.clone().unwrap_or_else(|| given.clone()));
            TaskState::Cancelled
        }
        CompletionOutcome::Retry {
            run_at: at,
            error: e,
        } => {
            run_at = Some(*at);
            error = Some(e);
            cancel_requested = Some(false);
            if *at > now {
                TaskState::Scheduled
            } else {
                TaskState::Queued
            }
        }
        CompletionOutcome::Release => {
            attempts = (attempts - 1).max(0);
            cancel_requested = Some(false);
            TaskState::Queued
        }
        CompletionOutcome::Snooze { run_at: at } => {
            attempts = (attempts - 1).max(0);
            run_at = Some(*at);
            cancel_requested = Some(false);
            if *at > now {
                TaskState::Scheduled
            } else {
                TaskState::Queued
            }
        }
    };
    let errors = match error {
        Some(e) => {
            let mut history: Vec<AttemptError> = from_json("task errors", &row.errors)?;
            history.push(AttemptError::new(
                u32::try_from(row.attempts.max(0)).unwrap_or(u32::MAX),
                now,
                e.clone(),
            ));
            Some(to_json(&history)?)
        }
        None => None,
    };
    sqlx::query(
        "UPDATE omniq_tasks SET state = ?, attempts = ?, run_at = COALESCE(?, run_at), \
         finished_at = COALESCE(?, finished_at), updated_at = ?, \
         lease_expires_at = NULL, reason = ?, \
         cancel_requested = COALESCE(?, cancel_requested), errors = COALESCE(?, errors) \
         WHERE id = ?",
    )
    .bind(state.as_str())
    .bind(attempts)
    .bind(run_at.map(to_micros))
    .bind(finished_at.map(to_micros))
    .bind(to_micros(now))
    .bind(reason)
    .bind(cancel_requested)
    .bind(errors)
    .bind(id)
    .execute(&mut *conn)
    .await
    .map_err(store_error)?;
    row.state = state;
    Ok(state)
}
