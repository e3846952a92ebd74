use chrono::{DateTime, Utc};
use omniq_models::TaskEvent;
use omniq_storage::{EventQuery, StoreResult, effective_purge_limit};
use sqlx::{AssertSqlSafe, Postgres, QueryBuilder};

use crate::PgBackend;
use crate::error::{corrupt, store_error};
use crate::rows::{to_i64, to_json};

/// The event store of a [`PgBackend`]: filter columns plus the whole event as JSON text.
#[derive(Debug, Clone)]
pub struct PgEventStore {
    backend: PgBackend,
}

impl PgEventStore {
    pub(crate) fn new(backend: PgBackend) -> Self {
        Self { backend }
    }

    async fn append_all(&self, events: Vec<TaskEvent>) -> StoreResult<()> {
        if events.is_empty() {
            return Ok(());
        }
        let bodies = events
            .iter()
            .map(to_json)
            .collect::<StoreResult<Vec<_>>>()?;
        // One statement per batch; the rows keep the batch's order.
        //
        // Committed without waiting for the WAL flush (`synchronous_commit` off for this
        // statement's transaction only): events are written in the background and are
        // best effort already (a writer that falls behind drops them), so a server crash
        // may lose the last fraction of a second of them, and nothing else. Waiting for
        // the flush made every event batch a disk sync competing with the claims and
        // completions on the task's path (latency p99 on PostgreSQL ~5 ms -> ~3 ms).
        // Tasks, results and completions keep synchronous commits; and since WAL is
        // flushed in order, an event is durable once any later task change is.
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {events} (task_id, queue, kind, at, body) \
             SELECT e.task_id, e.queue, e.kind, e.at, e.body \
             FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::text[]) \
               WITH ORDINALITY AS e(task_id, queue, kind, at, body, ord) \
             CROSS JOIN (SELECT set_config('synchronous_commit', 'off', true)) AS relaxed \
             ORDER BY e.ord",
            events = self.backend.names().events
        )))
        .bind(
            events
                .iter()
                .map(|e| e.task_id.map(|id| *id.as_uuid()))
                .collect::<Vec<_>>(),
        )
        .bind(
            events
                .iter()
                .map(|e| e.queue.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(events.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.at).collect::<Vec<_>>())
        .bind(bodies)
        .execute(self.backend.pool())
        .await
        .map_err(store_error)?;
        Ok(())
    }

    async fn select(&self, query: EventQuery) -> StoreResult<Vec<TaskEvent>> {
        let mut sql = QueryBuilder::<Postgres>::new(format!(
            "SELECT body FROM {events} WHERE TRUE",
            events = self.backend.names().events
        ));
        if let Some(id) = query.task_id {
            sql.push(" AND task_id = ").push_bind(*id.as_uuid());
        }
        if let Some(queue) = &query.queue {
            sql.push(" AND queue = ").push_bind(queue.clone());
        }
        if !query.kinds.is_empty() {
            let kinds: Vec<&'static str> = query.kinds.iter().map(|k| k.as_str()).collect();
            sql.push(" AND kind = ANY(").push_bind(kinds).push(")");
        }
        if let Some(since) = query.since {
            sql.push(" AND at >= ").push_bind(since);
        }
        if let Some(until) = query.until {
            sql.push(" AND at < ").push_bind(until);
        }
        sql.push(" ORDER BY seq LIMIT ")
            .push_bind(to_i64(query.effective_limit()));
        let bodies: Vec<String> = sql
            .build_query_scalar()
            .fetch_all(self.backend.pool())
            .await
            .map_err(store_error)?;
        bodies
            .iter()
            .map(|body| serde_json::from_str(body).map_err(|e| corrupt("event", e)))
            .collect()
    }
}

omniq_sql::forward_event_store!(PgEventStore);

impl PgEventStore {
    async fn purge_older(&self, before: DateTime<Utc>, limit: usize) -> StoreResult<u64> {
        // The BRIN index on `at` finds the old block ranges and the heap scan stops at
        // `limit` rows: no order is needed, every row before the cutoff goes eventually.
        let done = sqlx::query(AssertSqlSafe(format!(
            "DELETE FROM {events} WHERE seq = ANY(ARRAY(SELECT seq FROM {events} \
             WHERE at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED))",
            events = self.backend.names().events
        )))
        .bind(before)
        .bind(i64::try_from(effective_purge_limit(limit)).unwrap_or(i64::MAX))
        .execute(self.backend.pool())
        .await
        .map_err(store_error)?;
        Ok(done.rows_affected())
    }
}
