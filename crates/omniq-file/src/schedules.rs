//! Schedules as objects, one per schedule: `schedules/<the name's UTF-8, in hex>` (a name
//! may hold any character; a key may not). Every change is a replace from the version
//! read, so an `advance` claims a fire exactly once: of two processes that read the same
//! next fire, the second's replace finds the object changed, reads again, and sees the
//! fire taken.

use std::fmt::Write as _;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures_util::{StreamExt, TryStreamExt, stream};
use omniq_models::Schedule;
use omniq_storage::{BoxFuture, ScheduleStore, StoreError, StoreResult};

use crate::error::BACKEND;
use crate::objects::IN_FLIGHT;
use crate::{Objects, Stored};

const SCHEDULES: &str = "schedules";
/// How often a change that lost a race reads and tries again before it gives up.
const WRITE_ROUNDS: usize = 64;

/// The schedule store on [`Objects`].
#[derive(Debug, Clone)]
pub struct FileScheduleStore {
    objects: Arc<dyn Objects>,
}

fn schedule_key(name: &str) -> String {
    let mut key = String::with_capacity(SCHEDULES.len() + 1 + name.len() * 2);
    key.push_str(SCHEDULES);
    key.push('/');
    for byte in name.bytes() {
        let _ = write!(key, "{byte:02x}");
    }
    key
}

fn encode(schedule: &Schedule) -> StoreResult<Bytes> {
    serde_json::to_vec(schedule)
        .map(Bytes::from)
        .map_err(|err| StoreError::backend(BACKEND, err))
}

fn decode(stored: &Stored) -> StoreResult<Schedule> {
    serde_json::from_slice(&stored.bytes).map_err(|err| StoreError::backend(BACKEND, err))
}

fn kept_changing(name: &str) -> StoreError {
    StoreError::unavailable(
        BACKEND,
        format!("schedule `{name}` kept changing under {WRITE_ROUNDS} writes"),
    )
}

impl FileScheduleStore {
    /// Schedules in `objects`.
    pub fn new(objects: Arc<dyn Objects>) -> Self {
        Self { objects }
    }

    async fn read(&self, name: &str) -> StoreResult<Option<(Schedule, Stored)>> {
        match self.objects.get(&schedule_key(name)).await? {
            Some(stored) => Ok(Some((decode(&stored)?, stored))),
            None => Ok(None),
        }
    }

    async fn create_once(&self, schedule: Schedule) -> StoreResult<(Schedule, bool)> {
        let key = schedule_key(&schedule.name);
        let bytes = encode(&schedule)?;
        for _ in 0..WRITE_ROUNDS {
            if self.objects.create(&key, bytes.clone()).await?.is_some() {
                return Ok((schedule, true));
            }
            // Taken: the stored one, unless it was deleted since (then try again).
            if let Some((existing, _)) = self.read(&schedule.name).await? {
                return Ok((existing, false));
            }
        }
        Err(kept_changing(&schedule.name))
    }

    async fn replace(&self, schedule: Schedule) -> StoreResult<()> {
        let key = schedule_key(&schedule.name);
        let bytes = encode(&schedule)?;
        for _ in 0..WRITE_ROUNDS {
            let Some((_, stored)) = self.read(&schedule.name).await? else {
                return Err(StoreError::ScheduleNotFound(schedule.name));
            };
            if self
                .objects
                .update(&key, bytes.clone(), &stored.version)
                .await?
                .is_some()
            {
                return Ok(());
            }
        }
        Err(kept_changing(&schedule.name))
    }

    async fn all(&self) -> StoreResult<Vec<Schedule>> {
        let keys = self.objects.list(SCHEDULES).await?;
        let read: Vec<Option<Stored>> = stream::iter(keys)
            .map(|key| async move { self.objects.get(&key).await })
            .buffered(IN_FLIGHT)
            .try_collect()
            .await?;
        let mut schedules = Vec::with_capacity(read.len());
        for stored in read.into_iter().flatten() {
            match decode(&stored) {
                Ok(schedule) => schedules.push(schedule),
                // Left out of listings (it still holds its name), as a corrupt row would be.
                Err(err) => tracing::warn!(%err, "a stored schedule cannot be read; left out"),
            }
        }
        schedules.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(schedules)
    }

    async fn claim_fire(
        &self,
        schedule: Schedule,
        expected: Option<DateTime<Utc>>,
    ) -> StoreResult<bool> {
        let key = schedule_key(&schedule.name);
        for _ in 0..WRITE_ROUNDS {
            let Some((mut stored_schedule, stored)) = self.read(&schedule.name).await? else {
                return Ok(false);
            };
            if stored_schedule.next_fire_at != expected {
                return Ok(false);
            }
            // Only the fire's fields: a pause or an update made since stays.
            stored_schedule.record_fire(schedule.fire());
            if self
                .objects
                .update(&key, encode(&stored_schedule)?, &stored.version)
                .await?
                .is_some()
            {
                return Ok(true);
            }
        }
        Err(kept_changing(&schedule.name))
    }
}

impl ScheduleStore for FileScheduleStore {
    fn create(&self, schedule: Schedule) -> BoxFuture<'_, StoreResult<(Schedule, bool)>> {
        Box::pin(self.create_once(schedule))
    }

    fn update(&self, schedule: Schedule) -> BoxFuture<'_, StoreResult<()>> {
        Box::pin(self.replace(schedule))
    }

    fn get(&self, name: String) -> BoxFuture<'_, StoreResult<Option<Schedule>>> {
        Box::pin(async move { Ok(self.read(&name).await?.map(|(schedule, _)| schedule)) })
    }

    fn list(&self) -> BoxFuture<'_, StoreResult<Vec<Schedule>>> {
        Box::pin(self.all())
    }

    fn delete(&self, name: String) -> BoxFuture<'_, StoreResult<bool>> {
        Box::pin(async move {
            let key = schedule_key(&name);
            let existed = self.objects.get(&key).await?.is_some();
            if existed {
                self.objects.delete(&key).await?;
            }
            Ok(existed)
        })
    }

    fn due(&self, now: DateTime<Utc>, limit: usize) -> BoxFuture<'_, StoreResult<Vec<Schedule>>> {
        Box::pin(async move {
            let mut due: Vec<Schedule> = self
                .all()
                .await?
                .into_iter()
                .filter(|s| !s.paused && s.next_fire_at.is_some_and(|at| at <= now))
                .collect();
            due.sort_by_key(|s| s.next_fire_at);
            due.truncate(limit);
            Ok(due)
        })
    }

    fn advance(
        &self,
        schedule: Schedule,
        expected: Option<DateTime<Utc>>,
    ) -> BoxFuture<'_, StoreResult<bool>> {
        Box::pin(self.claim_fire(schedule, expected))
    }
}
