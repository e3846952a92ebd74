//! Opening from a store URL, for the facades' table of backends.

use std::sync::Arc;

use omniq_sql::SchemaPolicy;
use omniq_storage::secrets::Secrets;
use omniq_storage::{BoxFuture, MigrationStatus, StoreBackend, StoreResult, take_pool_size};

use crate::backend::{connect_options, migrate};
use crate::error::BACKEND;
use crate::{MySqlBackend, MySqlOptions, MySqlTaskQueue};

omniq_storage::impl_store_backend!(MySqlBackend, transactional);
omniq_storage::impl_transactional_enqueue!(MySqlTaskQueue, sqlx::MySqlConnection, "MySQL");

/// Opens the database a `mysql:` or `mariadb:` store URL names. OmniQ's own parameters:
/// `max_connections=` (the pool size) and `migrate=check` (apply no migration on connect;
/// refuse a schema that lacks one).
pub fn connect_url(url: &str) -> BoxFuture<'static, StoreResult<Arc<dyn StoreBackend>>> {
    let url = url.to_owned();
    Box::pin(async move {
        let (url, policy) = SchemaPolicy::take_from_url(&url)?;
        let (url, pool) = take_pool_size(&url)?;
        let mut options = MySqlOptions::default();
        if let Some(pool) = pool {
            options = options.max_connections(pool);
        }
        let backend: Arc<dyn StoreBackend> =
            Arc::new(MySqlBackend::open(&url, options, policy).await?);
        Ok(backend)
    })
}

/// Reports where the schema of a `mysql:` store URL stands, after applying the pending
/// migrations when `apply` is true (`omniq migrate`). Under the same lock as a connect's
/// migration, so it is safe beside starting workers.
pub fn migrate_url(url: &str, apply: bool) -> BoxFuture<'static, StoreResult<MigrationStatus>> {
    let url = url.to_owned();
    Box::pin(async move {
        let (url, _) = SchemaPolicy::take_from_url(&url)?;
        let (url, _) = take_pool_size(&url)?;
        let secrets = Secrets::of(&url);
        let options = connect_options(&url, &secrets)?;
        let patience = MySqlOptions::default().acquire_timeout;
        migrate(&options, patience, apply)
            .await
            .map_err(|e| secrets.scrub_error(BACKEND, e))
    })
}
