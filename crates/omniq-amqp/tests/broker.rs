//! What only RabbitMQ shows: a connection lost while holding tasks, a message that is not a
//! task, dead letters counted in their queue. The rest of a task's paths are conformance
//! cases checked by claiming (`omniq_storage::conformance::claims`).

mod support;

use std::time::Duration;

use chrono::Utc;
use lapin::options::{BasicPublishOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use omniq_amqp::{AmqpBackend, AmqpOptions, AmqpTaskQueue};
use omniq_models::{TaskError, TaskOptions, TaskSpec, WorkerId};
use omniq_storage::{
    Completion, CompletionOutcome, CompletionStatus, DequeueRequest, Lease, LeaseStatus,
    RedriveTarget, StoreErrorKind, TaskQueue,
};
use support::{DeleteOnDrop, amqp_url, test_prefix};

/// A broker under `options`, and the cleanup of what it declares.
async fn broker_with(options: AmqpOptions) -> Option<(AmqpBackend, DeleteOnDrop)> {
    match AmqpBackend::connect_with(&amqp_url(), options).await {
        Ok(backend) => Some((backend.clone(), DeleteOnDrop(vec![backend]))),
        Err(err)
            if err.kind() == StoreErrorKind::Unavailable
                && std::env::var("OMNIQ_TEST_REQUIRE_SERVICES").as_deref() != Ok("1") =>
        {
            eprintln!("SKIPPED: RabbitMQ unavailable ({err}); set OMNIQ_TEST_REQUIRE_SERVICES=1");
            None
        }
        Err(err) => panic!("cannot connect to RabbitMQ: {err}"),
    }
}

/// Another handle on the same prefix, as another process would open.
async fn same_broker(
    backend: &AmqpBackend,
    cleanup: &mut DeleteOnDrop,
    prefix: &str,
) -> AmqpBackend {
    let other = AmqpBackend::connect_with(&amqp_url(), AmqpOptions::prefix(prefix))
        .await
        .expect("second connection");
    let _ = backend;
    cleanup.0.push(other.clone());
    other
}

fn task(queue: &str, options: TaskOptions) -> TaskSpec {
    TaskSpec::new("broker.task", vec![7; 16], options.queue(queue), Utc::now())
}

fn request(queue: &str, limit: usize) -> DequeueRequest {
    DequeueRequest::new([queue], limit)
        .lease(Duration::from_secs(30))
        .worker(WorkerId::new("broker-test"))
}

async fn claim(queue: &AmqpTaskQueue, name: &str, limit: usize) -> Vec<Lease> {
    queue.dequeue(request(name, limit)).await.expect("dequeue")
}

async fn complete(
    queue: &AmqpTaskQueue,
    lease: &Lease,
    outcome: CompletionOutcome,
) -> CompletionStatus {
    let completed = queue
        .complete(vec![Completion::new(lease.reference(), outcome)])
        .await
        .expect("complete");
    completed.statuses[0]
}

fn unique(label: &str) -> String {
    format!(
        "{label}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// How many messages wait in the broker queue `name`.
async fn waiting(name: &str) -> u32 {
    let connection = Connection::connect(&amqp_url(), ConnectionProperties::default())
        .await
        .expect("connect");
    let channel = connection.create_channel().await.expect("channel");
    let queue = channel
        .queue_declare(
            name.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("passive declare");
    let _ = connection.close(200, "done".into()).await;
    queue.message_count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_task_is_a_dead_letter_until_redriven() {
    let prefix = test_prefix();
    let Some((backend, _cleanup)) = broker_with(AmqpOptions::prefix(&prefix)).await else {
        return;
    };
    let queue = backend.task_queue();
    let name = unique("dead");
    let other = unique("other");
    let specs = vec![
        task(&name, TaskOptions::default()),
        task(&other, TaskOptions::default()),
    ];
    let ids: Vec<_> = specs.iter().map(|s| s.id).collect();
    queue.enqueue(specs).await.expect("enqueue");
    for queue_name in [&name, &other] {
        let lease = claim(&queue, queue_name, 1).await;
        let outcome = CompletionOutcome::Failed {
            error: TaskError::new("broken"),
        };
        assert_eq!(
            complete(&queue, &lease[0], outcome).await,
            CompletionStatus::Applied
        );
    }
    assert!(claim(&queue, &name, 1).await.is_empty());
    assert_eq!(waiting(&format!("{prefix}.dead")).await, 2);
    // Only what the target names goes back; the rest stays a dead letter.
    let redriven = queue
        .redrive(RedriveTarget::Queue(name.clone()))
        .await
        .expect("redrive");
    assert_eq!(redriven, vec![ids[0]]);
    assert_eq!(waiting(&format!("{prefix}.dead")).await, 1);
    let again = claim(&queue, &name, 1).await;
    assert_eq!(again[0].spec.id, ids[0]);
    assert_eq!(again[0].attempt, 1, "attempts reset");
    let redriven = queue
        .redrive(RedriveTarget::Tasks(vec![ids[1]]))
        .await
        .expect("redrive");
    assert_eq!(redriven, vec![ids[1]]);
    assert_eq!(waiting(&format!("{prefix}.dead")).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_held_by_a_lost_connection_comes_back_with_that_attempt_counted() {
    let prefix = test_prefix();
    let Some((backend, mut cleanup)) = broker_with(AmqpOptions::prefix(&prefix)).await else {
        return;
    };
    let lost = backend.task_queue();
    let name = unique("lost");
    let specs = vec![
        task(&name, TaskOptions::default().max_attempts(3)),
        task(&name, TaskOptions::default().max_attempts(1)),
    ];
    lost.enqueue(specs.clone()).await.expect("enqueue");
    let held = claim(&lost, &name, 2).await;
    assert_eq!(held.len(), 2);
    // The worker's connection goes (a crash, a network cut): the broker requeues.
    backend.close().await;
    let survivor = same_broker(&backend, &mut cleanup, &prefix)
        .await
        .task_queue();
    let leases = claim(&survivor, &name, 2).await;
    assert_eq!(
        leases.len(),
        1,
        "the task with no attempt left is a dead letter"
    );
    assert_eq!(leases[0].spec.id, specs[0].id);
    assert_eq!(leases[0].attempt, 2, "the lost attempt is counted");
    assert_eq!(waiting(&format!("{prefix}.dead")).await, 1);
    // The lost worker's completion and heartbeat are refused.
    let beat = lost
        .heartbeat(vec![held[0].reference()], Duration::from_secs(30))
        .await
        .expect("heartbeat");
    assert_eq!(beat, vec![LeaseStatus::Lost]);
    assert_eq!(
        complete(&lost, &held[0], CompletionOutcome::Succeeded).await,
        CompletionStatus::LeaseLost
    );
    // The handle reconnects for new work.
    lost.enqueue(vec![task(&name, TaskOptions::default())])
        .await
        .expect("enqueue after reconnecting");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_message_is_kept_as_a_dead_letter_and_the_rest_is_claimed() {
    let prefix = test_prefix();
    let Some((backend, _cleanup)) = broker_with(AmqpOptions::prefix(&prefix)).await else {
        return;
    };
    let queue = backend.task_queue();
    let name = unique("garbage");
    let good = task(&name, TaskOptions::default());
    queue.enqueue(vec![good.clone()]).await.expect("enqueue");
    // Another producer writes garbage into the queue.
    let connection = Connection::connect(&amqp_url(), ConnectionProperties::default())
        .await
        .expect("connect");
    let channel = connection.create_channel().await.expect("channel");
    channel
        .basic_publish(
            "".into(),
            format!("{prefix}.q.{name}").into(),
            BasicPublishOptions::default(),
            b"not a task",
            BasicProperties::default(),
        )
        .await
        .expect("publish")
        .await
        .expect("publish");
    let _ = connection.close(200, "done".into()).await;
    let leases = claim(&queue, &name, 10).await;
    assert_eq!(leases.len(), 1);
    assert_eq!(leases[0].spec.id, good.id);
    assert_eq!(waiting(&format!("{prefix}.dead")).await, 1);
    let redriven = queue.redrive(RedriveTarget::All).await.expect("redrive");
    assert!(
        redriven.is_empty(),
        "an unreadable message cannot be re-driven"
    );
    assert_eq!(waiting(&format!("{prefix}.dead")).await, 1, "and stays");
}
