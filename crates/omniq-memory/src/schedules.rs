use std::collections::BTreeMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use omniq_models::Schedule;
use omniq_storage::{BoxFuture, ScheduleStore, StoreError, StoreResult};

use crate::lock::lock;

/// Schedules in memory.
#[derive(Debug, Default)]
pub struct MemoryScheduleStore {
    schedules: Mutex<BTreeMap<String, Schedule>>,
}

impl MemoryScheduleStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl ScheduleStore for MemoryScheduleStore {
    fn create(&self, schedule: Schedule) -> BoxFuture<'_, StoreResult<(Schedule, bool)>> {
        let mut map = lock(&self.schedules);
        let outcome = match map.get(&schedule.name) {
            Some(existing) => (existing.clone(), false),
            None => {
                map.insert(schedule.name.clone(), schedule.clone());
                (schedule, true)
            }
        };
        Box::pin(async move { Ok(outcome) })
    }

    fn update(&self, schedule: Schedule) -> BoxFuture<'_, StoreResult<()>> {
        let mut map = lock(&self.schedules);
        let result = match map.get_mut(&schedule.name) {
            Some(slot) => {
                *slot = schedule;
                Ok(())
            }
            None => Err(StoreError::ScheduleNotFound(schedule.name)),
        };
        Box::pin(async move { result })
    }

    fn get(&self, name: String) -> BoxFuture<'_, StoreResult<Option<Schedule>>> {
        let found = lock(&self.schedules).get(&name).cloned();
        Box::pin(async move { Ok(found) })
    }

    fn list(&self) -> BoxFuture<'_, StoreResult<Vec<Schedule>>> {
        let all = lock(&self.schedules).values().cloned().collect();
        Box::pin(async move { Ok(all) })
    }

    fn delete(&self, name: String) -> BoxFuture<'_, StoreResult<bool>> {
        let existed = lock(&self.schedules).remove(&name).is_some();
        Box::pin(async move { Ok(existed) })
    }

    fn due(&self, now: DateTime<Utc>, limit: usize) -> BoxFuture<'_, StoreResult<Vec<Schedule>>> {
        let due = lock(&self.schedules)
            .values()
            .filter(|s| !s.paused && s.next_fire_at.is_some_and(|at| at <= now))
            .take(limit)
            .cloned()
            .collect();
        Box::pin(async move { Ok(due) })
    }

    fn advance(
        &self,
        schedule: Schedule,
        expected: Option<DateTime<Utc>>,
    ) -> BoxFuture<'_, StoreResult<bool>> {
        let mut map = lock(&self.schedules);
        let won = match map.get_mut(&schedule.name) {
            Some(slot) if slot.next_fire_at == expected => {
                slot.record_fire(schedule.fire());
                true
            }
            _ => false,
        };
        Box::pin(async move { Ok(won) })
    }
}
