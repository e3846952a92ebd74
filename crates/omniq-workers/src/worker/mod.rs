//! The worker: claims leases, runs handlers, renews leases, completes in batches.

mod completions;
mod config;
mod execute;
mod fetch;
mod leases;
mod limiter;
mod paused;
mod progress;
mod resilience;
mod shared;
mod signal;
mod task_metrics;

use std::sync::Arc;

use omniq_events::EventLogger;
use omniq_models::WorkerId;
use omniq_scheduler::Scheduler;
use omniq_serialization::PayloadCodec;
use omniq_storage::{ResultStore, ScheduleStore, TaskQueue};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use config::{DEFAULT_UNKNOWN_TASK_GRACE, WorkerConfig, WorkerKind};
pub(crate) use execute::with_timeout;
pub(crate) use resilience::panicked;
pub use shared::WorkerReport;
pub use signal::shutdown_signal;

use crate::LiveRegistry;
use crate::pool::{BlockingExecutor, ThreadPool};

/// Why a worker could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerError {
    /// The worker's dedicated threads could not be created.
    #[error("cannot start worker threads: {0}")]
    Threads(#[source] std::io::Error),
    /// The worker's task panicked or was aborted.
    #[error("worker task ended abnormally: {0}")]
    Crashed(String),
    /// The configuration is not usable.
    #[error("invalid worker configuration: {0}")]
    Config(String),
}

/// A worker, ready to start.
///
/// ```no_run
/// # use std::sync::Arc;
/// # use omniq_workers::{Registry, Worker, WorkerConfig};
/// # async fn demo(queue: Arc<dyn omniq_storage::TaskQueue>, results: Arc<dyn omniq_storage::ResultStore>, events: omniq_events::EventLogger) -> Result<(), omniq_workers::WorkerError> {
/// let worker = Worker::new(queue, results, events, Arc::new(Registry::new()))
///     .config(WorkerConfig::default().concurrency(32).queues(["images", "default"]))
///     .start()?;
/// let report = worker.shutdown().await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Worker {
    queue: Arc<dyn TaskQueue>,
    results: Arc<dyn ResultStore>,
    events: EventLogger,
    registry: LiveRegistry,
    codec: PayloadCodec,
    config: WorkerConfig,
    schedules: Option<Arc<dyn ScheduleStore>>,
}

impl Worker {
    /// A worker over the given stores and handlers, with the default configuration.
    pub fn new(
        queue: Arc<dyn TaskQueue>,
        results: Arc<dyn ResultStore>,
        events: EventLogger,
        registry: impl Into<LiveRegistry>,
    ) -> Self {
        Self {
            queue,
            results,
            events,
            registry: registry.into(),
            codec: PayloadCodec::default(),
            config: WorkerConfig::default(),
            schedules: None,
        }
    }

    /// Lets the worker run the scheduler over this schedule store (at the configured
    /// `scheduler_tick`).
    pub fn schedules(mut self, schedules: Arc<dyn ScheduleStore>) -> Self {
        self.schedules = Some(schedules);
        self
    }

    /// Sets the configuration.
    pub fn config(mut self, config: WorkerConfig) -> Self {
        self.config = config;
        self
    }

    /// Sets the codec results are written with (payloads of any format are read).
    pub fn codec(mut self, codec: PayloadCodec) -> Self {
        self.codec = codec;
        self
    }

    /// Starts the worker on the current tokio runtime.
    ///
    /// # Errors
    /// [`WorkerError::Config`] for a configuration that cannot work (no queue, zero
    /// concurrency, heartbeat not shorter than the lease), and [`WorkerError::Threads`]
    /// when a thread worker cannot create its threads.
    ///
    /// # Panics
    /// When called outside a tokio runtime.
    pub fn start(self) -> Result<WorkerHandle, WorkerError> {
        if !self.config.limits.is_empty()
            && !self
                .queue
                .capabilities()
                .supports(omniq_storage::Capability::Limits)
        {
            return Err(WorkerError::Config(
                "rate and concurrency limits need a task queue that stores limiter state \
                 (Capability::Limits)"
                    .to_owned(),
            ));
        }
        let in_child = crate::process::is_process_child();
        self.start_as(in_child)
    }

    /// [`Worker::start`], in a process worker's child or not.
    fn start_as(self, in_process_child: bool) -> Result<WorkerHandle, WorkerError> {
        self.config.validate().map_err(WorkerError::Config)?;
        let id = self.config.id.clone().unwrap_or_else(WorkerId::generate);
        if in_process_child && self.config.kind != WorkerKind::Process {
            // A process worker's child runs the program's code up to the process worker's
            // start again: a worker of another kind started on the way would claim tasks
            // from inside every child. Its handle does nothing until shut down.
            tracing::debug!(kind = %self.config.kind,
                "not started in a process worker's child: only the process worker serves there");
            let stop = CancellationToken::new();
            let stopped = stop.clone();
            let join = tokio::spawn(async move {
                stopped.cancelled().await;
                WorkerReport::default()
            });
            return Ok(WorkerHandle { id, stop, join });
        }
        let process = match self.config.kind {
            WorkerKind::Process => Some(self.process_pool()?),
            _ => None,
        };
        let blocking = match self.config.kind {
            WorkerKind::Async | WorkerKind::Process => BlockingExecutor::Tokio,
            WorkerKind::Thread | WorkerKind::Local => BlockingExecutor::Dedicated(Arc::new(
                ThreadPool::new(self.config.concurrency, "omniq-worker")
                    .map_err(WorkerError::Threads)?,
            )),
            other => {
                return Err(WorkerError::Config(format!(
                    "this worker cannot run the `{other}` kind"
                )));
            }
        };
        let stop = CancellationToken::new();
        let scheduler = match (self.config.scheduler_tick, self.schedules) {
            (Some(tick), Some(schedules)) => Some((
                Scheduler::new(Arc::clone(&self.queue), schedules, self.events.clone()),
                tick,
            )),
            _ => None,
        };
        let shared = Arc::new(shared::Shared::new(
            id.clone(),
            self.queue,
            self.results,
            self.events,
            self.registry,
            self.codec,
            self.config,
            blocking,
            process,
        ));
        let join = tokio::spawn(fetch::run(shared, stop.clone(), scheduler));
        Ok(WorkerHandle { id, stop, join })
    }
}

impl Worker {
    /// The children of a process worker; in a child, serves its parent instead and
    /// never returns.
    fn process_pool(&self) -> Result<crate::process::ProcessPool, WorkerError> {
        if crate::process::is_process_child() {
            crate::process::serve(self.registry.clone(), Arc::clone(&self.results), self.codec);
        }
        crate::process::ProcessPool::new(
            self.config.child_command.clone(),
            self.config.max_tasks_per_child,
        )
        .map_err(|e| WorkerError::Config(format!("cannot start process workers: {e}")))
    }
}

/// A running worker.
#[derive(Debug)]
pub struct WorkerHandle {
    id: WorkerId,
    stop: CancellationToken,
    join: JoinHandle<WorkerReport>,
}

impl WorkerHandle {
    /// The worker's id, as recorded on the tasks it claims.
    pub fn id(&self) -> &WorkerId {
        &self.id
    }

    /// Whether the worker has stopped (after a shutdown, or a crash).
    pub fn is_finished(&self) -> bool {
        self.join.is_finished()
    }

    /// Stops the worker gracefully: no new claims, running tasks get the shutdown grace
    /// period to finish, the rest are released back to their queue, and every completion
    /// and event is flushed before this returns.
    ///
    /// # Errors
    /// [`WorkerError::Crashed`] if the worker's task panicked.
    pub async fn shutdown(self) -> Result<WorkerReport, WorkerError> {
        self.stop.cancel();
        self.join
            .await
            .map_err(|e| WorkerError::Crashed(e.to_string()))
    }

    /// Runs until SIGINT or SIGTERM (Ctrl-C on every platform), then shuts down as
    /// [`WorkerHandle::shutdown`] does.
    ///
    /// # Errors
    /// As [`WorkerHandle::shutdown`].
    pub async fn run_until_signal(self) -> Result<WorkerReport, WorkerError> {
        shutdown_signal().await;
        tracing::info!(worker = %self.id, "shutdown signal received");
        self.shutdown().await
    }
}

#[cfg(test)]
mod tests {
    use omniq_memory::{MemoryEventStore, MemoryResultStore, MemoryTaskQueue};
    use omniq_models::TaskEventKind;
    use omniq_storage::{EventQuery, EventStore};

    use super::*;
    use crate::Registry;

    /// The worker events a worker of `kind` logs from start to shutdown.
    async fn worker_events(kind: WorkerKind, in_process_child: bool) -> usize {
        let store = Arc::new(MemoryEventStore::new());
        let events = EventLogger::start(Arc::clone(&store) as Arc<dyn EventStore>);
        let worker = Worker::new(
            Arc::new(MemoryTaskQueue::new()),
            Arc::new(MemoryResultStore::new()),
            events.clone(),
            Arc::new(Registry::new()),
        )
        .config(crate::WorkerConfig::default().kind(kind));
        let handle = worker.start_as(in_process_child).expect("start");
        handle.shutdown().await.expect("shutdown");
        events.flush().await;
        store
            .query(
                EventQuery::new()
                    .kinds([TaskEventKind::WorkerStarted, TaskEventKind::WorkerStopped]),
            )
            .await
            .expect("query")
            .len()
    }

    #[tokio::test]
    async fn in_a_process_child_a_worker_of_another_kind_does_not_run() {
        assert_eq!(
            worker_events(WorkerKind::Async, false).await,
            2,
            "outside a child the worker runs: started, then stopped"
        );
        assert_eq!(
            worker_events(WorkerKind::Async, true).await,
            0,
            "in a child it must not claim: it never runs"
        );
        assert_eq!(worker_events(WorkerKind::Thread, true).await, 0);
    }
}
