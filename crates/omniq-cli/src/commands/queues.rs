//! `omniq queues`.

use chrono::Utc;
use omniq_async::AsyncOmniQ;

use crate::output::{Table, print_json};
use crate::view;

pub(super) async fn run(omniq: &AsyncOmniQ, json: bool) -> anyhow::Result<()> {
    let queues = omniq.queues().await?;
    let now = Utc::now();
    if json {
        return print_json(&queues.iter().map(|q| view::queue_json(q, now)).collect());
    }
    let mut table = Table::new(&[
        "QUEUE",
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
