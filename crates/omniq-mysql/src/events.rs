use chrono::{DateTime, Utc};
use omniq_models::TaskEvent;
use omniq_storage::{EventQuery, StoreResult, effective_purge_limit};
use sqlx::{MySql, QueryBuilder};

use crate::MySqlBackend;
use crate::error::store_error;
use crate::rows::{from_json, push_texts, to_i64, to_json};
use crate::time::to_micros;

/// Rows per INSERT statement.
const ROWS_PER_INSERT: usize = 1000;

/// The event store of a [`MySqlBackend`]: filter columns plus the whole event as JSON.
#[derive(Debug, Clone)]
pub struct MySqlEventStore {
    backend: MySqlBackend,
}

impl MySqlEventStore {
    pub(crate) fn new(backend: MySqlBackend) -> Self {
        Self { backend }
    }

    async fn append_all(&self, events: Vec<TaskEvent>) -> StoreResult<()> {
        if events.is_empty() {
            return Ok(());
        }
        let rows = events
            .iter()
            .map(|e| Ok((e, to_json(e)?)))
            .collect::<StoreResult<Vec<_>>>()?;
        // Multi-row statements; the rows keep the batch's order.
        for chunk in rows.chunks(ROWS_PER_INSERT) {
            let mut insert = QueryBuilder::<MySql>::new(
                "INSERT INTO omniq_events (task_id, queue, kind, at, body) ",
            );
            insert.push_values(chunk, |mut row, (event, body)| {
                row.push_bind(event.task_id.map(|id| *id.as_uuid()))
                    .push_bind(event.queue.clone())
                    .push_bind(event.kind.as_str())
                    .push_bind(to_micros(event.at))
                    .push_bind(body.clone());
            });
            insert
                .build()
                .execute(self.backend.pool())
                .await
                .map_err(store_error)?;
        }
        Ok(())
    }

    async fn select(&self, query: EventQuery) -> StoreResult<Vec<TaskEvent>> {
        let mut sql = QueryBuilder::<MySql>::new("SELECT body FROM omniq_events WHERE TRUE");
        if let Some(id) = query.task_id {
            sql.push(" AND task_id = ").push_bind(*id.as_uuid());
        }
        if let Some(queue) = &query.queue {
            sql.push(" AND queue = ").push_bind(queue.clone());
        }
        if !query.kinds.is_empty() {
            let kinds: Vec<&'static str> = query.kinds.iter().map(|k| k.as_str()).collect();
            sql.push(" AND kind IN ");
            push_texts(&mut sql, &kinds);
        }
        if let Some(since) = query.since {
            sql.push(" AND at >= ").push_bind(to_micros(since));
        }
        if let Some(until) = query.until {
            sql.push(" AND at < ").push_bind(to_micros(until));
        }
        sql.push(" ORDER BY seq LIMIT ")
            .push_bind(to_i64(query.effective_limit()));
        let bodies: Vec<String> = sql
            .build_query_scalar()
            .fetch_all(self.backend.pool())
            .await
            .map_err(store_error)?;
        bodies.iter().map(|body| from_json("event", body)).collect()
    }
}

omniq_sql::forward_event_store!(MySqlEventStore);

impl MySqlEventStore {
    async fn purge_older(&self, before: DateTime<Utc>, limit: usize) -> StoreResult<u64> {
        // Bounded through the index on `at`, so one call locks a short range only.
        let done = sqlx::query("DELETE FROM omniq_events WHERE at < ? ORDER BY at LIMIT ?")
            .bind(to_micros(before))
            .bind(i64::try_from(effective_purge_limit(limit)).unwrap_or(i64::MAX))
            .execute(self.backend.pool())
            .await
            .map_err(store_error)?;
        Ok(done.rows_affected())
    }
}
