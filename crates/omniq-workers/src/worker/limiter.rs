//! The worker's side of [`Limit`]s: before an attempt starts, a place is taken in each
//! limiter that covers it (the task key's, then the queue's), by compare-and-set on the
//! limiter's state in the store; the places are given back when the attempt ends.
//!
//! One lane per worker makes every limiter change, in batches: the requests that arrive
//! while a batch is in the store wait for the next one, and each round of a batch writes
//! each limiter once (one read and one compare-and-set) for all its places taken and given
//! back; an attempt under two limiters takes the second in the next round. One round trip
//! per attempt would cap a single-writer store such as SQLite at a few hundred tasks a
//! second.

use std::collections::{BTreeMap, HashMap};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::future::join_all;
use futures_util::{FutureExt, StreamExt};
use omniq_models::{LIMIT_KEY_METADATA, TaskId, TaskState};
use omniq_storage::{
    Lease, LimiterVersion, MAX_LIMITER_KEY_BYTES, StoreError, StoreResult, TaskQueue,
};
use tokio::sync::{mpsc, oneshot};

use crate::limits::{Attempt, Decision, Limit, LimiterRecord, QueueLimits};
use crate::retry::jitter;

/// Rounds of read and compare-and-set before a busy limiter counts as unavailable.
const CAS_ROUNDS: usize = 32;

/// How long a task waits when its limiter cannot be read or written: one to two seconds,
/// so tasks put off together do not all come back together.
fn unavailable_until() -> i64 {
    now_us() + 1_000_000 + (jitter() * 1_000_000.0) as i64
}

/// How many batches a place that could not be given back is tried again in; past that it
/// frees itself once its lease has lapsed.
const RELEASE_TRIES: u32 = 5;

/// Places checked against their tasks at once.
const CHECKS_AT_ONCE: usize = 16;

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
    /// One to two seconds from now.
    pub(crate) fn later(reason: String) -> Self {
        Self::until(unavailable_until(), reason)
    }

    fn until(until_us: i64, reason: String) -> Self {
        let run_at =
            DateTime::<Utc>::from_timestamp_micros(until_us).unwrap_or(DateTime::<Utc>::MAX_UTC);
        Self { run_at, reason }
    }
}

/// A place to give back: the attempt's under `scope` (its tokens too with `refund`: the
/// attempt never started).
#[derive(Debug)]
struct Release {
    scope: Scope,
    token: String,
    refund: bool,
    /// Batches it failed in so far.
    failed: u32,
}

#[derive(Debug)]
enum Request {
    Acquire {
        scopes: Vec<Scope>,
        attempt: Attempt,
        reply: oneshot::Sender<Result<Hold, Wait>>,
    },
    Release(Release),
    /// Answered once everything asked before it is settled.
    Flush(oneshot::Sender<()>),
}

/// The places an attempt holds; given back (through the lane) when dropped. Made by the
/// lane, so that a place granted to a caller that stopped waiting goes back too.
#[derive(Debug)]
pub(crate) struct Hold {
    lane: Option<mpsc::UnboundedSender<Request>>,
    scopes: Vec<Scope>,
    token: String,
    /// The attempt never started: its tokens go back with its places.
    refund: bool,
}

impl Hold {
    /// Holds nothing: the task has no limiter.
    fn none() -> Self {
        Self {
            lane: None,
            scopes: Vec::new(),
            token: String::new(),
            refund: false,
        }
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        let Some(lane) = &self.lane else {
            return;
        };
        // A place not given back (the lane gone, the store down) is checked against its
        // task once its lease has lapsed, so it frees itself.
        for scope in std::mem::take(&mut self.scopes) {
            // A rate without a cap keeps no place: nothing to give back.
            if scope.limit.max_running().is_some() {
                let _ = lane.send(Request::Release(Release {
                    scope,
                    token: self.token.clone(),
                    refund: self.refund,
                    failed: 0,
                }));
            }
        }
    }
}

/// The limiters of a worker.
#[derive(Debug)]
pub(crate) struct Limiters {
    queue: Arc<dyn TaskQueue>,
    by_queue: HashMap<String, QueueLimits>,
    lease_us: i64,
    store_timeout: Duration,
    /// The lane, started on first use (on the worker's runtime).
    lane: OnceLock<mpsc::UnboundedSender<Request>>,
}

impl Limiters {
    pub(crate) fn new(
        queue: Arc<dyn TaskQueue>,
        by_queue: HashMap<String, QueueLimits>,
        lease: Duration,
        store_timeout: Duration,
    ) -> Self {
        Self {
            queue,
            by_queue,
            lease_us: i64::try_from(lease.as_micros()).unwrap_or(i64::MAX),
            store_timeout,
            lane: OnceLock::new(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.by_queue.is_empty()
    }

    fn lane(&self) -> &mpsc::UnboundedSender<Request> {
        self.lane.get_or_init(|| {
            let (sender, requests) = mpsc::unbounded_channel();
            // Weak: the lane ends once the worker's limiters are gone.
            tokio::spawn(lane(
                Arc::clone(&self.queue),
                (sender.downgrade(), requests),
                self.lease_us,
                self.store_timeout,
            ));
            sender
        })
    }

    /// The limiters covering `lease`'s task: its key's, then its queue's (a key refuses
    /// more often, and a refusal gives back what was taken before it).
    fn scopes(&self, lease: &Lease) -> Vec<Scope> {
        let spec = &lease.spec;
        let Some(limits) = self.by_queue.get(&spec.queue) else {
            return Vec::new();
        };
        let mut scopes = Vec::new();
        if let (Some(limit), Some(key)) = (&limits.each_key, spec.metadata.get(LIMIT_KEY_METADATA))
        {
            scopes.push(Scope {
                key: store_key(&["key", &spec.queue, key]),
                limit: limit.clone(),
            });
        }
        if let Some(limit) = &limits.queue {
            scopes.push(Scope {
                key: store_key(&["queue", &spec.queue]),
                limit: limit.clone(),
            });
        }
        scopes
    }

    /// Waits, at most `bound`, until every change asked of the lane so far is made: at
    /// shutdown, so the places of the attempts that ended are given back.
    pub(crate) async fn flush(&self, bound: Duration) {
        let Some(lane) = self.lane.get() else {
            return;
        };
        let (done, flushed) = oneshot::channel();
        if lane.send(Request::Flush(done)).is_ok()
            && tokio::time::timeout(bound, flushed).await.is_err()
        {
            tracing::warn!(
                "limiter places could not be given back before shutdown; they free \
                 themselves once their leases have lapsed"
            );
        }
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
        if scopes.is_empty() {
            return Ok(Hold::none());
        }
        // A claim may give one token to all the leases it takes: the task names the place.
        let attempt = Attempt {
            task: lease.spec.id.to_string(),
            token: format!("{}/{}", lease.spec.id, lease.token),
            attempt: lease.attempt,
        };
        let (reply, answer) = oneshot::channel();
        let sent = self.lane().send(Request::Acquire {
            scopes,
            attempt,
            reply,
        });
        let answer = match sent {
            Ok(()) => answer.await.ok(),
            Err(_) => None,
        };
        answer.unwrap_or_else(|| {
            Err(Wait::until(
                unavailable_until(),
                "the worker's limiter lane stopped".to_owned(),
            ))
        })
    }
}

/// How long an acquisition may take: a batch in the store ahead of it, then a round per
/// limiter and one to give back what a refusal took, each bounded by `store_timeout`.
pub(crate) fn acquire_bound(store_timeout: Duration) -> Duration {
    store_timeout.saturating_mul(4)
}

/// The store key of a limiter: its parts as a JSON array, so no queue or key name can
/// make two limiters share one; one too long for a store is named by a 128-bit hash.
fn store_key(parts: &[&str]) -> String {
    let key = format!("omniq-limit:{}", serde_json::json!(parts));
    if key.len() <= MAX_LIMITER_KEY_BYTES {
        return key;
    }
    format!("omniq-limit:h:{:032x}", fnv1a_128(key.as_bytes()))
}

/// FNV-1a, 128 bits: stable across releases and platforms, as a stored name must be.
fn fnv1a_128(bytes: &[u8]) -> u128 {
    const OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;
    bytes.iter().fold(OFFSET, |hash, byte| {
        (hash ^ u128::from(*byte)).wrapping_mul(PRIME)
    })
}

fn now_us() -> i64 {
    Utc::now().timestamp_micros()
}

/// An acquisition in progress: the scopes it has, and the one it waits for.
struct Pending {
    scopes: Vec<Scope>,
    next: usize,
    attempt: Attempt,
    reply: oneshot::Sender<Result<Hold, Wait>>,
}

/// Makes the limiter changes asked of it, a batch at a time, until every sender is gone.
async fn lane(
    queue: Arc<dyn TaskQueue>,
    (me, mut requests): (
        mpsc::WeakUnboundedSender<Request>,
        mpsc::UnboundedReceiver<Request>,
    ),
    lease_us: i64,
    store_timeout: Duration,
) {
    // Places that could not be given back, tried again with the next batches.
    let mut retry: Vec<Release> = Vec::new();
    // Flushes answered once nothing is left to try again.
    let mut flushes: Vec<oneshot::Sender<()>> = Vec::new();
    loop {
        let next = if retry.is_empty() {
            requests.recv().await
        } else {
            // Failed releases are tried again within a second even when nothing arrives.
            match tokio::time::timeout(Duration::from_secs(1), requests.recv()).await {
                Ok(request) => request,
                Err(_) => Some(Request::Flush(oneshot::channel().0)),
            }
        };
        let closed = next.is_none();
        let mut batch: Vec<Request> = next.into_iter().collect();
        while let Ok(more) = requests.try_recv() {
            batch.push(more);
        }
        if closed && retry.is_empty() {
            break;
        }
        let mut pending = Vec::new();
        let mut releases = std::mem::take(&mut retry);
        for request in batch {
            match request {
                Request::Acquire {
                    scopes,
                    attempt,
                    reply,
                } => pending.push(Pending {
                    scopes,
                    next: 0,
                    attempt,
                    reply,
                }),
                Request::Release(release) => releases.push(release),
                Request::Flush(done) => flushes.push(done),
            }
        }
        let settled = settle(
            queue.as_ref(),
            &me,
            pending,
            releases,
            lease_us,
            store_timeout,
        );
        // A panic here must not stop the lane: every later limited task would wait forever.
        match AssertUnwindSafe(settled).catch_unwind().await {
            Ok(failed) => retry = failed,
            Err(_) => tracing::error!(
                "the limiter lane recovered from a panic; the places of its batch free \
                 themselves once their leases have lapsed"
            ),
        }
        if retry.is_empty() {
            for done in flushes.drain(..) {
                let _ = done.send(());
            }
        }
        if closed {
            if !retry.is_empty() {
                tracing::warn!(
                    places = retry.len(),
                    "limiter places were not given back; they free themselves once their leases have lapsed"
                );
            }
            break;
        }
    }
}

/// Settles a batch: each round writes each limiter named by the batch once; an attempt
/// covered by two limiters takes the second in the round after the first. Returns the
/// releases to try again.
async fn settle(
    queue: &dyn TaskQueue,
    lane: &mpsc::WeakUnboundedSender<Request>,
    mut pending: Vec<Pending>,
    mut releases: Vec<Release>,
    lease_us: i64,
    store_timeout: Duration,
) -> Vec<Release> {
    let mut retry = Vec::new();
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
                let attempts: Vec<Attempt> = waiting
                    .iter()
                    .map(|&at| pending[at].attempt.clone())
                    .collect();
                async move {
                    let written = tokio::time::timeout(
                        store_timeout,
                        write_group(queue, &scope, &gone, &attempts, lease_us),
                    )
                    .await
                    .unwrap_or_else(|_| {
                        Err(StoreError::unavailable(
                            "limiter",
                            format!("no answer within {store_timeout:?}"),
                        ))
                    });
                    (scope, gone, waiting, attempts.len(), written)
                }
            })
            .collect();
        let mut verdicts: Vec<Option<Result<(), Wait>>> = pending.iter().map(|_| None).collect();
        for (scope, gone, waiting, asking, written) in join_all(asked).await {
            let decided = match written {
                Ok(decided) => decided,
                Err(err) => {
                    tracing::warn!(%err, limiter = %scope.key, "a limiter could not be updated");
                    // The write may have been applied: whatever it granted goes back (a
                    // release of a place not held changes nothing).
                    for &at in &waiting {
                        retry.push(Release {
                            scope: scope.clone(),
                            token: pending[at].attempt.token.clone(),
                            refund: true,
                            failed: 0,
                        });
                    }
                    for mut release in gone {
                        release.failed += 1;
                        if release.failed < RELEASE_TRIES {
                            retry.push(release);
                        } else {
                            tracing::warn!(limiter = %scope.key,
                                "a limiter place was not given back; it frees itself once its lease has lapsed");
                        }
                    }
                    let reason = format!("the limiter could not be read or written: {err}");
                    (0..asking)
                        .map(|_| Err(Wait::until(unavailable_until(), reason.clone())))
                        .collect()
                }
            };
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
                        let hold = Hold {
                            lane: lane.upgrade(),
                            scopes: waiting.scopes,
                            token: waiting.attempt.token,
                            refund: false,
                        };
                        if let Err(Ok(mut unwanted)) = waiting.reply.send(Ok(hold)) {
                            // Its caller stopped waiting: the places go back, tokens too.
                            unwanted.refund = true;
                        }
                    }
                }
                refused => {
                    let wait = refused.and_then(Result::err).unwrap_or_else(|| {
                        Wait::until(unavailable_until(), "no decision".to_owned())
                    });
                    releases.extend(refunds(&waiting));
                    let _ = waiting.reply.send(Err(wait));
                }
            }
        }
        pending = still;
    }
    retry
}

/// The places `waiting` took before it was refused or abandoned, tokens included.
fn refunds(waiting: &Pending) -> Vec<Release> {
    waiting.scopes[..waiting.next]
        .iter()
        .map(|scope| Release {
            scope: scope.clone(),
            token: waiting.attempt.token.clone(),
            refund: true,
            failed: 0,
        })
        .collect()
}

/// Gives back `gone` and decides for `attempts` (in order) under one limiter, in one
/// compare-and-set; a decision per attempt.
async fn write_group(
    queue: &dyn TaskQueue,
    scope: &Scope,
    gone: &[Release],
    attempts: &[Attempt],
    lease_us: i64,
) -> StoreResult<Vec<Result<(), Wait>>> {
    let mark = uuid::Uuid::new_v4().simple().to_string();
    let mut decided = Vec::new();
    let mut tried = false;
    // Places checked against their tasks, kept across rounds: whether the attempt runs.
    let mut checked: HashMap<String, bool> = HashMap::new();
    for _ in 0..CAS_ROUNDS {
        let (mut record, version) = read(queue, scope).await?;
        if tried && record.mark == mark {
            // The last round's write was applied; only its reply was lost.
            return Ok(decided);
        }
        let now = now_us();
        let mut changed = false;
        for release in gone {
            changed |= record.release(&scope.limit, &release.token, now, release.refund);
        }
        decided = Vec::with_capacity(attempts.len());
        for attempt in attempts {
            let mut decision = record.decide(&scope.limit, attempt, now, lease_us);
            if let Decision::Check(unchecked) = decision {
                check(queue, &mut record, &unchecked, &mut checked, now, lease_us).await?;
                decision = record.decide(&scope.limit, attempt, now, lease_us);
            }
            changed = true;
            decided.push(match decision {
                Decision::Admit => Ok(()),
                Decision::Park { until_us, reason } => Err(Wait::until(until_us, reason)),
                // Every place past its lease was just checked; one still unclear waits.
                Decision::Check(_) => Err(Wait::until(
                    unavailable_until(),
                    "running places are being checked".to_owned(),
                )),
            });
        }
        if !changed {
            return Ok(decided);
        }
        record.mark.clone_from(&mark);
        if write(queue, scope, &record, version).await? {
            return Ok(decided);
        }
        tried = true;
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

/// Frees each place of `tokens` unless the store's record says its attempt still runs; a
/// place kept counts unchecked for another lease. The store's record decides, not the
/// clocks: a worker whose clock is ahead cannot free a place still held. The tasks are
/// read a few at a time, each once per `checked`.
async fn check(
    queue: &dyn TaskQueue,
    record: &mut LimiterRecord,
    tokens: &[String],
    checked: &mut HashMap<String, bool>,
    now: i64,
    lease_us: i64,
) -> StoreResult<()> {
    let unread: Vec<(String, crate::limits::Holder)> = tokens
        .iter()
        .filter(|token| !checked.contains_key(*token))
        .filter_map(|token| {
            record
                .running
                .get(token)
                .map(|holder| (token.clone(), holder.clone()))
        })
        .collect();
    let read: Vec<StoreResult<(String, bool)>> = futures_util::stream::iter(unread)
        .map(|(token, holder)| async move {
            let task = match holder.task.parse::<TaskId>() {
                Ok(task_id) => queue.get(task_id).await?,
                Err(_) => None,
            };
            let runs = task.is_some_and(|task| {
                task.state == TaskState::Running && task.attempts == holder.attempt
            });
            Ok((token, runs))
        })
        .buffer_unordered(CHECKS_AT_ONCE)
        .collect()
        .await;
    for outcome in read {
        let (token, runs) = outcome?;
        checked.insert(token, runs);
    }
    for token in tokens {
        match checked.get(token) {
            Some(true) => {
                if let Some(place) = record.running.get_mut(token) {
                    place.until = now.saturating_add(lease_us);
                }
            }
            Some(false) => {
                record.running.remove(token);
            }
            None => {}
        }
    }
    Ok(())
}
