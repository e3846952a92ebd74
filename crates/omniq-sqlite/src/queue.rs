use std::collections::HashMap;
use std::time::Duration;

use chrono::Utc;
use omniq_models::{
    AttemptError, LeaseToken, TaskError, TaskErrorKind, TaskId, TaskRecord, TaskSpec, TaskState,
};
use omniq_storage::{
    BoxFuture, CancelOutcome, Completion, CompletionOutcome, CompletionStatus, DequeueRequest,
    EnqueueOutcome, Lease, LeaseRef, QueueStats, Recovered, StoreError, StoreResult, TaskQuery,
    TaskQueue,
};
use sqlx::{AssertSqlSafe, QueryBuilder, Row, Sqlite};

use crate::SqliteBackend;
use crate::error::store_error;
use crate::rows::{StoredOptions, TASK_COLUMNS, parse_id, record_from_row, to_json};
use crate::time::{deadline, from_micros, to_micros};

/// The task queue of a [`SqliteBackend`].
#[derive(Debug, Clone)]
pub struct SqliteTaskQueue {
    backend: SqliteBackend,
}

// Writers take the write lock up front: a deferred transaction that reads and then writes
// can fail with SQLITE_BUSY instead of waiting when another process writes in between.
const BEGIN_WRITE: &str = "BEGIN IMMEDIATE";

const TERMINAL: &str = "('succeeded', 'failed', 'cancelled', 'expired')";

impl SqliteTaskQueue {
    pub(crate) fn new(backend: SqliteBackend) -> Self {
        Self { backend }
    }

    fn wake(&self) {
        // notify_waiters wakes idle workers now; notify_one leaves a permit for a worker
        // that is between an empty dequeue and its wait.
        self.backend.task_wakeup.notify_waiters();
        self.backend.task_wakeup.notify_one();
    }

    async fn enqueue_batch(&self, tasks: Vec<TaskSpec>) -> StoreResult<Vec<EnqueueOutcome>> {
        if tasks.is_empty() {
            return Ok(Vec::new());
        }
        let now = Utc::now();
        let mut tx = self
            .backend
            .pool
            .begin_with(BEGIN_WRITE)
            .await
            .map_err(store_error)?;
        let mut outcomes = Vec::with_capacity(tasks.len());
        for spec in tasks {
            let state = if spec.run_at > now {
                TaskState::Scheduled
            } else {
                TaskState::Queued
            };
            let inserted = sqlx::query(
                "INSERT INTO omniq_tasks (id, name, queue, state, priority, run_at, expires_at, \
                 max_attempts, unique_key, payload, options, created_at, updated_at) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(spec.id.to_string())
            .bind(&spec.name)
            .bind(&spec.queue)
            .bind(state.as_str())
            .bind(spec.priority)
            .bind(to_micros(spec.run_at))
            .bind(spec.expires_at.map(to_micros))
            .bind(i64::from(spec.max_attempts))
            .bind(&spec.unique_key)
            .bind(&spec.payload)
            .bind(to_json(&StoredOptions::of(&spec))?)
            .bind(to_micros(spec.created_at))
            .bind(to_micros(now))
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
            if inserted.rows_affected() == 1 {
                outcomes.push(EnqueueOutcome::Created { id: spec.id, state });
                continue;
            }
            // The only conflicts are the unique key of a live task, or a re-sent id.
            let existing: Option<String> = sqlx::query_scalar(AssertSqlSafe(format!(
                "SELECT id FROM omniq_tasks WHERE unique_key = ? AND state NOT IN {TERMINAL}"
            )))
            .bind(&spec.unique_key)
            .fetch_optional(&mut *tx)
            .await
            .map_err(store_error)?;
            let existing = match existing {
                Some(id) => parse_id(&id)?,
                None => spec.id,
            };
            outcomes.push(EnqueueOutcome::Duplicate { existing });
        }
        tx.commit().await.map_err(store_error)?;
        self.wake();
        Ok(outcomes)
    }

    async fn claim(&self, request: DequeueRequest) -> StoreResult<Vec<Lease>> {
        let now = Utc::now();
        let until = deadline(now, request.lease);
        let token = LeaseToken::new();
        let mut leases = Vec::new();
        for queue in &request.queues {
            let wanted = request.limit - leases.len();
            if wanted == 0 {
                break;
            }
            // One statement claims the batch: SQLite runs it under the write lock, so two
            // workers never take the same row. One token serves the whole batch: each claim
            // still mints a new one, which is what fencing needs.
            let rows = sqlx::query(AssertSqlSafe(format!(
                "UPDATE omniq_tasks SET state = 'running', attempts = attempts + 1, \
                 lease_token = ?1, lease_expires_at = ?2, worker_id = ?3, started_at = ?4, \
                 updated_at = ?4 \
                 WHERE seq IN (SELECT seq FROM omniq_tasks \
                   WHERE queue = ?5 AND state IN ('queued', 'scheduled') AND run_at <= ?4 \
                   AND (expires_at IS NULL OR expires_at > ?4) \
                   ORDER BY priority DESC, run_at, seq LIMIT ?6) \
                 RETURNING seq, {TASK_COLUMNS}"
            )))
            .bind(token.to_string())
            .bind(to_micros(until))
            .bind(request.worker_id.as_str())
            .bind(to_micros(now))
            .bind(queue)
            .bind(i64::try_from(wanted).unwrap_or(i64::MAX))
            .fetch_all(&self.backend.pool)
            .await
            .map_err(store_error)?;
            let mut claimed = Vec::with_capacity(rows.len());
            for row in &rows {
                let seq: i64 = row.try_get("seq").map_err(store_error)?;
                claimed.push((seq, record_from_row(row)?));
            }
            // RETURNING does not promise the subquery's order.
            claimed.sort_by(|(a_seq, a), (b_seq, b)| {
                b.spec
                    .priority
                    .cmp(&a.spec.priority)
                    .then(a.spec.run_at.cmp(&b.spec.run_at))
                    .then(a_seq.cmp(b_seq))
            });
            leases.extend(claimed.into_iter().map(|(_, record)| Lease {
                attempt: record.attempts,
                spec: record.spec,
                token,
                deadline: until,
            }));
        }
        Ok(leases)
    }

    async fn renew(&self, leases: Vec<LeaseRef>, extend: Duration) -> StoreResult<Vec<bool>> {
        let now = Utc::now();
        let until = to_micros(deadline(now, extend));
        let mut tx = self
            .backend
            .pool
            .begin_with(BEGIN_WRITE)
            .await
            .map_err(store_error)?;
        let mut held = Vec::with_capacity(leases.len());
        for lease in leases {
            let done = sqlx::query(
                "UPDATE omniq_tasks SET lease_expires_at = ?, updated_at = ? \
                 WHERE id = ? AND lease_token = ? AND state = 'running'",
            )
            .bind(until)
            .bind(to_micros(now))
            .bind(lease.task_id.to_string())
            .bind(lease.token.to_string())
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
            held.push(done.rows_affected() == 1);
        }
        tx.commit().await.map_err(store_error)?;
        Ok(held)
    }

    async fn complete_batch(
        &self,
        completions: Vec<Completion>,
    ) -> StoreResult<Vec<CompletionStatus>> {
        let now = Utc::now();
        let now_micros = to_micros(now);
        let now_json = to_json(&now)?;
        let mut tx = self
            .backend
            .pool
            .begin_with(BEGIN_WRITE)
            .await
            .map_err(store_error)?;
        let mut statuses = Vec::with_capacity(completions.len());
        let mut requeued = false;
        for completion in completions {
            // Parameters: ?1 id, ?2 lease token, ?3 now, ?4 now as JSON, ?5 error, ?6 run_at.
            let sql = match &completion.outcome {
                CompletionOutcome::Succeeded => {
                    "UPDATE omniq_tasks SET state = 'succeeded', finished_at = ?3, \
                     updated_at = ?3, lease_token = NULL, lease_expires_at = NULL"
                }
                CompletionOutcome::Failed { .. } => {
                    "UPDATE omniq_tasks SET state = 'failed', finished_at = ?3, updated_at = ?3, \
                     lease_token = NULL, lease_expires_at = NULL, errors = json_insert(errors, \
                     '$[#]', json_object('attempt', attempts, 'at', json(?4), 'error', json(?5)))"
                }
                CompletionOutcome::Retry { .. } => {
                    requeued = true;
                    "UPDATE omniq_tasks SET state = CASE WHEN ?6 > ?3 THEN 'scheduled' \
                     ELSE 'queued' END, run_at = ?6, updated_at = ?3, lease_token = NULL, \
                     lease_expires_at = NULL, errors = json_insert(errors, '$[#]', \
                     json_object('attempt', attempts, 'at', json(?4), 'error', json(?5)))"
                }
                CompletionOutcome::Release => {
                    requeued = true;
                    "UPDATE omniq_tasks SET state = 'queued', attempts = MAX(attempts - 1, 0), \
                     updated_at = ?3, lease_token = NULL, lease_expires_at = NULL"
                }
            };
            let (error, run_at) = match &completion.outcome {
                CompletionOutcome::Failed { error } => (Some(to_json(error)?), None),
                CompletionOutcome::Retry { run_at, error } => {
                    (Some(to_json(error)?), Some(to_micros(*run_at)))
                }
                CompletionOutcome::Succeeded | CompletionOutcome::Release => (None, None),
            };
            // The fence: a worker whose lease was taken over matches no row, changes nothing.
            let done = sqlx::query(AssertSqlSafe(format!(
                "{sql} WHERE id = ?1 AND lease_token = ?2 AND state = 'running'"
            )))
            .bind(completion.lease.task_id.to_string())
            .bind(completion.lease.token.to_string())
            .bind(now_micros)
            .bind(&now_json)
            .bind(error)
            .bind(run_at)
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
            statuses.push(if done.rows_affected() == 1 {
                CompletionStatus::Applied
            } else {
                CompletionStatus::LeaseLost
            });
        }
        tx.commit().await.map_err(store_error)?;
        if requeued {
            self.wake();
        }
        Ok(statuses)
    }

    async fn recover(&self, limit: usize) -> StoreResult<Vec<Recovered>> {
        let now = Utc::now();
        let mut tx = self
            .backend
            .pool
            .begin_with(BEGIN_WRITE)
            .await
            .map_err(store_error)?;
        let expired = sqlx::query(
            "SELECT id, name, queue, attempts, max_attempts FROM omniq_tasks \
             WHERE state = 'running' AND lease_expires_at <= ? ORDER BY lease_expires_at LIMIT ?",
        )
        .bind(to_micros(now))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&mut *tx)
        .await
        .map_err(store_error)?;
        let mut recovered = Vec::with_capacity(expired.len());
        for row in expired {
            let id: String = row.try_get("id").map_err(store_error)?;
            let attempts: i64 = row.try_get("attempts").map_err(store_error)?;
            let max_attempts: i64 = row.try_get("max_attempts").map_err(store_error)?;
            let spent = attempts >= max_attempts;
            let state = if spent {
                TaskState::Failed
            } else {
                TaskState::Queued
            };
            let attempt = u32::try_from(attempts).unwrap_or(u32::MAX);
            let error = TaskError::with_kind(
                TaskErrorKind::LeaseLost,
                "lease expired: the worker stopped renewing it",
                true,
            );
            sqlx::query(
                "UPDATE omniq_tasks SET state = ?1, updated_at = ?2, \
                 finished_at = CASE WHEN ?1 = 'failed' THEN ?2 ELSE NULL END, \
                 lease_token = NULL, lease_expires_at = NULL, \
                 errors = json_insert(errors, '$[#]', json(?3)) \
                 WHERE id = ?4 AND state = 'running'",
            )
            .bind(state.as_str())
            .bind(to_micros(now))
            .bind(to_json(&AttemptError {
                attempt,
                at: now,
                error,
            })?)
            .bind(&id)
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
            recovered.push(Recovered {
                task_id: parse_id(&id)?,
                task_name: row.try_get("name").map_err(store_error)?,
                queue: row.try_get("queue").map_err(store_error)?,
                attempts: attempt,
                state,
            });
        }
        tx.commit().await.map_err(store_error)?;
        if !recovered.is_empty() {
            self.wake();
        }
        Ok(recovered)
    }

    async fn fetch(&self, id: TaskId) -> StoreResult<Option<TaskRecord>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {TASK_COLUMNS} FROM omniq_tasks WHERE id = ?"
        )))
        .bind(id.to_string())
        .fetch_optional(&self.backend.pool)
        .await
        .map_err(store_error)?;
        row.as_ref().map(record_from_row).transpose()
    }

    async fn list_tasks(&self, query: TaskQuery) -> StoreResult<Vec<TaskRecord>> {
        let mut sql = QueryBuilder::<Sqlite>::new(format!(
            "SELECT {TASK_COLUMNS} FROM omniq_tasks WHERE 1 = 1"
        ));
        if let Some(queue) = &query.queue {
            sql.push(" AND queue = ").push_bind(queue.clone());
        }
        if !query.states.is_empty() {
            sql.push(" AND state IN (");
            let mut states = sql.separated(", ");
            for state in &query.states {
                states.push_bind(state.as_str());
            }
            sql.push(")");
        }
        let limit = if query.limit == 0 { 100 } else { query.limit };
        sql.push(" ORDER BY seq DESC LIMIT ")
            .push_bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .push(" OFFSET ")
            .push_bind(i64::try_from(query.offset).unwrap_or(i64::MAX));
        let rows = sql
            .build()
            .fetch_all(&self.backend.pool)
            .await
            .map_err(store_error)?;
        rows.iter().map(record_from_row).collect()
    }

    async fn queue_stats(&self, queue: String) -> StoreResult<QueueStats> {
        let rows = sqlx::query(
            "SELECT state, COUNT(*) AS n, MIN(CASE WHEN state = 'queued' THEN created_at END) \
             AS oldest FROM omniq_tasks WHERE queue = ? GROUP BY state",
        )
        .bind(&queue)
        .fetch_all(&self.backend.pool)
        .await
        .map_err(store_error)?;
        let mut counts = HashMap::new();
        let mut oldest = None;
        for row in rows {
            let state: String = row.try_get("state").map_err(store_error)?;
            let state: TaskState = state
                .parse()
                .map_err(|e| crate::error::corrupt("task state", e))?;
            let n: i64 = row.try_get("n").map_err(store_error)?;
            counts.insert(state, u64::try_from(n).unwrap_or(0));
            if let Some(at) = row
                .try_get::<Option<i64>, _>("oldest")
                .map_err(store_error)?
            {
                oldest = Some(from_micros(at));
            }
        }
        Ok(QueueStats {
            queue,
            counts: TaskState::ALL
                .into_iter()
                .filter_map(|s| counts.get(&s).map(|n| (s, *n)))
                .collect(),
            oldest_queued_at: oldest,
        })
    }

    async fn cancel_task(&self, id: TaskId) -> StoreResult<CancelOutcome> {
        let now = to_micros(Utc::now());
        let mut tx = self
            .backend
            .pool
            .begin_with(BEGIN_WRITE)
            .await
            .map_err(store_error)?;
        let state: Option<String> =
            sqlx::query_scalar("SELECT state FROM omniq_tasks WHERE id = ?")
                .bind(id.to_string())
                .fetch_optional(&mut *tx)
                .await
                .map_err(store_error)?;
        let state: TaskState = state
            .ok_or(StoreError::TaskNotFound(id))?
            .parse()
            .map_err(|e| crate::error::corrupt("task state", e))?;
        let outcome = match state {
            TaskState::Queued | TaskState::Scheduled | TaskState::Blocked => {
                sqlx::query(
                    "UPDATE omniq_tasks SET state = 'cancelled', finished_at = ?1, updated_at = ?1 \
                     WHERE id = ?2",
                )
                .bind(now)
                .bind(id.to_string())
                .execute(&mut *tx)
                .await
                .map_err(store_error)?;
                CancelOutcome::Cancelled
            }
            TaskState::Running => CancelOutcome::Requested,
            finished => CancelOutcome::AlreadyFinished(finished),
        };
        tx.commit().await.map_err(store_error)?;
        Ok(outcome)
    }
}

impl TaskQueue for SqliteTaskQueue {
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
    ) -> BoxFuture<'_, StoreResult<Vec<bool>>> {
        Box::pin(self.renew(leases, extend))
    }

    fn complete(
        &self,
        completions: Vec<Completion>,
    ) -> BoxFuture<'_, StoreResult<Vec<CompletionStatus>>> {
        Box::pin(self.complete_batch(completions))
    }

    fn recover_expired(&self, limit: usize) -> BoxFuture<'_, StoreResult<Vec<Recovered>>> {
        Box::pin(self.recover(limit))
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

    fn cancel(&self, id: TaskId) -> BoxFuture<'_, StoreResult<CancelOutcome>> {
        Box::pin(self.cancel_task(id))
    }

    fn wait_for_tasks(&self, _queues: &[String], timeout: Duration) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let _ = tokio::time::timeout(timeout, self.backend.task_wakeup.notified()).await;
        })
    }
}
