//! The quickstart through the blocking facade: no `async`, no runtime of your own.
//!
//! ```text
//! cargo run --example blocking
//! ```

use std::time::{Duration, Instant};

use omniq::{BlockingTask, OmniQ, TaskContext, TaskError};
use serde::{Deserialize, Serialize};

/// Counts the words of a text, on a worker thread.
#[derive(Debug, Serialize, Deserialize)]
struct WordCount {
    text: String,
}

impl BlockingTask for WordCount {
    const NAME: &'static str = "text.word_count";
    type Output = usize;

    fn run(self, _ctx: TaskContext) -> Result<usize, TaskError> {
        Ok(self.text.split_whitespace().count())
    }
}

fn main() -> anyhow::Result<()> {
    let omniq = OmniQ::from_env()?
        .register_blocking::<WordCount>()
        .register_fn("math.add", |(a, b): (i64, i64)| Ok(a + b));

    let started = Instant::now();
    let texts = [
        "the quick brown fox",
        "jumps over the lazy dog",
        "OmniQ never loses a task",
    ];
    let counts = omniq.enqueue_many(texts.iter().map(|t| WordCount {
        text: (*t).to_owned(),
    }))?;
    let pairs = [(1, 2), (20, 22), (300, 33)];
    let sums = pairs
        .iter()
        .map(|&(a, b)| {
            omniq
                .enqueue_by_name::<i64>("math.add", (a, b))
                .priority(1)
                .submit()
        })
        .collect::<Result<Vec<_>, _>>()?;

    let worker = omniq.worker().concurrency(4).threads().start()?;
    for (text, handle) in texts.iter().zip(&counts) {
        println!(
            "word_count({text:?}) = {}",
            handle.wait(Duration::from_secs(30))?
        );
    }
    for ((a, b), handle) in pairs.iter().zip(&sums) {
        println!("add({a}, {b}) = {}", handle.wait(Duration::from_secs(30))?);
    }
    let report = worker.shutdown()?;
    omniq.close()?;
    println!(
        "done: {} tasks succeeded in {:.0?} (worker: {} succeeded)",
        counts.len() + sums.len(),
        started.elapsed(),
        report.succeeded
    );
    Ok(())
}
