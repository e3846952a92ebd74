//! Batches larger than the server's `max_allowed_packet` are split into statements that fit;
//! a single row that can never fit is refused with a clear error, not a dropped connection.

mod common;

use chrono::Utc;
use omniq_models::{TaskOptions, TaskResult, TaskSpec};
use omniq_storage::{DequeueRequest, ResultStore, StoreError, TaskQueue};

async fn max_allowed_packet(backend: &omniq_mysql::MySqlBackend) -> usize {
    let bytes: u64 = sqlx::query_scalar("SELECT @@max_allowed_packet")
        .fetch_one(backend.pool())
        .await
        .expect("max_allowed_packet");
    usize::try_from(bytes).expect("fits")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_over_max_allowed_packet_is_split_into_statements_that_fit() {
    let Some(backend) = common::backend("a_batch_over_max_allowed_packet_is_split").await else {
        return;
    };
    let queue = backend.task_queue();
    let name = common::unique_queue("packet-split");
    let packet = max_allowed_packet(&backend).await;
    // Twice the packet size in all, each task a tenth of it.
    let payload = vec![7u8; packet / 10];
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            TaskSpec::new(
                "big.task",
                payload.clone(),
                TaskOptions::default().queue(&name),
                Utc::now(),
            )
        })
        .collect();
    let outcomes = queue.enqueue(tasks).await.expect("enqueue");
    assert_eq!(outcomes.len(), 20);
    let leases = queue
        .dequeue(DequeueRequest::new([name.as_str()], 20))
        .await
        .expect("dequeue");
    assert_eq!(leases.len(), 20);
    assert!(leases.iter().all(|l| l.spec.payload == payload));

    // Results of the same size go in too.
    let results: Vec<_> = leases
        .iter()
        .map(|l| TaskResult::success(l.spec.id, "big.task", payload.clone(), 1, None))
        .collect();
    backend
        .result_store()
        .put(results)
        .await
        .expect("put results");
    let stored = backend
        .result_store()
        .get(leases[19].spec.id)
        .await
        .expect("get")
        .expect("stored");
    assert_eq!(stored.outcome.expect("success"), payload);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_over_max_allowed_packet_is_refused_as_invalid() {
    let Some(backend) = common::backend("a_row_over_max_allowed_packet_is_refused").await else {
        return;
    };
    let queue = backend.task_queue();
    let name = common::unique_queue("packet-refused");
    let packet = max_allowed_packet(&backend).await;
    let task = TaskSpec::new(
        "huge.task",
        vec![0u8; packet],
        TaskOptions::default().queue(&name),
        Utc::now(),
    );
    let err = queue.enqueue(vec![task]).await.expect_err("too big");
    assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
    // Nothing was stored, and the backend still works.
    let small = TaskSpec::new(
        "small.task",
        vec![1],
        TaskOptions::default().queue(&name),
        Utc::now(),
    );
    queue.enqueue(vec![small]).await.expect("enqueue after");
    let leases = queue
        .dequeue(DequeueRequest::new([name.as_str()], 10))
        .await
        .expect("dequeue");
    assert_eq!(leases.len(), 1);
}
