use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use omniq_sql::SchemaPolicy;
use omniq_storage::{Clock, MigrationStatus, StoreError, StoreResult};
use sqlx::mysql::MySqlConnectOptions;
use sqlx::{ConnectOptions, Connection, Executor, MySql, MySqlConnection, MySqlPool};

use crate::error::{BACKEND, store_error};
use crate::wakeup::Wakeup;
use crate::{MySqlEventStore, MySqlResultStore, MySqlScheduleStore, MySqlTaskQueue};
use omniq_storage::secrets::Secrets;

/// Every connection reads committed data: a statement that waited for a row lock sees the
/// rows as the lock holder committed them (REPEATABLE READ would show this transaction's
/// older snapshot), and InnoDB takes fewer gap locks.
const SESSION_SETUP: &str = "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED";

/// How to connect: the size of the pool and how long to wait for it (the pool settings
/// every SQL server backend takes).
///
/// The tables live in the URL's database, so one database serves one application; give
/// each application a database of its own.
///
/// ```
/// use omniq_mysql::MySqlOptions;
///
/// let options = MySqlOptions::default().max_connections(20);
/// assert_eq!(options.max_connections, 20);
/// ```
pub type MySqlOptions = omniq_sql::PoolSettings;

/// One MySQL or MariaDB database holding all four stores.
///
/// Cloning is cheap: clones share the connection pool and the in-process wake-ups.
#[derive(Debug, Clone)]
pub struct MySqlBackend {
    pub(crate) shared: Arc<Shared>,
    /// The client's clock, for what the queue computes on the client (see [`Clock`]).
    clock: Clock,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) pool: MySqlPool,
    pub(crate) wakeup: Wakeup,
    /// The server's `max_allowed_packet`: no statement may be larger.
    pub(crate) max_packet: usize,
}

impl MySqlBackend {
    /// Connects to the database at a `mysql://` (or `mariadb://`) URL with the default
    /// [`MySqlOptions`], and applies the schema migrations.
    ///
    /// TLS follows the URL's `ssl-mode` (`preferred` by default).
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for a malformed URL or another scheme; an unavailable error
    /// when the server cannot be reached; a backend error when a migration fails. Errors
    /// never contain the URL's password.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        Self::connect_with(url, MySqlOptions::default()).await
    }

    /// Connects with `options`: migrates the database, and opens a pool.
    ///
    /// # Errors
    /// As [`MySqlBackend::connect`], and [`StoreError::Invalid`] for a pool of no
    /// connections.
    pub async fn connect_with(url: &str, options: MySqlOptions) -> StoreResult<Self> {
        Self::open(url, options, SchemaPolicy::Migrate).await
    }

    /// Connects with `options`, doing what `policy` says about the schema.
    pub(crate) async fn open(
        url: &str,
        options: MySqlOptions,
        policy: SchemaPolicy,
    ) -> StoreResult<Self> {
        let secrets = Secrets::of(url);
        let pool_options = omniq_sql::pool_options::<MySql>("MySQL", &options)?;
        let connect_options = connect_options(url, &secrets)?;
        let status = omniq_sql::first_contact(
            BACKEND,
            &secrets,
            options.acquire_timeout,
            migrate(
                &connect_options,
                options.acquire_timeout,
                policy == SchemaPolicy::Migrate,
            ),
        )
        .await?;
        if !status.is_current() {
            return Err(omniq_sql::schema_behind(BACKEND, &status));
        }
        let pool = pool_options
            .after_connect(|conn, _meta| {
                Box::pin(async move {
                    conn.execute(SESSION_SETUP).await?;
                    Ok(())
                })
            })
            .connect_with(connect_options)
            .await
            .map_err(|e| secrets.scrub_error(BACKEND, store_error(e)))?;
        let max_packet: u64 = sqlx::query_scalar("SELECT @@max_allowed_packet")
            .fetch_one(&pool)
            .await
            .map_err(|e| secrets.scrub_error(BACKEND, store_error(e)))?;
        Ok(Self {
            shared: Arc::new(Shared {
                pool,
                wakeup: Wakeup::new(),
                max_packet: usize::try_from(max_packet).unwrap_or(usize::MAX),
            }),
            clock: Clock::system(),
        })
    }

    /// This backend (the same pool), reading `clock` where it reads the client's time:
    /// when a task is due, its TTL, timestamps. Lease deadlines are set and judged on the
    /// server's clock whatever `clock` says (see [`Clock`]). For tests that play a machine
    /// whose clock is wrong.
    pub fn with_clock(&self, clock: Clock) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
            clock,
        }
    }

    pub(crate) fn clock(&self) -> Clock {
        self.clock
    }

    /// The task queue in this database.
    pub fn task_queue(&self) -> MySqlTaskQueue {
        MySqlTaskQueue::new(self.clone())
    }

    /// The result store in this database.
    pub fn result_store(&self) -> MySqlResultStore {
        MySqlResultStore::new(self.clone())
    }

    /// The event store in this database.
    pub fn event_store(&self) -> MySqlEventStore {
        MySqlEventStore::new(self.clone())
    }

    /// The schedule store in this database.
    pub fn schedule_store(&self) -> MySqlScheduleStore {
        MySqlScheduleStore::new(self.clone())
    }

    /// The connection pool, for your own SQL. Its connections read committed data
    /// (`READ COMMITTED`).
    ///
    /// Do not cancel a `pool.begin()` future (a `select!`, a timeout) before it resolves:
    /// sqlx 0.9.1's MySQL driver then returns the connection to the pool inside a
    /// transaction nothing ends, and OmniQ's statements on it would run uncommitted. OmniQ's
    /// own transactions close their connection instead when cut short.
    pub fn pool(&self) -> &MySqlPool {
        &self.shared.pool
    }

    /// Multi-row statements of at most `max_rows` rows, and bytes well under the server's
    /// `max_allowed_packet` (a statement over it makes the server drop the connection).
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for a row that could never fit in one statement.
    pub(crate) fn statements<'a, T>(
        &self,
        rows: &'a [T],
        max_rows: usize,
        bytes: impl Fn(&T) -> usize,
    ) -> StoreResult<Vec<&'a [T]>> {
        /// Room for the statement's text and each row's fixed-size columns.
        const OVERHEAD: usize = 64 * 1024;
        const ROW_OVERHEAD: usize = 256;
        let limit = self.shared.max_packet.saturating_sub(OVERHEAD);
        let budget = (self.shared.max_packet / 2).clamp(1, 8 * 1024 * 1024);
        let mut statements = Vec::new();
        let (mut start, mut size) = (0, 0);
        for (i, row) in rows.iter().enumerate() {
            let row_size = bytes(row) + ROW_OVERHEAD;
            if row_size > limit {
                return Err(StoreError::Invalid(format!(
                    "a row of {row_size} bytes does not fit in the server's \
                     max_allowed_packet of {} bytes",
                    self.shared.max_packet
                )));
            }
            if i > start && (i - start == max_rows || size + row_size > budget) {
                statements.push(&rows[start..i]);
                (start, size) = (i, 0);
            }
            size += row_size;
        }
        if start < rows.len() {
            statements.push(&rows[start..]);
        }
        Ok(statements)
    }

    /// Closes the pool; stores using it fail afterwards.
    pub async fn close(&self) {
        self.shared.pool.close().await;
    }

    pub(crate) fn wakeup(&self) -> &Wakeup {
        &self.shared.wakeup
    }
}

/// The connection options of a `mysql://` or `mariadb://` URL.
pub(crate) fn connect_options(url: &str, secrets: &Secrets) -> StoreResult<MySqlConnectOptions> {
    let (_, rest) = omniq_sql::split_scheme(url, &["mysql", "mariadb"], "MySQL")?;
    // sqlx knows the `mysql` scheme only; MariaDB speaks the same protocol.
    let url = format!("mysql://{rest}");
    let connect_options = MySqlConnectOptions::from_str(&url)
        .map_err(|e| StoreError::Invalid(secrets.scrub(format!("bad MySQL URL: {e}"))))?;
    if connect_options.get_database().is_none() {
        return Err(StoreError::Invalid(
            "a MySQL URL names its database: mysql://user@host:3306/database".into(),
        ));
    }
    Ok(connect_options)
}

/// Connects once to apply (`apply`) the pending migrations under the migration lock, and
/// reports the schema's status.
pub(crate) async fn migrate(
    options: &MySqlConnectOptions,
    patience: Duration,
    apply: bool,
) -> StoreResult<MigrationStatus> {
    let mut conn: MySqlConnection = options.connect().await.map_err(store_error)?;
    let result = run_migrations(&mut conn, patience, apply).await;
    // Closing the session also frees the migration lock, whatever happened.
    let _ = conn.close().await;
    result
}

/// The migration lock, one per database (a lock name is at most 64 characters, a
/// database name alone may be 64).
const MIGRATION_LOCK: &str = "CONCAT('omniq_migrate_', SHA1(DATABASE()))";

async fn run_migrations(
    conn: &mut MySqlConnection,
    patience: Duration,
    apply: bool,
) -> StoreResult<MigrationStatus> {
    // Our own lock rather than sqlx's: sqlx asks for `GET_LOCK(name, -1)` and ignores the
    // answer, and MariaDB answers NULL (no lock) to a negative timeout, so processes that
    // opened a new database together applied the same migration twice and all but one
    // failed.
    let seconds = patience.as_secs().max(1);
    let locked: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT GET_LOCK({MIGRATION_LOCK}, ?)"
    )))
    .bind(seconds)
    .fetch_one(&mut *conn)
    .await
    .map_err(store_error)?;
    if locked != Some(1) {
        return Err(StoreError::unavailable(
            BACKEND,
            format!("another process held the migration lock for {seconds} s"),
        ));
    }
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.set_locking(false);
    // A table of our own: an application that shares the database may keep its own sqlx
    // migrations in `_sqlx_migrations`.
    migrator.dangerous_set_table_name("omniq_migrations");
    // `run_direct` rather than `run`: the generic `Acquire` bound of `run` makes the future
    // fail the compiler's higher-ranked `Send` check in callers that box or spawn it.
    let migrated =
        omniq_sql::settle_schema(&mut migrator, &mut *conn, apply, BACKEND, store_error).await;
    let released = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DO RELEASE_LOCK({MIGRATION_LOCK})"
    )))
    .execute(&mut *conn)
    .await
    .map_err(store_error);
    migrated.and_then(|status| released.map(|_| status))
}
