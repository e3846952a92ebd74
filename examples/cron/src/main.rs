//! Cron and interval schedules: stored once, fired exactly once per tick however many
//! workers run, managed while they run.
//!
//! Needs nothing: OmniQ runs on its embedded SQLite default under `./.omniq`, or wherever
//! `OMNIQ_URL` points. Runs until Ctrl-C.
//!
//! ```text
//! cargo run -p example-cron
//! ```

use std::time::Duration;

use omniq_async::ScheduleTrigger;
use omniq_async::prelude::*;

/// The nightly report.
#[task(queue = "reports")]
async fn nightly_report(ctx: TaskContext) -> Result<(), TaskError> {
    println!("nightly report (task {})", ctx.task_id());
    Ok(())
}

/// A heartbeat to show an interval firing.
#[task]
async fn tick() -> Result<(), TaskError> {
    println!("tick");
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let omniq = AsyncOmniQ::from_env()
        .await?
        .register::<nightly_report>()
        .register::<tick>();
    // Stored by name: running this program twice (or on ten machines) keeps one schedule
    // each, and each fire is enqueued once.
    omniq
        .schedule(
            "nightly-report",
            ScheduleTrigger::cron("0 3 * * *"),
            nightly_report {},
        )
        .await?;
    omniq
        .schedule(
            "tick",
            ScheduleTrigger::every(Duration::from_secs(5)),
            tick {},
        )
        .await?;
    for schedule in omniq.schedules().list().await? {
        println!("{}: next at {:?}", schedule.name, schedule.next_fire_at);
    }
    // Workers run the scheduler unless told not to.
    let worker = omniq.worker().queues(["default", "reports"]).start()?;
    worker.run_until_signal().await?;
    Ok(())
}
