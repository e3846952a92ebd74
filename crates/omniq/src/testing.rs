//! Helpers for testing code that defines and enqueues tasks, without `.await`: run a task
//! inline with the application's state, an in-memory OmniQ, draining its queues with a
//! real worker, and reading back what was enqueued (the async versions are
//! [`omniq_async::testing`]).
//!
//! ```
//! use omniq::testing;
//! use omniq::{TaskError, task};
//!
//! #[task]
//! fn words(text: String) -> Result<usize, TaskError> {
//!     Ok(text.split_whitespace().count())
//! }
//!
//! # fn main() -> omniq::Result<()> {
//! let omniq = testing::memory()?.register_blocking::<words>();
//! assert_eq!(testing::run_blocking(&omniq, words { text: "a b c".into() })?, 3);
//!
//! let handle = omniq.enqueue(words { text: "one two".into() }).submit()?;
//! assert_eq!(testing::enqueued::<words, _>(&omniq)?.len(), 1);
//! testing::drain(&omniq)?;
//! assert_eq!(handle.try_result()?, Some(2));
//! # Ok(())
//! # }
//! ```

use omniq_async::{BlockingTask, Result, Task, TaskDefinition, WorkerReport};
use serde::de::DeserializeOwned;

use crate::OmniQ;
use crate::runtime::Driver;

/// An OmniQ with every store in memory and timings short enough for tests.
///
/// # Errors
/// The runtime cannot start.
pub fn memory() -> Result<OmniQ> {
    let driver = Driver::new()?;
    let inner = driver.call(omniq_async::testing::memory())?;
    Ok(OmniQ { driver, inner })
}

/// Runs an async task once, inline, on the facade's runtime (see
/// [`omniq_async::testing::run`]).
///
/// # Errors
/// As [`omniq_async::testing::run`].
pub fn run<T: Task>(omniq: &OmniQ, task: T) -> Result<T::Output> {
    let inner = omniq.inner.clone();
    omniq
        .driver
        .call(async move { omniq_async::testing::run(&inner, task).await })
}

/// Runs a blocking task once, inline, on this thread (see
/// [`omniq_async::testing::run_blocking`]).
///
/// # Errors
/// As [`omniq_async::testing::run_blocking`].
pub fn run_blocking<T: BlockingTask>(omniq: &OmniQ, task: T) -> Result<T::Output> {
    omniq_async::testing::run_blocking(&omniq.inner, task)
}

/// The tasks of type `T` waiting to run, decoded, oldest first (see
/// [`omniq_async::testing::enqueued`]).
///
/// # Errors
/// As [`omniq_async::testing::enqueued`].
pub fn enqueued<T, M>(omniq: &OmniQ) -> Result<Vec<T>>
where
    T: TaskDefinition<M> + DeserializeOwned + Send,
    M: 'static,
{
    let inner = omniq.inner.clone();
    omniq
        .driver
        .call(async move { omniq_async::testing::enqueued::<T, M>(&inner).await })
}

/// Runs a worker until no task is queued, running or blocked (see
/// [`omniq_async::testing::drain`]).
///
/// # Errors
/// As [`omniq_async::testing::drain`].
pub fn drain(omniq: &OmniQ) -> Result<WorkerReport> {
    let inner = omniq.inner.clone();
    omniq
        .driver
        .call(async move { omniq_async::testing::drain(&inner).await })
}
