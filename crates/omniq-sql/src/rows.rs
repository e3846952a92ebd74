//! Task rows read back, and the values written into them.

use omniq_models::{
    AttemptError, RunWhen, SpecExtras, TaskError, TaskRecord, TaskResult, TaskSpec, TaskState,
    WorkerId,
};
use omniq_storage::{StateChange, StoreError, StoreResult};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Dialect, ReadColumns, corrupt, store_error};

/// The columns every task query selects (the table aliased `t`), as [`record_from_row`]
/// reads them.
pub const TASK_COLUMNS: &str = "t.id, t.name, t.queue, t.state, t.priority, t.run_at, \
     t.expires_at, t.attempts, t.max_attempts, t.lease_expires_at, t.worker_id, t.unique_key, \
     t.payload, t.options, t.errors, t.created_at, t.started_at, t.finished_at, t.updated_at, \
     t.run_when, t.reason, t.cancel_requested, t.progress";

/// The columns a [`StateChange`] is built from (the table aliased `t`), as
/// [`change_from_row`] reads them.
pub const CHANGE_COLUMNS: &str = "t.id, t.name, t.queue, t.attempts, t.state, t.reason";

/// A task state as stored.
///
/// # Errors
/// A backend error naming the text when it is no state.
pub fn parse_state<D: Dialect>(text: &str) -> StoreResult<TaskState> {
    text.parse().map_err(|e| corrupt::<D>("task state", e))
}

/// A dependency condition as stored.
///
/// # Errors
/// A backend error naming the text when it is no condition.
pub fn parse_run_when<D: Dialect>(text: &str) -> StoreResult<RunWhen> {
    text.parse()
        .map_err(|e: String| corrupt::<D>("run_when", e))
}

/// A count from the database, which is never negative nor past `u32`.
pub fn to_u32(n: i64) -> u32 {
    u32::try_from(n.max(0)).unwrap_or(u32::MAX)
}

/// A length as the database's integer.
pub fn to_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A value as JSON text for a JSON or text column.
///
/// # Errors
/// [`StoreError::Invalid`] when the value cannot be written as JSON.
pub fn to_json<T: Serialize>(value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Invalid(e.to_string()))
}

/// A value from JSON text read back; `what` names it in the error.
///
/// # Errors
/// A backend error of dialect `D` when the text is not a `T`.
pub fn from_json<D: Dialect, T: DeserializeOwned>(what: &str, text: &str) -> StoreResult<T> {
    serde_json::from_str(text).map_err(|e| corrupt::<D>(what, e))
}

/// A whole task row (selected as [`TASK_COLUMNS`]) as its record.
///
/// # Errors
/// A backend error naming the column that is missing or cannot be read.
pub fn record_from_row<D: Dialect>(row: &D::Row) -> StoreResult<TaskRecord> {
    let options: SpecExtras = D::json(row, "options", "task options")?;
    let errors: Vec<AttemptError> = D::json(row, "errors", "task errors")?;
    let mut spec = TaskSpec::stored(
        D::task_id(row, "id")?,
        text::<D>(row, "name")?,
        row.bytes("payload").map_err(store_error::<D>)?,
        D::time(row, "created_at")?,
    );
    spec.queue = text::<D>(row, "queue")?;
    spec.priority = row.int32("priority").map_err(store_error::<D>)?;
    spec.max_attempts = count::<D>(row, "max_attempts")?;
    spec.backoff = options.backoff;
    spec.timeout = options.timeout;
    spec.run_at = D::time(row, "run_at")?;
    spec.expires_at = D::opt_time(row, "expires_at")?;
    spec.depends_on = options.depends_on;
    spec.run_when = parse_run_when::<D>(&text::<D>(row, "run_when")?)?;
    spec.unique_key = opt_text::<D>(row, "unique_key")?;
    spec.unique_for = options.unique_for;
    spec.metadata = options.metadata;
    let mut record = TaskRecord::new(spec, parse_state::<D>(&text::<D>(row, "state")?)?);
    record.attempts = count::<D>(row, "attempts")?;
    record.started_at = D::opt_time(row, "started_at")?;
    record.finished_at = D::opt_time(row, "finished_at")?;
    record.lease_expires_at = D::opt_time(row, "lease_expires_at")?;
    record.worker_id = opt_text::<D>(row, "worker_id")?.map(WorkerId::new);
    record.errors = errors;
    record.reason = opt_text::<D>(row, "reason")?;
    record.cancel_requested = row.flag("cancel_requested").map_err(store_error::<D>)?;
    record.progress = opt_text::<D>(row, "progress")?.map(|text| progress_value(&text));
    record.updated_at = D::time(row, "updated_at")?;
    Ok(record)
}

/// A stored progress value. Text that is not JSON (a hand edit) is shown as the string it
/// is rather than failing the whole record: progress is for people to read.
fn progress_value(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|_| serde_json::Value::String(text.to_owned()))
}

/// A task's new state (a row selected as [`CHANGE_COLUMNS`]).
///
/// # Errors
/// As [`record_from_row`].
pub fn change_from_row<D: Dialect>(row: &D::Row) -> StoreResult<StateChange> {
    Ok(StateChange::new(
        D::task_id(row, "id")?,
        text::<D>(row, "name")?,
        text::<D>(row, "queue")?,
        count::<D>(row, "attempts")?,
        parse_state::<D>(&text::<D>(row, "state")?)?,
        opt_text::<D>(row, "reason")?,
    ))
}

fn text<D: Dialect>(row: &D::Row, column: &str) -> StoreResult<String> {
    row.text(column).map_err(store_error::<D>)
}

fn opt_text<D: Dialect>(row: &D::Row, column: &str) -> StoreResult<Option<String>> {
    row.opt_text(column).map_err(store_error::<D>)
}

fn count<D: Dialect>(row: &D::Row, column: &str) -> StoreResult<u32> {
    row.int(column).map(to_u32).map_err(store_error::<D>)
}

/// The columns a stored result is read from, as [`result_from_row`] reads them.
pub const RESULT_COLUMNS: &str =
    "task_id, task_name, output, error, attempts, finished_at, expires_at";

/// A result row (selected as [`RESULT_COLUMNS`]): an error, when there is one, is the
/// outcome; otherwise the output.
///
/// # Errors
/// As [`record_from_row`].
pub fn result_from_row<D: Dialect>(row: &D::Row) -> StoreResult<TaskResult> {
    let output = row.opt_bytes("output").map_err(store_error::<D>)?;
    let error: Option<TaskError> = D::opt_json(row, "error", "task error")?;
    let outcome = match (output, error) {
        (_, Some(error)) => Err(error),
        (output, None) => Ok(output.unwrap_or_default()),
    };
    Ok(TaskResult::new(
        D::task_id(row, "task_id")?,
        text::<D>(row, "task_name")?,
        outcome,
        count::<D>(row, "attempts")?,
        D::time(row, "finished_at")?,
        D::opt_time(row, "expires_at")?,
    ))
}
