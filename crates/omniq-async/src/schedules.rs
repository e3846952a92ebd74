use std::future::IntoFuture;

use chrono::{DateTime, Utc};
use omniq_models::{
    MisfirePolicy, Schedule, ScheduleTrigger, TaskEvent, TaskEventKind, TaskOptions,
};
use omniq_scheduler::CompiledTrigger;
use omniq_serialization::SerializationError;
use omniq_storage::BoxFuture;

use crate::{AsyncOmniQ, Error, Result};

/// Stored schedules: create, read, pause, resume, update, delete, preview.
///
/// Workers fire them (see the crate docs); these calls only change what is stored, and
/// any process may make them while workers run.
#[derive(Debug, Clone)]
pub struct Schedules {
    omniq: AsyncOmniQ,
}

impl Schedules {
    pub(crate) fn new(omniq: AsyncOmniQ) -> Self {
        Self { omniq }
    }

    fn log(&self, kind: TaskEventKind, name: &str) {
        self.omniq
            .inner
            .events
            .log(TaskEvent::new(kind).schedule(name));
    }

    /// Reads a schedule.
    ///
    /// # Errors
    /// A store error.
    pub async fn get(&self, name: &str) -> Result<Option<Schedule>> {
        Ok(self
            .omniq
            .inner
            .stores
            .schedules
            .get(name.to_owned())
            .await?)
    }

    /// Every schedule, by name.
    ///
    /// # Errors
    /// A store error.
    pub async fn list(&self) -> Result<Vec<Schedule>> {
        Ok(self.omniq.inner.stores.schedules.list().await?)
    }

    async fn change(&self, name: &str, change: impl FnOnce(&mut Schedule)) -> Result<Schedule> {
        let mut schedule = self
            .get(name)
            .await?
            .ok_or_else(|| Error::ScheduleNotFound(name.to_owned()))?;
        let before = schedule.trigger.clone();
        change(&mut schedule);
        let now = Utc::now();
        if schedule.trigger != before {
            let compiled = CompiledTrigger::new(&schedule.trigger, now)?;
            schedule.next_fire_at = compiled.next_after(now);
        }
        schedule.updated_at = now;
        self.omniq
            .inner
            .stores
            .schedules
            .update(schedule.clone())
            .await
            .map_err(|e| match e {
                omniq_storage::StoreError::ScheduleNotFound(name) => Error::ScheduleNotFound(name),
                other => Error::Store(other),
            })?;
        Ok(schedule)
    }

    /// Pauses a schedule: it keeps its definition and fires nothing until resumed.
    ///
    /// # Errors
    /// [`Error::ScheduleNotFound`], or a store error.
    pub async fn pause(&self, name: &str) -> Result<Schedule> {
        let schedule = self.change(name, |s| s.paused = true).await?;
        self.log(TaskEventKind::SchedulePaused, name);
        Ok(schedule)
    }

    /// Resumes a paused schedule. Fires missed while paused follow its misfire policy.
    ///
    /// # Errors
    /// [`Error::ScheduleNotFound`], or a store error.
    pub async fn resume(&self, name: &str) -> Result<Schedule> {
        let schedule = self.change(name, |s| s.paused = false).await?;
        self.log(TaskEventKind::ScheduleResumed, name);
        Ok(schedule)
    }

    /// Changes a schedule (trigger, task, options, limits). A changed trigger fires next
    /// from now.
    ///
    /// # Errors
    /// [`Error::ScheduleNotFound`], an invalid trigger, or a store error.
    pub async fn update(&self, name: &str, change: impl FnOnce(&mut Schedule)) -> Result<Schedule> {
        self.change(name, change).await
    }

    /// Deletes a schedule. Returns whether it existed.
    ///
    /// # Errors
    /// A store error.
    pub async fn delete(&self, name: &str) -> Result<bool> {
        let existed = self
            .omniq
            .inner
            .stores
            .schedules
            .delete(name.to_owned())
            .await?;
        if existed {
            self.log(TaskEventKind::ScheduleDeleted, name);
        }
        Ok(existed)
    }

    /// The next `count` fire times of a schedule, from its next fire on.
    ///
    /// # Errors
    /// [`Error::ScheduleNotFound`], or a store error.
    pub async fn preview(&self, name: &str, count: usize) -> Result<Vec<DateTime<Utc>>> {
        let schedule = self
            .get(name)
            .await?
            .ok_or_else(|| Error::ScheduleNotFound(name.to_owned()))?;
        let compiled = CompiledTrigger::new(&schedule.trigger, schedule.created_at)?;
        let Some(first) = schedule.next_fire_at else {
            return Ok(Vec::new());
        };
        let mut fires = vec![first];
        fires.extend(compiled.upcoming(first, count.saturating_sub(1)));
        fires.truncate(count);
        Ok(fires)
    }
}

/// A schedule to create; `.await` it. Creating is idempotent by name: if a schedule with
/// the name exists, it is returned unchanged (use [`Schedules::update`] to change it).
#[must_use = "a schedule is not created until awaited"]
pub struct ScheduleBuilder {
    omniq: AsyncOmniQ,
    name: String,
    trigger: ScheduleTrigger,
    task_name: String,
    payload: std::result::Result<Vec<u8>, SerializationError>,
    options: TaskOptions,
    misfire: MisfirePolicy,
    max_runs: Option<u64>,
    until: Option<DateTime<Utc>>,
    paused: bool,
}

impl std::fmt::Debug for ScheduleBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScheduleBuilder")
            .field("name", &self.name)
            .field("trigger", &self.trigger)
            .field("task_name", &self.task_name)
            .finish_non_exhaustive()
    }
}

impl ScheduleBuilder {
    pub(crate) fn new(
        omniq: AsyncOmniQ,
        name: String,
        trigger: ScheduleTrigger,
        task_name: String,
        payload: std::result::Result<Vec<u8>, SerializationError>,
        options: TaskOptions,
    ) -> Self {
        Self {
            omniq,
            name,
            trigger,
            task_name,
            payload,
            options,
            misfire: MisfirePolicy::default(),
            max_runs: None,
            until: None,
            paused: false,
        }
    }

    /// Options of the tasks it enqueues.
    pub fn options(mut self, options: TaskOptions) -> Self {
        self.options = options;
        self
    }

    /// The queue of the tasks it enqueues.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.options = self.options.queue(queue);
        self
    }

    /// What to do with fires missed during downtime or a pause (default: skip them).
    pub fn misfire(mut self, policy: MisfirePolicy) -> Self {
        self.misfire = policy;
        self
    }

    /// Stops after this many fires.
    pub fn max_runs(mut self, runs: u64) -> Self {
        self.max_runs = Some(runs);
        self
    }

    /// Stops after this time.
    pub fn until(mut self, until: DateTime<Utc>) -> Self {
        self.until = Some(until);
        self
    }

    /// Creates it paused.
    pub fn paused(mut self) -> Self {
        self.paused = true;
        self
    }

    async fn create(self) -> Result<Schedule> {
        if self.name.trim().is_empty() {
            return Err(omniq_scheduler::ScheduleError::EmptyName.into());
        }
        let payload = self.payload?;
        let now = Utc::now();
        // An invalid cron expression or time zone is refused here, not at the first fire.
        let compiled = CompiledTrigger::new(&self.trigger, now)?;
        let mut schedule = Schedule::new(self.name, self.trigger, self.task_name, payload, now);
        schedule.options = self.omniq.resolve(self.options);
        schedule.misfire = self.misfire;
        schedule.paused = self.paused;
        schedule.next_fire_at = compiled.next_from(now);
        schedule.max_runs = self.max_runs;
        schedule.until = self.until;
        let (stored, created) = self.omniq.inner.stores.schedules.create(schedule).await?;
        if created {
            self.omniq
                .inner
                .events
                .log(TaskEvent::new(TaskEventKind::ScheduleCreated).schedule(&stored.name));
        }
        Ok(stored)
    }
}

impl IntoFuture for ScheduleBuilder {
    type Output = Result<Schedule>;
    type IntoFuture = BoxFuture<'static, Self::Output>;

    /// # Errors
    /// An invalid trigger ([`Error::Schedule`]), an unencodable payload, or a store error.
    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.create())
    }
}
