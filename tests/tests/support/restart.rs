//! A worker process carrying on through a restart of its store's server, shared by
//! `redis_restart.rs` and `postgres_restart.rs`.
//!
//! A test starts a server of its own (a [`ServerProcess`] wrapped in a
//! [`RestartableServer`]: how to start it, how to stop it cleanly, its URL) and hands it to
//! [`a_worker_carries_on_through_a_restart`]: 2,000 tasks are enqueued, a worker process
//! runs them, the server is stopped once about 30% have run, left down for a second and
//! started again on the same data and port, and the worker must finish the run. Every task
//! ends Succeeded with its result, none is lost, and only tasks claimed a second time
//! (their first claim's or completion's reply lost in the outage, their lease recovered)
//! run twice.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use omniq_async::{TaskErrorKind, TaskEventKind, TaskState};
use omniq_e2e::QUEUE;

use super::{POLL, Scene, Target, run_counts};

const TASKS: u64 = 2_000;
/// About 30% of the tasks.
const RUNS_BEFORE_OUTAGE: usize = 600;
/// The worker's concurrency.
const CONCURRENCY: usize = 16;
/// How long the server stays down: an intended duration, not a wait for something.
const OUTAGE: Duration = Duration::from_secs(1);
/// The longest a server may take to start answering, or to exit once told to.
const SERVER_DEADLINE: Duration = Duration::from_secs(30);

/// A server of the test's own that can be stopped and started again on the same data and
/// port.
pub trait RestartableServer {
    /// The server's name in messages: `Redis`, `PostgreSQL`.
    fn name(&self) -> &'static str;
    /// Stores on this server; it is the test's own, so they need no clean-up.
    fn target(&self) -> Target;
    /// Starts the server on its data and port, and returns once it answers.
    async fn start(&mut self) -> anyhow::Result<()>;
    /// Shuts the server down cleanly (everything acknowledged is on disk) and returns its
    /// exit status once it has exited.
    async fn stop(&mut self) -> anyhow::Result<ExitStatus>;
    /// What the server wrote to its log so far.
    fn log(&self) -> String;
}

/// A server child process of the test's own: a free port, a directory of its own for its
/// data and log, and the child while it runs. Stopped on drop with `drop_signal` (then
/// SIGKILL if it lingers), so a failed test leaves no server behind.
#[derive(Debug)]
pub struct ServerProcess {
    pub name: &'static str,
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
    starts: u32,
    drop_signal: &'static str,
}

impl ServerProcess {
    /// A server called `name` (not started yet) on a free port; stopped on drop with
    /// `drop_signal` (a name for `kill(1)`, such as `QUIT`).
    pub fn new(name: &'static str, drop_signal: &'static str) -> anyhow::Result<Self> {
        // Bind port 0 for a free port, and let it go for the server to take.
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        drop(listener);
        Ok(Self {
            name,
            port,
            dir: tempfile::tempdir()?,
            child: None,
            starts: 0,
            drop_signal,
        })
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// The server's log (its stdout and stderr, of every start).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The log, opened for appending, for a child's stdout or stderr.
    pub fn log_file(&self) -> anyhow::Result<File> {
        Ok(OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?)
    }

    /// Starts `command` (output to the log) and waits until `ready` succeeds, polling on a
    /// blocking thread; fails if the server exits first or does not answer in time.
    pub async fn start<F, E>(&mut self, mut command: Command, ready: F) -> anyhow::Result<()>
    where
        F: Fn() -> Result<(), E> + Clone + Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        ensure!(self.child.is_none(), "{} is already running", self.name);
        let log = self.log_file()?;
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("cannot start {}", self.name))?;
        self.child = Some(child);
        self.starts += 1;
        let deadline = Instant::now() + SERVER_DEADLINE;
        loop {
            let ready = ready.clone();
            match tokio::task::spawn_blocking(ready).await? {
                Ok(()) => return Ok(()),
                Err(err) => {
                    if let Some(status) = self.try_exit()? {
                        bail!(
                            "{} exited ({status}) on start {}:\n{}",
                            self.name,
                            self.starts,
                            self.log()
                        );
                    }
                    ensure!(
                        Instant::now() < deadline,
                        "{} does not answer after {SERVER_DEADLINE:?} ({err}):\n{}",
                        self.name,
                        self.log()
                    );
                }
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The exit status, if the server has exited (it is then no longer running).
    pub fn try_exit(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        let Some(child) = &mut self.child else {
            return Ok(None);
        };
        let status = child.try_wait()?;
        if status.is_some() {
            self.child = None;
        }
        Ok(status)
    }

    /// Sends `signal` (a name for `kill(1)`) and waits for the server to exit.
    pub async fn stop(&mut self, signal: &str) -> anyhow::Result<ExitStatus> {
        let pid = self
            .child
            .as_ref()
            .with_context(|| format!("{} is not running", self.name))?
            .id();
        signal_pid(pid, signal)?;
        let deadline = Instant::now() + SERVER_DEADLINE;
        loop {
            if let Some(status) = self.try_exit()? {
                return Ok(status);
            }
            ensure!(
                Instant::now() < deadline,
                "{} did not exit within {SERVER_DEADLINE:?} of SIG{signal}:\n{}",
                self.name,
                self.log()
            );
            tokio::time::sleep(POLL).await;
        }
    }
}

/// `kill -<signal> <pid>`.
fn signal_pid(pid: u32, signal: &str) -> anyhow::Result<()> {
    let sent = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .context("cannot run kill")?;
    ensure!(sent.success(), "kill -{signal} {pid} failed");
    Ok(())
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let Some(child) = &mut self.child else {
            return;
        };
        if signal_pid(child.id(), self.drop_signal).is_ok() {
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if !matches!(child.try_wait(), Ok(None)) {
                    return;
                }
                std::thread::sleep(POLL);
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// How many lines of `log` contain `needle`.
fn lines_with(log: &str, needle: &str) -> usize {
    log.lines().filter(|line| line.contains(needle)).count()
}

/// The scenario: on `server` (started), a worker runs 2,000 tasks through a stop and a
/// start of the server, and the run ends with every task Succeeded exactly once in the
/// stores and none lost. Prints what happened (`label` first).
pub async fn a_worker_carries_on_through_a_restart(
    label: &str,
    server: &mut impl RestartableServer,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let name = server.name();
    let scene = Scene::with_target(tempfile::tempdir()?, server.target());
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
        "{name} should exit 0 on a clean shutdown, got {status}:\n{}",
        server.log()
    );
    let runs_at_stop = scene.runs()?.len();
    let down = Instant::now();
    tokio::time::sleep(OUTAGE).await;
    if let Some(status) = worker.try_exit()? {
        bail!(
            "the worker exited ({status}) while {name} was down:\n{}",
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
    // trip or transaction, one at a time), and it takes at most `concurrency` tasks.
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
    let lease_lost_events = super::all_events(&omniq, TaskEventKind::LeaseLost).await?;
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
        "{label}: {runs_at_signal} runs logged when the server was told to stop, \
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
    Ok(())
}
