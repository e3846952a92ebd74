use std::str::FromStr;
use std::sync::Arc;

use omniq_sql::{PoolSettings, SchemaPolicy};
use omniq_storage::{Clock, MigrationStatus, StoreError, StoreResult};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, Executor, PgConnection, PgPool, Postgres};

use crate::error::{BACKEND, store_error};
use crate::names::Names;
use crate::wakeup::Listener;
use crate::{PgEventStore, PgResultStore, PgScheduleStore, PgTaskQueue};
use omniq_storage::secrets::Secrets;

/// How to connect: the schema to use and the size of the pool.
///
/// ```
/// use omniq_postgres::{PgOptions, PoolSettings};
///
/// let options = PgOptions::default()
///     .schema("billing")
///     .pool(PoolSettings::default().max_connections(20));
/// assert_eq!(options.schema.as_deref(), Some("billing"));
/// assert_eq!(options.pool.max_connections, 20);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct PgOptions {
    /// The schema holding OmniQ's tables, created if missing; `None` uses the connection's
    /// default (usually `public`). Several applications can share one database with a
    /// schema each. A plain identifier: lower-case letters, digits and underscores, at most
    /// 48 characters.
    pub schema: Option<String>,
    /// The pool (default 10 connections, 30 s to wait for one). The wake-up listener uses
    /// one more connection of its own.
    pub pool: PoolSettings,
    /// Whether connecting applies pending schema migrations (the default) or only checks
    /// that none is pending (`migrate=check` in a store URL).
    pub schema_policy: SchemaPolicy,
}

impl PgOptions {
    /// Sets the schema.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = Some(schema.into());
        self
    }

    /// Sets the pool settings.
    pub fn pool(mut self, pool: PoolSettings) -> Self {
        self.pool = pool;
        self
    }

    /// Sets what connecting does about the schema.
    pub fn schema_policy(mut self, policy: SchemaPolicy) -> Self {
        self.schema_policy = policy;
        self
    }
}

/// One PostgreSQL database (and schema) holding all four stores.
///
/// Cloning is cheap: clones share the connection pool and the wake-up listener.
#[derive(Debug, Clone)]
pub struct PgBackend {
    pub(crate) shared: Arc<Shared>,
    /// The client's clock, for what the queue computes on the client (see [`Clock`]).
    clock: Clock,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) pool: PgPool,
    pub(crate) names: Names,
    pub(crate) listener: Listener,
    /// When this process last looked at the tasks table's statistics (see
    /// `queue::statistics`).
    pub(crate) statistics_checked: std::sync::Mutex<Option<std::time::Instant>>,
}

impl PgBackend {
    /// Connects to the database at a `postgres://` URL with the default [`PgOptions`], and
    /// applies the schema migrations.
    ///
    /// TLS follows the URL's `sslmode` (`prefer` by default; `require`, `verify-ca`,
    /// `verify-full` with `sslrootcert`).
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for a malformed URL or a scheme other than `postgres://` or
    /// `postgresql://`; an unavailable error when the server cannot be reached; a backend
    /// error when a migration fails. Errors never contain the URL's password.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        Self::connect_with(url, PgOptions::default()).await
    }

    /// Connects with `options`: creates the schema if it is missing, migrates it, and opens
    /// a pool whose connections all use it (`search_path`).
    ///
    /// # Errors
    /// As [`PgBackend::connect`], and [`StoreError::Invalid`] for a bad schema name or a
    /// pool of no connections.
    pub async fn connect_with(url: &str, options: PgOptions) -> StoreResult<Self> {
        let secrets = Secrets::of(url);
        let names = Names::new(options.schema.as_deref())?;
        let pool_options = omniq_sql::pool_options::<Postgres>("PostgreSQL", &options.pool)?;
        let connect_options = connect_options(url, &secrets)?;
        // Closing the migration's own connection drops the migration lock even if a
        // migration fails half-way.
        let apply = options.schema_policy == SchemaPolicy::Migrate;
        let status = omniq_sql::first_contact(
            BACKEND,
            &secrets,
            options.pool.acquire_timeout,
            migrate(&connect_options, &names, apply),
        )
        .await?;
        if !status.is_current() {
            return Err(omniq_sql::schema_behind(BACKEND, &status));
        }
        let search_path = search_path(&names);
        let pool = pool_options
            .after_connect(move |conn, _meta| {
                let search_path = search_path.clone();
                Box::pin(async move {
                    if let Some(sql) = search_path {
                        conn.execute(AssertSqlSafe(sql)).await?;
                    }
                    Ok(())
                })
            })
            .connect_with(connect_options.clone())
            .await
            .map_err(|e| secrets.scrub_error(BACKEND, store_error(e)))?;
        let listener_pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(options.pool.acquire_timeout)
            .max_lifetime(None)
            .idle_timeout(None)
            .connect_lazy_with(connect_options);
        let listener = Listener::new(
            listener_pool,
            names.task_channel.clone(),
            names.result_channel.clone(),
        );
        Ok(Self {
            shared: Arc::new(Shared {
                pool,
                names,
                listener,
                statistics_checked: std::sync::Mutex::new(None),
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

    /// The task queue in this database.
    pub fn task_queue(&self) -> PgTaskQueue {
        PgTaskQueue::new(self.clone())
    }

    /// The result store in this database.
    pub fn result_store(&self) -> PgResultStore {
        PgResultStore::new(self.clone())
    }

    /// The event store in this database.
    pub fn event_store(&self) -> PgEventStore {
        PgEventStore::new(self.clone())
    }

    /// The schedule store in this database.
    pub fn schedule_store(&self) -> PgScheduleStore {
        PgScheduleStore::new(self.clone())
    }

    /// The connection pool, for your own SQL (its connections use the backend's schema),
    /// and for transactions that enqueue with [`PgTaskQueue::enqueue_in`].
    pub fn pool(&self) -> &PgPool {
        &self.shared.pool
    }

    /// The schema holding the tables, if one was given.
    pub fn schema(&self) -> Option<&str> {
        self.shared.names.schema.as_deref()
    }

    /// Starts the wake-up listener now (it otherwise starts on the first wait) and returns
    /// once it listens, so that no wake-up sent from now on is missed.
    ///
    /// # Errors
    /// An unavailable error when the listener cannot connect; it keeps trying in the
    /// background, and waiters poll meanwhile.
    pub async fn listen(&self) -> StoreResult<()> {
        self.shared.listener.ready().await
    }

    /// Closes the pool; stores using it fail afterwards.
    pub async fn close(&self) {
        self.shared.pool.close().await;
    }

    pub(crate) fn clock(&self) -> Clock {
        self.clock
    }

    pub(crate) fn names(&self) -> &Names {
        &self.shared.names
    }

    /// Wakes this process's waiters on `queues` at once; other processes hear the NOTIFY.
    pub(crate) fn wake_queues<'a>(&self, queues: impl IntoIterator<Item = &'a String>) {
        for queue in queues {
            self.shared.listener.tasks.wake(queue);
        }
    }
}

/// The connection options of a `postgres://` URL (OmniQ's own parameters taken out).
pub(crate) fn connect_options(url: &str, secrets: &Secrets) -> StoreResult<PgConnectOptions> {
    omniq_sql::split_scheme(url, &["postgres", "postgresql"], "PostgreSQL")?;
    let connect_options = PgConnectOptions::from_str(url)
        .map_err(|e| StoreError::Invalid(secrets.scrub(format!("bad PostgreSQL URL: {e}"))))?;
    // Shown in pg_stat_activity; a URL's `application_name` wins.
    Ok(match connect_options.get_application_name() {
        Some(_) => connect_options,
        None => connect_options.application_name("omniq"),
    })
}

fn search_path(names: &Names) -> Option<String> {
    names
        .schema
        .as_ref()
        .map(|schema| format!("SET search_path TO \"{schema}\""))
}

/// Connects once to apply (`apply`) the pending migrations, and reports the schema's status.
pub(crate) async fn migrate(
    options: &PgConnectOptions,
    names: &Names,
    apply: bool,
) -> StoreResult<MigrationStatus> {
    let mut conn: PgConnection = options.connect().await.map_err(store_error)?;
    let result = run_migrations(&mut conn, names, apply).await;
    let _ = conn.close().await;
    result
}

async fn run_migrations(
    conn: &mut PgConnection,
    names: &Names,
    apply: bool,
) -> StoreResult<MigrationStatus> {
    if let Some(sql) = search_path(names) {
        conn.execute(AssertSqlSafe(sql))
            .await
            .map_err(store_error)?;
    }
    let mut migrator = sqlx::migrate!("./migrations");
    // A table of our own: an application that shares the schema may keep its own sqlx
    // migrations in `_sqlx_migrations`.
    migrator.dangerous_set_table_name(names.migrations.clone());
    if let Some(schema) = &names.schema {
        // Created under the migration lock, so parallel first connects do not race.
        migrator.create_schema(format!("\"{schema}\""));
    }
    omniq_sql::settle_schema(&mut migrator, conn, apply, BACKEND, store_error).await
}
