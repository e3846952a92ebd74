//! The worker under faults of the user's code: panics outside the handler's future, hooks
//! that panic, blocking handlers that outlive their timeout. On every backend.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use omniq_async::{Error, Task, TaskContext, TaskError, TaskErrorKind, TaskState};
use serde::{Deserialize, Serialize};
use support::{Harness, WAIT};

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

#[derive(Debug, Serialize, Deserialize)]
struct Double(i64);

impl Task for Double {
    const NAME: &'static str = "test.double";
    type Output = i64;
    async fn run(self, _ctx: TaskContext) -> Result<i64, TaskError> {
        Ok(self.0 * 2)
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

on_each_backend! {
    closure_sync_panic => a_panic_in_a_closures_synchronous_part_fails_the_attempt;
    panicking_hooks => panicking_hooks_never_cost_the_worker_a_loop;
    timed_out_blocking_prefetch0 => claims_resume_after_a_timed_out_blocking_handler_returns;
    event_retention => workers_delete_events_past_their_retention;
}
