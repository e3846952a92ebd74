use std::error::Error as StdError;

use omniq_models::TaskId;

/// What kind of failure a store reported, independent of the backend.
///
/// Workers decide what to do (retry the call, drop a completion, fail a task) from this,
/// without matching driver error types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StoreErrorKind {
    /// The thing asked for does not exist.
    NotFound,
    /// The lease is no longer held.
    LeaseLost,
    /// The backend cannot be reached; the call may succeed later.
    Unavailable,
    /// The request is not valid.
    Invalid,
    /// The backend does not support the operation.
    Unsupported,
    /// Anything else the backend reported.
    Backend,
}

/// An error from a store.
///
/// `Display` never shows URL credentials: backends pass redacted URLs only.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The task does not exist.
    #[error("task {0} not found")]
    TaskNotFound(TaskId),
    /// A parent named in `depends_on` does not exist.
    #[error("unknown parent task {0}")]
    UnknownParent(TaskId),
    /// The schedule does not exist.
    #[error("schedule `{0}` not found")]
    ScheduleNotFound(String),
    /// The request is not valid for this store.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The backend does not support the operation.
    #[error("{backend} does not support {operation}")]
    Unsupported {
        /// The backend.
        backend: &'static str,
        /// The operation.
        operation: &'static str,
    },
    /// The backend cannot be reached.
    #[error("{backend} is unavailable: {source}")]
    Unavailable {
        /// The backend.
        backend: &'static str,
        /// The driver's error.
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
    /// Any other backend error.
    #[error("{backend} error: {source}")]
    Backend {
        /// The backend.
        backend: &'static str,
        /// The driver's error.
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
}

impl StoreError {
    /// The backend-neutral kind.
    pub fn kind(&self) -> StoreErrorKind {
        match self {
            StoreError::TaskNotFound(_) | StoreError::ScheduleNotFound(_) => {
                StoreErrorKind::NotFound
            }
            StoreError::UnknownParent(_) | StoreError::Invalid(_) => StoreErrorKind::Invalid,
            StoreError::Unsupported { .. } => StoreErrorKind::Unsupported,
            StoreError::Unavailable { .. } => StoreErrorKind::Unavailable,
            StoreError::Backend { .. } => StoreErrorKind::Backend,
        }
    }

    /// A backend error wrapping the driver's error.
    pub fn backend(
        backend: &'static str,
        source: impl Into<Box<dyn StdError + Send + Sync>>,
    ) -> Self {
        StoreError::Backend {
            backend,
            source: source.into(),
        }
    }

    /// An unavailable-backend error wrapping the driver's error.
    pub fn unavailable(
        backend: &'static str,
        source: impl Into<Box<dyn StdError + Send + Sync>>,
    ) -> Self {
        StoreError::Unavailable {
            backend,
            source: source.into(),
        }
    }
}
