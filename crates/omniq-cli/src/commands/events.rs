//! `omniq events`: the stored events, then (with `--follow`) new ones as they are stored.
//!
//! Events come from the event store, not from a process's in-memory bus, so `--follow` sees
//! what every worker process records. It reads from a cursor (the time of the last event
//! printed) every half second; events sharing the cursor's time are told apart by id, so
//! none is printed twice or skipped.

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, TimeDelta, Utc};
use omniq_async::layers::storage::MAX_LIST_LIMIT;
use omniq_async::{AsyncOmniQ, EventQuery, TaskEvent, TaskEventKind};

use super::task_ids;
use crate::cli::EventsArgs;
use crate::output::print_json_line;
use crate::view;
use crate::when::parse_when;

/// How often `--follow` reads new events.
const FOLLOW_EVERY: Duration = Duration::from_millis(500);
/// Stored events read at most before following.
const SCAN_BOUND: usize = 100_000;

/// Where reading resumes: the time of the last event printed and the ids printed at it.
#[derive(Debug, Default)]
struct Cursor {
    at: Option<DateTime<Utc>>,
    seen_at: HashSet<String>,
}

impl Cursor {
    /// Whether `event` is new; moves the cursor past it.
    fn advance(&mut self, event: &TaskEvent) -> bool {
        let id = event.id.to_string();
        match self.at {
            Some(at) if event.at < at => false,
            Some(at) if event.at == at => self.seen_at.insert(id),
            _ => {
                self.at = Some(event.at);
                self.seen_at.clear();
                self.seen_at.insert(id);
                true
            }
        }
    }
}

pub(super) async fn run(omniq: &AsyncOmniQ, args: EventsArgs, json: bool) -> anyhow::Result<()> {
    let now = Utc::now();
    let mut query = EventQuery::new().limit(MAX_LIST_LIMIT);
    if let Some(task) = &args.task {
        query = query.task_id(task_ids(std::slice::from_ref(task))?[0]);
    }
    if let Some(queue) = &args.queue {
        query = query.queue(queue.clone());
    }
    if !args.kind.is_empty() {
        query = query.kinds(kinds(&args.kind)?);
    }
    let since = match &args.since {
        Some(since) => parse_when(since, now)?,
        None => now - TimeDelta::hours(1),
    };
    let mut cursor = Cursor {
        at: Some(since),
        ..Cursor::default()
    };
    // The stored events: all read, the newest `limit` printed.
    let mut newest = VecDeque::with_capacity(args.limit.min(MAX_LIST_LIMIT));
    let mut read = 0;
    loop {
        let page = read_page(omniq, &query, &mut cursor).await?;
        read += page.len();
        let more = page.len() == MAX_LIST_LIMIT && read < SCAN_BOUND;
        for event in page {
            if newest.len() == args.limit {
                newest.pop_front();
            }
            if args.limit > 0 {
                newest.push_back(event);
            }
        }
        if !more {
            break;
        }
    }
    let mut printed = 0;
    for event in &newest {
        print(event, json)?;
        printed += 1;
    }
    if !args.follow {
        return Ok(());
    }
    // Said on standard error, so that a script (or a test) knows from when it sees events.
    eprintln!("omniq: following new events (Ctrl-C to stop)");
    let enough = |printed: usize| args.count.is_some_and(|count| printed >= count);
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    while !enough(printed) {
        for event in read_page(omniq, &query, &mut cursor).await? {
            print(&event, json)?;
            printed += 1;
            if enough(printed) {
                return Ok(());
            }
        }
        tokio::select! {
            _ = &mut interrupted => return Ok(()),
            () = tokio::time::sleep(FOLLOW_EVERY) => {}
        }
    }
    Ok(())
}

/// The events after the cursor, oldest first; moves the cursor.
async fn read_page(
    omniq: &AsyncOmniQ,
    query: &EventQuery,
    cursor: &mut Cursor,
) -> anyhow::Result<Vec<TaskEvent>> {
    let mut query = query.clone();
    if let Some(at) = cursor.at {
        query = query.since(at);
    }
    let page = omniq.events().query(query).await?;
    let full = page.len() == MAX_LIST_LIMIT;
    let fresh: Vec<TaskEvent> = page.into_iter().filter(|e| cursor.advance(e)).collect();
    // A full page of events all at the cursor's time, all seen: step past that instant,
    // or the next read would return the same page.
    if full
        && fresh.is_empty()
        && let Some(at) = cursor.at
    {
        cursor.at = Some(at + TimeDelta::microseconds(1));
        cursor.seen_at.clear();
    }
    Ok(fresh)
}

fn print(event: &TaskEvent, json: bool) -> anyhow::Result<()> {
    if json {
        print_json_line(&view::event_json(event))
    } else {
        println!("{}", view::event_line(event));
        Ok(())
    }
}

/// Parses event kinds given on the command line (`dead_lettered`, `started`, ...).
fn kinds(names: &[String]) -> anyhow::Result<Vec<TaskEventKind>> {
    names
        .iter()
        .map(|name| {
            serde_json::from_value(serde_json::Value::String(name.clone()))
                .with_context(|| format!("`{name}` is not an event kind"))
        })
        .collect()
}
