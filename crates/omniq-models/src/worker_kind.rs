//! How a worker runs handlers: one type for the settings and the worker.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How a worker runs handlers (setting `default_worker`: `async`, `thread`, `local` or
/// `process`).
///
/// | kind | async handlers | blocking handlers | for |
/// |---|---|---|---|
/// | `async` | tokio tasks | tokio's blocking pool | I/O-bound work; the default |
/// | `thread` | tokio tasks | the worker's own threads | blocking work that must not starve other blocking work in the process |
/// | `local` | local threads (`LocalSet`) | the worker's own threads | futures that are not `Send` |
/// | `process` | child processes | child processes | CPU-heavy or untrusted code: a hard timeout kills the child, a crash fails one attempt |
///
/// Tasks registered as local run on local threads whatever the kind.
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
    /// Async handlers on local threads, one per core at most, each a current-thread
    /// runtime with a `LocalSet`: a future may hold `!Send` values across an `.await` and
    /// stays on the thread it started on (`local`). Blocking handlers as `thread`.
    Local,
    /// Every handler in a child process of the same program, one task at a time per child,
    /// at most `concurrency` children (`process`): a timeout kills the child (a hard
    /// timeout, even for a loop that never yields), a crash or `abort` fails only that
    /// attempt, and children are recycled after a set number of tasks. Costs a process
    /// start per child and a copy of payload and result over a socket per task.
    #[serde(alias = "processes")]
    Process,
}

impl WorkerKind {
    /// The configuration spelling: `"async"`, `"thread"`, `"local"` or `"process"`.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerKind::Async => "async",
            WorkerKind::Thread => "thread",
            WorkerKind::Local => "local",
            WorkerKind::Process => "process",
        }
    }
}

impl fmt::Display for WorkerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A worker kind that is none of `async`, `thread`, `local` or `process`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown worker kind `{0}` (expected `async`, `thread`, `local` or `process`)")]
pub struct UnknownWorkerKind(pub String);

impl FromStr for WorkerKind {
    type Err = UnknownWorkerKind;

    /// Parses `async`, `thread` (also `threads`), `local` or `process` (also
    /// `processes`), ignoring case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "async" => Ok(WorkerKind::Async),
            "thread" | "threads" => Ok(WorkerKind::Thread),
            "local" => Ok(WorkerKind::Local),
            "process" | "processes" => Ok(WorkerKind::Process),
            _ => Err(UnknownWorkerKind(s.to_owned())),
        }
    }
}
