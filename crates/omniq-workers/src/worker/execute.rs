use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures_util::FutureExt;
use omniq_models::{TaskError, TaskErrorKind, TaskEvent, TaskEventKind};
use omniq_storage::{Completion, CompletionOutcome, Lease};
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::completions::Finished;
use super::limiter;
use super::progress;
use super::resilience::{guarded, panicked};
use super::shared::{InFlight, Pipeline, Shared, SlotWait};
use crate::WorkerKind;
use crate::context::AttemptHeader;
use crate::registry::Invocation;
use crate::retry::after_failure;

/// The span of one attempt. A root of its own: the trace it belongs to is the enqueueing
/// span's (the `otel` feature), never whatever span happens to be current in the worker.
#[cfg(not(feature = "otel"))]
fn task_span(lease: &Lease) -> tracing::Span {
    let spec = &lease.spec;
    tracing::info_span!(parent: None, "omniq.task", task.id = %spec.id, task.name = %spec.name,
        queue = %spec.queue, attempt = lease.attempt)
}

/// The span of one attempt, continuing the enqueueing span's trace, with OpenTelemetry's
/// messaging attributes (a consumer span that processes a message).
#[cfg(feature = "otel")]
fn task_span(lease: &Lease) -> tracing::Span {
    let spec = &lease.spec;
    let span = tracing::info_span!(parent: None, "omniq.task", task.id = %spec.id,
        task.name = %spec.name, queue = %spec.queue, attempt = lease.attempt,
        otel.name = %format_args!("process {}", spec.queue), otel.kind = "consumer",
        otel.status_code = tracing::field::Empty,
        otel.status_description = tracing::field::Empty, messaging.system = "omniq",
        messaging.operation.type = "process", messaging.operation.name = "process",
        messaging.destination.name = %spec.queue, messaging.message.id = %spec.id);
    crate::otel::continue_trace(&span, &spec.metadata, lease.attempt, spec.created_at);
    span
}

/// Runs one lease to its end and hands the outcome to the completion flusher.
///
/// The lease waits in the worker's buffer for a slot. The slot is held while the handler
/// runs (for a blocking handler until its thread returns, even past a timeout); the lease
/// permit until the attempt's completion is applied, so a worker never holds more leases
/// than its budget and a crash re-runs at most that many tasks.
pub(crate) async fn execute(
    shared: Arc<Shared>,
    pipeline: Arc<Pipeline>,
    lease: Lease,
    lease_permit: OwnedSemaphorePermit,
    slot_wait: SlotWait,
    finished: mpsc::UnboundedSender<Finished>,
    claimed_at: tokio::time::Instant,
) {
    let spec = &lease.spec;
    let abort = CancellationToken::new();
    let cancel_requested = CancellationToken::new();
    let context = cancel_requested.child_token();
    shared.in_flight().insert(
        spec.id,
        InFlight {
            token: lease.token,
            abort: abort.clone(),
            cancel_requested: cancel_requested.clone(),
            context: context.clone(),
            finished: false,
            expires: claimed_at + shared.config.lease,
            on_thread: false,
        },
    );
    let unstarted = |outcome, permit| {
        pipeline.unbuffer();
        if let Some(held) = shared.in_flight().get_mut(&spec.id) {
            held.finished = true;
        }
        let _ = finished.send(Finished {
            completion: Completion::new(lease.reference(), outcome),
            task_name: spec.name.clone(),
            queue: spec.queue.clone(),
            attempt: lease.attempt,
            value: None,
            payload: None,
            permit: Some(permit),
            metrics: None,
        });
    };
    // A lease whose slot is free starts, even if the worker is stopping: it was claimed for
    // that slot. Only leases still waiting in the buffer go back unrun.
    let slot = tokio::select! {
        biased;
        // The lease was lost while buffered: nothing to complete.
        () = abort.cancelled() => {
            pipeline.unbuffer();
            return;
        }
        slot = slot_wait => match slot {
            Ok(slot) => slot,
            Err(_) => {
                pipeline.unbuffer();
                return;
            }
        },
        () = pipeline.stop.cancelled() => {
            unstarted(CompletionOutcome::Release, lease_permit);
            return;
        }
        () = cancel_requested.cancelled() => {
            let reason = "cancelled before it started".to_owned();
            unstarted(CompletionOutcome::Cancelled { reason }, lease_permit);
            return;
        }
    };
    if shared.paused.is_paused(&spec.queue) {
        // Its queue was paused while it waited in the buffer: give it back unrun (the
        // attempt with it), so that a pause holds for every task not yet started.
        drop(slot);
        unstarted(CompletionOutcome::Release, lease_permit);
        return;
    }
    // Its limits are taken while it holds the slot, so an attempt put off never ran.
    let limits_held = if shared.limiters.is_empty() {
        None
    } else {
        let taken = tokio::time::timeout(
            limiter::acquire_bound(shared.config.store_timeout),
            shared.limiters.acquire(&lease),
        )
        .await
        .unwrap_or_else(|_| {
            // A place granted after this is given back by the lane.
            Err(limiter::Wait::later(
                "the limiter lane did not answer in time".to_owned(),
            ))
        });
        match taken {
            // The lease was lost while the places were taken: the task is another
            // worker's now; the places go back with the hold.
            Ok(_) if abort.is_cancelled() => {
                pipeline.unbuffer();
                return;
            }
            Ok(hold) => Some(hold),
            Err(wait) => {
                tracing::debug!(task.id = %spec.id, queue = %spec.queue, reason = %wait.reason,
                    run_at = %wait.run_at, "limited: put off without using an attempt");
                metrics::counter!("omniq_tasks_limited_total", "queue" => spec.queue.clone())
                    .increment(1);
                drop(slot);
                unstarted(
                    CompletionOutcome::Snooze {
                        run_at: wait.run_at,
                    },
                    lease_permit,
                );
                return;
            }
        }
    };
    pipeline.unbuffer();

    let task_metrics = shared.metrics.get(&spec.queue, &spec.name);
    task_metrics.started.increment(1);
    let waited = (Utc::now() - spec.run_at).to_std().unwrap_or_default();
    task_metrics.wait.record(waited.as_secs_f64());
    shared.events.log(
        TaskEvent::for_task(TaskEventKind::Started, spec.id, &spec.name, &spec.queue)
            .attempt(lease.attempt)
            .worker(shared.id.clone()),
    );

    let span = task_span(&lease);
    let started = Instant::now();
    let grace = shared.config.cancel_grace;
    let mut slot = Some(slot);
    let outcome = tokio::select! {
        outcome = run_attempt(&shared, &lease, context, &mut slot).instrument(span.clone()) => Some(outcome),
        // The lease was lost: stop without completing; the store no longer lets this
        // worker decide the task's fate.
        () = abort.cancelled() => return,
        // Cancellation was requested and the handler did not stop within the grace period.
        () = async { cancel_requested.cancelled().await; tokio::time::sleep(grace).await } => None,
    };
    // The handler is done: its slot may run the next buffered lease while this completes,
    // and its limits let the next task of its queue or key start.
    drop(slot);
    drop(limits_held);
    let elapsed = started.elapsed();
    task_metrics.duration.record(elapsed.as_secs_f64());

    let (outcome, value, payload) = match outcome {
        Some(Ok(value)) => (CompletionOutcome::Succeeded, Some(value), None),
        // Once cancellation is requested, a failure is the end, not a reason to retry.
        Some(Err(error)) if cancel_requested.is_cancelled() => {
            let reason = format!("cancelled while running; the attempt ended with: {error}");
            (CompletionOutcome::Cancelled { reason }, None, None)
        }
        None => {
            let reason =
                format!("cancelled while running; stopped after the {grace:?} grace period");
            (CompletionOutcome::Cancelled { reason }, None, None)
        }
        // Not a failure: the attempt is given back and the task is due again later.
        Some(Err(error)) if error.is_snooze() => {
            let delay = error.retry_after.unwrap_or_default();
            let run_at = chrono::Duration::from_std(delay)
                .ok()
                .and_then(|d| Utc::now().checked_add_signed(d))
                .unwrap_or(chrono::DateTime::<Utc>::MAX_UTC);
            (CompletionOutcome::Snooze { run_at }, None, None)
        }
        Some(Err(error)) => {
            span.in_scope(|| tracing::warn!(%error, elapsed = ?elapsed, "attempt failed"));
            // Only the `otel` span declares these: elsewhere, recording them does nothing.
            span.record("otel.status_code", "ERROR");
            span.record("otel.status_description", error.to_string());
            // The hook is user code: a panic in it keeps the error's own verdict.
            let task_agrees = shared.registry.handler(&spec.name).is_none_or(|h| {
                guarded(|| h.should_retry(&spec.payload, shared.codec, &error))
                    .unwrap_or(error.retryable)
            });
            let outcome = after_failure(&lease, error, task_agrees, Utc::now());
            let payload =
                matches!(outcome, CompletionOutcome::Failed { .. }).then(|| spec.payload.clone());
            (outcome, None, payload)
        }
    };
    if let Some(held) = shared.in_flight().get_mut(&spec.id) {
        held.finished = true;
    }
    let _ = finished.send(Finished {
        completion: Completion::new(lease.reference(), outcome),
        task_name: spec.name.clone(),
        queue: spec.queue.clone(),
        attempt: lease.attempt,
        value,
        payload,
        permit: Some(lease_permit),
        metrics: Some(task_metrics),
    });
}

async fn run_attempt(
    shared: &Arc<Shared>,
    lease: &Lease,
    cancellation: CancellationToken,
    slot: &mut Option<OwnedSemaphorePermit>,
) -> Result<Vec<u8>, TaskError> {
    let spec = &lease.spec;
    let Some(handler) = shared.registry.handler(&spec.name) else {
        return Err(TaskError::with_kind(
            TaskErrorKind::UnknownTask,
            format!(
                "no handler is registered for task `{}` on worker {}",
                spec.name, shared.id
            ),
            false,
        ));
    };
    let timeout = spec.timeout.or(shared.config.default_timeout);
    let header = AttemptHeader::of(lease, &shared.id);
    // A process worker decodes and runs nothing itself: its child does.
    let progress = progress::sink(shared, lease);
    if let Some(children) = &shared.process {
        return children
            .run(&header, &spec.payload, timeout, &progress)
            .await;
    }
    let ctx = header.into_context(
        cancellation,
        Arc::clone(&shared.results),
        shared.codec,
        shared.registry.state(),
        Some(progress),
    );
    // Decoding and a closure's synchronous part run here, outside the handler's future:
    // their panics fail the attempt like any other.
    let invocation = guarded(|| handler.invoke(&spec.payload, ctx, shared.codec))??;
    // A local worker runs every async handler on its local threads, like `!Send` ones.
    let invocation = match invocation {
        Invocation::Async(future) if shared.config.kind == WorkerKind::Local => {
            Invocation::Local(Box::new(move || future))
        }
        other => other,
    };
    match invocation {
        Invocation::Local(job) => {
            let pool = shared.local_pool()?;
            // Dropped when this attempt ends or is given up (timeout, lost lease, cancel
            // grace over): the future is then dropped on its thread.
            let abandon = CancellationToken::new();
            let _abandon_on_drop = abandon.clone().drop_guard();
            match with_timeout(timeout, pool.spawn(job, abandon)).await? {
                Ok(Ok(outcome)) => outcome,
                Ok(Err(panic)) => Err(panicked(panic)),
                Err(_) => Err(TaskError::with_kind(
                    TaskErrorKind::Panic,
                    "the local worker thread went away",
                    true,
                )),
            }
        }
        Invocation::Async(future) => {
            let guarded = AssertUnwindSafe(future).catch_unwind();
            let outcome = with_timeout(timeout, guarded).await;
            outcome?.unwrap_or_else(|panic| Err(panicked(panic)))
        }
        Invocation::Blocking(job) => {
            let (done, result) = oneshot::channel();
            let span = tracing::Span::current();
            // The thread owns the slot while it runs and hands it back with the outcome;
            // past a timeout nobody takes it back, so it is freed when the thread is.
            let permit = slot.take();
            if let Some(held) = shared.in_flight().get_mut(&spec.id) {
                held.on_thread = true;
            }
            shared.blocking.spawn(move || {
                let _entered = span.enter();
                let outcome = std::panic::catch_unwind(AssertUnwindSafe(job));
                let _ = done.send((outcome, permit));
            });
            let (outcome, permit) = match with_timeout(timeout, result).await? {
                Ok(returned) => returned,
                Err(_) => {
                    return Err(TaskError::with_kind(
                        TaskErrorKind::Panic,
                        "the blocking handler's thread went away",
                        true,
                    ));
                }
            };
            *slot = permit;
            if let Some(held) = shared.in_flight().get_mut(&spec.id) {
                held.on_thread = false;
            }
            match outcome {
                Ok(outcome) => outcome,
                Err(panic) => Err(panicked(panic)),
            }
        }
    }
}

pub(crate) async fn with_timeout<F: std::future::Future>(
    timeout: Option<Duration>,
    future: F,
) -> Result<F::Output, TaskError> {
    match timeout {
        None => Ok(future.await),
        Some(limit) => tokio::time::timeout(limit, future).await.map_err(|_| {
            TaskError::with_kind(
                TaskErrorKind::Timeout,
                format!("attempt ran past its timeout of {limit:?}"),
                true,
            )
        }),
    }
}
