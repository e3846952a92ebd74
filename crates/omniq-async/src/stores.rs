//! Builds the four stores from settings: each store's URL scheme picks its backend.

use std::collections::HashMap;
use std::sync::Arc;

use omniq_config::{Backend, Settings, StoreKind, StoreUrl};
use omniq_storage::{EventStore, ResultStore, ScheduleStore, TaskQueue};

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

/// One opened backend, able to hand out any of the four stores.
#[derive(Clone)]
enum Opened {
    #[cfg(feature = "memory")]
    Memory,
    #[cfg(feature = "sqlite")]
    Sqlite(omniq_sqlite::SqliteBackend),
}

impl Opened {
    fn queue(&self) -> Arc<dyn TaskQueue> {
        match self {
            #[cfg(feature = "memory")]
            Opened::Memory => Arc::new(omniq_memory::MemoryTaskQueue::new()),
            #[cfg(feature = "sqlite")]
            Opened::Sqlite(backend) => Arc::new(backend.task_queue()),
        }
    }

    fn results(&self) -> Arc<dyn ResultStore> {
        match self {
            #[cfg(feature = "memory")]
            Opened::Memory => Arc::new(omniq_memory::MemoryResultStore::new()),
            #[cfg(feature = "sqlite")]
            Opened::Sqlite(backend) => Arc::new(backend.result_store()),
        }
    }

    fn events(&self) -> Arc<dyn EventStore> {
        match self {
            #[cfg(feature = "memory")]
            Opened::Memory => Arc::new(omniq_memory::MemoryEventStore::new()),
            #[cfg(feature = "sqlite")]
            Opened::Sqlite(backend) => Arc::new(backend.event_store()),
        }
    }

    fn schedules(&self) -> Arc<dyn ScheduleStore> {
        match self {
            #[cfg(feature = "memory")]
            Opened::Memory => Arc::new(omniq_memory::MemoryScheduleStore::new()),
            #[cfg(feature = "sqlite")]
            Opened::Sqlite(backend) => Arc::new(backend.schedule_store()),
        }
    }
}

/// Opens every store named by `settings`. Stores whose URLs are equal share one backend
/// (one SQLite file, one pool).
pub(crate) async fn open(settings: &Settings) -> Result<Stores> {
    let mut opened: HashMap<String, Opened> = HashMap::new();
    let mut backend_for = async |kind: StoreKind| -> Result<Opened> {
        let url = settings.store_url(kind);
        if let Some(backend) = opened.get(url.as_str()) {
            return Ok(backend.clone());
        }
        let backend = connect(kind, &url).await?;
        opened.insert(url.as_str().to_owned(), backend.clone());
        Ok(backend)
    };
    Ok(Stores {
        queue: backend_for(StoreKind::TaskQueue).await?.queue(),
        results: backend_for(StoreKind::Results).await?.results(),
        events: backend_for(StoreKind::Events).await?.events(),
        schedules: backend_for(StoreKind::Schedules).await?.schedules(),
    })
}

async fn connect(kind: StoreKind, url: &StoreUrl) -> Result<Opened> {
    tracing::debug!(store = %kind, url = %url, "opening store");
    match url.backend() {
        #[cfg(feature = "memory")]
        Backend::Memory => Ok(Opened::Memory),
        #[cfg(feature = "sqlite")]
        Backend::Sqlite => Ok(Opened::Sqlite(
            omniq_sqlite::SqliteBackend::connect(url.as_str()).await?,
        )),
        backend => Err(Error::BackendNotIncluded {
            key: kind.key(),
            backend,
        }),
    }
}
