use chrono::{DateTime, Utc};
use omniq_models::Schedule;
use omniq_storage::{BoxFuture, ScheduleStore, StoreError, StoreResult};
use redis::{Script, ScriptInvocation, Value};

use crate::RedisBackend;
use crate::codec::{integer, items, micros, opt_string, string, to_json};
use crate::error::{corrupt, redis_error};

/// The schedule store of a [`RedisBackend`]: definitions in a hash, unpaused schedules in a
/// sorted set by next fire, and `advance` as a compare-and-set script.
#[derive(Debug, Clone)]
pub struct RedisScheduleStore {
    backend: RedisBackend,
}

fn parse(body: &str) -> StoreResult<Schedule> {
    serde_json::from_str(body).map_err(|e| corrupt("schedule", e))
}

fn fire(at: Option<DateTime<Utc>>) -> String {
    at.map(|at| micros(at).to_string()).unwrap_or_default()
}

impl RedisScheduleStore {
    pub(crate) fn new(backend: RedisBackend) -> Self {
        Self { backend }
    }

    /// An invocation with the schedule keys and the schedule's own arguments.
    fn invocation<'a>(
        &self,
        script: &'a Script,
        schedule: &Schedule,
    ) -> StoreResult<ScriptInvocation<'a>> {
        let keys = self.backend.keys();
        let mut invocation = script.prepare_invoke();
        invocation
            .key(keys.schedules())
            .key(keys.schedule_next())
            .key(keys.schedule_due())
            .arg(&schedule.name)
            .arg(to_json(schedule)?)
            .arg(fire(schedule.next_fire_at))
            .arg(if schedule.paused { "1" } else { "0" });
        Ok(invocation)
    }

    async fn call(&self, invocation: &ScriptInvocation<'_>) -> StoreResult<Value> {
        invocation
            .invoke_async(&mut self.backend.connection())
            .await
            .map_err(redis_error)
    }

    async fn insert(&self, schedule: Schedule) -> StoreResult<(Schedule, bool)> {
        let invocation = self.invocation(&self.backend.scripts().schedule_create, &schedule)?;
        let mut reply = items(self.call(&invocation).await?)?.into_iter();
        if integer(reply.next().unwrap_or(Value::Nil))? == 1 {
            return Ok((schedule, true));
        }
        let existing = string(reply.next().unwrap_or(Value::Nil))?;
        Ok((parse(&existing)?, false))
    }

    /// A plain replace.
    async fn write(&self, schedule: &Schedule) -> StoreResult<bool> {
        let mut invocation = self.invocation(&self.backend.scripts().schedule_update, schedule)?;
        invocation.arg("any").arg("").arg("");
        Ok(integer(self.call(&invocation).await?)? == 1)
    }

    /// The compare-and-set of the next fire: the fire bookkeeping of `schedule` is merged
    /// into the stored schedule as read, and written only if it is still what was read.
    async fn advance_fire(
        &self,
        schedule: &Schedule,
        expected: Option<DateTime<Utc>>,
    ) -> StoreResult<bool> {
        // An operator's change between the read and the write makes the script answer 2:
        // read again. Changes are rare and human-paced, so a few rounds always suffice.
        for _ in 0..16 {
            let Some(raw) = self.raw(&schedule.name).await? else {
                return Ok(false);
            };
            let mut merged = parse(&raw)?;
            if merged.next_fire_at != expected {
                return Ok(false);
            }
            merged.record_fire(schedule.fire());
            let mut invocation =
                self.invocation(&self.backend.scripts().schedule_update, &merged)?;
            invocation.arg("cas").arg(fire(expected)).arg(&raw);
            match integer(self.call(&invocation).await?)? {
                1 => return Ok(true),
                2 => continue,
                _ => return Ok(false),
            }
        }
        Err(StoreError::Invalid(format!(
            "schedule `{}` kept changing while its fire was recorded",
            schedule.name
        )))
    }

    async fn raw(&self, name: &str) -> StoreResult<Option<String>> {
        let reply: Value = redis::cmd("HGET")
            .arg(self.backend.keys().schedules())
            .arg(name)
            .query_async(&mut self.backend.connection())
            .await
            .map_err(redis_error)?;
        opt_string(reply)
    }

    async fn read(&self, name: String) -> StoreResult<Option<Schedule>> {
        self.raw(&name).await?.as_deref().map(parse).transpose()
    }

    async fn all(&self) -> StoreResult<Vec<Schedule>> {
        let reply: Value = redis::cmd("HVALS")
            .arg(self.backend.keys().schedules())
            .query_async(&mut self.backend.connection())
            .await
            .map_err(redis_error)?;
        let mut schedules = items(reply)?
            .into_iter()
            .map(|body| parse(&string(body)?))
            .collect::<StoreResult<Vec<_>>>()?;
        schedules.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(schedules)
    }

    async fn remove(&self, name: String) -> StoreResult<bool> {
        let keys = self.backend.keys();
        let mut invocation = self.backend.scripts().schedule_delete.prepare_invoke();
        invocation
            .key(keys.schedules())
            .key(keys.schedule_next())
            .key(keys.schedule_due())
            .arg(&name);
        Ok(integer(self.call(&invocation).await?)? == 1)
    }

    async fn due_at(&self, now: DateTime<Utc>, limit: usize) -> StoreResult<Vec<Schedule>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let keys = self.backend.keys();
        let reply: Value = redis::cmd("ZRANGEBYSCORE")
            .arg(keys.schedule_due())
            .arg("-inf")
            .arg(micros(now))
            .arg("LIMIT")
            .arg(0)
            .arg(limit)
            .query_async(&mut self.backend.connection())
            .await
            .map_err(redis_error)?;
        let names = items(reply)?
            .into_iter()
            .map(string)
            .collect::<StoreResult<Vec<_>>>()?;
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let reply: Value = redis::cmd("HMGET")
            .arg(keys.schedules())
            .arg(&names)
            .query_async(&mut self.backend.connection())
            .await
            .map_err(redis_error)?;
        let mut due = Vec::with_capacity(names.len());
        for body in items(reply)? {
            // A schedule deleted between the two reads is skipped.
            if let Some(body) = opt_string(body)? {
                let schedule = parse(&body)?;
                if !schedule.paused && schedule.next_fire_at.is_some_and(|at| at <= now) {
                    due.push(schedule);
                }
            }
        }
        Ok(due)
    }
}

impl ScheduleStore for RedisScheduleStore {
    fn create(&self, schedule: Schedule) -> BoxFuture<'_, StoreResult<(Schedule, bool)>> {
        Box::pin(self.insert(schedule))
    }

    fn update(&self, schedule: Schedule) -> BoxFuture<'_, StoreResult<()>> {
        Box::pin(async move {
            if self.write(&schedule).await? {
                Ok(())
            } else {
                Err(StoreError::ScheduleNotFound(schedule.name))
            }
        })
    }

    fn get(&self, name: String) -> BoxFuture<'_, StoreResult<Option<Schedule>>> {
        Box::pin(self.read(name))
    }

    fn list(&self) -> BoxFuture<'_, StoreResult<Vec<Schedule>>> {
        Box::pin(self.all())
    }

    fn delete(&self, name: String) -> BoxFuture<'_, StoreResult<bool>> {
        Box::pin(self.remove(name))
    }

    fn due(&self, now: DateTime<Utc>, limit: usize) -> BoxFuture<'_, StoreResult<Vec<Schedule>>> {
        Box::pin(self.due_at(now, limit))
    }

    fn advance(
        &self,
        schedule: Schedule,
        expected: Option<DateTime<Utc>>,
    ) -> BoxFuture<'_, StoreResult<bool>> {
        Box::pin(async move { self.advance_fire(&schedule, expected).await })
    }
}
