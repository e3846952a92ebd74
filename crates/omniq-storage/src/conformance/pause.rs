//! Paused queues: stored, seen by every handle on the store, until resumed.

use super::Fixture;
use super::support::unique_queue;
use crate::{Clock, StoreErrorKind};

/// Pausing stores the queue's state: a second pause and a second resume change nothing
/// and say so, another handle on the store (another process) sees it, and names that are
/// awkward for keys and subjects are kept exactly.
pub async fn a_paused_queue_is_stored_until_resumed(stores: Fixture) {
    let plain = unique_queue("paused");
    // Spaces, a slash, dots and NATS wildcards, and a non-ASCII letter.
    let awkward = format!("{} ä/b.*.>", unique_queue("odd"));
    let other = unique_queue("running");
    let queue = &stores.queue;
    let another = stores
        .reopen
        .queue(Clock::system())
        .await
        .expect("open another handle on the store");

    for name in [&plain, &awkward] {
        assert!(
            queue
                .set_queue_paused(name.clone(), true)
                .await
                .expect("pause"),
            "pausing a running queue changes it"
        );
        assert!(
            !queue
                .set_queue_paused(name.clone(), true)
                .await
                .expect("pause again"),
            "pausing a paused queue changes nothing"
        );
    }
    for handle in [queue, &another] {
        let paused = handle.paused_queues().await.expect("paused queues");
        assert!(
            paused.contains(&plain) && paused.contains(&awkward),
            "{paused:?}"
        );
        assert!(!paused.contains(&other), "{paused:?}");
        assert!(paused.is_sorted(), "paused queues are sorted: {paused:?}");
    }

    assert!(
        another
            .set_queue_paused(plain.clone(), false)
            .await
            .expect("resume"),
        "resuming a paused queue changes it"
    );
    assert!(
        !queue
            .set_queue_paused(plain.clone(), false)
            .await
            .expect("resume again"),
        "resuming a running queue changes nothing"
    );
    assert!(
        !queue
            .set_queue_paused(other.clone(), false)
            .await
            .expect("resume unknown"),
        "a queue never paused is running"
    );
    for handle in [queue, &another] {
        let paused = handle.paused_queues().await.expect("paused queues");
        assert!(!paused.contains(&plain), "{paused:?}");
        assert!(paused.contains(&awkward), "{paused:?}");
    }
    queue
        .set_queue_paused(awkward.clone(), false)
        .await
        .expect("resume");
    let paused = queue.paused_queues().await.expect("paused queues");
    assert!(!paused.contains(&awkward), "{paused:?}");

    for bad in ["", "a\0b"] {
        let refused = queue.set_queue_paused(bad.to_owned(), true).await;
        assert_eq!(
            refused.err().map(|e| e.kind()),
            Some(StoreErrorKind::Invalid),
            "the queue name {bad:?} is refused"
        );
    }
}
