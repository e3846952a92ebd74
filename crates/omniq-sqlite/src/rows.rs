use omniq_models::{
    AttemptError, RunWhen, SpecExtras, TaskId, TaskRecord, TaskSpec, TaskState, WorkerId,
};
use omniq_storage::StoreResult;
use serde::Serialize;
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use crate::error::{corrupt, store_error};
use crate::time::from_micros;

/// Rows per multi-row INSERT: well under SQLite's limit of 32,766 bound variables.
pub(crate) const ROWS_PER_INSERT: usize = 500;

/// The columns every task query selects, in the order [`record_from_row`] reads them.
pub(crate) const TASK_COLUMNS: &str = "id, name, queue, state, priority, run_at, expires_at, \
     attempts, max_attempts, lease_expires_at, worker_id, unique_key, payload, options, errors, \
     created_at, started_at, finished_at, updated_at, run_when, reason, cancel_requested";

pub(crate) fn column<'r, T>(row: &'r SqliteRow, name: &str) -> StoreResult<T>
where
    T: sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>,
{
    row.try_get(name).map_err(store_error)
}

pub(crate) fn parse_state(text: &str) -> StoreResult<TaskState> {
    text.parse().map_err(|e| corrupt("task state", e))
}

pub(crate) fn parse_run_when(text: &str) -> StoreResult<RunWhen> {
    text.parse().map_err(|e: String| corrupt("run_when", e))
}

pub(crate) fn parse_id(text: &str) -> StoreResult<TaskId> {
    text.parse().map_err(|e| corrupt("task id", e))
}

pub(crate) fn record_from_row(row: &SqliteRow) -> StoreResult<TaskRecord> {
    let options: SpecExtras = serde_json::from_str(&column::<String>(row, "options")?)
        .map_err(|e| corrupt("task options", e))?;
    let errors: Vec<AttemptError> = serde_json::from_str(&column::<String>(row, "errors")?)
        .map_err(|e| corrupt("task errors", e))?;
    let micros = |name: &str| column::<Option<i64>>(row, name).map(|v| v.map(from_micros));
    let spec = TaskSpec {
        id: parse_id(&column::<String>(row, "id")?)?,
        name: column(row, "name")?,
        payload: column(row, "payload")?,
        queue: column(row, "queue")?,
        priority: column(row, "priority")?,
        max_attempts: column::<i64>(row, "max_attempts")?
            .try_into()
            .unwrap_or(u32::MAX),
        backoff: options.backoff,
        timeout: options.timeout,
        created_at: from_micros(column(row, "created_at")?),
        run_at: from_micros(column(row, "run_at")?),
        expires_at: micros("expires_at")?,
        depends_on: options.depends_on,
        run_when: parse_run_when(&column::<String>(row, "run_when")?)?,
        unique_key: column(row, "unique_key")?,
        unique_for: options.unique_for,
        metadata: options.metadata,
    };
    Ok(TaskRecord {
        spec,
        state: parse_state(&column::<String>(row, "state")?)?,
        attempts: column::<i64>(row, "attempts")?
            .try_into()
            .unwrap_or(u32::MAX),
        started_at: micros("started_at")?,
        finished_at: micros("finished_at")?,
        lease_expires_at: micros("lease_expires_at")?,
        worker_id: column::<Option<String>>(row, "worker_id")?.map(WorkerId::new),
        errors,
        reason: column(row, "reason")?,
        cancel_requested: column(row, "cancel_requested")?,
        updated_at: from_micros(column(row, "updated_at")?),
    })
}

pub(crate) fn to_json<T: Serialize>(value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(|e| omniq_storage::StoreError::Invalid(e.to_string()))
}
