//! Reading replies, and the stored form of tasks.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use omniq_models::{
    AttemptError, RunWhen, SpecExtras, TaskId, TaskRecord, TaskSpec, TaskState, WorkerId,
};
use omniq_storage::{StateChange, StoreError, StoreResult};
use redis::Value;
use serde::Serialize;

use crate::error::corrupt;

/// Stored times are microseconds since the epoch, as decimal text.
pub(crate) fn micros(at: DateTime<Utc>) -> i64 {
    at.timestamp_micros()
}

pub(crate) fn from_micros(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

pub(crate) fn duration_micros(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}

pub(crate) fn to_json<T: Serialize>(value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Invalid(e.to_string()))
}

// ---- replies ----

pub(crate) fn items(value: Value) -> StoreResult<Vec<Value>> {
    match value {
        Value::Array(items) | Value::Set(items) => Ok(items),
        Value::Nil => Ok(Vec::new()),
        other => Err(corrupt("reply", format!("{other:?}"))),
    }
}

pub(crate) fn opt_bytes(value: Value) -> StoreResult<Option<Vec<u8>>> {
    match value {
        Value::Nil => Ok(None),
        Value::BulkString(bytes) => Ok(Some(bytes)),
        Value::SimpleString(text) => Ok(Some(text.into_bytes())),
        Value::Int(n) => Ok(Some(n.to_string().into_bytes())),
        Value::Okay => Ok(Some(b"OK".to_vec())),
        other => Err(corrupt("reply", format!("{other:?}"))),
    }
}

pub(crate) fn opt_string(value: Value) -> StoreResult<Option<String>> {
    opt_bytes(value)?
        .map(|bytes| String::from_utf8(bytes).map_err(|e| corrupt("text", e)))
        .transpose()
}

pub(crate) fn string(value: Value) -> StoreResult<String> {
    opt_string(value)?.ok_or_else(|| corrupt("reply", "nil"))
}

pub(crate) fn integer(value: Value) -> StoreResult<i64> {
    let text = string(value)?;
    text.parse().map_err(|e| corrupt("number", e))
}

pub(crate) fn parse_id(text: &str) -> StoreResult<TaskId> {
    text.parse().map_err(|e| corrupt("task id", e))
}

pub(crate) fn parse_state(text: &str) -> StoreResult<TaskState> {
    text.parse().map_err(|e| corrupt("task state", e))
}

/// A `{id, name, queue, attempts, state, reason}` change from a script.
pub(crate) fn change(value: Value) -> StoreResult<StateChange> {
    let mut parts = items(value)?.into_iter();
    let mut next = || parts.next().unwrap_or(Value::Nil);
    Ok(StateChange::new(
        parse_id(&string(next())?)?,
        string(next())?,
        string(next())?,
        u32::try_from(integer(next())?).unwrap_or(u32::MAX),
        parse_state(&string(next())?)?,
        opt_string(next())?,
    ))
}

pub(crate) fn changes(value: Value) -> StoreResult<Vec<StateChange>> {
    items(value)?.into_iter().map(change).collect()
}

// ---- tasks ----

/// A task hash's fields.
pub(crate) type Fields = HashMap<String, Vec<u8>>;

/// An `HGETALL` reply.
pub(crate) fn fields(value: Value) -> StoreResult<Fields> {
    let mut out = HashMap::new();
    match value {
        Value::Map(pairs) => {
            for (k, v) in pairs {
                if let (Some(k), Some(v)) = (opt_string(k)?, opt_bytes(v)?) {
                    out.insert(k, v);
                }
            }
        }
        other => {
            let mut flat = items(other)?.into_iter();
            while let (Some(k), Some(v)) = (flat.next(), flat.next()) {
                if let (Some(k), Some(v)) = (opt_string(k)?, opt_bytes(v)?) {
                    out.insert(k, v);
                }
            }
        }
    }
    Ok(out)
}

/// An `HMGET` reply for `names`.
pub(crate) fn positional(value: Value, names: &[&str]) -> StoreResult<Fields> {
    let mut out = HashMap::new();
    for (name, v) in names.iter().zip(items(value)?) {
        if let Some(v) = opt_bytes(v)? {
            out.insert((*name).to_owned(), v);
        }
    }
    Ok(out)
}

/// The fields of one lease in claim.lua's reply, in its order: the task's, then the lease
/// deadline the script set on the server's clock.
pub(crate) const LEASE_FIELDS: [&str; 15] = [
    "id",
    "name",
    "queue",
    "payload",
    "priority",
    "run_at",
    "expires_at",
    "max_attempts",
    "unique_key",
    "deps",
    "run_when",
    "created_at",
    "opts",
    "attempts",
    "lease_at",
];

/// The parts of a spec that no script reads, stored as one JSON field: the spec's
/// [`SpecExtras`] but its parents, which live in a field of their own that scripts read.
pub(crate) fn stored_extras(spec: &TaskSpec) -> SpecExtras {
    let mut extras = SpecExtras::of(spec);
    extras.depends_on.clear();
    extras
}

fn text<'a>(fields: &'a Fields, name: &str) -> StoreResult<Option<&'a str>> {
    fields
        .get(name)
        .map(|v| std::str::from_utf8(v).map_err(|e| corrupt(name, e)))
        .transpose()
}

pub(crate) fn required<'a>(fields: &'a Fields, name: &str) -> StoreResult<&'a str> {
    text(fields, name)?.ok_or_else(|| corrupt("task", format!("field `{name}` is missing")))
}

fn number<T: std::str::FromStr>(fields: &Fields, name: &str) -> StoreResult<Option<T>>
where
    T::Err: std::fmt::Display,
{
    text(fields, name)?
        .map(|t| t.parse().map_err(|e| corrupt(name, e)))
        .transpose()
}

fn time(fields: &Fields, name: &str) -> StoreResult<Option<DateTime<Utc>>> {
    Ok(number::<i64>(fields, name)?.map(from_micros))
}

pub(crate) fn required_time(fields: &Fields, name: &str) -> StoreResult<DateTime<Utc>> {
    time(fields, name)?.ok_or_else(|| corrupt("task", format!("field `{name}` is missing")))
}

pub(crate) fn spec_from(fields: &Fields) -> StoreResult<TaskSpec> {
    let options: SpecExtras =
        serde_json::from_str(required(fields, "opts")?).map_err(|e| corrupt("task options", e))?;
    let depends_on = match text(fields, "deps")? {
        Some(deps) => deps
            .split(',')
            .filter(|s| !s.is_empty())
            .map(parse_id)
            .collect::<StoreResult<Vec<_>>>()?,
        None => Vec::new(),
    };
    let mut spec = TaskSpec::stored(
        parse_id(required(fields, "id")?)?,
        required(fields, "name")?,
        fields.get("payload").cloned().unwrap_or_default(),
        required_time(fields, "created_at")?,
    );
    spec.queue = required(fields, "queue")?.to_owned();
    spec.priority = number(fields, "priority")?.unwrap_or(0);
    spec.max_attempts = number(fields, "max_attempts")?.unwrap_or(1);
    spec.backoff = options.backoff;
    spec.timeout = options.timeout;
    spec.run_at = required_time(fields, "run_at")?;
    spec.expires_at = time(fields, "expires_at")?;
    spec.depends_on = depends_on;
    spec.run_when = required(fields, "run_when")?
        .parse::<RunWhen>()
        .map_err(|e| corrupt("run_when", e))?;
    spec.unique_key = text(fields, "unique_key")?.map(str::to_owned);
    spec.unique_for = options.unique_for;
    spec.metadata = options.metadata;
    Ok(spec)
}

pub(crate) fn attempts_of(fields: &Fields) -> StoreResult<u32> {
    Ok(number(fields, "attempts")?.unwrap_or(0))
}

pub(crate) fn record_from(fields: &Fields) -> StoreResult<TaskRecord> {
    let errors: Vec<AttemptError> = match text(fields, "errors")? {
        Some(json) => serde_json::from_str(json).map_err(|e| corrupt("task errors", e))?,
        None => Vec::new(),
    };
    let mut record = TaskRecord::new(spec_from(fields)?, parse_state(required(fields, "state")?)?);
    record.attempts = attempts_of(fields)?;
    record.started_at = time(fields, "started_at")?;
    record.finished_at = time(fields, "finished_at")?;
    record.lease_expires_at = time(fields, "lease_at")?;
    record.worker_id = text(fields, "worker")?.map(WorkerId::new);
    record.errors = errors;
    record.reason = text(fields, "reason")?.map(str::to_owned);
    record.cancel_requested = text(fields, "cancel")? == Some("1");
    // Progress is for people to read: text that is not JSON is shown as the string it is.
    record.progress = text(fields, "progress")?.map(|text| {
        serde_json::from_str(text).unwrap_or_else(|_| serde_json::Value::String(text.to_owned()))
    });
    record.updated_at = required_time(fields, "updated_at")?;
    Ok(record)
}
