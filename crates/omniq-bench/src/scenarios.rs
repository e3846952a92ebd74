//! The scenarios. Each measures on fresh queues so runs do not disturb each other.

use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use omniq_async::{AsyncOmniQ, TaskState, WorkerHandle};

use crate::options::{Options, Scenario};
use crate::probe::{Probe, peak_rss_mb};
use crate::report::Measurement;
use crate::target::{Job, TASK, Target, open, url_of, worker_config};

/// Tasks per enqueue round trip in bulk phases.
const CHUNK: usize = 1_000;
/// Longest a scenario may take before it is reported as incomplete.
const PATIENCE: Duration = Duration::from_secs(600);

fn fresh_queue(scenario: Scenario) -> String {
    format!(
        "bench-{}-{}",
        scenario.name(),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

fn rate(count: u64, elapsed: Duration) -> Option<f64> {
    let secs = elapsed.as_secs_f64();
    (secs > 0.0).then(|| count as f64 / secs)
}

/// What a bulk phase enqueues besides its count.
#[derive(Debug, Clone, Copy)]
struct Shape {
    /// Bytes of padding per payload.
    padding: usize,
    /// Priority of every task.
    priority: i32,
    /// One task in this many fails its first attempt (0: none).
    failing_one_in: u64,
    /// The tasks are spread over this many limit keys, each limited to
    /// [`PER_KEY_CONCURRENCY`] running at once (0: no limit).
    limit_keys: u64,
}

/// The per-key cap of the `limited` scenario: with 16 keys, twice the default worker's
/// slots, so the figure shows what the limiter costs rather than what it holds back.
const PER_KEY_CONCURRENCY: u32 = 8;

impl Shape {
    const PLAIN: Shape = Shape {
        padding: 0,
        priority: 0,
        failing_one_in: 0,
        limit_keys: 0,
    };
}

/// Enqueues `count` tasks in chunks, the chunks dealt to `queues` in turn.
async fn enqueue_bulk(
    omniq: &AsyncOmniQ,
    queues: &[String],
    count: u64,
    shape: Shape,
    progress: &ProgressBar,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut sent = 0;
    let mut chunk = 0;
    while sent < count {
        let n = (count - sent).min(CHUNK as u64);
        let options = omniq_async::TaskOptions::default()
            .queue(&queues[chunk % queues.len()])
            .priority(shape.priority);
        let jobs: Vec<_> = (sent..sent + n)
            .map(|seq| {
                let mut job = Job::now(shape.padding);
                job.fail_first = shape.failing_one_in > 0 && seq % shape.failing_one_in == 0;
                let options = match shape.limit_keys {
                    0 => options.clone(),
                    keys => options.clone().limit_key(format!("key-{}", seq % keys)),
                };
                (job, options)
            })
            .collect();
        enqueue_jobs(omniq, jobs).await?;
        sent += n;
        chunk += 1;
        progress.inc(n);
    }
    Ok(started.elapsed())
}

async fn enqueue_jobs(
    omniq: &AsyncOmniQ,
    jobs: Vec<(Job, omniq_async::TaskOptions)>,
) -> anyhow::Result<()> {
    let codec = omniq_async::layers::serialization::PayloadCodec::default();
    let now = chrono::Utc::now();
    let specs = jobs
        .into_iter()
        .map(|(job, options)| {
            Ok(omniq_async::layers::models::TaskSpec::new(
                TASK,
                codec.encode(&job)?,
                options,
                now,
            ))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    omniq.stores().queue.enqueue(specs).await?;
    Ok(())
}

fn start_workers(
    omniq: &AsyncOmniQ,
    queues: &[String],
    options: &Options,
    limit_each_key: Option<&omniq_async::Limit>,
) -> anyhow::Result<Vec<WorkerHandle>> {
    let mut config = worker_config(queues, options.concurrency);
    if let Some(limit) = limit_each_key {
        for queue in queues {
            config = config.limit_each_key(queue, limit.clone());
        }
    }
    (0..options.workers.max(1))
        .map(|_| Ok(omniq.worker().config(config.clone()).start()?))
        .collect()
}

async fn stop(workers: Vec<WorkerHandle>) -> anyhow::Result<()> {
    for worker in workers {
        worker.shutdown().await?;
    }
    Ok(())
}

fn measured(target: &Target, scenario: &str, tasks: u64, probe: &Probe) -> Measurement {
    let latency = probe.latency_ms();
    Measurement {
        backend: target.backend(),
        scenario: scenario.to_owned(),
        tasks,
        processed_per_sec: rate(probe.done().min(tasks), probe.busy_time()),
        latency_p50_ms: latency.map(|l| l[0]),
        latency_p90_ms: latency.map(|l| l[1]),
        latency_p99_ms: latency.map(|l| l[2]),
        latency_max_ms: latency.map(|l| l[3]),
        peak_rss_mb: peak_rss_mb(),
        ..Measurement::default()
    }
}

async fn wait_done(probe: &Probe, progress: &ProgressBar, row: &mut Measurement) {
    let watcher = async {
        loop {
            progress.set_position(probe.done());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let finished = tokio::select! {
        done = probe.wait(PATIENCE) => done,
        () = watcher => false,
    };
    if !finished {
        row.note = format!("incomplete: {} done before the time limit", probe.done());
    }
}

/// A bulk run: `depth` tasks queued behind, then the measured ones spread over `queues`
/// queues with `shape`.
#[derive(Debug, Clone, Copy)]
struct Bulk<'a> {
    scenario: Scenario,
    label: &'a str,
    shape: Shape,
    depth: u64,
    queues: usize,
}

impl<'a> Bulk<'a> {
    fn plain(scenario: Scenario, label: &'a str) -> Self {
        Self {
            scenario,
            label,
            shape: Shape::PLAIN,
            depth: 0,
            queues: 1,
        }
    }
}

/// Bulk-enqueue N (optionally padded, behind a backlog, over several queues, some
/// failing once), then process them all.
async fn bulk_then_process(
    target: &mut Target,
    options: &Options,
    bulk: Bulk<'_>,
    progress: &ProgressBar,
) -> anyhow::Result<Measurement> {
    let Bulk {
        scenario,
        label,
        shape,
        depth,
        queues,
    } = bulk;
    let probe = Arc::new(Probe::default());
    let omniq = open(target.settings()?, Arc::clone(&probe)).await?;
    let base = fresh_queue(scenario);
    let queues: Vec<String> = if queues <= 1 {
        vec![base]
    } else {
        (0..queues).map(|i| format!("{base}-{i}")).collect()
    };
    let capabilities = omniq.capabilities();
    if shape.limit_keys > 0 && !capabilities.supports(omniq_async::Capability::Limits) {
        omniq.close().await;
        return Ok(Measurement {
            backend: target.backend(),
            scenario: label.to_owned(),
            note: "not applicable: the task queue keeps no limiter state".into(),
            ..Measurement::default()
        });
    }
    progress.set_length(options.tasks * 2 + depth);
    progress.set_message(format!("{label}: enqueueing"));
    // The backlog first, at a lower priority: the measured tasks run ahead of it while
    // the claim path still has to deal with every queued row. A broker's levels start at
    // 0: the backlog takes the lowest, the measured tasks the next.
    let levels = capabilities.priorities();
    let (backlog_priority, shape) = if levels.contains(&-1) {
        (-1, shape)
    } else {
        let lowest = *levels.start();
        let shape = Shape {
            priority: shape
                .priority
                .max(lowest.saturating_add(1))
                .min(*levels.end()),
            ..shape
        };
        (lowest, shape)
    };
    let backlog = Shape {
        priority: backlog_priority,
        ..Shape::PLAIN
    };
    enqueue_bulk(&omniq, &queues[..1], depth, backlog, progress).await?;
    let enqueue_time = enqueue_bulk(&omniq, &queues, options.tasks, shape, progress).await?;
    probe.reset(options.tasks);
    progress.set_message(format!("{label}: processing"));
    let limit =
        (shape.limit_keys > 0).then(|| omniq_async::Limit::new().concurrency(PER_KEY_CONCURRENCY));
    let workers = start_workers(&omniq, &queues, options, limit.as_ref())?;
    let mut row = measured(target, label, options.tasks, &probe);
    wait_done(&probe, progress, &mut row).await;
    stop(workers).await?;
    let fresh = measured(target, label, options.tasks, &probe);
    row.processed_per_sec = fresh.processed_per_sec;
    row.latency_p50_ms = None;
    row.latency_p90_ms = None;
    row.latency_p99_ms = None;
    row.latency_max_ms = None;
    row.peak_rss_mb = fresh.peak_rss_mb;
    row.enqueue_per_sec = rate(options.tasks, enqueue_time);
    if shape.padding > 0 {
        let bytes = (shape.padding as f64) * row.processed_per_sec.unwrap_or(0.0);
        row.mb_per_sec = Some(bytes / 1_048_576.0);
    }
    if depth > 0 {
        row.note = format!("{depth} tasks queued behind");
    }
    omniq.close().await;
    Ok(row)
}

async fn steady(
    target: &mut Target,
    options: &Options,
    progress: &ProgressBar,
) -> anyhow::Result<Measurement> {
    let probe = Arc::new(Probe::default());
    let omniq = open(target.settings()?, Arc::clone(&probe)).await?;
    let queue = fresh_queue(Scenario::Steady);
    progress.set_length(options.tasks);
    progress.set_message("steady: producing and processing");
    probe.reset(options.tasks);
    let workers = start_workers(&omniq, std::slice::from_ref(&queue), options, None)?;
    // Four producers, 100 tasks per round trip, racing the workers.
    let producers = 4u64;
    let started = Instant::now();
    let mut handles = Vec::new();
    for p in 0..producers {
        let omniq = omniq.clone();
        let queue = queue.clone();
        let share = options.tasks / producers + u64::from(p < options.tasks % producers);
        handles.push(tokio::spawn(async move {
            let mut left = share;
            while left > 0 {
                let n = left.min(100);
                let options = omniq_async::TaskOptions::default().queue(&queue);
                let jobs = (0..n).map(|_| (Job::now(0), options.clone())).collect();
                enqueue_jobs(&omniq, jobs).await?;
                left -= n;
            }
            anyhow::Ok(())
        }));
    }
    for handle in handles {
        handle.await??;
    }
    let enqueue_time = started.elapsed();
    let mut row = measured(target, "steady", options.tasks, &probe);
    wait_done(&probe, progress, &mut row).await;
    stop(workers).await?;
    let fresh = measured(target, "steady", options.tasks, &probe);
    row.processed_per_sec = fresh.processed_per_sec;
    row.latency_p50_ms = fresh.latency_p50_ms;
    row.latency_p90_ms = fresh.latency_p90_ms;
    row.latency_p99_ms = fresh.latency_p99_ms;
    row.latency_max_ms = fresh.latency_max_ms;
    row.enqueue_per_sec = rate(options.tasks, enqueue_time);
    omniq.close().await;
    Ok(row)
}

async fn latency(
    target: &mut Target,
    options: &Options,
    progress: &ProgressBar,
) -> anyhow::Result<Measurement> {
    let probe = Arc::new(Probe::default());
    let omniq = open(target.settings()?, Arc::clone(&probe)).await?;
    let queue = fresh_queue(Scenario::Latency);
    let count = options.latency_tasks;
    progress.set_length(count);
    progress.set_message("latency: one task every 5 ms");
    probe.reset(count);
    let workers = start_workers(&omniq, std::slice::from_ref(&queue), options, None)?;
    // Let the worker go idle (waiting for a wake-up) before the first send.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut pace = tokio::time::interval(Duration::from_millis(5));
    for _ in 0..count {
        pace.tick().await;
        // The path users take: one facade enqueue per task, events and metrics included.
        omniq
            .enqueue_by_name::<()>(TASK, Job::now(0))
            .queue(&queue)
            .await?;
        progress.inc(1);
    }
    let mut row = measured(target, "latency", count, &probe);
    wait_done(&probe, progress, &mut row).await;
    stop(workers).await?;
    let fresh = measured(target, "latency", count, &probe);
    let note = row.note.clone();
    row = fresh;
    row.processed_per_sec = None;
    row.note = if note.is_empty() {
        "500 tasks, 5 ms apart, idle worker".to_owned()
    } else {
        note
    };
    omniq.close().await;
    Ok(row)
}

async fn processes(
    target: &mut Target,
    options: &Options,
    count: usize,
    progress: &ProgressBar,
) -> anyhow::Result<Measurement> {
    let backend = target.backend();
    if !target.shared_across_processes() {
        return Ok(Measurement {
            backend,
            scenario: format!("processes {count}"),
            note: "not applicable: the memory backend lives in one process".into(),
            ..Measurement::default()
        });
    }
    if !target.counts_tasks() {
        return Ok(Measurement {
            backend,
            scenario: format!("processes {count}"),
            note: "not applicable: worker processes stop when their queue's counts say it is \
                   empty, and a broker cannot count"
                .into(),
            ..Measurement::default()
        });
    }
    let settings = target.settings()?;
    let url = url_of(&settings);
    let probe = Arc::new(Probe::default());
    let omniq = open(settings, probe).await?;
    let queue = fresh_queue(Scenario::Processes);
    progress.set_length(options.tasks);
    progress.set_message(format!("processes: {count} worker processes"));
    let queues = [queue.clone()];
    let enqueue_time = enqueue_bulk(&omniq, &queues, options.tasks, Shape::PLAIN, progress).await?;
    let exe = match &options.worker_exe {
        Some(exe) => exe.clone(),
        None => std::env::current_exe()?,
    };
    let started = Instant::now();
    let mut children = Vec::new();
    for _ in 0..count.max(1) {
        children.push(
            tokio::process::Command::new(&exe)
                .args(&options.worker_command)
                .args(["--worker-only", "--url", &url, "--queue", &queue])
                .args(
                    options
                        .results_url
                        .iter()
                        .flat_map(|results| ["--results-url", results.as_str()]),
                )
                .args(["--concurrency", &options.concurrency.to_string()])
                .stdout(std::process::Stdio::null())
                .kill_on_drop(true)
                .spawn()?,
        );
    }
    progress.set_position(0);
    let mut row = Measurement {
        backend,
        scenario: format!("processes {count}"),
        tasks: options.tasks,
        enqueue_per_sec: rate(options.tasks, enqueue_time),
        note: format!("{count} worker processes (includes their start-up)"),
        ..Measurement::default()
    };
    let deadline = Instant::now() + PATIENCE;
    loop {
        let done = omniq
            .queue_stats(queue.clone())
            .await?
            .count(TaskState::Succeeded);
        progress.set_position(done);
        if done >= options.tasks {
            row.processed_per_sec = rate(options.tasks, started.elapsed());
            break;
        }
        if Instant::now() > deadline {
            row.note = format!("incomplete: {done} done before the time limit");
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for mut child in children {
        child.wait().await?;
    }
    omniq.close().await;
    Ok(row)
}

/// A worker process of the `processes` scenario: works `--queue` until it is empty.
pub async fn worker_process(options: &Options) -> anyhow::Result<()> {
    let target = Target::new(&options.url, options.results_url.as_deref());
    let omniq = open(
        target.settings_for(&options.url)?,
        Arc::new(Probe::default()),
    )
    .await?;
    let worker = omniq
        .worker()
        .config(worker_config(
            std::slice::from_ref(&options.queue),
            options.concurrency,
        ))
        .start()?;
    loop {
        let stats = omniq.queue_stats(options.queue.clone()).await?;
        if stats.count(TaskState::Queued) + stats.count(TaskState::Running) == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    worker.shutdown().await?;
    omniq.close().await;
    Ok(())
}

/// Runs the throughput scenario while another session holds a transaction open (on
/// PostgreSQL; elsewhere the row says it does not apply).
async fn long_transaction(
    target: &mut Target,
    options: &Options,
    progress: &ProgressBar,
) -> anyhow::Result<Measurement> {
    let label = "long transaction";
    let Some(held) = crate::held::Transaction::open(target).await? else {
        return Ok(Measurement {
            backend: target.backend(),
            scenario: label.into(),
            note: "not applicable: PostgreSQL only".into(),
            ..Measurement::default()
        });
    };
    let mut row = bulk_then_process(
        target,
        options,
        Bulk::plain(Scenario::LongTransaction, label),
        progress,
    )
    .await?;
    held.close().await?;
    if row.note.is_empty() {
        row.note = "a transaction open in another session for the whole run".into();
    }
    Ok(row)
}

/// Runs one scenario.
pub async fn run(
    scenario: Scenario,
    target: &mut Target,
    options: &Options,
    progress: &ProgressBar,
) -> anyhow::Result<Vec<Measurement>> {
    progress.set_position(0);
    let bulk = |label| Bulk::plain(scenario, label);
    Ok(match scenario {
        Scenario::Throughput => {
            vec![bulk_then_process(target, options, bulk("throughput"), progress).await?]
        }
        Scenario::Steady => vec![steady(target, options, progress).await?],
        Scenario::Latency => vec![latency(target, options, progress).await?],
        Scenario::Depth => {
            let depth = Bulk {
                depth: options.depth,
                ..bulk("depth")
            };
            vec![bulk_then_process(target, options, depth, progress).await?]
        }
        Scenario::Payload => {
            let mut rows = Vec::new();
            for (label, size) in [("payload 1KiB", 1024), ("payload 64KiB", 64 * 1024)] {
                let padded = Bulk {
                    shape: Shape {
                        padding: size,
                        ..Shape::PLAIN
                    },
                    ..bulk(label)
                };
                rows.push(bulk_then_process(target, options, padded, progress).await?);
            }
            rows
        }
        Scenario::Processes => {
            let counts = options.processes.map_or(vec![2, 4], |count| vec![count]);
            let mut rows = Vec::new();
            for count in counts {
                rows.push(processes(target, options, count, progress).await?);
            }
            rows
        }
        Scenario::Queues => {
            let mut rows = Vec::new();
            for (label, queues) in [("queues 1", 1), ("queues 4", 4), ("queues 16", 16)] {
                let spread = Bulk {
                    queues,
                    ..bulk(label)
                };
                rows.push(bulk_then_process(target, options, spread, progress).await?);
            }
            rows
        }
        Scenario::Failing => {
            let failing = Bulk {
                shape: Shape {
                    failing_one_in: 10,
                    ..Shape::PLAIN
                },
                ..bulk("failing 10%")
            };
            vec![bulk_then_process(target, options, failing, progress).await?]
        }
        Scenario::LongTransaction => vec![long_transaction(target, options, progress).await?],
        Scenario::Limited => {
            let limited = Bulk {
                shape: Shape {
                    limit_keys: 16,
                    ..Shape::PLAIN
                },
                ..bulk("limited 16 keys")
            };
            vec![bulk_then_process(target, options, limited, progress).await?]
        }
    })
}
