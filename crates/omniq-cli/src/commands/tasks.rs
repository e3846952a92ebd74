//! `omniq tasks list|show|cancel|retry`, `omniq dead-letters`, `omniq redrive`.

use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use indicatif::ProgressBar;
use omniq_async::layers::storage::MAX_LIST_LIMIT;
use omniq_async::{
    AsyncOmniQ, CancelOutcome, ErrorKind, RedriveTarget, TaskQuery, TaskRecord, TaskState,
};
use serde_json::json;

use super::task_ids;
use crate::cli::{DeadLettersArgs, ListArgs, RedriveArgs, TasksCommand};
use crate::exit::Exit;
use crate::output::{Table, print_json};
use crate::view;
use crate::when::parse_when;

/// Tasks a filtered listing reads at most, so a filter that matches nothing in a large
/// store ends.
const SCAN_BOUND: usize = 100_000;

pub(super) async fn run(
    omniq: &AsyncOmniQ,
    command: TasksCommand,
    json: bool,
) -> anyhow::Result<()> {
    match command {
        TasksCommand::List(args) => list(omniq, args, json).await,
        TasksCommand::Show { id, no_payload } => show(omniq, &id, !no_payload, json).await,
        TasksCommand::Cancel { ids } => cancel(omniq, &ids, json).await,
        TasksCommand::Retry { ids } => {
            let ids = task_ids(&ids)?;
            let wanted = ids.len();
            let redriven = omniq.redrive(RedriveTarget::Tasks(ids)).await?;
            report_redriven(&redriven, json)?;
            if redriven.len() < wanted {
                return Err(Exit::nothing_to_do(format!(
                    "{} of {wanted} tasks were not dead letters (or do not exist)",
                    wanted - redriven.len()
                ))
                .into());
            }
            Ok(())
        }
    }
}

/// Parses state names given on the command line.
pub(super) fn states(names: &[String]) -> anyhow::Result<Vec<TaskState>> {
    names
        .iter()
        .map(|name| {
            name.parse::<TaskState>()
                .map_err(|_| Exit::usage(format!("`{name}` is not a task state")).into())
        })
        .collect()
}

/// The filters the store cannot apply, applied here.
struct Filter {
    name: Option<String>,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
}

impl Filter {
    fn matches(&self, record: &TaskRecord) -> bool {
        self.name
            .as_ref()
            .is_none_or(|name| record.spec.name.contains(name.as_str()))
            && self
                .since
                .is_none_or(|since| record.spec.created_at >= since)
            && self
                .until
                .is_none_or(|until| record.spec.created_at < until)
    }
}

async fn list(omniq: &AsyncOmniQ, args: ListArgs, json: bool) -> anyhow::Result<()> {
    let now = Utc::now();
    let filter = Filter {
        name: args.name,
        since: args.since.map(|s| parse_when(&s, now)).transpose()?,
        until: args.until.map(|s| parse_when(&s, now)).transpose()?,
    };
    let mut query = TaskQuery::new().states(states(&args.state)?);
    if let Some(queue) = args.queue {
        query = query.queue(queue);
    }
    let wanted = args.offset.saturating_add(args.limit);
    let matched = if args.limit == 0 {
        Vec::new()
    } else {
        matching(omniq, &query, &filter, wanted).await?
    };
    let shown: Vec<&TaskRecord> = matched.iter().skip(args.offset).collect();
    if json {
        return print_json(&shown.iter().map(|r| view::task_json(r, false)).collect());
    }
    let mut table = Table::new(&view::TASK_HEADERS);
    for record in shown {
        table.row(view::task_row(record, now));
    }
    table.print("no tasks match")
}

/// The newest `wanted` tasks that match the store's query and the filter, reading pages of
/// the store until there are enough, none is left, or [`SCAN_BOUND`] were read.
async fn matching(
    omniq: &AsyncOmniQ,
    query: &TaskQuery,
    filter: &Filter,
    wanted: usize,
) -> anyhow::Result<Vec<TaskRecord>> {
    let mut matched = Vec::new();
    let mut read = 0;
    loop {
        let page = omniq
            .list_tasks(query.clone().offset(read).limit(MAX_LIST_LIMIT))
            .await?;
        let full = page.len() == MAX_LIST_LIMIT;
        read += page.len();
        for record in page {
            // Newest first: past `since`, nothing older can match.
            if filter
                .since
                .is_some_and(|since| record.spec.created_at < since)
            {
                return Ok(matched);
            }
            if filter.matches(&record) {
                matched.push(record);
                if matched.len() >= wanted {
                    return Ok(matched);
                }
            }
        }
        if !full {
            return Ok(matched);
        }
        if read >= SCAN_BOUND {
            eprintln!("omniq: stopped after reading {read} tasks; narrow the filter");
            return Ok(matched);
        }
    }
}

async fn show(omniq: &AsyncOmniQ, id: &str, payload: bool, json: bool) -> anyhow::Result<()> {
    let id = task_ids(&[id.to_owned()])?[0];
    let Some(record) = omniq.task(id).await? else {
        return Err(Exit::not_found(format!("no task {id}")).into());
    };
    let result = omniq
        .stores()
        .results
        .get(id)
        .await
        .context("reading the task's result")?;
    let events = omniq.events().for_task(id).await?;
    if json {
        let mut value = view::task_json(&record, payload);
        value["result"] = result
            .as_ref()
            .map_or(serde_json::Value::Null, view::result_json);
        value["events"] = events.iter().map(view::event_json).collect();
        return print_json(&value);
    }
    let value = view::task_json(&record, payload);
    let fields = [
        "id",
        "name",
        "queue",
        "state",
        "priority",
        "attempts",
        "max_attempts",
        "created_at",
        "run_at",
        "started_at",
        "finished_at",
        "expires_at",
        "lease_expires_at",
        "worker_id",
        "reason",
        "cancel_requested",
        "progress",
        "depends_on",
        "unique_key",
        "metadata",
    ];
    for field in fields {
        let shown = match &value[field] {
            serde_json::Value::Null => continue,
            serde_json::Value::String(text) => text.clone(),
            serde_json::Value::Array(items) if items.is_empty() => continue,
            serde_json::Value::Object(map) if map.is_empty() => continue,
            other => other.to_string(),
        };
        println!("{field:<17} {shown}");
    }
    if payload {
        println!("{:<17} {}", "payload", value["payload"]);
    }
    if !record.errors.is_empty() {
        println!("\nerrors:");
        for attempt in &record.errors {
            println!(
                "  attempt {}  {}  {}: {}",
                attempt.attempt,
                view::time(attempt.at),
                attempt.error.kind,
                attempt.error.message
            );
        }
    }
    if let Some(result) = &result {
        println!("\nresult: {}", view::result_json(result)["outcome"]);
    }
    println!("\nevents:");
    if events.is_empty() {
        println!("  none stored");
    }
    for event in &events {
        println!("  {}", view::event_line(event));
    }
    Ok(())
}

async fn cancel(omniq: &AsyncOmniQ, ids: &[String], json: bool) -> anyhow::Result<()> {
    let mut outcomes = Vec::new();
    let mut missing = 0;
    let mut finished = 0;
    for id in task_ids(ids)? {
        let outcome = match omniq.cancel(id).await {
            Ok(CancelOutcome::Cancelled) => "cancelled".to_owned(),
            Ok(CancelOutcome::Requested) => "requested".to_owned(),
            Ok(CancelOutcome::AlreadyFinished(state)) => {
                finished += 1;
                format!("already {state}")
            }
            Err(err) if err.kind() == ErrorKind::NotFound => {
                missing += 1;
                "not found".to_owned()
            }
            Err(err) => return Err(err.into()),
        };
        outcomes.push((id, outcome));
    }
    if json {
        print_json(
            &outcomes
                .iter()
                .map(|(id, outcome)| json!({ "id": id.to_string(), "outcome": outcome }))
                .collect(),
        )?;
    } else {
        for (id, outcome) in &outcomes {
            println!("{id}  {outcome}");
        }
    }
    if missing > 0 {
        return Err(Exit::not_found(format!("{missing} of the tasks do not exist")).into());
    }
    if finished == outcomes.len() {
        return Err(Exit::nothing_to_do("every task had already finished").into());
    }
    Ok(())
}

pub(super) async fn dead_letters(
    omniq: &AsyncOmniQ,
    args: DeadLettersArgs,
    json: bool,
) -> anyhow::Result<()> {
    let records = omniq
        .dead_letters(args.queue.as_deref(), args.offset, args.limit)
        .await?;
    if json {
        return print_json(&records.iter().map(|r| view::task_json(r, false)).collect());
    }
    let now = Utc::now();
    let mut table = Table::new(&view::TASK_HEADERS);
    for record in &records {
        table.row(view::task_row(record, now));
    }
    table.print("no dead letters")
}

pub(super) async fn redrive(
    omniq: &AsyncOmniQ,
    args: RedriveArgs,
    json: bool,
) -> anyhow::Result<()> {
    let target = if args.all {
        RedriveTarget::All
    } else if let Some(queue) = args.queue {
        RedriveTarget::Queue(queue)
    } else {
        RedriveTarget::Tasks(task_ids(&args.ids)?)
    };
    // One store call: a spinner says it is working (on a terminal only).
    let spinner = ProgressBar::new_spinner().with_message("re-driving dead letters");
    spinner.enable_steady_tick(Duration::from_millis(120));
    let redriven = omniq.redrive(target).await;
    spinner.finish_and_clear();
    let redriven = redriven?;
    report_redriven(&redriven, json)?;
    if redriven.is_empty() {
        return Err(Exit::nothing_to_do("no dead letters to re-drive").into());
    }
    Ok(())
}

fn report_redriven(ids: &[omniq_async::TaskId], json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(&json!({
            "redriven": ids.iter().map(ToString::to_string).collect::<Vec<_>>(),
        }));
    }
    for id in ids {
        println!("{id}  redriven");
    }
    println!("{} re-driven", ids.len());
    Ok(())
}
