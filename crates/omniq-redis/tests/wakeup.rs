//! Idle workers wake on an enqueue from another connection, not on a timer.

mod support;

use std::time::Duration;

use omniq_models::{TaskOptions, TaskSpec};
use omniq_redis::{RedisBackend, RedisOptions};
use omniq_storage::conformance::services_required;
use omniq_storage::{DequeueRequest, StoreErrorKind, TaskQueue};
use support::{delete_prefix, redis_url, test_prefix};
use tokio::time::Instant;

/// Deletes the test's keys when dropped, pass or fail.
struct Cleanup {
    url: String,
    prefix: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        delete_prefix(&self.url, &self.prefix);
    }
}

/// Two backends (two connections) on one fresh prefix, or `None` to skip when the server is
/// down and services are not required.
async fn two_backends() -> Option<(RedisBackend, RedisBackend, Cleanup)> {
    let url = redis_url();
    let prefix = test_prefix();
    let first = match RedisBackend::connect_with(&url, RedisOptions::prefix(&prefix)).await {
        Ok(backend) => backend,
        Err(err) if err.kind() == StoreErrorKind::Unavailable && !services_required() => {
            eprintln!(
                "SKIPPED: Redis unavailable ({err}); set OMNIQ_TEST_REQUIRE_SERVICES=1 to make \
                 this an error"
            );
            return None;
        }
        Err(err) => panic!("cannot connect to Redis: {err}"),
    };
    let second = RedisBackend::connect_with(&url, RedisOptions::prefix(&prefix))
        .await
        .expect("second connection");
    Some((first, second, Cleanup { url, prefix }))
}

fn task(queue: &str, options: TaskOptions) -> TaskSpec {
    TaskSpec::new(
        "wake.test",
        vec![1],
        options.queue(queue),
        chrono::Utc::now(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_waiter_wakes_when_another_connection_enqueues() {
    let Some((waiting, enqueuing, _cleanup)) = two_backends().await else {
        return;
    };
    let waiter = waiting.task_queue();
    let started = Instant::now();
    let waited = tokio::spawn(async move {
        waiter
            .wait_for_tasks(&["wake".to_owned()], Duration::from_secs(10))
            .await;
        started.elapsed()
    });
    // Let the waiter block first.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let enqueued_at = started.elapsed();
    enqueuing
        .task_queue()
        .enqueue(vec![task("wake", TaskOptions::default())])
        .await
        .expect("enqueue");
    let elapsed = waited.await.expect("waiter");
    assert!(
        elapsed >= enqueued_at,
        "the waiter blocked until the enqueue ({elapsed:?})"
    );
    assert!(
        elapsed < Duration::from_secs(2),
        "woken by the enqueue, well before the 10 s timeout ({elapsed:?})"
    );
    let leases = waiting
        .task_queue()
        .dequeue(DequeueRequest::new(["wake"], 10))
        .await
        .expect("dequeue");
    assert_eq!(leases.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_wakes_when_a_delayed_task_comes_due() {
    let Some((waiting, enqueuing, _cleanup)) = two_backends().await else {
        return;
    };
    enqueuing
        .task_queue()
        .enqueue(vec![task(
            "later",
            TaskOptions::default().delay(Duration::from_millis(500)),
        )])
        .await
        .expect("enqueue");
    let started = Instant::now();
    waiting
        .task_queue()
        .wait_for_tasks(&["later".to_owned()], Duration::from_secs(10))
        .await;
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(2),
        "woken at run_at ({elapsed:?})"
    );
    let leases = waiting
        .task_queue()
        .dequeue(DequeueRequest::new(["later"], 10))
        .await
        .expect("dequeue");
    assert_eq!(
        leases.len(),
        1,
        "the delayed task is ready when the wait ends"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_with_nothing_to_do_waits_out_its_timeout() {
    let Some((waiting, _, _cleanup)) = two_backends().await else {
        return;
    };
    let started = Instant::now();
    waiting
        .task_queue()
        .wait_for_tasks(&["idle".to_owned()], Duration::from_millis(400))
        .await;
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(350) && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );
}
