//! LISTEN/NOTIFY wake-ups: an idle worker wakes when another process enqueues.

mod common;

use std::time::Duration;

use chrono::Utc;
use omniq_models::{TaskOptions, TaskSpec};
use omniq_storage::TaskQueue;
use tokio::time::Instant;

const SCHEMA: &str = "omniq_wakeup";
const LONG: Duration = Duration::from_secs(10);

fn spec(queue: &str) -> TaskSpec {
    TaskSpec::new(
        "wake.task",
        vec![],
        TaskOptions::default().queue(queue),
        Utc::now(),
    )
}

/// Waits on `queue` in a task of its own; returns when the wait ended.
fn waiter(
    queue: omniq_postgres::PgTaskQueue,
    name: &str,
    timeout: Duration,
) -> tokio::task::JoinHandle<Instant> {
    let queues = vec![name.to_owned()];
    tokio::spawn(async move {
        queue.wait_for_tasks(&queues, timeout).await;
        Instant::now()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_waiter_wakes_when_another_connection_enqueues() {
    let test = "an_idle_waiter_wakes_when_another_connection_enqueues";
    let (Some(worker), Some(producer)) = (
        common::backend(test, SCHEMA).await,
        common::backend(test, SCHEMA).await,
    ) else {
        return;
    };
    worker.listen().await.expect("listen");
    let name = common::unique_queue("wake");
    let started = Instant::now();
    let waiting = waiter(worker.task_queue(), &name, LONG);
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Another pool, as another process would: only the NOTIFY can reach the waiter.
    let enqueued_at = Instant::now();
    producer
        .task_queue()
        .enqueue(vec![spec(&name)])
        .await
        .expect("enqueue");
    let woke_at = waiting.await.expect("waiter");

    assert!(
        woke_at - started < LONG,
        "the waiter returned at its timeout, not on the NOTIFY"
    );
    assert!(woke_at >= enqueued_at, "the waiter woke before the enqueue");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_wakes_the_waiter_of_a_transactional_enqueue() {
    let test = "a_commit_wakes_the_waiter_of_a_transactional_enqueue";
    let (Some(worker), Some(producer)) = (
        common::backend(test, SCHEMA).await,
        common::backend(test, SCHEMA).await,
    ) else {
        return;
    };
    worker.listen().await.expect("listen");
    let name = common::unique_queue("wake-tx");
    let started = Instant::now();
    let waiting = waiter(worker.task_queue(), &name, LONG);

    let mut tx = producer.pool().begin().await.expect("begin");
    producer
        .task_queue()
        .enqueue_in(&mut tx, vec![spec(&name)])
        .await
        .expect("enqueue_in");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "nothing is delivered before the commit"
    );
    let committed_at = Instant::now();
    tx.commit().await.expect("commit");
    let woke_at = waiting.await.expect("waiter");

    assert!(woke_at - started < LONG, "the commit's NOTIFY woke nobody");
    assert!(woke_at >= committed_at, "the waiter woke before the commit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_sleeps_through_other_queues_enqueues() {
    let test = "a_waiter_sleeps_through_other_queues_enqueues";
    let (Some(worker), Some(producer)) = (
        common::backend(test, SCHEMA).await,
        common::backend(test, SCHEMA).await,
    ) else {
        return;
    };
    worker.listen().await.expect("listen");
    let mine = common::unique_queue("mine");
    let other = common::unique_queue("other");
    let timeout = Duration::from_millis(800);
    let started = Instant::now();
    let waiting = waiter(worker.task_queue(), &mine, timeout);
    tokio::time::sleep(Duration::from_millis(100)).await;
    producer
        .task_queue()
        .enqueue(vec![spec(&other)])
        .await
        .expect("enqueue");
    let woke_at = waiting.await.expect("waiter");
    assert!(
        woke_at - started >= timeout,
        "a wake-up for another queue ended the wait"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_reconnects_after_losing_its_connection() {
    let test = "the_listener_reconnects_after_losing_its_connection";
    let Some(producer) = common::backend(test, SCHEMA).await else {
        return;
    };
    // A name of its own, to find this listener's server process.
    let app = format!("omniq-wakeup-{}", uuid::Uuid::new_v4().simple());
    let url = common::url();
    let separator = if url.contains('?') { '&' } else { '?' };
    let options = omniq_postgres::PgOptions::default()
        .schema(SCHEMA)
        .pool(omniq_postgres::PoolSettings::default().max_connections(2));
    let worker = omniq_postgres::PgBackend::connect_with(
        &format!("{url}{separator}application_name={app}"),
        options,
    )
    .await
    .expect("connect");
    worker.listen().await.expect("listen");
    let listener_pid = || async {
        sqlx::query_scalar::<_, i32>(
            "SELECT pid FROM pg_stat_activity WHERE application_name = $1 \
             AND query LIKE 'LISTEN%'",
        )
        .bind(&app)
        .fetch_optional(producer.pool())
        .await
        .expect("pg_stat_activity")
    };
    let first = listener_pid().await.expect("the listener's connection");
    let terminated: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(first)
        .fetch_one(producer.pool())
        .await
        .expect("terminate");
    assert!(terminated);

    // The listener notices, reconnects and listens again.
    let deadline = Instant::now() + LONG;
    loop {
        if listener_pid().await.is_some_and(|pid| pid != first) {
            break;
        }
        assert!(Instant::now() < deadline, "the listener did not reconnect");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Let the reconnect's wake-everyone pass before the waiter starts.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let name = common::unique_queue("wake-again");
    let started = Instant::now();
    let waiting = waiter(worker.task_queue(), &name, LONG);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let enqueued_at = Instant::now();
    producer
        .task_queue()
        .enqueue(vec![spec(&name)])
        .await
        .expect("enqueue");
    let woke_at = waiting.await.expect("waiter");
    assert!(woke_at - started < LONG, "no wake-up after the reconnect");
    assert!(woke_at >= enqueued_at, "the waiter woke before the enqueue");
}
