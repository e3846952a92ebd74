//! Builds the four stores from settings: each store's URL scheme picks its backend.

use std::collections::HashMap;
use std::sync::Arc;

use omniq_config::{Backend, Settings, StoreKind};
use omniq_storage::{
    ConnectBackend, EventStore, ResultStore, ScheduleStore, StoreBackend, TaskQueue,
    TransactionalEnqueue,
};

use crate::{Error, Result};

/// The four stores OmniQ runs on, each possibly on a different backend.
#[derive(Debug, Clone)]
pub struct Stores {
    /// Tasks.
    pub queue: Arc<dyn TaskQueue>,
    /// Results.
    pub results: Arc<dyn ResultStore>,
    /// Events.
    pub events: Arc<dyn EventStore>,
    /// Schedules.
    pub schedules: Arc<dyn ScheduleStore>,
}

#[cfg(feature = "memory")]
#[cfg_attr(docsrs, doc(cfg(feature = "memory")))]
impl Stores {
    /// Four fresh in-memory stores.
    pub fn memory() -> Self {
        Self {
            queue: Arc::new(omniq_memory::MemoryTaskQueue::new()),
            results: Arc::new(omniq_memory::MemoryResultStore::new()),
            events: Arc::new(omniq_memory::MemoryEventStore::new()),
            schedules: Arc::new(omniq_memory::MemoryScheduleStore::new()),
        }
    }
}

/// The function that opens each backend this build includes. A new backend is its crate
/// (with a `connect_url`) and one line here, behind its cargo feature.
fn connector(backend: Backend) -> Option<ConnectBackend> {
    match backend {
        #[cfg(feature = "memory")]
        Backend::Memory => Some(omniq_memory::connect_url),
        #[cfg(feature = "sqlite")]
        Backend::Sqlite => Some(omniq_sqlite::connect_url),
        #[cfg(feature = "postgres")]
        Backend::Postgres => Some(omniq_postgres::connect_url),
        #[cfg(feature = "mysql")]
        Backend::Mysql => Some(omniq_mysql::connect_url),
        #[cfg(feature = "redis")]
        Backend::Redis => Some(omniq_redis::connect_url),
        #[cfg(feature = "nats")]
        Backend::Nats => Some(omniq_nats::connect_url),
        #[cfg(feature = "file")]
        Backend::File | Backend::S3 | Backend::Azure | Backend::Gcs => {
            Some(omniq_file::connect_url)
        }
        #[cfg(feature = "amqp")]
        Backend::Amqp => Some(omniq_amqp::connect_url),
        #[cfg(feature = "sqs")]
        Backend::Sqs => Some(omniq_sqs::connect_url),
        _ => None,
    }
}

/// Opens every store named by `settings`. Stores whose URLs are equal share one backend
/// (one SQLite file, one pool). Also returns the task queue's transactional enqueue, on a
/// backend that has one.
pub(crate) async fn open(
    settings: &Settings,
) -> Result<(Stores, Option<Arc<dyn TransactionalEnqueue>>)> {
    let mut opened = HashMap::new();
    let tasks = backend_of(settings, StoreKind::TaskQueue, &mut opened).await?;
    let transactional = tasks.transactional();
    let queue = tasks.task_queue();
    let results = backend_of(settings, StoreKind::Results, &mut opened)
        .await?
        .result_store();
    let events = backend_of(settings, StoreKind::Events, &mut opened)
        .await?
        .event_store();
    let schedules = backend_of(settings, StoreKind::Schedules, &mut opened)
        .await?
        .schedule_store();
    let stores = Stores {
        queue,
        results,
        events,
        schedules,
    };
    Ok((stores, transactional))
}

/// The backend of store `kind`: one opened already for the same URL, or a new one.
async fn backend_of(
    settings: &Settings,
    kind: StoreKind,
    opened: &mut HashMap<String, Arc<dyn StoreBackend>>,
) -> Result<Arc<dyn StoreBackend>> {
    let url = settings.store_url(kind);
    if let Some(backend) = opened.get(url.as_str()) {
        return Ok(Arc::clone(backend));
    }
    tracing::debug!(store = %kind, url = %url, "opening store");
    let backend = url.backend();
    let Some(open) = connector(backend) else {
        let key = kind.key();
        return Err(if backend.is_implemented() {
            Error::BackendNotIncluded { key, backend }
        } else {
            Error::BackendNotImplemented { key, backend }
        });
    };
    let backend = open(url.as_str()).await?;
    opened.insert(url.as_str().to_owned(), Arc::clone(&backend));
    Ok(backend)
}
