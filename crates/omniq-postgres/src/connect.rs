//! Opening from a store URL, for the facades' table of backends.

use std::sync::Arc;

use omniq_sql::SchemaPolicy;
use omniq_storage::secrets::Secrets;
use omniq_storage::{
    BoxFuture, MigrationStatus, StoreBackend, StoreResult, take_pool_size, take_query_param,
};

use crate::backend::{connect_options, migrate};
use crate::error::BACKEND;
use crate::names::Names;
use crate::{PgBackend, PgOptions, PgTaskQueue};

omniq_storage::impl_store_backend!(PgBackend, transactional);
omniq_storage::impl_transactional_enqueue!(PgTaskQueue, sqlx::PgConnection, "PostgreSQL");

/// Opens the database a `postgres:` store URL names. OmniQ's own parameters: `schema=`
/// (the tables' schema, see [`PgOptions::schema`]), `max_connections=` (the pool size) and
/// `migrate=check` (apply no migration on connect, see [`PgOptions::schema_policy`]).
pub fn connect_url(url: &str) -> BoxFuture<'static, StoreResult<Arc<dyn StoreBackend>>> {
    let url = url.to_owned();
    Box::pin(async move {
        let (url, policy) = SchemaPolicy::take_from_url(&url)?;
        let (url, schema) = take_query_param(&url, "schema");
        let (url, pool) = take_pool_size(&url)?;
        let mut options = PgOptions::default().schema_policy(policy);
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

/// Reports where the schema of a `postgres:` store URL stands, after applying the pending
/// migrations when `apply` is true (`omniq migrate`). Under the same lock as a connect's
/// migration, so it is safe beside starting workers.
pub fn migrate_url(url: &str, apply: bool) -> BoxFuture<'static, StoreResult<MigrationStatus>> {
    let url = url.to_owned();
    Box::pin(async move {
        let (url, _) = SchemaPolicy::take_from_url(&url)?;
        let (url, schema) = take_query_param(&url, "schema");
        let (url, _) = take_pool_size(&url)?;
        let secrets = Secrets::of(&url);
        let names = Names::new(schema.as_deref())?;
        let options = connect_options(&url, &secrets)?;
        migrate(&options, &names, apply)
            .await
            .map_err(|e| secrets.scrub_error(BACKEND, e))
    })
}
