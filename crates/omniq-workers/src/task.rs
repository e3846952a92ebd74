use std::future::Future;

use omniq_models::{TaskError, TaskOptions};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::TaskContext;

/// A task type run by an async handler.
///
/// The value is the task's argument: it is serialized into the payload at enqueue and
/// deserialized on the worker, which finds the handler by [`Task::NAME`], never by the
/// payload. A payload is data; it can never make a worker run code it did not register.
///
/// ```
/// use omniq_models::{TaskError, TaskOptions};
/// use omniq_workers::{Task, TaskContext};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct Resize { path: String, width: u32 }
///
/// impl Task for Resize {
///     const NAME: &'static str = "images.resize";
///     type Output = String;
///
///     fn options() -> TaskOptions {
///         TaskOptions::default().queue("images").max_attempts(5)
///     }
///
///     async fn run(self, _ctx: TaskContext) -> Result<String, TaskError> {
///         Ok(format!("{}@{}", self.path, self.width))
///     }
/// }
/// ```
pub trait Task: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The name the handler is registered and found under. Keep it stable: queued tasks
    /// refer to it.
    const NAME: &'static str;

    /// What the task returns; stored in the result store.
    type Output: Serialize + DeserializeOwned + Send + 'static;

    /// Default options for tasks of this type; per-enqueue options override them.
    fn options() -> TaskOptions {
        TaskOptions::default()
    }

    /// Runs one attempt.
    fn run(self, ctx: TaskContext) -> impl Future<Output = Result<Self::Output, TaskError>> + Send;

    /// Whether a failed attempt should be retried (attempts permitting). The default
    /// follows [`TaskError::retryable`].
    fn should_retry(&self, error: &TaskError) -> bool {
        error.retryable
    }

    /// Called once when the task has failed for good (dead-lettered).
    fn failed(self, error: TaskError) -> impl Future<Output = ()> + Send {
        let _ = error;
        async {}
    }
}

/// A task type run by a blocking handler, on a thread.
///
/// A blocking handler cannot be interrupted: at its timeout the attempt is failed, but the
/// thread (and its worker slot) stays busy until `run` returns.
pub trait BlockingTask: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The name the handler is registered and found under.
    const NAME: &'static str;

    /// What the task returns.
    type Output: Serialize + DeserializeOwned + Send + 'static;

    /// Default options for tasks of this type.
    fn options() -> TaskOptions {
        TaskOptions::default()
    }

    /// Runs one attempt, on a worker thread.
    fn run(self, ctx: TaskContext) -> Result<Self::Output, TaskError>;

    /// Whether a failed attempt should be retried (attempts permitting).
    fn should_retry(&self, error: &TaskError) -> bool {
        error.retryable
    }

    /// Called once when the task has failed for good (dead-lettered).
    fn failed(self, error: TaskError) {
        let _ = error;
    }
}

/// A task type whose future need not be [`Send`]: it may hold an `Rc`, a `RefCell` or a
/// `!Send` client across an `.await`. It runs on a local worker thread (a current-thread
/// runtime with a `LocalSet`) and stays on that thread from start to end.
///
/// Any worker runs local tasks; a worker of kind [`WorkerKind::Local`](crate::WorkerKind)
/// runs every async task that way.
///
/// ```
/// use std::rc::Rc;
/// use omniq_models::TaskError;
/// use omniq_workers::{LocalTask, TaskContext};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct Render { page: String }
///
/// impl LocalTask for Render {
///     const NAME: &'static str = "pages.render";
///     type Output = usize;
///
///     async fn run(self, _ctx: TaskContext) -> Result<usize, TaskError> {
///         let shared = Rc::new(self.page);
///         tokio::task::yield_now().await; // an Rc held across an await
///         Ok(shared.len())
///     }
/// }
/// ```
pub trait LocalTask: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The name the handler is registered and found under.
    const NAME: &'static str;

    /// What the task returns.
    type Output: Serialize + DeserializeOwned + Send + 'static;

    /// Default options for tasks of this type.
    fn options() -> TaskOptions {
        TaskOptions::default()
    }

    /// Runs one attempt, on a local worker thread.
    fn run(self, ctx: TaskContext) -> impl Future<Output = Result<Self::Output, TaskError>>;

    /// Whether a failed attempt should be retried (attempts permitting).
    fn should_retry(&self, error: &TaskError) -> bool {
        error.retryable
    }
}
