use std::sync::Arc;
use std::time::Duration;

use omniq_models::{TaskError, TaskErrorKind, TaskEvent, TaskEventKind, TaskId, TaskResult};
use omniq_storage::{Completion, CompletionOutcome, CompletionStatus, LeaseRef, StoreResult};
use tokio::sync::{OwnedSemaphorePermit, mpsc};

use super::shared::{Counters, Shared};
use super::task_metrics::TaskMetrics;
use metrics::Counter;

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
            completion: Completion {
                lease,
                outcome: CompletionOutcome::Release,
            },
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

/// Applies completions in batches: whatever has piled up while the previous batch was
/// written goes in the next, so an idle worker completes at once and a busy one makes
/// one round trip for many tasks.
pub(crate) async fn flush_loop(
    shared: Arc<Shared>,
    mut finished: mpsc::UnboundedReceiver<Finished>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = finished.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match finished.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        flush(&shared, std::mem::take(&mut batch)).await;
    }
}

async fn flush(shared: &Shared, batch: Vec<Finished>) {
    let ttl = shared.config.result_ttl;
    // Results of successes are stored before the task is marked Succeeded, so that anyone
    // who sees Succeeded can read the result.
    let successes: Vec<_> = batch
        .iter()
        .filter_map(|f| {
            let value = f.value.clone()?;
            Some(TaskResult::success(
                f.completion.lease.task_id,
                &f.task_name,
                value,
                f.attempt,
                ttl,
            ))
        })
        .collect();
    if !successes.is_empty()
        && let Err(err) = with_retries(|| shared.results.put(successes.clone())).await
    {
        tracing::error!(%err, count = successes.len(),
            "cannot store results; their tasks will run again once their leases expire");
        abandon(shared, &batch);
        return;
    }

    let completions: Vec<_> = batch.iter().map(|f| f.completion.clone()).collect();
    let completed = match with_retries(|| shared.queue.complete(completions.clone())).await {
        Ok(completed) => completed,
        Err(err) => {
            tracing::error!(%err, count = batch.len(),
                "cannot complete tasks; they will be recovered once their leases expire");
            abandon(shared, &batch);
            return;
        }
    };

    let mut failures = Vec::new();
    for (mut item, status) in batch.into_iter().zip(completed.statuses) {
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
                failures.push(TaskResult::failure(
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
        }
    }
    super::leases::log_changes(shared, &completed.changes, TaskEventKind::Unblocked).await;
    // Dead letters get a result too, so that whoever waits on them learns the error.
    if !failures.is_empty()
        && let Err(err) = with_retries(|| shared.results.put(failures.clone())).await
    {
        tracing::warn!(%err, "cannot store the results of dead-lettered tasks");
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

/// Gives up on a batch the store would not take: its leases must be forgotten, or the
/// heartbeat would renew them for as long as this process lives and the tasks would never
/// be recovered by anyone.
fn abandon(shared: &Shared, batch: &[Finished]) {
    for item in batch {
        shared.forget(&item.completion.lease);
    }
}

fn run_failed_hook(shared: &Shared, item: &Finished, error: TaskError) {
    let Some(payload) = &item.payload else { return };
    let Some(handler) = shared.registry.get(&item.task_name) else {
        return;
    };
    if let Some(hook) = handler.failed(payload, shared.codec, error) {
        tokio::spawn(hook);
    }
}

/// Stores are retried briefly: a blip should not cost a batch its completions.
async fn with_retries<T, F, Fut>(mut call: F) -> StoreResult<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = StoreResult<T>>,
{
    let mut pause = Duration::from_millis(50);
    let mut attempt = 1;
    loop {
        match call().await {
            Ok(value) => return Ok(value),
            Err(err) if attempt < 8 => {
                tracing::warn!(%err, attempt, "store call failed; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
                attempt += 1;
            }
            Err(err) => return Err(err),
        }
    }
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
