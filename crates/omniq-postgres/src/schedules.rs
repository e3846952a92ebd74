use chrono::{DateTime, Utc};
use omniq_models::Schedule;
use omniq_storage::{StoreError, StoreResult};
use sqlx::AssertSqlSafe;
use sqlx::types::Json;

use crate::PgBackend;
use crate::error::store_error;
use crate::rows::{to_i64, to_json};

/// The schedule store of a [`PgBackend`]. Fires are claimed with a compare-and-set on
/// `next_fire_at`, so any number of schedulers may run.
#[derive(Debug, Clone)]
pub struct PgScheduleStore {
    backend: PgBackend,
}

impl PgScheduleStore {
    pub(crate) fn new(backend: PgBackend) -> Self {
        Self { backend }
    }

    fn table(&self) -> &str {
        &self.backend.names().schedules
    }

    async fn insert(&self, schedule: Schedule) -> StoreResult<(Schedule, bool)> {
        let done = sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {} (name, next_fire_at, paused, body) VALUES ($1, $2, $3, $4::jsonb) \
             ON CONFLICT (name) DO NOTHING",
            self.table()
        )))
        .bind(&schedule.name)
        .bind(schedule.next_fire_at)
        .bind(schedule.paused)
        .bind(to_json(&schedule)?)
        .execute(self.backend.pool())
        .await
        .map_err(store_error)?;
        if done.rows_affected() == 1 {
            return Ok((schedule, true));
        }
        let existing = self
            .read(schedule.name.clone())
            .await?
            .ok_or(StoreError::ScheduleNotFound(schedule.name))?;
        Ok((existing, false))
    }

    async fn replace(&self, schedule: Schedule) -> StoreResult<()> {
        let done = sqlx::query(AssertSqlSafe(format!(
            "UPDATE {} SET next_fire_at = $1, paused = $2, body = $3::jsonb WHERE name = $4",
            self.table()
        )))
        .bind(schedule.next_fire_at)
        .bind(schedule.paused)
        .bind(to_json(&schedule)?)
        .bind(&schedule.name)
        .execute(self.backend.pool())
        .await
        .map_err(store_error)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::ScheduleNotFound(schedule.name));
        }
        Ok(())
    }

    async fn read(&self, name: String) -> StoreResult<Option<Schedule>> {
        let body: Option<Json<Schedule>> = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT body FROM {} WHERE name = $1",
            self.table()
        )))
        .bind(&name)
        .fetch_optional(self.backend.pool())
        .await
        .map_err(store_error)?;
        Ok(body.map(|Json(schedule)| schedule))
    }

    async fn all(&self) -> StoreResult<Vec<Schedule>> {
        let bodies: Vec<Json<Schedule>> = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT body FROM {} ORDER BY name COLLATE \"C\"",
            self.table()
        )))
        .fetch_all(self.backend.pool())
        .await
        .map_err(store_error)?;
        Ok(bodies.into_iter().map(|Json(s)| s).collect())
    }

    async fn due_at(&self, now: DateTime<Utc>, limit: usize) -> StoreResult<Vec<Schedule>> {
        let bodies: Vec<Json<Schedule>> = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT body FROM {} WHERE NOT paused AND next_fire_at <= $1 \
             ORDER BY next_fire_at LIMIT $2",
            self.table()
        )))
        .bind(now)
        .bind(to_i64(limit))
        .fetch_all(self.backend.pool())
        .await
        .map_err(store_error)?;
        Ok(bodies.into_iter().map(|Json(s)| s).collect())
    }

    async fn compare_and_set(
        &self,
        schedule: Schedule,
        expected: Option<DateTime<Utc>>,
    ) -> StoreResult<bool> {
        // The fire is claimed by whoever moves next_fire_at off the value they read. A
        // racer blocks on the winner's row lock, then finds the value changed and matches
        // no row. (Both sides of the comparison are the same instant cut to microseconds.)
        let done = sqlx::query(AssertSqlSafe(format!(
            // Only the fire bookkeeping is merged into the stored body: a pause or an
            // update made since the caller read the schedule stays.
            "UPDATE {} SET next_fire_at = $1, body = body || $2::jsonb \
             WHERE name = $3 AND next_fire_at IS NOT DISTINCT FROM $4",
            self.table()
        )))
        .bind(schedule.next_fire_at)
        .bind(to_json(&schedule.fire())?)
        .bind(&schedule.name)
        .bind(expected)
        .execute(self.backend.pool())
        .await
        .map_err(store_error)?;
        Ok(done.rows_affected() == 1)
    }
}

omniq_sql::forward_schedule_store!(PgScheduleStore);

impl PgScheduleStore {
    async fn remove(&self, name: String) -> StoreResult<bool> {
        let done = sqlx::query(AssertSqlSafe(format!(
            "DELETE FROM {} WHERE name = $1",
            self.table()
        )))
        .bind(&name)
        .execute(self.backend.pool())
        .await
        .map_err(store_error)?;
        Ok(done.rows_affected() > 0)
    }
}
