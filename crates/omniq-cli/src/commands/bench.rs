//! `omniq bench`: the benchmark program, on the store `--url` names.

use omniq_bench::{Options, scenarios, table};

use crate::cli::BenchArgs;

/// Runs the benchmark (or, with `--worker-only`, one of its worker processes).
pub(crate) async fn run(args: BenchArgs, url: Option<String>, json: bool) -> anyhow::Result<()> {
    let options = Options {
        // Never the configured store: the benchmark fills and empties its queues.
        url: url.unwrap_or_else(|| "sqlite".to_owned()),
        results_url: args.results_url,
        tasks: args.tasks,
        concurrency: args.concurrency,
        workers: args.workers,
        processes: args.processes,
        scenario: args.scenario,
        depth: args.depth,
        latency_tasks: args.latency_tasks,
        json,
        worker_only: args.worker_only,
        queue: args.queue,
        worker_exe: None,
        worker_command: vec!["bench".to_owned()],
    };
    if options.worker_only {
        return scenarios::worker_process(&options).await;
    }
    let rows = omniq_bench::run(&options).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print!("{}", table(&rows));
    }
    Ok(())
}
