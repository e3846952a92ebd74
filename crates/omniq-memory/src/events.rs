use std::collections::VecDeque;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use omniq_models::TaskEvent;
use omniq_storage::{BoxFuture, EventQuery, EventStore, StoreResult, effective_purge_limit};

use crate::lock::lock;

/// Events in memory, oldest dropped beyond a capacity.
#[derive(Debug)]
pub struct MemoryEventStore {
    events: Mutex<VecDeque<TaskEvent>>,
    capacity: usize,
}

impl Default for MemoryEventStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryEventStore {
    /// Events kept at most by [`MemoryEventStore::new`].
    pub const DEFAULT_CAPACITY: usize = 1_000_000;

    /// An empty store keeping the newest [`Self::DEFAULT_CAPACITY`] events.
    pub fn new() -> Self {
        Self::with_capacity(Self::DEFAULT_CAPACITY)
    }

    /// An empty store keeping the newest `capacity` events.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            events: Mutex::new(VecDeque::new()),
            capacity: capacity.max(1),
        }
    }
}

impl EventStore for MemoryEventStore {
    fn append(&self, events: Vec<TaskEvent>) -> BoxFuture<'_, StoreResult<()>> {
        let mut stored = lock(&self.events);
        stored.extend(events);
        let excess = stored.len().saturating_sub(self.capacity);
        stored.drain(..excess);
        Box::pin(async { Ok(()) })
    }

    fn query(&self, query: EventQuery) -> BoxFuture<'_, StoreResult<Vec<TaskEvent>>> {
        let found: Vec<_> = lock(&self.events)
            .iter()
            .filter(|e| query.matches(e))
            .take(query.effective_limit())
            .cloned()
            .collect();
        Box::pin(async move { Ok(found) })
    }

    fn purge_before(&self, before: DateTime<Utc>, limit: usize) -> BoxFuture<'_, StoreResult<u64>> {
        let mut budget = effective_purge_limit(limit);
        let mut stored = lock(&self.events);
        let count = stored.len();
        stored.retain(|e| {
            if budget > 0 && e.at < before {
                budget -= 1;
                false
            } else {
                true
            }
        });
        let purged = (count - stored.len()) as u64;
        Box::pin(async move { Ok(purged) })
    }
}
