//! Connecting to a Redis that may evict keys warns: under memory pressure it would delete
//! tasks. The test changes the server's policy for a moment, so it runs alone in its binary.

use std::io::Write;
use std::sync::{Arc, Mutex};

use omniq_redis::{RedisBackend, RedisOptions};

/// Collects what the subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn policy(conn: &mut redis::Connection, set: Option<&str>) -> String {
    if let Some(value) = set {
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("maxmemory-policy")
            .arg(value)
            .query(conn)
            .expect("config set");
    }
    let pair: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory-policy")
        .query(conn)
        .expect("config get");
    pair.get(1).cloned().unwrap_or_default()
}

#[tokio::test(flavor = "current_thread")]
async fn connecting_to_a_redis_that_may_evict_warns() {
    let url = std::env::var("OMNIQ_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379/0".to_owned());
    let mut admin = match redis::Client::open(url.as_str()).and_then(|c| c.get_connection()) {
        Ok(conn) => conn,
        Err(err) if !omniq_storage::conformance::services_required() => {
            eprintln!("SKIPPED: Redis unavailable ({err})");
            return;
        }
        Err(err) => panic!("cannot reach Redis: {err}"),
    };
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let before = policy(&mut admin, None);
    policy(&mut admin, Some("allkeys-lru"));
    let connected = RedisBackend::connect_with(&url, RedisOptions::default()).await;
    policy(&mut admin, Some(&before));
    connected.expect("connect");
    let evicting =
        String::from_utf8_lossy(&captured.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned();
    assert!(
        evicting.contains("maxmemory-policy") && evicting.contains("allkeys-lru"),
        "no warning: {evicting}"
    );

    captured.0.lock().unwrap_or_else(|e| e.into_inner()).clear();
    RedisBackend::connect_with(&url, RedisOptions::default())
        .await
        .expect("connect");
    let safe =
        String::from_utf8_lossy(&captured.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned();
    assert!(
        !safe.contains("maxmemory-policy"),
        "a warning with noeviction: {safe}"
    );
}
