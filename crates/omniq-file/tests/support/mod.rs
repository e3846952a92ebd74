//! Shared by the test files: each store the tests run on, fresh per test, or `None` (said
//! loudly) when its server is unreachable and services are not required.

use std::sync::Arc;

use omniq_file::{DirectoryObjects, ObjectStoreObjects, Objects};

/// Deletes a test's objects on a shared test server when dropped, pass or fail (from
/// `Drop`, so on a thread of its own with a runtime of its own): a server that keeps every
/// run's objects lists more slowly run after run.
pub(crate) struct Cleanup(Arc<dyn Objects>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let objects = Arc::clone(&self.0);
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                if let Ok(keys) = objects.list("").await {
                    for key in keys {
                        let _ = objects.delete(&key).await;
                    }
                }
            });
        })
        .join();
    }
}

pub(crate) fn directory() -> Option<(Arc<dyn Objects>, tempfile::TempDir)> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let objects = DirectoryObjects::open(dir.path().join("store")).expect("open");
    Some((Arc::new(objects), dir))
}

pub(crate) fn memory() -> Option<(Arc<dyn Objects>, ())> {
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
    // A busy emulator (every test of a binary asks at once) may answer slowly or drop
    // the connection: asked again, for up to three minutes; a refused connection is a
    // server that is not there. Azurite has been seen answering nothing for over a
    // minute right after a suite deleted its many blobs.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
    loop {
        match put_empty_once(address, path, headers) {
            Err(err)
                if matches!(
                    err.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::ConnectionAborted
                        | std::io::ErrorKind::UnexpectedEof
                        | std::io::ErrorKind::Interrupted
                ) && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            Ok(status) if status.is_empty() && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            other => return other,
        }
    }
}

fn put_empty_once(
    address: &str,
    path: &str,
    headers: &[(&str, String)],
) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address)?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(20)))?;
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
pub(crate) fn s3() -> Option<(Arc<dyn Objects>, Cleanup)> {
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
    let objects: Arc<dyn Objects> =
        Arc::new(ObjectStoreObjects::new(Arc::new(store), prefix).expect("a valid prefix"));
    Some((Arc::clone(&objects), Cleanup(objects)))
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
pub(crate) fn azure() -> Option<(Arc<dyn Objects>, Cleanup)> {
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
    let objects: Arc<dyn Objects> =
        Arc::new(ObjectStoreObjects::new(Arc::new(store), prefix).expect("a valid prefix"));
    Some((Arc::clone(&objects), Cleanup(objects)))
}
