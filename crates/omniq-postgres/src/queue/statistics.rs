//! Keeps the planner's statistics of the tasks table fresh after a burst of writes.
//!
//! The claim reads the claim index in order and stops at its limit, but only when the
//! planner knows the queue is large: with statistics from before a burst (a million tasks
//! enqueued in a minute, autovacuum off or not yet round), it estimates a few rows, picks a
//! bitmap scan and sorts every queued row of the queue on each claim (measured: 1.1 s per
//! claim behind a million tasks, 2 ms after `ANALYZE`). So the maintenance every worker runs
//! checks, at most every [`CHECK_EVERY`], how much the table changed since it was last
//! analysed, and analyses it when autovacuum would have: one worker at a time.

use std::time::{Duration, Instant};

use sqlx::AssertSqlSafe;

use super::PgTaskQueue;
use crate::error::store_error;
use omniq_storage::StoreResult;

/// How often one process looks at the table's statistics.
const CHECK_EVERY: Duration = Duration::from_secs(10);
/// Changed rows that make statistics stale, at the least and as a share of the table (as
/// autovacuum's own defaults: 50 rows and 10%, but a larger floor, since a claim on a small
/// queue is fast whatever the plan).
const STALE_ROWS: i64 = 10_000;
const STALE_SHARE: f64 = 0.1;

impl PgTaskQueue {
    /// Analyses the tasks table when it changed much since it was last analysed; at most
    /// one check per [`CHECK_EVERY`] in this process. Returns whether it analysed.
    pub(super) async fn refresh_statistics(&self) -> StoreResult<bool> {
        {
            let mut checked = self
                .backend
                .shared
                .statistics_checked
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if checked.is_some_and(|at| at.elapsed() < CHECK_EVERY) {
                return Ok(false);
            }
            *checked = Some(Instant::now());
        }
        let tasks = &self.backend.names().tasks;
        let row: Option<(i64, f32)> = sqlx::query_as(
            "SELECT s.n_mod_since_analyze, c.reltuples FROM pg_stat_user_tables s \
             JOIN pg_class c ON c.oid = s.relid WHERE s.relid = $1::regclass",
        )
        .bind(tasks)
        .fetch_optional(self.backend.pool())
        .await
        .map_err(store_error)?;
        let Some((changed, rows)) = row else {
            return Ok(false);
        };
        // `reltuples` is -1 for a table never analysed.
        let rows = f64::from(rows.max(0.0));
        #[allow(clippy::cast_precision_loss)]
        let stale = changed >= STALE_ROWS && changed as f64 >= STALE_SHARE * rows;
        if !stale {
            return Ok(false);
        }
        let mut tx = self.backend.pool().begin().await.map_err(store_error)?;
        // One analyser at a time across every worker; the others skip this round.
        let (locked,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_xact_lock(hashtext($1))")
            .bind(format!("omniq analyse {tasks}"))
            .fetch_one(&mut *tx)
            .await
            .map_err(store_error)?;
        if !locked {
            return Ok(false);
        }
        sqlx::query(AssertSqlSafe(format!("ANALYZE {tasks}")))
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        tx.commit().await.map_err(store_error)?;
        tracing::debug!(changed, "analysed the tasks table after a burst of writes");
        Ok(true)
    }
}
