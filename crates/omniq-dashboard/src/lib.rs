//! A web dashboard for OmniQ: queues with live counts, tasks by state with search, a page per
//! task (payload, attempts, errors, result, event timeline), dead letters with retry,
//! re-drive and purge, schedules with pause and resume, and the workers seen recently.
//!
//! Server-rendered HTML with a few lines of JavaScript (live counts over server-sent
//! events); nothing to build, nothing fetched from the internet. Safe by default: it serves
//! on a loopback address unless a token is set, every action is a POST carrying the page's
//! anti-forgery token, and it can be read-only and hide payloads.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use omniq_async::AsyncOmniQ;
//! use omniq_dashboard::Dashboard;
//!
//! let omniq = AsyncOmniQ::from_env().await?;
//! // Standalone, on loopback:
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! Dashboard::new(omniq.clone())
//!     .serve(listener, omniq_async::shutdown_signal())
//!     .await?;
//!
//! // Or nested in an app, behind the app's own auth layer:
//! let app: axum::Router = axum::Router::new()
//!     .nest("/admin/queues", Dashboard::new(omniq).base_path("/admin/queues").router());
//! # Ok(()) }
//! ```

mod actions;
mod auth;
mod html;
mod live;
mod pages;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use omniq_async::AsyncOmniQ;
use tokio::net::TcpListener;

/// Why the dashboard would not serve.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DashboardError {
    /// Asked to listen beyond loopback with no token: anyone who can reach the address
    /// could retry, cancel and purge tasks.
    #[error(
        "refusing to serve the dashboard on {0} without a token: set one (`Dashboard::token`, \
         `OMNIQ_DASHBOARD_TOKEN`) or listen on 127.0.0.1"
    )]
    Unprotected(SocketAddr),
    /// The listener failed.
    #[error("the dashboard's listener failed: {0}")]
    Io(#[from] std::io::Error),
}

/// The dashboard's settings, shared by every request.
#[derive(Debug)]
pub(crate) struct Config {
    /// Where the router is nested (`""` when it is the whole app), for links and redirects.
    pub(crate) base: String,
    /// No actions: pages only; POSTs are refused.
    pub(crate) read_only: bool,
    /// Whether task pages show payloads and results.
    pub(crate) payloads: bool,
    /// The anti-forgery token every action form carries (random per dashboard).
    pub(crate) csrf: String,
    /// The token a request must present (HTTP Basic password or `Authorization: Bearer`).
    pub(crate) token: Option<String>,
    /// Served alone on loopback without a token: only requests addressed to a loopback
    /// name are answered, so a web page whose domain rebinds to 127.0.0.1 cannot use it.
    pub(crate) loopback_hosts_only: bool,
}

/// What every handler gets.
#[derive(Debug, Clone)]
pub(crate) struct App {
    pub(crate) omniq: AsyncOmniQ,
    pub(crate) config: Arc<Config>,
}

/// The dashboard, configured; [`Dashboard::router`] to nest it, [`Dashboard::serve`] to run
/// it alone.
#[derive(Debug)]
pub struct Dashboard {
    omniq: AsyncOmniQ,
    config: Config,
    #[cfg(feature = "prometheus")]
    metrics: Option<omniq_async::PrometheusRecorder>,
}

impl Dashboard {
    /// A dashboard over `omniq`'s stores: actions on, payloads shown, no token, at the root.
    pub fn new(omniq: AsyncOmniQ) -> Self {
        Self {
            omniq,
            config: Config {
                base: String::new(),
                read_only: false,
                payloads: true,
                csrf: uuid::Uuid::new_v4().simple().to_string(),
                token: None,
                loopback_hosts_only: false,
            },
            #[cfg(feature = "prometheus")]
            metrics: None,
        }
    }

    /// Pages only: no action buttons, and every POST refused.
    pub fn read_only(mut self, read_only: bool) -> Self {
        self.config.read_only = read_only;
        self
    }

    /// Whether task pages show payloads and results (they may hold personal data).
    pub fn show_payloads(mut self, show: bool) -> Self {
        self.config.payloads = show;
        self
    }

    /// Requires this token on every request: as the password of HTTP Basic auth (any user
    /// name; browsers ask for it) or as `Authorization: Bearer <token>`.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        let token = token.into();
        self.config.token = (!token.is_empty()).then_some(token);
        self
    }

    /// The path the router is nested under in an app (`"/admin/queues"`), for its links.
    pub fn base_path(mut self, base: impl Into<String>) -> Self {
        self.config.base = base.into().trim_end_matches('/').to_owned();
        self
    }

    /// Serves `recorder`'s metrics at `GET /metrics` in Prometheus's text format, behind
    /// the dashboard's token like every route (a scraper sends it as a Bearer token).
    /// Feature `prometheus`.
    #[cfg(feature = "prometheus")]
    pub fn metrics(mut self, recorder: omniq_async::PrometheusRecorder) -> Self {
        self.metrics = Some(recorder);
        self
    }

    /// The dashboard's routes, to serve or to nest in an app (with [`Dashboard::base_path`]
    /// set to where it is nested). The app's own layers (its auth) apply to it as to any
    /// route.
    pub fn router(self) -> Router {
        let app = App {
            omniq: self.omniq,
            config: Arc::new(self.config),
        };
        let router = Router::new()
            .route("/", get(pages::queues))
            .route("/queues/pause", post(actions::pause_queue))
            .route("/queues/resume", post(actions::resume_queue))
            .route("/tasks", get(pages::tasks))
            .route("/tasks/{id}", get(pages::task))
            .route("/tasks/{id}/retry", post(actions::retry))
            .route("/tasks/{id}/cancel", post(actions::cancel))
            .route("/dead-letters", get(pages::dead_letters))
            .route("/dead-letters/redrive", post(actions::redrive))
            .route("/dead-letters/purge", post(actions::purge))
            .route("/schedules", get(pages::schedules))
            .route("/schedules/{name}/{action}", post(actions::schedule))
            .route("/workers", get(pages::workers))
            .route("/live", get(live::counts));
        #[cfg(feature = "prometheus")]
        let router = match self.metrics {
            Some(recorder) => router.route(
                "/metrics",
                get(move || {
                    let recorder = recorder.clone();
                    async move { recorder.render() }
                }),
            ),
            None => router,
        };
        router
            .layer(axum::middleware::from_fn_with_state(
                app.clone(),
                auth::require_token,
            ))
            .with_state(app)
    }

    /// Refuses an address beyond loopback when no token is set.
    ///
    /// # Errors
    /// [`DashboardError::Unprotected`].
    pub fn check_address(&self, addr: SocketAddr) -> Result<(), DashboardError> {
        if !addr.ip().is_loopback() && self.config.token.is_none() {
            return Err(DashboardError::Unprotected(addr));
        }
        Ok(())
    }

    /// Serves the dashboard on `listener` until `shutdown` completes. Refuses a listener
    /// beyond loopback when no token is set; without a token it answers only requests
    /// addressed to a loopback name (`localhost`, `127.0.0.1`, `[::1]`), which defeats DNS
    /// rebinding.
    ///
    /// # Errors
    /// [`DashboardError::Unprotected`], or the listener's error.
    pub async fn serve(
        mut self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), DashboardError> {
        self.check_address(listener.local_addr()?)?;
        self.config.loopback_hosts_only = self.config.token.is_none();
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await?;
        Ok(())
    }
}
