//! Local workers: futures that are not `Send` run on local threads, stay on the thread
//! they start on, and are dropped at their timeout.

mod support;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use omniq_async::prelude::*;
use omniq_async::{Error, TaskErrorKind};
use support::WAIT;

/// Holds an `Rc` and a `RefCell` across awaits: this future is not `Send`.
#[task(local)]
async fn tally(words: Vec<String>) -> Result<(usize, String), TaskError> {
    let counts = Rc::new(RefCell::new(0_usize));
    let thread = std::thread::current().name().unwrap_or("").to_owned();
    for word in words {
        tokio::task::yield_now().await;
        *counts.borrow_mut() += word.len();
        // Still on the thread it started on.
        assert_eq!(std::thread::current().name().unwrap_or(""), thread);
    }
    let total = *counts.borrow();
    Ok((total, thread))
}

/// Never finishes on its own.
#[task(local, max_attempts = 1, timeout = Duration::from_millis(200))]
async fn forever() -> Result<(), TaskError> {
    let _held = Rc::new(());
    std::future::pending::<()>().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_future_that_is_not_send_runs_on_a_local_thread_of_any_worker() {
    let harness = support::sqlite(|_| {}).await;
    let omniq = harness.omniq.clone().register_local::<tally>();
    let worker = omniq.worker().start().expect("start");
    let handle = omniq
        .enqueue(tally {
            words: vec!["one".into(), "three".into()],
        })
        .await
        .expect("enqueue");
    let (total, thread) = handle.wait(WAIT).await.expect("result");
    assert_eq!(total, 8);
    assert!(thread.starts_with("omniq-local-"), "ran on `{thread}`");
    worker.shutdown().await.expect("shutdown");
}

/// A local worker runs ordinary (`Send`) tasks on its local threads too.
#[task]
async fn where_am_i() -> Result<String, TaskError> {
    Ok(std::thread::current().name().unwrap_or("").to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_worker_runs_every_async_task_on_its_local_threads() {
    let harness = support::memory(|_| {}).await;
    let omniq = harness.omniq.clone().register::<where_am_i>();
    let worker = omniq
        .worker()
        .kind(WorkerKind::Local)
        .start()
        .expect("start");
    let handles = omniq
        .enqueue_many((0..8).map(|_| where_am_i {}))
        .await
        .expect("enqueue");
    for handle in handles {
        let thread = handle.wait(WAIT).await.expect("result");
        assert!(thread.starts_with("omniq-local-"), "ran on `{thread}`");
    }
    worker.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_future_past_its_timeout_is_dropped_and_the_attempt_fails() {
    let harness = support::memory(|_| {}).await;
    let omniq = harness
        .omniq
        .clone()
        .register_local::<forever>()
        .register_local::<tally>();
    let worker = omniq
        .worker()
        .kind(WorkerKind::Local)
        .concurrency(1)
        .start()
        .expect("start");
    let stuck = omniq.enqueue(forever {}).await.expect("enqueue");
    let err = stuck.wait(WAIT).await.expect_err("timed out");
    match err {
        Error::TaskFailed { error, .. } => assert_eq!(error.kind, TaskErrorKind::Timeout),
        other => panic!("expected a timeout, got {other}"),
    }
    // The one slot is free again: the next task runs.
    let next = omniq
        .enqueue(tally {
            words: vec!["ab".into()],
        })
        .await
        .expect("enqueue");
    assert_eq!(next.wait(WAIT).await.expect("result").0, 2);
    worker.shutdown().await.expect("shutdown");
}
