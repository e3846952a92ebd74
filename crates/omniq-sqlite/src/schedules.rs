use chrono::{DateTime, Utc};
use omniq_models::Schedule;
use omniq_storage::{StoreError, StoreResult};

use crate::SqliteBackend;
use crate::error::{corrupt, store_error};
use crate::rows::to_json;
use crate::time::to_micros;

/// The schedule store of a [`SqliteBackend`].
#[derive(Debug, Clone)]
pub struct SqliteScheduleStore {
    backend: SqliteBackend,
}

fn parse(body: &str) -> StoreResult<Schedule> {
    serde_json::from_str(body).map_err(|e| corrupt("schedule", e))
}

impl SqliteScheduleStore {
    pub(crate) fn new(backend: SqliteBackend) -> Self {
        Self { backend }
    }

    async fn insert(&self, schedule: Schedule) -> StoreResult<(Schedule, bool)> {
        let done = sqlx::query(
            "INSERT INTO omniq_schedules (name, next_fire_at, paused, body) VALUES (?, ?, ?, ?) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(&schedule.name)
        .bind(schedule.next_fire_at.map(to_micros))
        .bind(schedule.paused)
        .bind(to_json(&schedule)?)
        .execute(&self.backend.pool)
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
        let done = sqlx::query(
            "UPDATE omniq_schedules SET next_fire_at = ?, paused = ?, body = ? WHERE name = ?",
        )
        .bind(schedule.next_fire_at.map(to_micros))
        .bind(schedule.paused)
        .bind(to_json(&schedule)?)
        .bind(&schedule.name)
        .execute(&self.backend.pool)
        .await
        .map_err(store_error)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::ScheduleNotFound(schedule.name));
        }
        Ok(())
    }

    async fn read(&self, name: String) -> StoreResult<Option<Schedule>> {
        let body: Option<String> =
            sqlx::query_scalar("SELECT body FROM omniq_schedules WHERE name = ?")
                .bind(&name)
                .fetch_optional(&self.backend.reader)
                .await
                .map_err(store_error)?;
        body.as_deref().map(parse).transpose()
    }

    async fn bodies(
        &self,
        sql: &'static str,
        now: Option<i64>,
        limit: i64,
    ) -> StoreResult<Vec<Schedule>> {
        let bodies: Vec<String> = sqlx::query_scalar(sql)
            .bind(now)
            .bind(limit)
            .fetch_all(&self.backend.reader)
            .await
            .map_err(store_error)?;
        bodies.iter().map(|b| parse(b)).collect()
    }

    async fn compare_and_set(
        &self,
        schedule: Schedule,
        expected: Option<DateTime<Utc>>,
    ) -> StoreResult<bool> {
        // The fire is claimed by whoever moves next_fire_at off the value they read; the
        // other racers' updates match no row.
        let done = sqlx::query(
            // Only the fire bookkeeping is merged into the stored body: a pause or an
            // update made since the caller read the schedule stays.
            "UPDATE omniq_schedules SET next_fire_at = ?, body = json_patch(body, ?) \
             WHERE name = ? AND next_fire_at IS ?",
        )
        .bind(schedule.next_fire_at.map(to_micros))
        .bind(to_json(&schedule.fire())?)
        .bind(&schedule.name)
        .bind(expected.map(to_micros))
        .execute(&self.backend.pool)
        .await
        .map_err(store_error)?;
        Ok(done.rows_affected() == 1)
    }
}

impl SqliteScheduleStore {
    async fn all(&self) -> StoreResult<Vec<Schedule>> {
        self.bodies(
            "SELECT body FROM omniq_schedules WHERE ?1 IS NULL ORDER BY name LIMIT ?2",
            None,
            i64::MAX,
        )
        .await
    }

    async fn due_at(&self, now: DateTime<Utc>, limit: usize) -> StoreResult<Vec<Schedule>> {
        self.bodies(
            "SELECT body FROM omniq_schedules WHERE paused = 0 AND next_fire_at <= ?1 \
             ORDER BY next_fire_at LIMIT ?2",
            Some(to_micros(now)),
            i64::try_from(limit).unwrap_or(i64::MAX),
        )
        .await
    }
}

omniq_sql::forward_schedule_store!(SqliteScheduleStore);

impl SqliteScheduleStore {
    async fn remove(&self, name: String) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM omniq_schedules WHERE name = ?")
            .bind(&name)
            .execute(&self.backend.pool)
            .await
            .map_err(store_error)?;
        Ok(done.rows_affected() > 0)
    }
}
