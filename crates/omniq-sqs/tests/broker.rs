//! What only SQS shows: a message that is not a task, sent by another producer, is kept as
//! a dead letter and the rest of the claim goes on; SQS's own redrive policy moves a
//! message received too often to the dead letters. The rest of a task's paths are
//! conformance cases checked by claiming (`omniq_storage::conformance::claims`).

mod support;

use std::time::Duration;

use chrono::Utc;
use omniq_models::{TaskOptions, TaskSpec, WorkerId};
use omniq_sqs::SqsBackend;
use omniq_storage::{DequeueRequest, RedriveTarget, TaskQueue};
use support::{DeleteOnDrop, backend_or_skip};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_message_is_kept_as_a_dead_letter_and_the_rest_is_claimed() {
    let Some(backend) =
        backend_or_skip("an_unreadable_message_is_kept_as_a_dead_letter", |o| o).await
    else {
        return;
    };
    let _cleanup = DeleteOnDrop(backend.clone());
    let queue = backend.task_queue();
    let name = format!(
        "garbage-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let good = TaskSpec::new(
        "t",
        vec![1],
        TaskOptions::default().queue(&name),
        Utc::now(),
    );
    queue.enqueue(vec![good.clone()]).await.expect("enqueue");
    // Another producer sends garbage to the same queue.
    let client = raw_client().await;
    let url = queue_url(&client, &backend, &name).await;
    client
        .send_message()
        .queue_url(url)
        .message_body("not a task")
        .send()
        .await
        .expect("send garbage");
    let request = DequeueRequest::new([name.as_str()], 10)
        .lease(Duration::from_secs(30))
        .worker(WorkerId::new("test"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut leases = Vec::new();
    while leases.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the good task never came"
        );
        leases = queue.dequeue(request.clone()).await.expect("dequeue");
    }
    assert_eq!(leases.len(), 1);
    assert_eq!(leases[0].spec.id, good.id);
    // The garbage is a dead letter: nothing else to claim, and a re-drive cannot send it
    // back (it still does not read).
    assert!(queue.dequeue(request).await.expect("dequeue").is_empty());
    let redriven = queue.redrive(RedriveTarget::All).await.expect("redrive");
    assert!(redriven.is_empty());
    assert!(backend.created().iter().any(|n| n.ends_with("-dead")));
}

/// SQS's own redrive policy is the backstop: a message handed out `max_receives` times
/// without OmniQ finishing or sending it on (here received by another client, as by a
/// worker that crashes before it can) is moved to the dead letters by SQS, and a re-drive
/// brings its task back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_moves_a_message_received_too_often_to_the_dead_letters_for_re_drive() {
    let Some(backend) = backend_or_skip("sqs_moves_a_message_received_too_often", |options| {
        options.max_receives(Some(2))
    })
    .await
    else {
        return;
    };
    let _cleanup = DeleteOnDrop(backend.clone());
    let queue = backend.task_queue();
    let name = format!(
        "backstop-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let task = TaskSpec::new(
        "t",
        vec![1],
        TaskOptions::default().queue(&name),
        Utc::now(),
    );
    queue.enqueue(vec![task.clone()]).await.expect("enqueue");
    let client = raw_client().await;
    let url = queue_url(&client, &backend, &name).await;
    for _ in 0..2 {
        let got = client
            .receive_message()
            .queue_url(&url)
            .visibility_timeout(0)
            .send()
            .await
            .expect("receive");
        assert_eq!(got.messages().len(), 1, "the task's message is received");
    }
    let request = DequeueRequest::new([name.as_str()], 10)
        .lease(Duration::from_secs(30))
        .worker(WorkerId::new("test"));
    assert!(
        queue
            .dequeue(request.clone())
            .await
            .expect("dequeue")
            .is_empty(),
        "SQS moved the message to the dead letters"
    );
    let redriven = queue.redrive(RedriveTarget::All).await.expect("redrive");
    assert_eq!(redriven, vec![task.id]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let lease = loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the re-driven task never came"
        );
        if let Some(lease) = queue.dequeue(request.clone()).await.expect("dequeue").pop() {
            break lease;
        }
    };
    assert_eq!(lease.spec.id, task.id);
    assert_eq!(lease.attempt, 1);
}

/// A client of the test server of its own, as another producer or consumer.
async fn raw_client() -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::new(
        &aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url(support::sqs_endpoint())
            .credentials_provider(aws_sdk_sqs::config::Credentials::new(
                "test", "test", None, None, "test",
            ))
            .load()
            .await,
    )
}

/// The URL of the SQS queue holding OmniQ queue `name`'s tasks.
async fn queue_url(client: &aws_sdk_sqs::Client, backend: &SqsBackend, name: &str) -> String {
    let sqs_name = backend
        .created()
        .into_iter()
        .find(|n| n.ends_with(name))
        .expect("the task queue was created");
    client
        .get_queue_url()
        .queue_name(sqs_name)
        .send()
        .await
        .expect("queue url")
        .queue_url()
        .expect("url")
        .to_owned()
}
