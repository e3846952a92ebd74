//! Opening from a store URL, for the facades' table of backends.

use std::sync::Arc;

use omniq_storage::{BoxFuture, StoreBackend, StoreError, StoreResult, take_query_param};

use crate::{RedisBackend, RedisOptions};

omniq_storage::impl_store_backend!(RedisBackend);

/// Opens the server or cluster a `redis:` or `rediss:` store URL names. OmniQ's own
/// parameters: `prefix=` (the keys' prefix, see [`RedisOptions::prefix`]) and
/// `cluster=true` (the URL names one or more cluster nodes, comma-separated).
pub fn connect_url(url: &str) -> BoxFuture<'static, StoreResult<Arc<dyn StoreBackend>>> {
    let url = url.to_owned();
    Box::pin(async move {
        let (url, prefix) = take_query_param(&url, "prefix");
        let (url, cluster) = take_query_param(&url, "cluster");
        let mut options = RedisOptions::default();
        if let Some(prefix) = prefix {
            options.prefix = prefix;
        }
        let backend = match cluster.as_deref() {
            None | Some("false" | "0") => RedisBackend::connect_with(&url, options).await?,
            Some("true" | "1") => RedisBackend::connect_cluster(&[url.as_str()], options).await?,
            Some(other) => {
                return Err(StoreError::Invalid(format!(
                    "the Redis URL parameter `cluster={other}` is neither `true` nor `false`"
                )));
            }
        };
        let backend: Arc<dyn StoreBackend> = Arc::new(backend);
        Ok(backend)
    })
}
