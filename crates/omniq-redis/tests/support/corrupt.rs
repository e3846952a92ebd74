//! The conformance suite's corrupter for Redis: makes a task's options garbage, as a buggy
//! release or a hand edit would leave them.

use omniq_redis::RedisBackend;
use omniq_storage::conformance::Corrupt;

/// Damages tasks of the backend whose key prefix is `prefix`: a task's hash is
/// `{prefix}:task:<id>` (see the crate docs' key map).
pub(crate) fn corrupt(backend: RedisBackend, prefix: String) -> Corrupt {
    Corrupt::new(move |id| {
        let mut conn = backend.connection();
        let key = format!("{{{prefix}}}:task:{id}");
        async move {
            let () = redis::cmd("HSET")
                .arg(key)
                .arg("opts")
                .arg("[1, 2]")
                .query_async(&mut conn)
                .await
                .expect("corrupt");
        }
    })
}
