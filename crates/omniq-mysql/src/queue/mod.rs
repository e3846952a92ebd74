//! The MySQL task queue.

mod claim;
mod complete;
mod enqueue;
mod inspect;
mod limiter;
mod maintenance;
mod pause;
mod progress;
mod settle;

use std::time::Duration;

use crate::MySqlBackend;

/// The task queue of a [`MySqlBackend`].
///
/// Claims take rows with `FOR UPDATE SKIP LOCKED`, so any number of workers in any number
/// of processes share a queue without blocking one another.
#[derive(Debug, Clone)]
pub struct MySqlTaskQueue {
    backend: MySqlBackend,
}

impl MySqlTaskQueue {
    pub(crate) fn new(backend: MySqlBackend) -> Self {
        Self { backend }
    }

    /// Wakes this process's waiters when some tasks became ready.
    fn wake_if(&self, ready: bool) {
        if ready {
            self.backend.wakeup().wake();
        }
    }
}

omniq_sql::forward_task_queue!(MySqlTaskQueue, omniq_storage::Capabilities::all());

impl MySqlTaskQueue {
    /// Waits until a task may be ready in `queues`, or `timeout`.
    async fn wait_until_ready(&self, queues: Vec<String>, timeout: Duration) {
        let wakeup = self.backend.wakeup();
        let deadline = tokio::time::Instant::now() + timeout;
        // Registered before the first look, so a wake-up from now on is not missed.
        let notified = wakeup.tasks.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        loop {
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return;
            }
            let pause = wakeup.pause().min(deadline - now);
            tokio::select! {
                () = &mut notified => return,
                () = tokio::time::sleep(pause) => {}
            }
            // Another process may have enqueued: look, cheaply. An error is left to
            // the caller's next dequeue to report.
            if let Ok(true) = self.any_ready(&queues).await {
                wakeup.activity();
                return;
            }
            wakeup.idle(timeout);
        }
    }
}
