//! `omniq purge`: deletes finished tasks in bounded batches, with a progress bar.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::bail;
use chrono::Utc;
use indicatif::{ProgressBar, ProgressStyle};
use omniq_async::{AsyncOmniQ, PurgeRequest, TaskState};
use serde_json::json;

use super::tasks::states;
use crate::cli::PurgeArgs;
use crate::exit::Exit;
use crate::output::print_json;
use crate::when::parse_when;

/// Tasks deleted per store call: small enough that no call holds the store for long.
const BATCH: usize = 1_000;

pub(super) async fn run(omniq: &AsyncOmniQ, args: PurgeArgs, json: bool) -> anyhow::Result<()> {
    let states = states(&args.state)?;
    if let Some(state) = states.iter().find(|state| !state.is_terminal()) {
        return Err(Exit::usage(format!(
            "`{state}` tasks have not finished; only finished tasks can be purged"
        ))
        .into());
    }
    let mut request = PurgeRequest::new().states(states.clone()).limit(BATCH);
    if let Some(queue) = &args.queue {
        request = request.queue(queue.clone());
    }
    // Never past the start: on a busy queue, tasks finishing while it runs would give every
    // batch something to delete, and the purge would not end.
    let now = Utc::now();
    let before = match &args.before {
        Some(before) => parse_when(before, now)?.min(now),
        None => now,
    };
    request = request.finished_before(before);
    // How many there are, for the question and the bar: counts of the states named.
    let counted: Vec<TaskState> = if states.is_empty() {
        TaskState::ALL
            .into_iter()
            .filter(|s| s.is_terminal())
            .collect()
    } else {
        states
    };
    let stats = match &args.queue {
        Some(queue) => vec![omniq.queue_stats(queue.clone()).await?],
        None => omniq.queues().await?,
    };
    let at_most: u64 = stats
        .iter()
        .flat_map(|s| counted.iter().map(|state| s.count(*state)))
        .sum();
    if !args.yes {
        confirm(at_most, &counted)?;
    }
    let bar = ProgressBar::new(at_most).with_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} purged ({per_sec})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut purged = 0_u64;
    loop {
        let deleted = match omniq.stores().queue.purge(request.clone()).await {
            Ok(deleted) => deleted,
            Err(err) => {
                bar.abandon();
                return Err(anyhow::Error::new(err)
                    .context(format!("after purging {purged} tasks (they stay deleted)")));
            }
        };
        if deleted == 0 {
            break;
        }
        purged += deleted;
        bar.set_length(bar.length().unwrap_or(0).max(purged));
        bar.set_position(purged);
    }
    bar.finish_and_clear();
    if json {
        print_json(&json!({ "purged": purged }))
    } else {
        println!("{purged} tasks purged");
        Ok(())
    }
}

/// Asks on the terminal; refuses when there is no terminal to ask on.
fn confirm(at_most: u64, states: &[TaskState]) -> anyhow::Result<()> {
    if !std::io::stdin().is_terminal() {
        bail!("purge deletes tasks for good: pass --yes to run it without a terminal");
    }
    let names: Vec<&str> = states.iter().map(|s| s.as_str()).collect();
    eprint!(
        "Delete up to {at_most} {} tasks for good? [y/N] ",
        names.join("/")
    );
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if !matches!(answer.trim(), "y" | "Y" | "yes") {
        bail!("purge not confirmed");
    }
    Ok(())
}
