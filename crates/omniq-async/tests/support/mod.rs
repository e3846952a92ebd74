//! Shared test setup: an OmniQ on each embedded backend, with short timings.

#![allow(dead_code, unreachable_pub)]

use std::ops::Deref;
use std::time::Duration;

use omniq_async::{AsyncOmniQ, Settings, StoreUrl};

/// An OmniQ plus whatever must live as long as it (the SQLite file's directory).
pub struct Harness {
    pub omniq: AsyncOmniQ,
    _dir: Option<tempfile::TempDir>,
}

impl Deref for Harness {
    type Target = AsyncOmniQ;
    fn deref(&self) -> &AsyncOmniQ {
        &self.omniq
    }
}

pub const WAIT: Duration = Duration::from_secs(20);

/// Settings with timings short enough for tests.
pub fn fast(mut settings: Settings) -> Settings {
    settings.lease = Duration::from_secs(3);
    settings.heartbeat = Duration::from_millis(500);
    settings.poll_interval = Duration::from_millis(50);
    settings.shutdown_grace = Duration::from_secs(5);
    settings
}

pub async fn memory(change: impl FnOnce(&mut Settings)) -> Harness {
    let mut settings = fast(Settings::memory());
    change(&mut settings);
    Harness {
        omniq: AsyncOmniQ::from_settings(settings)
            .await
            .expect("memory omniq"),
        _dir: None,
    }
}

pub async fn sqlite(change: impl FnOnce(&mut Settings)) -> Harness {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut settings = fast(Settings::default());
    settings.base_dir = dir.path().to_path_buf();
    change(&mut settings);
    Harness {
        omniq: AsyncOmniQ::from_settings(settings)
            .await
            .expect("sqlite omniq"),
        _dir: Some(dir),
    }
}

pub fn sqlite_file(dir: &std::path::Path) -> StoreUrl {
    StoreUrl::parse(&format!("sqlite://{}/omniq.db", dir.display())).expect("sqlite url")
}

/// Expands a test body (an `async fn(Harness)`) into one test per embedded backend.
#[macro_export]
macro_rules! on_each_backend {
    ($($name:ident => $body:expr;)*) => {
        $(
            mod $name {
                use super::*;

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn memory() {
                    ($body)(support::memory(|_| {}).await).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    ($body)(support::sqlite(|_| {}).await).await;
                }
            }
        )*
    };
}
