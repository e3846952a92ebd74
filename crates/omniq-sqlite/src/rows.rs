//! SQLite's dialect of the SQL layer.

use omniq_models::TaskId;
use omniq_sql::Dialect;
use omniq_storage::{StoreError, StoreResult};
use sqlx::sqlite::SqliteRow;

pub(crate) use omniq_sql::to_json;

/// Rows per multi-row INSERT: well under SQLite's limit of 32,766 bound variables.
pub(crate) const ROWS_PER_INSERT: usize = 500;

/// The columns every task query selects, as [`record_from_row`] reads them. Unqualified:
/// SQLite's `RETURNING` names the modified table's columns only.
pub(crate) const TASK_COLUMNS: &str = "id, name, queue, state, priority, run_at, expires_at, \
     attempts, max_attempts, lease_expires_at, worker_id, unique_key, payload, options, errors, \
     created_at, started_at, finished_at, updated_at, run_when, reason, cancel_requested, \
     progress";

/// Columns a state change is built from, for `RETURNING` clauses.
pub(crate) const CHANGE_COLUMNS: &str = "id, name, queue, attempts, state, reason";

/// SQLite as the SQL layer sees it: ids as text, times in microseconds, JSON as text.
#[derive(Debug)]
pub(crate) enum Lite {}

impl Dialect for Lite {
    const BACKEND: &'static str = "sqlite";
    type Row = SqliteRow;

    fn task_id(row: &SqliteRow, column: &str) -> StoreResult<TaskId> {
        use omniq_sql::ReadColumns;
        parse_id(&row.text(column).map_err(store_error)?)
    }

    fn is_unavailable(_error: &dyn sqlx::error::DatabaseError) -> bool {
        // An embedded file: a busy database waits out its timeout inside the driver, so
        // what the server reports is never a connection trouble.
        false
    }
}

pub(crate) fn store_error(err: sqlx::Error) -> StoreError {
    omniq_sql::store_error::<Lite>(err)
}

pub(crate) fn corrupt(what: &str, err: impl std::fmt::Display) -> StoreError {
    omniq_sql::corrupt::<Lite>(what, err)
}

pub(crate) fn parse_state(text: &str) -> StoreResult<omniq_models::TaskState> {
    omniq_sql::parse_state::<Lite>(text)
}

pub(crate) fn parse_id(text: &str) -> StoreResult<TaskId> {
    text.parse().map_err(|e| corrupt("task id", e))
}

pub(crate) fn record_from_row(row: &SqliteRow) -> StoreResult<omniq_models::TaskRecord> {
    omniq_sql::record_from_row::<Lite>(row)
}

pub(crate) fn change_from_row(row: &SqliteRow) -> StoreResult<omniq_storage::StateChange> {
    omniq_sql::change_from_row::<Lite>(row)
}
