//! Redis-specific behaviour beyond the shared suite: dependencies across queues, store-wide
//! listing, event purging, reconnecting after the server dropped the connection, and the
//! stored form where other versions of the scripts depend on it (the `children` flag, ready
//! members).

mod support;

use std::time::Duration;

use chrono::Utc;
use omniq_models::{TaskEvent, TaskEventKind, TaskId, TaskOptions, TaskSpec, TaskState};
use omniq_redis::{RedisBackend, RedisOptions};
use omniq_storage::conformance::services_required;
use omniq_storage::{
    Completion, CompletionOutcome, DequeueRequest, EventQuery, EventStore, StateChange,
    StoreErrorKind, TaskQuery, TaskQueue,
};
use support::{delete_prefix, redis_url, test_prefix};

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

async fn backend() -> Option<(RedisBackend, Cleanup)> {
    let url = redis_url();
    let prefix = test_prefix();
    match RedisBackend::connect_with(&url, RedisOptions::prefix(&prefix)).await {
        Ok(backend) => Some((backend, Cleanup { url, prefix })),
        Err(err) if err.kind() == StoreErrorKind::Unavailable && !services_required() => {
            eprintln!(
                "SKIPPED: Redis unavailable ({err}); set OMNIQ_TEST_REQUIRE_SERVICES=1 to make \
                 this an error"
            );
            None
        }
        Err(err) => panic!("cannot connect to Redis: {err}"),
    }
}

fn task(queue: &str, options: TaskOptions) -> TaskSpec {
    TaskSpec::new("store.test", vec![7], options.queue(queue), Utc::now())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parent_in_one_queue_releases_a_dependent_in_another() {
    let Some((backend, _cleanup)) = backend().await else {
        return;
    };
    let queue = backend.task_queue();
    let parent = task("parents", TaskOptions::default());
    let child = task("children", TaskOptions::default().depends_on(parent.id));
    queue
        .enqueue(vec![parent.clone(), child.clone()])
        .await
        .expect("enqueue");
    assert!(
        queue
            .dequeue(DequeueRequest::new(["children"], 10))
            .await
            .expect("dequeue")
            .is_empty(),
        "blocked"
    );
    let lease = queue
        .dequeue(DequeueRequest::new(["parents"], 10))
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
    assert_eq!(completed.changes.len(), 1);
    assert_eq!(completed.changes[0].queue, "children");
    assert_eq!(completed.changes[0].state, TaskState::Queued);
    let leases = queue
        .dequeue(DequeueRequest::new(["children"], 10))
        .await
        .expect("dequeue");
    assert_eq!(leases.len(), 1);
    assert_eq!(leases[0].spec.id, child.id);
    assert_eq!(leases[0].spec.depends_on, vec![parent.id]);
}

/// The enqueue script checks every field before its first write; the extremes Rust can
/// send pass: the largest priority and attempts, a window saturated to `i64::MAX` micros,
/// a TTL saturated to the calendar's end, a window under a microsecond (sent as `0`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_extremes_rust_can_send_pass_the_scripts_checks() {
    let Some((backend, _cleanup)) = backend().await else {
        return;
    };
    let queue = backend.task_queue();
    let extremes = [
        TaskOptions::default()
            .priority(i32::MAX)
            .max_attempts(u32::MAX)
            .unique_key("huge-window")
            .unique_for(Duration::MAX)
            .ttl(Duration::MAX),
        TaskOptions::default().priority(i32::MIN),
        TaskOptions::default()
            .unique_key("tiny-window")
            .unique_for(Duration::from_nanos(1)),
    ];
    for options in extremes {
        let spec = task("extremes", options);
        let id = spec.id;
        queue.enqueue(vec![spec]).await.expect("enqueue");
        assert!(queue.get(id).await.expect("get").is_some());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_every_queue_is_newest_first() {
    let Some((backend, _cleanup)) = backend().await else {
        return;
    };
    let queue = backend.task_queue();
    let mut ids = Vec::new();
    for name in ["a", "b", "a", "c", "b"] {
        let spec = task(name, TaskOptions::default());
        ids.push(spec.id);
        queue.enqueue(vec![spec]).await.expect("enqueue");
    }
    let listed: Vec<TaskId> = queue
        .list(TaskQuery::default())
        .await
        .expect("list")
        .iter()
        .map(|r| r.spec.id)
        .collect();
    ids.reverse();
    assert_eq!(listed, ids);
    let page: Vec<TaskId> = queue
        .list(TaskQuery::new().offset(1).limit(2))
        .await
        .expect("list")
        .iter()
        .map(|r| r.spec.id)
        .collect();
    assert_eq!(page, ids[1..3].to_vec());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_before_a_time_are_purged() {
    let Some((backend, _cleanup)) = backend().await else {
        return;
    };
    let events = backend.event_store();
    let id = TaskId::new();
    let mut old = TaskEvent::for_task(TaskEventKind::Enqueued, id, "t", "q");
    old.at = Utc::now() - chrono::Duration::hours(1);
    let new = TaskEvent::for_task(TaskEventKind::Started, id, "t", "q");
    events.append(vec![old, new.clone()]).await.expect("append");
    let purged = events
        .purge_before(Utc::now() - chrono::Duration::minutes(1), 0)
        .await
        .expect("purge");
    assert_eq!(purged, 1);
    assert_eq!(
        events.query(EventQuery::task(id)).await.expect("query"),
        vec![new]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backend_reconnects_after_the_server_drops_its_connection() {
    let Some((backend, _cleanup)) = backend().await else {
        return;
    };
    let queue = backend.task_queue();
    let mut conn = backend.connection();
    let client_id: i64 = redis::cmd("CLIENT")
        .arg("ID")
        .query_async(&mut conn)
        .await
        .expect("client id");
    // Kill only this backend's shared connection, from another connection.
    let killer = redis::Client::open(redis_url()).expect("client");
    let mut killer = killer
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let _: () = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(client_id)
        .query_async(&mut killer)
        .await
        .expect("kill");
    let mut recovered = false;
    for _ in 0..50 {
        match queue
            .enqueue(vec![task("reconnect", TaskOptions::default())])
            .await
        {
            Ok(_) => {
                recovered = true;
                break;
            }
            Err(err) => {
                assert_eq!(err.kind(), StoreErrorKind::Unavailable, "{err}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    assert!(recovered, "the connection manager reconnected");
    assert_eq!(
        queue
            .dequeue(DequeueRequest::new(["reconnect"], 10))
            .await
            .expect("dequeue")
            .len(),
        1
    );
}

/// A raw connection to the test server, for looking at (or aging) the stored form.
async fn raw() -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis_url())
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("connect")
}

/// Claims and completes (successfully) the one task of queue `name`.
async fn complete_one(queue: &dyn TaskQueue, name: &str) -> Vec<StateChange> {
    let lease = queue
        .dequeue(DequeueRequest::new([name], 1))
        .await
        .expect("dequeue")
        .remove(0);
    queue
        .complete(vec![Completion::new(
            lease.reference(),
            CompletionOutcome::Succeeded,
        )])
        .await
        .expect("complete")
        .changes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parent_stored_without_the_children_flag_still_settles_its_dependents() {
    let Some((backend, cleanup)) = backend().await else {
        return;
    };
    let queue = backend.task_queue();
    let parent = task("legacy", TaskOptions::default());
    let child = task(
        "legacy-children",
        TaskOptions::default().depends_on(parent.id),
    );
    queue
        .enqueue(vec![parent.clone(), child.clone()])
        .await
        .expect("enqueue");
    // As stored by a version before the flag: the dependents list only.
    let _: i64 = redis::cmd("HDEL")
        .arg(format!("{{{}}}:task:{}", cleanup.prefix, parent.id))
        .arg("children")
        .query_async(&mut raw().await)
        .await
        .expect("HDEL");
    let changes = complete_one(&queue, "legacy").await;
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].task_id, child.id);
    assert_eq!(changes[0].state, TaskState::Queued);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parent_that_turned_out_a_duplicate_in_its_batch_is_not_stored() {
    let Some((backend, _cleanup)) = backend().await else {
        return;
    };
    let queue = backend.task_queue();
    let holder = task("dup", TaskOptions::default().unique_key("k"));
    queue.enqueue(vec![holder]).await.expect("enqueue");
    let parent = task("dup", TaskOptions::default().unique_key("k"));
    let child = task("dup", TaskOptions::default().depends_on(parent.id));
    queue
        .enqueue(vec![parent.clone(), child.clone()])
        .await
        .expect("enqueue");
    assert!(queue.get(parent.id).await.expect("get").is_none());
    assert!(queue.get(child.id).await.expect("get").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_members_keep_their_documented_form() {
    let Some((backend, cleanup)) = backend().await else {
        return;
    };
    let queue = backend.task_queue();
    let before_epoch = chrono::DateTime::from_timestamp(-86_400, 0).expect("1969");
    let early = task(
        "form",
        TaskOptions::default().priority(-7).run_at(before_epoch),
    );
    let now = task("form", TaskOptions::default().priority(3));
    queue
        .enqueue(vec![early.clone(), now.clone()])
        .await
        .expect("enqueue");
    let base = format!("{{{}}}", cleanup.prefix);
    let mut conn = raw().await;
    let members: Vec<(String, f64)> = redis::cmd("ZRANGE")
        .arg(format!("{base}:ready:form"))
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .query_async(&mut conn)
        .await
        .expect("ZRANGE");
    let mut expected = Vec::new();
    for spec in [&now, &early] {
        let seq: i64 = redis::cmd("HGET")
            .arg(format!("{base}:task:{}", spec.id))
            .arg("seq")
            .query_async(&mut conn)
            .await
            .expect("HGET");
        let run_at = spec.run_at.timestamp_micros().max(0);
        expected.push((
            format!("{run_at:020}{seq:020}{}", spec.id),
            -f64::from(spec.priority),
        ));
    }
    assert_eq!(members, expected);
    // A queued task leaves the ready set when cancelled, so only the other is claimed.
    queue
        .cancel(early.id, "no".to_owned())
        .await
        .expect("cancel");
    let card: i64 = redis::cmd("ZCARD")
        .arg(format!("{base}:ready:form"))
        .query_async(&mut conn)
        .await
        .expect("ZCARD");
    assert_eq!(card, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_larger_than_a_round_of_the_script_takes_every_task_in_order() {
    let Some((backend, _cleanup)) = backend().await else {
        return;
    };
    let queue = backend.task_queue();
    // claim.lua takes at most 1000 members from a ready set at a time.
    let tasks: Vec<TaskSpec> = (0..2100)
        .map(|_| task("rounds", TaskOptions::default()))
        .collect();
    let ids: Vec<TaskId> = tasks.iter().map(|t| t.id).collect();
    queue.enqueue(tasks).await.expect("enqueue");
    let leases = queue
        .dequeue(DequeueRequest::new(["rounds"], 5000))
        .await
        .expect("dequeue");
    let claimed: Vec<TaskId> = leases.iter().map(|l| l.spec.id).collect();
    assert_eq!(claimed, ids);
    assert!(leases.iter().all(|l| l.attempt == 1));
}

/// redrive.lua works a page per call (500 dead letters), so a dead-letter set of thousands
/// is re-driven by several bounded calls rather than one that blocks the server; listing
/// such a queue returns the clamped maximum page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redrive_and_list_page_through_thousands_of_tasks() {
    let Some((backend, _cleanup)) = backend().await else {
        return;
    };
    let queue = backend.task_queue();
    let count = 2_300;
    let tasks: Vec<TaskSpec> = (0..count)
        .map(|_| task("dead", TaskOptions::default().max_attempts(1)))
        .collect();
    let mut ids: Vec<TaskId> = tasks.iter().map(|t| t.id).collect();
    queue.enqueue(tasks).await.expect("enqueue");
    let leases = queue
        .dequeue(DequeueRequest::new(["dead"], count))
        .await
        .expect("dequeue");
    assert_eq!(leases.len(), count);
    queue
        .complete(
            leases
                .iter()
                .map(|lease| {
                    Completion::new(
                        lease.reference(),
                        CompletionOutcome::Failed {
                            error: omniq_models::TaskError::permanent("no"),
                        },
                    )
                })
                .collect(),
        )
        .await
        .expect("complete");

    let listed = queue
        .list(TaskQuery::new().queue("dead").limit(count))
        .await
        .expect("list");
    assert_eq!(listed.len(), omniq_storage::MAX_LIST_LIMIT);
    assert!(listed.iter().all(|t| t.state == TaskState::Failed));
    // Deeper pages (the offset skipped a page per script call): every task once, newest
    // first throughout.
    let mut pages = listed;
    for offset in [1_000, 2_000, 2_300] {
        let page = queue
            .list(TaskQuery::new().queue("dead").offset(offset).limit(count))
            .await
            .expect("list");
        assert_eq!(page.len(), (count - offset).min(1_000), "offset {offset}");
        pages.extend(page);
    }
    let listed_ids: Vec<TaskId> = pages.iter().map(|t| t.spec.id).collect();
    let newest_first: Vec<TaskId> = ids.iter().rev().copied().collect();
    assert_eq!(listed_ids, newest_first);

    let mut redriven = queue
        .redrive(omniq_storage::RedriveTarget::All)
        .await
        .expect("redrive");
    redriven.sort();
    ids.sort();
    assert_eq!(redriven, ids, "every dead letter, across pages, once");
    let stats = queue.stats("dead".to_owned()).await.expect("stats");
    assert_eq!(
        stats.count(TaskState::Queued),
        u64::try_from(count).unwrap_or(0)
    );
    assert_eq!(stats.count(TaskState::Failed), 0);
}

/// Retention purges read the finish-time index (`{P}:done:<state>:<queue>`), not every
/// finished task's hash: aged in the index alone, exactly those go; a re-driven dead letter
/// leaves the index, and a purged task leaves it too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_purges_read_the_finish_time_index() {
    let Some((backend, cleanup)) = backend().await else {
        return;
    };
    let queue = backend.task_queue();
    let tasks: Vec<TaskSpec> = (0..10)
        .map(|_| task("kept", TaskOptions::default().max_attempts(1)))
        .collect();
    queue.enqueue(tasks.clone()).await.expect("enqueue");
    let leases = queue
        .dequeue(DequeueRequest::new(["kept"], 10))
        .await
        .expect("dequeue");
    assert_eq!(leases.len(), 10);
    let (failing, succeeding) = leases.split_at(1);
    let mut completions: Vec<Completion> = succeeding
        .iter()
        .map(|lease| Completion::new(lease.reference(), CompletionOutcome::Succeeded))
        .collect();
    completions.push(Completion::new(
        failing[0].reference(),
        CompletionOutcome::Failed {
            error: omniq_models::TaskError::permanent("no"),
        },
    ));
    queue.complete(completions).await.expect("complete");

    let mut conn = raw().await;
    let done = format!("{{{}}}:done:succeeded:kept", cleanup.prefix);
    let indexed: Vec<String> = redis::cmd("ZRANGE")
        .arg(&done)
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .expect("zrange");
    assert_eq!(indexed.len(), 9);
    // Four of them finished long ago, as far as the index says (their hashes say now).
    let long_ago = (Utc::now() - chrono::Duration::days(30)).timestamp_micros();
    for id in &indexed[..4] {
        let () = redis::cmd("ZADD")
            .arg(&done)
            .arg(long_ago)
            .arg(id)
            .query_async(&mut conn)
            .await
            .expect("zadd");
    }
    let purged = queue
        .purge(
            omniq_storage::PurgeRequest::new()
                .states(vec![TaskState::Succeeded])
                .queue("kept")
                .finished_before(Utc::now() - chrono::Duration::days(1))
                .limit(0),
        )
        .await
        .expect("purge");
    assert_eq!(purged, 4);
    for id in &indexed[..4] {
        let id: TaskId = id.parse().expect("id");
        assert!(queue.get(id).await.expect("get").is_none(), "{id} purged");
    }
    let left: u64 = redis::cmd("ZCARD")
        .arg(&done)
        .query_async(&mut conn)
        .await
        .expect("zcard");
    assert_eq!(left, 5);

    // A re-driven dead letter is no longer finished: out of the index.
    let dead = format!("{{{}}}:done:failed:kept", cleanup.prefix);
    let redriven = queue
        .redrive(omniq_storage::RedriveTarget::All)
        .await
        .expect("redrive");
    assert_eq!(redriven, vec![failing[0].spec.id]);
    let left: u64 = redis::cmd("ZCARD")
        .arg(&dead)
        .query_async(&mut conn)
        .await
        .expect("zcard");
    assert_eq!(left, 0);
}
