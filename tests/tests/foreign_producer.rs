//! A producer in another language: Python enqueues by docs/wire-format.md, OmniQ runs.
//!
//! `tests/python/produce_scenario.py` (through `tests/python/omniq_producer.py`) stores
//! `python.add` tasks in Redis and in PostgreSQL: MessagePack and JSON payloads, metadata,
//! a timeout, a TTL, a retry policy, a delay, a unique key sent twice, a dedupe window, a
//! priority. Then a worker of this process (one slot) runs them, and the test checks every
//! result and what each option did. Once they have run, Python sends the two unique keys
//! again, to a worker that polls once a minute: the plain key is free and its new task runs
//! at once (the producer's wake-up reaches the worker), the key with a window is not.
//! On Redis, the enqueue script refuses garbage arguments and stores nothing of them.
//!
//! Python comes from `OMNIQ_TEST_PYTHON`, else the virtual environment .ci/services makes
//! (`~/.cache/omniq-python`), else `python3`; it needs `msgpack`, `redis` and `psycopg`.
//! Without them, or without the server, the test skips loudly, or fails under
//! `OMNIQ_TEST_REQUIRE_SERVICES=1`.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use omniq_async::{AsyncOmniQ, Backoff, Task, TaskContext, TaskError, TaskId, TaskState};
use serde::{Deserialize, Serialize};
use support::{Backend, Scene};

/// The queue the Python producer enqueues into.
const QUEUE: &str = "python";

/// Longest wait for one task's result.
const RESULT_WAIT: Duration = Duration::from_secs(30);

/// The second worker's poll interval: a task it starts sooner was woken for.
const SLOW_POLL: Duration = Duration::from_secs(60);

/// Longest wait for the task enqueued while the second worker waits.
const WOKEN_WAIT: Duration = Duration::from_secs(10);

/// The task Python enqueues: adds, and fails its first attempt when asked to.
#[derive(Debug, Serialize, Deserialize)]
struct Add {
    a: i64,
    b: i64,
    #[serde(default)]
    fail_first: bool,
}

/// The `a` of every run, in the order they ran.
#[derive(Debug, Default)]
struct Runs(Mutex<Vec<i64>>);

impl Task for Add {
    const NAME: &'static str = "python.add";
    type Output = i64;

    async fn run(self, ctx: TaskContext) -> Result<i64, TaskError> {
        let runs = ctx.state::<Arc<Runs>>()?;
        runs.0
            .lock()
            .map_err(|_| TaskError::new("the runs list is poisoned"))?
            .push(self.a);
        if self.fail_first && ctx.attempt() == 1 {
            return Err(TaskError::new("the first attempt fails, as asked"));
        }
        Ok(self.a + self.b)
    }
}

/// What `produce_scenario.py` prints.
#[derive(Debug, Deserialize)]
struct Produced {
    plain: Vec<TaskId>,
    json: TaskId,
    retried: TaskId,
    delayed: TaskId,
    delayed_state: String,
    unique: TaskId,
    unique_again: Again,
    windowed: TaskId,
    windowed_again: Again,
    urgent: TaskId,
    /// Redis only: what the script refused.
    garbage: Option<Garbage>,
}

/// What `produce_scenario.py … again` prints.
#[derive(Debug, Deserialize)]
struct ProducedAgain {
    once: Again,
    windowed: Again,
}

#[derive(Debug, Deserialize)]
struct Garbage {
    refused: Vec<String>,
    stored: bool,
}

#[derive(Debug, Deserialize)]
struct Again {
    id: TaskId,
    created: bool,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_enqueues_into_redis_and_omniq_runs_it() -> anyhow::Result<()> {
    const TEST: &str = "python_enqueues_into_redis_and_omniq_runs_it";
    support::run(Backend::Redis, TEST, async |scene| {
        python_enqueues_and_omniq_runs(scene, "redis", TEST).await
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_enqueues_into_postgres_and_omniq_runs_it() -> anyhow::Result<()> {
    const TEST: &str = "python_enqueues_into_postgres_and_omniq_runs_it";
    support::run(Backend::Postgres, TEST, async |scene| {
        python_enqueues_and_omniq_runs(scene, "postgres", TEST).await
    })
    .await
}

async fn python_enqueues_and_omniq_runs(
    scene: &Scene,
    backend: &str,
    test: &str,
) -> anyhow::Result<()> {
    let Some(python) = python(test)? else {
        return Ok(());
    };
    let (server, namespace) = scene
        .target
        .server_and_namespace()
        .context("the target has no namespace of its own")?;
    let runs = Arc::new(Runs::default());
    // Opening first makes PostgreSQL's tables: a producer writes into what OmniQ migrated.
    let omniq = scene.open().await?.state(runs.clone()).register::<Add>();

    let produced: Produced = run_python(&python, [backend, server, namespace, "first"]).await?;
    // Before any worker runs: what the store holds.
    ensure!(
        produced.unique_again.id == produced.unique && !produced.unique_again.created,
        "a second enqueue with a live task's unique key stored a task: {:?}",
        produced.unique_again
    );
    ensure!(
        produced.windowed_again.id == produced.windowed && !produced.windowed_again.created,
        "a second enqueue inside the dedupe window stored a task: {:?}",
        produced.windowed_again
    );
    if let Some(garbage) = &produced.garbage {
        ensure!(
            garbage.refused.len() == 6
                && garbage.refused.iter().all(|r| r.starts_with("invalid: "))
                && !garbage.stored,
            "the enqueue script took garbage: {garbage:?}"
        );
    }
    ensure!(
        produced.delayed_state == "scheduled",
        "the delayed task was stored {}",
        produced.delayed_state
    );
    let delayed = record(&omniq, produced.delayed).await?;
    ensure!(delayed.state == TaskState::Scheduled, "{delayed:?}");
    let stored = omniq.queue_stats(QUEUE).await?;
    let total: u64 = stored.counts.iter().map(|(_, n)| n).sum();
    ensure!(
        total == produced.plain.len() as u64 + 6,
        "the queue holds {total} tasks: {stored:?}"
    );

    // One slot, so tasks run one at a time in claim order.
    let worker = omniq
        .worker()
        .queues([QUEUE])
        .concurrency(1)
        .poll_interval(Duration::from_millis(100))
        .start()?;
    let mut expected: Vec<(TaskId, i64)> = produced
        .plain
        .iter()
        .zip(0_i64..)
        .map(|(id, i)| (*id, 11 * i))
        .collect();
    expected.extend([
        (produced.json, 1001),
        (produced.retried, 14),
        (produced.delayed, 4),
        (produced.unique, 10),
        (produced.windowed, 16),
        (produced.urgent, 100),
    ]);
    for (id, sum) in &expected {
        let got: i64 = omniq
            .handle(*id)
            .wait(RESULT_WAIT)
            .await
            .with_context(|| format!("task {id}, expected {sum}"))?;
        ensure!(got == *sum, "task {id} answered {got}, expected {sum}");
    }
    worker.shutdown().await?;

    let order = runs
        .0
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clone();
    ensure!(
        order.first() == Some(&100),
        "the priority-10 task, enqueued last, did not run first: {order:?}"
    );
    let json = record(&omniq, produced.json).await?;
    ensure!(
        json.spec.metadata.get("source").map(String::as_str) == Some("python"),
        "the metadata was not read: {:?}",
        json.spec.metadata
    );
    ensure!(
        json.spec.timeout == Some(Duration::from_secs(30)),
        "the timeout was not read: {:?}",
        json.spec.timeout
    );
    let ttl = json
        .spec
        .expires_at
        .map(|at| (at - json.spec.created_at).num_seconds());
    ensure!(ttl == Some(3600), "the TTL was not read: {ttl:?}");
    let retried = record(&omniq, produced.retried).await?;
    ensure!(
        retried.attempts == 2
            && retried.state == TaskState::Succeeded
            && retried.spec.max_attempts == 2
            && retried.spec.backoff == Backoff::fixed(Duration::from_millis(50)),
        "the retried task: {retried:?}"
    );
    let delayed = record(&omniq, produced.delayed).await?;
    let started = delayed
        .started_at
        .context("the delayed task has no start")?;
    ensure!(
        started >= delayed.spec.run_at,
        "the delayed task started at {started}, before its run_at {}",
        delayed.spec.run_at
    );
    ensure!(
        order.len() == expected.len() + 1,
        "{} runs for {} tasks and one retry: {order:?}",
        order.len(),
        expected.len()
    );

    // Again, once the first tasks have finished, to a worker that polls once a minute.
    let worker = omniq
        .worker()
        .queues([QUEUE])
        .concurrency(1)
        .poll_interval(SLOW_POLL)
        .start()?;
    let again: ProducedAgain = run_python(&python, [backend, server, namespace, "again"]).await?;
    ensure!(
        again.once.created && again.once.id != produced.unique,
        "a unique key whose task finished was not free again: {:?}",
        again.once
    );
    ensure!(
        again.windowed.id == produced.windowed && !again.windowed.created,
        "a key with a dedupe window was free again inside its window: {:?}",
        again.windowed
    );
    let got: i64 = omniq
        .handle(again.once.id)
        .wait(WOKEN_WAIT)
        .await
        .context("a task enqueued while the worker waited did not run within 10 s")?;
    ensure!(got == 55, "the task enqueued again answered {got}");
    worker.shutdown().await?;
    omniq.close().await;
    Ok(())
}

/// Runs `produce_scenario.py` with `args` and reads what it prints.
async fn run_python<T: serde::de::DeserializeOwned>(
    python: &Path,
    args: [&str; 4],
) -> anyhow::Result<T> {
    let mut command = Command::new(python);
    command
        .arg(scripts_dir().join("produce_scenario.py"))
        .args(args);
    let output = tokio::task::spawn_blocking(move || command.output())
        .await?
        .with_context(|| format!("cannot run {}", python.display()))?;
    ensure!(
        output.status.success(),
        "the Python producer failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).with_context(|| {
        format!(
            "the Python producer printed {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

async fn record(omniq: &AsyncOmniQ, id: TaskId) -> anyhow::Result<omniq_async::TaskRecord> {
    omniq
        .task(id)
        .await?
        .with_context(|| format!("task {id} is not in the store"))
}

fn scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("python")
}

/// A Python that imports the producer's modules; `Ok(None)` (said loudly) when none does.
fn python(test: &str) -> anyhow::Result<Option<PathBuf>> {
    let candidates: Vec<PathBuf> = match std::env::var_os("OMNIQ_TEST_PYTHON") {
        Some(python) => vec![python.into()],
        None => {
            let mut found = Vec::new();
            if let Some(home) = std::env::var_os("HOME") {
                found.push(Path::new(&home).join(".cache/omniq-python/bin/python"));
            }
            found.push("python3".into());
            found
        }
    };
    let mut why = String::new();
    for python in candidates {
        match Command::new(&python)
            .args(["-c", "import msgpack, redis, psycopg"])
            .output()
        {
            Ok(out) if out.status.success() => return Ok(Some(python)),
            Ok(out) => {
                why = format!(
                    "{}: {}",
                    python.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            Err(err) => why = format!("{}: {err}", python.display()),
        }
    }
    if why.is_empty() {
        bail!("no Python to try");
    }
    support::unavailable(test, "Python with msgpack, redis and psycopg", why)
}
