//! Reading a task with its revision, and writing it back only if nobody wrote in between.

use async_nats::jetstream::kv::{self, Operation, UpdateErrorKind};
use bytes::Bytes;
use chrono::Utc;
use omniq_models::TaskId;
use omniq_storage::{StoreError, StoreResult};

use crate::error::{BACKEND, nats_error};
use omniq_storage::kv_task::{self, KvTask as Stored};

/// How often a change that lost a compare-and-set race is computed again before giving up.
pub(crate) const CAS_ROUNDS: usize = 64;

/// The key of a task.
pub(crate) fn task_key(id: TaskId) -> String {
    format!("t.{id}")
}

/// A task as read, with the revision a write-back must find.
#[derive(Debug)]
pub(crate) struct Read {
    pub(crate) task: Stored,
    pub(crate) revision: u64,
}

pub(crate) fn encode(task: &Stored) -> StoreResult<Bytes> {
    kv_task::encode(task, BACKEND).map(Bytes::from)
}

pub(crate) fn decode(bytes: &[u8]) -> StoreResult<Stored> {
    kv_task::decode(bytes, BACKEND)
}

pub(crate) use kv_task::salvage;

/// The task `id`, if stored. A stored value that cannot be read counts as no task (with
/// an error logged and `omniq_tasks_unreadable_total` counted): one garbled value must not
/// stop the recoveries and sweeps that meet it. Only a claim turns it into a dead letter
/// ([`read_to_claim`]).
pub(crate) async fn read(bucket: &kv::Store, id: TaskId) -> StoreResult<Option<Read>> {
    let Some((bytes, revision)) = read_raw(bucket, id).await? else {
        return Ok(None);
    };
    match decode(&bytes) {
        Ok(task) => Ok(Some(Read { task, revision })),
        Err(err) => {
            tracing::error!(task_id = %id, %err, "a stored task cannot be read; it is left alone");
            metrics::counter!("omniq_tasks_unreadable_total", "backend" => BACKEND).increment(1);
            Ok(None)
        }
    }
}

/// The task `id` as a claim reads it: a stored value that cannot be read is replaced by
/// its dead letter ([`salvage`]; logged, and counted in `omniq_tasks_unreadable_total`), so
/// that it is not claimed and failed again and again, and never hides the rest of the
/// claim. Only a claim does this, as the SQL stores do: a task waiting to be claimed was
/// written as a queued task, which every release reads, so a value the claim cannot read
/// is damaged; a task in a state only a newer release knows (read by an older worker's
/// recovery during a rolling deploy) is left alone. One that cannot even be salvaged
/// counts as no task and stays in the bucket for an operator.
pub(crate) async fn read_to_claim(bucket: &kv::Store, id: TaskId) -> StoreResult<Option<Read>> {
    let Some((bytes, revision)) = read_raw(bucket, id).await? else {
        return Ok(None);
    };
    let err = match decode(&bytes) {
        Ok(task) => return Ok(Some(Read { task, revision })),
        Err(err) => err,
    };
    metrics::counter!("omniq_tasks_unreadable_total", "backend" => BACKEND).increment(1);
    let Some(task) = salvage(&bytes, &err, Utc::now()).filter(|t| t.record.spec.id == id) else {
        tracing::error!(task_id = %id, %err, "a stored task cannot be read; it is left alone");
        return Ok(None);
    };
    tracing::error!(task_id = %id, %err, "a claimed task cannot be read; it is dead-lettered");
    // Another reader may file it first: then the key has moved on, and is read again.
    match write(bucket, &task, revision).await? {
        Some(revision) => Ok(Some(Read { task, revision })),
        None => match read_raw(bucket, id).await? {
            Some((bytes, revision)) => Ok(decode(&bytes).ok().map(|task| Read { task, revision })),
            None => Ok(None),
        },
    }
}

/// The stored bytes of task `id` and their revision, undecoded.
pub(crate) async fn read_raw(bucket: &kv::Store, id: TaskId) -> StoreResult<Option<(Bytes, u64)>> {
    let entry = bucket.entry(task_key(id)).await.map_err(nats_error)?;
    match entry {
        Some(entry) if entry.operation == Operation::Put => Ok(Some((entry.value, entry.revision))),
        _ => Ok(None),
    }
}

/// Writes `task` if its key is still at `revision`. `Ok(None)` when it is not (another
/// writer got there first); the new revision otherwise.
pub(crate) async fn write(
    bucket: &kv::Store,
    task: &Stored,
    revision: u64,
) -> StoreResult<Option<u64>> {
    let id = task.record.spec.id;
    let bytes = encode(task)?;
    match bucket.update(task_key(id), bytes.clone(), revision).await {
        Ok(revision) => Ok(Some(revision)),
        Err(err) if err.kind() == UpdateErrorKind::WrongLastRevision => Ok(None),
        Err(err) => {
            // The reply may be what was lost (a timeout, a leader moving), not the write. A
            // write that landed must count as made: a claim that gave up on it would leave
            // its task Running under a lease nobody holds, an attempt spent for nothing.
            // Every value holds a fresh token or time, so the same bytes are this write.
            match read_raw(bucket, id).await {
                Ok(Some((stored, revision))) if stored == bytes => Ok(Some(revision)),
                _ => Err(nats_error(err)),
            }
        }
    }
}

/// Reads task `id`, lets `change` change it, and writes it back, again from a fresh read
/// whenever another writer got in between. `change` returns what to report, and whether
/// the task changed (no write otherwise). `None` when there is no such task.
pub(crate) async fn update<T, F>(
    bucket: &kv::Store,
    id: TaskId,
    mut change: F,
) -> StoreResult<Option<T>>
where
    F: FnMut(&mut Stored) -> (T, bool),
{
    for _ in 0..CAS_ROUNDS {
        let Some(Read { mut task, revision }) = read(bucket, id).await? else {
            return Ok(None);
        };
        let (report, changed) = change(&mut task);
        if !changed {
            return Ok(Some(report));
        }
        if write(bucket, &task, revision).await?.is_some() {
            return Ok(Some(report));
        }
    }
    Err(StoreError::unavailable(
        BACKEND,
        format!("task {id} kept changing under {CAS_ROUNDS} writes"),
    ))
}
