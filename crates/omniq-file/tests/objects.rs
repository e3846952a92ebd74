//! The conditional-write rules every [`Objects`] store keeps, run on each store reachable
//! here: a local directory, object_store's in-memory store, and S3 on an S3-compatible test
//! server (moto, `OMNIQ_TEST_S3_URL`, by default `http://127.0.0.1:5000`) and Azure on its
//! emulator (azurite, on `http://127.0.0.1:10000`); `.ci/services` starts both.

use std::sync::Arc;

use bytes::Bytes;
use omniq_file::{DirectoryObjects, ObjectStoreObjects, Objects};
use omniq_storage::StoreErrorKind;

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
            async fn racing_replaces_lose_no_write() {
                let Some((objects, _keep)) = $stores else {
                    return;
                };
                super::racing_replaces_lose_no_write(objects).await;
            }
        }
    };
}

fn directory() -> Option<(Arc<dyn Objects>, tempfile::TempDir)> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let objects = DirectoryObjects::open(dir.path().join("store")).expect("open");
    Some((Arc::new(objects), dir))
}

fn memory() -> Option<(Arc<dyn Objects>, ())> {
    Some((Arc::new(ObjectStoreObjects::in_memory()), ()))
}

/// The S3 test server's URL.
fn s3_url() -> String {
    std::env::var("OMNIQ_TEST_S3_URL").unwrap_or_else(|_| "http://127.0.0.1:5000".to_owned())
}

const BUCKET: &str = "omniq-test";

/// Sends a request without a body to `address` (`host:port`) and returns the reply's
/// status; `Err` when the server cannot be reached.
fn put_empty(address: &str, path: &str, headers: &[(&str, String)]) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address)?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    let mut request = format!(
        "PUT {path} HTTP/1.1\r\nHost: {address}\r\nContent-Length: 0\r\nConnection: close\r\n"
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes())?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply)?;
    Ok(reply
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_owned())
}

/// Creates the test bucket (object_store makes no buckets; the test server takes unsigned
/// requests).
fn create_bucket(url: &str) -> std::io::Result<()> {
    let address = url.trim_start_matches("http://").trim_end_matches('/');
    match put_empty(address, &format!("/{BUCKET}"), &[])?.as_str() {
        // Created, or there already.
        "200" | "409" => Ok(()),
        status => Err(std::io::Error::other(format!(
            "creating the bucket: {status}"
        ))),
    }
}

/// S3 on the test server, under a prefix no other test uses; `None` (said loudly) when the
/// server is unreachable and services are not required.
fn s3() -> Option<(Arc<dyn Objects>, ())> {
    let url = s3_url();
    if let Err(err) = create_bucket(&url) {
        assert!(
            !omniq_storage::conformance::services_required(),
            "the S3 test server at {url} is required: {err}"
        );
        eprintln!("SKIPPED: the S3 test server at {url} is unreachable ({err})");
        return None;
    }
    let store = object_store::aws::AmazonS3Builder::new()
        .with_endpoint(&url)
        .with_allow_http(true)
        .with_region("us-east-1")
        .with_bucket_name(BUCKET)
        .with_access_key_id("test")
        .with_secret_access_key("test")
        .build()
        .expect("an S3 client");
    let prefix = format!("run-{}", uuid::Uuid::new_v4().simple());
    Some((
        Arc::new(ObjectStoreObjects::new(Arc::new(store), prefix)),
        (),
    ))
}

/// The Azure emulator's well-known development account (public, the same everywhere).
const AZURITE_ACCOUNT: &str = "devstoreaccount1";
const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
const AZURITE_ADDRESS: &str = "127.0.0.1:10000";
const CONTAINER: &str = "omniq-test";

/// Creates the test container, by a request signed with the account's shared key (the
/// emulator refuses unsigned ones; object_store makes no containers).
fn create_container() -> std::io::Result<()> {
    use base64::Engine as _;
    let engine = base64::engine::general_purpose::STANDARD;
    let date = chrono::Utc::now()
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string();
    let version = "2021-08-06";
    // Verb, four empty standard headers, the content type, six more empty ones, then the
    // x-ms- headers and the resource (the emulator's paths start with the account).
    let signed = format!(
        "PUT\n\n\n\n\napplication/octet-stream\n\n\n\n\n\n\n\
         x-ms-date:{date}\nx-ms-version:{version}\n\
         /{AZURITE_ACCOUNT}/{AZURITE_ACCOUNT}/{CONTAINER}\nrestype:container"
    );
    let key = engine.decode(AZURITE_KEY).map_err(std::io::Error::other)?;
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &key);
    let signature = engine.encode(aws_lc_rs::hmac::sign(&key, signed.as_bytes()).as_ref());
    let status = put_empty(
        AZURITE_ADDRESS,
        &format!("/{AZURITE_ACCOUNT}/{CONTAINER}?restype=container"),
        &[
            ("x-ms-date", date),
            ("x-ms-version", version.to_owned()),
            ("Content-Type", "application/octet-stream".to_owned()),
            (
                "Authorization",
                format!("SharedKey {AZURITE_ACCOUNT}:{signature}"),
            ),
        ],
    )?;
    match status.as_str() {
        // Created, or there already.
        "201" | "409" => Ok(()),
        status => Err(std::io::Error::other(format!(
            "creating the container: {status}"
        ))),
    }
}

/// Azure on its emulator, under a prefix no other test uses; `None` (said loudly) when the
/// emulator is unreachable and services are not required.
fn azure() -> Option<(Arc<dyn Objects>, ())> {
    if let Err(err) = create_container() {
        assert!(
            !omniq_storage::conformance::services_required(),
            "the Azure emulator at {AZURITE_ADDRESS} is required: {err}"
        );
        eprintln!("SKIPPED: the Azure emulator at {AZURITE_ADDRESS} is unreachable ({err})");
        return None;
    }
    let store = object_store::azure::MicrosoftAzureBuilder::new()
        .with_account(AZURITE_ACCOUNT)
        .with_access_key(AZURITE_KEY)
        .with_endpoint(format!("http://{AZURITE_ADDRESS}/{AZURITE_ACCOUNT}"))
        .with_allow_http(true)
        .with_container_name(CONTAINER)
        .build()
        .expect("an Azure client");
    let prefix = format!("run-{}", uuid::Uuid::new_v4().simple());
    Some((
        Arc::new(ObjectStoreObjects::new(Arc::new(store), prefix)),
        (),
    ))
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
