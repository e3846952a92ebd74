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

mod enqueue;
mod events;
mod handle;
mod omniq;
mod runtime;
mod schedules;
mod worker;

pub use enqueue::EnqueueBuilder;
pub use events::{Events, Subscription};
pub use handle::TaskHandle;
pub use omniq::OmniQ;
pub use schedules::{ScheduleBuilder, Schedules};
pub use worker::{Worker, WorkerBuilder};

pub use omniq_async::{
    Backend, Backoff, BlockingTask, CancelOutcome, ConfigError, Error, ErrorKind, EventQuery,
    MisfirePolicy, PurgeRequest, QueueStats, RedriveTarget, Result, RunWhen, Schedule,
    ScheduleError, ScheduleTrigger, Settings, StoreKind, StoreUrl, Stores, Task, TaskContext,
    TaskDefinition, TaskError, TaskErrorKind, TaskEvent, TaskEventKind, TaskId, TaskOptions,
    TaskQuery, TaskRecord, TaskResult, TaskState, WorkerConfig, WorkerId, WorkerKind, WorkerReport,
};

// Keeps the scheduling guide's examples (async and blocking) compiling.
#[doc = include_str!("../../../docs/scheduling.md")]
#[cfg(doctest)]
pub struct SchedulingDoctests;
