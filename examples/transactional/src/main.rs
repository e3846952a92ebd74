//! Transactional enqueue: an order row and the task that sends its receipt commit together,
//! or neither does. No receipt for an order that was rolled back; no order without its
//! receipt.
//!
//! Needs PostgreSQL; OmniQ's task queue must be on the same database as the application:
//!
//! ```text
//! OMNIQ_URL=postgres://postgres@127.0.0.1:5432/test cargo run -p example-transactional
//! ```

use std::time::Duration;

use omniq_async::prelude::*;
use sqlx::PgPool;

/// Sends the receipt of an order.
#[task]
async fn send_receipt(order_id: i64) -> Result<String, TaskError> {
    Ok(format!("receipt for order {order_id} sent"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    let Some(url) = settings.url.clone() else {
        anyhow::bail!("set OMNIQ_URL to a postgres:// URL (see the doc comment)");
    };
    let pool = PgPool::connect(url.as_str()).await?;
    sqlx::query("CREATE TABLE IF NOT EXISTS example_orders (id BIGINT PRIMARY KEY)")
        .execute(&pool)
        .await?;
    let omniq = AsyncOmniQ::from_settings(settings)
        .await?
        .register::<send_receipt>();

    let order_id: i64 = std::process::id().into();
    let mut tx = pool.begin().await?;
    sqlx::query("INSERT INTO example_orders (id) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(order_id)
        .execute(&mut *tx)
        .await?;
    let receipt = omniq
        .enqueue(send_receipt { order_id })
        .in_transaction(&mut *tx)
        .await?;
    // Before the commit, no worker can see the task.
    tx.commit().await?;

    // A rolled-back order leaves no task behind.
    let mut tx = pool.begin().await?;
    let ghost = omniq
        .enqueue(send_receipt { order_id: -1 })
        .in_transaction(&mut *tx)
        .await?;
    tx.rollback().await?;
    println!(
        "rolled-back task stored: {}",
        omniq.task(ghost.id()).await?.is_some()
    );

    let worker = omniq.worker().start()?;
    println!("{}", receipt.wait(Duration::from_secs(20)).await?);
    worker.shutdown().await?;
    Ok(())
}
