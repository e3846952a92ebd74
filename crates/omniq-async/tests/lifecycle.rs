//! Lifecycle rules through the facade and a real worker, on memory and SQLite: hooks,
//! dependencies, cancellation of running tasks, TTL, dead letters.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use omniq_async::{
    BlockingTask, CancelOutcome, Error, PurgeRequest, RedriveTarget, RunWhen, Task, TaskContext,
    TaskError, TaskErrorKind, TaskEventKind, TaskState,
};
use serde::{Deserialize, Serialize};
use support::{Harness, WAIT};

/// Fails permanently in the eyes of its own hook, and records that `failed` ran.
#[derive(Debug, Serialize, Deserialize)]
struct Picky {
    flag: String,
}

static PICKY_FAILED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

impl Task for Picky {
    const NAME: &'static str = "lifecycle.picky";
    type Output = ();
    async fn run(self, _ctx: TaskContext) -> Result<(), TaskError> {
        Err(TaskError::new("retryable by kind, but the hook says no"))
    }
    fn should_retry(&self, _error: &TaskError) -> bool {
        false
    }
    async fn failed(self, error: TaskError) {
        PICKY_FAILED
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(format!("{}: {}", self.flag, error.message));
    }
}

async fn hooks_decide_retries_and_hear_of_final_failure(h: Harness) {
    let flag = uuid_like();
    let omniq = h.omniq.clone().register::<Picky>();
    let handle = omniq
        .enqueue(Picky { flag: flag.clone() })
        .max_attempts(5)
        .await
        .expect("enqueue");
    let mut dead = omniq
        .events()
        .subscribe()
        .task(handle.id())
        .kinds([TaskEventKind::DeadLettered]);
    let worker = omniq.worker().start().expect("start");
    assert!(matches!(
        handle.wait(WAIT).await,
        Err(Error::TaskFailed { .. })
    ));
    tokio::time::timeout(WAIT, dead.next())
        .await
        .expect("dead-lettered");
    worker.shutdown().await.expect("shutdown");
    assert_eq!(handle.record().await.expect("record").attempts, 1);
    // The hook runs on its own task after the completion; shutdown waited for neither, so
    // allow it a moment through the bounded poll below.
    let seen = wait_until(|| {
        PICKY_FAILED
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .any(|m| m.starts_with(&flag))
    })
    .await;
    assert!(seen, "the failed hook ran");
}

fn uuid_like() -> String {
    format!("{:?}", std::time::SystemTime::now())
}

async fn wait_until(check: impl Fn() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check() {
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}

async fn a_dependent_runs_after_its_parent_and_reads_its_result(h: Harness) {
    if !h.supports_dependencies("a_dependent_runs_after_its_parent_and_reads_its_result") {
        return;
    }
    let omniq = h
        .omniq
        .clone()
        .register_fn("lifecycle.produce", |n: i64| async move { Ok(n * 10) });
    let parent = omniq
        .enqueue_by_name::<i64>("lifecycle.produce", 4)
        .await
        .expect("enqueue");
    let omniq = omniq.register::<Consume>();
    let child = omniq
        .enqueue(Consume)
        .depends_on(parent.id())
        .await
        .expect("enqueue");
    assert_eq!(
        child.record().await.expect("record").state,
        TaskState::Blocked
    );
    let worker = omniq.worker().start().expect("start");
    assert_eq!(child.wait(WAIT).await.expect("result"), 41);
    worker.shutdown().await.expect("shutdown");
}

#[derive(Debug, Serialize, Deserialize)]
struct Consume;

impl Task for Consume {
    const NAME: &'static str = "lifecycle.consume";
    type Output = i64;
    async fn run(self, ctx: TaskContext) -> Result<i64, TaskError> {
        let parent = ctx.parents()[0];
        let value: i64 = ctx.parent_result(parent).await?;
        Ok(value + 1)
    }
}

async fn a_failing_parent_cancels_its_dependent_and_runs_its_on_failure_callback(h: Harness) {
    if !h.supports_dependencies(
        "a_failing_parent_cancels_its_dependent_and_runs_its_on_failure_callback",
    ) {
        return;
    }
    let omniq = h
        .omniq
        .clone()
        .register_fn("lifecycle.explode", |(): ()| async move {
            Err::<(), _>(TaskError::permanent("boom"))
        })
        .register_fn(
            "lifecycle.after",
            |(): ()| async move { Ok("after".to_owned()) },
        );
    let parent = omniq
        .enqueue_by_name::<()>("lifecycle.explode", ())
        .await
        .expect("enqueue");
    let on_success = omniq
        .enqueue_by_name::<String>("lifecycle.after", ())
        .depends_on(parent.id())
        .await
        .expect("enqueue");
    let on_failure = omniq
        .enqueue_by_name::<String>("lifecycle.after", ())
        .depends_on(parent.id())
        .run_when(RunWhen::ParentFailed)
        .await
        .expect("enqueue");
    let worker = omniq.worker().start().expect("start");
    assert_eq!(on_failure.wait(WAIT).await.expect("callback ran"), "after");
    let Err(Error::TaskEnded { state, .. }) = on_success.wait(WAIT).await else {
        panic!("the on-success dependent must be cancelled");
    };
    assert_eq!(state, TaskState::Cancelled);
    worker.shutdown().await.expect("shutdown");
    omniq.events().flush().await;
    let kinds: Vec<_> = omniq
        .events()
        .for_task(on_success.id())
        .await
        .expect("events")
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds,
        vec![TaskEventKind::Blocked, TaskEventKind::Cancelled]
    );
}

#[derive(Debug, Serialize, Deserialize)]
struct Patient;

impl Task for Patient {
    const NAME: &'static str = "lifecycle.patient";
    type Output = ();
    async fn run(self, ctx: TaskContext) -> Result<(), TaskError> {
        // Stops as soon as it is told to.
        ctx.cancelled().await;
        Err(TaskError::new("stopped on request"))
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Stubborn;

impl Task for Stubborn {
    const NAME: &'static str = "lifecycle.stubborn";
    type Output = ();
    async fn run(self, _ctx: TaskContext) -> Result<(), TaskError> {
        tokio::time::sleep(Duration::from_secs(600)).await;
        Ok(())
    }
}

async fn a_running_task_is_told_to_stop_and_dropped_after_the_grace_period(h: Harness) {
    let omniq = h.omniq.clone().register::<Patient>().register::<Stubborn>();
    let patient = omniq.enqueue(Patient).await.expect("enqueue");
    let stubborn = omniq.enqueue(Stubborn).await.expect("enqueue");
    let mut started = omniq.events().subscribe().kinds([TaskEventKind::Started]);
    let worker = omniq
        .worker()
        .cancel_grace(Duration::from_millis(200))
        .start()
        .expect("start");
    for _ in 0..2 {
        tokio::time::timeout(WAIT, started.next())
            .await
            .expect("both start");
    }
    assert_eq!(
        patient.cancel().await.expect("cancel"),
        CancelOutcome::Requested
    );
    assert_eq!(
        stubborn.cancel().await.expect("cancel"),
        CancelOutcome::Requested
    );
    for handle in [&patient, &stubborn] {
        let Err(Error::TaskEnded { state, .. }) = handle.wait(WAIT).await else {
            panic!("a cancelled task ends without a result");
        };
        assert_eq!(state, TaskState::Cancelled);
    }
    let report = worker.shutdown().await.expect("shutdown");
    assert_eq!(report.cancelled, 2);
    let record = patient.record().await.expect("record");
    assert_eq!(record.reason.as_deref(), Some("cancelled on request"));
    assert_eq!(record.attempts, 1, "a cancelled task is not retried");
}

async fn a_task_not_started_before_its_ttl_expires(h: Harness) {
    let omniq = h
        .omniq
        .clone()
        .register_fn("lifecycle.never", |(): ()| async move { Ok(()) });
    let late = omniq
        .enqueue_by_name::<()>("lifecycle.never", ())
        .delay(Duration::from_millis(300))
        .ttl(Duration::from_millis(100))
        .await
        .expect("enqueue");
    let worker = omniq.worker().start().expect("start");
    let Err(Error::TaskEnded { state, .. }) = late.wait(WAIT).await else {
        panic!("an expired task ends without a result");
    };
    assert_eq!(state, TaskState::Expired);
    worker.shutdown().await.expect("shutdown");
    assert_eq!(
        late.record().await.expect("record").attempts,
        0,
        "it never ran"
    );
}

async fn dead_letters_are_listed_redriven_and_purged(h: Harness) {
    let healed = Arc::new(AtomicBool::new(false));
    let fixed = Arc::clone(&healed);
    let omniq = h
        .omniq
        .clone()
        .register_fn("lifecycle.flaky_dep", move |n: u32| {
            let fixed = fixed.load(Ordering::SeqCst);
            async move {
                if fixed {
                    Ok(n)
                } else {
                    Err(TaskError::permanent("the dependency is down"))
                }
            }
        });
    let handles: Vec<_> = enqueue_flaky(&omniq, 3).await;
    let worker = omniq.worker().start().expect("start");
    for handle in &handles {
        assert!(matches!(
            handle.wait(WAIT).await,
            Err(Error::TaskFailed { .. })
        ));
    }
    worker.shutdown().await.expect("shutdown");
    let dead = omniq
        .dead_letters(Some("default"), 0, 10)
        .await
        .expect("list");
    assert_eq!(dead.len(), 3);
    assert!(
        dead.iter()
            .all(|r| r.last_error().is_some_and(|e| e.message.contains("down")))
    );

    healed.store(true, Ordering::SeqCst);
    let redriven = omniq
        .redrive(RedriveTarget::Tasks(vec![handles[0].id()]))
        .await
        .expect("redrive");
    assert_eq!(redriven, vec![handles[0].id()]);
    let worker = omniq.worker().start().expect("start");
    wait_for_state(&handles[0], TaskState::Succeeded).await;
    worker.shutdown().await.expect("shutdown");
    let record = handles[0].record().await.expect("record");
    assert_eq!(record.attempts, 1, "attempts were reset");
    assert_eq!(record.errors.len(), 1, "history kept");

    let purged = omniq
        .purge(PurgeRequest::new().states(vec![TaskState::Failed]))
        .await
        .expect("purge");
    assert_eq!(purged, 2);
    assert!(
        omniq
            .dead_letters(None, 0, 10)
            .await
            .expect("list")
            .is_empty()
    );
}

async fn enqueue_flaky(
    omniq: &omniq_async::AsyncOmniQ,
    n: u32,
) -> Vec<omniq_async::TaskHandle<u32>> {
    let mut handles = Vec::new();
    for i in 0..n {
        handles.push(
            omniq
                .enqueue_by_name::<u32>("lifecycle.flaky_dep", i)
                .await
                .expect("enqueue"),
        );
    }
    handles
}

async fn wait_for_state(handle: &omniq_async::TaskHandle<u32>, state: TaskState) {
    handle.wait(WAIT).await.expect("result");
    let deadline = tokio::time::Instant::now() + WAIT;
    while handle.record().await.expect("record").state != state {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never reached {state}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Nap;

impl BlockingTask for Nap {
    const NAME: &'static str = "lifecycle.nap";
    type Output = ();
    fn run(self, _ctx: TaskContext) -> Result<(), TaskError> {
        std::thread::sleep(Duration::from_millis(1_500));
        Ok(())
    }
}

async fn a_blocking_task_past_its_timeout_fails_while_its_thread_finishes(h: Harness) {
    let omniq = h.omniq.clone().register_blocking::<Nap>();
    let handle = omniq
        .enqueue(Nap)
        .timeout(Duration::from_millis(100))
        .max_attempts(1)
        .await
        .expect("enqueue");
    let worker = omniq
        .worker()
        .threads()
        .concurrency(1)
        .start()
        .expect("start");
    let Err(Error::TaskFailed { error, .. }) = handle.wait(WAIT).await else {
        panic!("expected a timeout");
    };
    assert_eq!(error.kind, TaskErrorKind::Timeout);
    worker.shutdown().await.expect("shutdown");
}

fn swallow_poison() -> Result<(), TaskError> {
    panic!("poison")
}

async fn a_poison_task_fails_while_a_thousand_others_succeed(h: Harness) {
    let poison_runs = Arc::new(AtomicU32::new(0));
    let runs = Arc::clone(&poison_runs);
    let omniq = h
        .omniq
        .clone()
        .register_fn("lifecycle.poison", move |(): ()| {
            runs.fetch_add(1, Ordering::SeqCst);
            async move { swallow_poison() }
        })
        .register_fn("lifecycle.ok", |n: u32| async move { Ok(n) });
    let poison = omniq
        .enqueue_by_name::<()>("lifecycle.poison", ())
        .max_attempts(3)
        .backoff(omniq_async::Backoff::Fixed {
            delay: Duration::from_millis(5),
        })
        .await
        .expect("enqueue");
    let mut others = Vec::new();
    for n in 0..1_000u32 {
        let handle = omniq.enqueue_by_name::<u32>("lifecycle.ok", n).await;
        others.push(handle.expect("enqueue"));
    }
    let worker = omniq.worker().concurrency(16).start().expect("start");
    for (n, handle) in others.iter().enumerate() {
        assert_eq!(handle.wait(WAIT).await.expect("result"), n as u32);
    }
    let Err(Error::TaskFailed { error, .. }) = poison.wait(WAIT).await else {
        panic!("poison fails");
    };
    assert_eq!(error.kind, TaskErrorKind::Panic);
    let report = worker.shutdown().await.expect("shutdown");
    assert_eq!(report.succeeded, 1_000);
    assert_eq!(report.dead_lettered, 1);
    assert_eq!(
        poison_runs.load(Ordering::SeqCst),
        3,
        "max_attempts counts runs"
    );
}

async fn a_long_task_keeps_its_lease_by_heartbeat_and_runs_once(h: Harness) {
    let runs = Arc::new(AtomicU32::new(0));
    let counter = Arc::clone(&runs);
    let omniq = h
        .omniq
        .clone()
        .register_fn("lifecycle.long", move |(): ()| {
            counter.fetch_add(1, Ordering::SeqCst);
            async move {
                // Four leases long: only heartbeats keep it.
                tokio::time::sleep(Duration::from_millis(2_400)).await;
                Ok(())
            }
        });
    let handle = omniq
        .enqueue_by_name::<()>("lifecycle.long", ())
        .await
        .expect("enqueue");
    let lease = Duration::from_millis(600);
    let first = omniq.worker().lease(lease).start().expect("start");
    let second = omniq.worker().lease(lease).start().expect("start");
    handle.wait(WAIT).await.expect("result");
    let a = first.shutdown().await.expect("shutdown");
    let b = second.shutdown().await.expect("shutdown");
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "never run twice while its worker lives"
    );
    assert_eq!(a.succeeded + b.succeeded, 1);
    assert_eq!(a.lease_lost + b.lease_lost, 0);
}

async fn finished_tasks_past_their_retention_are_deleted(h: Harness) {
    let omniq = h
        .omniq
        .clone()
        .register_fn("lifecycle.brief", |n: u32| async move { Ok(n) })
        .register_fn("lifecycle.doomed", |(): ()| async move {
            Err::<(), _>(TaskError::permanent("dead letter"))
        });
    let done = omniq
        .enqueue_by_name::<u32>("lifecycle.brief", 1)
        .await
        .expect("enqueue");
    let dead = omniq
        .enqueue_by_name::<()>("lifecycle.doomed", ())
        .await
        .expect("enqueue");
    let worker = omniq
        .worker()
        .retention(Some(Duration::from_millis(200)))
        .start()
        .expect("start");
    assert_eq!(done.wait(WAIT).await.expect("result"), 1);
    assert!(dead.wait(WAIT).await.is_err());
    let deadline = tokio::time::Instant::now() + WAIT;
    while omniq.task(done.id()).await.expect("get").is_some() {
        assert!(tokio::time::Instant::now() < deadline, "never pruned");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    worker.shutdown().await.expect("shutdown");
    let kept = omniq
        .task(dead.id())
        .await
        .expect("get")
        .expect("dead letters stay");
    assert_eq!(kept.state, TaskState::Failed);
}

on_each_backend! {
    retention => finished_tasks_past_their_retention_are_deleted;
    heartbeats => a_long_task_keeps_its_lease_by_heartbeat_and_runs_once;
    hooks => hooks_decide_retries_and_hear_of_final_failure;
    dependents_read_parent_results => a_dependent_runs_after_its_parent_and_reads_its_result;
    failure_callbacks => a_failing_parent_cancels_its_dependent_and_runs_its_on_failure_callback;
    cancel_running => a_running_task_is_told_to_stop_and_dropped_after_the_grace_period;
    ttl => a_task_not_started_before_its_ttl_expires;
    dead_letters => dead_letters_are_listed_redriven_and_purged;
    blocking_timeout => a_blocking_task_past_its_timeout_fails_while_its_thread_finishes;
    poison_among_many => a_poison_task_fails_while_a_thousand_others_succeed;
}
