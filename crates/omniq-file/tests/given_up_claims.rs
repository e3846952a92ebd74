//! A claim its caller gives up on (a worker bounds every store call, and a claim on a
//! slow bucket is many requests) hands back the tasks it had taken: they are queued again
//! at once, their attempt given back, instead of running for nobody until their lease
//! lapses.

// Only the directory store: a rule of the queue, not of a store.
#[allow(dead_code)]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use omniq_file::{FileTaskQueue, Objects, Stored, Version};
use omniq_models::{TaskId, TaskSpec, TaskState};
use omniq_storage::{BoxFuture, DequeueRequest, StoreResult, TaskQueue};
use tokio::sync::{Notify, watch};

/// Objects whose replace of one task's object never answers while `stalling` is set: a
/// store that stopped answering one request. Counts the replaces that did answer.
#[derive(Debug)]
struct StallOne {
    inner: Arc<dyn Objects>,
    key: String,
    stalling: AtomicBool,
    stalled: Notify,
    replaced: watch::Sender<usize>,
}

impl Objects for StallOne {
    fn get(&self, key: &str) -> BoxFuture<'_, StoreResult<Option<Stored>>> {
        self.inner.get(key)
    }

    fn create(&self, key: &str, bytes: Bytes) -> BoxFuture<'_, StoreResult<Option<Version>>> {
        self.inner.create(key, bytes)
    }

    fn update(
        &self,
        key: &str,
        bytes: Bytes,
        expected: &Version,
    ) -> BoxFuture<'_, StoreResult<Option<Version>>> {
        if key == self.key && self.stalling.load(Ordering::SeqCst) {
            self.stalled.notify_one();
            return Box::pin(std::future::pending());
        }
        let update = self.inner.update(key, bytes, expected);
        Box::pin(async move {
            let written = update.await;
            self.replaced.send_modify(|n| *n += 1);
            written
        })
    }

    fn delete(&self, key: &str) -> BoxFuture<'_, StoreResult<()>> {
        self.inner.delete(key)
    }

    fn delete_if(&self, key: &str, expected: &Version) -> BoxFuture<'_, StoreResult<bool>> {
        self.inner.delete_if(key, expected)
    }

    fn list(&self, prefix: &str) -> BoxFuture<'_, StoreResult<Vec<String>>> {
        self.inner.list(prefix)
    }

    fn now(&self) -> BoxFuture<'_, StoreResult<DateTime<Utc>>> {
        self.inner.now()
    }
}

fn spec(queue: &str) -> TaskSpec {
    let mut spec = TaskSpec::stored(
        TaskId::new(),
        "given-up.test".to_owned(),
        b"payload".to_vec(),
        Utc::now(),
    );
    spec.queue = queue.to_owned();
    spec
}

const BOUND: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_given_up_hands_back_the_tasks_it_took() {
    let (directory, _dir) = support::directory().expect("a directory");
    let (taken, stuck) = (spec("given-up"), spec("given-up"));
    let (replaced, mut replaces) = watch::channel(0);
    let objects = Arc::new(StallOne {
        inner: directory,
        key: format!("tasks/{}", stuck.id),
        stalling: AtomicBool::new(true),
        stalled: Notify::new(),
        replaced,
    });
    let queue = FileTaskQueue::new(Arc::clone(&objects) as Arc<dyn Objects>);
    queue
        .enqueue(vec![taken.clone(), stuck.clone()])
        .await
        .expect("enqueue");

    // One claim for both: the first task is taken, the second's write never answers.
    let stalled = objects.stalled.notified();
    let claim = tokio::spawn({
        let queue = queue.clone();
        async move { queue.dequeue(DequeueRequest::new(["given-up"], 2)).await }
    });
    tokio::time::timeout(BOUND, stalled)
        .await
        .expect("the second task's write starts");
    tokio::time::timeout(BOUND, replaces.wait_for(|n| *n >= 1))
        .await
        .expect("the first task is taken")
        .expect("watching");
    let running = queue.get(taken.id).await.expect("get").expect("stored");
    assert_eq!(running.state, TaskState::Running);
    assert_eq!(running.attempts, 1);

    // The caller gives up (as a worker's store timeout does).
    claim.abort();
    assert!(claim.await.expect_err("aborted").is_cancelled());

    // The taken task is queued again, its attempt given back, without waiting out a lease.
    tokio::time::timeout(BOUND, replaces.wait_for(|n| *n >= 2))
        .await
        .expect("the task is handed back")
        .expect("watching");
    let back = queue.get(taken.id).await.expect("get").expect("stored");
    assert_eq!(back.state, TaskState::Queued, "{back:?}");
    assert_eq!(back.attempts, 0, "{back:?}");
    assert!(back.errors.is_empty(), "{back:?}");

    // The store answers again: both tasks are claimed, each on its first attempt.
    objects.stalling.store(false, Ordering::SeqCst);
    let leases = queue
        .dequeue(DequeueRequest::new(["given-up"], 2))
        .await
        .expect("claim");
    let mut claimed: Vec<(TaskId, u32)> = leases.iter().map(|l| (l.spec.id, l.attempt)).collect();
    claimed.sort();
    let mut expected = vec![(taken.id, 1), (stuck.id, 1)];
    expected.sort();
    assert_eq!(claimed, expected);
}
