//! The PostgreSQL task queue.

mod claim;
mod complete;
mod enqueue;
mod inspect;
mod limiter;
mod maintenance;
mod notify;
mod pause;
mod progress;
mod settle;
mod statistics;

use std::time::Duration;

use crate::PgBackend;

/// The task queue of a [`PgBackend`].
///
/// Claims take rows with `FOR UPDATE SKIP LOCKED`, so any number of workers in any number
/// of processes share a queue without blocking one another; enqueues, retries and
/// unblocked dependents `NOTIFY` waiting workers.
#[derive(Debug, Clone)]
pub struct PgTaskQueue {
    backend: PgBackend,
}

impl PgTaskQueue {
    pub(crate) fn new(backend: PgBackend) -> Self {
        Self { backend }
    }
}

omniq_sql::forward_task_queue!(PgTaskQueue, omniq_storage::Capabilities::all());

impl PgTaskQueue {
    /// Waits until a task may be ready in `queues`, or `timeout`.
    async fn wait_until_ready(&self, queues: Vec<String>, timeout: Duration) {
        let listener = &self.backend.shared.listener;
        // Subscribe first: a wake-up sent while the listener starts is kept.
        let subscription = listener.tasks.subscribe(&queues);
        listener.ensure_started();
        subscription.wait(timeout).await;
    }
}
