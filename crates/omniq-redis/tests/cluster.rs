//! The backend on a Redis Cluster: the whole conformance suite, where keys land, scripts a
//! node lost, live events and wake-ups across backends. One local three-primary cluster
//! serves the whole test binary (see `support/cluster.rs`); each test has a key prefix of
//! its own.

#[path = "support/cluster.rs"]
mod cluster;
#[path = "support/corrupt.rs"]
mod corrupt;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use omniq_models::{
    MisfirePolicy, Schedule, ScheduleTrigger, TaskEvent, TaskEventKind, TaskId, TaskOptions,
    TaskResult, TaskSpec,
};
use omniq_redis::{RedisBackend, RedisOptions};
use omniq_storage::conformance::{Fixture, Reopen};
use omniq_storage::{
    Completion, CompletionOutcome, CompletionStatus, DequeueRequest, EventStore, ResultStore,
    ScheduleStore, StoreResult, TaskQueue,
};
use tokio::time::Instant;

use cluster::LocalCluster;

/// A key prefix no other test uses.
fn test_prefix() -> String {
    format!("omniq-test-{}", uuid::Uuid::new_v4().simple())
}

async fn connect(cluster: &LocalCluster, prefix: &str) -> StoreResult<RedisBackend> {
    let urls = cluster.urls();
    let nodes: Vec<&str> = urls.iter().map(String::as_str).collect();
    RedisBackend::connect_cluster(&nodes, RedisOptions::prefix(prefix)).await
}

/// Fresh stores under a prefix of their own; the cluster is the test binary's, so nothing
/// needs deleting afterwards.
async fn stores() -> StoreResult<Fixture> {
    let cluster = cluster::shared_async().await?;
    let prefix = test_prefix();
    let backend = connect(cluster, &prefix).await?;
    assert!(backend.is_cluster());
    let damaged = backend.clone();
    let damaged_prefix = prefix.clone();
    Ok(Fixture {
        queue: Arc::new(backend.task_queue()),
        results: Arc::new(backend.result_store()),
        events: Arc::new(backend.event_store()),
        schedules: Arc::new(backend.schedule_store()),
        reopen: Reopen::new(move |clock| {
            let queue: Arc<dyn TaskQueue> = Arc::new(backend.with_clock(clock).task_queue());
            async move { Ok(queue) }
        }),
        corrupt: Some(corrupt::corrupt(damaged, damaged_prefix)),
    })
}

omniq_storage::conformance_suite!(stores);
omniq_scheduler::scheduler_suite!(stores);

fn task(queue: &str, options: TaskOptions) -> TaskSpec {
    TaskSpec::new("cluster.test", vec![7], options.queue(queue), Utc::now())
}

fn schedule(name: &str) -> Schedule {
    let now = Utc::now();
    let mut schedule = Schedule::new(
        name,
        ScheduleTrigger::Interval {
            every: Duration::from_secs(60),
            start_at: None,
        },
        "cluster.task",
        vec![1],
        now,
    );
    schedule.misfire = MisfirePolicy::Skip;
    schedule.next_fire_at = Some(now);
    schedule
}

/// Puts every kind of key of a prefix in place: tasks in several queues and states, a
/// dependency, a unique key, a schedule, results and events.
async fn populate(backend: &RedisBackend) {
    let queue = backend.task_queue();
    let parent = task("first", TaskOptions::default().unique_key("only-one"));
    let child = task("second", TaskOptions::default().depends_on(parent.id));
    let later = task(
        "first",
        TaskOptions::default().delay(Duration::from_secs(600)),
    );
    queue
        .enqueue(vec![parent, child, later])
        .await
        .expect("enqueue");
    let lease = queue
        .dequeue(DequeueRequest::new(["first"], 10))
        .await
        .expect("dequeue")
        .remove(0);
    let completed = queue
        .complete(vec![Completion::new(
            lease.reference(),
            CompletionOutcome::Succeeded,
        )])
        .await
        .expect("complete");
    assert_eq!(completed.statuses, [CompletionStatus::Applied]);
    backend
        .schedule_store()
        .create(schedule("every-minute"))
        .await
        .expect("schedule");
    let results = (0..30)
        .map(|_| TaskResult::success(TaskId::new(), "cluster.test", b"ok".to_vec(), 1, None))
        .collect();
    backend.result_store().put(results).await.expect("results");
    backend
        .event_store()
        .append(vec![TaskEvent::for_task(
            TaskEventKind::Enqueued,
            TaskId::new(),
            "cluster.test",
            "first",
        )])
        .await
        .expect("events");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_lives_on_one_node_and_prefixes_spread_over_nodes() {
    let Some(cluster) = cluster::shared_or_skip().await else {
        return;
    };
    // Two prefixes whose hash tags hash to slots on different nodes.
    let first = test_prefix();
    let first_node = cluster.owner(&format!("{{{first}}}"));
    let (second, second_node) = std::iter::repeat_with(test_prefix)
        .map(|prefix| {
            let node = cluster.owner(&format!("{{{prefix}}}"));
            (prefix, node)
        })
        .find(|(_, node)| *node != first_node)
        .expect("a prefix on another node");

    for (prefix, home) in [(&first, first_node), (&second, second_node)] {
        let backend = connect(cluster, prefix).await.expect("connect");
        populate(&backend).await;
        let tagged = format!("{{{prefix}}}:*");
        let mut found = BTreeSet::new();
        for &port in cluster.ports() {
            let keys = cluster.keys_on(port, &tagged);
            if port == home {
                found.extend(keys);
            } else {
                assert!(
                    keys.is_empty(),
                    "keys of `{prefix}` on node {port}, not its home {home}: {keys:?}"
                );
            }
        }
        for kind in [
            ":task:",
            ":ready:",
            ":delayed:",
            ":st:",
            ":children:",
            ":sched",
        ] {
            assert!(
                found.iter().any(|key| key.contains(kind)),
                "a `{kind}` key of `{prefix}` on node {home}: {found:?}"
            );
        }
        // Results, one key each, spread over the nodes.
        let holding_results = cluster
            .ports()
            .iter()
            .filter(|&&port| {
                !cluster
                    .keys_on(port, &format!("{prefix}:result:*"))
                    .is_empty()
            })
            .count();
        assert!(
            holding_results > 1,
            "30 results of `{prefix}` on {holding_results} node(s)"
        );
        let events_node = cluster.owner(&format!("{prefix}:events"));
        assert_eq!(
            cluster.keys_on(events_node, &format!("{prefix}:events")),
            [format!("{prefix}:events")]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_lost_the_scripts_gets_them_again() {
    let Some(cluster) = cluster::shared_or_skip().await else {
        return;
    };
    let backend = connect(cluster, &test_prefix()).await.expect("connect");
    // As after a failover to a node that never saw the scripts, or a restart.
    for &port in cluster.ports() {
        let _: () = redis::cmd("SCRIPT")
            .arg("FLUSH")
            .query(&mut cluster.node(port))
            .expect("SCRIPT FLUSH");
    }
    let queue = backend.task_queue();
    queue
        .enqueue(vec![task("flushed", TaskOptions::default())])
        .await
        .expect("enqueue after SCRIPT FLUSH");
    let leases = queue
        .dequeue(DequeueRequest::new(["flushed"], 10))
        .await
        .expect("dequeue after SCRIPT FLUSH");
    assert_eq!(leases.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_events_reach_a_follower_on_another_backend() {
    let Some(cluster) = cluster::shared_or_skip().await else {
        return;
    };
    let prefix = test_prefix();
    let following = connect(cluster, &prefix).await.expect("connect");
    let appending = connect(cluster, &prefix).await.expect("connect");
    let mut live = following
        .event_store()
        .follow()
        .await
        .expect("follow")
        .expect("live events are supported");
    let id = TaskId::new();
    let kinds = [
        TaskEventKind::Enqueued,
        TaskEventKind::Started,
        TaskEventKind::Succeeded,
    ];
    appending
        .event_store()
        .append(
            kinds
                .iter()
                .map(|kind| TaskEvent::for_task(*kind, id, "cluster.test", "q"))
                .collect(),
        )
        .await
        .expect("append");
    for kind in kinds {
        let event = tokio::time::timeout(Duration::from_secs(10), live.recv())
            .await
            .expect("an event within 10 s")
            .expect("the follower is open");
        assert_eq!((event.kind, event.task_id), (kind, Some(id)));
    }

    // The node drops the follower's connection (no other test of this binary subscribes):
    // the follower reconnects and subscribes again by itself.
    let killed = cluster.kill_subscribers();
    assert!(killed > 0, "the follower's subscription was found");
    let deadline = Instant::now() + Duration::from_secs(30);
    let again = TaskId::new();
    loop {
        appending
            .event_store()
            .append(vec![TaskEvent::for_task(
                TaskEventKind::Enqueued,
                again,
                "cluster.test",
                "q",
            )])
            .await
            .expect("append");
        // Events published while it was away are lost to the follower (the stream keeps
        // them): look again with a fresh event until one arrives.
        match tokio::time::timeout(Duration::from_millis(200), live.recv()).await {
            Ok(Some(event)) => {
                assert_eq!(event.task_id, Some(again));
                break;
            }
            Ok(None) => panic!("the follower ended after losing its connection"),
            Err(_) => assert!(
                Instant::now() < deadline,
                "no live event within 30 s of losing the subscriber's connection"
            ),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_waiter_wakes_when_another_backend_enqueues() {
    let Some(cluster) = cluster::shared_or_skip().await else {
        return;
    };
    let prefix = test_prefix();
    let waiting = connect(cluster, &prefix).await.expect("connect");
    let enqueuing = connect(cluster, &prefix).await.expect("connect");
    let waiter = waiting.task_queue();
    let started = Instant::now();
    let waited = tokio::spawn(async move {
        waiter
            .wait_for_tasks(&["wake".to_owned()], Duration::from_secs(10))
            .await;
        started.elapsed()
    });
    // Let the waiter block first: the test is that the enqueue ends its wait.
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
    let Some(cluster) = cluster::shared_or_skip().await else {
        return;
    };
    let backend = connect(cluster, &test_prefix()).await.expect("connect");
    backend
        .task_queue()
        .enqueue(vec![task(
            "later",
            TaskOptions::default().delay(Duration::from_millis(500)),
        )])
        .await
        .expect("enqueue");
    let started = Instant::now();
    backend
        .task_queue()
        .wait_for_tasks(&["later".to_owned()], Duration::from_secs(10))
        .await;
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(2),
        "woken at run_at ({elapsed:?})"
    );
    let leases = backend
        .task_queue()
        .dequeue(DequeueRequest::new(["later"], 10))
        .await
        .expect("dequeue");
    assert_eq!(leases.len(), 1);
}
