//! What OmniQ's own tests share: a plain HTTP/1.1 client for the servers they start
//! (dashboards, metrics endpoints, example apps), with every wait bounded, and the
//! conformance fixture of a broker ([`broker::fixture`]).
//!
//! ```no_run
//! # async fn run() -> anyhow::Result<()> {
//! let page = omniq_testkit::http::get("127.0.0.1:8080", "/").await?;
//! omniq_testkit::http::scrape_until("127.0.0.1:9464", &["omniq_queue_tasks{queue=\"a\",state=\"queued\"} 1"]).await?;
//! # let _ = page; Ok(()) }
//! ```

pub mod broker;
pub mod http;

/// The bound on every wait of this crate.
pub const WAIT: std::time::Duration = std::time::Duration::from_secs(30);
