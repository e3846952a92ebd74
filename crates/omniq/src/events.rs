use std::time::Duration;

use omniq_async::{EventQuery, EventSubscription, Result, TaskEvent, TaskId};

use crate::runtime::Driver;

/// Lifecycle events: stored ones to query, live ones to follow.
#[derive(Debug, Clone)]
pub struct Events {
    driver: Driver,
    inner: omniq_async::Events,
}

impl Events {
    pub(crate) fn new(driver: Driver, inner: omniq_async::Events) -> Self {
        Self { driver, inner }
    }

    /// Events dropped because the event store fell behind.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped()
    }

    /// Stored events matching `query`, oldest first.
    ///
    /// # Errors
    /// A store error.
    pub fn query(&self, query: EventQuery) -> Result<Vec<TaskEvent>> {
        let inner = self.inner.clone();
        self.driver.call(async move { inner.query(query).await })
    }

    /// Stored events of one task, oldest first.
    ///
    /// # Errors
    /// A store error.
    pub fn for_task(&self, id: TaskId) -> Result<Vec<TaskEvent>> {
        let inner = self.inner.clone();
        self.driver.call(async move { inner.for_task(id).await })
    }

    /// Waits until every event logged so far is stored.
    ///
    /// # Errors
    /// [`omniq_async::Error::Closed`] if the runtime is gone.
    pub fn flush(&self) -> Result<()> {
        let inner = self.inner.clone();
        self.driver.block_on(async move { inner.flush().await })
    }

    /// Follows events logged in this process from now on.
    pub fn subscribe(&self) -> Subscription {
        Subscription {
            driver: self.driver.clone(),
            inner: Some(self.inner.subscribe()),
        }
    }
}

/// A live feed of events, read by blocking.
#[derive(Debug)]
pub struct Subscription {
    driver: Driver,
    // Taken while a call waits on the runtime, then put back.
    inner: Option<EventSubscription>,
}

impl Subscription {
    /// Blocks up to `timeout` for the next event; `Ok(None)` on timeout or once closed.
    ///
    /// # Errors
    /// [`omniq_async::Error::Closed`] if the runtime is gone.
    pub fn next_timeout(&mut self, timeout: Duration) -> Result<Option<TaskEvent>> {
        let Some(mut subscription) = self.inner.take() else {
            return Ok(None);
        };
        let (subscription, event) = self.driver.block_on(async move {
            let event = tokio::time::timeout(timeout, subscription.next())
                .await
                .ok()
                .flatten();
            (subscription, event)
        })?;
        self.inner = Some(subscription);
        Ok(event)
    }
}
