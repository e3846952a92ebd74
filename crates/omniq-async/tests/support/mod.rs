//! Shared test setup: an OmniQ on each embedded backend, with short timings.

#![allow(dead_code, unreachable_pub)]

pub mod faults;

use std::ops::Deref;
use std::time::Duration;

use omniq_async::{AsyncOmniQ, Settings, StoreUrl, Task, TaskContext, TaskError};
use serde::{Deserialize, Serialize};

/// The plainest task: doubles its number.
#[derive(Debug, Serialize, Deserialize)]
pub struct Double(pub i64);

impl Task for Double {
    const NAME: &'static str = "test.double";
    type Output = i64;
    async fn run(self, _ctx: TaskContext) -> Result<i64, TaskError> {
        Ok(self.0 * 2)
    }
}

/// An OmniQ plus whatever must live as long as it (the SQLite file's directory) or be
/// cleaned up after it (a Redis key prefix).
pub struct Harness {
    pub omniq: AsyncOmniQ,
    _dir: Option<tempfile::TempDir>,
    redis_prefix: Option<(String, String)>,
    pg_schema: Option<(String, String)>,
    mysql_database: Option<(String, String)>,
    nats_prefix: Option<(String, String)>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some((url, prefix)) = &self.redis_prefix {
            delete_redis_prefix(url, prefix);
        }
        if let Some((url, schema)) = self.pg_schema.take() {
            drop_pg_schema(url, schema);
        }
        if let Some((url, database)) = self.mysql_database.take() {
            drop_mysql_database(url, database);
        }
        if let Some((url, prefix)) = self.nats_prefix.take() {
            delete_nats_prefix(url, prefix);
        }
    }
}

impl Harness {
    /// Whether the task queue holds dependencies; says the test is skipped when not (the
    /// store's refusal is checked by the conformance suite).
    pub fn supports_dependencies(&self, test: &str) -> bool {
        let supported = self
            .omniq
            .stores()
            .queue
            .capabilities()
            .supports(omniq_storage::Capability::Dependencies);
        if !supported {
            eprintln!("SKIPPED `{test}`: the store does not hold dependencies");
        }
        supported
    }
}

/// Deletes a test's NATS streams and buckets, on a thread of its own: `Drop` cannot await.
#[allow(unused_variables)]
fn delete_nats_prefix(url: String, prefix: String) {
    #[cfg(feature = "nats")]
    let _ = std::thread::spawn(move || {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        runtime.block_on(async move {
            let options = omniq_nats::NatsOptions::prefix(prefix);
            if let Ok(backend) = omniq_nats::NatsBackend::connect_with(&url, options).await {
                let _ = backend.delete_everything().await;
            }
        });
    })
    .join();
}

/// An OmniQ with every store on the test NATS server, under a prefix of its own (deleted
/// with the harness); `None` (with a loud message) when the server is unreachable and
/// services are not required.
pub async fn nats(change: impl FnOnce(&mut Settings)) -> Option<Harness> {
    let base =
        std::env::var("OMNIQ_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned());
    let prefix = format!("omniq-test-{}", uuid::Uuid::new_v4().simple());
    let url = StoreUrl::parse(&format!("{base}?prefix={prefix}")).expect("nats url");
    let mut settings = fast(Settings::default());
    settings.task_queue_url = Some(url.clone());
    settings.result_storage_url = Some(url.clone());
    settings.event_storage_url = Some(url.clone());
    settings.schedule_storage_url = Some(url);
    change(&mut settings);
    match AsyncOmniQ::from_settings(settings).await {
        Ok(omniq) => Some(Harness {
            omniq,
            _dir: None,
            redis_prefix: None,
            pg_schema: None,
            mysql_database: None,
            nats_prefix: Some((base, prefix)),
        }),
        Err(err) if err.kind() == omniq_async::ErrorKind::Unavailable && !services_required() => {
            eprintln!(
                "SKIPPED: NATS unavailable ({err}); set OMNIQ_TEST_REQUIRE_SERVICES=1 to fail"
            );
            None
        }
        Err(err) => panic!("cannot open the NATS stores: {err}"),
    }
}

/// An OmniQ with every store on the object-store backend in a temporary directory of its
/// own (`file://`).
#[cfg(feature = "file")]
pub async fn file(change: impl FnOnce(&mut Settings)) -> Harness {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = StoreUrl::parse(&format!("file://{}", dir.path().join("store").display()))
        .expect("file url");
    let mut settings = fast(Settings::default());
    settings.task_queue_url = Some(url.clone());
    settings.result_storage_url = Some(url.clone());
    settings.event_storage_url = Some(url.clone());
    settings.schedule_storage_url = Some(url);
    change(&mut settings);
    Harness {
        omniq: AsyncOmniQ::from_settings(settings)
            .await
            .expect("file omniq"),
        _dir: Some(dir),
        redis_prefix: None,
        pg_schema: None,
        mysql_database: None,
        nats_prefix: None,
    }
}

/// Drops a test's schema, on a thread of its own: `Drop` cannot await.
fn drop_pg_schema(url: String, schema: String) {
    let dropper = std::thread::spawn(move || {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        runtime.block_on(async move {
            use sqlx::Connection;
            if let Ok(mut conn) = sqlx::PgConnection::connect(&url).await {
                // Never wait forever on a lock a lingering connection holds.
                let _ = sqlx::query("SET lock_timeout = '30s'")
                    .execute(&mut conn)
                    .await;
                let sql = format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE");
                let _ = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .execute(&mut conn)
                    .await;
                let _ = conn.close().await;
            }
        });
    });
    let _ = dropper.join();
}

/// Drops a test's MySQL database, on a thread of its own: `Drop` cannot await.
fn drop_mysql_database(url: String, database: String) {
    let dropper = std::thread::spawn(move || {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        runtime.block_on(async move {
            use sqlx::Connection;
            if let Ok(mut conn) = sqlx::MySqlConnection::connect(&url).await {
                // The test's pools close in the background, and a connection left inside
                // a transaction would hold a lock the DROP waits on forever: end them first,
                // saying so when one was mid-transaction, and never wait long.
                let _ = sqlx::query("SET SESSION lock_wait_timeout = 30")
                    .execute(&mut conn)
                    .await;
                let lingering: Vec<(u64, Option<String>)> = sqlx::query_as(
                    "SELECT p.ID, CAST(t.trx_started AS CHAR) \
                     FROM information_schema.PROCESSLIST p \
                     LEFT JOIN information_schema.INNODB_TRX t ON t.trx_mysql_thread_id = p.ID \
                     WHERE p.DB = ? AND p.ID <> CONNECTION_ID()",
                )
                .bind(&database)
                .fetch_all(&mut conn)
                .await
                .unwrap_or_default();
                for (id, in_transaction_since) in lingering {
                    if let Some(since) = in_transaction_since {
                        eprintln!(
                            "warning: connection {id} to {database} was still in a transaction \
                             (since {since}) when the test ended"
                        );
                    }
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!("KILL {id}")))
                        .execute(&mut conn)
                        .await;
                }
                let sql = format!("DROP DATABASE IF EXISTS `{database}`");
                let _ = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .execute(&mut conn)
                    .await;
                let _ = conn.close().await;
            }
        });
    });
    let _ = dropper.join();
}

/// `url` with its database replaced by `database`.
fn with_mysql_database(url: &str, database: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("mysql", url));
    let (authority, tail) = rest.split_once('/').unwrap_or((rest, ""));
    let query = tail
        .split_once('?')
        .map(|(_, q)| format!("?{q}"))
        .unwrap_or_default();
    format!("{scheme}://{authority}/{database}{query}")
}

fn delete_redis_prefix(url: &str, prefix: &str) {
    let Ok(client) = redis::Client::open(url) else {
        return;
    };
    let Ok(mut conn) = client.get_connection() else {
        return;
    };
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("*{prefix}*"))
        .query(&mut conn)
        .unwrap_or_default();
    for chunk in keys.chunks(500) {
        let _: redis::RedisResult<()> = redis::cmd("DEL").arg(chunk).query(&mut conn);
    }
}

impl Deref for Harness {
    type Target = AsyncOmniQ;
    fn deref(&self) -> &AsyncOmniQ {
        &self.omniq
    }
}

pub const WAIT: Duration = Duration::from_secs(20);

/// Settings with timings short enough for tests.
pub fn fast(mut settings: Settings) -> Settings {
    settings.lease = Duration::from_secs(3);
    settings.heartbeat = Duration::from_millis(500);
    settings.poll_interval = Duration::from_millis(50);
    settings.shutdown_grace = Duration::from_secs(5);
    settings
}

pub async fn memory(change: impl FnOnce(&mut Settings)) -> Harness {
    let mut settings = fast(Settings::memory());
    change(&mut settings);
    Harness {
        omniq: AsyncOmniQ::from_settings(settings)
            .await
            .expect("memory omniq"),
        _dir: None,
        redis_prefix: None,
        pg_schema: None,
        mysql_database: None,
        nats_prefix: None,
    }
}

pub async fn sqlite(change: impl FnOnce(&mut Settings)) -> Harness {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut settings = fast(Settings::default());
    settings.base_dir = dir.path().to_path_buf();
    change(&mut settings);
    Harness {
        omniq: AsyncOmniQ::from_settings(settings)
            .await
            .expect("sqlite omniq"),
        _dir: Some(dir),
        redis_prefix: None,
        pg_schema: None,
        mysql_database: None,
        nats_prefix: None,
    }
}

/// An OmniQ with every store on the test Redis, under a key prefix of its own; `None`
/// (with a loud message) when Redis is unreachable and services are not required.
pub async fn redis(change: impl FnOnce(&mut Settings)) -> Option<Harness> {
    let base = std::env::var("OMNIQ_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379/0".to_owned());
    let prefix = format!("omniq-test-{}", uuid::Uuid::new_v4().simple());
    let url = StoreUrl::parse(&format!("{base}?prefix={prefix}")).expect("redis url");
    let mut settings = fast(Settings::default());
    settings.task_queue_url = Some(url.clone());
    settings.result_storage_url = Some(url.clone());
    settings.event_storage_url = Some(url.clone());
    settings.schedule_storage_url = Some(url);
    change(&mut settings);
    match AsyncOmniQ::from_settings(settings).await {
        Ok(omniq) => Some(Harness {
            omniq,
            _dir: None,
            redis_prefix: Some((base, prefix)),
            pg_schema: None,
            mysql_database: None,
            nats_prefix: None,
        }),
        Err(err) if err.kind() == omniq_async::ErrorKind::Unavailable && !services_required() => {
            eprintln!(
                "SKIPPED: Redis unavailable ({err}); set OMNIQ_TEST_REQUIRE_SERVICES=1 to fail"
            );
            None
        }
        Err(err) => panic!("cannot open the Redis stores: {err}"),
    }
}

/// An OmniQ with every store on the test PostgreSQL, in a schema of its own (dropped with
/// the harness); `None` (with a loud message) when the server is unreachable and services
/// are not required.
pub async fn postgres(change: impl FnOnce(&mut Settings)) -> Option<Harness> {
    let base = std::env::var("OMNIQ_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let schema = format!(
        "omniq_facade_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..16]
    );
    let separator = if base.contains('?') { '&' } else { '?' };
    let url = StoreUrl::parse(&format!("{base}{separator}schema={schema}")).expect("postgres url");
    let mut settings = fast(Settings::default());
    settings.task_queue_url = Some(url.clone());
    settings.result_storage_url = Some(url.clone());
    settings.event_storage_url = Some(url.clone());
    settings.schedule_storage_url = Some(url);
    change(&mut settings);
    match AsyncOmniQ::from_settings(settings).await {
        Ok(omniq) => Some(Harness {
            omniq,
            _dir: None,
            redis_prefix: None,
            pg_schema: Some((base, schema)),
            mysql_database: None,
            nats_prefix: None,
        }),
        Err(err) if err.kind() == omniq_async::ErrorKind::Unavailable && !services_required() => {
            eprintln!(
                "SKIPPED: PostgreSQL unavailable ({err}); set OMNIQ_TEST_REQUIRE_SERVICES=1 to fail"
            );
            None
        }
        Err(err) => panic!("cannot open the PostgreSQL stores: {err}"),
    }
}

/// An OmniQ with every store on the test MySQL or MariaDB, in a database of its own
/// (dropped with the harness); `None` (with a loud message) when the server is unreachable
/// and services are not required.
pub async fn mysql(change: impl FnOnce(&mut Settings)) -> Option<Harness> {
    use sqlx::Connection;
    let base = std::env::var("OMNIQ_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".to_owned());
    let database = format!(
        "omniq_facade_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..16]
    );
    match sqlx::MySqlConnection::connect(&base).await {
        Ok(mut conn) => {
            let sql = format!("CREATE DATABASE `{database}`");
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&mut conn)
                .await
                .expect("create the test database");
            let _ = conn.close().await;
        }
        Err(err) if !services_required() => {
            eprintln!(
                "SKIPPED: MySQL unavailable ({err}); set OMNIQ_TEST_REQUIRE_SERVICES=1 to fail"
            );
            return None;
        }
        Err(err) => panic!("cannot reach MySQL: {err}"),
    }
    let url = StoreUrl::parse(&with_mysql_database(&base, &database)).expect("mysql url");
    let mut settings = fast(Settings::default());
    settings.task_queue_url = Some(url.clone());
    settings.result_storage_url = Some(url.clone());
    settings.event_storage_url = Some(url.clone());
    settings.schedule_storage_url = Some(url);
    change(&mut settings);
    let harness = Harness {
        omniq: AsyncOmniQ::from_settings(settings)
            .await
            .expect("mysql omniq"),
        _dir: None,
        redis_prefix: None,
        pg_schema: None,
        mysql_database: Some((base, database)),
        nats_prefix: None,
    };
    Some(harness)
}

fn services_required() -> bool {
    std::env::var("OMNIQ_TEST_REQUIRE_SERVICES").is_ok_and(|v| v == "1" || v == "true")
}

pub fn sqlite_file(dir: &std::path::Path) -> StoreUrl {
    StoreUrl::parse(&format!("sqlite://{}/omniq.db", dir.display())).expect("sqlite url")
}

/// Expands a test body (an `async fn(Harness)`) into one test per embedded backend.
#[macro_export]
macro_rules! on_each_backend {
    ($($name:ident => $body:expr;)*) => {
        $(
            mod $name {
                use super::*;

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn memory() {
                    ($body)(support::memory(|_| {}).await).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    ($body)(support::sqlite(|_| {}).await).await;
                }

                #[cfg(feature = "redis")]
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn redis() {
                    if let Some(harness) = support::redis(|_| {}).await {
                        ($body)(harness).await;
                    }
                }

                #[cfg(feature = "postgres")]
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    if let Some(harness) = support::postgres(|_| {}).await {
                        ($body)(harness).await;
                    }
                }

                #[cfg(feature = "mysql")]
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn mysql() {
                    if let Some(harness) = support::mysql(|_| {}).await {
                        ($body)(harness).await;
                    }
                }

                #[cfg(feature = "nats")]
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn nats() {
                    if let Some(harness) = support::nats(|_| {}).await {
                        ($body)(harness).await;
                    }
                }

                #[cfg(feature = "file")]
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn file() {
                    ($body)(support::file(|_| {}).await).await;
                }
            }
        )*
    };
}

/// Settings for a worker of `kind`; a process worker's children re-run `test` of this
/// binary (its full name, as `--exact` takes it).
pub fn worker_kind(settings: &mut Settings, kind: omniq_async::WorkerKind, test: &str) {
    settings.default_worker = kind;
    if kind == omniq_async::WorkerKind::Process {
        let exe = std::env::current_exe().expect("test binary");
        settings.child_command = vec![
            exe.to_string_lossy().into_owned(),
            test.to_owned(),
            "--exact".to_owned(),
            "--nocapture".to_owned(),
        ];
    }
}

/// The scenarios again with every other worker kind (thread, local, process), on memory
/// and SQLite: `worker_kinds::<scenario>::<backend>_<kind>`. A scenario followed by a list
/// (`[memory_thread, sqlite_local]`) runs only those.
#[macro_export]
macro_rules! on_each_worker_kind {
    ($($name:ident => $body:path $([$($only:ident),* $(,)?])?;)*) => {
        mod worker_kinds {
            use super::*;
            $(
                mod $name {
                    use super::*;
                    $crate::on_each_worker_kind!(@tests $name $body; $([$($only),*])?);
                }
            )*
        }
    };
    (@tests $name:ident $body:path; ) => {
        $crate::on_each_worker_kind!(@tests $name $body; [
            memory_thread, memory_local, memory_process,
            sqlite_thread, sqlite_local, sqlite_process
        ]);
    };
    (@tests $name:ident $body:path; [$($test:ident),*]) => {
        $($crate::on_each_worker_kind!(@test $name $body; $test);)*
    };
    (@test $name:ident $body:path; memory_thread) => {
        $crate::on_each_worker_kind!(@kind $name $body; memory_thread, memory, Thread);
    };
    (@test $name:ident $body:path; memory_local) => {
        $crate::on_each_worker_kind!(@kind $name $body; memory_local, memory, Local);
    };
    (@test $name:ident $body:path; memory_process) => {
        $crate::on_each_worker_kind!(@kind $name $body; memory_process, memory, Process);
    };
    (@test $name:ident $body:path; sqlite_thread) => {
        $crate::on_each_worker_kind!(@kind $name $body; sqlite_thread, sqlite, Thread);
    };
    (@test $name:ident $body:path; sqlite_local) => {
        $crate::on_each_worker_kind!(@kind $name $body; sqlite_local, sqlite, Local);
    };
    (@test $name:ident $body:path; sqlite_process) => {
        $crate::on_each_worker_kind!(@kind $name $body; sqlite_process, sqlite, Process);
    };
    (@kind $name:ident $body:path; $test:ident, $backend:ident, $kind:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $test() {
            let test = concat!("worker_kinds::", stringify!($name), "::", stringify!($test));
            ($body)(
                support::$backend(|settings| {
                    support::worker_kind(settings, omniq_async::WorkerKind::$kind, test)
                })
                .await,
            )
            .await;
        }
    };
}
