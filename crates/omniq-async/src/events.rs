use omniq_events::EventSubscription;
use omniq_models::{TaskEvent, TaskId};
use omniq_storage::EventQuery;

use crate::{AsyncOmniQ, Result};

/// Lifecycle events: stored ones to query, live ones to follow.
#[derive(Debug, Clone)]
pub struct Events {
    omniq: AsyncOmniQ,
}

impl Events {
    pub(crate) fn new(omniq: AsyncOmniQ) -> Self {
        Self { omniq }
    }

    /// Stored events matching `query`, oldest first.
    ///
    /// Events are written in the background; call [`Events::flush`] first to see the
    /// latest ones.
    ///
    /// # Errors
    /// A store error.
    pub async fn query(&self, query: EventQuery) -> Result<Vec<TaskEvent>> {
        Ok(self.omniq.inner.stores.events.query(query).await?)
    }

    /// Stored events of one task, oldest first.
    ///
    /// # Errors
    /// A store error.
    pub async fn for_task(&self, id: TaskId) -> Result<Vec<TaskEvent>> {
        self.query(EventQuery::task(id)).await
    }

    /// Follows events from now on: this process's, and, when the event store publishes
    /// them (Redis), every other process's too.
    ///
    /// Events logged by one process arrive in the order it logged them. Events of
    /// different processes interleave as they arrive: a task enqueued here and run by a
    /// worker elsewhere can show the worker's `Started` before this process's `Enqueued`,
    /// because the producer logs `Enqueued` after the store accepted the task, by which
    /// time a worker may have claimed it. Order one task's events by their kind or `at`
    /// when that matters.
    pub fn subscribe(&self) -> EventSubscription {
        self.omniq.inner.events.subscribe()
    }

    /// Waits until every event logged so far is stored.
    pub async fn flush(&self) {
        self.omniq.inner.events.flush().await;
    }

    /// Events dropped because the event store fell behind.
    pub fn dropped(&self) -> u64 {
        self.omniq.inner.events.dropped()
    }
}
