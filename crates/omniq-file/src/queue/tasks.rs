//! Reading a task with its version, and writing it back only if nobody wrote in between.

use bytes::Bytes;
use chrono::Utc;
use omniq_models::TaskId;
use omniq_storage::kv_task::{self, KvTask};
use omniq_storage::{StoreError, StoreResult};

use super::keys;
use crate::error::BACKEND;
use crate::objects::{Objects, Version};

/// How often a change that lost a race is computed again before giving up.
pub(crate) const CAS_ROUNDS: usize = 64;

/// A task as read, with the version a write-back must find.
#[derive(Debug, Clone)]
pub(crate) struct Read {
    pub(crate) task: KvTask,
    pub(crate) version: Version,
}

fn encode(task: &KvTask) -> StoreResult<Bytes> {
    kv_task::encode(task, BACKEND).map(Bytes::from)
}

/// The bytes of task `id` and their version, undecoded. An empty object is a tombstone
/// (see [`Objects::delete_if`]): no task.
async fn read_raw(objects: &dyn Objects, id: TaskId) -> StoreResult<Option<(Bytes, Version)>> {
    Ok(objects
        .get(&keys::task(id))
        .await?
        .filter(|stored| !stored.bytes.is_empty())
        .map(|stored| (stored.bytes, stored.version)))
}

/// The task `id`, if stored. A stored task that cannot be read counts as no task (logged,
/// and counted in `omniq_tasks_unreadable_total`): one garbled object must not stop the
/// recoveries and sweeps that meet it. Only a claim turns it into a dead letter
/// ([`read_to_claim`]).
pub(crate) async fn read(objects: &dyn Objects, id: TaskId) -> StoreResult<Option<Read>> {
    let Some((bytes, version)) = read_raw(objects, id).await? else {
        return Ok(None);
    };
    match kv_task::decode(&bytes, BACKEND) {
        Ok(task) => Ok(Some(Read { task, version })),
        Err(err) => {
            tracing::error!(task_id = %id, %err, "a stored task cannot be read; it is left alone");
            metrics::counter!("omniq_tasks_unreadable_total", "backend" => BACKEND).increment(1);
            Ok(None)
        }
    }
}

/// The task `id` as a claim reads it: one that cannot be read is replaced by its dead
/// letter ([`kv_task::salvage`]), so that it is neither claimed and failed again and
/// again nor hides the rest of the claim. One that cannot even be salvaged (a state only
/// a newer release knows) is left alone and counts as no task.
pub(crate) async fn read_to_claim(objects: &dyn Objects, id: TaskId) -> StoreResult<Option<Read>> {
    let Some((bytes, version)) = read_raw(objects, id).await? else {
        return Ok(None);
    };
    let err = match kv_task::decode(&bytes, BACKEND) {
        Ok(task) => return Ok(Some(Read { task, version })),
        Err(err) => err,
    };
    metrics::counter!("omniq_tasks_unreadable_total", "backend" => BACKEND).increment(1);
    let Some(mut task) =
        kv_task::salvage(&bytes, &err, Utc::now()).filter(|t| t.record.spec.id == id)
    else {
        tracing::error!(task_id = %id, %err, "a stored task cannot be read; it is left alone");
        return Ok(None);
    };
    tracing::error!(task_id = %id, %err, "a claimed task cannot be read; it is dead-lettered");
    task.writes = u64::MAX / 2;
    match write(objects, &mut task, &version).await? {
        Some(version) => Ok(Some(Read { task, version })),
        None => read(objects, id).await,
    }
}

/// Stores a new task; `None` when a task of that id exists.
pub(crate) async fn create(
    objects: &dyn Objects,
    task: &mut KvTask,
) -> StoreResult<Option<Version>> {
    task.writes = 1;
    let bytes = encode(task)?;
    let key = keys::task(task.record.spec.id);
    match objects.create(&key, bytes.clone()).await {
        Ok(Some(version)) => Ok(Some(version)),
        Ok(None) => Ok(landed(objects, &key, &bytes).await),
        // The reply may be what was lost: a create that landed is this one if the bytes
        // are ours (every task holds its id and a fresh time).
        Err(err) => landed(objects, &key, &bytes).await.map(Some).ok_or(err),
    }
}

/// Writes `task` (its write count moved on by one) if it is still at `version`:
/// `Ok(None)` when another writer got there first.
pub(crate) async fn write(
    objects: &dyn Objects,
    task: &mut KvTask,
    version: &Version,
) -> StoreResult<Option<Version>> {
    task.writes += 1;
    let bytes = encode(task)?;
    let key = keys::task(task.record.spec.id);
    match objects.update(&key, bytes.clone(), version).await {
        Ok(Some(version)) => Ok(Some(version)),
        // A conflict or an error may hide a write that landed (see [`Objects`]): a claim
        // that gave up on it would leave its task Running under a lease nobody holds.
        // Every write's bytes are its own (the write count is in them).
        Ok(None) => Ok(landed(objects, &key, &bytes).await),
        Err(err) => landed(objects, &key, &bytes).await.map(Some).ok_or(err),
    }
}

/// The version of `key` if it holds `bytes`.
async fn landed(objects: &dyn Objects, key: &str, bytes: &Bytes) -> Option<Version> {
    match objects.get(key).await {
        Ok(Some(stored)) if stored.bytes == *bytes => Some(stored.version),
        _ => None,
    }
}

/// Reads task `id`, lets `change` change it, and writes it back, again from a fresh read
/// whenever another writer got in between. `change` returns what to report, and whether
/// the task changed (no write otherwise). `None` when there is no such task.
pub(crate) async fn update<T, F>(
    objects: &dyn Objects,
    id: TaskId,
    mut change: F,
) -> StoreResult<Option<T>>
where
    F: FnMut(&mut KvTask) -> (T, bool),
{
    for _ in 0..CAS_ROUNDS {
        let Some(Read { mut task, version }) = read(objects, id).await? else {
            return Ok(None);
        };
        let (report, changed) = change(&mut task);
        if !changed {
            return Ok(Some(report));
        }
        if write(objects, &mut task, &version).await?.is_some() {
            return Ok(Some(report));
        }
    }
    Err(kept_changing(id))
}

pub(crate) fn kept_changing(id: TaskId) -> StoreError {
    StoreError::unavailable(
        BACKEND,
        format!("task {id} kept changing under {CAS_ROUNDS} writes"),
    )
}
