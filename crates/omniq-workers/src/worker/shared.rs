use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use omniq_events::EventLogger;
use omniq_models::{LeaseToken, TaskError, TaskId, WorkerId};
use omniq_serialization::PayloadCodec;
use omniq_storage::{LeaseRef, ResultStore, TaskQueue};
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use tokio::sync::{AcquireError, Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::WorkerConfig;
use super::limiter::Limiters;
use super::paused::PausedQueues;
use super::task_metrics::MetricsCache;
use crate::LiveRegistry;
use crate::local::LocalPool;
use crate::pool::BlockingExecutor;
use crate::process::ProcessPool;

/// What a worker did, returned by its shutdown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerReport {
    /// Tasks that succeeded.
    pub succeeded: u64,
    /// Attempts that failed and were scheduled for a retry.
    pub retried: u64,
    /// Tasks that failed for good (dead-lettered).
    pub dead_lettered: u64,
    /// Leases given back unrun at shutdown.
    pub released: u64,
    /// Attempts that asked to run again later ([`TaskError::snooze`]).
    ///
    /// [`TaskError::snooze`]: omniq_models::TaskError::snooze
    pub snoozed: u64,
    /// Completions refused because the lease had been lost.
    pub lease_lost: u64,
    /// Running tasks stopped because their cancellation was requested.
    pub cancelled: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) succeeded: AtomicU64,
    pub(crate) retried: AtomicU64,
    pub(crate) dead_lettered: AtomicU64,
    pub(crate) released: AtomicU64,
    pub(crate) snoozed: AtomicU64,
    pub(crate) lease_lost: AtomicU64,
    pub(crate) cancelled: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn report(&self) -> WorkerReport {
        WorkerReport {
            succeeded: self.succeeded.load(Ordering::Relaxed),
            retried: self.retried.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
            released: self.released.load(Ordering::Relaxed),
            snoozed: self.snoozed.load(Ordering::Relaxed),
            lease_lost: self.lease_lost.load(Ordering::Relaxed),
            cancelled: self.cancelled.load(Ordering::Relaxed),
        }
    }
}

/// A lease this worker holds, from claim until its completion is applied.
#[derive(Debug)]
pub(crate) struct InFlight {
    pub(crate) token: LeaseToken,
    /// Stops the attempt at once, without completing it: the lease is lost.
    pub(crate) abort: CancellationToken,
    /// The task's cancellation was requested: the handler is told (its context token is a
    /// child of this one) and stopped after the cancel grace period.
    pub(crate) cancel_requested: CancellationToken,
    /// The handler's own token: cancelled on request, or when the worker shuts down.
    pub(crate) context: CancellationToken,
    /// The attempt ended and its completion is on its way to the store.
    pub(crate) finished: bool,
    /// When the lease runs out at the latest, on this process's monotonic clock: the
    /// moment the claim or the last successful renewal was *sent*, plus the lease. The
    /// store set its deadline later than that, so stopping the attempt before this
    /// instant stops it before another worker can take the task, whatever the clocks say.
    pub(crate) expires: tokio::time::Instant,
    /// The handler runs on a thread, which cannot be stopped: at shutdown its lease is
    /// neither released nor completed while the thread may still run.
    pub(crate) on_thread: bool,
}

/// The claim → run → complete pipeline's budgets.
///
/// A lease permit is held from claim until the completion is in the store, a slot only while
/// the handler runs: so the next claim overlaps the completion of the last batch, and the
/// worker never holds more than `concurrency + prefetch` leases.
#[derive(Debug)]
pub(crate) struct Pipeline {
    /// Leases the worker may hold: `concurrency + prefetch`.
    pub(crate) leases: Arc<Semaphore>,
    /// Handlers that may run at once: `concurrency`.
    pub(crate) slots: Arc<Semaphore>,
    /// Claimed leases waiting for a slot.
    pub(crate) buffered: AtomicUsize,
    /// Signalled when a buffered lease gets a slot (or leaves the buffer otherwise).
    pub(crate) started: Notify,
    /// The worker is stopping: buffered leases are given back unrun.
    pub(crate) stop: CancellationToken,
}

impl Pipeline {
    pub(crate) fn new(config: &WorkerConfig, stop: CancellationToken) -> Self {
        Self {
            leases: Arc::new(Semaphore::new(config.max_leases())),
            slots: Arc::new(Semaphore::new(config.concurrency)),
            buffered: AtomicUsize::new(0),
            started: Notify::new(),
            stop,
        }
    }

    /// Leases worth claiming now: free slots plus the room left in the buffer.
    pub(crate) fn wanted(&self, prefetch: usize) -> usize {
        let buffered = self.buffered.load(Ordering::Relaxed);
        (self.slots.available_permits() + prefetch).saturating_sub(buffered)
    }

    /// A place in the line for a slot, taken now: leases get their slots in the order they
    /// queued here, so a claimed batch starts in claim order (by priority within a queue,
    /// queues in the worker's order).
    ///
    /// The semaphore serves waiters first come, first served, but a waiter joins the line
    /// only when its wait is first polled. Executions spawned one after another are first
    /// polled in whatever order the runtime picks (tokio's multi-thread scheduler runs the
    /// last one spawned first),
    /// so each lease's wait is polled once here, by the claiming loop, before its execution
    /// is spawned; the execution polls it on from there (a later poll replaces the waker,
    /// and a wait dropped while in line gives back any slot it was handed).
    pub(crate) async fn queue_for_slot(&self) -> SlotWait {
        let mut wait: SlotWait = Box::pin(Arc::clone(&self.slots).acquire_owned());
        match std::future::poll_fn(|cx| Poll::Ready(wait.as_mut().poll(cx))).await {
            Poll::Ready(slot) => Box::pin(std::future::ready(slot)),
            Poll::Pending => wait,
        }
    }

    /// A buffered lease left the buffer.
    pub(crate) fn unbuffer(&self) {
        self.buffered.fetch_sub(1, Ordering::Relaxed);
        self.started.notify_one();
    }
}

/// A lease's wait for a slot, in line since [`Pipeline::queue_for_slot`].
pub(crate) type SlotWait =
    Pin<Box<dyn Future<Output = Result<OwnedSemaphorePermit, AcquireError>> + Send>>;

/// Everything the worker's tasks share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) id: WorkerId,
    pub(crate) queue: Arc<dyn TaskQueue>,
    pub(crate) results: Arc<dyn ResultStore>,
    pub(crate) events: EventLogger,
    pub(crate) registry: LiveRegistry,
    pub(crate) codec: PayloadCodec,
    pub(crate) config: WorkerConfig,
    pub(crate) blocking: BlockingExecutor,
    /// The children of a process worker.
    pub(crate) process: Option<ProcessPool>,
    /// Local threads, started when the first local attempt needs them.
    local: OnceLock<Result<LocalPool, String>>,
    pub(crate) counters: Counters,
    pub(crate) metrics: MetricsCache,
    /// The results lane's last try failed: successes wait to be completed.
    pub(crate) results_stalled: AtomicBool,
    /// The completion lane's last try failed: completions wait to be applied.
    pub(crate) completions_stalled: AtomicBool,
    /// The worker's queues paused in the store, as last read.
    pub(crate) paused: PausedQueues,
    /// The worker's rate and concurrency limits.
    pub(crate) limiters: Limiters,
    in_flight: Mutex<HashMap<TaskId, InFlight>>,
}

impl Shared {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        id: WorkerId,
        queue: Arc<dyn TaskQueue>,
        results: Arc<dyn ResultStore>,
        events: EventLogger,
        registry: LiveRegistry,
        codec: PayloadCodec,
        config: WorkerConfig,
        blocking: BlockingExecutor,
        process: Option<ProcessPool>,
    ) -> Self {
        Self {
            id,
            paused: PausedQueues::new(queue.as_ref()),
            limiters: Limiters::new(
                Arc::clone(&queue),
                config.limits.clone().into_iter().collect(),
                config.lease,
                config.store_timeout,
            ),
            queue,
            results,
            events,
            registry,
            codec,
            config,
            blocking,
            process,
            local: OnceLock::new(),
            counters: Counters::default(),
            metrics: MetricsCache::default(),
            results_stalled: AtomicBool::new(false),
            completions_stalled: AtomicBool::new(false),
            in_flight: Mutex::new(HashMap::new()),
        }
    }

    /// The local threads (one per core, at most one per slot), started on first use.
    ///
    /// # Errors
    /// The threads could not be started; the attempt fails and may be retried.
    pub(crate) fn local_pool(&self) -> Result<&LocalPool, TaskError> {
        let pool = self.local.get_or_init(|| {
            let cores = std::thread::available_parallelism().map_or(1, usize::from);
            LocalPool::new(self.config.concurrency.min(cores), "omniq-local")
                .map_err(|e| format!("cannot start the local worker threads: {e}"))
        });
        pool.as_ref()
            .map_err(|message| TaskError::new(message.clone()))
    }

    pub(crate) fn in_flight(&self) -> MutexGuard<'_, HashMap<TaskId, InFlight>> {
        self.in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether this worker has finished attempts whose completion it could not deliver yet
    /// (the store was down). Recovery waits for them: after an outage longer than the
    /// lease, recovering first would take back the worker's own finished tasks, whose
    /// completions are about to land, and run them again.
    pub(crate) fn completions_stalled(&self) -> bool {
        self.results_stalled.load(Ordering::Relaxed)
            || self.completions_stalled.load(Ordering::Relaxed)
    }

    /// Leases held right now, for the heartbeat.
    pub(crate) fn held_leases(&self) -> Vec<LeaseRef> {
        self.in_flight()
            .iter()
            .map(|(task_id, held)| LeaseRef::new(*task_id, held.token))
            .collect()
    }

    /// Forgets a lease if it is still the one held for the task.
    pub(crate) fn forget(&self, lease: &LeaseRef) -> Option<InFlight> {
        self.forget_if(lease, |_| true)
    }

    /// Forgets a lease lost while its attempt was still running. A finished attempt is
    /// left to the completion flusher: its lease may only look lost because its completion
    /// was applied a moment ago.
    pub(crate) fn forget_running(&self, lease: &LeaseRef) -> Option<InFlight> {
        self.forget_if(lease, |held| !held.finished)
    }

    fn forget_if(
        &self,
        lease: &LeaseRef,
        condition: impl Fn(&InFlight) -> bool,
    ) -> Option<InFlight> {
        let mut in_flight = self.in_flight();
        match in_flight.get(&lease.task_id) {
            Some(held) if held.token == lease.token && condition(held) => {
                in_flight.remove(&lease.task_id)
            }
            _ => None,
        }
    }
}
