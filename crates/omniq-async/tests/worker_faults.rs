//! The worker under faults of the user's code: panics outside the handler's future, hooks
//! that panic, blocking handlers that outlive their timeout. On every backend.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use omniq_async::{Error, Task, TaskContext, TaskError, TaskErrorKind, TaskEventKind, TaskState};
use omniq_storage::testing::{Fault, Op, Window};
use serde::{Deserialize, Serialize};
use support::{Double, Harness, WAIT};

/// A task whose `should_retry` hook panics.
#[derive(Debug, Serialize, Deserialize)]
struct PanickingRetryHook;

impl Task for PanickingRetryHook {
    const NAME: &'static str = "test.panicking_retry_hook";
    type Output = ();
    async fn run(self, _ctx: TaskContext) -> Result<(), TaskError> {
        Err(TaskError::new("fails, and its hook panics"))
    }
    fn should_retry(&self, _error: &TaskError) -> bool {
        panic!("should_retry panicked");
    }
}

/// A task whose `failed` hook panics before it returns its future.
#[derive(Debug, Serialize, Deserialize)]
struct PanickingFailedHook;

impl Task for PanickingFailedHook {
    const NAME: &'static str = "test.panicking_failed_hook";
    type Output = ();
    async fn run(self, _ctx: TaskContext) -> Result<(), TaskError> {
        Err(TaskError::permanent("fails for good"))
    }
    #[allow(clippy::manual_async_fn)]
    fn failed(self, _error: TaskError) -> impl Future<Output = ()> + Send {
        panic!("failed hook panicked");
        #[allow(unreachable_code)]
        async {}
    }
}

/// Defect 11: the synchronous part of a closure runs outside the handler's future; its
/// panic used to escape the worker's guard and leave the task Running forever.
async fn a_panic_in_a_closures_synchronous_part_fails_the_attempt(h: Harness) {
    let omniq = h
        .omniq
        .clone()
        .register_fn(
            "test.sync_panic",
            |_: u32| -> std::future::Ready<Result<(), TaskError>> {
                panic!("panicked before the future")
            },
        )
        .register::<Double>();
    let bad = omniq
        .enqueue_by_name::<()>("test.sync_panic", 1u32)
        .max_attempts(1)
        .await
        .expect("enqueue");
    let worker = omniq.worker().concurrency(2).start().expect("start");
    let Err(Error::TaskFailed { error, .. }) = bad.wait(WAIT).await else {
        panic!("the attempt must fail");
    };
    assert_eq!(error.kind, TaskErrorKind::Panic);
    assert!(error.message.contains("panicked before the future"));
    assert_eq!(bad.record().await.expect("record").state, TaskState::Failed);
    // The worker goes on.
    let good = omniq.enqueue(Double(21)).await.expect("enqueue");
    assert_eq!(good.wait(WAIT).await.expect("result"), 42);
    worker.shutdown().await.expect("shutdown");
}

/// Defect 11: a panicking `should_retry` hook keeps the error's own verdict; a panicking
/// `failed` hook changes nothing else: the worker completes every later task.
async fn panicking_hooks_never_cost_the_worker_a_loop(h: Harness) {
    let omniq = h
        .omniq
        .clone()
        .register::<PanickingRetryHook>()
        .register::<PanickingFailedHook>()
        .register::<Double>();
    let retried = omniq
        .enqueue(PanickingRetryHook)
        .max_attempts(2)
        .backoff(omniq_async::Backoff::Fixed {
            delay: Duration::from_millis(1),
        })
        .await
        .expect("enqueue");
    let dead = omniq.enqueue(PanickingFailedHook).await.expect("enqueue");
    let worker = omniq.worker().concurrency(4).start().expect("start");
    let Err(Error::TaskFailed { error, .. }) = retried.wait(WAIT).await else {
        panic!("must fail after its attempts");
    };
    assert_eq!(error.kind, TaskErrorKind::Handler);
    assert_eq!(
        retried.record().await.expect("record").attempts,
        2,
        "retryable error: retried although the hook panicked"
    );
    assert!(matches!(
        dead.wait(WAIT).await,
        Err(Error::TaskFailed { .. })
    ));
    // The completion flusher survived the hook: later tasks complete.
    let later = omniq
        .enqueue_many((0..20).map(Double))
        .await
        .expect("enqueue");
    for (i, handle) in later.iter().enumerate() {
        assert_eq!(handle.wait(WAIT).await.expect("result"), 2 * i as i64);
    }
    worker.shutdown().await.expect("shutdown");
}

/// Defect 12: with prefetch 0, a blocking handler that outlives its timeout holds its slot
/// until its thread returns; the worker must claim again once it does.
async fn claims_resume_after_a_timed_out_blocking_handler_returns(h: Harness) {
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let release_rx = Arc::new(std::sync::Mutex::new(release_rx));
    let runs = Arc::new(AtomicU32::new(0));
    let omniq = {
        let runs = Arc::clone(&runs);
        h.omniq
            .clone()
            .register_blocking_fn("test.stuck", move |_: u32| {
                runs.fetch_add(1, Ordering::SeqCst);
                // Held until the test lets it go, bounded so a failing test still ends.
                let rx = release_rx.lock().unwrap_or_else(|e| e.into_inner());
                let _ = rx.recv_timeout(Duration::from_secs(30));
                Ok(())
            })
            .register::<Double>()
    };
    let stuck = omniq
        .enqueue_by_name::<()>("test.stuck", 0u32)
        .timeout(Duration::from_millis(100))
        .max_attempts(1)
        .await
        .expect("enqueue");
    let worker = omniq
        .worker()
        .concurrency(1)
        .prefetch(0)
        .start()
        .expect("start");
    let Err(Error::TaskFailed { error, .. }) = stuck.wait(WAIT).await else {
        panic!("the attempt must time out");
    };
    assert_eq!(error.kind, TaskErrorKind::Timeout);
    let next = omniq.enqueue(Double(5)).await.expect("enqueue");
    // The thread still holds the only slot: let it return; the worker must claim again.
    release_tx.send(()).expect("release the thread");
    assert_eq!(
        next.wait(WAIT)
            .await
            .expect("claimed after the thread returned"),
        10
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    worker.shutdown().await.expect("shutdown");
}

/// Defect 14: events past `event_retention` are deleted by workers (they used to be kept
/// forever on every backend but memory).
async fn workers_delete_events_past_their_retention(h: Harness) {
    let omniq = h.omniq.clone().register::<Double>();
    let handle = omniq.enqueue(Double(4)).await.expect("enqueue");
    let worker = omniq
        .worker()
        .event_retention(Some(Duration::from_secs(1)))
        .result_ttl(Some(Duration::from_secs(1)))
        .start()
        .expect("start");
    assert_eq!(handle.wait(WAIT).await.expect("result"), 8);
    // Wait, bounded, for a sweep to delete the task's events.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let events = omniq.events().for_task(handle.id()).await.expect("events");
        if events.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "events past their retention were never deleted: {} left",
            events.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    worker.shutdown().await.expect("shutdown");
}

/// Counts a handler's runs and how many ran at once.
#[derive(Debug, Default)]
struct Runs {
    total: AtomicU32,
    running: AtomicU32,
    most: AtomicU32,
    changed: tokio::sync::Notify,
}

impl Runs {
    /// Counts a run starting; the guard counts it ending, however it ends (dropped too).
    fn start(self: &Arc<Self>) -> (u32, RunGuard) {
        let n = self.total.fetch_add(1, Ordering::SeqCst) + 1;
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        self.changed.notify_waiters();
        (n, RunGuard(Arc::clone(self)))
    }

    /// Waits, bounded, until `check` holds.
    async fn until(&self, what: &str, check: impl Fn(&Self) -> bool) {
        tokio::time::timeout(WAIT, async {
            loop {
                let changed = self.changed.notified();
                if check(self) {
                    return;
                }
                changed.await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("timed out waiting until {what}"));
    }
}

struct RunGuard(Arc<Runs>);

impl Drop for RunGuard {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
        self.0.changed.notify_waiters();
    }
}

/// Longer than the ~5.6 s of retries a completion used to get before it was dropped.
const LONG_OUTAGE: Duration = Duration::from_secs(7);

/// Defect 2: completions are retried for as long as the queue store is down; none is
/// dropped, no task runs twice.
async fn completions_survive_a_queue_store_outage(h: Harness) {
    let (faulty, queue_faults, _) = support::faults::faulty(&h.omniq);
    let runs = Arc::new(Runs::default());
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let faulty = {
        let (runs, gate) = (Arc::clone(&runs), Arc::clone(&gate));
        faulty.register_fn("test.gated", move |x: u32| {
            let (runs, gate) = (Arc::clone(&runs), Arc::clone(&gate));
            async move {
                let (_, _guard) = runs.start();
                gate.acquire().await.map(|p| p.forget()).ok();
                Ok(x)
            }
        })
    };
    let mut handles = Vec::new();
    for i in 0..20u32 {
        handles.push(
            faulty
                .enqueue_by_name::<u32>("test.gated", i)
                .await
                .expect("enqueue"),
        );
    }
    let worker = faulty
        .worker()
        .concurrency(20)
        .lease(Duration::from_secs(30))
        .start()
        .expect("start");
    runs.until("all 20 run", |r| r.total.load(Ordering::SeqCst) == 20)
        .await;
    queue_faults.outage();
    gate.add_permits(20);
    queue_faults
        .wait_for_faults(Op::Complete, 5, WAIT)
        .await
        .expect("completions fail");
    tokio::time::sleep(LONG_OUTAGE).await;
    queue_faults.restore();
    for (i, handle) in handles.iter().enumerate() {
        assert_eq!(handle.wait(WAIT).await.expect("result"), i as u32);
    }
    let report = worker.shutdown().await.expect("shutdown");
    assert_eq!(runs.total.load(Ordering::SeqCst), 20, "no task ran twice");
    assert_eq!(report.succeeded, 20);
    assert_eq!(report.lease_lost, 0);
}

/// Defect 2: a result store that is down holds back only the successes that need it; a
/// success waits, renewed, and is completed once when the store is back.
async fn a_results_outage_holds_back_only_the_successes(h: Harness) {
    let (faulty, _, result_faults) = support::faults::faulty(&h.omniq);
    let runs = Arc::new(Runs::default());
    let faulty = {
        let runs = Arc::clone(&runs);
        faulty
            .register_fn("test.ok", move |x: u32| {
                let runs = Arc::clone(&runs);
                async move {
                    let (n, _guard) = runs.start();
                    Ok(x + n)
                }
            })
            .register_fn("test.bad", |_: u32| async {
                Err::<(), _>(TaskError::permanent("fails for good"))
            })
    };
    result_faults.outage();
    let ok = faulty
        .enqueue_by_name::<u32>("test.ok", 10)
        .await
        .expect("enqueue");
    let worker = faulty.worker().start().expect("start");
    result_faults
        .wait_for_faults(Op::PutResults, 3, WAIT)
        .await
        .expect("results fail");
    let mut feed = faulty.events().subscribe();
    let bad = faulty
        .enqueue_by_name::<()>("test.bad", 0)
        .await
        .expect("enqueue");
    // The failure needs no result first: it is applied while the results store is down
    // (the worker logs DeadLettered once the store took the completion).
    tokio::time::timeout(WAIT, async {
        while let Some(event) = feed.next().await {
            if event.task_id == Some(bad.id()) && event.kind == TaskEventKind::DeadLettered {
                return;
            }
        }
    })
    .await
    .expect("a failure was held back by the results outage");
    assert_eq!(bad.record().await.expect("record").state, TaskState::Failed);
    tokio::time::sleep(LONG_OUTAGE).await;
    result_faults.restore();
    assert_eq!(
        ok.wait(WAIT).await.expect("result"),
        11,
        "the first run's result"
    );
    assert_eq!(
        runs.total.load(Ordering::SeqCst),
        1,
        "the success never ran twice"
    );
    assert!(matches!(
        bad.wait(WAIT).await,
        Err(Error::TaskFailed { .. })
    ));
    worker.shutdown().await.expect("shutdown");
}

/// Defect 9: a worker that cannot reach the store stops its async handler before the lease
/// runs out, so the task never runs in two places; it runs again once recovered.
async fn a_handler_whose_lease_cannot_be_renewed_is_stopped(h: Harness) {
    let (faulty, queue_faults, _) = support::faults::faulty(&h.omniq);
    let runs = Arc::new(Runs::default());
    let faulty = {
        let runs = Arc::clone(&runs);
        faulty.register_fn("test.long", move |_: u32| {
            let runs = Arc::clone(&runs);
            async move {
                let (n, _guard) = runs.start();
                if n == 1 {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                }
                Ok(n)
            }
        })
    };
    let handle = faulty
        .enqueue_by_name::<u32>("test.long", 0)
        .max_attempts(3)
        .await
        .expect("enqueue");
    let worker = faulty.worker().start().expect("start");
    runs.until("the first run starts", |r| {
        r.total.load(Ordering::SeqCst) == 1
    })
    .await;
    // A partition: nothing reaches the store, so the lease can be neither renewed nor
    // taken over. The worker must stop the handler on its own.
    queue_faults.outage();
    runs.until("the first run is stopped", |r| {
        r.running.load(Ordering::SeqCst) == 0
    })
    .await;
    queue_faults.restore();
    assert_eq!(
        handle.wait(WAIT).await.expect("result"),
        2,
        "recovered and run again"
    );
    assert_eq!(
        runs.most.load(Ordering::SeqCst),
        1,
        "never two runs at once"
    );
    let report = worker.shutdown().await.expect("shutdown");
    assert!(report.lease_lost >= 1);
}

/// Defect 7: a prune slower than the lease never delays a heartbeat: the long task keeps its
/// lease and runs once, although a healthy second worker would recover an expired one.
async fn a_slow_prune_never_starves_heartbeats(h: Harness) {
    let (faulty, queue_faults, _) = support::faults::faulty(&h.omniq);
    queue_faults.set(
        Op::Purge,
        Fault::Delay(Duration::from_secs(10)),
        Window::UntilCleared,
    );
    let runs = Arc::new(Runs::default());
    let slow = |runs: Arc<Runs>| {
        move |_: u32| {
            let runs = Arc::clone(&runs);
            async move {
                let (n, _guard) = runs.start();
                tokio::time::sleep(Duration::from_secs(5)).await;
                Ok(n)
            }
        }
    };
    let faulty = faulty.register_fn("test.slow", slow(Arc::clone(&runs)));
    let handle = faulty
        .enqueue_by_name::<u32>("test.slow", 0)
        .await
        .expect("enqueue");
    let worker = faulty
        .worker()
        .retention(Some(Duration::from_secs(2)))
        .start()
        .expect("start");
    runs.until("the task starts", |r| r.total.load(Ordering::SeqCst) == 1)
        .await;
    let rescuer = h
        .omniq
        .clone()
        .register_fn("test.slow", slow(Arc::clone(&runs)))
        .worker()
        .start()
        .expect("start");
    assert_eq!(handle.wait(WAIT).await.expect("result"), 1);
    assert_eq!(
        runs.total.load(Ordering::SeqCst),
        1,
        "the lease was never lost"
    );
    rescuer.shutdown().await.expect("shutdown");
    worker.shutdown().await.expect("shutdown");
}

/// A claim whose reply was lost leaves its tasks leased to nobody: they are recovered once
/// the lease runs out and run once, at the cost of the attempt the lost claim counted.
async fn lost_claim_replies_cost_an_attempt_and_nothing_else(h: Harness) {
    let (faulty, queue_faults, _) = support::faults::faulty(&h.omniq);
    let runs = Arc::new(Runs::default());
    let faulty = {
        let runs = Arc::clone(&runs);
        faulty.register_fn("test.count", move |x: u32| {
            let runs = Arc::clone(&runs);
            async move {
                let (_, _guard) = runs.start();
                Ok(x)
            }
        })
    };
    let mut handles = Vec::new();
    for i in 0..5u32 {
        handles.push(
            faulty
                .enqueue_by_name::<u32>("test.count", i)
                .await
                .expect("enqueue"),
        );
    }
    queue_faults.set(Op::Dequeue, Fault::LoseReply, Window::Next(1));
    let worker = faulty.worker().start().expect("start");
    queue_faults
        .wait_for_faults(Op::Dequeue, 1, WAIT)
        .await
        .expect("a claim reply lost");
    for (i, handle) in handles.iter().enumerate() {
        assert_eq!(handle.wait(WAIT).await.expect("result"), i as u32);
    }
    // Every completion is applied once the worker has shut down.
    worker.shutdown().await.expect("shutdown");
    for handle in &handles {
        let record = handle.record().await.expect("record");
        assert_eq!(record.state, TaskState::Succeeded);
        assert!(
            record.attempts <= 2,
            "at most the lost claim's attempt more"
        );
    }
    assert_eq!(runs.total.load(Ordering::SeqCst), 5, "each ran once");
}

/// Defect 3: re-driven dead letters keep the result of their new run, however fast a
/// worker runs them (the old failure results used to be deleted after re-queueing, taking
/// some new results with them).
async fn redriven_tasks_keep_the_result_of_their_new_run(h: Harness) {
    let failing = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let omniq = {
        let failing = Arc::clone(&failing);
        h.omniq.clone().register_fn("test.flaky", move |x: u32| {
            let fail = failing.load(Ordering::SeqCst);
            async move {
                if fail {
                    Err(TaskError::permanent("not yet"))
                } else {
                    Ok(x)
                }
            }
        })
    };
    let mut handles = Vec::new();
    for i in 0..100u32 {
        handles.push(
            omniq
                .enqueue_by_name::<u32>("test.flaky", i)
                .await
                .expect("enqueue"),
        );
    }
    let worker = omniq.worker().concurrency(16).start().expect("start");
    for handle in &handles {
        assert!(matches!(
            handle.wait(WAIT).await,
            Err(Error::TaskFailed { .. })
        ));
    }
    failing.store(false, Ordering::SeqCst);
    let redriven = omniq
        .redrive(omniq_async::RedriveTarget::All)
        .await
        .expect("redrive");
    assert_eq!(redriven.len(), 100);
    for (i, handle) in handles.iter().enumerate() {
        assert_eq!(
            handle.wait(WAIT).await.expect("the new run's result"),
            i as u32
        );
    }
    worker.shutdown().await.expect("shutdown");
}

/// Defect 16: a completion whose reply was lost is sent again and applied once: the task
/// ends as it should (results, hooks, events), never counted as a lost lease.
async fn lost_completion_replies_are_sent_again_and_applied_once(h: Harness) {
    let (faulty, queue_faults, _) = support::faults::faulty(&h.omniq);
    let runs = Arc::new(Runs::default());
    let faulty = {
        let runs = Arc::clone(&runs);
        faulty
            .register_fn("test.count", move |x: u32| {
                let runs = Arc::clone(&runs);
                async move {
                    let (_, _guard) = runs.start();
                    Ok(x)
                }
            })
            .register_fn("test.bad", |_: u32| async {
                Err::<(), _>(TaskError::permanent("fails for good"))
            })
    };
    queue_faults.set(Op::Complete, Fault::LoseReply, Window::UntilCleared);
    let mut handles = Vec::new();
    for i in 0..10u32 {
        handles.push(
            faulty
                .enqueue_by_name::<u32>("test.count", i)
                .await
                .expect("enqueue"),
        );
    }
    let bad = faulty
        .enqueue_by_name::<()>("test.bad", 0)
        .await
        .expect("enqueue");
    let worker = faulty.worker().start().expect("start");
    queue_faults
        .wait_for_faults(Op::Complete, 2, WAIT)
        .await
        .expect("replies lost");
    queue_faults.clear(Op::Complete);
    for (i, handle) in handles.iter().enumerate() {
        assert_eq!(handle.wait(WAIT).await.expect("result"), i as u32);
    }
    let Err(Error::TaskFailed { error, .. }) = bad.wait(WAIT).await else {
        panic!("the dead letter's failure result must be stored");
    };
    assert_eq!(error.kind, TaskErrorKind::Handler);
    let report = worker.shutdown().await.expect("shutdown");
    assert_eq!(runs.total.load(Ordering::SeqCst), 10, "no task ran twice");
    assert_eq!(report.succeeded, 10);
    assert_eq!(report.dead_lettered, 1);
    assert_eq!(report.lease_lost, 0, "a lost reply is not a lost lease");
}

on_each_backend! {
    closure_sync_panic => a_panic_in_a_closures_synchronous_part_fails_the_attempt;
    panicking_hooks => panicking_hooks_never_cost_the_worker_a_loop;
    timed_out_blocking_prefetch0 => claims_resume_after_a_timed_out_blocking_handler_returns;
    event_retention => workers_delete_events_past_their_retention;
    queue_outage => completions_survive_a_queue_store_outage;
    results_outage => a_results_outage_holds_back_only_the_successes;
    partition => a_handler_whose_lease_cannot_be_renewed_is_stopped;
    slow_prune => a_slow_prune_never_starves_heartbeats;
    lost_claim_replies => lost_claim_replies_cost_an_attempt_and_nothing_else;
    redrive_results => redriven_tasks_keep_the_result_of_their_new_run;
    lost_completion_replies => lost_completion_replies_are_sent_again_and_applied_once;
}
