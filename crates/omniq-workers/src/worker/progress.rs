//! An attempt's progress reports: one store call each, fenced by the attempt's lease and
//! renewing it, then an event.

use std::sync::Arc;

use omniq_models::{TaskEvent, TaskEventKind};
use omniq_storage::{Capability, Lease, LeaseRef, LeaseStatus, StoreErrorKind};

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
    ProgressSink::new(move |value| {
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
    let text = value.to_string();
    let asked = tokio::time::Instant::now();
    // Bounded like a heartbeat, so a hung store never holds the handler past the lease.
    let limit = shared.config.store_timeout.min(shared.config.lease / 2);
    let call = shared
        .queue
        .report_progress(lease, value, shared.config.lease);
    match bounded(limit, call).await {
        Ok(LeaseStatus::Held | LeaseStatus::CancelRequested) => {
            // A renewal: the lease watchdog counts from it (a cancel request reaches the
            // handler through the next heartbeat).
            if let Some(held) = shared.in_flight().get_mut(&lease.task_id)
                && held.token == lease.token
            {
                held.expires = asked + shared.config.lease;
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
        Ok(LeaseStatus::Lost) => Err(ProgressError::LeaseLost),
        Err(err) => Err(match err.kind() {
            StoreErrorKind::Invalid => ProgressError::Invalid(err.to_string()),
            StoreErrorKind::Unsupported => ProgressError::Unsupported(err.to_string()),
            _ => ProgressError::Store(err.to_string()),
        }),
    }
}
