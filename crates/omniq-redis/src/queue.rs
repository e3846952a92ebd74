//! The Redis task queue: every state change is one Lua script (see `scripts/*.lua`).

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use omniq_models::{LeaseToken, TaskError, TaskErrorKind, TaskId, TaskRecord, TaskSpec, TaskState};
use omniq_storage::{
    BoxFuture, CancelOutcome, Cancellation, Completed, Completion, CompletionOutcome,
    CompletionStatus, DequeueRequest, EnqueueOutcome, Lease, LeaseRef, LeaseStatus, LimiterState,
    LimiterVersion, MAX_LIST_LIMIT, PurgeRequest, QueueStats, RedriveTarget, StateChange,
    StoreError, StoreResult, TaskQuery, TaskQueue, effective_purge_limit, lease_micros,
    unreadable_task,
};
use redis::{Script, ScriptInvocation, Value};

use crate::RedisBackend;
use crate::codec::{
    LEASE_FIELDS, attempts_of, changes, duration_micros, fields, from_micros, integer, items,
    micros, opt_string, parse_id, parse_state, positional, record_from, required, required_time,
    spec_from, stored_extras, string, to_json,
};
use crate::error::{corrupt, redis_error};

/// Fields per task in the enqueue script's arguments.
const ENQUEUE_FIELDS: usize = 15;
/// Tasks examined per purge script call, so that no call blocks the server for long.
const PURGE_BATCH: usize = 500;
/// Failed tasks re-driven per script call.
const REDRIVE_PAGE: usize = 500;
/// The largest count handed to a script: Lua numbers are doubles, and Redis reads the
/// larger ones back as text in exponent form.
const MAX_COUNT: usize = 1 << 30;

/// The task queue of a [`RedisBackend`].
///
/// Idle workers wait in `wait_for_tasks` on a blocking pop of their queues' wake-up lists
/// (on a connection of their own), so they start a task as soon as any process enqueues
/// one, and a delayed task when its `run_at` comes.
#[derive(Debug, Clone)]
pub struct RedisTaskQueue {
    backend: RedisBackend,
}

impl RedisTaskQueue {
    pub(crate) fn new(backend: RedisBackend) -> Self {
        Self { backend }
    }

    /// An invocation of a task-queue script with the common keys and arguments (see
    /// `scripts/common.lua`).
    fn invocation<'a>(&self, script: &'a Script, now: DateTime<Utc>) -> ScriptInvocation<'a> {
        let keys = self.backend.keys();
        let mut invocation = script.prepare_invoke();
        invocation
            .key(keys.leases())
            .key(keys.expiry())
            .key(keys.seq())
            .key(keys.queues())
            .arg(&keys.base)
            .arg(micros(now))
            .arg(now.to_rfc3339_opts(SecondsFormat::Micros, true));
        invocation
    }

    async fn call(&self, invocation: &ScriptInvocation<'_>) -> StoreResult<Value> {
        let mut conn = self.backend.connection();
        invocation
            .invoke_async(&mut conn)
            .await
            .map_err(redis_error)
    }

    async fn enqueue_batch(&self, tasks: Vec<TaskSpec>) -> StoreResult<Vec<EnqueueOutcome>> {
        omniq_storage::validate_specs(&tasks)?;
        if tasks.is_empty() {
            return Ok(Vec::new());
        }
        let mut invocation = self.invocation(&self.backend.scripts().enqueue, Utc::now());
        invocation.arg(tasks.len()).arg(ENQUEUE_FIELDS);
        for spec in &tasks {
            let parents: Vec<String> = spec.depends_on.iter().map(ToString::to_string).collect();
            invocation
                .arg(spec.id.to_string())
                .arg(&spec.queue)
                .arg(&spec.name)
                .arg(&spec.payload[..])
                .arg(spec.priority)
                .arg(micros(spec.run_at))
                .arg(
                    spec.expires_at
                        .map(|at| micros(at).to_string())
                        .unwrap_or_default(),
                )
                .arg(spec.max_attempts)
                .arg(if spec.unique_key.is_some() { "1" } else { "0" })
                .arg(spec.unique_key.as_deref().unwrap_or_default())
                .arg(
                    spec.unique_for
                        .map(|w| duration_micros(w).to_string())
                        .unwrap_or_default(),
                )
                .arg(parents.join(","))
                .arg(spec.run_when.as_str())
                .arg(micros(spec.created_at))
                .arg(to_json(&stored_extras(spec))?);
        }
        let mut reply = items(self.call(&invocation).await?)?.into_iter();
        let tag = string(reply.next().unwrap_or(Value::Nil))?;
        let body = reply.next().unwrap_or(Value::Nil);
        match tag.as_str() {
            "unknown_parent" => return Err(StoreError::UnknownParent(parse_id(&string(body)?)?)),
            "invalid" => return Err(StoreError::Invalid(string(body)?)),
            _ => {}
        }
        items(body)?
            .into_iter()
            .map(|outcome| {
                let mut parts = items(outcome)?.into_iter();
                let kind = string(parts.next().unwrap_or(Value::Nil))?;
                let id = parse_id(&string(parts.next().unwrap_or(Value::Nil))?)?;
                match kind.as_str() {
                    "created" => Ok(EnqueueOutcome::Created {
                        id,
                        state: parse_state(&string(parts.next().unwrap_or(Value::Nil))?)?,
                    }),
                    _ => Ok(EnqueueOutcome::Duplicate { existing: id }),
                }
            })
            .collect()
    }

    async fn claim(&self, request: DequeueRequest) -> StoreResult<Vec<Lease>> {
        if request.limit == 0 || request.queues.is_empty() {
            return Ok(Vec::new());
        }
        let now = self.backend.clock().now();
        let token = LeaseToken::new();
        let mut invocation = self.invocation(&self.backend.scripts().claim, now);
        // The script sets the deadline on the server's clock, and says which.
        invocation
            .arg(request.limit.min(MAX_COUNT))
            .arg(lease_micros(request.lease))
            .arg(request.worker_id.as_str())
            .arg(token.to_string());
        // The name filter (rolling deploys): the names as a JSON array ('' for none), and
        // the latest run_at at which a task of another name is taken all the same.
        match &request.names {
            Some(names) => invocation.arg(to_json(names)?),
            None => invocation.arg(""),
        };
        match request.unknown_due_by(now) {
            Some(by) => invocation.arg(micros(by)),
            None => invocation.arg(""),
        };
        for queue in &request.queues {
            invocation.arg(queue);
        }
        let mut leases = Vec::new();
        let mut unreadable = Vec::new();
        for leased in items(self.call(&invocation).await?)? {
            let fields = positional(leased, &LEASE_FIELDS)?;
            // Each task on its own: one that cannot be read is dead-lettered below, and
            // never costs the others their claim.
            let lease = (|| {
                Ok(Lease::new(
                    spec_from(&fields)?,
                    token,
                    attempts_of(&fields)?,
                    required_time(&fields, "lease_at")?,
                ))
            })();
            match lease {
                Ok(lease) => leases.push(lease),
                Err(err) => {
                    let id = parse_id(required(&fields, "id")?)?;
                    unreadable.push(unreadable_task("redis", id, token, &err));
                }
            }
        }
        if !unreadable.is_empty()
            && let Err(err) = self.complete_batch(unreadable).await
        {
            // Their leases lapse and recovery takes them back; the readable ones still run.
            tracing::warn!(%err, "cannot dead-letter unreadable tasks");
        }
        Ok(leases)
    }

    /// Extends held leases; with `progress` (JSON text), stores it on each held lease's
    /// task in the same script.
    async fn renew(
        &self,
        leases: Vec<LeaseRef>,
        extend: Duration,
        progress: Option<String>,
    ) -> StoreResult<Vec<LeaseStatus>> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let now = self.backend.clock().now();
        let mut invocation = self.invocation(&self.backend.scripts().heartbeat, now);
        invocation
            .arg(lease_micros(extend))
            .arg(progress.unwrap_or_default());
        for lease in &leases {
            invocation
                .arg(lease.task_id.to_string())
                .arg(lease.token.to_string());
        }
        items(self.call(&invocation).await?)?
            .into_iter()
            .map(|status| {
                Ok(match string(status)?.as_str() {
                    "held" => LeaseStatus::Held,
                    "cancel" => LeaseStatus::CancelRequested,
                    _ => LeaseStatus::Lost,
                })
            })
            .collect()
    }

    async fn complete_batch(&self, completions: Vec<Completion>) -> StoreResult<Completed> {
        if completions.is_empty() {
            return Ok(Completed::default());
        }
        let mut invocation =
            self.invocation(&self.backend.scripts().complete, self.backend.clock().now());
        for completion in &completions {
            let (kind, detail, run_at) = match &completion.outcome {
                CompletionOutcome::Succeeded => ("succeeded", String::new(), String::new()),
                CompletionOutcome::Failed { error } => ("failed", to_json(error)?, String::new()),
                CompletionOutcome::Cancelled { reason } => {
                    ("cancelled", reason.clone(), String::new())
                }
                CompletionOutcome::Retry { run_at, error } => {
                    ("retry", to_json(error)?, micros(*run_at).to_string())
                }
                CompletionOutcome::Release => ("release", String::new(), String::new()),
                CompletionOutcome::Snooze { run_at } => {
                    ("snooze", String::new(), micros(*run_at).to_string())
                }
            };
            invocation
                .arg(completion.lease.task_id.to_string())
                .arg(completion.lease.token.to_string())
                .arg(kind)
                .arg(detail)
                .arg(run_at);
        }
        let mut reply = items(self.call(&invocation).await?)?.into_iter();
        let statuses = items(reply.next().unwrap_or(Value::Nil))?
            .into_iter()
            .map(|status| {
                Ok(if string(status)? == "applied" {
                    CompletionStatus::Applied
                } else {
                    CompletionStatus::LeaseLost
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(Completed::new(
            statuses,
            changes(reply.next().unwrap_or(Value::Nil))?,
        ))
    }

    async fn recover(&self, limit: usize) -> StoreResult<Vec<StateChange>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let error = TaskError::with_kind(
            TaskErrorKind::LeaseLost,
            "lease expired: the worker stopped renewing it",
            true,
        );
        let mut invocation =
            self.invocation(&self.backend.scripts().recover, self.backend.clock().now());
        invocation.arg(limit.min(MAX_COUNT)).arg(to_json(&error)?);
        changes(self.call(&invocation).await?)
    }

    async fn expire(&self, limit: usize) -> StoreResult<Vec<StateChange>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut invocation = self.invocation(&self.backend.scripts().expire, Utc::now());
        invocation
            .arg(limit.min(MAX_COUNT))
            .arg("not started before its expiry (ttl)");
        changes(self.call(&invocation).await?)
    }

    async fn redrive_failed(&self, target: RedriveTarget) -> StoreResult<Vec<TaskId>> {
        // A page per script call: one call over a whole dead-letter set would block the
        // server for as long as it takes.
        let mut redriven = Vec::new();
        match target {
            RedriveTarget::Tasks(ids) => {
                for page in ids.chunks(REDRIVE_PAGE) {
                    let mut invocation =
                        self.invocation(&self.backend.scripts().redrive, Utc::now());
                    invocation.arg("ids");
                    for id in page {
                        invocation.arg(id.to_string());
                    }
                    redriven.extend(self.redrive_page(&invocation).await?.2);
                }
            }
            RedriveTarget::Queue(queue) => self.redrive_queue(&queue, &mut redriven).await?,
            RedriveTarget::All => {
                for queue in self.queue_names().await? {
                    self.redrive_queue(&queue, &mut redriven).await?;
                }
            }
        }
        redriven.sort();
        Ok(redriven)
    }

    /// Re-drives every Failed task of `queue`, a page per script call.
    async fn redrive_queue(&self, queue: &str, redriven: &mut Vec<TaskId>) -> StoreResult<()> {
        let mut cursor = "-inf".to_owned();
        loop {
            let mut invocation = self.invocation(&self.backend.scripts().redrive, Utc::now());
            invocation
                .arg("queue")
                .arg(queue)
                .arg(&cursor)
                .arg(REDRIVE_PAGE);
            let (last, examined, ids) = self.redrive_page(&invocation).await?;
            redriven.extend(ids);
            if examined < REDRIVE_PAGE {
                return Ok(());
            }
            cursor = last;
        }
    }

    /// Runs one page of `redrive.lua`: (last seq examined, how many, the ids re-driven).
    async fn redrive_page(
        &self,
        invocation: &ScriptInvocation<'_>,
    ) -> StoreResult<(String, usize, Vec<TaskId>)> {
        let mut reply = items(self.call(invocation).await?)?.into_iter();
        let last = string(reply.next().unwrap_or(Value::Nil))?;
        let examined = usize::try_from(integer(reply.next().unwrap_or(Value::Nil))?).unwrap_or(0);
        let ids = reply
            .map(|id| parse_id(&string(id)?))
            .collect::<StoreResult<Vec<_>>>()?;
        Ok((last, examined, ids))
    }

    async fn purge_finished(&self, request: PurgeRequest) -> StoreResult<u64> {
        let states = request.finished_states()?;
        let queues = match &request.queue {
            Some(queue) => vec![queue.clone()],
            None => self.queue_names().await?,
        };
        let before = request
            .finished_before
            .map(|at| micros(at).to_string())
            .unwrap_or_default();
        // Each script call examines at most a batch, and never more than the budget left, so
        // it deletes at most `limit` in all and never blocks the server for long.
        let limit = u64::try_from(effective_purge_limit(request.limit)).unwrap_or(u64::MAX);
        let mut purged = 0u64;
        'queues: for queue in &queues {
            for state in &states {
                let mut cursor = "0".to_owned();
                loop {
                    let Some(left) = limit.checked_sub(purged).filter(|left| *left > 0) else {
                        break 'queues;
                    };
                    let batch = usize::try_from(left).map_or(PURGE_BATCH, |l| l.min(PURGE_BATCH));
                    let mut invocation = self.invocation(&self.backend.scripts().purge, Utc::now());
                    invocation
                        .arg(queue)
                        .arg(state.as_str())
                        .arg(&before)
                        .arg(&cursor)
                        .arg(batch);
                    let mut reply = items(self.call(&invocation).await?)?.into_iter();
                    let mut next = || reply.next().unwrap_or(Value::Nil);
                    purged += u64::try_from(integer(next())?).unwrap_or(0);
                    cursor = string(next())?;
                    let examined = usize::try_from(integer(next())?).unwrap_or(0);
                    if examined < batch {
                        break;
                    }
                }
            }
        }
        Ok(purged)
    }

    async fn queue_names(&self) -> StoreResult<Vec<String>> {
        let reply: Value = redis::cmd("SMEMBERS")
            .arg(self.backend.keys().queues())
            .query_async(&mut self.backend.connection())
            .await
            .map_err(redis_error)?;
        items(reply)?.into_iter().map(string).collect()
    }

    async fn set_paused(&self, queue: String, paused: bool) -> StoreResult<bool> {
        omniq_storage::validate_queue_name(&queue)?;
        let changed: i64 = redis::cmd(if paused { "SADD" } else { "SREM" })
            .arg(self.backend.keys().paused())
            .arg(&queue)
            .query_async(&mut self.backend.connection())
            .await
            .map_err(redis_error)?;
        Ok(changed > 0)
    }

    async fn limiter_state(&self, key: String) -> StoreResult<Option<LimiterState>> {
        omniq_storage::validate_limiter_key(&key)?;
        let (version, bytes): (Option<String>, Option<Vec<u8>>) = redis::cmd("HMGET")
            .arg(self.backend.keys().limiter(&key))
            .arg("v")
            .arg("s")
            .query_async(&mut self.backend.connection())
            .await
            .map_err(redis_error)?;
        Ok(version.map(|version| {
            LimiterState::new(bytes.unwrap_or_default(), LimiterVersion::new(version))
        }))
    }

    async fn replace_limiter(
        &self,
        key: String,
        expected: Option<LimiterVersion>,
        bytes: Vec<u8>,
    ) -> StoreResult<bool> {
        omniq_storage::validate_limiter_write(&key, &bytes)?;
        let mut invocation = self.backend.scripts().limiter_write.prepare_invoke();
        invocation
            .key(self.backend.keys().limiter(&key))
            .arg(expected.as_ref().map_or("", LimiterVersion::as_str))
            .arg(bytes);
        let written: i64 = invocation
            .invoke_async(&mut self.backend.connection())
            .await
            .map_err(redis_error)?;
        Ok(written == 1)
    }

    async fn paused_queue_names(&self) -> StoreResult<Vec<String>> {
        let reply: Value = redis::cmd("SMEMBERS")
            .arg(self.backend.keys().paused())
            .query_async(&mut self.backend.connection())
            .await
            .map_err(redis_error)?;
        let mut names = items(reply)?
            .into_iter()
            .map(string)
            .collect::<StoreResult<Vec<_>>>()?;
        names.sort_unstable();
        Ok(names)
    }

    async fn fetch(&self, id: TaskId) -> StoreResult<Option<TaskRecord>> {
        let reply: Value = redis::cmd("HGETALL")
            .arg(self.backend.keys().task(&id.to_string()))
            .query_async(&mut self.backend.connection())
            .await
            .map_err(redis_error)?;
        let fields = fields(reply)?;
        if fields.is_empty() {
            return Ok(None);
        }
        record_from(&fields).map(Some)
    }

    async fn list_tasks(&self, query: TaskQuery) -> StoreResult<Vec<TaskRecord>> {
        let limit = query.effective_limit();
        // The offset is skipped a bounded page at a time (ids only), by enqueue order, so
        // no script call walks more than a page of each set, however deep the offset.
        let mut below = "+inf".to_owned();
        let mut skip = query.offset;
        while skip > 0 {
            let page = skip.min(MAX_LIST_LIMIT);
            let skipped = items(
                self.call(&self.list_page(&query, &below, page, false))
                    .await?,
            )?;
            let Some(last) = skipped.last() else {
                return Ok(Vec::new());
            };
            let mut last = items(last.clone())?.into_iter().skip(1);
            below = format!("({}", string(last.next().unwrap_or(Value::Nil))?);
            if skipped.len() < page {
                return Ok(Vec::new());
            }
            skip -= page;
        }
        items(
            self.call(&self.list_page(&query, &below, limit, true))
                .await?,
        )?
        .into_iter()
        .map(|task| record_from(&fields(task)?))
        .collect()
    }

    /// One call of the listing script: up to `count` tasks enqueued before `below`, newest
    /// first; their records with `hashes`, else their ids and seqs.
    fn list_page(
        &self,
        query: &TaskQuery,
        below: &str,
        count: usize,
        hashes: bool,
    ) -> ScriptInvocation<'_> {
        let mut invocation = self.invocation(&self.backend.scripts().list, Utc::now());
        invocation
            .arg(below)
            .arg(count)
            .arg(if hashes { "1" } else { "0" });
        match &query.queue {
            Some(queue) => invocation.arg(1).arg(queue),
            None => invocation.arg(0),
        };
        for state in &query.states {
            invocation.arg(state.as_str());
        }
        invocation
    }

    async fn queue_stats(&self, queue: String) -> StoreResult<QueueStats> {
        let mut invocation = self.invocation(&self.backend.scripts().stats, Utc::now());
        invocation.arg(&queue);
        let mut reply = items(self.call(&invocation).await?)?.into_iter();
        let counts = items(reply.next().unwrap_or(Value::Nil))?;
        if counts.len() != TaskState::ALL.len() {
            return Err(corrupt("stats reply", format!("{} counts", counts.len())));
        }
        let counts = TaskState::ALL
            .into_iter()
            .zip(counts)
            .map(|(state, n)| Ok((state, u64::try_from(integer(n)?).unwrap_or(0))))
            .collect::<StoreResult<Vec<_>>>()?
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .collect();
        let oldest = opt_string(reply.next().unwrap_or(Value::Nil))?
            .map(|m| m.parse::<i64>().map_err(|e| corrupt("created_at", e)))
            .transpose()?
            .map(from_micros);
        Ok(QueueStats::new(queue, counts, oldest))
    }

    async fn cancel_task(&self, id: TaskId, reason: String) -> StoreResult<Cancellation> {
        let mut invocation = self.invocation(&self.backend.scripts().cancel, Utc::now());
        invocation.arg(id.to_string()).arg(reason);
        let mut reply = items(self.call(&invocation).await?)?.into_iter();
        let kind = string(reply.next().unwrap_or(Value::Nil))?;
        let body = reply.next().unwrap_or(Value::Nil);
        match kind.as_str() {
            "not_found" => Err(StoreError::TaskNotFound(id)),
            "cancelled" => Ok(Cancellation::new(CancelOutcome::Cancelled, changes(body)?)),
            "requested" => Ok(Cancellation::new(CancelOutcome::Requested, Vec::new())),
            _ => Ok(Cancellation::new(
                CancelOutcome::AlreadyFinished(parse_state(&string(body)?)?),
                Vec::new(),
            )),
        }
    }

    /// Blocks until a wake-up token lands on one of the queues' lists, a delayed task of
    /// theirs comes due, or `timeout` passes.
    async fn wait(&self, queues: &[String], timeout: Duration) -> StoreResult<()> {
        let keys = self.backend.keys();
        // A delayed task due before the timeout ends the wait at its run_at.
        let mut pipe = redis::pipe();
        for queue in queues {
            pipe.cmd("ZRANGE")
                .arg(keys.delayed(queue))
                .arg(0)
                .arg(0)
                .arg("WITHSCORES");
        }
        let replies: Vec<Value> = pipe
            .query_async(&mut self.backend.connection())
            .await
            .map_err(redis_error)?;
        let now = micros(Utc::now());
        let mut wait = timeout;
        for reply in replies {
            let Some(score) = items(reply)?.into_iter().nth(1) else {
                continue;
            };
            let run_at = match score {
                Value::Double(score) => score,
                other => string(other)?
                    .parse::<f64>()
                    .map_err(|e| corrupt("score", e))?,
            };
            let until = (run_at - now as f64) / 1e6;
            if until <= 0.0 {
                return Ok(());
            }
            wait = wait.min(Duration::from_secs_f64(until));
        }
        if wait < Duration::from_millis(1) {
            return Ok(());
        }
        let mut pop = redis::cmd("BLPOP");
        for queue in queues {
            pop.arg(keys.wake(queue));
        }
        // Seconds with millisecond precision; never 0, which would block forever.
        pop.arg(format!("{:.3}", wait.as_secs_f64().max(0.001)));
        let guard = wait + Duration::from_secs(5);
        // A kept connection may have been closed by the server meanwhile (a restart, an idle
        // timeout): then the pop is tried once more on a new one.
        let mut kept = self.backend.idle_waiter();
        loop {
            let from_pool = kept.is_some();
            let mut conn = match kept.take() {
                Some(conn) => conn,
                None => self.backend.new_waiter().await?,
            };
            // If this future is dropped mid-pop, the connection goes with it, never back to
            // the pool with a pop in flight.
            match tokio::time::timeout(guard, pop.query_async::<Value>(&mut conn)).await {
                Ok(Ok(_)) => {
                    self.backend.return_waiter(conn);
                    return Ok(());
                }
                Ok(Err(err))
                    if from_pool
                        && (err.is_unrecoverable_error()
                            || err.is_connection_dropped()
                            || err.is_io_error()) => {}
                Ok(Err(err)) => return Err(redis_error(err)),
                // The server never answered: drop the connection, and with it the pop.
                Err(_) => return Ok(()),
            }
        }
    }
}

impl TaskQueue for RedisTaskQueue {
    fn capabilities(&self) -> omniq_storage::Capabilities {
        // Everything but enqueueing inside a caller's SQL transaction.
        omniq_storage::Capabilities::all().without(omniq_storage::Capability::TransactionalEnqueue)
    }

    fn enqueue(&self, tasks: Vec<TaskSpec>) -> BoxFuture<'_, StoreResult<Vec<EnqueueOutcome>>> {
        Box::pin(self.enqueue_batch(tasks))
    }

    fn dequeue(&self, request: DequeueRequest) -> BoxFuture<'_, StoreResult<Vec<Lease>>> {
        Box::pin(self.claim(request))
    }

    fn heartbeat(
        &self,
        leases: Vec<LeaseRef>,
        extend: Duration,
    ) -> BoxFuture<'_, StoreResult<Vec<LeaseStatus>>> {
        Box::pin(self.renew(leases, extend, None))
    }

    fn complete(&self, completions: Vec<Completion>) -> BoxFuture<'_, StoreResult<Completed>> {
        Box::pin(self.complete_batch(completions))
    }

    fn recover_expired(&self, limit: usize) -> BoxFuture<'_, StoreResult<Vec<StateChange>>> {
        Box::pin(self.recover(limit))
    }

    fn expire_due(&self, limit: usize) -> BoxFuture<'_, StoreResult<Vec<StateChange>>> {
        Box::pin(self.expire(limit))
    }

    fn redrive(&self, target: RedriveTarget) -> BoxFuture<'_, StoreResult<Vec<TaskId>>> {
        Box::pin(self.redrive_failed(target))
    }

    fn purge(&self, request: PurgeRequest) -> BoxFuture<'_, StoreResult<u64>> {
        Box::pin(self.purge_finished(request))
    }

    fn get(&self, id: TaskId) -> BoxFuture<'_, StoreResult<Option<TaskRecord>>> {
        Box::pin(self.fetch(id))
    }

    fn list(&self, query: TaskQuery) -> BoxFuture<'_, StoreResult<Vec<TaskRecord>>> {
        Box::pin(self.list_tasks(query))
    }

    fn stats(&self, queue: String) -> BoxFuture<'_, StoreResult<QueueStats>> {
        Box::pin(self.queue_stats(queue))
    }

    fn queue_names(&self) -> BoxFuture<'_, StoreResult<Vec<String>>> {
        Box::pin(async move {
            let mut names = RedisTaskQueue::queue_names(self).await?;
            names.sort();
            Ok(names)
        })
    }

    fn cancel(&self, id: TaskId, reason: String) -> BoxFuture<'_, StoreResult<Cancellation>> {
        Box::pin(self.cancel_task(id, reason))
    }

    fn set_queue_paused(&self, queue: String, paused: bool) -> BoxFuture<'_, StoreResult<bool>> {
        Box::pin(self.set_paused(queue, paused))
    }

    fn paused_queues(&self) -> BoxFuture<'_, StoreResult<Vec<String>>> {
        Box::pin(self.paused_queue_names())
    }

    fn read_limiter(&self, key: String) -> BoxFuture<'_, StoreResult<Option<LimiterState>>> {
        Box::pin(self.limiter_state(key))
    }

    fn write_limiter(
        &self,
        key: String,
        expected: Option<LimiterVersion>,
        bytes: Vec<u8>,
    ) -> BoxFuture<'_, StoreResult<bool>> {
        Box::pin(self.replace_limiter(key, expected, bytes))
    }

    fn report_progress(
        &self,
        lease: LeaseRef,
        progress: serde_json::Value,
        extend: Duration,
    ) -> BoxFuture<'_, StoreResult<LeaseStatus>> {
        Box::pin(async move {
            let text = omniq_storage::progress_text(&progress)?;
            let status = self.renew(vec![lease], extend, Some(text)).await?.pop();
            Ok(status.unwrap_or(LeaseStatus::Lost))
        })
    }

    fn wait_for_tasks(&self, queues: &[String], timeout: Duration) -> BoxFuture<'_, ()> {
        let queues = queues.to_vec();
        Box::pin(async move {
            let started = tokio::time::Instant::now();
            let waited = if queues.is_empty() {
                Err(StoreError::Invalid("no queue to wait on".to_owned()))
            } else {
                self.wait(&queues, timeout).await
            };
            if let Err(err) = waited {
                // A wake-up is a hint: without one, the wait is a polling interval.
                tracing::debug!(error = %err, "cannot wait for a wake-up; sleeping instead");
                tokio::time::sleep(timeout.saturating_sub(started.elapsed())).await;
            }
        })
    }
}
