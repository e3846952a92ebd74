//! Where a worker runs blocking handlers: one type for the settings and the worker.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where a worker runs blocking handlers (setting `default_worker`: `async` or `thread`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum WorkerKind {
    /// Async handlers on tokio tasks; blocking handlers on tokio's shared blocking pool
    /// (`async`).
    #[default]
    Async,
    /// Async handlers on tokio tasks; blocking handlers on `concurrency` threads of the
    /// worker's own, so they never compete with other blocking work in the process
    /// (`thread`).
    #[serde(alias = "threads")]
    Thread,
}

impl WorkerKind {
    /// The configuration spelling, `"async"` or `"thread"`.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerKind::Async => "async",
            WorkerKind::Thread => "thread",
        }
    }
}

impl fmt::Display for WorkerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A worker kind that is neither `async` nor `thread`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown worker kind `{0}` (expected `async` or `thread`)")]
pub struct UnknownWorkerKind(pub String);

impl FromStr for WorkerKind {
    type Err = UnknownWorkerKind;

    /// Parses `async` or `thread` (also `threads`), ignoring case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "async" => Ok(WorkerKind::Async),
            "thread" | "threads" => Ok(WorkerKind::Thread),
            _ => Err(UnknownWorkerKind(s.to_owned())),
        }
    }
}
