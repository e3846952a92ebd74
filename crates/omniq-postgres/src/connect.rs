//! Opening from a store URL, for the facades' table of backends.

use std::sync::Arc;

use omniq_storage::{BoxFuture, StoreBackend, StoreResult, take_pool_size, take_query_param};

use crate::{PgBackend, PgOptions, PgTaskQueue};

omniq_storage::impl_store_backend!(PgBackend, transactional);
omniq_storage::impl_transactional_enqueue!(PgTaskQueue, sqlx::PgConnection, "PostgreSQL");

/// Opens the database a `postgres:` store URL names. OmniQ's own parameters: `schema=`
/// (the tables' schema, see [`PgOptions::schema`]) and `max_connections=` (the pool size).
pub fn connect_url(url: &str) -> BoxFuture<'static, StoreResult<Arc<dyn StoreBackend>>> {
    let url = url.to_owned();
    Box::pin(async move {
        let (url, schema) = take_query_param(&url, "schema");
        let (url, pool) = take_pool_size(&url)?;
        let mut options = PgOptions::default();
        if let Some(schema) = schema {
            options = options.schema(schema);
        }
        if let Some(pool) = pool {
            options.pool = options.pool.max_connections(pool);
        }
        let backend: Arc<dyn StoreBackend> =
            Arc::new(PgBackend::connect_with(&url, options).await?);
        Ok(backend)
    })
}
