//! `omniq migrate`, and `migrate=check` in a store URL: a deployment that migrates first and
//! starts workers that apply nothing. On SQLite and on the test PostgreSQL.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, ensure};
use omniq_async::{AsyncOmniQ, Settings, TaskId};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_omniq");
const WAIT: Duration = Duration::from_secs(60);

async fn omniq(url: &str, args: &[&str]) -> anyhow::Result<Value> {
    let child = tokio::process::Command::new(BIN)
        .args(["--url", url, "--json"])
        .args(args)
        .env_remove("OMNIQ_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let output = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .context("omniq did not end in time")??;
    ensure!(
        output.status.success(),
        "omniq {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(serde_json::from_slice(&output.stdout)?)
}

async fn open(url: &str) -> omniq_async::Result<AsyncOmniQ> {
    AsyncOmniQ::from_settings(Settings::builder().set("url", url).build()?).await
}

fn count(report: &Value, list: &str) -> usize {
    report[0]["schema"][list].as_array().map_or(0, Vec::len)
}

/// Status of a new store, `migrate=check` refused, `omniq migrate`, then accepted.
async fn migrate_then_check(url: &str) -> anyhow::Result<()> {
    let checked = format!(
        "{url}{}migrate=check",
        if url.contains('?') { '&' } else { '?' }
    );

    let status = omniq(url, &["migrate", "--status"]).await?;
    ensure!(
        count(&status, "applied") == 0 && count(&status, "pending") > 0,
        "{status}"
    );
    let stores = status[0]["stores"].as_array().context("stores")?;
    ensure!(stores.len() == 4, "all four stores share the URL: {status}");

    let refused = open(&checked)
        .await
        .err()
        .context("a new schema passed the check")?;
    ensure!(refused.to_string().contains("omniq migrate"), "{refused}");
    let status = omniq(url, &["migrate", "--status"]).await?;
    ensure!(
        count(&status, "applied") == 0,
        "the check applied nothing: {status}"
    );

    let applied = omniq(url, &["migrate"]).await?;
    let pending = count(&status, "pending");
    ensure!(
        applied[0]["applied_now"].as_array().map(Vec::len) == Some(pending)
            && count(&applied, "pending") == 0,
        "{applied}"
    );
    let again = omniq(url, &["migrate"]).await?;
    ensure!(
        again[0]["applied_now"]
            .as_array()
            .is_some_and(Vec::is_empty)
    );

    let omniq = open(&checked).await?;
    omniq.enqueue_by_name::<()>("after.check", ()).await?;
    omniq.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_then_check_on_sqlite() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("new").join("omniq.db");
    let url = format!("sqlite://{}", file.display());
    let status = omniq(&url, &["migrate", "--status"]).await?;
    ensure!(count(&status, "pending") > 0);
    ensure!(!file.exists(), "reading the status created the database");
    let checked = open(&format!("{url}?migrate=check")).await;
    ensure!(
        checked.is_err() && !file.exists(),
        "checking created the database"
    );
    migrate_then_check(&url).await?;

    // A newer OmniQ migrated the file: this build still opens it (a rolling deploy's old
    // workers keep running), and the status names the version it does not know.
    {
        use sqlx::Connection;
        let mut conn = sqlx::SqliteConnection::connect(&url).await?;
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (99990101000000, 'from a newer omniq', TRUE, x'00', 0)",
        )
        .execute(&mut conn)
        .await?;
        conn.close().await?;
    }
    let omniq_lib = open(&format!("{url}?migrate=check")).await?;
    omniq_lib.close().await;
    let status = omniq(&url, &["migrate", "--status"]).await?;
    ensure!(
        status[0]["schema"]["newer"] == serde_json::json!([99990101000000_i64]),
        "{status}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_then_check_on_postgres() -> anyhow::Result<()> {
    use sqlx::Connection;
    let base = std::env::var("OMNIQ_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let mut admin = match sqlx::PgConnection::connect(&base).await {
        Ok(conn) => conn,
        Err(err)
            if !std::env::var("OMNIQ_TEST_REQUIRE_SERVICES")
                .is_ok_and(|v| v == "1" || v == "true") =>
        {
            eprintln!(
                "SKIPPED: PostgreSQL unavailable ({err}); set OMNIQ_TEST_REQUIRE_SERVICES=1 to fail"
            );
            return Ok(());
        }
        Err(err) => return Err(err.into()),
    };
    let unique = TaskId::new().to_string().replace('-', "");
    let schema = format!("omniq_migrate_{}", &unique[unique.len() - 12..]);
    let outcome = migrate_then_check(&format!("{base}?schema={schema}")).await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE"
    )))
    .execute(&mut admin)
    .await?;
    outcome
}
