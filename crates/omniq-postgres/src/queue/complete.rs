//! Completions: fenced by the lease token, the whole batch in one statement, its
//! dependents settled in the same transaction.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use omniq_models::TaskState;
use omniq_storage::{
    CANCELLED_WHILE_RUNNING, Completed, Completion, CompletionOutcome, CompletionStatus,
    StoreResult,
};
use sqlx::types::Json;
use sqlx::{AssertSqlSafe, PgConnection};
use uuid::Uuid;

use super::PgTaskQueue;
use super::notify::{ReadyQueues, notify, ready_from};
use super::settle::settle_dependents;
use crate::error::store_error;
use crate::names::Names;
use crate::rows::{column, parse_state, pg_text, to_json};

/// The batch as columns, one entry per completion sent.
#[derive(Default)]
struct Columns {
    ids: Vec<Uuid>,
    tokens: Vec<Uuid>,
    kinds: Vec<&'static str>,
    run_ats: Vec<Option<DateTime<Utc>>>,
    errors: Vec<Option<String>>,
    reasons: Vec<Option<String>>,
}

impl PgTaskQueue {
    pub(super) async fn complete_batch(
        &self,
        completions: Vec<Completion>,
    ) -> StoreResult<Completed> {
        if completions.is_empty() {
            return Ok(Completed::default());
        }
        let now = self.backend.clock().now();
        // A lease completed twice in one batch: the first is applied, the second is its
        // re-send, as if sent one by one.
        let mut sent = HashSet::with_capacity(completions.len());
        let mut columns = Columns::default();
        for completion in &completions {
            let key = (
                *completion.lease.task_id.as_uuid(),
                *completion.lease.token.as_uuid(),
            );
            if sent.insert(key) {
                push(&mut columns, completion)?;
            }
        }
        let names = self.backend.names();
        let mut tx = self.backend.pool().begin().await.map_err(store_error)?;
        let applied = apply(&mut tx, names, &columns, now).await?;
        let resent = already_applied(&mut tx, names, &columns, &applied).await?;
        let mut completed = Completed::default();
        let mut ready = ReadyQueues::new();
        let mut finished = Vec::new();
        for ((id, _token), (queue, state)) in &applied {
            if *state == TaskState::Queued {
                ready.insert(queue.clone());
            } else if state.is_terminal() {
                finished.push(*id);
            }
        }
        settle_dependents(&mut tx, names, finished, now, &mut completed.changes).await?;
        ready_from(&completed.changes, &mut ready);
        notify(&mut tx, &names.task_channel, &ready).await?;
        tx.commit().await.map_err(store_error)?;
        self.backend.wake_queues(&ready);

        completed.statuses = completions
            .iter()
            .map(|c| {
                let key = (*c.lease.task_id.as_uuid(), *c.lease.token.as_uuid());
                if applied.contains_key(&key) || resent.contains(&key) {
                    CompletionStatus::Applied
                } else {
                    CompletionStatus::LeaseLost
                }
            })
            .collect();
        Ok(completed)
    }
}

fn push(columns: &mut Columns, completion: &Completion) -> StoreResult<()> {
    let (kind, run_at, error, reason) = match &completion.outcome {
        CompletionOutcome::Succeeded => ("succeeded", None, None, None),
        CompletionOutcome::Failed { error } => ("failed", None, Some(to_json(error)?), None),
        CompletionOutcome::Cancelled { reason } => {
            ("cancelled", None, None, Some(pg_text(reason).into_owned()))
        }
        CompletionOutcome::Retry { run_at, error } => {
            ("retry", Some(*run_at), Some(to_json(error)?), None)
        }
        CompletionOutcome::Release => ("release", None, None, None),
        CompletionOutcome::Snooze { run_at } => ("snooze", Some(*run_at), None, None),
    };
    columns.ids.push(*completion.lease.task_id.as_uuid());
    columns.tokens.push(*completion.lease.token.as_uuid());
    columns.kinds.push(kind);
    columns.run_ats.push(run_at);
    columns.errors.push(error);
    columns.reasons.push(reason);
    Ok(())
}

/// Applies every completion whose lease still holds, in one statement. Returns the applied
/// ones by (task, token), with their queue and new state.
async fn apply(
    conn: &mut PgConnection,
    names: &Names,
    columns: &Columns,
    now: DateTime<Utc>,
) -> StoreResult<HashMap<(Uuid, Uuid), (String, TaskState)>> {
    // The fence is the WHERE clause: a worker whose lease was taken over matches no row
    // and changes nothing. The token stays on the row, so that a re-sent completion is
    // known (see `already_applied`); a claim replaces it and lease recovery clears it.
    // Each outcome's changes, column by column:
    // - succeeded, failed, cancelled finish the task; retry, snooze and release queue it
    //   again (retry and snooze at their run_at, scheduled if that is ahead); release and
    //   snooze give the attempt back;
    // - failed and retry append the attempt's error to the history;
    // - a reason given when the cancel was requested wins over the worker's.
    // - a retry, snooze or release of a task whose cancel was requested while it ran ends it
    //   Cancelled instead: the request must not be lost with the attempt.
    let kind = "(CASE WHEN c.kind IN ('retry', 'snooze', 'release') AND t.cancel_requested \
                THEN 'cancelled' ELSE c.kind END)";
    let sql = format!(
        "UPDATE {tasks} AS t SET \
           state = CASE {kind} \
             WHEN 'retry' THEN CASE WHEN c.run_at > $1 THEN 'scheduled' ELSE 'queued' END \
             WHEN 'snooze' THEN CASE WHEN c.run_at > $1 THEN 'scheduled' ELSE 'queued' END \
             WHEN 'release' THEN 'queued' \
             ELSE {kind} END, \
           attempts = CASE WHEN {kind} IN ('release', 'snooze') \
             THEN GREATEST(t.attempts - 1, 0) ELSE t.attempts END, \
           run_at = CASE WHEN {kind} IN ('retry', 'snooze') THEN c.run_at ELSE t.run_at END, \
           finished_at = CASE WHEN {kind} IN ('succeeded', 'failed', 'cancelled') THEN $1 \
             ELSE t.finished_at END, \
           updated_at = $1, \
           lease_expires_at = NULL, \
           reason = CASE {kind} WHEN 'cancelled' \
             THEN COALESCE(t.reason, c.reason, '{CANCELLED_WHILE_RUNNING}') \
             WHEN 'succeeded' THEN NULL WHEN 'failed' THEN NULL ELSE t.reason END, \
           cancel_requested = CASE WHEN {kind} IN ('retry', 'snooze', 'release') THEN FALSE \
             ELSE t.cancel_requested END, \
           errors = CASE WHEN c.error IS NULL THEN t.errors ELSE t.errors || \
             jsonb_build_array(jsonb_build_object('attempt', t.attempts, 'at', $2::jsonb, \
             'error', c.error::jsonb)) END \
         FROM UNNEST($3::uuid[], $4::uuid[], $5::text[], $6::timestamptz[], $7::text[], \
           $8::text[]) AS c(id, token, kind, run_at, error, reason) \
         WHERE t.id = c.id AND t.lease_token = c.token AND t.state = 'running' \
         RETURNING t.id, c.token, t.queue, t.state",
        tasks = names.tasks
    );
    let rows = sqlx::query(AssertSqlSafe(sql))
        .bind(now)
        .bind(Json(now))
        .bind(&columns.ids)
        .bind(&columns.tokens)
        .bind(&columns.kinds)
        .bind(&columns.run_ats)
        .bind(&columns.errors)
        .bind(&columns.reasons)
        .fetch_all(&mut *conn)
        .await
        .map_err(store_error)?;
    let mut applied = HashMap::with_capacity(rows.len());
    for row in &rows {
        let id: Uuid = column(row, "id")?;
        let token: Uuid = column(row, "token")?;
        let queue: String = column(row, "queue")?;
        let state = parse_state(&column::<String>(row, "state")?)?;
        applied.insert((id, token), (queue, state));
    }
    Ok(applied)
}

/// Of the completions not applied now, those whose lease already completed the task: the
/// task runs no more and still carries their token, which only the lease's own completion
/// leaves there. A re-send after a lost reply is one of these, and is reported Applied.
async fn already_applied(
    conn: &mut PgConnection,
    names: &Names,
    columns: &Columns,
    applied: &HashMap<(Uuid, Uuid), (String, TaskState)>,
) -> StoreResult<HashSet<(Uuid, Uuid)>> {
    let (ids, tokens): (Vec<Uuid>, Vec<Uuid>) = columns
        .ids
        .iter()
        .zip(&columns.tokens)
        .filter(|&(id, token)| !applied.contains_key(&(*id, *token)))
        .map(|(id, token)| (*id, *token))
        .unzip();
    if ids.is_empty() {
        return Ok(HashSet::new());
    }
    let sql = format!(
        "SELECT t.id, t.lease_token FROM {tasks} AS t \
         JOIN UNNEST($1::uuid[], $2::uuid[]) AS c(id, token) \
           ON t.id = c.id AND t.lease_token = c.token \
         WHERE t.state <> 'running'",
        tasks = names.tasks
    );
    let rows: Vec<(Uuid, Uuid)> = sqlx::query_as(AssertSqlSafe(sql))
        .bind(&ids)
        .bind(&tokens)
        .fetch_all(&mut *conn)
        .await
        .map_err(store_error)?;
    Ok(rows.into_iter().collect())
}
