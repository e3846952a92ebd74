//! What the object-store queue makes of markers a fault left behind: a task filed twice,
//! a marker whose task is being written, a lease of a task this release cannot read.

// Only the directory store: these are rules of the queue, not of a store.
#[allow(dead_code)]
mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use omniq_file::{FileTaskQueue, Objects};
use omniq_models::{TaskSpec, TaskState};
use omniq_storage::{DequeueRequest, TaskQueue};

fn spec(queue: &str) -> TaskSpec {
    let mut spec = TaskSpec::stored(
        omniq_models::TaskId::new(),
        "markers.test".to_owned(),
        b"payload".to_vec(),
        chrono::Utc::now(),
    );
    spec.queue = queue.to_owned();
    spec
}

async fn keys_under(objects: &dyn Objects, prefix: &str) -> Vec<String> {
    objects.list(prefix).await.expect("list")
}

/// A ready marker left by an earlier filing beside the current one (a claimer killed
/// before it deleted it): one claim, one lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_filed_twice_is_claimed_once() {
    let (objects, _dir) = support::directory().expect("a directory");
    let queue = FileTaskQueue::new(Arc::clone(&objects));
    let task = spec("twice");
    queue.enqueue(vec![task.clone()]).await.expect("enqueue");
    let ready = keys_under(objects.as_ref(), "ready").await;
    assert_eq!(ready.len(), 1, "{ready:?}");
    // The same fields, an earlier write: a marker that still files the task.
    let (stem, write) = ready[0].rsplit_once('-').expect("a write");
    assert_eq!(write, "1");
    let earlier = format!("{stem}-0");
    assert_ne!(earlier, ready[0]);
    objects
        .create(&earlier, Bytes::from_static(b"0"))
        .await
        .expect("write")
        .expect("absent");
    let leases = queue
        .dequeue(DequeueRequest::new(["twice"], 10))
        .await
        .expect("claim");
    assert_eq!(leases.len(), 1, "one task, one lease: {leases:?}");
    assert!(
        queue
            .dequeue(DequeueRequest::new(["twice"], 10))
            .await
            .expect("claim")
            .is_empty()
    );
}

/// A marker written for a task whose write has not landed yet is left alone (the write
/// may be on its way), and a claim does not fail on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_marker_ahead_of_its_task_is_left_for_its_writer() {
    let (objects, _dir) = support::directory().expect("a directory");
    let queue = FileTaskQueue::new(Arc::clone(&objects));
    let task = spec("ahead");
    queue.enqueue(vec![task.clone()]).await.expect("enqueue");
    let ready = keys_under(objects.as_ref(), "ready").await;
    // As a retry about to requeue the task would file it: the next write.
    let ahead = format!("{}-2", ready[0].rsplit_once('-').expect("a write").0);
    objects
        .create(
            &ahead,
            Bytes::from(chrono::Utc::now().timestamp_micros().to_string()),
        )
        .await
        .expect("write");
    let leases = queue
        .dequeue(DequeueRequest::new(["ahead"], 10))
        .await
        .expect("claim");
    assert_eq!(leases.len(), 1);
    // The claimed task's marker is deleted after the claim returns, in a task of its own.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut left = keys_under(objects.as_ref(), "ready").await;
    while left.len() > 1 && tokio::time::Instant::now() < deadline {
        tokio::task::yield_now().await;
        left = keys_under(objects.as_ref(), "ready").await;
    }
    assert_eq!(
        left,
        vec![ahead],
        "the marker of the write on its way stays"
    );
}

/// A claim that a crash of the machine took back (a claim's write is not synced) while
/// the deletion of the task's ready marker, made after it, survived: the task is queued,
/// no ready marker files it, and only the lease marker written before the claim is left.
/// Recovery files the task again before it drops that marker, and the task is claimed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_lost_with_the_machine_is_filed_again_by_recovery() {
    let (objects, _dir) = support::directory().expect("a directory");
    let queue = FileTaskQueue::new(Arc::clone(&objects));
    let task = spec("taken-back");
    queue.enqueue(vec![task.clone()]).await.expect("enqueue");
    let ready = keys_under(objects.as_ref(), "ready").await;
    assert_eq!(ready.len(), 1, "{ready:?}");
    let write: u64 = ready[0]
        .rsplit_once('-')
        .expect("a write")
        .1
        .parse()
        .expect("a number");
    // The lease marker of the claim that was taken back: it names the next write, and
    // was written longer ago than any claim takes.
    let lease = format!(
        "leases/{}.{}",
        task.id.as_uuid().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let written = chrono::Utc::now() - chrono::TimeDelta::hours(1);
    objects
        .create(
            &lease,
            Bytes::from(format!("{} {}", write + 1, written.timestamp_micros())),
        )
        .await
        .expect("write")
        .expect("absent");
    objects.delete(&ready[0]).await.expect("delete");
    assert!(
        queue
            .dequeue(DequeueRequest::new(["taken-back"], 10))
            .await
            .expect("claim")
            .is_empty(),
        "nothing files the task before recovery"
    );
    queue.recover_expired(100).await.expect("recover");
    assert!(keys_under(objects.as_ref(), "leases").await.is_empty());
    let leases = queue
        .dequeue(DequeueRequest::new(["taken-back"], 10))
        .await
        .expect("claim");
    assert_eq!(leases.len(), 1, "{leases:?}");
    assert_eq!(leases[0].spec.id, task.id);
}

/// A running task that this release cannot read (written by a newer one, or damaged)
/// keeps its lease marker through recovery, so that the release that can read it
/// recovers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_leaves_the_lease_of_an_unreadable_task() {
    let (objects, _dir) = support::directory().expect("a directory");
    let queue = FileTaskQueue::new(Arc::clone(&objects));
    let task = spec("unreadable");
    queue.enqueue(vec![task.clone()]).await.expect("enqueue");
    let leases = queue
        .dequeue(DequeueRequest::new(["unreadable"], 1).lease(Duration::from_millis(1)))
        .await
        .expect("claim");
    assert_eq!(leases.len(), 1);
    let key = format!("tasks/{}", task.id);
    let stored = objects.get(&key).await.expect("read").expect("stored");
    objects
        .update(
            &key,
            Bytes::from_static(b"{\"from\":\"the future\"}\n"),
            &stored.version,
        )
        .await
        .expect("write")
        .expect("unchanged");
    tokio::time::sleep(Duration::from_millis(20)).await;
    let changes = queue.recover_expired(100).await.expect("recover");
    assert!(changes.is_empty(), "{changes:?}");
    assert_eq!(keys_under(objects.as_ref(), "leases").await.len(), 1);
    assert!(queue.get(task.id).await.expect("get").is_none());
    // Readable again (the newer release's worker wrote it back): recovered then.
    objects
        .update(
            &key,
            stored.bytes.clone(),
            &objects
                .get(&key)
                .await
                .expect("read")
                .expect("stored")
                .version,
        )
        .await
        .expect("write")
        .expect("unchanged");
    let changes = queue.recover_expired(100).await.expect("recover");
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes[0].state, TaskState::Queued);
}

/// A claim remembers a full page of ready markers for the claims right after it (a
/// directory lists in no order, so a page costs a read of every marker): a task this
/// process files ahead of that page is still taken first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_filed_ahead_of_a_remembered_page_is_taken_first() {
    let (objects, _dir) = support::directory().expect("a directory");
    let queue = FileTaskQueue::new(Arc::clone(&objects));
    let backlog: Vec<TaskSpec> = (0..300).map(|_| spec("remembered")).collect();
    queue.enqueue(backlog.clone()).await.expect("enqueue");
    let first = queue
        .dequeue(DequeueRequest::new(["remembered"], 1))
        .await
        .expect("claim");
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].spec.id, backlog[0].id, "enqueue order");
    let mut urgent = spec("remembered");
    urgent.priority = 10;
    queue.enqueue(vec![urgent.clone()]).await.expect("enqueue");
    let next = queue
        .dequeue(DequeueRequest::new(["remembered"], 2))
        .await
        .expect("claim");
    let ids: Vec<_> = next.iter().map(|lease| lease.spec.id).collect();
    assert_eq!(ids, vec![urgent.id, backlog[1].id]);
}

/// A marker one worker passes over (a name it does not run) stays in the remembered page
/// for another worker of the same process, which runs that name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_marker_passed_over_stays_for_a_worker_that_runs_its_name() {
    let (objects, _dir) = support::directory().expect("a directory");
    let queue = FileTaskQueue::new(Arc::clone(&objects));
    let mut other = spec("names");
    other.name = "other.name".to_owned();
    let mut specs = vec![other.clone()];
    specs.extend((0..300).map(|_| spec("names")));
    queue.enqueue(specs.clone()).await.expect("enqueue");
    let first = queue
        .dequeue(DequeueRequest::new(["names"], 1).only_names(["markers.test"], None))
        .await
        .expect("claim");
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].spec.id, specs[1].id);
    let next = queue
        .dequeue(DequeueRequest::new(["names"], 1).only_names(["other.name"], None))
        .await
        .expect("claim");
    let ids: Vec<_> = next.iter().map(|lease| lease.spec.id).collect();
    assert_eq!(ids, vec![other.id]);
}

/// Recovery judges a young lease marker by the write its body names for its own claim:
/// one its task has not had yet is a claim on its way, and stays; one the task has had
/// without being held by it files nothing, and goes. Bodies shared by several claims
/// (this release's markers written together) name each claim's write by its token; a
/// body of one claim (an earlier release's too) names its write first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_judges_a_lease_marker_by_its_own_claims_write() {
    let (objects, _dir) = support::directory().expect("a directory");
    let queue = FileTaskQueue::new(Arc::clone(&objects));
    let task = spec("judged");
    queue.enqueue(vec![task.clone()]).await.expect("enqueue");
    let ready = keys_under(objects.as_ref(), "ready").await;
    let write: u64 = ready[0]
        .rsplit_once('-')
        .expect("a write")
        .1
        .parse()
        .expect("a number");
    let now = chrono::Utc::now().timestamp_micros();
    let id = task.id.as_uuid().simple();
    let other = uuid::Uuid::new_v4().simple();
    for (body_of, stays) in [
        // Its own claim on its way, beside one of a lower write.
        (
            Box::new(move |token: &str| {
                format!("{} {other}:1 {token}:{} {now}", write + 1, write + 1)
            }) as Box<dyn Fn(&str) -> String>,
            true,
        ),
        // Its own claim's write is the task's, which it does not hold: files nothing,
        // although another claim of the body is on its way.
        (
            Box::new(move |token: &str| {
                format!("{} {other}:{} {token}:{write} {now}", write + 5, write + 5)
            }),
            false,
        ),
        // One claim's body, on its way.
        (
            Box::new(move |_: &str| format!("{} {now}", write + 1)),
            true,
        ),
    ] {
        let token = uuid::Uuid::new_v4().simple().to_string();
        let lease = format!("leases/{id}.{token}");
        let body = body_of(&token);
        objects
            .create(&lease, Bytes::from(body.clone()))
            .await
            .expect("write")
            .expect("absent");
        queue.recover_expired(100).await.expect("recover");
        let left = keys_under(objects.as_ref(), "leases").await;
        if stays {
            assert_eq!(
                left,
                vec![lease.clone()],
                "a claim on its way stays: {body}"
            );
            objects.delete(&lease).await.expect("delete");
        } else {
            assert!(left.is_empty(), "a marker that files nothing goes: {body}");
        }
    }
    let leases = queue
        .dequeue(DequeueRequest::new(["judged"], 10))
        .await
        .expect("claim");
    assert_eq!(leases.len(), 1, "the task stays queued: {leases:?}");
}
