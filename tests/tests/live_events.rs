//! Live events cross OS processes: a subscriber in the test process sees the lifecycle of
//! tasks it enqueued and an `e2e-worker` process ran — Enqueued once from its own process,
//! Started then Succeeded from the worker's, carrying the worker process's id. Events of
//! two processes interleave as they arrive, so Enqueued may come before or after Started.
//!
//! Only Redis publishes events to other processes (`EventStore::follow`, PUBLISH and
//! SUBSCRIBE), so this runs on the Redis backend only
//! (`a_subscriber_sees_the_lifecycle_of_a_task_run_by_another_process`); it skips loudly
//! when Redis is unreachable, or fails under `OMNIQ_TEST_REQUIRE_SERVICES=1`.
//!
//! `subscribe()` starts following other processes' events in the background and says
//! nothing once it is live, so the test waits for the follow to carry an event of the
//! worker process (a probe task's) before it enqueues the tasks it checks.

mod support;

use std::time::Duration;

use anyhow::{Context, bail, ensure};
use omniq_async::{EventSubscription, TaskEvent, TaskEventKind, TaskId, TaskState};
use support::{Backend, Scene, WorkerProcess};

const TEST: &str = "a_subscriber_sees_the_lifecycle_of_a_task_run_by_another_process";

/// Tasks whose events are checked.
const TASKS: u64 = 3;

/// Sequence numbers of the probe tasks, apart from the checked ones.
const FIRST_PROBE: u64 = 1_000_000;

/// Longest wait for the worker to start and for the follow to carry its events.
const READY: Duration = Duration::from_secs(30);

/// How long one probe's events are awaited before another probe is sent.
const PROBE_WAIT: Duration = Duration::from_secs(1);

/// Longest wait for every checked task's events.
const EVENTS: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_sees_the_lifecycle_of_a_task_run_by_another_process() -> anyhow::Result<()> {
    support::run(
        Backend::Redis,
        TEST,
        a_subscriber_sees_the_lifecycle_of_a_task_run_by_another_process_on,
    )
    .await
}

async fn a_subscriber_sees_the_lifecycle_of_a_task_run_by_another_process_on(
    scene: &Scene,
) -> anyhow::Result<()> {
    let omniq = scene.open().await?;
    // Subscribed before the worker process exists and before any task is enqueued.
    let mut feed = omniq.events().subscribe();

    let mut worker = scene.spawn_worker(
        "worker",
        &[
            "--concurrency",
            "2",
            "--poll-ms",
            "50",
            "--lease-ms",
            "10000",
        ],
        &[],
    )?;
    worker.wait_ready(READY).await?;
    // `ready worker=<id>`: the id the child announces. Worker ids are
    // `<host>-<pid>-<random>`, so it names the child's pid, not this process's.
    let announced = worker
        .stdout_lines()
        .iter()
        .find_map(|line| line.strip_prefix("ready worker="))
        .context("the worker announced no id")?
        .to_owned();
    let child_pid = format!("-{}-", worker.pid());
    let own_pid = format!("-{}-", std::process::id());
    ensure!(
        announced.contains(&child_pid) && !announced.contains(&own_pid),
        "worker id {announced} should name the child's pid {} and not this process's {}",
        worker.pid(),
        std::process::id()
    );

    // The follow is live once an event of the worker process comes through it: probes
    // until one does (the events of a probe run before the follow subscribed are gone).
    let deadline = tokio::time::Instant::now() + READY;
    let mut probes = 0;
    loop {
        let probe = omniq_e2e::enqueue_records(&omniq, [FIRST_PROBE + probes]).await?;
        probes += 1;
        let probe = probe.first().context("no handle for the probe")?.id();
        if let Some(event) = next_from_worker(&mut feed, probe, PROBE_WAIT).await? {
            ensure!(
                event.worker_id.as_ref().map(ToString::to_string) == Some(announced.clone()),
                "a probe's {:?} event names worker {:?}, not the child's {announced}",
                event.kind,
                event.worker_id
            );
            break;
        }
        if let Some(status) = worker.try_exit()? {
            bail!(
                "the worker exited ({status}) while probing:\n{}",
                worker.stderr()
            );
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "no event of the worker process came through the subscription within \
             {READY:?} ({probes} probes):\n{}",
            worker.stderr()
        );
    }

    // The checked tasks: every event of each until its Succeeded.
    let handles = omniq_e2e::enqueue_records(&omniq, 0..TASKS).await?;
    ensure!(handles.len() as u64 == TASKS);
    let mut seen: Vec<(TaskId, Vec<TaskEvent>)> =
        handles.iter().map(|h| (h.id(), Vec::new())).collect();
    let deadline = tokio::time::Instant::now() + EVENTS;
    while !seen.iter().all(|(_, events)| succeeded(events)) {
        match tokio::time::timeout_at(deadline, feed.next()).await {
            Ok(Some(event)) => {
                if let Some((_, events)) =
                    seen.iter_mut().find(|(id, _)| event.task_id == Some(*id))
                {
                    events.push(event);
                }
            }
            Ok(None) => bail!("the subscription ended: {}", kinds_of(&seen)),
            Err(_) => bail!(
                "not every task's Succeeded arrived within {EVENTS:?} ({} missed): {}\n{}",
                feed.missed(),
                kinds_of(&seen),
                worker_state(&mut worker)?
            ),
        }
    }
    ensure!(
        feed.missed() == 0,
        "the subscriber skipped {} events",
        feed.missed()
    );
    for (seq, (id, events)) in (0..TASKS).zip(&seen) {
        // Enqueued is logged here once the store accepted the task, and a worker may have
        // claimed it by then, so it can arrive before or after the worker's events; the
        // worker's own events arrive in the order it logged them.
        let (enqueued, worker_events): (Vec<&TaskEvent>, Vec<&TaskEvent>) = events
            .iter()
            .partition(|e| e.kind == TaskEventKind::Enqueued);
        let kinds: Vec<TaskEventKind> = worker_events.iter().map(|e| e.kind).collect();
        ensure!(
            enqueued.len() == 1 && kinds == [TaskEventKind::Started, TaskEventKind::Succeeded],
            "task {seq} ({id}): events {:?}",
            events.iter().map(|e| e.kind).collect::<Vec<_>>()
        );
        // Enqueued in this process, which runs no worker; Started and Succeeded in the
        // child, under the id it announced.
        ensure!(
            enqueued[0].worker_id.is_none(),
            "task {seq}: the Enqueued event names a worker: {:?}",
            enqueued[0]
        );
        for event in &worker_events {
            let worker_id = event
                .worker_id
                .as_ref()
                .with_context(|| format!("task {seq}: a {:?} event without a worker", event.kind))?
                .to_string();
            ensure!(
                worker_id == announced,
                "task {seq}: {:?} by worker {worker_id}, not the child's {announced}",
                event.kind
            );
        }
        ensure!(
            worker_events[0].attempt == Some(1),
            "task {seq}: Started for attempt {:?}",
            worker_events[0].attempt
        );
    }

    // A graceful stop; the child ran the checked tasks (and the probes).
    worker.signal("TERM")?;
    let status = worker.wait_exit(Duration::from_secs(30)).await?;
    ensure!(
        status.success(),
        "the worker should exit 0 on SIGTERM, got {status}:\n{}",
        worker.stderr()
    );
    let report = worker.report().await?;
    let count = |key: &str| report.get(key).copied().unwrap_or(u64::MAX);
    ensure!(count("succeeded") >= TASKS, "worker report: {report:?}");
    for key in ["retried", "dead_lettered", "released", "lease_lost"] {
        ensure!(count(key) == 0, "worker report {key}: {report:?}");
    }

    // The store agrees with the events.
    for (seq, handle) in (0..TASKS).zip(&handles) {
        let record = handle.record().await?;
        ensure!(
            record.state == TaskState::Succeeded && record.attempts == 1,
            "task {seq}: {record:?}"
        );
        ensure!(
            handle.try_result().await? == Some(seq),
            "task {seq}: wrong result"
        );
    }
    let runs = scene.runs()?;
    for seq in 0..TASKS {
        let times = runs.iter().filter(|&&s| s == seq).count();
        ensure!(times == 1, "task {seq} ran {times} times: {runs:?}");
    }
    println!(
        "live events (Redis): {TASKS} tasks followed from worker {announced} after {probes} \
         probe(s)"
    );
    omniq.close().await;
    Ok(())
}

/// The next event of `task` logged by a worker (so from the worker process: this process
/// runs none) within `limit`, skipping others; `None` at the limit.
async fn next_from_worker(
    feed: &mut EventSubscription,
    task: TaskId,
    limit: Duration,
) -> anyhow::Result<Option<TaskEvent>> {
    let found = tokio::time::timeout(limit, async {
        while let Some(event) = feed.next().await {
            if event.task_id == Some(task) && event.worker_id.is_some() {
                return Some(event);
            }
        }
        None
    })
    .await;
    match found {
        Ok(Some(event)) => Ok(Some(event)),
        Ok(None) => bail!("the subscription ended"),
        Err(_) => Ok(None),
    }
}

fn succeeded(events: &[TaskEvent]) -> bool {
    events.iter().any(|e| e.kind == TaskEventKind::Succeeded)
}

/// The kinds of event seen for each task, for failure messages.
fn kinds_of(seen: &[(TaskId, Vec<TaskEvent>)]) -> String {
    let per_task: Vec<String> = seen
        .iter()
        .map(|(id, events)| {
            let kinds: Vec<TaskEventKind> = events.iter().map(|e| e.kind).collect();
            format!("{id}: {kinds:?}")
        })
        .collect();
    per_task.join("; ")
}

/// Whether the worker is still running, and its log, for failure messages.
fn worker_state(worker: &mut WorkerProcess) -> anyhow::Result<String> {
    let state = match worker.try_exit()? {
        Some(status) => format!("the worker exited ({status})"),
        None => "the worker is still running".to_owned(),
    };
    Ok(format!("{state}; its log:\n{}", worker.stderr()))
}
