use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use omniq_storage::{StoreError, StoreResult};
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client};

use crate::error::{redact, redis_error};
use crate::keys::Keys;
use crate::scripts::Scripts;
use crate::{RedisEventStore, RedisResultStore, RedisScheduleStore, RedisTaskQueue};

/// Options of a [`RedisBackend`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisOptions {
    /// The prefix of every key (default `omniq`). Backends with different prefixes share a
    /// server without seeing each other. It becomes the hash tag `{prefix}` of the task-queue
    /// and schedule keys, so it should not contain braces.
    pub prefix: String,
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self {
            prefix: "omniq".to_owned(),
        }
    }
}

impl RedisOptions {
    /// Options with the given key prefix.
    pub fn prefix(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }
}

/// A connection to one Redis server holding all four stores.
///
/// Cloning is cheap: clones share the connection. Commands go through a
/// [`ConnectionManager`], which reconnects after the server restarts; idle workers block on
/// connections of their own (see [`RedisTaskQueue`]'s `wait_for_tasks`), never on the
/// shared one.
#[derive(Clone)]
pub struct RedisBackend {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) client: Client,
    pub(crate) manager: ConnectionManager,
    pub(crate) keys: Keys,
    pub(crate) scripts: Scripts,
    /// Connections for blocking pops, one per waiting caller, kept for reuse.
    waiters: Mutex<Vec<MultiplexedConnection>>,
    url: String,
}

impl fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackend")
            .field("url", &self.inner.url)
            .field("keys", &self.inner.keys)
            .finish_non_exhaustive()
    }
}

/// Idle blocking connections kept for reuse; more are opened when more callers wait.
const IDLE_WAITERS: usize = 32;

impl RedisBackend {
    /// Connects to the server at `url` (`redis://[user:password@]host[:port][/db]`, or
    /// `rediss://` for TLS) and loads the scripts.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for a malformed URL or an empty prefix;
    /// [`StoreError::Unavailable`] when the server cannot be reached. Messages never show
    /// the URL's password.
    pub async fn connect(url: &str, options: RedisOptions) -> StoreResult<Self> {
        if options.prefix.is_empty() {
            return Err(StoreError::Invalid(
                "the Redis key prefix is empty".to_owned(),
            ));
        }
        if url.starts_with("rediss:") {
            install_crypto_provider();
        }
        let client = Client::open(url).map_err(|e| {
            StoreError::Invalid(format!("bad Redis URL `{}`: {}", redact(url), e.category()))
        })?;
        // A direct first connection fails fast when the server is down (the manager would
        // retry with backoff); it then serves as the first blocking connection.
        let first = blocking_connection(&client).await?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(Duration::from_secs(30)));
        let mut manager = ConnectionManager::new_with_config(client.clone(), config)
            .await
            .map_err(redis_error)?;
        let scripts = Scripts::new();
        for script in scripts.all() {
            script
                .prepare_invoke()
                .load_async(&mut manager)
                .await
                .map_err(redis_error)?;
        }
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                manager,
                keys: Keys::new(&options.prefix),
                scripts,
                waiters: Mutex::new(vec![first]),
                url: redact(url),
            }),
        })
    }

    /// The task queue on this server.
    pub fn task_queue(&self) -> RedisTaskQueue {
        RedisTaskQueue::new(self.clone())
    }

    /// The result store on this server.
    pub fn result_store(&self) -> RedisResultStore {
        RedisResultStore::new(self.clone())
    }

    /// The event store on this server.
    pub fn event_store(&self) -> RedisEventStore {
        RedisEventStore::new(self.clone())
    }

    /// The schedule store on this server.
    pub fn schedule_store(&self) -> RedisScheduleStore {
        RedisScheduleStore::new(self.clone())
    }

    /// The shared, reconnecting connection, for callers who want to run their own commands.
    pub fn connection(&self) -> ConnectionManager {
        self.inner.manager.clone()
    }

    pub(crate) fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    pub(crate) fn scripts(&self) -> &Scripts {
        &self.inner.scripts
    }

    /// A kept connection for a blocking command, if one is idle.
    pub(crate) fn idle_waiter(&self) -> Option<MultiplexedConnection> {
        self.inner
            .waiters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
    }

    /// A new connection for a blocking command.
    pub(crate) async fn new_waiter(&self) -> StoreResult<MultiplexedConnection> {
        blocking_connection(&self.inner.client).await
    }

    /// Gives back a connection whose blocking command completed.
    pub(crate) fn return_waiter(&self, conn: MultiplexedConnection) {
        let mut idle = self
            .inner
            .waiters
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if idle.len() < IDLE_WAITERS {
            idle.push(conn);
        }
    }
}

/// A connection without a response timeout, for blocking pops.
async fn blocking_connection(client: &Client) -> StoreResult<MultiplexedConnection> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_response_timeout(None);
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(redis_error)
}

/// TLS (`rediss://`) uses rustls with aws-lc-rs: make it the process default provider unless
/// the program installed one already.
fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing the race to another installer is fine: a provider is installed either way.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    }
}
