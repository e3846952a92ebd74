//! Brokers as the task queue (RabbitMQ, SQS), with results in a SQLite file: a worker
//! process killed by SIGKILL, and (on RabbitMQ) the broker closing a worker's connection
//! mid-run, or a RabbitMQ node of the test's own stopped and started again, lose no task; the only tasks run twice are those the lost worker held
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

    /// Smaller still: a FIFO queue is claimed one message per call.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqs_fifo() -> anyhow::Result<()> {
        support::run(
            Backend::SqsFifo,
            "sigkill_mid_run_loses_no_task_and_reruns_only_unacknowledged_ones::sqs_fifo",
            async |scene| sigkill_mid_run(scene, &Run::FIFO).await,
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

/// A RabbitMQ node of the test's own is stopped mid-run and started again on its data:
/// the worker reconnects once it is back, and nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_loses_no_task() -> anyhow::Result<()> {
    const TEST: &str = "a_broker_restart_loses_no_task";
    let Some(node) = RabbitNode::new(TEST)? else {
        return Ok(());
    };
    node.start().await?;
    let dir = tempfile::tempdir()?;
    let target = support::Target::amqp_of_its_own(
        &node.url(),
        "omniq-e2e-restart",
        &dir.path().join("results.db"),
    );
    let scene = Scene::with_target(dir, target);
    worker_carries_on_mid_run(&scene, async || {
        node.stop().await?;
        node.start().await
    })
    .await
    .with_context(|| format!("the node's log:\n{}", node.log()))
}

/// A RabbitMQ node of the test's own: a node name, AMQP and distribution ports, and a data
/// directory of its own (owned by the `rabbitmq` user, which `rabbitmq-server` runs as
/// when started by root), no plugins. Stopped on drop.
struct RabbitNode {
    name: String,
    port: u16,
    dist_port: u16,
    dir: tempfile::TempDir,
}

impl RabbitNode {
    /// A node not started yet; `Ok(None)` (said loudly) when this machine cannot start one:
    /// no `rabbitmq-server`, or the test is not root (only root or `rabbitmq` may run it).
    fn new(test: &str) -> anyhow::Result<Option<Self>> {
        if !std::path::Path::new("/usr/sbin/rabbitmq-server").exists() {
            return support::unavailable(test, "rabbitmq-server", "it is not installed");
        }
        let dir = tempfile::tempdir()?;
        let owned = Command::new("chown")
            .args(["rabbitmq:rabbitmq"])
            .arg(dir.path())
            .status()
            .context("cannot run chown")?;
        if !owned.success() {
            return support::unavailable(
                test,
                "a RabbitMQ node of its own",
                "its directory cannot be given to the rabbitmq user (the test is not root)",
            );
        }
        Ok(Some(Self {
            name: format!("omniq-e2e-{}@localhost", std::process::id()),
            port: free_port()?,
            dist_port: free_port()?,
            dir,
        }))
    }

    fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    fn pid_file(&self) -> std::path::PathBuf {
        self.dir.path().join("node.pid")
    }

    /// `rabbitmq-server` or `rabbitmqctl`, set to this node.
    fn command(&self, program: &str) -> Command {
        let dir = self.dir.path();
        let mut command = Command::new(program);
        command
            .env("RABBITMQ_NODENAME", &self.name)
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", dir.join("log"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("plugins"))
            .env("RABBITMQ_CONFIG_FILE", dir.join("rabbitmq"))
            .env("RABBITMQ_PID_FILE", self.pid_file());
        command
    }

    /// Runs `command` to its end on a blocking thread.
    async fn run(mut command: Command, what: &'static str) -> anyhow::Result<()> {
        let out = tokio::task::spawn_blocking(move || command.output())
            .await?
            .with_context(|| format!("cannot run {what}"))?;
        ensure!(
            out.status.success(),
            "{what} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }

    /// Starts the node and returns once it takes connections (a minute at most).
    async fn start(&self) -> anyhow::Result<()> {
        let mut start = self.command("rabbitmq-server");
        start.arg("-detached");
        Self::run(start, "rabbitmq-server -detached").await?;
        let mut wait = self.command("rabbitmqctl");
        wait.args(["-n", &self.name, "wait"])
            .arg(self.pid_file())
            .args(["--timeout", "60"]);
        Self::run(wait, "rabbitmqctl wait").await
    }

    /// Stops the node and returns once its process has exited.
    async fn stop(&self) -> anyhow::Result<()> {
        let mut stop = self.command("rabbitmqctl");
        stop.args(["-n", &self.name, "stop"]).arg(self.pid_file());
        Self::run(stop, "rabbitmqctl stop").await
    }

    /// What the node logged.
    fn log(&self) -> String {
        std::fs::read_dir(self.dir.path().join("log"))
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .filter_map(|entry| std::fs::read_to_string(entry.path()).ok())
            .collect()
    }
}

impl Drop for RabbitNode {
    fn drop(&mut self) {
        let _ = self
            .command("rabbitmqctl")
            .args(["-n", &self.name, "stop"])
            .arg(self.pid_file())
            .output();
    }
}

/// A port free now, for a server to take.
fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
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
    const FIFO: Run = Run {
        tasks: 120,
        kill_after: 30,
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

/// The broker closes the worker's connection mid-run (as at a failover, or a network
/// cut); the worker opens another and finishes the run.
async fn connection_closed_mid_run(scene: &Scene) -> anyhow::Result<()> {
    let prefix = scene
        .target
        .url
        .split_once("prefix=")
        .map(|(_, prefix)| prefix.to_owned())
        .context("the target has no prefix")?;
    worker_carries_on_mid_run(scene, async || {
        let connections = connections_named(&prefix)?;
        ensure!(
            !connections.is_empty(),
            "no connection of prefix {prefix} was found to close"
        );
        close_connections(&connections)
    })
    .await
}

/// A worker runs 2,000 tasks; once 200 have run, `disrupt` takes its connection away (the
/// broker closes it, or restarts), and the worker must finish the run: nothing lost, and
/// no more run twice than the deliveries the lost connection held.
async fn worker_carries_on_mid_run(
    scene: &Scene,
    disrupt: impl AsyncFnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let omniq = scene.open().await?;
    let handles = omniq_e2e::enqueue_records(&omniq, 0..TASKS).await?;
    // Slow tasks (at most 16 × 20 a second: the run takes six seconds or more), so that
    // the disruption lands mid-run however slowly `rabbitmqctl` starts.
    let args = worker_args(50, 2_000);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut worker = scene.spawn_worker("worker", &args, &[])?;
    worker.wait_ready(Duration::from_secs(30)).await?;
    scene
        .wait_for_runs(200, Duration::from_secs(60), &mut worker)
        .await?;
    disrupt().await?;
    let at_disruption: BTreeSet<u64> = scene.runs()?.into_iter().collect();
    ensure!(
        (at_disruption.len() as u64) < TASKS,
        "the worker ran every task before the disruption; the test proved nothing"
    );
    wait_for_every_result(scene, &handles, &mut worker).await?;
    let report = stop(&mut worker).await?;
    ensure!(report.get("dead_lettered") == Some(&0), "{report:?}");
    let counts = run_counts(&scene.runs()?);
    let twice = counts.values().filter(|n| **n > 1).count();
    // The disruption took the leases the connection held: the worker saw them lost.
    ensure!(
        report.get("lease_lost").is_some_and(|n| *n > 0),
        "the worker lost no lease in the disruption: {report:?}"
    );
    ensure!(
        counts.values().all(|n| *n <= 2),
        "a task ran more than twice: {counts:?}"
    );
    ensure!(
        twice <= BUDGET,
        "{twice} tasks ran twice, more than the {BUDGET} the lost connection could hold"
    );
    println!(
        "{} runs when the connection went, {twice} tasks ran twice; worker report {report:?}",
        at_disruption.len()
    );
    omniq.close().await;
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
