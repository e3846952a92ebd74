//! Shared by the RabbitMQ tests: a broker under a prefix of the test's own, whose queues
//! are deleted when the test ends.

#![allow(dead_code, unreachable_pub)]

use omniq_amqp::{AmqpBackend, AmqpOptions};
use omniq_storage::StoreResult;

/// The broker the tests use: `OMNIQ_TEST_AMQP_URL`, else RabbitMQ on 127.0.0.1:5672.
pub fn amqp_url() -> String {
    std::env::var("OMNIQ_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

/// A prefix no other test uses.
pub fn test_prefix() -> String {
    format!("omniq-test-{}", uuid::Uuid::new_v4().simple())
}

/// A broker connection under a fresh prefix.
pub async fn fresh_backend() -> StoreResult<AmqpBackend> {
    AmqpBackend::connect_with(&amqp_url(), AmqpOptions::prefix(test_prefix())).await
}

/// Deletes what a test's handles declared when dropped, pass or fail (from `Drop`, so on
/// a thread of its own, on a connection of its own).
#[derive(Debug)]
pub struct DeleteOnDrop(pub Vec<AmqpBackend>);

impl Drop for DeleteOnDrop {
    fn drop(&mut self) {
        let mut names: Vec<String> = self.0.iter().flat_map(AmqpBackend::declared).collect();
        names.sort();
        names.dedup();
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                if let Ok(backend) =
                    AmqpBackend::connect_with(&amqp_url(), AmqpOptions::default()).await
                {
                    let _ = backend.delete(&names).await;
                    backend.close().await;
                }
            });
        })
        .join();
    }
}
