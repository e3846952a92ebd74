//! Work any worker does for all: recover expired leases, expire stale tasks, re-drive and
//! purge dead letters.

use chrono::Utc;
use omniq_models::{AttemptError, TaskError, TaskErrorKind, TaskId, TaskState};
use omniq_storage::{PurgeRequest, RedriveTarget, StateChange, StoreResult, effective_purge_limit};
use sqlx::{AssertSqlSafe, QueryBuilder, Row, Sqlite};

use super::settle::settle_dependents;
use super::{BEGIN_WRITE, SqliteTaskQueue};
use crate::error::store_error;
use crate::rows::{CHANGE_COLUMNS, change_from_row};
use crate::rows::{parse_id, to_json};
use crate::time::to_micros;

impl SqliteTaskQueue {
    pub(super) async fn recover(&self, limit: usize) -> StoreResult<Vec<StateChange>> {
        let now = self.backend.clock.now();
        let mut tx = self
            .backend
            .pool
            .begin_with(BEGIN_WRITE)
            .await
            .map_err(store_error)?;
        let expired = sqlx::query(
            "SELECT id, attempts, max_attempts, cancel_requested FROM omniq_tasks \
             WHERE state = 'running' AND lease_expires_at <= ? ORDER BY lease_expires_at LIMIT ?",
        )
        // On the clock the deadlines were set by: the machine's.
        .bind(to_micros(Utc::now()))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&mut *tx)
        .await
        .map_err(store_error)?;
        let mut changes = Vec::with_capacity(expired.len());
        let mut ended = Vec::new();
        for row in expired {
            let id: String = row.try_get("id").map_err(store_error)?;
            let attempts: i64 = row.try_get("attempts").map_err(store_error)?;
            let max_attempts: i64 = row.try_get("max_attempts").map_err(store_error)?;
            let cancel_requested: bool = row.try_get("cancel_requested").map_err(store_error)?;
            // A task whose cancel was requested while it ran ends Cancelled: recovering it
            // must not run it again.
            let state = if cancel_requested {
                TaskState::Cancelled
            } else if attempts >= max_attempts {
                TaskState::Failed
            } else {
                TaskState::Queued
            };
            let error = AttemptError::new(
                u32::try_from(attempts).unwrap_or(u32::MAX),
                now,
                TaskError::with_kind(
                    TaskErrorKind::LeaseLost,
                    "lease expired: the worker stopped renewing it",
                    true,
                ),
            );
            let row = sqlx::query(AssertSqlSafe(format!(
                "UPDATE omniq_tasks SET state = ?1, updated_at = ?2, \
                 finished_at = CASE WHEN ?1 IN ('failed', 'cancelled') THEN ?2 ELSE NULL END, \
                 reason = CASE WHEN ?1 = 'cancelled' THEN COALESCE(reason, ?5) ELSE reason END, \
                 lease_token = NULL, lease_expires_at = NULL, cancel_requested = 0, \
                 errors = json_insert(errors, '$[#]', json(?3)) \
                 WHERE id = ?4 AND state = 'running' RETURNING {CHANGE_COLUMNS}"
            )))
            .bind(state.as_str())
            .bind(to_micros(now))
            .bind(to_json(&error)?)
            .bind(&id)
            .bind(omniq_storage::CANCELLED_WHILE_RUNNING)
            .fetch_one(&mut *tx)
            .await
            .map_err(store_error)?;
            let change = change_from_row(&row)?;
            if state.is_terminal() {
                ended.push(change.task_id);
            }
            changes.push(change);
        }
        settle_dependents(&mut tx, ended, now, &mut changes).await?;
        tx.commit().await.map_err(store_error)?;
        if !changes.is_empty() {
            self.wake();
        }
        Ok(changes)
    }

    pub(super) async fn expire(&self, limit: usize) -> StoreResult<Vec<StateChange>> {
        let now = self.backend.clock.now();
        let mut tx = self
            .backend
            .pool
            .begin_with(BEGIN_WRITE)
            .await
            .map_err(store_error)?;
        let rows = sqlx::query(AssertSqlSafe(format!(
            "UPDATE omniq_tasks SET state = 'expired', finished_at = ?1, updated_at = ?1, \
             reason = 'not started before its expiry (ttl)' \
             WHERE seq IN (SELECT seq FROM omniq_tasks \
               WHERE state IN ('queued', 'scheduled', 'blocked') AND expires_at <= ?1 \
               ORDER BY expires_at LIMIT ?2) \
             RETURNING {CHANGE_COLUMNS}"
        )))
        .bind(to_micros(now))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&mut *tx)
        .await
        .map_err(store_error)?;
        let mut changes = Vec::with_capacity(rows.len());
        for row in &rows {
            changes.push(change_from_row(row)?);
        }
        let expired = changes.iter().map(|change| change.task_id).collect();
        settle_dependents(&mut tx, expired, now, &mut changes).await?;
        tx.commit().await.map_err(store_error)?;
        Ok(changes)
    }

    pub(super) async fn redrive_failed(&self, target: RedriveTarget) -> StoreResult<Vec<TaskId>> {
        let now = to_micros(self.backend.clock.now());
        let mut sql = QueryBuilder::<Sqlite>::new(
            // OR IGNORE: a task whose unique key is now held by a live task stays Failed.
            "UPDATE OR IGNORE omniq_tasks SET state = 'queued', attempts = 0, finished_at = NULL, \
             reason = NULL, cancel_requested = 0, run_at = ",
        );
        sql.push_bind(now)
            .push(", updated_at = ")
            .push_bind(now)
            .push(" WHERE state = 'failed'");
        match &target {
            RedriveTarget::Tasks(ids) if ids.is_empty() => return Ok(Vec::new()),
            RedriveTarget::Tasks(ids) => {
                sql.push(" AND id IN (");
                let mut list = sql.separated(", ");
                for id in ids {
                    list.push_bind(id.to_string());
                }
                sql.push(")");
            }
            RedriveTarget::Queue(queue) => {
                sql.push(" AND queue = ").push_bind(queue.clone());
            }
            RedriveTarget::All => {}
        }
        sql.push(" RETURNING id");
        let mut tx = self
            .backend
            .pool
            .begin_with(BEGIN_WRITE)
            .await
            .map_err(store_error)?;
        let ids: Vec<(String,)> = sql
            .build_query_as()
            .fetch_all(&mut *tx)
            .await
            .map_err(store_error)?;
        tx.commit().await.map_err(store_error)?;
        let mut ids = ids
            .iter()
            .map(|(id,)| parse_id(id))
            .collect::<StoreResult<Vec<_>>>()?;
        ids.sort();
        if !ids.is_empty() {
            self.wake();
        }
        Ok(ids)
    }

    pub(super) async fn purge_finished(&self, request: PurgeRequest) -> StoreResult<u64> {
        let states = request.finished_states()?;
        let mut tx = self
            .backend
            .pool
            .begin_with(BEGIN_WRITE)
            .await
            .map_err(store_error)?;
        // The oldest finished rows first, through the partial index on finished_at, and at
        // most `limit` of them: the writer lock is held for one bounded batch, never a scan.
        let mut select = QueryBuilder::<Sqlite>::new(
            "SELECT id FROM omniq_tasks WHERE finished_at IS NOT NULL AND state IN (",
        );
        let mut list = select.separated(", ");
        for state in &states {
            list.push_bind(state.as_str());
        }
        select.push(")");
        if let Some(queue) = &request.queue {
            select.push(" AND queue = ").push_bind(queue.clone());
        }
        if let Some(before) = request.finished_before {
            select
                .push(" AND finished_at < ")
                .push_bind(to_micros(before));
        }
        select
            .push(" ORDER BY finished_at LIMIT ")
            .push_bind(i64::try_from(effective_purge_limit(request.limit)).unwrap_or(i64::MAX));
        let ids: Vec<(String,)> = select
            .build_query_as()
            .fetch_all(&mut *tx)
            .await
            .map_err(store_error)?;
        if ids.is_empty() {
            return Ok(0);
        }
        let in_ids = |sql: &mut QueryBuilder<Sqlite>| {
            sql.push(" IN (");
            let mut list = sql.separated(", ");
            for (id,) in &ids {
                list.push_bind(id.clone());
            }
            sql.push(")");
        };
        let mut deps = QueryBuilder::<Sqlite>::new("DELETE FROM omniq_task_deps WHERE parent_id");
        in_ids(&mut deps);
        deps.push(" OR child_id");
        in_ids(&mut deps);
        deps.build().execute(&mut *tx).await.map_err(store_error)?;
        let mut tasks = QueryBuilder::<Sqlite>::new("DELETE FROM omniq_tasks WHERE id");
        in_ids(&mut tasks);
        let done = tasks.build().execute(&mut *tx).await.map_err(store_error)?;
        tx.commit().await.map_err(store_error)?;
        Ok(done.rows_affected())
    }
}
