//! OmniQ workers: the [`Task`] and [`BlockingTask`] traits, the handler [`Registry`], and
//! the [`Worker`] that claims leases, runs handlers and reports outcomes.
//!
//! A worker claims as many tasks as it has free slots in one round trip, runs async
//! handlers on tokio tasks and blocking ones on threads, renews its leases by heartbeat,
//! recovers other workers' expired leases, and applies completions in batches. A handler
//! error is retried with backoff while attempts remain; a panic, a timeout, an unknown task
//! name or an undecodable payload fails that attempt (the last two for good), never the
//! worker.
//!
//! ```
//! use std::sync::Arc;
//! use omniq_events::EventLogger;
//! use omniq_memory::{MemoryEventStore, MemoryResultStore, MemoryTaskQueue};
//! use omniq_models::{TaskOptions, TaskSpec};
//! use omniq_serialization::PayloadCodec;
//! use omniq_storage::{ResultStore, TaskQueue};
//! use omniq_workers::{Registry, Worker, WorkerConfig};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let queue = Arc::new(MemoryTaskQueue::new());
//! let results = Arc::new(MemoryResultStore::new());
//! let events = EventLogger::start(Arc::new(MemoryEventStore::new()));
//!
//! let mut registry = Registry::new();
//! registry.register_fn("add", TaskOptions::default(), |(a, b): (i64, i64)| async move {
//!     Ok(a + b)
//! });
//!
//! let codec = PayloadCodec::default();
//! let spec = TaskSpec::new("add", codec.encode(&(2, 3))?, TaskOptions::default(), chrono::Utc::now());
//! let id = spec.id;
//! queue.enqueue(vec![spec]).await?;
//!
//! let worker = Worker::new(queue, results.clone(), events, Arc::new(registry)).start()?;
//! let result = results.wait_for(id, std::time::Duration::from_secs(5)).await?.expect("ran");
//! let sum: i64 = codec.decode(&result.outcome.expect("succeeded"))?;
//! assert_eq!(sum, 5);
//! worker.shutdown().await?;
//! # Ok(())
//! # }
//! ```

mod closure;
mod context;
mod definition;
pub mod limits;
mod live;
mod local;
mod model;
#[cfg(feature = "otel")]
pub mod otel;
mod pool;
mod process;
mod progress;
mod registry;
mod retry;
mod state;
mod task;
mod worker;

pub use closure::{ArgsOnly, AsyncTaskFn, BlockingTaskFn, WithContext};
pub use context::TaskContext;
pub use definition::{AsyncMarker, BlockingMarker, LocalMarker, TaskDefinition};
pub use limits::{Limit, QueueLimits, Rate};
pub use live::LiveRegistry;
pub use model::{LoadError, Model, ModelLoader, ModelRef};
pub use process::{CHILD_ENV, is_process_child};
pub use progress::ProgressError;
pub use registry::{OutputType, Registry};
pub use state::{AppState, FromContext, State};
pub use task::{BlockingTask, LocalTask, Task};
pub use worker::{
    DEFAULT_UNKNOWN_TASK_GRACE, Worker, WorkerConfig, WorkerError, WorkerHandle, WorkerKind,
    WorkerReport, shutdown_signal,
};
