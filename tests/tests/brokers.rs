//! Brokers as the task queue (RabbitMQ, SQS), with results in a SQLite file: a worker
//! process killed by SIGKILL, and (on RabbitMQ) the broker closing a worker's connection
//! mid-run, lose no task; the only tasks run twice are those the lost worker held
//! unacknowledged, which a worker never holds more of than its lease budget (RabbitMQ's
//! prefetch follows its free slots; on SQS it receives no more than its free slots).

#[macro_use]
mod support;

use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use omniq_async::TaskHandle;
use support::{Backend, POLL, Scene, WorkerProcess, run_counts};

const TASKS: u64 = 2_000;
const CONCURRENCY: usize = 16;
const PREFETCH: usize = 8;
/// Deliveries a worker may hold unacknowledged: running, buffered, or being completed.
const BUDGET: usize = CONCURRENCY + PREFETCH;

fn worker_args(task_ms: u64, lease_ms: u64) -> Vec<String> {
    [
        "--concurrency",
        &CONCURRENCY.to_string(),
        "--prefetch",
        &PREFETCH.to_string(),
        "--task-ms",
        &task_ms.to_string(),
        "--lease-ms",
        &lease_ms.to_string(),
        "--poll-ms",
        "50",
    ]
    .map(str::to_owned)
    .to_vec()
}

mod sigkill_mid_run_loses_no_task_and_reruns_only_unacknowledged_ones {
    use super::{Backend, Run, sigkill_mid_run, support};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn amqp() -> anyhow::Result<()> {
        support::run(
            Backend::Amqp,
            "sigkill_mid_run_loses_no_task_and_reruns_only_unacknowledged_ones::amqp",
            async |scene| sigkill_mid_run(scene, &Run::FULL).await,
        )
        .await
    }

    /// Fewer tasks and longer leases: the SQS test server (moto) slows down as its queue
    /// grows, to a few calls a second with thousands of messages.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqs() -> anyhow::Result<()> {
        support::run(
            Backend::Sqs,
            "sigkill_mid_run_loses_no_task_and_reruns_only_unacknowledged_ones::sqs",
            async |scene| sigkill_mid_run(scene, &Run::SMALL).await,
        )
        .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_closed_by_the_broker_loses_no_task() -> anyhow::Result<()> {
    support::run(
        Backend::Amqp,
        "a_connection_closed_by_the_broker_loses_no_task",
        connection_closed_mid_run,
    )
    .await
}

/// The size of a run and the lease its workers take.
struct Run {
    tasks: u64,
    kill_after: usize,
    lease_ms: u64,
}

impl Run {
    const FULL: Run = Run {
        tasks: TASKS,
        kill_after: 500,
        lease_ms: 2_000,
    };
    const SMALL: Run = Run {
        tasks: 300,
        kill_after: 60,
        lease_ms: 5_000,
    };
}

/// Worker A is killed by SIGKILL after a quarter of the run; worker B finishes it.
async fn sigkill_mid_run(scene: &Scene, run: &Run) -> anyhow::Result<()> {
    let omniq = scene.open().await?;
    let handles = omniq_e2e::enqueue_records(&omniq, 0..run.tasks).await?;
    let args = worker_args(2, run.lease_ms);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut a = scene.spawn_worker("worker-a", &args, &[])?;
    a.wait_ready(Duration::from_secs(30)).await?;
    scene
        .wait_for_runs(run.kill_after, Duration::from_secs(60), &mut a)
        .await?;
    let status = a.kill()?;
    ensure!(status.signal() == Some(9), "worker A: {status}");
    let at_kill: BTreeSet<u64> = scene.runs()?.into_iter().collect();
    ensure!(
        (at_kill.len() as u64) < run.tasks,
        "worker A ran every task before the kill; the test proved nothing"
    );

    let mut b = scene.spawn_worker("worker-b", &args, &[])?;
    b.wait_ready(Duration::from_secs(30)).await?;
    wait_for_every_result(scene, &handles, &mut b).await?;
    let report = stop(&mut b).await?;
    ensure!(report.get("dead_lettered") == Some(&0), "{report:?}");

    let counts = run_counts(&scene.runs()?);
    let twice: Vec<u64> = counts
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(seq, _)| *seq)
        .collect();
    ensure!(
        counts.values().all(|n| *n <= 2),
        "a task ran more than twice: {counts:?}"
    );
    // A task runs again only if A ran it and died before its acknowledgement.
    ensure!(
        twice.iter().all(|seq| at_kill.contains(seq)),
        "tasks ran twice that A never ran: {twice:?}"
    );
    ensure!(
        twice.len() <= BUDGET,
        "{} tasks ran twice, more than the {BUDGET} a worker holds",
        twice.len()
    );
    Ok(())
}

/// The broker closes the worker's connection mid-run (as at a broker restart, a
/// failover, or a network cut); the worker opens another and finishes the run.
async fn connection_closed_mid_run(scene: &Scene) -> anyhow::Result<()> {
    let omniq = scene.open().await?;
    let handles = omniq_e2e::enqueue_records(&omniq, 0..TASKS).await?;
    // Slow tasks (at most 16 × 20 a second: the run takes six seconds or more), so that
    // the close lands mid-run however slowly `rabbitmqctl` starts.
    let args = worker_args(50, 2_000);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut worker = scene.spawn_worker("worker", &args, &[])?;
    worker.wait_ready(Duration::from_secs(30)).await?;
    let prefix = scene
        .target
        .url
        .split_once("prefix=")
        .map(|(_, prefix)| prefix.to_owned())
        .context("the target has no prefix")?;
    let connections = connections_named(&prefix)?;
    ensure!(
        !connections.is_empty(),
        "no connection of prefix {prefix} was found to close"
    );
    scene
        .wait_for_runs(200, Duration::from_secs(60), &mut worker)
        .await?;
    close_connections(&connections)?;
    let at_close: BTreeSet<u64> = scene.runs()?.into_iter().collect();
    ensure!(
        (at_close.len() as u64) < TASKS,
        "the worker ran every task before the close; the test proved nothing"
    );
    wait_for_every_result(scene, &handles, &mut worker).await?;
    let report = stop(&mut worker).await?;
    ensure!(report.get("dead_lettered") == Some(&0), "{report:?}");
    let counts = run_counts(&scene.runs()?);
    let twice = counts.values().filter(|n| **n > 1).count();
    // The close took the leases the connection held: the worker saw them lost.
    ensure!(
        report.get("lease_lost").is_some_and(|n| *n > 0),
        "the worker lost no lease at the close: {report:?}"
    );
    ensure!(
        counts.values().all(|n| *n <= 2),
        "a task ran more than twice: {counts:?}"
    );
    ensure!(
        twice <= BUDGET,
        "{twice} tasks ran twice, more than the {BUDGET} the lost connection could hold"
    );
    Ok(())
}

/// The connections whose client named them `name` (the queue's prefix), as
/// `rabbitmqctl` names them (their process ids).
fn connections_named(name: &str) -> anyhow::Result<Vec<String>> {
    let listed = Command::new("rabbitmqctl")
        .args([
            "-q",
            "list_connections",
            "--no-table-headers",
            "pid",
            "client_properties",
        ])
        .output()
        .context("cannot run rabbitmqctl")?;
    ensure!(
        listed.status.success(),
        "rabbitmqctl list_connections failed: {}",
        String::from_utf8_lossy(&listed.stderr)
    );
    Ok(String::from_utf8_lossy(&listed.stdout)
        .lines()
        .filter(|line| line.contains(name))
        .filter_map(|line| line.split('\t').next())
        .map(str::to_owned)
        .collect())
}

/// Closes `connections` through `rabbitmqctl`, as the broker does at a restart.
fn close_connections(connections: &[String]) -> anyhow::Result<()> {
    for connection in connections {
        let status = Command::new("rabbitmqctl")
            .args(["-q", "close_connection", connection, "closed by the test"])
            .status()
            .context("cannot run rabbitmqctl")?;
        ensure!(status.success(), "rabbitmqctl close_connection failed");
    }
    Ok(())
}

/// Waits (at most two minutes) until every task has run and has its result.
async fn wait_for_every_result(
    scene: &Scene,
    handles: &[TaskHandle<u64>],
    worker: &mut WorkerProcess,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let ran: BTreeSet<u64> = scene.runs()?.into_iter().collect();
        if ran.len() == handles.len() {
            break;
        }
        if let Some(status) = worker.try_exit()? {
            bail!(
                "{} exited early ({status}):\n{}",
                worker.name,
                worker.stderr()
            );
        }
        ensure!(
            Instant::now() < deadline,
            "{} of {} tasks ran within 120 s:\n{}",
            ran.len(),
            handles.len(),
            worker.stderr()
        );
        tokio::time::sleep(POLL).await;
    }
    // A result is stored after its run is logged: wait for each.
    for (seq, handle) in (0..).zip(handles) {
        let result = handle
            .wait(Duration::from_secs(30))
            .await
            .with_context(|| format!("result of task {seq}"))?;
        ensure!(result == seq, "task {seq}: result {result}");
    }
    Ok(())
}

/// Stops a worker with SIGTERM and returns its report.
async fn stop(
    worker: &mut WorkerProcess,
) -> anyhow::Result<std::collections::BTreeMap<String, u64>> {
    worker.signal("TERM")?;
    let status = worker.wait_exit(Duration::from_secs(30)).await?;
    ensure!(
        status.success(),
        "{} should exit 0 on SIGTERM, got {status}:\n{}",
        worker.name,
        worker.stderr()
    );
    worker.report().await
}
