//! Work any worker does for all: recover expired leases, expire stale tasks, re-drive and
//! purge dead letters.

use chrono::Utc;
use omniq_models::{TaskError, TaskErrorKind, TaskId, TaskState};
use omniq_storage::{
    CANCELLED_WHILE_RUNNING, PurgeRequest, RedriveTarget, StateChange, StoreResult,
    effective_purge_limit,
};
use sqlx::types::Json;
use sqlx::{AssertSqlSafe, Postgres, QueryBuilder};
use uuid::Uuid;

use super::PgTaskQueue;
use super::notify::{ReadyQueues, notify, ready_from};
use super::settle::settle_dependents;
use crate::error::{is_unique_violation, store_error};
use crate::rows::{CHANGE_COLUMNS, LIVE_STATES, change_from_row, to_i64};

/// Re-drives that lost a race for a unique key to a concurrent enqueue try again this
/// many times.
const REDRIVE_TRIES: usize = 3;

impl PgTaskQueue {
    pub(super) async fn recover(&self, limit: usize) -> StoreResult<Vec<StateChange>> {
        let now = self.backend.clock().now();
        let names = self.backend.names();
        let error = TaskError::with_kind(
            TaskErrorKind::LeaseLost,
            "lease expired: the worker stopped renewing it",
            true,
        );
        let mut tx = self.backend.pool().begin().await.map_err(store_error)?;
        // SKIP LOCKED: a lease being renewed or completed right now is not expired after
        // all, and two recovering workers split the expired ones between them. Deadlines
        // are judged on the server's clock, the one they were set by.
        let rows = sqlx::query(AssertSqlSafe(format!(
            // A task whose cancel was requested while it ran ends Cancelled: recovering it
            // must not run it again.
            "UPDATE {tasks} AS t SET \
               state = CASE WHEN t.cancel_requested THEN 'cancelled' \
                 WHEN t.attempts >= t.max_attempts THEN 'failed' ELSE 'queued' END, \
               finished_at = CASE WHEN t.cancel_requested OR t.attempts >= t.max_attempts \
                 THEN $1 END, \
               reason = CASE WHEN t.cancel_requested \
                 THEN COALESCE(t.reason, '{CANCELLED_WHILE_RUNNING}') ELSE t.reason END, \
               updated_at = $1, lease_token = NULL, lease_expires_at = NULL, \
               cancel_requested = FALSE, \
               errors = t.errors || jsonb_build_array(jsonb_build_object( \
                 'attempt', t.attempts, 'at', $2::jsonb, 'error', $3::jsonb)) \
             WHERE t.id = ANY(ARRAY(SELECT id FROM {tasks} \
               WHERE state = 'running' AND lease_expires_at <= now() \
               ORDER BY lease_expires_at LIMIT $4 FOR UPDATE SKIP LOCKED)) \
             RETURNING {CHANGE_COLUMNS}",
            tasks = names.tasks
        )))
        .bind(now)
        .bind(Json(now))
        .bind(Json(&error))
        .bind(to_i64(limit))
        .fetch_all(&mut *tx)
        .await
        .map_err(store_error)?;
        let mut changes = rows
            .iter()
            .map(change_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        let finished = changes
            .iter()
            .filter(|c| c.state.is_terminal())
            .map(|c| *c.task_id.as_uuid())
            .collect();
        settle_dependents(&mut tx, names, finished, now, &mut changes).await?;
        let mut ready = ReadyQueues::new();
        ready_from(&changes, &mut ready);
        notify(&mut tx, &names.task_channel, &ready).await?;
        tx.commit().await.map_err(store_error)?;
        self.backend.wake_queues(&ready);
        Ok(changes)
    }

    pub(super) async fn expire(&self, limit: usize) -> StoreResult<Vec<StateChange>> {
        // Best effort: stale statistics slow claims down, they never make them wrong.
        if let Err(err) = self.refresh_statistics().await {
            tracing::warn!(%err, "cannot refresh the tasks table's statistics");
        }
        let now = self.backend.clock().now();
        let names = self.backend.names();
        let mut tx = self.backend.pool().begin().await.map_err(store_error)?;
        let rows = sqlx::query(AssertSqlSafe(format!(
            "UPDATE {tasks} AS t SET state = 'expired', finished_at = $1, updated_at = $1, \
             reason = 'not started before its expiry (ttl)' \
             WHERE t.id = ANY(ARRAY(SELECT id FROM {tasks} \
               WHERE state IN ('queued', 'scheduled', 'blocked') AND expires_at <= $1 \
               ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED)) \
             RETURNING {CHANGE_COLUMNS}",
            tasks = names.tasks
        )))
        .bind(now)
        .bind(to_i64(limit))
        .fetch_all(&mut *tx)
        .await
        .map_err(store_error)?;
        let mut changes = rows
            .iter()
            .map(change_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        let expired = changes.iter().map(|c| *c.task_id.as_uuid()).collect();
        settle_dependents(&mut tx, names, expired, now, &mut changes).await?;
        // An expired parent can start its on-failure callbacks.
        let mut ready = ReadyQueues::new();
        ready_from(&changes, &mut ready);
        notify(&mut tx, &names.task_channel, &ready).await?;
        tx.commit().await.map_err(store_error)?;
        self.backend.wake_queues(&ready);
        Ok(changes)
    }

    pub(super) async fn redrive_failed(&self, target: RedriveTarget) -> StoreResult<Vec<TaskId>> {
        if matches!(&target, RedriveTarget::Tasks(ids) if ids.is_empty()) {
            return Ok(Vec::new());
        }
        let names = self.backend.names();
        let mut tries = 0;
        let rows = loop {
            tries += 1;
            let mut tx = self.backend.pool().begin().await.map_err(store_error)?;
            let mut sql = redrive_statement(&names.tasks, &target);
            match sql
                .build_query_as::<(Uuid, String)>()
                .fetch_all(&mut *tx)
                .await
            {
                Ok(rows) => {
                    let ready: ReadyQueues = rows.iter().map(|(_, queue)| queue.clone()).collect();
                    notify(&mut tx, &names.task_channel, &ready).await?;
                    tx.commit().await.map_err(store_error)?;
                    self.backend.wake_queues(&ready);
                    break rows;
                }
                // Another task took a key between the check and the update: look again.
                Err(err) if is_unique_violation(&err) && tries < REDRIVE_TRIES => {}
                Err(err) => return Err(store_error(err)),
            }
        };
        let mut ids: Vec<TaskId> = rows
            .into_iter()
            .map(|(id, _)| TaskId::from_uuid(id))
            .collect();
        ids.sort();
        Ok(ids)
    }

    pub(super) async fn purge_finished(&self, request: PurgeRequest) -> StoreResult<u64> {
        let states: Vec<&'static str> = request
            .finished_states()?
            .into_iter()
            .map(TaskState::as_str)
            .collect();
        let names = self.backend.names();
        // The oldest finished rows first, through the partial index on finished_at, at most
        // `limit` of them; rows another purge holds are skipped rather than waited on.
        let mut sql = QueryBuilder::<Postgres>::new(format!(
            "WITH doomed AS (SELECT id FROM {tasks} WHERE finished_at IS NOT NULL \
             AND state = ANY(",
            tasks = names.tasks
        ));
        sql.push_bind(states).push(")");
        if let Some(queue) = &request.queue {
            sql.push(" AND queue = ").push_bind(queue.clone());
        }
        if let Some(before) = request.finished_before {
            sql.push(" AND finished_at < ").push_bind(before);
        }
        sql.push(" ORDER BY finished_at LIMIT ")
            .push_bind(i64::try_from(effective_purge_limit(request.limit)).unwrap_or(i64::MAX));
        // Their dependency edges go with them, in the same statement.
        sql.push(format!(
            " FOR UPDATE SKIP LOCKED), \
             gone AS (DELETE FROM {tasks} WHERE id = ANY(ARRAY(SELECT id FROM doomed)) \
               RETURNING id), \
             as_parent AS (DELETE FROM {deps} WHERE parent_id IN (SELECT id FROM gone)), \
             as_child AS (DELETE FROM {deps} WHERE child_id IN (SELECT id FROM gone)) \
             SELECT COUNT(*) FROM gone",
            tasks = names.tasks,
            deps = names.deps
        ));
        let purged: i64 = sql
            .build_query_scalar()
            .fetch_one(self.backend.pool())
            .await
            .map_err(store_error)?;
        Ok(u64::try_from(purged).unwrap_or(0))
    }
}

/// Re-drives in one statement. A task whose unique key a live task holds stays Failed, and
/// of several dead letters sharing a key only the newest goes back (the unique index would
/// refuse the whole statement otherwise).
fn redrive_statement(tasks: &str, target: &RedriveTarget) -> QueryBuilder<Postgres> {
    let now = Utc::now();
    let mut sql = QueryBuilder::<Postgres>::new(format!(
        "UPDATE {tasks} AS t SET state = 'queued', attempts = 0, finished_at = NULL, \
         reason = NULL, cancel_requested = FALSE, run_at = "
    ));
    sql.push_bind(now).push(", updated_at = ").push_bind(now);
    sql.push(format!(
        " WHERE t.state = 'failed' AND t.id IN (SELECT id FROM (\
           SELECT f.id, f.unique_key, row_number() OVER (\
             PARTITION BY f.unique_key ORDER BY f.seq DESC) AS newest \
           FROM {tasks} AS f WHERE f.state = 'failed' \
           AND NOT EXISTS (SELECT 1 FROM {tasks} AS l WHERE l.unique_key = f.unique_key \
             AND l.state IN {LIVE_STATES})"
    ));
    match target {
        RedriveTarget::Tasks(ids) => {
            let ids: Vec<Uuid> = ids.iter().map(|id| *id.as_uuid()).collect();
            sql.push(" AND f.id = ANY(").push_bind(ids).push(")");
        }
        RedriveTarget::Queue(queue) => {
            sql.push(" AND f.queue = ").push_bind(queue.clone());
        }
        RedriveTarget::All => {}
    }
    sql.push(") AS c WHERE c.unique_key IS NULL OR c.newest = 1) RETURNING t.id, t.queue");
    sql
}
