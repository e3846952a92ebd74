//! The task API: application state reached by type, `?` on ordinary errors, backoff
//! constructors, the prelude.

mod support;

use std::time::Duration;

use omniq_async::prelude::*;
use omniq_async::{Error, TaskEventKind};
use serde::{Deserialize, Serialize};
use support::WAIT;

/// Application state a task reads: what a database pool or an HTTP client would be.
struct Prices {
    per_item: u64,
}

#[derive(Serialize, Deserialize)]
struct Quote {
    items: u64,
}

impl Task for Quote {
    const NAME: &'static str = "test.quote";
    type Output = u64;
    async fn run(self, ctx: TaskContext) -> Result<u64, TaskError> {
        let prices = ctx.state::<Prices>()?;
        Ok(self.items * prices.per_item)
    }
}

#[derive(Serialize, Deserialize)]
struct ParseCount {
    text: String,
}

impl Task for ParseCount {
    const NAME: &'static str = "test.parse_count";
    type Output = u32;
    fn options() -> TaskOptions {
        TaskOptions::default().max_attempts(1)
    }
    async fn run(self, _ctx: TaskContext) -> Result<u32, TaskError> {
        // `?` on a std error: no map_err.
        Ok(self.text.parse::<u32>()?)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_reaches_the_state_the_application_registered() {
    let harness = support::memory(|_| {}).await;
    let omniq = harness
        .omniq
        .clone()
        .state(Prices { per_item: 7 })
        .register::<Quote>();
    let worker = omniq.worker().start().expect("start");
    let quote = omniq.enqueue(Quote { items: 6 }).await.expect("enqueue");
    assert_eq!(quote.wait(WAIT).await.expect("result"), 42);
    worker.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_state_fails_the_attempt_with_an_error_that_names_the_type() {
    let harness = support::memory(|_| {}).await;
    let omniq = harness.omniq.clone().register::<Quote>();
    let worker = omniq.worker().start().expect("start");
    let quote = omniq
        .enqueue(Quote { items: 1 })
        .options(TaskOptions::default().max_attempts(1))
        .await
        .expect("enqueue");
    let err = quote.wait(WAIT).await.expect_err("no state registered");
    assert_eq!(err.kind(), ErrorKind::TaskFailed, "{err}");
    assert!(err.to_string().contains("Prices"), "{err}");
    assert!(err.to_string().contains("omniq.state"), "{err}");
    worker.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn question_mark_on_a_std_error_fails_the_attempt_with_its_message() {
    let harness = support::sqlite(|_| {}).await;
    let omniq = harness.omniq.clone().register::<ParseCount>();
    let worker = omniq.worker().start().expect("start");
    let good = omniq
        .enqueue(ParseCount { text: "12".into() })
        .await
        .expect("enqueue");
    let bad = omniq
        .enqueue(ParseCount {
            text: "twelve".into(),
        })
        .await
        .expect("enqueue");
    assert_eq!(good.wait(WAIT).await.expect("result"), 12);
    let err = bad.wait(WAIT).await.expect_err("not a number");
    assert!(
        err.to_string().contains("invalid digit found in string"),
        "{err}"
    );
    let record = omniq.task(bad.id()).await.expect("get").expect("stored");
    assert_eq!(record.state, TaskState::Failed);
    worker.shutdown().await.expect("shutdown");
}

#[test]
fn an_error_and_its_sources_become_one_message() {
    #[derive(Debug)]
    struct Outer(std::io::Error);
    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("cannot load the catalogue")
        }
    }
    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }
    let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
    let error: TaskError = Outer(io).into();
    assert!(error.retryable);
    assert_eq!(
        error.message,
        "cannot load the catalogue: connection refused"
    );
}

#[test]
fn backoff_constructors_build_the_policies() {
    assert_eq!(
        Backoff::fixed(Duration::from_secs(5)).delay(3, 0.9),
        Duration::from_secs(5)
    );
    let exponential = Backoff::exponential(Duration::from_secs(1))
        .max(Duration::from_secs(4))
        .jitter(0.0);
    let delays: Vec<Duration> = (1..=4).map(|n| exponential.delay(n, 0.5)).collect();
    assert_eq!(
        delays,
        [1, 2, 4, 4].map(Duration::from_secs).to_vec(),
        "doubling from the base, capped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closures_registered_by_name_can_take_the_context_and_reach_state() {
    let harness = support::memory(|_| {}).await;
    let omniq = harness
        .omniq
        .clone()
        .state(Prices { per_item: 3 })
        .register_fn("test.priced", |items: u64, ctx: TaskContext| async move {
            Ok(items * ctx.state::<Prices>()?.per_item + u64::from(ctx.attempt()))
        })
        .register_blocking_fn("test.queue_of", |(): (), ctx: TaskContext| {
            Ok(ctx.queue().to_owned())
        });
    let worker = omniq.worker().start().expect("start");
    let priced = omniq
        .enqueue_by_name::<u64>("test.priced", 5_u64)
        .await
        .expect("enqueue");
    let queue = omniq
        .enqueue_by_name::<String>("test.queue_of", ())
        .await
        .expect("enqueue");
    assert_eq!(
        priced.wait(WAIT).await.expect("result"),
        16,
        "5 × 3 + attempt 1"
    );
    assert_eq!(queue.wait(WAIT).await.expect("result"), "default");
    worker.shutdown().await.expect("shutdown");
}

/// A whole task definition: the attribute on a plain async fn.
#[task(queue = "macro-images", max_attempts = 2)]
async fn resize(path: String, width: u32, ctx: TaskContext) -> Result<String, TaskError> {
    let prices = ctx.state::<Prices>()?;
    Ok(format!("{path}@{width}:{}", prices.per_item))
}

/// A blocking task from a plain fn, with its own name and no context.
#[task(name = "macro.checksum")]
fn checksum(bytes: Vec<u8>) -> Result<u32, TaskError> {
    Ok(bytes.iter().map(|b| u32::from(*b)).sum())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_task_attribute_defines_async_and_blocking_tasks() {
    assert_eq!(
        <resize as Task>::NAME,
        concat!(module_path!(), "::resize"),
        "the default name is the module path and the function's"
    );
    assert_eq!(<checksum as BlockingTask>::NAME, "macro.checksum");
    let options = <resize as Task>::options();
    assert_eq!(options.queue, "macro-images");
    assert_eq!(options.max_attempts, Some(2));

    let harness = support::sqlite(|_| {}).await;
    let omniq = harness
        .omniq
        .clone()
        .state(Prices { per_item: 9 })
        .register::<resize>()
        .register_blocking::<checksum>();
    let worker = omniq
        .worker()
        .queues(["default", "macro-images"])
        .start()
        .expect("start");
    let resized = omniq
        .enqueue(resize {
            path: "cat.png".into(),
            width: 300,
        })
        .await
        .expect("enqueue");
    let summed = omniq
        .enqueue(checksum {
            bytes: vec![1, 2, 3],
        })
        .await
        .expect("enqueue");
    assert_eq!(resized.wait(WAIT).await.expect("result"), "cat.png@300:9");
    // The generated helper takes the arguments in order and returns the builder.
    let helped = resize::enqueue(&omniq, "dog.png".into(), 100)
        .priority(3)
        .await
        .expect("enqueue");
    assert_eq!(helped.wait(WAIT).await.expect("result"), "dog.png@100:9");
    assert_eq!(summed.wait(WAIT).await.expect("result"), 6);
    // The function stays a function.
    assert_eq!(checksum(vec![4, 5]).expect("direct call"), 9);
    worker.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_registered_after_the_worker_started_is_run() {
    let harness = support::sqlite(|_| {}).await;
    let omniq = harness.omniq.clone().register::<ParseCount>();
    let worker = omniq.worker().start().expect("start");
    // Registered on the running application: the worker claims it from its next claim.
    let omniq = omniq.state(Prices { per_item: 2 }).register::<Quote>();
    let quote = omniq.enqueue(Quote { items: 21 }).await.expect("enqueue");
    assert_eq!(quote.wait(WAIT).await.expect("result"), 42);
    worker.shutdown().await.expect("shutdown");
}

/// Counts the runs of the snoozing task.
struct Runs(std::sync::atomic::AtomicU32);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snooze_runs_the_task_again_without_spending_an_attempt() {
    let harness = support::sqlite(|_| {}).await;
    let omniq = harness
        .omniq
        .clone()
        .state(Runs(std::sync::atomic::AtomicU32::new(0)))
        .register_fn("test.snoozer", |(): (), ctx: TaskContext| async move {
            let runs = ctx.state::<Runs>()?;
            let run = runs.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            if run < 3 {
                return Err(TaskError::snooze(Duration::from_millis(20)));
            }
            Ok((run, ctx.attempt()))
        });
    let worker = omniq.worker().start().expect("start");
    // One attempt allowed: a snooze that counted would dead-letter the task.
    let handle = omniq
        .enqueue_by_name::<(u32, u32)>("test.snoozer", ())
        .options(TaskOptions::default().max_attempts(1))
        .await
        .expect("enqueue");
    assert_eq!(
        handle.wait(WAIT).await.expect("result"),
        (3, 1),
        "the third run is still the first attempt"
    );
    let record = omniq.task(handle.id()).await.expect("get").expect("exists");
    assert!(record.errors.is_empty(), "{:?}", record.errors);
    omniq.events().flush().await;
    let events = omniq.events().for_task(handle.id()).await.expect("events");
    let snoozes = events
        .iter()
        .filter(|e| e.kind == TaskEventKind::Snoozed)
        .count();
    assert_eq!(snoozes, 2, "{events:?}");
    let report = worker.shutdown().await.expect("shutdown");
    assert_eq!(report.snoozed, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_type_that_is_not_the_registered_one_is_refused_with_both_names() {
    let harness = support::memory(|_| {}).await;
    let omniq = harness
        .omniq
        .clone()
        .register_fn("test.double", |n: u64| async move { Ok(n * 2) })
        .register::<Quote>()
        .state(Prices { per_item: 1 });
    // By name: refused at enqueue, before anything is stored.
    let err = omniq
        .enqueue_by_name::<String>("test.double", 4_u64)
        .await
        .expect_err("u64, not String");
    assert_eq!(err.kind(), ErrorKind::Invalid, "{err}");
    assert!(err.to_string().contains("`u64`"), "{err}");
    assert!(err.to_string().contains("String"), "{err}");
    assert!(omniq.queues().await.expect("queues").is_empty());

    // By id: a result read as the wrong type names the type the task returns.
    let worker = omniq.worker().start().expect("start");
    let quote = omniq.enqueue(Quote { items: 3 }).await.expect("enqueue");
    quote.wait(WAIT).await.expect("result");
    let err = omniq
        .handle::<Vec<String>>(quote.id())
        .wait(WAIT)
        .await
        .expect_err("u64, not a list");
    assert!(matches!(err, Error::ResultType { .. }), "{err}");
    assert!(err.to_string().contains("`u64`"), "{err}");
    worker.shutdown().await.expect("shutdown");
}

/// State as an argument: filled from `omniq.state`, not part of the payload.
#[task]
async fn priced(items: u64, prices: omniq_async::State<Prices>) -> Result<u64, TaskError> {
    Ok(items * prices.per_item)
}

#[task]
fn priced_blocking(items: u64, prices: State<Prices>, ctx: TaskContext) -> Result<u64, TaskError> {
    Ok(items * prices.per_item + u64::from(ctx.attempt()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_arguments_are_filled_from_the_registered_state() {
    let harness = support::memory(|_| {}).await;
    let omniq = harness
        .omniq
        .clone()
        .state(Prices { per_item: 5 })
        .register::<priced>()
        .register_blocking::<priced_blocking>();
    let worker = omniq.worker().start().expect("start");
    // The payload holds `items` only.
    let a = omniq.enqueue(priced { items: 3 }).await.expect("enqueue");
    let b = omniq
        .enqueue(priced_blocking { items: 3 })
        .await
        .expect("enqueue");
    assert_eq!(a.wait(WAIT).await.expect("result"), 15);
    assert_eq!(b.wait(WAIT).await.expect("result"), 16);
    worker.shutdown().await.expect("shutdown");
}
