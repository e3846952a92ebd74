//! The shared conformance suite against a real PostgreSQL server.
//!
//! The server comes from `OMNIQ_TEST_POSTGRES_URL` (default: the local test database).
//! Each case gets a schema of its own, named after the time it was made: some cases call
//! `recover_expired` and `expire_due`, which act on the whole store, and would otherwise
//! take the short-lived leases and tasks of cases running beside them. Schemas left by
//! runs more than ten minutes old are dropped as new ones are made. Each case also opens
//! its own small pool: a pool belongs to the runtime of the test that made it.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use omniq_postgres::{PgBackend, PgOptions, PoolSettings};
use omniq_storage::conformance::{Corrupt, Fixture, Reopen};
use omniq_storage::{StoreResult, TaskQueue};
use sqlx::{AssertSqlSafe, Connection, PgConnection};

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
const PREFIX: &str = "omniq_conformance_";
const KEEP_SECS: u64 = 600;

async fn stores() -> StoreResult<Fixture> {
    let url = std::env::var("OMNIQ_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_URL.into());
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    drop_old_schemas(&url, now).await;
    let schema = format!(
        "{PREFIX}{now}_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let options = PgOptions::default().schema(schema).pool(
        PoolSettings::default()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(10)),
    );
    let backend = PgBackend::connect_with(&url, options).await?;
    let damaged = backend.clone();
    Ok(Fixture {
        queue: Arc::new(backend.task_queue()),
        results: Arc::new(backend.result_store()),
        events: Arc::new(backend.event_store()),
        schedules: Arc::new(backend.schedule_store()),
        reopen: Reopen::new(move |clock| {
            let queue: Arc<dyn TaskQueue> = Arc::new(backend.with_clock(clock).task_queue());
            async move { Ok(queue) }
        }),
        corrupt: Some(Corrupt::new(move |id| {
            let backend = damaged.clone();
            async move {
                let schema = backend.schema().expect("a schema per case");
                let sql = format!(
                    "UPDATE \"{schema}\".omniq_tasks SET options = '[1, 2]'::jsonb WHERE id = $1"
                );
                sqlx::query(AssertSqlSafe(sql))
                    .bind(id.as_uuid())
                    .execute(backend.pool())
                    .await
                    .expect("corrupt");
            }
        })),
    })
}

/// Drops the schemas of earlier runs. Best effort: a server that cannot be reached is
/// reported by the connect that follows, and two cases dropping the same schema at once
/// is harmless.
async fn drop_old_schemas(url: &str, now: u64) {
    let Ok(mut conn) = PgConnection::connect(url).await else {
        return;
    };
    let schemas: Vec<String> =
        sqlx::query_scalar("SELECT nspname::text FROM pg_namespace WHERE starts_with(nspname, $1)")
            .bind(PREFIX)
            .fetch_all(&mut conn)
            .await
            .unwrap_or_default();
    for schema in schemas {
        let made = schema
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('_').next())
            .and_then(|secs| secs.parse::<u64>().ok());
        // Only names this file makes: a plain identifier, safe to quote.
        let ours = schema
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if ours && made.is_some_and(|made| made + KEEP_SECS < now) {
            let _ = sqlx::query(AssertSqlSafe(format!(
                "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
            )))
            .execute(&mut conn)
            .await;
        }
    }
    let _ = conn.close().await;
}

omniq_storage::conformance_suite!(stores);
omniq_scheduler::scheduler_suite!(stores);
