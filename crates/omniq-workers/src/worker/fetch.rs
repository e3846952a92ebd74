use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use omniq_models::{TaskEvent, TaskEventKind};
use omniq_scheduler::Scheduler;
use omniq_storage::{DequeueRequest, LeaseRef};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::shared::{Pipeline, Shared, WorkerReport};
use super::{completions, execute, leases, paused, resilience};

/// The worker's main task: claim while slots are free, then shut down gracefully.
pub(crate) async fn run(
    shared: Arc<Shared>,
    stop: CancellationToken,
    scheduler: Option<(Scheduler, Duration)>,
) -> WorkerReport {
    let worker_event = |kind| TaskEvent::new(kind).worker(shared.id.clone());
    shared
        .events
        .log(worker_event(TaskEventKind::WorkerStarted));
    tracing::info!(worker = %shared.id, queues = ?shared.config.queues,
        concurrency = shared.config.concurrency, "worker started");

    let (finished_tx, finished_rx) = mpsc::unbounded_channel();
    // Cancelled when a shutdown has waited long enough for completions a down store will
    // not take.
    let abandon = CancellationToken::new();
    let mut flusher = tokio::spawn(completions::flush_loop(
        Arc::clone(&shared),
        finished_rx,
        abandon.clone(),
    ));
    // Leases are kept until every completion is applied, so these stop after the flusher.
    let keeper_stop = CancellationToken::new();
    let keepers = [
        tokio::spawn(leases::keep_leases(
            Arc::clone(&shared),
            keeper_stop.clone(),
        )),
        tokio::spawn(leases::watch_leases(
            Arc::clone(&shared),
            keeper_stop.clone(),
        )),
        tokio::spawn(leases::maintain(Arc::clone(&shared), keeper_stop.clone())),
        tokio::spawn(paused::watch(Arc::clone(&shared), keeper_stop.clone())),
    ];
    let scheduler =
        scheduler.map(|(scheduler, tick)| tokio::spawn(scheduler.run(tick, stop.child_token())));

    // The buffer is told to stop only once this loop has ended: a claim still in flight
    // when the worker was stopped could otherwise take back the buffered tasks released a
    // moment before, and release them a second time.
    let pipeline = Arc::new(Pipeline::new(&shared.config, CancellationToken::new()));
    let mut executions = JoinSet::new();
    let mut failures = 0u32;
    while !stop.is_cancelled() {
        // Reap finished executions so the set does not grow without bound.
        while executions.try_join_next().is_some() {}
        let first = tokio::select! {
            permit = Arc::clone(&pipeline.leases).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = stop.cancelled() => break,
        };
        // Claim for the slots that are free plus the room left in the prefetch buffer, in
        // one round trip, within the lease budget.
        let wanted = pipeline.wanted(shared.config.prefetch);
        let limit = wanted.min(1 + pipeline.leases.available_permits());
        if limit == 0 {
            // Every slot is busy and the buffer is full: wait until a buffered lease starts
            // or a slot frees up (a blocking handler's thread can hold one past its
            // attempt, and nothing is buffered to announce its return).
            drop(first);
            tokio::select! {
                () = pipeline.started.notified() => {}
                slot = Arc::clone(&pipeline.slots).acquire_owned() => drop(slot),
                () = stop.cancelled() => {}
            }
            continue;
        }
        // Paused queues are left out; the paused set is read again once per heartbeat
        // interval, so a pause or a resume reaches every worker within one.
        let queues = match shared
            .paused
            .claimable(
                shared.queue.as_ref(),
                &shared.config.queues,
                shared.config.heartbeat,
                shared.config.store_timeout,
            )
            .await
        {
            Ok(queues) => queues,
            Err(err) => {
                failures = failures.saturating_add(1);
                let pause = backoff(failures);
                tracing::warn!(%err, retry_in = ?pause, "cannot read the paused queues");
                drop(first);
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = stop.cancelled() => {}
                }
                continue;
            }
        };
        if queues.is_empty() {
            // Every queue is paused: look again after a poll interval.
            drop(first);
            tokio::select! {
                () = tokio::time::sleep(shared.config.poll_interval) => {}
                () = stop.cancelled() => {}
            }
            continue;
        }
        // Claims take only the names this worker runs, so that during a rolling deploy a
        // worker of the old release leaves a new task to a worker of the new one; a task no
        // worker runs is taken once it has been due for the grace, and dead-lettered. Read
        // at each claim: a task registered after the start is claimed from now on.
        let request = DequeueRequest::new(queues.iter().cloned(), limit)
            .lease(shared.config.lease)
            .worker(shared.id.clone())
            .only_names(shared.registry.names(), shared.config.unknown_task_grace);
        let claimed_at = tokio::time::Instant::now();
        let claimed =
            resilience::bounded(shared.config.store_timeout, shared.queue.dequeue(request));
        let leases = match claimed.await {
            Ok(leases) => {
                failures = 0;
                leases
            }
            Err(err) => {
                failures = failures.saturating_add(1);
                let pause = backoff(failures);
                tracing::warn!(%err, retry_in = ?pause, "cannot claim tasks");
                drop(first);
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = stop.cancelled() => {}
                }
                continue;
            }
        };
        if leases.is_empty() {
            drop(first);
            tokio::select! {
                () = shared.queue.wait_for_tasks(&queues, shared.config.poll_interval) => {}
                () = stop.cancelled() => {}
            }
            continue;
        }
        let mut permits = std::iter::once(first);
        for lease in leases {
            // Only this loop takes lease permits, so those counted free above are still free.
            let permit = match permits.next() {
                Some(permit) => permit,
                None => match Arc::clone(&pipeline.leases).try_acquire_owned() {
                    Ok(permit) => permit,
                    Err(_) => {
                        // Cannot happen; give the lease back rather than overrun the budget.
                        let _ = finished_tx.send(completions::Finished::release(lease.reference()));
                        continue;
                    }
                },
            };
            pipeline.buffered.fetch_add(1, Ordering::Relaxed);
            let slot_wait = pipeline.queue_for_slot().await;
            executions.spawn(execute::execute(
                Arc::clone(&shared),
                Arc::clone(&pipeline),
                lease,
                permit,
                slot_wait,
                finished_tx.clone(),
                claimed_at,
            ));
        }
    }

    pipeline.stop.cancel();
    // A store that pushed tasks ahead of claims (a broker's prefetch) gives back those
    // not claimed, before they could be counted as attempts lost with this worker.
    match resilience::bounded(
        shared.config.store_timeout,
        shared.queue.stop_claiming(&shared.config.queues),
    )
    .await
    {
        Ok(()) => {}
        Err(err) => tracing::warn!(%err, "tasks pushed ahead of claims could not be given back"),
    }
    // Each step of a shutdown is logged: one that takes long says which step waits.
    tracing::info!(worker = %shared.id, running = executions.len(),
        "claims stopped; waiting for running tasks");
    // Graceful shutdown: running tasks get the grace period, then are stopped and released.
    let drained = tokio::time::timeout(shared.config.shutdown_grace, async {
        while executions.join_next().await.is_some() {}
    })
    .await
    .is_ok();
    if !drained {
        // Stop every execution first, and only then look at what is left: an execution
        // still running on another thread could otherwise complete (or release) a lease
        // this shutdown releases too.
        for held in shared.in_flight().values() {
            held.context.cancel();
        }
        executions.abort_all();
        while executions.join_next().await.is_some() {}
        release_unfinished(&shared, &finished_tx);
    }
    if let Some(scheduler) = scheduler {
        // It stops with `stop`; wait so no fire is half-recorded when we return.
        let _ = scheduler.await;
    }
    drop(finished_tx);
    tracing::info!(worker = %shared.id, "applying the last completions");
    // Completions get the grace period again (at least one store call) to reach a store
    // that is down; past that they are abandoned, and their tasks recovered after the lease.
    let flush_bound = shared
        .config
        .shutdown_grace
        .max(shared.config.store_timeout);
    if tokio::time::timeout(flush_bound, &mut flusher)
        .await
        .is_err()
    {
        tracing::error!(
            "completions could not be applied before shutdown; their tasks will be \
             recovered once their leases expire"
        );
        abandon.cancel();
        let _ = flusher.await;
    }
    // The places of the attempts that ended go back before the worker is gone.
    shared.limiters.flush(shared.config.store_timeout).await;
    tracing::info!(worker = %shared.id, "stopping lease keepers and maintenance");
    keeper_stop.cancel();
    for keeper in keepers {
        let _ = keeper.await;
    }

    shared
        .events
        .log(worker_event(TaskEventKind::WorkerStopped));
    // Bounded: an event store that is down must not hold the shutdown.
    if tokio::time::timeout(shared.config.store_timeout, shared.events.flush())
        .await
        .is_err()
    {
        tracing::warn!("events could not be flushed before shutdown");
    }
    let report = shared.counters.report();
    tracing::info!(worker = %shared.id, ?report, "worker stopped");
    report
}

/// Releases the leases of attempts still unfinished when the grace period ran out. An
/// attempt on a thread that is still running is not released: the thread cannot be stopped,
/// and a released task could start elsewhere while it runs. Its lease is forgotten instead,
/// so the task is recovered once the lease runs out, and the thread's outcome is discarded.
fn release_unfinished(shared: &Shared, finished: &mpsc::UnboundedSender<completions::Finished>) {
    let unfinished: Vec<(LeaseRef, bool)> = shared
        .in_flight()
        .iter()
        .filter(|(_, held)| !held.finished)
        .map(|(task_id, held)| {
            let lease = LeaseRef::new(*task_id, held.token);
            (lease, held.on_thread)
        })
        .collect();
    tracing::warn!(
        count = unfinished.len(),
        "grace period over; releasing running tasks"
    );
    for (lease, on_thread) in unfinished {
        if on_thread {
            shared.forget(&lease);
            tracing::warn!(task.id = %lease.task_id,
                "a blocking handler outlived the grace period; its task is recovered after \
                 its lease, and the thread's outcome is discarded");
        } else {
            let _ = finished.send(completions::Finished::release(lease));
        }
    }
}

/// Pause after `failures` failed claims in a row: 100 ms doubling to 5 s.
fn backoff(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(6);
    Duration::from_millis(100 * 2u64.pow(exponent)).min(Duration::from_secs(5))
}
