//! A task as the tasks bucket keeps it, and the state changes a queue makes to one task.
//!
//! Every change is computed here, on one decoded task, and written back by a
//! compare-and-set on the key's revision (see `super::cas`): a change computed from a
//! stale read is refused by the server and computed again from a fresh one.

use chrono::{DateTime, Utc};
use omniq_models::{
    AttemptError, LeaseToken, TaskError, TaskErrorKind, TaskId, TaskRecord, TaskState, WorkerId,
};
use omniq_storage::{CANCELLED_WHILE_RUNNING, CompletionOutcome, StateChange};
use serde::{Deserialize, Serialize};

/// A task and its fencing tokens.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Stored {
    pub(crate) record: TaskRecord,
    /// The lease that holds the task while it runs.
    #[serde(default)]
    pub(crate) token: Option<LeaseToken>,
    /// The lease whose completion was applied last: a re-send of it is known as such.
    #[serde(default)]
    pub(crate) completed: Option<LeaseToken>,
    /// The tasks that wait for this one (see `super::dependencies`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) children: Vec<TaskId>,
}

/// What became of a completion applied to a task.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Applied {
    /// The lease held: the task changed.
    Changed,
    /// The same lease's completion is in already (a re-send after a lost reply).
    Resent,
    /// Another lease holds the task, or none does.
    LeaseLost,
}

pub(crate) fn ready_state(run_at: DateTime<Utc>, now: DateTime<Utc>) -> TaskState {
    if run_at > now {
        TaskState::Scheduled
    } else {
        TaskState::Queued
    }
}

pub(crate) fn expiry_reason() -> String {
    "not started before its expiry (ttl)".to_owned()
}

impl Stored {
    pub(crate) fn new(record: TaskRecord) -> Self {
        Self {
            record,
            token: None,
            completed: None,
            children: Vec::new(),
        }
    }

    pub(crate) fn change(&self) -> StateChange {
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
    pub(crate) fn claimable(&self, now: DateTime<Utc>) -> bool {
        matches!(self.record.state, TaskState::Queued | TaskState::Scheduled)
            && self.record.spec.run_at <= now
            && self.record.spec.expires_at.is_none_or(|at| at > now)
    }

    /// Takes the task for a lease ending at `deadline`.
    pub(crate) fn claim(
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
    pub(crate) fn held_by(&self, token: LeaseToken) -> bool {
        self.record.state == TaskState::Running && self.token == Some(token)
    }

    /// Ends the task in a terminal state.
    pub(crate) fn finish(&mut self, state: TaskState, reason: Option<String>, now: DateTime<Utc>) {
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
    fn requeue(&mut self, now: DateTime<Utc>) {
        self.token = None;
        self.record.lease_expires_at = None;
        self.record.cancel_requested = false;
        self.record.updated_at = now;
        self.record.state = ready_state(self.record.spec.run_at, now);
    }

    /// Applies a completion under lease `token`.
    pub(crate) fn complete(
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
    pub(crate) fn recover(&mut self, now: DateTime<Utc>) {
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
    pub(crate) fn redrive(&mut self, now: DateTime<Utc>) {
        let record = &mut self.record;
        record.state = TaskState::Queued;
        record.attempts = 0;
        record.finished_at = None;
        record.spec.run_at = now;
        record.updated_at = now;
        self.token = None;
    }
}
