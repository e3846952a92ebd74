use chrono::{DateTime, Utc};
use omniq_async::{MisfirePolicy, Result, Schedule, TaskOptions};

use crate::runtime::Driver;

/// Stored schedules, from blocking code; see [`omniq_async::Schedules`].
#[derive(Debug, Clone)]
pub struct Schedules {
    driver: Driver,
    inner: omniq_async::Schedules,
}

impl Schedules {
    pub(crate) fn new(driver: Driver, inner: omniq_async::Schedules) -> Self {
        Self { driver, inner }
    }

    /// Reads a schedule.
    ///
    /// # Errors
    /// A store error.
    pub fn get(&self, name: &str) -> Result<Option<Schedule>> {
        let (inner, name) = (self.inner.clone(), name.to_owned());
        self.driver.call(async move { inner.get(&name).await })
    }

    /// Every schedule, by name.
    ///
    /// # Errors
    /// A store error.
    pub fn list(&self) -> Result<Vec<Schedule>> {
        let inner = self.inner.clone();
        self.driver.call(async move { inner.list().await })
    }

    /// Pauses a schedule.
    ///
    /// # Errors
    /// As [`omniq_async::Schedules::pause`].
    pub fn pause(&self, name: &str) -> Result<Schedule> {
        let (inner, name) = (self.inner.clone(), name.to_owned());
        self.driver.call(async move { inner.pause(&name).await })
    }

    /// Resumes a paused schedule under its misfire policy.
    ///
    /// # Errors
    /// As [`omniq_async::Schedules::resume`].
    pub fn resume(&self, name: &str) -> Result<Schedule> {
        let (inner, name) = (self.inner.clone(), name.to_owned());
        self.driver.call(async move { inner.resume(&name).await })
    }

    /// Changes a schedule.
    ///
    /// # Errors
    /// As [`omniq_async::Schedules::update`].
    pub fn update(
        &self,
        name: &str,
        change: impl FnOnce(&mut Schedule) + Send + 'static,
    ) -> Result<Schedule> {
        let (inner, name) = (self.inner.clone(), name.to_owned());
        self.driver
            .call(async move { inner.update(&name, change).await })
    }

    /// Deletes a schedule. Returns whether it existed.
    ///
    /// # Errors
    /// A store error.
    pub fn delete(&self, name: &str) -> Result<bool> {
        let (inner, name) = (self.inner.clone(), name.to_owned());
        self.driver.call(async move { inner.delete(&name).await })
    }

    /// The next `count` fire times.
    ///
    /// # Errors
    /// As [`omniq_async::Schedules::preview`].
    pub fn preview(&self, name: &str, count: usize) -> Result<Vec<DateTime<Utc>>> {
        let (inner, name) = (self.inner.clone(), name.to_owned());
        self.driver
            .call(async move { inner.preview(&name, count).await })
    }
}

/// A schedule to create; [`submit`](ScheduleBuilder::submit) stores it.
#[must_use = "a schedule is not created until `submit` is called"]
#[derive(Debug)]
pub struct ScheduleBuilder {
    driver: Driver,
    inner: omniq_async::ScheduleBuilder,
}

impl ScheduleBuilder {
    pub(crate) fn new(driver: Driver, inner: omniq_async::ScheduleBuilder) -> Self {
        Self { driver, inner }
    }

    fn map(
        self,
        change: impl FnOnce(omniq_async::ScheduleBuilder) -> omniq_async::ScheduleBuilder,
    ) -> Self {
        Self {
            driver: self.driver,
            inner: change(self.inner),
        }
    }

    /// Options of the tasks it enqueues.
    pub fn options(self, options: TaskOptions) -> Self {
        self.map(|b| b.options(options))
    }

    /// The queue of the tasks it enqueues.
    pub fn queue(self, queue: impl Into<String>) -> Self {
        self.map(|b| b.queue(queue))
    }

    /// The misfire policy.
    pub fn misfire(self, policy: MisfirePolicy) -> Self {
        self.map(|b| b.misfire(policy))
    }

    /// Stops after this many fires.
    pub fn max_runs(self, runs: u64) -> Self {
        self.map(|b| b.max_runs(runs))
    }

    /// Stops after this time.
    pub fn until(self, until: DateTime<Utc>) -> Self {
        self.map(|b| b.until(until))
    }

    /// Creates it paused.
    pub fn paused(self) -> Self {
        self.map(omniq_async::ScheduleBuilder::paused)
    }

    /// Stores the schedule (idempotent by name): the blocking facade's one verb for
    /// finishing a builder, as [`EnqueueBuilder::submit`](crate::EnqueueBuilder::submit).
    ///
    /// # Errors
    /// An invalid trigger, an unencodable payload, or a store error.
    pub fn submit(self) -> Result<Schedule> {
        let inner = self.inner;
        self.driver.call(async move { inner.await })
    }
}
