//! The parent's side: a pool of child processes, one attempt at a time each.

use std::ffi::OsString;
use std::io;
use std::os::fd::OwnedFd;
use std::process::Stdio;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use omniq_models::{TaskError, TaskErrorKind};
use tokio::net::UnixStream;
use tokio::process::{Child, Command};

use super::CHILD_ENV;
use super::frame::{
    AttemptHeader, ChildMessage, READY, decode_header, encode_header, fits, read_message,
    too_large, write_message,
};
use crate::progress::ProgressSink;
use crate::worker::with_timeout;

/// How long the parent waits for a dead child's exit status, to say how it died.
const EXIT_STATUS_WAIT: Duration = Duration::from_secs(2);

/// How long a new child may take to reach its worker's start and serve.
const CHILD_START_TIMEOUT: Duration = Duration::from_secs(60);

/// Child processes of one worker: idle ones wait here between attempts; a busy one is
/// owned by its attempt, so an attempt dropped mid-way (a timeout, a lost lease) drops its
/// child, which kills it (SIGKILL).
#[derive(Debug)]
pub(crate) struct ProcessPool {
    /// The program and its arguments.
    command: Vec<OsString>,
    max_tasks_per_child: Option<u32>,
    idle: Mutex<Vec<ChildProcess>>,
}

#[derive(Debug)]
struct ChildProcess {
    process: Child,
    socket: UnixStream,
    tasks: u32,
}

impl ProcessPool {
    /// A pool starting children with `command` (program, then arguments; default: this
    /// program with its own arguments), each recycled after `max_tasks_per_child` tasks.
    ///
    /// # Errors
    /// This program's path cannot be found (only when `command` is `None` or empty).
    pub(crate) fn new(
        command: Option<Vec<OsString>>,
        max_tasks_per_child: Option<u32>,
    ) -> io::Result<Self> {
        let command = match command {
            Some(command) if !command.is_empty() => command,
            _ => std::iter::once(std::env::current_exe()?.into_os_string())
                .chain(std::env::args_os().skip(1))
                .collect(),
        };
        Ok(Self {
            command,
            max_tasks_per_child: max_tasks_per_child.filter(|max| *max > 0),
            idle: Mutex::new(Vec::new()),
        })
    }

    /// Runs one attempt in a child: an idle one, or a new one.
    ///
    /// # Errors
    /// The attempt's own error; [`TaskErrorKind::Crashed`] when the child died during it;
    /// a retryable error when no child could be started.
    ///
    /// # Cancel safety
    /// Dropping the future kills the child running the attempt.
    pub(crate) async fn run(
        &self,
        header: &AttemptHeader,
        payload: &[u8],
        timeout: Option<Duration>,
        progress: &ProgressSink,
    ) -> Result<Vec<u8>, TaskError> {
        // It would fail the same way on every attempt: permanent, and no child is harmed.
        if !fits(payload.len()) {
            return Err(too_large("payload", payload.len()));
        }
        // A new child's start does not count against the attempt's timeout.
        let mut child = match self.take_idle() {
            Some(child) => child,
            None => self.start_child().await?,
        };
        let attempt_token = header.token;
        let exchange = async {
            let header = encode_header(header)?;
            write_message(&mut child.socket, &header, payload).await?;
            loop {
                let (message, body) = read_message(&mut child.socket).await?;
                match decode_header::<ChildMessage>(&message)? {
                    // A report its handler gave up on, written after its attempt ended.
                    ChildMessage::Progress { token, .. } if token != attempt_token => {}
                    ChildMessage::Progress { value: text, .. } => {
                        // Stored (and the lease renewed) from here; the child goes on
                        // without waiting, so what the store says is only logged.
                        let value =
                            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
                        if let Err(err) = progress.report(value).await {
                            tracing::debug!(%err, "a process worker child's progress was not stored");
                        }
                    }
                    ChildMessage::Outcome(outcome) => break Ok::<_, io::Error>((outcome, body)),
                }
            }
        };
        // Past the timeout the exchange is dropped, and with it the child: killed.
        let exchanged = with_timeout(timeout, exchange).await?;
        match exchanged {
            Ok((outcome, body)) => {
                child.tasks += 1;
                let worn_out = self
                    .max_tasks_per_child
                    .is_some_and(|max| child.tasks >= max);
                if !worn_out {
                    self.idle
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(child);
                }
                outcome.map(|()| body)
            }
            Err(err) => Err(died(child, &err).await),
        }
    }

    fn take_idle(&self) -> Option<ChildProcess> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        // A child that died while idle (killed from outside) is left to its drop.
        while let Some(mut child) = idle.pop() {
            if matches!(child.process.try_wait(), Ok(None)) {
                return Some(child);
            }
        }
        None
    }

    /// Starts a child and waits until it serves.
    async fn start_child(&self) -> Result<ChildProcess, TaskError> {
        let cannot = |reason: String| {
            TaskError::new(format!(
                "cannot start a process worker child ({}): {reason}",
                self.command[0].to_string_lossy()
            ))
        };
        let mut child = self.spawn().map_err(|e| cannot(e.to_string()))?;
        match tokio::time::timeout(CHILD_START_TIMEOUT, read_message(&mut child.socket)).await {
            Ok(Ok((hello, _))) if hello == READY => Ok(child),
            Ok(Ok(_)) => Err(cannot("it spoke out of turn".to_owned())),
            Ok(Err(_)) => {
                let status = tokio::time::timeout(EXIT_STATUS_WAIT, child.process.wait()).await;
                let how = match status {
                    Ok(Ok(status)) => describe_exit(status),
                    _ => "it closed its socket".to_owned(),
                };
                Err(cannot(format!(
                    "it ended before serving ({how}); does the program start a process \
                     worker with this task registered?"
                )))
            }
            Err(_) => Err(cannot(format!(
                "it did not serve within {CHILD_START_TIMEOUT:?}; does the program start a \
                 process worker?"
            ))),
        }
    }

    fn spawn(&self) -> io::Result<ChildProcess> {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
        let mut command = Command::new(&self.command[0]);
        command
            .args(&self.command[1..])
            .env(CHILD_ENV, "1")
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .kill_on_drop(true);
        let process = command.spawn()?;
        // The command holds the child's end until dropped: drop it now, so that the
        // child's death closes the socket for us.
        drop(command);
        ours.set_nonblocking(true)?;
        Ok(ChildProcess {
            process,
            socket: UnixStream::from_std(ours)?,
            tasks: 0,
        })
    }
}

/// The error of an attempt whose child died or broke the protocol; the child is killed
/// if it still runs.
async fn died(mut child: ChildProcess, err: &io::Error) -> TaskError {
    let pid = child.process.id();
    let _ = child.process.start_kill();
    let status = tokio::time::timeout(EXIT_STATUS_WAIT, child.process.wait()).await;
    let how = match status {
        Ok(Ok(status)) => describe_exit(status),
        _ => format!("the exchange failed: {err}"),
    };
    TaskError::with_kind(
        TaskErrorKind::Crashed,
        format!(
            "the process worker child {} died during the attempt ({how})",
            pid.map_or_else(|| "?".to_owned(), |pid| pid.to_string())
        ),
        true,
    )
}

fn describe_exit(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        _ => status.to_string(),
    }
}
