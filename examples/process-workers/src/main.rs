//! CPU-heavy tasks on process workers: each handler runs in a child process of this
//! program, so a runaway handler is killed at its timeout (a hard timeout, even for a loop
//! that never yields) and a crash fails one attempt, not the worker.
//!
//! Needs a Unix system; OmniQ runs on embedded SQLite under `OMNIQ_BASE_DIR` (default
//! `./.omniq`; the children must find the same stores, so not a temporary directory).
//!
//! ```text
//! cargo run -p example-process-workers
//! ```

use std::time::Duration;

use omniq_async::prelude::*;
use omniq_async::{Error, is_process_child};

/// Counts the primes below `limit`, the slow way: CPU-bound work.
#[task(queue = "cpu")]
fn count_primes(limit: u64) -> Result<(u64, u32), TaskError> {
    let count = (2..limit)
        .filter(|n| (2..*n).take_while(|d| d * d <= *n).all(|d| n % d != 0))
        .count();
    Ok((count as u64, std::process::id()))
}

/// Never finishes: only killing its process stops it.
#[task(queue = "cpu", max_attempts = 1, timeout = Duration::from_millis(500))]
fn runaway() -> Result<(), TaskError> {
    loop {
        std::hint::spin_loop();
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Children run this `main` up to the worker's start: register first, and keep side
    // effects (enqueueing) to the parent.
    let omniq = AsyncOmniQ::from_env()
        .await?
        .register_blocking::<count_primes>()
        .register_blocking::<runaway>();
    let mut handles = Vec::new();
    let mut stuck = None;
    if !is_process_child() {
        for limit in [20_000, 40_000, 60_000, 80_000] {
            handles.push((limit, omniq.enqueue(count_primes { limit }).await?));
        }
        stuck = Some(omniq.enqueue(runaway {}).await?);
    }
    // In a child, this serves the parent and never returns.
    let worker = omniq
        .worker()
        .kind(WorkerKind::Process)
        .queues(["cpu"])
        .concurrency(2)
        .max_tasks_per_child(Some(100))
        .start()?;

    for (limit, handle) in handles {
        let (count, pid) = handle.wait(Duration::from_secs(60)).await?;
        println!("{count} primes below {limit} (child process {pid})");
    }
    if let Some(stuck) = stuck {
        match stuck.wait(Duration::from_secs(60)).await {
            Err(Error::TaskFailed { error, .. }) => println!("runaway task: {error}"),
            other => anyhow::bail!("the runaway task should have timed out: {other:?}"),
        }
    }
    println!("parent process {}", std::process::id());
    worker.shutdown().await?;
    Ok(())
}
