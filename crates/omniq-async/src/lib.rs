//! OmniQ for async Rust: a task queue that keeps tasks, results, events and schedules on
//! the backends you pick, and never loses a task.
//!
//! Register task types, enqueue them from anywhere, run workers anywhere, wait for typed
//! results. With no configuration every store is an embedded SQLite file under
//! `./.omniq`; set `OMNIQ_URL` to move them all to another backend, or
//! `OMNIQ_TASK_QUEUE_URL` and friends (or [`Settings`]) to move one store.
//!
//! ```
//! use std::time::Duration;
//! use omniq_async::{AsyncOmniQ, Settings, Task, TaskContext, TaskError};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Greet { name: String }
//!
//! impl Task for Greet {
//!     const NAME: &'static str = "greet";
//!     type Output = String;
//!     async fn run(self, _ctx: TaskContext) -> Result<String, TaskError> {
//!         Ok(format!("hello, {}", self.name))
//!     }
//! }
//!
//! # #[tokio::main]
//! # async fn main() -> omniq_async::Result<()> {
//! // In-memory stores for the example; `AsyncOmniQ::from_env()` gives the SQLite default.
//! let omniq = AsyncOmniQ::from_settings(Settings::memory()).await?.register::<Greet>();
//! let handle = omniq.enqueue(Greet { name: "Ada".into() }).priority(5).await?;
//! let worker = omniq.worker().concurrency(8).start()?;
//! assert_eq!(handle.wait(Duration::from_secs(10)).await?, "hello, Ada");
//! worker.shutdown().await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Feature flags
//!
//! | feature | backend | default |
//! |---|---|---|
//! | `sqlite` | `sqlite://` (embedded, the default store) | yes |
//! | `memory` | `memory://` (in-process) | yes |
//! | `redis` | `redis://`, `rediss://` (`?prefix=` sets the key prefix) | no |
//! | `postgres` | `postgres://`, `postgresql://` (`?schema=` sets the schema) | no |
//! | `mysql` | `mysql://`, `mariadb://` | no |
//! | `nats` | `nats://`, `tls://` (`?prefix=` sets the streams' and buckets' prefix) | no |
//! | `file` | `file://` (a local directory), `file+memory://`, `s3://`, `az://`, `gs://` (object stores; credentials from the environment) | no |
//!
//! | `amqp` | `amqp://`, `amqps://` (RabbitMQ; the task queue only) | no |
//! | `sqs` | `sqs://REGION` (Amazon SQS; the task queue only) | no |
//!
//! A URL whose backend is not compiled in is refused with
//! [`Error::BackendNotIncluded`] (which names the feature to enable); it names the
//! settings key. A broker (`amqp://`, `sqs://`) holds the task queue only: settings that
//! put results, events or schedules on one are refused when they are built.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod batch;
mod enqueue;
mod error;
mod events;
mod gauges;
mod handle;
mod migrations;
mod omniq;
mod pause;
#[cfg(feature = "prometheus")]
mod prometheus;
mod schedules;
mod stores;
pub mod testing;
mod worker;

pub use batch::{BATCH_METADATA_KEY, Batch, BatchBuilder, BatchStatus};
pub use enqueue::EnqueueBuilder;
pub use error::{Error, ErrorKind, Result};
pub use events::Events;
pub use gauges::QueueGauges;
pub use handle::TaskHandle;
pub use migrations::{SchemaReport, migrate, schema_status};
pub use omniq::AsyncOmniQ;
#[cfg(feature = "prometheus")]
pub use prometheus::{MetricsEndpoint, PrometheusRecorder};
pub use schedules::{ScheduleBuilder, Schedules};
pub use stores::Stores;
pub use worker::WorkerBuilder;

pub use omniq_config::{Backend, ConfigError, Settings, StoreKind, StoreUrl};
pub use omniq_events::EventSubscription;
pub use omniq_models::{
    Backoff, LIMIT_KEY_METADATA, MisfirePolicy, ORDER_KEY_METADATA, RunWhen, Schedule,
    ScheduleTrigger, TRACEPARENT_METADATA, TRACESTATE_METADATA, TaskError, TaskErrorKind,
    TaskEvent, TaskEventKind, TaskId, TaskOptions, TaskRecord, TaskResult, TaskState, WorkerId,
};
pub use omniq_scheduler::ScheduleError;
pub use omniq_storage::{
    CancelOutcome, Capabilities, Capability, EventQuery, Migration, MigrationStatus, PurgeRequest,
    QueueStats, RedriveTarget, TaskQuery,
};
pub use omniq_workers::{
    AppState, ArgsOnly, AsyncTaskFn, BlockingTask, BlockingTaskFn, FromContext, Limit, LoadError,
    LocalTask, Model, ModelLoader, ModelRef, ProgressError, QueueLimits, Rate, State, Task,
    TaskContext, TaskDefinition, WithContext, WorkerConfig, WorkerHandle, WorkerKind, WorkerReport,
    is_process_child, shutdown_signal,
};

/// Turns a plain `async fn` (or a plain `fn`, a blocking task) into a task type of the
/// same name whose fields are its arguments; a `TaskContext` argument is the attempt's
/// context. Options are `TaskOptions` builder calls: `queue`, `max_attempts`, `priority`,
/// `timeout`, `backoff`, `ttl`, `delay`, `unique_key`, `unique_for`; `name` overrides the
/// task's name (default: module path and function name). It also generates
/// `<name>::enqueue(&omniq, args…)`, which returns the enqueue builder; `local` makes a task whose future
/// need not be `Send` (a [`LocalTask`], run on a local worker thread). An argument of type
/// [`State<T>`] is the application value registered with
/// [`AsyncOmniQ::state`], not part of the payload.
///
/// ```
/// use omniq_async::{State, TaskError, task};
///
/// struct Rates { eur: f64 }
///
/// #[task(queue = "billing")]
/// async fn convert(cents: u64, rates: State<Rates>) -> Result<f64, TaskError> {
///     Ok(cents as f64 * rates.eur / 100.0)
/// }
///
/// # async fn demo(omniq: omniq_async::AsyncOmniQ) -> omniq_async::Result<()> {
/// let omniq = omniq.state(Rates { eur: 0.92 }).register::<convert>();
/// omniq.enqueue(convert { cents: 1250 }).await?;
/// # Ok(()) }
/// ```
///
/// ```
/// use omniq_async::{TaskContext, TaskError, task};
///
/// #[task(queue = "images", max_attempts = 5)]
/// async fn resize(path: String, width: u32, ctx: TaskContext) -> Result<String, TaskError> {
///     Ok(format!("{path} at {width}px, attempt {}", ctx.attempt()))
/// }
///
/// # async fn demo(omniq: omniq_async::AsyncOmniQ) -> omniq_async::Result<()> {
/// let omniq = omniq.register::<resize>();
/// let handle = omniq.enqueue(resize { path: "cat.png".into(), width: 300 }).await?;
/// // The same through the generated helper, which takes the arguments in order:
/// let handle = resize::enqueue(&omniq, "cat.png".into(), 300).priority(5).await?;
/// # Ok(()) }
/// ```
pub use omniq_macros::task_async as task;

#[doc(hidden)]
pub mod __private {
    pub use serde;
}

/// What most code that defines, enqueues and runs tasks needs, in one import:
/// `use omniq_async::prelude::*;`.
pub mod prelude {
    pub use crate::{
        AsyncOmniQ, Backoff, BlockingTask, ErrorKind, LocalTask, RunWhen, Settings, State, Task,
        TaskContext, TaskError, TaskHandle, TaskId, TaskOptions, TaskState, WorkerKind, task,
    };
}

// Keeps the README's example compiling.
#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

/// The lower layers, for integrators writing backends or custom workers.
pub mod layers {
    pub use omniq_config as config;
    pub use omniq_events as events;
    pub use omniq_models as models;
    pub use omniq_serialization as serialization;
    pub use omniq_storage as storage;
    pub use omniq_workers as workers;
}
