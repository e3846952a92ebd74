//! A plain synchronous script, no `async` anywhere: enqueue a batch, run a worker on
//! threads, read the results, with the blocking facade `omniq`.
//!
//! Needs nothing: OmniQ runs on embedded SQLite in a temporary directory.
//!
//! ```text
//! cargo run -p example-blocking-script -- some words to count
//! ```

use std::time::Duration;

use omniq::prelude::*;

/// Counts the letters of a word, on a worker thread.
#[task]
fn letters(word: String) -> Result<usize, TaskError> {
    Ok(word.chars().filter(|c| c.is_alphabetic()).count())
}

fn main() -> anyhow::Result<()> {
    let words: Vec<String> = std::env::args().skip(1).collect();
    let words = if words.is_empty() {
        vec!["blocking".to_owned(), "facade".to_owned()]
    } else {
        words
    };
    let dir = tempfile::tempdir()?;
    let settings = Settings {
        base_dir: dir.path().to_path_buf(),
        ..Settings::default()
    };
    let omniq = OmniQ::from_settings(settings)?.register_blocking::<letters>();

    let handles = omniq.enqueue_many(words.iter().map(|word| letters { word: word.clone() }))?;
    let worker = omniq
        .worker()
        .kind(WorkerKind::Thread)
        .concurrency(4)
        .start()?;
    for (word, handle) in words.iter().zip(handles) {
        println!("{word}: {}", handle.wait(Duration::from_secs(20))?);
    }
    let report = worker.shutdown()?;
    println!("{} tasks succeeded", report.succeeded);
    Ok(())
}
