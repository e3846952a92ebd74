//! `omniq queues [list|pause|resume]`.

use chrono::Utc;
use omniq_async::AsyncOmniQ;
use serde_json::json;

use crate::cli::QueuesCommand;
use crate::output::{Table, print_json};
use crate::view;

pub(super) async fn run(
    omniq: &AsyncOmniQ,
    action: Option<QueuesCommand>,
    json: bool,
) -> anyhow::Result<()> {
    match action.unwrap_or(QueuesCommand::List) {
        QueuesCommand::List => list(omniq, json).await,
        QueuesCommand::Pause { queues } => set_paused(omniq, queues, true, json).await,
        QueuesCommand::Resume { queues } => set_paused(omniq, queues, false, json).await,
    }
}

async fn list(omniq: &AsyncOmniQ, json: bool) -> anyhow::Result<()> {
    let queues = omniq.queues().await?;
    let now = Utc::now();
    if json {
        return print_json(&queues.iter().map(|q| view::queue_json(q, now)).collect());
    }
    let mut table = Table::new(&[
        "QUEUE",
        "PAUSED",
        "BLOCKED",
        "SCHEDULED",
        "QUEUED",
        "RUNNING",
        "SUCCEEDED",
        "FAILED",
        "CANCELLED",
        "EXPIRED",
        "OLDEST QUEUED",
    ]);
    for stats in &queues {
        table.row(view::queue_row(stats, now));
    }
    table.print("no queues hold tasks")
}

/// Pauses or resumes each queue; says for each whether that changed it.
async fn set_paused(
    omniq: &AsyncOmniQ,
    queues: Vec<String>,
    paused: bool,
    json: bool,
) -> anyhow::Result<()> {
    let mut outcomes = Vec::with_capacity(queues.len());
    for queue in queues {
        let changed = if paused {
            omniq.pause_queue(&queue).await?
        } else {
            omniq.resume_queue(&queue).await?
        };
        outcomes.push((queue, changed));
    }
    if json {
        return print_json(
            &outcomes
                .iter()
                .map(|(queue, changed)| json!({ "queue": queue, "paused": paused, "changed": changed }))
                .collect(),
        );
    }
    for (queue, changed) in outcomes {
        let state = match (paused, changed) {
            (true, true) => "paused",
            (true, false) => "already paused",
            (false, true) => "resumed",
            (false, false) => "not paused",
        };
        println!("{queue}  {state}");
    }
    Ok(())
}
