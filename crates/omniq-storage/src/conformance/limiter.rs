//! Limiter state: replaced only from the version read, whoever writes.

use std::sync::Arc;

use super::Fixture;
use super::support::unique_queue;
use crate::{
    Clock, LimiterVersion, MAX_LIMITER_KEY_BYTES, MAX_LIMITER_STATE_BYTES, StoreErrorKind,
    TaskQueue,
};

/// Adds one to the counter stored under `key`, by compare-and-set until it wins.
async fn increment(queue: &Arc<dyn TaskQueue>, key: &str) {
    for _ in 0..1_000 {
        let read = queue.read_limiter(key.to_owned()).await.expect("read");
        let (count, version) = match read {
            Some(state) => {
                let text = String::from_utf8(state.bytes).expect("a counter");
                (text.parse::<u64>().expect("a counter"), Some(state.version))
            }
            None => (0, None),
        };
        let next = (count + 1).to_string().into_bytes();
        if queue
            .write_limiter(key.to_owned(), version, next)
            .await
            .expect("write")
        {
            return;
        }
    }
    panic!("an increment lost 1,000 races in a row");
}

/// A limiter state is created once, replaced only from the version read (a stale or a
/// forged version changes nothing), seen by another handle, and racing writers through
/// two handles never lose an update; keys and states out of bounds are refused.
pub async fn limiter_state_is_replaced_only_from_the_version_read(stores: Fixture) {
    let queue = &stores.queue;
    let another = stores
        .reopen
        .queue(Clock::system())
        .await
        .expect("open another handle on the store");
    // Spaces, a slash, dots, NATS wildcards, braces (a Redis hash tag) and a non-ASCII letter.
    let key = format!("{} ä/b.*.>{{tag}}", unique_queue("limiter"));

    assert_eq!(queue.read_limiter(key.clone()).await.expect("read"), None);
    assert!(
        queue
            .write_limiter(key.clone(), None, b"one".to_vec())
            .await
            .expect("create")
    );
    assert!(
        !another
            .write_limiter(key.clone(), None, b"again".to_vec())
            .await
            .expect("create again"),
        "a second create loses"
    );
    let first = another
        .read_limiter(key.clone())
        .await
        .expect("read")
        .expect("stored");
    assert_eq!(first.bytes, b"one");

    assert!(
        queue
            .write_limiter(key.clone(), Some(first.version.clone()), b"two".to_vec())
            .await
            .expect("replace")
    );
    assert!(
        !another
            .write_limiter(key.clone(), Some(first.version.clone()), b"stale".to_vec())
            .await
            .expect("replace from a stale version"),
        "a write from a stale version loses"
    );
    assert!(
        !queue
            .write_limiter(
                key.clone(),
                Some(LimiterVersion::new("not a version")),
                b"forged".to_vec()
            )
            .await
            .expect("replace from a forged version"),
        "a write from a version the store never gave loses"
    );
    let second = queue
        .read_limiter(key.clone())
        .await
        .expect("read")
        .expect("stored");
    assert_eq!(second.bytes, b"two");
    assert_ne!(second.version, first.version);

    // Racing writers, half through each handle: every increment counts once.
    let counter = format!("{}:counter", unique_queue("limiter"));
    let handles: Vec<Arc<dyn TaskQueue>> = vec![Arc::clone(queue), another];
    let racers: Vec<_> = (0..12)
        .map(|i| {
            let handle = Arc::clone(&handles[i % 2]);
            let counter = counter.clone();
            tokio::spawn(async move { increment(&handle, &counter).await })
        })
        .collect();
    for racer in racers {
        racer.await.expect("racer");
    }
    let count = queue
        .read_limiter(counter)
        .await
        .expect("read")
        .expect("stored");
    assert_eq!(count.bytes, b"12", "no increment lost or doubled");

    // The longest key and the largest state are kept exactly.
    let mut longest = unique_queue("l");
    while longest.len() + 'é'.len_utf8() <= MAX_LIMITER_KEY_BYTES {
        longest.push('é');
    }
    let largest = vec![0xA5; MAX_LIMITER_STATE_BYTES];
    assert!(
        queue
            .write_limiter(longest.clone(), None, largest.clone())
            .await
            .expect("the longest key and the largest state")
    );
    let read = queue
        .read_limiter(longest)
        .await
        .expect("read")
        .expect("stored");
    assert_eq!(read.bytes, largest);

    for refused in [
        queue
            .write_limiter(String::new(), None, b"x".to_vec())
            .await,
        queue
            .write_limiter("a\0b".into(), None, b"x".to_vec())
            .await,
        queue
            .write_limiter("k".repeat(MAX_LIMITER_KEY_BYTES + 1), None, b"x".to_vec())
            .await,
        queue
            .write_limiter(key.clone(), None, vec![0; MAX_LIMITER_STATE_BYTES + 1])
            .await,
    ] {
        assert_eq!(
            refused.map_err(|err| err.kind()),
            Err(StoreErrorKind::Invalid)
        );
    }
}
