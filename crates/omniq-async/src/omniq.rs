use std::sync::Arc;

use chrono::Utc;
use omniq_config::Settings;
use omniq_events::EventLogger;
use omniq_models::{
    ScheduleTrigger, TaskEvent, TaskEventKind, TaskId, TaskOptions, TaskRecord, TaskSpec, TaskState,
};
use omniq_serialization::PayloadCodec;
use omniq_storage::{
    CancelOutcome, Capabilities, EnqueueOutcome, PurgeRequest, QueueStats, RedriveTarget,
    TaskQuery, TransactionalEnqueue,
};
use omniq_workers::{
    AsyncTaskFn, BlockingTask, BlockingTaskFn, LiveRegistry, LoadError, LocalTask, Model,
    ModelLoader, Registry, Task, TaskDefinition,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::enqueue::EnqueueBuilder;
use crate::events::Events;
use crate::schedules::{ScheduleBuilder, Schedules};
use crate::stores::{self, Stores};
use crate::worker::WorkerBuilder;
use crate::{Error, Result, TaskHandle};

/// The OmniQ client for async code: registers tasks, enqueues them, reads results and
/// starts workers. Cheap to clone; clones share everything.
#[derive(Debug, Clone)]
pub struct AsyncOmniQ {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) settings: Settings,
    pub(crate) stores: Stores,
    pub(crate) events: EventLogger,
    pub(crate) codec: PayloadCodec,
    /// Shared with running workers: a registration reaches them at their next claim.
    pub(crate) registry: LiveRegistry,
    /// Enqueueing inside a caller's transaction, when the task queue's backend has it.
    pub(crate) transactional: Option<Arc<dyn TransactionalEnqueue>>,
}

/// The reason a cancel through the facade gives.
const CANCEL_REASON: &str = "cancelled on request";

impl AsyncOmniQ {
    /// Builds from `OMNIQ_*` environment variables (and the YAML file `OMNIQ_CONFIG` names).
    /// With nothing set, every store is the embedded SQLite file `./.omniq/omniq.db`.
    ///
    /// # Errors
    /// A configuration error naming the bad key, or a store that cannot be opened.
    pub async fn from_env() -> Result<Self> {
        Self::from_settings(Settings::from_env()?).await
    }

    /// Builds from explicit settings.
    ///
    /// # Errors
    /// Invalid settings, a backend this build does not include, or a store that cannot be
    /// opened.
    pub async fn from_settings(settings: Settings) -> Result<Self> {
        settings.validate()?;
        let (stores, transactional) = stores::open(&settings).await?;
        Ok(Self::assemble(settings, stores, transactional))
    }

    /// Builds on stores you opened yourself (custom backends, shared test stores).
    ///
    /// # Panics
    /// When called outside a tokio runtime.
    pub fn with_stores(settings: Settings, stores: Stores) -> Self {
        Self::assemble(settings, stores, None)
    }

    fn assemble(
        settings: Settings,
        stores: Stores,
        transactional: Option<Arc<dyn TransactionalEnqueue>>,
    ) -> Self {
        let codec = PayloadCodec::new(settings.codec, settings.max_payload_bytes);
        let events = EventLogger::start(stores.events.clone());
        Self {
            inner: Arc::new(Inner {
                settings,
                stores,
                events,
                codec,
                registry: LiveRegistry::default(),
                transactional,
            }),
        }
    }

    /// The settings in use.
    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// The stores in use.
    pub fn stores(&self) -> &Stores {
        &self.inner.stores
    }

    fn with_registry(self, change: impl FnOnce(&mut Registry)) -> Self {
        self.inner.registry.update(change);
        self
    }

    /// Registers an application value (a database pool, an HTTP client, a configuration)
    /// that every task run by workers started afterwards reaches by type with
    /// [`TaskContext::state`](crate::TaskContext::state). One value per type; a later one
    /// replaces an earlier one.
    ///
    /// ```no_run
    /// # async fn demo(pool: sqlx::PgPool) -> omniq_async::Result<()> {
    /// use omniq_async::AsyncOmniQ;
    ///
    /// let omniq = AsyncOmniQ::from_env().await?.state(pool);
    /// // In a task: `let pool = ctx.state::<sqlx::PgPool>()?;`
    /// # Ok(()) }
    /// ```
    pub fn state<T: Send + Sync + 'static>(self, value: T) -> Self {
        self.with_registry(|r| {
            r.provide(value);
        })
    }

    /// Registers how workers started afterwards load a [`Model`] by key, for tasks that
    /// receive it as a [`ModelRef`](crate::ModelRef) and call
    /// [`ModelRef::load`](crate::ModelRef::load): `load` answers `Ok(None)`
    /// when no row has the key (the task then fails permanently, saying the row is gone),
    /// and an error when it cannot tell (the attempt fails and is retried).
    ///
    /// ```no_run
    /// # async fn demo(omniq: omniq_async::AsyncOmniQ, pool: sqlx::PgPool) {
    /// use omniq_async::Model;
    ///
    /// struct User { id: i64, email: String }
    ///
    /// impl Model for User {
    ///     type Key = i64;
    ///     const NAME: &'static str = "user";
    ///     fn key(&self) -> i64 { self.id }
    /// }
    ///
    /// let omniq = omniq.model_loader::<User, _, _, _>(move |id| {
    ///     let pool = pool.clone();
    ///     async move {
    ///         let row: Option<(i64, String)> =
    ///             sqlx::query_as("SELECT id, email FROM users WHERE id = $1")
    ///                 .bind(id)
    ///                 .fetch_optional(&pool)
    ///                 .await?;
    ///         Ok::<_, sqlx::Error>(row.map(|(id, email)| User { id, email }))
    ///     }
    /// });
    /// # }
    /// ```
    pub fn model_loader<M, F, Fut, E>(self, load: F) -> Self
    where
        M: Model,
        F: Fn(M::Key) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<Option<M>, E>> + Send + 'static,
        E: Into<LoadError>,
    {
        self.state(ModelLoader::<M>::new(load))
    }

    /// Registers an async task type. Workers started afterwards run it.
    pub fn register<T: Task>(self) -> Self {
        self.with_registry(|r| {
            r.register::<T>();
        })
    }

    /// Registers a blocking task type; workers run it on threads.
    pub fn register_blocking<T: BlockingTask>(self) -> Self {
        self.with_registry(|r| {
            r.register_blocking::<T>();
        })
    }

    /// Registers a local task type: its future need not be `Send`; workers run it on
    /// their local threads (see [`WorkerKind::Local`](crate::WorkerKind::Local)).
    pub fn register_local<T: LocalTask>(self) -> Self {
        self.with_registry(|r| {
            r.register_local::<T>();
        })
    }

    /// Registers an async closure under `name`; its argument is the decoded payload, and
    /// a second argument, when the closure takes one, the attempt's [`TaskContext`].
    ///
    /// ```
    /// # async fn demo(omniq: omniq_async::AsyncOmniQ) {
    /// use omniq_async::TaskContext;
    ///
    /// let omniq = omniq
    ///     .register_fn("add", |(a, b): (i64, i64)| async move { Ok(a + b) })
    ///     .register_fn("attempt", |(): (), ctx: TaskContext| async move { Ok(ctx.attempt()) });
    /// # }
    /// ```
    ///
    /// [`TaskContext`]: crate::TaskContext
    pub fn register_fn<F, A, M>(self, name: impl Into<String>, f: F) -> Self
    where
        F: AsyncTaskFn<A, M>,
        A: DeserializeOwned + 'static,
        M: 'static,
    {
        self.with_registry(|r| {
            r.register_fn(name, TaskOptions::default(), f);
        })
    }

    /// Registers a blocking closure under `name`, taking the decoded payload (and, when it
    /// takes a second argument, the attempt's `TaskContext`); workers run it on threads.
    pub fn register_blocking_fn<F, A, M>(self, name: impl Into<String>, f: F) -> Self
    where
        F: BlockingTaskFn<A, M>,
        A: DeserializeOwned + Send + 'static,
        M: 'static,
    {
        self.with_registry(|r| {
            r.register_blocking_fn(name, TaskOptions::default(), f);
        })
    }

    /// Names of the registered tasks.
    pub fn registered(&self) -> Vec<String> {
        self.inner
            .registry
            .read(|registry| registry.names().into_iter().map(str::to_owned).collect())
    }

    /// Starts enqueueing a task; set options on the builder, then `.await` it.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # async fn demo<T: omniq_async::Task>(omniq: omniq_async::AsyncOmniQ, task: T) -> omniq_async::Result<()> {
    /// let handle = omniq.enqueue(task).priority(5).delay(Duration::from_secs(10)).await?;
    /// # Ok(()) }
    /// ```
    pub fn enqueue<T, M>(&self, task: T) -> EnqueueBuilder<T::Output>
    where
        T: TaskDefinition<M>,
    {
        EnqueueBuilder::new(
            self.clone(),
            T::NAME,
            self.inner.codec.encode(&task).map_err(Error::from),
            T::default_options(),
        )
    }

    /// Starts enqueueing a task by name, for closures registered with
    /// [`AsyncOmniQ::register_fn`]. `R` is the type the task returns.
    ///
    /// When a task is registered under `name` in this process, `R` must be the type it
    /// returns, or awaiting the builder fails with [`Error::ResultType`] and nothing is
    /// enqueued; a name registered only in other processes is not checked.
    pub fn enqueue_by_name<R: DeserializeOwned + 'static>(
        &self,
        name: impl Into<String>,
        args: impl Serialize,
    ) -> EnqueueBuilder<R> {
        let name = name.into();
        let (options, output) = self
            .inner
            .registry
            .read(|registry| (registry.options(&name), registry.output(&name)));
        let payload = match output {
            Some(output) if !output.is::<R>() => Err(Error::ResultType {
                task: name.clone(),
                registered: output.name(),
                requested: std::any::type_name::<R>(),
            }),
            _ => self.inner.codec.encode(&args).map_err(Error::from),
        };
        EnqueueBuilder::new(self.clone(), name, payload, options.unwrap_or_default())
    }

    /// Enqueues many tasks of one type in one round trip, with the type's options.
    ///
    /// # Errors
    /// An encoding error (nothing is enqueued) or a store error.
    pub async fn enqueue_many<T, M>(
        &self,
        tasks: impl IntoIterator<Item = T>,
    ) -> Result<Vec<TaskHandle<T::Output>>>
    where
        T: TaskDefinition<M>,
    {
        let now = Utc::now();
        let options = self.traced(self.resolve(T::default_options()));
        let specs = tasks
            .into_iter()
            .map(|task| {
                let payload = self.inner.codec.encode(&task)?;
                Ok(TaskSpec::new(T::NAME, payload, options.clone(), now))
            })
            .collect::<Result<Vec<_>>>()?;
        self.submit(specs).await
    }

    /// Adds the current span's trace context to the options' metadata (the `otel`
    /// feature, unless `trace_propagation` is off). Enqueues only: a schedule's fires do
    /// not belong to the trace of the request that made the schedule.
    #[cfg(feature = "otel")]
    pub(crate) fn traced(&self, mut options: TaskOptions) -> TaskOptions {
        if self.inner.settings.trace_propagation {
            omniq_workers::otel::inject_current(&mut options.metadata);
        }
        options
    }

    /// Without the `otel` feature, the options as they are.
    #[cfg(not(feature = "otel"))]
    pub(crate) fn traced(&self, options: TaskOptions) -> TaskOptions {
        options
    }

    /// Fills options left unset from the configured defaults.
    pub(crate) fn resolve(&self, mut options: TaskOptions) -> TaskOptions {
        let settings = &self.inner.settings;
        options.max_attempts = options.max_attempts.or(Some(settings.max_attempts));
        options.timeout = options.timeout.or(settings.timeout);
        options.ttl = options.ttl.or(settings.task_ttl);
        options
    }

    /// Records an enqueue the store accepted (events, metrics: see
    /// [`record_enqueued`](omniq_events::record_enqueued)) and hands out its handles.
    pub(crate) fn accepted<R>(
        &self,
        described: &[(String, String)],
        outcomes: &[EnqueueOutcome],
    ) -> Vec<TaskHandle<R>> {
        omniq_events::record_enqueued(
            &self.inner.events,
            described
                .iter()
                .map(|(name, queue)| (name.as_str(), queue.as_str())),
            outcomes,
        );
        outcomes
            .iter()
            .map(|outcome| {
                let deduplicated = matches!(outcome, EnqueueOutcome::Duplicate { .. });
                TaskHandle::new(self.clone(), outcome.id(), deduplicated)
            })
            .collect()
    }

    /// Stores specs and records the enqueue.
    pub(crate) async fn submit<R>(&self, specs: Vec<TaskSpec>) -> Result<Vec<TaskHandle<R>>> {
        let described = describe(&specs);
        let outcomes = self.inner.stores.queue.enqueue(specs).await?;
        Ok(self.accepted(&described, &outcomes))
    }

    /// A handle on an existing task, to wait for or read its result.
    pub fn handle<R: DeserializeOwned>(&self, id: TaskId) -> TaskHandle<R> {
        TaskHandle::new(self.clone(), id, false)
    }

    /// A task's full record: state, attempts, every error, timestamps.
    ///
    /// # Errors
    /// A store error.
    pub async fn task(&self, id: TaskId) -> Result<Option<TaskRecord>> {
        Ok(self.inner.stores.queue.get(id).await?)
    }

    /// Lists tasks by queue and state, newest first, with paging.
    ///
    /// # Errors
    /// A store error.
    pub async fn list_tasks(&self, query: TaskQuery) -> Result<Vec<TaskRecord>> {
        Ok(self.inner.stores.queue.list(query).await?)
    }

    /// Counts a queue's tasks per state, and says whether it is paused.
    ///
    /// # Errors
    /// A store error.
    pub async fn queue_stats(&self, queue: impl Into<String>) -> Result<QueueStats> {
        let stats = self.inner.stores.queue.stats(queue.into()).await?;
        let mut one = vec![stats];
        self.mark_paused(&mut one, false).await?;
        Ok(one.remove(0))
    }

    /// Every queue that holds tasks or is paused, with its counts per state and whether
    /// it is paused, sorted by name.
    ///
    /// # Errors
    /// A store error.
    pub async fn queues(&self) -> Result<Vec<QueueStats>> {
        let mut all = self.inner.stores.queue.queues().await?;
        self.mark_paused(&mut all, true).await?;
        Ok(all)
    }

    /// What the task queue's backend supports beyond enqueue, claim and complete: a call
    /// that needs a capability it lacks fails with [`ErrorKind::Unsupported`].
    ///
    /// [`ErrorKind::Unsupported`]: crate::ErrorKind::Unsupported
    pub fn capabilities(&self) -> Capabilities {
        self.inner.stores.queue.capabilities()
    }

    /// Cancels a task. One that has not started ends Cancelled at once, and so do its
    /// dependents; a running one is told through its context at its worker's next
    /// heartbeat and dropped after the worker's cancel grace period.
    ///
    /// # Errors
    /// [`Error::TaskNotFound`], or a store error.
    pub async fn cancel(&self, id: TaskId) -> Result<CancelOutcome> {
        let cancellation = self
            .inner
            .stores
            .queue
            .cancel(id, CANCEL_REASON.to_owned())
            .await
            .map_err(|e| match e {
                omniq_storage::StoreError::TaskNotFound(id) => Error::TaskNotFound(id),
                other => Error::Store(other),
            })?;
        omniq_events::record_cancellation(&self.inner.events, id, CANCEL_REASON, &cancellation);
        Ok(cancellation.outcome)
    }

    /// Dead letters (tasks that failed for good), newest first, optionally of one queue.
    ///
    /// # Errors
    /// A store error.
    pub async fn dead_letters(
        &self,
        queue: Option<&str>,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<TaskRecord>> {
        let query = TaskQuery::new()
            .states([TaskState::Failed])
            .offset(offset)
            .limit(limit);
        self.list_tasks(match queue {
            Some(queue) => query.queue(queue),
            None => query,
        })
        .await
    }

    /// Sends dead letters back to their queues, attempts reset, their failure results
    /// removed. Returns the ids re-driven.
    ///
    /// # Errors
    /// A store error.
    pub async fn redrive(&self, target: RedriveTarget) -> Result<Vec<TaskId>> {
        let stores = &self.inner.stores;
        let ids =
            omniq_storage::redrive_with_results(&*stores.queue, &*stores.results, target).await?;
        for id in &ids {
            let mut event = TaskEvent::new(TaskEventKind::Redriven);
            event.task_id = Some(*id);
            self.inner.events.log(event);
        }
        Ok(ids)
    }

    /// Deletes every finished task the request names (for example dead letters:
    /// `states: vec![TaskState::Failed]`), in batches of `request.limit` (one store call
    /// each, so no call holds the store for long). Returns how many.
    ///
    /// # Errors
    /// [`Error::Store`] for a non-terminal state, or a store error (batches deleted before
    /// it stay deleted).
    pub async fn purge(&self, request: PurgeRequest) -> Result<u64> {
        let mut total = 0;
        loop {
            let deleted = self.inner.stores.queue.purge(request.clone()).await?;
            if deleted == 0 {
                return Ok(total);
            }
            total += deleted;
        }
    }

    /// Stored schedules: read, pause, resume, update, delete, preview.
    pub fn schedules(&self) -> Schedules {
        Schedules::new(self.clone())
    }

    /// Starts creating a schedule named `name` that enqueues `task` on `trigger`; set
    /// options on the builder, then `.await` it. Idempotent by name.
    ///
    /// ```no_run
    /// # async fn demo<T: omniq_async::Task + Clone>(omniq: omniq_async::AsyncOmniQ, report: T) -> omniq_async::Result<()> {
    /// use omniq_async::{MisfirePolicy, ScheduleTrigger};
    /// omniq
    ///     .schedule("nightly-report", ScheduleTrigger::cron("0 3 * * *").in_timezone("Europe/Paris"), report)
    ///     .misfire(MisfirePolicy::FireOnce)
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn schedule<T, M>(
        &self,
        name: impl Into<String>,
        trigger: ScheduleTrigger,
        task: T,
    ) -> ScheduleBuilder
    where
        T: TaskDefinition<M>,
    {
        ScheduleBuilder::new(
            self.clone(),
            name.into(),
            trigger,
            T::NAME.to_owned(),
            self.inner.codec.encode(&task),
            T::default_options(),
        )
    }

    /// Like [`AsyncOmniQ::schedule`], for a task registered by name.
    pub fn schedule_by_name(
        &self,
        name: impl Into<String>,
        trigger: ScheduleTrigger,
        task_name: impl Into<String>,
        args: impl Serialize,
    ) -> ScheduleBuilder {
        let task_name = task_name.into();
        let options = self
            .inner
            .registry
            .read(|registry| registry.options(&task_name))
            .unwrap_or_default();
        ScheduleBuilder::new(
            self.clone(),
            name.into(),
            trigger,
            task_name,
            self.inner.codec.encode(&args),
            options,
        )
    }

    /// Lifecycle events: query stored ones, follow live ones.
    pub fn events(&self) -> Events {
        Events::new(self.clone())
    }

    /// Starts configuring a worker; see [`WorkerBuilder`].
    pub fn worker(&self) -> WorkerBuilder {
        WorkerBuilder::new(self.clone())
    }

    /// Writes out buffered events. Call before the process exits.
    pub async fn close(&self) {
        self.inner.events.flush().await;
    }
}

/// Each spec's name and queue, kept for recording the enqueue once the specs are gone.
pub(crate) fn describe(specs: &[TaskSpec]) -> Vec<(String, String)> {
    specs
        .iter()
        .map(|s| (s.name.clone(), s.queue.clone()))
        .collect()
}
