//! Test-side helpers: start `e2e-worker` processes, signal them, read their output and the
//! runs log, and wait for conditions with deadlines.

#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use tokio::sync::mpsc;

/// How often files and processes written or run by another process are polled.
pub const POLL: Duration = Duration::from_millis(20);

/// The directory, database and runs log of one test.
#[derive(Debug)]
pub struct Scene {
    pub dir: tempfile::TempDir,
    pub db: PathBuf,
    pub runs: PathBuf,
}

impl Scene {
    pub fn new() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let db = dir.path().join("omniq.db");
        let runs = dir.path().join("runs.log");
        Ok(Self { dir, db, runs })
    }

    /// A command for `e2e-worker` on this scene's database, with any inherited `OMNIQ_*`
    /// variables removed so the host environment cannot change what the test runs.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_e2e-worker"));
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("OMNIQ_") {
                command.env_remove(key);
            }
        }
        command.arg("--db").arg(&self.db).args(args);
        command
    }

    /// Starts a worker process (`--mode work`) logging its runs to this scene's runs log.
    /// Its stderr goes to `<dir>/<name>.log`.
    pub fn spawn_worker(
        &self,
        name: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<WorkerProcess> {
        let mut command = self.command(&["--mode", "work"]);
        command.arg("--runs").arg(&self.runs).args(args);
        for (key, value) in env {
            command.env(key, value);
        }
        WorkerProcess::spawn(name, command, &self.dir.path().join(format!("{name}.log")))
    }

    /// Runs `e2e-worker --mode enqueue` for `tasks` tasks and waits for it to succeed.
    pub async fn enqueue_with_process(&self, tasks: u64) -> anyhow::Result<()> {
        let tasks = tasks.to_string();
        let command = self.command(&["--mode", "enqueue", "--tasks", &tasks]);
        let log = self.dir.path().join("enqueue.log");
        let mut process = WorkerProcess::spawn("enqueue", command, &log)?;
        let status = process.wait_exit(Duration::from_secs(30)).await?;
        ensure!(
            status.success(),
            "enqueue process failed ({status}):\n{}",
            process.stderr()
        );
        let expected = format!("enqueued={tasks}");
        ensure!(
            process.stdout_lines().contains(&expected),
            "enqueue process did not print `{expected}`: {:?}",
            process.stdout_lines()
        );
        Ok(())
    }

    /// The runs log as sequence numbers, in the order they were appended.
    pub fn runs(&self) -> anyhow::Result<Vec<u64>> {
        read_runs(&self.runs)
    }

    /// Waits until the runs log has at least `count` lines.
    pub async fn wait_for_runs(
        &self,
        count: usize,
        timeout: Duration,
        alive: &mut WorkerProcess,
    ) -> anyhow::Result<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            let seen = self.runs()?.len();
            if seen >= count {
                return Ok(seen);
            }
            if let Some(status) = alive.try_exit()? {
                bail!(
                    "{} exited ({status}) with {seen} runs logged, waiting for {count}:\n{}",
                    alive.name,
                    alive.stderr()
                );
            }
            ensure!(
                Instant::now() < deadline,
                "only {seen} runs logged after {timeout:?}, waiting for {count}"
            );
            tokio::time::sleep(POLL).await;
        }
    }
}

/// Reads a runs log: one sequence number per line. A missing file is an empty log.
pub fn read_runs(path: &Path) -> anyhow::Result<Vec<u64>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    ensure!(
        text.is_empty() || text.ends_with('\n'),
        "the runs log ends in a partial line"
    );
    text.lines()
        .map(|line| {
            line.parse()
                .with_context(|| format!("bad line in the runs log: {line:?}"))
        })
        .collect()
}

/// How many times each sequence number was run.
pub fn run_counts(runs: &[u64]) -> BTreeMap<u64, usize> {
    let mut counts = BTreeMap::new();
    for &seq in runs {
        *counts.entry(seq).or_insert(0) += 1;
    }
    counts
}

/// A running `e2e-worker` process; killed (SIGKILL) on drop if still running, so a failed
/// test leaves no process behind.
#[derive(Debug)]
pub struct WorkerProcess {
    pub name: String,
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
    stderr_path: PathBuf,
    status: Option<ExitStatus>,
}

impl WorkerProcess {
    fn spawn(name: &str, mut command: Command, stderr_path: &Path) -> anyhow::Result<Self> {
        let stderr = File::create(stderr_path)?;
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        let stdout = child.stdout.take().context("no stdout pipe")?;
        let (tx, lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Self {
            name: name.to_owned(),
            child,
            lines,
            seen: Vec::new(),
            stderr_path: stderr_path.to_path_buf(),
            status: None,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the `ready` line.
    pub async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(line)) => {
                    let ready = line.starts_with("ready");
                    self.seen.push(line);
                    if ready {
                        return Ok(());
                    }
                }
                Ok(None) => bail!(
                    "{} closed its stdout before `ready`:\n{}",
                    self.name,
                    self.stderr()
                ),
                Err(_) => bail!("{} not ready after {timeout:?}", self.name),
            }
        }
    }

    /// Sends a signal by name (`TERM`, `INT`, ...) with `kill(1)`.
    pub fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .context("cannot run kill")?;
        ensure!(status.success(), "kill -{signal} {} failed", self.pid());
        Ok(())
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self) -> anyhow::Result<ExitStatus> {
        self.child.kill()?;
        let status = self.child.wait()?;
        self.status = Some(status);
        Ok(status)
    }

    /// The exit status if the process has exited.
    pub fn try_exit(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = self.child.try_wait()?;
        }
        Ok(self.status)
    }

    /// Waits up to `timeout` for the process to exit (polling), killing it on timeout.
    pub async fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                let _ = self.kill();
                bail!(
                    "{} did not exit within {timeout:?}; killed it:\n{}",
                    self.name,
                    self.stderr()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Every stdout line so far (complete once the process has exited and its pipe closed).
    pub fn stdout_lines(&mut self) -> &[String] {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
        &self.seen
    }

    /// Waits for stdout to close and parses the `report key=value ...` line.
    pub async fn report(&mut self) -> anyhow::Result<BTreeMap<String, u64>> {
        let closed = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(line) = self.lines.recv().await {
                self.seen.push(line);
            }
        })
        .await;
        ensure!(closed.is_ok(), "{} kept its stdout open", self.name);
        let line = self
            .seen
            .iter()
            .find_map(|l| l.strip_prefix("report "))
            .with_context(|| format!("{} printed no report: {:?}", self.name, self.seen))?;
        line.split_whitespace()
            .map(|pair| {
                let (key, value) = pair.split_once('=').context("bad report pair")?;
                Ok((key.to_owned(), value.parse()?))
            })
            .collect()
    }

    /// What the process wrote to stderr (its log).
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
