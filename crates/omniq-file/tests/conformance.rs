//! The shared conformance suite and the scheduler's suite on the object-store backend
//! (queue, results, events and schedules all on one store), over a local directory,
//! object_store's in-memory store, S3 (moto) and Azure (azurite), each case under a
//! prefix or directory of its own.

mod support;

use std::sync::Arc;

use bytes::Bytes;
use omniq_file::{FileEventStore, FileResultStore, FileScheduleStore, FileTaskQueue, Objects};
use omniq_models::{TaskId, TaskResult};
use omniq_storage::conformance::{Corrupt, Fixture, Reopen};
use omniq_storage::{BoxFuture, ResultStore, StoreError, StoreResult, TaskQueue};

/// The result store, holding what keeps the case's objects (a temporary directory, or
/// the guard that deletes a test prefix) for as long as the case runs.
#[derive(Debug)]
struct Results {
    store: FileResultStore,
    _keep: Box<dyn std::any::Any + Send + Sync>,
}

impl ResultStore for Results {
    fn put(&self, results: Vec<TaskResult>) -> BoxFuture<'_, StoreResult<()>> {
        self.store.put(results)
    }

    fn get(&self, id: TaskId) -> BoxFuture<'_, StoreResult<Option<TaskResult>>> {
        self.store.get(id)
    }

    fn delete(&self, id: TaskId) -> BoxFuture<'_, StoreResult<bool>> {
        self.store.delete(id)
    }

    fn purge_expired(&self, limit: usize) -> BoxFuture<'_, StoreResult<u64>> {
        self.store.purge_expired(limit)
    }

    fn wait_for(
        &self,
        id: TaskId,
        timeout: std::time::Duration,
    ) -> BoxFuture<'_, StoreResult<Option<TaskResult>>> {
        self.store.wait_for(id, timeout)
    }
}

/// Damages the stored task `id` as a buggy release or a hand edit would: its backoff made
/// a value no release ever wrote, the rest left as it was.
async fn corrupt_task(objects: Arc<dyn Objects>, id: TaskId) {
    let key = format!("tasks/{id}");
    let stored = objects.get(&key).await.expect("read").expect("stored");
    let split = stored
        .bytes
        .iter()
        .position(|b| *b == b'\n')
        .expect("a meta line");
    let mut meta: serde_json::Value = serde_json::from_slice(&stored.bytes[..split]).expect("json");
    meta["record"]["spec"]["backoff"] = serde_json::Value::from("garbage");
    let mut bytes = serde_json::to_vec(&meta).expect("json");
    bytes.extend_from_slice(&stored.bytes[split..]);
    objects
        .update(&key, Bytes::from(bytes), &stored.version)
        .await
        .expect("written")
        .expect("unchanged meanwhile");
}

fn fixture<K: Send + Sync + 'static>(
    stores: Option<(Arc<dyn Objects>, K)>,
) -> StoreResult<Fixture> {
    let Some((objects, keep)) = stores else {
        return Err(StoreError::unavailable(
            "file",
            "the test server is unreachable",
        ));
    };
    let queue: Arc<dyn TaskQueue> = Arc::new(FileTaskQueue::new(Arc::clone(&objects)));
    let reopened = Arc::clone(&objects);
    let corrupting = Arc::clone(&objects);
    Ok(Fixture {
        queue,
        results: Arc::new(Results {
            store: FileResultStore::new(Arc::clone(&objects)),
            _keep: Box::new(keep),
        }),
        events: Arc::new(FileEventStore::new(Arc::clone(&objects))),
        schedules: Arc::new(FileScheduleStore::new(objects)),
        reopen: Reopen::new(move |clock| {
            let queue: Arc<dyn TaskQueue> =
                Arc::new(FileTaskQueue::with_clock(Arc::clone(&reopened), clock));
            async move { Ok(queue) }
        }),
        corrupt: Some(Corrupt::new(move |id| {
            corrupt_task(Arc::clone(&corrupting), id)
        })),
    })
}

mod directory {
    async fn stores() -> omniq_storage::StoreResult<omniq_storage::conformance::Fixture> {
        super::fixture(super::support::directory())
    }

    omniq_storage::conformance_suite!(stores);
    omniq_scheduler::scheduler_suite!(stores);
}

mod memory {
    async fn stores() -> omniq_storage::StoreResult<omniq_storage::conformance::Fixture> {
        super::fixture(super::support::memory())
    }

    omniq_storage::conformance_suite!(stores);
}

mod s3 {
    async fn stores() -> omniq_storage::StoreResult<omniq_storage::conformance::Fixture> {
        super::fixture(super::support::s3())
    }

    omniq_storage::conformance_suite!(stores);
}

mod azure {
    async fn stores() -> omniq_storage::StoreResult<omniq_storage::conformance::Fixture> {
        super::fixture(super::support::azure())
    }

    omniq_storage::conformance_suite!(stores);
}
