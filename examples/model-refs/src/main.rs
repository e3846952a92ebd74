//! A task that receives a customer by key and loads the row on the worker: the payload
//! holds `1`, not the customer, and the worker sees the row as it is when the task runs.
//! A customer deleted before the task runs fails it at once, for good, saying so.
//!
//! Needs nothing: the customers table is an SQLite file of its own, and OmniQ runs on its
//! embedded SQLite default (both in a temporary directory).
//!
//! ```text
//! cargo run -p example-model-refs
//! ```

use std::time::Duration;

use omniq_async::prelude::*;
use omniq_async::{Error, Model, ModelRef};
use omniq_serialization::PayloadCodec;
use serde::Serialize;
use sqlx::SqlitePool;

/// A customer row, as an application would load it to bill them.
#[derive(Debug, Clone, Serialize)]
struct Customer {
    id: i64,
    name: String,
    email: String,
    company: String,
    street: String,
    city: String,
    country: String,
    phone: String,
    vat_number: String,
    notes: String,
}

impl Model for Customer {
    type Key = i64;
    const NAME: &'static str = "customer";

    fn key(&self) -> i64 {
        self.id
    }
}

type Row = (
    i64,
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    String,
);

async fn load_customer(pool: &SqlitePool, id: i64) -> Result<Option<Customer>, sqlx::Error> {
    let row: Option<Row> = sqlx::query_as(
        "SELECT id, name, email, company, street, city, country, phone, vat_number, notes \
         FROM customers WHERE id = ?",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(
        |(id, name, email, company, street, city, country, phone, vat_number, notes)| Customer {
            id,
            name,
            email,
            company,
            street,
            city,
            country,
            phone,
            vat_number,
            notes,
        },
    ))
}

/// Sends an invoice: the customer comes by key, and is read when the task runs.
#[task(queue = "billing", max_attempts = 3)]
async fn send_invoice(
    customer: ModelRef<Customer>,
    cents: i64,
    ctx: TaskContext,
) -> Result<String, TaskError> {
    let customer = customer.load(&ctx).await?;
    Ok(format!(
        "invoice of {}.{:02} sent to {} <{}>",
        cents / 100,
        cents % 100,
        customer.name,
        customer.email
    ))
}

/// The same task with the whole customer in its payload, to compare sizes.
#[derive(Serialize)]
struct SendInvoiceByValue {
    customer: Customer,
    cents: i64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let db = SqlitePool::connect(&format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("app.db").display()
    ))
    .await?;
    sqlx::query(
        "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT NOT NULL, \
         company TEXT NOT NULL, street TEXT NOT NULL, city TEXT NOT NULL, country TEXT NOT NULL, \
         phone TEXT NOT NULL, vat_number TEXT NOT NULL, notes TEXT NOT NULL)",
    )
    .execute(&db)
    .await?;
    for (id, name, email) in [
        (1, "Ada Lovelace", "ada@example.com"),
        (2, "Charles Babbage", "charles@example.com"),
    ] {
        sqlx::query("INSERT INTO customers VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
            .bind(id)
            .bind(name)
            .bind(email)
            .bind("Analytical Engines Ltd")
            .bind("12 St James's Square")
            .bind("London")
            .bind("United Kingdom")
            .bind("+44 20 7946 0958")
            .bind("GB123456789")
            .bind(
                "Pays by bank transfer within 30 days; invoices in GBP; copy accounts@example.com.",
            )
            .execute(&db)
            .await?;
    }

    let settings = Settings {
        base_dir: dir.path().join("omniq"),
        ..Settings::default()
    };
    let loader_db = db.clone();
    let omniq = AsyncOmniQ::from_settings(settings)
        .await?
        .model_loader::<Customer, _, _, _>(move |id| {
            let db = loader_db.clone();
            async move { load_customer(&db, id).await }
        })
        .register::<send_invoice>();

    // What a ModelRef saves: the payload holds the key instead of the row.
    let ada = load_customer(&db, 1)
        .await?
        .ok_or_else(|| anyhow::anyhow!("customer 1 was just inserted"))?;
    let codec = PayloadCodec::default();
    let by_value = codec.encode(&SendInvoiceByValue {
        customer: ada.clone(),
        cents: 1250,
    })?;
    let by_key = codec.encode(&send_invoice {
        customer: ModelRef::of(&ada),
        cents: 1250,
    })?;
    println!(
        "payload with the whole customer: {} bytes; with ModelRef<Customer>: {} bytes",
        by_value.len(),
        by_key.len()
    );

    let worker = omniq.worker().queues(["billing"]).start()?;

    let sent = send_invoice::enqueue(&omniq, ModelRef::of(&ada), 1250).await?;
    println!("{}", sent.wait(Duration::from_secs(20)).await?);

    // Charles is deleted before his invoice runs: the task fails at once, for good.
    sqlx::query("DELETE FROM customers WHERE id = 2")
        .execute(&db)
        .await?;
    let gone = send_invoice::enqueue(&omniq, ModelRef::new(2), 990).await?;
    match gone.wait(Duration::from_secs(20)).await {
        Err(Error::TaskFailed { error, .. }) => {
            let record = omniq
                .task(gone.id())
                .await?
                .ok_or_else(|| anyhow::anyhow!("the task is stored"))?;
            println!(
                "failed for good after {} of {} attempts: {}",
                record.attempts, record.spec.max_attempts, error.message
            );
        }
        other => anyhow::bail!("expected a permanent failure, got {other:?}"),
    }
    worker.shutdown().await?;
    Ok(())
}
