//! Opening from a store URL, for the facades' table of backends.

use std::any::Any;
use std::sync::Arc;

use omniq_models::TaskSpec;
use omniq_storage::{
    BoxFuture, EnqueueOutcome, EventStore, ResultStore, ScheduleStore, StoreBackend, StoreError,
    StoreResult, TaskQueue, TransactionalEnqueue, take_pool_size,
};

use crate::{MySqlBackend, MySqlOptions, MySqlTaskQueue};

impl StoreBackend for MySqlBackend {
    fn task_queue(&self) -> Arc<dyn TaskQueue> {
        Arc::new(MySqlBackend::task_queue(self))
    }
    fn result_store(&self) -> Arc<dyn ResultStore> {
        Arc::new(MySqlBackend::result_store(self))
    }
    fn event_store(&self) -> Arc<dyn EventStore> {
        Arc::new(MySqlBackend::event_store(self))
    }
    fn schedule_store(&self) -> Arc<dyn ScheduleStore> {
        Arc::new(MySqlBackend::schedule_store(self))
    }
    fn transactional(&self) -> Option<Arc<dyn TransactionalEnqueue>> {
        Some(Arc::new(MySqlBackend::task_queue(self)))
    }
}

impl TransactionalEnqueue for MySqlTaskQueue {
    fn enqueue_in<'a>(
        &'a self,
        conn: &'a mut (dyn Any + Send),
        tasks: Vec<TaskSpec>,
    ) -> BoxFuture<'a, StoreResult<Vec<EnqueueOutcome>>> {
        Box::pin(async move {
            let Some(conn) = conn.downcast_mut::<sqlx::MySqlConnection>() else {
                return Err(StoreError::Invalid(
                    "a MySQL transactional enqueue needs the transaction's `sqlx::MySqlConnection` \
                     (pass `&mut *tx`)"
                        .to_owned(),
                ));
            };
            MySqlTaskQueue::enqueue_in(self, conn, tasks).await
        })
    }
}

/// Opens the database a `mysql:` or `mariadb:` store URL names. OmniQ's own parameter:
/// `max_connections=` (the pool size).
pub fn open_url(url: &str) -> BoxFuture<'static, StoreResult<Arc<dyn StoreBackend>>> {
    let url = url.to_owned();
    Box::pin(async move {
        let (url, pool) = take_pool_size(&url)?;
        let mut options = MySqlOptions::default();
        if let Some(pool) = pool {
            options = options.max_connections(pool);
        }
        let backend: Arc<dyn StoreBackend> =
            Arc::new(MySqlBackend::connect_with(&url, options).await?);
        Ok(backend)
    })
}
