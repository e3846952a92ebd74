//! A task queue that declares fewer capabilities than the one it wraps.

use std::sync::Arc;
use std::time::Duration;

use omniq_models::{TaskId, TaskRecord, TaskSpec};

use crate::{
    BoxFuture, Cancellation, Capabilities, Capability, Completed, Completion, DequeueRequest,
    EnqueueOutcome, Lease, LeaseRef, LeaseStatus, LimiterState, LimiterVersion, PurgeRequest,
    QueueStats, RedriveTarget, StateChange, StoreResult, TaskQuery, TaskQueue,
};

/// The backend name a [`Restricted`] queue's refusals carry.
const BACKEND: &str = "restricted";

/// A [`TaskQueue`] that declares only `capabilities` and refuses, with
/// [`StoreError::Unsupported`](crate::StoreError::Unsupported), every call that needs one
/// it lacks, the way a broker backend refuses what it cannot hold. The conformance suite
/// runs over it to prove that it skips what a store does not declare and checks the
/// refusals; facade tests use it as a stand-in for such a backend.
#[derive(Debug, Clone)]
pub struct Restricted {
    inner: Arc<dyn TaskQueue>,
    capabilities: Capabilities,
}

impl Restricted {
    /// Wraps `inner`, declaring what both `inner` and `capabilities` have.
    pub fn new(inner: Arc<dyn TaskQueue>, capabilities: Capabilities) -> Self {
        let capabilities = inner
            .capabilities()
            .missing()
            .fold(capabilities, Capabilities::without);
        Self {
            inner,
            capabilities,
        }
    }

    fn refuse<T: Send + 'static>(
        &self,
        capability: Capability,
    ) -> Option<BoxFuture<'static, StoreResult<T>>> {
        match self.capabilities.require(BACKEND, capability) {
            Ok(()) => None,
            Err(err) => Some(Box::pin(async move { Err(err) })),
        }
    }
}

impl TaskQueue for Restricted {
    fn capabilities(&self) -> Capabilities {
        self.capabilities
    }

    fn enqueue(&self, tasks: Vec<TaskSpec>) -> BoxFuture<'_, StoreResult<Vec<EnqueueOutcome>>> {
        if let Err(err) = self.capabilities.check_specs(BACKEND, &tasks) {
            return Box::pin(async move { Err(err) });
        }
        self.inner.enqueue(tasks)
    }

    fn dequeue(&self, request: DequeueRequest) -> BoxFuture<'_, StoreResult<Vec<Lease>>> {
        self.inner.dequeue(request)
    }

    fn heartbeat(
        &self,
        leases: Vec<LeaseRef>,
        extend: Duration,
    ) -> BoxFuture<'_, StoreResult<Vec<LeaseStatus>>> {
        self.inner.heartbeat(leases, extend)
    }

    fn complete(&self, completions: Vec<Completion>) -> BoxFuture<'_, StoreResult<Completed>> {
        self.inner.complete(completions)
    }

    fn recover_expired(&self, limit: usize) -> BoxFuture<'_, StoreResult<Vec<StateChange>>> {
        self.inner.recover_expired(limit)
    }

    fn expire_due(&self, limit: usize) -> BoxFuture<'_, StoreResult<Vec<StateChange>>> {
        self.inner.expire_due(limit)
    }

    fn redrive(&self, target: RedriveTarget) -> BoxFuture<'_, StoreResult<Vec<TaskId>>> {
        self.refuse(Capability::Redrive)
            .unwrap_or_else(|| self.inner.redrive(target))
    }

    fn purge(&self, request: PurgeRequest) -> BoxFuture<'_, StoreResult<u64>> {
        self.refuse(Capability::Purge)
            .unwrap_or_else(|| self.inner.purge(request))
    }

    fn get(&self, id: TaskId) -> BoxFuture<'_, StoreResult<Option<TaskRecord>>> {
        self.refuse(Capability::Inspection)
            .unwrap_or_else(|| self.inner.get(id))
    }

    fn list(&self, query: TaskQuery) -> BoxFuture<'_, StoreResult<Vec<TaskRecord>>> {
        self.refuse(Capability::Inspection)
            .unwrap_or_else(|| self.inner.list(query))
    }

    fn stats(&self, queue: String) -> BoxFuture<'_, StoreResult<QueueStats>> {
        self.refuse(Capability::Inspection)
            .unwrap_or_else(|| self.inner.stats(queue))
    }

    fn queue_names(&self) -> BoxFuture<'_, StoreResult<Vec<String>>> {
        self.refuse(Capability::QueueListing)
            .unwrap_or_else(|| self.inner.queue_names())
    }

    fn cancel(&self, id: TaskId, reason: String) -> BoxFuture<'_, StoreResult<Cancellation>> {
        self.refuse(Capability::Cancellation)
            .unwrap_or_else(|| self.inner.cancel(id, reason))
    }

    fn set_queue_paused(&self, queue: String, paused: bool) -> BoxFuture<'_, StoreResult<bool>> {
        self.refuse(Capability::QueuePause)
            .unwrap_or_else(|| self.inner.set_queue_paused(queue, paused))
    }

    fn paused_queues(&self) -> BoxFuture<'_, StoreResult<Vec<String>>> {
        self.refuse(Capability::QueuePause)
            .unwrap_or_else(|| self.inner.paused_queues())
    }

    fn report_progress(
        &self,
        lease: LeaseRef,
        progress: serde_json::Value,
        extend: Duration,
    ) -> BoxFuture<'_, StoreResult<LeaseStatus>> {
        self.refuse(Capability::Progress)
            .unwrap_or_else(|| self.inner.report_progress(lease, progress, extend))
    }

    fn read_limiter(&self, key: String) -> BoxFuture<'_, StoreResult<Option<LimiterState>>> {
        self.refuse(Capability::Limits)
            .unwrap_or_else(|| self.inner.read_limiter(key))
    }

    fn write_limiter(
        &self,
        key: String,
        expected: Option<LimiterVersion>,
        bytes: Vec<u8>,
    ) -> BoxFuture<'_, StoreResult<bool>> {
        self.refuse(Capability::Limits)
            .unwrap_or_else(|| self.inner.write_limiter(key, expected, bytes))
    }

    fn wait_for_tasks(&self, queues: &[String], timeout: Duration) -> BoxFuture<'_, ()> {
        self.inner.wait_for_tasks(queues, timeout)
    }

    fn stop_claiming(&self, queues: &[String]) -> BoxFuture<'_, StoreResult<()>> {
        self.inner.stop_claiming(queues)
    }
}
