//! MySQL's dialect of the SQL layer, and small helpers for building statements.

use omniq_models::TaskId;
use omniq_sql::Dialect;
use omniq_storage::{StoreError, StoreResult};
use serde::de::DeserializeOwned;
use sqlx::mysql::{MySqlDatabaseError, MySqlRow};
use sqlx::{MySql, QueryBuilder, Row};
use uuid::Uuid;

pub(crate) use omniq_sql::{CHANGE_COLUMNS, TASK_COLUMNS, to_i64, to_json, to_u32};

/// MySQL and MariaDB as the SQL layer sees them: ids in `BINARY(16)`, times in
/// microseconds, JSON as text.
#[derive(Debug)]
pub(crate) enum My {}

impl Dialect for My {
    const BACKEND: &'static str = "mysql";
    type Row = MySqlRow;

    fn task_id(row: &MySqlRow, column: &str) -> StoreResult<TaskId> {
        row.try_get::<Uuid, _>(column)
            .map(TaskId::from_uuid)
            .map_err(store_error)
    }

    fn is_unavailable(error: &dyn sqlx::error::DatabaseError) -> bool {
        // 1040 too many connections, 1053 server shutdown, 1927 connection killed,
        // 4031 disconnected for inactivity (MySQL).
        error
            .try_downcast_ref::<MySqlDatabaseError>()
            .is_some_and(|e| matches!(e.number(), 1040 | 1053 | 1927 | 4031))
    }
}

pub(crate) fn column<'r, T>(row: &'r MySqlRow, name: &str) -> StoreResult<T>
where
    T: sqlx::Decode<'r, MySql> + sqlx::Type<MySql>,
{
    row.try_get(name).map_err(store_error)
}

pub(crate) fn store_error(err: sqlx::Error) -> StoreError {
    omniq_sql::store_error::<My>(err)
}

pub(crate) fn corrupt(what: &str, err: impl std::fmt::Display) -> StoreError {
    omniq_sql::corrupt::<My>(what, err)
}

pub(crate) fn parse_state(text: &str) -> StoreResult<omniq_models::TaskState> {
    omniq_sql::parse_state::<My>(text)
}

pub(crate) fn from_json<T: DeserializeOwned>(what: &str, text: &str) -> StoreResult<T> {
    omniq_sql::from_json::<My, T>(what, text)
}

pub(crate) fn record_from_row(row: &MySqlRow) -> StoreResult<omniq_models::TaskRecord> {
    omniq_sql::record_from_row::<My>(row)
}

pub(crate) fn change_from_row(row: &MySqlRow) -> StoreResult<omniq_storage::StateChange> {
    omniq_sql::change_from_row::<My>(row)
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
