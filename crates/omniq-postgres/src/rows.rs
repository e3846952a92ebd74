//! PostgreSQL's dialect of the SQL layer, and the text rules PostgreSQL imposes.

use chrono::{DateTime, Utc};
use omniq_models::TaskId;
use omniq_sql::Dialect;
use omniq_storage::{StoreError, StoreResult};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::Row;
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use uuid::Uuid;

pub(crate) use omniq_sql::{CHANGE_COLUMNS, TASK_COLUMNS, to_i64};

/// PostgreSQL as the SQL layer sees it: UUIDs, `timestamptz` and `jsonb` columns.
#[derive(Debug)]
pub(crate) enum Pg {}

impl Dialect for Pg {
    const BACKEND: &'static str = "postgres";
    type Row = PgRow;

    fn task_id(row: &PgRow, column: &str) -> StoreResult<TaskId> {
        row.try_get::<Uuid, _>(column)
            .map(TaskId::from_uuid)
            .map_err(store_error)
    }

    fn time(row: &PgRow, column: &str) -> StoreResult<DateTime<Utc>> {
        row.try_get(column).map_err(store_error)
    }

    fn opt_time(row: &PgRow, column: &str) -> StoreResult<Option<DateTime<Utc>>> {
        row.try_get(column).map_err(store_error)
    }

    fn json<T: DeserializeOwned>(row: &PgRow, column: &str, what: &str) -> StoreResult<T> {
        row.try_get::<Json<T>, _>(column)
            .map(|Json(value)| value)
            .map_err(|e| corrupt(what, e))
    }

    fn opt_json<T: DeserializeOwned>(
        row: &PgRow,
        column: &str,
        what: &str,
    ) -> StoreResult<Option<T>> {
        row.try_get::<Option<Json<T>>, _>(column)
            .map(|json| json.map(|Json(value)| value))
            .map_err(|e| corrupt(what, e))
    }

    fn is_unavailable(error: &dyn sqlx::error::DatabaseError) -> bool {
        // Class 08: connection exceptions; 57P01-57P03: the server is shutting down or
        // starting; 53300: too many connections.
        error.code().is_some_and(|code| {
            code.starts_with("08") || matches!(&*code, "57P01" | "57P02" | "57P03" | "53300")
        })
    }
}

/// The states that hold a unique key.
pub(crate) const LIVE_STATES: &str = "('blocked', 'scheduled', 'queued', 'running')";

pub(crate) fn column<'r, T>(row: &'r PgRow, name: &str) -> StoreResult<T>
where
    T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    row.try_get(name).map_err(store_error)
}

pub(crate) fn store_error(err: sqlx::Error) -> StoreError {
    omniq_sql::store_error::<Pg>(err)
}

pub(crate) fn corrupt(what: &str, err: impl std::fmt::Display) -> StoreError {
    omniq_sql::corrupt::<Pg>(what, err)
}

pub(crate) fn parse_state(text: &str) -> StoreResult<omniq_models::TaskState> {
    omniq_sql::parse_state::<Pg>(text)
}

pub(crate) fn record_from_row(row: &PgRow) -> StoreResult<omniq_models::TaskRecord> {
    omniq_sql::record_from_row::<Pg>(row)
}

pub(crate) fn change_from_row(row: &PgRow) -> StoreResult<omniq_storage::StateChange> {
    omniq_sql::change_from_row::<Pg>(row)
}

/// JSON for a `jsonb` (or text) column. PostgreSQL cannot store a NUL character, in
/// text or in JSON (`\u0000` is refused), and one refused value fails its whole statement,
/// so a batch: every NUL a user's text carries (an error message, say) is stored as U+FFFD.
pub(crate) fn to_json<T: Serialize>(value: &T) -> StoreResult<String> {
    let json = serde_json::to_string(value).map_err(|e| StoreError::Invalid(e.to_string()))?;
    Ok(without_nul_escapes(json))
}

/// `json` with every `\u0000` escape (not an escaped backslash followed by `u0000`)
/// replaced by `\ufffd`.
fn without_nul_escapes(json: String) -> String {
    if !json.contains("\\u0000") {
        return json;
    }
    let mut out = String::with_capacity(json.len());
    let mut rest = json.as_str();
    while let Some(at) = rest.find("\\u0000") {
        // An escape only if preceded by an even number of backslashes.
        let backslashes = rest[..at].bytes().rev().take_while(|b| *b == b'\\').count();
        out.push_str(&rest[..at]);
        out.push_str(if backslashes % 2 == 0 {
            "\\ufffd"
        } else {
            "\\u0000"
        });
        rest = &rest[at + 6..];
    }
    out.push_str(rest);
    out
}

/// Text for a `text` column: NUL, which PostgreSQL refuses, becomes U+FFFD.
pub(crate) fn pg_text(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains('\0') {
        std::borrow::Cow::Owned(text.replace('\0', "\u{FFFD}"))
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_characters_never_reach_postgres() {
        let json = to_json(&"a\0b \\u0000 c").expect("json");
        assert_eq!(json, r#""a\ufffdb \\u0000 c""#);
        assert_eq!(pg_text("x\0y"), "x\u{FFFD}y");
        assert_eq!(pg_text("plain"), "plain");
    }
}
