//! Claims, heartbeats and completions.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use omniq_models::LeaseToken;
use omniq_storage::kv_task::Applied;
use omniq_storage::{
    Completed, Completion, CompletionStatus, DequeueRequest, Lease, LeaseRef, LeaseStatus,
    StateChange, StoreResult,
};

use super::keys::{self, ReadyMarker};
use super::tasks::{self, Read};
use super::{FileTaskQueue, ORPHAN_AGE};

/// Ready markers a claim lists at once.
const CLAIM_PAGE: usize = 256;

/// Pages of ready markers a claim reads per queue, at most: a claim never walks a huge
/// backlog of tasks it cannot take (names it does not run, tasks being written).
const CLAIM_PAGES: usize = 16;

/// What a claim made of one ready marker.
enum Taken {
    Leased(Box<Lease>),
    /// Not this claim's: the task is another's, not due, or a name it does not run.
    Passed,
}

impl FileTaskQueue {
    pub(super) async fn claim(&self, request: DequeueRequest) -> StoreResult<Vec<Lease>> {
        if request.limit == 0 || request.queues.is_empty() {
            return Ok(Vec::new());
        }
        let now = self.clock.now();
        let store_now = self.objects().now().await?;
        let deadline = store_now + TimeDelta::from_std(request.lease).unwrap_or(TimeDelta::MAX);
        let token = LeaseToken::new();
        let mut leases = Vec::new();
        for queue in &request.queues {
            let base = keys::ready_of_queue(queue);
            let mut after: Option<String> = None;
            for _ in 0..CLAIM_PAGES {
                if leases.len() >= request.limit {
                    break;
                }
                let page = match self
                    .objects()
                    .list_page(&base, after.as_deref(), CLAIM_PAGE)
                    .await
                {
                    Ok(page) => page,
                    // Tasks leased already are running now: hand them to the worker, or
                    // they would wait out their lease. The next claim meets the error.
                    Err(err) if !leases.is_empty() => {
                        tracing::warn!(%err, "a claim stopped early; returning what it took");
                        return Ok(leases);
                    }
                    Err(err) => return Err(err),
                };
                let mut next = (page.len() == CLAIM_PAGE)
                    .then(|| page.last().cloned())
                    .flatten();
                let mut due = Vec::new();
                for marker in page.iter().filter_map(|key| ReadyMarker::parse(key)) {
                    if marker.due_by(now) {
                        due.push(marker);
                    } else {
                        // The rest of its priority is due later still: on to the next.
                        next = Some(marker.rank_end());
                        break;
                    }
                }
                self.take_all(&due, &request, token, now, deadline, &mut leases)
                    .await?;
                match next {
                    Some(key) => after = Some(key),
                    None => break,
                }
            }
        }
        Ok(leases)
    }

    /// Takes the tasks of `markers`, in order, until `leases` holds as many as the
    /// request wants: as many at once as are still wanted, a marker lost to another
    /// claimer followed by the next.
    async fn take_all(
        &self,
        markers: &[ReadyMarker],
        request: &DequeueRequest,
        token: LeaseToken,
        now: DateTime<Utc>,
        deadline: DateTime<Utc>,
        leases: &mut Vec<Lease>,
    ) -> StoreResult<()> {
        let mut rest = markers;
        while !rest.is_empty() && leases.len() < request.limit {
            let (chunk, after) = rest.split_at((request.limit - leases.len()).min(rest.len()));
            rest = after;
            let taken = futures_util::future::join_all(
                chunk
                    .iter()
                    .map(|marker| self.take(marker, request, token, now, deadline)),
            )
            .await;
            for taken in taken {
                match taken {
                    Ok(Taken::Leased(lease)) => leases.push(*lease),
                    Ok(Taken::Passed) => {}
                    // Tasks leased already are running now: hand them to the worker.
                    Err(err) if !leases.is_empty() => {
                        tracing::warn!(%err, "a claim stopped early; returning what it took");
                    }
                    Err(err) => return Err(err),
                }
            }
        }
        Ok(())
    }

    /// Takes the task of one ready marker, or drops the marker when it is stale.
    async fn take(
        &self,
        marker: &ReadyMarker,
        request: &DequeueRequest,
        token: LeaseToken,
        now: DateTime<Utc>,
        deadline: DateTime<Utc>,
    ) -> StoreResult<Taken> {
        for _ in 0..tasks::CAS_ROUNDS {
            let Some(Read { task, version }) =
                tasks::read_to_claim(self.objects(), marker.id).await?
            else {
                self.drop_if_orphan(&marker.key, now).await?;
                return Ok(Taken::Passed);
            };
            if task.writes < marker.write {
                // The change it files is not written yet, or never will be.
                self.drop_if_orphan(&marker.key, now).await?;
                return Ok(Taken::Passed);
            }
            if !marker.files(&task) {
                self.objects().delete(&marker.key).await?;
                return Ok(Taken::Passed);
            }
            if !task.claimable(now)
                || !request.takes(&task.record.spec.name, task.record.spec.run_at, now)
            {
                // Expired (expiry takes it), or a name this worker does not run.
                return Ok(Taken::Passed);
            }
            let mut next = task.clone();
            next.claim(token, &request.worker_id, now, deadline);
            // The lease marker first, naming the write about to be made: see `keys`.
            self.objects()
                .create(
                    &keys::lease(marker.id, token),
                    keys::lease_body(next.writes + 1, now),
                )
                .await?;
            if tasks::write(self.objects(), &mut next, &version)
                .await?
                .is_none()
            {
                // Another claimer, a cancel or a heartbeat got in first: read it again.
                continue;
            }
            if let Err(err) = self.objects().delete(&marker.key).await {
                tracing::debug!(%err, "a claimed task's ready marker stays until a claim drops it");
            }
            let attempt = next.record.attempts;
            return Ok(Taken::Leased(Box::new(Lease::new(
                next.record.spec,
                token,
                attempt,
                deadline,
            ))));
        }
        Ok(Taken::Passed)
    }

    /// Deletes a marker that names a write its task never got, once it is old enough that
    /// its writer must have died (see [`ORPHAN_AGE`]).
    pub(super) async fn drop_if_orphan(&self, key: &str, now: DateTime<Utc>) -> StoreResult<()> {
        let Some(stored) = self.objects().get(key).await? else {
            return Ok(());
        };
        let written = keys::read_stamp(&stored.bytes);
        if written.is_none_or(|at| now - at >= ORPHAN_AGE) {
            self.objects().delete_if(key, &stored.version).await?;
        }
        Ok(())
    }

    pub(super) async fn renew(
        &self,
        leases: Vec<LeaseRef>,
        extend: Duration,
    ) -> StoreResult<Vec<LeaseStatus>> {
        let now = self.clock.now();
        let store_now = self.objects().now().await?;
        let deadline = store_now + TimeDelta::from_std(extend).unwrap_or(TimeDelta::MAX);
        futures_util::future::try_join_all(leases.into_iter().map(|lease| async move {
            let status = tasks::update(self.objects(), lease.task_id, |task| {
                if !task.held_by(lease.token) {
                    return (LeaseStatus::Lost, false);
                }
                task.record.lease_expires_at = Some(deadline);
                task.record.updated_at = now;
                let status = if task.record.cancel_requested {
                    LeaseStatus::CancelRequested
                } else {
                    LeaseStatus::Held
                };
                (status, true)
            })
            .await?;
            Ok(status.unwrap_or(LeaseStatus::Lost))
        }))
        .await
    }

    pub(super) async fn complete_all(
        &self,
        completions: Vec<Completion>,
    ) -> StoreResult<Completed> {
        let now = self.clock.now();
        // Completions of one task in order, of different tasks at once.
        let mut by_task: HashMap<_, Vec<usize>> = HashMap::new();
        for (i, completion) in completions.iter().enumerate() {
            by_task.entry(completion.lease.task_id).or_default().push(i);
        }
        let completions = &completions;
        let groups =
            futures_util::future::try_join_all(by_task.into_values().map(|indices| async move {
                let mut statuses = Vec::with_capacity(indices.len());
                let mut changes = Vec::new();
                for i in indices {
                    let status = self
                        .complete_one(&completions[i], now, &mut changes)
                        .await?;
                    statuses.push((i, status));
                }
                StoreResult::Ok((statuses, changes))
            }))
            .await?;
        let mut statuses = vec![CompletionStatus::LeaseLost; completions.len()];
        let mut changes = Vec::new();
        for (group, group_changes) in groups {
            for (i, status) in group {
                statuses[i] = status;
            }
            changes.extend(group_changes);
        }
        Ok(Completed::new(statuses, changes))
    }

    async fn complete_one(
        &self,
        completion: &Completion,
        now: DateTime<Utc>,
        changes: &mut Vec<StateChange>,
    ) -> StoreResult<CompletionStatus> {
        let id = completion.lease.task_id;
        let token = completion.lease.token;
        let applied = self
            .update_filed(id, now, |task| {
                let applied = task.complete(token, completion.outcome.clone(), now);
                let changed = applied == Applied::Changed;
                (applied, changed)
            })
            .await?;
        Ok(match applied {
            Some((Applied::Changed, task)) => {
                if let Err(err) = self.objects().delete(&keys::lease(id, token)).await {
                    tracing::debug!(%err, task_id = %id, "a finished lease's marker stays until recovery drops it");
                }
                if task.record.state.is_terminal() {
                    self.settle_after(id, now, changes).await;
                }
                CompletionStatus::Applied
            }
            Some((Applied::Resent, _)) => CompletionStatus::Applied,
            _ => CompletionStatus::LeaseLost,
        })
    }
}
