//! A Prometheus endpoint for a process's OmniQ metrics (feature `prometheus`).

use std::net::SocketAddr;

use axum::Router;
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;

use crate::{Error, Result};

/// How often the recorder's histograms are drained when nothing scrapes them.
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Serves `GET /metrics` in Prometheus's text format, from a Prometheus recorder installed
/// as the process's `metrics` recorder. Stops serving when dropped.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use omniq_async::MetricsEndpoint;
///
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:9464").await?;
/// let endpoint = MetricsEndpoint::serve(listener)?;
/// println!("metrics on http://{}/metrics", endpoint.local_addr());
/// // ... start workers; every counter and histogram of docs/metrics.md shows up there.
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct MetricsEndpoint {
    local_addr: SocketAddr,
    handle: PrometheusHandle,
    task: tokio::task::JoinHandle<()>,
}

impl MetricsEndpoint {
    /// Installs the recorder and starts serving on `listener`. Install it before workers
    /// start: a worker takes its metric handles from the recorder installed at the time.
    ///
    /// Must be called within a Tokio runtime.
    ///
    /// # Errors
    /// [`Error::Metrics`] when the process already has a `metrics` recorder, or the
    /// listener's address cannot be read.
    pub fn serve(listener: TcpListener) -> Result<Self> {
        let local_addr = listener
            .local_addr()
            .map_err(|e| Error::Metrics(e.to_string()))?;
        let handle = PrometheusBuilder::new()
            .install_recorder()
            .map_err(|e| Error::Metrics(e.to_string()))?;
        let render = handle.clone();
        let app = Router::new().route(
            "/metrics",
            get(move || {
                let render = render.clone();
                async move { render.render() }
            }),
        );
        let upkeep = handle.clone();
        let task = tokio::spawn(async move {
            // The recorder drains its histograms only on a scrape or an upkeep: without this,
            // a process nobody scrapes would keep every sample.
            let upkeep = async move {
                let mut ticks = tokio::time::interval(UPKEEP_EVERY);
                loop {
                    ticks.tick().await;
                    upkeep.run_upkeep();
                }
            };
            tokio::select! {
                served = axum::serve(listener, app) => {
                    if let Err(err) = served {
                        tracing::error!(error = %err, "the metrics endpoint stopped");
                    }
                }
                () = upkeep => {}
            }
        });
        Ok(Self {
            local_addr,
            handle,
            task,
        })
    }

    /// The address it serves on (useful after binding port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The metrics as the endpoint would serve them now.
    pub fn render(&self) -> String {
        self.handle.render()
    }
}

impl Drop for MetricsEndpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}
