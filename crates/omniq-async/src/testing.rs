//! Helpers for testing code that defines and enqueues tasks: run a task inline with the
//! application's state, an in-memory OmniQ, draining its queues with a real worker, and
//! reading back what was enqueued.
//!
//! ```
//! use omniq_async::testing;
//! use omniq_async::{State, TaskError, task};
//!
//! struct Tax(u64);
//!
//! #[task]
//! async fn total(cents: u64, tax: State<Tax>) -> Result<u64, TaskError> {
//!     Ok(cents + cents * tax.0 / 100)
//! }
//!
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let omniq = testing::memory().await?.state(Tax(20)).register::<total>();
//!
//! // Inline: no queue, no worker; the payload still goes through the codec.
//! assert_eq!(testing::run(&omniq, total { cents: 100 }).await?, 120);
//!
//! // Through the queue: enqueue, look at what is waiting, drain it with a worker.
//! let handle = omniq.enqueue(total { cents: 50 }).await?;
//! let waiting: Vec<total> = testing::enqueued(&omniq).await?;
//! assert_eq!(waiting.len(), 1);
//! testing::drain(&omniq).await?;
//! assert_eq!(handle.try_result().await?, Some(60));
//! # Ok(())
//! # }
//! ```

use std::time::Duration;

use omniq_models::TaskState;
use omniq_storage::TaskQuery;
use omniq_workers::{TaskContext, TaskDefinition, WorkerReport};
use serde::de::DeserializeOwned;

use crate::{AsyncOmniQ, Error, Result, Settings};

/// How long [`drain`] waits for the queues to empty before it gives up.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// How often [`drain`] looks at the queues.
const DRAIN_POLL: Duration = Duration::from_millis(5);

/// An OmniQ with every store in memory and timings short enough for tests: nothing to
/// clean up, nothing shared with other tests.
///
/// # Errors
/// Never in practice (the memory backend has nothing to connect to).
pub async fn memory() -> Result<AsyncOmniQ> {
    let mut settings = Settings::memory();
    settings.poll_interval = Duration::from_millis(10);
    settings.heartbeat = Duration::from_millis(500);
    settings.lease = Duration::from_secs(5);
    settings.shutdown_grace = Duration::from_secs(5);
    AsyncOmniQ::from_settings(settings).await
}

/// Runs `task` once, inline: no queue, no worker. Its payload makes the round trip
/// through the codec, as it would through a store; its context is attempt 1 with the
/// state registered on `omniq` and its result store.
///
/// # Errors
/// [`Error::TaskFailed`] with the task's error, or a codec error when the task does not
/// survive the round trip.
pub async fn run<T>(omniq: &AsyncOmniQ, task: T) -> Result<T::Output>
where
    T: omniq_workers::Task,
{
    let (decoded, ctx) = prepare::<T, _>(omniq, &task)?;
    let task_id = ctx.task_id();
    decoded
        .run(ctx)
        .await
        .map_err(|error| Error::TaskFailed { task_id, error })
}

/// Runs a blocking task once, inline, as [`run`] does an async one.
///
/// # Errors
/// As [`run`].
pub fn run_blocking<T>(omniq: &AsyncOmniQ, task: T) -> Result<T::Output>
where
    T: omniq_workers::BlockingTask,
{
    let (decoded, ctx) = prepare::<T, _>(omniq, &task)?;
    let task_id = ctx.task_id();
    decoded
        .run(ctx)
        .map_err(|error| Error::TaskFailed { task_id, error })
}

fn prepare<T, M>(omniq: &AsyncOmniQ, task: &T) -> Result<(T, TaskContext)>
where
    T: TaskDefinition<M> + DeserializeOwned,
{
    let codec = omniq.inner.codec;
    let decoded: T = codec.decode(&codec.encode(task)?)?;
    let options = omniq.resolve(T::default_options());
    let ctx = TaskContext::detached(
        T::NAME,
        options.queue,
        options.max_attempts.unwrap_or(1),
        omniq.inner.stores.results.clone(),
        omniq
            .inner
            .registry
            .read(|registry| registry.state().clone()),
    );
    Ok((decoded, ctx))
}

/// The tasks of type `T` waiting to run (queued, scheduled or blocked), decoded, oldest
/// first: what the code under test enqueued.
///
/// # Errors
/// A store error, or a payload that does not decode as `T`.
pub async fn enqueued<T, M>(omniq: &AsyncOmniQ) -> Result<Vec<T>>
where
    T: TaskDefinition<M> + DeserializeOwned,
{
    let waiting = [TaskState::Queued, TaskState::Scheduled, TaskState::Blocked];
    let mut found = Vec::new();
    let mut offset = 0;
    loop {
        let page = omniq
            .list_tasks(
                TaskQuery::new()
                    .states(waiting)
                    .offset(offset)
                    .limit(omniq_storage::MAX_LIST_LIMIT),
            )
            .await?;
        offset += page.len();
        let last_page = page.len() < omniq_storage::MAX_LIST_LIMIT;
        found.extend(
            page.into_iter()
                .filter(|record| record.spec.name == T::NAME),
        );
        if last_page {
            break;
        }
    }
    // Ids are time-ordered (UUID v7): oldest first.
    found.sort_by_key(|record| record.spec.id);
    let codec = omniq.inner.codec;
    found
        .iter()
        .map(|record| Ok(codec.decode(&record.spec.payload)?))
        .collect()
}

/// Runs a worker until no task is queued, running or blocked on any queue, then stops it
/// and returns its report. Tasks scheduled for later (delays, retries waiting out their
/// backoff) are left; tasks the drained ones enqueue are run too, on whatever queue.
///
/// # Errors
/// [`Error::NotDrained`] when work is left after [`DRAIN_TIMEOUT`], a worker that cannot
/// start, or a store error.
pub async fn drain(omniq: &AsyncOmniQ) -> Result<WorkerReport> {
    let deadline = tokio::time::Instant::now() + DRAIN_TIMEOUT;
    let mut report = WorkerReport::default();
    let mut worker: Option<(Vec<String>, omniq_workers::WorkerHandle)> = None;
    loop {
        let busy: Vec<String> = omniq
            .queues()
            .await?
            .into_iter()
            .filter(|stats| {
                [TaskState::Queued, TaskState::Running, TaskState::Blocked]
                    .iter()
                    .any(|state| stats.count(*state) > 0)
            })
            .map(|stats| stats.queue)
            .collect();
        let covered = worker
            .as_ref()
            .is_some_and(|(queues, _)| busy.iter().all(|queue| queues.contains(queue)));
        if busy.is_empty() || !covered || tokio::time::Instant::now() >= deadline {
            // Done, or work on a queue the worker does not consume: stop it (its
            // report adds up) and start one on every busy queue.
            if let Some((_, running)) = worker.take() {
                report = add(report, running.shutdown().await?);
            }
            if busy.is_empty() {
                return Ok(report);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::NotDrained {
                    waited: DRAIN_TIMEOUT,
                    queues: busy,
                });
            }
            let started = omniq
                .worker()
                .queues(busy.clone())
                .scheduler(false)
                .start()?;
            worker = Some((busy, started));
        }
        tokio::time::sleep(DRAIN_POLL).await;
    }
}

fn add(a: WorkerReport, b: WorkerReport) -> WorkerReport {
    WorkerReport {
        succeeded: a.succeeded + b.succeeded,
        retried: a.retried + b.retried,
        dead_lettered: a.dead_lettered + b.dead_lettered,
        released: a.released + b.released,
        snoozed: a.snoozed + b.snoozed,
        lease_lost: a.lease_lost + b.lease_lost,
        cancelled: a.cancelled + b.cancelled,
    }
}
