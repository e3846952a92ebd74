//! Process workers: every handler runs in a child process of the same program.
//!
//! A child is the program started again with [`CHILD_ENV`] set and one end of a Unix
//! socket pair as its standard input. It runs `main` up to the worker's start, where
//! [`Worker::start`](crate::Worker::start) serves attempts over that socket instead of
//! claiming tasks, one at a time, until the parent closes the socket or dies; then it
//! exits. So a child runs with the same registered tasks and state as its parent, and
//! code before the worker's start runs in every child too: keep side effects such as
//! enqueueing behind [`is_process_child`].
//!
//! The parent keeps a pool of at most `concurrency` children. An attempt past its timeout,
//! or given up (cancelled past its grace, lease lost), kills its child with SIGKILL: the
//! timeout is hard even for a loop that never yields. A child that dies during an attempt
//! (a crash, `abort`, out of memory) fails that attempt as [`TaskErrorKind::Crashed`], and
//! the next attempt gets a new child. A child exits when its socket closes, so a parent
//! killed with SIGKILL leaves no child behind.
//!
//! [`TaskErrorKind::Crashed`]: omniq_models::TaskErrorKind::Crashed

#[cfg(unix)]
mod child;
mod frame;
#[cfg(unix)]
mod pool;

#[cfg(unix)]
pub(crate) use child::serve;
#[cfg(unix)]
pub(crate) use pool::ProcessPool;

#[cfg(not(unix))]
pub(crate) use unsupported::{ProcessPool, serve};

/// Process workers pass a Unix socket to their children; elsewhere they cannot start.
#[cfg(not(unix))]
mod unsupported {
    use std::ffi::OsString;
    use std::io;
    use std::sync::Arc;

    use omniq_models::TaskError;
    use omniq_serialization::PayloadCodec;
    use omniq_storage::ResultStore;

    use crate::LiveRegistry;
    use crate::context::AttemptHeader;

    #[derive(Debug)]
    pub(crate) enum ProcessPool {}

    impl ProcessPool {
        pub(crate) fn new(_: Option<Vec<OsString>>, _: Option<u32>) -> io::Result<Self> {
            Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "process workers need a Unix system",
            ))
        }

        pub(crate) async fn run(
            &self,
            _: &AttemptHeader,
            _: &[u8],
            _: Option<std::time::Duration>,
        ) -> Result<Vec<u8>, TaskError> {
            match *self {}
        }
    }

    pub(crate) fn serve(_: LiveRegistry, _: Arc<dyn ResultStore>, _: PayloadCodec) -> ! {
        std::process::exit(2)
    }
}

/// Set in the environment of a process worker's children.
pub const CHILD_ENV: &str = "OMNIQ_PROCESS_WORKER_CHILD";

/// Whether this process is a child of a process worker: guard code with side effects
/// that runs before the worker starts (enqueueing, migrations) with it.
///
/// ```
/// if !omniq_workers::is_process_child() {
///     // enqueue the day's tasks: only in the parent
/// }
/// ```
pub fn is_process_child() -> bool {
    std::env::var_os(CHILD_ENV).is_some()
}
