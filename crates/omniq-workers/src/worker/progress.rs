//! An attempt's progress reports: one store call each, fenced by the attempt's lease and
//! renewing it, then an event.

use std::sync::Arc;

use omniq_models::{TaskEvent, TaskEventKind};
use omniq_storage::{Capability, Lease, LeaseRef, LeaseStatus, StoreErrorKind};

use super::leases::apply_status;
use super::resilience::bounded;
use super::shared::Shared;
use crate::progress::{ProgressError, ProgressSink};

/// What a progress event names besides the task.
struct Attempt {
    name: String,
    queue: String,
    attempt: u32,
}

/// The sink of the attempt `lease` holds.
pub(crate) fn sink(shared: &Arc<Shared>, lease: &Lease) -> ProgressSink {
    let shared = Arc::clone(shared);
    let reference = lease.reference();
    let about = Arc::new(Attempt {
        name: lease.spec.name.clone(),
        queue: lease.spec.queue.clone(),
        attempt: lease.attempt,
    });
    // A blocking handler waits at most for the call's bound, and a moment more.
    let answer_within = report_limit(&shared) + std::time::Duration::from_secs(1);
    ProgressSink::new(answer_within, move |value| {
        let shared = Arc::clone(&shared);
        let about = Arc::clone(&about);
        Box::pin(async move { report(&shared, reference, &about, value).await })
    })
}

async fn report(
    shared: &Shared,
    lease: LeaseRef,
    about: &Attempt,
    value: serde_json::Value,
) -> Result<(), ProgressError> {
    if !shared.queue.capabilities().supports(Capability::Progress) {
        return Err(ProgressError::Unsupported(
            "the task queue's backend does not store progress".to_owned(),
        ));
    }
    // Only the attempt that holds the lease here renews it: a handler this worker gave up
    // on (its lease lost, or left behind by a shutdown) keeps running on its thread, and
    // must not keep its task Running in the store.
    let holds = shared
        .in_flight()
        .get(&lease.task_id)
        .is_some_and(|held| held.token == lease.token && !held.finished);
    if !holds {
        return Err(ProgressError::LeaseLost);
    }
    let text = value.to_string();
    let asked = tokio::time::Instant::now();
    // Bounded like a heartbeat, so a hung store never holds the handler past the lease.
    let limit = report_limit(shared);
    let call = shared
        .queue
        .report_progress(lease, value, shared.config.lease);
    match bounded(limit, call).await {
        Ok(status) => {
            apply_status(
                shared,
                lease,
                status,
                asked,
                "progress refused: the lease was lost; the attempt was stopped",
            );
            if status == LeaseStatus::Lost {
                return Err(ProgressError::LeaseLost);
            }
            shared.events.log(
                TaskEvent::for_task(
                    TaskEventKind::Progress,
                    lease.task_id,
                    &about.name,
                    &about.queue,
                )
                .attempt(about.attempt)
                .worker(shared.id.clone())
                .message(text),
            );
            Ok(())
        }
        Err(err) => Err(match err.kind() {
            StoreErrorKind::Invalid => ProgressError::Invalid(err.to_string()),
            StoreErrorKind::Unsupported => ProgressError::Unsupported(err.to_string()),
            _ => ProgressError::Store(err.to_string()),
        }),
    }
}

/// The bound of one report's store call.
fn report_limit(shared: &Shared) -> std::time::Duration {
    shared.config.store_timeout.min(shared.config.lease / 2)
}
