//! The quickstart: two tasks, a batch of work, a worker, the results.
//!
//! Runs on the embedded default (an SQLite file under `./.omniq`), so it needs no server:
//!
//! ```text
//! cargo run --example quickstart
//! ```
//!
//! Point it elsewhere with `OMNIQ_TASK_QUEUE_URL` and friends (see the README).

use std::time::{Duration, Instant};

use omniq_async::prelude::*;

/// Counts the words of a text: the whole task definition is this function; `#[task]` makes
/// `word_count` a task type too, whose fields are the arguments.
#[task(name = "text.word_count")]
async fn word_count(text: String, ctx: TaskContext) -> Result<usize, TaskError> {
    tracing::debug!(attempt = ctx.attempt(), "counting words");
    Ok(text.split_whitespace().count())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Nothing configured: every store is the SQLite file ./.omniq/omniq.db.
    let settings = Settings::from_env()?;
    // A library installs no logger; the application does, with OmniQ's `log_level`
    // setting (`OMNIQ_LOG_LEVEL`) as its filter.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&settings.log_level)?)
        .init();
    let omniq = AsyncOmniQ::from_settings(settings)
        .await?
        .register::<word_count>()
        // A closure, registered by name: the Rust take on a `@task` decorator.
        .register_fn("math.add", |(a, b): (i64, i64)| async move { Ok(a + b) });

    let started = Instant::now();
    let texts = [
        "the quick brown fox",
        "jumps over the lazy dog",
        "OmniQ never loses a task",
    ];
    let counts = omniq
        .enqueue_many(texts.iter().map(|t| word_count {
            text: (*t).to_owned(),
        }))
        .await?;
    let mut sums = Vec::new();
    for (a, b) in [(1, 2), (20, 22), (300, 33)] {
        sums.push(
            omniq
                .enqueue_by_name::<i64>("math.add", (a, b))
                .priority(1)
                .await?,
        );
    }

    let worker = omniq.worker().concurrency(8).start()?;
    for (text, handle) in texts.iter().zip(&counts) {
        let words = handle.wait(Duration::from_secs(30)).await?;
        println!("word_count({text:?}) = {words}");
    }
    for ((a, b), handle) in [(1, 2), (20, 22), (300, 33)].iter().zip(&sums) {
        let sum = handle.wait(Duration::from_secs(30)).await?;
        println!("add({a}, {b}) = {sum}");
    }
    let report = worker.shutdown().await?;
    omniq.close().await;

    println!(
        "done: {} tasks succeeded in {:.0?} (worker: {} succeeded, {} retried, {} dead-lettered)",
        counts.len() + sums.len(),
        started.elapsed(),
        report.succeeded,
        report.retried,
        report.dead_lettered,
    );
    Ok(())
}
