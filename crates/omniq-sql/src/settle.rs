//! Settling dependents: what becomes of blocked tasks when their parents finish.

use std::collections::HashMap;
use std::future::Future;

use chrono::{DateTime, Utc};
use omniq_models::{DependencyVerdict, RunWhen, TaskId, TaskState};
use omniq_storage::{StateChange, StoreResult};

use crate::{Dialect, ReadColumns, parse_run_when, parse_state, store_error};

/// A blocked task found by [`Dependents::blocked_children`].
#[derive(Debug, Clone)]
pub struct BlockedChild {
    /// The blocked task.
    pub child: TaskId,
    /// When it may run, given its parents' end states.
    pub run_when: RunWhen,
    /// The finished parent it was found through (named when it is cancelled).
    pub parent: TaskId,
}

impl BlockedChild {
    /// A blocked child from a row of `id`, `run_when` and `parent_id`.
    ///
    /// # Errors
    /// A backend error for a row that cannot be read.
    pub fn from_row<D: Dialect>(row: &D::Row) -> StoreResult<Self> {
        Ok(Self {
            child: D::task_id(row, "id")?,
            run_when: parse_run_when::<D>(&row.text("run_when").map_err(store_error::<D>)?)?,
            parent: D::task_id(row, "parent_id")?,
        })
    }
}

/// A `(child, parent state)` pair from a row of `child_id` and `state`, as
/// [`Dependents::parent_states`] returns them.
///
/// # Errors
/// A backend error for a row that cannot be read.
pub fn parent_state_from_row<D: Dialect>(row: &D::Row) -> StoreResult<(TaskId, TaskState)> {
    Ok((
        D::task_id(row, "child_id")?,
        parse_state::<D>(&row.text("state").map_err(store_error::<D>)?)?,
    ))
}

/// The four statements a SQL backend runs to settle dependents, on the caller's
/// transaction. [`settle_dependents`] is the algorithm around them.
pub trait Dependents: Send {
    /// The blocked children of `parents`, **locked** against a concurrent settle of the
    /// same child (`FOR UPDATE`, where the database has row locks; SQLite's write lock
    /// already serialises writers). Without the lock, two parents finishing at once in two
    /// transactions could each read the other still running and leave the child blocked
    /// for good.
    fn blocked_children(
        &mut self,
        parents: &[TaskId],
    ) -> impl Future<Output = StoreResult<Vec<BlockedChild>>> + Send;

    /// The state of every parent of each of `children`, as `(child, parent state)` pairs.
    fn parent_states(
        &mut self,
        children: &[TaskId],
    ) -> impl Future<Output = StoreResult<Vec<(TaskId, TaskState)>>> + Send;

    /// Moves blocked `children` to `queued` (or `scheduled` if their run time is still
    /// ahead); returns their changes.
    fn release(
        &mut self,
        children: &[TaskId],
        now: DateTime<Utc>,
    ) -> impl Future<Output = StoreResult<Vec<StateChange>>> + Send;

    /// Cancels blocked children, each with its reason; returns their changes.
    fn cancel(
        &mut self,
        children: &[(TaskId, String)],
        now: DateTime<Utc>,
    ) -> impl Future<Output = StoreResult<Vec<StateChange>>> + Send;
}

/// Unblocks or cancels the blocked dependents of tasks that just finished, then the
/// dependents of those it cancelled, and so on: four statements per generation however
/// many tasks. Runs inside the caller's transaction, so a parent's end and its dependents'
/// new states commit together. The changes are appended to `changes`.
///
/// # Errors
/// The first error of a statement; the caller's transaction should then roll back.
pub async fn settle_dependents<S: Dependents>(
    statements: &mut S,
    finished: Vec<TaskId>,
    now: DateTime<Utc>,
    changes: &mut Vec<StateChange>,
) -> StoreResult<()> {
    let mut finished = finished;
    while !finished.is_empty() {
        let blocked = statements.blocked_children(&finished).await?;
        if blocked.is_empty() {
            break;
        }
        // A child blocked on several of the finished tasks is judged once.
        let mut children: HashMap<TaskId, BlockedChild> = HashMap::with_capacity(blocked.len());
        for found in blocked {
            children.entry(found.child).or_insert(found);
        }
        let ids: Vec<TaskId> = children.keys().copied().collect();
        let mut parent_states: HashMap<TaskId, Vec<TaskState>> = HashMap::new();
        for (child, state) in statements.parent_states(&ids).await? {
            parent_states.entry(child).or_default().push(state);
        }
        let mut run = Vec::new();
        let mut cancel = Vec::new();
        for found in children.values() {
            let states = parent_states
                .get(&found.child)
                .map_or(&[][..], Vec::as_slice);
            match found.run_when.verdict(states) {
                DependencyVerdict::Wait => {}
                DependencyVerdict::Run => run.push(found.child),
                DependencyVerdict::Cancel => cancel.push((
                    found.child,
                    format!("dependency {} did not settle as required", found.parent),
                )),
            }
        }
        // A stable order: statements lock rows in it, and callers see changes in it.
        run.sort_unstable();
        cancel.sort_unstable_by_key(|(id, _)| *id);
        if !run.is_empty() {
            changes.extend(statements.release(&run, now).await?);
        }
        finished = Vec::with_capacity(cancel.len());
        if !cancel.is_empty() {
            for change in statements.cancel(&cancel, now).await? {
                finished.push(change.task_id);
                changes.push(change);
            }
        }
    }
    Ok(())
}
