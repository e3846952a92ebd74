//! Store wrappers that fail on command, for the worker's fault tests: a queue whose calls
//! fail, whose heartbeats fail, whose completion replies are lost or whose purges are slow,
//! and a result store that is down. Each fault is a switch the test flips; every failure is
//! counted, so tests wait on counts instead of sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use omniq_models::{TaskId, TaskRecord, TaskResult, TaskSpec};
use omniq_storage::{
    BoxFuture, Cancellation, Completed, Completion, DequeueRequest, EnqueueOutcome, Lease,
    LeaseRef, LeaseStatus, PurgeRequest, QueueStats, RedriveTarget, ResultStore, StateChange,
    StoreError, StoreResult, TaskQuery, TaskQueue,
};
use tokio::sync::Notify;

/// The switches of one wrapper, shared with the test.
#[derive(Debug, Default)]
pub struct Faults {
    /// Every call fails as an outage.
    pub down: AtomicBool,
    /// Heartbeats fail as an outage.
    pub heartbeats_fail: AtomicBool,
    /// Claims are made, then their reply is lost (an outage is reported).
    pub lose_claim_replies: AtomicBool,
    /// Completions are applied, then their reply is lost (an outage is reported).
    pub lose_completion_replies: AtomicBool,
    /// Purges take this long (milliseconds) before they run.
    pub purge_delay_ms: AtomicU64,
    /// Calls failed on purpose so far.
    pub failures: AtomicU64,
    changed: Notify,
}

impl Faults {
    fn fail(&self, what: &str) -> StoreError {
        self.failures.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
        StoreError::unavailable("faulty", format!("injected fault: {what}"))
    }

    fn check(&self, what: &str) -> StoreResult<()> {
        if self.down.load(Ordering::SeqCst) {
            return Err(self.fail(what));
        }
        Ok(())
    }

    /// Waits until at least `n` calls have failed on purpose, or panics after `bound`.
    pub async fn wait_for_failures(&self, n: u64, bound: Duration) {
        tokio::time::timeout(bound, async {
            loop {
                let notified = self.changed.notified();
                if self.failures.load(Ordering::SeqCst) >= n {
                    return;
                }
                notified.await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("fewer than {n} injected failures within {bound:?}"));
    }
}

/// A task queue that fails on command.
#[derive(Debug)]
pub struct FaultyQueue {
    pub inner: Arc<dyn TaskQueue>,
    pub faults: Arc<Faults>,
}

impl TaskQueue for FaultyQueue {
    fn enqueue(&self, tasks: Vec<TaskSpec>) -> BoxFuture<'_, StoreResult<Vec<EnqueueOutcome>>> {
        Box::pin(async move {
            self.faults.check("enqueue")?;
            self.inner.enqueue(tasks).await
        })
    }

    fn dequeue(&self, request: DequeueRequest) -> BoxFuture<'_, StoreResult<Vec<Lease>>> {
        Box::pin(async move {
            self.faults.check("dequeue")?;
            let leases = self.inner.dequeue(request).await?;
            if !leases.is_empty() && self.faults.lose_claim_replies.load(Ordering::SeqCst) {
                return Err(self.faults.fail("claim reply lost"));
            }
            Ok(leases)
        })
    }

    fn heartbeat(
        &self,
        leases: Vec<LeaseRef>,
        extend: Duration,
    ) -> BoxFuture<'_, StoreResult<Vec<LeaseStatus>>> {
        Box::pin(async move {
            self.faults.check("heartbeat")?;
            if self.faults.heartbeats_fail.load(Ordering::SeqCst) {
                return Err(self.faults.fail("heartbeat"));
            }
            self.inner.heartbeat(leases, extend).await
        })
    }

    fn complete(&self, completions: Vec<Completion>) -> BoxFuture<'_, StoreResult<Completed>> {
        Box::pin(async move {
            self.faults.check("complete")?;
            let completed = self.inner.complete(completions).await?;
            if self.faults.lose_completion_replies.load(Ordering::SeqCst) {
                return Err(self.faults.fail("complete reply lost"));
            }
            Ok(completed)
        })
    }

    fn recover_expired(&self, limit: usize) -> BoxFuture<'_, StoreResult<Vec<StateChange>>> {
        Box::pin(async move {
            self.faults.check("recover")?;
            self.inner.recover_expired(limit).await
        })
    }

    fn expire_due(&self, limit: usize) -> BoxFuture<'_, StoreResult<Vec<StateChange>>> {
        Box::pin(async move {
            self.faults.check("expire")?;
            self.inner.expire_due(limit).await
        })
    }

    fn redrive(&self, target: RedriveTarget) -> BoxFuture<'_, StoreResult<Vec<TaskId>>> {
        Box::pin(async move {
            self.faults.check("redrive")?;
            self.inner.redrive(target).await
        })
    }

    fn purge(&self, request: PurgeRequest) -> BoxFuture<'_, StoreResult<u64>> {
        Box::pin(async move {
            self.faults.check("purge")?;
            let delay = self.faults.purge_delay_ms.load(Ordering::SeqCst);
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            self.inner.purge(request).await
        })
    }

    fn get(&self, id: TaskId) -> BoxFuture<'_, StoreResult<Option<TaskRecord>>> {
        Box::pin(async move {
            self.faults.check("get")?;
            self.inner.get(id).await
        })
    }

    fn list(&self, query: TaskQuery) -> BoxFuture<'_, StoreResult<Vec<TaskRecord>>> {
        Box::pin(async move {
            self.faults.check("list")?;
            self.inner.list(query).await
        })
    }

    fn stats(&self, queue: String) -> BoxFuture<'_, StoreResult<QueueStats>> {
        Box::pin(async move {
            self.faults.check("stats")?;
            self.inner.stats(queue).await
        })
    }

    fn cancel(&self, id: TaskId, reason: String) -> BoxFuture<'_, StoreResult<Cancellation>> {
        Box::pin(async move {
            self.faults.check("cancel")?;
            self.inner.cancel(id, reason).await
        })
    }

    fn wait_for_tasks(&self, queues: &[String], timeout: Duration) -> BoxFuture<'_, ()> {
        self.inner.wait_for_tasks(queues, timeout)
    }
}

/// A result store that fails on command.
#[derive(Debug)]
pub struct FaultyResults {
    pub inner: Arc<dyn ResultStore>,
    pub faults: Arc<Faults>,
}

impl ResultStore for FaultyResults {
    fn put(&self, results: Vec<TaskResult>) -> BoxFuture<'_, StoreResult<()>> {
        Box::pin(async move {
            self.faults.check("put results")?;
            self.inner.put(results).await
        })
    }

    fn get(&self, id: TaskId) -> BoxFuture<'_, StoreResult<Option<TaskResult>>> {
        Box::pin(async move {
            self.faults.check("get result")?;
            self.inner.get(id).await
        })
    }

    fn delete(&self, id: TaskId) -> BoxFuture<'_, StoreResult<bool>> {
        Box::pin(async move {
            self.faults.check("delete result")?;
            self.inner.delete(id).await
        })
    }

    fn purge_expired(&self) -> BoxFuture<'_, StoreResult<u64>> {
        Box::pin(async move {
            self.faults.check("purge results")?;
            self.inner.purge_expired().await
        })
    }
}

/// An OmniQ over the harness's stores, with the queue and the result store behind fault
/// switches of their own.
pub fn faulty(
    omniq: &omniq_async::AsyncOmniQ,
) -> (omniq_async::AsyncOmniQ, Arc<Faults>, Arc<Faults>) {
    let stores = omniq.stores().clone();
    let queue_faults = Arc::new(Faults::default());
    let result_faults = Arc::new(Faults::default());
    let wrapped = omniq_async::Stores {
        queue: Arc::new(FaultyQueue {
            inner: stores.queue,
            faults: Arc::clone(&queue_faults),
        }),
        results: Arc::new(FaultyResults {
            inner: stores.results,
            faults: Arc::clone(&result_faults),
        }),
        events: stores.events,
        schedules: stores.schedules,
    };
    let faulty = omniq_async::AsyncOmniQ::with_stores(omniq.settings().clone(), wrapped);
    (faulty, queue_faults, result_faults)
}
