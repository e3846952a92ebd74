//! Opening a SQL server: the connection pool and the first contact, alike for every
//! server backend.

use std::future::Future;
use std::time::Duration;

use omniq_storage::secrets::Secrets;
use omniq_storage::{StoreError, StoreResult};
use sqlx::pool::PoolOptions;
use sqlx::{Connection, Database};

/// A pooled connection used this recently is handed out without a ping.
const RECENTLY_USED: Duration = Duration::from_secs(5);

/// How a server backend pools its connections: how many, and how long a call waits for
/// one.
///
/// ```
/// use std::time::Duration;
/// use omniq_sql::PoolSettings;
///
/// let pool = PoolSettings::default()
///     .max_connections(20)
///     .acquire_timeout(Duration::from_secs(5));
/// assert_eq!(pool.max_connections, 20);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolSettings {
    /// The most connections the pool opens (default 10).
    pub max_connections: u32,
    /// How long a call waits for a free connection, or for the server, before it fails as
    /// unavailable (default 30 s).
    pub acquire_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            max_connections: 10,
            acquire_timeout: Duration::from_secs(30),
        }
    }
}

impl PoolSettings {
    /// Sets the pool size.
    pub fn max_connections(mut self, max_connections: u32) -> Self {
        self.max_connections = max_connections;
        self
    }

    /// Sets how long a call waits for a connection.
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }
}

/// The pool every server backend opens, by `settings`. sqlx pings every connection it hands out, a round trip per
/// call; this pool pings only those idle for a while. A dead one among the others fails
/// its call as unavailable, and the caller retries.
///
/// # Errors
/// [`StoreError::Invalid`] for a pool of no connections; `database` names the server.
pub fn pool_options<DB: Database>(
    database: &str,
    settings: &PoolSettings,
) -> StoreResult<PoolOptions<DB>> {
    if settings.max_connections == 0 {
        return Err(StoreError::Invalid(format!(
            "a {database} pool needs at least one connection"
        )));
    }
    Ok(PoolOptions::<DB>::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(settings.acquire_timeout)
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for < RECENTLY_USED {
                    return Ok(true);
                }
                Ok(conn.ping().await.is_ok())
            })
        }))
}

/// The URL's scheme, lower-cased, and the rest after `://`, when the scheme is one of
/// `schemes`.
///
/// # Errors
/// [`StoreError::Invalid`] naming the schemes `database` takes.
pub fn split_scheme<'u>(
    url: &'u str,
    schemes: &[&str],
    database: &str,
) -> StoreResult<(String, &'u str)> {
    let refuse = || {
        let names: Vec<String> = schemes.iter().map(|s| format!("{s}://")).collect();
        StoreError::Invalid(format!(
            "a {database} URL starts with {}",
            names.join(" or ")
        ))
    };
    let (scheme, rest) = url.split_once("://").ok_or_else(refuse)?;
    let scheme = scheme.to_ascii_lowercase();
    if !schemes.contains(&scheme.as_str()) {
        return Err(refuse());
    }
    Ok((scheme, rest))
}

/// Runs the first contact with a server (a migration on a connection of its own, which
/// fails fast when the server is down, where a pool would retry until its timeout), giving
/// up as unavailable after `patience`: a server that does not answer at all (a dropped
/// route) takes as long as a pool would wait. The error never shows the URL's secrets.
///
/// # Errors
/// The step's error, or an unavailable error when the server did not answer in time.
pub async fn first_contact<T>(
    backend: &'static str,
    secrets: &Secrets,
    patience: Duration,
    step: impl Future<Output = StoreResult<T>>,
) -> StoreResult<T> {
    tokio::time::timeout(patience, step)
        .await
        .map_err(|_| {
            StoreError::unavailable(backend, "no answer from the server while connecting")
        })?
        .map_err(|e| secrets.scrub_error(backend, e))
}
