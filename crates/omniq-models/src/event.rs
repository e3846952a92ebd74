use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{TaskId, WorkerId};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TaskEventKind {
    /// Enqueued and ready.
    Enqueued,
    /// Enqueued to run later.
    Scheduled,
    /// Enqueued, waiting on parents.
    Blocked,
    /// A unique enqueue found an existing task.
    Deduplicated,
    /// Its parents settled and it is ready to run.
    Unblocked,
    /// A worker started an attempt.
    Started,
    /// Finished successfully.
    Succeeded,
    /// An attempt failed.
    Failed,
    /// An attempt failed and another is scheduled.
    Retrying,
    /// The handler asked to run again later without counting the attempt
    /// ([`TaskError::snooze`](crate::TaskError::snooze)).
    Snoozed,
    /// Out of attempts (or failed permanently); kept as a dead letter.
    DeadLettered,
    /// Cancelled.
    Cancelled,
    /// Expired before it started.
    Expired,
    /// An attempt ran past its timeout.
    TimedOut,
    /// Cancellation of a running task was requested; its worker is stopping it.
    CancelRequested,
    /// A worker lost its lease; its completion was refused.
    LeaseLost,
    /// An expired lease was recovered by another worker.
    Recovered,
    /// A dead letter was sent back to its queue.
    Redriven,
    /// A schedule was created.
    ScheduleCreated,
    /// A schedule enqueued a task.
    ScheduleFired,
    /// A schedule was paused.
    SchedulePaused,
    /// A schedule was resumed.
    ScheduleResumed,
    /// A schedule was deleted.
    ScheduleDeleted,
    /// A running task's handler reported progress (the value, as JSON, in the message).
    Progress,
    /// A queue was paused.
    QueuePaused,
    /// A paused queue was resumed.
    QueueResumed,
    /// A worker started.
    WorkerStarted,
    /// A worker stopped.
    WorkerStopped,
    /// A kind this release does not know, written by a newer one: read as this rather
    /// than failing the whole query during a rolling deploy.
    #[serde(other)]
    Other,
}

impl TaskEventKind {
    /// The stable lowercase name used in storage and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskEventKind::Enqueued => "enqueued",
            TaskEventKind::Scheduled => "scheduled",
            TaskEventKind::Blocked => "blocked",
            TaskEventKind::Deduplicated => "deduplicated",
            TaskEventKind::Unblocked => "unblocked",
            TaskEventKind::Started => "started",
            TaskEventKind::Succeeded => "succeeded",
            TaskEventKind::Failed => "failed",
            TaskEventKind::Retrying => "retrying",
            TaskEventKind::Snoozed => "snoozed",
            TaskEventKind::DeadLettered => "dead_lettered",
            TaskEventKind::Cancelled => "cancelled",
            TaskEventKind::Expired => "expired",
            TaskEventKind::TimedOut => "timed_out",
            TaskEventKind::CancelRequested => "cancel_requested",
            TaskEventKind::LeaseLost => "lease_lost",
            TaskEventKind::Recovered => "recovered",
            TaskEventKind::Redriven => "redriven",
            TaskEventKind::ScheduleCreated => "schedule_created",
            TaskEventKind::ScheduleFired => "schedule_fired",
            TaskEventKind::SchedulePaused => "schedule_paused",
            TaskEventKind::ScheduleResumed => "schedule_resumed",
            TaskEventKind::ScheduleDeleted => "schedule_deleted",
            TaskEventKind::Progress => "progress",
            TaskEventKind::QueuePaused => "queue_paused",
            TaskEventKind::QueueResumed => "queue_resumed",
            TaskEventKind::WorkerStarted => "worker_started",
            TaskEventKind::WorkerStopped => "worker_stopped",
            TaskEventKind::Other => "other",
        }
    }
}

impl fmt::Display for TaskEventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One lifecycle event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TaskEvent {
    /// Unique, time-ordered event id.
    pub id: Uuid,
    /// What happened.
    pub kind: TaskEventKind,
    /// When.
    pub at: DateTime<Utc>,
    /// The task it concerns, if any.
    pub task_id: Option<TaskId>,
    /// The task's handler name.
    pub task_name: Option<String>,
    /// The task's queue.
    pub queue: Option<String>,
    /// The attempt it concerns (1-based).
    pub attempt: Option<u32>,
    /// The worker involved.
    pub worker_id: Option<WorkerId>,
    /// The schedule involved.
    pub schedule: Option<String>,
    /// Detail, such as an error message.
    pub message: Option<String>,
}

impl TaskEvent {
    /// An event of `kind` happening now, with no subject yet.
    pub fn new(kind: TaskEventKind) -> Self {
        Self {
            id: Uuid::now_v7(),
            kind,
            at: Utc::now(),
            task_id: None,
            task_name: None,
            queue: None,
            attempt: None,
            worker_id: None,
            schedule: None,
            message: None,
        }
    }

    /// An event about a task.
    pub fn for_task(
        kind: TaskEventKind,
        task_id: TaskId,
        task_name: impl Into<String>,
        queue: impl Into<String>,
    ) -> Self {
        Self {
            task_id: Some(task_id),
            task_name: Some(task_name.into()),
            queue: Some(queue.into()),
            ..Self::new(kind)
        }
    }

    /// Sets the attempt.
    pub fn attempt(mut self, attempt: u32) -> Self {
        self.attempt = Some(attempt);
        self
    }

    /// Sets the worker.
    pub fn worker(mut self, worker_id: WorkerId) -> Self {
        self.worker_id = Some(worker_id);
        self
    }

    /// Sets the message.
    pub fn message(mut self, message: impl Into<String>) -> Self {
        self.message = Some(message.into());
        self
    }

    /// Sets the schedule name.
    pub fn schedule(mut self, name: impl Into<String>) -> Self {
        self.schedule = Some(name.into());
        self
    }
}
