use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use omniq_storage::{StoreError, StoreResult};
use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use tokio::sync::{Notify, watch};

use crate::error::{BACKEND, store_error};
use crate::{SqliteEventStore, SqliteResultStore, SqliteScheduleStore, SqliteTaskQueue};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// One SQLite database holding all four stores.
///
/// Cloning is cheap: clones share the connection pool and the in-process wake-ups.
#[derive(Debug, Clone)]
pub struct SqliteBackend {
    /// The one connection every write goes through. SQLite has one writer at a time;
    /// queueing writers here, in order, beats letting several connections collide on the
    /// database lock and back off in SQLite's busy handler.
    pub(crate) pool: SqlitePool,
    /// Connections for reads, which WAL lets run beside the writer.
    pub(crate) reader: SqlitePool,
    pub(crate) task_wakeup: Arc<Notify>,
    pub(crate) result_version: Arc<watch::Sender<u64>>,
}

impl SqliteBackend {
    /// Opens (creating it and its directory if needed) the database file at `path`, and
    /// applies the schema migrations.
    ///
    /// # Errors
    /// When the directory or file cannot be created or opened, or a migration fails.
    pub async fn open(path: impl AsRef<Path>) -> StoreResult<Self> {
        let path = path.as_ref();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::unavailable(BACKEND, e))?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true);
        Self::connect_with(options, 8).await
    }

    /// Opens a database from a `sqlite:` URL: `sqlite://path/to/file.db`,
    /// `sqlite:///absolute/path.db` or `sqlite::memory:` (one connection; gone on drop).
    ///
    /// # Errors
    /// When the URL is malformed, or as [`SqliteBackend::open`].
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Invalid(format!("bad SQLite URL: {e}")))?
            .create_if_missing(true);
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let dir = options
            .get_filename()
            .parent()
            .filter(|d| !in_memory && !d.as_os_str().is_empty());
        if let Some(dir) = dir {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::unavailable(BACKEND, e))?;
        }
        // Each connection to `:memory:` is its own database, so an in-memory pool has one.
        let connections = if in_memory { 1 } else { 8 };
        Self::connect_with(options, connections).await
    }

    async fn connect_with(options: SqliteConnectOptions, connections: u32) -> StoreResult<Self> {
        let options = options
            .journal_mode(SqliteJournalMode::Wal)
            // NORMAL in WAL mode is durable across process crashes; only an OS crash or
            // power loss can drop the last transactions.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(30))
            .foreign_keys(false);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .connect_with(options.clone())
            .await
            .map_err(store_error)?;
        // `run_direct` on a connection rather than `run(&pool)`: the generic `Acquire` bound
        // makes the future fail the compiler's higher-ranked `Send` check in callers that
        // box or spawn it.
        let mut conn = pool.acquire().await.map_err(store_error)?;
        MIGRATOR
            .run_direct(None, &mut *conn, false)
            .await
            .map_err(|e| StoreError::backend(BACKEND, e))?;
        drop(conn);
        // An in-memory database exists only on its one connection: it must also serve reads.
        let reader = if connections <= 1 {
            pool.clone()
        } else {
            SqlitePoolOptions::new()
                .max_connections(connections)
                .min_connections(1)
                .connect_with(options)
                .await
                .map_err(store_error)?
        };
        Ok(Self {
            pool,
            reader,
            task_wakeup: Arc::new(Notify::new()),
            result_version: Arc::new(watch::Sender::new(0)),
        })
    }

    /// The task queue in this database.
    pub fn task_queue(&self) -> SqliteTaskQueue {
        SqliteTaskQueue::new(self.clone())
    }

    /// The result store in this database.
    pub fn result_store(&self) -> SqliteResultStore {
        SqliteResultStore::new(self.clone())
    }

    /// The event store in this database.
    pub fn event_store(&self) -> SqliteEventStore {
        SqliteEventStore::new(self.clone())
    }

    /// The schedule store in this database.
    pub fn schedule_store(&self) -> SqliteScheduleStore {
        SqliteScheduleStore::new(self.clone())
    }

    /// The writer's pool (one connection), for callers who want to run their own SQL
    /// against the file.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Closes the pools; stores using them fail afterwards.
    pub async fn close(&self) {
        self.pool.close().await;
        self.reader.close().await;
    }
}
