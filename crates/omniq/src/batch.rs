//! Batches through the blocking facade: [`omniq_async`]'s batches, driven from a plain
//! thread.

use omniq_async::{Batch, BatchStatus, Result};

use crate::runtime::Driver;
use crate::{EnqueueBuilder, OmniQ};

/// A group of tasks to enqueue together, with callbacks that run once after the last
/// member has finished; from [`OmniQ::batch`]. The semantics are
/// [`omniq_async::BatchBuilder`]'s (docs/flow-control.md).
///
/// ```no_run
/// # use omniq::{OmniQ, TaskContext, TaskError, task};
/// #[task]
/// fn resize(image: u32) -> Result<u64, TaskError> {
///     Ok(u64::from(image) * 1_000)
/// }
///
/// #[task]
/// async fn report(ctx: TaskContext) -> Result<String, TaskError> {
///     let written: u64 = ctx.parent_results::<u64>().await.iter().filter_map(|(_, r)| r.as_ref().ok()).sum();
///     Ok(format!("{written} bytes"))
/// }
///
/// # fn demo() -> omniq::Result<()> {
/// let omniq = OmniQ::from_env()?.register_blocking::<resize>().register::<report>();
/// let batch = omniq
///     .batch()
///     .members((1..=3).map(|image| omniq.enqueue(resize { image })))
///     .on_complete(omniq.enqueue(report {}))
///     .enqueue()?;
/// let status = omniq.batch_status(&batch)?;
/// # let _ = status;
/// # Ok(()) }
/// ```
#[must_use = "a batch does nothing until it is enqueued"]
#[derive(Debug)]
pub struct BatchBuilder {
    driver: Driver,
    inner: omniq_async::BatchBuilder,
}

impl BatchBuilder {
    /// Adds a member, with the options its builder set (not submitted).
    pub fn member<R: Send + 'static>(self, member: EnqueueBuilder<R>) -> Self {
        Self {
            driver: self.driver,
            inner: self.inner.member(member.into_async()),
        }
    }

    /// Adds every member of `members`.
    pub fn members<R: Send + 'static>(
        self,
        members: impl IntoIterator<Item = EnqueueBuilder<R>>,
    ) -> Self {
        Self {
            driver: self.driver,
            inner: self
                .inner
                .members(members.into_iter().map(EnqueueBuilder::into_async)),
        }
    }

    /// A callback that runs once every member has succeeded (see
    /// [`omniq_async::BatchBuilder::on_success`]).
    pub fn on_success<R: Send + 'static>(self, callback: EnqueueBuilder<R>) -> Self {
        Self {
            driver: self.driver,
            inner: self.inner.on_success(callback.into_async()),
        }
    }

    /// A callback that runs once every member has finished, whatever the outcomes (see
    /// [`omniq_async::BatchBuilder::on_complete`]).
    pub fn on_complete<R: Send + 'static>(self, callback: EnqueueBuilder<R>) -> Self {
        Self {
            driver: self.driver,
            inner: self.inner.on_complete(callback.into_async()),
        }
    }

    /// Enqueues the members and the callbacks in one call to the store.
    ///
    /// # Errors
    /// As [`omniq_async::BatchBuilder::enqueue`].
    pub fn enqueue(self) -> Result<Batch> {
        let inner = self.inner;
        self.driver.call(async move { inner.enqueue().await })
    }
}

impl OmniQ {
    /// Starts a batch (see [`BatchBuilder`]).
    pub fn batch(&self) -> BatchBuilder {
        BatchBuilder {
            driver: self.driver.clone(),
            inner: self.inner.batch(),
        }
    }

    /// Counts a batch's members by state.
    ///
    /// # Errors
    /// A store error.
    pub fn batch_status(&self, batch: &Batch) -> Result<BatchStatus> {
        let (inner, batch) = (self.inner.clone(), batch.clone());
        self.driver.call(async move { batch.status(&inner).await })
    }
}
