//! OmniQ's benchmark program, as a library so its tests can run every scenario.
//!
//! ```text
//! cargo run --release -p omniq-bench -- --url sqlite --tasks 20000 --scenario throughput
//! ```

pub mod held;
pub mod options;
pub mod probe;
pub mod report;
pub mod scenarios;
pub mod target;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub use options::{Options, Scenario};
pub use report::{Measurement, table};

/// Runs the chosen scenarios on the chosen backend. The progress bar shows unless
/// `--json` is set or stderr is not a terminal.
///
/// # Errors
/// A store that cannot be opened, or a failure during a scenario.
pub async fn run(options: &Options) -> anyhow::Result<Vec<Measurement>> {
    let progress = ProgressBar::new(0);
    if options.json || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        progress.set_draw_target(ProgressDrawTarget::hidden());
    } else {
        progress.set_style(
            ProgressStyle::with_template("{msg:40} [{bar:30}] {pos}/{len} ({per_sec})")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
    }
    let mut target = target::Target::new(&options.url, options.results_url.as_deref());
    let mut rows = Vec::new();
    for scenario in options.scenarios() {
        rows.extend(scenarios::run(scenario, &mut target, options, &progress).await?);
    }
    progress.finish_and_clear();
    Ok(rows)
}
