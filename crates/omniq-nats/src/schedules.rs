use async_nats::jetstream::kv::{self, CreateErrorKind, Operation, UpdateErrorKind};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use omniq_models::Schedule;
use omniq_storage::{BoxFuture, ScheduleStore, StoreError, StoreResult};

use crate::NatsBackend;
use crate::error::{BACKEND, corrupt, nats_error};
use crate::names::token;
use crate::scan::bucket_values;

/// How often a change that lost a compare-and-set race is tried again before giving up.
const CAS_ROUNDS: usize = 32;

/// The schedule store of a [`NatsBackend`]: one key per schedule in the bucket
/// `{prefix}_schedules`, its name made a valid key (letters, digits, `_` and `-` kept, any
/// other byte as `=` and two hex digits).
///
/// Every change is a compare-and-set on the key's revision, so a fire is claimed exactly
/// once ([`ScheduleStore::advance`]) and never undoes a pause or an update made meanwhile.
/// Listing and finding due schedules read the whole bucket: schedules are counted in
/// hundreds, not millions.
#[derive(Debug, Clone)]
pub struct NatsScheduleStore {
    backend: NatsBackend,
}

fn encode(schedule: &Schedule) -> StoreResult<Bytes> {
    serde_json::to_vec(schedule)
        .map(Bytes::from)
        .map_err(|e| StoreError::backend(BACKEND, e))
}

fn decode(bytes: &[u8]) -> StoreResult<Schedule> {
    serde_json::from_slice(bytes).map_err(|e| corrupt("schedule", e))
}

impl NatsScheduleStore {
    pub(crate) fn new(backend: NatsBackend) -> Self {
        Self { backend }
    }

    fn kv(&self) -> &kv::Store {
        &self.backend.inner.schedules
    }

    /// The stored schedule named `name` and its revision.
    async fn entry(&self, name: &str) -> StoreResult<Option<(Schedule, u64)>> {
        let entry = self.kv().entry(token(name)).await.map_err(nats_error)?;
        match entry {
            Some(entry) if entry.operation == Operation::Put => {
                Ok(Some((decode(&entry.value)?, entry.revision)))
            }
            _ => Ok(None),
        }
    }

    async fn create_one(&self, schedule: Schedule) -> StoreResult<(Schedule, bool)> {
        let key = token(&schedule.name);
        let bytes = encode(&schedule)?;
        for _ in 0..CAS_ROUNDS {
            match self.kv().create(&key, bytes.clone()).await {
                Ok(_) => return Ok((schedule, true)),
                Err(err) if err.kind() == CreateErrorKind::AlreadyExists => {
                    // Deleted since? Then the next round creates it.
                    if let Some((existing, _)) = self.entry(&schedule.name).await? {
                        return Ok((existing, false));
                    }
                }
                Err(err) => return Err(nats_error(err)),
            }
        }
        Err(raced(&schedule.name))
    }

    /// Replaces the stored schedule with what `change` makes of it, by compare-and-set.
    /// `change` returns `None` to leave it as it is. Returns whether it was replaced, or
    /// `None` when there is no such schedule.
    async fn change<F>(&self, name: &str, mut change: F) -> StoreResult<Option<bool>>
    where
        F: FnMut(Schedule) -> StoreResult<Option<Schedule>>,
    {
        let key = token(name);
        for _ in 0..CAS_ROUNDS {
            let Some((current, revision)) = self.entry(name).await? else {
                return Ok(None);
            };
            let Some(next) = change(current)? else {
                return Ok(Some(false));
            };
            match self.kv().update(&key, encode(&next)?, revision).await {
                Ok(_) => return Ok(Some(true)),
                Err(err) if err.kind() == UpdateErrorKind::WrongLastRevision => {}
                Err(err) => return Err(nats_error(err)),
            }
        }
        Err(raced(name))
    }

    async fn replace(&self, schedule: Schedule) -> StoreResult<()> {
        let name = schedule.name.clone();
        match self.change(&name, |_| Ok(Some(schedule.clone()))).await? {
            Some(_) => Ok(()),
            None => Err(StoreError::ScheduleNotFound(name)),
        }
    }

    async fn all(&self) -> StoreResult<Vec<Schedule>> {
        // One unreadable schedule must not stop the others from firing.
        let mut schedules = bucket_values(
            &self.backend.inner.client,
            self.kv(),
            ">",
            "schedule",
            decode,
        )
        .await?;
        schedules.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(schedules)
    }

    async fn remove(&self, name: String) -> StoreResult<bool> {
        let Some((_, revision)) = self.entry(&name).await? else {
            return Ok(false);
        };
        // Everything of the key up to what was read, markers included: a schedule
        // created again meanwhile stays.
        self.kv()
            .stream
            .purge()
            .filter(format!("{}{}", self.kv().prefix, token(&name)))
            .sequence(revision + 1)
            .await
            .map_err(nats_error)?;
        Ok(true)
    }

    async fn due_at(&self, now: DateTime<Utc>, limit: usize) -> StoreResult<Vec<Schedule>> {
        let mut due: Vec<Schedule> = self
            .all()
            .await?
            .into_iter()
            .filter(|s| !s.paused && s.next_fire_at.is_some_and(|at| at <= now))
            .collect();
        due.sort_by_key(|s| s.next_fire_at);
        due.truncate(limit);
        Ok(due)
    }

    async fn advance_fire(
        &self,
        fired: Schedule,
        expected: Option<DateTime<Utc>>,
    ) -> StoreResult<bool> {
        let name = fired.name.clone();
        let advanced = self
            .change(&name, |mut current| {
                if current.next_fire_at != expected {
                    return Ok(None);
                }
                current.next_fire_at = fired.next_fire_at;
                current.last_fire_at = fired.last_fire_at;
                current.fire_count = fired.fire_count;
                current.updated_at = fired.updated_at;
                Ok(Some(current))
            })
            .await?;
        Ok(advanced == Some(true))
    }
}

fn raced(name: &str) -> StoreError {
    StoreError::unavailable(
        BACKEND,
        format!("schedule `{name}` kept changing under {CAS_ROUNDS} writes"),
    )
}

impl ScheduleStore for NatsScheduleStore {
    fn create(&self, schedule: Schedule) -> BoxFuture<'_, StoreResult<(Schedule, bool)>> {
        Box::pin(self.create_one(schedule))
    }

    fn update(&self, schedule: Schedule) -> BoxFuture<'_, StoreResult<()>> {
        Box::pin(self.replace(schedule))
    }

    fn get(&self, name: String) -> BoxFuture<'_, StoreResult<Option<Schedule>>> {
        Box::pin(async move { Ok(self.entry(&name).await?.map(|(s, _)| s)) })
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
        Box::pin(self.advance_fire(schedule, expected))
    }
}
