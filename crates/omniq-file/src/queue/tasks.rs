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

/// What is stored under a task's key.
#[derive(Debug)]
pub(crate) enum Found {
    /// No task.
    Absent,
    /// A task this release cannot read (damaged, or written by a newer release): its
    /// markers are left alone, so that it is not lost to the release that can read it.
    Unreadable,
    /// The task.
    Task(Box<Read>),
}

fn decoded(id: TaskId, bytes: &[u8]) -> StoreResult<KvTask> {
    let task = kv_task::decode(bytes, BACKEND)?;
    if task.record.spec.id != id {
        return Err(StoreError::backend(
            BACKEND,
            format!("the object of task {id} holds task {}", task.record.spec.id),
        ));
    }
    Ok(task)
}

/// What is stored under task `id`'s key. An unreadable task is logged and counted in
/// `omniq_tasks_unreadable_total`.
pub(crate) async fn find(objects: &dyn Objects, id: TaskId) -> StoreResult<Found> {
    let Some((bytes, version)) = read_raw(objects, id).await? else {
        return Ok(Found::Absent);
    };
    match decoded(id, &bytes) {
        Ok(task) => Ok(Found::Task(Box::new(Read { task, version }))),
        Err(err) => {
            tracing::error!(task_id = %id, %err, "a stored task cannot be read; it is left alone");
            metrics::counter!("omniq_tasks_unreadable_total", "backend" => BACKEND).increment(1);
            Ok(Found::Unreadable)
        }
    }
}

/// The task `id`, if stored and readable (see [`find`]): for the changes that need one.
pub(crate) async fn read(objects: &dyn Objects, id: TaskId) -> StoreResult<Option<Read>> {
    Ok(match find(objects, id).await? {
        Found::Task(read) => Some(*read),
        Found::Absent | Found::Unreadable => None,
    })
}

/// What is stored under task `id`'s key, as a claim reads it: a task that cannot be read
/// but still says it is queued (the one state every release writes the same way) is
/// replaced by its dead letter ([`kv_task::salvage`]), so that it is neither claimed and
/// failed again and again nor hides the rest of the claim.
pub(crate) async fn find_to_claim(objects: &dyn Objects, id: TaskId) -> StoreResult<Found> {
    let Some((bytes, version)) = read_raw(objects, id).await? else {
        return Ok(Found::Absent);
    };
    let err = match decoded(id, &bytes) {
        Ok(task) => return Ok(Found::Task(Box::new(Read { task, version }))),
        Err(err) => err,
    };
    metrics::counter!("omniq_tasks_unreadable_total", "backend" => BACKEND).increment(1);
    let Some(mut task) =
        kv_task::salvage(&bytes, &err, Utc::now()).filter(|t| t.record.spec.id == id)
    else {
        tracing::error!(task_id = %id, %err, "a stored task cannot be read; it is left alone");
        return Ok(Found::Unreadable);
    };
    tracing::error!(task_id = %id, %err, "a claimed task cannot be read; it is dead-lettered");
    // Above any write a marker can name: every marker of the unreadable task is stale.
    task.writes = u64::MAX / 2;
    match write(objects, &mut task, &version).await? {
        Some(version) => Ok(Found::Task(Box::new(Read { task, version }))),
        None => find(objects, id).await,
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
    // A conflict or an error may hide this very create landing (a retry after a lost
    // reply): it did if the bytes stored are ours (every task holds its id and a fresh
    // time).
    match objects.create(&key, bytes.clone()).await {
        Ok(Some(version)) => Ok(Some(version)),
        Ok(None) => landed(objects, &key, &bytes).await,
        Err(err) => match landed(objects, &key, &bytes).await {
            Ok(Some(version)) => Ok(Some(version)),
            _ => Err(err),
        },
    }
}

/// Writes `task` (its write count moved on by one) if it is still at `version`:
/// `Ok(None)` when another writer got there first.
pub(crate) async fn write(
    objects: &dyn Objects,
    task: &mut KvTask,
    version: &Version,
) -> StoreResult<Option<Version>> {
    write_as(objects, task, version, Durability::Synced).await
}

/// Whether a task's write must survive a crash of the machine once it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Durability {
    Synced,
    /// Lost with the machine at worst, the task then reading as the write before
    /// ([`Objects::update_unsynced`]).
    Unsynced,
}

/// [`write`], durable or not as `durability` says.
pub(crate) async fn write_as(
    objects: &dyn Objects,
    task: &mut KvTask,
    version: &Version,
    durability: Durability,
) -> StoreResult<Option<Version>> {
    task.writes = task.writes.saturating_add(1);
    let bytes = encode(task)?;
    let key = keys::task(task.record.spec.id);
    let written = match durability {
        Durability::Synced => objects.update(&key, bytes.clone(), version).await,
        Durability::Unsynced => objects.update_unsynced(&key, bytes.clone(), version).await,
    };
    match written {
        Ok(Some(version)) => Ok(Some(version)),
        // A conflict or an error may hide a write that landed (see [`Objects`]): a claim
        // that gave up on it would leave its task Running under a lease nobody holds.
        // Every write's bytes are its own (the write count is in them).
        Ok(None) => landed(objects, &key, &bytes).await,
        Err(err) => match landed(objects, &key, &bytes).await {
            Ok(Some(version)) => Ok(Some(version)),
            _ => Err(err),
        },
    }
}

/// The version of `key` if it holds `bytes`. An error when it cannot be read: a write
/// that may have landed must not be reported as lost.
async fn landed(objects: &dyn Objects, key: &str, bytes: &Bytes) -> StoreResult<Option<Version>> {
    Ok(match objects.get(key).await? {
        Some(stored) if stored.bytes == *bytes => Some(stored.version),
        _ => None,
    })
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
