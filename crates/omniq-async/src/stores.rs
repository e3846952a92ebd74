//! Builds the four stores from settings: each store's URL scheme picks its backend.

use std::collections::HashMap;
use std::sync::Arc;

use omniq_config::{Backend, Settings, StoreKind, StoreUrl};
use omniq_storage::{BoxFuture, EventStore, ResultStore, ScheduleStore, TaskQueue};

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
    #[cfg(feature = "postgres")]
    Postgres(omniq_postgres::PgBackend),
    #[cfg(feature = "mysql")]
    Mysql(omniq_mysql::MySqlBackend),
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
            #[cfg(feature = "postgres")]
            Opened::Postgres(backend) => Arc::new(backend.task_queue()),
            #[cfg(feature = "mysql")]
            Opened::Mysql(backend) => Arc::new(backend.task_queue()),
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
            #[cfg(feature = "postgres")]
            Opened::Postgres(backend) => Arc::new(backend.result_store()),
            #[cfg(feature = "mysql")]
            Opened::Mysql(backend) => Arc::new(backend.result_store()),
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
            #[cfg(feature = "postgres")]
            Opened::Postgres(backend) => Arc::new(backend.event_store()),
            #[cfg(feature = "mysql")]
            Opened::Mysql(backend) => Arc::new(backend.event_store()),
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
            #[cfg(feature = "postgres")]
            Opened::Postgres(backend) => Arc::new(backend.schedule_store()),
            #[cfg(feature = "mysql")]
            Opened::Mysql(backend) => Arc::new(backend.schedule_store()),
        }
    }
}

/// Opens every store named by `settings`. Stores whose URLs are equal share one backend
/// (one SQLite file, one pool).
pub(crate) async fn open(settings: &Settings) -> Result<Stores> {
    let kinds = [
        StoreKind::TaskQueue,
        StoreKind::Results,
        StoreKind::Events,
        StoreKind::Schedules,
    ];
    let mut opened: HashMap<String, Opened> = HashMap::new();
    let mut backends = Vec::with_capacity(kinds.len());
    for kind in kinds {
        let url = settings.store_url(kind);
        let backend = match opened.get(url.as_str()) {
            Some(backend) => backend.clone(),
            None => {
                let backend = connect(kind, url.clone()).await?;
                opened.insert(url.as_str().to_owned(), backend.clone());
                backend
            }
        };
        backends.push(backend);
    }
    let [queue, results, events, schedules] = <[Opened; 4]>::try_from(backends)
        .map_err(|_| Error::Store(omniq_storage::StoreError::Invalid("four stores".into())))?;
    Ok(Stores {
        queue: queue.queue(),
        results: results.results(),
        events: events.events(),
        schedules: schedules.schedules(),
    })
}

/// Boxed, which checks here that every driver's connect future is `Send`, rather than
/// in whatever caller happens to spawn `AsyncOmniQ::from_settings`.
fn connect(kind: StoreKind, url: StoreUrl) -> BoxFuture<'static, Result<Opened>> {
    Box::pin(async move { connect_now(kind, &url).await })
}

async fn connect_now(kind: StoreKind, url: &StoreUrl) -> Result<Opened> {
    tracing::debug!(store = %kind, url = %url, "opening store");
    match url.backend() {
        #[cfg(feature = "memory")]
        Backend::Memory => Ok(Opened::Memory),
        #[cfg(feature = "sqlite")]
        Backend::Sqlite => Ok(Opened::Sqlite(
            omniq_sqlite::SqliteBackend::connect(url.as_str()).await?,
        )),
        #[cfg(feature = "postgres")]
        Backend::Postgres => {
            let (url, schema) = take_query_param(url.as_str(), "schema");
            let mut options = omniq_postgres::PgOptions::default();
            if let Some(schema) = schema {
                options = options.schema(schema);
            }
            Ok(Opened::Postgres(
                omniq_postgres::PgBackend::connect_with(&url, options).await?,
            ))
        }
        #[cfg(feature = "mysql")]
        Backend::Mysql => {
            // The backend takes `mysql://` and `mariadb://` alike.
            Ok(Opened::Mysql(
                omniq_mysql::MySqlBackend::connect(url.as_str()).await?,
            ))
        }
        #[cfg(feature = "redis")]
        Backend::Redis => {
            let (url, prefix) = take_query_param(url.as_str(), "prefix");
            let (url, cluster) = take_query_param(&url, "cluster");
            let mut options = omniq_redis::RedisOptions::default();
            if let Some(prefix) = prefix {
                options.prefix = prefix;
            }
            // `?cluster=true`: the URL names one or more cluster nodes, comma-separated.
            let backend = match cluster.as_deref() {
                None | Some("false" | "0") => {
                    omniq_redis::RedisBackend::connect(&url, options).await?
                }
                Some("true" | "1") => {
                    omniq_redis::RedisBackend::connect_cluster(&[url.as_str()], options).await?
                }
                Some(other) => {
                    return Err(Error::Store(omniq_storage::StoreError::Invalid(format!(
                        "the Redis URL parameter `cluster={other}` is neither `true` nor `false`"
                    ))));
                }
            };
            Ok(Opened::Redis(backend))
        }
        backend => Err(Error::BackendNotIncluded {
            key: kind.key(),
            backend,
        }),
    }
}

/// Takes one of OmniQ's own query parameters (`prefix=` for Redis keys, `schema=` for
/// PostgreSQL tables) out of a URL, for drivers that would refuse an unknown parameter.
#[cfg_attr(not(any(feature = "redis", feature = "postgres")), allow(dead_code))]
fn take_query_param(url: &str, name: &str) -> (String, Option<String>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_owned(), None);
    };
    let mut found = None;
    let rest: Vec<&str> = query
        .split('&')
        .filter(|pair| match pair.split_once('=') {
            Some((key, value)) if key == name => {
                found = Some(value.to_owned());
                false
            }
            _ => true,
        })
        .collect();
    let url = if rest.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    (url, found)
}

#[cfg(test)]
mod tests {
    use super::take_query_param;

    #[test]
    fn omniqs_own_parameters_are_taken_out_of_the_url() {
        assert_eq!(
            take_query_param("redis://h:6379/0?prefix=app1", "prefix"),
            ("redis://h:6379/0".to_owned(), Some("app1".to_owned()))
        );
        assert_eq!(
            take_query_param("postgres://h/db?sslmode=disable&schema=x&a=1", "schema"),
            (
                "postgres://h/db?sslmode=disable&a=1".to_owned(),
                Some("x".to_owned())
            )
        );
        assert_eq!(
            take_query_param("redis://h/0", "prefix"),
            ("redis://h/0".to_owned(), None)
        );
        assert_eq!(
            take_query_param("redis://h1:7000,h2:7000/?prefix=a&cluster=true", "cluster"),
            (
                "redis://h1:7000,h2:7000/?prefix=a".to_owned(),
                Some("true".to_owned())
            )
        );
    }
}
