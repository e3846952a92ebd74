//! Progress: stored on the running task under its lease's fence, and renewing the lease.

use std::time::Duration;

use chrono::Utc;
use omniq_models::{LeaseToken, TaskOptions};
use serde_json::json;

use super::Fixture;
use super::support::{enqueue_one, request, spec, unique_queue};
use crate::{Completion, CompletionOutcome, LeaseRef, LeaseStatus, MAX_PROGRESS_BYTES};
use crate::{StoreErrorKind, TaskQueue};

async fn progress_of(queue: &dyn TaskQueue, id: omniq_models::TaskId) -> Option<serde_json::Value> {
    queue.get(id).await.expect("get").expect("stored").progress
}

/// A reported value is stored on the task and extends its lease like a heartbeat; a
/// stale or forged lease stores nothing; a value too large is refused; the value outlives
/// the attempt.
pub async fn progress_is_stored_under_the_lease_and_renews_it(stores: Fixture) {
    let queue = &*stores.queue;
    let name = unique_queue("progress");
    let task = spec(&name, TaskOptions::default());
    enqueue_one(queue, task.clone()).await;
    let lease = queue
        .dequeue(request(&[&name], 1).lease(Duration::from_secs(2)))
        .await
        .expect("dequeue")
        .remove(0);
    assert_eq!(progress_of(queue, task.id).await, None);

    let value = json!({ "done": 40, "of": 100, "note": "ünïcode \u{0} and \"quotes\"" });
    let status = queue
        .report_progress(lease.reference(), value.clone(), Duration::from_secs(60))
        .await
        .expect("report");
    assert_eq!(status, LeaseStatus::Held);
    let record = queue.get(task.id).await.expect("get").expect("stored");
    let stored = record.progress.expect("progress stored");
    // PostgreSQL cannot hold a NUL: it may come back as U+FFFD, the rest exactly.
    assert_eq!(stored["done"], 40);
    assert_eq!(stored["of"], 100);
    assert!(
        stored["note"]
            .as_str()
            .is_some_and(|n| n.starts_with("ünïcode ") && n.ends_with(" and \"quotes\"")),
        "{stored}"
    );
    let expires = record.lease_expires_at.expect("running task has a lease");
    assert!(
        expires > Utc::now() + chrono::Duration::seconds(30),
        "progress renews the lease: {expires}"
    );

    let forged = LeaseRef::new(task.id, LeaseToken::new());
    let refused = queue
        .report_progress(forged, json!("forged"), Duration::from_secs(60))
        .await
        .expect("report");
    assert_eq!(refused, LeaseStatus::Lost);
    assert_eq!(progress_of(queue, task.id).await.expect("kept")["done"], 40);

    let too_large = json!("x".repeat(MAX_PROGRESS_BYTES));
    let err = queue
        .report_progress(lease.reference(), too_large, Duration::from_secs(60))
        .await
        .expect_err("too large");
    assert_eq!(err.kind(), StoreErrorKind::Invalid);

    queue
        .report_progress(lease.reference(), json!(100), Duration::from_secs(60))
        .await
        .expect("report");
    queue
        .complete(vec![Completion::new(
            lease.reference(),
            CompletionOutcome::Succeeded,
        )])
        .await
        .expect("complete");
    let after = queue
        .report_progress(lease.reference(), json!("late"), Duration::from_secs(60))
        .await
        .expect("report");
    assert_eq!(after, LeaseStatus::Lost, "a finished task's lease is gone");
    assert_eq!(
        progress_of(queue, task.id).await,
        Some(json!(100)),
        "the last value reported stays on the finished task"
    );
}
