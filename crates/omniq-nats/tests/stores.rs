//! What the NATS stores do beyond the shared conformance cases: live events across
//! processes, result waits woken by the write, typed errors for an unreachable server and
//! a bad prefix.

mod support;

use std::time::Duration;

use omniq_models::{TaskEvent, TaskEventKind, TaskId, TaskResult};
use omniq_nats::{NatsBackend, NatsOptions};
use omniq_storage::{EventStore, ResultStore, StoreErrorKind, conformance::services_required};
use support::{DeleteOnDrop, edit_stored_task, fresh_backend, nats_url};

const LONG: Duration = Duration::from_secs(10);

/// A backend under a fresh prefix, or `None` (said loudly) when the server is unreachable
/// and services are not required.
async fn backend(test: &str) -> Option<NatsBackend> {
    match fresh_backend().await {
        Ok(backend) => Some(backend),
        Err(err) if err.kind() == StoreErrorKind::Unavailable && !services_required() => {
            eprintln!("SKIPPED `{test}`: NATS unavailable ({err})");
            None
        }
        Err(err) => panic!("`{test}`: cannot connect to NATS: {err}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_sees_the_events_another_connection_appends() {
    let Some(backend) = backend("a_follower_sees_the_events_another_connection_appends").await
    else {
        return;
    };
    let _cleanup = DeleteOnDrop(backend.clone());
    // Another process's connection, on the same prefix.
    let other = NatsBackend::connect_with(&nats_url(), NatsOptions::prefix(backend.prefix()))
        .await
        .expect("second connection");
    let mut feed = backend
        .event_store()
        .follow()
        .await
        .expect("follow")
        .expect("NATS follows live");
    let task = TaskId::new();
    let sent = TaskEvent::for_task(TaskEventKind::Enqueued, task, "t", "q.with.dots");
    other
        .event_store()
        .append(vec![sent.clone()])
        .await
        .expect("append");
    let seen = tokio::time::timeout(LONG, feed.recv())
        .await
        .expect("the event arrives")
        .expect("the feed is open");
    assert_eq!(seen, sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_wait_wakes_when_another_connection_stores_it() {
    let Some(backend) = backend("a_result_wait_wakes_when_another_connection_stores_it").await
    else {
        return;
    };
    let _cleanup = DeleteOnDrop(backend.clone());
    let other = NatsBackend::connect_with(&nats_url(), NatsOptions::prefix(backend.prefix()))
        .await
        .expect("second connection");
    let id = TaskId::new();
    let results = backend.result_store();
    let waiting = tokio::spawn(async move { results.wait_for(id, LONG).await });
    let stored = TaskResult::success(id, "t", b"42".to_vec(), 1, None);
    // Whether the wait began before the write or not, it must return the result.
    other
        .result_store()
        .put(vec![stored.clone()])
        .await
        .expect("put");
    let got = waiting.await.expect("join").expect("wait");
    assert_eq!(got, Some(stored));
    // And a wait for a result nobody stores ends at its timeout with nothing.
    let none = backend
        .result_store()
        .wait_for(TaskId::new(), Duration::from_millis(200))
        .await
        .expect("wait");
    assert_eq!(none, None);
}

#[tokio::test]
async fn an_unreachable_server_is_unavailable_and_the_password_is_never_shown() {
    // Port 1 on loopback: nothing listens there.
    let err = NatsBackend::connect("nats://omniq:s3cret@127.0.0.1:1")
        .await
        .expect_err("nothing listens on port 1");
    assert_eq!(err.kind(), StoreErrorKind::Unavailable);
    assert!(!err.to_string().contains("s3cret"), "{err}");
}

#[tokio::test]
async fn a_prefix_that_cannot_name_a_stream_is_refused_before_connecting() {
    let err = NatsBackend::connect_with(&nats_url(), NatsOptions::prefix("a.b"))
        .await
        .expect_err("dots split subjects");
    assert_eq!(err.kind(), StoreErrorKind::Invalid);
}

/// A process killed between a parent's end and its child's evaluation leaves the child
/// blocked with nothing to wake it: the maintenance sweep (run by `recover_expired`)
/// evaluates it and unblocks it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_stranded_by_a_killed_process_is_unblocked_by_the_maintenance_sweep() {
    use omniq_storage::TaskQueue;

    let test = "a_child_stranded_by_a_killed_process_is_unblocked_by_the_maintenance_sweep";
    let Some(backend) = backend(test).await else {
        return;
    };
    let _cleanup = DeleteOnDrop(backend.clone());
    let queue = backend.task_queue();
    let children = strand_children(&backend, "stranded", 1).await;
    let changes = queue.recover_expired(100).await.expect("maintenance");
    assert!(
        changes
            .iter()
            .any(|c| c.task_id == children[0] && c.state == omniq_models::TaskState::Queued),
        "{changes:?}"
    );
    let leases = queue
        .dequeue(omniq_storage::DequeueRequest::new(["stranded"], 10))
        .await
        .expect("claim");
    assert_eq!(
        leases.iter().map(|l| l.spec.id).collect::<Vec<_>>(),
        children
    );
}

/// Many stranded children are swept a bounded batch per maintenance call, each call going
/// on where the last one stopped, until none is left: a big DAG never holds up the lease
/// recovery that shares the call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_stranded_children_are_swept_a_bounded_batch_per_call() {
    use omniq_models::TaskState;
    use omniq_storage::TaskQueue;

    const CHILDREN: usize = 1_200;
    let test = "many_stranded_children_are_swept_a_bounded_batch_per_call";
    let Some(backend) = backend(test).await else {
        return;
    };
    let _cleanup = DeleteOnDrop(backend.clone());
    let queue = backend.task_queue();
    let children = strand_children(&backend, "stranded-many", CHILDREN).await;
    let mut unblocked = std::collections::HashSet::new();
    let mut calls = 0;
    while unblocked.len() < CHILDREN {
        calls += 1;
        assert!(
            calls <= 10,
            "{} of {CHILDREN} unblocked after 10 calls",
            unblocked.len()
        );
        let changes = queue.recover_expired(100).await.expect("maintenance");
        let queued: Vec<_> = changes
            .iter()
            .filter(|c| c.state == TaskState::Queued)
            .map(|c| c.task_id)
            .collect();
        assert!(
            queued.len() < CHILDREN,
            "one call swept all {CHILDREN}: it is not bounded"
        );
        unblocked.extend(queued);
    }
    assert!(calls >= 2, "{calls}");
    let stats = queue
        .stats("stranded-many".to_owned())
        .await
        .expect("stats");
    assert_eq!(stats.count(TaskState::Queued), CHILDREN as u64, "{stats:?}");
    assert!(children.iter().all(|id| unblocked.contains(id)));
}

/// Enqueues a parent and `count` children of it in `queue_name`, then ends the parent as a
/// process killed right after its completion landed would leave it: succeeded, its
/// children never told (still Blocked). Returns the children's ids.
async fn strand_children(backend: &NatsBackend, queue_name: &str, count: usize) -> Vec<TaskId> {
    use omniq_models::{TaskOptions, TaskSpec, TaskState};
    use omniq_storage::TaskQueue;

    let queue = backend.task_queue();
    let options = TaskOptions::default().queue(queue_name);
    let parent = TaskSpec::new("t", vec![], options.clone(), chrono::Utc::now());
    let children: Vec<TaskSpec> = (0..count)
        .map(|_| {
            TaskSpec::new(
                "t",
                vec![],
                options.clone().depends_on(parent.id),
                chrono::Utc::now(),
            )
        })
        .collect();
    let mut all = vec![parent.clone()];
    all.extend(children.iter().cloned());
    for chunk in all.chunks(500) {
        queue.enqueue(chunk.to_vec()).await.expect("enqueue");
    }
    edit_stored_task(backend, parent.id, |stored| {
        stored["record"]["state"] = serde_json::Value::from("succeeded");
        stored["record"]["finished_at"] = serde_json::to_value(chrono::Utc::now()).expect("time");
    })
    .await;
    for child in &children {
        let blocked = queue.get(child.id).await.expect("get").expect("stored");
        assert_eq!(blocked.state, TaskState::Blocked);
    }
    children.into_iter().map(|c| c.id).collect()
}

/// A store first opened by an earlier release, whose index stream lacks a subject this
/// release files under (`blocked` came with dependencies), is brought up to date on
/// connect, so that the enqueue of a blocked task, which files it there, succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_stream_of_an_earlier_release_gets_this_releases_subjects() {
    use async_nats::jetstream::stream;
    use omniq_models::{TaskOptions, TaskSpec};
    use omniq_storage::TaskQueue;

    let test = "an_index_stream_of_an_earlier_release_gets_this_releases_subjects";
    let prefix = format!("omniq-test-{}", uuid::Uuid::new_v4().simple());
    let client = match async_nats::connect(nats_url()).await {
        Ok(client) => client,
        Err(err) if !services_required() => {
            eprintln!("SKIPPED `{test}`: NATS unavailable ({err})");
            return;
        }
        Err(err) => panic!("`{test}`: cannot connect to NATS: {err}"),
    };
    let jetstream = async_nats::jetstream::new(client);
    let old_subjects = vec![
        format!("{prefix}.delayed.>"),
        format!("{prefix}.lease.>"),
        format!("{prefix}.expiry.>"),
    ];
    // Tried a few times: see `omniq_nats`'s stream creation (nats-server 2.9 may fail one
    // made as the server's last other stream goes).
    let config = stream::Config {
        name: format!("{prefix}_index"),
        subjects: old_subjects.clone(),
        ..Default::default()
    };
    let mut tries = 0;
    while let Err(err) = jetstream.create_stream(config.clone()).await {
        tries += 1;
        assert!(tries < 4, "the earlier release's index stream: {err}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let backend = NatsBackend::connect_with(&nats_url(), NatsOptions::prefix(prefix.clone()))
        .await
        .expect("connect");
    let _cleanup = DeleteOnDrop(backend.clone());
    let mut index = jetstream
        .get_stream(format!("{prefix}_index"))
        .await
        .expect("index stream");
    let subjects = index.info().await.expect("info").config.subjects.clone();
    for subject in old_subjects.iter().chain([&format!("{prefix}.blocked")]) {
        assert!(
            subjects.contains(subject),
            "{subject} missing from {subjects:?}"
        );
    }
    // A blocked child is filed under the new subject.
    let queue = backend.task_queue();
    let options = TaskOptions::default().queue("upgraded");
    let parent = TaskSpec::new("t", vec![], options.clone(), chrono::Utc::now());
    let child = TaskSpec::new(
        "t",
        vec![],
        options.depends_on(parent.id),
        chrono::Utc::now(),
    );
    queue
        .enqueue(vec![parent.clone(), child.clone()])
        .await
        .expect("enqueue a parent and a blocked child");
}
