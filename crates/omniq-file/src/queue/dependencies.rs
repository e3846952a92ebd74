//! Dependencies: a task that waits for others (`depends_on`).
//!
//! A blocked task is *evaluated*: it registers itself in each live parent's list of
//! children (a conditional replace of the parent, refused once the parent has finished,
//! so a parent finishing at the same moment either lists it or is seen finished), then
//! reads its parents' states and is unblocked or cancelled when they have settled. A
//! parent that finishes evaluates its children.
//!
//! A process killed between a parent's end and its children's evaluation (or between a
//! child's creation and its first evaluation) leaves a child blocked with nothing to wake
//! it: every blocked task therefore has a marker under `blocked/`, written before the
//! task, that the maintenance every worker runs ([`FileTaskQueue::recover`]) sweeps every
//! few seconds, evaluating each task still blocked and dropping the markers of those that
//! are not.

use std::sync::PoisonError;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use omniq_models::{DependencyVerdict, TaskId, TaskState};
use omniq_storage::kv_task::ready_state;
use omniq_storage::{StateChange, StoreResult};

use super::tasks::{self, CAS_ROUNDS, Found};
use super::{FileTaskQueue, keys};

/// How often one process sweeps the blocked tasks.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// Blocked tasks evaluated at once.
const JUDGED_AT_ONCE: usize = 32;

/// When this process last swept the blocked tasks.
#[derive(Debug, Default)]
pub(crate) struct BlockedSweep {
    started: Option<Instant>,
}

/// What an evaluation did to a blocked task.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Evaluated {
    /// Still waiting for its parents.
    Waiting,
    /// Ready to run now (or at its `run_at`).
    Unblocked,
    /// Cancelled: its parents settled against it.
    Cancelled,
    /// Not blocked (any more), or gone.
    NotBlocked,
}

impl FileTaskQueue {
    /// Evaluates the blocked task `id` (see the module docs), recording what changed.
    pub(super) async fn evaluate(
        &self,
        id: TaskId,
        now: DateTime<Utc>,
        changes: &mut Vec<StateChange>,
    ) -> StoreResult<Evaluated> {
        for _ in 0..CAS_ROUNDS {
            let Some(current) = tasks::read(self.objects(), id).await? else {
                return Ok(Evaluated::NotBlocked);
            };
            if current.task.record.state != TaskState::Blocked {
                return Ok(Evaluated::NotBlocked);
            }
            let spec = &current.task.record.spec;
            let mut states = Vec::with_capacity(spec.depends_on.len());
            let mut against = None;
            for parent in &spec.depends_on {
                let state = tasks::update(self.objects(), *parent, |task| {
                    let state = task.record.state;
                    if state.is_terminal() || task.children.contains(&id) {
                        (state, false)
                    } else {
                        task.children.push(id);
                        (state, true)
                    }
                })
                .await?;
                // A parent that is gone (purged) counts for nothing, as in every store.
                if let Some(state) = state {
                    if state.is_terminal() && state != TaskState::Succeeded && against.is_none() {
                        against = Some(*parent);
                    }
                    states.push(state);
                }
            }
            let mut next = current.task.clone();
            let mut filing = None;
            let verdict = spec.run_when.verdict(&states);
            match verdict {
                DependencyVerdict::Wait => return Ok(Evaluated::Waiting),
                DependencyVerdict::Run => {
                    next.record.state = ready_state(spec.run_at, now);
                    next.record.updated_at = now;
                    // Filed first: see `keys`.
                    filing = self.file(&next).await?;
                }
                DependencyVerdict::Cancel => {
                    let reason = match against.or_else(|| spec.depends_on.first().copied()) {
                        Some(parent) => format!("dependency {parent} did not settle as required"),
                        None => "its parents had already settled against it".to_owned(),
                    };
                    next.finish(TaskState::Cancelled, Some(reason), now);
                }
            }
            if tasks::write(self.objects(), &mut next, &current.version)
                .await?
                .is_some()
            {
                self.refile_if_stalled(filing).await;
                changes.push(next.change());
                return Ok(if verdict == DependencyVerdict::Run {
                    Evaluated::Unblocked
                } else {
                    Evaluated::Cancelled
                });
            }
        }
        Err(tasks::kept_changing(id))
    }

    /// Evaluates the children of a task that just finished, and in turn those of the
    /// children it cancels.
    pub(super) async fn settle(
        &self,
        parent: TaskId,
        now: DateTime<Utc>,
        changes: &mut Vec<StateChange>,
    ) -> StoreResult<()> {
        let mut finished = vec![parent];
        while let Some(parent) = finished.pop() {
            let Some(read) = tasks::read(self.objects(), parent).await? else {
                continue;
            };
            for child in read.task.children {
                if self.evaluate(child, now, changes).await? == Evaluated::Cancelled {
                    finished.push(child);
                }
            }
        }
        Ok(())
    }

    /// [`FileTaskQueue::settle`] after a task ended, as a best effort: what it leaves
    /// undone (an outage) the sweep of blocked tasks does.
    pub(super) async fn settle_after(
        &self,
        parent: TaskId,
        now: DateTime<Utc>,
        changes: &mut Vec<StateChange>,
    ) {
        if let Err(err) = self.settle(parent, now, changes).await {
            tracing::warn!(%err, %parent, "cannot settle the dependents of a finished task yet; the maintenance sweep will");
        }
    }

    /// Evaluates every blocked task, at most once per [`SWEEP_EVERY`] in this process:
    /// what a process killed mid-way left undone.
    pub(super) async fn sweep_blocked(&self, changes: &mut Vec<StateChange>) -> StoreResult<()> {
        {
            let mut sweep = self.sweep.lock().unwrap_or_else(PoisonError::into_inner);
            if sweep.started.is_some_and(|at| at.elapsed() < SWEEP_EVERY) {
                return Ok(());
            }
            sweep.started = Some(Instant::now());
        }
        let now = self.clock.now();
        let blocked: Vec<(String, TaskId)> = self
            .objects()
            .list(keys::BLOCKED)
            .await?
            .into_iter()
            .filter_map(|key| {
                let id = keys::parse_blocked(&key)?;
                Some((key, id))
            })
            .collect();
        for chunk in blocked.chunks(JUDGED_AT_ONCE) {
            let judged = futures_util::future::join_all(chunk.iter().map(|(key, id)| async move {
                let mut found = Vec::new();
                match tasks::find(self.objects(), *id).await? {
                    // Its enqueue may still be writing it.
                    Found::Absent => self.drop_if_orphan(key, *id, |t| t.is_none()).await?,
                    Found::Unreadable => {}
                    Found::Task(read) if read.task.record.state != TaskState::Blocked => {
                        self.objects().delete(key).await?;
                    }
                    Found::Task(_) => {
                        if self.evaluate(*id, now, &mut found).await? != Evaluated::Waiting {
                            self.objects().delete(key).await?;
                        }
                    }
                }
                StoreResult::Ok(found)
            }))
            .await;
            for found in judged {
                changes.extend(found?);
            }
        }
        Ok(())
    }
}
