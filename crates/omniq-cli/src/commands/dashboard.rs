//! `omniq dashboard`.

use anyhow::Context;
use omniq_async::layers::config::parse_duration;
use omniq_async::{AsyncOmniQ, PrometheusRecorder};
use omniq_dashboard::Dashboard;

use crate::exit::Exit;

/// The command's flags.
pub(super) struct Options {
    pub(super) token: Option<String>,
    pub(super) read_only: bool,
    pub(super) payloads: bool,
    /// How often to read the queue gauges, when `/metrics` is served.
    pub(super) metrics: Option<String>,
}

pub(super) async fn run(omniq: &AsyncOmniQ, listen: &str, options: Options) -> anyhow::Result<()> {
    let token = options.token.or_else(|| {
        std::env::var("OMNIQ_DASHBOARD_TOKEN")
            .ok()
            .filter(|t| !t.is_empty())
    });
    let every = match &options.metrics {
        Some(every) => Some(
            parse_duration(every)
                .ok()
                .filter(|every| !every.is_zero())
                .ok_or_else(|| {
                    Exit::usage(format!("`--metrics {every}`: expected a duration like 15s"))
                })?,
        ),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    let addr = listener.local_addr()?;
    let mut dashboard = Dashboard::new(omniq.clone())
        .read_only(options.read_only)
        .show_payloads(options.payloads);
    if let Some(token) = token {
        dashboard = dashboard.token(token);
    }
    dashboard.check_address(addr)?;
    let _gauges = match every {
        Some(every) => {
            dashboard = dashboard.metrics(PrometheusRecorder::install()?);
            Some(omniq.record_queue_gauges(every))
        }
        None => None,
    };
    // Said on standard error, with the port bound, for a script that asked for port 0.
    eprintln!("omniq: dashboard on http://{addr}/ (Ctrl-C to stop)");
    dashboard
        .serve(listener, super::metrics::shutdown_signal())
        .await?;
    Ok(())
}
