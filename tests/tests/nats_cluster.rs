//! OmniQ across machines on NATS: a 3-node JetStream cluster of the test's own (local
//! ports, a store directory each), every stream and bucket at three replicas. A worker
//! process runs 5,000 tasks; one node is killed (SIGKILL) once about 30% have run and stays
//! down; the worker carries on against the two nodes left (the streams keep their quorum,
//! their leaders move), every task ends Succeeded with its result, none is lost, and only
//! tasks whose run was in flight at the kill may run twice.
//!
//! Skipped loudly when `nats-server` is not installed, or failed under
//! `OMNIQ_TEST_REQUIRE_SERVICES=1`.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use omniq_async::TaskState;
use omniq_e2e::QUEUE;
use support::restart::ServerProcess;
use support::{POLL, Scene, Target, nats_jetstream_ready, run_counts, unavailable};

const TEST: &str = "a_three_node_cluster_loses_no_task_when_a_node_is_killed";
const TASKS: u64 = 5_000;
/// About 30% of the tasks.
const RUNS_BEFORE_KILL: usize = 1_500;
const CONCURRENCY: usize = 16;

/// A free port on loopback.
fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// One node of the cluster: its client port (the [`ServerProcess`]'s) and its route port.
struct Node {
    server: ServerProcess,
    route_port: u16,
}

impl Node {
    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.server.port)
    }
}

/// Starts node `index` of `nodes`, routed to all of them; ready once it accepts
/// connections.
async fn start(nodes: &mut [Node], index: usize) -> anyhow::Result<()> {
    let routes: Vec<String> = nodes
        .iter()
        .map(|n| format!("nats-route://127.0.0.1:{}", n.route_port))
        .collect();
    let node = &mut nodes[index];
    let config = format!(
        "server_name: omniq-node-{index}\n\
         listen: 127.0.0.1:{port}\n\
         jetstream {{ store_dir: \"{dir}\" }}\n\
         cluster {{\n  name: omniq-test\n  listen: 127.0.0.1:{route}\n  routes: [{routes}]\n}}\n",
        port = node.server.port,
        dir = node.server.dir.path().join("jetstream").display(),
        route = node.route_port,
        routes = routes.join(", "),
    );
    let path = node.server.dir.path().join("node.conf");
    std::fs::write(&path, config)?;
    let mut command = Command::new("nats-server");
    command.arg("-c").arg(&path);
    let address = format!("127.0.0.1:{}", node.server.port);
    node.server
        .start(command, move || {
            std::net::TcpStream::connect(&address).map(drop)
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_node_cluster_loses_no_task_when_a_node_is_killed() -> anyhow::Result<()> {
    if let Err(err) = Command::new("nats-server").arg("--version").output() {
        let why = format!("cannot run it: {err}");
        return unavailable(TEST, "nats-server", why).map(|_: Option<()>| ());
    }
    let started = Instant::now();
    // Killed on drop, whatever the outcome, their directories with them.
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(Node {
            server: ServerProcess::new("nats-server", "KILL")?,
            route_port: free_port()?,
        });
    }
    // A JetStream cluster elects its meta leader once a quorum is up: start all three
    // (each ready once it accepts connections), then wait for JetStream on each.
    for index in 0..3 {
        start(&mut nodes, index).await?;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for node in &nodes {
        let url = node.url();
        loop {
            let probe = url.clone();
            match tokio::task::spawn_blocking(move || nats_jetstream_ready(&probe)).await? {
                Ok(()) => break,
                Err(err) => ensure!(
                    Instant::now() < deadline,
                    "the cluster's JetStream is not up within 60 s ({err}):\n{}",
                    node.server.log()
                ),
            }
            tokio::time::sleep(POLL).await;
        }
    }
    let urls: Vec<String> = nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.server.port))
        .collect();
    let mut target =
        Target::nats_of_its_own(&format!("nats://{}", urls.join(",")), "omniq-e2e-cluster");
    target.url.push_str("&replicas=3");
    let scene = Scene::with_target(tempfile::tempdir()?, target);
    let t = Instant::now();
    let omniq = scene
        .open()
        .await
        .context("open the stores on the cluster")?;
    eprintln!("opened in {:?}", t.elapsed());
    let handles = omniq_e2e::enqueue_records(&omniq, 0..TASKS)
        .await
        .context("enqueue")?;
    eprintln!("enqueued in {:?}", t.elapsed());
    ensure!(handles.len() as u64 == TASKS);

    let mut worker = scene.spawn_worker(
        "worker",
        &[
            "--concurrency",
            &CONCURRENCY.to_string(),
            "--task-ms",
            "1",
            "--lease-ms",
            "10000",
            "--poll-ms",
            "50",
            "--grace-ms",
            "5000",
        ],
        &[],
    )?;
    worker
        .wait_ready(Duration::from_secs(30))
        .await
        .context("the worker starts")?;
    scene
        .wait_for_runs(RUNS_BEFORE_KILL, Duration::from_secs(120), &mut worker)
        .await
        .context("runs before the kill")?;
    eprintln!("{RUNS_BEFORE_KILL} runs in {:?}", started.elapsed());
    let runs_at_kill = scene.runs()?.len();
    nodes[0].server.stop("KILL").await?;
    let killed = Instant::now();

    // The worker carries on on the two nodes left. The test's own connection moves too;
    // until it has, a poll may fail, and the next one is tried.
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut last;
    loop {
        match omniq.queue_stats(QUEUE).await {
            Ok(stats) if stats.count(TaskState::Succeeded) == TASKS => break,
            Ok(stats) => last = format!("{:?}", stats.counts),
            Err(err) => last = format!("error: {err}"),
        }
        if let Some(status) = worker.try_exit()? {
            anyhow::bail!(
                "the worker exited ({status}) after the kill; last stats {last}:\n{}",
                worker.stderr()
            );
        }
        ensure!(
            Instant::now() < deadline,
            "the worker did not finish within 180 s of the kill; last stats {last}; {} runs \
             logged\nworker log:\n{}",
            scene.runs()?.len(),
            worker.stderr()
        );
        tokio::time::sleep(POLL).await;
    }
    let finished_after_kill = killed.elapsed();
    if std::env::var_os("OMNIQ_TEST_SHOW_WORKER_LOG").is_some() {
        eprintln!("worker log:\n{}", worker.stderr());
        for node in &nodes[1..] {
            eprintln!("node log {}:\n{}", node.url(), node.server.log());
        }
    }
    worker.signal("TERM")?;
    // The shutdown's bound: the grace, then a store call or two that a cluster electing new
    // leaders may keep waiting (each bounded by the store timeout, 10 s).
    let status = worker
        .wait_exit(Duration::from_secs(60))
        .await
        .context("the worker exits")?;
    ensure!(
        status.success(),
        "the worker should exit 0 on SIGTERM, got {status}"
    );

    let stats = omniq.queue_stats(QUEUE).await.context("final counts")?;
    ensure!(
        stats.counts == vec![(TaskState::Succeeded, TASKS)],
        "expected only {TASKS} Succeeded, got {:?}",
        stats.counts
    );
    for (seq, handle) in (0..TASKS).zip(&handles) {
        let result = handle
            .try_result()
            .await
            .with_context(|| format!("result of task {seq}"))?;
        ensure!(
            result == Some(seq),
            "task {seq}: expected result {seq}, got {result:?}"
        );
    }
    let runs = scene.runs()?;
    let counts = run_counts(&runs);
    ensure!(
        counts.len() as u64 == TASKS,
        "{} distinct tasks ran",
        counts.len()
    );
    let twice: Vec<u64> = counts
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(s, _)| *s)
        .collect();
    // A run in flight at the kill may have had its completion cut off with the node and
    // its lease recovered: at most the worker's concurrency.
    ensure!(
        twice.len() <= CONCURRENCY,
        "{} tasks ran twice, more than the {CONCURRENCY} in flight: {twice:?}",
        twice.len()
    );
    println!(
        "nats cluster: {runs_at_kill} runs logged at the kill of a node; all {TASKS} \
         Succeeded {finished_after_kill:?} later on the two nodes left; {} ran twice \
         {twice:?}; {:?} in all",
        twice.len(),
        started.elapsed()
    );
    Ok(())
}
