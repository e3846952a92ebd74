//! Shared by the Redis test files: the server URL, a key prefix per test, and cleanup.

/// The test server: `OMNIQ_TEST_REDIS_URL`, or the local default.
pub(crate) fn redis_url() -> String {
    std::env::var("OMNIQ_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".to_owned())
}

/// A key prefix no other test uses, so tests never see each other's keys.
pub(crate) fn test_prefix() -> String {
    format!("omniq-test-{}", uuid::Uuid::new_v4().simple())
}

/// Deletes every key a test created under `prefix` (synchronously: it runs from `Drop`).
pub(crate) fn delete_prefix(url: &str, prefix: &str) {
    let Ok(client) = redis::Client::open(url) else {
        return;
    };
    let Ok(mut conn) = client.get_connection() else {
        return;
    };
    let pattern = format!("*{prefix}*");
    let mut cursor = "0".to_owned();
    loop {
        let Ok((next, keys)) = redis::cmd("SCAN")
            .arg(&cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query::<(String, Vec<String>)>(&mut conn)
        else {
            return;
        };
        if !keys.is_empty() {
            let _ = redis::cmd("UNLINK").arg(&keys).query::<i64>(&mut conn);
        }
        if next == "0" {
            return;
        }
        cursor = next;
    }
}
