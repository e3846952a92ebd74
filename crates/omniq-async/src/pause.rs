//! Pausing and resuming queues, stored so that a pause outlives every worker's restart.

use omniq_models::{TaskEvent, TaskEventKind};
use omniq_storage::{Capability, QueueStats};

use crate::{AsyncOmniQ, Result};

impl AsyncOmniQ {
    /// Pauses a queue: within one heartbeat interval (10 s by default) no worker of the
    /// fleet starts another of its tasks, until [`resume_queue`](Self::resume_queue). The
    /// pause is stored: it holds across worker restarts and deploys.
    ///
    /// What a pause does not stop: enqueueing (tasks wait, Queued); tasks already running
    /// (they run to their end, and a retry waits for the resume); the scheduler (its fires
    /// are enqueued and wait). A task a worker had claimed but not started when it saw the
    /// pause is given back, its attempt with it. Returns whether the queue was running
    /// (`false`: it was paused already); a change is logged as a
    /// [`TaskEventKind::QueuePaused`] event.
    ///
    /// ```
    /// # use omniq_async::{AsyncOmniQ, Settings};
    /// # #[tokio::main] async fn main() -> omniq_async::Result<()> {
    /// let omniq = AsyncOmniQ::from_settings(Settings::memory()).await?;
    /// assert!(omniq.pause_queue("emails").await?);
    /// assert!(omniq.queue_stats("emails").await?.paused);
    /// assert_eq!(omniq.paused_queues().await?, ["emails"]);
    /// assert!(omniq.resume_queue("emails").await?);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`ErrorKind::Unsupported`](crate::ErrorKind::Unsupported) when the task queue's
    /// backend cannot store it ([`Capability::QueuePause`]), an invalid (empty) name, or a
    /// store error.
    pub async fn pause_queue(&self, queue: impl Into<String>) -> Result<bool> {
        self.set_paused(queue.into(), true).await
    }

    /// Resumes a paused queue: workers claim from it again within one heartbeat interval.
    /// Returns whether it was paused; a change is logged as a
    /// [`TaskEventKind::QueueResumed`] event.
    ///
    /// # Errors
    /// As [`pause_queue`](Self::pause_queue).
    pub async fn resume_queue(&self, queue: impl Into<String>) -> Result<bool> {
        self.set_paused(queue.into(), false).await
    }

    /// The paused queues, sorted; empty on a backend that cannot pause queues.
    ///
    /// # Errors
    /// A store error.
    pub async fn paused_queues(&self) -> Result<Vec<String>> {
        if !self.capabilities().supports(Capability::QueuePause) {
            return Ok(Vec::new());
        }
        Ok(self.inner.stores.queue.paused_queues().await?)
    }

    async fn set_paused(&self, queue: String, paused: bool) -> Result<bool> {
        let changed = self
            .inner
            .stores
            .queue
            .set_queue_paused(queue.clone(), paused)
            .await?;
        if changed {
            let kind = if paused {
                TaskEventKind::QueuePaused
            } else {
                TaskEventKind::QueueResumed
            };
            let mut event = TaskEvent::new(kind);
            event.queue = Some(queue.clone());
            self.inner.events.log(event);
            tracing::info!(%queue, paused, "queue {}", if paused { "paused" } else { "resumed" });
        }
        Ok(changed)
    }

    /// Sets `paused` on each of `stats`, and adds the paused queues `stats` lacks (with no
    /// tasks) when `add_missing`.
    pub(crate) async fn mark_paused(
        &self,
        stats: &mut Vec<QueueStats>,
        add_missing: bool,
    ) -> Result<()> {
        let paused = self.paused_queues().await?;
        for queue in stats.iter_mut() {
            queue.paused = paused.contains(&queue.queue);
        }
        if add_missing {
            let missing: Vec<String> = paused
                .into_iter()
                .filter(|name| !stats.iter().any(|s| &s.queue == name))
                .collect();
            if !missing.is_empty() {
                stats.extend(missing.into_iter().map(|queue| {
                    let mut empty = QueueStats::new(queue, Vec::new(), None);
                    empty.paused = true;
                    empty
                }));
                stats.sort_by(|a, b| a.queue.cmp(&b.queue));
            }
        }
        Ok(())
    }
}
