//! Opening the backend from a store URL.

use std::str::FromStr;
use std::sync::Arc;

use omniq_storage::{BoxFuture, Clock, StoreBackend, StoreError, StoreResult};

use crate::objects::{DirectoryObjects, ObjectStoreObjects, Objects};
use crate::{FileEventStore, FileResultStore, FileScheduleStore, FileTaskQueue};

/// The object-store backend: the four stores on one [`Objects`] store, under one prefix.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> omniq_storage::StoreResult<()> {
/// use omniq_file::FileBackend;
/// use omniq_storage::TaskQueue;
///
/// let dir = std::env::temp_dir().join(format!("omniq-doc-{}", std::process::id()));
/// let backend = FileBackend::connect_url(&format!("file://{}", dir.display())).await?;
/// assert!(backend.task_queue().queue_names().await?.is_empty());
/// # std::fs::remove_dir_all(dir).ok();
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct FileBackend {
    objects: Arc<dyn Objects>,
    /// The task queue every [`FileBackend::task_queue`] call hands out a handle on, so
    /// that an enqueue wakes the idle workers of this process.
    queue: FileTaskQueue,
}

impl FileBackend {
    /// The backend on `objects`.
    pub fn new(objects: Arc<dyn Objects>) -> Self {
        Self {
            queue: FileTaskQueue::new(Arc::clone(&objects)),
            objects,
        }
    }

    /// Opens the store a URL names:
    ///
    /// - `file:///var/lib/omniq`, `file://./omniq` (relative), `file:omniq`: a local
    ///   directory ([`DirectoryObjects`]), created if missing.
    /// - `file+memory://`: object_store's in-memory store, in this process only (tests,
    ///   demos).
    /// - `s3://bucket/prefix`, `az://container/prefix` (or `azure://`),
    ///   `gs://bucket/prefix`: a bucket, its credentials and settings read from the
    ///   environment as object_store reads them (`AWS_*`, `AZURE_*`, `GOOGLE_*`); query
    ///   parameters set object_store's options for the store, e.g.
    ///   `?endpoint=http://127.0.0.1:9000&allow_http=true&region=us-east-1` for an
    ///   S3-compatible server. The bucket must exist: it is written to once, here, to read
    ///   the server's clock.
    ///
    /// # Errors
    /// `Invalid` for a URL this backend does not read or an unknown option, `Unavailable`
    /// when the store cannot be reached, a backend error when it refuses the first write
    /// (a missing bucket, wrong credentials).
    pub async fn connect_url(url: &str) -> StoreResult<Self> {
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let (scheme, rest) = base
            .split_once(':')
            .ok_or_else(|| invalid(url, "it has no scheme"))?;
        let scheme = scheme.to_ascii_lowercase();
        let rest = rest.strip_prefix("//").unwrap_or(rest);
        let objects: Arc<dyn Objects> = match scheme.as_str() {
            "file" => {
                if !query.is_empty() {
                    return Err(invalid(url, "a directory takes no options"));
                }
                if rest.is_empty() {
                    return Err(invalid(url, "it names no directory"));
                }
                Arc::new(DirectoryObjects::open(rest)?)
            }
            "file+memory" => Arc::new(ObjectStoreObjects::in_memory()),
            "s3" | "s3a" | "az" | "azure" | "gs" | "gcs" => {
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                if bucket.is_empty() {
                    return Err(invalid(url, "it names no bucket"));
                }
                let store = remote_store(&scheme, bucket, query, url)?;
                return Self::checked(store, prefix, url).await;
            }
            _ => return Err(invalid(url, "its scheme is not one of this backend's")),
        };
        Ok(Self::new(objects))
    }

    /// The backend on an object_store store built by the caller (a client with settings
    /// no URL carries), every key under `prefix`. Checked as a URL's bucket is: written to
    /// once, and refused if it ignores the conditions of its writes.
    ///
    /// # Errors
    /// `Invalid` for a prefix that is not made of key segments or a store that ignores
    /// conditional writes (object_store's local-file store, an S3-compatible server
    /// without them); `Unavailable` when the store cannot be reached; a backend error when
    /// it refuses the first write.
    pub async fn on_object_store(
        store: Arc<dyn object_store::ObjectStore>,
        prefix: &str,
    ) -> StoreResult<Self> {
        let shown = format!("{store}");
        Self::checked(store, prefix, &shown).await
    }

    async fn checked(
        store: Arc<dyn object_store::ObjectStore>,
        prefix: &str,
        url: &str,
    ) -> StoreResult<Self> {
        let objects = ObjectStoreObjects::new(store, prefix)?;
        // Reaches the bucket now, not at the first claim.
        objects.now().await?;
        check_conditional_writes(&objects, url).await?;
        Ok(Self::new(Arc::new(objects)))
    }

    /// This backend (the same store), reading `clock` where it reads the client's time:
    /// when a task is due, its TTL, timestamps. Lease deadlines are on the store's clock
    /// whatever `clock` says (see [`Objects::now`]). For tests that play a machine whose
    /// clock is wrong.
    pub fn with_clock(&self, clock: Clock) -> Self {
        Self {
            objects: Arc::clone(&self.objects),
            queue: FileTaskQueue::with_clock(Arc::clone(&self.objects), clock),
        }
    }

    /// The store every store of the backend is on.
    pub fn objects(&self) -> &Arc<dyn Objects> {
        &self.objects
    }

    /// The task queue.
    pub fn task_queue(&self) -> FileTaskQueue {
        self.queue.clone()
    }

    /// The result store.
    pub fn result_store(&self) -> FileResultStore {
        FileResultStore::new(Arc::clone(&self.objects))
    }

    /// The event store.
    pub fn event_store(&self) -> FileEventStore {
        FileEventStore::new(Arc::clone(&self.objects))
    }

    /// The schedule store.
    pub fn schedule_store(&self) -> FileScheduleStore {
        FileScheduleStore::new(Arc::clone(&self.objects))
    }
}

omniq_storage::impl_store_backend!(FileBackend);

/// Opens the backend a URL names (see [`FileBackend::connect_url`]), for the facades'
/// table of backends.
pub fn connect_url(url: &str) -> BoxFuture<'static, StoreResult<Arc<dyn StoreBackend>>> {
    let url = url.to_owned();
    Box::pin(async move {
        let backend: Arc<dyn StoreBackend> = Arc::new(FileBackend::connect_url(&url).await?);
        Ok(backend)
    })
}

/// Refuses a store that ignores the conditions of its writes (an S3-compatible server
/// without conditional writes would take every claim of a task: workers would race), by
/// writing an object twice from one version: the second write must be refused.
async fn check_conditional_writes(objects: &dyn Objects, url: &str) -> StoreResult<()> {
    let key = format!("probe/{}", uuid::Uuid::new_v4().simple());
    let mine = bytes::Bytes::from(uuid::Uuid::new_v4().simple().to_string());
    let created = objects.create(&key, mine.clone()).await?;
    let checked = async {
        // A create retried after a lost reply reports a conflict with itself.
        let first = match created {
            Some(first) => first,
            None => match objects.get(&key).await? {
                Some(stored) if stored.bytes == mine => stored.version,
                _ => return Err(invalid(url, "the store lost a fresh object's first write")),
            },
        };
        if objects
            .create(&key, bytes::Bytes::from_static(b"again"))
            .await?
            .is_some()
        {
            return Err(invalid(
                url,
                "the store ignores `If-None-Match`: claims would race",
            ));
        }
        if objects
            .update(&key, bytes::Bytes::from_static(b"2"), &first)
            .await?
            .is_none()
        {
            return Err(invalid(
                url,
                "the store refuses a replace from the current version",
            ));
        }
        if objects
            .update(&key, bytes::Bytes::from_static(b"3"), &first)
            .await?
            .is_some()
        {
            return Err(invalid(
                url,
                "the store ignores `If-Match`: claims would race",
            ));
        }
        Ok(())
    }
    .await;
    // Best effort: a probe left behind is a few bytes.
    let _ = objects.delete(&key).await;
    checked
}

/// The object_store store of a bucket URL, configured from the environment, then from
/// the URL's query.
fn remote_store(
    scheme: &str,
    bucket: &str,
    query: &str,
    url: &str,
) -> StoreResult<Arc<dyn object_store::ObjectStore>> {
    use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
    use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
    use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
    let options = query_pairs(query, url)?;
    let built = match scheme {
        "s3" | "s3a" => {
            let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
            for (name, value) in options {
                builder = builder.with_config(option::<AmazonS3ConfigKey>(&name, url)?, value);
            }
            builder
                .build()
                .map(|s| Arc::new(s) as Arc<dyn object_store::ObjectStore>)
        }
        "az" | "azure" => {
            let mut builder = MicrosoftAzureBuilder::from_env().with_container_name(bucket);
            for (name, value) in options {
                builder = builder.with_config(option::<AzureConfigKey>(&name, url)?, value);
            }
            builder
                .build()
                .map(|s| Arc::new(s) as Arc<dyn object_store::ObjectStore>)
        }
        _ => {
            let mut builder = GoogleCloudStorageBuilder::from_env().with_bucket_name(bucket);
            for (name, value) in options {
                builder = builder.with_config(option::<GoogleConfigKey>(&name, url)?, value);
            }
            builder
                .build()
                .map(|s| Arc::new(s) as Arc<dyn object_store::ObjectStore>)
        }
    };
    // object_store's message names the missing setting, never a secret's value.
    built.map_err(|err| invalid(url, &err.to_string()))
}

fn option<K: FromStr>(name: &str, url: &str) -> StoreResult<K> {
    name.parse()
        .map_err(|_| invalid(url, &format!("`{name}` is not an option of this store")))
}

/// The query's `name=value` pairs, `%XX` escapes decoded.
fn query_pairs(query: &str, url: &str) -> StoreResult<Vec<(String, String)>> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair
                .split_once('=')
                .ok_or_else(|| invalid(url, &format!("the option `{pair}` has no value")))?;
            Ok((name.to_ascii_lowercase(), percent_decode(value)))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(byte) = text
                .get(i + 1..i + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
        {
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A URL refused, named without its query (where secrets would be).
fn invalid(url: &str, why: &str) -> StoreError {
    let shown = url.split_once('?').map_or(url, |(base, _)| base);
    StoreError::Invalid(format!("the store URL `{shown}` cannot be opened: {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn urls_open_their_stores_or_say_why_not() {
        let dir = tempfile_dir();
        let url = format!("file://{}", dir.display());
        FileBackend::connect_url(&url).await.expect("a directory");
        FileBackend::connect_url("file+memory://")
            .await
            .expect("memory");
        let refused =
            FileBackend::connect_url("s3://bucket/p?no_such_option=1&secret_access_key=hunter2")
                .await
                .expect_err("unknown option");
        assert!(refused.to_string().contains("no_such_option"), "{refused}");
        assert!(!refused.to_string().contains("hunter2"), "{refused}");
        assert!(FileBackend::connect_url("s3://").await.is_err());
        assert!(FileBackend::connect_url("ftp://x").await.is_err());
        std::fs::remove_dir_all(dir).ok();
    }

    fn tempfile_dir() -> std::path::PathBuf {
        std::env::temp_dir().join(format!("omniq-file-url-{}", uuid::Uuid::new_v4().simple()))
    }
}
