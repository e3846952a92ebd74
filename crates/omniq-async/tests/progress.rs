//! Progress on every backend: a handler's reports are stored on its task, logged as
//! events, and renew its lease, so a task that reports progress runs for three times its
//! lease with every heartbeat failing, and runs once.

mod support;

use std::time::Duration;

use omniq_async::{
    BlockingTask, ProgressError, Task, TaskContext, TaskError, TaskEventKind, TaskState,
};
use omniq_storage::testing::{Fault, Op, Window};
use serde::{Deserialize, Serialize};
use serde_json::json;
use support::{Harness, WAIT};

/// The lease the worker of these tests holds tasks with.
const LEASE: Duration = Duration::from_secs(4);
/// How often [`Long`] reports: eight times a lease.
const EVERY: Duration = Duration::from_millis(500);
/// How many reports [`Long`] makes: 25 × 500 ms = 3.1 leases.
const REPORTS: u32 = 25;

/// Works for more than three leases, reporting its step. Returns how many reports were
/// stored and the last step stored: a slow store may fail one, which is no reason to stop.
#[derive(Debug, Serialize, Deserialize)]
struct Long;

impl Task for Long {
    const NAME: &'static str = "progress.long";
    type Output = (u32, u32);
    async fn run(self, ctx: TaskContext) -> Result<(u32, u32), TaskError> {
        let (mut stored, mut last) = (0, 0);
        for step in 1..=REPORTS {
            tokio::time::sleep(EVERY).await;
            match ctx.progress(&json!({ "step": step })).await {
                Ok(()) => (stored, last) = (stored + 1, step),
                Err(ProgressError::Store(err)) => eprintln!("a report was not stored: {err}"),
                Err(err) => return Err(err.into()),
            }
        }
        Ok((stored, last))
    }
}

/// Reports from a blocking handler's thread.
#[derive(Debug, Serialize, Deserialize)]
struct Blocking;

impl BlockingTask for Blocking {
    const NAME: &'static str = "progress.blocking";
    type Output = ();
    fn run(self, ctx: TaskContext) -> Result<(), TaskError> {
        ctx.progress_blocking("half way")?;
        ctx.progress_blocking(&json!({ "done": true }))?;
        Ok(())
    }
}

async fn events_of(
    omniq: &omniq_async::AsyncOmniQ,
    id: omniq_async::TaskId,
    kind: TaskEventKind,
    at_least: usize,
) -> Vec<omniq_async::TaskEvent> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        omniq.events().flush().await;
        let events: Vec<_> = omniq
            .events()
            .for_task(id)
            .await
            .expect("events")
            .into_iter()
            .filter(|e| e.kind == kind)
            .collect();
        if events.len() >= at_least || tokio::time::Instant::now() > deadline {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn progress_keeps_the_lease_when_heartbeats_fail(h: Harness) {
    let (omniq, faults, _) = support::faults::faulty(&h.omniq);
    let omniq = omniq.register::<Long>();
    let handle = omniq.enqueue(Long).await.expect("enqueue");
    faults.set(Op::Heartbeat, Fault::Fail, Window::UntilCleared);
    let worker = omniq.worker().lease(LEASE).start().expect("start");
    let (stored, last) = handle.wait(WAIT * 2).await.expect("runs to its end");
    worker.shutdown().await.expect("shutdown");
    assert!(
        faults.faults(Op::Heartbeat) > 0,
        "heartbeats were attempted and failed while it ran"
    );
    assert!(stored > 0 && last > 0, "{stored} reports stored");

    let record = omniq.task(handle.id()).await.expect("get").expect("stored");
    assert_eq!(record.state, TaskState::Succeeded);
    assert_eq!(record.attempts, 1, "ran once: {record:?}");
    assert!(record.errors.is_empty(), "{record:?}");
    // A report given up on at its time bound may still have been stored.
    let step = record.progress.as_ref().and_then(|p| p["step"].as_u64());
    assert!(
        step.is_some_and(|step| step >= u64::from(last) && step <= u64::from(REPORTS)),
        "the last value stored: {record:?}"
    );
    let started = events_of(&omniq, handle.id(), TaskEventKind::Started, 1).await;
    assert_eq!(started.len(), 1, "one start: {started:?}");
    let reported = events_of(
        &omniq,
        handle.id(),
        TaskEventKind::Progress,
        stored as usize,
    )
    .await;
    assert_eq!(reported.len(), stored as usize, "{reported:?}");
}

async fn a_blocking_handler_reports_progress(h: Harness) {
    let omniq = h.omniq.clone().register_blocking::<Blocking>();
    let handle = omniq.enqueue(Blocking).await.expect("enqueue");
    let worker = omniq.worker().start().expect("start");
    handle.wait(WAIT).await.expect("runs");
    worker.shutdown().await.expect("shutdown");
    let record = omniq.task(handle.id()).await.expect("get").expect("stored");
    assert_eq!(record.progress, Some(json!({ "done": true })));
    let reported = events_of(&omniq, handle.id(), TaskEventKind::Progress, 2).await;
    let messages: Vec<_> = reported
        .iter()
        .filter_map(|e| e.message.as_deref())
        .collect();
    assert_eq!(messages, [r#""half way""#, r#"{"done":true}"#]);
}

/// Reports from an async handler.
#[derive(Debug, Serialize, Deserialize)]
struct Steps;

impl Task for Steps {
    const NAME: &'static str = "progress.steps";
    type Output = ();
    async fn run(self, ctx: TaskContext) -> Result<(), TaskError> {
        ctx.progress(&1).await?;
        ctx.progress(&2).await?;
        Ok(())
    }
}

/// Async and blocking handlers report progress on thread, local and process workers (a
/// process worker's child sends it to the parent, which stores it).
async fn every_worker_kind_reports_progress(h: Harness) {
    let omniq = h
        .omniq
        .clone()
        .register::<Steps>()
        .register_blocking::<Blocking>();
    let worker = omniq.worker().start().expect("start");
    let steps = omniq.enqueue(Steps).await.expect("enqueue");
    let blocking = omniq.enqueue(Blocking).await.expect("enqueue");
    steps.wait(WAIT).await.expect("runs");
    blocking.wait(WAIT).await.expect("runs");
    worker.shutdown().await.expect("shutdown");
    for (id, last, count) in [
        (steps.id(), json!(2), 2),
        (blocking.id(), json!({ "done": true }), 2),
    ] {
        let record = omniq.task(id).await.expect("get").expect("stored");
        assert_eq!(record.progress, Some(last), "{record:?}");
        let reported = events_of(&omniq, id, TaskEventKind::Progress, count).await;
        assert_eq!(reported.len(), count, "{reported:?}");
    }
}

on_each_backend! {
    heartbeats_failing => progress_keeps_the_lease_when_heartbeats_fail;
    blocking => a_blocking_handler_reports_progress;
}

on_each_worker_kind! {
    kinds => every_worker_kind_reports_progress;
}

#[cfg(feature = "memory")]
#[tokio::test]
async fn a_detached_context_cannot_report_progress() {
    let results: std::sync::Arc<dyn omniq_storage::ResultStore> =
        std::sync::Arc::new(omniq_memory::MemoryResultStore::new());
    let ctx = TaskContext::detached("t", "default", 1, results, Default::default());
    assert!(matches!(
        ctx.progress(&1).await,
        Err(ProgressError::Unsupported(_))
    ));
}
