use chrono::{DateTime, Utc};
use omniq_models::TaskEvent;
use omniq_storage::{EventQuery, StoreResult, effective_purge_limit};
use sqlx::{QueryBuilder, Sqlite};

use crate::SqliteBackend;
use crate::error::{corrupt, store_error};
use crate::rows::ROWS_PER_INSERT;
use crate::rows::to_json;
use crate::time::to_micros;

/// The event store of a [`SqliteBackend`].
#[derive(Debug, Clone)]
pub struct SqliteEventStore {
    backend: SqliteBackend,
}

impl SqliteEventStore {
    pub(crate) fn new(backend: SqliteBackend) -> Self {
        Self { backend }
    }

    async fn append_all(&self, events: Vec<TaskEvent>) -> StoreResult<()> {
        if events.is_empty() {
            return Ok(());
        }
        let mut tx = self.backend.pool.begin().await.map_err(store_error)?;
        // Multi-row inserts: each statement is a round trip to sqlx's SQLite thread.
        for chunk in events.chunks(ROWS_PER_INSERT) {
            let mut sql = QueryBuilder::<Sqlite>::new(
                "INSERT INTO omniq_events (task_id, queue, kind, at, body) ",
            );
            let mut rows = Vec::with_capacity(chunk.len());
            for event in chunk {
                rows.push((event, to_json(event)?));
            }
            sql.push_values(rows, |mut row, (event, body)| {
                row.push_bind(event.task_id.map(|id| id.to_string()))
                    .push_bind(event.queue.clone())
                    .push_bind(event.kind.as_str())
                    .push_bind(to_micros(event.at))
                    .push_bind(body);
            });
            sql.build().execute(&mut *tx).await.map_err(store_error)?;
        }
        tx.commit().await.map_err(store_error)?;
        Ok(())
    }

    async fn select(&self, query: EventQuery) -> StoreResult<Vec<TaskEvent>> {
        let mut sql = QueryBuilder::<Sqlite>::new("SELECT body FROM omniq_events WHERE 1 = 1");
        if let Some(id) = query.task_id {
            sql.push(" AND task_id = ").push_bind(id.to_string());
        }
        if let Some(queue) = &query.queue {
            sql.push(" AND queue = ").push_bind(queue.clone());
        }
        if !query.kinds.is_empty() {
            sql.push(" AND kind IN (");
            let mut kinds = sql.separated(", ");
            for kind in &query.kinds {
                kinds.push_bind(kind.as_str());
            }
            sql.push(")");
        }
        if let Some(since) = query.since {
            sql.push(" AND at >= ").push_bind(to_micros(since));
        }
        if let Some(until) = query.until {
            sql.push(" AND at < ").push_bind(to_micros(until));
        }
        sql.push(" ORDER BY seq LIMIT ")
            .push_bind(i64::try_from(query.effective_limit()).unwrap_or(i64::MAX));
        let bodies: Vec<(String,)> = sql
            .build_query_as()
            .fetch_all(&self.backend.reader)
            .await
            .map_err(store_error)?;
        bodies
            .into_iter()
            .map(|(body,)| serde_json::from_str(&body).map_err(|e| corrupt("event", e)))
            .collect()
    }
}

omniq_sql::forward_event_store!(SqliteEventStore);

impl SqliteEventStore {
    async fn purge_older(&self, before: DateTime<Utc>, limit: usize) -> StoreResult<u64> {
        // Bounded through the index on `at`, so one call holds the writer briefly.
        let done = sqlx::query(
            "DELETE FROM omniq_events WHERE seq IN (SELECT seq FROM omniq_events \
             WHERE at < ?1 ORDER BY at LIMIT ?2)",
        )
        .bind(to_micros(before))
        .bind(i64::try_from(effective_purge_limit(limit)).unwrap_or(i64::MAX))
        .execute(&self.backend.pool)
        .await
        .map_err(store_error)?;
        Ok(done.rows_affected())
    }
}
