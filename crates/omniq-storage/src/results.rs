use std::collections::HashMap;
use std::fmt::Debug;
use std::time::Duration;

use omniq_models::{TaskId, TaskResult};

use crate::{BoxFuture, StoreResult};

/// The store of task results.
///
/// Results past their `expires_at` are never returned, whether or not the backend has
/// physically removed them yet.
///
/// Writes are fenced by attempt (see [`result_supersedes`]): a worker that lost its lease
/// and finishes late never replaces the result of the run that replaced it.
pub trait ResultStore: Send + Sync + Debug + 'static {
    /// Stores results. Each replaces the task's stored result only when it
    /// [supersedes](result_supersedes) it, in one atomic step per task; several results
    /// of one task in the batch are settled the same way ([`winning_results`]).
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

/// Whether `new` may replace `current` as a task's stored result.
///
/// Results are fenced by the attempt they come from: a later attempt wins; at the same
/// attempt a success wins over a failure (the `lease_lost` failure recorded for a run whose
/// worker then finished it after all), and otherwise the newer write wins (a re-send). So a
/// worker that lost its lease and finishes late never replaces the result of the run that
/// took over, whatever order the writes land in.
pub fn result_supersedes(new: &TaskResult, current: &TaskResult) -> bool {
    new.attempts > current.attempts
        || (new.attempts == current.attempts && (new.outcome.is_ok() || current.outcome.is_err()))
}

/// One result per task out of `results`, the one that [supersedes](result_supersedes) the
/// others, in the order each task first appears. For backends whose upsert must not touch
/// a row twice in one statement.
pub fn winning_results(results: Vec<TaskResult>) -> Vec<TaskResult> {
    let mut index: HashMap<TaskId, usize> = HashMap::with_capacity(results.len());
    let mut winners: Vec<TaskResult> = Vec::with_capacity(results.len());
    for result in results {
        match index.get(&result.task_id) {
            Some(&at) => {
                if result_supersedes(&result, &winners[at]) {
                    winners[at] = result;
                }
            }
            None => {
                index.insert(result.task_id, winners.len());
                winners.push(result);
            }
        }
    }
    winners
}
