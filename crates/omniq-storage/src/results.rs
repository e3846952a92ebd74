use std::fmt::Debug;
use std::time::Duration;

use omniq_models::{TaskId, TaskResult};

use crate::{BoxFuture, StoreResult};

/// The store of task results.
///
/// Results past their `expires_at` are never returned, whether or not the backend has
/// physically removed them yet.
pub trait ResultStore: Send + Sync + Debug + 'static {
    /// Stores results, replacing any earlier result of the same task.
    ///
    /// # Errors
    /// A backend error.
    fn put(&self, results: Vec<TaskResult>) -> BoxFuture<'_, StoreResult<()>>;

    /// Reads a task's result, if it has one that has not expired.
    ///
    /// # Errors
    /// A backend error.
    fn get(&self, id: TaskId) -> BoxFuture<'_, StoreResult<Option<TaskResult>>>;

    /// Removes a task's result. Returns whether there was one.
    ///
    /// # Errors
    /// A backend error.
    fn delete(&self, id: TaskId) -> BoxFuture<'_, StoreResult<bool>>;

    /// Removes expired results, at most
    /// [`effective_purge_limit`](crate::effective_purge_limit)`(limit)` of them (0 = the
    /// default bound). Returns how many; call again until it returns 0.
    ///
    /// # Errors
    /// A backend error.
    fn purge_expired(&self, limit: usize) -> BoxFuture<'_, StoreResult<u64>>;

    /// Waits up to `timeout` for a task's result.
    ///
    /// The default polls with a growing interval (1 ms up to 100 ms); backends that can be
    /// told when a result lands override it.
    ///
    /// # Errors
    /// A backend error.
    ///
    /// # Cancel safety
    /// Cancel safe.
    fn wait_for(
        &self,
        id: TaskId,
        timeout: Duration,
    ) -> BoxFuture<'_, StoreResult<Option<TaskResult>>> {
        Box::pin(async move {
            let deadline = tokio::time::Instant::now() + timeout;
            let mut interval = Duration::from_millis(1);
            loop {
                if let Some(result) = self.get(id).await? {
                    return Ok(Some(result));
                }
                let now = tokio::time::Instant::now();
                if now >= deadline {
                    return Ok(None);
                }
                tokio::time::sleep(interval.min(deadline - now)).await;
                interval = (interval * 2).min(Duration::from_millis(100));
            }
        })
    }
}
