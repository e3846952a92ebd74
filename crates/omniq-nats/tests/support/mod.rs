//! Shared by the NATS test files: the server URL, a prefix per test, and cleanup.

use omniq_nats::{NatsBackend, NatsOptions};
use omniq_storage::StoreResult;

/// The test server: `OMNIQ_TEST_NATS_URL`, or the local default.
pub(crate) fn nats_url() -> String {
    std::env::var("OMNIQ_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

/// A backend under a prefix no other test uses, so tests never see each other's streams.
pub(crate) async fn fresh_backend() -> StoreResult<NatsBackend> {
    let prefix = format!("omniq-test-{}", uuid::Uuid::new_v4().simple());
    NatsBackend::connect_with(&nats_url(), NatsOptions::prefix(prefix)).await
}

/// Deletes a test's streams and buckets when dropped, pass or fail (from `Drop`, so on a
/// thread of its own with a runtime of its own).
#[derive(Debug)]
pub(crate) struct DeleteOnDrop(pub(crate) NatsBackend);

impl Drop for DeleteOnDrop {
    fn drop(&mut self) {
        let prefix = self.0.prefix().to_owned();
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                if let Ok(backend) =
                    NatsBackend::connect_with(&nats_url(), NatsOptions::prefix(prefix)).await
                {
                    let _ = backend.delete_everything().await;
                }
            });
        })
        .join();
    }
}

/// Edits the stored task `id` behind the queue's back, as a hand edit, a buggy release or a
/// process killed between two writes would leave it: `edit` changes its meta line (the
/// JSON before the payload), which is written back by compare-and-set.
pub(crate) async fn edit_stored_task(
    backend: &NatsBackend,
    id: omniq_models::TaskId,
    edit: impl FnOnce(&mut serde_json::Value),
) {
    let tasks = async_nats::jetstream::new(backend.client().clone())
        .get_key_value(format!("{}_tasks", backend.prefix()))
        .await
        .expect("the tasks bucket");
    let key = format!("t.{id}");
    let entry = tasks
        .entry(key.as_str())
        .await
        .expect("read the task")
        .expect("the task is stored");
    // A task is a line of JSON, then its payload.
    let split = entry
        .value
        .iter()
        .position(|b| *b == b'\n')
        .expect("a meta line");
    let mut meta: serde_json::Value =
        serde_json::from_slice(&entry.value[..split]).expect("the meta line is JSON");
    edit(&mut meta);
    let mut bytes = serde_json::to_vec(&meta).expect("JSON");
    bytes.extend_from_slice(&entry.value[split..]);
    tasks
        .update(key.as_str(), bytes.into(), entry.revision)
        .await
        .expect("write the edited task");
}
