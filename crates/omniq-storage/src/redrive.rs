//! Re-driving dead letters together with their results, in the one safe order.

use omniq_models::{TaskId, TaskState};

use crate::{RedriveTarget, ResultStore, StoreResult, TaskQuery, TaskQueue};

/// Dead letters read per page when a whole queue (or every queue) is re-driven.
const PAGE: usize = 500;

/// Sends dead letters back to their queues and removes their old failure results, so that
/// whoever waits on a re-driven task hears of its new run, not of its old failure.
///
/// The results are removed *before* the tasks are queued again: the other way round, a
/// fast worker could run a re-driven task and store its new result before the old one was
/// deleted, and the delete would take the new one. Every path that re-drives (the facade,
/// the CLI, a dashboard) goes through here. A task that fails between the two steps is
/// left for the next re-drive. Returns the ids re-driven.
///
/// # Errors
/// A store error. Results removed before an error belong to tasks still `Failed`: their
/// failure stays in the task's error history, and a re-drive done again completes the job.
pub async fn redrive_with_results(
    queue: &dyn TaskQueue,
    results: &dyn ResultStore,
    target: RedriveTarget,
) -> StoreResult<Vec<TaskId>> {
    let candidates = match target {
        RedriveTarget::Tasks(ids) => ids,
        RedriveTarget::Queue(name) => dead_letters(queue, Some(name)).await?,
        RedriveTarget::All => dead_letters(queue, None).await?,
    };
    for id in &candidates {
        results.delete(*id).await?;
    }
    queue.redrive(RedriveTarget::Tasks(candidates)).await
}

async fn dead_letters(queue: &dyn TaskQueue, name: Option<String>) -> StoreResult<Vec<TaskId>> {
    let mut ids = Vec::new();
    loop {
        let page = queue
            .list(TaskQuery {
                queue: name.clone(),
                states: vec![TaskState::Failed],
                offset: ids.len(),
                limit: PAGE,
            })
            .await?;
        let last = page.len() < PAGE;
        ids.extend(page.into_iter().map(|record| record.spec.id));
        if last {
            return Ok(ids);
        }
    }
}
