use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use metrics::Counter;
use omniq_models::{
    TaskError, TaskErrorKind, TaskEvent, TaskEventKind, TaskId, TaskResult, TaskState,
};
use omniq_storage::{Completion, CompletionOutcome, CompletionStatus, LeaseRef};
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio_util::sync::CancellationToken;

use super::resilience::{GaveUp, bounded, guarded, persist};
use super::shared::{Counters, Shared};
use super::task_metrics::TaskMetrics;

/// Most completions applied in one round trip.
const MAX_BATCH: usize = 512;

/// An ended attempt on its way to the store.
#[derive(Debug)]
pub(crate) struct Finished {
    pub(crate) completion: Completion,
    pub(crate) task_name: String,
    pub(crate) queue: String,
    pub(crate) attempt: u32,
    /// The encoded return value, on success.
    pub(crate) value: Option<Vec<u8>>,
    /// The payload, kept for the task's `failed` hook on a dead letter.
    pub(crate) payload: Option<Vec<u8>>,
    /// The lease permit, freed once the completion is applied.
    pub(crate) permit: Option<OwnedSemaphorePermit>,
    /// The task's metric handles (none for a lease given back unrun).
    pub(crate) metrics: Option<Arc<TaskMetrics>>,
}

impl Finished {
    /// Gives a lease back unrun.
    pub(crate) fn release(lease: LeaseRef) -> Self {
        Self {
            completion: Completion::new(lease, CompletionOutcome::Release),
            task_name: String::new(),
            queue: String::new(),
            attempt: 0,
            value: None,
            payload: None,
            permit: None,
            metrics: None,
        }
    }

    fn event(&self, kind: TaskEventKind) -> TaskEvent {
        TaskEvent::for_task(
            kind,
            self.completion.lease.task_id,
            &self.task_name,
            &self.queue,
        )
        .attempt(self.attempt)
    }
}

/// Applies completions in batches, in three lanes so that one store's outage never holds
/// back another's work: successes store their result first (the results lane), every
/// completion is then applied to the queue (the completion lane), and dead letters store
/// their failure result last (the dead-letter lane).
///
/// Within a lane, whatever piled up while the previous batch was written goes in the next,
/// so an idle worker completes at once and a busy one makes one round trip for many tasks.
/// Store outages are retried for as long as they last (a completion re-sent after a lost
/// reply is applied once), until `abandon` is cancelled at the end of a shutdown.
pub(crate) async fn flush_loop(
    shared: Arc<Shared>,
    mut finished: mpsc::UnboundedReceiver<Finished>,
    abandon: CancellationToken,
) {
    let (apply_tx, apply_rx) = mpsc::unbounded_channel();
    let (results_tx, results_rx) = mpsc::unbounded_channel();
    let (dead_tx, dead_rx) = mpsc::unbounded_channel();
    let results = tokio::spawn(lane(
        Arc::clone(&shared),
        results_rx,
        abandon.clone(),
        Lane::Results(apply_tx.clone()),
    ));
    let apply = tokio::spawn(lane(
        Arc::clone(&shared),
        apply_rx,
        abandon.clone(),
        Lane::Completions(dead_tx),
    ));
    let dead = tokio::spawn(dead_letter_lane(Arc::clone(&shared), dead_rx, abandon));
    while let Some(item) = finished.recv().await {
        let routed = if item.value.is_some() {
            results_tx.send(item)
        } else {
            apply_tx.send(item)
        };
        if let Err(mpsc::error::SendError(item)) = routed {
            // A lane ended early (it cannot, short of a bug): the lease must not be renewed
            // forever, so it is forgotten and the task recovered after the lease.
            shared.forget(&item.completion.lease);
        }
    }
    // Each lane ends once the one feeding it has: results, then completions, then dead
    // letters.
    drop(results_tx);
    let _ = results.await;
    drop(apply_tx);
    let _ = apply.await;
    let _ = dead.await;
}

/// Waits for the next item, then takes whatever else is already waiting, up to
/// [`MAX_BATCH`]. `None` once the channel is closed and drained.
async fn next_batch<T>(input: &mut mpsc::UnboundedReceiver<T>) -> Option<Vec<T>> {
    let first = input.recv().await?;
    let mut batch = Vec::with_capacity(MAX_BATCH.min(input.len() + 1));
    batch.push(first);
    while batch.len() < MAX_BATCH {
        match input.try_recv() {
            Ok(next) => batch.push(next),
            Err(_) => break,
        }
    }
    Some(batch)
}

/// What a lane does with its batch.
enum Lane {
    /// Stores the results of successes, then passes them to the completion lane.
    Results(mpsc::UnboundedSender<Finished>),
    /// Applies completions, then passes dead letters' failure results on.
    Completions(mpsc::UnboundedSender<TaskResult>),
}

async fn lane(
    shared: Arc<Shared>,
    mut input: mpsc::UnboundedReceiver<Finished>,
    abandon: CancellationToken,
    lane: Lane,
) {
    while let Some(batch) = next_batch(&mut input).await {
        let leases: Vec<LeaseRef> = batch.iter().map(|f| f.completion.lease).collect();
        let step = match &lane {
            Lane::Results(next) => store_results(&shared, batch, next, &abandon).boxed(),
            Lane::Completions(dead) => apply(&shared, batch, dead, &abandon).boxed(),
        };
        // A panic here is a bug of ours, not the user's; it must not stop every later
        // completion. The batch's leases are forgotten, so their tasks are recovered.
        if AssertUnwindSafe(step).catch_unwind().await.is_err() {
            tracing::error!(
                count = leases.len(),
                "completion flush panicked; its tasks will be recovered after their leases"
            );
            for lease in &leases {
                shared.forget(lease);
            }
        }
    }
}

/// Stores the results of successes before their tasks are marked Succeeded, so that anyone
/// who sees Succeeded can read the result.
async fn store_results(
    shared: &Shared,
    batch: Vec<Finished>,
    next: &mpsc::UnboundedSender<Finished>,
    abandon: &CancellationToken,
) {
    let ttl = shared.config.result_ttl;
    let results: Vec<_> = batch
        .iter()
        .filter_map(|f| {
            Some(TaskResult::success(
                f.completion.lease.task_id,
                &f.task_name,
                f.value.clone()?,
                f.attempt,
                ttl,
            ))
        })
        .collect();
    let stored = persist(
        "store results",
        shared.config.store_timeout,
        abandon,
        Some(&shared.results_stalled),
        || shared.results.put(results.clone()),
    )
    .await;
    match stored {
        Ok(((), _)) => {}
        Err(GaveUp::Refused(err)) if batch.len() > 1 => {
            // One result the store will not take (too large, say) must not cost the others.
            tracing::warn!(%err, count = batch.len(), "result batch refused; storing one by one");
            for item in batch {
                Box::pin(store_results(shared, vec![item], next, abandon)).await;
            }
            return;
        }
        Err(GaveUp::Refused(err)) => {
            // The task ran, but its result can never be stored: running it again would end
            // the same way, so it fails for good with the reason.
            let mut batch = batch;
            for item in &mut batch {
                item.value = None;
                item.payload = None;
                item.completion.outcome = CompletionOutcome::Failed {
                    error: TaskError::with_kind(
                        TaskErrorKind::Encode,
                        format!("the result store refused the result: {err}"),
                        false,
                    ),
                };
            }
            for item in batch {
                let _ = next.send(item);
            }
            return;
        }
        Err(gave_up @ GaveUp::Abandoned(_)) => {
            tracing::error!(%gave_up, count = batch.len(),
                "cannot store results before shutdown; these tasks will run again once \
                 their leases expire");
            abandon_leases(shared, &batch);
            return;
        }
    }
    for item in batch {
        if let Err(mpsc::error::SendError(item)) = next.send(item) {
            shared.forget(&item.completion.lease);
        }
    }
}

/// Applies a batch of completions to the queue, then logs what they did.
async fn apply(
    shared: &Shared,
    batch: Vec<Finished>,
    dead: &mpsc::UnboundedSender<TaskResult>,
    abandon: &CancellationToken,
) {
    let completions: Vec<_> = batch.iter().map(|f| f.completion.clone()).collect();
    let applied = persist(
        "complete tasks",
        shared.config.store_timeout,
        abandon,
        Some(&shared.completions_stalled),
        || shared.queue.complete(completions.clone()),
    )
    .await;
    let (completed, resent) = match applied {
        Ok((completed, resent)) if completed.statuses.len() == batch.len() => (completed, resent),
        Ok((completed, _)) => {
            tracing::error!(
                expected = batch.len(),
                got = completed.statuses.len(),
                "the store answered a completion batch with the wrong number of statuses; \
                 its tasks will be recovered after their leases"
            );
            abandon_leases(shared, &batch);
            return;
        }
        Err(GaveUp::Refused(err)) if batch.len() > 1 => {
            // One completion the store will not take must never cost its batch.
            tracing::warn!(%err, count = batch.len(), "completion batch refused; applying one by one");
            for item in batch {
                Box::pin(apply(shared, vec![item], dead, abandon)).await;
            }
            return;
        }
        Err(gave_up) => {
            tracing::error!(%gave_up, count = batch.len(),
                "cannot complete tasks; they will be recovered once their leases expire");
            abandon_leases(shared, &batch);
            return;
        }
    };

    let ttl = shared.config.result_ttl;
    for (mut item, mut status) in batch.into_iter().zip(completed.statuses) {
        // A batch sent again after a lost reply finds the completions the first try applied
        // refused (their lease is gone): the task's record tells whether that was ours.
        if status == CompletionStatus::LeaseLost && resent && applied_before(shared, &item).await {
            status = CompletionStatus::Applied;
        }
        shared.forget(&item.completion.lease);
        // The completion is in the store: the worker may take another lease.
        drop(item.permit.take());
        if status == CompletionStatus::LeaseLost {
            Counters::add(&shared.counters.lease_lost);
            metrics::counter!("omniq_tasks_lease_lost_total").increment(1);
            shared.events.log(
                item.event(TaskEventKind::LeaseLost)
                    .worker(shared.id.clone())
                    .message("completion refused: the lease was lost to another worker"),
            );
            continue;
        }
        let count = |pick: fn(&TaskMetrics) -> &Counter| {
            if let Some(handles) = &item.metrics {
                pick(handles).increment(1);
            }
        };
        match &item.completion.outcome {
            CompletionOutcome::Succeeded => {
                Counters::add(&shared.counters.succeeded);
                count(|m| &m.succeeded);
                shared.events.log(
                    item.event(TaskEventKind::Succeeded)
                        .worker(shared.id.clone()),
                );
            }
            CompletionOutcome::Retry { error, run_at } => {
                Counters::add(&shared.counters.retried);
                count(|m| &m.failed);
                count(|m| &m.retried);
                log_failure(shared, &item, error);
                shared.events.log(
                    item.event(TaskEventKind::Retrying)
                        .message(format!("next attempt at {run_at}: {error}")),
                );
            }
            CompletionOutcome::Failed { error } => {
                Counters::add(&shared.counters.dead_lettered);
                count(|m| &m.failed);
                count(|m| &m.dead_lettered);
                log_failure(shared, &item, error);
                shared.events.log(
                    item.event(TaskEventKind::DeadLettered)
                        .message(error.to_string()),
                );
                // Dead letters get a result too, so that whoever waits on them learns the
                // error.
                let _ = dead.send(TaskResult::failure(
                    item.completion.lease.task_id,
                    &item.task_name,
                    error.clone(),
                    item.attempt,
                    ttl,
                ));
                run_failed_hook(shared, &item, error.clone());
            }
            CompletionOutcome::Cancelled { reason } => {
                Counters::add(&shared.counters.cancelled);
                count(|m| &m.cancelled);
                shared
                    .events
                    .log(item.event(TaskEventKind::Cancelled).message(reason.clone()));
            }
            CompletionOutcome::Release => Counters::add(&shared.counters.released),
            CompletionOutcome::Snooze { run_at } => {
                Counters::add(&shared.counters.snoozed);
                count(|m| &m.snoozed);
                shared.events.log(
                    item.event(TaskEventKind::Snoozed)
                        .message(format!("next attempt at {run_at}")),
                );
            }
        }
    }
    super::leases::log_changes(shared, &completed.changes, TaskEventKind::Unblocked).await;
}

/// Whether `item`'s completion was applied by an earlier try of its batch whose reply was
/// lost. The record must show this worker as the last holder and the completion's own
/// trace: the attempt it ended (a later run counts another), and for failures this
/// attempt's very error (recovery records none). Stores that recognise a re-sent
/// completion themselves never get here.
async fn applied_before(shared: &Shared, item: &Finished) -> bool {
    let task_id = item.completion.lease.task_id;
    let Ok(Some(record)) = bounded(shared.config.store_timeout, shared.queue.get(task_id)).await
    else {
        return false;
    };
    if record.worker_id.as_ref() != Some(&shared.id) {
        return false;
    }
    let ours = |error: &TaskError| {
        record
            .errors
            .iter()
            .any(|e| e.attempt == item.attempt && e.error == *error)
    };
    match &item.completion.outcome {
        CompletionOutcome::Succeeded => {
            record.state == TaskState::Succeeded && record.attempts == item.attempt
        }
        CompletionOutcome::Failed { error } => record.state == TaskState::Failed && ours(error),
        CompletionOutcome::Retry { error, .. } => ours(error),
        CompletionOutcome::Cancelled { .. } => record.state == TaskState::Cancelled,
        CompletionOutcome::Release | CompletionOutcome::Snooze { .. } => {
            record.state != TaskState::Running && record.attempts + 1 == item.attempt
        }
    }
}

/// Stores the failure results of dead letters, batched, retried like completions.
async fn dead_letter_lane(
    shared: Arc<Shared>,
    mut input: mpsc::UnboundedReceiver<TaskResult>,
    abandon: CancellationToken,
) {
    while let Some(results) = next_batch(&mut input).await {
        let stored = persist(
            "store dead-letter results",
            shared.config.store_timeout,
            &abandon,
            None,
            || shared.results.put(results.clone()),
        )
        .await;
        if let Err(gave_up) = stored {
            tracing::warn!(%gave_up, count = results.len(),
                "cannot store the results of dead-lettered tasks");
        }
    }
}

fn log_failure(shared: &Shared, item: &Finished, error: &TaskError) {
    if error.kind == TaskErrorKind::Timeout {
        shared.events.log(
            item.event(TaskEventKind::TimedOut)
                .message(error.message.clone()),
        );
    }
    shared.events.log(
        item.event(TaskEventKind::Failed)
            .worker(shared.id.clone())
            .message(error.to_string()),
    );
}

/// Gives up on completions the store would not take: their leases must be forgotten, or the
/// heartbeat would renew them for as long as this process lives and the tasks would never
/// be recovered by anyone.
fn abandon_leases(shared: &Shared, batch: &[Finished]) {
    for item in batch {
        shared.forget(&item.completion.lease);
    }
}

/// Runs the task's `failed` hook on a task of its own; a panicking hook is logged and
/// changes nothing else.
fn run_failed_hook(shared: &Shared, item: &Finished, error: TaskError) {
    let Some(payload) = &item.payload else { return };
    let Some(handler) = shared.registry.handler(&item.task_name) else {
        return;
    };
    let task_id = item.completion.lease.task_id;
    let hook = match guarded(|| handler.failed(payload, shared.codec, error)) {
        Ok(Some(hook)) => hook,
        Ok(None) => return,
        Err(panic) => {
            tracing::warn!(task.id = %task_id, %panic, "the task's failed hook panicked");
            return;
        }
    };
    tokio::spawn(async move {
        if let Err(panic) = AssertUnwindSafe(hook).catch_unwind().await {
            let panic = super::resilience::panicked(panic);
            tracing::warn!(task.id = %task_id, %panic, "the task's failed hook panicked");
        }
    });
}

/// A result for a task whose lease expired on its last attempt.
pub(crate) fn lease_expired_result(
    task_id: TaskId,
    task_name: &str,
    attempts: u32,
    ttl: Option<Duration>,
) -> TaskResult {
    TaskResult::failure(
        task_id,
        task_name,
        TaskError::with_kind(
            TaskErrorKind::LeaseLost,
            "lease expired on the last attempt: the worker stopped renewing it",
            false,
        ),
        attempts,
        ttl,
    )
}
