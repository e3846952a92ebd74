//! One module per group of commands; `run` connects to the store and dispatches.

mod bench;
mod dashboard;
mod events;
mod metrics;
mod migrate;
mod purge;
mod queues;
mod schedules;
mod tasks;

use anyhow::Context;
use clap::CommandFactory;
use omniq_async::{AsyncOmniQ, Settings, TaskId};

use crate::cli::{Cli, Command, Global};
use crate::exit::Exit;

/// Runs the command the line names.
pub(crate) async fn run(cli: Cli) -> anyhow::Result<()> {
    let json = cli.global.json;
    if let Command::Completions { shell } = cli.command {
        clap_complete::generate(shell, &mut Cli::command(), "omniq", &mut std::io::stdout());
        return Ok(());
    }
    if let Command::Bench(args) = cli.command {
        return bench::run(args, cli.global.url, json).await;
    }
    if let Command::Migrate { status } = cli.command {
        return migrate::run(&settings(&cli.global)?, status, json).await;
    }
    let omniq = connect(&cli.global).await?;
    let outcome = match cli.command {
        Command::Queues { action } => queues::run(&omniq, action, json).await,
        Command::Tasks(command) => tasks::run(&omniq, command, json).await,
        Command::DeadLetters(args) => tasks::dead_letters(&omniq, args, json).await,
        Command::Redrive(args) => tasks::redrive(&omniq, args, json).await,
        Command::Purge(args) => purge::run(&omniq, args, json).await,
        Command::Schedules(command) => schedules::run(&omniq, command, json).await,
        Command::Events(args) => events::run(&omniq, args, json).await,
        Command::Metrics { listen, every } => metrics::run(&omniq, &listen, &every).await,
        Command::Dashboard {
            listen,
            token,
            read_only,
            no_payloads,
            metrics,
        } => {
            let options = dashboard::Options {
                token,
                read_only,
                payloads: !no_payloads,
                metrics,
            };
            dashboard::run(&omniq, &listen, options).await
        }
        Command::Completions { .. } | Command::Migrate { .. } | Command::Bench(_) => Ok(()),
    };
    omniq.close().await;
    outcome
}

/// Opens the stores the settings name.
async fn connect(global: &Global) -> anyhow::Result<AsyncOmniQ> {
    let settings = settings(global)?;
    let url = settings.default_store_url().redacted();
    AsyncOmniQ::from_settings(settings)
        .await
        .with_context(|| format!("opening {url}"))
}

/// The settings: `--config`, then `OMNIQ_*`, then `--url`.
fn settings(global: &Global) -> anyhow::Result<Settings> {
    let mut builder = Settings::builder();
    if let Some(path) = &global.config {
        builder = builder.file(path);
    }
    builder = builder.env();
    if let Some(url) = &global.url {
        builder = builder.set("url", url);
    }
    builder.build().context("the settings")
}

/// Parses task ids given on the command line.
fn task_ids(ids: &[String]) -> anyhow::Result<Vec<TaskId>> {
    ids.iter()
        .map(|id| {
            id.parse::<TaskId>()
                .map_err(|err| Exit::usage(format!("`{id}` is not a task id: {err}")).into())
        })
        .collect()
}
