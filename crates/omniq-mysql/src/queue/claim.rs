//! Claims and lease renewal.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use omniq_models::{LeaseToken, TaskId};
use omniq_storage::{
    Completion, DequeueRequest, Lease, LeaseRef, LeaseStatus, StoreResult, lease_micros,
    unreadable_task,
};
use sqlx::{MySql, MySqlConnection, QueryBuilder};
use uuid::Uuid;

use super::MySqlTaskQueue;
use crate::error::{corrupt, retry_deadlocks, store_error};
use crate::rows::{TASK_COLUMNS, column, push_ids, push_texts, record_from_row, to_i64};
use crate::time::{SERVER_NOW_MICROS, to_micros};
use crate::tx::Tx;

/// The request's name filter (rolling deploys): tasks of the names it runs, and others
/// once they have been due for its grace.
fn push_name_filter(sql: &mut QueryBuilder<MySql>, request: &DequeueRequest, now: DateTime<Utc>) {
    let Some(names) = &request.names else {
        return;
    };
    sql.push(" AND (");
    if names.is_empty() {
        sql.push("FALSE");
    } else {
        sql.push("name IN ");
        push_texts(sql, names);
    }
    if let Some(by) = request.unknown_due_by(now) {
        sql.push(" OR run_at <= ").push_bind(to_micros(by));
    }
    sql.push(")");
}

impl MySqlTaskQueue {
    pub(super) async fn claim(&self, request: DequeueRequest) -> StoreResult<Vec<Lease>> {
        if request.limit == 0 || request.queues.is_empty() {
            return Ok(Vec::new());
        }
        let (leases, unreadable) = retry_deadlocks(|| self.claim_once(&request)).await?;
        if !leases.is_empty() {
            self.backend.wakeup().activity();
        }
        if !unreadable.is_empty()
            && let Err(err) = self.complete_batch(unreadable).await
        {
            // Their leases lapse and recovery takes them back; the readable ones still run.
            tracing::warn!(%err, "cannot dead-letter unreadable tasks");
        }
        Ok(leases)
    }

    /// One try: the leases, and the completions that dead-letter the claimed tasks that
    /// cannot be read.
    async fn claim_once(
        &self,
        request: &DequeueRequest,
    ) -> StoreResult<(Vec<Lease>, Vec<Completion>)> {
        let now = self.backend.clock().now();
        let token = LeaseToken::new();
        let mut tx = Tx::begin(self.backend.pool()).await?;
        let mut leases = Vec::new();
        let mut unreadable = Vec::new();
        for queue in &request.queues {
            let wanted = request.limit - leases.len();
            if wanted == 0 {
                break;
            }
            // SKIP LOCKED makes workers that claim at the same moment pass over each
            // other's rows instead of queueing on their locks (or taking the same task).
            // The claim index holds ready rows only, in claim order, so the scan stops at
            // the limit. Expired tasks are skipped here and marked by `expire_due`.
            let mut select = QueryBuilder::<MySql>::new(
                "SELECT id FROM omniq_tasks FORCE INDEX (omniq_tasks_claim) \
                 WHERE ready_queue = ",
            );
            select
                .push_bind(queue)
                .push(" AND run_at <= ")
                .push_bind(to_micros(now))
                .push(" AND (expires_at IS NULL OR expires_at > ")
                .push_bind(to_micros(now))
                .push(")");
            push_name_filter(&mut select, request, now);
            select
                .push(" ORDER BY neg_priority, run_at, seq LIMIT ")
                .push_bind(to_i64(wanted))
                .push(" FOR UPDATE SKIP LOCKED");
            let ids: Vec<Uuid> = select
                .build_query_scalar()
                .fetch_all(&mut *tx)
                .await
                .map_err(store_error)?;
            if ids.is_empty() {
                continue;
            }
            let mut update = QueryBuilder::<MySql>::new(
                "UPDATE omniq_tasks SET state = 'running', attempts = attempts + 1, \
                 lease_token = ",
            );
            update
                .push_bind(*token.as_uuid())
                .push(format!(", lease_expires_at = {SERVER_NOW_MICROS} + "))
                .push_bind(lease_micros(request.lease))
                .push(", worker_id = ")
                .push_bind(request.worker_id.as_str().to_owned())
                .push(", started_at = ")
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
            let mut select = QueryBuilder::<MySql>::new(format!(
                "SELECT {TASK_COLUMNS} FROM omniq_tasks AS t WHERE t.id IN "
            ));
            push_ids(&mut select, &ids);
            select.push(" ORDER BY t.neg_priority, t.run_at, t.seq");
            let rows = select
                .build()
                .fetch_all(&mut *tx)
                .await
                .map_err(store_error)?;
            for row in &rows {
                // Each row on its own: one that cannot be read is dead-lettered after the
                // claim, and never costs the others theirs.
                let record = match record_from_row(row) {
                    Ok(record) => record,
                    Err(err) => {
                        let id: Uuid = column(row, "id")?;
                        unreadable.push(unreadable_task(
                            "mysql",
                            TaskId::from_uuid(id),
                            token,
                            &err,
                        ));
                        continue;
                    }
                };
                let deadline = record
                    .lease_expires_at
                    .ok_or_else(|| corrupt("lease", "a claimed task has no deadline"))?;
                leases.push(Lease::new(record.spec, token, record.attempts, deadline));
            }
        }
        tx.commit().await?;
        Ok((leases, unreadable))
    }

    /// Renews every held lease of the batch: the held ones are locked and read, then
    /// extended in one statement.
    pub(super) async fn renew(
        &self,
        leases: Vec<LeaseRef>,
        extend: Duration,
    ) -> StoreResult<Vec<LeaseStatus>> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let held = retry_deadlocks(|| self.renew_once(&leases, extend)).await?;
        Ok(leases
            .iter()
            .map(
                |l| match held.get(&(*l.task_id.as_uuid(), *l.token.as_uuid())) {
                    None => LeaseStatus::Lost,
                    Some(true) => LeaseStatus::CancelRequested,
                    Some(false) => LeaseStatus::Held,
                },
            )
            .collect())
    }

    async fn renew_once(
        &self,
        leases: &[LeaseRef],
        extend: Duration,
    ) -> StoreResult<HashMap<(Uuid, Uuid), bool>> {
        let now = self.backend.clock().now();
        let mut ids: Vec<Uuid> = leases.iter().map(|l| *l.task_id.as_uuid()).collect();
        ids.sort();
        ids.dedup();
        let mut tx = Tx::begin(self.backend.pool()).await?;
        let held = held_leases(&mut tx, &ids).await?;
        let wanted: HashMap<(Uuid, Uuid), bool> = held
            .into_iter()
            .filter(|(id, token, _)| {
                leases
                    .iter()
                    .any(|l| l.task_id.as_uuid() == id && l.token.as_uuid() == token)
            })
            .map(|(id, token, cancel)| ((id, token), cancel))
            .collect();
        if !wanted.is_empty() {
            let renewed: Vec<Uuid> = wanted.keys().map(|(id, _)| *id).collect();
            let mut update = QueryBuilder::<MySql>::new(format!(
                "UPDATE omniq_tasks SET lease_expires_at = {SERVER_NOW_MICROS} + "
            ));
            update
                .push_bind(lease_micros(extend))
                .push(", updated_at = ")
                .push_bind(to_micros(now))
                .push(" WHERE id IN ");
            push_ids(&mut update, &renewed);
            update
                .build()
                .execute(&mut *tx)
                .await
                .map_err(store_error)?;
        }
        tx.commit().await?;
        Ok(wanted)
    }

    /// Whether any of `queues` has a task ready to claim.
    pub(super) async fn any_ready(&self, queues: &[String]) -> StoreResult<bool> {
        if queues.is_empty() {
            return Ok(false);
        }
        let now = to_micros(self.backend.clock().now());
        let mut sql = QueryBuilder::<MySql>::new("SELECT 1 FROM omniq_tasks WHERE ready_queue IN ");
        push_texts(&mut sql, queues);
        sql.push(" AND run_at <= ")
            .push_bind(now)
            .push(" AND (expires_at IS NULL OR expires_at > ")
            .push_bind(now)
            .push(") LIMIT 1");
        let found = sql
            .build()
            .fetch_optional(self.backend.pool())
            .await
            .map_err(store_error)?;
        Ok(found.is_some())
    }
}

/// The running tasks among `ids`, locked, with their lease token and whether their
/// cancellation was requested.
async fn held_leases(
    conn: &mut MySqlConnection,
    ids: &[Uuid],
) -> StoreResult<Vec<(Uuid, Uuid, bool)>> {
    let mut select = QueryBuilder::<MySql>::new(
        "SELECT id, lease_token, cancel_requested FROM omniq_tasks \
         WHERE state = 'running' AND lease_token IS NOT NULL AND id IN ",
    );
    push_ids(&mut select, ids);
    select.push(" ORDER BY id FOR UPDATE");
    select
        .build_query_as::<(Uuid, Uuid, bool)>()
        .fetch_all(&mut *conn)
        .await
        .map_err(store_error)
}
