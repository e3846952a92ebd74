//! Opening from a store URL, for the facades' table of backends.

use std::sync::Arc;

use omniq_storage::{BoxFuture, MigrationStatus, StoreBackend, StoreResult};

use crate::SqliteBackend;

omniq_storage::impl_store_backend!(SqliteBackend);

/// Opens the database a `sqlite:` store URL names (see [`SqliteBackend::connect`]).
pub fn connect_url(url: &str) -> BoxFuture<'static, StoreResult<Arc<dyn StoreBackend>>> {
    let url = url.to_owned();
    Box::pin(async move {
        let backend: Arc<dyn StoreBackend> = Arc::new(SqliteBackend::connect(&url).await?);
        Ok(backend)
    })
}

/// Reports where the schema of a `sqlite:` store URL stands, after applying the pending
/// migrations when `apply` is true (see [`SqliteBackend::migration_status`]).
pub fn migrate_url(url: &str, apply: bool) -> BoxFuture<'static, StoreResult<MigrationStatus>> {
    let url = url.to_owned();
    Box::pin(async move { SqliteBackend::migration_status(&url, apply).await })
}
