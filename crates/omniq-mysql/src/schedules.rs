use chrono::{DateTime, Utc};
use omniq_models::Schedule;
use omniq_storage::{StoreError, StoreResult};

use crate::MySqlBackend;
use crate::error::{is_duplicate, store_error};
use crate::rows::{from_json, to_i64, to_json};
use crate::time::to_micros;

/// The schedule store of a [`MySqlBackend`]. Fires are claimed with a compare-and-set on
/// `next_fire_at`, so any number of schedulers may run.
#[derive(Debug, Clone)]
pub struct MySqlScheduleStore {
    backend: MySqlBackend,
}

fn parse(bodies: Vec<String>) -> StoreResult<Vec<Schedule>> {
    bodies
        .iter()
        .map(|body| from_json("schedule", body))
        .collect()
}

impl MySqlScheduleStore {
    pub(crate) fn new(backend: MySqlBackend) -> Self {
        Self { backend }
    }

    async fn insert(&self, schedule: Schedule) -> StoreResult<(Schedule, bool)> {
        let done = sqlx::query(
            "INSERT INTO omniq_schedules (name, next_fire_at, paused, body) VALUES (?, ?, ?, ?)",
        )
        .bind(&schedule.name)
        .bind(schedule.next_fire_at.map(to_micros))
        .bind(schedule.paused)
        .bind(to_json(&schedule)?)
        .execute(self.backend.pool())
        .await;
        match done {
            Ok(_) => Ok((schedule, true)),
            Err(err) if is_duplicate(&err) => {
                let existing = self
                    .read(schedule.name.clone())
                    .await?
                    .ok_or(StoreError::ScheduleNotFound(schedule.name))?;
                Ok((existing, false))
            }
            Err(err) => Err(store_error(err)),
        }
    }

    async fn replace(&self, schedule: Schedule) -> StoreResult<()> {
        // Connections report matched rows (CLIENT_FOUND_ROWS), so an unchanged schedule
        // still counts as found.
        let done = sqlx::query(
            "UPDATE omniq_schedules SET next_fire_at = ?, paused = ?, body = ? WHERE name = ?",
        )
        .bind(schedule.next_fire_at.map(to_micros))
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
        let body: Option<String> =
            sqlx::query_scalar("SELECT body FROM omniq_schedules WHERE name = ?")
                .bind(&name)
                .fetch_optional(self.backend.pool())
                .await
                .map_err(store_error)?;
        body.map(|body| from_json("schedule", &body)).transpose()
    }

    async fn all(&self) -> StoreResult<Vec<Schedule>> {
        // The table's binary collation sorts names byte by byte.
        let bodies: Vec<String> =
            sqlx::query_scalar("SELECT body FROM omniq_schedules ORDER BY name")
                .fetch_all(self.backend.pool())
                .await
                .map_err(store_error)?;
        parse(bodies)
    }

    async fn due_at(&self, now: DateTime<Utc>, limit: usize) -> StoreResult<Vec<Schedule>> {
        let bodies: Vec<String> = sqlx::query_scalar(
            "SELECT body FROM omniq_schedules WHERE NOT paused AND next_fire_at <= ? \
             ORDER BY next_fire_at LIMIT ?",
        )
        .bind(to_micros(now))
        .bind(to_i64(limit))
        .fetch_all(self.backend.pool())
        .await
        .map_err(store_error)?;
        parse(bodies)
    }

    async fn compare_and_set(
        &self,
        schedule: Schedule,
        expected: Option<DateTime<Utc>>,
    ) -> StoreResult<bool> {
        // The fire is claimed by whoever moves next_fire_at off the value they read. A
        // racer blocks on the winner's row lock, then finds the value changed and matches
        // no row. (Both sides of the comparison are the same instant cut to microseconds.)
        let done = sqlx::query(
            // Only the fire bookkeeping is merged into the stored body: a pause or an
            // update made since the caller read the schedule stays.
            "UPDATE omniq_schedules SET next_fire_at = ?, body = JSON_MERGE_PATCH(body, ?) \
             WHERE name = ? AND next_fire_at <=> ?",
        )
        .bind(schedule.next_fire_at.map(to_micros))
        .bind(to_json(&schedule.fire())?)
        .bind(&schedule.name)
        .bind(expected.map(to_micros))
        .execute(self.backend.pool())
        .await
        .map_err(store_error)?;
        Ok(done.rows_affected() == 1)
    }
}

omniq_sql::forward_schedule_store!(MySqlScheduleStore);

impl MySqlScheduleStore {
    async fn remove(&self, name: String) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM omniq_schedules WHERE name = ?")
            .bind(&name)
            .execute(self.backend.pool())
            .await
            .map_err(store_error)?;
        Ok(done.rows_affected() > 0)
    }
}
