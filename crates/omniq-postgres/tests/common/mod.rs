//! Helpers shared by this crate's integration tests.

#![allow(dead_code)]

use std::time::Duration;

use omniq_postgres::{PgBackend, PgOptions, PoolSettings};
use omniq_storage::StoreErrorKind;
use omniq_storage::conformance::services_required;

/// The test server's URL.
pub(crate) fn url() -> String {
    std::env::var("OMNIQ_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A backend on the test server in `schema`, or `None` (said loudly) when the server is
/// unreachable and services are not required.
pub(crate) async fn backend(test: &str, schema: &str) -> Option<PgBackend> {
    let options = PgOptions::default().schema(schema).pool(
        PoolSettings::default()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(10)),
    );
    match PgBackend::connect_with(&url(), options).await {
        Ok(backend) => Some(backend),
        Err(err) if err.kind() == StoreErrorKind::Unavailable && !services_required() => {
            eprintln!(
                "SKIPPED `{test}`: PostgreSQL unavailable ({err}); \
                 set OMNIQ_TEST_REQUIRE_SERVICES=1 to make this an error"
            );
            None
        }
        Err(err) => panic!("`{test}`: cannot connect to PostgreSQL: {err}"),
    }
}

/// A queue name no other test uses.
pub(crate) fn unique_queue(label: &str) -> String {
    format!("{label}-{}", uuid::Uuid::new_v4().simple())
}
