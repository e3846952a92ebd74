//! A task that uses an sqlx pool registered once as application state, and lets `?` turn a
//! real sqlx error into a retryable failure.
//!
//! Needs nothing: the pool is an SQLite file of its own, and OmniQ runs on its embedded
//! SQLite default (in a temporary directory).
//!
//! ```text
//! cargo run -p example-task-with-state
//! ```

use std::time::Duration;

use omniq_async::prelude::*;
use omniq_async::{Error, TaskErrorKind};
use sqlx::SqlitePool;

/// Records a signup: the pool comes from the state, not from the payload.
#[task(queue = "signups")]
async fn record_signup(email: String, db: State<SqlitePool>) -> Result<i64, TaskError> {
    // `?` on sqlx::Error: no map_err; a failure is retried with its message.
    let id = sqlx::query_scalar("INSERT INTO signups (email) VALUES (?) RETURNING id")
        .bind(&email)
        .fetch_one(&*db)
        .await?;
    Ok(id)
}

/// Reads a table that does not exist: the sqlx error becomes the task's error.
#[task(queue = "signups", max_attempts = 2, backoff = Backoff::fixed(Duration::from_millis(50)))]
async fn count_invoices(db: State<SqlitePool>) -> Result<i64, TaskError> {
    let count = sqlx::query_scalar("SELECT COUNT(*) FROM invoices")
        .fetch_one(&*db)
        .await?;
    Ok(count)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let db = SqlitePool::connect(&format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("app.db").display()
    ))
    .await?;
    sqlx::query("CREATE TABLE signups (id INTEGER PRIMARY KEY, email TEXT NOT NULL)")
        .execute(&db)
        .await?;

    let settings = Settings {
        base_dir: dir.path().join("omniq"),
        ..Settings::default()
    };
    let omniq = AsyncOmniQ::from_settings(settings)
        .await?
        .state(db.clone())
        .register::<record_signup>()
        .register::<count_invoices>();
    let worker = omniq.worker().queues(["signups"]).start()?;

    let signup = omniq
        .enqueue(record_signup {
            email: "ada@example.com".into(),
        })
        .await?;
    let id = signup.wait(Duration::from_secs(20)).await?;
    println!("signup stored with id {id}");

    let invoices = omniq.enqueue(count_invoices {}).await?;
    match invoices.wait(Duration::from_secs(20)).await {
        Err(Error::TaskFailed { error, .. }) => {
            assert_eq!(error.kind, TaskErrorKind::Handler);
            let record = omniq.task(invoices.id()).await?.expect("stored");
            println!(
                "count_invoices failed after {} attempts: {}",
                record.attempts, error.message
            );
        }
        other => anyhow::bail!("expected the sqlx error, got {other:?}"),
    }
    worker.shutdown().await?;
    Ok(())
}
