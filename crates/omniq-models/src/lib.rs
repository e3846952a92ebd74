//! Data types shared by every OmniQ crate: tasks, their options and states, results,
//! events, schedules and worker identities. This crate does no I/O.
//!
//! ```
//! use omniq_models::{TaskOptions, TaskState};
//! use std::time::Duration;
//!
//! let options = TaskOptions::default()
//!     .queue("images")
//!     .priority(5)
//!     .max_attempts(5)
//!     .timeout(Duration::from_secs(30));
//! assert_eq!(options.queue, "images");
//! assert!(TaskState::Succeeded.is_terminal());
//! ```

mod error;
mod event;
mod ids;
mod options;
mod record;
mod schedule;
mod state;
mod worker_kind;

pub use error::{TaskError, TaskErrorKind, error_chain};
pub use event::{TaskEvent, TaskEventKind};
pub use ids::{LeaseToken, ParseIdError, TaskId, WorkerId};
pub use options::{Backoff, DependencyVerdict, RunWhen, TaskOptions};
pub use record::{AttemptError, InvalidSpec, SpecExtras, TaskRecord, TaskResult, TaskSpec};
pub use schedule::{MisfirePolicy, Schedule, ScheduleFire, ScheduleTrigger};
pub use state::{TaskState, UnknownState};
pub use worker_kind::{UnknownWorkerKind, WorkerKind};

/// The queue a task goes to when its options name none.
pub const DEFAULT_QUEUE: &str = "default";

/// The metadata label holding a task's limit key ([`TaskOptions::limit_key`]).
pub const LIMIT_KEY_METADATA: &str = "omniq.limit_key";

/// The metadata label holding a task's order key ([`TaskOptions::order_key`]).
pub const ORDER_KEY_METADATA: &str = "omniq.order_key";

/// The metadata label holding the W3C `traceparent` of the span that enqueued a task
/// (the `otel` feature of the facades); the worker's `omniq.task` span continues it.
pub const TRACEPARENT_METADATA: &str = "traceparent";

/// The metadata label holding the W3C `tracestate` that goes with
/// [`TRACEPARENT_METADATA`], when the enqueueing span had one.
pub const TRACESTATE_METADATA: &str = "tracestate";
