//! Shared by the SQS tests: the test server, a prefix of the test's own, and the deletion
//! of its queues when the test ends.

#![allow(dead_code, unreachable_pub)]

use omniq_sqs::{SqsBackend, SqsOptions};
use omniq_storage::{StoreError, StoreErrorKind, StoreResult};

/// The SQS-compatible test server: `OMNIQ_TEST_SQS_URL`, else moto on 127.0.0.1:5001.
pub fn sqs_endpoint() -> String {
    std::env::var("OMNIQ_TEST_SQS_URL").unwrap_or_else(|_| "http://127.0.0.1:5001".to_owned())
}

/// A prefix no other test uses.
pub fn test_prefix() -> String {
    format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..20])
}

/// Options for the test server under `prefix`.
pub fn options(prefix: &str) -> SqsOptions {
    SqsOptions::prefix(prefix)
        .region("us-east-1")
        .endpoint(sqs_endpoint())
        .static_credentials("test", "test")
}

/// A client of the test server under a fresh prefix; unavailable when the server does not
/// answer (the SDK connects lazily, so this asks it for something).
pub async fn fresh_backend() -> StoreResult<SqsBackend> {
    fresh_backend_with(|options| options).await
}

/// As [`fresh_backend`], on FIFO queues.
pub async fn fresh_fifo_backend() -> StoreResult<SqsBackend> {
    fresh_backend_with(|options| options.fifo(true)).await
}

/// As [`fresh_backend`], with options of the test's.
pub async fn fresh_backend_with(
    change: impl FnOnce(SqsOptions) -> SqsOptions,
) -> StoreResult<SqsBackend> {
    let address = sqs_endpoint()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let reachable = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        tokio::net::TcpStream::connect(address),
    )
    .await;
    if !matches!(reachable, Ok(Ok(_))) {
        return Err(StoreError::unavailable(
            "SQS",
            "the test server does not answer",
        ));
    }
    SqsBackend::connect_with(change(options(&test_prefix()))).await
}

/// [`fresh_backend_with`] `change`, or `None` (said loudly) when the test server is away
/// and `OMNIQ_TEST_REQUIRE_SERVICES=1` is not set.
///
/// # Panics
/// When the server is away and services are required, or answers with another error.
pub async fn backend_or_skip(
    test: &str,
    change: impl FnOnce(SqsOptions) -> SqsOptions,
) -> Option<SqsBackend> {
    match fresh_backend_with(change).await {
        Ok(backend) => Some(backend),
        Err(err)
            if err.kind() == StoreErrorKind::Unavailable
                && std::env::var("OMNIQ_TEST_REQUIRE_SERVICES").as_deref() != Ok("1") =>
        {
            eprintln!("SKIPPED {test}: the SQS test server is unavailable ({err})");
            None
        }
        Err(err) => panic!("cannot reach the SQS test server: {err}"),
    }
}

/// Deletes a test's queues when dropped, pass or fail (from `Drop`, so on a thread of its
/// own, with a runtime of its own).
#[derive(Debug)]
pub struct DeleteOnDrop(pub SqsBackend);

impl Drop for DeleteOnDrop {
    fn drop(&mut self) {
        let backend = self.0.clone();
        let names = backend.created();
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                let _ = backend.delete(&names).await;
            });
        })
        .join();
    }
}
