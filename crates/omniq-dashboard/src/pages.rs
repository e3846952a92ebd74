//! The pages: every GET route.

use std::collections::BTreeMap;
use std::fmt::Write;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use chrono::{TimeDelta, Utc};
use omniq_async::layers::serialization::PayloadCodec;
use omniq_async::{EventQuery, TaskEventKind, TaskId, TaskQuery, TaskRecord, TaskState};
use serde::Deserialize;

use crate::App;
use crate::html::{
    action, age, confirmed_action, esc, opt_time, page, query_value, state_tag, time,
};

/// The states shown as the queue table's columns, in lifecycle order.
pub(crate) const COLUMNS: [TaskState; 8] = TaskState::ALL;

/// Tasks shown per page.
const PAGE: usize = 50;

/// A page that could not be made: the store failed, or what was asked for is not there.
#[derive(Debug)]
pub(crate) struct PageError(pub(crate) StatusCode, pub(crate) String);

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        (
            self.0,
            Html(format!("<!doctype html><p>{}</p>", esc(&self.1))),
        )
            .into_response()
    }
}

impl From<omniq_async::Error> for PageError {
    fn from(err: omniq_async::Error) -> Self {
        let status = match err.kind() {
            omniq_async::ErrorKind::NotFound => StatusCode::NOT_FOUND,
            omniq_async::ErrorKind::Invalid => StatusCode::BAD_REQUEST,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        Self(status, err.to_string())
    }
}

type PageResult = Result<Html<String>, PageError>;

pub(crate) async fn queues(State(app): State<App>) -> PageResult {
    let queues = app.omniq.queues().await?;
    let now = Utc::now();
    let base = &app.config.base;
    let mut body = String::from("<table id=\"queues\"><tr><th>queue</th>");
    for state in COLUMNS {
        let _ = write!(body, "<th>{}</th>", state.as_str());
    }
    let pausable = app
        .omniq
        .capabilities()
        .supports(omniq_async::Capability::QueuePause);
    body.push_str("<th>oldest queued</th><th>finished/s</th>");
    if pausable {
        body.push_str("<th>state</th>");
    }
    body.push_str("</tr>");
    for stats in &queues {
        let queue = esc(&stats.queue);
        let link = query_value(&stats.queue);
        let _ = write!(
            body,
            "<tr><td><a href=\"{base}/tasks?queue={link}\">{queue}</a></td>"
        );
        for state in COLUMNS {
            let _ = write!(
                body,
                "<td class=\"n\" data-queue=\"{queue}\" data-state=\"{s}\">\
                 <a href=\"{base}/tasks?queue={link}&amp;state={s}\">{n}</a></td>",
                s = state.as_str(),
                n = stats.count(state),
            );
        }
        let oldest = stats
            .oldest_queued_at
            .map_or_else(|| "-".to_owned(), |at| age((now - at).num_seconds()));
        let _ = write!(
            body,
            "<td class=\"n\" data-queue=\"{queue}\" data-state=\"oldest\">{oldest}</td>\
             <td class=\"n\" data-queue=\"{queue}\" data-state=\"rate\">-</td>"
        );
        if pausable {
            let (state, path, label) = if stats.paused {
                ("paused", "/queues/resume", "Resume")
            } else {
                ("running", "/queues/pause", "Pause")
            };
            let button = action(&app.config, path, label, &[("queue", &stats.queue)]);
            let _ = write!(body, "<td class=\"queue-{state}\">{state} {button}</td>");
        }
        body.push_str("</tr>");
    }
    body.push_str("</table>");
    if queues.is_empty() {
        body.push_str("<p class=\"note\">No queue holds tasks yet.</p>");
    }
    let _ = write!(
        body,
        "<p class=\"note\">Counts update live; <span id=\"rate\"></span></p>\
         <script>\
         const es=new EventSource('{base}/live');let last=null;const was=new Map();\
         const rate=(now,then,secs)=>(Math.max(0,now-then)/secs).toFixed(1);\
         es.onmessage=e=>{{const d=JSON.parse(e.data);const secs=last?(d.at-last.at)/1000:0;\
         for(const q of d.queues){{const cell=s=>document.querySelector(`td[data-queue=\"${{CSS.escape(q.queue)}}\"][data-state=\"${{s}}\"]`);\
         for(const[s,n]of Object.entries(q.counts)){{const c=cell(s);if(c&&c.firstChild)c.firstChild.textContent=n;}}\
         const o=cell('oldest');if(o)o.textContent=q.oldest;\
         const r=cell('rate');if(r&&secs>0&&was.has(q.queue))r.textContent=rate(q.finished,was.get(q.queue),secs);\
         was.set(q.queue,q.finished);}}\
         if(last)document.getElementById('rate').textContent=`${{rate(d.finished,last.finished,secs)}} tasks finished/s`;last=d;}};\
         </script>"
    );
    Ok(page(&app.config, "Queues", "Queues", &body))
}

#[derive(Debug, Deserialize)]
pub(crate) struct TaskFilter {
    queue: Option<String>,
    state: Option<String>,
    /// Matches the task's id, or a part of its name or of a metadata value.
    search: Option<String>,
    #[serde(default)]
    offset: usize,
}

pub(crate) async fn tasks(
    State(app): State<App>,
    Query(filter): Query<TaskFilter>,
) -> Result<Response, PageError> {
    let config = &app.config;
    let base = &config.base;
    let search = filter.search.clone().unwrap_or_default();
    if let Ok(id) = search.trim().parse::<TaskId>() {
        // An id goes straight to its task.
        if app.omniq.task(id).await?.is_some() {
            return Ok(Redirect::to(&format!("{base}/tasks/{id}")).into_response());
        }
    }
    let mut query = TaskQuery::new().offset(0).limit(1_000);
    let state = match filter.state.as_deref().filter(|s| !s.is_empty()) {
        Some(name) => Some(
            name.parse::<TaskState>()
                .map_err(|_| PageError(StatusCode::BAD_REQUEST, format!("no state `{name}`")))?,
        ),
        None => None,
    };
    if let Some(state) = state {
        query = query.states([state]);
    }
    if let Some(queue) = filter.queue.as_ref().filter(|q| !q.is_empty()) {
        query = query.queue(queue.clone());
    }
    // The name and metadata search runs here over the newest thousand that match the rest.
    let records: Vec<TaskRecord> = app
        .omniq
        .list_tasks(query)
        .await?
        .into_iter()
        .filter(|r| search.is_empty() || matches(r, &search))
        .skip(filter.offset)
        .take(PAGE + 1)
        .collect();
    let mut body = String::new();
    let _ = write!(
        body,
        "<form method=\"get\" action=\"{base}/tasks\">\
         <input name=\"search\" placeholder=\"id, name or metadata\" value=\"{}\">\
         <input name=\"queue\" placeholder=\"queue\" value=\"{}\">\
         <select name=\"state\"><option value=\"\">any state</option>",
        esc(&search),
        esc(filter.queue.as_deref().unwrap_or_default()),
    );
    for s in COLUMNS {
        let selected = if state == Some(s) { " selected" } else { "" };
        let _ = write!(body, "<option{selected}>{}</option>", s.as_str());
    }
    body.push_str("</select> <button>Search</button></form>");
    body.push_str(&task_table(base, records.iter().take(PAGE)));
    if records.len() > PAGE {
        let _ = write!(
            body,
            "<p><a href=\"{base}/tasks?queue={}&amp;state={}&amp;search={}&amp;offset={}\">older →</a></p>",
            query_value(filter.queue.as_deref().unwrap_or_default()),
            query_value(filter.state.as_deref().unwrap_or_default()),
            query_value(&search),
            filter.offset + PAGE
        );
    }
    Ok(page(config, "Tasks", "Tasks", &body).into_response())
}

fn matches(record: &TaskRecord, search: &str) -> bool {
    record.spec.name.contains(search)
        || record.spec.metadata.values().any(|v| v.contains(search))
        || record.spec.id.to_string().contains(search)
}

/// The first line of the task's last error, else the reason it ended.
fn last_error(record: &TaskRecord) -> String {
    record
        .errors
        .last()
        .map(|e| {
            e.error
                .message
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned()
        })
        .or_else(|| record.reason.clone())
        .unwrap_or_default()
}

fn task_table<'a>(base: &str, records: impl Iterator<Item = &'a TaskRecord>) -> String {
    let mut table = String::from(
        "<table class=\"tasks\"><tr><th>id</th><th>name</th><th>queue</th><th>state</th>\
         <th>attempts</th><th>created</th><th>last error</th></tr>",
    );
    let mut rows = 0;
    for record in records {
        rows += 1;
        let spec = &record.spec;
        let error = last_error(record);
        let _ = write!(
            table,
            "<tr><td><a href=\"{base}/tasks/{id}\">{id}</a></td><td>{name}</td><td>{queue}</td>\
             <td>{state}</td><td class=\"n\">{attempts}/{max}</td><td>{created}</td><td>{error}</td></tr>",
            id = spec.id,
            name = esc(&spec.name),
            queue = esc(&spec.queue),
            state = state_tag(record.state.as_str()),
            attempts = record.attempts,
            max = spec.max_attempts,
            created = time(spec.created_at),
            error = esc(&error),
        );
    }
    table.push_str("</table>");
    if rows == 0 {
        table.push_str("<p class=\"note\">No tasks match.</p>");
    }
    table
}

/// An envelope's contents as JSON, pretty; what does not decode shows as its size.
fn decoded(bytes: &[u8]) -> String {
    PayloadCodec::inspect(bytes)
        .ok()
        .and_then(|value| serde_json::to_string_pretty(&value).ok())
        .unwrap_or_else(|| format!("({} bytes this build cannot decode)", bytes.len()))
}

pub(crate) async fn task(State(app): State<App>, Path(id): Path<String>) -> PageResult {
    let config = &app.config;
    let id = id
        .parse::<TaskId>()
        .map_err(|e| PageError(StatusCode::BAD_REQUEST, format!("`{id}`: {e}")))?;
    let Some(record) = app.omniq.task(id).await? else {
        return Err(PageError(StatusCode::NOT_FOUND, format!("no task {id}")));
    };
    let spec = &record.spec;
    let mut body = String::new();
    let back = format!("/tasks/{id}");
    let mut actions = String::new();
    if record.state == TaskState::Failed {
        actions.push_str(&action(
            config,
            &format!("/tasks/{id}/retry"),
            "Retry",
            &[("back", &back)],
        ));
    }
    if !record.state.is_terminal() {
        actions.push_str(&action(
            config,
            &format!("/tasks/{id}/cancel"),
            "Cancel",
            &[("back", &back)],
        ));
    }
    let _ = write!(
        body,
        "<p>{} {actions}</p><table class=\"record\">",
        state_tag(record.state.as_str())
    );
    let metadata: BTreeMap<_, _> = spec.metadata.iter().collect();
    let rows: Vec<(&str, String)> = vec![
        ("id", spec.id.to_string()),
        ("name", spec.name.clone()),
        ("queue", spec.queue.clone()),
        ("priority", spec.priority.to_string()),
        (
            "attempts",
            format!("{} of {}", record.attempts, spec.max_attempts),
        ),
        ("created", time(spec.created_at)),
        ("due", time(spec.run_at)),
        ("started", opt_time(record.started_at)),
        ("finished", opt_time(record.finished_at)),
        ("expires", opt_time(spec.expires_at)),
        ("lease until", opt_time(record.lease_expires_at)),
        (
            "worker",
            record
                .worker_id
                .as_ref()
                .map_or_else(|| "-".to_owned(), ToString::to_string),
        ),
        (
            "reason",
            record.reason.clone().unwrap_or_else(|| "-".to_owned()),
        ),
        (
            "progress",
            // A handler's own values, like its payload.
            match &record.progress {
                None => "-".to_owned(),
                Some(_) if !config.payloads => "(hidden)".to_owned(),
                Some(value) => value.to_string(),
            },
        ),
        (
            "depends on",
            spec.depends_on
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        ),
        (
            "unique key",
            spec.unique_key.clone().unwrap_or_else(|| "-".to_owned()),
        ),
        (
            "metadata",
            metadata
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(", "),
        ),
    ];
    for (name, value) in rows {
        let _ = write!(body, "<tr><th>{name}</th><td>{}</td></tr>", esc(&value));
    }
    body.push_str("</table>");
    if config.payloads {
        let _ = write!(
            body,
            "<h2>Payload</h2><pre>{}</pre>",
            esc(&decoded(&spec.payload))
        );
        if let Ok(Some(result)) = app.omniq.stores().results.get(id).await {
            let outcome = match &result.outcome {
                Ok(bytes) => decoded(bytes),
                Err(error) => format!("{}: {}", error.kind, error.message),
            };
            let _ = write!(body, "<h2>Result</h2><pre>{}</pre>", esc(&outcome));
        }
    } else {
        body.push_str("<p class=\"note\">Payloads are hidden on this dashboard.</p>");
    }
    if !record.errors.is_empty() {
        body.push_str("<h2>Errors</h2><table><tr><th>attempt</th><th>at</th><th>kind</th><th>message</th></tr>");
        for attempt in &record.errors {
            let _ = write!(
                body,
                "<tr><td class=\"n\">{}</td><td>{}</td><td>{}</td><td><pre>{}</pre></td></tr>",
                attempt.attempt,
                time(attempt.at),
                esc(&attempt.error.kind.to_string()),
                esc(&attempt.error.message)
            );
        }
        body.push_str("</table>");
    }
    let events = app.omniq.events().for_task(id).await?;
    body.push_str("<h2>Events</h2><table class=\"events\"><tr><th>at</th><th>event</th><th>attempt</th><th>worker</th><th>message</th></tr>");
    for event in &events {
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            time(event.at),
            event.kind.as_str(),
            event.attempt.map_or_else(String::new, |a| a.to_string()),
            esc(&event
                .worker_id
                .as_ref()
                .map_or_else(String::new, ToString::to_string)),
            if event.kind == TaskEventKind::Progress && !config.payloads {
                "(hidden)".to_owned()
            } else {
                esc(event.message.as_deref().unwrap_or_default())
            },
        );
    }
    body.push_str("</table>");
    Ok(page(config, &format!("Task {}", spec.name), "Tasks", &body))
}

pub(crate) async fn dead_letters(State(app): State<App>) -> PageResult {
    let config = &app.config;
    let records = app.omniq.dead_letters(None, 0, PAGE).await?;
    // Counted by the store, not from the page shown.
    let by_queue: BTreeMap<String, u64> = app
        .omniq
        .queues()
        .await?
        .into_iter()
        .map(|stats| (stats.queue.clone(), stats.count(TaskState::Failed)))
        .filter(|(_, n)| *n > 0)
        .collect();
    let mut body = String::new();
    if !records.is_empty() {
        body.push_str("<p>");
        body.push_str(&action(
            config,
            "/dead-letters/redrive",
            "Re-drive all",
            &[],
        ));
        body.push(' ');
        body.push_str(&confirmed_action(
            config,
            "/dead-letters/purge",
            "Purge all",
            &[],
            "Delete every dead letter of every queue? This cannot be undone.",
        ));
        body.push_str("</p><table><tr><th>queue</th><th>dead letters</th><th></th></tr>");
        for (queue, n) in &by_queue {
            let _ = write!(
                body,
                "<tr><td>{}</td><td class=\"n\">{n}</td><td>{} {}</td></tr>",
                esc(queue),
                action(
                    config,
                    "/dead-letters/redrive",
                    "Re-drive",
                    &[("queue", queue)]
                ),
                confirmed_action(
                    config,
                    "/dead-letters/purge",
                    "Purge",
                    &[("queue", queue)],
                    &format!(
                        "Delete every dead letter of the queue {queue}? This cannot be undone."
                    ),
                ),
            );
        }
        body.push_str("</table>");
    }
    let mut table = String::from(
        "<table class=\"tasks\"><tr><th>id</th><th>name</th><th>queue</th><th>attempts</th>\
         <th>failed</th><th>last error</th><th></th></tr>",
    );
    for record in &records {
        let id = record.spec.id;
        let error = last_error(record);
        let _ = write!(
            table,
            "<tr><td><a href=\"{base}/tasks/{id}\">{id}</a></td><td>{}</td><td>{}</td><td class=\"n\">{}</td>\
             <td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&record.spec.name),
            esc(&record.spec.queue),
            record.attempts,
            opt_time(record.finished_at),
            esc(&error),
            action(
                config,
                &format!("/tasks/{id}/retry"),
                "Retry",
                &[("back", "/dead-letters")]
            ),
            base = config.base,
        );
    }
    table.push_str("</table>");
    body.push_str(&table);
    if records.is_empty() {
        body.push_str("<p class=\"note\">No dead letters.</p>");
    }
    Ok(page(config, "Dead letters", "Dead letters", &body))
}

pub(crate) async fn schedules(State(app): State<App>) -> PageResult {
    let config = &app.config;
    let schedules = app.omniq.schedules().list().await?;
    let mut body = String::from(
        "<table class=\"schedules\"><tr><th>name</th><th>task</th><th>state</th><th>next fire</th>\
         <th>last fire</th><th>fired</th><th></th></tr>",
    );
    for schedule in &schedules {
        let name = &schedule.name;
        let path = format!("/schedules/{}", query_value(name));
        let toggle = if schedule.paused {
            action(config, &format!("{path}/resume"), "Resume", &[])
        } else {
            action(config, &format!("{path}/pause"), "Pause", &[])
        };
        let _ = write!(
            body,
            "<tr data-schedule=\"{n}\"><td>{n}</td><td>{task}</td><td>{state}</td><td>{next}</td><td>{last}</td>\
             <td class=\"n\">{count}</td><td>{toggle} {delete}</td></tr>",
            n = esc(name),
            task = esc(&schedule.task_name),
            state = state_tag(if schedule.paused { "paused" } else { "active" }),
            next = opt_time(schedule.next_fire_at),
            last = opt_time(schedule.last_fire_at),
            count = schedule.fire_count,
            delete = confirmed_action(
                config,
                &format!("{path}/delete"),
                "Delete",
                &[],
                &format!("Delete the schedule {name}?"),
            ),
        );
    }
    body.push_str("</table>");
    if schedules.is_empty() {
        body.push_str("<p class=\"note\">No schedules.</p>");
    }
    Ok(page(config, "Schedules", "Schedules", &body))
}

pub(crate) async fn workers(State(app): State<App>) -> PageResult {
    let since = Utc::now() - TimeDelta::hours(1);
    let events = app
        .omniq
        .events()
        .query(
            EventQuery::new()
                .kinds([TaskEventKind::WorkerStarted, TaskEventKind::WorkerStopped])
                .since(since),
        )
        .await?;
    // The latest word of each worker: started (and not stopped since) or stopped.
    let mut last: BTreeMap<String, (&'static str, chrono::DateTime<Utc>)> = BTreeMap::new();
    for event in &events {
        if let Some(worker) = &event.worker_id {
            let state = if event.kind == TaskEventKind::WorkerStarted {
                "running"
            } else {
                "stopped"
            };
            last.insert(worker.to_string(), (state, event.at));
        }
    }
    let mut body = String::from(
        "<p class=\"note\">Workers that started or stopped in the last hour, from their events.</p>\
         <table><tr><th>worker</th><th>state</th><th>since</th></tr>",
    );
    for (worker, (state, at)) in &last {
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(worker),
            state_tag(state),
            time(*at)
        );
    }
    body.push_str("</table>");
    Ok(page(&app.config, "Workers", "Workers", &body))
}
