//! Local worker threads: each runs a current-thread runtime with a `LocalSet`, so a task's
//! future need not be `Send` (an `Rc` or a `!Send` client held across an `.await`).

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

use futures_util::FutureExt;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::registry::{LocalJob, TaskOutcome};

/// An attempt's outcome, or the panic that ended it.
pub(crate) type LocalResult = thread::Result<TaskOutcome>;

struct LocalRun {
    job: LocalJob,
    done: oneshot::Sender<LocalResult>,
    /// Cancelled when the worker gives the attempt up (timeout, lost lease, cancel grace
    /// over): the future is dropped on its thread.
    abandon: CancellationToken,
    span: tracing::Span,
}

/// A fixed set of local threads; attempts are dealt to them in turn and stay on the
/// thread they start on.
///
/// Dropping the pool closes the threads' channels: each stops taking attempts, drops the
/// ones it still runs and exits.
#[derive(Debug)]
pub(crate) struct LocalPool {
    threads: Vec<mpsc::UnboundedSender<LocalRun>>,
    next: AtomicUsize,
}

impl LocalPool {
    /// Starts `threads` local threads (at least one).
    pub(crate) fn new(threads: usize, name: &str) -> std::io::Result<Self> {
        let mut senders = Vec::with_capacity(threads.max(1));
        for index in 0..threads.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (sender, receiver) = mpsc::unbounded_channel();
            thread::Builder::new()
                .name(format!("{name}-{index}"))
                .spawn(move || serve(&runtime, receiver))?;
            senders.push(sender);
        }
        Ok(Self {
            threads: senders,
            next: AtomicUsize::new(0),
        })
    }

    /// Starts `job` on the next thread. The receiver yields its outcome; it errs only if
    /// the thread is gone. Cancelling `abandon` drops the attempt's future.
    pub(crate) fn spawn(
        &self,
        job: LocalJob,
        abandon: CancellationToken,
    ) -> oneshot::Receiver<LocalResult> {
        let (done, outcome) = oneshot::channel();
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.threads.len();
        let run = LocalRun {
            job,
            done,
            abandon,
            span: tracing::Span::current(),
        };
        // A send fails only when the thread has exited; the receiver then reports it.
        let _ = self.threads[index].send(run);
        outcome
    }
}

fn serve(runtime: &tokio::runtime::Runtime, mut receiver: mpsc::UnboundedReceiver<LocalRun>) {
    let local = tokio::task::LocalSet::new();
    local.block_on(runtime, async move {
        while let Some(run) = receiver.recv().await {
            tokio::task::spawn_local(attempt(run));
        }
    });
}

async fn attempt(run: LocalRun) {
    let LocalRun {
        job,
        done,
        abandon,
        span,
    } = run;
    let _entered = span.clone().entered();
    // Making the future is user code too: its panic fails the attempt like any other.
    let future = match std::panic::catch_unwind(AssertUnwindSafe(job)) {
        Ok(future) => future,
        Err(panic) => {
            let _ = done.send(Err(panic));
            return;
        }
    };
    drop(_entered);
    let guarded = tracing::Instrument::instrument(AssertUnwindSafe(future).catch_unwind(), span);
    tokio::select! {
        outcome = guarded => {
            let _ = done.send(outcome);
        }
        () = abandon.cancelled() => {}
    }
}
