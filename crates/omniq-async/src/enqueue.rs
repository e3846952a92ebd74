use std::future::IntoFuture;
use std::marker::PhantomData;
use std::time::Duration;

use chrono::{DateTime, Utc};
use omniq_models::{Backoff, RunWhen, TaskId, TaskOptions, TaskSpec};
use omniq_storage::BoxFuture;

use crate::{AsyncOmniQ, Result, TaskHandle};

/// Options for one enqueue; `.await` it to enqueue.
///
/// Options set here win over the task type's own, which win over the configured defaults.
#[must_use = "an enqueue does nothing until it is awaited"]
pub struct EnqueueBuilder<R> {
    omniq: AsyncOmniQ,
    name: String,
    payload: Result<Vec<u8>>,
    options: TaskOptions,
    _output: PhantomData<fn() -> R>,
}

impl<R> std::fmt::Debug for EnqueueBuilder<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnqueueBuilder")
            .field("name", &self.name)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl<R> EnqueueBuilder<R> {
    pub(crate) fn new(
        omniq: AsyncOmniQ,
        name: impl Into<String>,
        payload: Result<Vec<u8>>,
        options: TaskOptions,
    ) -> Self {
        Self {
            omniq,
            name: name.into(),
            payload,
            options,
            _output: PhantomData,
        }
    }

    /// Replaces all options at once.
    pub fn options(mut self, options: TaskOptions) -> Self {
        self.options = options;
        self
    }

    /// Sets the queue.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.options = self.options.queue(queue);
        self
    }

    /// Sets the priority (higher runs first).
    pub fn priority(mut self, priority: i32) -> Self {
        self.options = self.options.priority(priority);
        self
    }

    /// Runs no earlier than `delay` from now.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.options = self.options.delay(delay);
        self
    }

    /// Runs no earlier than `at`.
    pub fn run_at(mut self, at: DateTime<Utc>) -> Self {
        self.options = self.options.run_at(at);
        self
    }

    /// Sets how many runs the task gets at most.
    pub fn max_attempts(mut self, max_attempts: u32) -> Self {
        self.options = self.options.max_attempts(max_attempts);
        self
    }

    /// Sets the backoff between attempts.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.options = self.options.backoff(backoff);
        self
    }

    /// Sets the per-attempt timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.options = self.options.timeout(timeout);
        self
    }

    /// Expires the task if it has not started within `ttl`.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.options = self.options.ttl(ttl);
        self
    }

    /// Runs only after `parent` succeeds.
    pub fn depends_on(mut self, parent: TaskId) -> Self {
        self.options = self.options.depends_on(parent);
        self
    }

    /// Runs on the parents' outcome given by `run_when` (callbacks) rather than after
    /// their success.
    pub fn run_when(mut self, run_when: RunWhen) -> Self {
        self.options = self.options.run_when(run_when);
        self
    }

    /// Deduplicates on `key` while a task holding it is unfinished.
    pub fn unique_key(mut self, key: impl Into<String>) -> Self {
        self.options = self.options.unique_key(key);
        self
    }

    /// Also dedupes against finished tasks with the key created within `window`.
    pub fn unique_for(mut self, window: Duration) -> Self {
        self.options = self.options.unique_for(window);
        self
    }

    /// Adds a metadata label.
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.options = self.options.metadata(key, value);
        self
    }

    /// Sets the key a worker's per-key limits count the task under (a tenant id, an API
    /// host); see [`WorkerBuilder::limit_each_key`](crate::WorkerBuilder::limit_each_key).
    pub fn limit_key(mut self, key: impl Into<String>) -> Self {
        self.options = self.options.limit_key(key);
        self
    }

    /// Sets the key whose tasks run one at a time, in enqueue order, where the task queue
    /// keeps such an order (an SQS FIFO queue: see `omniq-sqs`); a label elsewhere.
    pub fn order_key(mut self, key: impl Into<String>) -> Self {
        self.options = self.options.order_key(key);
        self
    }
}

impl<R> EnqueueBuilder<R> {
    /// The task this builder would enqueue, with the configured defaults filled in.
    pub(crate) fn into_spec(self) -> Result<TaskSpec> {
        let payload = self.payload?;
        let options = self.omniq.traced(self.omniq.resolve(self.options));
        Ok(TaskSpec::new(self.name, payload, options, Utc::now()))
    }

    /// Enqueues inside a transaction you opened on the task queue's database, so that the
    /// task exists if and only if your own writes commit (the transactional outbox).
    /// `conn` is the transaction's connection: `&mut *tx` for a `sqlx::Transaction` on
    /// PostgreSQL (`sqlx::PgConnection`) or MySQL (`sqlx::MySqlConnection`), from any pool
    /// of that database. Workers see the task once you commit; a rollback leaves none.
    ///
    /// The enqueue's event and metric are recorded when this returns, before you commit:
    /// a rolled-back transaction leaves an `Enqueued` event of a task that never was.
    ///
    /// ```no_run
    /// # use omniq_async::{AsyncOmniQ, Task, TaskContext, TaskError};
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct Receipt(i64);
    /// # impl Task for Receipt {
    /// #     const NAME: &'static str = "email.receipt";
    /// #     type Output = ();
    /// #     async fn run(self, _ctx: TaskContext) -> Result<(), TaskError> { Ok(()) }
    /// # }
    /// # async fn demo(omniq: AsyncOmniQ, pool: sqlx::PgPool) -> Result<(), Box<dyn std::error::Error>> {
    /// let mut tx = pool.begin().await?;
    /// sqlx::query("INSERT INTO orders (id) VALUES (42)").execute(&mut *tx).await?;
    /// omniq.enqueue(Receipt(42)).in_transaction(&mut *tx).await?;
    /// tx.commit().await?; // the order and its receipt, or neither
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// An unsupported-operation store error (kind [`Invalid`](crate::ErrorKind::Invalid))
    /// when the task queue's backend has no transactions (or this instance was built
    /// [`with_stores`](AsyncOmniQ::with_stores)); `Invalid` too when `conn` is not the
    /// backend's connection type; otherwise as an enqueue. You decide whether to roll back.
    pub async fn in_transaction<C>(self, conn: &mut C) -> Result<TaskHandle<R>>
    where
        C: std::any::Any + Send,
    {
        let Some(transactional) = self.omniq.inner.transactional.clone() else {
            return Err(crate::Error::Store(
                omniq_storage::StoreError::Unsupported {
                    backend: "this task queue",
                    operation: "enqueueing inside a transaction",
                },
            ));
        };
        let omniq = self.omniq.clone();
        let specs = vec![self.into_spec()?];
        let described = crate::omniq::describe(&specs);
        let outcomes = transactional.enqueue_in(conn, specs).await?;
        omniq.accepted(&described, &outcomes).pop().ok_or_else(|| {
            crate::Error::Store(omniq_storage::StoreError::Invalid(
                "the store returned no outcome for an enqueued task".to_owned(),
            ))
        })
    }
}

impl<R: Send + 'static> IntoFuture for EnqueueBuilder<R> {
    type Output = Result<TaskHandle<R>>;
    type IntoFuture = BoxFuture<'static, Self::Output>;

    /// # Errors
    /// A payload that cannot be encoded or exceeds the size limit, or a store error.
    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let omniq = self.omniq.clone();
            let spec = self.into_spec()?;
            let mut handles = omniq.submit(vec![spec]).await?;
            handles.pop().ok_or_else(|| {
                crate::Error::Store(omniq_storage::StoreError::Invalid(
                    "the store returned no outcome for an enqueued task".to_owned(),
                ))
            })
        })
    }
}
