//! What every backend's enqueue shares: parents named by tasks of the same batch.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use omniq_models::{TaskId, TaskSpec};

use crate::EnqueueOutcome;

/// The tasks of one enqueue batch that turned out duplicates of other tasks, so that a later
/// task of the batch naming one of them as a parent depends on the task actually stored.
///
/// A parent deduplicated against a live (or windowed) task is not stored; without this its
/// dependents would name a task that does not exist. Every backend routes a batch through
/// one of these, so they agree: the dependent waits for the existing task.
///
/// ```
/// use omniq_models::{TaskId, TaskOptions, TaskSpec};
/// use omniq_storage::{BatchAliases, EnqueueOutcome};
///
/// let parent = TaskSpec::new("a", vec![], TaskOptions::default(), chrono::Utc::now());
/// let existing = TaskId::new();
/// let mut aliases = BatchAliases::default();
/// aliases.record(parent.id, &EnqueueOutcome::Duplicate { existing });
/// let mut child = TaskSpec::new(
///     "b",
///     vec![],
///     TaskOptions::default().depends_on(parent.id),
///     chrono::Utc::now(),
/// );
/// aliases.resolve(&mut child);
/// assert_eq!(child.depends_on, vec![existing]);
/// ```
#[derive(Debug, Default, Clone)]
pub struct BatchAliases {
    /// Batch task id → the id of the task stored in its place.
    to_existing: HashMap<TaskId, TaskId>,
}

impl BatchAliases {
    /// Notes what enqueueing the batch's task `id` did.
    pub fn record(&mut self, id: TaskId, outcome: &EnqueueOutcome) {
        if let EnqueueOutcome::Duplicate { existing } = outcome
            && *existing != id
        {
            self.to_existing.insert(id, *existing);
        }
    }

    /// Notes the outcomes of several tasks, given in the same order as their ids.
    pub fn record_all(&mut self, ids: &[TaskId], outcomes: &[EnqueueOutcome]) {
        for (id, outcome) in ids.iter().zip(outcomes) {
            self.record(*id, outcome);
        }
    }

    /// Points `spec`'s parents at the tasks stored in their place (a parent named twice
    /// that way is kept once).
    pub fn resolve(&self, spec: &mut TaskSpec) {
        if !self.applies_to(spec) {
            return;
        }
        let mut seen = HashSet::with_capacity(spec.depends_on.len());
        let parents = std::mem::take(&mut spec.depends_on);
        spec.depends_on = parents
            .into_iter()
            .map(|p| self.to_existing.get(&p).copied().unwrap_or(p))
            .filter(|p| seen.insert(*p))
            .collect();
    }

    /// [`BatchAliases::resolve`] for a borrowed spec: a copy only when a parent changes.
    pub fn resolved<'a>(&self, spec: &'a TaskSpec) -> Cow<'a, TaskSpec> {
        if self.applies_to(spec) {
            let mut owned = spec.clone();
            self.resolve(&mut owned);
            Cow::Owned(owned)
        } else {
            Cow::Borrowed(spec)
        }
    }

    fn applies_to(&self, spec: &TaskSpec) -> bool {
        !self.to_existing.is_empty()
            && spec
                .depends_on
                .iter()
                .any(|p| self.to_existing.contains_key(p))
    }
}
