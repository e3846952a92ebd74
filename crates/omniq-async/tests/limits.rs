//! Rate and concurrency limits on every backend, held by three workers sharing the store:
//! at most N tasks of a key run at once while other keys' tasks go on, starts keep to every
//! window of a rate, a task held back uses no attempt, and a limiter the worker cannot
//! reach starts nothing until it can.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use omniq_async::{Limit, Task, TaskContext, TaskError, TaskState, WorkerHandle, WorkerReport};
use omniq_storage::testing::{Fault, Op, Window};
use serde::{Deserialize, Serialize};
use support::{Harness, WAIT};
use tokio::time::Instant;

/// A task of `key` that works for `work_ms`, logging when it runs.
#[derive(Debug, Serialize, Deserialize)]
struct Tracked {
    key: String,
    work_ms: u64,
}

/// When each task of each key ran, and how many of a key ran at once at most.
#[derive(Default)]
struct Log {
    inner: Mutex<LogInner>,
}

#[derive(Default)]
struct LogInner {
    running: HashMap<String, usize>,
    max_running: HashMap<String, usize>,
    starts: Vec<(String, Instant)>,
    ends: Vec<(String, Instant)>,
}

/// The log, shared by the handlers (as application state) and the test.
struct LogRef(Arc<Log>);

impl Log {
    fn lock(&self) -> std::sync::MutexGuard<'_, LogInner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn start(&self, key: &str) {
        let mut log = self.lock();
        let running = log.running.entry(key.to_owned()).or_default();
        *running += 1;
        let now_running = *running;
        let max = log.max_running.entry(key.to_owned()).or_default();
        *max = (*max).max(now_running);
        log.starts.push((key.to_owned(), Instant::now()));
    }

    fn end(&self, key: &str) {
        let mut log = self.lock();
        if let Some(running) = log.running.get_mut(key) {
            *running -= 1;
        }
        log.ends.push((key.to_owned(), Instant::now()));
    }

    fn starts_of(&self, key: &str) -> Vec<Instant> {
        let mut starts: Vec<Instant> = self
            .lock()
            .starts
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, at)| *at)
            .collect();
        starts.sort();
        starts
    }

    fn ends_of(&self, key: &str) -> Vec<Instant> {
        let mut ends: Vec<Instant> = self
            .lock()
            .ends
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, at)| *at)
            .collect();
        ends.sort();
        ends
    }
}

impl Task for Tracked {
    const NAME: &'static str = "limits.tracked";
    type Output = ();
    async fn run(self, ctx: TaskContext) -> Result<(), TaskError> {
        let log = &ctx.state::<LogRef>()?.0;
        log.start(&self.key);
        // The task's work: long enough for tasks of one key to overlap without a limit.
        tokio::time::sleep(Duration::from_millis(self.work_ms)).await;
        log.end(&self.key);
        Ok(())
    }
}

/// A task that holds its place until the test opens the gate.
#[derive(Debug, Serialize, Deserialize)]
struct Gated;

/// What lets a [`Gated`] task finish, and what it signals when its handler starts.
struct Gate {
    open: Arc<tokio::sync::Semaphore>,
    started: Arc<tokio::sync::Semaphore>,
}

impl Task for Gated {
    const NAME: &'static str = "limits.gated";
    type Output = ();
    async fn run(self, ctx: TaskContext) -> Result<(), TaskError> {
        let gate = ctx.state::<Gate>()?;
        gate.started.add_permits(1);
        let _pass = gate
            .open
            .acquire()
            .await
            .map_err(|e| TaskError::new(e.to_string()))?;
        Ok(())
    }
}

fn queue(label: &str) -> String {
    format!(
        "{label}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// Three workers, each with `concurrency` slots, applying the same limits.
fn three_workers(
    omniq: &omniq_async::AsyncOmniQ,
    queue: &str,
    concurrency: usize,
    limit: impl Fn(omniq_async::WorkerBuilder) -> omniq_async::WorkerBuilder,
) -> Vec<WorkerHandle> {
    (0..3)
        .map(|_| {
            limit(
                omniq
                    .worker()
                    .queues([queue.to_owned()])
                    .concurrency(concurrency),
            )
            .start()
            .expect("start")
        })
        .collect()
}

async fn shutdown(workers: Vec<WorkerHandle>) -> WorkerReport {
    let mut total = WorkerReport::default();
    for worker in workers {
        let report = worker.shutdown().await.expect("shutdown");
        total.succeeded += report.succeeded;
        total.snoozed += report.snoozed;
    }
    total
}

/// Every task succeeded on its first attempt: a task held back by a limit uses none.
async fn all_ran_once(omniq: &omniq_async::AsyncOmniQ, ids: &[omniq_async::TaskId]) {
    for id in ids {
        let record = omniq.task(*id).await.expect("get").expect("stored");
        assert_eq!(record.state, TaskState::Succeeded, "{record:?}");
        assert_eq!(
            record.attempts, 1,
            "held back without an attempt: {record:?}"
        );
    }
}

async fn a_key_runs_at_most_its_limit_at_once_while_other_keys_go_on(h: Harness) {
    let log = Arc::new(Log::default());
    let omniq = h
        .omniq
        .clone()
        .register::<Tracked>()
        .state(LogRef(Arc::clone(&log)));
    let name = queue("per-key");
    // The busy key's tasks come first in the queue; the quiet key's after them.
    let mut handles = Vec::new();
    for (key, count) in [("busy", 12), ("quiet", 3)] {
        for _ in 0..count {
            let task = Tracked {
                key: key.to_owned(),
                work_ms: 60,
            };
            handles.push(
                omniq
                    .enqueue(task)
                    .queue(&name)
                    .limit_key(key)
                    .await
                    .expect("enqueue"),
            );
        }
    }
    let workers = three_workers(&omniq, &name, 4, |w| {
        w.limit_each_key(&name, Limit::new().concurrency(2))
    });
    for handle in &handles {
        handle.wait(WAIT).await.expect("every task runs");
    }
    let report = shutdown(workers).await;
    let ids: Vec<_> = handles.iter().map(|h| h.id()).collect();
    all_ran_once(&omniq, &ids).await;
    assert_eq!(report.succeeded, 15);
    assert!(report.snoozed > 0, "the busy key was held back: {report:?}");

    let max = log.lock().max_running.clone();
    assert!(max["busy"] <= 2, "at most 2 of a key at once: {max:?}");
    assert!(max["quiet"] <= 2, "at most 2 of a key at once: {max:?}");
    // The quiet key is not stuck behind the busy one: all of it is done before the busy
    // key's last task starts.
    let quiet_done = *log.ends_of("quiet").last().expect("quiet ran");
    let busy_last = *log.starts_of("busy").last().expect("busy ran");
    assert!(
        quiet_done < busy_last,
        "the quiet key waited for the busy one"
    );
}

async fn starts_keep_to_every_window_of_a_queue_rate(h: Harness) {
    let log = Arc::new(Log::default());
    let omniq = h
        .omniq
        .clone()
        .register::<Tracked>()
        .state(LogRef(Arc::clone(&log)));
    let name = queue("rated");
    let mut handles = Vec::new();
    for _ in 0..14 {
        let task = Tracked {
            key: "all".to_owned(),
            work_ms: 1,
        };
        handles.push(omniq.enqueue(task).queue(&name).await.expect("enqueue"));
    }
    // 4 a second with bursts of 2, and 6 per 2 seconds.
    let rates = [
        (4_u32, Duration::from_secs(1), 2_u32),
        (6, Duration::from_secs(2), 6),
    ];
    let limit = rates
        .iter()
        .fold(Limit::new(), |limit, (count, period, burst)| {
            limit.rate_with_burst(*count, *period, *burst)
        });
    let workers = three_workers(&omniq, &name, 4, |w| w.limit_queue(&name, limit.clone()));
    for handle in &handles {
        handle.wait(WAIT).await.expect("every task runs");
    }
    let report = shutdown(workers).await;
    let ids: Vec<_> = handles.iter().map(|h| h.id()).collect();
    all_ran_once(&omniq, &ids).await;

    // A token bucket lets at most `burst + count × span / period` starts into any span.
    // Two more are allowed for the time between the limiter's decision and the handler's
    // start, which varies with the load: up to two intervals (half a second) of it.
    let starts = log.starts_of("all");
    assert_eq!(starts.len(), 14);
    for (count, period, burst) in rates {
        for (i, first) in starts.iter().enumerate() {
            for (j, last) in starts.iter().enumerate().skip(i) {
                let span = last.duration_since(*first).as_secs_f64();
                let allowed = f64::from(burst) + f64::from(count) * span / period.as_secs_f64();
                let started = (j - i + 1) as f64;
                assert!(
                    started <= allowed + 2.0,
                    "{started} starts in {span:.3} s break {count} per {period:?} (burst {burst})"
                );
            }
        }
    }
    // Held back tasks come back when a token is due, not over and over.
    assert!(
        report.snoozed <= 3 * 14,
        "held back tasks were polled: {report:?}"
    );
}

async fn a_limiter_the_worker_cannot_reach_starts_nothing_until_it_can(h: Harness) {
    let (omniq, faults, _) = support::faults::faulty(&h.omniq);
    let log = Arc::new(Log::default());
    let omniq = omniq.register::<Tracked>().state(LogRef(Arc::clone(&log)));
    let name = queue("unreachable");
    let task = Tracked {
        key: "k".to_owned(),
        work_ms: 1,
    };
    let handle = omniq
        .enqueue(task)
        .queue(&name)
        .limit_key("k")
        .await
        .expect("enqueue");
    faults.set(Op::ReadLimiter, Fault::Fail, Window::UntilCleared);
    let worker = omniq
        .worker()
        .queues([name.clone()])
        .limit_each_key(&name, Limit::new().concurrency(1))
        .start()
        .expect("start");
    faults
        .wait_for_faults(Op::ReadLimiter, 2, WAIT)
        .await
        .expect("the worker tries the limiter");
    assert!(
        log.starts_of("k").is_empty(),
        "nothing starts without the limiter"
    );
    faults.clear(Op::ReadLimiter);
    handle
        .wait(WAIT)
        .await
        .expect("runs once the limiter answers");
    worker.shutdown().await.expect("shutdown");
    all_ran_once(&omniq, &[handle.id()]).await;
}

async fn a_place_never_given_back_frees_itself_once_its_lease_has_lapsed(h: Harness) {
    let (omniq, faults, _) = support::faults::faulty(&h.omniq);
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let started = Arc::new(tokio::sync::Semaphore::new(0));
    let omniq = omniq.register::<Gated>().state(Gate {
        open: Arc::clone(&gate),
        started: Arc::clone(&started),
    });
    let name = queue("stale-place");
    let worker = omniq
        .worker()
        .queues([name.clone()])
        .limit_each_key(&name, Limit::new().concurrency(1))
        .start()
        .expect("start");
    let first = omniq
        .enqueue(Gated)
        .queue(&name)
        .limit_key("k")
        .await
        .expect("enqueue");
    // Its handler runs: it holds its place.
    tokio::time::timeout(WAIT, started.acquire())
        .await
        .expect("the first task starts")
        .expect("open semaphore")
        .forget();
    // The first task ends, but its place cannot be given back: the limiter's writes fail.
    faults.set(Op::WriteLimiter, Fault::Fail, Window::UntilCleared);
    gate.add_permits(1);
    first.wait(WAIT).await.expect("the first task ends");
    faults
        .wait_for_faults(Op::WriteLimiter, 1, WAIT)
        .await
        .expect("the worker tries to give the place back");
    faults.clear(Op::WriteLimiter);

    // The stale place counts until the first task's lease would have lapsed, then the
    // limiter checks it against the task, finds it finished, and frees it.
    gate.add_permits(1);
    let second = omniq
        .enqueue(Gated)
        .queue(&name)
        .limit_key("k")
        .await
        .expect("enqueue");
    second.wait(WAIT).await.expect("the second task runs");
    worker.shutdown().await.expect("shutdown");
    all_ran_once(&omniq, &[first.id(), second.id()]).await;
}

on_each_backend! {
    stale_place => a_place_never_given_back_frees_itself_once_its_lease_has_lapsed;
    per_key => a_key_runs_at_most_its_limit_at_once_while_other_keys_go_on;
    rate => starts_keep_to_every_window_of_a_queue_rate;
    unreachable => a_limiter_the_worker_cannot_reach_starts_nothing_until_it_can;
}
