//! Helpers shared by this crate's integration tests: a database of its own per test.

#![allow(dead_code)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use omniq_mysql::{MySqlBackend, MySqlOptions};
use omniq_storage::{StoreError, StoreResult};
use sqlx::{AssertSqlSafe, Connection, MySqlConnection};

const DEFAULT_URL: &str = "mysql://root@127.0.0.1:3306/test";
const PREFIX: &str = "omniq_test_";
/// Databases of runs older than this are dropped as new ones are made.
const KEEP_SECS: u64 = 600;

/// The test server's URL (its database is only used to reach the server).
pub(crate) fn url() -> String {
    std::env::var("OMNIQ_TEST_MYSQL_URL").unwrap_or_else(|_| DEFAULT_URL.into())
}

/// `url` with its database replaced by `database`.
pub(crate) fn with_database(url: &str, database: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("mysql", url));
    let (authority, tail) = rest.split_once('/').unwrap_or((rest, ""));
    let query = tail.split_once('?').map(|(_, q)| format!("?{q}"));
    format!(
        "{scheme}://{authority}/{database}{}",
        query.unwrap_or_default()
    )
}

/// A backend in a fresh database of its own, named after the time it was made: some cases
/// call `recover_expired` and `expire_due`, which act on the whole store, and would
/// otherwise take the short-lived leases and tasks of cases running beside them.
pub(crate) async fn fresh_backend() -> StoreResult<MySqlBackend> {
    let options = MySqlOptions::default()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(10));
    MySqlBackend::connect_with(&fresh_database().await?, options).await
}

/// Creates a fresh database; returns its URL.
pub(crate) async fn fresh_database() -> StoreResult<String> {
    let url = url();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let database = format!(
        "{PREFIX}{now}_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let mut conn = MySqlConnection::connect(&url)
        .await
        .map_err(|e| StoreError::unavailable("mysql", e))?;
    drop_old_databases(&mut conn, now).await;
    sqlx::query(AssertSqlSafe(format!("CREATE DATABASE `{database}`")))
        .execute(&mut conn)
        .await
        .map_err(|e| StoreError::backend("mysql", e))?;
    let _ = conn.close().await;
    Ok(with_database(&url, &database))
}

/// Drops the databases of earlier runs. Best effort: two cases dropping the same database
/// at once is harmless.
async fn drop_old_databases(conn: &mut MySqlConnection, now: u64) {
    // A database an earlier run left in use must not hold this run up for long.
    let _ = sqlx::query("SET SESSION lock_wait_timeout = 30")
        .execute(&mut *conn)
        .await;
    let databases: Vec<String> = sqlx::query_scalar(
        "SELECT CAST(schema_name AS CHAR) FROM information_schema.schemata \
         WHERE schema_name LIKE 'omniq\\_test\\_%'",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap_or_default();
    for database in databases {
        let made = database
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('_').next())
            .and_then(|secs| secs.parse::<u64>().ok());
        let ours = database
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if ours && made.is_some_and(|made| made + KEEP_SECS < now) {
            let _ = sqlx::query(AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS `{database}`"
            )))
            .execute(&mut *conn)
            .await;
        }
    }
}

/// A queue name no other test uses.
pub(crate) fn unique_queue(label: &str) -> String {
    format!("{label}-{}", uuid::Uuid::new_v4().simple())
}

/// A backend in a fresh database, or `None` (said loudly) when the server is unreachable
/// and services are not required.
pub(crate) async fn backend(test: &str) -> Option<MySqlBackend> {
    match fresh_backend().await {
        Ok(backend) => Some(backend),
        Err(err)
            if err.kind() == omniq_storage::StoreErrorKind::Unavailable
                && !omniq_storage::conformance::services_required() =>
        {
            eprintln!(
                "SKIPPED `{test}`: MySQL unavailable ({err}); \
                 set OMNIQ_TEST_REQUIRE_SERVICES=1 to make this an error"
            );
            None
        }
        Err(err) => panic!("`{test}`: cannot connect to MySQL: {err}"),
    }
}
