//! Opening from a store URL (`memory://`), for the facades' table of backends.

use std::sync::Arc;

use omniq_storage::{
    BoxFuture, EventStore, ResultStore, ScheduleStore, StoreBackend, StoreResult, TaskQueue,
};

use crate::{MemoryEventStore, MemoryResultStore, MemoryScheduleStore, MemoryTaskQueue};

/// The in-process backend: each store it hands out is a fresh one, living as long as the
/// handles on it.
#[derive(Debug, Clone, Copy, Default)]
pub struct MemoryBackend;

impl StoreBackend for MemoryBackend {
    fn task_queue(&self) -> Arc<dyn TaskQueue> {
        Arc::new(MemoryTaskQueue::new())
    }
    fn result_store(&self) -> Arc<dyn ResultStore> {
        Arc::new(MemoryResultStore::new())
    }
    fn event_store(&self) -> Arc<dyn EventStore> {
        Arc::new(MemoryEventStore::new())
    }
    fn schedule_store(&self) -> Arc<dyn ScheduleStore> {
        Arc::new(MemoryScheduleStore::new())
    }
}

/// Opens the in-process backend (`memory://`; the URL carries nothing else).
pub fn connect_url(_url: &str) -> BoxFuture<'static, StoreResult<Arc<dyn StoreBackend>>> {
    Box::pin(async {
        let backend: Arc<dyn StoreBackend> = Arc::new(MemoryBackend);
        Ok(backend)
    })
}
