//! Claims, heartbeats and completions.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use omniq_models::LeaseToken;
use omniq_storage::kv_task::Applied;
use omniq_storage::{
    Completed, Completion, CompletionOutcome, CompletionStatus, DequeueRequest, Lease, LeaseRef,
    LeaseStatus, StateChange, StoreResult,
};

use super::FileTaskQueue;
use super::keys::{self, ReadyMarker};
use super::tasks::{self, Durability, Found, Read};
use omniq_storage::kv_task::KvTask;

/// Ready markers a claim lists at once.
const CLAIM_PAGE: usize = 256;

/// Pages of ready markers a claim reads per queue, at most: a claim never walks a huge
/// backlog of tasks it cannot take (names it does not run, tasks being written).
const CLAIM_PAGES: usize = 16;

/// The lease on `task`, just claimed with `token`.
fn leased(task: KvTask, token: LeaseToken) -> Lease {
    let attempt = task.record.attempts;
    let deadline = task.record.lease_expires_at.unwrap_or_else(Utc::now);
    Lease::new(task.record.spec, token, attempt, deadline)
}

/// The tasks a claim has taken and not yet handed to its caller.
///
/// A claim is many requests (a listing, then a read and two writes per task); on a slow
/// store it can outlast its caller's patience (a worker bounds every store call), and a
/// claim dropped after taking tasks would leave them running for nobody until their lease
/// lapsed. Dropped before [`delivered`](Self::delivered), this hands them back from a task
/// of its own: released, queued again with the attempt given back. Without a runtime to
/// run on (the process is stopping), their leases lapse and recovery takes them.
struct Undelivered {
    queue: FileTaskQueue,
    taken: Mutex<Vec<LeaseRef>>,
    delivered: bool,
}

impl Undelivered {
    fn new(queue: &FileTaskQueue) -> Self {
        Self {
            queue: queue.clone(),
            taken: Mutex::new(Vec::new()),
            delivered: false,
        }
    }

    fn record(&self, lease: LeaseRef) {
        self.taken
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(lease);
    }

    /// The claim is returning its leases: nothing to hand back.
    fn delivered(mut self) {
        self.delivered = true;
    }
}

impl Drop for Undelivered {
    fn drop(&mut self) {
        if self.delivered {
            return;
        }
        let taken = std::mem::take(self.taken.get_mut().unwrap_or_else(PoisonError::into_inner));
        if taken.is_empty() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        tracing::warn!(
            tasks = taken.len(),
            "a claim ended without handing over its leases; releasing the tasks it may have taken"
        );
        let queue = self.queue.clone();
        runtime.spawn(hand_back(queue, taken));
    }
}

/// Releases the leases of a given-up claim: the task queued again, its attempt given back.
/// A lease whose write had not landed is refused (lease lost); those are tried once more
/// a second later, for a write that was still on its way. Anything left waits out its
/// lease, as before.
async fn hand_back(queue: FileTaskQueue, mut leases: Vec<LeaseRef>) {
    /// How long one round of releases may take.
    const ROUND: Duration = Duration::from_secs(30);
    /// How long a write that was in flight has to land before the second round.
    const IN_FLIGHT_WRITE: Duration = Duration::from_secs(1);
    for round in 0..2 {
        if round > 0 {
            tokio::time::sleep(IN_FLIGHT_WRITE).await;
        }
        let releases = leases
            .iter()
            .map(|lease| Completion::new(*lease, CompletionOutcome::Release))
            .collect();
        match tokio::time::timeout(ROUND, queue.complete_all(releases)).await {
            Ok(Ok(done)) => {
                leases = leases
                    .into_iter()
                    .zip(done.statuses)
                    .filter(|(_, status)| *status != CompletionStatus::Applied)
                    .map(|(lease, _)| lease)
                    .collect();
            }
            Ok(Err(err)) => tracing::warn!(%err, "cannot hand back a given-up claim's tasks yet"),
            Err(_) => tracing::warn!("handing back a given-up claim's tasks took too long"),
        }
        if leases.is_empty() {
            return;
        }
    }
}

/// One claim's terms, shared by the takes of its tasks.
#[derive(Clone, Copy)]
struct Claim<'a> {
    request: &'a DequeueRequest,
    now: DateTime<Utc>,
    deadline: DateTime<Utc>,
    undelivered: &'a Undelivered,
    /// Ready markers that file nothing any more, deleted together after each round of
    /// takes.
    stale: &'a Mutex<Vec<String>>,
}

impl Claim<'_> {
    fn drop_marker(&self, key: &str) {
        self.stale
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(key.to_owned());
    }
}

/// What a claim made of one ready marker.
enum Taken {
    Leased(Box<Lease>),
    /// The marker files nothing any more: being deleted.
    Stale,
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
        let mut seen = HashSet::new();
        let mut leases = Vec::new();
        let undelivered = Undelivered::new(self);
        let stale = Mutex::new(Vec::new());
        for queue in &request.queues {
            let base = keys::ready_of_queue(queue);
            let mut after: Option<String> = None;
            for _ in 0..CLAIM_PAGES {
                if leases.len() >= request.limit {
                    break;
                }
                let remembered = if after.is_none() {
                    self.ready_pages.first_page(&base)
                } else {
                    None
                };
                let listed = match remembered {
                    Some(page) => Ok((page.keys, Some(page.after))),
                    None => self
                        .objects()
                        .list_page(&base, after.as_deref(), CLAIM_PAGE)
                        .await
                        .map(|mut page| {
                            let full = page.len() == CLAIM_PAGE;
                            let next = full.then(|| page.last().cloned()).flatten();
                            // Markers this process is deleting file nothing any more.
                            self.ready_pages.leave_out_dropping(&mut page);
                            if full && after.is_none() {
                                self.ready_pages.remember(&base, &page);
                            }
                            (page, next)
                        }),
                };
                let (page, mut next) = match listed {
                    Ok(listed) => listed,
                    // Tasks leased already are running now: hand them to the worker, or
                    // they would wait out their lease. The next claim meets the error.
                    Err(err) if !leases.is_empty() => {
                        tracing::warn!(%err, "a claim stopped early; returning what it took");
                        undelivered.delivered();
                        return Ok(leases);
                    }
                    Err(err) => return Err(err),
                };
                let mut due = Vec::new();
                for marker in page.iter().filter_map(|key| ReadyMarker::parse(key)) {
                    if marker.due_by(now) {
                        // A task filed twice (an earlier marker left, or one written
                        // again) is taken once.
                        if seen.insert(marker.id) {
                            due.push(marker);
                        }
                    } else {
                        // The rest of its priority is due later still: on to the next.
                        next = Some(marker.rank_end());
                        break;
                    }
                }
                let claim = Claim {
                    request: &request,
                    now,
                    deadline,
                    undelivered: &undelivered,
                    stale: &stale,
                };
                let mut done = Vec::new();
                let taken = self.take_all(&due, &claim, &mut leases, &mut done).await;
                // Markers passed over stay in the page: another worker of this process
                // may run what this one does not.
                self.ready_pages.forget(&base, &done);
                taken?;
                match next {
                    Some(key) => after = Some(key),
                    None => break,
                }
            }
        }
        undelivered.delivered();
        Ok(leases)
    }

    /// Takes the tasks of `markers`, in order, until `leases` holds as many as the
    /// request wants: as many at once as are still wanted, a marker lost to another
    /// claimer followed by the next. Adds to `done` the keys of the markers it is done
    /// with (their tasks leased, or filed by them no more), in order.
    async fn take_all(
        &self,
        markers: &[ReadyMarker],
        claim: &Claim<'_>,
        leases: &mut Vec<Lease>,
        done: &mut Vec<String>,
    ) -> StoreResult<()> {
        let request = claim.request;
        let mut rest = markers;
        while !rest.is_empty() && leases.len() < request.limit {
            let (chunk, after) = rest.split_at((request.limit - leases.len()).min(rest.len()));
            rest = after;
            let taken =
                futures_util::future::join_all(chunk.iter().map(|marker| self.take(marker, claim)))
                    .await;
            let stale =
                std::mem::take(&mut *claim.stale.lock().unwrap_or_else(PoisonError::into_inner));
            self.drop_ready_markers(stale);
            // Every lease taken first: tasks leased are running now, and must reach the
            // worker, or they would wait out their lease. The next claim meets the error.
            let mut failure = None;
            for (marker, taken) in chunk.iter().zip(taken) {
                match taken {
                    Ok(Taken::Leased(lease)) => {
                        leases.push(*lease);
                        done.push(marker.key.clone());
                    }
                    Ok(Taken::Stale) => done.push(marker.key.clone()),
                    Ok(Taken::Passed) => {}
                    Err(err) => failure = Some(err),
                }
            }
            if let Some(err) = failure {
                if leases.is_empty() {
                    return Err(err);
                }
                tracing::warn!(%err, "a claim stopped early; returning what it took");
                return Ok(());
            }
        }
        Ok(())
    }

    /// Takes the task of one ready marker, or drops the marker when it is stale.
    async fn take(&self, marker: &ReadyMarker, claim: &Claim<'_>) -> StoreResult<Taken> {
        let Claim {
            request,
            now,
            deadline,
            undelivered,
            ..
        } = *claim;
        let id = marker.id;
        let orphaned = |task: Option<&KvTask>| task.is_none_or(|t| t.writes < marker.write);
        let mut tried: Option<LeaseToken> = None;
        for _ in 0..tasks::CAS_ROUNDS {
            let Read { task, version } = match tasks::find_to_claim(self.objects(), id).await? {
                Found::Task(read) => *read,
                Found::Unreadable => return Ok(Taken::Passed),
                Found::Absent => {
                    self.drop_if_orphan(&marker.key, id, orphaned).await?;
                    return Ok(Taken::Passed);
                }
            };
            if let Some(token) = tried
                && task.held_by(token)
            {
                // The last round's write landed although its reply said otherwise.
                claim.drop_marker(&marker.key);
                return Ok(Taken::Leased(Box::new(leased(task, token))));
            }
            if task.writes < marker.write {
                // The change it files is not written yet, or never will be.
                self.drop_if_orphan(&marker.key, id, orphaned).await?;
                return Ok(Taken::Passed);
            }
            if !marker.files(&task) {
                claim.drop_marker(&marker.key);
                return Ok(Taken::Stale);
            }
            if !task.claimable(now)
                || !request.takes(&task.record.spec.name, task.record.spec.run_at, now)
            {
                // Expired (expiry takes it), or a name this worker does not run.
                return Ok(Taken::Passed);
            }
            // A token per round: a lease marker names one write, and a take never meets a
            // marker of its own earlier round.
            let token = LeaseToken::new();
            tried = Some(token);
            // Recorded before the write is sent: a claim dropped while the write is in
            // flight (a directory's write still lands, on its own thread) hands it back.
            undelivered.record(LeaseRef::new(id, token));
            let mut next = task.clone();
            next.claim(token, &request.worker_id, now, deadline);
            // The lease marker first, naming the write about to be made: see `keys`.
            let filing = self
                .write_lease_marker(id, token, next.writes.saturating_add(1))
                .await?;
            // Not synced: a crash of the machine that takes the claim back leaves the
            // task queued as before, its lease marker (synced, written first) telling
            // recovery to file it again if its ready marker's deletion survived. The
            // completion's write, synced, makes the claim durable with it.
            let Some(written) =
                tasks::write_as(self.objects(), &mut next, &version, Durability::Unsynced).await?
            else {
                // Another claimer, a cancel or a child's registration got in first.
                continue;
            };
            self.remember_claimed(&next, written);
            self.refile_if_stalled(Some(filing)).await;
            claim.drop_marker(&marker.key);
            return Ok(Taken::Leased(Box::new(leased(next, token))));
        }
        Ok(Taken::Passed)
    }

    /// Deletes ready markers that file nothing any more, as a best effort: one left
    /// behind is dropped by the next claim that reads it. In a task of its own, so that
    /// the claim returns its leases without waiting (deleting files is slow on a local
    /// disk: a third of a claim); until then this process's claims pass over them.
    fn drop_ready_markers(&self, keys: Vec<String>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime to run it on: the next claim that reads them drops them.
            return;
        };
        if keys.is_empty() {
            return;
        }
        self.ready_pages.dropping(&keys);
        let queue = self.clone();
        let dropped = async move {
            // Unsynced: a marker a crash brings back files an older write of its task,
            // and the claim that reads it drops it again.
            if let Err(err) = queue.objects().delete_unsynced(keys.clone()).await {
                tracing::debug!(%err, "a stale ready marker stays until a claim drops it");
            }
            queue.ready_pages.dropped(&keys);
        };
        drop(runtime.spawn(dropped));
    }

    pub(super) async fn renew(
        &self,
        leases: Vec<LeaseRef>,
        extend: Duration,
    ) -> StoreResult<Vec<LeaseStatus>> {
        self.renew_with(leases, extend, None).await
    }

    /// Extends held leases; with `progress`, stores it on each held lease's task in the
    /// same conditional write.
    async fn renew_with(
        &self,
        leases: Vec<LeaseRef>,
        extend: Duration,
        progress: Option<&serde_json::Value>,
    ) -> StoreResult<Vec<LeaseStatus>> {
        let now = self.clock.now();
        let store_now = self.objects().now().await?;
        let deadline = store_now + TimeDelta::from_std(extend).unwrap_or(TimeDelta::MAX);
        futures_util::future::try_join_all(leases.into_iter().map(|lease| async move {
            // The version the claim wrote is this renewal's to replace: the completion
            // reads the task the renewal leaves.
            drop(self.take_claimed(lease.task_id));
            let status = tasks::update(self.objects(), lease.task_id, |task| {
                if !task.held_by(lease.token) {
                    return (LeaseStatus::Lost, false);
                }
                task.record.lease_expires_at = Some(deadline);
                task.record.updated_at = now;
                if let Some(progress) = progress {
                    task.record.progress = Some(progress.clone());
                }
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

    /// Fenced by the lease like a heartbeat, in the heartbeat's own conditional write.
    pub(super) async fn progress(
        &self,
        lease: LeaseRef,
        progress: serde_json::Value,
        extend: Duration,
    ) -> StoreResult<LeaseStatus> {
        omniq_storage::progress_text(&progress)?;
        let status = self
            .renew_with(vec![lease], extend, Some(&progress))
            .await?;
        Ok(status.into_iter().next().unwrap_or(LeaseStatus::Lost))
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
        // The markers of the leases finished, shared by the groups: deleted whether or
        // not every group succeeds.
        let finished = &Mutex::new(Vec::new());
        let groups =
            futures_util::future::try_join_all(by_task.into_values().map(|indices| async move {
                let mut statuses = Vec::with_capacity(indices.len());
                let mut changes = Vec::new();
                for i in indices {
                    let status = self
                        .complete_one(&completions[i], now, &mut changes, finished)
                        .await?;
                    statuses.push((i, status));
                }
                StoreResult::Ok((statuses, changes))
            }))
            .await;
        // Unsynced, and together: a marker a crash brings back names a finished lease,
        // and recovery drops it.
        let finished =
            std::mem::take(&mut *finished.lock().unwrap_or_else(PoisonError::into_inner));
        if let Err(err) = self.objects().delete_unsynced(finished).await {
            tracing::debug!(%err, "a finished lease's marker stays until recovery drops it");
        }
        let mut statuses = vec![CompletionStatus::LeaseLost; completions.len()];
        let mut changes = Vec::new();
        for (group, group_changes) in groups? {
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
        finished_leases: &Mutex<Vec<String>>,
    ) -> StoreResult<CompletionStatus> {
        let id = completion.lease.task_id;
        let token = completion.lease.token;
        let applied = self
            .update_filed(id, |task| {
                let applied = task.complete(token, completion.outcome.clone(), now);
                let changed = applied == Applied::Changed;
                (applied, changed)
            })
            .await?;
        Ok(match applied {
            Some((Applied::Changed, task)) => {
                finished_leases
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(keys::lease(id, token));
                // The children as of the write that finished it: a child filed later saw
                // the parent finished and settled itself. None: nothing to read again.
                if task.record.state.is_terminal() && !task.children.is_empty() {
                    self.settle_after(id, now, changes).await;
                }
                CompletionStatus::Applied
            }
            Some((Applied::Resent, _)) => CompletionStatus::Applied,
            _ => CompletionStatus::LeaseLost,
        })
    }
}
