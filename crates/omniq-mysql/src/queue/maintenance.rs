//! Work any worker does for all: recover expired leases, expire stale tasks, re-drive and
//! purge dead letters.

use std::collections::HashMap;

use chrono::Utc;
use omniq_models::{AttemptError, TaskError, TaskErrorKind, TaskId, TaskState};
use omniq_storage::{
    CANCELLED_WHILE_RUNNING, PurgeRequest, RedriveTarget, StateChange, StoreResult,
    effective_purge_limit,
};
use sqlx::{MySql, QueryBuilder};
use uuid::Uuid;

use super::MySqlTaskQueue;
use super::settle::{read_changes, ready_in, settle_dependents};
use crate::error::{is_duplicate_error, retry_deadlocks, store_error};
use crate::rows::{column, from_json, push_ids, push_texts, to_i64, to_json, to_u32};
use crate::time::{SERVER_NOW_MICROS, to_micros};
use crate::tx::Tx;

/// Re-drives that lost a race for a unique key to a concurrent enqueue try again this
/// many times.
const REDRIVE_TRIES: usize = 3;

impl MySqlTaskQueue {
    pub(super) async fn recover(&self, limit: usize) -> StoreResult<Vec<StateChange>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let changes = retry_deadlocks(|| self.recover_once(limit)).await?;
        self.wake_if(ready_in(&changes));
        Ok(changes)
    }

    async fn recover_once(&self, limit: usize) -> StoreResult<Vec<StateChange>> {
        let now = self.backend.clock().now();
        let error = TaskError::with_kind(
            TaskErrorKind::LeaseLost,
            "lease expired: the worker stopped renewing it",
            true,
        );
        let mut tx = Tx::begin(self.backend.pool()).await?;
        // SKIP LOCKED: a lease being renewed or completed right now is not expired after
        // all, and two recovering workers split the expired ones between them. Deadlines
        // are judged on the server's clock, the one they were set by.
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT id, attempts, max_attempts, errors, cancel_requested, reason FROM omniq_tasks \
             WHERE state = 'running' AND lease_expires_at <= {SERVER_NOW_MICROS} \
             ORDER BY lease_expires_at LIMIT ? FOR UPDATE SKIP LOCKED",
        )))
        .bind(to_i64(limit))
        .fetch_all(&mut *tx)
        .await
        .map_err(store_error)?;
        let mut ids = Vec::with_capacity(rows.len());
        let mut finished = Vec::new();
        for row in &rows {
            let id: Uuid = column(row, "id")?;
            let attempts: i64 = column(row, "attempts")?;
            let max_attempts: i64 = column(row, "max_attempts")?;
            let mut errors: Vec<AttemptError> =
                from_json("task errors", &column::<String>(row, "errors")?)?;
            errors.push(AttemptError::new(to_u32(attempts), now, error.clone()));
            let spent = attempts >= max_attempts;
            // A task whose cancel was requested while it ran ends Cancelled: recovering it
            // must not run it again.
            let cancelled = column::<bool>(row, "cancel_requested")?;
            let reason = column::<Option<String>>(row, "reason")?;
            let (state, reason) = if cancelled {
                let reason = reason.unwrap_or_else(|| CANCELLED_WHILE_RUNNING.into());
                ("cancelled", Some(reason))
            } else if spent {
                ("failed", reason)
            } else {
                ("queued", reason)
            };
            let finishes = state != "queued";
            sqlx::query(
                "UPDATE omniq_tasks SET state = ?, finished_at = ?, updated_at = ?, \
                 lease_token = NULL, lease_expires_at = NULL, cancel_requested = FALSE, \
                 reason = ?, errors = ? WHERE id = ?",
            )
            .bind(state)
            .bind(finishes.then_some(to_micros(now)))
            .bind(to_micros(now))
            .bind(reason)
            .bind(to_json(&errors)?)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
            ids.push(id);
            if finishes {
                finished.push(id);
            }
        }
        let mut changes = read_changes(&mut tx, &ids).await?;
        settle_dependents(&mut tx, finished, now, &mut changes).await?;
        tx.commit().await?;
        Ok(changes)
    }

    pub(super) async fn expire(&self, limit: usize) -> StoreResult<Vec<StateChange>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let changes = retry_deadlocks(|| self.expire_once(limit)).await?;
        // An expired parent can start its on-failure callbacks.
        self.wake_if(ready_in(&changes));
        Ok(changes)
    }

    async fn expire_once(&self, limit: usize) -> StoreResult<Vec<StateChange>> {
        let now = self.backend.clock().now();
        let mut tx = Tx::begin(self.backend.pool()).await?;
        let ids: Vec<Uuid> = sqlx::query_scalar(
            "SELECT id FROM omniq_tasks \
             WHERE state IN ('queued', 'scheduled', 'blocked') AND expires_at <= ? \
             ORDER BY expires_at LIMIT ? FOR UPDATE SKIP LOCKED",
        )
        .bind(to_micros(now))
        .bind(to_i64(limit))
        .fetch_all(&mut *tx)
        .await
        .map_err(store_error)?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut update = QueryBuilder::<MySql>::new(
            "UPDATE omniq_tasks SET state = 'expired', \
             reason = 'not started before its expiry (ttl)', finished_at = ",
        );
        update
            .push_bind(to_micros(now))
            .push(", updated_at = ")
            .push_bind(to_micros(now))
            .push(" WHERE id IN ");
        push_ids(&mut update, &ids);
        update
            .build()
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        let mut changes = read_changes(&mut tx, &ids).await?;
        settle_dependents(&mut tx, ids, now, &mut changes).await?;
        tx.commit().await?;
        Ok(changes)
    }

    pub(super) async fn redrive_failed(&self, target: RedriveTarget) -> StoreResult<Vec<TaskId>> {
        if matches!(&target, RedriveTarget::Tasks(ids) if ids.is_empty()) {
            return Ok(Vec::new());
        }
        let mut tries = 0;
        let ids = loop {
            tries += 1;
            match retry_deadlocks(|| self.redrive_once(&target)).await {
                // Another task took a key between the check and the update: look again.
                Err(err) if is_duplicate_error(&err) && tries < REDRIVE_TRIES => {}
                other => break other?,
            }
        };
        self.wake_if(!ids.is_empty());
        let mut ids: Vec<TaskId> = ids.into_iter().map(TaskId::from_uuid).collect();
        ids.sort();
        Ok(ids)
    }

    /// Re-drives in one transaction. A task whose unique key a live task holds stays
    /// Failed, and of several dead letters sharing a key only the newest goes back (the
    /// unique index would refuse the others).
    async fn redrive_once(&self, target: &RedriveTarget) -> StoreResult<Vec<Uuid>> {
        let now = Utc::now();
        let mut tx = Tx::begin(self.backend.pool()).await?;
        let mut select = QueryBuilder::<MySql>::new(
            "SELECT f.id, f.unique_key, f.seq FROM omniq_tasks AS f \
             WHERE f.state = 'failed' AND (f.unique_key IS NULL OR NOT EXISTS \
             (SELECT 1 FROM omniq_tasks AS l WHERE l.live_key = f.key_hash))",
        );
        match target {
            RedriveTarget::Tasks(ids) => {
                let ids: Vec<Uuid> = ids.iter().map(|id| *id.as_uuid()).collect();
                select.push(" AND f.id IN ");
                push_ids(&mut select, &ids);
            }
            RedriveTarget::Queue(queue) => {
                select.push(" AND f.queue = ").push_bind(queue.clone());
            }
            RedriveTarget::All => {}
        }
        select.push(" ORDER BY f.id FOR UPDATE");
        let rows: Vec<(Uuid, Option<String>, i64)> = select
            .build_query_as()
            .fetch_all(&mut *tx)
            .await
            .map_err(store_error)?;
        let mut chosen = Vec::new();
        let mut newest: HashMap<String, (i64, Uuid)> = HashMap::new();
        for (id, key, seq) in rows {
            match key {
                None => chosen.push(id),
                Some(key) => {
                    let entry = newest.entry(key).or_insert((seq, id));
                    if seq > entry.0 {
                        *entry = (seq, id);
                    }
                }
            }
        }
        chosen.extend(newest.into_values().map(|(_, id)| id));
        if chosen.is_empty() {
            return Ok(chosen);
        }
        let mut update = QueryBuilder::<MySql>::new(
            "UPDATE omniq_tasks SET state = 'queued', attempts = 0, finished_at = NULL, \
             reason = NULL, cancel_requested = FALSE, run_at = ",
        );
        update
            .push_bind(to_micros(now))
            .push(", updated_at = ")
            .push_bind(to_micros(now))
            .push(" WHERE state = 'failed' AND id IN ");
        push_ids(&mut update, &chosen);
        update
            .build()
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        tx.commit().await?;
        Ok(chosen)
    }

    pub(super) async fn purge_finished(&self, request: PurgeRequest) -> StoreResult<u64> {
        let states: Vec<&'static str> = request
            .finished_states()?
            .into_iter()
            .map(TaskState::as_str)
            .collect();
        retry_deadlocks(|| self.purge_once(&request, &states)).await
    }

    async fn purge_once(&self, request: &PurgeRequest, states: &[&str]) -> StoreResult<u64> {
        let mut tx = Tx::begin(self.backend.pool()).await?;
        // The oldest finished rows first, through the index on finished_at (its range skips
        // the NULLs of live tasks), at most `limit` of them; rows another purge holds are
        // skipped rather than waited on.
        let mut select = QueryBuilder::<MySql>::new(
            "SELECT id FROM omniq_tasks WHERE finished_at IS NOT NULL AND state IN ",
        );
        push_texts(&mut select, states);
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
            .push_bind(to_i64(effective_purge_limit(request.limit)))
            .push(" FOR UPDATE SKIP LOCKED");
        let ids: Vec<Uuid> = select
            .build_query_scalar()
            .fetch_all(&mut *tx)
            .await
            .map_err(store_error)?;
        if ids.is_empty() {
            return Ok(0);
        }
        // Their dependency edges go with them.
        for side in ["parent_id", "child_id"] {
            let mut sql =
                QueryBuilder::<MySql>::new(format!("DELETE FROM omniq_task_deps WHERE {side} IN "));
            push_ids(&mut sql, &ids);
            sql.build().execute(&mut *tx).await.map_err(store_error)?;
        }
        let mut sql = QueryBuilder::<MySql>::new("DELETE FROM omniq_tasks WHERE id IN ");
        push_ids(&mut sql, &ids);
        let done = sql.build().execute(&mut *tx).await.map_err(store_error)?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }
}
