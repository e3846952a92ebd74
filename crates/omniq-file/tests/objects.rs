//! The conditional-write rules every [`Objects`] store keeps, run on each store reachable
//! here: a local directory, object_store's in-memory store, and S3 on an S3-compatible test
//! server (moto, `OMNIQ_TEST_S3_URL`, by default `http://127.0.0.1:5000`) and Azure on its
//! emulator (azurite, on `http://127.0.0.1:10000`); `.ci/services` starts both.

mod support;

use std::sync::Arc;

use bytes::Bytes;
use omniq_file::{DirectoryObjects, Objects};
use omniq_storage::StoreErrorKind;
use support::{azure, directory, memory, s3};

async fn a_key_is_created_once_and_read_back(objects: Arc<dyn Objects>) {
    assert_eq!(objects.get("tasks/a").await.expect("get"), None);
    let version = objects
        .create("tasks/a", Bytes::from("first"))
        .await
        .expect("create")
        .expect("absent, so created");
    assert_eq!(
        objects
            .create("tasks/a", Bytes::from("second"))
            .await
            .expect("create"),
        None,
        "a second create of the same key is refused"
    );
    let stored = objects.get("tasks/a").await.expect("get").expect("stored");
    assert_eq!(stored.bytes, Bytes::from("first"));
    assert_eq!(stored.version, version);
}

/// Keys created together each hold the bytes as their own object: one already taken is
/// left as it was, and a later replace or delete of one key leaves the others alone
/// (on a directory they name one file).
async fn keys_created_together_are_each_their_own(objects: Arc<dyn Objects>) {
    objects
        .create("leases/taken", Bytes::from("before"))
        .await
        .expect("create")
        .expect("absent");
    let keys = ["leases/a", "leases/taken", "leases/b", "markers/c"];
    let created = objects
        .create_shared(
            keys.iter().map(|key| (*key).to_owned()).collect(),
            Bytes::from("shared"),
        )
        .await
        .expect("create together");
    assert_eq!(
        created.iter().map(Option::is_some).collect::<Vec<_>>(),
        [true, false, true, true],
        "every key created but the one taken"
    );
    let read = |key: &'static str| {
        let objects = Arc::clone(&objects);
        async move {
            objects
                .get(key)
                .await
                .expect("get")
                .map(|stored| stored.bytes)
        }
    };
    assert_eq!(read("leases/taken").await, Some(Bytes::from("before")));
    for key in ["leases/a", "leases/b", "markers/c"] {
        assert_eq!(read(key).await, Some(Bytes::from("shared")), "{key}");
    }
    let first = created[0].clone().expect("created");
    objects
        .update("leases/a", Bytes::from("a's own"), &first)
        .await
        .expect("update")
        .expect("replaced from the version created");
    assert_eq!(read("leases/a").await, Some(Bytes::from("a's own")));
    for key in ["leases/b", "markers/c"] {
        assert_eq!(read(key).await, Some(Bytes::from("shared")), "{key}");
    }
    assert_eq!(
        objects
            .update("leases/a", Bytes::from("stale"), &first)
            .await
            .expect("update"),
        None,
        "the version created is stale once replaced"
    );
    objects.delete("leases/b").await.expect("delete");
    assert_eq!(read("leases/b").await, None);
    assert_eq!(read("markers/c").await, Some(Bytes::from("shared")));
    let c = objects.get("markers/c").await.expect("get").expect("kept");
    objects
        .update("markers/c", Bytes::from("c's own"), &c.version)
        .await
        .expect("update")
        .expect("replaced");
    assert_eq!(read("markers/c").await, Some(Bytes::from("c's own")));
    assert_eq!(read("leases/a").await, Some(Bytes::from("a's own")));
    assert_eq!(
        objects
            .create_shared(Vec::new(), Bytes::from("none"))
            .await
            .expect("nothing to create"),
        Vec::new()
    );
}

async fn a_replace_needs_the_version_it_read(objects: Arc<dyn Objects>) {
    let first = objects
        .create("leases/t", Bytes::from("v1"))
        .await
        .expect("create")
        .expect("created");
    let second = objects
        .update("leases/t", Bytes::from("v2"), &first)
        .await
        .expect("update")
        .expect("the version read is current");
    assert_ne!(first, second);
    // Every write carries bytes of its own (S3's e-tag is a hash of the bytes: the same
    // bytes again would match a stale version, see `Objects`).
    let third = objects
        .update("leases/t", Bytes::from("v3"), &second)
        .await
        .expect("update")
        .expect("current");
    for stale in [&first, &second] {
        assert_eq!(
            objects
                .update("leases/t", Bytes::from("lost"), stale)
                .await
                .expect("update"),
            None,
            "a stale version replaces nothing"
        );
    }
    let stored = objects.get("leases/t").await.expect("get").expect("stored");
    assert_eq!(stored.bytes, Bytes::from("v3"));
    assert_eq!(stored.version, third);
    // A deleted key cannot be replaced, not even from its last version.
    objects.delete("leases/t").await.expect("delete");
    assert_eq!(
        objects
            .update("leases/t", Bytes::from("back"), &third)
            .await
            .expect("update"),
        None
    );
    assert_eq!(objects.get("leases/t").await.expect("get"), None);
    // Deleting what is not there is fine.
    objects.delete("leases/t").await.expect("delete again");
    objects
        .delete("never/was")
        .await
        .expect("delete a missing key");
}

async fn a_conditional_delete_takes_only_the_version_read(objects: Arc<dyn Objects>) {
    let first = objects
        .create("results/r", Bytes::from("first"))
        .await
        .expect("create")
        .expect("created");
    let second = objects
        .update("results/r", Bytes::from("second"), &first)
        .await
        .expect("update")
        .expect("current");
    assert!(
        !objects
            .delete_if("results/r", &first)
            .await
            .expect("delete"),
        "a write made since the read stays"
    );
    let stored = objects.get("results/r").await.expect("get").expect("kept");
    assert_eq!(stored.bytes, Bytes::from("second"));
    assert!(
        objects
            .delete_if("results/r", &second)
            .await
            .expect("delete")
    );
    assert_eq!(objects.get("results/r").await.expect("get"), None);
    assert!(
        !objects
            .delete_if("results/r", &second)
            .await
            .expect("delete"),
        "nothing left to delete"
    );
}

async fn listings_are_sorted_and_keep_to_their_prefix(objects: Arc<dyn Objects>) {
    for key in [
        "ready/q/0002",
        "ready/q/0001",
        "ready/q/sub/0003",
        "ready/qq/0001",
        "other/0001",
    ] {
        objects
            .create(key, Bytes::from(key.to_owned()))
            .await
            .expect("create")
            .expect("created");
    }
    assert_eq!(
        objects.list("ready/q").await.expect("list"),
        ["ready/q/0001", "ready/q/0002", "ready/q/sub/0003"]
    );
    assert_eq!(
        objects.list("ready/none").await.expect("list"),
        Vec::<String>::new()
    );
    let everything = objects.list("").await.expect("list");
    assert_eq!(everything.len(), 5, "{everything:?}");
}

async fn a_key_outside_the_rules_is_refused(objects: Arc<dyn Objects>) {
    for key in ["", "a//b", ".locks/00", "a/b c", "../escape"] {
        let err = objects
            .create(key, Bytes::from("x"))
            .await
            .expect_err("not a key");
        assert_eq!(err.kind(), StoreErrorKind::Invalid, "{key}: {err}");
        let err = objects.get(key).await.expect_err("not a key");
        assert_eq!(err.kind(), StoreErrorKind::Invalid, "{key}: {err}");
    }
}

/// Writers that race on one counter, each by read, increment and conditional replace,
/// lose no increment: exactly one replace from a given version wins.
async fn racing_replaces_lose_no_write(objects: Arc<dyn Objects>) {
    const WRITERS: u64 = 8;
    const EACH: u64 = 25;
    objects
        .create("counter", Bytes::from("0"))
        .await
        .expect("create")
        .expect("created");
    let mut writers = Vec::new();
    for _ in 0..WRITERS {
        let objects = Arc::clone(&objects);
        writers.push(tokio::spawn(async move {
            let mut lost_races = 0u64;
            for _ in 0..EACH {
                loop {
                    let read = objects.get("counter").await.expect("get").expect("stored");
                    let n: u64 = std::str::from_utf8(&read.bytes)
                        .expect("text")
                        .parse()
                        .expect("a number");
                    let next = Bytes::from((n + 1).to_string());
                    if objects
                        .update("counter", next, &read.version)
                        .await
                        .expect("update")
                        .is_some()
                    {
                        break;
                    }
                    lost_races += 1;
                }
            }
            lost_races
        }));
    }
    for writer in writers {
        writer.await.expect("writer");
    }
    let stored = objects.get("counter").await.expect("get").expect("stored");
    assert_eq!(
        std::str::from_utf8(&stored.bytes).expect("text"),
        (WRITERS * EACH).to_string()
    );
}

/// Runs every rule above on the stores `stores` makes, a fresh one per rule.
macro_rules! objects_suite {
    ($module:ident, $stores:expr) => {
        mod $module {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn a_key_is_created_once_and_read_back() {
                let Some((objects, _keep)) = $stores else {
                    return;
                };
                super::a_key_is_created_once_and_read_back(objects).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn a_replace_needs_the_version_it_read() {
                let Some((objects, _keep)) = $stores else {
                    return;
                };
                super::a_replace_needs_the_version_it_read(objects).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn a_conditional_delete_takes_only_the_version_read() {
                let Some((objects, _keep)) = $stores else {
                    return;
                };
                super::a_conditional_delete_takes_only_the_version_read(objects).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn listings_are_sorted_and_keep_to_their_prefix() {
                let Some((objects, _keep)) = $stores else {
                    return;
                };
                super::listings_are_sorted_and_keep_to_their_prefix(objects).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn a_key_outside_the_rules_is_refused() {
                let Some((objects, _keep)) = $stores else {
                    return;
                };
                super::a_key_outside_the_rules_is_refused(objects).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn keys_created_together_are_each_their_own() {
                let Some((objects, _keep)) = $stores else {
                    return;
                };
                super::keys_created_together_are_each_their_own(objects).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn racing_replaces_lose_no_write() {
                let Some((objects, _keep)) = $stores else {
                    return;
                };
                super::racing_replaces_lose_no_write(objects).await;
            }
        }
    };
}

objects_suite!(on_a_directory, directory());
objects_suite!(in_memory, memory());
objects_suite!(on_s3, s3());
objects_suite!(on_azure, azure());

/// Two handles on one directory (as two processes would have) share its locks: a replace
/// through one refuses the version the other replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_handles_on_one_directory_see_each_others_writes() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let one = DirectoryObjects::open(dir.path()).expect("open");
    let other = DirectoryObjects::open(dir.path()).expect("open");
    let first = one
        .create("k", Bytes::from("1"))
        .await
        .expect("create")
        .expect("created");
    assert!(
        other
            .create("k", Bytes::from("2"))
            .await
            .expect("create")
            .is_none()
    );
    let read = other.get("k").await.expect("get").expect("stored");
    assert_eq!(read.version, first);
    other
        .update("k", Bytes::from("2"), &read.version)
        .await
        .expect("update")
        .expect("current");
    assert!(
        one.update("k", Bytes::from("3"), &first)
            .await
            .expect("update")
            .is_none()
    );
}

/// A store that ignores the conditions of its writes, as an S3-compatible server without
/// conditional writes does: every put overwrites.
#[derive(Debug)]
struct Careless(object_store::memory::InMemory);

impl std::fmt::Display for Careless {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Careless")
    }
}

#[async_trait::async_trait]
impl object_store::ObjectStore for Careless {
    async fn put_opts(
        &self,
        location: &object_store::path::Path,
        payload: object_store::PutPayload,
        _opts: object_store::PutOptions,
    ) -> object_store::Result<object_store::PutResult> {
        self.0
            .put_opts(location, payload, object_store::PutOptions::default())
            .await
    }

    async fn put_multipart_opts(
        &self,
        location: &object_store::path::Path,
        opts: object_store::PutMultipartOptions,
    ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
        self.0.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &object_store::path::Path,
        options: object_store::GetOptions,
    ) -> object_store::Result<object_store::GetResult> {
        self.0.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: futures_util::stream::BoxStream<
            'static,
            object_store::Result<object_store::path::Path>,
        >,
    ) -> futures_util::stream::BoxStream<'static, object_store::Result<object_store::path::Path>>
    {
        self.0.delete_stream(locations)
    }

    fn list(
        &self,
        prefix: Option<&object_store::path::Path>,
    ) -> futures_util::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>>
    {
        self.0.list(prefix)
    }

    async fn list_with_delimiter(
        &self,
        prefix: Option<&object_store::path::Path>,
    ) -> object_store::Result<object_store::ListResult> {
        self.0.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &object_store::path::Path,
        to: &object_store::path::Path,
        options: object_store::CopyOptions,
    ) -> object_store::Result<()> {
        self.0.copy_opts(from, to, options).await
    }
}

/// A store whose writes ignore their conditions would let two workers claim one task: the
/// backend refuses it when it connects, and takes a store that honours them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_ignores_conditional_writes_is_refused() {
    let careless = std::sync::Arc::new(Careless(object_store::memory::InMemory::new()));
    let refused = omniq_file::FileBackend::on_object_store(careless, "queue")
        .await
        .expect_err("refused");
    assert_eq!(
        refused.kind(),
        omniq_storage::StoreErrorKind::Invalid,
        "{refused}"
    );
    assert!(
        refused.to_string().contains("claims would race"),
        "{refused}"
    );
    let local = object_store::local::LocalFileSystem::new_with_prefix(
        tempfile::tempdir().expect("a directory").keep(),
    )
    .expect("a local store");
    let refused = omniq_file::FileBackend::on_object_store(std::sync::Arc::new(local), "queue")
        .await
        .expect_err("refused");
    assert_eq!(
        refused.kind(),
        omniq_storage::StoreErrorKind::Invalid,
        "{refused}"
    );
    omniq_file::FileBackend::on_object_store(
        std::sync::Arc::new(object_store::memory::InMemory::new()),
        "queue",
    )
    .await
    .expect("a store that honours conditions");
}
