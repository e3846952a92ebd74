//! The child's side: attempts read from the socket on standard input, run one at a time,
//! outcomes written back.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::FutureExt;
use omniq_models::{LeaseToken, TaskError, TaskErrorKind};
use omniq_serialization::PayloadCodec;
use omniq_storage::{ResultStore, progress_text};
use tokio::io::AsyncReadExt;
use tokio::net::UnixStream;
use tokio::net::unix::OwnedWriteHalf;
use tokio::runtime::{Handle, RuntimeFlavor};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use super::frame::{
    AttemptHeader, ChildMessage, OutcomeHeader, READY, decode_header, encode_header, fits,
    read_message, too_large, write_message,
};
use crate::LiveRegistry;
use crate::progress::{ProgressError, ProgressSink};
use crate::registry::Invocation;
use crate::worker::panicked;

/// Serves the parent until it closes the socket or dies, then exits the process.
pub(crate) fn serve(
    registry: LiveRegistry,
    results: Arc<dyn ResultStore>,
    codec: PayloadCodec,
) -> ! {
    let serving = serve_socket(registry, results, codec);
    let code = match Handle::try_current() {
        // On the application's runtime, so that state bound to it (a pool made on it)
        // keeps working; its other threads run the attempts.
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(|| handle.block_on(serving))
        }
        // A current-thread runtime cannot be blocked in place: serve on a runtime of our
        // own, on a thread of our own.
        _ => std::thread::spawn(move || {
            match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime.block_on(serving),
                Err(err) => {
                    eprintln!("omniq process worker child: cannot start a runtime: {err}");
                    1
                }
            }
        })
        .join()
        .unwrap_or(1),
    };
    std::process::exit(code)
}

async fn serve_socket(
    registry: LiveRegistry,
    results: Arc<dyn ResultStore>,
    codec: PayloadCodec,
) -> i32 {
    let (socket, watched) = match parent_socket() {
        Ok(socket) => socket,
        Err(err) => {
            eprintln!(
                "omniq process worker child: standard input is not the parent's socket: {err}"
            );
            return 2;
        }
    };
    // Without the watchdog the loop below still notices the parent going away, unless
    // handlers that never yield hold every thread of the runtime.
    if let Err(err) = watch_parent(watched, || std::process::exit(0)) {
        eprintln!("omniq process worker child: cannot watch the parent: {err}");
    }
    let (mut reader, writer) = socket.into_split();
    // Shared with the attempts' progress reports; a message is written whole under the lock.
    let writer = Arc::new(Mutex::new(writer));
    if write_message(&mut *writer.lock().await, READY, &[])
        .await
        .is_err()
    {
        return 0;
    }
    loop {
        // The parent closed the socket (shutdown, a recycled child) or died.
        let Ok((header, payload)) = read_message(&mut reader).await else {
            return 0;
        };
        let Ok(header) = decode_header::<AttemptHeader>(&header) else {
            eprintln!("omniq process worker child: unreadable attempt header");
            return 3;
        };
        let progress = progress_to_parent(&writer, header.token);
        let attempt = run(&registry, &results, codec, header, payload, progress);
        // While the attempt runs the parent sends nothing: anything read is the socket
        // closing, and a child must not outlive its parent.
        let mut probe = [0_u8; 1];
        let outcome = tokio::select! {
            outcome = attempt => outcome,
            _ = reader.read(&mut probe) => return 0,
        };
        let (outcome, body): (OutcomeHeader, Vec<u8>) = match outcome {
            // Sent as is it would break the exchange and read as a crash, retried for ever.
            Ok(body) if !fits(body.len()) => (Err(too_large("result", body.len())), Vec::new()),
            Ok(body) => (Ok(()), body),
            Err(error) => (Err(error), Vec::new()),
        };
        let Ok(outcome) = encode_header(&ChildMessage::Outcome(outcome)) else {
            return 3;
        };
        // After any report that already asked for the lock; one sent later carries a
        // lease the parent no longer waits on, and is dropped there.
        if write_message(&mut *writer.lock().await, &outcome, &body)
            .await
            .is_err()
        {
            return 0;
        }
    }
}

/// The socket the parent passed as standard input, and a second handle on it for the
/// watchdog. The socket is moved off standard input, which becomes `/dev/null`: a process
/// a handler starts would otherwise inherit it and hold it open after this child died (the
/// parent would wait on it until the attempt's timeout), and code in the child could read
/// the parent's messages. The new handles are closed on `exec`.
fn parent_socket() -> io::Result<(UnixStream, OwnedFd)> {
    let fd = io::stdin().as_fd().try_clone_to_owned()?;
    let watched = fd.try_clone()?;
    let null = std::fs::File::open("/dev/null")?;
    rustix::stdio::dup2_stdin(&null)?;
    let socket = std::os::unix::net::UnixStream::from(fd);
    socket.set_nonblocking(true)?;
    Ok((UnixStream::from_std(socket)?, watched))
}

/// Calls `on_hang_up` (in a child: exits) once the other end of `socket` is closed, from a
/// thread of its own, so whatever the runtime is doing: a child must not outlive its
/// parent, and a handler that never yields can starve the runtime's own reads. It only
/// waits for the hang-up (no read), so it takes nothing from the socket.
fn watch_parent(socket: OwnedFd, on_hang_up: impl FnOnce() + Send + 'static) -> io::Result<()> {
    use rustix::event::{PollFd, PollFlags, poll};
    std::thread::Builder::new()
        .name("omniq-child-watchdog".to_owned())
        .spawn(move || {
            loop {
                // No event asked for: poll still reports a hang-up and errors.
                let mut fds = [PollFd::new(&socket, PollFlags::empty())];
                match poll(&mut fds, None) {
                    Err(rustix::io::Errno::INTR) => {}
                    Ok(_) if fds[0].revents().is_empty() => {}
                    // A hang-up, an error on the socket, or a poll that cannot watch it.
                    _ => break,
                }
            }
            on_hang_up();
        })?;
    Ok(())
}

/// How long a blocking handler in a child waits for its report to be sent.
const PARENT_ANSWER: std::time::Duration = std::time::Duration::from_secs(30);

/// Where an attempt's progress goes in a child: a message to the parent, which stores it.
/// The write runs as a task of its own, so a report dropped by its handler half-way never
/// leaves half a message on the socket.
fn progress_to_parent(writer: &Arc<Mutex<OwnedWriteHalf>>, token: LeaseToken) -> ProgressSink {
    let writer = Arc::clone(writer);
    ProgressSink::new(PARENT_ANSWER, move |value| {
        let writer = Arc::clone(&writer);
        Box::pin(async move {
            let value =
                progress_text(&value).map_err(|err| ProgressError::Invalid(err.to_string()))?;
            let header = encode_header(&ChildMessage::Progress { token, value })
                .map_err(|err| ProgressError::Invalid(err.to_string()))?;
            let written = tokio::spawn(async move {
                write_message(&mut *writer.lock().await, &header, &[]).await
            });
            match written.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(err)) => Err(ProgressError::Store(format!(
                    "cannot reach the parent process: {err}"
                ))),
                Err(err) => Err(ProgressError::Store(err.to_string())),
            }
        })
    })
}

/// Runs one attempt with the child's own registry and state.
async fn run(
    registry: &LiveRegistry,
    results: &Arc<dyn ResultStore>,
    codec: PayloadCodec,
    header: AttemptHeader,
    payload: Vec<u8>,
    progress: ProgressSink,
) -> Result<Vec<u8>, TaskError> {
    let Some(handler) = registry.handler(&header.task_name) else {
        return Err(TaskError::with_kind(
            TaskErrorKind::UnknownTask,
            format!(
                "no handler is registered for task `{}` in the process worker's child: a \
                 child has the tasks registered before the program's first process-worker \
                 start; register it before that",
                header.task_name
            ),
            false,
        ));
    };
    let ctx = header.into_context(
        // A cancelled attempt is stopped by killing its child.
        CancellationToken::new(),
        Arc::clone(results),
        codec,
        registry.state(),
        Some(progress),
    );
    let invocation =
        std::panic::catch_unwind(AssertUnwindSafe(|| handler.invoke(&payload, ctx, codec)))
            .map_err(panicked)??;
    let finished = match invocation {
        // On the runtime's threads, so that a handler that never yields leaves this one
        // free to notice the parent going away.
        Invocation::Async(future) => tokio::spawn(AssertUnwindSafe(future).catch_unwind())
            .await
            .map_err(|e| e.to_string()),
        Invocation::Blocking(job) => {
            tokio::task::spawn_blocking(move || std::panic::catch_unwind(AssertUnwindSafe(job)))
                .await
                .map_err(|e| e.to_string())
        }
        Invocation::Local(job) => {
            let (done, outcome) = tokio::sync::oneshot::channel();
            std::thread::spawn(move || {
                let outcome = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())
                    .map(|runtime| {
                        let local = tokio::task::LocalSet::new();
                        std::panic::catch_unwind(AssertUnwindSafe(|| {
                            local.block_on(&runtime, job())
                        }))
                    });
                let _ = done.send(outcome);
            });
            outcome
                .await
                .map_err(|e| e.to_string())
                .and_then(|outcome| outcome)
        }
    };
    match finished {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(panic)) => Err(panicked(panic)),
        Err(lost) => Err(TaskError::with_kind(
            TaskErrorKind::Panic,
            format!("the attempt's thread went away: {lost}"),
            true,
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_watchdog_fires_when_the_other_end_closes_even_with_unread_bytes() {
        let (mut parent, child) = std::os::unix::net::UnixStream::pair().expect("pair");
        let (fired, hang_up) = std::sync::mpsc::channel();
        watch_parent(OwnedFd::from(child), move || {
            let _ = fired.send(());
        })
        .expect("watch");
        // Bytes the child never reads do not wake it; the close does.
        parent.write_all(b"an attempt").expect("write");
        drop(parent);
        hang_up
            .recv_timeout(Duration::from_secs(30))
            .expect("the watchdog noticed the hang-up");
    }
}
