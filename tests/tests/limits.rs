//! Three worker processes sharing one store hold a per-key concurrency cap and rate: the
//! runs of each key, logged with their start and end by every process, never overlap more
//! than the cap allows and never start faster than the rate; every task runs once, on its
//! first attempt.
//!
//! Runs on every backend (`three_processes_hold_a_per_key_limit::sqlite`, `::redis`,
//! `::postgres`, `::mysql`, `::nats`, `::file`).

#[macro_use]
mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::ensure;
use omniq_async::TaskState;
use omniq_e2e::{Record, Span, read_spans};
use support::{Scene, run_counts, wait_for_stats};

const TASKS: u64 = 36;
const KEYS: u64 = 3;
const PER_KEY: usize = 2;
/// Starts per second of one key (bursts of 2).
const RATE: u32 = 5;

on_backends!(three_processes_hold_a_per_key_limit);

/// The most spans of `spans` running at one instant (an end and a start at the same
/// microsecond do not overlap).
fn most_at_once(spans: &[Span]) -> usize {
    let mut edges: Vec<(u64, i32)> = spans
        .iter()
        .flat_map(|span| [(span.start, 1), (span.end, -1)])
        .collect();
    // Ends before starts at the same instant.
    edges.sort();
    let (mut running, mut most) = (0_i32, 0_i32);
    for (_, change) in edges {
        running += change;
        most = most.max(running);
    }
    usize::try_from(most).unwrap_or(0)
}

async fn three_processes_hold_a_per_key_limit(scene: &Scene) -> anyhow::Result<()> {
    let omniq = scene.open().await?;
    let spans_log = scene.dir.path().join("spans.log");
    let spans_arg = spans_log.display().to_string();
    let per_key = PER_KEY.to_string();
    let rate = RATE.to_string();
    // Each process has more slots than the limit: only the limit keeps a key's runs apart.
    let args = [
        "--concurrency",
        "4",
        "--task-ms",
        "50",
        "--lease-ms",
        "10000",
        "--poll-ms",
        "50",
        "--limit-each-key",
        &per_key,
        "--rate-each-key",
        &rate,
        "--spans",
        &spans_arg,
    ];
    let mut workers = Vec::new();
    for name in ["worker-a", "worker-b", "worker-c"] {
        let mut worker = scene.spawn_worker(name, &args, &[])?;
        worker.wait_ready(Duration::from_secs(30)).await?;
        workers.push(worker);
    }
    let mut handles = Vec::new();
    for seq in 0..TASKS {
        handles.push(
            omniq
                .enqueue(Record { seq })
                .limit_key(format!("key-{}", seq % KEYS))
                .await?,
        );
    }
    wait_for_stats(&omniq, &mut workers, Duration::from_secs(120), |s| {
        s.count(TaskState::Succeeded) == TASKS
    })
    .await?;
    for worker in &workers {
        worker.signal("TERM")?;
    }
    for worker in &mut workers {
        let status = worker.wait_exit(Duration::from_secs(30)).await?;
        ensure!(
            status.success(),
            "{} should exit 0 on SIGTERM, got {status}:\n{}",
            worker.name,
            worker.stderr()
        );
    }

    for handle in &handles {
        let record = handle.record().await?;
        ensure!(
            record.state == TaskState::Succeeded && record.attempts == 1,
            "held back without an attempt, run once: {record:?}"
        );
    }
    let counts = run_counts(&scene.runs()?);
    ensure!(
        counts.len() as u64 == TASKS && counts.values().all(|&n| n == 1),
        "every task runs exactly once: {counts:?}"
    );
    let spans = read_spans(&spans_log)?;
    let mut by_key: BTreeMap<u64, Vec<Span>> = BTreeMap::new();
    for span in spans {
        by_key.entry(span.seq % KEYS).or_default().push(span);
    }
    ensure!(by_key.len() as u64 == KEYS, "every key ran: {by_key:?}");
    let most: BTreeMap<u64, usize> = by_key
        .iter()
        .map(|(key, spans)| (*key, most_at_once(spans)))
        .collect();
    ensure!(
        most.values().all(|&n| n <= PER_KEY),
        "at most {PER_KEY} runs of a key at once across the processes: {most:?}"
    );
    // A token bucket lets at most `burst + rate × span` starts of a key into any span.
    // Two more are allowed for the time between the limiter's decision and the handler's
    // start, which varies with the load: up to two intervals (0.4 s) of it.
    for (key, spans) in &by_key {
        let mut starts: Vec<u64> = spans.iter().map(|span| span.start).collect();
        starts.sort_unstable();
        for (i, first) in starts.iter().enumerate() {
            for (j, last) in starts.iter().enumerate().skip(i) {
                let span_s = (last - first) as f64 / 1e6;
                let allowed = 2.0 + f64::from(RATE) * span_s + 2.0;
                ensure!(
                    (j - i + 1) as f64 <= allowed,
                    "key {key}: {} starts in {span_s:.3} s break {RATE} a second",
                    j - i + 1
                );
            }
        }
    }
    let all: Vec<Span> = by_key.into_values().flatten().collect();
    println!(
        "limits ({:?}): most runs at once per key {most:?}, over all keys {}",
        scene.target.backend,
        most_at_once(&all)
    );
    Ok(())
}
