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
    #[cfg(feature = "redis")]
    Redis(omniq_redis::RedisBackend),
}

impl Opened {
    fn queue(&self) -> Arc<dyn TaskQueue> {
        match self {
            #[cfg(feature = "memory")]
            Opened::Memory => Arc::new(omniq_memory::MemoryTaskQueue::new()),
            #[cfg(feature = "sqlite")]
            Opened::Sqlite(backend) => Arc::new(backend.task_queue()),
            #[cfg(feature = "redis")]
            Opened::Redis(backend) => Arc::new(backend.task_queue()),
        }
    }

    fn results(&self) -> Arc<dyn ResultStore> {
        match self {
            #[cfg(feature = "memory")]
            Opened::Memory => Arc::new(omniq_memory::MemoryResultStore::new()),
            #[cfg(feature = "sqlite")]
            Opened::Sqlite(backend) => Arc::new(backend.result_store()),
            #[cfg(feature = "redis")]
            Opened::Redis(backend) => Arc::new(backend.result_store()),
        }
    }

    fn events(&self) -> Arc<dyn EventStore> {
        match self {
            #[cfg(feature = "memory")]
            Opened::Memory => Arc::new(omniq_memory::MemoryEventStore::new()),
            #[cfg(feature = "sqlite")]
            Opened::Sqlite(backend) => Arc::new(backend.event_store()),
            #[cfg(feature = "redis")]
            Opened::Redis(backend) => Arc::new(backend.event_store()),
        }
    }

    fn schedules(&self) -> Arc<dyn ScheduleStore> {
        match self {
            #[cfg(feature = "memory")]
            Opened::Memory => Arc::new(omniq_memory::MemoryScheduleStore::new()),
            #[cfg(feature = "sqlite")]
            Opened::Sqlite(backend) => Arc::new(backend.schedule_store()),
            #[cfg(feature = "redis")]
            Opened::Redis(backend) => Arc::new(backend.schedule_store()),
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
        #[cfg(feature = "redis")]
        Backend::Redis => {
            let (url, prefix) = split_prefix(url.as_str());
            let mut options = omniq_redis::RedisOptions::default();
            if let Some(prefix) = prefix {
                options.prefix = prefix;
            }
            Ok(Opened::Redis(
                omniq_redis::RedisBackend::connect(&url, options).await?,
            ))
        }
        backend => Err(Error::BackendNotIncluded {
            key: kind.key(),
            backend,
        }),
    }
}

/// Takes a `prefix=` query parameter (a key prefix for backends that share a server) out
/// of a URL, for drivers that would refuse an unknown parameter.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
fn split_prefix(url: &str) -> (String, Option<String>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_owned(), None);
    };
    let mut prefix = None;
    let rest: Vec<&str> = query
        .split('&')
        .filter(|pair| match pair.strip_prefix("prefix=") {
            Some(value) => {
                prefix = Some(value.to_owned());
                false
            }
            None => true,
        })
        .collect();
    let url = if rest.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    (url, prefix)
}

#[cfg(test)]
mod tests {
    use super::split_prefix;

    #[test]
    fn a_prefix_parameter_is_taken_out_of_the_url() {
        assert_eq!(
            split_prefix("redis://h:6379/0?prefix=app1"),
            ("redis://h:6379/0".to_owned(), Some("app1".to_owned()))
        );
        assert_eq!(
            split_prefix("redis://h/0?timeout=5&prefix=x&db=1"),
            (
                "redis://h/0?timeout=5&db=1".to_owned(),
                Some("x".to_owned())
            )
        );
        assert_eq!(
            split_prefix("redis://h/0"),
            ("redis://h/0".to_owned(), None)
        );
    }
}
