use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;

type Job = Box<dyn FnOnce() + Send>;

/// Where blocking handlers run.
#[derive(Debug, Clone)]
pub(crate) enum BlockingExecutor {
    /// tokio's shared blocking pool.
    Tokio,
    /// Threads owned by this worker, one per slot.
    Dedicated(Arc<ThreadPool>),
}

impl BlockingExecutor {
    pub(crate) fn spawn(&self, job: impl FnOnce() + Send + 'static) {
        match self {
            BlockingExecutor::Tokio => {
                tokio::task::spawn_blocking(job);
            }
            BlockingExecutor::Dedicated(pool) => pool.spawn(Box::new(job)),
        }
    }
}

/// A fixed set of named threads taking jobs from one channel.
///
/// Dropping the pool closes the channel; threads finish their current job and exit. They
/// are not joined: a blocking handler may never return.
#[derive(Debug)]
pub(crate) struct ThreadPool {
    sender: Mutex<mpsc::Sender<Job>>,
}

impl ThreadPool {
    pub(crate) fn new(threads: usize, name: &str) -> std::io::Result<Self> {
        let (sender, receiver) = mpsc::channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        for index in 0..threads.max(1) {
            let receiver = Arc::clone(&receiver);
            thread::Builder::new()
                .name(format!("{name}-{index}"))
                .spawn(move || {
                    loop {
                        let job = {
                            let guard = receiver.lock().unwrap_or_else(PoisonError::into_inner);
                            guard.recv()
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => break,
                        }
                    }
                })?;
        }
        Ok(Self {
            sender: Mutex::new(sender),
        })
    }

    fn spawn(&self, job: Job) {
        let sender = self.sender.lock().unwrap_or_else(PoisonError::into_inner);
        // Sending fails only when every thread has exited, which happens only after drop.
        let _ = sender.send(job);
    }
}
