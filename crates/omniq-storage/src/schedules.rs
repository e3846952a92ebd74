use std::fmt::Debug;

use chrono::{DateTime, Utc};
use omniq_models::Schedule;

use crate::{BoxFuture, StoreResult};

/// The store of schedules.
pub trait ScheduleStore: Send + Sync + Debug + 'static {
    /// Creates a schedule unless one with its name exists. Returns the stored schedule
    /// (the existing one when the name was taken) and whether it was created.
    ///
    /// # Errors
    /// A backend error.
    fn create(&self, schedule: Schedule) -> BoxFuture<'_, StoreResult<(Schedule, bool)>>;

    /// Replaces a schedule.
    ///
    /// # Errors
    /// [`StoreError::ScheduleNotFound`](crate::StoreError::ScheduleNotFound), or a backend
    /// error.
    fn update(&self, schedule: Schedule) -> BoxFuture<'_, StoreResult<()>>;

    /// Reads a schedule.
    ///
    /// # Errors
    /// A backend error.
    fn get(&self, name: String) -> BoxFuture<'_, StoreResult<Option<Schedule>>>;

    /// Lists every schedule, by name.
    ///
    /// # Errors
    /// A backend error.
    fn list(&self) -> BoxFuture<'_, StoreResult<Vec<Schedule>>>;

    /// Deletes a schedule. Returns whether it existed.
    ///
    /// # Errors
    /// A backend error.
    fn delete(&self, name: String) -> BoxFuture<'_, StoreResult<bool>>;

    /// Unpaused schedules whose next fire is at or before `now`, up to `limit`.
    ///
    /// # Errors
    /// A backend error.
    fn due(&self, now: DateTime<Utc>, limit: usize) -> BoxFuture<'_, StoreResult<Vec<Schedule>>>;

    /// Atomically moves a schedule's next fire from `expected` to `schedule.next_fire_at`,
    /// recording the fire: only `next_fire_at`, `last_fire_at`, `fire_count` and
    /// `updated_at` are taken from `schedule`; everything else stays as stored, so a pause
    /// or an update made since the caller read the schedule is never undone. Returns false
    /// when the next fire is no longer `expected` (another process got there first, or the
    /// schedule was re-planned), which is how a fire is claimed exactly once.
    ///
    /// # Errors
    /// A backend error.
    fn advance(
        &self,
        schedule: Schedule,
        expected: Option<DateTime<Utc>>,
    ) -> BoxFuture<'_, StoreResult<bool>>;
}
