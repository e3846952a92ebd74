//! Reading a task with its revision, and writing it back only if nobody wrote in between.

use async_nats::jetstream::kv::{self, Operation, UpdateErrorKind};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use omniq_models::{
    AttemptError, TaskError, TaskErrorKind, TaskId, TaskRecord, TaskSpec, TaskState,
};
use omniq_storage::{StoreError, StoreResult};

use super::stored::Stored;
use crate::error::{BACKEND, corrupt, nats_error};

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

/// A task's bytes: a line of JSON with everything but the payload, then the payload as it
/// is. In JSON a payload would be an array of numbers, three to four times its size.
pub(crate) fn encode(task: &Stored) -> StoreResult<Bytes> {
    let payload = &task.record.spec.payload;
    let mut meta = task.clone();
    meta.record.spec.payload = Vec::new();
    // Compact JSON never holds a raw newline, so the first one ends the meta line.
    let mut bytes = serde_json::to_vec(&meta).map_err(|e| StoreError::backend(BACKEND, e))?;
    bytes.reserve(payload.len() + 1);
    bytes.push(b'\n');
    bytes.extend_from_slice(payload);
    Ok(Bytes::from(bytes))
}

pub(crate) fn decode(bytes: &[u8]) -> StoreResult<Stored> {
    let Some(split) = bytes.iter().position(|b| *b == b'\n') else {
        // Written whole as JSON, before payloads were split off.
        return serde_json::from_slice(bytes).map_err(|e| corrupt("task", e));
    };
    let mut task: Stored =
        serde_json::from_slice(&bytes[..split]).map_err(|e| corrupt("task", e))?;
    task.record.spec.payload = bytes[split + 1..].to_vec();
    Ok(task)
}

/// A dead letter in place of a stored task that cannot be read (a value written by a buggy
/// release, edited by hand, or damaged): its id, name, queue, attempts, creation time,
/// dependants and payload where they still read, default options, state Failed with a
/// decode error that says why. Claiming it again could only fail the same way; as a dead
/// letter an operator sees it, and can re-drive it once its cause is known. `None` unless
/// the value still says it is Queued (see the body).
pub(crate) fn salvage(bytes: &[u8], error: &StoreError, now: DateTime<Utc>) -> Option<Stored> {
    let (meta, payload) = match bytes.iter().position(|b| *b == b'\n') {
        Some(split) => (&bytes[..split], &bytes[split + 1..]),
        None => (bytes, &[][..]),
    };
    let value: serde_json::Value = serde_json::from_slice(meta).ok()?;
    let record = value.get("record")?;
    // Only a task stored as waiting to be claimed, the one state every release writes the
    // same way: a value in a state this release does not know may be a newer release's
    // task, never to be destroyed by an older worker in a rolling deploy.
    if record.get("state").and_then(serde_json::Value::as_str) != Some("queued") {
        return None;
    }
    let spec = record.get("spec")?;
    let field = |of: &serde_json::Value, name: &str| of.get(name).cloned();
    let id: TaskId = serde_json::from_value(field(spec, "id")?).ok()?;
    let name: String = serde_json::from_value(field(spec, "name")?).ok()?;
    let queue: String = serde_json::from_value(field(spec, "queue")?).ok()?;
    let created_at: DateTime<Utc> = field(spec, "created_at")
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or(now);
    let attempts: u32 = field(record, "attempts")
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or(0);
    let children: Vec<TaskId> = field(&value, "children")
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default();
    // A value written whole as JSON, before payloads were split off, holds it in the spec.
    let payload = if payload.is_empty() {
        field(spec, "payload")
            .and_then(|v| serde_json::from_value::<Vec<u8>>(v).ok())
            .unwrap_or_default()
    } else {
        payload.to_vec()
    };
    let mut spec = TaskSpec::stored(id, name, payload, created_at);
    spec.queue = queue;
    let mut record = TaskRecord::new(spec, TaskState::Failed);
    record.attempts = attempts;
    record.finished_at = Some(now);
    record.updated_at = now;
    record.errors.push(AttemptError::new(
        attempts,
        now,
        TaskError::with_kind(
            TaskErrorKind::Decode,
            format!("the stored task cannot be read: {error}"),
            false,
        ),
    ));
    Some(Stored {
        record,
        token: None,
        completed: None,
        children,
    })
}

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
