//! Tasks run end to end through AsyncOmniQ and a worker, on memory and SQLite.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use omniq_async::{
    Backoff, BlockingTask, Error, Task, TaskContext, TaskError, TaskErrorKind, TaskEventKind,
    TaskQuery, TaskState,
};
use serde::{Deserialize, Serialize};
use support::{Double, Harness, WAIT};

#[derive(Debug, Serialize, Deserialize)]
struct Poison;

impl Task for Poison {
    const NAME: &'static str = "test.poison";
    type Output = ();
    async fn run(self, _ctx: TaskContext) -> Result<(), TaskError> {
        panic!("poison pill");
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Sleep(u64);

impl Task for Sleep {
    const NAME: &'static str = "test.sleep";
    type Output = ();
    async fn run(self, _ctx: TaskContext) -> Result<(), TaskError> {
        tokio::time::sleep(Duration::from_millis(self.0)).await;
        Ok(())
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Shout(String);

impl BlockingTask for Shout {
    const NAME: &'static str = "test.shout";
    type Output = String;
    fn run(self, _ctx: TaskContext) -> Result<String, TaskError> {
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("");
        Ok(format!("{} on {name}", self.0.to_uppercase()))
    }
}

async fn typed_and_closure_tasks_run_and_their_results_are_read_back(h: Harness) {
    let omniq = h
        .omniq
        .clone()
        .register::<Double>()
        .register_fn("test.add", |(a, b): (i64, i64)| async move { Ok(a + b) });
    let doubles = omniq
        .enqueue_many((1..=20).map(Double))
        .await
        .expect("enqueue");
    let sum = omniq
        .enqueue_by_name::<i64>("test.add", (40, 2))
        .await
        .expect("enqueue");
    let worker = omniq.worker().concurrency(4).start().expect("start");
    for (i, handle) in doubles.iter().enumerate() {
        let expected = 2 * (i as i64 + 1);
        assert_eq!(handle.wait(WAIT).await.expect("result"), expected);
    }
    assert_eq!(sum.wait(WAIT).await.expect("result"), 42);
    // Shutdown flushes the worker's completions; the result is stored first, so a waiter
    // can see it a moment before the record says Succeeded.
    let report = worker.shutdown().await.expect("shutdown");
    assert_eq!(report.succeeded, 21);
    let record = sum.record().await.expect("record");
    assert_eq!(record.state, TaskState::Succeeded);
    assert_eq!(record.attempts, 1);
}

async fn every_transition_is_recorded_as_an_event(h: Harness) {
    let attempts = Arc::new(AtomicU32::new(0));
    let seen = Arc::clone(&attempts);
    let omniq = h.omniq.clone().register_fn("test.flaky", move |(): ()| {
        let attempt = seen.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            if attempt == 1 {
                Err(TaskError::new("first attempt fails"))
            } else {
                Ok(attempt)
            }
        }
    });
    let handle = omniq
        .enqueue_by_name::<u32>("test.flaky", ())
        .backoff(Backoff::Fixed {
            delay: Duration::from_millis(10),
        })
        .await
        .expect("enqueue");
    let worker = omniq.worker().start().expect("start");
    assert_eq!(handle.wait(WAIT).await.expect("result"), 2);
    worker.shutdown().await.expect("shutdown");
    omniq.events().flush().await;
    let events = omniq.events().for_task(handle.id()).await.expect("events");
    // Each attempt's events are in order. Across attempts they may interleave: the retry
    // is due 10 ms after the first attempt's completion is applied, and its `started` can
    // be logged before the completion lane logs that attempt's `failed` and `retrying`.
    let of_attempt = |attempt: u32| -> Vec<TaskEventKind> {
        events
            .iter()
            .filter(|e| e.attempt == Some(attempt))
            .map(|e| e.kind)
            .collect()
    };
    assert_eq!(
        events.first().map(|e| e.kind),
        Some(TaskEventKind::Enqueued)
    );
    assert_eq!(
        of_attempt(1),
        vec![
            TaskEventKind::Started,
            TaskEventKind::Failed,
            TaskEventKind::Retrying,
        ]
    );
    assert_eq!(
        of_attempt(2),
        vec![TaskEventKind::Started, TaskEventKind::Succeeded]
    );
    assert_eq!(events.len(), 6, "{events:?}");
}

async fn an_unknown_task_name_is_dead_lettered_and_the_worker_keeps_running(h: Harness) {
    let omniq = h.omniq.clone().register::<Double>();
    let unknown = omniq
        .enqueue_by_name::<()>("test.nobody_registered_this", 1)
        .await
        .expect("enqueue");
    // No grace: a task no worker here runs is taken and dead-lettered at once.
    let worker = omniq
        .worker()
        .unknown_task_grace(Some(Duration::ZERO))
        .start()
        .expect("start");
    let error = unknown.wait(WAIT).await.expect_err("dead-lettered");
    let Error::TaskFailed { error, .. } = error else {
        panic!("expected TaskFailed, got {error:?}");
    };
    assert_eq!(error.kind, TaskErrorKind::UnknownTask);
    assert!(
        error.message.contains("test.nobody_registered_this"),
        "{}",
        error.message
    );
    let record = unknown.record().await.expect("record");
    assert_eq!(record.state, TaskState::Failed);
    assert_eq!(record.attempts, 1, "an unknown task is not retried");

    let after = omniq.enqueue(Double(21)).await.expect("enqueue");
    assert_eq!(after.wait(WAIT).await.expect("worker still running"), 42);
    worker.shutdown().await.expect("shutdown");
}

#[derive(Debug, Serialize, Deserialize)]
struct Triple(i64);

impl Task for Triple {
    const NAME: &'static str = "test.triple";
    type Output = i64;
    async fn run(self, _ctx: TaskContext) -> Result<i64, TaskError> {
        Ok(self.0 * 3)
    }
}

/// A rolling deploy: a worker of the old release (no handler for the new task) runs beside
/// one of the new release. The old worker leaves every new task to the new one, even while
/// it claims the old tasks queued behind them; none is dead-lettered.
async fn a_rolling_deploy_dead_letters_no_task_a_live_worker_can_run(h: Harness) {
    const NEW_TASKS: i64 = 100;
    let old_release = h.omniq.clone().register::<Double>();
    let new_release =
        omniq_async::AsyncOmniQ::with_stores(h.omniq.settings().clone(), h.omniq.stores().clone())
            .register::<Double>()
            .register::<Triple>();
    // The new release's producer sends its tasks first; the old release's follow.
    let new_tasks = new_release
        .enqueue_many((0..NEW_TASKS).map(Triple))
        .await
        .expect("enqueue");
    let old_tasks = old_release
        .enqueue_many((0..10).map(Double))
        .await
        .expect("enqueue");
    let old_worker = old_release.worker().start().expect("start");
    // The old worker runs the old tasks, queued behind the new ones: it has claimed past
    // every new task by the time they are done.
    for (n, handle) in (0..).zip(&old_tasks) {
        assert_eq!(handle.wait(WAIT).await.expect("old task"), n * 2);
    }
    let new_worker = new_release.worker().start().expect("start");
    for (n, handle) in (0..).zip(&new_tasks) {
        assert_eq!(
            handle
                .wait(WAIT)
                .await
                .expect("a new task runs on the new worker"),
            n * 3
        );
    }
    old_worker.shutdown().await.expect("shutdown");
    new_worker.shutdown().await.expect("shutdown");
    let stats = h.omniq.queue_stats("default").await.expect("stats");
    assert_eq!(stats.count(TaskState::Failed), 0, "{stats:?}");
    assert_eq!(
        stats.count(TaskState::Succeeded),
        u64::try_from(NEW_TASKS).expect("count") + 10,
        "{stats:?}"
    );
    for handle in &new_tasks {
        let record = handle.record().await.expect("record");
        assert_eq!(
            record.attempts, 1,
            "a new task was claimed by the old worker"
        );
    }
}

async fn an_undecodable_payload_is_dead_lettered_with_the_reason(h: Harness) {
    let omniq = h.omniq.clone().register::<Double>();
    // A string where the handler expects an integer.
    let bad = omniq
        .enqueue_by_name::<i64>(<Double as Task>::NAME, "not a number")
        .await
        .expect("enqueue");
    let worker = omniq.worker().start().expect("start");
    let Err(Error::TaskFailed { error, .. }) = bad.wait(WAIT).await else {
        panic!("expected the task to fail");
    };
    assert_eq!(error.kind, TaskErrorKind::Decode);
    assert!(
        error.message.contains("undecodable payload"),
        "{}",
        error.message
    );
    assert_eq!(bad.record().await.expect("record").attempts, 1);
    let good = omniq.enqueue(Double(1)).await.expect("enqueue");
    assert_eq!(good.wait(WAIT).await.expect("result"), 2);
    worker.shutdown().await.expect("shutdown");
}

async fn a_failing_task_is_retried_until_it_succeeds(h: Harness) {
    let calls = Arc::new(AtomicU32::new(0));
    let seen = Arc::clone(&calls);
    let omniq = h
        .omniq
        .clone()
        .register_fn("test.third_time_lucky", move |(): ()| {
            let call = seen.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                if call < 3 {
                    Err(TaskError::new(format!("call {call} fails")))
                } else {
                    Ok(call)
                }
            }
        });
    let handle = omniq
        .enqueue_by_name::<u32>("test.third_time_lucky", ())
        .max_attempts(3)
        .backoff(Backoff::Fixed {
            delay: Duration::from_millis(10),
        })
        .await
        .expect("enqueue");
    let worker = omniq.worker().start().expect("start");
    assert_eq!(handle.wait(WAIT).await.expect("result"), 3);
    let record = handle.record().await.expect("record");
    assert_eq!(record.attempts, 3);
    let messages: Vec<_> = record
        .errors
        .iter()
        .map(|e| e.error.message.clone())
        .collect();
    assert_eq!(messages, vec!["call 1 fails", "call 2 fails"]);
    worker.shutdown().await.expect("shutdown");
}

async fn a_panicking_task_fails_after_max_attempts_while_others_succeed(h: Harness) {
    let omniq = h.omniq.clone().register::<Poison>().register::<Double>();
    let poison = omniq
        .enqueue(Poison)
        .max_attempts(3)
        .backoff(Backoff::Fixed {
            delay: Duration::from_millis(1),
        })
        .await
        .expect("enqueue");
    let good = omniq
        .enqueue_many((0..200).map(Double))
        .await
        .expect("enqueue");
    let worker = omniq.worker().concurrency(8).start().expect("start");
    for (i, handle) in good.iter().enumerate() {
        assert_eq!(handle.wait(WAIT).await.expect("result"), 2 * i as i64);
    }
    let waited = poison.wait(WAIT).await;
    let Err(Error::TaskFailed { error, .. }) = waited else {
        panic!(
            "poison must fail, got {waited:?}; its record: {:?}",
            poison.record().await
        );
    };
    assert_eq!(error.kind, TaskErrorKind::Panic);
    assert!(error.message.contains("poison pill"));
    let record = poison.record().await.expect("record");
    assert_eq!(record.state, TaskState::Failed);
    assert_eq!(record.attempts, 3);
    assert!(
        record
            .errors
            .iter()
            .all(|e| e.error.kind == TaskErrorKind::Panic)
    );
    let report = worker.shutdown().await.expect("shutdown");
    assert_eq!(report.succeeded, 200);
    assert_eq!(report.dead_lettered, 1);
}

async fn a_task_past_its_timeout_fails_the_attempt(h: Harness) {
    let omniq = h.omniq.clone().register::<Sleep>();
    let slow = omniq
        .enqueue(Sleep(60_000))
        .timeout(Duration::from_millis(100))
        .max_attempts(1)
        .await
        .expect("enqueue");
    let worker = omniq.worker().start().expect("start");
    let Err(Error::TaskFailed { error, .. }) = slow.wait(WAIT).await else {
        panic!("expected a timeout");
    };
    assert_eq!(error.kind, TaskErrorKind::Timeout);
    worker.shutdown().await.expect("shutdown");
}

async fn blocking_tasks_run_on_the_workers_own_threads(h: Harness) {
    let omniq = h.omniq.clone().register_blocking::<Shout>();
    let handle = omniq.enqueue(Shout("hi".into())).await.expect("enqueue");
    let worker = omniq.worker().threads().start().expect("start");
    let out = handle.wait(WAIT).await.expect("result");
    assert!(out.starts_with("HI on omniq-worker-"), "{out}");
    worker.shutdown().await.expect("shutdown");
}

async fn shutdown_lets_running_tasks_finish_within_the_grace_period(h: Harness) {
    let omniq = h.omniq.clone().register::<Sleep>();
    let handle = omniq.enqueue(Sleep(300)).await.expect("enqueue");
    // Subscribed before the worker starts, so the Started event cannot be missed.
    let mut started = omniq
        .events()
        .subscribe()
        .task(handle.id())
        .kinds([TaskEventKind::Started]);
    let worker = omniq
        .worker()
        .shutdown_grace(Duration::from_secs(10))
        .start()
        .expect("start");
    tokio::time::timeout(WAIT, started.next())
        .await
        .expect("task starts");
    let report = worker.shutdown().await.expect("shutdown");
    assert_eq!(report.succeeded, 1);
    assert_eq!(
        handle.record().await.expect("record").state,
        TaskState::Succeeded
    );
}

async fn shutdown_releases_tasks_that_outlive_the_grace_period(h: Harness) {
    let omniq = h.omniq.clone().register::<Sleep>();
    let handle = omniq.enqueue(Sleep(60_000)).await.expect("enqueue");
    // Subscribed before the worker starts, so the Started event cannot be missed.
    let mut started = omniq
        .events()
        .subscribe()
        .task(handle.id())
        .kinds([TaskEventKind::Started]);
    let worker = omniq
        .worker()
        .shutdown_grace(Duration::from_millis(100))
        .start()
        .expect("start");
    tokio::time::timeout(WAIT, started.next())
        .await
        .expect("task starts");
    let report = worker.shutdown().await.expect("shutdown");
    assert_eq!(report.released, 1);
    let record = handle.record().await.expect("record");
    assert_eq!(
        record.state,
        TaskState::Queued,
        "released back to its queue"
    );
    assert_eq!(record.attempts, 0, "a released attempt does not count");
}

async fn prefetched_tasks_wait_for_a_slot_and_go_back_unrun_at_shutdown(h: Harness) {
    let runs = Arc::new(AtomicU32::new(0));
    let omniq = {
        let runs = Arc::clone(&runs);
        h.omniq.clone().register_fn("test.hold", move |_: u32| {
            runs.fetch_add(1, Ordering::SeqCst);
            async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok(())
            }
        })
    };
    let mut handles = Vec::new();
    for i in 0..4u32 {
        handles.push(
            omniq
                .enqueue_by_name::<()>("test.hold", i)
                .await
                .expect("enqueue"),
        );
    }
    let mut started = omniq.events().subscribe().kinds([TaskEventKind::Started]);
    let worker = omniq
        .worker()
        .concurrency(1)
        .prefetch(3)
        .shutdown_grace(Duration::from_millis(100))
        .start()
        .expect("start");
    tokio::time::timeout(WAIT, started.next())
        .await
        .expect("a task starts");
    // One claim took the free slot and the three buffered leases.
    let running = omniq
        .queue_stats("default")
        .await
        .expect("stats")
        .count(TaskState::Running);
    assert_eq!(running, 4, "one running, three prefetched");
    let report = worker.shutdown().await.expect("shutdown");
    assert_eq!(
        report.released, 4,
        "the running one after the grace, the buffered ones at once"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1, "a buffered lease never ran");
    for handle in &handles {
        let record = handle.record().await.expect("record");
        assert_eq!(record.state, TaskState::Queued);
        assert_eq!(record.attempts, 0);
    }
}

async fn prefetch_never_runs_more_handlers_than_the_concurrency(h: Harness) {
    let running = Arc::new(AtomicU32::new(0));
    let most = Arc::new(AtomicU32::new(0));
    let omniq = {
        let (running, most) = (Arc::clone(&running), Arc::clone(&most));
        h.omniq.clone().register_fn("test.count", move |_: u32| {
            let (running, most) = (Arc::clone(&running), Arc::clone(&most));
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(2)).await;
                running.fetch_sub(1, Ordering::SeqCst);
                Ok(())
            }
        })
    };
    let mut handles = Vec::new();
    for i in 0..60u32 {
        handles.push(
            omniq
                .enqueue_by_name::<()>("test.count", i)
                .await
                .expect("enqueue"),
        );
    }
    let worker = omniq
        .worker()
        .concurrency(2)
        .prefetch(8)
        .start()
        .expect("start");
    for handle in handles {
        handle.wait(WAIT).await.expect("succeeds");
    }
    let report = worker.shutdown().await.expect("shutdown");
    assert_eq!(report.succeeded, 60);
    let most = most.load(Ordering::SeqCst);
    assert!((1..=2).contains(&most), "{most} handlers ran at once");
}

/// A claimed batch runs in claim order: with one slot and a prefetch that takes every task
/// in one claim, the highest priority runs first though it was enqueued last.
async fn a_prefetched_batch_starts_in_priority_order(h: Harness) {
    let ran = Arc::new(std::sync::Mutex::new(Vec::new()));
    let omniq = {
        let ran = Arc::clone(&ran);
        h.omniq
            .clone()
            .register_fn("test.order", move |priority: i32| {
                let ran = Arc::clone(&ran);
                async move {
                    ran.lock().expect("not poisoned").push(priority);
                    Ok(())
                }
            })
    };
    let mut handles = Vec::new();
    for priority in 0..10 {
        handles.push(
            omniq
                .enqueue_by_name::<()>("test.order", priority)
                .priority(priority)
                .await
                .expect("enqueue"),
        );
    }
    let worker = omniq
        .worker()
        .concurrency(1)
        .prefetch(16)
        .start()
        .expect("start");
    for handle in handles {
        handle.wait(WAIT).await.expect("succeeds");
    }
    worker.shutdown().await.expect("shutdown");
    let ran = ran.lock().expect("not poisoned").clone();
    assert_eq!(ran, (0..10).rev().collect::<Vec<_>>());
}

async fn a_unique_key_returns_the_live_task(h: Harness) {
    let omniq = h.omniq.clone().register::<Double>();
    let first = omniq
        .enqueue(Double(1))
        .unique_key("only-one")
        .await
        .expect("enqueue");
    let second = omniq
        .enqueue(Double(2))
        .unique_key("only-one")
        .await
        .expect("enqueue");
    assert!(!first.was_deduplicated());
    assert!(second.was_deduplicated());
    assert_eq!(first.id(), second.id());
}

async fn waiting_on_a_cancelled_task_reports_that_it_ended(h: Harness) {
    let omniq = h.omniq.clone().register::<Double>();
    let handle = omniq.enqueue(Double(1)).await.expect("enqueue");
    handle.cancel().await.expect("cancel");
    let Err(Error::TaskEnded { state, .. }) = handle.wait(WAIT).await else {
        panic!("a cancelled task has no result");
    };
    assert_eq!(state, TaskState::Cancelled);
}

async fn inspection_lists_and_counts_tasks(h: Harness) {
    let omniq = h.omniq.clone();
    omniq
        .enqueue_many((0..5).map(Double))
        .await
        .expect("enqueue");
    omniq
        .enqueue(Double(9))
        .queue("other")
        .await
        .expect("enqueue");
    let stats = omniq.queue_stats("default").await.expect("stats");
    assert_eq!(stats.count(TaskState::Queued), 5);
    let listed = omniq
        .list_tasks(TaskQuery::new().queue("other"))
        .await
        .expect("list");
    assert_eq!(listed.len(), 1);
    let queues: Vec<(String, u64)> = omniq
        .queues()
        .await
        .expect("queues")
        .into_iter()
        .map(|stats| (stats.queue.clone(), stats.count(TaskState::Queued)))
        .collect();
    assert_eq!(
        queues,
        vec![("default".to_owned(), 5), ("other".to_owned(), 1)]
    );
}

on_each_backend! {
    typed_and_closure_tasks => typed_and_closure_tasks_run_and_their_results_are_read_back;
    events_per_transition => every_transition_is_recorded_as_an_event;
    unknown_task_name => an_unknown_task_name_is_dead_lettered_and_the_worker_keeps_running;
    rolling_deploy => a_rolling_deploy_dead_letters_no_task_a_live_worker_can_run;
    undecodable_payload => an_undecodable_payload_is_dead_lettered_with_the_reason;
    retries => a_failing_task_is_retried_until_it_succeeds;
    poison_task => a_panicking_task_fails_after_max_attempts_while_others_succeed;
    timeouts => a_task_past_its_timeout_fails_the_attempt;
    blocking_tasks => blocking_tasks_run_on_the_workers_own_threads;
    graceful_shutdown => shutdown_lets_running_tasks_finish_within_the_grace_period;
    shutdown_release => shutdown_releases_tasks_that_outlive_the_grace_period;
    prefetch_buffer => prefetched_tasks_wait_for_a_slot_and_go_back_unrun_at_shutdown;
    prefetch_concurrency => prefetch_never_runs_more_handlers_than_the_concurrency;
    unique_keys => a_unique_key_returns_the_live_task;
    cancelled_wait => waiting_on_a_cancelled_task_reports_that_it_ended;
    inspection => inspection_lists_and_counts_tasks;
}

// The same scenarios with the thread, local and process worker kinds. Three are not for
// process workers: two watch handlers through in-process state (the slot machinery they
// test is the same for every kind), and a rolling deploy starts two workers in one
// program, while a process worker's child serves at the program's first worker start.
on_each_worker_kind! {
    typed_and_closure_tasks => typed_and_closure_tasks_run_and_their_results_are_read_back;
    events_per_transition => every_transition_is_recorded_as_an_event;
    unknown_task_name => an_unknown_task_name_is_dead_lettered_and_the_worker_keeps_running;
    rolling_deploy => a_rolling_deploy_dead_letters_no_task_a_live_worker_can_run
        [memory_thread, memory_local, sqlite_thread, sqlite_local];
    undecodable_payload => an_undecodable_payload_is_dead_lettered_with_the_reason;
    retries => a_failing_task_is_retried_until_it_succeeds;
    poison_task => a_panicking_task_fails_after_max_attempts_while_others_succeed;
    timeouts => a_task_past_its_timeout_fails_the_attempt;
    blocking_tasks => blocking_tasks_run_on_the_workers_own_threads;
    graceful_shutdown => shutdown_lets_running_tasks_finish_within_the_grace_period;
    shutdown_release => shutdown_releases_tasks_that_outlive_the_grace_period;
    prefetch_buffer => prefetched_tasks_wait_for_a_slot_and_go_back_unrun_at_shutdown
        [memory_thread, memory_local, sqlite_thread, sqlite_local];
    prefetch_concurrency => prefetch_never_runs_more_handlers_than_the_concurrency
        [memory_thread, memory_local, sqlite_thread, sqlite_local];
    prefetch_order => a_prefetched_batch_starts_in_priority_order
        [memory_thread, memory_local, sqlite_thread, sqlite_local];
    unique_keys => a_unique_key_returns_the_live_task;
    cancelled_wait => waiting_on_a_cancelled_task_reports_that_it_ended;
    inspection => inspection_lists_and_counts_tasks;
}
