use std::future::Future;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use omniq_sql::SchemaPolicy;
use omniq_storage::{Clock, Migration, MigrationStatus, StoreError, StoreResult};
use sqlx::SqlitePool;
use sqlx::migrate::MigrateError;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::error::{BACKEND, store_error};
use crate::{SqliteEventStore, SqliteResultStore, SqliteScheduleStore, SqliteTaskQueue};

/// The schema's migrations. A file a newer OmniQ migrated still serves this build
/// (migrations only add), so old workers keep running through a rolling deploy.
fn migrator() -> sqlx::migrate::Migrator {
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.set_ignore_missing(true);
    migrator
}

/// How long a statement waits for another connection's lock before SQLITE_BUSY.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest pause between two tries of an open that found the file busy.
const MAX_PAUSE: Duration = Duration::from_millis(200);

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
    /// The client's clock, for what the queue computes on the client (see [`Clock`]).
    pub(crate) clock: Clock,
}

impl SqliteBackend {
    /// Opens (creating it and its directory if needed) the database file at `path`, and
    /// applies the schema migrations.
    ///
    /// # Errors
    /// When the directory or file cannot be created or opened, or a migration fails.
    pub async fn connect_file(path: impl AsRef<Path>) -> StoreResult<Self> {
        let path = path.as_ref();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::unavailable(BACKEND, e))?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true);
        Self::connect_options(options, 8, SchemaPolicy::Migrate).await
    }

    /// Opens a database from a `sqlite:` URL: `sqlite://path/to/file.db`,
    /// `sqlite:///absolute/path.db` or `sqlite::memory:` (one connection; gone on drop).
    ///
    /// # Errors
    /// When the URL is malformed, or as [`SqliteBackend::connect_file`].
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let (url, policy) = SchemaPolicy::take_from_url(url)?;
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let options = sqlite_options(&url, policy == SchemaPolicy::Migrate || in_memory)?;
        if policy == SchemaPolicy::Check && !in_memory && !options.get_filename().exists() {
            // Checking a file that is not there creates nothing: it lacks every migration.
            let status = Self::migration_status(&url, false).await?;
            return Err(omniq_sql::schema_behind(BACKEND, &status));
        }
        // Each connection to `:memory:` is its own database, so an in-memory pool has one.
        let connections = if in_memory { 1 } else { 8 };
        Self::connect_options(options, connections, policy).await
    }

    /// Reports where the schema of the database at a `sqlite:` URL stands, after applying
    /// the pending migrations when `apply` is true (`omniq migrate`). Reading the status of
    /// a file that does not exist creates nothing.
    ///
    /// # Errors
    /// As [`SqliteBackend::connect`].
    pub async fn migration_status(url: &str, apply: bool) -> StoreResult<MigrationStatus> {
        let (url, _) = SchemaPolicy::take_from_url(url)?;
        let options = sqlite_options(&url, apply)?;
        if !apply && !options.get_filename().exists() {
            return Ok(MigrationStatus {
                pending: migrator()
                    .iter()
                    .map(|m| Migration {
                        version: m.version,
                        description: m.description.to_string(),
                    })
                    .collect(),
                ..MigrationStatus::default()
            });
        }
        let options = writer_options(options);
        let (pool, status) = retry_while_busy(|| open_writer(&options, apply)).await?;
        pool.close().await;
        Ok(status)
    }
}

/// The connect options of a `sqlite:` URL; unless `!create`, creating the file and its
/// directory when missing.
fn sqlite_options(url: &str, create: bool) -> StoreResult<SqliteConnectOptions> {
    let options = SqliteConnectOptions::from_str(url)
        .map_err(|e| StoreError::Invalid(format!("bad SQLite URL: {e}")))?
        .create_if_missing(create);
    let in_memory = url.contains(":memory:") || url.contains("mode=memory");
    let dir = options
        .get_filename()
        .parent()
        .filter(|d| create && !in_memory && !d.as_os_str().is_empty());
    if let Some(dir) = dir {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::unavailable(BACKEND, e))?;
    }
    Ok(options)
}

/// The settings every connection to the file gets.
fn writer_options(options: SqliteConnectOptions) -> SqliteConnectOptions {
    options
        .journal_mode(SqliteJournalMode::Wal)
        // NORMAL in WAL mode is durable across process crashes; only an OS crash or power
        // loss can drop the last transactions.
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(BUSY_TIMEOUT)
        .foreign_keys(false)
}

impl SqliteBackend {
    async fn connect_options(
        options: SqliteConnectOptions,
        connections: u32,
        policy: SchemaPolicy,
    ) -> StoreResult<Self> {
        let options = writer_options(options);
        let apply = policy == SchemaPolicy::Migrate;
        let (pool, status) = retry_while_busy(|| open_writer(&options, apply)).await?;
        if !status.is_current() {
            pool.close().await;
            return Err(omniq_sql::schema_behind(BACKEND, &status));
        }
        // An in-memory database exists only on its one connection: it must also serve reads.
        let reader = if connections <= 1 {
            pool.clone()
        } else {
            retry_while_busy(|| async {
                SqlitePoolOptions::new()
                    .max_connections(connections)
                    .min_connections(1)
                    .connect_with(options.clone())
                    .await
                    .map_err(OpenError::Sqlx)
            })
            .await?
        };
        Ok(Self {
            pool,
            reader,
            task_wakeup: Arc::new(Notify::new()),
            result_version: Arc::new(watch::Sender::new(0)),
            clock: Clock::system(),
        })
    }

    /// This backend, reading `clock` where it reads the client's time: when a task is due,
    /// its TTL, timestamps. Lease deadlines always follow the machine's clock, which every
    /// process sharing the file shares, so a skewed `clock` changes nothing about them
    /// (see [`Clock`]). For tests that play a machine whose clock is wrong.
    pub fn with_clock(&self, clock: Clock) -> Self {
        Self {
            clock,
            ..self.clone()
        }
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

/// Why one try at opening failed.
#[derive(Debug)]
enum OpenError {
    Sqlx(sqlx::Error),
    Migrate(MigrateError),
    Store(StoreError),
}

impl OpenError {
    /// Whether another connection's lock caused it, so that trying again can succeed.
    ///
    /// Switching a new file to WAL needs an exclusive lock that SQLite does not wait for
    /// (its busy handler is not called), so processes opening a new file together see
    /// SQLITE_BUSY there.
    fn is_busy(&self) -> bool {
        let err = match self {
            OpenError::Sqlx(err)
            | OpenError::Migrate(MigrateError::Execute(err))
            | OpenError::Migrate(MigrateError::ExecuteMigration(err, _)) => err,
            OpenError::Migrate(_) | OpenError::Store(_) => return false,
        };
        let sqlx::Error::Database(db) = err else {
            return false;
        };
        // Extended result codes keep the primary code in the low byte: SQLITE_BUSY (5),
        // SQLITE_LOCKED (6).
        db.code()
            .and_then(|code| code.parse::<i32>().ok())
            .is_some_and(|code| matches!(code & 0xff, 5 | 6))
    }

    fn into_store_error(self) -> StoreError {
        match self {
            OpenError::Sqlx(err) => store_error(err),
            OpenError::Migrate(err) => StoreError::backend(BACKEND, err),
            OpenError::Store(err) => err,
        }
    }
}

/// Opens the writer's pool and brings the schema up to date.
///
/// The migrations run inside one `BEGIN IMMEDIATE` transaction (each migration a savepoint
/// in it): processes that open a new file together take turns, and each finds the schema
/// as the one before it left it, instead of applying the same migration twice. sqlx's own
/// migration lock does nothing on SQLite.
async fn open_writer(
    options: &SqliteConnectOptions,
    apply: bool,
) -> Result<(SqlitePool, MigrationStatus), OpenError> {
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .min_connections(1)
        .connect_with(options.clone())
        .await
        .map_err(OpenError::Sqlx)?;
    // `run_direct` on a connection rather than `run(&pool)`: the generic `Acquire` bound
    // makes the future fail the compiler's higher-ranked `Send` check in callers that box
    // or spawn it.
    let mut tx = pool
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(OpenError::Sqlx)?;
    let mut migrator = migrator();
    if apply {
        migrator
            .run_direct(None, &mut *tx, false)
            .await
            .map_err(OpenError::Migrate)?;
    }
    let status = omniq_sql::settle_schema(&mut migrator, &mut *tx, false, BACKEND, store_error)
        .await
        .map_err(OpenError::Store)?;
    tx.commit().await.map_err(OpenError::Sqlx)?;
    Ok((pool, status))
}

/// Runs `open` again while it fails because the file is busy, with a growing, jittered
/// pause, for at most [`BUSY_TIMEOUT`].
async fn retry_while_busy<T, F, Fut>(mut open: F) -> StoreResult<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, OpenError>>,
{
    let deadline = Instant::now() + BUSY_TIMEOUT;
    let mut pause = Duration::from_millis(5);
    loop {
        match open().await {
            Ok(value) => return Ok(value),
            Err(err) if err.is_busy() && Instant::now() + pause < deadline => {
                // Jitter keeps the processes that collided from colliding again in step.
                let jitter = u64::from(uuid::Uuid::new_v4().as_bytes()[0]) % 8;
                tokio::time::sleep(pause + Duration::from_millis(jitter)).await;
                pause = (pause * 2).min(MAX_PAUSE);
            }
            Err(err) => return Err(err.into_store_error()),
        }
    }
}
