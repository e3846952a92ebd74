//! The in-process OmniQ backend: a task queue, result store, event store and schedule store
//! kept in memory.
//!
//! Nothing survives the process, so use it for tests, examples and programs whose tasks
//! may be lost on exit. Wake-ups are immediate: an idle worker in the same process starts
//! a task as soon as it is enqueued.
//!
//! | capability | supported |
//! |---|---|
//! | durable | no |
//! | shared across processes | no |
//! | wake-ups | yes (in-process) |
//! | batch enqueue / dequeue / complete | yes |
//!
//! ```
//! use omniq_memory::MemoryTaskQueue;
//! use omniq_models::{TaskOptions, TaskSpec};
//! use omniq_storage::{DequeueRequest, TaskQueue};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), omniq_storage::StoreError> {
//! let queue = MemoryTaskQueue::new();
//! let spec = TaskSpec::new("greet", vec![], TaskOptions::default(), chrono::Utc::now());
//! queue.enqueue(vec![spec]).await?;
//! let leases = queue.dequeue(DequeueRequest::new(["default"], 10)).await?;
//! assert_eq!(leases.len(), 1);
//! # Ok(())
//! # }
//! ```

mod connect;
mod events;
mod lock;
mod queue;
mod results;
mod schedules;

pub use connect::{MemoryBackend, connect_url};
pub use events::MemoryEventStore;
pub use queue::MemoryTaskQueue;
pub use results::MemoryResultStore;
pub use schedules::MemoryScheduleStore;
