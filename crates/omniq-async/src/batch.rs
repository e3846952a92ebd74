//! Batches: tasks enqueued as a group, with callbacks that run once when every member has
//! finished.
//!
//! A batch is built on dependencies, so it holds on every backend that holds those
//! ([`Capability::Dependencies`](omniq_storage::Capability::Dependencies)) and is as
//! durable as the tasks themselves: each callback is a task that depends on every member,
//! blocked until the last one ends for good (a member being retried has not ended), then
//! queued once by the store. No worker keeps a batch in memory, so a worker killed mid-batch
//! loses nothing. A callback reads what each member returned, or how it failed, with
//! [`TaskContext::parent_results`](crate::TaskContext::parent_results).

use futures_util::StreamExt;
use omniq_models::{RunWhen, TaskId, TaskSpec, TaskState};
use omniq_storage::Capability;
use serde::{Deserialize, Serialize};

use crate::{AsyncOmniQ, EnqueueBuilder, Result};

/// The metadata key every member and callback of a batch carries, with the batch's id.
pub const BATCH_METADATA_KEY: &str = "omniq.batch";

/// Member records read at once by [`Batch::status`].
const READS_IN_FLIGHT: usize = 32;

/// A group of tasks to enqueue together, with callbacks; from [`AsyncOmniQ::batch`].
#[must_use = "a batch does nothing until it is enqueued"]
pub struct BatchBuilder {
    omniq: AsyncOmniQ,
    id: TaskId,
    members: Vec<Result<TaskSpec>>,
    callbacks: Vec<(RunWhen, Result<TaskSpec>)>,
}

impl std::fmt::Debug for BatchBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchBuilder")
            .field("id", &self.id)
            .field("members", &self.members.len())
            .field("callbacks", &self.callbacks.len())
            .finish_non_exhaustive()
    }
}

impl BatchBuilder {
    pub(crate) fn new(omniq: AsyncOmniQ) -> Self {
        Self {
            omniq,
            id: TaskId::new(),
            members: Vec::new(),
            callbacks: Vec::new(),
        }
    }

    /// Adds a member, with the options its builder set (`omniq.enqueue(task)` and any of
    /// its options, not awaited).
    pub fn member<R>(mut self, member: EnqueueBuilder<R>) -> Self {
        self.members.push(member.into_spec());
        self
    }

    /// Adds every member of `members`.
    pub fn members<R>(mut self, members: impl IntoIterator<Item = EnqueueBuilder<R>>) -> Self {
        self.members
            .extend(members.into_iter().map(EnqueueBuilder::into_spec));
        self
    }

    /// A callback that runs once every member has succeeded; it ends Cancelled, without
    /// running, as soon as a member has failed for good, been cancelled or expired. (A
    /// callback for failures is an [`on_complete`](Self::on_complete) that looks at the
    /// outcomes: it runs after the last member, not at the first failure.)
    pub fn on_success<R>(self, callback: EnqueueBuilder<R>) -> Self {
        self.callback(RunWhen::ParentsSucceeded, callback)
    }

    /// A callback that runs once every member has finished, whatever the outcomes.
    pub fn on_complete<R>(self, callback: EnqueueBuilder<R>) -> Self {
        self.callback(RunWhen::ParentsFinished, callback)
    }

    fn callback<R>(mut self, when: RunWhen, callback: EnqueueBuilder<R>) -> Self {
        self.callbacks.push((when, callback.into_spec()));
        self
    }

    /// Enqueues the members and the callbacks in one call to the store. On memory, SQLite,
    /// PostgreSQL, MariaDB/MySQL and Redis that call is atomic (all or, on an error,
    /// none); on NATS and the object stores it writes task by task, and an error part way
    /// can leave members without their callbacks (docs/flow-control.md).
    ///
    /// A member deduplicated by its unique key joins the batch as the task already stored
    /// (which keeps its own metadata, and may have finished already). A callback's own
    /// `depends_on` come after the members; its run condition is the batch's. A batch
    /// without members runs its `on_success` and `on_complete` callbacks at once.
    ///
    /// # Errors
    /// A payload that cannot be encoded or exceeds the size limit (nothing is enqueued),
    /// an unsupported-operation store error when the task queue holds no dependencies and
    /// the batch has callbacks (nothing is enqueued), or a store error.
    pub async fn enqueue(self) -> Result<Batch> {
        if !self.callbacks.is_empty() {
            // Refused here, not by each store: a store without dependencies may not check
            // them, and an empty batch's callbacks depend on nothing.
            self.omniq
                .capabilities()
                .require("this task queue", Capability::Dependencies)?;
        }
        let id = self.id.to_string();
        let mut members = self
            .members
            .into_iter()
            .collect::<Result<Vec<TaskSpec>>>()?;
        for member in &mut members {
            member
                .metadata
                .insert(BATCH_METADATA_KEY.to_owned(), id.clone());
        }
        let parents: Vec<TaskId> = members.iter().map(|member| member.id).collect();
        let mut callbacks = Vec::with_capacity(self.callbacks.len());
        for (when, callback) in self.callbacks {
            let mut callback = callback?;
            // The members first, in order: what `parents()` and `parent_results()` list.
            let own = std::mem::take(&mut callback.depends_on);
            callback.depends_on = parents.iter().copied().chain(own).collect();
            callback.run_when = when;
            callback
                .metadata
                .insert(BATCH_METADATA_KEY.to_owned(), id.clone());
            callbacks.push(callback);
        }
        let member_count = members.len();
        let mut specs = members;
        specs.extend(callbacks);
        let expected = specs.len();
        let handles = self.omniq.submit::<()>(specs).await?;
        if handles.len() != expected {
            return Err(crate::Error::Store(omniq_storage::StoreError::Invalid(
                format!(
                    "the store returned {} outcomes for a batch of {expected} tasks",
                    handles.len()
                ),
            )));
        }
        let (members, callbacks) = handles.split_at(member_count);
        Ok(Batch {
            id: self.id,
            members: members.iter().map(crate::TaskHandle::id).collect(),
            callbacks: callbacks.iter().map(crate::TaskHandle::id).collect(),
        })
    }
}

/// An enqueued batch: its id (in every member's and callback's metadata, under
/// [`BATCH_METADATA_KEY`]), its members and its callbacks. Serializable, so that an
/// application can keep it and ask for its status later.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    /// The batch's id.
    pub id: TaskId,
    /// The members' task ids, in the order added.
    pub members: Vec<TaskId>,
    /// The callbacks' task ids, in the order added.
    pub callbacks: Vec<TaskId>,
}

/// How far a batch has come: its members counted by state.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BatchStatus {
    /// Members per state, states in lifecycle order; states with no member left out.
    pub counts: Vec<(TaskState, u64)>,
    /// Members no longer stored (purged after they finished).
    pub purged: u64,
    /// Every member has finished (or was purged, which only a finished task is).
    pub finished: bool,
}

impl BatchStatus {
    /// How many members are in `state`.
    pub fn count(&self, state: TaskState) -> u64 {
        self.counts
            .iter()
            .find(|(s, _)| *s == state)
            .map_or(0, |(_, n)| *n)
    }
}

impl Batch {
    /// Counts the members by state, reading each member's record.
    ///
    /// # Errors
    /// A store error.
    pub async fn status(&self, omniq: &AsyncOmniQ) -> Result<BatchStatus> {
        let mut states = futures_util::stream::iter(self.members.iter().copied())
            .map(|id| omniq.task(id))
            .buffer_unordered(READS_IN_FLIGHT);
        let mut counts: Vec<(TaskState, u64)> = Vec::new();
        let mut purged = 0;
        let mut finished = true;
        while let Some(record) = states.next().await {
            match record? {
                Some(record) => {
                    finished &= record.state.is_terminal();
                    match counts.iter_mut().find(|(s, _)| *s == record.state) {
                        Some((_, n)) => *n += 1,
                        None => counts.push((record.state, 1)),
                    }
                }
                None => purged += 1,
            }
        }
        counts.sort_by_key(|(state, _)| TaskState::ALL.iter().position(|s| s == state));
        Ok(BatchStatus {
            counts,
            purged,
            finished,
        })
    }
}

impl AsyncOmniQ {
    /// Starts a batch: members added with [`member`](BatchBuilder::member), callbacks with
    /// [`on_success`](BatchBuilder::on_success) and
    /// [`on_complete`](BatchBuilder::on_complete), all enqueued at once by
    /// [`enqueue`](BatchBuilder::enqueue). Each callback runs once, after the last member
    /// has finished (a member being retried has not), and reads the members' outcomes with
    /// [`TaskContext::parent_results`](crate::TaskContext::parent_results).
    ///
    /// ```no_run
    /// use omniq_async::{AsyncOmniQ, Task, TaskContext, TaskError};
    /// use serde::{Deserialize, Serialize};
    ///
    /// #[derive(Serialize, Deserialize)]
    /// struct Resize { image: u32 }
    ///
    /// impl Task for Resize {
    ///     const NAME: &'static str = "images.resize";
    ///     type Output = u64; // bytes written
    ///     async fn run(self, _ctx: TaskContext) -> Result<u64, TaskError> {
    ///         Ok(u64::from(self.image) * 1_000)
    ///     }
    /// }
    ///
    /// #[derive(Serialize, Deserialize)]
    /// struct Report;
    ///
    /// impl Task for Report {
    ///     const NAME: &'static str = "images.report";
    ///     type Output = String;
    ///     async fn run(self, ctx: TaskContext) -> Result<String, TaskError> {
    ///         let outcomes = ctx.parent_results::<u64>().await;
    ///         let written: u64 = outcomes.iter().filter_map(|(_, r)| r.as_ref().ok()).sum();
    ///         let failed = outcomes.iter().filter(|(_, r)| r.is_err()).count();
    ///         Ok(format!("{written} bytes, {failed} failed"))
    ///     }
    /// }
    ///
    /// # async fn demo() -> omniq_async::Result<()> {
    /// let omniq = AsyncOmniQ::from_env().await?
    ///     .register::<Resize>()
    ///     .register::<Report>();
    /// let batch = omniq
    ///     .batch()
    ///     .members((1..=3).map(|image| omniq.enqueue(Resize { image })))
    ///     .on_complete(omniq.enqueue(Report))
    ///     .enqueue()
    ///     .await?;
    /// let report = omniq.handle::<String>(batch.callbacks[0]);
    /// // ... once a worker has run them:
    /// let status = batch.status(&omniq).await?;
    /// assert!(status.finished);
    /// # let _ = report;
    /// # Ok(()) }
    /// ```
    pub fn batch(&self) -> BatchBuilder {
        BatchBuilder::new(self.clone())
    }
}
