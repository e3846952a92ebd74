use std::sync::Arc;

use omniq_models::{TaskEvent, TaskEventKind, TaskState};
use omniq_storage::{LeaseStatus, PurgeRequest, StateChange};
use tokio_util::sync::CancellationToken;

use super::completions::lease_expired_result;
use super::shared::{Counters, Shared};

/// Most tasks recovered, or expired, per round.
const MAINTENANCE_BATCH: usize = 1_000;

/// How often a worker deletes finished tasks past their retention: rarely, since it is a
/// sweep over finished rows, and any worker doing it serves all.
const RETENTION_EVERY: std::time::Duration = std::time::Duration::from_secs(300);

/// Renews this worker's leases and recovers other workers' expired ones, every heartbeat;
/// prunes old finished tasks every few minutes.
pub(crate) async fn keep_leases(shared: Arc<Shared>, stop: CancellationToken) {
    let mut ticks = tokio::time::interval(shared.config.heartbeat);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_prune = tokio::time::Instant::now();
    // Short retentions (tests, demos) sweep as often as they need, at most every heartbeat.
    let prune_every = shared
        .config
        .retention
        .map_or(RETENTION_EVERY, |r| RETENTION_EVERY.min(r / 2));
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = stop.cancelled() => return,
        }
        renew(&shared).await;
        recover(&shared).await;
        expire(&shared).await;
        if last_prune.elapsed() >= prune_every {
            last_prune = tokio::time::Instant::now();
            prune(&shared).await;
        }
    }
}

async fn prune(shared: &Shared) {
    let Some(retention) = shared.config.retention else {
        return;
    };
    let Ok(retention) = chrono::Duration::from_std(retention) else {
        return;
    };
    let request = PurgeRequest {
        // Dead letters are kept for inspection and re-drive until purged on purpose.
        states: vec![
            TaskState::Succeeded,
            TaskState::Cancelled,
            TaskState::Expired,
        ],
        queue: None,
        finished_before: Some(chrono::Utc::now() - retention),
    };
    match shared.queue.purge(request).await {
        Ok(0) => {}
        Ok(purged) => tracing::info!(purged, "deleted finished tasks past their retention"),
        Err(err) => tracing::warn!(%err, "cannot delete finished tasks past their retention"),
    }
}

async fn renew(shared: &Shared) {
    let held = shared.held_leases();
    if held.is_empty() {
        return;
    }
    let statuses = match shared
        .queue
        .heartbeat(held.clone(), shared.config.lease)
        .await
    {
        Ok(statuses) => statuses,
        Err(err) => {
            tracing::warn!(%err, count = held.len(), "cannot renew leases");
            return;
        }
    };
    for (lease, status) in held.into_iter().zip(statuses) {
        match status {
            LeaseStatus::Held => continue,
            LeaseStatus::CancelRequested => {
                if let Some(held) = shared.in_flight().get(&lease.task_id)
                    && !held.cancel_requested.is_cancelled()
                {
                    held.cancel_requested.cancel();
                    let mut event = TaskEvent::new(TaskEventKind::CancelRequested)
                        .worker(shared.id.clone())
                        .message("cancellation requested; telling the handler");
                    event.task_id = Some(lease.task_id);
                    shared.events.log(event);
                }
                continue;
            }
            LeaseStatus::Lost => {}
        }
        // Another worker owns the task now: stop ours, and never complete it.
        if let Some(lost) = shared.forget_running(&lease) {
            lost.abort.cancel();
            Counters::add(&shared.counters.lease_lost);
            metrics::counter!("omniq_tasks_lease_lost_total").increment(1);
            let mut event = TaskEvent::new(TaskEventKind::LeaseLost)
                .worker(shared.id.clone())
                .message("heartbeat refused: the lease was lost; the attempt was stopped");
            event.task_id = Some(lease.task_id);
            shared.events.log(event);
        }
    }
}

async fn recover(shared: &Shared) {
    match shared.queue.recover_expired(MAINTENANCE_BATCH).await {
        Ok(changes) => log_changes(shared, &changes, TaskEventKind::Recovered).await,
        Err(err) => tracing::warn!(%err, "cannot recover expired leases"),
    }
}

async fn expire(shared: &Shared) {
    match shared.queue.expire_due(MAINTENANCE_BATCH).await {
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
        && let Err(err) = shared.results.put(dead).await
    {
        tracing::warn!(%err, "cannot store results of tasks failed by lease expiry");
    }
}
