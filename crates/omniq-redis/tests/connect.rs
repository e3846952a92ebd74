//! Connecting: errors are typed and never show the URL's password; `rediss://` runs on
//! rustls with aws-lc-rs. None of these needs a Redis server.

use std::time::Duration;

use omniq_redis::{RedisBackend, RedisOptions};
use omniq_storage::StoreErrorKind;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

const PASSWORD: &str = "hunter2-secret";

#[tokio::test]
async fn a_malformed_url_is_invalid_and_hides_the_password() {
    let err = RedisBackend::connect_with(
        &format!("redis://:{PASSWORD}@127.0.0.1:notaport/0"),
        RedisOptions::default(),
    )
    .await
    .expect_err("bad URL");
    assert_eq!(err.kind(), StoreErrorKind::Invalid);
    assert!(!err.to_string().contains(PASSWORD), "{err}");
}

#[tokio::test]
async fn an_unreachable_server_is_unavailable_and_hides_the_password() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener); // nothing listens there now
    let err = RedisBackend::connect_with(
        &format!("redis://:{PASSWORD}@127.0.0.1:{port}/0"),
        RedisOptions::default(),
    )
    .await
    .expect_err("nothing listens");
    assert_eq!(err.kind(), StoreErrorKind::Unavailable, "{err}");
    assert!(!err.to_string().contains(PASSWORD), "{err}");
}

#[tokio::test]
async fn an_empty_prefix_is_refused() {
    let err = RedisBackend::connect_with("redis://127.0.0.1:1/0", RedisOptions::prefix(""))
        .await
        .expect_err("empty prefix");
    assert_eq!(err.kind(), StoreErrorKind::Invalid);
}

#[tokio::test]
async fn tls_urls_install_aws_lc_rs_and_fail_cleanly_against_a_plain_server() {
    // A server that answers the TLS hello with plain text, as a non-TLS Redis would.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let _ = socket.write_all(b"-ERR not TLS\r\n").await;
        }
    });
    let url = format!("rediss://:{PASSWORD}@127.0.0.1:{port}/0");
    let connecting = RedisBackend::connect_with(&url, RedisOptions::default());
    let err = tokio::time::timeout(Duration::from_secs(20), connecting)
        .await
        .expect("fails in time")
        .expect_err("not a TLS server");
    assert!(!err.to_string().contains(PASSWORD), "{err}");
    assert!(
        rustls::crypto::CryptoProvider::get_default().is_some(),
        "a process-wide crypto provider is installed"
    );
    server.abort();
}

#[tokio::test]
async fn a_cluster_needs_a_node_and_a_prefix_without_braces() {
    let err = RedisBackend::connect_cluster(&[], RedisOptions::default())
        .await
        .expect_err("no node");
    assert_eq!(err.kind(), StoreErrorKind::Invalid, "{err}");
    let err = RedisBackend::connect_cluster(&["redis://127.0.0.1:1"], RedisOptions::prefix("a}b"))
        .await
        .expect_err("braces");
    assert_eq!(err.kind(), StoreErrorKind::Invalid, "{err}");
}

#[tokio::test]
async fn an_unreachable_cluster_is_unavailable_and_hides_the_password() {
    let mut ports = Vec::new();
    for _ in 0..2 {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        ports.push(listener.local_addr().expect("addr").port());
    }
    // Nothing listens on either port now.
    let url = format!(
        "redis://:{PASSWORD}@127.0.0.1:{},127.0.0.1:{}",
        ports[0], ports[1]
    );
    let nodes = [url.as_str()];
    let connecting = RedisBackend::connect_cluster(&nodes, RedisOptions::default());
    let err = tokio::time::timeout(Duration::from_secs(60), connecting)
        .await
        .expect("fails in time")
        .expect_err("nothing listens");
    assert_eq!(err.kind(), StoreErrorKind::Unavailable, "{err}");
    assert!(!err.to_string().contains(PASSWORD), "{err}");
}

#[tokio::test]
async fn passwords_with_url_delimiters_stay_hidden() {
    for password in ["Zq/9kXw7", "Zq?9kXw7", "Zq#9kXw7", "Zq/9k?X#w7"] {
        let url = format!("redis://:{password}@127.0.0.1:1/0");
        let err = RedisBackend::connect_with(&url, RedisOptions::default())
            .await
            .expect_err("no server");
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains("9k"), "{url}: {shown}");
    }
}
