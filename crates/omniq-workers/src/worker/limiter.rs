//! The worker's side of [`Limit`]s: before an attempt starts, a place is taken in each
//! limiter that covers it (the queue's, then the task key's), by compare-and-set on the
//! limiter's state in the store; the places are given back when the attempt ends.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use omniq_models::{LIMIT_KEY_METADATA, TaskId, TaskState};
use omniq_storage::{Lease, StoreError, StoreResult, TaskQueue};

use crate::limits::{Decision, Limit, LimiterRecord, QueueLimits};

/// Rounds of read and compare-and-set before a busy limiter counts as unavailable.
const CAS_ROUNDS: usize = 32;

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

/// The places an attempt holds; given back when dropped.
#[derive(Debug)]
pub(crate) struct Hold {
    queue: Arc<dyn TaskQueue>,
    scopes: Vec<Scope>,
    task: String,
    attempt: u32,
}

impl Drop for Hold {
    fn drop(&mut self) {
        if self.scopes.is_empty() {
            return;
        }
        let scopes = std::mem::take(&mut self.scopes);
        let queue = Arc::clone(&self.queue);
        let task = self.task.clone();
        let attempt = self.attempt;
        // A place not given back (no runtime, the store down) is checked against its task
        // once its lease has lapsed, so it frees itself.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                for scope in scopes.iter().rev() {
                    if let Err(err) = release(queue.as_ref(), scope, &task, attempt, false).await {
                        tracing::warn!(%err, limiter = %scope.key,
                            "a limiter place was not given back; it frees itself once the lease has lapsed");
                    }
                }
            });
        }
    }
}

/// The limiters of a worker.
#[derive(Debug)]
pub(crate) struct Limiters {
    by_queue: HashMap<String, QueueLimits>,
    lease_ms: i64,
}

impl Limiters {
    pub(crate) fn new(by_queue: HashMap<String, QueueLimits>, lease: std::time::Duration) -> Self {
        Self {
            by_queue,
            lease_ms: i64::try_from(lease.as_millis()).unwrap_or(i64::MAX),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.by_queue.is_empty()
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
    pub(crate) async fn acquire(
        &self,
        queue: &Arc<dyn TaskQueue>,
        lease: &Lease,
    ) -> Result<Hold, Wait> {
        let mut hold = Hold {
            queue: Arc::clone(queue),
            scopes: Vec::new(),
            task: lease.spec.id.to_string(),
            attempt: lease.attempt,
        };
        for scope in self.scopes(lease) {
            let decided = take_place(
                queue.as_ref(),
                &scope,
                &hold.task,
                hold.attempt,
                self.lease_ms,
            )
            .await
            .unwrap_or_else(|err| Decision::Park {
                until_ms: now_ms() + 1_000,
                reason: format!("the limiter could not be read or written: {err}"),
            });
            let refused = match decided {
                Decision::Admit => None,
                Decision::Park { until_ms, reason } => Some((until_ms, reason)),
                // `take_place` makes its checks before it decides for good.
                Decision::Check(_) => Some((now_ms() + 1_000, "places are being checked".into())),
            };
            match refused {
                None => hold.scopes.push(scope),
                Some((until_ms, reason)) => {
                    let taken = std::mem::take(&mut hold.scopes);
                    for scope in taken.iter().rev() {
                        if let Err(err) =
                            release(queue.as_ref(), scope, &hold.task, hold.attempt, true).await
                        {
                            tracing::warn!(%err, limiter = %scope.key,
                                "a limiter place was not given back; it frees itself once the lease has lapsed");
                        }
                    }
                    let run_at = DateTime::<Utc>::from_timestamp_millis(until_ms)
                        .unwrap_or(DateTime::<Utc>::MAX_UTC);
                    return Err(Wait { run_at, reason });
                }
            }
        }
        Ok(hold)
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

/// The record stored under `scope`, and the version to replace it from. A record that
/// cannot be read is started afresh (logged): left alone it would stop every task of the
/// limiter.
async fn read(
    queue: &dyn TaskQueue,
    scope: &Scope,
) -> StoreResult<(LimiterRecord, Option<omniq_storage::LimiterVersion>)> {
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
    version: Option<omniq_storage::LimiterVersion>,
) -> StoreResult<bool> {
    let bytes = serde_json::to_vec(record)
        .map_err(|err| StoreError::backend("limiter", err.to_string()))?;
    queue.write_limiter(scope.key.clone(), version, bytes).await
}

fn too_busy(scope: &Scope) -> StoreError {
    StoreError::unavailable(
        "limiter",
        format!(
            "the limiter {} kept changing under {CAS_ROUNDS} writes",
            scope.key
        ),
    )
}

/// Decides for one limiter and stores the decision, checking places whose lease may have
/// lapsed against their tasks.
async fn take_place(
    queue: &dyn TaskQueue,
    scope: &Scope,
    task: &str,
    attempt: u32,
    lease_ms: i64,
) -> StoreResult<Decision> {
    for _ in 0..CAS_ROUNDS {
        let (mut record, version) = read(queue, scope).await?;
        let now = now_ms();
        let mut decision = record.decide(&scope.limit, task, attempt, now, lease_ms);
        if let Decision::Check(unchecked) = decision {
            for id in unchecked {
                check(queue, &mut record, &id, now).await?;
            }
            decision = record.decide(&scope.limit, task, attempt, now, lease_ms);
            if let Decision::Check(_) = decision {
                // Every place was just checked; what is left counts.
                decision = Decision::Park {
                    until_ms: now + 1_000,
                    reason: "running places are being checked".to_owned(),
                };
            }
        }
        if write(queue, scope, &record, version).await? {
            return Ok(decision);
        }
    }
    Err(too_busy(scope))
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

/// Gives back `task`'s place under `scope` (its tokens too with `refund`).
async fn release(
    queue: &dyn TaskQueue,
    scope: &Scope,
    task: &str,
    attempt: u32,
    refund: bool,
) -> StoreResult<()> {
    for _ in 0..CAS_ROUNDS {
        let (mut record, version) = read(queue, scope).await?;
        if !record.release(&scope.limit, task, attempt, now_ms(), refund) {
            return Ok(());
        }
        if write(queue, scope, &record, version).await? {
            return Ok(());
        }
    }
    Err(too_busy(scope))
}
