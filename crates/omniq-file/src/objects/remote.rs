//! [`Objects`] on any of object_store's stores that write conditionally.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, TimeDelta, Utc};
use futures_util::{StreamExt, TryStreamExt};
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    GetOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion,
};
use omniq_storage::{BoxFuture, StoreResult};

use super::{Objects, Stored, Version, invalid_key, valid_key};
use crate::error::object_store_error;

/// [`Objects`] on an object_store store (S3, Azure, GCS, or the in-memory one) under a
/// prefix of its own.
///
/// The store must support `PutMode::Create` and `PutMode::Update`: object_store's local
/// file store does not (use [`DirectoryObjects`](super::DirectoryObjects)), and an S3
/// store needs its conditional puts on (`S3ConditionalPut::ETagMatch`, the default).
#[derive(Debug, Clone)]
pub struct ObjectStoreObjects {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    /// The server's clock minus this process's, and when it was measured.
    offset: Arc<Mutex<Option<(Instant, TimeDelta)>>>,
}

/// How long a measured offset between this process's clock and the server's is trusted.
const CLOCK_PROBE_EVERY: Duration = Duration::from_secs(30);

impl ObjectStoreObjects {
    /// Objects in `store`, every key under `prefix` (`""` for the root).
    ///
    /// # Errors
    /// `Invalid` when `prefix` is not made of key segments (see [`Objects`]): object_store
    /// would encode or drop parts of it, and listings would no longer find the keys.
    pub fn new(store: Arc<dyn ObjectStore>, prefix: impl Into<String>) -> StoreResult<Self> {
        let prefix = prefix.into().trim_matches('/').to_owned();
        if !prefix.is_empty() && !valid_key(&prefix) {
            return Err(invalid_key(&prefix));
        }
        Ok(Self {
            store,
            prefix,
            offset: Arc::default(),
        })
    }

    /// Objects in a fresh in-memory store of this process (tests, demos).
    pub fn in_memory() -> Self {
        Self {
            store: Arc::new(InMemory::new()),
            prefix: String::new(),
            offset: Arc::default(),
        }
    }

    fn path(&self, key: &str) -> StoreResult<Path> {
        if !valid_key(key) {
            return Err(invalid_key(key));
        }
        Ok(if self.prefix.is_empty() {
            Path::from(key)
        } else {
            Path::from(format!("{}/{key}", self.prefix))
        })
    }

    async fn read(&self, key: &str) -> StoreResult<Option<Stored>> {
        let path = self.path(key)?;
        let got = match self.store.get_opts(&path, GetOptions::default()).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(err) => return Err(object_store_error(err)),
        };
        let version = Version {
            e_tag: got.meta.e_tag.clone(),
            version: got.meta.version.clone(),
        };
        match got.bytes().await {
            Ok(bytes) => Ok(Some(Stored { bytes, version })),
            // Deleted between the reply's head and its body.
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(err) => Err(object_store_error(err)),
        }
    }

    async fn write(&self, key: &str, bytes: Bytes, mode: PutMode) -> StoreResult<Option<Version>> {
        let path = self.path(key)?;
        let options = PutOptions::from(mode);
        match self
            .store
            .put_opts(&path, PutPayload::from(bytes), options)
            .await
        {
            Ok(put) => Ok(Some(Version {
                e_tag: put.e_tag,
                version: put.version,
            })),
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => Ok(None),
            // object_store's local-file store, or an S3 client with conditional puts off:
            // nothing this backend can be made safe on.
            Err(err @ object_store::Error::NotImplemented { .. }) => {
                Err(omniq_storage::StoreError::Invalid(format!(
                    "the object store cannot write conditionally: {err}"
                )))
            }
            Err(err) => Err(object_store_error(err)),
        }
    }

    /// The server's time: it stamps every object it stores, so write one and read its
    /// stamp. S3 and Azure stamp whole seconds, so the time read is up to a second behind,
    /// for every client of the server alike.
    async fn server_now(&self) -> StoreResult<DateTime<Utc>> {
        let cached = *self.offset.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((at, offset)) = cached
            && at.elapsed() < CLOCK_PROBE_EVERY
        {
            return Ok(Utc::now() + offset);
        }
        let path = self.path(&format!("clock/{}", uuid::Uuid::new_v4().simple()))?;
        let before = Utc::now();
        self.store
            .put(&path, PutPayload::from_static(b"clock"))
            .await
            .map_err(object_store_error)?;
        let head = self.store.head(&path).await.map_err(object_store_error);
        let after = Utc::now();
        // Best effort: a probe left behind is a few bytes.
        let _ = self.store.delete(&path).await;
        let stamped = head?.last_modified;
        let offset = stamped - (before + (after - before) / 2);
        // Whole seconds: half a second is the expected error, not an offset.
        let offset = if offset.abs() < TimeDelta::seconds(1) {
            TimeDelta::zero()
        } else {
            offset
        };
        *self.offset.lock().unwrap_or_else(PoisonError::into_inner) =
            Some((Instant::now(), offset));
        Ok(Utc::now() + offset)
    }

    async fn remove(&self, key: &str) -> StoreResult<()> {
        let path = self.path(key)?;
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(err) => Err(object_store_error(err)),
        }
    }

    async fn keys(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<String>> {
        let full = |key: &str| {
            let key = key.trim_matches('/');
            if self.prefix.is_empty() {
                key.to_owned()
            } else {
                format!("{}/{key}", self.prefix)
            }
        };
        let base = Path::from(full(prefix));
        let listed = match after {
            Some(after) => self
                .store
                .list_with_offset(Some(&base), &Path::from(full(after))),
            None => self.store.list(Some(&base)),
        };
        let strip = if self.prefix.is_empty() {
            0
        } else {
            self.prefix.len() + 1
        };
        // Every store here lists in key order; a page stops the listing early.
        let listed: Vec<object_store::ObjectMeta> = listed
            .take(limit)
            .try_collect()
            .await
            .map_err(object_store_error)?;
        let mut keys: Vec<String> = listed
            .into_iter()
            .filter_map(|meta| {
                let location: &str = meta.location.as_ref();
                location.get(strip..).map(str::to_owned)
            })
            .filter(|key| valid_key(key))
            .collect();
        keys.sort();
        Ok(keys)
    }
}

impl Objects for ObjectStoreObjects {
    fn get(&self, key: &str) -> BoxFuture<'_, StoreResult<Option<Stored>>> {
        let key = key.to_owned();
        Box::pin(async move { self.read(&key).await })
    }

    fn create(&self, key: &str, bytes: Bytes) -> BoxFuture<'_, StoreResult<Option<Version>>> {
        let key = key.to_owned();
        Box::pin(async move { self.write(&key, bytes, PutMode::Create).await })
    }

    fn update(
        &self,
        key: &str,
        bytes: Bytes,
        expected: &Version,
    ) -> BoxFuture<'_, StoreResult<Option<Version>>> {
        let key = key.to_owned();
        let expected = UpdateVersion {
            e_tag: expected.e_tag.clone(),
            version: expected.version.clone(),
        };
        Box::pin(async move { self.write(&key, bytes, PutMode::Update(expected)).await })
    }

    fn delete(&self, key: &str) -> BoxFuture<'_, StoreResult<()>> {
        let key = key.to_owned();
        Box::pin(async move { self.remove(&key).await })
    }

    fn delete_if(&self, key: &str, expected: &Version) -> BoxFuture<'_, StoreResult<bool>> {
        let key = key.to_owned();
        let expected = UpdateVersion {
            e_tag: expected.e_tag.clone(),
            version: expected.version.clone(),
        };
        Box::pin(async move {
            let tombstoned = self
                .write(&key, Bytes::new(), PutMode::Update(expected))
                .await?
                .is_some();
            if tombstoned {
                self.remove(&key).await?;
            }
            Ok(tombstoned)
        })
    }

    fn list(&self, prefix: &str) -> BoxFuture<'_, StoreResult<Vec<String>>> {
        let prefix = prefix.to_owned();
        Box::pin(async move { self.keys(&prefix, None, usize::MAX).await })
    }

    fn list_page(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> BoxFuture<'_, StoreResult<Vec<String>>> {
        let (prefix, after) = (prefix.to_owned(), after.map(str::to_owned));
        Box::pin(async move { self.keys(&prefix, after.as_deref(), limit).await })
    }

    fn now(&self) -> BoxFuture<'_, StoreResult<DateTime<Utc>>> {
        Box::pin(self.server_now())
    }
}
