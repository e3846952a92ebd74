//! `omniq-bench`: measures OmniQ on one backend and prints a table (or JSON).

use clap::Parser;
use omniq_bench::{Options, scenarios, table};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let options = Options::parse();
    if options.worker_only {
        return scenarios::worker_process(&options).await;
    }
    let rows = omniq_bench::run(&options).await?;
    if options.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print!("{}", table(&rows));
    }
    Ok(())
}
