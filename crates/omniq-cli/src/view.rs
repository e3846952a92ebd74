//! How tasks, events, schedules and queue counts read: a JSON object each (stable field
//! names, for scripts) and a table row each.

use chrono::{DateTime, SecondsFormat, Utc};
use omniq_async::layers::serialization::PayloadCodec;
use omniq_async::{
    QueueStats, Schedule, ScheduleTrigger, TaskEvent, TaskRecord, TaskResult, TaskState,
};
use serde_json::{Value, json};

use crate::when::age;

/// The states shown as columns of `omniq queues`, in lifecycle order.
pub(crate) const QUEUE_COLUMNS: [TaskState; 8] = TaskState::ALL;

pub(crate) fn time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn opt_time(at: Option<DateTime<Utc>>) -> Value {
    at.map_or(Value::Null, |at| Value::String(time(at)))
}

/// A short, readable time for tables: `12:04:05` today, `2026-12-01 12:04` otherwise.
pub(crate) fn short_time(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    if at.date_naive() == now.date_naive() {
        at.format("%H:%M:%S").to_string()
    } else {
        at.format("%Y-%m-%d %H:%M").to_string()
    }
}

pub(crate) fn queue_json(stats: &QueueStats, now: DateTime<Utc>) -> Value {
    let counts: serde_json::Map<String, Value> = QUEUE_COLUMNS
        .iter()
        .map(|state| (state.as_str().to_owned(), json!(stats.count(*state))))
        .collect();
    let total: u64 = stats.counts.iter().map(|(_, n)| n).sum();
    json!({
        "queue": stats.queue,
        "paused": stats.paused,
        "counts": counts,
        "total": total,
        "oldest_queued_at": opt_time(stats.oldest_queued_at),
        "oldest_queued_age_seconds": stats.oldest_queued_at.map(|at| (now - at).num_seconds().max(0)),
    })
}

pub(crate) fn queue_row(stats: &QueueStats, now: DateTime<Utc>) -> Vec<String> {
    let mut row = vec![
        stats.queue.clone(),
        if stats.paused { "yes" } else { "-" }.to_owned(),
    ];
    row.extend(
        QUEUE_COLUMNS
            .iter()
            .map(|state| stats.count(*state).to_string()),
    );
    row.push(
        stats
            .oldest_queued_at
            .map_or_else(|| "-".to_owned(), |at| age(now - at)),
    );
    row
}

/// A task as JSON; the payload decoded when `payload` (and the codec can), else left out.
pub(crate) fn task_json(record: &TaskRecord, payload: bool) -> Value {
    let spec = &record.spec;
    let errors: Vec<Value> = record
        .errors
        .iter()
        .map(|attempt| {
            json!({
                "attempt": attempt.attempt,
                "at": time(attempt.at),
                "kind": attempt.error.kind.to_string(),
                "message": attempt.error.message,
                "retryable": attempt.error.retryable,
            })
        })
        .collect();
    let mut value = json!({
        "id": spec.id.to_string(),
        "name": spec.name,
        "queue": spec.queue,
        "state": record.state.as_str(),
        "priority": spec.priority,
        "attempts": record.attempts,
        "max_attempts": spec.max_attempts,
        "created_at": time(spec.created_at),
        "run_at": time(spec.run_at),
        "started_at": opt_time(record.started_at),
        "finished_at": opt_time(record.finished_at),
        "expires_at": opt_time(spec.expires_at),
        "lease_expires_at": opt_time(record.lease_expires_at),
        "worker_id": record.worker_id.as_ref().map(ToString::to_string),
        "reason": record.reason,
        "cancel_requested": record.cancel_requested,
        "progress": record.progress,
        "depends_on": spec.depends_on.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "unique_key": spec.unique_key,
        "metadata": spec.metadata,
        "errors": errors,
        "updated_at": time(record.updated_at),
    });
    if payload {
        value["payload"] = decoded(&spec.payload);
    }
    value
}

/// Bytes the OmniQ envelope wraps, as JSON; what does not decode shows as its size.
fn decoded(bytes: &[u8]) -> Value {
    PayloadCodec::inspect(bytes).unwrap_or_else(|_| json!({ "undecoded_bytes": bytes.len() }))
}

pub(crate) fn result_json(result: &TaskResult) -> Value {
    let outcome = match &result.outcome {
        Ok(bytes) => json!({ "ok": decoded(bytes) }),
        Err(error) => {
            json!({ "error": { "kind": error.kind.to_string(), "message": error.message } })
        }
    };
    json!({
        "outcome": outcome,
        "attempts": result.attempts,
        "finished_at": time(result.finished_at),
        "expires_at": opt_time(result.expires_at),
    })
}

pub(crate) fn task_row(record: &TaskRecord, now: DateTime<Utc>) -> Vec<String> {
    let spec = &record.spec;
    vec![
        spec.id.to_string(),
        spec.name.clone(),
        spec.queue.clone(),
        record.state.as_str().to_owned(),
        format!("{}/{}", record.attempts, spec.max_attempts),
        short_time(spec.created_at, now),
        record
            .errors
            .last()
            .map(|attempt| one_line(&attempt.error.message, 60))
            .or_else(|| record.reason.clone())
            .unwrap_or_default(),
    ]
}

pub(crate) const TASK_HEADERS: [&str; 7] = [
    "ID",
    "NAME",
    "QUEUE",
    "STATE",
    "ATTEMPTS",
    "CREATED",
    "LAST ERROR",
];

/// The first line of `text`, cut to `max` characters.
pub(crate) fn one_line(text: &str, max: usize) -> String {
    let line = text.lines().next().unwrap_or_default();
    if line.chars().count() > max {
        let cut: String = line.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    } else {
        line.to_owned()
    }
}

pub(crate) fn event_json(event: &TaskEvent) -> Value {
    json!({
        "id": event.id.to_string(),
        "kind": event.kind.as_str(),
        "at": time(event.at),
        "task_id": event.task_id.map(|id| id.to_string()),
        "task_name": event.task_name,
        "queue": event.queue,
        "attempt": event.attempt,
        "worker_id": event.worker_id.as_ref().map(ToString::to_string),
        "schedule": event.schedule,
        "message": event.message,
    })
}

/// One event as a line of the timeline: time, kind, task, queue, attempt, message.
pub(crate) fn event_line(event: &TaskEvent) -> String {
    let mut line = format!("{}  {:<13}", time(event.at), event.kind.as_str());
    if let Some(id) = event.task_id {
        line.push_str(&format!("  {id}"));
    }
    if let Some(name) = &event.task_name {
        line.push_str(&format!("  {name}"));
    }
    if let Some(queue) = &event.queue {
        line.push_str(&format!("  queue={queue}"));
    }
    if let Some(attempt) = event.attempt {
        line.push_str(&format!("  attempt={attempt}"));
    }
    if let Some(schedule) = &event.schedule {
        line.push_str(&format!("  schedule={schedule}"));
    }
    if let Some(message) = &event.message {
        line.push_str(&format!("  {}", one_line(message, 100)));
    }
    line
}

fn trigger_text(trigger: &ScheduleTrigger) -> String {
    match trigger {
        ScheduleTrigger::Cron {
            expression,
            timezone,
        } => match timezone {
            Some(zone) => format!("cron {expression} ({zone})"),
            None => format!("cron {expression}"),
        },
        ScheduleTrigger::Interval { every, .. } => {
            format!(
                "every {}",
                omniq_async::layers::config::format_duration(*every)
            )
        }
        ScheduleTrigger::Once { at } => format!("once at {}", time(*at)),
        #[allow(unreachable_patterns)]
        _ => "another trigger".to_owned(),
    }
}

pub(crate) fn schedule_json(schedule: &Schedule) -> Value {
    json!({
        "name": schedule.name,
        "trigger": trigger_text(&schedule.trigger),
        "task_name": schedule.task_name,
        "queue": schedule.options.queue,
        "paused": schedule.paused,
        "next_fire_at": opt_time(schedule.next_fire_at),
        "last_fire_at": opt_time(schedule.last_fire_at),
        "fire_count": schedule.fire_count,
        "max_runs": schedule.max_runs,
        "until": opt_time(schedule.until),
        "created_at": time(schedule.created_at),
        "updated_at": time(schedule.updated_at),
    })
}

pub(crate) const SCHEDULE_HEADERS: [&str; 6] =
    ["NAME", "TRIGGER", "TASK", "STATE", "NEXT FIRE", "FIRED"];

pub(crate) fn schedule_row(schedule: &Schedule, now: DateTime<Utc>) -> Vec<String> {
    vec![
        schedule.name.clone(),
        trigger_text(&schedule.trigger),
        schedule.task_name.clone(),
        if schedule.paused { "paused" } else { "active" }.to_owned(),
        schedule
            .next_fire_at
            .map_or_else(|| "-".to_owned(), |at| short_time(at, now)),
        schedule.fire_count.to_string(),
    ]
}
