use std::future::Future;
use std::sync::Arc;

use omniq_async::{Error, Result};
use tokio::runtime::{Runtime, RuntimeFlavor};
use tracing::Instrument;

/// The facade's own multi-thread runtime, shared by every wrapper made from one `OmniQ`.
///
/// Calls spawn their future on it and park the calling thread with pollster until the
/// join handle completes. That never enters the runtime from the caller's thread, so it
/// works from plain threads and from inside another runtime, where `Runtime::block_on`
/// would panic, and from inside a task handler run by this facade's own worker (a worker
/// thread of a multi-thread runtime gives its other work away before it parks).
#[derive(Debug, Clone)]
pub(crate) struct Driver {
    owner: Arc<RuntimeOwner>,
}

#[derive(Debug)]
struct RuntimeOwner {
    runtime: Option<Runtime>,
}

impl Drop for RuntimeOwner {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            // Safe in any context, including inside another runtime, where a plain drop
            // (which blocks) would panic. Workers have been shut down by then, or their
            // leases expire and their tasks are recovered.
            runtime.shutdown_background();
        }
    }
}

impl Driver {
    pub(crate) fn new() -> Result<Self> {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("omniq-runtime")
            .enable_all()
            .build()
            .map_err(Error::Runtime)?;
        Ok(Self {
            owner: Arc::new(RuntimeOwner {
                runtime: Some(runtime),
            }),
        })
    }

    fn runtime(&self) -> &Runtime {
        self.owner
            .runtime
            .as_ref()
            .unwrap_or_else(|| unreachable!("the runtime lives until the owner drops"))
    }

    /// Runs `future` on the facade's runtime and waits for its output.
    pub(crate) fn block_on<F>(&self, future: F) -> Result<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        // In the caller's span: what the future does (an enqueue storing the trace context,
        // say) belongs to the caller's work, not to a thread of the facade's runtime.
        let handle = self.runtime().spawn(future.in_current_span());
        let joined = match tokio::runtime::Handle::try_current() {
            // On a worker thread of a multi-thread runtime (an async handler run by this
            // facade's own worker, say), parking the thread would also park the task just
            // spawned: tokio keeps it in this thread's next-task slot, which no other
            // thread takes. Handing the thread's work to another thread first lets it run.
            Ok(current) if current.runtime_flavor() == RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| pollster::block_on(handle))
            }
            _ => pollster::block_on(handle),
        };
        match joined {
            Ok(output) => Ok(output),
            Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
            Err(_) => Err(Error::Closed),
        }
    }

    /// Like [`Driver::block_on`] for fallible futures.
    pub(crate) fn call<F, T>(&self, future: F) -> Result<T>
    where
        F: Future<Output = Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        self.block_on(future)?
    }
}
