use serde::Serialize;
use serde::de::DeserializeOwned;

use omniq_async::{
    AsyncOmniQ, BlockingTask, BlockingTaskFn, CancelOutcome, Capabilities, LocalTask, PurgeRequest,
    QueueStats, RedriveTarget, Result, ScheduleTrigger, Settings, Stores, Task, TaskDefinition,
    TaskId, TaskQuery, TaskRecord,
};

use crate::runtime::Driver;
use crate::{EnqueueBuilder, Events, ScheduleBuilder, Schedules, TaskHandle, WorkerBuilder};

/// The OmniQ client for sync code: every [`AsyncOmniQ`] operation, without `.await`.
///
/// It owns a multi-thread runtime of its own; each call runs there while the calling
/// thread waits, so it works from plain threads, scripts and even inside another async
/// runtime. Dropping the last clone (and every handle made from it) stops the runtime.
#[derive(Debug, Clone)]
pub struct OmniQ {
    pub(crate) driver: Driver,
    pub(crate) inner: AsyncOmniQ,
}

impl OmniQ {
    /// Builds from `OMNIQ_*` environment variables; with nothing set, every store is the
    /// embedded SQLite file `./.omniq/omniq.db`.
    ///
    /// # Errors
    /// A configuration error naming the bad key, or a store that cannot be opened.
    pub fn from_env() -> Result<Self> {
        let driver = Driver::new()?;
        let inner = driver.call(AsyncOmniQ::from_env())?;
        Ok(Self { driver, inner })
    }

    /// Builds from explicit settings.
    ///
    /// # Errors
    /// As [`AsyncOmniQ::from_settings`].
    pub fn from_settings(settings: Settings) -> Result<Self> {
        let driver = Driver::new()?;
        let inner = driver.call(AsyncOmniQ::from_settings(settings))?;
        Ok(Self { driver, inner })
    }

    /// Builds on stores you opened yourself.
    ///
    /// # Errors
    /// When the runtime cannot start.
    pub fn with_stores(settings: Settings, stores: Stores) -> Result<Self> {
        let driver = Driver::new()?;
        let inner = driver.block_on(async move { AsyncOmniQ::with_stores(settings, stores) })?;
        Ok(Self { driver, inner })
    }

    /// The async client underneath, for code that has both worlds.
    pub fn as_async(&self) -> &AsyncOmniQ {
        &self.inner
    }

    /// The stores in use.
    pub fn stores(&self) -> &Stores {
        self.inner.stores()
    }

    /// Names of the registered tasks.
    pub fn registered(&self) -> Vec<String> {
        self.inner.registered()
    }

    /// The settings in use.
    pub fn settings(&self) -> &Settings {
        self.inner.settings()
    }

    fn map(self, change: impl FnOnce(AsyncOmniQ) -> AsyncOmniQ) -> Self {
        Self {
            driver: self.driver,
            inner: change(self.inner),
        }
    }

    /// Registers an application value that every task run by workers started afterwards
    /// reaches by type with [`TaskContext::state`](crate::TaskContext::state) (see
    /// [`AsyncOmniQ::state`]).
    pub fn state<T: Send + Sync + 'static>(self, value: T) -> Self {
        self.map(|omniq| omniq.state(value))
    }

    /// Registers how workers load a [`Model`](crate::Model) by key, for async tasks that
    /// receive it as a [`ModelRef`](crate::ModelRef) (see [`AsyncOmniQ::model_loader`]).
    pub fn model_loader<M, F, Fut, E>(self, load: F) -> Self
    where
        M: omniq_async::Model,
        F: Fn(M::Key) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<Option<M>, E>> + Send + 'static,
        E: Into<omniq_async::LoadError>,
    {
        self.map(|omniq| omniq.model_loader::<M, F, Fut, E>(load))
    }

    /// Registers an async task type.
    pub fn register<T: Task>(self) -> Self {
        self.map(AsyncOmniQ::register::<T>)
    }

    /// Registers a blocking task type; workers run it on threads.
    pub fn register_blocking<T: BlockingTask>(self) -> Self {
        self.map(AsyncOmniQ::register_blocking::<T>)
    }

    /// Registers a local task type: its future need not be `Send`; workers run it on
    /// their local threads.
    pub fn register_local<T: LocalTask>(self) -> Self {
        self.map(AsyncOmniQ::register_local::<T>)
    }

    /// Registers a plain (blocking) closure under `name`; workers run it on threads.
    ///
    /// ```
    /// # fn demo(omniq: omniq::OmniQ) {
    /// let omniq = omniq.register_fn("add", |(a, b): (i64, i64)| Ok(a + b));
    /// # }
    /// ```
    pub fn register_fn<F, A, M>(self, name: impl Into<String>, f: F) -> Self
    where
        F: BlockingTaskFn<A, M>,
        A: DeserializeOwned + Send + 'static,
        M: 'static,
    {
        self.map(|inner| inner.register_blocking_fn(name, f))
    }

    /// Starts enqueueing a task; set options, then call
    /// [`submit`](EnqueueBuilder::submit).
    pub fn enqueue<T, M>(&self, task: T) -> EnqueueBuilder<T::Output>
    where
        T: TaskDefinition<M>,
    {
        EnqueueBuilder::new(self.driver.clone(), self.inner.enqueue(task))
    }

    /// Starts enqueueing a task by name (closures); `R` is what it returns.
    pub fn enqueue_by_name<R: DeserializeOwned + Send + 'static>(
        &self,
        name: impl Into<String>,
        args: impl Serialize,
    ) -> EnqueueBuilder<R> {
        EnqueueBuilder::new(self.driver.clone(), self.inner.enqueue_by_name(name, args))
    }

    /// Enqueues many tasks of one type in one round trip.
    ///
    /// # Errors
    /// As [`AsyncOmniQ::enqueue_many`].
    pub fn enqueue_many<T, M>(
        &self,
        tasks: impl IntoIterator<Item = T>,
    ) -> Result<Vec<TaskHandle<T::Output>>>
    where
        T: TaskDefinition<M>,
        M: 'static,
    {
        let inner = self.inner.clone();
        let tasks: Vec<T> = tasks.into_iter().collect();
        let handles = self
            .driver
            .call(async move { inner.enqueue_many(tasks).await })?;
        Ok(handles
            .into_iter()
            .map(|h| TaskHandle::new(self.driver.clone(), h))
            .collect())
    }

    /// A handle on an existing task.
    pub fn handle<R: DeserializeOwned + Send + 'static>(&self, id: TaskId) -> TaskHandle<R> {
        TaskHandle::new(self.driver.clone(), self.inner.handle(id))
    }

    /// A task's full record.
    ///
    /// # Errors
    /// A store error.
    pub fn task(&self, id: TaskId) -> Result<Option<TaskRecord>> {
        let inner = self.inner.clone();
        self.driver.call(async move { inner.task(id).await })
    }

    /// Lists tasks by queue and state, newest first, with paging.
    ///
    /// # Errors
    /// A store error.
    pub fn list_tasks(&self, query: TaskQuery) -> Result<Vec<TaskRecord>> {
        let inner = self.inner.clone();
        self.driver
            .call(async move { inner.list_tasks(query).await })
    }

    /// Counts a queue's tasks per state, and says whether it is paused.
    ///
    /// # Errors
    /// A store error.
    pub fn queue_stats(&self, queue: impl Into<String>) -> Result<QueueStats> {
        let inner = self.inner.clone();
        let queue = queue.into();
        self.driver
            .call(async move { inner.queue_stats(queue).await })
    }

    /// Every queue that holds tasks or is paused, with its counts per state and whether
    /// it is paused, sorted by name.
    ///
    /// # Errors
    /// A store error.
    pub fn queues(&self) -> Result<Vec<QueueStats>> {
        let inner = self.inner.clone();
        self.driver.call(async move { inner.queues().await })
    }

    /// Pauses a queue, stored: within one heartbeat interval no worker starts another of
    /// its tasks, until [`resume_queue`](Self::resume_queue); enqueueing goes on and
    /// running tasks finish. Returns whether it was running. See
    /// `AsyncOmniQ::pause_queue` for exactly what a pause holds.
    ///
    /// # Errors
    /// An `Unsupported` error when the task queue's backend cannot pause queues, an
    /// invalid (empty) name, or a store error.
    pub fn pause_queue(&self, queue: impl Into<String>) -> Result<bool> {
        let inner = self.inner.clone();
        let queue = queue.into();
        self.driver
            .call(async move { inner.pause_queue(queue).await })
    }

    /// Resumes a paused queue. Returns whether it was paused.
    ///
    /// # Errors
    /// As [`pause_queue`](Self::pause_queue).
    pub fn resume_queue(&self, queue: impl Into<String>) -> Result<bool> {
        let inner = self.inner.clone();
        let queue = queue.into();
        self.driver
            .call(async move { inner.resume_queue(queue).await })
    }

    /// The paused queues, sorted.
    ///
    /// # Errors
    /// A store error.
    pub fn paused_queues(&self) -> Result<Vec<String>> {
        let inner = self.inner.clone();
        self.driver.call(async move { inner.paused_queues().await })
    }

    /// What the task queue's backend supports beyond enqueue, claim and complete: a call
    /// that needs a capability it lacks fails with an `Unsupported` error.
    pub fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    /// Cancels a task that has not finished.
    ///
    /// # Errors
    /// As [`AsyncOmniQ::cancel`].
    pub fn cancel(&self, id: TaskId) -> Result<CancelOutcome> {
        let inner = self.inner.clone();
        self.driver.call(async move { inner.cancel(id).await })
    }

    /// Dead letters (tasks that failed for good), newest first.
    ///
    /// # Errors
    /// A store error.
    pub fn dead_letters(
        &self,
        queue: Option<&str>,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<TaskRecord>> {
        let inner = self.inner.clone();
        let queue = queue.map(str::to_owned);
        self.driver
            .call(async move { inner.dead_letters(queue.as_deref(), offset, limit).await })
    }

    /// Sends dead letters back to their queues, attempts reset.
    ///
    /// # Errors
    /// A store error.
    pub fn redrive(&self, target: RedriveTarget) -> Result<Vec<TaskId>> {
        let inner = self.inner.clone();
        self.driver.call(async move { inner.redrive(target).await })
    }

    /// Deletes finished tasks. Returns how many.
    ///
    /// # Errors
    /// As [`AsyncOmniQ::purge`].
    pub fn purge(&self, request: PurgeRequest) -> Result<u64> {
        let inner = self.inner.clone();
        self.driver.call(async move { inner.purge(request).await })
    }

    /// Stored schedules.
    pub fn schedules(&self) -> Schedules {
        Schedules::new(self.driver.clone(), self.inner.schedules())
    }

    /// Starts creating a schedule that enqueues `task` on `trigger`; see
    /// [`AsyncOmniQ::schedule`].
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
            self.driver.clone(),
            self.inner.schedule(name, trigger, task),
        )
    }

    /// Starts creating a schedule for a task registered by name.
    pub fn schedule_by_name(
        &self,
        name: impl Into<String>,
        trigger: ScheduleTrigger,
        task_name: impl Into<String>,
        args: impl Serialize,
    ) -> ScheduleBuilder {
        let inner = self.inner.schedule_by_name(name, trigger, task_name, args);
        ScheduleBuilder::new(self.driver.clone(), inner)
    }

    /// Lifecycle events.
    pub fn events(&self) -> Events {
        Events::new(self.driver.clone(), self.inner.events())
    }

    /// Starts configuring a worker.
    pub fn worker(&self) -> WorkerBuilder {
        WorkerBuilder::new(self.driver.clone(), self.inner.worker())
    }

    /// Writes out buffered events.
    ///
    /// # Errors
    /// [`omniq_async::Error::Closed`] if the runtime is gone.
    pub fn close(&self) -> Result<()> {
        let inner = self.inner.clone();
        self.driver.block_on(async move { inner.close().await })
    }
}
