//! `e2e-worker`: the worker process OmniQ's end-to-end tests start, kill and signal.
//!
//! ```text
//! e2e-worker (--db PATH | --url URL [--results-url URL]) --mode work --runs PATH
//!            [--concurrency C] [--prefetch P]
//!            [--task-ms MS] [--lease-ms MS] [--poll-ms MS] [--grace-ms MS]
//!            [--spans PATH] [--otel-spans PATH] [--limit-each-key N] [--rate-each-key N]
//! e2e-worker (--db PATH | --url URL) --mode enqueue --tasks N [--first-seq S]
//! ```
//!
//! Settings start from the `OMNIQ_*` environment (so `OMNIQ_SHUTDOWN_GRACE=10s` works);
//! flags win over it. Every store is the SQLite file `--db`, or every store is on the
//! store URL `--url` (`sqlite://PATH`, `redis://HOST:PORT/DB?prefix=NAME`, ...: any
//! backend compiled into this binary; `prefix=` isolates one test's keys on a shared
//! server). With `--results-url`, results, events and schedules are there instead (a
//! broker as `--url` holds tasks only).
//!
//! `work` registers [`Record`] and [`FailOnce`], starts a worker, prints `ready worker=<id>` once the worker
//! runs and the SIGINT/SIGTERM handlers are installed, runs until one of those signals
//! (`run_until_signal`, a graceful shutdown), then prints
//! `report succeeded=… retried=… dead_lettered=… released=… lease_lost=…` and exits 0.
//!
//! `--spans PATH` also logs each run's start and end (`omniq_e2e::read_spans`);
//! `--otel-spans PATH` exports the process's OpenTelemetry spans to that file, a JSON line
//! each (`omniq_e2e::otel::read_spans`);
//! `--limit-each-key N` lets at most N tasks of one limit key run at once across the
//! workers sharing the store; `--rate-each-key N` lets at most N of one key start per
//! second, in bursts of up to 2.
//!
//! `enqueue` enqueues `Record { seq }` for `seq` in `first-seq .. first-seq + N`, in
//! chunks of 500, prints `enqueued=N` and exits 0.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use omniq_async::{AsyncOmniQ, Limit, Settings, WorkerReport};
use omniq_e2e::{FailOnce, Record, Recorder};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Work,
    Enqueue,
}

/// Where the stores are.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Stores {
    /// All four in this SQLite file.
    Db(PathBuf),
    /// All four on this store URL.
    Url(String),
}

#[derive(Debug)]
struct Args {
    stores: Stores,
    results_url: Option<String>,
    mode: Mode,
    runs: Option<PathBuf>,
    tasks: u64,
    first_seq: u64,
    concurrency: Option<usize>,
    prefetch: Option<usize>,
    task_ms: u64,
    lease_ms: Option<u64>,
    poll_ms: Option<u64>,
    grace_ms: Option<u64>,
    spans: Option<PathBuf>,
    otel_spans: Option<PathBuf>,
    limit_each_key: Option<u32>,
    rate_each_key: Option<u32>,
}

fn parse_args(mut raw: impl Iterator<Item = String>) -> anyhow::Result<Args> {
    let mut stores = None;
    let mut mode = None;
    let mut args = Args {
        stores: Stores::Db(PathBuf::new()),
        results_url: None,
        mode: Mode::Work,
        runs: None,
        tasks: 0,
        first_seq: 0,
        concurrency: None,
        prefetch: None,
        task_ms: 0,
        lease_ms: None,
        poll_ms: None,
        grace_ms: None,
        spans: None,
        otel_spans: None,
        limit_each_key: None,
        rate_each_key: None,
    };
    while let Some(flag) = raw.next() {
        let (flag, inline) = match flag.split_once('=') {
            Some((flag, value)) => (flag.to_owned(), Some(value.to_owned())),
            None => (flag, None),
        };
        let mut value = || -> anyhow::Result<String> {
            match inline.clone() {
                Some(value) => Ok(value),
                None => raw.next().with_context(|| format!("{flag} needs a value")),
            }
        };
        let number = |text: String| -> anyhow::Result<u64> {
            text.parse()
                .with_context(|| format!("{flag}: `{text}` is not a number"))
        };
        match flag.as_str() {
            "--db" | "--url" => {
                let given = if flag == "--db" {
                    Stores::Db(PathBuf::from(value()?))
                } else {
                    Stores::Url(value()?)
                };
                if stores.replace(given).is_some() {
                    bail!("give one of --db PATH and --url URL, once");
                }
            }
            "--mode" => {
                mode = Some(match value()?.as_str() {
                    "work" => Mode::Work,
                    "enqueue" => Mode::Enqueue,
                    other => bail!("--mode must be `work` or `enqueue`, not `{other}`"),
                });
            }
            "--results-url" => args.results_url = Some(value()?),
            "--runs" => args.runs = Some(PathBuf::from(value()?)),
            "--tasks" => args.tasks = number(value()?)?,
            "--first-seq" => args.first_seq = number(value()?)?,
            "--concurrency" => {
                args.concurrency =
                    Some(usize::try_from(number(value()?)?).context("--concurrency is too large")?);
            }
            "--prefetch" => {
                args.prefetch =
                    Some(usize::try_from(number(value()?)?).context("--prefetch is too large")?);
            }
            "--task-ms" => args.task_ms = number(value()?)?,
            "--lease-ms" => args.lease_ms = Some(number(value()?)?),
            "--poll-ms" => args.poll_ms = Some(number(value()?)?),
            "--grace-ms" => args.grace_ms = Some(number(value()?)?),
            "--spans" => args.spans = Some(PathBuf::from(value()?)),
            "--otel-spans" => args.otel_spans = Some(PathBuf::from(value()?)),
            "--rate-each-key" => {
                args.rate_each_key =
                    Some(u32::try_from(number(value()?)?).context("--rate-each-key is too large")?);
            }
            "--limit-each-key" => {
                args.limit_each_key = Some(
                    u32::try_from(number(value()?)?).context("--limit-each-key is too large")?,
                );
            }
            other => bail!("unknown argument `{other}`"),
        }
    }
    args.stores = stores.context("--db PATH or --url URL is required")?;
    args.mode = mode.context("--mode work|enqueue is required")?;
    if args.mode == Mode::Work && args.runs.is_none() {
        bail!("--mode work needs --runs PATH");
    }
    Ok(args)
}

fn settings(args: &Args) -> anyhow::Result<Settings> {
    let mut settings = match &args.stores {
        Stores::Db(db) => omniq_e2e::settings_for(db, Settings::from_env()?)?,
        Stores::Url(url) => match &args.results_url {
            Some(others) => omniq_e2e::settings_for_urls(url, others, Settings::from_env()?)?,
            None => omniq_e2e::settings_for_url(url, Settings::from_env()?)?,
        },
    };
    if let Some(concurrency) = args.concurrency {
        settings.concurrency = concurrency;
    }
    if args.prefetch.is_some() {
        settings.prefetch = args.prefetch;
    }
    if let Some(ms) = args.lease_ms {
        settings.lease = Duration::from_millis(ms);
        settings.heartbeat = settings.lease / 3;
    }
    if let Some(ms) = args.poll_ms {
        settings.poll_interval = Duration::from_millis(ms);
    }
    if let Some(ms) = args.grace_ms {
        settings.shutdown_grace = Duration::from_millis(ms);
    }
    Ok(settings)
}

fn say(line: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}

fn report_line(report: &WorkerReport) -> String {
    format!(
        "report succeeded={} retried={} dead_lettered={} released={} lease_lost={}",
        report.succeeded, report.retried, report.dead_lettered, report.released, report.lease_lost
    )
}

async fn work(omniq: AsyncOmniQ, args: &Args) -> anyhow::Result<()> {
    let runs = args.runs.as_deref().context("--runs PATH is required")?;
    let mut recorder = Recorder::open(runs, Duration::from_millis(args.task_ms))?;
    if let Some(spans) = &args.spans {
        recorder = recorder.with_spans(spans)?;
    }
    recorder.install()?;
    let omniq = omniq.register::<Record>().register::<FailOnce>();
    let mut worker = omniq.worker();
    if args.limit_each_key.is_some() || args.rate_each_key.is_some() {
        let mut limit = Limit::new();
        if let Some(max) = args.limit_each_key {
            limit = limit.concurrency(max);
        }
        if let Some(count) = args.rate_each_key {
            limit = limit.rate_with_burst(count, Duration::from_secs(1), 2);
        }
        worker = worker.limit_each_key(omniq_e2e::QUEUE, limit);
    }
    let worker = worker.start()?;
    let id = worker.id().clone();
    let run = worker.run_until_signal();
    tokio::pin!(run);
    // Poll once before announcing readiness: the first poll installs the SIGINT and SIGTERM
    // handlers, so a signal sent as soon as `ready` is read is never fatal, nor missed.
    let early = tokio::select! {
        biased;
        report = &mut run => Some(report),
        () = std::future::ready(()) => None,
    };
    let report = match early {
        Some(report) => report?,
        None => {
            say(&format!("ready worker={id}"))?;
            run.await?
        }
    };
    omniq.close().await;
    say(&report_line(&report))
}

async fn enqueue(omniq: AsyncOmniQ, args: &Args) -> anyhow::Result<()> {
    let seqs = args.first_seq..args.first_seq + args.tasks;
    let handles = omniq_e2e::enqueue_records(&omniq, seqs).await?;
    omniq.close().await;
    say(&format!("enqueued={}", handles.len()))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = parse_args(std::env::args().skip(1))?;
    // Kept to the end: the spans of the last tasks are exported as they end.
    let _traces = omniq_e2e::otel::install_tracing(args.otel_spans.as_deref())?;
    let omniq = AsyncOmniQ::from_settings(settings(&args)?).await?;
    match args.mode {
        Mode::Work => work(omniq, &args).await,
        Mode::Enqueue => enqueue(omniq, &args).await,
    }
}
