//! What every cancel records once the store applied it, whoever cancelled: the facades, an
//! operator's tool.

use omniq_models::{TaskEvent, TaskEventKind, TaskId};
use omniq_storage::{CancelOutcome, Cancellation};

use crate::EventLogger;

/// Records a cancel the store applied to `task_id`: `Cancelled` when it ended at once
/// (`CancelRequested` when it was running and its worker will stop it), with `reason` as
/// the message, then `Cancelled` for every dependent the cancel ended with it; nothing for
/// a task that had already finished.
pub fn record_cancellation(
    events: &EventLogger,
    task_id: TaskId,
    reason: &str,
    cancellation: &Cancellation,
) {
    let kind = match cancellation.outcome {
        CancelOutcome::Cancelled => Some(TaskEventKind::Cancelled),
        CancelOutcome::Requested => Some(TaskEventKind::CancelRequested),
        CancelOutcome::AlreadyFinished(_) => None,
    };
    if let Some(kind) = kind {
        let mut event = TaskEvent::new(kind).message(reason);
        event.task_id = Some(task_id);
        events.log(event);
    }
    for change in &cancellation.changes {
        events.log(change.event(TaskEventKind::Cancelled));
    }
}
