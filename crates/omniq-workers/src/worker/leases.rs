use std::sync::Arc;

use omniq_models::{TaskEvent, TaskEventKind, TaskState};
use tokio_util::sync::CancellationToken;

use super::completions::lease_expired_result;
use super::shared::{Counters, Shared};

/// Most expired leases recovered per round.
const RECOVER_BATCH: usize = 1_000;

/// Renews this worker's leases and recovers other workers' expired ones, every heartbeat.
pub(crate) async fn keep_leases(shared: Arc<Shared>, stop: CancellationToken) {
    let mut ticks = tokio::time::interval(shared.config.heartbeat);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = stop.cancelled() => return,
        }
        renew(&shared).await;
        recover(&shared).await;
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
    for (lease, still_held) in held.into_iter().zip(statuses) {
        if still_held {
            continue;
        }
        // Another worker owns the task now: stop ours, and never complete it.
        if let Some(lost) = shared.forget(&lease) {
            lost.cancel.cancel();
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
    let recovered = match shared.queue.recover_expired(RECOVER_BATCH).await {
        Ok(recovered) => recovered,
        Err(err) => {
            tracing::warn!(%err, "cannot recover expired leases");
            return;
        }
    };
    let mut dead = Vec::new();
    for task in recovered {
        tracing::info!(task.id = %task.task_id, task.name = %task.task_name,
            state = %task.state, "recovered a task whose lease expired");
        let event = |kind| {
            TaskEvent::for_task(kind, task.task_id, &task.task_name, &task.queue)
                .attempt(task.attempts)
                .worker(shared.id.clone())
        };
        shared
            .events
            .log(event(TaskEventKind::Recovered).message("lease expired"));
        if task.state == TaskState::Failed {
            shared.events.log(
                event(TaskEventKind::DeadLettered).message("lease expired on the last attempt"),
            );
            dead.push(lease_expired_result(
                task.task_id,
                &task.task_name,
                task.attempts,
                shared.config.result_ttl,
            ));
        }
    }
    if !dead.is_empty()
        && let Err(err) = shared.results.put(dead).await
    {
        tracing::warn!(%err, "cannot store results of tasks failed by lease expiry");
    }
}
