//! Closures as tasks: with the arguments alone, or with the arguments and the attempt's
//! [`TaskContext`].

use std::future::Future;

use omniq_models::TaskError;
use serde::Serialize;

use crate::TaskContext;

/// Marks a closure that takes the task's arguments only.
#[derive(Debug)]
pub enum ArgsOnly {}

/// Marks a closure that takes the task's arguments and its [`TaskContext`].
#[derive(Debug)]
pub enum WithContext {}

/// An async closure a task can be registered as: `|args| async { … }` or
/// `|args, ctx: TaskContext| async { … }`. `M` ([`ArgsOnly`] or [`WithContext`]) is
/// inferred from the closure; callers never name it.
pub trait AsyncTaskFn<A, M>: Send + Sync + 'static {
    /// What the task returns.
    type Output: Serialize + 'static;
    /// The closure's future.
    type Future: Future<Output = Result<Self::Output, TaskError>> + Send + 'static;

    /// Calls the closure for one attempt.
    fn call(&self, args: A, ctx: TaskContext) -> Self::Future;
}

impl<F, A, R, Fut> AsyncTaskFn<A, ArgsOnly> for F
where
    F: Fn(A) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R, TaskError>> + Send + 'static,
    R: Serialize + 'static,
{
    type Output = R;
    type Future = Fut;

    fn call(&self, args: A, _ctx: TaskContext) -> Fut {
        self(args)
    }
}

impl<F, A, R, Fut> AsyncTaskFn<A, WithContext> for F
where
    F: Fn(A, TaskContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R, TaskError>> + Send + 'static,
    R: Serialize + 'static,
{
    type Output = R;
    type Future = Fut;

    fn call(&self, args: A, ctx: TaskContext) -> Fut {
        self(args, ctx)
    }
}

/// A blocking closure a task can be registered as: `|args| …` or
/// `|args, ctx: TaskContext| …`; it runs on a thread.
pub trait BlockingTaskFn<A, M>: Send + Sync + 'static {
    /// What the task returns.
    type Output: Serialize + 'static;

    /// Calls the closure for one attempt.
    ///
    /// # Errors
    /// The task's error.
    fn call(&self, args: A, ctx: TaskContext) -> Result<Self::Output, TaskError>;
}

impl<F, A, R> BlockingTaskFn<A, ArgsOnly> for F
where
    F: Fn(A) -> Result<R, TaskError> + Send + Sync + 'static,
    R: Serialize + 'static,
{
    type Output = R;

    fn call(&self, args: A, _ctx: TaskContext) -> Result<R, TaskError> {
        self(args)
    }
}

impl<F, A, R> BlockingTaskFn<A, WithContext> for F
where
    F: Fn(A, TaskContext) -> Result<R, TaskError> + Send + Sync + 'static,
    R: Serialize + 'static,
{
    type Output = R;

    fn call(&self, args: A, ctx: TaskContext) -> Result<R, TaskError> {
        self(args, ctx)
    }
}
