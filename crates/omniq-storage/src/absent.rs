//! The results, events and schedules of a backend that keeps tasks only (a broker):
//! every call is refused with a typed error that names the store to set instead.

use std::time::Duration;

use chrono::{DateTime, Utc};
use omniq_models::{Schedule, TaskEvent, TaskId, TaskResult};

use crate::{
    BoxFuture, EventQuery, EventStore, ResultStore, ScheduleStore, StoreError, StoreResult,
};

/// Stands in for the result, event and schedule stores of a backend that holds tasks only
/// (RabbitMQ, SQS). Each call fails with [`StoreError::Unsupported`]; settings that point
/// one of those stores at such a backend are refused before any store opens, so this is
/// reached only by code that opens the backend by hand.
#[derive(Debug, Clone, Copy)]
pub struct AbsentStore {
    backend: &'static str,
}

impl AbsentStore {
    /// The missing stores of `backend` (its name, as in errors).
    pub fn new(backend: &'static str) -> Self {
        Self { backend }
    }

    fn refuse<T: Send + 'static>(&self, operation: &'static str) -> BoxFuture<'_, StoreResult<T>> {
        let backend = self.backend;
        Box::pin(async move { Err(StoreError::Unsupported { backend, operation }) })
    }
}

const RESULTS: &str = "results (set `result_storage_url` to another store)";
const EVENTS: &str = "events (set `event_storage_url` to another store)";
const SCHEDULES: &str = "schedules (set `schedule_storage_url` to another store)";

impl ResultStore for AbsentStore {
    fn put(&self, results: Vec<TaskResult>) -> BoxFuture<'_, StoreResult<()>> {
        let _ = results;
        self.refuse(RESULTS)
    }

    fn get(&self, id: TaskId) -> BoxFuture<'_, StoreResult<Option<TaskResult>>> {
        let _ = id;
        self.refuse(RESULTS)
    }

    fn delete(&self, id: TaskId) -> BoxFuture<'_, StoreResult<bool>> {
        let _ = id;
        self.refuse(RESULTS)
    }

    fn purge_expired(&self, limit: usize) -> BoxFuture<'_, StoreResult<u64>> {
        let _ = limit;
        self.refuse(RESULTS)
    }

    fn wait_for(
        &self,
        id: TaskId,
        timeout: Duration,
    ) -> BoxFuture<'_, StoreResult<Option<TaskResult>>> {
        let _ = (id, timeout);
        self.refuse(RESULTS)
    }
}

impl EventStore for AbsentStore {
    fn append(&self, events: Vec<TaskEvent>) -> BoxFuture<'_, StoreResult<()>> {
        let _ = events;
        self.refuse(EVENTS)
    }

    fn query(&self, query: EventQuery) -> BoxFuture<'_, StoreResult<Vec<TaskEvent>>> {
        let _ = query;
        self.refuse(EVENTS)
    }

    fn purge_before(&self, before: DateTime<Utc>, limit: usize) -> BoxFuture<'_, StoreResult<u64>> {
        let _ = (before, limit);
        self.refuse(EVENTS)
    }
}

impl ScheduleStore for AbsentStore {
    fn create(&self, schedule: Schedule) -> BoxFuture<'_, StoreResult<(Schedule, bool)>> {
        let _ = schedule;
        self.refuse(SCHEDULES)
    }

    fn update(&self, schedule: Schedule) -> BoxFuture<'_, StoreResult<()>> {
        let _ = schedule;
        self.refuse(SCHEDULES)
    }

    fn get(&self, name: String) -> BoxFuture<'_, StoreResult<Option<Schedule>>> {
        let _ = name;
        self.refuse(SCHEDULES)
    }

    fn list(&self) -> BoxFuture<'_, StoreResult<Vec<Schedule>>> {
        self.refuse(SCHEDULES)
    }

    fn delete(&self, name: String) -> BoxFuture<'_, StoreResult<bool>> {
        let _ = name;
        self.refuse(SCHEDULES)
    }

    fn due(&self, now: DateTime<Utc>, limit: usize) -> BoxFuture<'_, StoreResult<Vec<Schedule>>> {
        let _ = (now, limit);
        self.refuse(SCHEDULES)
    }

    fn advance(
        &self,
        schedule: Schedule,
        expected: Option<DateTime<Utc>>,
    ) -> BoxFuture<'_, StoreResult<bool>> {
        let _ = (schedule, expected);
        self.refuse(SCHEDULES)
    }
}
