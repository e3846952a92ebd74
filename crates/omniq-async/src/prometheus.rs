//! A Prometheus endpoint for a process's OmniQ metrics (feature `prometheus`).

use std::net::SocketAddr;

use axum::Router;
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;

use crate::{Error, Result};

/// How often the recorder's histograms are drained when nothing scrapes them.
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// The process's Prometheus recorder, installed as its `metrics` recorder: every counter,
/// gauge and histogram of docs/metrics.md, rendered in Prometheus's text format on demand.
/// Its histograms are drained every five seconds while a clone lives.
///
/// [`MetricsEndpoint`] serves it on a port of its own; the dashboard (`omniq-dashboard`,
/// feature `prometheus`) or an app's own router can serve [`PrometheusRecorder::render`].
#[derive(Debug, Clone)]
pub struct PrometheusRecorder {
    handle: PrometheusHandle,
    _upkeep: std::sync::Arc<Upkeep>,
}

#[derive(Debug)]
struct Upkeep(tokio::task::JoinHandle<()>);

impl Drop for Upkeep {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl PrometheusRecorder {
    /// Installs the recorder. Install it before workers start: a worker takes its metric
    /// handles from the recorder installed at the time.
    ///
    /// Must be called within a Tokio runtime.
    ///
    /// # Errors
    /// [`Error::Metrics`] when the process already has a `metrics` recorder.
    pub fn install() -> Result<Self> {
        let handle = PrometheusBuilder::new()
            .install_recorder()
            .map_err(|e| Error::Metrics(e.to_string()))?;
        let upkeep = handle.clone();
        // The recorder drains its histograms only on a scrape or an upkeep: without this, a
        // process nobody scrapes would keep every sample.
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(UPKEEP_EVERY);
            loop {
                ticks.tick().await;
                upkeep.run_upkeep();
            }
        });
        Ok(Self {
            handle,
            _upkeep: std::sync::Arc::new(Upkeep(task)),
        })
    }

    /// The metrics in Prometheus's text format, as a scrape would get them now.
    pub fn render(&self) -> String {
        self.handle.render()
    }
}

/// Serves `GET /metrics` in Prometheus's text format, from a [`PrometheusRecorder`]
/// installed as the process's `metrics` recorder. Stops serving when dropped.
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
    recorder: PrometheusRecorder,
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
        let recorder = PrometheusRecorder::install()?;
        let render = recorder.clone();
        let app = Router::new().route(
            "/metrics",
            get(move || {
                let render = render.clone();
                async move { render.render() }
            }),
        );
        let task = tokio::spawn(async move {
            if let Err(err) = axum::serve(listener, app).await {
                tracing::error!(error = %err, "the metrics endpoint stopped");
            }
        });
        Ok(Self {
            local_addr,
            recorder,
            task,
        })
    }

    /// The address it serves on (useful after binding port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The metrics as the endpoint would serve them now.
    pub fn render(&self) -> String {
        self.recorder.render()
    }
}

impl Drop for MetricsEndpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}
