//! A worker process carries on through a restart of its Redis server: the test starts a
//! `redis-server` of its own (append-only file, fsync on every write), stops it once about
//! 30% of the tasks have run, restarts it a second later on the same directory and port
//! (the append-only file replays), and the worker finishes the run. Every task ends
//! Succeeded with its result, none is lost, and only tasks claimed a second time (their
//! first completion lost in the outage, their lease recovered) run twice.
//!
//! Skipped loudly when `redis-server` is not installed, or failed under
//! `OMNIQ_TEST_REQUIRE_SERVICES=1`.

mod support;

use std::collections::BTreeSet;
use std::fs::OpenOptions;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use omniq_async::{EventQuery, TaskErrorKind, TaskEventKind, TaskState};
use omniq_e2e::QUEUE;
use support::{POLL, Scene, Target, redis_ping, run_counts, unavailable};

const TEST: &str = "a_worker_carries_on_through_a_redis_restart";
const TASKS: u64 = 2_000;
/// About 30% of the tasks.
const RUNS_BEFORE_OUTAGE: usize = 600;
/// The worker's concurrency.
const CONCURRENCY: usize = 16;
/// How long the server stays down: an intended duration, not a wait for something.
const OUTAGE: Duration = Duration::from_secs(1);

/// A `redis-server` child process of the test's own, persisting to an append-only file in
/// a directory of its own; killed on drop.
#[derive(Debug)]
struct RedisServer {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    starts: u32,
}

impl RedisServer {
    /// A server (not started yet) on a free port.
    fn new() -> anyhow::Result<Self> {
        // Bind port 0 for a free port, and let it go for the server to take.
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        drop(listener);
        Ok(Self {
            port,
            dir: tempfile::tempdir()?,
            child: None,
            starts: 0,
        })
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis-server.log")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Starts the server (replaying its append-only file, if any) and waits until it
    /// answers PING.
    async fn start(&mut self) -> anyhow::Result<()> {
        ensure!(self.child.is_none(), "the server is already running");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .args(["--save", "", "--daemonize", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .context("cannot start redis-server")?;
        self.child = Some(child);
        self.starts += 1;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let url = self.url();
            let ping = tokio::task::spawn_blocking(move || redis_ping(&url)).await?;
            match ping {
                Ok(()) => return Ok(()),
                Err(err) => {
                    if let Some(status) = self.try_exit()? {
                        bail!(
                            "redis-server exited ({status}) on start {}:\n{}",
                            self.starts,
                            self.log()
                        );
                    }
                    ensure!(
                        Instant::now() < deadline,
                        "redis-server does not answer after 30 s ({err}):\n{}",
                        self.log()
                    );
                }
            }
            tokio::time::sleep(POLL).await;
        }
    }

    fn try_exit(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        let Some(child) = &mut self.child else {
            return Ok(None);
        };
        let status = child.try_wait()?;
        if status.is_some() {
            self.child = None;
        }
        Ok(status)
    }

    /// SIGTERM, a clean shutdown (the append-only file is fsynced), and waits for the exit.
    async fn stop(&mut self) -> anyhow::Result<ExitStatus> {
        let pid = self
            .child
            .as_ref()
            .context("the server is not running")?
            .id();
        let sent = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .context("cannot run kill")?;
        ensure!(sent.success(), "kill -TERM {pid} failed");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.try_exit()? {
                return Ok(status);
            }
            ensure!(
                Instant::now() < deadline,
                "redis-server did not exit within 30 s of SIGTERM:\n{}",
                self.log()
            );
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// How many lines of `log` contain `needle`.
fn lines_with(log: &str, needle: &str) -> usize {
    log.lines().filter(|line| line.contains(needle)).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_carries_on_through_a_redis_restart() -> anyhow::Result<()> {
    let started = Instant::now();
    if let Err(err) = Command::new("redis-server").arg("--version").output() {
        let why = format!("cannot run it: {err}");
        return unavailable(TEST, "redis-server", why).map(|_: Option<()>| ());
    }
    let mut server = RedisServer::new()?;
    server.start().await?;
    // A server of the test's own: its keys go with it, no clean-up needed.
    let scene = Scene::with_target(
        tempfile::tempdir()?,
        Target::redis(&server.url(), "omniq-e2e-restart", false),
    );
    let omniq = scene.open().await?;
    let handles = omniq_e2e::enqueue_records(&omniq, 0..TASKS).await?;
    ensure!(handles.len() as u64 == TASKS);

    let mut worker = scene.spawn_worker(
        "worker",
        &[
            "--concurrency",
            &CONCURRENCY.to_string(),
            "--task-ms",
            "2",
            "--lease-ms",
            "10000",
            "--poll-ms",
            "50",
        ],
        &[],
    )?;
    worker.wait_ready(Duration::from_secs(30)).await?;
    let runs_at_signal = scene
        .wait_for_runs(RUNS_BEFORE_OUTAGE, Duration::from_secs(60), &mut worker)
        .await?;

    // The outage: a clean shutdown, a second down, and the same server again.
    let status = server.stop().await?;
    ensure!(
        status.success(),
        "redis-server should exit 0 on SIGTERM, got {status}"
    );
    let runs_at_stop = scene.runs()?.len();
    let down = Instant::now();
    tokio::time::sleep(OUTAGE).await;
    if let Some(status) = worker.try_exit()? {
        bail!(
            "the worker exited ({status}) while Redis was down:\n{}",
            worker.stderr()
        );
    }
    let runs_in_outage = scene.runs()?.len() - runs_at_stop;
    server.start().await?;
    let outage = down.elapsed();

    // The worker carries on. The test's own connection reconnects too; until it does,
    // a poll may fail, and the next one is tried.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last: String;
    loop {
        match omniq.queue_stats(QUEUE).await {
            Ok(stats) if stats.count(TaskState::Succeeded) == TASKS => break,
            Ok(stats) => last = format!("{:?}", stats.counts),
            Err(err) => last = format!("error: {err}"),
        }
        if let Some(status) = worker.try_exit()? {
            bail!(
                "the worker exited ({status}) after the restart; last stats {last}:\n{}",
                worker.stderr()
            );
        }
        ensure!(
            Instant::now() < deadline,
            "the worker did not finish within 120 s of the restart; last stats {last}; \
             {} runs logged\nworker log:\n{}",
            scene.runs()?.len(),
            worker.stderr()
        );
        tokio::time::sleep(POLL).await;
    }
    let finished_after_restart = down.elapsed() - outage;
    worker.signal("TERM")?;
    let status = worker.wait_exit(Duration::from_secs(30)).await?;
    ensure!(
        status.success(),
        "the worker should exit 0 on SIGTERM, got {status}:\n{}",
        worker.stderr()
    );
    let report = worker.report().await?;
    let count = |key: &str| report.get(key).copied().unwrap_or(u64::MAX);
    for key in ["retried", "dead_lettered", "released"] {
        ensure!(count(key) == 0, "worker report {key}: {report:?}");
    }

    // The stores: every task Succeeded, with its own result; a task claimed twice has its
    // first attempt on record as lost with the lease.
    let stats = omniq.queue_stats(QUEUE).await?;
    ensure!(
        stats.counts == vec![(TaskState::Succeeded, TASKS)],
        "expected only {TASKS} Succeeded, got {:?}",
        stats.counts
    );
    let mut reclaimed = BTreeSet::new();
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
        if record.attempts > 1 {
            // Claimed again only because an earlier claim's lease expired: a claim the
            // server applied but whose reply the stop lost (the worker never ran it), or a
            // completion that never reached the store.
            ensure!(
                record.errors.len() == record.attempts as usize - 1
                    && record
                        .errors
                        .iter()
                        .all(|e| e.error.kind == TaskErrorKind::LeaseLost),
                "task {seq} was claimed {} times, with errors {:?}",
                record.attempts,
                record.errors
            );
            reclaimed.insert(seq);
        }
    }
    // One claim at most is under way when the server stops (a worker claims in one round
    // trip, one at a time), and it takes at most `concurrency` tasks.
    ensure!(
        reclaimed.len() <= CONCURRENCY,
        "{} tasks were claimed twice, more than one claim of {CONCURRENCY}: {reclaimed:?}",
        reclaimed.len()
    );

    // The runs log: every task ran; a task ran twice only if it was claimed twice.
    let runs = scene.runs()?;
    let counts = run_counts(&runs);
    let missing: Vec<_> = (0..TASKS).filter(|s| !counts.contains_key(s)).collect();
    ensure!(missing.is_empty(), "tasks never run: {missing:?}");
    ensure!(
        counts.keys().all(|&seq| seq < TASKS),
        "the runs log has unknown sequence numbers"
    );
    let duplicates: BTreeSet<u64> = counts
        .iter()
        .filter(|&(_, &n)| n > 1)
        .map(|(&seq, _)| seq)
        .collect();

    // A completion the server applied just before it stopped, whose reply the shutdown
    // lost, is sent again after the restart and refused (its lease token is gone with the
    // lease): the worker counts it as `lease_lost` and logs a LeaseLost event for a task
    // that succeeded on that very attempt. Told apart here from real losses (a second
    // claim) to be reported.
    let lease_lost_events = omniq
        .events()
        .query(EventQuery {
            kinds: vec![TaskEventKind::LeaseLost],
            limit: TASKS as usize,
            ..EventQuery::default()
        })
        .await?;
    let mut applied_but_refused = BTreeSet::new();
    for event in &lease_lost_events {
        let id = event.task_id.context("a LeaseLost event without a task")?;
        let record = omniq
            .task(id)
            .await?
            .with_context(|| format!("task {id} of a LeaseLost event"))?;
        if record.attempts == 1 {
            applied_but_refused.insert(id);
        }
    }

    let log = worker.stderr();
    println!(
        "redis restart: {runs_at_signal} runs logged at the SIGTERM to the server, \
         {runs_at_stop} at its exit, {runs_in_outage} more while it was down; from its \
         exit to answering again {outage:?} (down on purpose for {OUTAGE:?}); all {TASKS} \
         Succeeded {finished_after_restart:?} after the restart; {} tasks claimed twice, \
         {} ran twice {duplicates:?}; {} LeaseLost events, {} of them for tasks that \
         succeeded on their first and only claim (a completion applied but not acknowledged \
         before the stop, refused when retried); worker report {report:?}; worker log: {} \
         store-call retries, {} failed claims, {} failed lease renewals, {} completion \
         batches given up, {} result batches given up; {:?} in all",
        reclaimed.len(),
        duplicates.len(),
        lease_lost_events.len(),
        applied_but_refused.len(),
        lines_with(&log, "store call failed; retrying"),
        lines_with(&log, "cannot claim tasks"),
        lines_with(&log, "cannot renew leases"),
        lines_with(&log, "cannot complete tasks"),
        lines_with(&log, "cannot store results"),
        started.elapsed()
    );
    ensure!(
        duplicates.is_subset(&reclaimed),
        "tasks ran twice without being claimed twice: {:?}",
        duplicates.difference(&reclaimed).collect::<Vec<_>>()
    );
    omniq.close().await;
    drop(scene);
    // The server goes with `server` (killed on drop), its directory with it.
    Ok(())
}
