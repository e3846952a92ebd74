//! Claims and lease renewal.

use std::time::Duration;

use chrono::Utc;
use omniq_models::LeaseToken;
use omniq_storage::{DequeueRequest, Lease, LeaseRef, LeaseStatus, StoreResult, unreadable_task};
use sqlx::{AssertSqlSafe, Row};

use super::{BEGIN_WRITE, SqliteTaskQueue};
use crate::error::store_error;
use crate::rows::{TASK_COLUMNS, parse_id, record_from_row, to_json};
use crate::time::{deadline, to_micros};

impl SqliteTaskQueue {
    pub(super) async fn claim(&self, request: DequeueRequest) -> StoreResult<Vec<Lease>> {
        let now = self.backend.clock.now();
        // Lease deadlines follow the store's clock, which for a file on one machine is the
        // machine's, never the client's (see `Clock`).
        let until = deadline(Utc::now(), request.lease);
        let token = LeaseToken::new();
        // The name filter (rolling deploys): the names as a JSON array, and the latest
        // run_at at which a task of another name is taken all the same.
        let names = request.names.as_ref().map(to_json).transpose()?;
        let unknown_due_by = request.unknown_due_by(now).map_or(i64::MIN, to_micros);
        let mut leases = Vec::new();
        let mut unreadable = Vec::new();
        for queue in &request.queues {
            let wanted = request.limit - leases.len();
            if wanted == 0 {
                break;
            }
            // One statement claims the batch: SQLite runs it under the write lock, so two
            // workers never take the same row. One token serves the whole batch: each claim
            // still mints a new one, which is what fencing needs. Expired tasks are skipped
            // here and marked by `expire_due`.
            let rows = sqlx::query(AssertSqlSafe(format!(
                "UPDATE omniq_tasks SET state = 'running', attempts = attempts + 1, \
                 lease_token = ?1, lease_expires_at = ?2, worker_id = ?3, started_at = ?4, \
                 updated_at = ?4 \
                 WHERE seq IN (SELECT seq FROM omniq_tasks \
                   WHERE queue = ?5 AND state IN ('queued', 'scheduled') AND run_at <= ?4 \
                   AND (expires_at IS NULL OR expires_at > ?4) \
                   AND (?7 IS NULL OR name IN (SELECT value FROM json_each(?7)) \
                     OR run_at <= ?8) \
                   ORDER BY priority DESC, run_at, seq LIMIT ?6) \
                 RETURNING seq, {TASK_COLUMNS}"
            )))
            .bind(token.to_string())
            .bind(to_micros(until))
            .bind(request.worker_id.as_str())
            .bind(to_micros(now))
            .bind(queue)
            .bind(i64::try_from(wanted).unwrap_or(i64::MAX))
            .bind(names.as_deref())
            .bind(unknown_due_by)
            .fetch_all(&self.backend.pool)
            .await
            .map_err(store_error)?;
            let mut claimed = Vec::with_capacity(rows.len());
            for row in &rows {
                let seq: i64 = row.try_get("seq").map_err(store_error)?;
                // Each row on its own: one that cannot be read is dead-lettered below, and
                // never costs the others their claim.
                match record_from_row(row) {
                    Ok(record) => claimed.push((seq, record)),
                    Err(err) => {
                        let id: String = row.try_get("id").map_err(store_error)?;
                        unreadable.push(unreadable_task("sqlite", parse_id(&id)?, token, &err));
                    }
                }
            }
            // RETURNING does not promise the subquery's order.
            claimed.sort_by(|(a_seq, a), (b_seq, b)| {
                b.spec
                    .priority
                    .cmp(&a.spec.priority)
                    .then(a.spec.run_at.cmp(&b.spec.run_at))
                    .then(a_seq.cmp(b_seq))
            });
            leases.extend(
                claimed
                    .into_iter()
                    .map(|(_, record)| Lease::new(record.spec, token, record.attempts, until)),
            );
        }
        if !unreadable.is_empty()
            && let Err(err) = self.complete_batch(unreadable).await
        {
            // Their leases lapse and recovery takes them back; the readable ones still run.
            tracing::warn!(%err, "cannot dead-letter unreadable tasks");
        }
        Ok(leases)
    }

    pub(super) async fn renew(
        &self,
        leases: Vec<LeaseRef>,
        extend: Duration,
    ) -> StoreResult<Vec<LeaseStatus>> {
        let now = self.backend.clock.now();
        let until = to_micros(deadline(Utc::now(), extend));
        let mut tx = self
            .backend
            .pool
            .begin_with(BEGIN_WRITE)
            .await
            .map_err(store_error)?;
        let mut statuses = Vec::with_capacity(leases.len());
        for lease in leases {
            let cancel_requested: Option<bool> = sqlx::query_scalar(
                "UPDATE omniq_tasks SET lease_expires_at = ?, updated_at = ? \
                 WHERE id = ? AND lease_token = ? AND state = 'running' \
                 RETURNING cancel_requested",
            )
            .bind(until)
            .bind(to_micros(now))
            .bind(lease.task_id.to_string())
            .bind(lease.token.to_string())
            .fetch_optional(&mut *tx)
            .await
            .map_err(store_error)?;
            statuses.push(match cancel_requested {
                None => LeaseStatus::Lost,
                Some(true) => LeaseStatus::CancelRequested,
                Some(false) => LeaseStatus::Held,
            });
        }
        tx.commit().await.map_err(store_error)?;
        Ok(statuses)
    }
}
