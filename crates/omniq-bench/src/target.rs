//! The backend under test: settings for a URL, fresh per scenario where it can be.

use std::sync::Arc;
use std::time::Duration;

use omniq_async::{
    AsyncOmniQ, Settings, StoreKind, StoreUrl, TaskContext, TaskError, WorkerConfig,
};

use crate::probe::{Probe, epoch_micros};

/// The benchmark task's argument: when it was sent, padding for payload scenarios, and
/// whether its first attempt fails.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Job {
    /// Microseconds since the epoch at enqueue.
    pub sent: i64,
    /// Padding.
    pub body: String,
    /// The first attempt fails (retried at once).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fail_first: bool,
}

impl Job {
    /// A job sent now with `padding` bytes of body.
    pub fn now(padding: usize) -> Self {
        Self {
            sent: epoch_micros(),
            body: "x".repeat(padding),
            fail_first: false,
        }
    }
}

/// The registered name of the no-op task.
pub const TASK: &str = "bench.noop";

/// A backend to run scenarios on.
#[derive(Debug)]
pub struct Target {
    url: String,
    results_url: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

impl Target {
    /// The target for `--url`, with results, events and schedules on `--results-url`
    /// when given.
    pub fn new(url: &str, results_url: Option<&str>) -> Self {
        Self {
            url: url.to_owned(),
            results_url: results_url.map(str::to_owned),
            _dir: None,
        }
    }

    /// The backend's name for reports.
    pub fn backend(&self) -> String {
        match self.url.split_once(':') {
            Some((scheme, _)) => scheme.to_owned(),
            None => self.url.clone(),
        }
    }

    /// Whether several processes can share this backend.
    pub fn shared_across_processes(&self) -> bool {
        !self.url.starts_with("memory")
    }

    /// Whether the task queue can count its tasks (a broker cannot).
    pub fn counts_tasks(&self) -> bool {
        StoreUrl::parse(&self.url).map_or(true, |url| !url.backend().holds_tasks_only())
    }

    /// Settings for a fresh run: a new temporary file for `sqlite`, fresh in-process
    /// stores for `memory`, the given server otherwise (runs use queues of their own).
    pub fn settings(&mut self) -> anyhow::Result<Settings> {
        let url = match self.url.as_str() {
            "memory" | "memory://" => return Ok(Settings::memory()),
            "sqlite" => {
                let dir = tempfile::tempdir()?;
                let url = format!("sqlite://{}/bench.db", dir.path().display());
                self._dir = Some(dir);
                url
            }
            other => other.to_owned(),
        };
        self.settings_for(&url)
    }

    /// Settings on an explicit URL (worker processes reuse the parent's file).
    pub fn settings_for(&self, url: &str) -> anyhow::Result<Settings> {
        let mut settings = Settings::default();
        let tasks = StoreUrl::parse(url)?;
        let others = match &self.results_url {
            Some(results) => StoreUrl::parse(results)?,
            None => tasks.clone(),
        };
        *settings.store_url_mut(StoreKind::TaskQueue) = Some(tasks);
        for kind in [StoreKind::Results, StoreKind::Events, StoreKind::Schedules] {
            *settings.store_url_mut(kind) = Some(others.clone());
        }
        Ok(settings)
    }
}

/// The URL all four stores of `settings` use.
pub fn url_of(settings: &Settings) -> String {
    settings.store_url(StoreKind::TaskQueue).as_str().to_owned()
}

/// An OmniQ with the no-op task registered, reporting to `probe`.
pub async fn open(settings: Settings, probe: Arc<Probe>) -> anyhow::Result<AsyncOmniQ> {
    let omniq = AsyncOmniQ::from_settings(settings).await?;
    Ok(omniq.register_fn(TASK, move |job: Job, ctx: TaskContext| {
        let outcome = if job.fail_first && ctx.attempt() == 1 {
            Err(TaskError::retry_after("a planned failure", Duration::ZERO))
        } else {
            probe.started(job.sent);
            probe.finished();
            Ok(())
        };
        async move { outcome }
    }))
}

/// A worker configuration for `queues` (in strict order), with the defaults a user has.
pub fn worker_config<Q: AsRef<str>>(queues: &[Q], concurrency: usize) -> WorkerConfig {
    WorkerConfig::default()
        .queues(queues.iter().map(|queue| queue.as_ref().to_owned()))
        .concurrency(concurrency)
}
