//! Reading task rows back.

use chrono::{DateTime, Utc};
use omniq_models::{
    AttemptError, RunWhen, SpecExtras, TaskId, TaskRecord, TaskSpec, TaskState, WorkerId,
};
use omniq_storage::{StateChange, StoreError, StoreResult};
use serde::Serialize;
use sqlx::Row;
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use uuid::Uuid;

use crate::error::{corrupt, store_error};

/// The columns every task query selects (the table aliased `t`), as [`record_from_row`]
/// reads them.
pub(crate) const TASK_COLUMNS: &str = "t.id, t.seq, t.name, t.queue, t.state, t.priority, \
     t.run_at, t.expires_at, t.attempts, t.max_attempts, t.lease_expires_at, t.worker_id, \
     t.unique_key, t.payload, t.options, t.errors, t.created_at, t.started_at, t.finished_at, \
     t.updated_at, t.run_when, t.reason, t.cancel_requested";

/// Columns a [`StateChange`] is built from, for `RETURNING` clauses (table aliased `t`).
pub(crate) const CHANGE_COLUMNS: &str = "t.id, t.name, t.queue, t.attempts, t.state, t.reason";

/// The states that hold a unique key.
pub(crate) const LIVE_STATES: &str = "('blocked', 'scheduled', 'queued', 'running')";

pub(crate) fn column<'r, T>(row: &'r PgRow, name: &str) -> StoreResult<T>
where
    T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    row.try_get(name).map_err(store_error)
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

pub(crate) fn record_from_row(row: &PgRow) -> StoreResult<TaskRecord> {
    let Json(options): Json<SpecExtras> = column(row, "options")?;
    let Json(errors): Json<Vec<AttemptError>> = column(row, "errors")?;
    let spec = TaskSpec {
        id: TaskId::from_uuid(column(row, "id")?),
        name: column(row, "name")?,
        payload: column(row, "payload")?,
        queue: column(row, "queue")?,
        priority: column(row, "priority")?,
        max_attempts: to_u32(column(row, "max_attempts")?),
        backoff: options.backoff,
        timeout: options.timeout,
        created_at: column(row, "created_at")?,
        run_at: column(row, "run_at")?,
        expires_at: column(row, "expires_at")?,
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
        started_at: column(row, "started_at")?,
        finished_at: column(row, "finished_at")?,
        lease_expires_at: column(row, "lease_expires_at")?,
        worker_id: column::<Option<String>>(row, "worker_id")?.map(WorkerId::new),
        errors,
        reason: column(row, "reason")?,
        cancel_requested: column(row, "cancel_requested")?,
        updated_at: column::<DateTime<Utc>>(row, "updated_at")?,
    })
}

pub(crate) fn change_from_row(row: &PgRow) -> StoreResult<StateChange> {
    Ok(StateChange {
        task_id: TaskId::from_uuid(column::<Uuid>(row, "id")?),
        task_name: column(row, "name")?,
        queue: column(row, "queue")?,
        attempts: to_u32(column(row, "attempts")?),
        state: parse_state(&column::<String>(row, "state")?)?,
        reason: column(row, "reason")?,
    })
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
