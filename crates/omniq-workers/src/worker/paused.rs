//! Which of the worker's queues are paused in the store, read again once per heartbeat
//! interval, so that a pause or a resume reaches every worker of the fleet within one.

use std::collections::BTreeSet;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use omniq_storage::{Capability, StoreResult, TaskQueue};

use super::resilience::bounded;

/// The paused queues as last read.
#[derive(Debug)]
pub(crate) struct PausedQueues {
    /// Whether the store keeps paused queues at all; without, nothing is ever paused.
    supported: bool,
    state: Mutex<Read>,
}

#[derive(Debug, Default)]
struct Read {
    paused: BTreeSet<String>,
    /// When the set was last read, or a read last failed; `None` before the first read.
    at: Option<Instant>,
    /// Whether a read has ever succeeded.
    known: bool,
}

impl PausedQueues {
    pub(crate) fn new(queue: &dyn TaskQueue) -> Self {
        Self {
            supported: queue.capabilities().supports(Capability::QueuePause),
            state: Mutex::new(Read::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Read> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The queues of `queues` to claim from now, in their order: the paused ones left
    /// out. Reads the paused set from the store when the last read is `every` old.
    ///
    /// # Errors
    /// The set was never read and cannot be read now: claiming without knowing it could
    /// start tasks of a paused queue, so the caller waits and tries again. A failed read
    /// after a good one keeps the set last read (logged) until the next interval.
    pub(crate) async fn claimable(
        &self,
        store: &dyn TaskQueue,
        queues: &[String],
        every: Duration,
        limit: Duration,
    ) -> StoreResult<Vec<String>> {
        if !self.supported {
            return Ok(queues.to_vec());
        }
        let due = self.state().at.is_none_or(|at| at.elapsed() >= every);
        if due {
            match bounded(limit, store.paused_queues()).await {
                Ok(paused) => {
                    let mut state = self.state();
                    let paused: BTreeSet<String> = paused.into_iter().collect();
                    if state.known && paused != state.paused {
                        tracing::info!(paused = ?paused, "the paused queues changed");
                    }
                    *state = Read {
                        paused,
                        at: Some(Instant::now()),
                        known: true,
                    };
                }
                Err(err) => {
                    let mut state = self.state();
                    if !state.known {
                        return Err(err);
                    }
                    tracing::warn!(%err, "cannot read the paused queues; keeping the last read");
                    state.at = Some(Instant::now());
                }
            }
        }
        let state = self.state();
        Ok(queues
            .iter()
            .filter(|queue| !state.paused.contains(*queue))
            .cloned()
            .collect())
    }

    /// Whether `queue` was paused at the last read: a lease of it still waiting in the
    /// buffer is given back rather than started.
    pub(crate) fn is_paused(&self, queue: &str) -> bool {
        self.supported && self.state().paused.contains(queue)
    }
}
