//! Enqueue: one transaction per batch, with dependencies and unique keys.

use chrono::{DateTime, Utc};
use omniq_models::{DependencyVerdict, SpecExtras, TaskSpec, TaskState};
use omniq_storage::{BatchAliases, EnqueueOutcome, StoreResult};
use std::collections::HashSet;

use sqlx::{QueryBuilder, Sqlite, SqliteConnection};

use super::{BEGIN_WRITE, SqliteTaskQueue};
use crate::error::store_error;
use crate::rows::{Lite, ROWS_PER_INSERT, parse_id, to_json};
use crate::time::to_micros;

impl SqliteTaskQueue {
    pub(super) async fn enqueue_batch(
        &self,
        tasks: Vec<TaskSpec>,
    ) -> StoreResult<Vec<EnqueueOutcome>> {
        omniq_storage::validate_specs(&tasks)?;
        if tasks.is_empty() {
            return Ok(Vec::new());
        }
        let now = self.backend.clock.now();
        let mut tx = self
            .backend
            .pool
            .begin_with(BEGIN_WRITE)
            .await
            .map_err(store_error)?;
        let mut outcomes = Vec::with_capacity(tasks.len());
        // Runs of plain tasks (no parents, no unique key) go in multi-row inserts; the others
        // one by one, in order, since a task may depend on an earlier one of the batch.
        let mut plain = Vec::new();
        let mut aliases = BatchAliases::default();
        for mut spec in tasks {
            if spec.depends_on.is_empty() && spec.unique_key.is_none() {
                plain.push(spec);
                if plain.len() == ROWS_PER_INSERT {
                    insert_plain(&mut tx, std::mem::take(&mut plain), now, &mut outcomes).await?;
                }
                continue;
            }
            insert_plain(&mut tx, std::mem::take(&mut plain), now, &mut outcomes).await?;
            // Plain tasks hold no unique key: only these can stand for another task.
            aliases.resolve(&mut spec);
            let id = spec.id;
            // An error (an unknown parent) drops the transaction: nothing of the batch stays.
            let outcome = insert(&mut tx, spec, now).await?;
            aliases.record(id, &outcome);
            outcomes.push(outcome);
        }
        insert_plain(&mut tx, plain, now, &mut outcomes).await?;
        tx.commit().await.map_err(store_error)?;
        self.wake();
        Ok(outcomes)
    }
}

/// Inserts tasks without parents or unique keys in one statement. The only possible
/// conflict is an id sent before, which is a duplicate of itself.
async fn insert_plain(
    conn: &mut SqliteConnection,
    tasks: Vec<TaskSpec>,
    now: DateTime<Utc>,
    outcomes: &mut Vec<EnqueueOutcome>,
) -> StoreResult<()> {
    if tasks.is_empty() {
        return Ok(());
    }
    let mut rows = Vec::with_capacity(tasks.len());
    for spec in &tasks {
        let state = if spec.run_at > now {
            TaskState::Scheduled
        } else {
            TaskState::Queued
        };
        rows.push((spec, state, to_json(&SpecExtras::of(spec))?));
    }
    let mut sql = QueryBuilder::<Sqlite>::new(
        "INSERT INTO omniq_tasks (id, name, queue, state, priority, run_at, expires_at, \
         max_attempts, payload, options, created_at, updated_at, run_when) ",
    );
    sql.push_values(&rows, |mut row, (spec, state, options)| {
        row.push_bind(spec.id.to_string())
            .push_bind(spec.name.as_str())
            .push_bind(spec.queue.as_str())
            .push_bind(state.as_str())
            .push_bind(spec.priority)
            .push_bind(to_micros(spec.run_at))
            .push_bind(spec.expires_at.map(to_micros))
            .push_bind(i64::from(spec.max_attempts))
            .push_bind(spec.payload.as_slice())
            .push_bind(options.as_str())
            .push_bind(to_micros(spec.created_at))
            .push_bind(to_micros(now))
            .push_bind(spec.run_when.as_str());
    });
    sql.push(" ON CONFLICT DO NOTHING RETURNING id");
    let inserted: Vec<String> = sql
        .build_query_scalar()
        .fetch_all(&mut *conn)
        .await
        .map_err(store_error)?;
    let mut inserted: HashSet<String> = inserted.into_iter().collect();
    for (spec, state, _) in rows {
        // Taken out once seen: an id twice in one batch is created once.
        outcomes.push(if inserted.remove(&spec.id.to_string()) {
            EnqueueOutcome::Created { id: spec.id, state }
        } else {
            EnqueueOutcome::Duplicate { existing: spec.id }
        });
    }
    Ok(())
}

async fn insert(
    conn: &mut SqliteConnection,
    spec: TaskSpec,
    now: DateTime<Utc>,
) -> StoreResult<EnqueueOutcome> {
    if let Some(existing) = duplicate_in_window(conn, &spec, now).await? {
        return Ok(EnqueueOutcome::Duplicate { existing });
    }
    let (state, reason) = match dependency_verdict(conn, &spec).await? {
        DependencyVerdict::Run if spec.run_at > now => (TaskState::Scheduled, None),
        DependencyVerdict::Run => (TaskState::Queued, None),
        DependencyVerdict::Wait => (TaskState::Blocked, None),
        DependencyVerdict::Cancel => (
            TaskState::Cancelled,
            Some("its parents had already settled against it"),
        ),
    };
    let inserted = sqlx::query(
        "INSERT INTO omniq_tasks (id, name, queue, state, priority, run_at, expires_at, \
         max_attempts, unique_key, payload, options, created_at, updated_at, run_when, reason, \
         finished_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, \
         CASE WHEN ?4 = 'cancelled' THEN ?13 END) \
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
    // A task born cancelled holds no key: uniqueness only binds live tasks.
    .bind(spec.unique_key.as_ref().filter(|_| !state.is_terminal()))
    .bind(&spec.payload)
    .bind(to_json(&SpecExtras::of(&spec))?)
    .bind(to_micros(spec.created_at))
    .bind(to_micros(now))
    .bind(spec.run_when.as_str())
    .bind(reason)
    .execute(&mut *conn)
    .await
    .map_err(store_error)?;
    if inserted.rows_affected() == 0 {
        // The only conflicts are the unique key of a live task, or a re-sent id.
        let existing: Option<String> = sqlx::query_scalar(
            "SELECT id FROM omniq_tasks WHERE unique_key = ? \
             AND state IN ('blocked', 'scheduled', 'queued', 'running')",
        )
        .bind(&spec.unique_key)
        .fetch_optional(&mut *conn)
        .await
        .map_err(store_error)?;
        let existing = match existing {
            Some(id) => parse_id(&id)?,
            None => spec.id,
        };
        return Ok(EnqueueOutcome::Duplicate { existing });
    }
    for parent in &spec.depends_on {
        sqlx::query("INSERT OR IGNORE INTO omniq_task_deps (parent_id, child_id) VALUES (?, ?)")
            .bind(parent.to_string())
            .bind(spec.id.to_string())
            .execute(&mut *conn)
            .await
            .map_err(store_error)?;
    }
    Ok(EnqueueOutcome::Created { id: spec.id, state })
}

/// The newest task with the key created inside the spec's dedupe window, if any.
async fn duplicate_in_window(
    conn: &mut SqliteConnection,
    spec: &TaskSpec,
    now: DateTime<Utc>,
) -> StoreResult<Option<omniq_models::TaskId>> {
    let (Some(key), Some(window)) = (&spec.unique_key, spec.unique_for) else {
        return Ok(None);
    };
    let since = omniq_sql::dedupe_since(now, window);
    let found: Option<String> = sqlx::query_scalar(
        "SELECT id FROM omniq_tasks WHERE unique_key = ? AND created_at > ? \
         ORDER BY seq DESC LIMIT 1",
    )
    .bind(key)
    .bind(to_micros(since))
    .fetch_optional(&mut *conn)
    .await
    .map_err(store_error)?;
    found.as_deref().map(parse_id).transpose()
}

/// What the parents' states mean for a new task.
///
/// # Errors
/// [`StoreError::UnknownParent`](omniq_storage::StoreError::UnknownParent) when a parent does not exist.
async fn dependency_verdict(
    conn: &mut SqliteConnection,
    spec: &TaskSpec,
) -> StoreResult<DependencyVerdict> {
    if spec.depends_on.is_empty() {
        return Ok(DependencyVerdict::Run);
    }
    // A task has a handful of parents, far under SQLite's bound on variables.
    let mut select = QueryBuilder::<Sqlite>::new("SELECT id, state FROM omniq_tasks WHERE id IN (");
    let mut ids = select.separated(", ");
    for parent in &spec.depends_on {
        ids.push_bind(parent.to_string());
    }
    select.push(")");
    let rows = select
        .build()
        .fetch_all(&mut *conn)
        .await
        .map_err(store_error)?;
    omniq_sql::parents_verdict::<Lite>(spec, &rows)
}
