//! Reading task rows back, and small helpers for building statements.

use chrono::{DateTime, Utc};
use omniq_models::{
    AttemptError, RunWhen, SpecExtras, TaskId, TaskRecord, TaskSpec, TaskState, WorkerId,
};
use omniq_storage::{StateChange, StoreError, StoreResult};
use serde::{Deserialize, Serialize};
use sqlx::mysql::MySqlRow;
use sqlx::{MySql, QueryBuilder, Row};
use uuid::Uuid;

use crate::error::{corrupt, store_error};
use crate::time::from_micros;

/// The columns every task query selects (the table aliased `t`), as [`record_from_row`]
/// reads them.
pub(crate) const TASK_COLUMNS: &str = "t.id, t.seq, t.name, t.queue, t.state, t.priority, \
     t.run_at, t.expires_at, t.attempts, t.max_attempts, t.lease_expires_at, t.worker_id, \
     t.unique_key, t.payload, t.options, t.errors, t.created_at, t.started_at, t.finished_at, \
     t.updated_at, t.run_when, t.reason, t.cancel_requested";

/// Columns a [`StateChange`] is built from (table aliased `t`).
pub(crate) const CHANGE_COLUMNS: &str = "t.id, t.name, t.queue, t.attempts, t.state, t.reason";

pub(crate) fn column<'r, T>(row: &'r MySqlRow, name: &str) -> StoreResult<T>
where
    T: sqlx::Decode<'r, MySql> + sqlx::Type<MySql>,
{
    row.try_get(name).map_err(store_error)
}

pub(crate) fn time(row: &MySqlRow, name: &str) -> StoreResult<DateTime<Utc>> {
    Ok(from_micros(column::<i64>(row, name)?))
}

pub(crate) fn opt_time(row: &MySqlRow, name: &str) -> StoreResult<Option<DateTime<Utc>>> {
    Ok(column::<Option<i64>>(row, name)?.map(from_micros))
}

pub(crate) fn parse_state(text: &str) -> StoreResult<TaskState> {
    text.parse().map_err(|e| corrupt("task state", e))
}

pub(crate) fn parse_run_when(text: &str) -> StoreResult<RunWhen> {
    text.parse().map_err(|e: String| corrupt("run_when", e))
}

/// A count from the database, which is never negative nor past `u32`.
pub(crate) fn to_u32(n: i64) -> u32 {
    u32::try_from(n.max(0)).unwrap_or(u32::MAX)
}

pub(crate) fn to_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

pub(crate) fn from_json<T: for<'de> Deserialize<'de>>(what: &str, text: &str) -> StoreResult<T> {
    serde_json::from_str(text).map_err(|e| corrupt(what, e))
}

pub(crate) fn to_json<T: Serialize>(value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Invalid(e.to_string()))
}

pub(crate) fn record_from_row(row: &MySqlRow) -> StoreResult<TaskRecord> {
    let options: SpecExtras = from_json("task options", &column::<String>(row, "options")?)?;
    let errors: Vec<AttemptError> = from_json("task errors", &column::<String>(row, "errors")?)?;
    let spec = TaskSpec {
        id: TaskId::from_uuid(column(row, "id")?),
        name: column(row, "name")?,
        payload: column(row, "payload")?,
        queue: column(row, "queue")?,
        priority: column(row, "priority")?,
        max_attempts: to_u32(column(row, "max_attempts")?),
        backoff: options.backoff,
        timeout: options.timeout,
        created_at: time(row, "created_at")?,
        run_at: time(row, "run_at")?,
        expires_at: opt_time(row, "expires_at")?,
        depends_on: options.depends_on,
        run_when: parse_run_when(&column::<String>(row, "run_when")?)?,
        unique_key: column(row, "unique_key")?,
        unique_for: options.unique_for,
        metadata: options.metadata,
    };
    Ok(TaskRecord {
        spec,
        state: parse_state(&column::<String>(row, "state")?)?,
        attempts: to_u32(column(row, "attempts")?),
        started_at: opt_time(row, "started_at")?,
        finished_at: opt_time(row, "finished_at")?,
        lease_expires_at: opt_time(row, "lease_expires_at")?,
        worker_id: column::<Option<String>>(row, "worker_id")?.map(WorkerId::new),
        errors,
        reason: column(row, "reason")?,
        cancel_requested: column(row, "cancel_requested")?,
        updated_at: time(row, "updated_at")?,
    })
}

pub(crate) fn change_from_row(row: &MySqlRow) -> StoreResult<StateChange> {
    Ok(StateChange {
        task_id: TaskId::from_uuid(column::<Uuid>(row, "id")?),
        task_name: column(row, "name")?,
        queue: column(row, "queue")?,
        attempts: to_u32(column(row, "attempts")?),
        state: parse_state(&column::<String>(row, "state")?)?,
        reason: column(row, "reason")?,
    })
}

/// Pushes `(?, ?, …)` binding each id. `ids` must not be empty.
pub(crate) fn push_ids(sql: &mut QueryBuilder<MySql>, ids: &[Uuid]) {
    sql.push("(");
    let mut list = sql.separated(", ");
    for id in ids {
        list.push_bind(*id);
    }
    sql.push(")");
}

/// Pushes `(?, ?, …)` binding each text. `items` must not be empty.
pub(crate) fn push_texts<S: AsRef<str>>(sql: &mut QueryBuilder<MySql>, items: &[S]) {
    sql.push("(");
    let mut list = sql.separated(", ");
    for item in items {
        list.push_bind(item.as_ref().to_owned());
    }
    sql.push(")");
}
