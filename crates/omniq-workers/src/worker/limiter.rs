//! The worker's side of [`Limit`]s: before an attempt starts, a place is taken in each
//! limiter that covers it (the queue's, then the task key's), by compare-and-set on the
//! limiter's state in the store; the places are given back when the attempt ends.
//!
//! One lane per worker makes every limiter change, in batches: the requests that arrive
//! while a batch is in the store wait for the next one, and each batch writes each limiter
//! once (one read and one compare-and-set) for all its places taken and given back. One
//! round trip per attempt would cap a single-writer store such as SQLite at a few hundred
//! tasks a second.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};

use chrono::{DateTime, Utc};
use futures_util::future::join_all;
use omniq_models::{LIMIT_KEY_METADATA, TaskId, TaskState};
use omniq_storage::{Lease, LimiterVersion, StoreError, StoreResult, TaskQueue};
use tokio::sync::{mpsc, oneshot};

use crate::limits::{Decision, Limit, LimiterRecord, QueueLimits};

/// Rounds of read and compare-and-set before a busy limiter counts as unavailable.
const CAS_ROUNDS: usize = 32;

/// How long a task waits when its limiter cannot be read or written.
const UNAVAILABLE_WAIT_MS: i64 = 1_000;

/// One limiter covering an attempt: its key in the store and its limit.
#[derive(Debug, Clone)]
struct Scope {
    key: String,
    limit: Limit,
}

/// Why an attempt may not start yet.
#[derive(Debug)]
pub(crate) struct Wait {
    /// When it may try again.
    pub(crate) run_at: DateTime<Utc>,
    /// Which limit held it back, or what failed.
    pub(crate) reason: String,
}

impl Wait {
    fn until(until_ms: i64, reason: String) -> Self {
        let run_at =
            DateTime::<Utc>::from_timestamp_millis(until_ms).unwrap_or(DateTime::<Utc>::MAX_UTC);
        Self { run_at, reason }
    }
}

/// A place to give back: `task`'s attempt `attempt` under `scope` (its tokens too with
/// `refund`: the attempt never started).
#[derive(Debug)]
struct Release {
    scope: Scope,
    task: String,
    attempt: u32,
    refund: bool,
}

#[derive(Debug)]
enum Request {
    Acquire {
        scopes: Vec<Scope>,
        task: String,
        attempt: u32,
        reply: oneshot::Sender<Result<(), Wait>>,
    },
    Release(Release),
}

/// The places an attempt holds; given back (through the lane) when dropped.
#[derive(Debug)]
pub(crate) struct Hold {
    lane: mpsc::UnboundedSender<Request>,
    scopes: Vec<Scope>,
    task: String,
    attempt: u32,
}

impl Drop for Hold {
    fn drop(&mut self) {
        // A place not given back (the lane gone, the store down) is checked against its
        // task once its lease has lapsed, so it frees itself.
        for scope in std::mem::take(&mut self.scopes) {
            let _ = self.lane.send(Request::Release(Release {
                scope,
                task: self.task.clone(),
                attempt: self.attempt,
                refund: false,
            }));
        }
    }
}

/// The limiters of a worker.
#[derive(Debug)]
pub(crate) struct Limiters {
    queue: Arc<dyn TaskQueue>,
    by_queue: HashMap<String, QueueLimits>,
    lease_ms: i64,
    /// The lane, started on first use (on the worker's runtime).
    lane: OnceLock<mpsc::UnboundedSender<Request>>,
}

impl Limiters {
    pub(crate) fn new(
        queue: Arc<dyn TaskQueue>,
        by_queue: HashMap<String, QueueLimits>,
        lease: std::time::Duration,
    ) -> Self {
        Self {
            queue,
            by_queue,
            lease_ms: i64::try_from(lease.as_millis()).unwrap_or(i64::MAX),
            lane: OnceLock::new(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.by_queue.is_empty()
    }

    fn lane(&self) -> &mpsc::UnboundedSender<Request> {
        self.lane.get_or_init(|| {
            let (sender, requests) = mpsc::unbounded_channel();
            tokio::spawn(lane(Arc::clone(&self.queue), requests, self.lease_ms));
            sender
        })
    }

    /// The limiters covering `lease`'s task: its queue's, then its key's.
    fn scopes(&self, lease: &Lease) -> Vec<Scope> {
        let spec = &lease.spec;
        let Some(limits) = self.by_queue.get(&spec.queue) else {
            return Vec::new();
        };
        let mut scopes = Vec::new();
        if let Some(limit) = &limits.queue {
            scopes.push(Scope {
                key: store_key(&["queue", &spec.queue]),
                limit: limit.clone(),
            });
        }
        if let (Some(limit), Some(key)) = (&limits.each_key, spec.metadata.get(LIMIT_KEY_METADATA))
        {
            scopes.push(Scope {
                key: store_key(&["key", &spec.queue, key]),
                limit: limit.clone(),
            });
        }
        scopes
    }

    /// Takes a place for `lease`'s attempt in every limiter covering it, or none: a
    /// refusal gives back the places already taken, tokens included.
    ///
    /// # Errors
    /// [`Wait`] saying until when the attempt must wait, and why; a store that cannot be
    /// reached or a limiter too busy to update is a short wait, never a start.
    ///
    /// # Cancel safety
    /// A call dropped before its answer gives back whatever places it was granted.
    pub(crate) async fn acquire(&self, lease: &Lease) -> Result<Hold, Wait> {
        let scopes = self.scopes(lease);
        let lane = self.lane();
        let task = lease.spec.id.to_string();
        if !scopes.is_empty() {
            let (reply, answer) = oneshot::channel();
            let sent = lane.send(Request::Acquire {
                scopes: scopes.clone(),
                task: task.clone(),
                attempt: lease.attempt,
                reply,
            });
            let answer = match sent {
                Ok(()) => answer.await.ok(),
                Err(_) => None,
            };
            answer.unwrap_or_else(|| {
                Err(Wait::until(
                    now_ms() + UNAVAILABLE_WAIT_MS,
                    "the worker's limiter lane stopped".to_owned(),
                ))
            })?;
        }
        Ok(Hold {
            lane: lane.clone(),
            scopes,
            task,
            attempt: lease.attempt,
        })
    }
}

/// The store key of a limiter: its parts as a JSON array, so no queue or key name can
/// make two limiters share one.
fn store_key(parts: &[&str]) -> String {
    format!("omniq-limit:{}", serde_json::json!(parts))
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// An acquisition in progress: the scopes it has, and the one it waits for.
struct Pending {
    scopes: Vec<Scope>,
    next: usize,
    task: String,
    attempt: u32,
    reply: oneshot::Sender<Result<(), Wait>>,
}

/// Makes the limiter changes asked of it, a batch at a time, until every sender is gone.
async fn lane(
    queue: Arc<dyn TaskQueue>,
    mut requests: mpsc::UnboundedReceiver<Request>,
    lease_ms: i64,
) {
    while let Some(first) = requests.recv().await {
        let mut batch = vec![first];
        while let Ok(more) = requests.try_recv() {
            batch.push(more);
        }
        let mut pending = Vec::new();
        let mut releases = Vec::new();
        for request in batch {
            match request {
                Request::Acquire {
                    scopes,
                    task,
                    attempt,
                    reply,
                } => pending.push(Pending {
                    scopes,
                    next: 0,
                    task,
                    attempt,
                    reply,
                }),
                Request::Release(release) => releases.push(release),
            }
        }
        settle(queue.as_ref(), pending, releases, lease_ms).await;
    }
}

/// Settles a batch: each round writes each limiter named by the batch once; an attempt
/// covered by two limiters takes the second in the round after the first.
async fn settle(
    queue: &dyn TaskQueue,
    mut pending: Vec<Pending>,
    mut releases: Vec<Release>,
    lease_ms: i64,
) {
    while !pending.is_empty() || !releases.is_empty() {
        // Per limiter: the places given back, then the acquisitions in arrival order.
        let mut groups: BTreeMap<String, (Scope, Vec<Release>, Vec<usize>)> = BTreeMap::new();
        for release in releases.drain(..) {
            groups
                .entry(release.scope.key.clone())
                .or_insert_with(|| (release.scope.clone(), Vec::new(), Vec::new()))
                .1
                .push(release);
        }
        for (at, waiting) in pending.iter().enumerate() {
            let scope = &waiting.scopes[waiting.next];
            groups
                .entry(scope.key.clone())
                .or_insert_with(|| (scope.clone(), Vec::new(), Vec::new()))
                .2
                .push(at);
        }
        let asked: Vec<_> = groups
            .into_values()
            .map(|(scope, gone, waiting)| {
                let attempts: Vec<(String, u32)> = waiting
                    .iter()
                    .map(|&at| (pending[at].task.clone(), pending[at].attempt))
                    .collect();
                async move {
                    let decided = write_group(queue, &scope, &gone, &attempts, lease_ms).await;
                    (waiting, decided)
                }
            })
            .collect();
        let mut verdicts: Vec<Option<Result<(), Wait>>> = pending.iter().map(|_| None).collect();
        for (waiting, decided) in join_all(asked).await {
            for (at, decision) in waiting.into_iter().zip(decided) {
                verdicts[at] = Some(decision);
            }
        }
        let mut still = Vec::new();
        for (mut waiting, verdict) in pending.into_iter().zip(verdicts) {
            match verdict {
                Some(Ok(())) => {
                    waiting.next += 1;
                    if waiting.next < waiting.scopes.len() {
                        still.push(waiting);
                    } else {
                        let taken = refunds(&waiting);
                        if waiting.reply.send(Ok(())).is_err() {
                            // Its caller gave up waiting: the places go back.
                            releases.extend(taken);
                        }
                    }
                }
                refused => {
                    let wait = refused.and_then(Result::err).unwrap_or_else(|| {
                        Wait::until(now_ms() + UNAVAILABLE_WAIT_MS, "no decision".to_owned())
                    });
                    releases.extend(refunds(&waiting));
                    let _ = waiting.reply.send(Err(wait));
                }
            }
        }
        pending = still;
    }
}

/// The places `waiting` took before it was refused or abandoned, tokens included.
fn refunds(waiting: &Pending) -> Vec<Release> {
    waiting.scopes[..waiting.next]
        .iter()
        .map(|scope| Release {
            scope: scope.clone(),
            task: waiting.task.clone(),
            attempt: waiting.attempt,
            refund: true,
        })
        .collect()
}

/// Gives back `gone` and decides for `attempts` (in order) under one limiter, in one
/// compare-and-set; a decision per attempt. A store that fails, or a limiter that keeps
/// changing, puts every attempt off briefly (and leaves `gone` to free itself).
async fn write_group(
    queue: &dyn TaskQueue,
    scope: &Scope,
    gone: &[Release],
    attempts: &[(String, u32)],
    lease_ms: i64,
) -> Vec<Result<(), Wait>> {
    match try_write_group(queue, scope, gone, attempts, lease_ms).await {
        Ok(decided) => decided,
        Err(err) => {
            if !gone.is_empty() {
                tracing::warn!(%err, limiter = %scope.key,
                    "limiter places were not given back; they free themselves once their leases have lapsed");
            }
            let reason = format!("the limiter could not be read or written: {err}");
            attempts
                .iter()
                .map(|_| Err(Wait::until(now_ms() + UNAVAILABLE_WAIT_MS, reason.clone())))
                .collect()
        }
    }
}

async fn try_write_group(
    queue: &dyn TaskQueue,
    scope: &Scope,
    gone: &[Release],
    attempts: &[(String, u32)],
    lease_ms: i64,
) -> StoreResult<Vec<Result<(), Wait>>> {
    for _ in 0..CAS_ROUNDS {
        let (mut record, version) = read(queue, scope).await?;
        let now = now_ms();
        let mut changed = false;
        for release in gone {
            changed |= record.release(
                &scope.limit,
                &release.task,
                release.attempt,
                now,
                release.refund,
            );
        }
        let mut decided = Vec::with_capacity(attempts.len());
        for (task, attempt) in attempts {
            let mut decision = record.decide(&scope.limit, task, *attempt, now, lease_ms);
            if let Decision::Check(unchecked) = decision {
                for id in unchecked {
                    check(queue, &mut record, &id, now).await?;
                }
                decision = record.decide(&scope.limit, task, *attempt, now, lease_ms);
            }
            changed = true;
            decided.push(match decision {
                Decision::Admit => Ok(()),
                Decision::Park { until_ms, reason } => Err(Wait::until(until_ms, reason)),
                // Every place past its lease was just checked; one still unclear waits.
                Decision::Check(_) => Err(Wait::until(
                    now + UNAVAILABLE_WAIT_MS,
                    "running places are being checked".to_owned(),
                )),
            });
        }
        if !changed || write(queue, scope, &record, version).await? {
            return Ok(decided);
        }
    }
    Err(StoreError::unavailable(
        "limiter",
        format!(
            "the limiter {} kept changing under {CAS_ROUNDS} writes",
            scope.key
        ),
    ))
}

/// The record stored under `scope`, and the version to replace it from. A record that
/// cannot be read is started afresh (logged): left alone it would stop every task of the
/// limiter.
async fn read(
    queue: &dyn TaskQueue,
    scope: &Scope,
) -> StoreResult<(LimiterRecord, Option<LimiterVersion>)> {
    let Some(state) = queue.read_limiter(scope.key.clone()).await? else {
        return Ok((LimiterRecord::default(), None));
    };
    let record = serde_json::from_slice(&state.bytes).unwrap_or_else(|err| {
        tracing::error!(%err, limiter = %scope.key, "an unreadable limiter state is replaced");
        LimiterRecord::default()
    });
    Ok((record, Some(state.version)))
}

async fn write(
    queue: &dyn TaskQueue,
    scope: &Scope,
    record: &LimiterRecord,
    version: Option<LimiterVersion>,
) -> StoreResult<bool> {
    let bytes = serde_json::to_vec(record)
        .map_err(|err| StoreError::backend("limiter", err.to_string()))?;
    queue.write_limiter(scope.key.clone(), version, bytes).await
}

/// Keeps the place of task `id` only while that attempt still runs under a live lease,
/// and then counts it unchecked until that lease's deadline.
async fn check(
    queue: &dyn TaskQueue,
    record: &mut LimiterRecord,
    id: &str,
    now: i64,
) -> StoreResult<()> {
    let Some(holder) = record.running.get(id).cloned() else {
        return Ok(());
    };
    let task = match id.parse::<TaskId>() {
        Ok(task_id) => queue.get(task_id).await?,
        Err(_) => None,
    };
    let live_until = task.and_then(|task| {
        let deadline = task.lease_expires_at?.timestamp_millis();
        (task.state == TaskState::Running && task.attempts == holder.attempt && deadline > now)
            .then_some(deadline)
    });
    match live_until {
        Some(until) => {
            if let Some(place) = record.running.get_mut(id) {
                place.until = until;
            }
        }
        None => {
            record.running.remove(id);
        }
    }
    Ok(())
}
