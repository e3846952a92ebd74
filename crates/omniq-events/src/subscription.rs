use omniq_models::{TaskEvent, TaskEventKind, TaskId};
use tokio::sync::broadcast;

/// A live feed of events logged in this process, optionally filtered.
#[derive(Debug)]
pub struct EventSubscription {
    receiver: broadcast::Receiver<TaskEvent>,
    task_id: Option<TaskId>,
    kinds: Vec<TaskEventKind>,
    missed: u64,
}

impl EventSubscription {
    pub(crate) fn new(receiver: broadcast::Receiver<TaskEvent>) -> Self {
        Self {
            receiver,
            task_id: None,
            kinds: Vec::new(),
            missed: 0,
        }
    }

    /// Only events of this task.
    pub fn task(mut self, task_id: TaskId) -> Self {
        self.task_id = Some(task_id);
        self
    }

    /// Only events of these kinds.
    pub fn kinds(mut self, kinds: impl IntoIterator<Item = TaskEventKind>) -> Self {
        self.kinds = kinds.into_iter().collect();
        self
    }

    /// The next matching event; `None` once the logger is closed.
    ///
    /// A subscriber that falls far behind skips the oldest events rather than holding up
    /// the logger; [`EventSubscription::missed`] counts them.
    ///
    /// # Cancel safety
    /// Cancel safe: no event is lost if the future is dropped.
    pub async fn next(&mut self) -> Option<TaskEvent> {
        loop {
            match self.receiver.recv().await {
                Ok(event) if self.matches(&event) => return Some(event),
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(n)) => self.missed += n,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// The subscription as a [`Stream`](futures_core::Stream) of matching events, ending
    /// when the logger closes: for `StreamExt` combinators, or server-sent events
    /// (`axum::response::Sse::new(omniq.events().subscribe().into_stream().map(...))`).
    pub fn into_stream(self) -> impl futures_core::Stream<Item = TaskEvent> + Send + 'static {
        futures_util::stream::unfold(self, |mut subscription| async move {
            let event = subscription.next().await?;
            Some((event, subscription))
        })
    }

    /// Events skipped because this subscriber fell behind.
    pub fn missed(&self) -> u64 {
        self.missed
    }

    fn matches(&self, event: &TaskEvent) -> bool {
        self.task_id.is_none_or(|id| event.task_id == Some(id))
            && (self.kinds.is_empty() || self.kinds.contains(&event.kind))
    }
}
