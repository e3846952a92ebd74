//! `omniq events`: the stored events, then (with `--follow`) new ones as they are stored.
//!
//! Events come from the event store, not from a process's in-memory bus, so `--follow` sees
//! what every worker process records. Workers store their events in batches, so an event
//! can be stored after a later one; each read therefore starts a look-back window before the
//! newest event seen, and events are told apart by id, so none is printed twice, and one
//! stored up to [`LOOK_BACK`] late is still printed.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use omniq_async::layers::storage::MAX_LIST_LIMIT;
use omniq_async::{AsyncOmniQ, EventQuery, TaskEvent, TaskEventKind};

use super::task_ids;
use crate::cli::EventsArgs;
use crate::exit::Exit;
use crate::output::print_json_line;
use crate::view;
use crate::when::parse_when;

/// How often `--follow` reads new events.
const FOLLOW_EVERY: Duration = Duration::from_millis(500);
/// How late an event may be stored (after a later one) and still be printed.
const LOOK_BACK: TimeDelta = TimeDelta::seconds(60);
/// Stored events read at most in one pass.
const SCAN_BOUND: usize = 100_000;

/// What has been printed: ids with their times, and the newest time.
#[derive(Debug)]
struct Seen {
    /// Where the first read starts.
    since: DateTime<Utc>,
    newest: Option<DateTime<Utc>>,
    ids: HashMap<String, DateTime<Utc>>,
}

impl Seen {
    /// Where a read starts: the look-back window before the newest event seen.
    fn start(&self) -> DateTime<Utc> {
        self.newest
            .map_or(self.since, |newest| (newest - LOOK_BACK).max(self.since))
    }

    /// Whether `event` is new; remembers it.
    fn first_time(&mut self, event: &TaskEvent) -> bool {
        if self.ids.insert(event.id.to_string(), event.at).is_some() {
            return false;
        }
        self.newest = Some(self.newest.map_or(event.at, |n| n.max(event.at)));
        true
    }

    /// Forgets ids too old for any read to return again.
    fn prune(&mut self) {
        let start = self.start();
        self.ids.retain(|_, at| *at >= start);
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
    let mut seen = Seen {
        since,
        newest: None,
        ids: HashMap::new(),
    };
    // The stored events: all read, the newest `limit` printed.
    let mut newest = VecDeque::with_capacity(args.limit.min(MAX_LIST_LIMIT));
    for event in read_new(omniq, &query, &mut seen).await? {
        if newest.len() == args.limit {
            newest.pop_front();
        }
        if args.limit > 0 {
            newest.push_back(event);
        }
    }
    let mut printed = 0;
    for event in &newest {
        print(event, json)?;
        printed += 1;
    }
    if !args.follow && args.mode.is_none() {
        return Ok(());
    }
    // Said on standard error, so that a script (or a test) knows from when it sees events.
    eprintln!("omniq: following new events (Ctrl-C to stop)");
    let enough = |printed: usize| args.count.is_some_and(|count| printed >= count);
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    while !enough(printed) {
        for event in read_new(omniq, &query, &mut seen).await? {
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

/// The events not printed yet, from the look-back window on, in the store's order; at most
/// [`SCAN_BOUND`] read.
async fn read_new(
    omniq: &AsyncOmniQ,
    query: &EventQuery,
    seen: &mut Seen,
) -> anyhow::Result<Vec<TaskEvent>> {
    let mut since = seen.start();
    let mut fresh = Vec::new();
    let mut read = 0;
    loop {
        let page = omniq.events().query(query.clone().since(since)).await?;
        read += page.len();
        let full = page.len() == MAX_LIST_LIMIT;
        let last_at = page.iter().map(|e| e.at).max();
        fresh.extend(page.into_iter().filter(|e| seen.first_time(e)));
        if !full || read >= SCAN_BOUND {
            break;
        }
        // The next page starts at the newest time of this one; a page all of one instant
        // steps past it, or it would come back forever.
        since = match last_at {
            Some(at) if at > since => at,
            _ => since + TimeDelta::microseconds(1),
        };
    }
    seen.prune();
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
            match serde_json::from_value(serde_json::Value::String(name.clone())) {
                // `other` stands for kinds this release does not know: not one to ask for.
                Ok(TaskEventKind::Other) | Err(_) => {
                    Err(Exit::usage(format!("`{name}` is not an event kind")).into())
                }
                Ok(kind) => Ok(kind),
            }
        })
        .collect()
}
