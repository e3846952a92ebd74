//! OmniQ for sync Rust: the blocking facade over [`omniq_async`].
//!
//! Every operation of the async client, without `.await`: [`OmniQ`] owns a runtime on
//! threads of its own, runs each call there and waits for it, so it works from `fn main`,
//! from plain threads, and even from inside another tokio runtime.
//!
//! ```
//! use std::time::Duration;
//! use omniq::{OmniQ, Settings};
//!
//! // In-memory stores for the example; `OmniQ::from_env()` gives the SQLite default.
//! let omniq = OmniQ::from_settings(Settings::memory())?
//!     .register_fn("add", |(a, b): (i64, i64)| Ok(a + b));
//! let handle = omniq.enqueue_by_name::<i64>("add", (2, 3)).submit()?;
//! let worker = omniq.worker().concurrency(4).start()?;
//! assert_eq!(handle.wait(Duration::from_secs(10))?, 5);
//! worker.shutdown()?;
//! # Ok::<(), omniq::Error>(())
//! ```
//!
//! # Feature flags
//!
//! Forwarded to `omniq-async`: `sqlite` (default), `memory` (default).

#![cfg_attr(docsrs, feature(doc_cfg))]

mod batch;
mod enqueue;
mod events;
mod handle;
mod omniq;
mod runtime;
mod schedules;
pub mod testing;
mod worker;

pub use batch::BatchBuilder;
pub use enqueue::EnqueueBuilder;
pub use events::{Events, Subscription};
pub use handle::TaskHandle;
pub use omniq::OmniQ;
pub use schedules::{ScheduleBuilder, Schedules};
pub use worker::{WorkerBuilder, WorkerHandle};

pub use omniq_async::{
    AppState, ArgsOnly, BATCH_METADATA_KEY, Backend, Backoff, Batch, BatchStatus, BlockingTask,
    BlockingTaskFn, CancelOutcome, Capabilities, Capability, ConfigError, Error, ErrorKind,
    EventQuery, FromContext, LIMIT_KEY_METADATA, Limit, LoadError, LocalTask, MisfirePolicy, Model,
    ModelLoader, ModelRef, ORDER_KEY_METADATA, ProgressError, PurgeRequest, QueueStats,
    RedriveTarget, Result, RunWhen, Schedule, ScheduleError, ScheduleTrigger, Settings, State,
    StoreKind, StoreUrl, Stores, TRACEPARENT_METADATA, TRACESTATE_METADATA, Task, TaskContext,
    TaskDefinition, TaskError, TaskErrorKind, TaskEvent, TaskEventKind, TaskId, TaskOptions,
    TaskQuery, TaskRecord, TaskResult, TaskState, WithContext, WorkerConfig, WorkerId, WorkerKind,
    WorkerReport, is_process_child,
};

/// Turns a plain `fn` (a blocking task) or `async fn` into a task type of the same name
/// whose fields are its arguments (see `omniq_async::task` for the options).
///
/// ```
/// use omniq::{TaskContext, TaskError, task};
///
/// #[task(queue = "reports")]
/// fn word_count(text: String, ctx: TaskContext) -> Result<usize, TaskError> {
///     let _ = ctx.attempt();
///     Ok(text.split_whitespace().count())
/// }
///
/// # fn demo(omniq: omniq::OmniQ) -> omniq::Result<()> {
/// let omniq = omniq.register_blocking::<word_count>();
/// let handle = omniq.enqueue(word_count { text: "a b c".into() }).submit()?;
/// # Ok(()) }
/// ```
pub use omniq_macros::task_blocking_facade as task;

#[doc(hidden)]
pub mod __private {
    pub use serde;
}

/// What most code that defines, enqueues and runs tasks needs, in one import:
/// `use omniq::prelude::*;`.
pub mod prelude {
    pub use crate::{
        Backoff, BlockingTask, ErrorKind, LocalTask, OmniQ, RunWhen, Settings, State, Task,
        TaskContext, TaskError, TaskHandle, TaskId, TaskOptions, TaskState, WorkerKind, task,
    };
}

// Keeps the scheduling guide's examples (async and blocking) compiling.
#[doc = include_str!("../../../docs/scheduling.md")]
#[cfg(doctest)]
pub struct SchedulingDoctests;
