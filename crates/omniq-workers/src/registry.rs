use std::any::TypeId;
use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use futures_util::future::LocalBoxFuture;
use omniq_models::{TaskError, TaskErrorKind, TaskOptions};
use omniq_serialization::PayloadCodec;
use omniq_storage::BoxFuture;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{AppState, AsyncTaskFn, BlockingTask, BlockingTaskFn, LocalTask, Task, TaskContext};

/// What calling a handler produced: a future to await, a closure to run on a thread, or
/// a closure that makes a `!Send` future on a local thread.
pub(crate) enum Invocation {
    Async(BoxFuture<'static, Result<Vec<u8>, TaskError>>),
    Blocking(Box<dyn FnOnce() -> Result<Vec<u8>, TaskError> + Send>),
    Local(LocalJob),
}

/// Makes an attempt's future on the local thread that runs it.
pub(crate) type LocalJob = Box<dyn FnOnce() -> LocalBoxFuture<'static, TaskOutcome> + Send>;

/// An attempt's encoded result or its error.
pub(crate) type TaskOutcome = Result<Vec<u8>, TaskError>;

/// A registered handler with its argument and output types erased.
pub(crate) trait Handler: Send + Sync {
    /// Decodes the payload and starts the attempt.
    fn invoke(
        &self,
        payload: &[u8],
        ctx: TaskContext,
        codec: PayloadCodec,
    ) -> Result<Invocation, TaskError>;

    /// Asks the task whether to retry after `error`.
    fn should_retry(&self, payload: &[u8], codec: PayloadCodec, error: &TaskError) -> bool;

    /// The task's hook for a final failure, if it has one to run.
    fn failed(
        &self,
        payload: &[u8],
        codec: PayloadCodec,
        error: TaskError,
    ) -> Option<BoxFuture<'static, ()>>;

    /// Default options of the task type.
    fn options(&self) -> TaskOptions;

    /// The type the task returns.
    fn output(&self) -> OutputType;
}

/// The type a registered task returns, to check a caller's expected result type against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputType {
    id: TypeId,
    name: &'static str,
}

impl OutputType {
    /// The output type `R`.
    pub fn of<R: 'static>() -> Self {
        Self {
            id: TypeId::of::<R>(),
            name: std::any::type_name::<R>(),
        }
    }

    /// Whether it is `R`.
    pub fn is<R: 'static>(&self) -> bool {
        self.id == TypeId::of::<R>()
    }

    /// The type's name, for messages.
    pub fn name(&self) -> &'static str {
        self.name
    }
}

fn decode<A: DeserializeOwned>(payload: &[u8], codec: PayloadCodec) -> Result<A, TaskError> {
    codec.decode(payload).map_err(|e| {
        TaskError::with_kind(
            TaskErrorKind::Decode,
            format!("undecodable payload: {e}"),
            false,
        )
    })
}

fn encode<R: Serialize>(value: &R, codec: PayloadCodec) -> Result<Vec<u8>, TaskError> {
    codec.encode(value).map_err(|e| {
        TaskError::with_kind(
            TaskErrorKind::Encode,
            format!("unencodable result: {e}"),
            false,
        )
    })
}

/// What every handler of a task type shares: the type's retry hook, options and output.
macro_rules! typed_handler_methods {
    () => {
        fn should_retry(&self, payload: &[u8], codec: PayloadCodec, error: &TaskError) -> bool {
            decode::<T>(payload, codec).map_or(error.retryable, |task| task.should_retry(error))
        }

        fn options(&self) -> TaskOptions {
            T::options()
        }

        fn output(&self) -> OutputType {
            OutputType::of::<T::Output>()
        }
    };
}

struct AsyncTaskHandler<T>(PhantomData<fn() -> T>);

impl<T: Task> Handler for AsyncTaskHandler<T> {
    fn invoke(
        &self,
        payload: &[u8],
        ctx: TaskContext,
        codec: PayloadCodec,
    ) -> Result<Invocation, TaskError> {
        let task: T = decode(payload, codec)?;
        Ok(Invocation::Async(Box::pin(async move {
            let output = task.run(ctx).await?;
            encode(&output, codec)
        })))
    }

    typed_handler_methods!();

    fn failed(
        &self,
        payload: &[u8],
        codec: PayloadCodec,
        error: TaskError,
    ) -> Option<BoxFuture<'static, ()>> {
        let task: T = decode(payload, codec).ok()?;
        Some(Box::pin(task.failed(error)))
    }
}

struct BlockingTaskHandler<T>(PhantomData<fn() -> T>);

impl<T: BlockingTask> Handler for BlockingTaskHandler<T> {
    fn invoke(
        &self,
        payload: &[u8],
        ctx: TaskContext,
        codec: PayloadCodec,
    ) -> Result<Invocation, TaskError> {
        let task: T = decode(payload, codec)?;
        Ok(Invocation::Blocking(Box::new(move || {
            let output = task.run(ctx)?;
            encode(&output, codec)
        })))
    }

    typed_handler_methods!();

    fn failed(
        &self,
        payload: &[u8],
        codec: PayloadCodec,
        error: TaskError,
    ) -> Option<BoxFuture<'static, ()>> {
        let task: T = decode(payload, codec).ok()?;
        Some(Box::pin(async move {
            let _ = tokio::task::spawn_blocking(move || task.failed(error)).await;
        }))
    }
}

struct LocalTaskHandler<T>(PhantomData<fn() -> T>);

impl<T: LocalTask> Handler for LocalTaskHandler<T> {
    fn invoke(
        &self,
        payload: &[u8],
        ctx: TaskContext,
        codec: PayloadCodec,
    ) -> Result<Invocation, TaskError> {
        let task: T = decode(payload, codec)?;
        Ok(Invocation::Local(Box::new(move || {
            Box::pin(async move {
                let output = task.run(ctx).await?;
                encode(&output, codec)
            })
        })))
    }

    typed_handler_methods!();

    fn failed(&self, _: &[u8], _: PayloadCodec, _: TaskError) -> Option<BoxFuture<'static, ()>> {
        None
    }
}

struct AsyncFnHandler<F, A, M> {
    f: F,
    options: TaskOptions,
    _args: PhantomData<fn(A, M)>,
}

impl<F, A, M> Handler for AsyncFnHandler<F, A, M>
where
    F: AsyncTaskFn<A, M>,
    A: DeserializeOwned + 'static,
    M: 'static,
{
    fn invoke(
        &self,
        payload: &[u8],
        ctx: TaskContext,
        codec: PayloadCodec,
    ) -> Result<Invocation, TaskError> {
        let future = self.f.call(decode(payload, codec)?, ctx);
        Ok(Invocation::Async(Box::pin(async move {
            encode(&future.await?, codec)
        })))
    }

    fn should_retry(&self, _: &[u8], _: PayloadCodec, error: &TaskError) -> bool {
        error.retryable
    }

    fn failed(&self, _: &[u8], _: PayloadCodec, _: TaskError) -> Option<BoxFuture<'static, ()>> {
        None
    }

    fn options(&self) -> TaskOptions {
        self.options.clone()
    }

    fn output(&self) -> OutputType {
        OutputType::of::<F::Output>()
    }
}

struct BlockingFnHandler<F, A, M> {
    f: Arc<F>,
    options: TaskOptions,
    _args: PhantomData<fn(A, M)>,
}

impl<F, A, M> Handler for BlockingFnHandler<F, A, M>
where
    F: BlockingTaskFn<A, M>,
    A: DeserializeOwned + Send + 'static,
    M: 'static,
{
    fn invoke(
        &self,
        payload: &[u8],
        ctx: TaskContext,
        codec: PayloadCodec,
    ) -> Result<Invocation, TaskError> {
        let args: A = decode(payload, codec)?;
        let f = Arc::clone(&self.f);
        Ok(Invocation::Blocking(Box::new(move || {
            encode(&f.call(args, ctx)?, codec)
        })))
    }

    fn should_retry(&self, _: &[u8], _: PayloadCodec, error: &TaskError) -> bool {
        error.retryable
    }

    fn failed(&self, _: &[u8], _: PayloadCodec, _: TaskError) -> Option<BoxFuture<'static, ()>> {
        None
    }

    fn options(&self) -> TaskOptions {
        self.options.clone()
    }

    fn output(&self) -> OutputType {
        OutputType::of::<F::Output>()
    }
}

/// Handlers by task name.
///
/// Registering a second handler under a name replaces the first.
#[derive(Clone, Default)]
pub struct Registry {
    handlers: HashMap<String, Arc<dyn Handler>>,
    state: AppState,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.handlers.keys()).finish()
    }
}

impl Registry {
    /// Adds an application value every task this registry's workers run can reach with
    /// [`TaskContext::state`](crate::TaskContext::state); one per type, a later one
    /// replaces an earlier one.
    pub fn provide<T: Send + Sync + 'static>(&mut self, value: T) -> &mut Self {
        self.state.insert(value);
        self
    }

    /// The application values registered with [`Registry::provide`].
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers an async task type under [`Task::NAME`].
    pub fn register<T: Task>(&mut self) -> &mut Self {
        self.insert(T::NAME, AsyncTaskHandler::<T>(PhantomData))
    }

    /// Registers a blocking task type under [`BlockingTask::NAME`]; it runs on threads.
    pub fn register_blocking<T: BlockingTask>(&mut self) -> &mut Self {
        self.insert(T::NAME, BlockingTaskHandler::<T>(PhantomData))
    }

    /// Registers a local task type under [`LocalTask::NAME`]: its future need not be
    /// `Send`; it runs on a local worker thread.
    pub fn register_local<T: LocalTask>(&mut self) -> &mut Self {
        self.insert(T::NAME, LocalTaskHandler::<T>(PhantomData))
    }

    /// Registers an async closure under `name`; its argument is the decoded payload.
    pub fn register_fn<F, A, M>(
        &mut self,
        name: impl Into<String>,
        options: TaskOptions,
        f: F,
    ) -> &mut Self
    where
        F: AsyncTaskFn<A, M>,
        A: DeserializeOwned + 'static,
        M: 'static,
    {
        let handler = AsyncFnHandler {
            f,
            options,
            _args: PhantomData,
        };
        self.insert(name, handler)
    }

    /// Registers a blocking closure under `name`; it runs on threads.
    pub fn register_blocking_fn<F, A, M>(
        &mut self,
        name: impl Into<String>,
        options: TaskOptions,
        f: F,
    ) -> &mut Self
    where
        F: BlockingTaskFn<A, M>,
        A: DeserializeOwned + Send + 'static,
        M: 'static,
    {
        let handler = BlockingFnHandler {
            f: Arc::new(f),
            options,
            _args: PhantomData,
        };
        self.insert(name, handler)
    }

    fn insert(&mut self, name: impl Into<String>, handler: impl Handler + 'static) -> &mut Self {
        self.handlers.insert(name.into(), Arc::new(handler));
        self
    }

    /// Whether a handler is registered under `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.handlers.contains_key(name)
    }

    /// Registered names, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<_> = self.handlers.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    /// The type the task registered under `name` returns.
    pub fn output(&self, name: &str) -> Option<OutputType> {
        self.handlers.get(name).map(|h| h.output())
    }

    /// The default options registered for `name`.
    pub fn options(&self, name: &str) -> Option<TaskOptions> {
        self.handlers.get(name).map(|h| h.options())
    }

    pub(crate) fn get(&self, name: &str) -> Option<&Arc<dyn Handler>> {
        self.handlers.get(name)
    }
}
