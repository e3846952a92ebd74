//! Two worker processes on one queue split the work: both run tasks, and no task runs
//! twice (nobody crashes, so nobody's lease expires and nothing is claimed twice).
//!
//! Runs on every backend (`two_workers_split_the_work_and_run_no_task_twice::sqlite`,
//! `::redis`, `::postgres`, `::mysql`, `::nats`, `::file`), and on S3.

#[macro_use]
mod support;

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use omniq_async::TaskState;
use support::{Scene, run_counts, wait_for_stats};

const TASKS: u64 = 2_000;

on_backends!(two_workers_split_the_work_and_run_no_task_twice);

/// The same on the S3 server: claims decided by conditional writes over HTTP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_split_the_work_on_s3_and_run_no_task_twice() -> anyhow::Result<()> {
    support::run(
        support::Backend::S3,
        "two_workers_split_the_work_on_s3_and_run_no_task_twice",
        two_workers_split_the_work_and_run_no_task_twice,
    )
    .await
}

async fn two_workers_split_the_work_and_run_no_task_twice(scene: &Scene) -> anyhow::Result<()> {
    let started = Instant::now();
    let omniq = scene.open().await?;
    // The S3 test server (moto) answers one request at a time, a few hundred a second, and
    // each task takes about fourteen: with two workers, this test's own counting and the
    // other backends' runs of this test sharing two cores, a heartbeat waited more than a
    // minute there in one CI run, so leases are five minutes (the run's bound is ten).
    let lease_ms = if scene.target.backend == support::Backend::S3 {
        "300000"
    } else {
        "10000"
    };
    let args = [
        "--concurrency",
        "8",
        "--task-ms",
        "2",
        "--lease-ms",
        lease_ms,
        "--poll-ms",
        "50",
    ];
    // Both workers are up and idle before the first task exists, so neither has a head
    // start: each claim takes at most its free slots, and both keep claiming until the
    // queue is empty.
    let mut workers = Vec::new();
    for name in ["worker-a", "worker-b"] {
        let mut worker = scene.spawn_worker(name, &args, &[])?;
        worker.wait_ready(Duration::from_secs(30)).await?;
        workers.push(worker);
    }
    let handles = omniq_e2e::enqueue_records(&omniq, 0..TASKS).await?;
    ensure!(handles.len() as u64 == TASKS);
    // 2,000 tasks need two minutes on the S3 test server.
    let bound = if scene.target.backend == support::Backend::S3 {
        Duration::from_secs(600)
    } else {
        Duration::from_secs(120)
    };
    wait_for_stats(&omniq, &mut workers, bound, |s| {
        s.count(TaskState::Succeeded) == TASKS
    })
    .await?;

    let mut reports = Vec::new();
    for worker in &workers {
        worker.signal("TERM")?;
    }
    for worker in &mut workers {
        let status = worker.wait_exit(Duration::from_secs(30)).await?;
        ensure!(
            status.success(),
            "{} should exit 0 on SIGTERM, got {status}:\n{}",
            worker.name,
            worker.stderr()
        );
        let report = worker.report().await?;
        let count = |key: &str| report.get(key).copied().unwrap_or(u64::MAX);
        ensure!(
            count("succeeded") > 0,
            "{} ran no task: {report:?}",
            worker.name
        );
        for key in ["retried", "dead_lettered", "released", "lease_lost"] {
            ensure!(count(key) == 0, "{} report {key}: {report:?}", worker.name);
        }
        reports.push((worker.name.clone(), count("succeeded")));
    }
    let total: u64 = reports.iter().map(|(_, n)| n).sum();
    ensure!(
        total == TASKS,
        "the workers report {total} successes for {TASKS} tasks: {reports:?}"
    );

    // The store: each task Succeeded on its one claim, with its own result.
    let stats = omniq.queue_stats(omniq_e2e::QUEUE).await?;
    ensure!(
        stats.counts == vec![(TaskState::Succeeded, TASKS)],
        "expected only {TASKS} Succeeded, got {:?}",
        stats.counts
    );
    for (seq, handle) in (0..TASKS).zip(&handles) {
        let record = handle.record().await?;
        ensure!(
            record.state == TaskState::Succeeded && record.attempts == 1,
            "task {seq}: {record:?}"
        );
        let result = handle
            .try_result()
            .await
            .with_context(|| format!("result of task {seq}"))?;
        ensure!(result == Some(seq), "task {seq}: result {result:?}");
    }

    // The runs log, written by both processes: every task exactly once.
    let runs = scene.runs()?;
    let counts = run_counts(&runs);
    let missing: Vec<_> = (0..TASKS).filter(|s| !counts.contains_key(s)).collect();
    ensure!(missing.is_empty(), "tasks never run: {missing:?}");
    let twice: Vec<_> = counts.iter().filter(|&(_, &n)| n > 1).collect();
    ensure!(twice.is_empty(), "tasks run more than once: {twice:?}");
    ensure!(
        runs.len() as u64 == TASKS,
        "{} runs logged for {TASKS} tasks",
        runs.len()
    );
    println!(
        "sharing ({:?}): {reports:?} of {TASKS} tasks, none twice; {:?}",
        scene.target.backend,
        started.elapsed()
    );
    omniq.close().await;
    Ok(())
}
