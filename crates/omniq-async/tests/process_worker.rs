//! Process workers: handlers run in child processes of the test binary; a timeout kills
//! the child, a crash fails only its attempt, children are recycled.
//!
//! A child is this test binary run again for the one test that started it
//! (`<test> --exact`): the test runs up to the worker's start, where the child serves its
//! parent and never returns. Each test uses a store of its own, so what a child does before
//! that point touches nothing the parent reads.

mod support;

use std::time::Duration;

use omniq_async::prelude::*;
use omniq_async::{Error, TaskErrorKind, WorkerBuilder};
use support::WAIT;

/// The process this attempt ran in.
#[task]
async fn pid() -> Result<u32, TaskError> {
    Ok(std::process::id())
}

/// The process this blocking attempt ran in, with the state it reached.
#[task]
fn blocking_pid(add: u32, offset: State<Offset>) -> Result<(u32, u32), TaskError> {
    Ok((std::process::id(), add + offset.0))
}

struct Offset(u32);

/// Never returns and never yields: only killing its process stops it.
#[task(max_attempts = 1, timeout = Duration::from_millis(300))]
fn spin() -> Result<(), TaskError> {
    loop {
        std::hint::spin_loop();
    }
}

#[task(max_attempts = 1)]
fn crash() -> Result<(), TaskError> {
    std::process::abort()
}

#[task(max_attempts = 1)]
async fn fail() -> Result<(), TaskError> {
    Err(TaskError::permanent("no luck"))
}

/// A process worker whose children re-run `test` of this binary.
fn process_worker(omniq: &AsyncOmniQ, test: &str) -> WorkerBuilder {
    let exe = std::env::current_exe().expect("test binary");
    omniq.worker().kind(WorkerKind::Process).child_command([
        exe.into_os_string(),
        test.into(),
        "--exact".into(),
        "--nocapture".into(),
    ])
}

fn registered(omniq: &AsyncOmniQ) -> AsyncOmniQ {
    omniq
        .clone()
        .state(Offset(10))
        .register::<pid>()
        .register_blocking::<blocking_pid>()
        .register_blocking::<spin>()
        .register_blocking::<crash>()
        .register::<fail>()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_run_in_child_processes_with_their_state() {
    let harness = support::sqlite(|_| {}).await;
    let omniq = registered(&harness.omniq);
    let worker = process_worker(&omniq, "handlers_run_in_child_processes_with_their_state")
        .concurrency(2)
        .start()
        .expect("start");
    let a = omniq.enqueue(pid {}).await.expect("enqueue");
    let b = omniq
        .enqueue(blocking_pid { add: 5 })
        .await
        .expect("enqueue");
    let failed = omniq.enqueue(fail {}).await.expect("enqueue");
    let a = a.wait(WAIT).await.expect("result");
    let (b, sum) = b.wait(WAIT).await.expect("result");
    assert_ne!(a, std::process::id(), "ran in a child");
    assert_ne!(b, std::process::id(), "ran in a child");
    assert_eq!(sum, 15, "the child reached its state");
    match failed.wait(WAIT).await.expect_err("failed") {
        Error::TaskFailed { error, .. } => assert_eq!(error.message, "no luck"),
        other => panic!("expected the task's error, got {other}"),
    }
    worker.shutdown().await.expect("shutdown");
}

/// Whether process `pid` is gone (reaped, or a zombie waiting to be).
fn is_dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

async fn eventually_dead(pid: u32) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !is_dead(pid) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "process {pid} still runs"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_past_its_timeout_is_killed_and_the_next_task_gets_a_fresh_child() {
    let harness = support::sqlite(|_| {}).await;
    let omniq = registered(&harness.omniq);
    let worker = process_worker(
        &omniq,
        "a_handler_past_its_timeout_is_killed_and_the_next_task_gets_a_fresh_child",
    )
    .concurrency(1)
    .start()
    .expect("start");
    let first = omniq.enqueue(pid {}).await.expect("enqueue");
    let first = first.wait(WAIT).await.expect("result");
    // One slot, so the spinning task runs in the child that ran `first`.
    let spun = omniq.enqueue(spin {}).await.expect("enqueue");
    match spun.wait(WAIT).await.expect_err("timed out") {
        Error::TaskFailed { error, .. } => assert_eq!(error.kind, TaskErrorKind::Timeout),
        other => panic!("expected a timeout, got {other}"),
    }
    eventually_dead(first).await;
    let next = omniq.enqueue(pid {}).await.expect("enqueue");
    let next = next.wait(WAIT).await.expect("result");
    assert_ne!(next, first, "a new child runs the next task");
    worker.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_that_aborts_fails_only_its_attempt() {
    let harness = support::sqlite(|_| {}).await;
    let omniq = registered(&harness.omniq);
    let worker = process_worker(&omniq, "a_child_that_aborts_fails_only_its_attempt")
        .concurrency(1)
        .start()
        .expect("start");
    let crashed = omniq.enqueue(crash {}).await.expect("enqueue");
    let after = omniq.enqueue(pid {}).await.expect("enqueue");
    match crashed.wait(WAIT).await.expect_err("crashed") {
        Error::TaskFailed { error, .. } => {
            assert_eq!(error.kind, TaskErrorKind::Crashed, "{error}");
            assert!(error.message.contains("signal 6"), "{error}");
        }
        other => panic!("expected a crash, got {other}"),
    }
    assert_ne!(after.wait(WAIT).await.expect("result"), std::process::id());
    let report = worker.shutdown().await.expect("shutdown");
    assert_eq!((report.succeeded, report.dead_lettered), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn children_are_replaced_after_max_tasks_per_child() {
    let harness = support::sqlite(|_| {}).await;
    let omniq = registered(&harness.omniq);
    let worker = process_worker(&omniq, "children_are_replaced_after_max_tasks_per_child")
        .concurrency(1)
        .max_tasks_per_child(Some(2))
        .start()
        .expect("start");
    let mut pids = Vec::new();
    for _ in 0..4 {
        let handle = omniq.enqueue(pid {}).await.expect("enqueue");
        pids.push(handle.wait(WAIT).await.expect("result"));
    }
    assert_eq!(pids[0], pids[1], "{pids:?}");
    assert_eq!(pids[2], pids[3], "{pids:?}");
    assert_ne!(pids[0], pids[2], "{pids:?}");
    eventually_dead(pids[0]).await;
    worker.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_program_that_never_serves_fails_the_attempt_with_a_reason() {
    let harness = support::sqlite(|_| {}).await;
    let omniq = registered(&harness.omniq);
    // `true` exits at once: it never starts a process worker.
    let worker = omniq
        .worker()
        .kind(WorkerKind::Process)
        .child_command(["true"])
        .start()
        .expect("start");
    let handle = omniq
        .enqueue(pid {})
        .options(TaskOptions::default().max_attempts(1))
        .await
        .expect("enqueue");
    match handle.wait(WAIT).await.expect_err("no child served") {
        Error::TaskFailed { error, .. } => {
            assert!(error.message.contains("ended before serving"), "{error}");
            assert!(error.message.contains("exit code 0"), "{error}");
        }
        other => panic!("expected a failed attempt, got {other}"),
    }
    worker.shutdown().await.expect("shutdown");
}
