//! Opening from a store URL, for the facades' table of backends.

use std::any::Any;
use std::sync::Arc;

use omniq_models::TaskSpec;
use omniq_storage::{
    BoxFuture, EnqueueOutcome, EventStore, ResultStore, ScheduleStore, StoreBackend, StoreError,
    StoreResult, TaskQueue, TransactionalEnqueue, take_pool_size, take_query_param,
};

use crate::{PgBackend, PgOptions, PgTaskQueue};

impl StoreBackend for PgBackend {
    fn task_queue(&self) -> Arc<dyn TaskQueue> {
        Arc::new(PgBackend::task_queue(self))
    }
    fn result_store(&self) -> Arc<dyn ResultStore> {
        Arc::new(PgBackend::result_store(self))
    }
    fn event_store(&self) -> Arc<dyn EventStore> {
        Arc::new(PgBackend::event_store(self))
    }
    fn schedule_store(&self) -> Arc<dyn ScheduleStore> {
        Arc::new(PgBackend::schedule_store(self))
    }
    fn transactional(&self) -> Option<Arc<dyn TransactionalEnqueue>> {
        Some(Arc::new(PgBackend::task_queue(self)))
    }
}

impl TransactionalEnqueue for PgTaskQueue {
    fn enqueue_in<'a>(
        &'a self,
        conn: &'a mut (dyn Any + Send),
        tasks: Vec<TaskSpec>,
    ) -> BoxFuture<'a, StoreResult<Vec<EnqueueOutcome>>> {
        Box::pin(async move {
            let Some(conn) = conn.downcast_mut::<sqlx::PgConnection>() else {
                return Err(StoreError::Invalid(
                    "a PostgreSQL transactional enqueue needs the transaction's `sqlx::PgConnection` \
                     (pass `&mut *tx`)"
                        .to_owned(),
                ));
            };
            PgTaskQueue::enqueue_in(self, conn, tasks).await
        })
    }
}

/// Opens the database a `postgres:` store URL names. OmniQ's own parameters: `schema=`
/// (the tables' schema, see [`PgOptions::schema`]) and `max_connections=` (the pool size).
pub fn open_url(url: &str) -> BoxFuture<'static, StoreResult<Arc<dyn StoreBackend>>> {
    let url = url.to_owned();
    Box::pin(async move {
        let (url, schema) = take_query_param(&url, "schema");
        let (url, pool) = take_pool_size(&url)?;
        let mut options = PgOptions::default();
        if let Some(schema) = schema {
            options = options.schema(schema);
        }
        if let Some(pool) = pool {
            options = options.max_connections(pool);
        }
        let backend: Arc<dyn StoreBackend> =
            Arc::new(PgBackend::connect_with(&url, options).await?);
        Ok(backend)
    })
}
