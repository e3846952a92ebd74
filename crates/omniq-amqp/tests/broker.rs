//! What the conformance suite cannot see on a broker (it reads tasks back by id, which a
//! broker cannot): each path of a task through RabbitMQ, checked by claiming it.

mod support;

use std::time::Duration;

use chrono::Utc;
use lapin::options::{BasicPublishOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use omniq_amqp::{AmqpBackend, AmqpOptions, AmqpTaskQueue};
use omniq_models::{LeaseToken, TaskError, TaskOptions, TaskSpec, WorkerId};
use omniq_storage::{
    Completion, CompletionOutcome, CompletionStatus, DequeueRequest, Lease, LeaseRef, LeaseStatus,
    RedriveTarget, StoreErrorKind, TaskQueue,
};
use support::{DeleteOnDrop, amqp_url, test_prefix};

/// A broker under a fresh prefix, and the cleanup of what it declares.
async fn broker() -> Option<(AmqpBackend, DeleteOnDrop)> {
    broker_with(AmqpOptions::prefix(test_prefix())).await
}

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

/// Claims until `limit` leases are in, polling for at most ten seconds: for tasks due
/// later, whose return has no signal to wait on.
async fn claim_eventually(queue: &AmqpTaskQueue, name: &str, limit: usize) -> Vec<Lease> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut leases = Vec::new();
    while leases.len() < limit {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {limit} tasks came back",
            leases.len()
        );
        leases.extend(claim(queue, name, limit - leases.len()).await);
        if leases.len() < limit {
            queue
                .wait_for_tasks(&[name.to_owned()], Duration::from_millis(50))
                .await;
        }
    }
    leases
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
async fn a_task_runs_once_and_a_resent_completion_is_applied_once() {
    let Some((backend, _cleanup)) = broker().await else {
        return;
    };
    let queue = backend.task_queue();
    let name = unique("once");
    let spec = task(&name, TaskOptions::default());
    queue.enqueue(vec![spec.clone()]).await.expect("enqueue");
    let leases = claim(&queue, &name, 10).await;
    assert_eq!(leases.len(), 1);
    assert_eq!(leases[0].spec.id, spec.id);
    assert_eq!(leases[0].spec.payload, spec.payload);
    assert_eq!(leases[0].attempt, 1);
    let beat = queue
        .heartbeat(vec![leases[0].reference()], Duration::from_secs(30))
        .await
        .expect("heartbeat");
    assert_eq!(beat, vec![LeaseStatus::Held]);
    let stranger = LeaseRef::new(spec.id, LeaseToken::new());
    let refused = queue
        .complete(vec![Completion::new(
            stranger,
            CompletionOutcome::Succeeded,
        )])
        .await
        .expect("complete");
    assert_eq!(refused.statuses, vec![CompletionStatus::LeaseLost]);
    assert_eq!(
        complete(&queue, &leases[0], CompletionOutcome::Succeeded).await,
        CompletionStatus::Applied
    );
    assert_eq!(
        complete(&queue, &leases[0], CompletionOutcome::Succeeded).await,
        CompletionStatus::Applied
    );
    let beat = queue
        .heartbeat(vec![leases[0].reference()], Duration::from_secs(30))
        .await
        .expect("heartbeat");
    assert_eq!(beat, vec![LeaseStatus::Lost]);
    assert!(claim(&queue, &name, 10).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_comes_back_after_its_backoff_with_the_attempt_counted() {
    let Some((backend, _cleanup)) = broker().await else {
        return;
    };
    let queue = backend.task_queue();
    let name = unique("retry");
    queue
        .enqueue(vec![task(&name, TaskOptions::default().max_attempts(3))])
        .await
        .expect("enqueue");
    let first = claim(&queue, &name, 1).await;
    let failed_at = tokio::time::Instant::now();
    let backoff = Duration::from_millis(400);
    let run_at = Utc::now() + chrono::Duration::from_std(backoff).expect("backoff");
    let outcome = CompletionOutcome::Retry {
        run_at,
        error: TaskError::new("flaky"),
    };
    assert_eq!(
        complete(&queue, &first[0], outcome).await,
        CompletionStatus::Applied
    );
    assert!(
        claim(&queue, &name, 1).await.is_empty(),
        "not before its backoff"
    );
    let second = claim_eventually(&queue, &name, 1).await;
    assert!(failed_at.elapsed() >= backoff - Duration::from_millis(60));
    assert_eq!(second[0].spec.id, first[0].spec.id);
    assert_eq!(second[0].attempt, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_task_waits_through_the_buckets_until_due() {
    let Some((backend, _cleanup)) = broker().await else {
        return;
    };
    let queue = backend.task_queue();
    let name = unique("delay");
    let delay = Duration::from_millis(1_500);
    let enqueued_at = tokio::time::Instant::now();
    queue
        .enqueue(vec![task(&name, TaskOptions::default().delay(delay))])
        .await
        .expect("enqueue");
    assert!(claim(&queue, &name, 1).await.is_empty());
    let leases = claim_eventually(&queue, &name, 1).await;
    assert!(enqueued_at.elapsed() >= delay - Duration::from_millis(60));
    assert_eq!(leases[0].attempt, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_and_snooze_give_the_attempt_back() {
    let Some((backend, _cleanup)) = broker().await else {
        return;
    };
    let queue = backend.task_queue();
    let name = unique("release");
    queue
        .enqueue(vec![task(&name, TaskOptions::default())])
        .await
        .expect("enqueue");
    let first = claim(&queue, &name, 1).await;
    assert_eq!(
        complete(&queue, &first[0], CompletionOutcome::Release).await,
        CompletionStatus::Applied
    );
    let second = claim(&queue, &name, 1).await;
    assert_eq!(second[0].attempt, 1, "a release gives the attempt back");
    let snooze = CompletionOutcome::Snooze {
        run_at: Utc::now() + chrono::Duration::milliseconds(300),
    };
    assert_eq!(
        complete(&queue, &second[0], snooze).await,
        CompletionStatus::Applied
    );
    assert!(claim(&queue, &name, 1).await.is_empty(), "snoozed");
    let third = claim_eventually(&queue, &name, 1).await;
    assert_eq!(third[0].attempt, 1, "a snooze gives the attempt back");
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
async fn a_lease_not_renewed_is_recovered_by_its_handle() {
    let Some((backend, _cleanup)) = broker().await else {
        return;
    };
    let queue = backend.task_queue();
    let name = unique("lapse");
    queue
        .enqueue(vec![task(&name, TaskOptions::default())])
        .await
        .expect("enqueue");
    let short = request(&name, 1).lease(Duration::from_millis(50));
    let held = queue.dequeue(short).await.expect("dequeue");
    tokio::time::sleep(Duration::from_millis(120)).await;
    let changes = queue.recover_expired(10).await.expect("recover");
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].task_id, held[0].spec.id);
    assert_eq!(
        complete(&queue, &held[0], CompletionOutcome::Succeeded).await,
        CompletionStatus::LeaseLost
    );
    let again = claim(&queue, &name, 1).await;
    assert_eq!(again[0].attempt, 2);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_by_names_leaves_other_tasks_for_a_worker_that_runs_them() {
    let Some((backend, _cleanup)) = broker().await else {
        return;
    };
    let queue = backend.task_queue();
    let name = unique("names");
    let mut other = task(&name, TaskOptions::default());
    other.name = "broker.other".into();
    queue.enqueue(vec![other.clone()]).await.expect("enqueue");
    let mine = request(&name, 1).only_names(["broker.task"], None);
    assert!(queue.dequeue(mine).await.expect("dequeue").is_empty());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let theirs = request(&name, 1).only_names(["broker.other"], None);
        let leases = queue.dequeue(theirs).await.expect("dequeue");
        if let Some(lease) = leases.first() {
            assert_eq!(lease.spec.id, other.id);
            assert_eq!(lease.attempt, 1);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never came back");
        queue
            .wait_for_tasks(std::slice::from_ref(&name), Duration::from_millis(50))
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_tasks_not_claimed_are_given_back_without_an_attempt() {
    let prefix = test_prefix();
    let Some((backend, mut cleanup)) = broker_with(AmqpOptions::prefix(&prefix).prefetch(5)).await
    else {
        return;
    };
    let queue = backend.task_queue();
    let name = unique("pushed");
    let specs: Vec<_> = (0..5)
        .map(|_| task(&name, TaskOptions::default()))
        .collect();
    queue.enqueue(specs).await.expect("enqueue");
    // The consumer starts, and the broker pushes up to the prefetch.
    queue
        .wait_for_tasks(std::slice::from_ref(&name), Duration::from_secs(5))
        .await;
    // Deliveries may still be on their way: claim until two are in.
    let claimed = claim_eventually(&queue, &name, 2).await;
    assert_eq!(claimed.len(), 2);
    queue
        .stop_claiming(std::slice::from_ref(&name))
        .await
        .expect("stop claiming");
    backend.close().await;
    let other = same_broker(&backend, &mut cleanup, &prefix)
        .await
        .task_queue();
    let rest = claim(&other, &name, 10).await;
    let attempts: Vec<u32> = rest.iter().map(|l| l.attempt).collect();
    // The two claimed were lost with the connection (their attempts count); the three
    // pushed but never claimed come back as they were.
    assert_eq!(rest.len(), 5, "{attempts:?}");
    assert_eq!(
        attempts.iter().filter(|a| **a == 1).count(),
        3,
        "{attempts:?}"
    );
    assert_eq!(
        attempts.iter().filter(|a| **a == 2).count(),
        2,
        "{attempts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completion_whose_caller_stopped_waiting_is_applied_and_known_when_sent_again() {
    let Some((backend, _cleanup)) = broker().await else {
        return;
    };
    let queue = backend.task_queue();
    let name = unique("cut");
    queue
        .enqueue(vec![task(&name, TaskOptions::default())])
        .await
        .expect("enqueue");
    let lease = claim(&queue, &name, 1).await.remove(0);
    let retry = CompletionOutcome::Retry {
        run_at: Utc::now(),
        error: TaskError::new("again"),
    };
    // The worker's store timeout fires before the broker answers: the call is dropped.
    let cut = tokio::time::timeout(
        Duration::from_micros(1),
        queue.complete(vec![Completion::new(lease.reference(), retry.clone())]),
    )
    .await;
    assert!(cut.is_err(), "the broker answered within a microsecond");
    // Sent again, it is applied once: the task is back once, with its attempt counted.
    assert_eq!(
        complete(&queue, &lease, retry).await,
        CompletionStatus::Applied
    );
    let again = claim_eventually(&queue, &name, 1).await;
    assert_eq!(again[0].spec.id, lease.spec.id);
    assert_eq!(again[0].attempt, 2);
    assert!(claim(&queue, &name, 10).await.is_empty(), "one copy only");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_due_at_once_runs_at_once_on_a_worker_whose_clock_is_behind() {
    let Some((backend, _cleanup)) = broker().await else {
        return;
    };
    let name = unique("clock");
    backend
        .task_queue()
        .enqueue(vec![task(&name, TaskOptions::default())])
        .await
        .expect("enqueue");
    let behind = backend.with_clock(omniq_storage::Clock::skewed(chrono::Duration::seconds(-30)));
    let leases = claim(&behind, &name, 1).await;
    assert_eq!(leases.len(), 1, "not held back by the worker's clock");
}
