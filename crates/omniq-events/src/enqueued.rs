//! What every enqueue records once the store accepted it, whoever enqueued: the facades,
//! the scheduler's fires, a transactional enqueue.

use omniq_models::{TaskEvent, TaskEventKind, TaskState};
use omniq_storage::EnqueueOutcome;

use crate::EventLogger;

/// Records an enqueue the store accepted: for each task, the event of the state it was
/// stored in (`Enqueued`, `Scheduled`, `Blocked`, `Cancelled`; `Deduplicated` when a live
/// task with its unique key was returned instead) and, for each task created, one on the
/// `omniq_tasks_enqueued_total` counter (labels `queue`, `task`). `tasks` (each task's
/// name and queue) and `outcomes` are in the same order, as the store returns them.
pub fn record_enqueued<'a>(
    events: &EventLogger,
    tasks: impl IntoIterator<Item = (&'a str, &'a str)>,
    outcomes: &[EnqueueOutcome],
) {
    for ((name, queue), outcome) in tasks.into_iter().zip(outcomes) {
        let kind = match outcome {
            EnqueueOutcome::Created { state, .. } => {
                metrics::counter!(
                    "omniq_tasks_enqueued_total",
                    "queue" => queue.to_owned(),
                    "task" => name.to_owned()
                )
                .increment(1);
                match state {
                    TaskState::Cancelled => TaskEventKind::Cancelled,
                    TaskState::Scheduled => TaskEventKind::Scheduled,
                    TaskState::Blocked => TaskEventKind::Blocked,
                    _ => TaskEventKind::Enqueued,
                }
            }
            EnqueueOutcome::Duplicate { .. } => TaskEventKind::Deduplicated,
        };
        events.log(TaskEvent::for_task(kind, outcome.id(), name, queue));
    }
}
