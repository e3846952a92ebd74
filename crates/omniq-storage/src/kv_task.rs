//! A task kept as one value of a key-value store that writes by compare-and-set (NATS
//! JetStream's buckets, object stores), the state changes a queue makes to it, and its
//! bytes.
//!
//! Every change is computed here, on one decoded task, and written back by the store's
//! compare-and-set: a change computed from a stale read is refused by the store and
//! computed again from a fresh one. The backends differ only in how they find tasks.

use chrono::{DateTime, Utc};
use omniq_models::{
    AttemptError, LeaseToken, TaskError, TaskErrorKind, TaskId, TaskRecord, TaskSpec, TaskState,
    WorkerId,
};
use serde::{Deserialize, Serialize};

use crate::{CANCELLED_WHILE_RUNNING, CompletionOutcome, StateChange, StoreError, StoreResult};

/// A task and its fencing tokens.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KvTask {
    /// The task.
    pub record: TaskRecord,
    /// The lease that holds the task while it runs.
    #[serde(default)]
    pub token: Option<LeaseToken>,
    /// The lease whose completion was applied last: a re-send of it is known as such.
    #[serde(default)]
    pub completed: Option<LeaseToken>,
    /// The tasks that wait for this one, registered by each child while this one runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<TaskId>,
    /// How many times the task was written. A store that files a task under keys naming
    /// its state (an object store's ready markers) names the write in them too, so that a
    /// key left by an earlier write is known to be stale although the fields it names
    /// came back.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub writes: u64,
}

fn is_zero(writes: &u64) -> bool {
    *writes == 0
}

/// What became of a completion applied to a task.
#[derive(Debug, PartialEq, Eq)]
pub enum Applied {
    /// The lease held: the task changed.
    Changed,
    /// The same lease's completion is in already (a re-send after a lost reply).
    Resent,
    /// Another lease holds the task, or none does.
    LeaseLost,
}

/// Queued when due at `now`, else Scheduled.
pub fn ready_state(run_at: DateTime<Utc>, now: DateTime<Utc>) -> TaskState {
    if run_at > now {
        TaskState::Scheduled
    } else {
        TaskState::Queued
    }
}

/// Why a task expired.
pub fn expiry_reason() -> String {
    "not started before its expiry (ttl)".to_owned()
}

impl KvTask {
    /// A task as first stored.
    pub fn new(record: TaskRecord) -> Self {
        Self {
            record,
            token: None,
            completed: None,
            children: Vec::new(),
            writes: 0,
        }
    }

    /// The task's state, as a change to report.
    pub fn change(&self) -> StateChange {
        StateChange::new(
            self.record.spec.id,
            self.record.spec.name.clone(),
            self.record.spec.queue.clone(),
            self.record.attempts,
            self.record.state,
            self.record.reason.clone(),
        )
    }

    /// Whether a claim at `now` may take it: queued, or scheduled and due (being
    /// promoted right now).
    pub fn claimable(&self, now: DateTime<Utc>) -> bool {
        matches!(self.record.state, TaskState::Queued | TaskState::Scheduled)
            && self.record.spec.run_at <= now
            && self.record.spec.expires_at.is_none_or(|at| at > now)
    }

    /// Takes the task for a lease ending at `deadline`.
    pub fn claim(
        &mut self,
        token: LeaseToken,
        worker: &WorkerId,
        now: DateTime<Utc>,
        deadline: DateTime<Utc>,
    ) {
        let record = &mut self.record;
        record.state = TaskState::Running;
        record.attempts += 1;
        record.started_at = Some(now);
        record.lease_expires_at = Some(deadline);
        record.worker_id = Some(worker.clone());
        record.cancel_requested = false;
        record.updated_at = now;
        self.token = Some(token);
    }

    /// Whether `token` holds the task.
    pub fn held_by(&self, token: LeaseToken) -> bool {
        self.record.state == TaskState::Running && self.token == Some(token)
    }

    /// Ends the task in a terminal state.
    pub fn finish(&mut self, state: TaskState, reason: Option<String>, now: DateTime<Utc>) {
        let record = &mut self.record;
        record.state = state;
        record.finished_at = Some(now);
        record.updated_at = now;
        record.lease_expires_at = None;
        // A reason given when the cancel was requested wins over the worker's.
        record.reason = match state {
            TaskState::Cancelled | TaskState::Expired => record.reason.take().or(reason),
            _ => None,
        };
        self.token = None;
    }

    /// Makes the task ready again (queued, or scheduled for `run_at`).
    pub fn requeue(&mut self, now: DateTime<Utc>) {
        self.token = None;
        self.record.lease_expires_at = None;
        self.record.cancel_requested = false;
        self.record.updated_at = now;
        self.record.state = ready_state(self.record.spec.run_at, now);
    }

    /// Applies a completion under lease `token`.
    pub fn complete(
        &mut self,
        token: LeaseToken,
        outcome: CompletionOutcome,
        now: DateTime<Utc>,
    ) -> Applied {
        if self.completed == Some(token) {
            // This lease's completion is in already, whatever happened to the task since
            // (another worker may hold it now).
            return Applied::Resent;
        }
        if !self.held_by(token) {
            return Applied::LeaseLost;
        }
        self.completed = Some(token);
        let attempt = self.record.attempts;
        // A retry, release or snooze of a task whose cancel was requested while it ran ends
        // it Cancelled instead: the request must not be lost with the attempt.
        let outcome = match outcome {
            CompletionOutcome::Retry { .. }
            | CompletionOutcome::Release
            | CompletionOutcome::Snooze { .. }
                if self.record.cancel_requested =>
            {
                CompletionOutcome::Cancelled {
                    reason: CANCELLED_WHILE_RUNNING.to_owned(),
                }
            }
            other => other,
        };
        match outcome {
            CompletionOutcome::Succeeded => self.finish(TaskState::Succeeded, None, now),
            CompletionOutcome::Failed { error } => {
                self.record
                    .errors
                    .push(AttemptError::new(attempt, now, error));
                self.finish(TaskState::Failed, None, now);
            }
            CompletionOutcome::Cancelled { reason } => {
                self.finish(TaskState::Cancelled, Some(reason), now);
            }
            CompletionOutcome::Retry { run_at, error } => {
                self.record
                    .errors
                    .push(AttemptError::new(attempt, now, error));
                self.record.spec.run_at = run_at;
                self.requeue(now);
            }
            CompletionOutcome::Release => {
                self.record.attempts = self.record.attempts.saturating_sub(1);
                self.requeue(now);
                // Released now, whatever its run_at said.
                self.record.state = TaskState::Queued;
            }
            CompletionOutcome::Snooze { run_at } => {
                self.record.attempts = self.record.attempts.saturating_sub(1);
                self.record.spec.run_at = run_at;
                self.requeue(now);
            }
        }
        Applied::Changed
    }

    /// Takes back a task whose lease lapsed: queued again, failed when its attempts are
    /// spent, cancelled when a cancel was requested while it ran.
    pub fn recover(&mut self, now: DateTime<Utc>) {
        let record = &mut self.record;
        record.errors.push(AttemptError::new(
            record.attempts,
            now,
            TaskError::with_kind(
                TaskErrorKind::LeaseLost,
                "lease expired: the worker stopped renewing it",
                true,
            ),
        ));
        if record.cancel_requested {
            self.finish(
                TaskState::Cancelled,
                Some(CANCELLED_WHILE_RUNNING.to_owned()),
                now,
            );
        } else if record.attempts >= record.spec.max_attempts {
            self.finish(TaskState::Failed, None, now);
        } else {
            self.requeue(now);
            self.record.state = TaskState::Queued;
        }
    }

    /// Sends a dead letter back, attempts reset, due now.
    pub fn redrive(&mut self, now: DateTime<Utc>) {
        let record = &mut self.record;
        record.state = TaskState::Queued;
        record.attempts = 0;
        record.finished_at = None;
        record.spec.run_at = now;
        record.updated_at = now;
        self.token = None;
    }
}

/// A task's bytes: a line of JSON with everything but the payload, then the payload as it
/// is. In JSON a payload would be an array of numbers, three to four times its size.
///
/// # Errors
/// A backend error of `backend` when the task cannot be written as JSON.
pub fn encode(task: &KvTask, backend: &'static str) -> StoreResult<Vec<u8>> {
    let payload = &task.record.spec.payload;
    let mut meta = task.clone();
    meta.record.spec.payload = Vec::new();
    // Compact JSON never holds a raw newline, so the first one ends the meta line.
    let mut bytes = serde_json::to_vec(&meta).map_err(|e| StoreError::backend(backend, e))?;
    bytes.reserve(payload.len() + 1);
    bytes.push(b'\n');
    bytes.extend_from_slice(payload);
    Ok(bytes)
}

/// A task from its bytes ([`encode`]).
///
/// # Errors
/// A backend error of `backend` when the bytes are not a task.
pub fn decode(bytes: &[u8], backend: &'static str) -> StoreResult<KvTask> {
    let corrupt =
        |e: serde_json::Error| StoreError::backend(backend, format!("unexpected task: {e}"));
    let Some(split) = bytes.iter().position(|b| *b == b'\n') else {
        // Written whole as JSON, before payloads were split off.
        return serde_json::from_slice(bytes).map_err(corrupt);
    };
    let mut task: KvTask = serde_json::from_slice(&bytes[..split]).map_err(corrupt)?;
    task.record.spec.payload = bytes[split + 1..].to_vec();
    Ok(task)
}

/// A dead letter in place of a stored task that cannot be read (a value written by a buggy
/// release, edited by hand, or damaged): its id, name, queue, attempts, creation time,
/// dependants and payload where they still read, default options, state Failed with a
/// decode error that says why. Claiming it again could only fail the same way; as a dead
/// letter an operator sees it, and can re-drive it once its cause is known. `None` unless
/// the value still says it is Queued (see the body).
pub fn salvage(bytes: &[u8], error: &StoreError, now: DateTime<Utc>) -> Option<KvTask> {
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
    let mut task = KvTask::new(record);
    task.children = children;
    Some(task)
}
