use std::fmt::Debug;

use chrono::{DateTime, Utc};
use omniq_models::{TaskEvent, TaskEventKind, TaskId};

use crate::{BoxFuture, StoreResult};

/// Filters for reading events back.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct EventQuery {
    /// Only this task's events.
    pub task_id: Option<TaskId>,
    /// Only this queue's events.
    pub queue: Option<String>,
    /// Only these kinds (empty = any).
    pub kinds: Vec<TaskEventKind>,
    /// At or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Before this time.
    pub until: Option<DateTime<Utc>>,
    /// At most this many, oldest first (0 = a default of 1000; larger than
    /// [`MAX_LIST_LIMIT`](crate::MAX_LIST_LIMIT) is clamped).
    pub limit: usize,
}

impl EventQuery {
    /// Every event, oldest first, the default page.
    pub fn new() -> Self {
        Self::default()
    }

    /// Only events of this task.
    #[must_use]
    pub fn task_id(mut self, task_id: TaskId) -> Self {
        self.task_id = Some(task_id);
        self
    }

    /// Only events of this queue.
    #[must_use]
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }

    /// Only events of these kinds.
    #[must_use]
    pub fn kinds(mut self, kinds: impl IntoIterator<Item = TaskEventKind>) -> Self {
        self.kinds = kinds.into_iter().collect();
        self
    }

    /// Only events at or after `since`.
    #[must_use]
    pub fn since(mut self, since: DateTime<Utc>) -> Self {
        self.since = Some(since);
        self
    }

    /// Only events before `until`.
    #[must_use]
    pub fn until(mut self, until: DateTime<Utc>) -> Self {
        self.until = Some(until);
        self
    }

    /// At most this many events.
    #[must_use]
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    /// Events of one task.
    pub fn task(task_id: TaskId) -> Self {
        Self {
            task_id: Some(task_id),
            ..Self::default()
        }
    }

    /// The limit to apply: 0 means the default of 1000, anything above
    /// [`MAX_LIST_LIMIT`](crate::MAX_LIST_LIMIT) is clamped to it.
    pub fn effective_limit(&self) -> usize {
        if self.limit == 0 {
            crate::MAX_LIST_LIMIT
        } else {
            self.limit.min(crate::MAX_LIST_LIMIT)
        }
    }

    /// Whether `event` passes the filters (for backends that filter in memory).
    pub fn matches(&self, event: &TaskEvent) -> bool {
        self.task_id.is_none_or(|id| event.task_id == Some(id))
            && self
                .queue
                .as_deref()
                .is_none_or(|queue| event.queue.as_deref() == Some(queue))
            && (self.kinds.is_empty() || self.kinds.contains(&event.kind))
            && self.since.is_none_or(|since| event.at >= since)
            && self.until.is_none_or(|until| event.at < until)
    }
}

/// The store of lifecycle events.
pub trait EventStore: Send + Sync + Debug + 'static {
    /// Appends events.
    ///
    /// # Errors
    /// A backend error.
    fn append(&self, events: Vec<TaskEvent>) -> BoxFuture<'_, StoreResult<()>>;

    /// Reads events matching `query`, oldest first.
    ///
    /// # Errors
    /// A backend error.
    fn query(&self, query: EventQuery) -> BoxFuture<'_, StoreResult<Vec<TaskEvent>>>;

    /// Removes events older than `before`, oldest first, at most
    /// [`effective_purge_limit`](crate::effective_purge_limit)`(limit)` of them (0 = the
    /// default bound). Returns how many; call again until it returns 0.
    ///
    /// # Errors
    /// A backend error.
    fn purge_before(&self, before: DateTime<Utc>, limit: usize) -> BoxFuture<'_, StoreResult<u64>>;

    /// Follows the events any process appends from now on, for stores that publish them
    /// (Redis pub/sub). `Ok(None)`, the default: this store cannot, and live subscribers see
    /// their own process's events only. The feed ends when the receiver is dropped.
    ///
    /// # Errors
    /// A backend error while subscribing.
    fn follow(&self) -> BoxFuture<'_, StoreResult<Option<tokio::sync::mpsc::Receiver<TaskEvent>>>> {
        Box::pin(async { Ok(None) })
    }
}
