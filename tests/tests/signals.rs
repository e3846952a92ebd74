//! Graceful shutdown of a real worker process on SIGTERM and SIGINT: it exits 0, running
//! tasks either finish within the grace period or go back to their queue, none is left
//! Running or lost, and the next worker finishes them all.
//!
//! Each scenario runs on every backend (`<scenario>::sqlite`, `::redis`, `::postgres`,
//! `::mysql`).

#[macro_use]
mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use omniq_async::{AsyncOmniQ, TaskQuery, TaskState};
use omniq_e2e::QUEUE;
use support::{Scene, WorkerProcess, run_counts, wait_for_stats};

on_backends!(
    sigterm_lets_running_tasks_finish_and_loses_none,
    sigint_past_the_grace_period_releases_running_tasks,
);

/// Every task of the queue: its state, claim count and stored result.
async fn tasks(
    omniq: &AsyncOmniQ,
    expected: u64,
) -> anyhow::Result<Vec<(TaskState, u32, Option<u64>)>> {
    let records = omniq
        .list_tasks(TaskQuery::new().queue(QUEUE).limit(1_000))
        .await?;
    ensure!(
        records.len() as u64 == expected,
        "expected {expected} tasks, found {}",
        records.len()
    );
    let mut tasks = Vec::with_capacity(records.len());
    for record in records {
        let result = omniq.handle::<u64>(record.spec.id).try_result().await?;
        tasks.push((record.state, record.attempts, result));
    }
    Ok(tasks)
}

/// Signals `worker` and checks that it exits 0 within `within`; returns its report.
async fn stop(
    worker: &mut WorkerProcess,
    signal: &str,
    within: Duration,
) -> anyhow::Result<BTreeMap<String, u64>> {
    let sent = Instant::now();
    worker.signal(signal)?;
    let status = worker.wait_exit(within + Duration::from_secs(5)).await?;
    let took = sent.elapsed();
    ensure!(
        status.success(),
        "{} should exit 0 on SIG{signal}, got {status}:\n{}",
        worker.name,
        worker.stderr()
    );
    ensure!(
        took < within,
        "{} took {took:?} to exit on SIG{signal}, more than {within:?}",
        worker.name
    );
    worker.report().await
}

/// Starts a worker that finishes whatever is left, then stops it with SIGTERM; returns
/// its report.
async fn finish_the_rest(
    scene: &Scene,
    omniq: &AsyncOmniQ,
    tasks: u64,
) -> anyhow::Result<BTreeMap<String, u64>> {
    let mut worker = scene.spawn_worker(
        "finisher",
        &["--concurrency", "4", "--task-ms", "5", "--poll-ms", "50"],
        &[],
    )?;
    worker.wait_ready(Duration::from_secs(30)).await?;
    wait_for_stats(
        omniq,
        std::slice::from_mut(&mut worker),
        Duration::from_secs(30),
        |s| s.count(TaskState::Succeeded) == tasks,
    )
    .await?;
    stop(&mut worker, "TERM", Duration::from_secs(10)).await
}

async fn sigterm_lets_running_tasks_finish_and_loses_none(scene: &Scene) -> anyhow::Result<()> {
    const TASKS: u64 = 20;
    scene.enqueue_with_process(TASKS).await?;
    let omniq = scene.open().await?;
    ensure!(omniq.queue_stats(QUEUE).await?.counts == vec![(TaskState::Queued, TASKS)]);

    let mut worker = scene.spawn_worker(
        "worker",
        // No prefetch: the tasks not running at the signal were never claimed.
        &[
            "--concurrency",
            "4",
            "--prefetch",
            "0",
            "--task-ms",
            "300",
            "--poll-ms",
            "50",
        ],
        &[("OMNIQ_SHUTDOWN_GRACE", "10s")],
    )?;
    worker.wait_ready(Duration::from_secs(30)).await?;
    scene
        .wait_for_runs(1, Duration::from_secs(30), &mut worker)
        .await?;
    let report = stop(&mut worker, "TERM", Duration::from_secs(10)).await?;

    // Everything that was running finished within the grace period; the rest was never
    // claimed. Nothing is left Running, and nothing is lost.
    let stats = omniq.queue_stats(QUEUE).await?;
    let succeeded = stats.count(TaskState::Succeeded);
    let queued = stats.count(TaskState::Queued);
    ensure!(
        succeeded + queued == TASKS,
        "every task should be Succeeded or Queued: {:?}",
        stats.counts
    );
    ensure!(
        queued > 0,
        "the worker finished every task before SIGTERM; nothing was left to release"
    );
    ensure!(
        report.get("succeeded") == Some(&succeeded),
        "report {report:?} vs {succeeded} Succeeded"
    );
    ensure!(report.get("released") == Some(&0), "report {report:?}");
    let runs = scene.runs()?;
    ensure!(
        runs.len() as u64 == succeeded,
        "{} runs logged but {succeeded} tasks Succeeded",
        runs.len()
    );
    let mut results = Vec::new();
    for (state, attempts, result) in tasks(&omniq, TASKS).await? {
        match state {
            TaskState::Succeeded => {
                ensure!(
                    attempts == 1,
                    "a Succeeded task was claimed {attempts} times"
                );
                results.push(result.context("a Succeeded task without a result")?);
            }
            TaskState::Queued => {
                ensure!(attempts == 0, "a Queued task was claimed {attempts} times");
                ensure!(result.is_none(), "a Queued task has a result: {result:?}");
            }
            other => bail!("a task is {other} after the shutdown"),
        }
    }
    results.sort_unstable();
    let mut ran = runs.clone();
    ran.sort_unstable();
    ensure!(
        results == ran,
        "results {results:?} differ from the runs logged {ran:?}"
    );
    println!("sigterm: {succeeded} tasks finished within the grace period, {queued} left Queued");

    let report = finish_the_rest(scene, &omniq, TASKS).await?;
    ensure!(
        report.get("succeeded") == Some(&queued),
        "finisher report {report:?}"
    );
    let counts = run_counts(&scene.runs()?);
    ensure!(
        counts.keys().copied().eq(0..TASKS),
        "runs cover {:?}",
        counts.keys()
    );
    ensure!(
        counts.values().all(|&n| n == 1),
        "a task ran twice after a graceful shutdown: {counts:?}"
    );
    omniq.close().await;
    Ok(())
}

async fn sigint_past_the_grace_period_releases_running_tasks(scene: &Scene) -> anyhow::Result<()> {
    const TASKS: u64 = 8;
    let omniq = scene.open().await?;
    let handles = omniq_e2e::enqueue_records(&omniq, 0..TASKS).await?;

    // Tasks far longer than the grace period: SIGINT must release them, not wait.
    let mut worker = scene.spawn_worker(
        "worker",
        &[
            "--concurrency",
            "4",
            "--prefetch",
            "0",
            "--task-ms",
            "600000",
            "--poll-ms",
            "50",
            "--grace-ms",
            "200",
        ],
        &[],
    )?;
    worker.wait_ready(Duration::from_secs(30)).await?;
    wait_for_stats(
        &omniq,
        std::slice::from_mut(&mut worker),
        Duration::from_secs(30),
        |s| s.count(TaskState::Running) == 4,
    )
    .await?;
    let report = stop(&mut worker, "INT", Duration::from_secs(10)).await?;
    ensure!(
        report.get("released") == Some(&4) && report.get("succeeded") == Some(&0),
        "report {report:?}"
    );
    let stats = omniq.queue_stats(QUEUE).await?;
    ensure!(
        stats.counts == vec![(TaskState::Queued, TASKS)],
        "every task should be back in Queued: {:?}",
        stats.counts
    );
    for handle in &handles {
        let record = handle.record().await?;
        ensure!(
            record.attempts == 0,
            "a released attempt should not count: {record:?}"
        );
    }
    ensure!(scene.runs()?.is_empty(), "an aborted task logged a run");

    let report = finish_the_rest(scene, &omniq, TASKS).await?;
    ensure!(report.get("succeeded") == Some(&TASKS), "{report:?}");
    for (seq, handle) in (0..TASKS).zip(&handles) {
        let result = handle.try_result().await.context("result")?;
        ensure!(result == Some(seq), "task {seq}: {result:?}");
    }
    let counts = run_counts(&scene.runs()?);
    ensure!(counts.keys().copied().eq(0..TASKS) && counts.values().all(|&n| n == 1));
    println!("sigint: 4 running tasks released after the grace period and finished later");
    omniq.close().await;
    Ok(())
}
