//! What only SQS shows: a message that is not a task, sent by another producer, is kept as
//! a dead letter and the rest of the claim goes on. The rest of a task's paths are
//! conformance cases checked by claiming (`omniq_storage::conformance::claims`).

mod support;

use std::time::Duration;

use chrono::Utc;
use omniq_models::{TaskOptions, TaskSpec, WorkerId};
use omniq_storage::{DequeueRequest, RedriveTarget, StoreErrorKind, TaskQueue};
use support::{DeleteOnDrop, fresh_backend};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_message_is_kept_as_a_dead_letter_and_the_rest_is_claimed() {
    let backend = match fresh_backend().await {
        Ok(backend) => backend,
        Err(err)
            if err.kind() == StoreErrorKind::Unavailable
                && std::env::var("OMNIQ_TEST_REQUIRE_SERVICES").as_deref() != Ok("1") =>
        {
            eprintln!("SKIPPED: the SQS test server is unavailable ({err})");
            return;
        }
        Err(err) => panic!("cannot reach the SQS test server: {err}"),
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
    let client = aws_sdk_sqs::Client::new(
        &aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url(support::sqs_endpoint())
            .credentials_provider(aws_sdk_sqs::config::Credentials::new(
                "test", "test", None, None, "test",
            ))
            .load()
            .await,
    );
    let url = backend
        .created()
        .into_iter()
        .find(|n| n.ends_with(&name))
        .expect("the task queue was created");
    let url = client
        .get_queue_url()
        .queue_name(url)
        .send()
        .await
        .expect("queue url")
        .queue_url()
        .expect("url")
        .to_owned();
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
