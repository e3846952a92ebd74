//! Opening from a store URL, for the facades' table of backends.

use std::sync::Arc;

use omniq_storage::{BoxFuture, StoreBackend, StoreResult};

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
