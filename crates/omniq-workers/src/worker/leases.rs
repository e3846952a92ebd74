use std::sync::Arc;
use std::time::Duration;

use omniq_models::{TaskEvent, TaskEventKind, TaskState};
use omniq_storage::{LeaseRef, LeaseStatus, PurgeRequest, StateChange};
use tokio_util::sync::CancellationToken;

use super::completions::lease_expired_result;
use super::resilience::bounded;
use super::shared::{Counters, Shared};

/// Most tasks recovered, or expired, per round.
const MAINTENANCE_BATCH: usize = 1_000;

/// Most finished tasks, results or events deleted per call: small enough that a call never
/// holds a writer for long; the sweep repeats until nothing is left.
const PRUNE_BATCH: usize = 1_000;

/// How often a worker deletes finished tasks past their retention: rarely, since it is a
/// sweep over finished rows, and any worker doing it serves all.
const RETENTION_EVERY: Duration = Duration::from_secs(300);
/// How long after its start a worker runs its first retention pass (sooner with a retention
/// shorter than twice this).
const FIRST_PRUNE_AFTER: Duration = Duration::from_secs(60);

/// Renews this worker's leases every heartbeat, on a loop of its own so that nothing else
/// (maintenance, a slow prune, a hung store call) can make a live lease expire.
pub(crate) async fn keep_leases(shared: Arc<Shared>, stop: CancellationToken) {
    let mut ticks = tokio::time::interval(shared.config.heartbeat);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = stop.cancelled() => return,
        }
        renew(&shared).await;
    }
}

/// Stops every attempt whose lease could not be renewed before it runs out, so that the
/// task never runs here and on the worker that recovers it at once.
///
/// Checked often (a twentieth of the lease), independently of the heartbeat's store calls.
/// An async handler is dropped; a blocking handler's thread cannot be stopped and runs on,
/// but its outcome is discarded (see docs/lifecycle.md).
pub(crate) async fn watch_leases(shared: Arc<Shared>, stop: CancellationToken) {
    let margin = shared.config.lease / 10;
    let mut ticks =
        tokio::time::interval((shared.config.lease / 20).max(Duration::from_millis(10)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = stop.cancelled() => return,
        }
        let now = tokio::time::Instant::now();
        let running_out: Vec<LeaseRef> = shared
            .in_flight()
            .iter()
            .filter(|(_, held)| !held.finished && held.expires <= now + margin)
            .map(|(task_id, held)| LeaseRef::new(*task_id, held.token))
            .collect();
        for lease in running_out {
            if let Some(lost) = shared.forget_running(&lease) {
                lost.abort.cancel();
                Counters::add(&shared.counters.lease_lost);
                metrics::counter!("omniq_tasks_lease_lost_total").increment(1);
                tracing::warn!(task.id = %lease.task_id,
                    "lease could not be renewed in time; attempt stopped before it runs out");
                let mut event = TaskEvent::new(TaskEventKind::LeaseLost)
                    .worker(shared.id.clone())
                    .message(
                        "the lease could not be renewed; the attempt was stopped before it ran out",
                    );
                event.task_id = Some(lease.task_id);
                shared.events.log(event);
            }
        }
    }
}

/// Recovers other workers' expired leases and expires stale tasks every heartbeat, and
/// prunes old finished tasks, results and events every few minutes, in bounded batches.
pub(crate) async fn maintain(shared: Arc<Shared>, stop: CancellationToken) {
    let mut ticks = tokio::time::interval(shared.config.heartbeat);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Short retentions (tests, demos) sweep as often as they need, at most every heartbeat.
    let shortest = [shared.config.retention, shared.config.event_retention]
        .into_iter()
        .flatten()
        .min();
    let prune_every = shortest.map_or(RETENTION_EVERY, |r| RETENTION_EVERY.min(r / 2));
    // Not at start: a worker that starts behind a large store (or a fleet restarting at
    // once) would pay a retention pass before its first task, and on a store without an
    // index on finish times (NATS) that pass reads every task.
    let mut next_prune = tokio::time::Instant::now() + prune_every.min(FIRST_PRUNE_AFTER);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = stop.cancelled() => return,
        }
        // A shutdown does not wait for a store call on a slow store: each is safe to cut
        // short (as safe as the process being killed there), and any live worker runs the
        // next round. What a call that went through changed is still logged and its
        // results stored, so that nobody waits on them in vain.
        // This worker's own undelivered completions go first (see
        // `Shared::completions_stalled`); other workers' dead leases wait a little longer.
        if !shared.completions_stalled() {
            recover(&shared, &stop).await;
        }
        expire(&shared, &stop).await;
        if stop.is_cancelled() {
            return;
        }
        if tokio::time::Instant::now() >= next_prune {
            next_prune = tokio::time::Instant::now() + prune_every;
            // Pruning may take many calls: it runs until done or until the worker stops.
            tokio::select! {
                () = prune(&shared) => {}
                () = stop.cancelled() => return,
            }
        }
    }
}

/// Deletes finished tasks past the task retention, expired results, and events past the
/// event retention, a bounded batch per call, until none is left.
async fn prune(shared: &Shared) {
    let limit = shared.config.store_timeout;
    if let Some(retention) = shared
        .config
        .retention
        .and_then(|r| chrono::Duration::from_std(r).ok())
    {
        // Dead letters are kept for inspection and re-drive until purged on purpose.
        let request = PurgeRequest::new()
            .states([
                TaskState::Succeeded,
                TaskState::Cancelled,
                TaskState::Expired,
            ])
            .finished_before(chrono::Utc::now() - retention)
            .limit(PRUNE_BATCH);
        sweep("finished tasks", || {
            bounded(limit, shared.queue.purge(request.clone()))
        })
        .await;
    }
    sweep("expired results", || {
        bounded(limit, shared.results.purge_expired(PRUNE_BATCH))
    })
    .await;
    if let Some(retention) = shared
        .config
        .event_retention
        .and_then(|r| chrono::Duration::from_std(r).ok())
    {
        let before = chrono::Utc::now() - retention;
        let events = shared.events.store();
        sweep("old events", || {
            bounded(limit, events.purge_before(before, PRUNE_BATCH))
        })
        .await;
    }
}

/// Calls a bounded delete until it deletes nothing (or fails), yielding between calls.
async fn sweep<F, Fut>(what: &'static str, mut call: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = omniq_storage::StoreResult<u64>>,
{
    let mut total = 0u64;
    loop {
        match call().await {
            Ok(0) => break,
            Ok(deleted) => {
                total += deleted;
                // A store that ignores bounds deletes everything at once; one more call
                // finds nothing and ends the sweep.
                tokio::task::yield_now().await;
            }
            Err(err) => {
                tracing::warn!(%err, what, "cannot delete past their retention");
                break;
            }
        }
    }
    if total > 0 {
        tracing::info!(deleted = total, what, "deleted past their retention");
    }
}

async fn renew(shared: &Shared) {
    let held = shared.held_leases();
    if held.is_empty() {
        return;
    }
    let asked = tokio::time::Instant::now();
    // Bounded, so that a hung call is tried again well before the leases run out; a slow
    // one only delays the next tick (the watchdog, not this loop, stops attempts in time).
    let limit = shared.config.store_timeout.min(shared.config.lease / 2);
    let renewed = bounded(
        limit,
        shared.queue.heartbeat(held.clone(), shared.config.lease),
    )
    .await;
    let statuses = match renewed {
        Ok(statuses) => statuses,
        Err(err) => {
            tracing::warn!(%err, count = held.len(), "cannot renew leases");
            return;
        }
    };
    for (lease, status) in held.into_iter().zip(statuses) {
        apply_status(
            shared,
            lease,
            status,
            asked,
            "heartbeat refused: the lease was lost; the attempt was stopped",
        );
    }
}

/// Acts on what a renewal (a heartbeat, or a progress report) asked at `asked` found for
/// `lease`: a held lease's deadline moves on, a cancel request reaches the handler, a lost
/// lease stops its attempt, never to be completed here. `lost_message` says which renewal
/// found it lost.
pub(crate) fn apply_status(
    shared: &Shared,
    lease: LeaseRef,
    status: LeaseStatus,
    asked: tokio::time::Instant,
    lost_message: &str,
) {
    match status {
        LeaseStatus::Held | LeaseStatus::CancelRequested => {
            if let Some(held) = shared.in_flight().get_mut(&lease.task_id)
                && held.token == lease.token
            {
                // Never back: a later renewal may have answered first.
                held.expires = held.expires.max(asked + shared.config.lease);
            }
        }
        LeaseStatus::Lost => {}
    }
    match status {
        LeaseStatus::Held => {}
        LeaseStatus::CancelRequested => {
            if let Some(held) = shared.in_flight().get(&lease.task_id)
                && held.token == lease.token
                && !held.cancel_requested.is_cancelled()
            {
                held.cancel_requested.cancel();
                let mut event = TaskEvent::new(TaskEventKind::CancelRequested)
                    .worker(shared.id.clone())
                    .message("cancellation requested; telling the handler");
                event.task_id = Some(lease.task_id);
                shared.events.log(event);
            }
        }
        LeaseStatus::Lost => {
            // Another worker owns the task now: stop ours, and never complete it.
            if let Some(lost) = shared.forget_running(&lease) {
                lost.abort.cancel();
                Counters::add(&shared.counters.lease_lost);
                metrics::counter!("omniq_tasks_lease_lost_total").increment(1);
                let mut event = TaskEvent::new(TaskEventKind::LeaseLost)
                    .worker(shared.id.clone())
                    .message(lost_message);
                event.task_id = Some(lease.task_id);
                shared.events.log(event);
            }
        }
    }
}

async fn recover(shared: &Shared, stop: &CancellationToken) {
    let limit = shared.config.store_timeout;
    let call = bounded(limit, shared.queue.recover_expired(MAINTENANCE_BATCH));
    let outcome = tokio::select! {
        outcome = call => outcome,
        () = stop.cancelled() => return,
    };
    match outcome {
        Ok(changes) => log_changes(shared, &changes, TaskEventKind::Recovered).await,
        Err(err) => tracing::warn!(%err, "cannot recover expired leases"),
    }
}

async fn expire(shared: &Shared, stop: &CancellationToken) {
    let limit = shared.config.store_timeout;
    let call = bounded(limit, shared.queue.expire_due(MAINTENANCE_BATCH));
    let outcome = tokio::select! {
        outcome = call => outcome,
        () = stop.cancelled() => return,
    };
    match outcome {
        Ok(changes) => log_changes(shared, &changes, TaskEventKind::Unblocked).await,
        Err(err) => tracing::warn!(%err, "cannot expire stale tasks"),
    }
}

/// Logs the events of changes the store made on its own, and stores a result for tasks it
/// failed, so that whoever waits on them learns why. `ready_kind` names what a task that is
/// ready again went through (recovered, or unblocked).
pub(crate) async fn log_changes(
    shared: &Shared,
    changes: &[StateChange],
    ready_kind: TaskEventKind,
) {
    let mut dead = Vec::new();
    for change in changes {
        let event = |kind| change.event(kind).worker(shared.id.clone());
        match change.state {
            TaskState::Queued | TaskState::Scheduled => shared.events.log(event(ready_kind)),
            TaskState::Failed => {
                tracing::info!(task.id = %change.task_id, task.name = %change.task_name,
                    "lease expired on the last attempt; dead-lettered");
                shared.events.log(event(TaskEventKind::Recovered));
                shared.events.log(
                    event(TaskEventKind::DeadLettered).message("lease expired on the last attempt"),
                );
                dead.push(lease_expired_result(
                    change.task_id,
                    &change.task_name,
                    change.attempts,
                    shared.config.result_ttl,
                ));
            }
            TaskState::Cancelled => shared.events.log(event(TaskEventKind::Cancelled)),
            TaskState::Expired => shared.events.log(event(TaskEventKind::Expired)),
            _ => {}
        }
    }
    if !dead.is_empty()
        && let Err(err) = bounded(shared.config.store_timeout, shared.results.put(dead)).await
    {
        tracing::warn!(%err, "cannot store results of tasks failed by lease expiry");
    }
}
