//! Enqueue: one transaction per batch; one multi-row INSERT for plain tasks, row by row for
//! tasks with parents or a dedupe window; unique keys by a partial unique index.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use omniq_models::{DependencyVerdict, SpecExtras, TaskId, TaskSpec, TaskState};
use omniq_storage::{BatchAliases, EnqueueOutcome, StoreError, StoreResult};
use sqlx::{AssertSqlSafe, Connection, PgConnection};
use uuid::Uuid;

use super::PgTaskQueue;
use super::notify::{ReadyQueues, notify};
use crate::error::store_error;
use crate::names::Names;
use crate::rows::{LIVE_STATES, Pg, to_json};

impl PgTaskQueue {
    pub(super) async fn enqueue_batch(
        &self,
        tasks: Vec<TaskSpec>,
    ) -> StoreResult<Vec<EnqueueOutcome>> {
        omniq_storage::validate_specs(&tasks)?;
        if tasks.is_empty() {
            return Ok(Vec::new());
        }
        let names = self.backend.names();
        let (outcomes, ready) = if tasks.iter().all(is_plain) {
            // The common case takes one statement, atomic on its own: no BEGIN, no COMMIT.
            // (Only a unique key whose holder finishes during the statement adds a later
            // INSERT of that task, committed on its own; a re-send finds what is stored.)
            let mut conn = self.backend.pool().acquire().await.map_err(store_error)?;
            let mut outcomes = Vec::with_capacity(tasks.len());
            let mut ready = ReadyQueues::new();
            insert_many(
                &mut conn,
                names,
                tasks,
                Utc::now(),
                &mut outcomes,
                &mut ready,
            )
            .await?;
            (outcomes, ready)
        } else {
            let mut tx = self.backend.pool().begin().await.map_err(store_error)?;
            // An error (an unknown parent) drops the transaction: nothing of the batch stays.
            let enqueued = enqueue_on(&mut tx, names, tasks).await?;
            tx.commit().await.map_err(store_error)?;
            enqueued
        };
        self.backend.wake_queues(&ready);
        Ok(outcomes)
    }

    /// Enqueues `tasks` inside the caller's transaction: the tasks exist if and only if
    /// the caller's transaction commits, and waiting workers are notified on that commit.
    ///
    /// This is the transactional outbox: store an order and the task that emails its
    /// receipt in one transaction, and neither can exist without the other. The batch
    /// runs under a savepoint, so an error (an unknown parent) leaves nothing of it in the
    /// transaction, which stays usable. On a connection outside any transaction, the batch
    /// commits on its own.
    ///
    /// Applications enqueue typed tasks through the facade instead,
    /// `omniq.enqueue(task).in_transaction(&mut *tx)` (`omniq-async`), which encodes the
    /// payload as workers read it and records the enqueue's event and metric; this call
    /// stores raw specs, whose payload must already be such an envelope.
    ///
    /// Tables are named with the backend's schema, so the connection may come from any
    /// pool of the same database (a backend without a schema finds its tables on the
    /// connection's `search_path`). A task that depends on a running parent holds a share
    /// lock on the parent until the transaction ends, and the parent's completion waits
    /// for it: keep such transactions short.
    ///
    /// ```no_run
    /// use omniq_models::{TaskOptions, TaskSpec};
    /// use omniq_postgres::PgBackend;
    ///
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// let backend = PgBackend::connect("postgres://app@db/shop").await?;
    /// let queue = backend.task_queue();
    ///
    /// let mut tx = backend.pool().begin().await?;
    /// sqlx::query("INSERT INTO orders (id, total) VALUES ($1, $2)")
    ///     .bind(42_i64)
    ///     .bind(1999_i64)
    ///     .execute(&mut *tx)
    ///     .await?;
    /// let receipt = TaskSpec::new(
    ///     "email.receipt",
    ///     b"42".to_vec(),
    ///     TaskOptions::default().queue("mail"),
    ///     chrono::Utc::now(),
    /// );
    /// queue.enqueue_in(&mut tx, vec![receipt]).await?;
    /// tx.commit().await?; // the order and its task, together
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`StoreError::UnknownParent`](omniq_storage::StoreError::UnknownParent) when a parent does not exist (nothing of the batch is
    /// stored), or a backend error; the caller decides whether to roll back.
    pub async fn enqueue_in(
        &self,
        conn: &mut PgConnection,
        tasks: Vec<TaskSpec>,
    ) -> StoreResult<Vec<EnqueueOutcome>> {
        omniq_storage::validate_specs(&tasks)?;
        if tasks.is_empty() {
            return Ok(Vec::new());
        }
        // A savepoint inside the caller's transaction (or a transaction of its own).
        let mut savepoint = conn.begin().await.map_err(store_error)?;
        let (outcomes, _) = enqueue_on(&mut savepoint, self.backend.names(), tasks).await?;
        savepoint.commit().await.map_err(store_error)?;
        // No in-process wake-up: nothing is visible before the caller commits, and the
        // NOTIFY, delivered on that commit, wakes this process's workers too.
        Ok(outcomes)
    }
}

/// A task without parents nor dedupe window: it goes into a multi-row INSERT.
fn is_plain(spec: &TaskSpec) -> bool {
    spec.depends_on.is_empty() && spec.unique_for.is_none()
}

/// Stores a batch on `conn` (inside a transaction) and queues its NOTIFY. Tasks keep their
/// order: plain tasks are inserted many at a time, but a task with parents or a dedupe
/// window first flushes those before it, since it may refer to them.
async fn enqueue_on(
    conn: &mut PgConnection,
    names: &Names,
    tasks: Vec<TaskSpec>,
) -> StoreResult<(Vec<EnqueueOutcome>, ReadyQueues)> {
    let now = Utc::now();
    let mut outcomes = Vec::with_capacity(tasks.len());
    let mut ready = ReadyQueues::new();
    let mut plain = Vec::new();
    let mut one_by_one = ReadyQueues::new();
    let mut aliases = BatchAliases::default();
    for mut spec in tasks {
        if is_plain(&spec) {
            plain.push(spec);
            continue;
        }
        let before = std::mem::take(&mut plain);
        let ids: Vec<TaskId> = before.iter().map(|s| s.id).collect();
        let start = outcomes.len();
        insert_many(conn, names, before, now, &mut outcomes, &mut ready).await?;
        aliases.record_all(&ids, &outcomes[start..]);
        aliases.resolve(&mut spec);
        let id = spec.id;
        let outcome = insert_one(conn, names, spec, now, &mut one_by_one).await?;
        aliases.record(id, &outcome);
        outcomes.push(outcome);
    }
    insert_many(conn, names, plain, now, &mut outcomes, &mut ready).await?;
    // The multi-row INSERTs notified their queues themselves.
    notify(conn, &names.task_channel, &one_by_one).await?;
    ready.extend(one_by_one);
    Ok((outcomes, ready))
}

fn initial_state(spec: &TaskSpec, now: DateTime<Utc>) -> TaskState {
    if spec.run_at > now {
        TaskState::Scheduled
    } else {
        TaskState::Queued
    }
}

/// Inserts plain tasks in one statement (arrays unnested in order, so `seq` follows the
/// batch), which also notifies the queues that got a ready task: PostgreSQL delivers the
/// NOTIFY when the rows commit. Conflicts on a unique key or a re-sent id store nothing
/// and answer the live task's id; a conflict gone by the time it is looked at (the key's
/// holder finished) is inserted again on its own.
async fn insert_many(
    conn: &mut PgConnection,
    names: &Names,
    specs: Vec<TaskSpec>,
    now: DateTime<Utc>,
    outcomes: &mut Vec<EnqueueOutcome>,
    ready: &mut ReadyQueues,
) -> StoreResult<()> {
    if specs.is_empty() {
        return Ok(());
    }
    let states: Vec<TaskState> = specs.iter().map(|s| initial_state(s, now)).collect();
    let options = specs
        .iter()
        .map(|s| to_json(&SpecExtras::of(s)))
        .collect::<StoreResult<Vec<_>>>()?;
    let sql = format!(
        "WITH ins AS (INSERT INTO {tasks} (id, name, queue, state, priority, run_at, \
           expires_at, max_attempts, unique_key, payload, options, created_at, updated_at, \
           run_when) \
         SELECT i.id, i.name, i.queue, i.state, i.priority, i.run_at, i.expires_at, \
           i.max_attempts, i.unique_key, i.payload, i.options::jsonb, i.created_at, $14, \
           i.run_when \
         FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::int4[], \
           $6::timestamptz[], $7::timestamptz[], $8::int8[], $9::text[], $10::bytea[], \
           $11::text[], $12::timestamptz[], $13::text[]) WITH ORDINALITY \
           AS i(id, name, queue, state, priority, run_at, expires_at, max_attempts, \
           unique_key, payload, options, created_at, run_when, ord) \
         ORDER BY i.ord \
         ON CONFLICT DO NOTHING \
         RETURNING id, queue, state), \
         woke AS (SELECT pg_notify($15, r.queue) FROM \
           (SELECT DISTINCT queue FROM ins WHERE state = 'queued') AS r) \
         SELECT ins.id, (SELECT COUNT(*) FROM woke) AS notified FROM ins",
        tasks = names.tasks
    );
    let inserted: Vec<(Uuid, i64)> = sqlx::query_as(AssertSqlSafe(sql))
        .bind(specs.iter().map(|s| *s.id.as_uuid()).collect::<Vec<_>>())
        .bind(specs.iter().map(|s| s.name.as_str()).collect::<Vec<_>>())
        .bind(specs.iter().map(|s| s.queue.as_str()).collect::<Vec<_>>())
        .bind(states.iter().map(|s| s.as_str()).collect::<Vec<_>>())
        .bind(specs.iter().map(|s| s.priority).collect::<Vec<_>>())
        .bind(specs.iter().map(|s| s.run_at).collect::<Vec<_>>())
        .bind(specs.iter().map(|s| s.expires_at).collect::<Vec<_>>())
        .bind(
            specs
                .iter()
                .map(|s| i64::from(s.max_attempts))
                .collect::<Vec<_>>(),
        )
        .bind(
            specs
                .iter()
                .map(|s| s.unique_key.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(
            specs
                .iter()
                .map(|s| s.payload.as_slice())
                .collect::<Vec<_>>(),
        )
        .bind(options)
        .bind(specs.iter().map(|s| s.created_at).collect::<Vec<_>>())
        .bind(
            specs
                .iter()
                .map(|s| s.run_when.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(now)
        .bind(&names.task_channel)
        .fetch_all(&mut *conn)
        .await
        .map_err(store_error)?;
    let mut inserted: HashSet<Uuid> = inserted.into_iter().map(|(id, _)| id).collect();
    let skipped: Vec<&TaskSpec> = specs
        .iter()
        .filter(|s| !inserted.contains(s.id.as_uuid()))
        .collect();
    let skipped_keys: Vec<&str> = skipped
        .iter()
        .filter_map(|s| s.unique_key.as_deref())
        .collect();
    let holders = live_holders(conn, names, &skipped_keys).await?;
    let stored = stored_ids(conn, names, &skipped).await?;
    let mut late_ready = ReadyQueues::new();
    let mut created_here = HashSet::new();
    for (spec, state) in specs.iter().zip(states) {
        // Taken out once seen: an id twice in one batch is created once.
        if inserted.remove(spec.id.as_uuid()) {
            if state == TaskState::Queued {
                ready.insert(spec.queue.clone());
            }
            created_here.insert(spec.id);
            outcomes.push(EnqueueOutcome::Created { id: spec.id, state });
        } else if created_here.contains(&spec.id) || stored.contains(spec.id.as_uuid()) {
            // The same id sent again (in this batch or before): the task first stored. As
            // on Redis, the id is looked at before the key.
            outcomes.push(EnqueueOutcome::Duplicate { existing: spec.id });
        } else if let Some(holder) = spec.unique_key.as_ref().and_then(|key| holders.get(key)) {
            outcomes.push(EnqueueOutcome::Duplicate { existing: *holder });
        } else {
            // The key's holder finished between the INSERT and the look-up: the key is
            // free now, and the task is stored on its own.
            let outcome = insert_one(conn, names, spec.clone(), now, &mut late_ready).await?;
            outcomes.push(outcome);
        }
    }
    // The multi-row INSERT notified its own queues; these are the late ones'.
    notify(conn, &names.task_channel, &late_ready).await?;
    ready.extend(late_ready);
    Ok(())
}

/// Which of `specs`' ids have a row.
async fn stored_ids(
    conn: &mut PgConnection,
    names: &Names,
    specs: &[&TaskSpec],
) -> StoreResult<HashSet<Uuid>> {
    if specs.is_empty() {
        return Ok(HashSet::new());
    }
    let ids: Vec<Uuid> = specs.iter().map(|s| *s.id.as_uuid()).collect();
    let found: Vec<Uuid> = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT id FROM {tasks} WHERE id = ANY($1)",
        tasks = names.tasks
    )))
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await
    .map_err(store_error)?;
    Ok(found.into_iter().collect())
}

/// How often an INSERT whose conflict vanished before it could be read is sent again: a
/// key's holders would have to finish that many times in a row, between two statements.
const CONFLICT_TRIES: usize = 3;

/// The live task holding each key, if any.
async fn live_holders(
    conn: &mut PgConnection,
    names: &Names,
    keys: &[&str],
) -> StoreResult<HashMap<String, TaskId>> {
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<(String, Uuid)> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT unique_key, id FROM {tasks} WHERE unique_key = ANY($1) AND state IN {LIVE_STATES}",
        tasks = names.tasks
    )))
    .bind(keys)
    .fetch_all(&mut *conn)
    .await
    .map_err(store_error)?;
    Ok(rows
        .into_iter()
        .map(|(key, id)| (key, TaskId::from_uuid(id)))
        .collect())
}

/// Inserts one task with parents or a dedupe window.
async fn insert_one(
    conn: &mut PgConnection,
    names: &Names,
    spec: TaskSpec,
    now: DateTime<Utc>,
    ready: &mut ReadyQueues,
) -> StoreResult<EnqueueOutcome> {
    if let Some(existing) = duplicate_in_window(conn, names, &spec, now).await? {
        return Ok(EnqueueOutcome::Duplicate { existing });
    }
    let (state, reason) = match dependency_verdict(conn, names, &spec).await? {
        DependencyVerdict::Run => (initial_state(&spec, now), None),
        DependencyVerdict::Wait => (TaskState::Blocked, None),
        DependencyVerdict::Cancel => (
            TaskState::Cancelled,
            Some("its parents had already settled against it"),
        ),
    };
    let mut tries = 0;
    loop {
        let inserted: Option<Uuid> = sqlx::query_scalar(AssertSqlSafe(format!(
            "INSERT INTO {tasks} (id, name, queue, state, priority, run_at, expires_at, \
             max_attempts, unique_key, payload, options, created_at, updated_at, run_when, reason, \
             finished_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::jsonb, $12, $13, $14, $15, \
             CASE WHEN $4 = 'cancelled' THEN $13 END) \
             ON CONFLICT DO NOTHING RETURNING id",
            tasks = names.tasks
        )))
        .bind(spec.id.as_uuid())
        .bind(&spec.name)
        .bind(&spec.queue)
        .bind(state.as_str())
        .bind(spec.priority)
        .bind(spec.run_at)
        .bind(spec.expires_at)
        .bind(i64::from(spec.max_attempts))
        // A task born cancelled holds no key: uniqueness only binds live tasks.
        .bind(spec.unique_key.as_ref().filter(|_| !state.is_terminal()))
        .bind(&spec.payload)
        .bind(to_json(&SpecExtras::of(&spec))?)
        .bind(spec.created_at)
        .bind(now)
        .bind(spec.run_when.as_str())
        .bind(reason)
        .fetch_optional(&mut *conn)
        .await
        .map_err(store_error)?;
        if inserted.is_some() {
            break;
        }
        // A conflict: this id was stored before (a re-send), or a live task holds the key.
        if !stored_ids(conn, names, &[&spec]).await?.is_empty() {
            return Ok(EnqueueOutcome::Duplicate { existing: spec.id });
        }
        let keys: Vec<&str> = spec.unique_key.as_deref().into_iter().collect();
        if let Some(existing) = live_holders(conn, names, &keys).await?.into_values().next() {
            return Ok(EnqueueOutcome::Duplicate { existing });
        }
        // Neither: the key's holder finished in between, and the key is free again.
        tries += 1;
        if tries == CONFLICT_TRIES {
            return Err(StoreError::unavailable(
                "PostgreSQL",
                "the task's unique key kept changing hands; send it again",
            ));
        }
    }
    if !spec.depends_on.is_empty() {
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {deps} (parent_id, child_id) SELECT p, $2 FROM UNNEST($1::uuid[]) AS p \
             ON CONFLICT DO NOTHING",
            deps = names.deps
        )))
        .bind(
            spec.depends_on
                .iter()
                .map(|p| *p.as_uuid())
                .collect::<Vec<_>>(),
        )
        .bind(spec.id.as_uuid())
        .execute(&mut *conn)
        .await
        .map_err(store_error)?;
    }
    if state == TaskState::Queued {
        ready.insert(spec.queue.clone());
    }
    Ok(EnqueueOutcome::Created { id: spec.id, state })
}

/// The newest task with the key created inside the spec's dedupe window, if any.
async fn duplicate_in_window(
    conn: &mut PgConnection,
    names: &Names,
    spec: &TaskSpec,
    now: DateTime<Utc>,
) -> StoreResult<Option<TaskId>> {
    let (Some(key), Some(window)) = (&spec.unique_key, spec.unique_for) else {
        return Ok(None);
    };
    let since = omniq_sql::dedupe_since(now, window);
    let found: Option<Uuid> = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT id FROM {tasks} WHERE unique_key = $1 AND created_at > $2 \
         ORDER BY created_at DESC, seq DESC LIMIT 1",
        tasks = names.tasks
    )))
    .bind(key)
    .bind(since)
    .fetch_optional(&mut *conn)
    .await
    .map_err(store_error)?;
    Ok(found.map(TaskId::from_uuid))
}

/// What the parents' states mean for a new task.
///
/// The parents are read `FOR SHARE`: a parent finishing at the same moment waits for this
/// transaction, then finds the new dependent and settles it; or it finished first, and its
/// final state is read here. Either way no dependent is left blocked for good.
///
/// # Errors
/// [`StoreError::UnknownParent`](omniq_storage::StoreError::UnknownParent) when a parent does not exist.
async fn dependency_verdict(
    conn: &mut PgConnection,
    names: &Names,
    spec: &TaskSpec,
) -> StoreResult<DependencyVerdict> {
    if spec.depends_on.is_empty() {
        return Ok(DependencyVerdict::Run);
    }
    let parents: Vec<Uuid> = spec.depends_on.iter().map(|p| *p.as_uuid()).collect();
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT id, state FROM {tasks} WHERE id = ANY($1) ORDER BY id FOR SHARE",
        tasks = names.tasks
    )))
    .bind(&parents)
    .fetch_all(&mut *conn)
    .await
    .map_err(store_error)?;
    omniq_sql::parents_verdict::<Pg>(spec, &rows)
}
