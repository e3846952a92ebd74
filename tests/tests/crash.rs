//! A worker process killed with SIGKILL mid-run loses nothing: a second process finishes
//! the run, every task ends Succeeded exactly once, and only tasks that were in flight at
//! the kill run twice.
//!
//! "In flight" is what the store says: the tasks still Running under the dead worker's
//! leases, which a worker never holds more of than its lease budget (concurrency + prefetch).
//!
//! Each scenario runs on every backend (`<scenario>::sqlite`, `::redis`, `::postgres`,
//! `::mysql`).

#[macro_use]
mod support;

use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use omniq_async::{TaskErrorKind, TaskEventKind, TaskState};
use omniq_e2e::QUEUE;
use support::{POLL, Scene, run_counts};

on_backends!(
    sigkill_mid_run_loses_no_task_and_reruns_only_those_in_flight,
    a_sigkilled_process_worker_leaves_no_child_and_loses_no_task,
    a_worker_holds_no_more_leases_than_its_budget,
);

const TASKS: u64 = 2_000;
const CONCURRENCY: usize = 16;
const PREFETCH: usize = 8;
/// Leases a worker may hold: running, buffered, or being completed.
const BUDGET: u64 = (CONCURRENCY + PREFETCH) as u64;
const RUNS_BEFORE_KILL: usize = 500;

async fn sigkill_mid_run_loses_no_task_and_reruns_only_those_in_flight(
    scene: &Scene,
) -> anyhow::Result<()> {
    sigkill_mid_run(scene, "async").await
}

/// The same with worker A a process worker: its handlers run in child processes, and the
/// SIGKILL of A leaves none of them running (they exit when their socket closes).
async fn a_sigkilled_process_worker_leaves_no_child_and_loses_no_task(
    scene: &Scene,
) -> anyhow::Result<()> {
    sigkill_mid_run(scene, "process").await
}

/// Worker A (of `kind`) is killed by SIGKILL mid-run; worker B finishes the run.
async fn sigkill_mid_run(scene: &Scene, kind: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    let omniq = scene.open().await?;
    let handles = omniq_e2e::enqueue_records(&omniq, 0..TASKS).await?;
    ensure!(handles.len() as u64 == TASKS);

    let concurrency = CONCURRENCY.to_string();
    let prefetch = PREFETCH.to_string();
    let worker_args = [
        "--concurrency",
        concurrency.as_str(),
        "--prefetch",
        prefetch.as_str(),
        "--task-ms",
        "2",
        "--lease-ms",
        "2000",
        "--poll-ms",
        "50",
    ];

    // Worker A runs until about a quarter of the tasks have run, then dies by SIGKILL.
    let mut a = scene.spawn_worker("worker-a", &worker_args, &[("OMNIQ_DEFAULT_WORKER", kind)])?;
    a.wait_ready(Duration::from_secs(30)).await?;
    scene
        .wait_for_runs(RUNS_BEFORE_KILL, Duration::from_secs(60), &mut a)
        .await?;
    let children = support::children_of(a.pid());
    let has_children = !children.is_empty();
    ensure!(
        has_children == (kind == "process"),
        "a {kind} worker with child processes {children:?}"
    );
    let status = a.kill()?;
    ensure!(
        status.signal() == Some(9),
        "worker A should have died by SIGKILL, got {status}"
    );
    for child in children {
        support::wait_until_dead(child, Duration::from_secs(20)).await?;
    }
    let runs_at_kill = scene.runs()?.len();
    let at_kill = omniq.queue_stats(QUEUE).await?;
    let running_at_kill = at_kill.count(TaskState::Running);
    let succeeded_at_kill = at_kill.count(TaskState::Succeeded);
    ensure!(
        succeeded_at_kill < TASKS,
        "worker A finished every task before the kill; the test proved nothing"
    );
    ensure!(
        at_kill.count(TaskState::Succeeded)
            + at_kill.count(TaskState::Running)
            + at_kill.count(TaskState::Queued)
            == TASKS,
        "unexpected states at the kill: {:?}",
        at_kill.counts
    );

    // Worker B recovers A's expired leases and finishes the run.
    let mut b = scene.spawn_worker("worker-b", &worker_args, &[])?;
    b.wait_ready(Duration::from_secs(30)).await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let stats = omniq.queue_stats(QUEUE).await?;
        if stats.count(TaskState::Succeeded) == TASKS {
            break;
        }
        if let Some(status) = b.try_exit()? {
            anyhow::bail!("worker B exited early ({status}):\n{}", b.stderr());
        }
        ensure!(
            Instant::now() < deadline,
            "not every task succeeded within 120 s: {:?}\nworker B log:\n{}",
            stats.counts,
            b.stderr()
        );
        tokio::time::sleep(POLL).await;
    }
    b.signal("TERM")?;
    let status = b.wait_exit(Duration::from_secs(30)).await?;
    ensure!(
        status.success(),
        "worker B should exit 0 on SIGTERM, got {status}:\n{}",
        b.stderr()
    );
    let report = b.report().await?;

    // The stores: 2,000 Succeeded and nothing else, each with its own result.
    let stats = omniq.queue_stats(QUEUE).await?;
    ensure!(
        stats.counts == vec![(TaskState::Succeeded, TASKS)],
        "expected only {TASKS} Succeeded, got {:?}",
        stats.counts
    );
    let mut rerun_ids = BTreeSet::new();
    let mut rerun_seqs = BTreeSet::new();
    for (seq, handle) in (0..TASKS).zip(&handles) {
        let result = handle
            .try_result()
            .await
            .with_context(|| format!("result of task {seq}"))?;
        ensure!(
            result == Some(seq),
            "task {seq}: expected result {seq}, got {result:?}"
        );
        let record = handle.record().await?;
        ensure!(
            record.state == TaskState::Succeeded,
            "task {seq}: {record:?}"
        );
        match record.attempts {
            1 => ensure!(
                record.errors.is_empty(),
                "task {seq} has errors: {:?}",
                record.errors
            ),
            // The first attempt is on record as lost with worker A's lease.
            2 => {
                ensure!(
                    record.errors.len() == 1
                        && record.errors[0].attempt == 1
                        && record.errors[0].error.kind == TaskErrorKind::LeaseLost,
                    "task {seq}: expected one LeaseLost error, got {:?}",
                    record.errors
                );
                rerun_ids.insert(handle.id());
                rerun_seqs.insert(seq);
            }
            n => anyhow::bail!("task {seq} was claimed {n} times"),
        }
    }
    // Exactly the tasks A held leases on at the kill were claimed a second time.
    ensure!(
        rerun_ids.len() as u64 == running_at_kill,
        "{} tasks were claimed twice, but {running_at_kill} were Running at the kill",
        rerun_ids.len()
    );

    // B's own account: it completed what A had not, recovered A's leases, lost nothing.
    let expect = |key: &str, value: u64| -> anyhow::Result<()> {
        ensure!(
            report.get(key) == Some(&value),
            "worker B report {key}: expected {value}, got {:?} ({report:?})",
            report.get(key)
        );
        Ok(())
    };
    expect("succeeded", TASKS - succeeded_at_kill)?;
    expect("retried", 0)?;
    expect("dead_lettered", 0)?;
    expect("released", 0)?;
    expect("lease_lost", 0)?;

    // The events: every task succeeded at most once (A's last events may have died with
    // it), and B recovered each of A's leases once.
    let succeeded = support::all_events(&omniq, TaskEventKind::Succeeded).await?;
    let mut succeeded_tasks = BTreeSet::new();
    for event in &succeeded {
        let id = event.task_id.context("a Succeeded event without a task")?;
        ensure!(
            succeeded_tasks.insert(id),
            "task {id} has two Succeeded events"
        );
    }
    ensure!(
        succeeded_tasks.len() as u64 >= TASKS - succeeded_at_kill,
        "worker B flushed {} Succeeded events for {} completions",
        succeeded_tasks.len(),
        TASKS - succeeded_at_kill
    );
    // (2,000 tasks log far fewer events than the logger's buffer, so none is dropped.)
    let recovered: Vec<_> = support::all_events(&omniq, TaskEventKind::Recovered)
        .await?
        .iter()
        .filter_map(|e| e.task_id)
        .collect();
    ensure!(
        recovered.len() == rerun_ids.len()
            && recovered.iter().copied().collect::<BTreeSet<_>>() == rerun_ids,
        "{} Recovered events, but {} tasks were claimed twice",
        recovered.len(),
        rerun_ids.len()
    );

    // The runs log: every task ran, and only tasks in flight at the kill ran twice.
    let runs = scene.runs()?;
    let counts = run_counts(&runs);
    let missing: Vec<_> = (0..TASKS).filter(|s| !counts.contains_key(s)).collect();
    ensure!(missing.is_empty(), "tasks never run: {missing:?}");
    ensure!(
        counts.keys().all(|&seq| seq < TASKS),
        "the runs log has unknown sequence numbers"
    );
    ensure!(
        counts.values().all(|&n| n <= 2),
        "a task ran more than twice"
    );
    let duplicates: BTreeSet<u64> = counts
        .iter()
        .filter(|&(_, &n)| n > 1)
        .map(|(&seq, _)| seq)
        .collect();
    println!(
        "crash ({:?}, {kind} worker): {runs_at_kill} runs logged and {succeeded_at_kill} tasks Succeeded at \
         the kill, {running_at_kill} Running (in flight); {} tasks ran twice; {:?} in all",
        scene.target.backend,
        duplicates.len(),
        started.elapsed()
    );
    ensure!(
        duplicates.is_subset(&rerun_seqs),
        "tasks ran twice without being claimed twice: {:?}",
        duplicates.difference(&rerun_seqs).collect::<Vec<_>>()
    );
    // "No more than the number in flight at the kill": the leases A held, counted in the
    // store, which never exceed A's lease budget.
    ensure!(
        duplicates.len() as u64 <= running_at_kill,
        "{} tasks ran twice, more than the {running_at_kill} in flight at the kill",
        duplicates.len()
    );
    ensure!(
        running_at_kill <= BUDGET,
        "{running_at_kill} tasks were Running under a worker with a budget of {BUDGET} leases"
    );
    ensure!(runs.len() == TASKS as usize + duplicates.len());
    omniq.close().await;
    Ok(())
}

/// The number of tasks a worker holds leases on never exceeds its budget (concurrency +
/// prefetch), so a crash re-runs at most that many: a lease permit is freed only once its
/// task's completion is in the store, not when the handler returns (finished-but-uncompleted
/// tasks are still Running under the worker's lease, and would all run again after a
/// SIGKILL).
async fn a_worker_holds_no_more_leases_than_its_budget(scene: &Scene) -> anyhow::Result<()> {
    let omniq = scene.open().await?;
    omniq_e2e::enqueue_records(&omniq, 0..TASKS).await?;
    let concurrency = CONCURRENCY.to_string();
    let prefetch = PREFETCH.to_string();
    let mut worker = scene.spawn_worker(
        "worker",
        &[
            "--concurrency",
            concurrency.as_str(),
            "--prefetch",
            prefetch.as_str(),
            "--task-ms",
            "2",
            "--poll-ms",
            "50",
        ],
        &[],
    )?;
    worker.wait_ready(Duration::from_secs(30)).await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut most_running = 0;
    loop {
        let stats = omniq.queue_stats(QUEUE).await?;
        most_running = most_running.max(stats.count(TaskState::Running));
        if stats.count(TaskState::Succeeded) == TASKS {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "not every task succeeded within 120 s: {:?}",
            stats.counts
        );
        tokio::time::sleep(POLL).await;
    }
    worker.signal("TERM")?;
    ensure!(worker.wait_exit(Duration::from_secs(30)).await?.success());
    println!(
        "leases ({:?}): at most {most_running} tasks Running at once, budget {BUDGET}",
        scene.target.backend
    );
    ensure!(
        most_running <= BUDGET,
        "a worker with a budget of {BUDGET} leases held {most_running} at once"
    );
    omniq.close().await;
    Ok(())
}
