//! `omniq metrics`: the store's queue gauges for Prometheus.

use anyhow::Context;
use omniq_async::layers::config::parse_duration;
use omniq_async::{AsyncOmniQ, MetricsEndpoint};

use crate::exit::Exit;

pub(super) async fn run(omniq: &AsyncOmniQ, listen: &str, every: &str) -> anyhow::Result<()> {
    let every = parse_duration(every)
        .ok()
        .filter(|every| !every.is_zero())
        .ok_or_else(|| Exit::usage(format!("`--every {every}`: expected a duration like 15s")))?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    let endpoint = MetricsEndpoint::serve(listener)?;
    let _gauges = omniq.record_queue_gauges(every);
    // Said on standard error, with the port bound, so that a script (or a test) that asked
    // for port 0 knows where to scrape.
    eprintln!(
        "omniq: serving metrics on http://{}/metrics (Ctrl-C to stop)",
        endpoint.local_addr()
    );
    shutdown_signal().await;
    Ok(())
}

/// SIGINT or SIGTERM.
pub(super) async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
