//! Progress a handler reports while it runs: stored on its task, logged as an event, and
//! counted as a heartbeat, so that a long task that reports progress keeps its lease.

use std::fmt;
use std::sync::Arc;

use omniq_storage::BoxFuture;

/// Why [`TaskContext::progress`](crate::TaskContext::progress) did not store a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProgressError {
    /// Progress cannot be stored here: a context outside a worker (a test's), or a task
    /// queue whose backend does not keep progress.
    #[error("progress cannot be reported here: {0}")]
    Unsupported(String),
    /// The value cannot be written as JSON, or is larger than
    /// [`MAX_PROGRESS_BYTES`](omniq_storage::MAX_PROGRESS_BYTES).
    #[error("invalid progress value: {0}")]
    Invalid(String),
    /// The attempt's lease is no longer held (another worker took the task over): the
    /// attempt is being stopped, and nothing was stored.
    #[error("the attempt's lease was lost; nothing was stored")]
    LeaseLost,
    /// The store did not answer, or failed; the value may or may not be stored. The
    /// heartbeat keeps the lease meanwhile.
    #[error("the store did not take the progress: {0}")]
    Store(String),
}
// A handler that propagates one with `?` fails its attempt (retried as usual), through
// `TaskError`'s conversion from any error; most handlers ignore a report not stored.

type ReportFn =
    dyn Fn(serde_json::Value) -> BoxFuture<'static, Result<(), ProgressError>> + Send + Sync;

/// Where an attempt's progress goes: its worker's store call, fenced by its lease, run on
/// the worker's runtime.
#[derive(Clone)]
pub(crate) struct ProgressSink {
    report: Arc<ReportFn>,
    runtime: tokio::runtime::Handle,
    /// How long a blocking handler waits for a report's answer.
    answer_within: std::time::Duration,
}

impl ProgressSink {
    /// A sink calling `report` on the current runtime.
    ///
    /// # Panics
    /// Outside a Tokio runtime (a worker always runs in one).
    pub(crate) fn new<F>(answer_within: std::time::Duration, report: F) -> Self
    where
        F: Fn(serde_json::Value) -> BoxFuture<'static, Result<(), ProgressError>>
            + Send
            + Sync
            + 'static,
    {
        Self {
            report: Arc::new(report),
            runtime: tokio::runtime::Handle::current(),
            answer_within,
        }
    }

    /// Runs the report on the worker's runtime, whatever runtime calls it (a local
    /// worker's threads have their own), and even if the caller gives up on it.
    pub(crate) async fn report(&self, value: serde_json::Value) -> Result<(), ProgressError> {
        self.runtime
            .spawn((self.report)(value))
            .await
            .unwrap_or_else(|err| Err(ProgressError::Store(err.to_string())))
    }

    /// [`report`](Self::report) from a thread that is not the runtime's (a blocking
    /// handler's): the call runs on the runtime, this thread waits for its answer, at most
    /// `answer_within` (so that a call from async code on a one-thread runtime, which
    /// cannot make progress while this thread waits, ends rather than hangs).
    pub(crate) fn report_blocking(&self, value: serde_json::Value) -> Result<(), ProgressError> {
        let (answer, answered) = std::sync::mpsc::sync_channel(1);
        let call = (self.report)(value);
        self.runtime.spawn(async move {
            let _ = answer.send(call.await);
        });
        answered
            .recv_timeout(self.answer_within)
            .unwrap_or_else(|_| {
                Err(ProgressError::Store(
                    "no answer from the worker's runtime in time (progress_blocking called \
                     from async code? use progress there)"
                        .to_owned(),
                ))
            })
    }
}

impl fmt::Debug for ProgressSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ProgressSink(..)")
    }
}
