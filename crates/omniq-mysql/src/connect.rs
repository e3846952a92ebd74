//! Opening from a store URL, for the facades' table of backends.

use std::sync::Arc;

use omniq_storage::{BoxFuture, StoreBackend, StoreResult, take_pool_size};

use crate::{MySqlBackend, MySqlOptions, MySqlTaskQueue};

omniq_storage::impl_store_backend!(MySqlBackend, transactional);
omniq_storage::impl_transactional_enqueue!(MySqlTaskQueue, sqlx::MySqlConnection, "MySQL");

/// Opens the database a `mysql:` or `mariadb:` store URL names. OmniQ's own parameter:
/// `max_connections=` (the pool size).
pub fn connect_url(url: &str) -> BoxFuture<'static, StoreResult<Arc<dyn StoreBackend>>> {
    let url = url.to_owned();
    Box::pin(async move {
        let (url, pool) = take_pool_size(&url)?;
        let mut options = MySqlOptions::default();
        if let Some(pool) = pool {
            options = options.max_connections(pool);
        }
        let backend: Arc<dyn StoreBackend> =
            Arc::new(MySqlBackend::connect_with(&url, options).await?);
        Ok(backend)
    })
}
