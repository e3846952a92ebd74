//! Opening from a store URL, for the facades' table of backends.

use std::sync::Arc;

use omniq_storage::{
    BoxFuture, EventStore, ResultStore, ScheduleStore, StoreBackend, StoreResult, TaskQueue,
};

use crate::SqliteBackend;

impl StoreBackend for SqliteBackend {
    fn task_queue(&self) -> Arc<dyn TaskQueue> {
        Arc::new(SqliteBackend::task_queue(self))
    }
    fn result_store(&self) -> Arc<dyn ResultStore> {
        Arc::new(SqliteBackend::result_store(self))
    }
    fn event_store(&self) -> Arc<dyn EventStore> {
        Arc::new(SqliteBackend::event_store(self))
    }
    fn schedule_store(&self) -> Arc<dyn ScheduleStore> {
        Arc::new(SqliteBackend::schedule_store(self))
    }
}

/// Opens the database a `sqlite:` store URL names (see [`SqliteBackend::connect`]).
pub fn open_url(url: &str) -> BoxFuture<'static, StoreResult<Arc<dyn StoreBackend>>> {
    let url = url.to_owned();
    Box::pin(async move {
        let backend: Arc<dyn StoreBackend> = Arc::new(SqliteBackend::connect(&url).await?);
        Ok(backend)
    })
}
