//! Which of the worker's queues are paused in the store, read again once per heartbeat
//! interval (by the claim loop, and by a loop of its own while every slot is busy), so
//! that a pause or a resume reaches every worker of the fleet within one.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use omniq_storage::{Capability, StoreErrorKind, StoreResult, TaskQueue};

use tokio_util::sync::CancellationToken;

use super::resilience::bounded;
use super::shared::Shared;

/// Reads the paused queues every heartbeat whatever the claim loop does: while every slot
/// is busy it does not claim, and a lease waiting in the buffer must still see a pause
/// before it starts.
pub(crate) async fn watch(shared: Arc<Shared>, stop: CancellationToken) {
    let mut ticks = tokio::time::interval(shared.config.heartbeat);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = stop.cancelled() => return,
        }
        let read = shared.paused.refresh_if_due(
            shared.queue.as_ref(),
            shared.config.heartbeat,
            shared.config.store_timeout,
        );
        tokio::select! {
            _ = read => {}
            () = stop.cancelled() => return,
        }
    }
}

/// The paused queues as last read.
#[derive(Debug)]
pub(crate) struct PausedQueues {
    /// Whether the store keeps paused queues; without, nothing is ever paused. Cleared
    /// when a store that declares the capability refuses the read as unsupported.
    supported: AtomicBool,
    state: Mutex<Read>,
}

#[derive(Debug, Default)]
struct Read {
    paused: BTreeSet<String>,
    /// When the set was last read, or a read last failed; `None` before the first try.
    at: Option<Instant>,
    /// Whether a read has ever succeeded.
    known: bool,
}

impl PausedQueues {
    pub(crate) fn new(queue: &dyn TaskQueue) -> Self {
        Self {
            supported: AtomicBool::new(queue.capabilities().supports(Capability::QueuePause)),
            state: Mutex::new(Read::default()),
        }
    }

    fn supported(&self) -> bool {
        self.supported.load(Ordering::Relaxed)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Read> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reads the paused set from the store when the last read is `every` old.
    ///
    /// # Errors
    /// The set was never read and cannot be read now. A failed read after a good one
    /// keeps the set last read (logged) until the next interval.
    pub(crate) async fn refresh_if_due(
        &self,
        store: &dyn TaskQueue,
        every: Duration,
        limit: Duration,
    ) -> StoreResult<()> {
        if !self.supported() {
            return Ok(());
        }
        let (due, known) = {
            let state = self.state();
            (state.at.is_none_or(|at| at.elapsed() >= every), state.known)
        };
        if !due {
            return if known {
                Ok(())
            } else {
                // The last try failed moments ago: no claim until a read succeeds.
                Err(omniq_storage::StoreError::unavailable(
                    "store",
                    "the paused queues could not be read yet",
                ))
            };
        }
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
                Ok(())
            }
            Err(err) if err.kind() == StoreErrorKind::Unsupported => {
                // Declared but not implemented (a backend of another crate): nothing is
                // paused, rather than no claim ever.
                tracing::warn!(%err, "the store cannot list paused queues; none is paused");
                self.supported.store(false, Ordering::Relaxed);
                Ok(())
            }
            Err(err) => {
                let mut state = self.state();
                state.at = Some(Instant::now());
                if state.known {
                    tracing::warn!(%err, "cannot read the paused queues; keeping the last read");
                    Ok(())
                } else {
                    Err(err)
                }
            }
        }
    }

    /// The queues of `queues` to claim from now, in their order, the paused ones left out;
    /// reads the paused set first when it is due ([`refresh_if_due`](Self::refresh_if_due)).
    ///
    /// # Errors
    /// The set was never read and cannot be read now: claiming without knowing it could
    /// start tasks of a paused queue, so the caller waits and tries again.
    pub(crate) async fn claimable(
        &self,
        store: &dyn TaskQueue,
        queues: &[String],
        every: Duration,
        limit: Duration,
    ) -> StoreResult<Vec<String>> {
        self.refresh_if_due(store, every, limit).await?;
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
        self.supported() && self.state().paused.contains(queue)
    }
}
