//! `omniq dashboard`.

use anyhow::Context;
use omniq_async::AsyncOmniQ;
use omniq_dashboard::Dashboard;

pub(super) async fn run(
    omniq: &AsyncOmniQ,
    listen: &str,
    token: Option<String>,
    read_only: bool,
    payloads: bool,
) -> anyhow::Result<()> {
    let token = token.or_else(|| {
        std::env::var("OMNIQ_DASHBOARD_TOKEN")
            .ok()
            .filter(|t| !t.is_empty())
    });
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    let addr = listener.local_addr()?;
    let mut dashboard = Dashboard::new(omniq.clone())
        .read_only(read_only)
        .show_payloads(payloads);
    if let Some(token) = token {
        dashboard = dashboard.token(token);
    }
    dashboard.check_address(addr)?;
    // Said on standard error, with the port bound, for a script that asked for port 0.
    eprintln!("omniq: dashboard on http://{addr}/ (Ctrl-C to stop)");
    dashboard
        .serve(listener, super::metrics::shutdown_signal())
        .await?;
    Ok(())
}
