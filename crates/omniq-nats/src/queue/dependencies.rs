//! Dependencies: a task that waits for others (`depends_on`).
//!
//! A blocked task is *evaluated*: it registers itself in each live parent's list of
//! children (a compare-and-set on the parent, refused once the parent has finished, so a
//! parent finishing at the same moment either lists it or is seen finished), then reads its
//! parents' states and is unblocked or cancelled when they have settled. A parent that
//! finishes evaluates its children. Whoever changes a parent last is followed by an
//! evaluation that sees every parent as it ends, so no child is left blocked by a race.
//!
//! A process killed between a parent's end and its children's evaluation (or between a
//! child's creation and its first evaluation) leaves a child blocked with nothing to wake
//! it: every blocked task therefore has an entry under `{prefix}.blocked`, published before
//! the task is stored, that the maintenance every worker runs ([`NatsTaskQueue::recover`])
//! sweeps every few seconds, evaluating each task still blocked and dropping the entries of
//! those that are not.

use std::ops::ControlFlow;
use std::sync::PoisonError;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::DeliverPolicy;
use chrono::{DateTime, TimeDelta, Utc};
use omniq_models::{DependencyVerdict, TaskId, TaskState};
use omniq_storage::{StateChange, StoreError, StoreResult};

use super::NatsTaskQueue;
use super::cas::{self, CAS_ROUNDS};
use super::index::Entry;
use super::stored;
use crate::error::BACKEND;
use crate::scan::{from_server_time, scan};

/// How often one process starts a sweep of the blocked tasks over.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// Blocked entries one maintenance call sweeps.
const SWEPT_AT_ONCE: usize = 512;

/// Blocked tasks evaluated at once.
const JUDGED_AT_ONCE: usize = 32;

/// Where this process's sweep of the blocked tasks stands.
#[derive(Debug, Default)]
pub(crate) struct BlockedSweep {
    /// When the last sweep from the first entry began.
    started: Option<Instant>,
    /// The sequence the sweep goes on from, when one is under way.
    resume_at: Option<u64>,
}

/// A blocked entry whose task is not stored is dropped once it is this old (its enqueue
/// failed after publishing it).
const ORPHAN_AGE: TimeDelta = TimeDelta::minutes(1);

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

impl NatsTaskQueue {
    /// Evaluates the blocked task `id` (see the module docs), recording what changed.
    pub(super) async fn evaluate(
        &self,
        id: TaskId,
        now: DateTime<Utc>,
        changes: &mut Vec<StateChange>,
    ) -> StoreResult<Evaluated> {
        for _ in 0..CAS_ROUNDS {
            let Some(current) = cas::read(self.tasks(), id).await? else {
                return Ok(Evaluated::NotBlocked);
            };
            if current.task.record.state != TaskState::Blocked {
                return Ok(Evaluated::NotBlocked);
            }
            let spec = &current.task.record.spec;
            let mut states = Vec::with_capacity(spec.depends_on.len());
            let mut against = None;
            for parent in &spec.depends_on {
                let state = cas::update(self.tasks(), *parent, |task| {
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
            let verdict = spec.run_when.verdict(&states);
            match verdict {
                DependencyVerdict::Wait => return Ok(Evaluated::Waiting),
                DependencyVerdict::Run => {
                    next.record.state = stored::ready_state(spec.run_at, now);
                    next.record.updated_at = now;
                    // Filed first, at the revision about to be replaced: see the queue's
                    // module docs.
                    self.make_findable(
                        spec,
                        next.record.state == TaskState::Queued,
                        current.revision,
                    )
                    .await?;
                }
                DependencyVerdict::Cancel => {
                    let reason = match against.or_else(|| spec.depends_on.first().copied()) {
                        Some(parent) => format!("dependency {parent} did not settle as required"),
                        None => "its parents had already settled against it".to_owned(),
                    };
                    next.finish(TaskState::Cancelled, Some(reason), now);
                }
            }
            if cas::write(self.tasks(), &next, current.revision)
                .await?
                .is_some()
            {
                changes.push(next.change());
                return Ok(if verdict == DependencyVerdict::Run {
                    Evaluated::Unblocked
                } else {
                    Evaluated::Cancelled
                });
            }
        }
        Err(StoreError::unavailable(
            BACKEND,
            format!("task {id} kept changing under {CAS_ROUNDS} writes"),
        ))
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
            let Some(read) = cas::read(self.tasks(), parent).await? else {
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

    /// [`NatsTaskQueue::settle`] after a task ended, as a best effort: what it leaves
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

    /// Evaluates the blocked tasks, [`SWEPT_AT_ONCE`] entries per call, resuming where the
    /// last call stopped, and starting over at most once per [`SWEEP_EVERY`] in this
    /// process: what a process killed mid-way left undone. Bounded, so that a DAG of a
    /// hundred thousand waiting tasks never holds up the lease recovery that shares the
    /// maintenance call.
    pub(super) async fn sweep_blocked(&self, changes: &mut Vec<StateChange>) -> StoreResult<()> {
        let start = {
            let sweep = self
                .backend
                .inner
                .blocked_sweep
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            match sweep.resume_at {
                Some(seq) => seq,
                None if sweep.started.is_some_and(|at| at.elapsed() < SWEEP_EVERY) => {
                    return Ok(());
                }
                None => 1,
            }
        };
        let mut entries = Vec::new();
        scan(
            &self.backend.inner.client,
            &self.backend.inner.index,
            self.subjects().blocked(),
            DeliverPolicy::ByStartSequence {
                start_sequence: start,
            },
            false,
            |message| {
                let entry = serde_json::from_slice::<Entry>(&message.payload).ok();
                entries.push((message.seq, from_server_time(message.published), entry));
                if entries.len() >= SWEPT_AT_ONCE {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            },
        )
        .await?;
        let resume_at = (entries.len() >= SWEPT_AT_ONCE)
            .then(|| entries.last().map(|(seq, _, _)| seq + 1))
            .flatten();
        // The sweep moves on before this batch is judged: a batch that fails or is cut
        // short must not be retried at once forever (its entries come round again in the
        // next sweep, at most SWEEP_EVERY later).
        {
            let mut sweep = self
                .backend
                .inner
                .blocked_sweep
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if start == 1 {
                sweep.started = Some(Instant::now());
            }
            sweep.resume_at = resume_at;
        }
        let now = self.clock.now();
        for chunk in entries.chunks(JUDGED_AT_ONCE) {
            let judged = futures_util::future::join_all(chunk.iter().map(
                |(seq, published, entry)| async move {
                    let mut found = Vec::new();
                    let done = self
                        .sweep_one(entry.as_ref(), *published, now, &mut found)
                        .await?;
                    // Another process's sweep may have deleted it first; an entry left by a
                    // failed delete is judged again next sweep.
                    if done && let Err(err) = self.backend.inner.index.delete_message(*seq).await {
                        tracing::debug!(%err, seq, "a blocked entry was not deleted");
                    }
                    Ok::<_, StoreError>(found)
                },
            ))
            .await;
            for found in judged {
                changes.extend(found?);
            }
        }
        Ok(())
    }

    /// Evaluates the task of one blocked entry; whether the entry is done with.
    async fn sweep_one(
        &self,
        entry: Option<&Entry>,
        published: DateTime<Utc>,
        now: DateTime<Utc>,
        changes: &mut Vec<StateChange>,
    ) -> StoreResult<bool> {
        let Some(entry) = entry else {
            return Ok(true);
        };
        Ok(match cas::read(self.tasks(), entry.id).await? {
            // Its enqueue may still be writing it.
            None => now - published >= ORPHAN_AGE,
            Some(read) if read.task.record.state != TaskState::Blocked => true,
            Some(_) => self.evaluate(entry.id, now, changes).await? != Evaluated::Waiting,
        })
    }
}
