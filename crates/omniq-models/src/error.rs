use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Why an attempt failed, in terms a worker can act on without knowing the handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TaskErrorKind {
    /// The handler returned an error.
    Handler,
    /// The handler panicked.
    Panic,
    /// The attempt ran past its timeout.
    Timeout,
    /// No handler is registered under the task's name on this worker.
    UnknownTask,
    /// The payload could not be decoded into the handler's argument type.
    Decode,
    /// The result could not be encoded.
    Encode,
    /// The task was cancelled.
    Cancelled,
    /// The task expired before it started.
    Expired,
    /// A parent task did not succeed.
    DependencyFailed,
    /// The worker lost the task's lease (it crashed or stalled).
    LeaseLost,
    /// The process running the attempt died: a process worker's child that crashed,
    /// aborted or was killed (out of memory, say).
    Crashed,
    /// Not a failure: the handler asked to run again later without counting the attempt
    /// ([`TaskError::snooze`]).
    Snoozed,
}

impl TaskErrorKind {
    /// The stable lowercase name used in storage and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskErrorKind::Handler => "handler",
            TaskErrorKind::Panic => "panic",
            TaskErrorKind::Timeout => "timeout",
            TaskErrorKind::UnknownTask => "unknown_task",
            TaskErrorKind::Decode => "decode",
            TaskErrorKind::Encode => "encode",
            TaskErrorKind::Cancelled => "cancelled",
            TaskErrorKind::Expired => "expired",
            TaskErrorKind::DependencyFailed => "dependency_failed",
            TaskErrorKind::LeaseLost => "lease_lost",
            TaskErrorKind::Crashed => "crashed",
            TaskErrorKind::Snoozed => "snoozed",
        }
    }
}

impl fmt::Display for TaskErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error a task attempt ends with.
///
/// Handlers build one with [`TaskError::new`] (retried while attempts remain),
/// [`TaskError::permanent`] (never retried) or [`TaskError::retry_after`] (retried after the
/// given delay instead of the task's backoff), or let `?` make one from any
/// [`std::error::Error`]: a retryable failure whose message is the error and its chain of
/// sources.
///
/// ```
/// use omniq_models::TaskError;
///
/// fn parse(text: &str) -> Result<u32, TaskError> {
///     Ok(text.trim().parse::<u32>()?)
/// }
///
/// let err = parse("seven").unwrap_err();
/// assert!(err.retryable);
/// assert_eq!(err.message, "invalid digit found in string");
/// ```
///
/// Like `anyhow::Error`, it is not itself a [`std::error::Error`]: that is what lets `?`
/// convert every error type into it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskError {
    /// What kind of failure this is.
    pub kind: TaskErrorKind,
    /// A human-readable reason.
    pub message: String,
    /// Whether another attempt may succeed.
    pub retryable: bool,
    /// A delay the handler asked for before the next attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<Duration>,
}

impl TaskError {
    /// A retryable handler error.
    pub fn new(message: impl Into<String>) -> Self {
        Self::with_kind(TaskErrorKind::Handler, message, true)
    }

    /// A handler error that must not be retried.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self::with_kind(TaskErrorKind::Handler, message, false)
    }

    /// A retryable handler error that asks for the next attempt after `delay`.
    pub fn retry_after(message: impl Into<String>, delay: Duration) -> Self {
        Self {
            retry_after: Some(delay),
            ..Self::new(message)
        }
    }

    /// Not a failure: run the task again after `delay` without counting this attempt
    /// (River's `JobSnooze`, Oban's `{:snooze, seconds}`). For work that is not ready yet,
    /// such as a resource another task still holds or a rate limit upstream; the task's
    /// `max_attempts` is left untouched, so a task may snooze any number of times.
    ///
    /// ```
    /// use std::time::Duration;
    /// use omniq_models::TaskError;
    ///
    /// fn poll(ready: bool) -> Result<(), TaskError> {
    ///     if !ready {
    ///         return Err(TaskError::snooze(Duration::from_secs(30)));
    ///     }
    ///     Ok(())
    /// }
    /// assert!(poll(false).unwrap_err().is_snooze());
    /// ```
    pub fn snooze(delay: Duration) -> Self {
        Self {
            retry_after: Some(delay),
            ..Self::with_kind(
                TaskErrorKind::Snoozed,
                format!("snoozed for {delay:?}"),
                true,
            )
        }
    }

    /// Whether this is a [`TaskError::snooze`] request rather than a failure.
    pub fn is_snooze(&self) -> bool {
        self.kind == TaskErrorKind::Snoozed
    }

    /// An error of the given kind.
    pub fn with_kind(kind: TaskErrorKind, message: impl Into<String>, retryable: bool) -> Self {
        Self {
            kind,
            message: message.into(),
            retryable,
            retry_after: None,
        }
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

/// `?` on any error inside a task: a retryable handler failure carrying the error's
/// message and its chain of sources (`"cannot connect: connection refused"`).
impl<E> From<E> for TaskError
where
    E: std::error::Error + Send + Sync + 'static,
{
    fn from(error: E) -> Self {
        TaskError::new(error_chain(&error))
    }
}

/// An error's message followed by those of its sources, each once: many errors already
/// print their source, and a message is not repeated when it ends the text so far.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let message = cause.to_string();
        if !message.is_empty() && !text.ends_with(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
        source = cause.source();
    }
    text
}
