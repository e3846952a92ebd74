//! Shared pieces of OmniQ's process-level end-to-end tests.
//!
//! The `e2e-worker` binary runs [`Record`] tasks in a real child process; the tests in
//! `tests/tests/` enqueue them, kill or signal that process, and then check the stores and
//! the runs log. A run is recorded in the log as the line `<seq>\n`, appended with a single
//! `write()` on a file opened with `O_APPEND`, so the log survives a SIGKILL and counts
//! every run that got as far as returning, including runs whose completion never reached
//! the store.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, bail};
use omniq_async::{AsyncOmniQ, Settings, StoreKind, StoreUrl, Task, TaskContext, TaskError};
use serde::{Deserialize, Serialize};

pub mod otel;

/// Name of the queue every end-to-end task goes to.
pub const QUEUE: &str = "default";

/// Most tasks enqueued in one `enqueue_many` call.
pub const ENQUEUE_CHUNK: usize = 500;

/// The end-to-end task: sleeps the worker's task time, appends its sequence number to the
/// runs log, and returns the sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The task's sequence number, unique within a run of a test.
    pub seq: u64,
}

impl Task for Record {
    const NAME: &'static str = "e2e.record";
    type Output = u64;

    async fn run(self, _ctx: TaskContext) -> Result<u64, TaskError> {
        let recorder = RECORDER
            .get()
            .ok_or_else(|| TaskError::new("no recorder is installed in this process"))?;
        let started = unix_micros();
        tokio::time::sleep(recorder.task_time).await;
        recorder
            .record(self.seq)
            .map_err(|e| TaskError::new(format!("cannot append to the runs log: {e}")))?;
        recorder
            .record_span(self.seq, started, unix_micros())
            .map_err(|e| TaskError::new(format!("cannot append to the spans log: {e}")))?;
        Ok(self.seq)
    }
}

/// Fails its first attempt (a retry 100 ms later), then runs as [`Record`] does: the
/// end-to-end retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailOnce {
    /// The task's sequence number, unique within a run of a test.
    pub seq: u64,
}

impl Task for FailOnce {
    const NAME: &'static str = "e2e.fail_once";
    type Output = u64;

    async fn run(self, ctx: TaskContext) -> Result<u64, TaskError> {
        if ctx.attempt() == 1 {
            return Err(TaskError::retry_after(
                "the first attempt fails, as asked",
                Duration::from_millis(100),
            ));
        }
        Record { seq: self.seq }.run(ctx).await
    }
}

static RECORDER: OnceLock<Recorder> = OnceLock::new();

/// Where and how this process's [`Record`] tasks record their runs.
#[derive(Debug)]
pub struct Recorder {
    runs: File,
    spans: Option<File>,
    task_time: Duration,
}

/// Microseconds since the Unix epoch: one clock for every process of the machine.
fn unix_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_micros()).unwrap_or(u64::MAX)
        })
}

/// Appends `line` in one `write()` (whole or not at all on a file opened with `O_APPEND`).
fn append(mut file: &File, line: &str) -> std::io::Result<()> {
    let written = file.write(line.as_bytes())?;
    if written == line.len() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "short write: {written} of {} bytes",
            line.len()
        )))
    }
}

/// One run of a [`Record`] task: when it started and ended, in µs since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// The task's sequence number.
    pub seq: u64,
    /// When the handler started.
    pub start: u64,
    /// When it ended.
    pub end: u64,
}

/// Reads a spans log (`<seq> <start> <end>` lines).
///
/// # Errors
/// When the file cannot be read or holds a line of another shape.
pub fn read_spans(path: &Path) -> anyhow::Result<Vec<Span>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the spans log {}", path.display()))?;
    text.lines()
        .map(|line| {
            let numbers: Vec<u64> = line
                .split(' ')
                .map(str::parse)
                .collect::<Result<_, _>>()
                .with_context(|| format!("bad spans line `{line}`"))?;
            match numbers[..] {
                [seq, start, end] => Ok(Span { seq, start, end }),
                _ => bail!("bad spans line `{line}`"),
            }
        })
        .collect()
}

impl Recorder {
    /// Opens (creating it if needed) the runs log at `path` for appending.
    ///
    /// # Errors
    /// When the file cannot be opened.
    pub fn open(path: &Path, task_time: Duration) -> anyhow::Result<Self> {
        Ok(Self {
            runs: open_append(path)?,
            spans: None,
            task_time,
        })
    }

    /// Also logs each run's start and end to the spans log at `path` (see [`read_spans`]).
    ///
    /// # Errors
    /// When the file cannot be opened.
    pub fn with_spans(mut self, path: &Path) -> anyhow::Result<Self> {
        self.spans = Some(open_append(path)?);
        Ok(self)
    }

    /// Makes this the recorder of every [`Record`] task run in this process.
    ///
    /// # Errors
    /// When a recorder is already installed.
    pub fn install(self) -> anyhow::Result<()> {
        RECORDER
            .set(self)
            .map_err(|_| anyhow::anyhow!("a recorder is already installed"))
    }

    /// Appends `<seq>\n` in one `write()`: with `O_APPEND` the line lands whole or not at
    /// all, whatever happens to the process afterwards.
    fn record(&self, seq: u64) -> std::io::Result<()> {
        append(&self.runs, &format!("{seq}\n"))
    }

    fn record_span(&self, seq: u64, start: u64, end: u64) -> std::io::Result<()> {
        match &self.spans {
            Some(spans) => append(spans, &format!("{seq} {start} {end}\n")),
            None => Ok(()),
        }
    }
}

fn open_append(path: &Path) -> anyhow::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))
}

/// Settings with all four stores in the SQLite file `db`.
///
/// # Errors
/// When `db` has no parent directory or does not make a valid URL.
pub fn settings_for(db: &Path, mut settings: Settings) -> anyhow::Result<Settings> {
    let dir = db
        .parent()
        .with_context(|| format!("{} has no parent directory", db.display()))?;
    let url = StoreUrl::parse(&format!("sqlite://{}", db.display()))
        .with_context(|| format!("bad SQLite path {}", db.display()))?;
    settings.base_dir = dir.to_path_buf();
    for kind in StoreKind::ALL {
        *settings.store_url_mut(kind) = Some(url.clone());
    }
    Ok(settings)
}

/// Settings with all four stores on the store URL `url`: `sqlite://PATH`, or a server's URL
/// such as `redis://HOST:PORT/DB?prefix=NAME` (the facade takes the `prefix=` parameter out
/// and uses it as the Redis key prefix, so tests sharing a server do not see each other).
///
/// # Errors
/// When `url` is not a valid store URL.
pub fn settings_for_url(url: &str, mut settings: Settings) -> anyhow::Result<Settings> {
    // The error names what is wrong without echoing the URL, which may hold a password.
    let url = StoreUrl::parse(url).context("bad store URL")?;
    for kind in StoreKind::ALL {
        *settings.store_url_mut(kind) = Some(url.clone());
    }
    Ok(settings)
}

/// `settings` with the task queue on `tasks` and results, events and schedules on
/// `others`: a broker's layout (it holds tasks only).
///
/// # Errors
/// When a URL is not a store URL.
pub fn settings_for_urls(
    tasks: &str,
    others: &str,
    settings: Settings,
) -> anyhow::Result<Settings> {
    let mut settings = settings_for_url(others, settings)?;
    *settings.store_url_mut(StoreKind::TaskQueue) =
        Some(StoreUrl::parse(tasks).context("bad task queue URL")?);
    Ok(settings)
}

/// An OmniQ with the task queue on `tasks` and the other stores on `others`.
///
/// # Errors
/// When a URL is invalid or the stores cannot be opened.
pub async fn connect_urls(tasks: &str, others: &str) -> anyhow::Result<AsyncOmniQ> {
    let settings = settings_for_urls(tasks, others, Settings::default())?;
    Ok(AsyncOmniQ::from_settings(settings).await?)
}

/// An OmniQ with all four stores on the store URL `url` (see [`settings_for_url`]), with
/// default settings otherwise.
///
/// # Errors
/// When `url` is invalid or its stores cannot be opened.
pub async fn connect_url(url: &str) -> anyhow::Result<AsyncOmniQ> {
    let settings = settings_for_url(url, Settings::default())?;
    Ok(AsyncOmniQ::from_settings(settings).await?)
}

/// An OmniQ on the SQLite file `db`, with default settings otherwise.
///
/// # Errors
/// When the database cannot be opened.
pub async fn open(db: &Path) -> anyhow::Result<AsyncOmniQ> {
    let settings = settings_for(db, Settings::default())?;
    Ok(AsyncOmniQ::from_settings(settings).await?)
}

/// Enqueues one [`Record`] per sequence number, [`ENQUEUE_CHUNK`] per round trip, and
/// returns the task ids in the order of `seqs`.
///
/// # Errors
/// A store error.
pub async fn enqueue_records(
    omniq: &AsyncOmniQ,
    seqs: impl IntoIterator<Item = u64>,
) -> anyhow::Result<Vec<omniq_async::TaskHandle<u64>>> {
    let seqs: Vec<u64> = seqs.into_iter().collect();
    let mut handles = Vec::with_capacity(seqs.len());
    for chunk in seqs.chunks(ENQUEUE_CHUNK) {
        let batch = omniq
            .enqueue_many(chunk.iter().map(|&seq| Record { seq }))
            .await?;
        if batch.len() != chunk.len() {
            bail!(
                "enqueue_many returned {} handles for {} tasks",
                batch.len(),
                chunk.len()
            );
        }
        handles.extend(batch);
    }
    Ok(handles)
}
