//! Wake-ups without LISTEN/NOTIFY: this process's enqueues wake its waiters at once, and
//! waiters poll the table for work from other processes, quickly after activity and less
//! and less often while the queues stay idle.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

/// The first pause after activity.
pub(crate) const FIRST_POLL: Duration = Duration::from_millis(10);

#[derive(Debug)]
pub(crate) struct Wakeup {
    pub(crate) tasks: Notify,
    /// The current polling pause, in microseconds, shared by this process's waiters.
    pause_micros: AtomicU64,
}

impl Wakeup {
    pub(crate) fn new() -> Self {
        Self {
            tasks: Notify::new(),
            pause_micros: AtomicU64::new(micros(FIRST_POLL)),
        }
    }

    /// Tasks were enqueued or made ready in this process.
    pub(crate) fn wake(&self) {
        // notify_waiters wakes idle waiters now; notify_one leaves a permit for a worker
        // that is between an empty dequeue and its wait.
        self.tasks.notify_waiters();
        self.tasks.notify_one();
        self.activity();
    }

    /// Work was seen: poll quickly again.
    pub(crate) fn activity(&self) {
        self.pause_micros
            .store(micros(FIRST_POLL), Ordering::Relaxed);
    }

    /// The pause before the next poll.
    pub(crate) fn pause(&self) -> Duration {
        Duration::from_micros(self.pause_micros.load(Ordering::Relaxed))
    }

    /// A poll found nothing: wait longer next time, up to `cap`.
    pub(crate) fn idle(&self, cap: Duration) {
        let next = (self.pause() * 2).min(cap.max(FIRST_POLL));
        self.pause_micros.store(micros(next), Ordering::Relaxed);
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}
