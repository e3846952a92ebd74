//! A dependency graph: two downloads, a merge that waits for both and reads their results,
//! and callbacks that run on the merge's success or on its failure.
//!
//! Needs nothing: OmniQ runs on embedded SQLite in a temporary directory.
//!
//! ```text
//! cargo run -p example-dependencies
//! ```

use std::time::Duration;

use omniq_async::prelude::*;

/// Downloads a part (here: makes one up).
#[task]
async fn download(part: String) -> Result<Vec<u32>, TaskError> {
    if part == "broken" {
        return Err(TaskError::permanent("the server has no such part"));
    }
    Ok(part.bytes().map(u32::from).collect())
}

/// Merges the results of its parents.
#[task]
async fn merge(ctx: TaskContext) -> Result<usize, TaskError> {
    let mut total = 0;
    for parent in ctx.parents() {
        total += ctx.parent_result::<Vec<u32>>(*parent).await?.len();
    }
    Ok(total)
}

/// Runs on the outcome of its parent (a callback).
#[task]
async fn notify(message: String) -> Result<(), TaskError> {
    println!("notify: {message}");
    Ok(())
}

async fn pipeline(omniq: &AsyncOmniQ, parts: [&str; 2]) -> anyhow::Result<()> {
    let a = omniq
        .enqueue(download {
            part: parts[0].into(),
        })
        .await?;
    let b = omniq
        .enqueue(download {
            part: parts[1].into(),
        })
        .await?;
    let merged = omniq
        .enqueue(merge {})
        .depends_on(a.id())
        .depends_on(b.id())
        .await?;
    let done = omniq
        .enqueue(notify {
            message: format!("{parts:?} merged"),
        })
        .depends_on(merged.id())
        .await?;
    let failed = omniq
        .enqueue(notify {
            message: format!("{parts:?} failed"),
        })
        .depends_on(merged.id())
        .run_when(RunWhen::ParentFailed)
        .await?;
    match merged.wait(Duration::from_secs(20)).await {
        Ok(total) => println!("{parts:?}: {total} items"),
        Err(err) => println!("{parts:?}: {err}"),
    }
    // One callback runs; the other is cancelled, its condition unmet.
    for (name, callback) in [("on success", done), ("on failure", failed)] {
        match callback.wait(Duration::from_secs(20)).await {
            Ok(()) => println!("  callback {name}: ran"),
            Err(omniq_async::Error::TaskEnded { state, .. }) => {
                println!("  callback {name}: {state}");
            }
            Err(err) => return Err(err.into()),
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let settings = Settings {
        base_dir: dir.path().to_path_buf(),
        ..Settings::default()
    };
    let omniq = AsyncOmniQ::from_settings(settings)
        .await?
        .register::<download>()
        .register::<merge>()
        .register::<notify>();
    let worker = omniq.worker().start()?;
    pipeline(&omniq, ["alpha", "beta"]).await?;
    pipeline(&omniq, ["alpha", "broken"]).await?;
    worker.shutdown().await?;
    Ok(())
}
