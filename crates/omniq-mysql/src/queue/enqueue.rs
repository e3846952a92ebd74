//! Enqueue: one transaction per batch; multi-row INSERTs for plain tasks, row by row for
//! tasks with parents or a dedupe window; unique keys by a unique index over live tasks.
//!
//! MySQL has no `INSERT … ON CONFLICT DO NOTHING … RETURNING`: the batch first looks up
//! the ids and live keys it would collide with, then inserts the rest. An enqueue racing
//! for the same key between the look-up and the insert makes the unique index refuse the
//! insert; the whole transaction then runs again and finds the other task.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use omniq_models::{DependencyVerdict, SpecExtras, TaskId, TaskSpec, TaskState};
use omniq_storage::{BatchAliases, EnqueueOutcome, StoreResult};
use sqlx::{Connection, MySql, MySqlConnection, QueryBuilder};
use uuid::Uuid;

use super::MySqlTaskQueue;
use crate::MySqlBackend;
use crate::error::{is_duplicate_error, retry_deadlocks, store_error};
use crate::rows::{My, push_ids, to_json};
use crate::time::to_micros;
use crate::tx::Tx;

/// Rows per INSERT statement: well under MySQL's 65,535 placeholders.
const ROWS_PER_INSERT: usize = 500;

/// Tries of a batch that lost a race for a unique key.
const DUPLICATE_TRIES: usize = 3;

impl MySqlTaskQueue {
    pub(super) async fn enqueue_batch(
        &self,
        tasks: Vec<TaskSpec>,
    ) -> StoreResult<Vec<EnqueueOutcome>> {
        omniq_storage::validate_specs(&tasks)?;
        if tasks.is_empty() {
            return Ok(Vec::new());
        }
        let mut tries = 0;
        let (outcomes, ready) = loop {
            tries += 1;
            match retry_deadlocks(|| self.enqueue_once(&tasks)).await {
                Err(err) if is_duplicate_error(&err) && tries < DUPLICATE_TRIES => {}
                other => break other?,
            }
        };
        self.wake_if(ready);
        Ok(outcomes)
    }

    async fn enqueue_once(&self, tasks: &[TaskSpec]) -> StoreResult<(Vec<EnqueueOutcome>, bool)> {
        let mut tx = Tx::begin(self.backend.pool()).await?;
        let outcome = enqueue_on(&self.backend, &mut tx, tasks).await?;
        tx.commit().await?;
        Ok(outcome)
    }

    /// Enqueues inside the caller's transaction (a savepoint in it), so the tasks exist if
    /// and only if the caller's own writes commit.
    ///
    /// Applications enqueue typed tasks through the facade instead,
    /// `omniq.enqueue(task).in_transaction(&mut *tx)` (`omniq-async`), which encodes the
    /// payload as workers read it and records the enqueue's event and metric; this call
    /// stores raw specs, whose payload must already be such an envelope.
    ///
    /// ```no_run
    /// # async fn demo(queue: omniq_mysql::MySqlTaskQueue, pool: sqlx::MySqlPool, spec: omniq_models::TaskSpec) -> Result<(), Box<dyn std::error::Error>> {
    /// let mut tx = pool.begin().await?;
    /// sqlx::query("INSERT INTO orders (id) VALUES (42)").execute(&mut *tx).await?;
    /// queue.enqueue_in(&mut tx, vec![spec]).await?;
    /// tx.commit().await?; // the order and its task, or neither
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`TaskQueue::enqueue`](omniq_storage::TaskQueue::enqueue); the caller decides
    /// whether to roll back. Deadlocks are not retried here: the caller's transaction is
    /// the unit to retry.
    pub async fn enqueue_in(
        &self,
        conn: &mut MySqlConnection,
        tasks: Vec<TaskSpec>,
    ) -> StoreResult<Vec<EnqueueOutcome>> {
        omniq_storage::validate_specs(&tasks)?;
        if tasks.is_empty() {
            return Ok(Vec::new());
        }
        let mut savepoint = conn.begin().await.map_err(store_error)?;
        let (outcomes, _) = enqueue_on(&self.backend, &mut savepoint, &tasks).await?;
        savepoint.commit().await.map_err(store_error)?;
        // Nothing is visible before the caller commits; workers find it when they poll.
        Ok(outcomes)
    }
}

/// Stores a batch on `conn`, inside a transaction.
async fn enqueue_on(
    backend: &MySqlBackend,
    conn: &mut MySqlConnection,
    tasks: &[TaskSpec],
) -> StoreResult<(Vec<EnqueueOutcome>, bool)> {
    let now = Utc::now();
    let tx = conn;
    {
        let mut outcomes = Vec::with_capacity(tasks.len());
        let mut ready = false;
        let mut plain = Vec::new();
        let mut aliases = BatchAliases::default();
        // Tasks keep their order: plain tasks are inserted many at a time, but a task with
        // parents or a dedupe window first flushes those before it, as it may refer to
        // them. An error (an unknown parent) drops the transaction: nothing stays.
        for spec in tasks {
            if is_plain(spec) {
                plain.push(spec);
                continue;
            }
            let before = std::mem::take(&mut plain);
            let start = outcomes.len();
            insert_many(backend, &mut *tx, &before, now, &mut outcomes, &mut ready).await?;
            let ids: Vec<TaskId> = before.iter().map(|s| s.id).collect();
            aliases.record_all(&ids, &outcomes[start..]);
            let spec = aliases.resolved(spec);
            let outcome = insert_one(&mut *tx, &spec, now).await?;
            aliases.record(spec.id, &outcome);
            if matches!(
                outcome,
                EnqueueOutcome::Created {
                    state: TaskState::Queued,
                    ..
                }
            ) {
                ready = true;
            }
            outcomes.push(outcome);
        }
        insert_many(backend, &mut *tx, &plain, now, &mut outcomes, &mut ready).await?;
        Ok((outcomes, ready))
    }
}

/// A task without parents nor dedupe window: it goes into a multi-row INSERT.
fn is_plain(spec: &TaskSpec) -> bool {
    spec.depends_on.is_empty() && spec.unique_for.is_none()
}

fn initial_state(spec: &TaskSpec, now: DateTime<Utc>) -> TaskState {
    if spec.run_at > now {
        TaskState::Scheduled
    } else {
        TaskState::Queued
    }
}

/// Which of `ids` exist already.
async fn existing_ids(conn: &mut MySqlConnection, ids: &[Uuid]) -> StoreResult<HashSet<Uuid>> {
    if ids.is_empty() {
        return Ok(HashSet::new());
    }
    let mut select = QueryBuilder::<MySql>::new("SELECT id FROM omniq_tasks WHERE id IN ");
    push_ids(&mut select, ids);
    let found: Vec<Uuid> = select
        .build_query_scalar()
        .fetch_all(&mut *conn)
        .await
        .map_err(store_error)?;
    Ok(found.into_iter().collect())
}

/// The live task holding each key, if any.
async fn live_holders(
    conn: &mut MySqlConnection,
    keys: &[&str],
) -> StoreResult<HashMap<String, TaskId>> {
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    let mut select =
        QueryBuilder::<MySql>::new("SELECT unique_key, id FROM omniq_tasks WHERE live_key IN (");
    let mut list = select.separated(", ");
    for key in keys {
        list.push("UNHEX(SHA2(")
            .push_bind_unseparated((*key).to_owned())
            .push_unseparated(", 256))");
    }
    select.push(")");
    let rows: Vec<(String, Uuid)> = select
        .build_query_as()
        .fetch_all(&mut *conn)
        .await
        .map_err(store_error)?;
    Ok(rows
        .into_iter()
        .map(|(key, id)| (key, TaskId::from_uuid(id)))
        .collect())
}

/// Inserts plain tasks, many rows per statement, in batch order (so `seq` follows it).
/// A task whose id exists, or whose unique key a live task holds (an earlier one of the
/// batch included), is not stored and answers the holder's id.
async fn insert_many(
    backend: &MySqlBackend,
    conn: &mut MySqlConnection,
    specs: &[&TaskSpec],
    now: DateTime<Utc>,
    outcomes: &mut Vec<EnqueueOutcome>,
    ready: &mut bool,
) -> StoreResult<()> {
    if specs.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = specs.iter().map(|s| *s.id.as_uuid()).collect();
    let mut existing = existing_ids(conn, &ids).await?;
    let mut keys: Vec<&str> = specs
        .iter()
        .filter_map(|s| s.unique_key.as_deref())
        .collect();
    keys.sort_unstable();
    keys.dedup();
    let mut holders = live_holders(conn, &keys).await?;
    let mut rows = Vec::with_capacity(specs.len());
    for spec in specs {
        if existing.contains(spec.id.as_uuid()) {
            outcomes.push(EnqueueOutcome::Duplicate { existing: spec.id });
            continue;
        }
        if let Some(holder) = spec.unique_key.as_ref().and_then(|k| holders.get(k)) {
            outcomes.push(EnqueueOutcome::Duplicate { existing: *holder });
            continue;
        }
        let state = initial_state(spec, now);
        existing.insert(*spec.id.as_uuid());
        if let Some(key) = &spec.unique_key {
            holders.insert(key.clone(), spec.id);
        }
        *ready |= state == TaskState::Queued;
        outcomes.push(EnqueueOutcome::Created { id: spec.id, state });
        rows.push((*spec, state, to_json(&SpecExtras::of(spec))?));
    }
    let row_bytes = |(spec, _, options): &(&TaskSpec, TaskState, String)| {
        spec.payload.len() + options.len() + spec.name.len() + spec.queue.len()
    };
    for chunk in backend.statements(&rows, ROWS_PER_INSERT, row_bytes)? {
        let mut insert = QueryBuilder::<MySql>::new(
            "INSERT INTO omniq_tasks (id, name, queue, state, priority, run_at, expires_at, \
             max_attempts, unique_key, payload, options, errors, created_at, updated_at, \
             run_when) ",
        );
        insert.push_values(chunk, |mut row, (spec, state, options)| {
            row.push_bind(*spec.id.as_uuid())
                .push_bind(spec.name.clone())
                .push_bind(spec.queue.clone())
                .push_bind(state.as_str())
                .push_bind(spec.priority)
                .push_bind(to_micros(spec.run_at))
                .push_bind(spec.expires_at.map(to_micros))
                .push_bind(i64::from(spec.max_attempts))
                .push_bind(spec.unique_key.clone())
                .push_bind(spec.payload.clone())
                .push_bind(options.clone())
                .push_bind("[]")
                .push_bind(to_micros(spec.created_at))
                .push_bind(to_micros(now))
                .push_bind(spec.run_when.as_str());
        });
        insert
            .build()
            .execute(&mut *conn)
            .await
            .map_err(store_error)?;
    }
    Ok(())
}

/// Inserts one task with parents or a dedupe window.
async fn insert_one(
    conn: &mut MySqlConnection,
    spec: &TaskSpec,
    now: DateTime<Utc>,
) -> StoreResult<EnqueueOutcome> {
    if let Some(existing) = duplicate_in_window(conn, spec, now).await? {
        return Ok(EnqueueOutcome::Duplicate { existing });
    }
    if !existing_ids(conn, &[*spec.id.as_uuid()]).await?.is_empty() {
        return Ok(EnqueueOutcome::Duplicate { existing: spec.id });
    }
    let keys: Vec<&str> = spec.unique_key.as_deref().into_iter().collect();
    if let Some(holder) = live_holders(conn, &keys).await?.into_values().next() {
        return Ok(EnqueueOutcome::Duplicate { existing: holder });
    }
    let (state, reason) = match dependency_verdict(conn, spec).await? {
        DependencyVerdict::Run => (initial_state(spec, now), None),
        DependencyVerdict::Wait => (TaskState::Blocked, None),
        DependencyVerdict::Cancel => (
            TaskState::Cancelled,
            Some("its parents had already settled against it"),
        ),
    };
    sqlx::query(
        "INSERT INTO omniq_tasks (id, name, queue, state, priority, run_at, expires_at, \
         max_attempts, unique_key, payload, options, errors, created_at, updated_at, run_when, \
         reason, finished_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, '[]', ?, ?, ?, ?, ?)",
    )
    .bind(*spec.id.as_uuid())
    .bind(&spec.name)
    .bind(&spec.queue)
    .bind(state.as_str())
    .bind(spec.priority)
    .bind(to_micros(spec.run_at))
    .bind(spec.expires_at.map(to_micros))
    .bind(i64::from(spec.max_attempts))
    // A task born cancelled holds no key: uniqueness only binds live tasks.
    .bind(spec.unique_key.as_deref().filter(|_| !state.is_terminal()))
    .bind(spec.payload.as_slice())
    .bind(to_json(&SpecExtras::of(spec))?)
    .bind(to_micros(spec.created_at))
    .bind(to_micros(now))
    .bind(spec.run_when.as_str())
    .bind(reason)
    .bind((state == TaskState::Cancelled).then_some(to_micros(now)))
    .execute(&mut *conn)
    .await
    .map_err(store_error)?;
    if !spec.depends_on.is_empty() {
        let mut insert =
            QueryBuilder::<MySql>::new("INSERT IGNORE INTO omniq_task_deps (parent_id, child_id) ");
        insert.push_values(&spec.depends_on, |mut row, parent| {
            row.push_bind(*parent.as_uuid())
                .push_bind(*spec.id.as_uuid());
        });
        insert
            .build()
            .execute(&mut *conn)
            .await
            .map_err(store_error)?;
    }
    Ok(EnqueueOutcome::Created { id: spec.id, state })
}

/// The newest task with the key created inside the spec's dedupe window, if any.
async fn duplicate_in_window(
    conn: &mut MySqlConnection,
    spec: &TaskSpec,
    now: DateTime<Utc>,
) -> StoreResult<Option<TaskId>> {
    let (Some(key), Some(window)) = (&spec.unique_key, spec.unique_for) else {
        return Ok(None);
    };
    let since = omniq_sql::dedupe_since(now, window);
    let found: Option<Uuid> = sqlx::query_scalar(
        "SELECT id FROM omniq_tasks WHERE key_hash = UNHEX(SHA2(?, 256)) \
         AND unique_key = ? AND created_at > ? \
         ORDER BY created_at DESC, seq DESC LIMIT 1",
    )
    .bind(key)
    .bind(key)
    .bind(to_micros(since))
    .fetch_optional(&mut *conn)
    .await
    .map_err(store_error)?;
    Ok(found.map(TaskId::from_uuid))
}

/// What the parents' states mean for a new task.
///
/// The parents are read with a share lock: a parent finishing at the same moment waits for
/// this transaction, then finds the new dependent and settles it; or it finished first,
/// and its final state is read here. Either way no dependent is left blocked for good.
///
/// # Errors
/// [`StoreError::UnknownParent`](omniq_storage::StoreError::UnknownParent) when a parent does not exist.
async fn dependency_verdict(
    conn: &mut MySqlConnection,
    spec: &TaskSpec,
) -> StoreResult<DependencyVerdict> {
    if spec.depends_on.is_empty() {
        return Ok(DependencyVerdict::Run);
    }
    let mut parents: Vec<Uuid> = spec.depends_on.iter().map(|p| *p.as_uuid()).collect();
    parents.sort();
    parents.dedup();
    let mut select = QueryBuilder::<MySql>::new("SELECT id, state FROM omniq_tasks WHERE id IN ");
    push_ids(&mut select, &parents);
    select.push(" ORDER BY id LOCK IN SHARE MODE");
    let rows = select
        .build()
        .fetch_all(&mut *conn)
        .await
        .map_err(store_error)?;
    omniq_sql::parents_verdict::<My>(spec, &rows)
}
