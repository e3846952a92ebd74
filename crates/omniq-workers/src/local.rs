//! Local worker threads: each runs a current-thread runtime with a `LocalSet`, so a task's
//! future need not be `Send` (an `Rc` or a `!Send` client held across an `.await`).

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
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
    /// Held until the attempt ends on its thread.
    in_flight: Option<InFlight>,
}

/// A fixed set of local threads. Each attempt goes to the thread with the fewest attempts
/// in flight and stays there; a thread stuck in a future that never yields keeps its count
/// and so gets no more work, and a thread that is gone is passed over.
///
/// Dropping the pool closes the threads' channels: each stops taking attempts, drops the
/// ones it still runs and exits.
#[derive(Debug)]
pub(crate) struct LocalPool {
    threads: Vec<LocalThread>,
    next: AtomicUsize,
}

#[derive(Debug)]
struct LocalThread {
    sender: mpsc::UnboundedSender<LocalRun>,
    /// Attempts sent and not yet ended (counted down on the thread, when each ends).
    in_flight: Arc<AtomicUsize>,
}

impl LocalPool {
    /// Starts `threads` local threads (at least one).
    ///
    /// # Errors
    /// A thread or its runtime could not be created; the threads already started exit.
    pub(crate) fn new(threads: usize, name: &str) -> std::io::Result<Self> {
        let mut started = Vec::with_capacity(threads.max(1));
        for index in 0..threads.max(1) {
            let (sender, receiver) = mpsc::unbounded_channel();
            let (built, runtime_built) = std::sync::mpsc::channel();
            // The runtime is made on its own thread: made here, it would be dropped here
            // if the thread cannot start, and a runtime dropped from async code panics.
            thread::Builder::new()
                .name(format!("{name}-{index}"))
                .spawn(move || {
                    match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(runtime) => {
                            let _ = built.send(Ok(()));
                            serve(&runtime, receiver);
                        }
                        Err(err) => {
                            let _ = built.send(Err(err));
                        }
                    }
                })?;
            runtime_built.recv().map_err(|_| {
                std::io::Error::other("a local worker thread ended before it started")
            })??;
            started.push(LocalThread {
                sender,
                in_flight: Arc::new(AtomicUsize::new(0)),
            });
        }
        Ok(Self {
            threads: started,
            next: AtomicUsize::new(0),
        })
    }

    /// Starts `job` on the least busy thread that is still there. The receiver yields its
    /// outcome; it errs only if no thread is left. Cancelling `abandon` drops the attempt's
    /// future.
    pub(crate) fn spawn(
        &self,
        job: LocalJob,
        abandon: CancellationToken,
    ) -> oneshot::Receiver<LocalResult> {
        let (done, outcome) = oneshot::channel();
        let mut run = LocalRun {
            job,
            done,
            abandon,
            span: tracing::Span::current(),
            in_flight: None,
        };
        // Ties go round-robin, so idle threads share the work.
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut order: Vec<&LocalThread> = (0..self.threads.len())
            .map(|i| &self.threads[(start + i) % self.threads.len()])
            .collect();
        order.sort_by_key(|thread| thread.in_flight.load(Ordering::Relaxed));
        for thread in order {
            thread.in_flight.fetch_add(1, Ordering::Relaxed);
            run.in_flight = Some(InFlight(Arc::clone(&thread.in_flight)));
            match thread.sender.send(run) {
                Ok(()) => break,
                // The thread is gone (its count was given back with the attempt): the next.
                Err(mpsc::error::SendError(back)) => run = back,
            }
        }
        outcome
    }
}

/// One attempt counted in its thread's `in_flight`; the count goes down when it ends or
/// is dropped.
struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
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
        in_flight,
    } = run;
    // The count goes down before the outcome is sent: whoever reads it may spawn next, and
    // must see this thread free.
    let finish = move |outcome: LocalResult| {
        drop(in_flight);
        let _ = done.send(outcome);
    };
    let entered = span.clone().entered();
    // Making the future is user code too: its panic fails the attempt like any other.
    let future = match std::panic::catch_unwind(AssertUnwindSafe(job)) {
        Ok(future) => future,
        Err(panic) => {
            finish(Err(panic));
            return;
        }
    };
    drop(entered);
    let guarded = tracing::Instrument::instrument(AssertUnwindSafe(future).catch_unwind(), span);
    tokio::select! {
        outcome = guarded => finish(outcome),
        () = abandon.cancelled() => {}
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures_util::FutureExt;

    use super::*;

    fn job(run: impl FnOnce() -> TaskOutcome + Send + 'static) -> LocalJob {
        Box::new(move || async move { run() }.boxed_local())
    }

    #[tokio::test]
    async fn a_thread_stuck_in_an_attempt_gets_no_more_work() {
        let pool = LocalPool::new(2, "omniq-local-test").expect("pool");
        // An attempt that blocks its thread until released, as a future that never yields.
        let (release, released) = std::sync::mpsc::channel::<()>();
        let (stuck_tx, stuck_rx) = std::sync::mpsc::channel::<()>();
        let stuck = pool.spawn(
            job(move || {
                let _ = stuck_tx.send(());
                let _ = released.recv();
                Ok(b"stuck".to_vec())
            }),
            CancellationToken::new(),
        );
        tokio::task::spawn_blocking(move || stuck_rx.recv())
            .await
            .expect("join")
            .expect("the first attempt started");
        // Round-robin would deal every other one of these to the stuck thread.
        for n in 0..4_u8 {
            let outcome = pool.spawn(job(move || Ok(vec![n])), CancellationToken::new());
            let outcome = tokio::time::timeout(Duration::from_secs(30), outcome)
                .await
                .expect("ran on the free thread")
                .expect("a thread was there")
                .expect("no panic");
            assert_eq!(outcome.expect("succeeded"), vec![n]);
        }
        release.send(()).expect("release");
        let outcome = tokio::time::timeout(Duration::from_secs(30), stuck)
            .await
            .expect("the stuck attempt ended once released")
            .expect("a thread was there")
            .expect("no panic");
        assert_eq!(outcome.expect("succeeded"), b"stuck".to_vec());
    }
}
