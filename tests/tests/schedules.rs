//! Three worker processes run the scheduler on one SQLite file through 30 fires of a
//! one-second interval schedule: each fire is enqueued exactly once, none is skipped.
//!
//! SQLite only: the test takes about 31 s, and the exactly-once rule it checks is the
//! schedule store's compare-and-set, which every backend's scheduler suite already covers
//! (`omniq_scheduler::scheduler_suite!`).

mod support;

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use chrono::{DurationRound, Utc};
use omniq_async::{ScheduleTrigger, TaskQuery};
use omniq_e2e::{QUEUE, Record};
use support::{POLL, Scene};

const FIRES: u64 = 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_scheduler_processes_enqueue_each_fire_exactly_once() -> anyhow::Result<()> {
    let scene = Scene::sqlite()?;
    let omniq = scene.open().await?;
    let start = (Utc::now() + chrono::Duration::seconds(2))
        .duration_trunc(chrono::Duration::seconds(1))
        .context("round the start time")?;
    omniq
        .schedule(
            "every-second",
            ScheduleTrigger::every_from(Duration::from_secs(1), start),
            Record { seq: 0 },
        )
        .max_runs(FIRES)
        .await?;

    let mut workers = Vec::new();
    for name in ["scheduler-a", "scheduler-b", "scheduler-c"] {
        let mut worker = scene.spawn_worker(name, &["--concurrency", "2"], &[])?;
        worker.wait_ready(Duration::from_secs(30)).await?;
        workers.push(worker);
    }

    let deadline = Instant::now() + Duration::from_secs(FIRES + 60);
    loop {
        let schedule = omniq
            .schedules()
            .get("every-second")
            .await?
            .context("the schedule exists")?;
        if schedule.fire_count >= FIRES {
            ensure!(
                schedule.next_fire_at.is_none(),
                "max_runs ends the schedule"
            );
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "only {} fires after the deadline",
            schedule.fire_count
        );
        tokio::time::sleep(POLL * 10).await;
    }
    for worker in &workers {
        worker.signal("TERM")?;
    }
    for worker in &mut workers {
        let status = worker.wait_exit(Duration::from_secs(30)).await?;
        ensure!(
            status.success(),
            "{} exited with {status}: {}",
            worker.pid(),
            worker.stderr()
        );
    }

    let tasks = omniq
        .list_tasks(TaskQuery::new().queue(QUEUE).limit(1_000))
        .await?;
    let mut fire_times: Vec<_> = tasks.iter().map(|t| t.spec.run_at).collect();
    fire_times.sort();
    let expected: Vec<_> = (0..FIRES as i64)
        .map(|k| start + chrono::Duration::seconds(k))
        .collect();
    ensure!(
        fire_times == expected,
        "fires enqueued: {} for {FIRES} expected; duplicates or gaps: {:?}",
        fire_times.len(),
        fire_times
    );
    Ok(())
}
