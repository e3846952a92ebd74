//! Claims and lease renewal.

use std::collections::HashMap;
use std::time::Duration;

use omniq_models::{LeaseToken, TaskId};
use omniq_storage::{
    DequeueRequest, Lease, LeaseRef, LeaseStatus, StoreResult, lease_micros, unreadable_task,
};
use sqlx::AssertSqlSafe;
use uuid::Uuid;

use super::PgTaskQueue;
use crate::error::{corrupt, store_error};
use crate::rows::{TASK_COLUMNS, column, record_from_row, to_i64};

impl PgTaskQueue {
    pub(super) async fn claim(&self, request: DequeueRequest) -> StoreResult<Vec<Lease>> {
        let now = self.backend.clock().now();
        let token = LeaseToken::new();
        // One statement per queue claims the batch. FOR UPDATE SKIP LOCKED makes workers
        // that claim at the same moment pass over each other's rows instead of queueing
        // on their locks (or taking the same task): each takes the next free rows. Rows
        // that changed under the lock are checked again by PostgreSQL before they count.
        // Expired tasks are skipped here and marked by `expire_due`. One token serves the
        // batch: each claim still mints a new one, which is what fencing needs. The lease
        // deadline is on the server's clock (`now()`), the one recovery judges it by, so
        // clients whose clocks disagree cannot take each other's live leases.
        // `= ANY(ARRAY(...))`, not `IN (...)`: the subquery becomes an init plan whose ids
        // the update looks up by primary key whatever the planner estimates. With `IN`, a
        // generic plan (a prepared statement's, after five runs) guesses a tenth of the
        // table for `LIMIT $6` and may hash-join against a scan of every task: measured
        // 231 ms per claim behind a million tasks, against 1 ms.
        // `queue = (SELECT $5)`, not `queue = $5`: the planner cannot look the queue up in
        // its statistics, so it plans for an average queue and reads the claim index in
        // order. With the value in view, a queue the statistics do not know yet (one added
        // to a big table since its last analysis) is estimated at one row, and the planner
        // fetched the whole queue through the queue/state index and sorted it on every
        // claim: 8-16 ms per claim for a new queue of 20,000 tasks beside a million
        // others, against 1 ms.
        let sql = format!(
            "UPDATE {tasks} AS t SET state = 'running', attempts = t.attempts + 1, \
             lease_token = $1, lease_expires_at = now() + $2::int8 * INTERVAL '1 microsecond', \
             worker_id = $3, started_at = $4, \
             updated_at = $4 \
             WHERE t.id = ANY(ARRAY(SELECT id FROM {tasks} \
               WHERE queue = (SELECT $5::text) AND state IN ('queued', 'scheduled') AND run_at <= $4 \
               AND (expires_at IS NULL OR expires_at > $4) \
               AND ($7::text[] IS NULL OR name = ANY($7) OR run_at <= $8) \
               ORDER BY priority DESC, run_at, seq LIMIT $6 \
               FOR UPDATE SKIP LOCKED)) \
             RETURNING {TASK_COLUMNS}, t.seq",
            tasks = self.backend.names().tasks
        );
        // The name filter (rolling deploys): a task of another name is taken all the same
        // once due by this time (NULL, never, without a grace).
        let unknown_due_by = request.unknown_due_by(now);
        let mut leases = Vec::new();
        let mut unreadable = Vec::new();
        for queue in &request.queues {
            let wanted = request.limit - leases.len();
            if wanted == 0 {
                break;
            }
            let rows = sqlx::query(AssertSqlSafe(sql.clone()))
                .bind(token.as_uuid())
                .bind(lease_micros(request.lease))
                .bind(request.worker_id.as_str())
                .bind(now)
                .bind(queue)
                .bind(to_i64(wanted))
                .bind(request.names.as_deref())
                .bind(unknown_due_by)
                .fetch_all(self.backend.pool())
                .await
                .map_err(store_error)?;
            let mut claimed = Vec::with_capacity(rows.len());
            for row in &rows {
                let seq: i64 = column(row, "seq")?;
                // Each row on its own: one that cannot be read is dead-lettered below, and
                // never costs the others their claim.
                match record_from_row(row) {
                    Ok(record) => claimed.push((seq, record)),
                    Err(err) => {
                        let id: Uuid = column(row, "id")?;
                        unreadable.push(unreadable_task(
                            "postgres",
                            TaskId::from_uuid(id),
                            token,
                            &err,
                        ));
                    }
                }
            }
            // RETURNING does not keep the subquery's order.
            claimed.sort_by(|(a_seq, a), (b_seq, b)| {
                b.spec
                    .priority
                    .cmp(&a.spec.priority)
                    .then(a.spec.run_at.cmp(&b.spec.run_at))
                    .then(a_seq.cmp(b_seq))
            });
            for (_, record) in claimed {
                let deadline = record
                    .lease_expires_at
                    .ok_or_else(|| corrupt("lease", "a claimed task has no deadline"))?;
                leases.push(Lease::new(record.spec, token, record.attempts, deadline));
            }
        }
        if !unreadable.is_empty()
            && let Err(err) = self.complete_batch(unreadable).await
        {
            // Their leases lapse and recovery takes them back; the readable ones still run.
            tracing::warn!(%err, "cannot dead-letter unreadable tasks");
        }
        Ok(leases)
    }

    /// Renews every held lease of the batch in one statement.
    pub(super) async fn renew(
        &self,
        leases: Vec<LeaseRef>,
        extend: Duration,
    ) -> StoreResult<Vec<LeaseStatus>> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let now = self.backend.clock().now();
        let rows: Vec<(Uuid, Uuid, bool)> = sqlx::query_as(AssertSqlSafe(format!(
            "UPDATE {tasks} AS t SET \
             lease_expires_at = now() + $1::int8 * INTERVAL '1 microsecond', updated_at = $2 \
             FROM UNNEST($3::uuid[], $4::uuid[]) AS l(id, token) \
             WHERE t.id = l.id AND t.lease_token = l.token AND t.state = 'running' \
             RETURNING t.id, l.token, t.cancel_requested",
            tasks = self.backend.names().tasks
        )))
        .bind(lease_micros(extend))
        .bind(now)
        .bind(
            leases
                .iter()
                .map(|l| *l.task_id.as_uuid())
                .collect::<Vec<_>>(),
        )
        .bind(
            leases
                .iter()
                .map(|l| *l.token.as_uuid())
                .collect::<Vec<_>>(),
        )
        .fetch_all(self.backend.pool())
        .await
        .map_err(store_error)?;
        let held: HashMap<(Uuid, Uuid), bool> = rows
            .into_iter()
            .map(|(id, token, cancel)| ((id, token), cancel))
            .collect();
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
}
