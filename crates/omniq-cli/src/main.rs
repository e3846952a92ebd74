//! `omniq`: see and act on OmniQ queues from a shell, on any backend.
//!
//! ```text
//! $ omniq --url postgres://localhost/app queues
//! QUEUE    QUEUED  SCHEDULED  RUNNING  SUCCEEDED  FAILED  OLDEST QUEUED
//! default  1204    3          16       88120      2       4s
//! $ omniq tasks list --state failed --json | jq '.[].id'
//! $ omniq redrive --queue default
//! ```
//!
//! Every command prints a table by default and JSON with `--json`; the exit code says what
//! happened (0 done, 1 store or configuration error, 2 usage, 3 not found, 4 nothing to do).

mod cli;
mod commands;
mod exit;
mod output;
mod view;
mod when;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::Cli;
use crate::exit::Exit;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("omniq: cannot start the runtime: {err}");
            return ExitCode::from(exit::ERROR);
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let code = err.downcast_ref::<Exit>().map_or(exit::ERROR, Exit::code);
            eprintln!("omniq: {err:#}");
            ExitCode::from(code)
        }
    }
}
