use std::time::Duration;

use omniq_config::{Backend, ConfigError};
use omniq_models::{TaskError, TaskId, TaskState};
use omniq_serialization::SerializationError;
use omniq_storage::{StoreError, StoreErrorKind};
use omniq_workers::WorkerError;

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong using OmniQ.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A payload or result could not be encoded or decoded (or is too large).
    #[error(transparent)]
    Serialization(#[from] SerializationError),
    /// A worker could not start or stop.
    #[error(transparent)]
    Worker(#[from] WorkerError),
    /// The configuration picks a backend this build does not include: its cargo feature
    /// ([`Backend::feature`]) is off.
    #[error(
        "`{key}` selects the {backend} backend, which this build of OmniQ does not include \
         (enable the cargo feature `{feature}` of omniq / omniq-async)",
        feature = .backend.feature()
    )]
    BackendNotIncluded {
        /// The settings key.
        key: &'static str,
        /// The backend.
        backend: Backend,
    },
    /// The configuration picks a backend whose URL scheme is reserved but which OmniQ does
    /// not have yet.
    #[error("`{key}` selects the {backend} backend, which OmniQ does not implement yet")]
    BackendNotImplemented {
        /// The settings key.
        key: &'static str,
        /// The backend.
        backend: Backend,
    },
    /// The task failed for good; this is its final error.
    #[error("task {task_id} failed: {error}")]
    TaskFailed {
        /// The task.
        task_id: TaskId,
        /// Its final error.
        error: TaskError,
    },
    /// The task ended without a result (cancelled or expired).
    #[error("task {task_id} ended {state} without a result")]
    TaskEnded {
        /// The task.
        task_id: TaskId,
        /// Its final state.
        state: TaskState,
    },
    /// The task does not exist.
    #[error("task {0} not found")]
    TaskNotFound(TaskId),
    /// A schedule cannot work (invalid cron expression, unknown time zone, ...).
    #[error(transparent)]
    Schedule(#[from] omniq_scheduler::ScheduleError),
    /// The schedule does not exist.
    #[error("schedule `{0}` not found")]
    ScheduleNotFound(String),
    /// The blocking facade's runtime could not be started.
    #[error("cannot start the OmniQ runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// The OmniQ instance (its runtime, in the blocking facade) has shut down.
    #[error("OmniQ has shut down")]
    Closed,
    /// The result type a caller asked for is not the type the task registered under that
    /// name returns.
    #[error(
        "task `{task}` returns `{registered}`, not `{requested}`; ask for `{registered}`, \
         or read the result as another type with `handle::<T>(id)`"
    )]
    ResultType {
        /// The task's name.
        task: String,
        /// The type its registered handler returns.
        registered: &'static str,
        /// The type asked for.
        requested: &'static str,
    },
    /// [`testing::drain`](crate::testing::drain) found work left on these queues after
    /// waiting this long.
    #[error("queues {queues:?} still have work after {waited:?}")]
    NotDrained {
        /// How long it waited.
        waited: Duration,
        /// The queues with tasks queued, running or blocked.
        queues: Vec<String>,
    },
    /// The metrics endpoint could not start (another `metrics` recorder is installed, or
    /// its listener failed).
    #[error("cannot serve metrics: {0}")]
    Metrics(String),
    /// Waiting for a result timed out; the task may still finish.
    #[error("no result for task {task_id} within {waited:?}")]
    Timeout {
        /// The task.
        task_id: TaskId,
        /// How long the caller waited.
        waited: Duration,
    },
}

/// A coarse classification of [`Error`], for deciding what to do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Fix the configuration or the input.
    Invalid,
    /// A backend is unreachable; retrying later may work.
    Unavailable,
    /// The task failed or ended without a result.
    TaskFailed,
    /// Waiting timed out.
    Timeout,
    /// The thing asked for does not exist.
    NotFound,
    /// The backend does not support the operation (see
    /// [`AsyncOmniQ::capabilities`](crate::AsyncOmniQ::capabilities)); choose a backend
    /// that does for this store.
    Unsupported,
    /// Anything else.
    Other,
}

impl Error {
    /// The kind of error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Config(_)
            | Error::Serialization(_)
            | Error::BackendNotIncluded { .. }
            | Error::BackendNotImplemented { .. }
            | Error::Schedule(_)
            | Error::ResultType { .. } => ErrorKind::Invalid,
            Error::Store(err) => match err.kind() {
                StoreErrorKind::Unavailable => ErrorKind::Unavailable,
                StoreErrorKind::NotFound => ErrorKind::NotFound,
                StoreErrorKind::Invalid => ErrorKind::Invalid,
                StoreErrorKind::Unsupported => ErrorKind::Unsupported,
                _ => ErrorKind::Other,
            },
            Error::Worker(_) | Error::Closed | Error::Runtime(_) | Error::Metrics(_) => {
                ErrorKind::Other
            }
            Error::TaskFailed { .. } | Error::TaskEnded { .. } => ErrorKind::TaskFailed,
            Error::TaskNotFound(_) | Error::ScheduleNotFound(_) => ErrorKind::NotFound,
            Error::Timeout { .. } | Error::NotDrained { .. } => ErrorKind::Timeout,
        }
    }
}
