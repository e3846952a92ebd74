//! Test-side helpers: the backends a scenario runs on, start `e2e-worker` processes, signal
//! them, read their output and the runs log, and wait for conditions with deadlines.
//!
//! A scenario is an `async fn(&Scene) -> anyhow::Result<()>`; [`on_backends!`] turns it
//! into one test per backend. A [`Scene`] is one test's directory (runs log, process logs)
//! plus its [`Target`], the stores: a fresh SQLite file; the test Redis
//! (`OMNIQ_TEST_REDIS_URL`, default `redis://127.0.0.1:6379/0`) under a random key prefix;
//! the test PostgreSQL (`OMNIQ_TEST_POSTGRES_URL`) in a schema of the test's own; or the
//! test MySQL/MariaDB (`OMNIQ_TEST_MYSQL_URL`, default `mysql://root@127.0.0.1:3306/test`)
//! in a database of the test's own. What a test made on a shared server is deleted
//! afterwards. An unreachable server skips the test loudly, or fails it under
//! `OMNIQ_TEST_REQUIRE_SERVICES=1`.
//!
//! Adding a backend: the omniq-async feature (see tests/Cargo.toml), a [`Backend`]
//! variant, its arm in [`Target::new`] (the server's URL with an isolation of the test's
//! own: a key prefix, a schema, a database), a [`Cleanup`] variant that drops what the
//! test made, and one more test fn in [`on_backends!`]. The scenarios and
//! `e2e-worker --url` need no change.
//!
//! Servers of a test's own, stopped and started again mid-test, implement
//! [`RestartableServer`] (see `redis_restart.rs` and `postgres_restart.rs`).

#![allow(dead_code, unreachable_pub)]

pub mod restart;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use omniq_async::{AsyncOmniQ, QueueStats};
use omniq_e2e::QUEUE;
use tokio::sync::mpsc;

/// How often files and processes written or run by another process are polled.
pub const POLL: Duration = Duration::from_millis(20);

/// The test PostgreSQL when `OMNIQ_TEST_POSTGRES_URL` is not set.
pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The test MySQL/MariaDB when `OMNIQ_TEST_MYSQL_URL` is not set.
pub const DEFAULT_MYSQL_URL: &str = "mysql://root@127.0.0.1:3306/test";

/// Runs one statement on the PostgreSQL at `url`, on a thread of its own so that it works
/// from `Drop` and from inside the test's runtime alike.
pub fn pg_execute(url: &str, sql: String) -> anyhow::Result<()> {
    sql_execute::<sqlx::PgConnection>("PostgreSQL", url, sql)
}

/// Runs one statement on the MySQL/MariaDB at `url`, like [`pg_execute`].
pub fn mysql_execute(url: &str, sql: String) -> anyhow::Result<()> {
    sql_execute::<sqlx::MySqlConnection>("MySQL", url, sql)
}

/// Connects with `C` to `url` (bounded), runs `sql` and closes, on a thread and runtime of
/// its own.
fn sql_execute<C>(server: &'static str, url: &str, sql: String) -> anyhow::Result<()>
where
    C: sqlx::Connection,
    for<'c> &'c mut C: sqlx::Executor<'c, Database = C::Database>,
    for<'q> <C::Database as sqlx::Database>::Arguments: sqlx::IntoArguments<C::Database>,
{
    let url = url.to_owned();
    std::thread::spawn(move || -> anyhow::Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async move {
            let mut conn = tokio::time::timeout(Duration::from_secs(5), C::connect(&url))
                .await
                .context("connecting timed out")??;
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&mut conn)
                .await?;
            conn.close().await?;
            anyhow::Ok(())
        })
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the {server} helper thread panicked"))?
}

/// `url` with its path (the database) replaced by `/database`, or removed when `database`
/// is empty; the query string is kept.
pub fn with_database(url: &str, database: &str) -> anyhow::Result<String> {
    let (scheme, rest) = url
        .split_once("://")
        .with_context(|| format!("not a URL: {url}"))?;
    let (before_query, query) = match rest.split_once('?') {
        Some((before, query)) => (before, Some(query)),
        None => (rest, None),
    };
    let authority = before_query.split('/').next().unwrap_or(before_query);
    let mut out = format!("{scheme}://{authority}");
    if !database.is_empty() {
        out.push('/');
        out.push_str(database);
    }
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    Ok(out)
}

/// The test NATS server when `OMNIQ_TEST_NATS_URL` is not set.
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";

/// Whether the NATS server at `url` (one `host:port`) answers with JetStream up: a
/// JetStream API request over the plain protocol, so it needs no runtime.
pub fn nats_jetstream_ready(url: &str) -> anyhow::Result<()> {
    let authority = url
        .split_once("://")
        .map_or(url, |(_, rest)| rest)
        .split(['/', '?'])
        .next()
        .unwrap_or_default();
    let mut stream = std::net::TcpStream::connect(authority)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.write_all(
        b"CONNECT {\"verbose\":false,\"pedantic\":false}\r\nSUB _probe.reply 1\r\n\
          PUB $JS.API.INFO _probe.reply 0\r\n\r\n",
    )?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    while reader.read_line(&mut line)? > 0 {
        if line.starts_with("MSG _probe.reply") {
            let mut body = String::new();
            reader.read_line(&mut body)?;
            ensure!(
                !body.contains("\"error\""),
                "JetStream is not ready: {body}"
            );
            return Ok(());
        }
        line.clear();
    }
    bail!("the NATS server closed the connection")
}

/// Whether something listens at the NATS URL's host and port.
fn nats_reachable(url: &str) -> anyhow::Result<()> {
    tcp_reachable(url)
}

/// Whether a TCP connection to the host and port of `url` opens (within 2 s).
fn tcp_reachable(url: &str) -> anyhow::Result<()> {
    let authority = url
        .split_once("://")
        .map_or(url, |(_, rest)| rest)
        .split(['/', '?'])
        .next()
        .unwrap_or_default();
    let host_port = authority.rsplit('@').next().unwrap_or(authority);
    let address = std::net::ToSocketAddrs::to_socket_addrs(host_port)?
        .next()
        .context("the URL names no address")?;
    std::net::TcpStream::connect_timeout(&address, Duration::from_secs(2))?;
    Ok(())
}

/// Deletes the streams and buckets of `prefix`, on a runtime of its own (clean-up runs from
/// `Drop` too).
fn delete_nats_prefix(url: &str, prefix: &str) -> anyhow::Result<()> {
    let (url, prefix) = (url.to_owned(), prefix.to_owned());
    std::thread::spawn(move || -> anyhow::Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async move {
            let options = omniq_nats::NatsOptions::prefix(prefix);
            let backend = omniq_nats::NatsBackend::connect_with(&url, options).await?;
            backend.delete_everything().await?;
            anyhow::Ok(())
        })
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the clean-up thread panicked"))?
}

/// The test RabbitMQ when `OMNIQ_TEST_AMQP_URL` is not set.
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// Deletes the queues and exchanges of `prefix` for the e2e queue, on a runtime of its own
/// (clean-up runs from `Drop` too).
fn delete_amqp_prefix(url: &str, prefix: &str) -> anyhow::Result<()> {
    let (url, prefix) = (url.to_owned(), prefix.to_owned());
    std::thread::spawn(move || -> anyhow::Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async move {
            let options = omniq_amqp::AmqpOptions::prefix(prefix);
            let backend = omniq_amqp::AmqpBackend::connect_with(&url, options).await?;
            backend.delete_everything(&[QUEUE.to_owned()]).await?;
            backend.close().await;
            anyhow::Ok(())
        })
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the clean-up thread panicked"))?
}

/// The test SQS server when `OMNIQ_TEST_SQS_URL` is not set.
pub const DEFAULT_SQS_URL: &str = "http://127.0.0.1:5001";

/// Deletes the SQS queues of the store URL `url` for the e2e queue, on a runtime of its
/// own (clean-up runs from `Drop` too).
fn delete_sqs_queues(url: &str) -> anyhow::Result<()> {
    let url = url.to_owned();
    std::thread::spawn(move || -> anyhow::Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async move {
            let backend = omniq_sqs::SqsBackend::connect(&url).await?;
            backend.delete_everything(&[QUEUE.to_owned()]).await?;
            anyhow::Ok(())
        })
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the clean-up thread panicked"))?
}

/// The test S3 server when `OMNIQ_TEST_S3_URL` is not set.
pub const DEFAULT_S3_URL: &str = "http://127.0.0.1:5000";

/// The bucket the S3 tests share, each under a prefix of its own.
const S3_BUCKET: &str = "omniq-test";

/// Creates the test bucket on the S3 server at `server` (`http://host:port`) if missing:
/// the test server takes unsigned requests.
fn create_s3_bucket(server: &str) -> anyhow::Result<()> {
    use std::io::Read;
    let address = server.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = std::net::TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(
        format!(
            "PUT /{S3_BUCKET} HTTP/1.1\r\nHost: {address}\r\nContent-Length: 0\r\n\
             Connection: close\r\n\r\n"
        )
        .as_bytes(),
    )?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply)?;
    match reply.split_whitespace().nth(1) {
        // Created, or there already.
        Some("200" | "409") => Ok(()),
        status => bail!("creating the bucket: {status:?}"),
    }
}

/// Deletes every object of the store URL `url`, on a runtime of its own (clean-up runs
/// from `Drop` too).
fn delete_objects(url: &str) -> anyhow::Result<()> {
    let url = url.to_owned();
    std::thread::spawn(move || -> anyhow::Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async move {
            let backend = omniq_file::FileBackend::connect_url(&url).await?;
            let objects = backend.objects();
            for key in objects.list("").await? {
                objects.delete(&key).await?;
            }
            anyhow::Ok(())
        })
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the clean-up thread panicked"))?
}

/// The test Redis when `OMNIQ_TEST_REDIS_URL` is not set.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379/0";

/// Expands scenarios (each an `async fn(&Scene) -> anyhow::Result<()>` of the calling file)
/// into a module per scenario with one test per backend: `<scenario>::sqlite`,
/// `<scenario>::redis`, `<scenario>::postgres`, `<scenario>::mysql`.
#[allow(unused_macros)]
macro_rules! on_backends {
    ($($scenario:ident),+ $(,)?) => {$(
        mod $scenario {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() -> anyhow::Result<()> {
                $crate::support::run(
                    $crate::support::Backend::Sqlite,
                    concat!(stringify!($scenario), "::sqlite"),
                    super::$scenario,
                )
                .await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn redis() -> anyhow::Result<()> {
                $crate::support::run(
                    $crate::support::Backend::Redis,
                    concat!(stringify!($scenario), "::redis"),
                    super::$scenario,
                )
                .await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() -> anyhow::Result<()> {
                $crate::support::run(
                    $crate::support::Backend::Postgres,
                    concat!(stringify!($scenario), "::postgres"),
                    super::$scenario,
                )
                .await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn mysql() -> anyhow::Result<()> {
                $crate::support::run(
                    $crate::support::Backend::Mysql,
                    concat!(stringify!($scenario), "::mysql"),
                    super::$scenario,
                )
                .await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn nats() -> anyhow::Result<()> {
                $crate::support::run(
                    $crate::support::Backend::Nats,
                    concat!(stringify!($scenario), "::nats"),
                    super::$scenario,
                )
                .await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn file() -> anyhow::Result<()> {
                $crate::support::run(
                    $crate::support::Backend::File,
                    concat!(stringify!($scenario), "::file"),
                    super::$scenario,
                )
                .await
            }
        }
    )+};
}

/// One scenario at a time per test binary: each starts worker processes with leases of a
/// few seconds and timing bounds, and the machine has few cores, so scenarios sharing
/// them would measure each other's load rather than the library.
static ONE_AT_A_TIME: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

/// Runs `scenario` on a fresh scene of `backend` and cleans the scene's stores up
/// afterwards, whatever the outcome; one scenario at a time. A backend whose server is
/// unreachable skips the test (see [`Scene::on`]).
pub async fn run(
    backend: Backend,
    test: &str,
    scenario: impl AsyncFnOnce(&Scene) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let _turn = ONE_AT_A_TIME.acquire().await?;
    let Some(mut scene) = Scene::on(backend, test)? else {
        return Ok(());
    };
    let outcome = scenario(&scene).await;
    let cleaned = scene.clean_up();
    outcome?;
    cleaned
}

/// Whether `OMNIQ_TEST_REQUIRE_SERVICES` asks for every backend server to be reachable.
pub fn services_required() -> bool {
    std::env::var("OMNIQ_TEST_REQUIRE_SERVICES").is_ok_and(|v| v == "1" || v == "true")
}

/// A service the test needs is missing: fails under `OMNIQ_TEST_REQUIRE_SERVICES=1`, else
/// says so loudly (straight to the process's stderr, past the test harness's capture) and
/// returns `Ok(None)` for the test to return early.
pub fn unavailable<T>(test: &str, what: &str, why: impl fmt::Display) -> anyhow::Result<Option<T>> {
    if services_required() {
        bail!("`{test}`: {what} is unavailable ({why}) and OMNIQ_TEST_REQUIRE_SERVICES=1");
    }
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED `{test}`: {what} unavailable ({why}); \
         set OMNIQ_TEST_REQUIRE_SERVICES=1 to make this an error"
    );
    Ok(None)
}

/// A backend the scenarios run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file of the test's own.
    Sqlite,
    /// The test Redis (`OMNIQ_TEST_REDIS_URL`), under a key prefix of the test's own.
    Redis,
    /// The test PostgreSQL (`OMNIQ_TEST_POSTGRES_URL`), in a schema of the test's own.
    Postgres,
    /// The test MySQL/MariaDB (`OMNIQ_TEST_MYSQL_URL`), in a database of the test's own.
    Mysql,
    /// The test NATS server (`OMNIQ_TEST_NATS_URL`), under a prefix of the test's own.
    Nats,
    /// A local directory of the test's own (the object-store backend, `file://`).
    File,
    /// The test S3 server (`OMNIQ_TEST_S3_URL`), under a prefix of the test's own.
    S3,
    /// The test RabbitMQ (`OMNIQ_TEST_AMQP_URL`) under a prefix of the test's own, for the
    /// task queue; the other stores in a SQLite file of the test's own.
    Amqp,
    /// The test SQS server (`OMNIQ_TEST_SQS_URL`, moto) under a prefix of the test's own,
    /// for the task queue; the other stores in a SQLite file of the test's own.
    Sqs,
    /// As [`Backend::Sqs`], on FIFO queues.
    SqsFifo,
}

/// Where one test's stores are: all four on one backend, or the task queue on a broker
/// and the rest in a SQLite file.
#[derive(Debug)]
pub struct Target {
    pub backend: Backend,
    /// The store URL every store is on (`sqlite://…`, `redis://…?prefix=…`), or the task
    /// queue's when `results_url` is set.
    pub url: String,
    /// Where results, events and schedules are when not on `url` (a broker holds tasks
    /// only).
    pub results_url: Option<String>,
    /// The SQLite file, for the SQLite target: its workers get the original `--db PATH`,
    /// the others `--url URL`.
    db: Option<PathBuf>,
    /// What to delete from a shared server at the end.
    cleanup: Option<Cleanup>,
}

/// What a test leaves in a shared server, deleted by [`Target::clean_up`].
#[derive(Debug)]
pub enum Cleanup {
    /// Every key containing `prefix` on the Redis at `server`.
    RedisKeys { server: String, prefix: String },
    /// A schema on the PostgreSQL at `server`, dropped with everything in it.
    PgSchema { server: String, schema: String },
    /// A database on the MySQL/MariaDB at `server` (a URL without a database), dropped.
    MysqlDatabase { server: String, database: String },
    /// The streams and buckets of `prefix` on the NATS server at `server`.
    NatsPrefix { server: String, prefix: String },
    /// Every object of the store URL `url` (a bucket under a prefix).
    Objects { url: String },
    /// The queues and exchanges of `prefix` on the broker at `server`.
    AmqpPrefix { server: String, prefix: String },
    /// The SQS queues of the store URL `url`.
    SqsQueues { url: String },
}

impl Target {
    /// A fresh target on `backend` (files in `dir`); `Ok(None)` when its server is
    /// unreachable and services are not required.
    pub fn new(backend: Backend, dir: &Path, test: &str) -> anyhow::Result<Option<Self>> {
        match backend {
            Backend::Postgres => {
                let server = std::env::var("OMNIQ_TEST_POSTGRES_URL")
                    .unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned());
                if let Err(err) = pg_execute(&server, "SELECT 1".to_owned()) {
                    return unavailable(test, "PostgreSQL", err);
                }
                let schema = format!(
                    "omniq_e2e_{}",
                    &uuid::Uuid::new_v4().simple().to_string()[..16]
                );
                let separator = if server.contains('?') { '&' } else { '?' };
                Ok(Some(Self {
                    backend: Backend::Postgres,
                    url: format!("{server}{separator}schema={schema}"),
                    db: None,
                    results_url: None,
                    cleanup: Some(Cleanup::PgSchema { server, schema }),
                }))
            }
            Backend::Mysql => {
                let server = std::env::var("OMNIQ_TEST_MYSQL_URL")
                    .unwrap_or_else(|_| DEFAULT_MYSQL_URL.to_owned());
                // Databases are made and dropped on a connection to no database in
                // particular (the server URL's may not exist).
                let root = with_database(&server, "")?;
                let database = format!(
                    "omniq_e2e_{}",
                    &uuid::Uuid::new_v4().simple().to_string()[..16]
                );
                if let Err(err) = mysql_execute(&root, format!("CREATE DATABASE `{database}`")) {
                    return unavailable(test, "MySQL", err);
                }
                Ok(Some(Self {
                    backend: Backend::Mysql,
                    url: with_database(&server, &database)?,
                    db: None,
                    results_url: None,
                    cleanup: Some(Cleanup::MysqlDatabase {
                        server: root,
                        database,
                    }),
                }))
            }
            Backend::Sqlite => Ok(Some(Self::sqlite(&dir.join("omniq.db")))),
            Backend::File => Ok(Some(Self {
                backend: Backend::File,
                url: format!("file://{}", dir.join("store").display()),
                db: None,
                results_url: None,
                cleanup: None,
            })),
            Backend::S3 => {
                let server = std::env::var("OMNIQ_TEST_S3_URL")
                    .unwrap_or_else(|_| DEFAULT_S3_URL.to_owned());
                if let Err(err) = create_s3_bucket(&server) {
                    return unavailable(test, "the S3 server", err);
                }
                let prefix = format!("e2e-{}", uuid::Uuid::new_v4().simple());
                let url = format!(
                    "s3://{S3_BUCKET}/{prefix}?endpoint={server}&allow_http=true\
                     &region=us-east-1&access_key_id=test&secret_access_key=test"
                );
                Ok(Some(Self {
                    backend: Backend::S3,
                    url: url.clone(),
                    db: None,
                    results_url: None,
                    cleanup: Some(Cleanup::Objects { url }),
                }))
            }
            Backend::Nats => {
                let server = std::env::var("OMNIQ_TEST_NATS_URL")
                    .unwrap_or_else(|_| DEFAULT_NATS_URL.to_owned());
                if let Err(err) = nats_reachable(&server) {
                    return unavailable(test, "NATS", err);
                }
                let prefix = format!("omniq-e2e-{}", uuid::Uuid::new_v4().simple());
                Ok(Some(Self {
                    backend: Backend::Nats,
                    url: format!("{server}?prefix={prefix}"),
                    db: None,
                    results_url: None,
                    cleanup: Some(Cleanup::NatsPrefix { server, prefix }),
                }))
            }
            Backend::Amqp => {
                let server = std::env::var("OMNIQ_TEST_AMQP_URL")
                    .unwrap_or_else(|_| DEFAULT_AMQP_URL.to_owned());
                if let Err(err) = tcp_reachable(&server) {
                    return unavailable(test, "RabbitMQ", err);
                }
                let prefix = format!("omniq-e2e-{}", uuid::Uuid::new_v4().simple());
                let mut target = Self::amqp_of_its_own(&server, &prefix, &dir.join("results.db"));
                target.cleanup = Some(Cleanup::AmqpPrefix { server, prefix });
                Ok(Some(target))
            }
            Backend::Sqs | Backend::SqsFifo => {
                let server = std::env::var("OMNIQ_TEST_SQS_URL")
                    .unwrap_or_else(|_| DEFAULT_SQS_URL.to_owned());
                if let Err(err) = tcp_reachable(&server) {
                    return unavailable(test, "the SQS server", err);
                }
                let prefix = format!("e2e{}", &uuid::Uuid::new_v4().simple().to_string()[..16]);
                let fifo = if backend == Backend::SqsFifo {
                    "&fifo=true"
                } else {
                    ""
                };
                let url = format!(
                    "sqs://us-east-1?prefix={prefix}&endpoint={server}\
                     &access_key_id=test&secret_access_key=test{fifo}"
                );
                let mut target = Self::of_its_own(backend, url.clone());
                target.results_url = Some(format!("sqlite://{}", dir.join("results.db").display()));
                target.cleanup = Some(Cleanup::SqsQueues { url });
                Ok(Some(target))
            }
            Backend::Redis => {
                let server = std::env::var("OMNIQ_TEST_REDIS_URL")
                    .unwrap_or_else(|_| DEFAULT_REDIS_URL.to_owned());
                if let Err(err) = redis_ping(&server) {
                    return unavailable(test, "Redis", err);
                }
                let prefix = format!("omniq-e2e-{}", uuid::Uuid::new_v4().simple());
                Ok(Some(Self::redis(&server, &prefix, true)))
            }
        }
    }

    /// Every store in the SQLite file `db`.
    pub fn sqlite(db: &Path) -> Self {
        let mut target = Self::of_its_own(Backend::Sqlite, format!("sqlite://{}", db.display()));
        target.db = Some(db.to_path_buf());
        target
    }

    /// Every store on the Redis `server` under the key `prefix`; with `clean_up`, the keys
    /// are deleted at the end (a server of the test's own needs no clean-up).
    pub fn redis(server: &str, prefix: &str, clean_up: bool) -> Self {
        let separator = if server.contains('?') { '&' } else { '?' };
        let mut target = Self::of_its_own(
            Backend::Redis,
            format!("{server}{separator}prefix={prefix}"),
        );
        target.cleanup = clean_up.then(|| Cleanup::RedisKeys {
            server: server.to_owned(),
            prefix: prefix.to_owned(),
        });
        target
    }

    /// Every store at `url`, on a server of the test's own, which needs no clean-up.
    fn of_its_own(backend: Backend, url: String) -> Self {
        Self {
            backend,
            url,
            db: None,
            results_url: None,
            cleanup: None,
        }
    }

    /// Every store on the NATS server(s) at `url` under `prefix`: for servers of the
    /// test's own, which need no clean-up.
    pub fn nats_of_its_own(url: &str, prefix: &str) -> Self {
        Self::of_its_own(Backend::Nats, format!("{url}?prefix={prefix}"))
    }

    /// Every store on the PostgreSQL at `url`, in its default schema: for a server of the
    /// test's own, which needs no clean-up.
    pub fn postgres_of_its_own(url: &str) -> Self {
        Self::of_its_own(Backend::Postgres, url.to_owned())
    }

    /// The task queue on the RabbitMQ at `url` under `prefix`, the other stores in the
    /// SQLite file `results_db`: for a broker of the test's own, which needs no clean-up.
    pub fn amqp_of_its_own(url: &str, prefix: &str, results_db: &Path) -> Self {
        let mut target = Self::of_its_own(Backend::Amqp, format!("{url}?prefix={prefix}"));
        target.results_url = Some(format!("sqlite://{}", results_db.display()));
        target
    }

    /// The server and the namespace in it (a Redis key prefix, a PostgreSQL schema) of a
    /// target on a shared Redis or PostgreSQL; `None` for the others.
    pub fn server_and_namespace(&self) -> Option<(&str, &str)> {
        match &self.cleanup {
            Some(Cleanup::RedisKeys { server, prefix }) => Some((server, prefix)),
            Some(Cleanup::PgSchema { server, schema }) => Some((server, schema)),
            _ => None,
        }
    }

    /// The `e2e-worker` arguments naming these stores.
    pub fn worker_args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = match &self.db {
            Some(db) => vec!["--db".into(), db.into()],
            None => vec!["--url".into(), self.url.clone().into()],
        };
        if let Some(results) = &self.results_url {
            args.extend(["--results-url".into(), results.into()]);
        }
        args
    }

    /// An OmniQ on these stores, with default settings otherwise.
    pub async fn open(&self) -> anyhow::Result<AsyncOmniQ> {
        match (&self.db, &self.results_url) {
            (Some(db), _) => omniq_e2e::open(db).await,
            (None, Some(results)) => omniq_e2e::connect_urls(&self.url, results).await,
            (None, None) => omniq_e2e::connect_url(&self.url).await,
        }
    }

    /// Deletes what the test left in a shared server (once; later calls do nothing).
    pub fn clean_up(&mut self) -> anyhow::Result<()> {
        match self.cleanup.take() {
            Some(Cleanup::RedisKeys { server, prefix }) => delete_redis_keys(&server, &prefix)
                .with_context(|| format!("cannot delete the Redis keys of prefix {prefix}")),
            Some(Cleanup::PgSchema { server, schema }) => pg_execute(
                &server,
                format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"),
            )
            .with_context(|| format!("cannot drop the schema {schema}")),
            Some(Cleanup::MysqlDatabase { server, database }) => {
                mysql_execute(&server, format!("DROP DATABASE IF EXISTS `{database}`"))
                    .with_context(|| format!("cannot drop the database {database}"))
            }
            Some(Cleanup::NatsPrefix { server, prefix }) => delete_nats_prefix(&server, &prefix)
                .with_context(|| format!("cannot delete the NATS streams of prefix {prefix}")),
            Some(Cleanup::Objects { url }) => {
                delete_objects(&url).context("cannot delete the test's objects")
            }
            Some(Cleanup::AmqpPrefix { server, prefix }) => delete_amqp_prefix(&server, &prefix)
                .with_context(|| format!("cannot delete the RabbitMQ queues of prefix {prefix}")),
            Some(Cleanup::SqsQueues { url }) => {
                delete_sqs_queues(&url).context("cannot delete the test's SQS queues")
            }
            None => Ok(()),
        }
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.clean_up();
    }
}

/// A synchronous connection to the Redis at `url`, with a bounded connect.
pub fn redis_connection(url: &str) -> redis::RedisResult<redis::Connection> {
    redis::Client::open(url)?.get_connection_with_timeout(Duration::from_secs(5))
}

/// Connects to the Redis at `url` and pings it.
pub fn redis_ping(url: &str) -> redis::RedisResult<()> {
    let mut conn = redis_connection(url)?;
    redis::cmd("PING").query::<String>(&mut conn)?;
    Ok(())
}

/// Deletes every key containing `prefix` (`{prefix}:…` and `prefix:…`).
fn delete_redis_keys(url: &str, prefix: &str) -> redis::RedisResult<()> {
    let mut conn = redis_connection(url)?;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("*{prefix}*"))
        .query(&mut conn)?;
    for chunk in keys.chunks(500) {
        redis::cmd("DEL").arg(chunk).query::<()>(&mut conn)?;
    }
    Ok(())
}

/// The directory, stores and runs log of one test.
#[derive(Debug)]
pub struct Scene {
    pub dir: tempfile::TempDir,
    pub runs: PathBuf,
    pub target: Target,
}

impl Scene {
    /// A scene on a SQLite file of its own.
    pub fn sqlite() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let target = Target::sqlite(&dir.path().join("omniq.db"));
        Ok(Self::with_target(dir, target))
    }

    /// A scene on `backend`; `Ok(None)` (said loudly) when the backend's server is
    /// unreachable and `OMNIQ_TEST_REQUIRE_SERVICES=1` is not set.
    pub fn on(backend: Backend, test: &str) -> anyhow::Result<Option<Self>> {
        let dir = tempfile::tempdir()?;
        Ok(Target::new(backend, dir.path(), test)?.map(|target| Self::with_target(dir, target)))
    }

    /// A scene in `dir` on `target`.
    pub fn with_target(dir: tempfile::TempDir, target: Target) -> Self {
        let runs = dir.path().join("runs.log");
        Self { dir, runs, target }
    }

    /// An OmniQ on this scene's stores.
    pub async fn open(&self) -> anyhow::Result<AsyncOmniQ> {
        self.target.open().await
    }

    /// Deletes what the test left in a shared server.
    pub fn clean_up(&mut self) -> anyhow::Result<()> {
        self.target.clean_up()
    }

    /// A command for `e2e-worker` on this scene's stores, with any inherited `OMNIQ_*`
    /// variables removed so the host environment cannot change what the test runs.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_e2e-worker"));
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("OMNIQ_") {
                command.env_remove(key);
            }
        }
        command.args(self.target.worker_args()).args(args);
        command
    }
    /// Starts a worker process (`--mode work`) logging its runs to this scene's runs log.
    /// Its stderr goes to `<dir>/<name>.log`.
    pub fn spawn_worker(
        &self,
        name: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<WorkerProcess> {
        let mut command = self.command(&["--mode", "work"]);
        command.arg("--runs").arg(&self.runs).args(args);
        for (key, value) in env {
            command.env(key, value);
        }
        WorkerProcess::spawn(name, command, &self.dir.path().join(format!("{name}.log")))
    }

    /// Runs `e2e-worker --mode enqueue` for `tasks` tasks and waits for it to succeed.
    pub async fn enqueue_with_process(&self, tasks: u64) -> anyhow::Result<()> {
        let tasks = tasks.to_string();
        let command = self.command(&["--mode", "enqueue", "--tasks", &tasks]);
        let log = self.dir.path().join("enqueue.log");
        let mut process = WorkerProcess::spawn("enqueue", command, &log)?;
        let status = process.wait_exit(Duration::from_secs(30)).await?;
        ensure!(
            status.success(),
            "enqueue process failed ({status}):\n{}",
            process.stderr()
        );
        let expected = format!("enqueued={tasks}");
        ensure!(
            process.stdout_lines().contains(&expected),
            "enqueue process did not print `{expected}`: {:?}",
            process.stdout_lines()
        );
        Ok(())
    }

    /// The runs log as sequence numbers, in the order they were appended.
    pub fn runs(&self) -> anyhow::Result<Vec<u64>> {
        read_runs(&self.runs)
    }

    /// Waits until the runs log has at least `count` lines.
    pub async fn wait_for_runs(
        &self,
        count: usize,
        timeout: Duration,
        alive: &mut WorkerProcess,
    ) -> anyhow::Result<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            let seen = self.runs()?.len();
            if seen >= count {
                return Ok(seen);
            }
            if let Some(status) = alive.try_exit()? {
                bail!(
                    "{} exited ({status}) with {seen} runs logged, waiting for {count}:\n{}",
                    alive.name,
                    alive.stderr()
                );
            }
            ensure!(
                Instant::now() < deadline,
                "only {seen} runs logged after {timeout:?}, waiting for {count}"
            );
            tokio::time::sleep(POLL).await;
        }
    }
}

/// Waits until `done` holds for the stats of [`QUEUE`], polling every [`POLL`]; fails at the
/// deadline, or as soon as one of `workers` exits. Returns the stats that satisfied `done`.
pub async fn wait_for_stats(
    omniq: &AsyncOmniQ,
    workers: &mut [WorkerProcess],
    timeout: Duration,
    done: impl Fn(&QueueStats) -> bool,
) -> anyhow::Result<QueueStats> {
    let deadline = Instant::now() + timeout;
    loop {
        let asked = Instant::now();
        let stats = omniq.queue_stats(QUEUE).await?;
        // A store that counts by reading every task (an object store) is asked no more
        // than a quarter of the time, so that the test does not starve the workers it
        // watches.
        let pause = POLL.max(asked.elapsed() * 3);
        if done(&stats) {
            return Ok(stats);
        }
        for worker in workers.iter_mut() {
            if let Some(status) = worker.try_exit()? {
                bail!(
                    "{} exited early ({status}):\n{}",
                    worker.name,
                    worker.stderr()
                );
            }
        }
        ensure!(
            Instant::now() < deadline,
            "condition not met within {timeout:?}: {:?}",
            stats.counts
        );
        tokio::time::sleep(pause).await;
    }
}

/// Reads a runs log: one sequence number per line. A missing file is an empty log.
pub fn read_runs(path: &Path) -> anyhow::Result<Vec<u64>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    ensure!(
        text.is_empty() || text.ends_with('\n'),
        "the runs log ends in a partial line"
    );
    text.lines()
        .map(|line| {
            line.parse()
                .with_context(|| format!("bad line in the runs log: {line:?}"))
        })
        .collect()
}

/// How many times each sequence number was run.
pub fn run_counts(runs: &[u64]) -> BTreeMap<u64, usize> {
    let mut counts = BTreeMap::new();
    for &seq in runs {
        *counts.entry(seq).or_insert(0) += 1;
    }
    counts
}

/// A running `e2e-worker` process; killed (SIGKILL) on drop if still running, so a failed
/// test leaves no process behind.
#[derive(Debug)]
pub struct WorkerProcess {
    pub name: String,
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
    stderr_path: PathBuf,
    status: Option<ExitStatus>,
}

impl WorkerProcess {
    fn spawn(name: &str, mut command: Command, stderr_path: &Path) -> anyhow::Result<Self> {
        let stderr = File::create(stderr_path)?;
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        let stdout = child.stdout.take().context("no stdout pipe")?;
        let (tx, lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Self {
            name: name.to_owned(),
            child,
            lines,
            seen: Vec::new(),
            stderr_path: stderr_path.to_path_buf(),
            status: None,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the `ready` line.
    pub async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(line)) => {
                    let ready = line.starts_with("ready");
                    self.seen.push(line);
                    if ready {
                        return Ok(());
                    }
                }
                Ok(None) => bail!(
                    "{} closed its stdout before `ready`:\n{}",
                    self.name,
                    self.stderr()
                ),
                Err(_) => bail!("{} not ready after {timeout:?}", self.name),
            }
        }
    }

    /// Sends a signal by name (`TERM`, `INT`, ...) with `kill(1)`.
    pub fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .context("cannot run kill")?;
        ensure!(status.success(), "kill -{signal} {} failed", self.pid());
        Ok(())
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self) -> anyhow::Result<ExitStatus> {
        self.child.kill()?;
        let status = self.child.wait()?;
        self.status = Some(status);
        Ok(status)
    }

    /// The exit status if the process has exited.
    pub fn try_exit(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = self.child.try_wait()?;
        }
        Ok(self.status)
    }

    /// Waits up to `timeout` for the process to exit (polling), killing it on timeout.
    pub async fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                let _ = self.kill();
                bail!(
                    "{} did not exit within {timeout:?}; killed it:\n{}",
                    self.name,
                    self.stderr()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Every stdout line so far (complete once the process has exited and its pipe closed).
    pub fn stdout_lines(&mut self) -> &[String] {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
        &self.seen
    }

    /// Waits for stdout to close and parses the `report key=value ...` line.
    pub async fn report(&mut self) -> anyhow::Result<BTreeMap<String, u64>> {
        let closed = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(line) = self.lines.recv().await {
                self.seen.push(line);
            }
        })
        .await;
        ensure!(closed.is_ok(), "{} kept its stdout open", self.name);
        let line = self
            .seen
            .iter()
            .find_map(|l| l.strip_prefix("report "))
            .with_context(|| format!("{} printed no report: {:?}", self.name, self.seen))?;
        line.split_whitespace()
            .map(|pair| {
                let (key, value) = pair.split_once('=').context("bad report pair")?;
                Ok((key.to_owned(), value.parse()?))
            })
            .collect()
    }

    /// What the process wrote to stderr (its log).
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Every event of `kind`, however many: queries are capped (1,000 a call), so this pages by
/// time (`since` is inclusive) and drops the events a page boundary repeats.
pub async fn all_events(
    omniq: &AsyncOmniQ,
    kind: omniq_async::TaskEventKind,
) -> anyhow::Result<Vec<omniq_async::TaskEvent>> {
    let mut seen = std::collections::HashSet::new();
    let mut all = Vec::new();
    let mut since = None;
    loop {
        let query = omniq_async::EventQuery::new().kinds([kind]).limit(1_000);
        let page = omniq
            .events()
            .query(match since {
                Some(since) => query.since(since),
                None => query,
            })
            .await?;
        let before = all.len();
        for event in page.iter() {
            if seen.insert(event.id) {
                all.push(event.clone());
            }
        }
        match page.iter().map(|e| e.at).max() {
            Some(last) if all.len() > before => since = Some(last),
            _ => return Ok(all),
        }
    }
}

/// The processes whose parent is `pid`, from `/proc`.
pub fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|candidate| parent_of(*candidate) == Some(pid))
        .collect()
}

/// Fields after the command in `/proc/<pid>/stat`: state, parent, ...
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

fn parent_of(pid: u32) -> Option<u32> {
    stat_fields(pid)?.get(1)?.parse().ok()
}

/// Waits until process `pid` has exited (gone, or a zombie no one reaped yet).
pub async fn wait_until_dead(pid: u32, timeout: Duration) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match stat_fields(pid) {
            None => return Ok(()),
            Some(fields) if fields.first().is_some_and(|state| state == "Z") => return Ok(()),
            Some(_) => {}
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("process {pid} still runs {timeout:?} after its parent died");
        }
        tokio::time::sleep(POLL).await;
    }
}
