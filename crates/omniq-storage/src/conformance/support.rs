use std::time::Duration;

use chrono::Utc;
use omniq_models::{TaskOptions, TaskSpec, WorkerId};

use crate::{DequeueRequest, EnqueueOutcome, Lease, TaskQueue};

/// A queue name no other case uses.
pub fn unique_queue(label: &str) -> String {
    format!(
        "{label}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

/// A task spec with a small payload.
pub fn spec(queue: &str, options: TaskOptions) -> TaskSpec {
    TaskSpec::new(
        "conformance.task",
        vec![1, 2, 3],
        options.queue(queue),
        Utc::now(),
    )
}

/// Enqueues `spec` and returns its outcome.
///
/// # Panics
/// When the enqueue fails.
pub async fn enqueue_one(queue: &dyn TaskQueue, spec: TaskSpec) -> EnqueueOutcome {
    let mut outcomes = queue.enqueue(vec![spec]).await.expect("enqueue");
    assert_eq!(outcomes.len(), 1, "one outcome per task");
    outcomes.remove(0)
}

pub(crate) fn request(queues: &[&str], limit: usize) -> DequeueRequest {
    DequeueRequest::new(queues.iter().copied(), limit)
        .lease(Duration::from_secs(30))
        .worker(WorkerId::new("conformance"))
}

pub(crate) async fn claim(queue: &dyn TaskQueue, queues: &[&str], limit: usize) -> Vec<Lease> {
    queue
        .dequeue(request(queues, limit))
        .await
        .expect("dequeue")
}

/// Waits (polling, bounded) until `check` passes; for waits on the passage of time, such as
/// a lease running out, where there is no signal to await.
pub(crate) async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Like [`eventually`], for checks that produce a value once they pass.
pub(crate) async fn eventually_some<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
